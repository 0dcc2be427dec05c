//! Checks 4 and 5, the state before and after each event, and the current state of an extremity
//! set, computed once per event (per extremity set) and shared by every server that holds it
//! (design.md "compute once what is the same for everyone"; issue 5 item 10).
//!
//! Without sharing, every server's [`Dag`](crate::matrix::dag::Dag) evaluates every event it
//! inserts: it resolves the state before the event from its prev events' states after, then runs
//! check 4 (the auth rules against the event's `auth_events`) and check 5 (against the state
//! before). In a room on 500 servers that is 500 times the same work per event.
//!
//! # Why the evaluation is the same everywhere
//!
//! An event's ID is a hash over its redacted form, which keeps `prev_events`, `auth_events` and
//! the `hashes` of the full content. So the event ID fixes the event's parents, hence its whole
//! ancestry (prev and auth edges, transitively), and a copy of the event is one of exactly two
//! things: the full event (check 3 passed: every field but `signatures` and `unsigned` is fixed
//! by the content hash the ID covers) or its redacted form (check 3 failed: the redacted form is
//! what the ID is computed over). The auth rules and state resolution read neither `signatures`
//! nor `unsigned` of the events they judge (the third-party-invite rule reads a signature inside
//! `content`, which the hash covers).
//!
//! The evaluation of event E by [`Dag::insert`](crate::matrix::dag::Dag::insert) reads: E's copy;
//! the copies of its auth events, whether they were rejected, and the DAG's create event (check
//! 4); its prev events' states after (state before), and through state resolution the copies,
//! auth events, auth chains and rejections of the events those states name; the copies in the
//! state before (check 5). When every event was inserted by `Dag::insert` (no state given from
//! outside), every event a state names is an ancestor of the event whose state it is (a state
//! after is the state before plus the event itself; resolution only picks events of its input
//! states and of their auth chains), so all of that is E's ancestry. By induction over the
//! ancestry in topological order, E's evaluation is a pure function of the copies of E, of its
//! ancestors and of the create event. It does not depend on soft-fail (check 6 and the link rule
//! never enter the DAG), on link tables, keys, arrival order or arrival path.
//!
//! Per server, an event is **clean** when
//! 1. its held copy is the full event (not redacted by check 3),
//! 2. it was inserted by [`Dag::insert`](crate::matrix::dag::Dag::insert), its state before
//!    resolved from its prev events (not given from outside: the gap / `/state_ids` / join path,
//!    [`receive_pdu_with_state_before`](super::pipeline::receive_pdu_with_state_before)),
//! 3. every prev and auth event is held and clean, and the DAG's create event is held and clean.
//!
//! Two servers on which E is clean hold the same copies of E, of every ancestor and of the
//! create event, all inserted by `Dag::insert`, so they evaluate E identically. Hence:
//!
//! # Invariants
//!
//! - Shared evaluations are keyed by (room version, create event ID, event ID) and are only
//!   read or written for clean events. A redacted copy, an event with a given state, and every
//!   descendant of either on that server are evaluated locally, as without sharing, and never
//!   stored: a redacted copy and the full copy (same event ID, different content) cannot share
//!   an entry, and a state from outside never leaks to another server.
//! - A shared current state is keyed by the forward extremities and used only when every
//!   extremity is clean: the resolution of clean events' states after reads only their
//!   (identical) ancestries. Likewise check 6's verdict (the auth rules against that current
//!   state) on a clean event, keyed by (event, extremities): it reads the event's copy and the
//!   copies the current state names, all clean. Whether the verdict soft-fails the event, on
//!   which arrival paths, and the link rule stay per server. Keys use room-wide numbers given
//!   to clean events when first evaluated (the same event has the same number everywhere).
//! - What stays per server: checks 1–3 (shared separately by [`super::memo::CheckMemo`], exactly
//!   for identical key answers), which events are held (check 2 may drop an event on one server
//!   for lack of keys: that server does not hold it and its children come back as
//!   `MissingEvents` there), check 6 and the link rule (soft-fail), the forward extremities, the
//!   timeline. Rejections come from the evaluation, so they are identical on every server where
//!   the event is clean.
//! - Sharing changes no result, only speed: a [`RoomState`](super::room_state::RoomState) built
//!   with [`RoomState::new`](super::room_state::RoomState::new) shares nothing, and a test
//!   (`tests/room_sharing.rs`) shows identical receipts, fates, extremities, states and
//!   timelines with sharing on and off. [`SharedEventFacts::verifying`] recomputes every reused
//!   evaluation and panics on a difference (for tests).
//! - MSC4430 member links: the co-signature check of a member event
//!   ([`verify_member_link`]) reads the event, the name on the key object, and for each key ID
//!   the domain signed with, whether that key may be used now (the key, or why not). Its outcome
//!   is stored per event copy (the `Arc<Pdu>` every server shares through `CheckMemo`, held by
//!   the entry so its address stays its own) together with those answers, and reused for any
//!   server whose keys give the same answers — exactly as check 2 in `CheckMemo`. Each server's
//!   link table still decides, times and records its own transitions.
//! - Lookups only: nothing iterates the hash maps in a way that affects results.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

use crate::matrix::auth::{Rejection, Rule};
use crate::matrix::dag::{Evaluation, IdHasher, LayeredState};
use crate::matrix::member_keys::{LinkOutcome, cosign_domain, verify_member_link};
use crate::matrix::server_keys::{
    KeyUnusable, ServerKeys, ValidityClamp, key_valid_for_member_cosignature,
};
use crate::matrix::{EventId, Pdu, RoomVersion, StateMap};

/// Current states kept per room, at most: the most recently stored ones (servers ask for the
/// same extremity sets at about the same time, so a small table suffices, and each state is a
/// whole room state).
const CURRENT_STATES_CAPACITY: usize = 8;

/// Whole-map copies of layered states kept per room, at most (the most recently used).
const WHOLE_MAPS_CAPACITY: usize = 4;

/// Check-6 verdicts kept per room, at most (the table is cleared when full).
const CURRENT_STATE_CHECKS_CAPACITY: usize = 1 << 16;

/// A room-wide number for a clean event, the same on every server (assigned when the first
/// server evaluates it), so that extremity sets are cheap keys.
pub(crate) type SharedId = u32;

/// A shared evaluation and the event's room-wide number.
#[derive(Clone)]
pub(crate) struct SharedEvaluation {
    pub(crate) id: SharedId,
    pub(crate) evaluation: Arc<Evaluation>,
}

/// Check 6's verdict: the rule that allowed the event against the current state, or why not.
pub(crate) type CurrentStateCheck = Result<Rule, Rejection>;

/// The facts shared by the servers holding one room: evaluations by event ID, current states
/// and check-6 verdicts by extremity set (as room-wide numbers, sorted).
#[derive(Default)]
pub(crate) struct RoomFacts {
    evaluations: HashMap<EventId, SharedEvaluation, IdHasher>,
    next_id: SharedId,
    /// By extremity set (sorted), newest first.
    current_states: Vec<(Vec<SharedId>, Arc<StateMap>)>,
    /// Whole-map copies of layered states, by the state object (held, so that its address is
    /// not reused), most recently used first: a message does not change the state, so a run of
    /// messages shares one state object, and every server whose only extremity is one of them
    /// gets the same copy.
    whole_maps: Vec<(Arc<LayeredState>, Arc<StateMap>)>,
    /// By (event, its server's only forward extremity).
    checks_on_one: HashMap<(SharedId, SharedId), CurrentStateCheck, IdHasher>,
    /// By (event, its server's forward extremities).
    checks_on_many: HashMap<(SharedId, Vec<SharedId>), CurrentStateCheck, IdHasher>,
    /// The rule that allowed a not rejected event against the state before it, by event.
    rules_before: HashMap<SharedId, Option<Rule>, IdHasher>,
}

impl RoomFacts {
    pub(crate) fn evaluation(&self, event_id: &str) -> Option<&SharedEvaluation> {
        self.evaluations.get(event_id)
    }

    /// Stores the evaluation of a clean event; returns its room-wide number.
    pub(crate) fn store_evaluation(
        &mut self,
        event_id: EventId,
        evaluation: Arc<Evaluation>,
    ) -> SharedId {
        let id = self.next_id;
        self.next_id += 1;
        self.evaluations
            .insert(event_id, SharedEvaluation { id, evaluation });
        id
    }

    /// The allowing rule against the state before `event`, if known (`Some(None)`: none).
    pub(crate) fn rule_before(&self, event: SharedId) -> Option<Option<Rule>> {
        self.rules_before.get(&event).copied()
    }

    pub(crate) fn store_rule_before(&mut self, event: SharedId, rule: Option<Rule>) {
        self.rules_before.insert(event, rule);
    }

    /// `state` as one map, shared by everyone asking for the same state object.
    pub(crate) fn whole_map(&mut self, state: &Arc<LayeredState>) -> Arc<StateMap> {
        match self
            .whole_maps
            .iter()
            .position(|(held, _)| Arc::ptr_eq(held, state))
        {
            Some(position) => {
                self.whole_maps[..=position].rotate_right(1);
                Arc::clone(&self.whole_maps[0].1)
            }
            None => {
                let map = state.to_shared_map();
                self.whole_maps.truncate(WHOLE_MAPS_CAPACITY - 1);
                self.whole_maps
                    .insert(0, (Arc::clone(state), Arc::clone(&map)));
                map
            }
        }
    }

    pub(crate) fn current_state(&self, extremities: &[SharedId]) -> Option<&Arc<StateMap>> {
        self.current_states
            .iter()
            .find(|(key, _)| key == extremities)
            .map(|(_, state)| state)
    }

    pub(crate) fn store_current_state(&mut self, extremities: Vec<SharedId>, state: Arc<StateMap>) {
        self.current_states.truncate(CURRENT_STATES_CAPACITY - 1);
        self.current_states.insert(0, (extremities, state));
    }

    /// Check 6's verdict on `event` over the state after `extremities` (sorted), if known.
    pub(crate) fn current_state_check(
        &self,
        event: SharedId,
        extremities: &[SharedId],
    ) -> Option<&CurrentStateCheck> {
        match extremities {
            [only] => self.checks_on_one.get(&(event, *only)),
            _ => self.checks_on_many.get(&(event, extremities.to_vec())),
        }
    }

    pub(crate) fn store_current_state_check(
        &mut self,
        event: SharedId,
        extremities: Vec<SharedId>,
        check: CurrentStateCheck,
    ) {
        if self.checks_on_one.len() + self.checks_on_many.len() >= CURRENT_STATE_CHECKS_CAPACITY {
            self.checks_on_one.clear();
            self.checks_on_many.clear();
        }
        match extremities.as_slice() {
            [only] => {
                self.checks_on_one.insert((event, *only), check);
            }
            _ => {
                self.checks_on_many.insert((event, extremities), check);
            }
        }
    }
}

/// What [`verify_member_link`] reads besides the event: the name on the key object, and per key
/// ID the domain signed with (sorted), the key usable now or why not.
type LinkAnswers = (String, Vec<(String, Result<[u8; 32], KeyUnusable>)>);

/// Member-link outcomes kept per event copy, at most (most recently used first).
const MAX_LINK_VERDICTS: usize = 4;

/// Member-link outcomes by event copy (the address of the shared `Arc<Pdu>`, which the entry
/// holds), with the key IDs the copy asks about ([`link_key_ids`], read once per copy).
type LinkVerdicts = HashMap<usize, LinkEntry, IdHasher>;

/// One event copy's entry in [`LinkVerdicts`].
type LinkEntry = (Arc<Pdu>, Vec<String>, Vec<(LinkAnswers, LinkOutcome)>);

/// The key IDs `event` is co-signed with for the domain it claims (sorted; empty when it claims
/// none): the questions [`verify_member_link`] asks of the domain's keys. A function of the
/// event's JSON alone.
fn link_key_ids(event: &Value) -> Vec<String> {
    let mut key_ids: Vec<String> = cosign_domain(event)
        .and_then(|domain| event.get("signatures")?.get(domain)?.as_object())
        .map(|by_domain| by_domain.keys().cloned().collect())
        .unwrap_or_default();
    key_ids.sort();
    key_ids
}

/// The answers [`verify_member_link`] gets from `domain_keys` at `now_ms` for an event
/// co-signed with `key_ids` ([`link_key_ids`]).
fn link_answers(
    key_ids: &[String],
    domain_keys: &ServerKeys,
    now_ms: i64,
    clamp: ValidityClamp,
) -> LinkAnswers {
    let answers = key_ids
        .iter()
        .map(|key_id| {
            let answer = key_valid_for_member_cosignature(domain_keys, key_id, now_ms, clamp)
                .map(|key| key.to_bytes());
            (key_id.clone(), answer)
        })
        .collect();
    (domain_keys.server_name.clone(), answers)
}

/// Whether `seen` are the answers [`link_answers`] would give now: compared in place, without
/// building the answers (a string per key ID and the domain's name) for every receipt.
fn link_answers_match(
    seen: &LinkAnswers,
    key_ids: &[String],
    domain_keys: &ServerKeys,
    now_ms: i64,
    clamp: ValidityClamp,
) -> bool {
    let (seen_domain, seen_answers) = seen;
    *seen_domain == domain_keys.server_name
        && seen_answers.len() == key_ids.len()
        && seen_answers
            .iter()
            .zip(key_ids)
            .all(|((seen_key_id, seen_answer), key_id)| {
                let answer = key_valid_for_member_cosignature(domain_keys, key_id, now_ms, clamp)
                    .map(|key| key.to_bytes());
                seen_key_id == key_id && *seen_answer == answer
            })
}

/// How often shared facts were reused or computed (summed over rooms and servers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharingStats {
    /// Insertions that took another server's evaluation.
    pub evaluations_reused: u64,
    /// Insertions of clean events that evaluated and stored the result.
    pub evaluations_computed: u64,
    /// Insertions evaluated locally because the event was not clean there.
    pub evaluations_unshareable: u64,
    /// Current states taken from another server's resolution.
    pub current_states_reused: u64,
    /// Current states resolved and stored.
    pub current_states_computed: u64,
    /// Check-6 verdicts taken from another server.
    pub current_state_checks_reused: u64,
    /// Check-6 verdicts computed and stored.
    pub current_state_checks_computed: u64,
    /// Member-link co-signature checks answered from another server's.
    pub member_links_reused: u64,
    /// Member-link co-signature checks run (and stored).
    pub member_links_computed: u64,
}

#[derive(Default)]
struct Counters {
    evaluations_reused: AtomicU64,
    evaluations_computed: AtomicU64,
    evaluations_unshareable: AtomicU64,
    current_states_reused: AtomicU64,
    current_states_computed: AtomicU64,
    current_state_checks_reused: AtomicU64,
    current_state_checks_computed: AtomicU64,
    member_links_reused: AtomicU64,
    member_links_computed: AtomicU64,
}

/// Rooms by (room version ID, create event ID).
type Rooms = HashMap<(&'static str, EventId), Arc<Mutex<RoomFacts>>>;

#[derive(Default)]
struct Inner {
    rooms: Mutex<Rooms>,
    links: Mutex<LinkVerdicts>,
    verify: bool,
    counters: Counters,
}

/// A handle on the facts shared by every [`RoomState`](super::room_state::RoomState) created
/// with it (cheap to clone; one per simulated world). See the module documentation for what is
/// shared and why it is exact.
#[derive(Clone, Default)]
pub struct SharedEventFacts {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SharedEventFacts {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SharedEventFacts")
            .field("verify", &self.inner.verify)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    EvaluationReused,
    EvaluationComputed,
    EvaluationUnshareable,
    CurrentStateReused,
    CurrentStateComputed,
    CurrentStateCheckReused,
    CurrentStateCheckComputed,
    MemberLinkReused,
    MemberLinkComputed,
}

impl SharedEventFacts {
    /// An empty store.
    pub fn new() -> SharedEventFacts {
        SharedEventFacts::default()
    }

    /// An empty store that recomputes every evaluation it hands out and panics if the local
    /// result differs (for tests: as slow as no sharing).
    pub fn verifying() -> SharedEventFacts {
        SharedEventFacts {
            inner: Arc::new(Inner {
                verify: true,
                ..Inner::default()
            }),
        }
    }

    /// Whether reused evaluations are recomputed and compared.
    pub(crate) fn verifies(&self) -> bool {
        self.inner.verify
    }

    /// The facts of the room whose create event is `create_id`, in `version_id`.
    pub(crate) fn room(&self, version_id: &'static str, create_id: &str) -> Arc<Mutex<RoomFacts>> {
        let mut rooms = lock(&self.inner.rooms);
        Arc::clone(rooms.entry((version_id, create_id.to_owned())).or_default())
    }

    pub(crate) fn count(&self, count: Count) {
        let counters = &self.inner.counters;
        let counter = match count {
            Count::EvaluationReused => &counters.evaluations_reused,
            Count::EvaluationComputed => &counters.evaluations_computed,
            Count::EvaluationUnshareable => &counters.evaluations_unshareable,
            Count::CurrentStateReused => &counters.current_states_reused,
            Count::CurrentStateComputed => &counters.current_states_computed,
            Count::CurrentStateCheckReused => &counters.current_state_checks_reused,
            Count::CurrentStateCheckComputed => &counters.current_state_checks_computed,
            Count::MemberLinkReused => &counters.member_links_reused,
            Count::MemberLinkComputed => &counters.member_links_computed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters so far.
    pub fn stats(&self) -> SharingStats {
        let counters = &self.inner.counters;
        SharingStats {
            evaluations_reused: counters.evaluations_reused.load(Ordering::Relaxed),
            evaluations_computed: counters.evaluations_computed.load(Ordering::Relaxed),
            evaluations_unshareable: counters.evaluations_unshareable.load(Ordering::Relaxed),
            current_states_reused: counters.current_states_reused.load(Ordering::Relaxed),
            current_states_computed: counters.current_states_computed.load(Ordering::Relaxed),
            current_state_checks_reused: counters
                .current_state_checks_reused
                .load(Ordering::Relaxed),
            current_state_checks_computed: counters
                .current_state_checks_computed
                .load(Ordering::Relaxed),
            member_links_reused: counters.member_links_reused.load(Ordering::Relaxed),
            member_links_computed: counters.member_links_computed.load(Ordering::Relaxed),
        }
    }

    /// [`verify_member_link`] on `event` with `domain_keys` at `now_ms`, computed once per event
    /// copy and per distinct key answers (see the module documentation).
    pub(crate) fn member_link(
        &self,
        version: &RoomVersion,
        event: &Arc<Pdu>,
        domain_keys: &ServerKeys,
        now_ms: i64,
        clamp: ValidityClamp,
    ) -> LinkOutcome {
        let address = Arc::as_ptr(event) as usize;
        // The answers are built only when a new verdict is stored; a known one is recognised
        // by comparing in place.
        let (answers, known) = {
            let mut links = lock(&self.inner.links);
            match links.get_mut(&address) {
                Some((_, key_ids, verdicts)) => {
                    let position = verdicts.iter().position(|(seen, _)| {
                        link_answers_match(seen, key_ids, domain_keys, now_ms, clamp)
                    });
                    match position {
                        Some(position) => {
                            verdicts[..=position].rotate_right(1);
                            (None, Some(verdicts[0].1.clone()))
                        }
                        None => (
                            Some(link_answers(key_ids, domain_keys, now_ms, clamp)),
                            None,
                        ),
                    }
                }
                None => {
                    let key_ids = link_key_ids(&event.json);
                    (
                        Some(link_answers(&key_ids, domain_keys, now_ms, clamp)),
                        None,
                    )
                }
            }
        };
        if let Some(outcome) = &known
            && !self.inner.verify
        {
            self.count(Count::MemberLinkReused);
            return outcome.clone();
        }
        let outcome = verify_member_link(version, &event.json, domain_keys, now_ms, clamp);
        if let Some(known) = known {
            assert_eq!(
                known, outcome,
                "the shared member-link outcome of {} differs from this server's",
                event.event_id
            );
            self.count(Count::MemberLinkReused);
            return outcome;
        }
        self.count(Count::MemberLinkComputed);
        let answers = answers.expect("built when no stored verdict matched");
        let mut links = lock(&self.inner.links);
        let (_, _, verdicts) = links
            .entry(address)
            .or_insert_with(|| (Arc::clone(event), link_key_ids(&event.json), Vec::new()));
        verdicts.insert(0, (answers, outcome.clone()));
        verdicts.truncate(MAX_LINK_VERDICTS);
        outcome
    }
}

/// Locks `mutex`; a poisoned lock (a panic elsewhere while holding it) still holds consistent
/// data, since every update is a single map insertion.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::server_keys::OldVerifyKey;
    use crate::matrix::signing::{KeyId, ServerSigningKey};

    fn key(version: &str, seed: u8) -> ServerSigningKey {
        ServerSigningKey::from_seed(KeyId::ed25519(version).unwrap(), &[seed; 32])
    }

    /// Comparing stored answers in place agrees with building the answers and comparing, for
    /// every pair of (key IDs, key object, time) among current, old, unknown and expired keys.
    #[test]
    fn link_answers_match_equals_comparing_built_answers() {
        let mut with_old = ServerKeys::with_current_key("a.example", &key("2", 2), 1_000);
        with_old.old_verify_keys.insert(
            "ed25519:1".into(),
            OldVerifyKey {
                key: key("1", 1).verifying_key(),
                expired_ts_ms: 500,
            },
        );
        let keys = [
            ServerKeys::with_current_key("a.example", &key("1", 1), 1_000),
            ServerKeys::with_current_key("a.example", &key("1", 3), 1_000),
            ServerKeys::with_current_key("b.example", &key("1", 1), 1_000),
            with_old,
        ];
        let key_id_sets: [Vec<String>; 4] = [
            vec![],
            vec!["ed25519:1".into()],
            vec!["ed25519:2".into()],
            vec!["ed25519:1".into(), "ed25519:2".into()],
        ];
        let clamp = ValidityClamp::unclamped(0);
        let mut seen_all = Vec::new();
        for domain_keys in &keys {
            for key_ids in &key_id_sets {
                for now_ms in [10, 2_000] {
                    seen_all.push(link_answers(key_ids, domain_keys, now_ms, clamp));
                }
            }
        }
        let mut matches = 0;
        for seen in &seen_all {
            for domain_keys in &keys {
                for key_ids in &key_id_sets {
                    for now_ms in [10, 2_000] {
                        let built = link_answers(key_ids, domain_keys, now_ms, clamp);
                        let in_place =
                            link_answers_match(seen, key_ids, domain_keys, now_ms, clamp);
                        assert_eq!(in_place, *seen == built, "{seen:?} vs {built:?}");
                        matches += usize::from(in_place);
                    }
                }
            }
        }
        assert!(matches >= seen_all.len());
    }
}
