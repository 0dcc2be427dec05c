//! The runner that runs the simulator: one scenario file, loaded with the sweep's overrides, run
//! for the run's seed by [`crate::world::run_to_dir`] straight into the run's (partial) folder.

use super::{RunSpec, Runner};
use std::path::{Path, PathBuf};

/// Runs each sweep run with the simulator.
#[derive(Debug, Clone)]
pub struct SimulatorRunner {
    /// The scenario file every run starts from.
    pub scenario: PathBuf,
    /// The sweep's fixed `--set` overrides (the run's swept values are applied after them).
    pub sets: Vec<String>,
}

impl Runner for SimulatorRunner {
    fn validate(&self, overrides: &[String]) -> Result<(), String> {
        crate::scenario::load(Some(&self.scenario), overrides)
            .map(|_| ())
            .map_err(|error| error.to_string())
    }

    fn run(&self, run: &RunSpec, out_dir: &Path) -> Result<(), String> {
        let overrides = run.overrides(&self.sets);
        let scenario = crate::scenario::load(Some(&self.scenario), &overrides)
            .map_err(|error| error.to_string())?;
        crate::world::run_to_dir(&scenario, run.seed, out_dir, false)
            .map(|_| ())
            .map_err(|error| error.to_string())
    }
}
