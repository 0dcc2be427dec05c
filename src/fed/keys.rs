//! The room layer's read side of a homeserver's keys ([`KeySource`]) over its key-layer
//! [`KeyCache`], plus its own published keys.

use std::collections::BTreeMap;

use super::{Ev, Homeserver};
use crate::engine::EventQueue;
use crate::matrix::server_keys::{ServerKeys, ValidityClamp};
use crate::net::ServerId;
use crate::room::keys::{HeldKeys, KeySource};
use crate::server::key_cache::KeyCache;
use crate::server::policy::Unreachable;

/// Domain -> key-cache slot of one homeserver: slot `i` is the `i`-th of the planned domains
/// (the servers it shares a planned room with, ascending: one `u32` each), then the domains met
/// later in the order they were met.
#[derive(Debug, Default)]
pub(crate) struct SlotOf {
    planned: Box<[ServerId]>,
    met: BTreeMap<ServerId, u32>,
}

impl SlotOf {
    /// Slots `0..domains.len()` for `domains` (ascending, distinct).
    pub fn with_planned(domains: Vec<ServerId>) -> SlotOf {
        debug_assert!(domains.windows(2).all(|pair| pair[0] < pair[1]));
        SlotOf {
            planned: domains.into_boxed_slice(),
            met: BTreeMap::new(),
        }
    }

    /// The slot of the server named `domain` (a world server's exact name `hs<i>.example`).
    pub fn get(&self, domain: &str) -> Option<u32> {
        self.get_id(server_of_name(domain)?)
    }

    /// The slot of server `domain`.
    pub fn get_id(&self, domain: ServerId) -> Option<u32> {
        match planned_position(&self.planned, domain) {
            Some(slot) => Some(slot as u32),
            None => self.met.get(&domain).copied(),
        }
    }

    /// The planned domains, ascending (slot `i` is the `i`-th).
    pub fn planned(&self) -> &[ServerId] {
        &self.planned
    }

    /// Records `slot` for a domain met outside the planned rooms.
    pub fn insert_met(&mut self, domain: ServerId, slot: u32) {
        self.met.insert(domain, slot);
    }
}

/// Where `domain` is in `planned` (ascending, distinct), if it is. The planned domains are
/// spread over the world's server indices, so the position interpolated between the first and
/// the last is within a few entries of the answer: a short walk from there reads one or two
/// cache lines where a binary search over a thousand entries reads ten. A walk that does not end
/// within [`INTERPOLATION_WALK`] steps falls back to the binary search. Any search of a sorted,
/// distinct slice finds the same position.
fn planned_position(planned: &[ServerId], domain: ServerId) -> Option<usize> {
    let (&first, &last) = (planned.first()?, planned.last()?);
    if domain < first || domain > last {
        return None;
    }
    let span = u64::from(last - first);
    let mut at = match span {
        0 => 0,
        _ => (u64::from(domain - first) * (planned.len() as u64 - 1) / span) as usize,
    };
    for _ in 0..INTERPOLATION_WALK {
        match planned[at].cmp(&domain) {
            std::cmp::Ordering::Equal => return Some(at),
            // Past the end or before the start cannot happen: first <= domain <= last.
            std::cmp::Ordering::Less if planned[at + 1] > domain => return None,
            std::cmp::Ordering::Less => at += 1,
            std::cmp::Ordering::Greater if planned[at - 1] < domain => return None,
            std::cmp::Ordering::Greater => at -= 1,
        }
    }
    planned.binary_search(&domain).ok()
}

/// Steps [`planned_position`] walks from its interpolated guess before a binary search.
const INTERPOLATION_WALK: usize = 8;

/// The first re-check timer of every warm-started key-cache slot of a world built with
/// shared warm starts (`KeyCache::with_warm_slots`), kept out of the event queue until due.
///
/// Warming slot `j` of server `a` at build time would have pushed `KeyTimer { a, j }` at the
/// due time of its domain's warm start, the pushes going server by server, slot by slot, before
/// any other push. The build reserves those pushes' sequence numbers instead (server `a`'s
/// slot `j` is `first_seq[a] + j`), and [`InitialTimers::feed`] pushes every timer whose time
/// has come under its reserved number before the queue is looked at: the queue then pops
/// exactly what it would have popped, in the same order, holding one entry per domain's
/// sharing servers at a time instead of one per pair of servers from the start.
#[derive(Debug, Default)]
pub(crate) struct InitialTimers {
    /// (due ms, domain, timer generation) of each domain's warm-start timer, ascending.
    due: Vec<(u64, ServerId, u32)>,
    /// The next entry of `due` to push.
    next: usize,
    /// Per server: the reserved sequence number of its slot 0's timer, or `None` (a newcomer
    /// warms nothing).
    first_seq: Vec<Option<u64>>,
}

impl InitialTimers {
    /// Timers at `due[domain]` (`None`: the warm start set no timer) for servers whose first
    /// reserved sequence number is `first_seq[server]`.
    pub fn new(due: &[Option<(u64, u32)>], first_seq: Vec<Option<u64>>) -> InitialTimers {
        let mut due: Vec<(u64, ServerId, u32)> = due
            .iter()
            .enumerate()
            .filter_map(|(domain, due)| {
                due.map(|(at_ms, generation)| (at_ms, domain as ServerId, generation))
            })
            .collect();
        due.sort_unstable();
        InitialTimers {
            due,
            next: 0,
            first_seq,
        }
    }

    /// Pushes every timer due no later than the queue's earliest event (all that remain if the
    /// queue is empty): for each such domain, one timer per (non-newcomer) server sharing a
    /// room with it, under its reserved sequence number.
    pub fn feed(&mut self, queue: &mut EventQueue<Ev>, servers: &[Homeserver]) {
        while let Some(&(at_ms, domain, generation)) = self.due.get(self.next) {
            if queue
                .peek_time_ms()
                .is_some_and(|earliest_ms| earliest_ms < at_ms)
            {
                return;
            }
            self.next += 1;
            // Sharing a planned room is symmetric: the servers with a slot for `domain` are
            // `domain`'s own planned domains.
            for &server in servers[domain as usize].slot_of.planned() {
                let Some(first_seq) = self.first_seq[server as usize] else {
                    continue;
                };
                let slot = servers[server as usize]
                    .slot_of
                    .planned()
                    .binary_search(&domain)
                    .expect("sharing a planned room is symmetric")
                    as u32;
                queue.push_reserved(
                    at_ms,
                    first_seq + u64::from(slot),
                    Ev::KeyTimer {
                        server,
                        slot,
                        generation,
                    },
                );
            }
        }
    }
}

/// The server index of `name` when it is exactly `server_name(index)` (`hs<i>.example`, `i`
/// without sign or leading zeros), without allocating.
fn server_of_name(name: &str) -> Option<ServerId> {
    let digits = name.strip_prefix("hs")?.strip_suffix(".example")?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

/// What one homeserver holds, as the room layer reads it, at one instant.
pub(crate) struct CacheKeys<'a> {
    /// The server's index, its own name (`server_name(own_id)`) and its own current key object
    /// (always trusted as current).
    pub own_id: ServerId,
    pub own_name: &'a str,
    pub own_keys: &'a ServerKeys,
    pub cache: &'a KeyCache,
    /// Domain name -> key-cache slot.
    pub slot_of: &'a SlotOf,
    /// Now, in the absolute milliseconds key objects use.
    pub now_abs_ms: i64,
    /// Historic key objects a notary handed out (RQ4; `fed/notary.rs`), used for a domain whose
    /// keys the cache does not hold.
    pub archive: &'a std::collections::BTreeMap<String, std::sync::Arc<ServerKeys>>,
}

impl KeySource for CacheKeys<'_> {
    fn held_keys(&self, server: &str) -> Option<HeldKeys<'_>> {
        // World servers are named `server_name(index)`, and `server_of_name` reads exactly
        // those names: the index decides "own name" without reading the (cold) name, and finds
        // the slot. Any other name is not the own name and has no slot.
        let index = server_of_name(server);
        if index == Some(self.own_id) {
            debug_assert_eq!(server, self.own_name);
            // A server's own key is current by definition: it is the one it signs with.
            return Some(HeldKeys {
                keys: self.own_keys,
                clamp: ValidityClamp::unclamped(self.now_abs_ms),
                trusted_past_expiry: true,
            });
        }
        let slot = self.slot_of.get_id(index?)?;
        let entry = &self.cache.slots()[slot as usize];
        let Some(keys) = entry.keys() else {
            // A notary's historic copy, as it was signed (its validity may be long past).
            return self.archive.get(server).map(|keys| HeldKeys {
                keys,
                clamp: ValidityClamp::unclamped(self.now_abs_ms),
                trusted_past_expiry: false,
            });
        };
        let policy = self.cache.policy();
        let clamp = if policy.clamp_7d {
            ValidityClamp::spec(entry.fetched_at_ms())
        } else {
            ValidityClamp::unclamped(entry.fetched_at_ms())
        };
        // Fail-open (MSC4430): a key the cache still believes valid after its validity passed
        // (the origin could not be reached) keeps counting as current.
        let trusted_past_expiry = policy.unreachable == Unreachable::FailOpen
            && entry.valid
            && self.now_abs_ms >= entry.valid_until_ms();
        Some(HeldKeys {
            keys,
            clamp,
            trusted_past_expiry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::server_name;

    #[test]
    fn server_of_name_accepts_exactly_the_world_names() {
        for index in [0, 7, 10, 19_999, u32::MAX] {
            assert_eq!(server_of_name(&server_name(index)), Some(index));
        }
        for name in [
            "hs.example",
            "hs01.example",
            "hs+1.example",
            "hs-1.example",
            "hs1.example.",
            "xhs1.example",
            "hs1.exampl",
            "hs4294967296.example",
            "hs1 .example",
        ] {
            assert_eq!(server_of_name(name), None, "{name}");
        }
    }

    proptest::proptest! {
        /// The interpolated walk finds what a binary search finds, on spread and clustered
        /// domain sets (clusters make the guess miss and the walk fall back), for members,
        /// gaps and domains outside the range.
        #[test]
        fn planned_position_equals_binary_search(
            spread in proptest::collection::btree_set(0u32..5_000, 0..300),
            cluster_start in 0u32..4_000_000_000,
            cluster in proptest::collection::btree_set(0u32..40, 0..40),
            probes in proptest::collection::vec(0u32..5_100, 0..60),
        ) {
            let mut planned: Vec<ServerId> = spread.into_iter().collect();
            planned.extend(cluster.iter().map(|offset| cluster_start + offset));
            planned.sort_unstable();
            planned.dedup();
            let cluster_probes = cluster.iter().map(|offset| cluster_start + offset + 1);
            for domain in probes.into_iter().chain(cluster_probes).chain([0, u32::MAX]) {
                proptest::prop_assert_eq!(
                    planned_position(&planned, domain),
                    planned.binary_search(&domain).ok(),
                    "{}", domain
                );
            }
        }
    }

    #[test]
    fn slots_are_planned_positions_then_met_domains() {
        let mut slot_of = SlotOf::with_planned(vec![2, 5, 9]);
        assert_eq!(slot_of.get("hs5.example"), Some(1));
        assert_eq!(slot_of.get("hs9.example"), Some(2));
        assert_eq!(slot_of.get("hs3.example"), None);
        assert_eq!(slot_of.get("hs05.example"), None);
        slot_of.insert_met(3, 3);
        assert_eq!(slot_of.get("hs3.example"), Some(3));
        assert_eq!(slot_of.get_id(2), Some(0));
    }
}
