//! Parameter sweeps: the cartesian product of swept parameter values × seeds, run in parallel,
//! resumable, shardable across machines, with one tidy `runs.csv`.
//!
//! - [`spec`]: flags → the ordered list of runs, run folder names, shards (0-based `I/N`).
//! - [`store`]: the sweep directory layout and the write-then-rename rule that makes a sweep safe
//!   to kill at any instant.
//! - [`table`]: `runs.csv`, a pure function of the spec and the run folders.
//! - [`execute`]: runs what is left with rayon and rebuilds the table.
//! - [`merge`]: joins shard directories into one sweep directory.
//!
//! A sweep does not know how to simulate: it calls a [`Runner`], which writes one run's files
//! (at least `summary.json` with a `metrics` object) into the folder it is given.

pub mod defaults;
pub mod execute;
pub mod merge;
pub mod progress;
pub mod simulator;
pub mod spec;
pub mod store;
pub mod table;

pub use execute::{SweepOptions, SweepReport, run_sweep};
pub use merge::{MergeReport, merge};
pub use progress::ProgressMode;
pub use spec::{RunSpec, Shard, SpecError, SweepSpec, SweptParam};

use std::path::Path;

/// Executes one run of a sweep. Implementations must be deterministic: the files written for a
/// run must depend only on the run (its overrides and seed), never on timing or on other runs,
/// because runs execute in parallel in any order.
pub trait Runner: Sync {
    /// Checks, before anything runs, that these `path=value` overrides give a valid scenario.
    /// Called once per combination of swept values, so a bad value fails the sweep up front.
    fn validate(&self, overrides: &[String]) -> Result<(), String> {
        let _ = overrides;
        Ok(())
    }

    /// Runs `run` and writes its files into `out_dir` (an empty folder that the sweep moves into
    /// place afterwards). An `Err` is recorded as a failed run, not a failed sweep.
    fn run(&self, run: &RunSpec, out_dir: &Path) -> Result<(), String>;
}

/// Why a sweep or merge stopped.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// Bad flags or a directory that does not fit the request (exit code 2).
    #[error("{0}")]
    Input(String),
    /// Something failed while running (exit code 1).
    #[error("{0}")]
    Failure(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
}

impl From<SpecError> for SweepError {
    fn from(error: SpecError) -> SweepError {
        SweepError::Input(error.to_string())
    }
}
