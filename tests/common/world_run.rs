//! Running a scenario to a result directory and reading what it wrote: the setup the world
//! integration tests share. Each test binary that needs it includes this file alone with
//! `#[path = "common/world_run.rs"] mod world_run;` rather than through `mod common;`, so binaries
//! that only run worlds do not compile the proptest strategies of `common/mod.rs`, and the
//! property tests do not compile this.
//!
//! Every failure names the seed (and, for a failed run, how to run it again), because a world
//! test's failure is only useful if it can be replayed.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fedsim::scenario::Scenario;
use serde_json::Value;

/// `sets` as the owned `key=value` strings the scenario parser takes.
fn owned(sets: &[&str]) -> Vec<String> {
    sets.iter().map(|set| set.to_string()).collect()
}

/// Parses an inline scenario `text` with `--set` overrides (`key=value`); panics on an error.
pub fn scenario(text: &str, sets: &[&str]) -> Scenario {
    fedsim::scenario::parse("test.toml", text, &owned(sets)).unwrap()
}

/// Loads the scenario file `file` (relative to the crate root, where cargo runs tests) with
/// `--set` overrides; panics on an error.
pub fn load(file: &str, sets: &[&str]) -> Scenario {
    fedsim::scenario::load(Some(Path::new(file)), &owned(sets)).unwrap()
}

/// A fresh result directory for the run `name`, unique per test binary, under cargo's scratch
/// directory for integration tests (`target/tmp`), not the system's: a directory a test does not
/// remove is replaced by the next run of the same test (and kept for inspection after a failure)
/// instead of piling up in `/tmp` with a new process id each run.
pub fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("fedsim-{}", env!("CARGO_CRATE_NAME")))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    // Some tests write a file at this path rather than a directory.
    std::fs::create_dir_all(dir.parent().expect("under the scratch directory")).unwrap();
    dir
}

/// The parsed `summary.json` of the result directory `dir`.
pub fn read_summary(dir: &Path) -> Value {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Runs `scenario` with `seed` into `out_dir(name)` (`world::run_to_dir`) and returns the
/// directory and its parsed `summary.json`. A failed run panics with the seed and a command that
/// runs it again.
pub fn run(scenario: &Scenario, seed: u64, name: &str) -> (PathBuf, Value) {
    let dir = out_dir(name);
    if let Err(error) = fedsim::world::run_to_dir(scenario, seed, &dir, false) {
        panic!(
            "scenario {:?} seed {seed} failed: {error}; reproduce: fedsim run <scenario file> \
             --seed {seed} (with this test's --set overrides)",
            scenario.name
        );
    }
    let summary = read_summary(&dir);
    (dir, summary)
}

/// The seed a summary was run with, for failure messages.
fn seed_of(summary: &Value) -> &Value {
    &summary["seed"]
}

/// The numeric metric `name` of a summary; panics (naming the seed) if it is absent.
pub fn metric(summary: &Value, name: &str) -> f64 {
    summary["metrics"][name].as_f64().unwrap_or_else(|| {
        panic!(
            "metric {name} (seed {}) in {}",
            seed_of(summary),
            summary["metrics"]
        )
    })
}

/// Asserts that every check of a summary passed, naming the seed and the failed check.
pub fn all_checks_pass(summary: &Value) {
    for check in summary["checks"].as_array().unwrap() {
        assert_eq!(
            check["passed"],
            Value::Bool(true),
            "check failed (seed {}): {check}",
            seed_of(summary)
        );
    }
}

/// Every file a run wrote into `dir`, by name, except `run-info.json` (wall-clock figures, the
/// only file allowed to differ between two runs of the same scenario and seed).
pub fn result_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name() != "run-info.json")
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect()
}

/// Asserts that the result directories `a` and `b` hold the same files with the same bytes,
/// `run-info.json` aside; `context` says what the two runs are (seed, what differs between them).
/// Returns how many files were compared.
pub fn assert_same_results(a: &Path, b: &Path, context: &str) -> usize {
    let files_a = result_files(a);
    let files_b = result_files(b);
    assert_eq!(
        files_a.keys().collect::<Vec<_>>(),
        files_b.keys().collect::<Vec<_>>(),
        "{context}: the same files"
    );
    for (name, bytes) in &files_a {
        assert!(*bytes == files_b[name], "{context}: {name} differs");
    }
    files_a.len()
}

/// Asserts that each of `files` is byte-identical in the result directories `a` and `b`;
/// `context` says what the two runs are (seed, what differs between them).
pub fn assert_files_equal(a: &Path, b: &Path, files: &[&str], context: &str) {
    for file in files {
        let read = |dir: &Path| {
            std::fs::read(dir.join(file))
                .unwrap_or_else(|error| panic!("reading {}: {error}", dir.join(file).display()))
        };
        assert!(read(a) == read(b), "{context}: {file} differs");
    }
}
