//! Per observer × domain key validity: the log of every change (invalidation with its reason,
//! revalidation), the domains' honesty over time, and watches on scripted key events.
//!
//! Under MSC4430 a member link is verified exactly while the observer holds the claimed
//! domain's current key as valid, so this is the key-level answer to the link questions:
//! containment after a rotation (RQ2), the fail-open residual window (RQ3), honest link-hours
//! lost to partitions (RQ6), a lying server's split (RQ10), domain reuse (RQ11).
//!
//! A *watch* is opened when a scripted action changes what a domain serves (rotate-key,
//! compromise, decommission, lose-key, reregister, lying-server, key-flapping, depart) at t0.
//! For each observer knowing the domain it records the first time the observer no longer holds
//! the key K the domain served at t0 as valid (for an event with an honest timestamp), the same
//! for an event whose timestamp the attacker pinned just before t0 (only P0's v5 rule and P7
//! accept old keys for past timestamps), and the first time it holds another key valid.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;

use crate::net::DomainId;
use crate::scenario::ActionKind;
use crate::server::key_cache::{KeyCache, Slot};
use crate::server::outcome_table::InvalidReason;
use crate::server::policy::OldKeys;

/// A change in an observer's view of one domain's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The key became invalid (the outcome table's reason).
    Invalidated(InvalidReason),
    /// The observer lost its cache (database loss).
    Forgotten,
    /// A valid current key is held again.
    Revalidated,
}

impl Change {
    /// Whether the observer holds a valid key after this change.
    pub fn valid_after(self) -> bool {
        self == Change::Revalidated
    }

    /// A stable label for CSV files.
    pub fn label(self) -> &'static str {
        match self {
            Change::Invalidated(reason) => reason.label(),
            Change::Forgotten => "forgotten",
            Change::Revalidated => "revalidated",
        }
    }
}

/// One change of one slot at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub at_ms: u64,
    pub slot: u32,
    pub change: Change,
}

/// One observer's view of one watched domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchPair {
    pub observer: u32,
    pub slot: u32,
    /// First time K stopped verifying events stamped now (`None`: not within the run).
    pub dropped_ms: Option<u64>,
    /// First time K stopped verifying events whose timestamp is pinned just before t0.
    pub pinned_dropped_ms: Option<u64>,
    /// First time the observer held another key of the domain valid.
    pub new_key_ms: Option<u64>,
}

/// A scripted key event on one domain at `t0_ms`, and every observer's reaction.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The action's label (metrics are grouped by it).
    pub label: String,
    pub kind: ActionKind,
    pub domain: DomainId,
    pub t0_ms: u64,
    pub key_id: String,
    pub key: VerifyingKey,
    /// For a compromise: the first rotation (or decommission, key loss, re-registration) of
    /// the domain after t0, when the owner reacted.
    pub detected_at_ms: Option<u64>,
    pub pairs: Vec<WatchPair>,
}

/// The tracker the world feeds.
#[derive(Debug, Default)]
pub struct Tracker {
    pub watches: Vec<Watch>,
    /// (observer, slot) -> (watch, pair) pairs still open.
    open: BTreeMap<(u32, u32), Vec<(u32, u32)>>,
    /// Per domain that changed: (at_ms, honest and alive from then on).
    honesty: BTreeMap<DomainId, Vec<(u64, bool)>>,
}

/// Whether a slot accepts `key` for an event stamped `pinned_abs_ms` under the v5 rule: the
/// key is the cached current key with its validity at or after the stamp, or sits in
/// `old_verify_keys` with `expired_ts` at or after it. The validity is the slot's, which the
/// policy's 7-day clamp has already capped at fetch time + 7 days (the spec's rule); the
/// response's own `valid_until_ts` would accept stamps past that cap.
fn accepts_pinned(slot: &Slot, key_id: &str, key: &VerifyingKey, pinned_abs_ms: i64) -> bool {
    let Some(keys) = slot.keys() else {
        return false;
    };
    let current =
        keys.verify_keys.get(key_id) == Some(key) && slot.valid_until_ms() >= pinned_abs_ms;
    let old = keys
        .old_verify_keys
        .get(key_id)
        .is_some_and(|old| old.key == *key && old.expired_ts_ms >= pinned_abs_ms);
    current || old
}

impl Tracker {
    /// Opens a watch on `domain`, whose current key at `t0_ms` is (`key_id`, `key`), for the
    /// observers given as (observer, slot, cache), and records who already does not hold it.
    #[allow(clippy::too_many_arguments)]
    pub fn open_watch<'cache>(
        &mut self,
        label: String,
        kind: ActionKind,
        domain: DomainId,
        t0_ms: u64,
        key_id: String,
        key: VerifyingKey,
        observers: impl Iterator<Item = (u32, u32, &'cache KeyCache)>,
    ) {
        let watch_index = self.watches.len() as u32;
        let mut watch = Watch {
            label,
            kind,
            domain,
            t0_ms,
            key_id,
            key,
            detected_at_ms: None,
            pairs: Vec::new(),
        };
        let mut caches = Vec::new();
        for (observer, slot, cache) in observers {
            watch.pairs.push(WatchPair {
                observer,
                slot,
                dropped_ms: None,
                pinned_dropped_ms: None,
                new_key_ms: None,
            });
            caches.push(cache);
        }
        for (pair_index, cache) in caches.into_iter().enumerate() {
            let pair = &mut watch.pairs[pair_index];
            if !Self::update_pair(&watch.key_id, &watch.key, t0_ms, pair, cache, t0_ms) {
                self.open
                    .entry((pair.observer, pair.slot))
                    .or_default()
                    .push((watch_index, pair_index as u32));
            }
        }
        self.watches.push(watch);
    }

    /// Re-reads `observer`'s `slot` after its cache may have changed; closes finished pairs.
    pub fn evaluate(&mut self, observer: u32, slot: u32, cache: &KeyCache, now_ms: u64) {
        let Some(open) = self.open.get_mut(&(observer, slot)) else {
            return;
        };
        let watches = &mut self.watches;
        open.retain(|(watch_index, pair_index)| {
            let watch = &mut watches[*watch_index as usize];
            let pair = &mut watch.pairs[*pair_index as usize];
            !Self::update_pair(&watch.key_id, &watch.key, watch.t0_ms, pair, cache, now_ms)
        });
        if open.is_empty() {
            self.open.remove(&(observer, slot));
        }
    }

    /// Every open pair of `observer` (after a database loss or restart).
    pub fn evaluate_observer(&mut self, observer: u32, cache: &KeyCache, now_ms: u64) {
        let slots: Vec<u32> = self
            .open
            .range((observer, 0)..=(observer, u32::MAX))
            .map(|((_, slot), _)| *slot)
            .collect();
        for slot in slots {
            self.evaluate(observer, slot, cache, now_ms);
        }
    }

    /// Updates one pair; returns whether all of its times are known.
    fn update_pair(
        key_id: &str,
        key: &VerifyingKey,
        t0_ms: u64,
        pair: &mut WatchPair,
        cache: &KeyCache,
        now_ms: u64,
    ) -> bool {
        let slot = &cache.slots()[pair.slot as usize];
        let holds = slot.holds_valid(key_id, key);
        if pair.dropped_ms.is_none() && !holds {
            pair.dropped_ms = Some(now_ms);
        }
        let pinned_abs_ms = crate::server::absolute_ms(t0_ms) - 1;
        let pinned = holds
            || (cache.policy().old_keys == OldKeys::UntilExpiredTs
                && accepts_pinned(slot, key_id, key, pinned_abs_ms));
        if pair.pinned_dropped_ms.is_none() && !pinned {
            pair.pinned_dropped_ms = Some(now_ms);
        }
        if pair.new_key_ms.is_none() && slot.valid && slot.tracked().is_some() && !holds {
            pair.new_key_ms = Some(now_ms);
        }
        pair.dropped_ms.is_some() && pair.pinned_dropped_ms.is_some() && pair.new_key_ms.is_some()
    }

    /// The owner of `domain` reacted at `now_ms` (rotation, decommission, ...): compromise
    /// watches on it learn their detection time.
    pub fn owner_reacted(&mut self, domain: DomainId, now_ms: u64) {
        for watch in &mut self.watches {
            if watch.domain == domain
                && watch.kind == ActionKind::Compromise
                && watch.detected_at_ms.is_none()
            {
                watch.detected_at_ms = Some(now_ms);
            }
        }
    }

    /// From `now_ms`, `domain` is (or is not) alive and serving its keys honestly.
    pub fn set_honest(&mut self, domain: DomainId, now_ms: u64, honest: bool) {
        self.honesty
            .entry(domain)
            .or_default()
            .push((now_ms, honest));
    }

    /// The intervals [from, to) within [0, end_ms) during which `domain` was honest and alive,
    /// given whether it was at the start.
    pub fn honest_intervals(
        &self,
        domain: DomainId,
        initially: bool,
        end_ms: u64,
    ) -> Vec<(u64, u64)> {
        let mut intervals = Vec::new();
        let mut state = initially;
        let mut since_ms = 0;
        for (at_ms, honest) in self.honesty.get(&domain).into_iter().flatten() {
            if *honest != state {
                if state && *at_ms > since_ms {
                    intervals.push((since_ms, *at_ms));
                }
                state = *honest;
                since_ms = *at_ms;
            }
        }
        if state && end_ms > since_ms {
            intervals.push((since_ms, end_ms));
        }
        intervals
    }
}

/// The intervals [from, to) within [0, end_ms) during which a slot was invalid, from its
/// transitions in time order (slots start valid: the warm start).
pub fn invalid_intervals(transitions: &[Transition], end_ms: u64) -> Vec<(u64, u64)> {
    let mut intervals = Vec::new();
    let mut invalid_since: Option<u64> = None;
    for transition in transitions {
        match (transition.change.valid_after(), invalid_since) {
            (false, None) => invalid_since = Some(transition.at_ms),
            (true, Some(since_ms)) => {
                if transition.at_ms > since_ms {
                    intervals.push((since_ms, transition.at_ms));
                }
                invalid_since = None;
            }
            _ => {}
        }
    }
    if let Some(since_ms) = invalid_since
        && end_ms > since_ms
    {
        intervals.push((since_ms, end_ms));
    }
    intervals
}

/// The total length of the intersection of two sorted, disjoint interval lists.
pub fn overlap_ms(a: &[(u64, u64)], b: &[(u64, u64)]) -> u64 {
    let (mut i, mut j, mut total) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        let start = a[i].0.max(b[j].0);
        let end = a[i].1.min(b[j].1);
        if end > start {
            total += end - start;
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    total
}

/// The nearest-rank `fraction` quantile of times where `None` means "never within the run":
/// `None` when fewer than that fraction of the values are known.
pub fn quantile_of_known(values: &[Option<u64>], fraction: f64) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted: Vec<u64> = values.iter().flatten().copied().collect();
    sorted.sort_unstable();
    let rank = ((fraction * values.len() as f64).ceil() as usize).clamp(1, values.len());
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 30-day key fetched at t: with the 7-day clamp a stamp at t + 10 days is past the
    /// key's validity; without it the stamp is accepted (found in session 25's review).
    #[test]
    fn pinned_stamps_respect_the_seven_day_clamp() {
        use crate::engine::SimRng;
        use crate::engine::time::DAY_MS;
        use crate::server::EPOCH_MS;
        use crate::server::memo::check_direct;
        use crate::server::policy::KeyPolicy;
        use crate::server::publisher::KeyPublisher;
        let name = "a.example";
        let mut publisher = KeyPublisher::new(name.into(), 30 * DAY_MS, SimRng::stream(1, "k", 0));
        let body = publisher.publish_at(EPOCH_MS);
        let keys = check_direct(name, &body).unwrap().unwrap();
        let (key_id, key) = keys
            .verify_keys
            .iter()
            .next()
            .map(|(id, key)| (id.clone(), *key))
            .unwrap();
        for (clamp, accepted) in [(true, false), (false, true)] {
            let mut policy = KeyPolicy::msc4430();
            policy.clamp_7d = clamp;
            let mut cache = KeyCache::new(policy, &[0], 0, SimRng::stream(1, "c", 0));
            cache.warm(0, 0, keys.clone(), EPOCH_MS, &mut Vec::new());
            let slot = &cache.slots()[0];
            let stamp_ms = EPOCH_MS + 10 * DAY_MS as i64;
            assert_eq!(
                accepts_pinned(slot, &key_id, &key, stamp_ms),
                accepted,
                "clamp {clamp}"
            );
            assert!(accepts_pinned(
                slot,
                &key_id,
                &key,
                EPOCH_MS + DAY_MS as i64
            ));
        }
    }

    #[test]
    fn invalid_intervals_follow_the_transitions() {
        let transitions = [
            Transition {
                at_ms: 10,
                slot: 0,
                change: Change::Invalidated(InvalidReason::NotFound),
            },
            Transition {
                at_ms: 20,
                slot: 0,
                change: Change::Revalidated,
            },
            Transition {
                at_ms: 30,
                slot: 0,
                change: Change::Forgotten,
            },
        ];
        assert_eq!(
            invalid_intervals(&transitions, 100),
            vec![(10, 20), (30, 100)]
        );
        assert_eq!(overlap_ms(&[(10, 20), (30, 100)], &[(15, 40)]), 15);
    }

    #[test]
    fn quantiles_are_none_when_too_few_values_are_known() {
        let values = [Some(5), Some(1), None, Some(3)];
        assert_eq!(quantile_of_known(&values, 0.5), Some(3));
        assert_eq!(quantile_of_known(&values, 0.75), Some(5));
        assert_eq!(quantile_of_known(&values, 1.0), None);
    }

    #[test]
    fn honesty_intervals() {
        let mut tracker = Tracker::default();
        tracker.set_honest(3, 50, false);
        tracker.set_honest(3, 80, true);
        assert_eq!(
            tracker.honest_intervals(3, true, 100),
            vec![(0, 50), (80, 100)]
        );
        assert_eq!(tracker.honest_intervals(4, false, 100), vec![]);
    }
}
