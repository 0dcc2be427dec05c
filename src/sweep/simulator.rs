//! The runner that runs the simulator: one scenario, read once when the sweep starts (editing
//! the file during a sweep must not mix two scenarios in one table), parsed with the sweep's
//! overrides, run for the run's seed by [`crate::world::run_to_dir`] straight into the run's
//! (partial) folder.

use super::{RunSpec, Runner};
use std::path::Path;

/// Runs each sweep run with the simulator.
#[derive(Debug, Clone)]
pub struct SimulatorRunner {
    /// The scenario file's name, as given (for errors and reproduce commands).
    pub file: String,
    /// The scenario file's text, read once: the bytes the sweep's `scenario_sha256` hashes.
    pub text: String,
    /// The sweep's fixed `--set` overrides (the run's swept values are applied after them).
    pub sets: Vec<String>,
}

impl SimulatorRunner {
    /// The command that runs `run` alone, as `fedsim run` would.
    fn reproduce(&self, run: &RunSpec) -> String {
        let mut command = format!("fedsim run {} --seed {}", self.file, run.seed);
        for set in run.overrides(&self.sets) {
            command.push_str(&format!(" --set '{set}'"));
        }
        command
    }
}

impl Runner for SimulatorRunner {
    fn validate(&self, overrides: &[String]) -> Result<(), String> {
        crate::scenario::parse(&self.file, &self.text, overrides)
            .map(|_| ())
            .map_err(|error| error.to_string())
    }

    /// A run whose checks fail is a failed run (as `fedsim run` exits 1 for it), its files kept;
    /// every failure names the command that reproduces it.
    fn run(&self, run: &RunSpec, out_dir: &Path) -> Result<(), String> {
        let reproduce = || format!("reproduce: {}", self.reproduce(run));
        let overrides = run.overrides(&self.sets);
        let scenario = crate::scenario::parse(&self.file, &self.text, &overrides)
            .map_err(|error| format!("{error}; {}", reproduce()))?;
        let outcome = crate::world::run_to_dir(&scenario, run.seed, out_dir, false)
            .map_err(|error| format!("{error}; {}", reproduce()))?;
        match failed_checks_error(&outcome.failed_checks) {
            None => Ok(()),
            Some(error) => Err(format!("{error}; {}", reproduce())),
        }
    }
}

/// What a run whose checks (name, detail) failed reports, or `None` if none failed.
fn failed_checks_error(failed_checks: &[(String, String)]) -> Option<String> {
    if failed_checks.is_empty() {
        return None;
    }
    let failed: Vec<String> = failed_checks
        .iter()
        .map(|(name, detail)| format!("{name}: {detail}"))
        .collect();
    Some(format!(
        "{} check(s) failed: {}",
        failed.len(),
        failed.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_spec(seed: u64, params: &[(&str, &str)]) -> RunSpec {
        RunSpec {
            position: 0,
            name: "x".into(),
            params: params
                .iter()
                .map(|(path, value)| (path.to_string(), value.to_string()))
                .collect(),
            seed,
        }
    }

    /// A run whose checks fail is a failed run naming each check, and every failure ends with
    /// the command that reproduces the run alone (before, the sweep recorded it `ok`).
    #[test]
    fn failures_name_the_failed_checks_and_the_command_that_reproduces_the_run() {
        assert_eq!(failed_checks_error(&[]), None);
        let failed = [
            ("rate".to_owned(), "measured 0".to_owned()),
            ("outcomes".to_owned(), "1 stuck".to_owned()),
        ];
        assert_eq!(
            failed_checks_error(&failed).unwrap(),
            "2 check(s) failed: rate: measured 0; outcomes: 1 stuck"
        );
        let runner = SimulatorRunner {
            file: "s.toml".into(),
            text: "not toml [".into(),
            sets: vec!["duration=1h".into()],
        };
        let dir = std::env::temp_dir();
        let error = runner
            .run(&run_spec(3, &[("rooms.policy", "P5")]), &dir)
            .unwrap_err();
        assert!(
            error.ends_with(
                "reproduce: fedsim run s.toml --seed 3 --set 'duration=1h' --set 'rooms.policy=P5'"
            ),
            "{error}"
        );
    }
}
