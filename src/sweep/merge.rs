//! `fedsim merge OUT DIR...`: join the directories of a sharded sweep into one sweep directory
//! whose `runs.csv` is byte-identical to the one a single machine would have written.

use super::SweepError;
use super::spec::RunSpec;
use super::store::{RunState, SweepDir, SweepRecord, write_atomically};
use super::table::render_table;
use std::path::{Path, PathBuf};

/// What a merge assembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeReport {
    pub total: usize,
    /// Runs whose folder holds a failure (status `failed` in `runs.csv`).
    pub failed: Vec<String>,
}

/// Copies every run of the sweep held by `sources` into `out` and writes `out/runs.csv` and
/// `out/sweep.json` (without a shard). Every source must hold the same sweep, and together they
/// must hold every run of it, finished (complete or failed).
pub fn merge(out: &Path, sources: &[PathBuf]) -> Result<MergeReport, SweepError> {
    if sources.is_empty() {
        return Err(SweepError::Input(
            "merge: name at least one sweep directory".into(),
        ));
    }
    let mut records: Vec<(SweepDir, SweepRecord)> = Vec::new();
    let mut _source_locks = Vec::new();
    let out_canonical = out.canonicalize().ok();
    for source in sources {
        let dir = SweepDir::new(source);
        // OUT's own exclusive lock, taken below, covers a source that is OUT itself.
        if source.canonicalize().ok() != out_canonical || out_canonical.is_none() {
            _source_locks.push(dir.lock_shared()?);
        }
        let record = dir.read_record()?.ok_or_else(|| {
            SweepError::Input(format!(
                "{}: no {} here; not a sweep directory",
                source.display(),
                super::store::SPEC_FILE
            ))
        })?;
        if let Some((first_dir, first)) = records.first()
            && let Some(difference) = record_difference(first, &record)
        {
            return Err(SweepError::Input(format!(
                "{}: holds a different sweep from {}: {difference}",
                source.display(),
                first_dir.root.display()
            )));
        }
        records.push((dir, record));
    }
    let (_, first) = &records[0];
    let merged = SweepRecord {
        fedsim_version: first.fedsim_version.clone(),
        fedsim_build: first.fedsim_build.clone(),
        spec: first.spec.clone(),
        shard: None,
    };

    // Every run is found before anything is written: a missing or unfinished shard leaves
    // `out` as it was (it used to hold the record and the runs copied so far).
    let mut found: Vec<(RunSpec, &SweepDir, RunState)> = Vec::new();
    for run in merged.spec.runs() {
        let (source, state) = find_run(&records, &run)?;
        found.push((run, source, state));
    }
    let target = SweepDir::new(out);
    target.check_is_sweep_or_new()?;
    let _lock = target.lock()?;
    if let Some(existing) = target.read_record()?
        && (existing.shard.is_some() || record_difference(&existing, &merged).is_some())
    {
        return Err(SweepError::Input(format!(
            "{}: already holds another sweep (or a single shard); merge into a new directory",
            out.display()
        )));
    }
    target.prepare()?;
    target.write_record(&merged)?;
    let mut rows: Vec<(RunSpec, RunState)> = Vec::new();
    for (run, source, state) in found {
        target.import_run(source, &run)?;
        rows.push((run, state));
    }
    let param_paths: Vec<String> = merged
        .spec
        .params
        .iter()
        .map(|param| param.path.clone())
        .collect();
    write_atomically(&target.table_path(), &render_table(&param_paths, &rows))?;
    let failed = rows
        .iter()
        .filter(|(_, state)| matches!(state, RunState::Failed(_)))
        .map(|(run, _)| run.name.clone())
        .collect();
    Ok(MergeReport {
        total: rows.len(),
        failed,
    })
}

/// The directory holding `run`: the first that holds it complete, else the first that holds it
/// failed. A run no directory finished is an error naming the shard it belongs to.
fn find_run<'a>(
    records: &'a [(SweepDir, SweepRecord)],
    run: &RunSpec,
) -> Result<(&'a SweepDir, RunState), SweepError> {
    let mut failed: Option<(&SweepDir, RunState)> = None;
    let mut unfinished_in: Option<&SweepDir> = None;
    for (dir, record) in records {
        if let Some(shard) = record.shard
            && !shard.contains(run.position)
        {
            continue;
        }
        match dir.run_state(run) {
            state @ RunState::Complete(_) => return Ok((dir, state)),
            state @ RunState::Failed(_) => {
                failed.get_or_insert((dir, state));
            }
            RunState::Missing => {
                unfinished_in.get_or_insert(dir);
            }
        }
    }
    if let Some(found) = failed {
        return Ok(found);
    }
    Err(match unfinished_in {
        Some(dir) => SweepError::Failure(format!(
            "{}: run {} has not finished; re-run that shard (it resumes) before merging",
            dir.root.display(),
            run.name
        )),
        None => {
            let count = records
                .iter()
                .find_map(|(_, record)| record.shard.map(|shard| shard.count))
                .unwrap_or(1);
            SweepError::Input(format!(
                "merge: run {} belongs to shard {}/{count}, which none of the directories holds",
                run.name,
                run.position % count
            ))
        }
    })
}

/// How two shards' records differ, naming the first field that does, or `None` if they are
/// shards of one sweep. The scenario is compared by its bytes' hash, not by the path it was
/// given as (`./s/x.toml` and `/home/a/s/x.toml` are the same scenario).
fn record_difference(first: &SweepRecord, other: &SweepRecord) -> Option<String> {
    let (a, b) = (&first.spec, &other.spec);
    if a.scenario_sha256 != b.scenario_sha256 {
        return Some(format!(
            "another scenario, or another version of it ({} against {})",
            b.scenario, a.scenario
        ));
    }
    if first.fedsim_version != other.fedsim_version {
        return Some(format!(
            "fedsim {} against {}",
            other.fedsim_version, first.fedsim_version
        ));
    }
    if first.fedsim_build != other.fedsim_build {
        return Some(format!(
            "build {:?} against {:?} (a run's results may differ between builds)",
            other.fedsim_build, first.fedsim_build
        ));
    }
    if a.sets != b.sets {
        return Some(format!("--set {:?} against {:?}", b.sets, a.sets));
    }
    if a.params != b.params {
        return Some(format!("--param {:?} against {:?}", b.params, a.params));
    }
    if a.seeds != b.seeds {
        return Some(format!("--seeds {:?} against {:?}", b.seeds, a.seeds));
    }
    None
}
