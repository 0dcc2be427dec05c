//! Backing off from events that keep failing to be pulled, as Synapse does
//! (`event_failed_pull_attempts`: a failed pull of an event is recorded; while the event is in
//! backoff, an event missing it as a prev or auth event is not processed and nothing is asked
//! for it — Synapse's `FederationPullAttemptBackoffError`).
//!
//! Without this, a server that cannot accept an event (P0 without the sender's real key: a
//! lying server, a key no notary covers) re-asks `/get_missing_events` for it for every later
//! event that descends from it, receives it again, drops it again, and gives up each descendant
//! after `MAX_GAP_ROUNDS` rounds: millions of re-drops in hours of simulated time.
//!
//! Per server and room, `ServerRoom::failed_pulls` keeps, by event ID, the number of failed
//! attempts and when the next may be made:
//! - a **failed pull** is an event that arrived in a `/get_missing_events` answer and was
//!   dropped (check 1–3), or a missing event still missing when a gap was given up after at
//!   least one round; it counts one attempt, and the next is allowed after
//!   `PULL_BACKOFF_STEP_MS × 2^min(attempts, PULL_BACKOFF_MAX_DOUBLINGS)` (Synapse: 2 h after the
//!   first failure, doubling, capped at 2^8 h);
//! - an event given up because one of its missing events is in backoff (or because its gap was
//!   given up) takes over that record's attempts and retry time, so a whole descent becomes
//!   retryable together when its root does (taking `now` + a fresh backoff instead would push
//!   every later event past its parents' expiry for ever).
//!
//! Nothing is recorded unless an event is dropped after a pull or a gap is given up, so runs
//! that never do either are unchanged.

use crate::matrix::EventId;
use crate::net::ServerId;

use super::{FedWorld, RoomIndex};

/// The unit of the backoff between pull attempts of one event (Synapse:
/// `BACKFILL_EVENT_EXPONENTIAL_BACKOFF_STEP_MILLISECONDS`).
pub const PULL_BACKOFF_STEP_MS: u64 = 3_600_000;
/// The backoff doubles per failed attempt up to this many times (Synapse: 8, i.e. 256 h).
pub const PULL_BACKOFF_MAX_DOUBLINGS: u32 = 8;

/// Failed pull attempts of one event at one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullFailure {
    pub attempts: u32,
    /// No pull for it (or for events missing it) before this time (sim ms).
    pub retry_at_ms: u64,
}

/// The wait after `attempts` failed attempts.
pub fn pull_backoff_ms(attempts: u32) -> u64 {
    PULL_BACKOFF_STEP_MS << attempts.min(PULL_BACKOFF_MAX_DOUBLINGS)
}

impl FedWorld {
    /// The latest-expiring record among `missing` that is still in backoff now, if any.
    pub(super) fn pull_backoff(
        &self,
        server: ServerId,
        room: RoomIndex,
        missing: &[EventId],
    ) -> Option<PullFailure> {
        let now_ms = self.now_ms();
        let failed = &self.servers[server as usize].rooms.get(&room)?.failed_pulls;
        missing
            .iter()
            .filter_map(|id| failed.get(id))
            .filter(|failure| failure.retry_at_ms > now_ms)
            .max_by_key(|failure| (failure.retry_at_ms, failure.attempts))
            .copied()
    }

    /// One more failed pull attempt of `event_id`; returns its record.
    pub(super) fn record_pull_failure(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        event_id: &EventId,
    ) -> Option<PullFailure> {
        let now_ms = self.now_ms();
        let failed = &mut self.servers[server as usize]
            .rooms
            .get_mut(&room)?
            .failed_pulls;
        let attempts = failed.get(event_id).map_or(0, |failure| failure.attempts) + 1;
        let failure = PullFailure {
            attempts,
            retry_at_ms: now_ms + pull_backoff_ms(attempts),
        };
        failed.insert(event_id.clone(), failure);
        self.counters.pull_failures += 1;
        Some(failure)
    }

    /// `event_id` was given up because of `cause` (a record in backoff it depends on): it waits
    /// as long (and counts as many attempts) unless its own record waits longer.
    pub(super) fn inherit_pull_failure(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        event_id: &EventId,
        cause: PullFailure,
    ) {
        let Some(state) = self.servers[server as usize].rooms.get_mut(&room) else {
            return;
        };
        let entry = state.failed_pulls.entry(event_id.clone()).or_insert(cause);
        if (cause.retry_at_ms, cause.attempts) > (entry.retry_at_ms, entry.attempts) {
            *entry = cause;
        }
    }

    /// A gap of the event `event_id` was given up after `rounds` rounds with `missing` still
    /// missing: one failed attempt for each of them, and the event waits as long as the
    /// longest.
    pub(super) fn record_gap_given_up(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        event_id: Option<&EventId>,
        missing: &[EventId],
    ) {
        let mut longest: Option<PullFailure> = None;
        for id in missing {
            let held = self.servers[server as usize]
                .rooms
                .get(&room)
                .is_some_and(|state| state.state.holds(id));
            if held {
                continue;
            }
            if let Some(failure) = self.record_pull_failure(server, room, id)
                && longest.is_none_or(|current| {
                    (failure.retry_at_ms, failure.attempts)
                        > (current.retry_at_ms, current.attempts)
                })
            {
                longest = Some(failure);
            }
        }
        if let (Some(event_id), Some(cause)) = (event_id, longest) {
            self.inherit_pull_failure(server, room, event_id, cause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_is_synapses_two_hours_doubling_to_256_hours() {
        let hour_ms = 3_600_000;
        assert_eq!(pull_backoff_ms(1), 2 * hour_ms);
        assert_eq!(pull_backoff_ms(2), 4 * hour_ms);
        assert_eq!(pull_backoff_ms(3), 8 * hour_ms);
        assert_eq!(pull_backoff_ms(8), 256 * hour_ms);
        assert_eq!(pull_backoff_ms(30), 256 * hour_ms);
    }
}
