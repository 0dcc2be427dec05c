//! Running a sweep: decide what is left to do, run it in parallel, rebuild `runs.csv`.

use super::progress::{Progress, ProgressMode};
use super::spec::{RunSpec, Shard, SweepSpec};
use super::store::{RunState, StoreError, SweepDir, SweepRecord, write_atomically};
use super::table::render_table;
use super::{Runner, SweepError};
use rayon::prelude::*;
use std::path::Path;

/// How to run a sweep (choices that must not change its results).
#[derive(Debug, Clone, Copy)]
pub struct SweepOptions {
    /// Worker threads; the results are the same whatever this is.
    pub jobs: usize,
    pub shard: Option<Shard>,
    pub progress: ProgressMode,
}

/// What a sweep invocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Runs in this sweep (or shard).
    pub total: usize,
    /// Runs found complete from an earlier invocation and not run again.
    pub skipped: usize,
    /// Runs executed now.
    pub executed: usize,
    /// Runs that ended failed (names), in sweep order.
    pub failed: Vec<String>,
}

/// Runs every run of `spec` (of `options.shard`) that `out` does not already hold complete, then
/// writes `runs.csv`. Failed runs are recorded (status `failed`) and tried again next time.
pub fn run_sweep(
    spec: &SweepSpec,
    out: &Path,
    runner: &dyn Runner,
    options: SweepOptions,
) -> Result<SweepReport, SweepError> {
    assert!(options.jobs >= 1, "jobs is validated by the caller");
    let dir = SweepDir::new(out);
    dir.check_is_sweep_or_new()?;
    let _lock = dir.lock()?;
    check_compatible(&dir, spec, options.shard)?;
    dir.prepare()?;
    dir.write_record(&SweepRecord {
        fedsim_version: env!("CARGO_PKG_VERSION").to_string(),
        fedsim_build: crate::BUILD.to_string(),
        spec: spec.clone(),
        shard: options.shard,
    })?;

    let runs = spec.runs_in(options.shard);
    let pending: Vec<&RunSpec> = runs
        .iter()
        .filter(|run| !matches!(dir.run_state(run), RunState::Complete(_)))
        .collect();
    let progress = Progress::new(options.progress, pending.len() as u64);
    // More workers than runs only cost threads (`--jobs 100000` once ran out of memory
    // starting them).
    let jobs = options.jobs.min(pending.len().max(1));
    let shard_text = options
        .shard
        .map(|shard| format!(" (shard {shard})"))
        .unwrap_or_default();
    progress.note(&if pending.is_empty() {
        format!(
            "sweep: {} runs{shard_text} in {}, all already complete; writing the table",
            runs.len(),
            out.display()
        )
    } else {
        format!(
            "sweep: {} runs{shard_text} in {}, {} already complete, {} to run on {} job{}",
            runs.len(),
            out.display(),
            runs.len() - pending.len(),
            pending.len(),
            jobs,
            if jobs == 1 { "" } else { "s" }
        )
    });

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|error| SweepError::Failure(format!("cannot start worker threads: {error}")))?;
    // Each worker writes only its own run folders; results are read back from disk below, so the
    // order in which runs finish cannot affect any output.
    let outcomes: Vec<Result<(), StoreError>> = std::thread::scope(|scope| {
        // In plain-line mode (logs, Slurm), a line every HEARTBEAT names the runs still going.
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        if progress.wants_heartbeat() {
            let progress = &progress;
            scope.spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(super::progress::HEARTBEAT)
                {
                    if let Some(line) = progress.heartbeat() {
                        progress.note(&line);
                    }
                }
            });
        }
        let outcomes = pool.install(|| {
            pending
                .par_iter()
                .map(|run| execute_run(&dir, runner, run, &progress))
                .collect()
        });
        drop(stop);
        outcomes
    });
    progress.finish();
    for outcome in outcomes {
        outcome?;
    }

    let rows: Vec<(RunSpec, RunState)> = runs
        .iter()
        .map(|run| (run.clone(), dir.run_state(run)))
        .collect();
    let param_paths: Vec<String> = spec.params.iter().map(|param| param.path.clone()).collect();
    write_atomically(&dir.table_path(), &render_table(&param_paths, &rows))?;
    // Runs an earlier, larger sweep left here stay on disk but are not this sweep's: say so,
    // rather than let them vanish from runs.csv unannounced.
    let names: std::collections::BTreeSet<&str> =
        runs.iter().map(|run| run.name.as_str()).collect();
    let left_out = std::fs::read_dir(dir.runs_dir())
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|entry| entry.path().is_dir())
                .filter_map(|entry| entry.file_name().into_string().ok())
                .filter(|name| !name.starts_with('.') && !names.contains(name.as_str()))
                .count()
        })
        .unwrap_or(0);
    if left_out > 0 {
        progress.note(&format!(
            "sweep: {left_out} run folder(s) in {} are not in this sweep (other values or \
             seeds) and are left out of {}",
            dir.runs_dir().display(),
            dir.table_path().display()
        ));
    }
    let failed = rows
        .iter()
        .filter(|(_, state)| !matches!(state, RunState::Complete(_)))
        .map(|(run, _)| run.name.clone())
        .collect();
    Ok(SweepReport {
        total: runs.len(),
        skipped: runs.len() - pending.len(),
        executed: pending.len(),
        failed,
    })
}

/// Refuses to mix results: an existing directory must hold the same scenario (same bytes), the
/// same fixed overrides and parameter paths, and the same sharding. Adding values or seeds is
/// allowed — run folders are named by parameters and seed, so earlier runs are reused.
fn check_compatible(
    dir: &SweepDir,
    spec: &SweepSpec,
    shard: Option<Shard>,
) -> Result<(), SweepError> {
    let Some(record) = dir.read_record()? else {
        return Ok(());
    };
    let path = dir.spec_path().display().to_string();
    let old = &record.spec;
    let paths = |spec: &SweepSpec| -> Vec<String> {
        spec.params.iter().map(|param| param.path.clone()).collect()
    };
    let problem = if old.scenario_sha256 != spec.scenario_sha256 {
        Some(format!(
            "holds results of another scenario or an earlier version of it ({})",
            old.scenario
        ))
    } else if old.sets != spec.sets {
        Some(format!(
            "was run with --set {:?}, not {:?}",
            old.sets, spec.sets
        ))
    } else if paths(old) != paths(spec) {
        Some(format!(
            "sweeps parameters {:?}, not {:?}",
            paths(old),
            paths(spec)
        ))
    } else if record.fedsim_build != crate::BUILD {
        // A run's results may differ between builds: one sweep table must come from one.
        let old = if record.fedsim_build.is_empty() {
            "an earlier build that did not record its name"
        } else {
            &record.fedsim_build
        };
        Some(format!(
            "was run by {old}, not this build ({}); its runs and this build's may differ",
            crate::BUILD
        ))
    } else if record.shard != shard {
        let describe = |shard: Option<Shard>| match shard {
            Some(shard) => format!("shard {shard}"),
            None => "the whole sweep".to_string(),
        };
        Some(format!(
            "holds {}, not {}",
            describe(record.shard),
            describe(shard)
        ))
    } else {
        None
    };
    match problem {
        Some(message) => Err(SweepError::Input(format!(
            "{path}: this directory {message}; use another --out"
        ))),
        None => Ok(()),
    }
}

/// Runs one run into its partial folder and moves the result into place.
fn execute_run(
    dir: &SweepDir,
    runner: &dyn Runner,
    run: &RunSpec,
    progress: &Progress,
) -> Result<(), StoreError> {
    let partial = dir.partial_run_dir(run);
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .map_err(super::store::io_error(&partial, "cannot remove"))?;
    }
    std::fs::create_dir_all(&partial).map_err(super::store::io_error(&partial, "cannot create"))?;
    progress.started(&run.name);
    // A panicking run is one failed run, not the end of the whole sweep.
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.run(run, &partial)))
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|text| text.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_string());
                Err(format!("panicked: {message}"))
            });
    let error = outcome.err().map(|error| error.replace('\n', " "));
    let state = dir.finish_run(run, error.as_deref())?;
    let error = match state {
        RunState::Failed(message) => Some(message),
        _ => None,
    };
    progress.finished(&run.name, error.as_deref());
    Ok(())
}
