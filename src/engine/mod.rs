//! The simulation engine: simulated time, the event queue, seeded random streams and the trace.
//!
//! Architecture invariant: nothing here knows about Matrix. The engine moves opaque events in
//! time order; `world/` gives them meaning.

pub mod prefetch;
pub mod queue;
pub mod rng;
pub mod time;
pub mod trace;

pub use queue::EventQueue;
pub use rng::{SimRng, StreamSeed};
pub use time::{DurationError, SimTime, format_duration_ms, parse_duration_ms};
pub use trace::Trace;
