//! Servers' key layer, sans-IO: each part takes an input and the time and returns outputs
//! (requests to send, timers to set, decisions); only `world/` moves messages.
//!
//! - [`publisher`]: what a server publishes at `/_matrix/key/v2/server`, its rotations and
//!   losses.
//! - [`key_cache`]: an observer's cache of other domains' keys and the re-check policy.
//! - [`outcome_table`]: MSC4430's reading of a re-check result (domain.md §1.5), as a pure
//!   function.
//! - [`notary`]: `/_matrix/key/v2/query`, caching for half a lifetime, serving stale answers.
//! - [`memo`]: verify each distinct response body once (a pure function of the bytes).

pub mod key_cache;
pub mod memo;
pub mod notary;
pub mod outcome_table;
pub mod policy;
pub mod publisher;

/// Simulated time 0 as a Unix timestamp in milliseconds: key objects carry absolute times.
pub const EPOCH_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// The absolute timestamp of a simulated time.
pub fn absolute_ms(sim_ms: u64) -> i64 {
    EPOCH_MS + sim_ms as i64
}

/// The simulated time of an absolute timestamp (0 for times before the run).
pub fn sim_ms(absolute_ms: i64) -> u64 {
    (absolute_ms - EPOCH_MS).max(0) as u64
}
