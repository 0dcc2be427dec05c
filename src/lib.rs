//! fedsim: a deterministic discrete-event simulator of Matrix federation.
//!
//! See ARCHITECTURE.md for the code map and the invariants.

pub mod cli;
pub mod matrix;
pub mod room;
