//! `fedsim repro FILE [--out DIR] [--check-determinism]`: runs a scripted reproduction
//! (`scenarios/repro/*.toml`, language in [`crate::room::script`]), writes `summary.json`,
//! `timeline.csv` and `dag.dot` to DIR (default `results/repro/<name>/`), prints each check
//! with what the design predicts, and exits 1 if a check does not meet its expectation (2 for a
//! bad file).

use std::path::PathBuf;

use super::CliError;
use crate::metrics::write_atomic;
use crate::room::script::{self, output, run};

/// Arguments of `fedsim repro`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The reproduction script (TOML).
    pub file: String,
    /// Output directory (default `results/repro/<file stem>/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run twice and fail unless both runs give byte-identical files.
    #[arg(long)]
    pub check_determinism: bool,
}

/// Output files by name.
type Files = Vec<(String, Vec<u8>)>;

/// Runs the script once and returns the run's files and the finished run.
fn run_once(script: &script::Script) -> Result<(Files, run::Run), CliError> {
    let mut finished = run::run(script).map_err(CliError::input)?;
    let files = output::files(&mut finished);
    Ok((files, finished))
}

/// `fedsim repro`.
pub fn run(args: &Args) -> Result<(), CliError> {
    let script = script::load(&args.file).map_err(|error| {
        let scenario = std::fs::read_to_string(&args.file)
            .ok()
            .and_then(|text| toml::from_str::<toml::Table>(&text).ok())
            .is_some_and(|table| {
                ["rooms", "federation", "observers", "phases"]
                    .iter()
                    .any(|key| table.contains_key(*key))
            });
        if scenario {
            CliError::input(format!(
                "{}: a scenario, not a reproduction script: run it with `fedsim run {}`",
                args.file, args.file
            ))
        } else {
            CliError::input(error)
        }
    })?;
    let (files, finished) = run_once(&script)?;
    if args.check_determinism {
        let (again, _) = run_once(&script)?;
        for ((name, first), (_, second)) in files.iter().zip(&again) {
            if first != second {
                return Err(CliError::failure(format!(
                    "{}: not deterministic: {name} differs between two runs",
                    args.file
                )));
            }
        }
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results/repro").join(&script.name));
    // As `fedsim run` does: written beside, then moved into place whole, so no file of an
    // earlier version of the script (a DAG it no longer draws) stays among the new ones, and
    // a folder holding anything else is refused rather than mixed.
    let partial = super::run::prepare_out_dir(&out)?;
    for (name, bytes) in &files {
        let path = partial.join(name);
        write_atomic(&path, bytes).map_err(|error| {
            CliError::failure(format!("{}: cannot write: {error}", path.display()))
        })?;
    }
    super::run::write_manifest(&partial)?;
    super::run::move_into_place(&partial, &out)?;
    let mut unmet = 0;
    for (check, result) in script.checks.iter().zip(&finished.results) {
        let met = check.expect_pass == result.passed;
        unmet += usize::from(!met);
        println!(
            "{} checks[{}] {} at {}: expected {}, got {} ({}){}",
            if met { "ok  " } else { "FAIL" },
            check.index,
            check.keyword,
            check.at.as_deref().unwrap_or("end"),
            if check.expect_pass { "pass" } else { "fail" },
            if result.passed { "pass" } else { "fail" },
            result.observed,
            check
                .description
                .as_deref()
                .map(|text| format!(" — {text}"))
                .unwrap_or_default()
        );
    }
    if args.check_determinism {
        println!("deterministic: two runs gave identical files");
    }
    println!("wrote {}", out.display());
    if unmet > 0 {
        println!("reproduce: fedsim repro {}", args.file);
        return Err(CliError::failure(format!(
            "{}: {unmet} of {} check(s) did not meet the expectation",
            args.file,
            script.checks.len()
        )));
    }
    Ok(())
}
