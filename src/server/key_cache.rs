//! An observer's cache of other domains' server keys, and its re-check policy. Sans-IO: each
//! call takes the simulated time and pushes outputs (requests to send, timers, decisions).
//!
//! Each known domain has a slot. The slot tracks the key K that links would be signed with (the
//! current key at the last successful fetch), the clamped validity of the cached response,
//! the fetch in flight, and the backoff after failures. What a re-check answer means for K is
//! [`outcome_table`](super::outcome_table)'s decision.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use crate::engine::SimRng;
use crate::matrix::server_keys::{SEVEN_DAYS_MS, ServerKeys};
use crate::net::{DomainId, Outcome};

use super::memo::{NotaryIdentity, VerifyMemo};
use super::outcome_table::{self, Effect, InvalidReason, RecheckResult};
use super::policy::{BackoffKind, KeyBinding, KeyPolicy, Recheck, Transport};
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

/// Why a fetch was started (RQ12's per-purpose request counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Purpose {
    /// A scheduled re-check (at expiry, interval, jittered, half-life).
    Periodic,
    /// A retry after a failed re-check (backoff).
    Retry,
    /// An incoming signed request found the key missing or expired (on-demand).
    OnDemand,
    /// A rotating origin's notification (P6 push).
    Push,
}

impl Purpose {
    /// Every purpose, in a stable order.
    pub const ALL: [Purpose; 4] = [
        Purpose::Periodic,
        Purpose::Retry,
        Purpose::OnDemand,
        Purpose::Push,
    ];

    /// A stable snake_case label.
    pub fn label(self) -> &'static str {
        match self {
            Purpose::Periodic => "periodic",
            Purpose::Retry => "retry",
            Purpose::OnDemand => "on_demand",
            Purpose::Push => "push",
        }
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
    /// Fetches started (sent, queued or coalesced away not counted), by [`Purpose`] index.
    pub fetches_by_purpose: [u64; 4],
    /// Pushes received.
    pub pushes_received: u64,
    /// Key entries of answers ignored because their key ID was already bound to another body
    /// (first-seen-wins, P9).
    pub key_collisions: u64,
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
    /// The key object whose first current key is the tracked key K (shared with every cache
    /// that fetched the same answer, so a slot stores 8 bytes rather than a copy of the key).
    tracked: Option<Arc<ServerKeys>>,
    /// The cached response's validity after the clamp (absolute ms).
    valid_until_ms: i64,
    fetched_at_ms: i64,
    /// Whether the tracked key is currently believed valid.
    pub valid: bool,
    in_flight: u16,
    waiting: bool,
    /// The failures since the last success and the backoff they set (`None`: no failure since,
    /// which is most slots most of the time; boxed to keep the slot at 64 bytes).
    backoff: Option<Box<Backoff>>,
    generation: u32,
    /// When the live re-check timer is due, if `has_next_due`.
    next_due_ms: u64,
    has_next_due: bool,
    /// Whether the last successful fetch returned the validity already cached.
    unchanged: bool,
}

/// A slot's failures since its last success and the backoff they set.
#[derive(Debug, Clone, Default)]
struct Backoff {
    failures: u32,
    interval_ms: u64,
    until_ms: u64,
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
            backoff: None,
            generation: 0,
            next_due_ms: 0,
            has_next_due: false,
            unchanged: false,
        }
    }

    /// Until when (simulated ms) a backoff after failures lasts (0 if no failure since the last
    /// success).
    fn backoff_until_ms(&self) -> u64 {
        self.backoff.as_ref().map_or(0, |backoff| backoff.until_ms)
    }

    /// The cached, verified key object.
    pub fn keys(&self) -> Option<&Arc<ServerKeys>> {
        self.keys.as_ref()
    }

    /// The clamped validity of the cached response (absolute ms).
    pub fn valid_until_ms(&self) -> i64 {
        self.valid_until_ms
    }

    /// When the cached response was fetched (absolute ms; `i64::MIN` if never).
    pub fn fetched_at_ms(&self) -> i64 {
        self.fetched_at_ms
    }

    /// The key object whose first key is the tracked key K, if any (shared: a caller that needs
    /// K after the slot changes keeps this instead of reading K out of it now).
    pub fn tracked_keys(&self) -> Option<&Arc<ServerKeys>> {
        self.tracked.as_ref()
    }

    /// Whether a fetch for this domain is in flight or queued.
    pub fn fetch_pending(&self) -> bool {
        self.in_flight > 0 || self.waiting
    }

    /// The key K links would be signed with (its ID and bytes), valid or not.
    pub fn tracked(&self) -> Option<(&str, &VerifyingKey)> {
        self.tracked
            .as_deref()
            .and_then(first_key)
            .map(|(key_id, key)| (key_id.as_str(), key))
    }

    /// Whether this slot holds `key_id` with these bytes as its valid current key.
    pub fn holds_valid(&self, key_id: &str, key: &VerifyingKey) -> bool {
        self.valid && self.tracked() == Some((key_id, key))
    }
}

/// A cache's slots, by slot index. Usually one [`Slot`] each; a cache made with
/// [`KeyCache::with_warm_slots`] keeps a slot that nothing has changed since its warm start as
/// a reference to the warm-start slot of its domain (4 bytes), and makes it its own on the
/// first change (indexing mutably).
#[derive(Debug, Clone)]
pub struct Slots {
    own: Vec<Slot>,
    warm: Option<WarmRefs>,
}

/// The lazy part of [`Slots`].
#[derive(Debug, Clone)]
struct WarmRefs {
    /// Per slot: an index into `Slots::own`, or `WARM | domain` for a slot still in its warm
    /// start.
    refs: Vec<u32>,
    /// The warm-start slot of every domain (shared by the caches of one world).
    by_domain: Arc<[Slot]>,
}

/// Marks a slot reference that points at its domain's warm-start slot.
const WARM: u32 = 1 << 31;

impl Slots {
    /// The number of slots.
    pub fn len(&self) -> usize {
        match &self.warm {
            None => self.own.len(),
            Some(warm) => warm.refs.len(),
        }
    }

    /// Whether there is no slot.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slots in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        (0..self.len()).map(|slot| &self[slot])
    }

    fn push(&mut self, slot: Slot) {
        if let Some(warm) = &mut self.warm {
            warm.refs.push(self.own.len() as u32);
        }
        self.own.push(slot);
    }
}

impl std::ops::Index<usize> for Slots {
    type Output = Slot;

    fn index(&self, slot: usize) -> &Slot {
        match &self.warm {
            None => &self.own[slot],
            Some(warm) => {
                let reference = warm.refs[slot];
                if reference & WARM != 0 {
                    &warm.by_domain[(reference & !WARM) as usize]
                } else {
                    &self.own[reference as usize]
                }
            }
        }
    }
}

impl std::ops::IndexMut<usize> for Slots {
    fn index_mut(&mut self, slot: usize) -> &mut Slot {
        match &mut self.warm {
            None => &mut self.own[slot],
            Some(warm) => {
                let reference = warm.refs[slot];
                let own = if reference & WARM != 0 {
                    // First change: the slot becomes the cache's own, starting from the
                    // warm-start slot it was.
                    let own = self.own.len() as u32;
                    self.own
                        .push(warm.by_domain[(reference & !WARM) as usize].clone());
                    warm.refs[slot] = own;
                    own
                } else {
                    reference
                };
                &mut self.own[own as usize]
            }
        }
    }
}

/// What [`KeyCache::warm_starts`] returns: each domain's warm-start slot, and the re-check
/// timer its warm start set (`(at_ms, generation)`), if any.
pub type WarmStarts = (Arc<[Slot]>, Vec<Option<(u64, u32)>>);

/// An observer's key cache.
pub struct KeyCache {
    policy: KeyPolicy,
    slots: Slots,
    notary_count: u32,
    in_flight_total: u32,
    waiting: VecDeque<u32>,
    rng: SimRng,
    /// Bumped by a restart: answers to requests sent before it are dropped by the world.
    pub epoch: u32,
    pub stats: KeyCacheStats,
    /// This server's clock minus the true time (ms): applied to every validity comparison
    /// (clock skew); timers still fire on the true simulated clock.
    clock_offset_ms: i64,
    /// Under [`KeyBinding::FirstSeenWins`]: the body each (slot, key ID) was first seen with,
    /// current or old; kept past expiry and invalidation (MSC4499: no "collision amnesia").
    /// Empty under [`KeyBinding::Latest`].
    bindings: BTreeMap<(u32, String), VerifyingKey>,
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
            slots: Slots {
                own: domains.iter().map(|domain| Slot::new(*domain)).collect(),
                warm: None,
            },
            notary_count,
            in_flight_total: 0,
            waiting: VecDeque::new(),
            rng,
            epoch: 0,
            stats: KeyCacheStats::default(),
            clock_offset_ms: 0,
            bindings: BTreeMap::new(),
        }
    }

    /// Whether warming a slot at time 0 ([`KeyCache::warm`]) gives the same slot and the same
    /// timer in every cache of `policy` (it draws nothing from the cache's own random stream),
    /// so [`KeyCache::warm_starts`] and [`KeyCache::with_warm_slots`] may stand for it.
    pub fn warm_start_is_shared(policy: &KeyPolicy) -> bool {
        // First-seen-wins records each cache's own bindings as it warms.
        policy.recheck != Recheck::Jittered && policy.key_binding == KeyBinding::Latest
    }

    /// The slot each domain `d` of `published` (its keys and when they were fetched, absolute
    /// ms) has after `warm(0, …)` in a fresh cache of `policy`, and the timer that call set:
    /// computed by that very call, in a scratch cache with one slot per domain. Only for a
    /// policy whose warm start is shared ([`KeyCache::warm_start_is_shared`]).
    pub fn warm_starts(
        policy: &KeyPolicy,
        published: impl ExactSizeIterator<Item = (Arc<ServerKeys>, i64)>,
    ) -> WarmStarts {
        assert!(KeyCache::warm_start_is_shared(policy));
        let domains: Vec<DomainId> = (0..published.len() as DomainId).collect();
        // The scratch cache's stream is never drawn from (the warm start is shared).
        let rng = SimRng::stream(0, "warm-start-scratch", 0);
        let mut scratch = KeyCache::new(policy.clone(), &domains, 0, rng);
        let mut timers = vec![None; domains.len()];
        let mut out = Vec::new();
        for (domain, (keys, fetched_at_abs_ms)) in published.enumerate() {
            scratch.warm(0, domain as u32, keys, fetched_at_abs_ms, &mut out);
            for output in out.drain(..) {
                if let KeyCacheOutput::SetTimer {
                    at_ms, generation, ..
                } = output
                {
                    timers[domain] = Some((at_ms, generation));
                }
            }
        }
        (scratch.slots.own.into(), timers)
    }

    /// A cache for `domains` whose slots start as `warm_slots[domain]` (from
    /// [`KeyCache::warm_starts`]): the same state as [`KeyCache::new`] followed by `warm(0, …)`
    /// of every slot, without the per-slot copies until a slot changes. The timers those warm
    /// starts would have set are the caller's to schedule.
    pub fn with_warm_slots(
        policy: KeyPolicy,
        domains: &[DomainId],
        notary_count: u32,
        rng: SimRng,
        warm_slots: &Arc<[Slot]>,
    ) -> KeyCache {
        assert!(KeyCache::warm_start_is_shared(&policy));
        let mut cache = KeyCache::new(policy, &[], notary_count, rng);
        cache.slots.warm = Some(WarmRefs {
            refs: domains
                .iter()
                .map(|domain| {
                    assert!(*domain < WARM, "domain index {domain} out of range");
                    WARM | domain
                })
                .collect(),
            by_domain: Arc::clone(warm_slots),
        });
        cache
    }

    /// Adds a slot for a domain met for the first time (nothing cached: its keys are fetched
    /// when first needed) and returns its index.
    pub fn add_slot(&mut self, domain: DomainId) -> u32 {
        self.slots.push(Slot::new(domain));
        (self.slots.len() - 1) as u32
    }

    /// The policy.
    pub fn policy(&self) -> &KeyPolicy {
        &self.policy
    }

    /// The slots, by slot index.
    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// Asks the CPU for `slot`'s lines (a hint: changes nothing). A slot is read about once a
    /// simulated day per server and domain, so its first read is a cache miss.
    pub fn prefetch_slot(&self, slot: u32) {
        if (slot as usize) < self.slots.len() {
            crate::engine::prefetch::prefetch_all(&self.slots[slot as usize]);
        }
    }

    /// Sets this server's clock offset (ms, positive = its clock runs ahead).
    pub fn set_clock_offset(&mut self, offset_ms: i64) {
        self.clock_offset_ms = offset_ms;
    }

    /// This server's clock offset (ms).
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms
    }

    /// The absolute time this server's clock reads at simulated time `now_ms`.
    fn local_abs_ms(&self, now_ms: u64) -> i64 {
        absolute_ms(now_ms) + self.clock_offset_ms
    }

    /// The simulated time at which this server's clock reads `local_abs_ms`.
    fn sim_ms_of_local(&self, local_abs_ms: i64) -> u64 {
        sim_ms(local_abs_ms.saturating_sub(self.clock_offset_ms))
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
        let keys = self
            .bind_first_seen(slot, keys)
            .expect("a published answer lists a current key, and a warm slot binds nothing yet");
        let entry = &mut self.slots[slot as usize];
        entry.tracked = tracking(&keys);
        entry.keys = Some(keys);
        entry.valid_until_ms = valid_until_ms;
        entry.fetched_at_ms = fetched_at_abs_ms;
        entry.valid = true;
        self.schedule_after_success(now_ms, slot, out);
    }

    /// A timer set by this cache fires. Returns whether it was live (a superseded timer does
    /// nothing: it would not have woken the host).
    pub fn on_timer(
        &mut self,
        _now_ms: u64,
        slot: u32,
        generation: u32,
        out: &mut Vec<KeyCacheOutput>,
    ) -> bool {
        let entry = &mut self.slots[slot as usize];
        if entry.generation != generation {
            return false; // superseded by a later timer
        }
        entry.has_next_due = false;
        let purpose = if entry.backoff.is_some() {
            Purpose::Retry
        } else {
            Purpose::Periodic
        };
        self.start_fetch(slot, purpose, out);
        true
    }

    /// The slot's origin announced a key change (P6 push): re-fetch now if the policy listens
    /// and no backoff blocks the domain.
    pub fn on_push(&mut self, now_ms: u64, slot: u32, out: &mut Vec<KeyCacheOutput>) {
        self.stats.pushes_received += 1;
        if !self.policy.push {
            return;
        }
        let entry = &self.slots[slot as usize];
        let backoff_blocks = matches!(
            self.policy.backoff,
            BackoffKind::Msc4499 | BackoffKind::PerDomainGlobal
        );
        if backoff_blocks && now_ms < entry.backoff_until_ms() {
            self.stats.blocked_by_backoff += 1;
            return;
        }
        self.start_fetch(slot, Purpose::Push, out);
    }

    /// A signed request from the slot's domain arrives: with an on-demand policy this is what
    /// makes the cache fetch (when the cached key is missing or expired).
    pub fn on_incoming_request(&mut self, now_ms: u64, slot: u32, out: &mut Vec<KeyCacheOutput>) {
        self.stats.incoming_requests += 1;
        let now_abs_ms = self.local_abs_ms(now_ms);
        let entry = &self.slots[slot as usize];
        if entry.keys.is_some() && entry.valid && entry.valid_until_ms > now_abs_ms {
            self.stats.served_from_cache += 1;
            return;
        }
        let backoff_blocks = matches!(
            self.policy.backoff,
            BackoffKind::Msc4499 | BackoffKind::PerDomainGlobal
        );
        if backoff_blocks && now_ms < entry.backoff_until_ms() {
            self.stats.blocked_by_backoff += 1;
            return;
        }
        self.start_fetch(slot, Purpose::OnDemand, out);
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
        let now_abs_ms = self.local_abs_ms(now_ms);
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
        // What the cache may adopt from the answer: all of it, or under first-seen-wins what
        // is left once entries under key IDs bound to other bodies are ignored (nothing if no
        // current key is left). The effect on K is still read from the whole answer: a domain
        // listing K's ID with other bytes no longer vouches for K either way.
        let usable_keys = match &fetched {
            Fetched::Keys(keys) if effective_valid_until_ms > now_abs_ms => {
                self.bind_first_seen(slot, Arc::clone(keys))
            }
            _ => None,
        };
        let entry = &mut self.slots[slot as usize];
        let key_expired = now_abs_ms >= entry.valid_until_ms;
        let effect = match (entry.tracked(), &fetched) {
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
            (None, Fetched::Keys(_)) if usable_keys.is_some() => Effect::Refresh,
            (None, _) => Effect::Unchanged,
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

    /// Fetches the slot's keys now whatever the policy's schedule (a pushed rotation notice,
    /// P6), unless a fetch is already pending.
    pub fn fetch_now(&mut self, slot: u32, out: &mut Vec<KeyCacheOutput>) {
        self.start_fetch(slot, Purpose::Push, out);
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
        // The bindings were in the lost database too.
        self.bindings.clear();
        if self.is_periodic() || self.policy.recheck == Recheck::Never {
            for slot in 0..self.slots.len() as u32 {
                self.set_timer(now_ms, slot, out);
            }
        }
    }

    /// Restart after a crash: requests in flight are lost; due timers fire now. Under a
    /// periodic policy a re-check that was in flight or queued was due too (its timer had fired
    /// and cleared its due time): it is made again now, else nothing would ever re-check that
    /// domain again and its key would stay valid for the rest of the run.
    pub fn resume(&mut self, now_ms: u64, out: &mut Vec<KeyCacheOutput>) {
        self.in_flight_total = 0;
        self.waiting.clear();
        self.epoch += 1;
        let periodic = self.is_periodic();
        for slot in 0..self.slots.len() as u32 {
            let entry = &mut self.slots[slot as usize];
            let lost_fetch = entry.in_flight > 0 || entry.waiting;
            entry.in_flight = 0;
            entry.waiting = false;
            if entry.has_next_due {
                let due_ms = entry.next_due_ms;
                self.set_timer(due_ms.max(now_ms), slot, out);
            } else if lost_fetch && periodic {
                self.set_timer(now_ms, slot, out);
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
            .tracked()
            .is_some_and(|(key_id, key)| keys.verify_keys.get(key_id) == Some(key));
        if !tracked_still_listed {
            entry.tracked = tracking(&keys);
        } else if entry.tracked() == first_key(&keys).map(|(key_id, key)| (key_id.as_str(), key)) {
            // The same tracked key, found in the newer object: let the older one go.
            entry.tracked = Some(Arc::clone(&keys));
        }
        entry.keys = Some(keys);
        entry.unchanged = entry.valid_until_ms == valid_until_ms;
        entry.valid_until_ms = valid_until_ms;
        entry.fetched_at_ms = now_abs_ms;
        entry.backoff = None;
        if !entry.valid {
            entry.valid = true;
            self.stats.revalidations += 1;
            out.push(KeyCacheOutput::Decision {
                slot,
                decision: Decision::Revalidated,
            });
        }
    }

    /// Under [`KeyBinding::FirstSeenWins`], binds each key ID of `keys` not bound yet for
    /// `slot` to its body, and returns `keys` without the entries whose ID is bound to another
    /// body (counted as collisions; MSC4499: keep the old body, no trial verification), or
    /// `None` if no current key is left. Under [`KeyBinding::Latest`], `keys` as they are.
    fn bind_first_seen(&mut self, slot: u32, keys: Arc<ServerKeys>) -> Option<Arc<ServerKeys>> {
        if self.policy.key_binding == KeyBinding::Latest {
            return Some(keys);
        }
        let mut bind = |key_id: &String, key: &VerifyingKey| -> bool {
            let bound = self.bindings.entry((slot, key_id.clone())).or_insert(*key);
            bound == key
        };
        // Current keys first: an answer listing one ID in both maps with two bodies binds the
        // current one, and its old entry collides (MSC4499's intra-payload rule).
        let collided_current: Vec<String> = keys
            .verify_keys
            .iter()
            .filter(|(key_id, key)| !bind(key_id, key))
            .map(|(key_id, _)| key_id.clone())
            .collect();
        let collided_old: Vec<String> = keys
            .old_verify_keys
            .iter()
            .filter(|(key_id, old)| !bind(key_id, &old.key))
            .map(|(key_id, _)| key_id.clone())
            .collect();
        if collided_current.is_empty() && collided_old.is_empty() {
            return Some(keys);
        }
        self.stats.key_collisions += (collided_current.len() + collided_old.len()) as u64;
        let mut kept = ServerKeys::clone(&keys);
        for key_id in &collided_current {
            kept.verify_keys.remove(key_id);
        }
        for key_id in &collided_old {
            kept.old_verify_keys.remove(key_id);
        }
        (!kept.verify_keys.is_empty()).then(|| Arc::new(kept))
    }

    fn start_fetch(&mut self, slot: u32, purpose: Purpose, out: &mut Vec<KeyCacheOutput>) {
        let entry = &mut self.slots[slot as usize];
        if entry.waiting || (entry.in_flight > 0 && self.policy.coalesce) {
            self.stats.coalesced += 1;
            return;
        }
        self.stats.fetches_by_purpose[purpose as usize] += 1;
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
        let valid_until_ms = self.sim_ms_of_local(entry.valid_until_ms);
        let remaining_ms = valid_until_ms.saturating_sub(now_ms);
        // An origin re-signs only when its response has expired (Synapse), so a re-check before
        // expiry that returned the same validity learned nothing new: the next one is at expiry.
        let unchanged = entry.unchanged;
        let due_ms = match self.policy.recheck {
            Recheck::AtExpiry => valid_until_ms,
            Recheck::Interval => now_ms + self.policy.recheck_interval_ms,
            // Late jitter: at expiry plus up to `jitter_fraction` of the lifetime. Early jitter
            // would only fetch the same response again.
            Recheck::Jittered => {
                let late = self.rng.unit_f64() * self.policy.jitter_fraction * remaining_ms as f64;
                valid_until_ms + late as u64
            }
            Recheck::HalfLife if unchanged => valid_until_ms,
            Recheck::HalfLife => now_ms + remaining_ms / 2,
            Recheck::OnDemand | Recheck::Never => return,
        };
        self.set_timer(due_ms.max(now_ms + MIN_RECHECK_GAP_MS), slot, out);
    }

    fn schedule_after_failure(&mut self, now_ms: u64, slot: u32, out: &mut Vec<KeyCacheOutput>) {
        let policy = &self.policy;
        let backoff = self.slots[slot as usize]
            .backoff
            .get_or_insert_with(Box::default);
        backoff.failures += 1;
        let interval_ms = match policy.backoff {
            BackoffKind::None => policy.retry_interval_ms,
            _ if backoff.failures == 1 => policy.backoff_floor_ms,
            _ => {
                let factor = policy.backoff_jitter_low
                    + self.rng.unit_f64()
                        * (policy.backoff_jitter_high - policy.backoff_jitter_low);
                let grown = backoff.interval_ms as f64 * policy.backoff_multiplier * factor;
                (grown as u64).min(policy.backoff_cap_ms)
            }
        };
        backoff.interval_ms = interval_ms;
        backoff.until_ms = now_ms + interval_ms;
        if policy.recheck != Recheck::OnDemand {
            let due_ms = backoff.until_ms;
            self.set_timer(due_ms, slot, out);
        }
    }

    fn set_timer(&mut self, at_ms: u64, slot: u32, out: &mut Vec<KeyCacheOutput>) {
        let granularity_ms = self.policy.timer_granularity_ms;
        let at_ms = if granularity_ms > 0 {
            at_ms.div_ceil(granularity_ms) * granularity_ms
        } else {
            at_ms
        };
        let entry = &mut self.slots[slot as usize];
        entry.generation += 1;
        entry.next_due_ms = at_ms;
        entry.has_next_due = true;
        out.push(KeyCacheOutput::SetTimer {
            at_ms,
            slot,
            generation: entry.generation,
        });
    }
}

pub(crate) fn first_key(keys: &ServerKeys) -> Option<(&String, &VerifyingKey)> {
    keys.verify_keys.iter().next()
}

/// The object to track the first key of, if it has one.
fn tracking(keys: &Arc<ServerKeys>) -> Option<Arc<ServerKeys>> {
    first_key(keys).map(|_| Arc::clone(keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::time::{DAY_MS, HOUR_MS, MINUTE_MS};
    use crate::server::EPOCH_MS;
    use crate::server::memo::check_direct;
    use crate::server::policy::{Malformed, Unreachable};
    use crate::server::publisher::KeyPublisher;

    const NAME: &str = "origin.example";

    struct Harness {
        cache: KeyCache,
        publisher: KeyPublisher,
        out: Vec<KeyCacheOutput>,
    }

    fn keys_of(body: &Arc<str>) -> Arc<ServerKeys> {
        check_direct(NAME, body).unwrap().unwrap()
    }

    /// A cache of `slots` domains (all served by one publisher for simplicity), warm with a
    /// response made at time 0 and valid for one day.
    fn harness(policy: KeyPolicy, slots: u32) -> Harness {
        let mut publisher = KeyPublisher::new(NAME.into(), DAY_MS, SimRng::stream(1, "k", 0));
        let body = publisher.publish_at(EPOCH_MS);
        let domains: Vec<DomainId> = (0..slots).collect();
        let mut cache = KeyCache::new(policy, &domains, 1, SimRng::stream(1, "c", 0));
        let mut out = Vec::new();
        for slot in 0..slots {
            cache.warm(0, slot, keys_of(&body), EPOCH_MS, &mut out);
        }
        Harness {
            cache,
            publisher,
            out,
        }
    }

    fn policy(edit: impl FnOnce(&mut KeyPolicy)) -> KeyPolicy {
        let mut policy = KeyPolicy::msc4430();
        edit(&mut policy);
        policy
    }

    fn timers(out: &[KeyCacheOutput]) -> Vec<u64> {
        out.iter()
            .filter_map(|output| match output {
                KeyCacheOutput::SetTimer { at_ms, .. } => Some(*at_ms),
                _ => None,
            })
            .collect()
    }

    fn sends(out: &[KeyCacheOutput]) -> Vec<(u32, Via)> {
        out.iter()
            .filter_map(|output| match output {
                KeyCacheOutput::Send { slot, via } => Some((*slot, *via)),
                _ => None,
            })
            .collect()
    }

    fn decisions(out: &[KeyCacheOutput]) -> Vec<Decision> {
        out.iter()
            .filter_map(|output| match output {
                KeyCacheOutput::Decision { decision, .. } => Some(*decision),
                _ => None,
            })
            .collect()
    }

    impl Harness {
        fn fire(&mut self, now_ms: u64, slot: u32) {
            let generation = self.cache.slots[slot as usize].generation;
            self.out.clear();
            self.cache.on_timer(now_ms, slot, generation, &mut self.out);
        }

        fn answer(&mut self, now_ms: u64, slot: u32, via: Via, fetched: Fetched) {
            self.out.clear();
            self.cache
                .on_response(now_ms, slot, via, fetched, &mut self.out);
        }

        fn fresh_keys(&mut self, now_ms: u64) -> Fetched {
            Fetched::Keys(keys_of(&self.publisher.response(absolute_ms(now_ms))))
        }
    }

    #[test]
    fn recheck_at_expiry_polls_once_per_lifetime() {
        let mut harness = harness(KeyPolicy::msc4430(), 1);
        assert_eq!(timers(&harness.out), vec![DAY_MS]);
        harness.fire(DAY_MS, 0);
        assert_eq!(sends(&harness.out), vec![(0, Via::Direct)]);
        let fresh = harness.fresh_keys(DAY_MS + 50);
        harness.answer(DAY_MS + 100, 0, Via::Direct, fresh);
        assert_eq!(timers(&harness.out), vec![2 * DAY_MS + 50]);
        assert!(decisions(&harness.out).is_empty());
        assert_eq!(harness.cache.stats.refreshes, 1);
    }

    #[test]
    fn recheck_interval_ignores_the_lifetime() {
        let harness = harness(
            policy(|p| {
                p.recheck = Recheck::Interval;
                p.recheck_interval_ms = HOUR_MS;
            }),
            1,
        );
        assert_eq!(timers(&harness.out), vec![HOUR_MS]);
    }

    #[test]
    fn recheck_jittered_comes_late_by_at_most_the_fraction() {
        let harness = harness(
            policy(|p| {
                p.recheck = Recheck::Jittered;
                p.jitter_fraction = 0.2;
            }),
            50,
        );
        let due = timers(&harness.out);
        assert!(
            due.iter()
                .all(|at| (DAY_MS..=DAY_MS + DAY_MS / 5).contains(at))
        );
        assert!(
            due.iter().any(|at| *at != due[0]),
            "jitter spreads the timers"
        );
    }

    #[test]
    fn recheck_half_life_then_at_expiry_when_unchanged() {
        let mut harness = harness(policy(|p| p.recheck = Recheck::HalfLife), 1);
        assert_eq!(timers(&harness.out), vec![DAY_MS / 2]);
        harness.fire(DAY_MS / 2, 0);
        let same = harness.fresh_keys(DAY_MS / 2);
        harness.answer(DAY_MS / 2, 0, Via::Direct, same);
        assert_eq!(timers(&harness.out), vec![DAY_MS]);
    }

    #[test]
    fn recheck_on_demand_fetches_only_for_an_expired_key() {
        let mut harness = harness(policy(|p| p.recheck = Recheck::OnDemand), 1);
        assert!(timers(&harness.out).is_empty());
        harness.out.clear();
        harness
            .cache
            .on_incoming_request(HOUR_MS, 0, &mut harness.out);
        assert!(sends(&harness.out).is_empty());
        assert_eq!(harness.cache.stats.served_from_cache, 1);
        harness
            .cache
            .on_incoming_request(DAY_MS + 1, 0, &mut harness.out);
        assert_eq!(sends(&harness.out), vec![(0, Via::Direct)]);
    }

    #[test]
    fn recheck_never_sets_no_timer() {
        let harness = harness(policy(|p| p.recheck = Recheck::Never), 3);
        assert!(timers(&harness.out).is_empty());
    }

    #[test]
    fn transport_notary_first_falls_back_to_the_origin() {
        let mut harness = harness(policy(|p| p.transport = Transport::NotaryFirst), 1);
        harness.fire(DAY_MS, 0);
        assert_eq!(sends(&harness.out), vec![(0, Via::Notary(0))]);
        harness.answer(DAY_MS + 10, 0, Via::Notary(0), Fetched::NotaryEmpty);
        assert_eq!(sends(&harness.out), vec![(0, Via::Direct)]);
        assert_eq!(harness.cache.stats.notary_fallbacks, 1);
        // Still one request in flight: the fallback kept the notary request's place.
        assert_eq!(harness.cache.in_flight(), 1);
    }

    fn failure_intervals(policy: KeyPolicy, failures: usize) -> Vec<u64> {
        let mut harness = harness(policy, 1);
        let mut now_ms = DAY_MS;
        let mut intervals = Vec::new();
        for _ in 0..failures {
            harness.fire(now_ms, 0);
            harness.answer(now_ms, 0, Via::Direct, Fetched::Unreachable("timeout"));
            let next = timers(&harness.out)[0];
            intervals.push(next - now_ms);
            now_ms = next;
        }
        intervals
    }

    #[test]
    fn backoff_none_retries_at_the_retry_interval() {
        let intervals = failure_intervals(
            policy(|p| {
                p.backoff = BackoffKind::None;
                p.retry_interval_ms = 30_000;
            }),
            3,
        );
        assert_eq!(intervals, vec![30_000; 3]);
    }

    #[test]
    fn backoff_synapse_starts_at_10_minutes_and_grows_with_jitter_to_7_days() {
        let mut synapse = KeyPolicy::msc4430();
        synapse.apply_backoff_kind(BackoffKind::Synapse);
        let intervals = failure_intervals(synapse, 20);
        assert_eq!(intervals[0], 10 * MINUTE_MS);
        let ratio = intervals[1] as f64 / intervals[0] as f64;
        assert!(
            (1.6..=2.8).contains(&ratio),
            "x2 with 0.8-1.4 jitter: {ratio}"
        );
        assert_eq!(*intervals.last().unwrap(), 7 * DAY_MS);
    }

    #[test]
    fn backoff_msc4499_doubles_from_60_seconds_to_1_hour() {
        let mut msc4499 = KeyPolicy::msc4430();
        msc4499.apply_backoff_kind(BackoffKind::Msc4499);
        let intervals = failure_intervals(msc4499, 8);
        assert_eq!(
            intervals,
            vec![
                60_000, 120_000, 240_000, 480_000, 960_000, 1_920_000, HOUR_MS, HOUR_MS
            ]
        );
    }

    #[test]
    fn backoff_per_domain_global_blocks_on_demand_fetches_but_synapse_does_not() {
        for (kind, blocked) in [
            (BackoffKind::PerDomainGlobal, true),
            (BackoffKind::Synapse, false),
        ] {
            let mut harness = harness(policy(|p| p.recheck = Recheck::OnDemand), 1);
            harness.cache.policy.apply_backoff_kind(kind);
            harness.out.clear();
            harness
                .cache
                .on_incoming_request(DAY_MS + 1, 0, &mut harness.out);
            harness.answer(DAY_MS + 2, 0, Via::Direct, Fetched::Unreachable("refused"));
            harness.out.clear();
            harness
                .cache
                .on_incoming_request(DAY_MS + 3, 0, &mut harness.out);
            assert_eq!(sends(&harness.out).is_empty(), blocked, "{kind:?}");
        }
    }

    #[test]
    fn max_in_flight_queues_the_rest_in_order() {
        let mut harness = harness(policy(|p| p.max_in_flight = 1), 3);
        harness.fire(DAY_MS, 0);
        let mut out = std::mem::take(&mut harness.out);
        for slot in [1, 2] {
            let generation = harness.cache.slots[slot as usize].generation;
            harness.cache.on_timer(DAY_MS, slot, generation, &mut out);
        }
        assert_eq!(sends(&out), vec![(0, Via::Direct)]);
        assert_eq!(harness.cache.stats.queued, 2);
        let fresh = harness.fresh_keys(DAY_MS);
        harness.answer(DAY_MS + 5, 0, Via::Direct, fresh);
        assert_eq!(sends(&harness.out), vec![(1, Via::Direct)]);
        assert_eq!(harness.cache.stats.in_flight_peak, 1);
    }

    #[test]
    fn coalescing_joins_a_fetch_in_flight_and_can_be_switched_off() {
        for (coalesce, expected_sends) in [(true, 1), (false, 2)] {
            let mut harness = harness(
                policy(|p| {
                    p.recheck = Recheck::OnDemand;
                    p.coalesce = coalesce;
                }),
                1,
            );
            harness.out.clear();
            harness
                .cache
                .on_incoming_request(DAY_MS + 1, 0, &mut harness.out);
            harness
                .cache
                .on_incoming_request(DAY_MS + 2, 0, &mut harness.out);
            assert_eq!(
                sends(&harness.out).len(),
                expected_sends,
                "coalesce {coalesce}"
            );
        }
    }

    #[test]
    fn unreachable_fail_open_keeps_the_key_fail_closed_drops_it_after_expiry() {
        for (unreachable, expected) in [
            (Unreachable::FailOpen, vec![]),
            (
                Unreachable::FailClosed,
                vec![Decision::Invalidated(InvalidReason::UnreachableAfterExpiry)],
            ),
        ] {
            let mut harness = harness(policy(|p| p.unreachable = unreachable), 1);
            // Before expiry a failure changes nothing under either reading.
            harness.answer(HOUR_MS, 0, Via::Direct, Fetched::Unreachable("timeout"));
            assert!(decisions(&harness.out).is_empty());
            harness.answer(DAY_MS + 1, 0, Via::Direct, Fetched::Unreachable("timeout"));
            assert_eq!(decisions(&harness.out), expected, "{unreachable:?}");
        }
    }

    #[test]
    fn malformed_answers_follow_their_knob() {
        for (malformed, expected) in [
            (Malformed::FailOpen, vec![]),
            (
                Malformed::Invalidate,
                vec![Decision::Invalidated(InvalidReason::Malformed)],
            ),
        ] {
            let mut harness = harness(policy(|p| p.malformed = malformed), 1);
            harness.answer(HOUR_MS, 0, Via::Direct, Fetched::Malformed);
            assert_eq!(decisions(&harness.out), expected, "{malformed:?}");
        }
    }

    #[test]
    fn clamp_7d_caps_a_long_validity() {
        for (clamp, expected_due) in [(true, 7 * DAY_MS), (false, 30 * DAY_MS)] {
            let mut publisher =
                KeyPublisher::new(NAME.into(), 30 * DAY_MS, SimRng::stream(1, "k", 0));
            let body = publisher.publish_at(EPOCH_MS);
            let mut cache = KeyCache::new(
                policy(|p| p.clamp_7d = clamp),
                &[0],
                0,
                SimRng::stream(1, "c", 0),
            );
            let mut out = Vec::new();
            cache.warm(0, 0, keys_of(&body), EPOCH_MS, &mut out);
            assert_eq!(timers(&out), vec![expected_due], "clamp {clamp}");
        }
    }

    #[test]
    fn rotation_invalidates_the_old_key_then_tracks_the_new_one() {
        let mut harness = harness(KeyPolicy::msc4430(), 1);
        harness.publisher.rotate(absolute_ms(HOUR_MS));
        let rotated = harness.fresh_keys(DAY_MS);
        harness.answer(DAY_MS, 0, Via::Direct, rotated);
        assert_eq!(
            decisions(&harness.out),
            vec![
                Decision::Invalidated(InvalidReason::MovedToOld),
                Decision::Revalidated
            ]
        );
        let again = harness.fresh_keys(2 * DAY_MS);
        harness.answer(2 * DAY_MS, 0, Via::Direct, again);
        assert!(decisions(&harness.out).is_empty());
    }

    #[test]
    fn key_loss_and_404_invalidate_and_a_later_key_revalidates() {
        let mut harness = harness(KeyPolicy::msc4430(), 1);
        harness.publisher.lose_key();
        let lost = harness.fresh_keys(DAY_MS);
        harness.answer(DAY_MS, 0, Via::Direct, lost);
        assert_eq!(
            decisions(&harness.out)[0],
            Decision::Invalidated(InvalidReason::DifferentBytes)
        );
        harness.answer(2 * DAY_MS, 0, Via::Direct, Fetched::NotFound);
        assert_eq!(
            decisions(&harness.out),
            vec![Decision::Invalidated(InvalidReason::NotFound)]
        );
        assert!(harness.cache.slots()[0].keys().is_none());
        let back = harness.fresh_keys(3 * DAY_MS);
        harness.answer(3 * DAY_MS, 0, Via::Direct, back);
        assert_eq!(decisions(&harness.out), vec![Decision::Revalidated]);
    }

    /// The slots of a cache, as text (every field, keys included).
    fn slot_dump(cache: &KeyCache) -> Vec<String> {
        cache
            .slots()
            .iter()
            .map(|slot| format!("{slot:?}"))
            .collect()
    }

    #[test]
    fn shared_warm_slots_behave_as_warming_every_slot() {
        for recheck in [Recheck::AtExpiry, Recheck::HalfLife, Recheck::OnDemand] {
            let policy = policy(|p| {
                p.recheck = recheck;
                p.max_in_flight = 2;
            });
            // Ten domains, each with its own publisher and a response made at its own time.
            let mut published: Vec<(Arc<ServerKeys>, i64, KeyPublisher)> = (0..10u32)
                .map(|domain| {
                    let name = format!("d{domain}.example");
                    let mut publisher = KeyPublisher::new(
                        name.clone(),
                        DAY_MS,
                        SimRng::stream(2, "k", u64::from(domain)),
                    );
                    let made_at_ms = EPOCH_MS - i64::from(domain) * HOUR_MS as i64;
                    let body = publisher.publish_at(made_at_ms);
                    let keys = check_direct(&name, &body).unwrap().unwrap();
                    (keys, made_at_ms, publisher)
                })
                .collect();
            let domains: Vec<DomainId> = vec![1, 4, 5, 9];
            let mut eager = KeyCache::new(policy.clone(), &domains, 1, SimRng::stream(3, "c", 0));
            let mut eager_out = Vec::new();
            for (slot, domain) in domains.iter().enumerate() {
                let (keys, made_at_ms, _) = &published[*domain as usize];
                eager.warm(
                    0,
                    slot as u32,
                    Arc::clone(keys),
                    *made_at_ms,
                    &mut eager_out,
                );
            }
            let (warm_slots, due) = KeyCache::warm_starts(
                &policy,
                published
                    .iter()
                    .map(|(keys, at, _)| (Arc::clone(keys), *at)),
            );
            let mut lazy = KeyCache::with_warm_slots(
                policy.clone(),
                &domains,
                1,
                SimRng::stream(3, "c", 0),
                &warm_slots,
            );
            // The timers the warm starts set are the ones warming each slot set.
            let expected: Vec<KeyCacheOutput> = domains
                .iter()
                .enumerate()
                .filter_map(|(slot, domain)| {
                    due[*domain as usize].map(|(at_ms, generation)| KeyCacheOutput::SetTimer {
                        at_ms,
                        slot: slot as u32,
                        generation,
                    })
                })
                .collect();
            assert_eq!(eager_out, expected, "{recheck:?}");
            assert_eq!(slot_dump(&lazy), slot_dump(&eager), "{recheck:?}");
            // The same calls on both caches give the same outputs and the same slots.
            let fresh = {
                let (_, _, publisher) = &mut published[4];
                let body = publisher.response(absolute_ms(2 * HOUR_MS));
                Fetched::Keys(check_direct("d4.example", &body).unwrap().unwrap())
            };
            type Step<'a> = Box<dyn Fn(&mut KeyCache, &mut Vec<KeyCacheOutput>) + 'a>;
            let steps: Vec<Step> = vec![
                Box::new(|cache, out| {
                    let generation = cache.slots()[1].generation;
                    cache.on_timer(HOUR_MS, 1, generation, out);
                }),
                Box::new(|cache, out| cache.on_incoming_request(2 * DAY_MS, 0, out)),
                Box::new(|cache, out| cache.on_incoming_request(HOUR_MS, 3, out)),
                Box::new(|cache, out| {
                    cache.on_response(2 * HOUR_MS, 1, Via::Direct, fresh.clone(), out)
                }),
                Box::new(|cache, out| {
                    cache.on_response(
                        3 * DAY_MS,
                        0,
                        Via::Direct,
                        Fetched::Unreachable("timeout"),
                        out,
                    )
                }),
                Box::new(|cache, out| cache.fetch_now(2, out)),
                Box::new(|cache, out| {
                    let slot = cache.add_slot(7);
                    cache.fetch_now(slot, out);
                }),
                Box::new(|cache, out| cache.resume(3 * DAY_MS, out)),
                Box::new(|cache, out| cache.forget_all(4 * DAY_MS, out)),
            ];
            for (index, step) in steps.iter().enumerate() {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                step(&mut eager, &mut a);
                step(&mut lazy, &mut b);
                assert_eq!(a, b, "{recheck:?} step {index}");
                assert_eq!(
                    slot_dump(&lazy),
                    slot_dump(&eager),
                    "{recheck:?} step {index}"
                );
                assert_eq!(lazy.slots().len(), eager.slots().len());
            }
            assert_eq!(format!("{:?}", lazy.stats), format!("{:?}", eager.stats));
        }
    }

    #[test]
    fn a_slot_is_64_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    #[test]
    fn database_loss_refetches_everything() {
        let mut harness = harness(KeyPolicy::msc4430(), 4);
        harness.out.clear();
        harness.cache.forget_all(HOUR_MS, &mut harness.out);
        assert_eq!(timers(&harness.out), vec![HOUR_MS; 4]);
        assert!(
            harness
                .cache
                .slots()
                .iter()
                .all(|slot| slot.keys().is_none())
        );
    }

    /// Test that a restart re-makes the periodic re-checks a crash lost: one in flight (its
    /// timer had fired) and one queued behind the concurrency cap are both re-armed for now.
    #[test]
    fn a_restart_remakes_the_re_checks_a_crash_lost() {
        let mut in_flight = harness(KeyPolicy::msc4430(), 1);
        in_flight.fire(DAY_MS, 0);
        assert_eq!(sends(&in_flight.out).len(), 1, "re-check sent at expiry");
        in_flight.out.clear();
        in_flight.cache.resume(DAY_MS + HOUR_MS, &mut in_flight.out);
        assert_eq!(timers(&in_flight.out), [DAY_MS + HOUR_MS]);

        let mut capped = harness(policy(|p| p.max_in_flight = 1), 2);
        capped.fire(DAY_MS, 0);
        capped.fire(DAY_MS, 1);
        assert_eq!(capped.cache.stats.queued, 1);
        capped.out.clear();
        capped.cache.resume(DAY_MS + HOUR_MS, &mut capped.out);
        assert_eq!(timers(&capped.out), [DAY_MS + HOUR_MS, DAY_MS + HOUR_MS]);
    }

    fn held_key_ids(harness: &Harness) -> (Vec<String>, Vec<String>) {
        let keys = harness.cache.slots()[0].keys().expect("keys held");
        (
            keys.verify_keys.keys().cloned().collect(),
            keys.old_verify_keys.keys().cloned().collect(),
        )
    }

    /// MSC4499's first-seen-wins (P9): a server that lost its key and made a new one under the
    /// same key ID (or a domain's new owner doing so) is a collision. The old key is still
    /// invalidated (the domain no longer vouches for it), but the new body is never adopted,
    /// however often it is fetched. Under P1 the new body replaces the old one.
    #[test]
    fn first_seen_wins_never_adopts_a_new_body_under_a_known_key_id() {
        for (preset, adopted) in [("P1", true), ("P9", false)] {
            let mut harness = harness(KeyPolicy::preset(preset).unwrap(), 1);
            harness.fire(DAY_MS, 0);
            harness.publisher.lose_key();
            let new_body = harness.fresh_keys(DAY_MS + 50);
            harness.answer(DAY_MS + 100, 0, Via::Direct, new_body.clone());
            let invalidated = Decision::Invalidated(InvalidReason::DifferentBytes);
            let held = harness.cache.slots()[0].keys().cloned();
            if adopted {
                assert_eq!(
                    decisions(&harness.out),
                    [invalidated, Decision::Revalidated]
                );
                assert_eq!(
                    Some(held.unwrap()),
                    Some(match new_body {
                        Fetched::Keys(keys) => keys,
                        _ => unreachable!(),
                    })
                );
                assert_eq!(harness.cache.stats.key_collisions, 0);
                continue;
            }
            assert_eq!(decisions(&harness.out), [invalidated], "{preset}");
            assert!(held.is_none(), "{preset}: nothing usable is held");
            assert_eq!(harness.cache.stats.key_collisions, 1);
            // Asked again an hour later (MSC4499's backoff cap), the same answer collides again:
            // the binding is not purged by the invalidation.
            harness.answer(DAY_MS + HOUR_MS, 0, Via::Direct, new_body);
            assert!(decisions(&harness.out).is_empty());
            assert!(harness.cache.slots()[0].keys().is_none());
            assert!(!harness.cache.slots()[0].valid);
            assert_eq!(harness.cache.stats.key_collisions, 2);
        }
    }

    /// First-seen-wins still follows a rotation (a new key ID; the old key moves to
    /// `old_verify_keys` with its own bytes), and a database loss forgets the bindings.
    #[test]
    fn first_seen_wins_follows_rotations_and_forgets_with_the_database() {
        let mut harness = harness(KeyPolicy::preset("P9").unwrap(), 1);
        harness.publisher.rotate(absolute_ms(HOUR_MS));
        let rotated = harness.fresh_keys(2 * HOUR_MS);
        harness.answer(2 * HOUR_MS, 0, Via::Direct, rotated);
        assert_eq!(
            decisions(&harness.out),
            [
                Decision::Invalidated(InvalidReason::MovedToOld),
                Decision::Revalidated
            ]
        );
        assert_eq!(harness.cache.stats.key_collisions, 0);
        assert_eq!(
            held_key_ids(&harness),
            (vec!["ed25519:a2".to_owned()], vec!["ed25519:a1".to_owned()])
        );
        harness.out.clear();
        harness.cache.forget_all(3 * HOUR_MS, &mut harness.out);
        harness.publisher.lose_key();
        let after_loss = harness.fresh_keys(4 * HOUR_MS);
        harness.answer(4 * HOUR_MS, 0, Via::Direct, after_loss);
        assert_eq!(decisions(&harness.out), [Decision::Revalidated]);
        assert_eq!(harness.cache.stats.key_collisions, 0);
    }

    /// An answer listing one key ID in both maps with two bodies binds the current one; the old
    /// entry collides and is left out of what the cache holds (MSC4499's intra-payload rule).
    #[test]
    fn first_seen_wins_drops_an_old_entry_that_contradicts_a_current_one() {
        let mut harness = harness(KeyPolicy::preset("P9").unwrap(), 1);
        let Fetched::Keys(honest) = harness.fresh_keys(HOUR_MS) else {
            unreachable!()
        };
        let other = crate::matrix::signing::ServerSigningKey::from_seed(
            crate::matrix::signing::KeyId::ed25519("a1").unwrap(),
            &[7; 32],
        )
        .verifying_key();
        let mut contradictory = ServerKeys::clone(&honest);
        contradictory.old_verify_keys.insert(
            "ed25519:a1".to_owned(),
            crate::matrix::server_keys::OldVerifyKey {
                key: other,
                expired_ts_ms: absolute_ms(HOUR_MS),
            },
        );
        harness.answer(
            HOUR_MS,
            0,
            Via::Direct,
            Fetched::Keys(Arc::new(contradictory)),
        );
        assert!(decisions(&harness.out).is_empty());
        assert_eq!(harness.cache.stats.key_collisions, 1);
        assert_eq!(
            held_key_ids(&harness),
            (vec!["ed25519:a1".to_owned()], vec![])
        );
    }
}
