//! `fedsim sweep` and `fedsim merge`: flags → [`crate::sweep`] calls, errors → exit codes.

use super::CliError;
use crate::sweep::{
    self, ProgressMode, Runner, Shard, SweepError, SweepOptions, SweepSpec, SweptParam,
};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// `fedsim sweep SCENARIO --param path=v1,v2 --seeds 1..20 [--jobs N] [--shard I/N] [--out DIR]`
#[derive(clap::Args, Debug, Clone)]
pub struct SweepArgs {
    /// The scenario file every run starts from.
    pub scenario: PathBuf,
    /// A swept parameter: `path=value1,value2,...` (repeatable; the runs are the cartesian
    /// product of all lists, the first --param varying slowest). Without any --param, the
    /// scenario's own `[sweep] params` are used.
    #[arg(long = "param", value_name = "PATH=V1,V2,...")]
    pub params: Vec<String>,
    /// A fixed override applied to every run: `path=value` (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
    /// Seeds: an inclusive range `A..B`, a list `1,5,9`, or one seed (default: the scenario's
    /// `[sweep] seeds`, else 1).
    #[arg(long, value_name = "A..B|LIST")]
    pub seeds: Option<String>,
    /// Runs executed at once (default: the number of CPUs). Results do not depend on it.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Run only shard I of N (0-based: I in 0..N), i.e. runs whose position modulo N is I;
    /// join the shards' directories afterwards with `fedsim merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// The sweep directory (default: results/sweeps/<scenario file stem>). Re-running the same
    /// sweep into it resumes: complete runs are kept, the rest are run.
    #[arg(long, short, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print one plain line per finished run even on a terminal.
    #[arg(long, conflicts_with = "quiet")]
    pub plain: bool,
    /// Print no progress.
    #[arg(long)]
    pub quiet: bool,
}

/// `fedsim merge OUT DIR...`
#[derive(clap::Args, Debug, Clone)]
pub struct MergeArgs {
    /// The directory to assemble the whole sweep in (created if needed).
    pub out: PathBuf,
    /// The shard directories written by `fedsim sweep --shard I/N`.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
}

fn to_cli_error(error: SweepError) -> CliError {
    match error {
        SweepError::Input(message) => CliError::input(message),
        SweepError::Failure(message) => CliError::failure(message),
        // A directory that does not fit the request is refused like bad input (exit 2); a
        // file-system failure is a failure (exit 1).
        SweepError::Store(error @ sweep::store::StoreError::Mismatch { .. }) => {
            CliError::input(error)
        }
        SweepError::Store(error) => CliError::failure(error),
    }
}

/// The scenario file's bytes, read once per sweep.
fn read_scenario(args: &SweepArgs) -> Result<Vec<u8>, CliError> {
    std::fs::read(&args.scenario).map_err(|error| {
        CliError::input(format!(
            "{}: cannot read scenario: {error}",
            args.scenario.display()
        ))
    })
}

/// Parses and checks the flags into a spec, options and the output directory, with the
/// scenario file's `bytes` (hashed into the spec).
fn parse(args: &SweepArgs, bytes: &[u8]) -> Result<(SweepSpec, SweepOptions, PathBuf), CliError> {
    let digest = Sha256::digest(bytes);
    let scenario_sha256: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    let text = String::from_utf8_lossy(bytes);
    let declared = sweep::defaults::scenario_sweep(&args.scenario.display().to_string(), &text)
        .map_err(CliError::input)?;
    // Flags replace the scenario's declared sweep part by part.
    let params = if args.params.is_empty() {
        declared.params
    } else {
        args.params
            .iter()
            .map(|text| SweptParam::parse(text))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CliError::input)?
    };
    let seeds = match (&args.seeds, declared.seeds) {
        (Some(text), _) => sweep::spec::parse_seeds(text).map_err(CliError::input)?,
        (None, Some(seeds)) => seeds,
        (None, None) => vec![1],
    };
    let spec = SweepSpec::new(
        args.scenario.display().to_string(),
        scenario_sha256,
        args.sets.clone(),
        params,
        seeds,
    )
    .map_err(CliError::input)?;
    let shard = args
        .shard
        .as_deref()
        .map(Shard::parse)
        .transpose()
        .map_err(CliError::input)?;
    let jobs = match args.jobs {
        Some(0) => return Err(CliError::input("--jobs 0: run at least one job at a time")),
        Some(jobs) => jobs,
        None => std::thread::available_parallelism().map_or(1, |count| count.get()),
    };
    let progress = if args.quiet {
        ProgressMode::Quiet
    } else if args.plain {
        ProgressMode::Lines
    } else {
        ProgressMode::Auto
    };
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .scenario
            .file_stem()
            .map_or("sweep".into(), |stem| stem.to_string_lossy().into_owned());
        PathBuf::from("results").join("sweeps").join(stem)
    });
    Ok((
        spec,
        SweepOptions {
            jobs,
            shard,
            progress,
        },
        out,
    ))
}

/// Runs `fedsim sweep` with the simulator doing the runs.
pub fn run(args: &SweepArgs) -> Result<(), CliError> {
    let bytes = read_scenario(args)?;
    let text = String::from_utf8(bytes.clone()).map_err(|_| {
        CliError::input(format!(
            "{}: cannot read scenario: not UTF-8 text",
            args.scenario.display()
        ))
    })?;
    let runner = sweep::simulator::SimulatorRunner {
        file: args.scenario.display().to_string(),
        text,
        sets: args.sets.clone(),
    };
    sweep_with(args, &bytes, &runner)
}

/// Runs `fedsim sweep` with `runner` doing the runs.
pub fn run_with(args: &SweepArgs, runner: &dyn Runner) -> Result<(), CliError> {
    sweep_with(args, &read_scenario(args)?, runner)
}

/// Runs `fedsim sweep` on the scenario file's `bytes` as read once, with `runner`.
fn sweep_with(args: &SweepArgs, bytes: &[u8], runner: &dyn Runner) -> Result<(), CliError> {
    let (spec, options, out) = parse(args, bytes)?;
    // A bad value should stop the sweep before hours of runs, with the flag named: first the
    // fixed --set overrides alone, then each combination of swept values.
    runner
        .validate(&spec.sets)
        .map_err(|error| CliError::input(format!("--set: {error}")))?;
    let mut checked: Vec<Vec<String>> = Vec::new();
    for run in spec.runs_in(options.shard) {
        let overrides = run.overrides(&spec.sets);
        if checked.contains(&overrides) {
            continue;
        }
        runner.validate(&overrides).map_err(|error| {
            let swept: Vec<String> = run.params.iter().map(|(p, v)| format!("{p}={v}")).collect();
            // Values from the scenario's own [sweep] table are not flags the user typed.
            let source = if args.params.is_empty() {
                "the scenario's [sweep] params"
            } else {
                "--param"
            };
            CliError::input(format!("{source} {}: {error}", swept.join(" ")))
        })?;
        checked.push(overrides);
    }
    let report = sweep::run_sweep(&spec, &out, runner, options).map_err(to_cli_error)?;
    let table = out.join(sweep::store::TABLE_FILE);
    if report.failed.is_empty() {
        if options.progress != ProgressMode::Quiet {
            eprintln!(
                "sweep: {} runs ok ({} run now, {} kept from before); table: {}",
                report.total,
                report.executed,
                report.skipped,
                table.display()
            );
        }
        Ok(())
    } else {
        Err(CliError::failure(format!(
            "sweep: {} of {} runs failed (first: {}; see its error.txt under {}); table: {}",
            report.failed.len(),
            report.total,
            report.failed[0],
            out.join(sweep::store::RUNS_DIR).display(),
            table.display()
        )))
    }
}

/// Runs `fedsim merge`.
pub fn run_merge(args: &MergeArgs) -> Result<(), CliError> {
    let report = sweep::merge(&args.out, &args.shards).map_err(to_cli_error)?;
    let table = args.out.join(sweep::store::TABLE_FILE);
    if report.failed.is_empty() {
        eprintln!(
            "merge: {} runs from {} directories; table: {}",
            report.total,
            args.shards.len(),
            table.display()
        );
        Ok(())
    } else {
        Err(CliError::failure(format!(
            "merge: {} of {} runs had failed (first: {}); table: {}",
            report.failed.len(),
            report.total,
            report.failed[0],
            table.display()
        )))
    }
}
