//! fedsim: a deterministic discrete-event simulator of Matrix federation.
//!
//! See ARCHITECTURE.md for the code map and the invariants.

/// This build's name: `<crate version>+src.<hash of the sources>` (build.rs). Run-info files,
/// sweep records and `fedsim --version` carry it, so results can be traced to their sources and
/// a sweep is never resumed or merged across two builds.
pub const BUILD: &str = env!("FEDSIM_BUILD");

pub mod chart;
pub mod cli;
pub mod engine;
pub mod fed;
pub mod matrix;
pub mod metrics;
pub mod net;
pub mod prefault;
pub mod room;
pub mod scenario;
pub mod server;
pub mod sweep;
pub mod world;
