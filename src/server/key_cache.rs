//! An observer's cache of other domains' server keys, and its re-check policy. Sans-IO: each
//! call takes the simulated time and pushes outputs (requests to send, timers, decisions).
//!
//! Each known domain has a slot. The slot tracks the key K that links would be signed with (the
//! current key at the last successful fetch), the clamped validity of the cached response,
//! the fetch in flight, and the backoff after failures. What a re-check answer means for K is
//! [`outcome_table`](super::outcome_table)'s decision.

use std::collections::VecDeque;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use crate::engine::SimRng;
use crate::matrix::server_keys::{SEVEN_DAYS_MS, ServerKeys};
use crate::net::{DomainId, Outcome};

use super::memo::{NotaryIdentity, VerifyMemo};
use super::outcome_table::{self, Effect, InvalidReason, RecheckResult};
use super::policy::{BackoffKind, KeyPolicy, Recheck, Transport};
use super::{absolute_ms, sim_ms};

/// Where a key request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The origin's `/_matrix/key/v2/server`.
    Direct,
    /// A notary's `/_matrix/key/v2/query` (index into the configured notaries).
    Notary(u32),
}

/// What the cache asks the world to do, or reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCacheOutput {
    /// Send a key request for the domain of `slot`.
    Send { slot: u32, via: Via },
    /// Call [`KeyCache::on_timer`] at `at_ms` with this generation.
    SetTimer {
        at_ms: u64,
        slot: u32,
        generation: u32,
    },
    /// The tracked key of `slot` changed status.
    Decision { slot: u32, decision: Decision },
}

/// A change in what the cache believes about a domain's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The tracked key became invalid: links signed with it would become unverified.
    Invalidated(InvalidReason),
    /// After being invalid, a valid current key is known again.
    Revalidated,
}

/// A fetched answer, classified (see [`classify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// 200 with verified keys.
    Keys(Arc<ServerKeys>),
    NotFound,
    /// No valid HTTP answer, or a status other than 200/404; the label says which.
    Unreachable(&'static str),
    /// 200, but the body does not parse or verify.
    Malformed,
    /// A notary that had nothing for the domain.
    NotaryEmpty,
}

/// Turns a network outcome into a [`Fetched`], checking signatures through the memo.
pub fn classify(
    outcome: &Outcome,
    via: Via,
    domain: DomainId,
    domain_name: &str,
    notaries: &[NotaryIdentity],
    memo: &mut VerifyMemo,
) -> Fetched {
    match outcome {
        Outcome::Ok(body) => {
            let checked = match via {
                Via::Direct => memo.check_direct(domain, domain_name, body),
                Via::Notary(index) => {
                    memo.check_notary(domain, domain_name, index, &notaries[index as usize], body)
                }
            };
            match checked {
                Ok(Some(keys)) => Fetched::Keys(keys),
                Ok(None) => Fetched::NotaryEmpty,
                Err(_) => Fetched::Malformed,
            }
        }
        Outcome::NotFound => Fetched::NotFound,
        other => Fetched::Unreachable(other.label()),
    }
}

/// Counters of one cache's work.
#[derive(Debug, Clone, Default)]
pub struct KeyCacheStats {
    pub requests_direct: u64,
    pub requests_notary: u64,
    pub notary_fallbacks: u64,
    pub answers_keys: u64,
    pub answers_not_found: u64,
    pub answers_unreachable: u64,
    pub answers_malformed: u64,
    pub coalesced: u64,
    pub queued: u64,
    pub blocked_by_backoff: u64,
    pub incoming_requests: u64,
    pub served_from_cache: u64,
    pub refreshes: u64,
    pub invalidations: [u64; 7],
    pub revalidations: u64,
    pub in_flight_peak: u32,
    pub waiting_peak: u32,
}

impl KeyCacheStats {
    /// Requests sent (direct and notary).
    pub fn requests(&self) -> u64 {
        self.requests_direct + self.requests_notary
    }

    /// Invalidations of every reason.
    pub fn invalidations_total(&self) -> u64 {
        self.invalidations.iter().sum()
    }
}

/// One known domain.
#[derive(Debug, Clone)]
pub struct Slot {
    pub domain: DomainId,
    keys: Option<Arc<ServerKeys>>,
    tracked: Option<(String, VerifyingKey)>,
    /// The cached response's validity after the clamp (absolute ms).
    valid_until_ms: i64,
    fetched_at_ms: i64,
    /// Whether the tracked key is currently believed valid.
    pub valid: bool,
    in_flight: u16,
    waiting: bool,
    failures: u32,
    backoff_interval_ms: u64,
    backoff_until_ms: u64,
    generation: u32,
    next_due_ms: Option<u64>,
}

impl Slot {
    fn new(domain: DomainId) -> Slot {
        Slot {
            domain,
            keys: None,
            tracked: None,
            valid_until_ms: i64::MIN,
            fetched_at_ms: i64::MIN,
            valid: false,
            in_flight: 0,
            waiting: false,
            failures: 0,
            backoff_interval_ms: 0,
            backoff_until_ms: 0,
            generation: 0,
            next_due_ms: None,
        }
    }

    /// The cached, verified key object.
    pub fn keys(&self) -> Option<&Arc<ServerKeys>> {
        self.keys.as_ref()
    }

    /// The clamped validity of the cached response (absolute ms).
    pub fn valid_until_ms(&self) -> i64 {
        self.valid_until_ms
    }
}

/// An observer's key cache.
pub struct KeyCache {
    policy: KeyPolicy,
    slots: Vec<Slot>,
    notary_count: u32,
    in_flight_total: u32,
    waiting: VecDeque<u32>,
    rng: SimRng,
    /// Bumped by a restart: answers to requests sent before it are dropped by the world.
    pub epoch: u32,
    pub stats: KeyCacheStats,
}

/// The least time between two re-checks of one domain, so a response that is already expired
/// cannot make the cache spin.
const MIN_RECHECK_GAP_MS: u64 = 1_000;

impl KeyCache {
    /// A cache for `domains` under `policy`, with `notary_count` notaries configured and `rng`
    /// for jitter and backoff draws.
    pub fn new(
        policy: KeyPolicy,
        domains: &[DomainId],
        notary_count: u32,
        rng: SimRng,
    ) -> KeyCache {
        KeyCache {
            policy,
            slots: domains.iter().map(|domain| Slot::new(*domain)).collect(),
            notary_count,
            in_flight_total: 0,
            waiting: VecDeque::new(),
            rng,
            epoch: 0,
            stats: KeyCacheStats::default(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &KeyPolicy {
        &self.policy
    }

    /// The slots, by slot index.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight_total
    }

    /// Starts a slot warm: as if `keys` had been fetched at `fetched_at_abs_ms` (before the
    /// run), then schedules its next re-check.
    pub fn warm(
        &mut self,
        now_ms: u64,
        slot: u32,
        keys: Arc<ServerKeys>,
        fetched_at_abs_ms: i64,
        out: &mut Vec<KeyCacheOutput>,
    ) {
        let valid_until_ms = self.clamp(keys.valid_until_ts_ms, fetched_at_abs_ms);
        let entry = &mut self.slots[slot as usize];
        entry.tracked = first_key(&keys);
        entry.keys = Some(keys);
        entry.valid_until_ms = valid_until_ms;
        entry.fetched_at_ms = fetched_at_abs_ms;
        entry.valid = true;
        self.schedule_after_success(now_ms, slot, out);
    }

    /// A timer set by this cache fires.
    pub fn on_timer(
        &mut self,
        _now_ms: u64,
        slot: u32,
        generation: u32,
        out: &mut Vec<KeyCacheOutput>,
    ) {
        let entry = &mut self.slots[slot as usize];
        if entry.generation != generation {
            return; // superseded by a later timer
        }
        entry.next_due_ms = None;
        self.start_fetch(slot, out);
    }

    /// A signed request from the slot's domain arrives: with an on-demand policy this is what
    /// makes the cache fetch (when the cached key is missing or expired).
    pub fn on_incoming_request(&mut self, now_ms: u64, slot: u32, out: &mut Vec<KeyCacheOutput>) {
        self.stats.incoming_requests += 1;
        let now_abs_ms = absolute_ms(now_ms);
        let entry = &self.slots[slot as usize];
        if entry.keys.is_some() && entry.valid && entry.valid_until_ms > now_abs_ms {
            self.stats.served_from_cache += 1;
            return;
        }
        let backoff_blocks = matches!(
            self.policy.backoff,
            BackoffKind::Msc4499 | BackoffKind::PerDomainGlobal
        );
        if backoff_blocks && now_ms < entry.backoff_until_ms {
            self.stats.blocked_by_backoff += 1;
            return;
        }
        self.start_fetch(slot, out);
    }

    /// An answer (or failure) to a request for `slot` sent `via` arrives.
    pub fn on_response(
        &mut self,
        now_ms: u64,
        slot: u32,
        via: Via,
        fetched: Fetched,
        out: &mut Vec<KeyCacheOutput>,
    ) {
        let now_abs_ms = absolute_ms(now_ms);
        // A notary that cannot vouch for a current key: ask the origin instead, as the same
        // request (it keeps its place under the concurrency cap).
        if let Via::Notary(_) = via {
            let usable = matches!(&fetched, Fetched::Keys(keys)
                if self.clamp(keys.valid_until_ts_ms, now_abs_ms) > now_abs_ms);
            if !usable {
                self.stats.notary_fallbacks += 1;
                self.stats.requests_direct += 1;
                out.push(KeyCacheOutput::Send {
                    slot,
                    via: Via::Direct,
                });
                return;
            }
        }
        self.finish_request(slot, out);
        let result = match &fetched {
            Fetched::Keys(keys) => {
                self.stats.answers_keys += 1;
                RecheckResult::Keys(keys)
            }
            Fetched::NotFound => {
                self.stats.answers_not_found += 1;
                RecheckResult::NotFound
            }
            Fetched::Unreachable(_) | Fetched::NotaryEmpty => {
                self.stats.answers_unreachable += 1;
                RecheckResult::Unreachable
            }
            Fetched::Malformed => {
                self.stats.answers_malformed += 1;
                RecheckResult::Malformed
            }
        };
        let effective_valid_until_ms = match &fetched {
            Fetched::Keys(keys) => self.clamp(keys.valid_until_ts_ms, now_abs_ms),
            _ => i64::MIN,
        };
        let entry = &mut self.slots[slot as usize];
        let key_expired = now_abs_ms >= entry.valid_until_ms;
        let effect = match (&entry.tracked, &fetched) {
            (Some((key_id, key)), _) => {
                let row =
                    outcome_table::row(result, key_id, key, effective_valid_until_ms, now_abs_ms);
                outcome_table::effect(
                    row,
                    self.policy.unreachable,
                    self.policy.malformed,
                    key_expired,
                )
            }
            // Nothing tracked yet (first fetch, or after a database loss): any usable key is new.
            (None, Fetched::Keys(_)) if effective_valid_until_ms > now_abs_ms => Effect::Refresh,
            (None, _) => Effect::Unchanged,
        };
        let usable_keys = match fetched {
            Fetched::Keys(keys) if effective_valid_until_ms > now_abs_ms => Some(keys),
            _ => None,
        };
        match effect {
            Effect::Refresh => {
                let keys = usable_keys.expect("Refresh needs usable keys");
                self.adopt(slot, keys, effective_valid_until_ms, now_abs_ms, out);
                self.stats.refreshes += 1;
                self.schedule_after_success(now_ms, slot, out);
            }
            Effect::Invalidate(reason) => {
                let entry = &mut self.slots[slot as usize];
                if entry.valid {
                    entry.valid = false;
                    self.stats.invalidations[reason as usize] += 1;
                    out.push(KeyCacheOutput::Decision {
                        slot,
                        decision: Decision::Invalidated(reason),
                    });
                }
                match usable_keys {
                    // The domain answers with another current key: track it from now on.
                    Some(keys) => {
                        self.adopt(slot, keys, effective_valid_until_ms, now_abs_ms, out);
                        self.schedule_after_success(now_ms, slot, out);
                    }
                    None => {
                        let entry = &mut self.slots[slot as usize];
                        if reason != InvalidReason::UnreachableAfterExpiry {
                            entry.keys = None;
                        }
                        self.schedule_after_failure(now_ms, slot, out);
                    }
                }
            }
            Effect::Unchanged => self.schedule_after_failure(now_ms, slot, out),
        }
    }

    /// Database loss: every slot forgets its keys; periodic policies fetch them all again.
    pub fn forget_all(&mut self, now_ms: u64, out: &mut Vec<KeyCacheOutput>) {
        for index in 0..self.slots.len() {
            let domain = self.slots[index].domain;
            let generation = self.slots[index].generation + 1;
            self.slots[index] = Slot {
                generation,
                ..Slot::new(domain)
            };
        }
        self.in_flight_total = 0;
        self.waiting.clear();
        self.epoch += 1;
        if self.is_periodic() || self.policy.recheck == Recheck::Never {
            for slot in 0..self.slots.len() as u32 {
                self.set_timer(now_ms, slot, out);
            }
        }
    }

    /// Restart after a crash: requests in flight are lost; due timers fire now.
    pub fn resume(&mut self, now_ms: u64, out: &mut Vec<KeyCacheOutput>) {
        self.in_flight_total = 0;
        self.waiting.clear();
        self.epoch += 1;
        for slot in 0..self.slots.len() as u32 {
            let entry = &mut self.slots[slot as usize];
            entry.in_flight = 0;
            entry.waiting = false;
            if let Some(due_ms) = entry.next_due_ms {
                self.set_timer(due_ms.max(now_ms), slot, out);
            }
        }
    }

    fn is_periodic(&self) -> bool {
        !matches!(self.policy.recheck, Recheck::OnDemand | Recheck::Never)
    }

    fn clamp(&self, valid_until_ts_ms: i64, fetched_at_abs_ms: i64) -> i64 {
        if self.policy.clamp_7d {
            valid_until_ts_ms.min(fetched_at_abs_ms.saturating_add(SEVEN_DAYS_MS))
        } else {
            valid_until_ts_ms
        }
    }

    fn adopt(
        &mut self,
        slot: u32,
        keys: Arc<ServerKeys>,
        valid_until_ms: i64,
        now_abs_ms: i64,
        out: &mut Vec<KeyCacheOutput>,
    ) {
        let entry = &mut self.slots[slot as usize];
        let tracked_still_listed = entry
            .tracked
            .as_ref()
            .is_some_and(|(key_id, key)| keys.verify_keys.get(key_id) == Some(key));
        if !tracked_still_listed {
            entry.tracked = first_key(&keys);
        }
        entry.keys = Some(keys);
        entry.valid_until_ms = valid_until_ms;
        entry.fetched_at_ms = now_abs_ms;
        entry.failures = 0;
        entry.backoff_interval_ms = 0;
        entry.backoff_until_ms = 0;
        if !entry.valid {
            entry.valid = true;
            self.stats.revalidations += 1;
            out.push(KeyCacheOutput::Decision {
                slot,
                decision: Decision::Revalidated,
            });
        }
    }

    fn start_fetch(&mut self, slot: u32, out: &mut Vec<KeyCacheOutput>) {
        let entry = &mut self.slots[slot as usize];
        if entry.waiting || (entry.in_flight > 0 && self.policy.coalesce) {
            self.stats.coalesced += 1;
            return;
        }
        let cap = self.policy.max_in_flight;
        if cap > 0 && self.in_flight_total >= cap {
            entry.waiting = true;
            self.waiting.push_back(slot);
            self.stats.queued += 1;
            self.stats.waiting_peak = self.stats.waiting_peak.max(self.waiting.len() as u32);
            return;
        }
        self.send(slot, out);
    }

    fn send(&mut self, slot: u32, out: &mut Vec<KeyCacheOutput>) {
        let entry = &mut self.slots[slot as usize];
        entry.in_flight += 1;
        self.in_flight_total += 1;
        self.stats.in_flight_peak = self.stats.in_flight_peak.max(self.in_flight_total);
        let via = match self.policy.transport {
            Transport::NotaryFirst if self.notary_count > 0 => {
                self.stats.requests_notary += 1;
                Via::Notary(entry.domain % self.notary_count)
            }
            _ => {
                self.stats.requests_direct += 1;
                Via::Direct
            }
        };
        out.push(KeyCacheOutput::Send { slot, via });
    }

    fn finish_request(&mut self, slot: u32, out: &mut Vec<KeyCacheOutput>) {
        let entry = &mut self.slots[slot as usize];
        entry.in_flight = entry.in_flight.saturating_sub(1);
        self.in_flight_total = self.in_flight_total.saturating_sub(1);
        let cap = self.policy.max_in_flight;
        while cap > 0 && self.in_flight_total < cap {
            let Some(next) = self.waiting.pop_front() else {
                break;
            };
            self.slots[next as usize].waiting = false;
            self.send(next, out);
        }
    }

    fn schedule_after_success(&mut self, now_ms: u64, slot: u32, out: &mut Vec<KeyCacheOutput>) {
        let entry = &self.slots[slot as usize];
        let valid_until_ms = sim_ms(entry.valid_until_ms);
        let remaining_ms = valid_until_ms.saturating_sub(now_ms);
        let due_ms = match self.policy.recheck {
            Recheck::AtExpiry => valid_until_ms,
            Recheck::Interval => now_ms + self.policy.recheck_interval_ms,
            Recheck::Jittered => {
                let early = self.rng.unit_f64() * self.policy.jitter_fraction * remaining_ms as f64;
                valid_until_ms - early as u64
            }
            Recheck::HalfLife => now_ms + remaining_ms / 2,
            Recheck::OnDemand | Recheck::Never => return,
        };
        self.set_timer(due_ms.max(now_ms + MIN_RECHECK_GAP_MS), slot, out);
    }

    fn schedule_after_failure(&mut self, now_ms: u64, slot: u32, out: &mut Vec<KeyCacheOutput>) {
        let policy = &self.policy;
        let entry = &mut self.slots[slot as usize];
        entry.failures += 1;
        let interval_ms = match policy.backoff {
            BackoffKind::None => policy.retry_interval_ms,
            _ if entry.failures == 1 => policy.backoff_floor_ms,
            _ => {
                let factor = policy.backoff_jitter_low
                    + self.rng.unit_f64()
                        * (policy.backoff_jitter_high - policy.backoff_jitter_low);
                let grown = entry.backoff_interval_ms as f64 * policy.backoff_multiplier * factor;
                (grown as u64).min(policy.backoff_cap_ms)
            }
        };
        entry.backoff_interval_ms = interval_ms;
        entry.backoff_until_ms = now_ms + interval_ms;
        if policy.recheck != Recheck::OnDemand {
            let due_ms = entry.backoff_until_ms;
            self.set_timer(due_ms, slot, out);
        }
    }

    fn set_timer(&mut self, at_ms: u64, slot: u32, out: &mut Vec<KeyCacheOutput>) {
        let entry = &mut self.slots[slot as usize];
        entry.generation += 1;
        entry.next_due_ms = Some(at_ms);
        out.push(KeyCacheOutput::SetTimer {
            at_ms,
            slot,
            generation: entry.generation,
        });
    }
}

fn first_key(keys: &ServerKeys) -> Option<(String, VerifyingKey)> {
    keys.verify_keys
        .iter()
        .next()
        .map(|(key_id, key)| (key_id.clone(), *key))
}
