//! fedsim: a deterministic discrete-event simulator of Matrix federation.
//!
//! See ARCHITECTURE.md for the code map and the invariants.

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
