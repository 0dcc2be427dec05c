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
//! - A shared current state is keyed by the sorted event IDs of the forward extremities and used
//!   only when every extremity is clean: the resolution of clean events' states after reads
//!   only their (identical) ancestries.
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
//! - Lookups only: nothing iterates the hash maps in a way that affects results.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::matrix::dag::Evaluation;
use crate::matrix::{EventId, StateMap};

/// Current states kept per room, at most (the table is cleared when full).
const CURRENT_STATES_CAPACITY: usize = 4096;

/// The facts shared by the servers holding one room: evaluations by event ID, current states by
/// extremity set.
#[derive(Default)]
pub(crate) struct RoomFacts {
    evaluations: HashMap<EventId, Evaluation>,
    current_states: HashMap<Vec<EventId>, Arc<StateMap>>,
}

impl RoomFacts {
    pub(crate) fn evaluation(&self, event_id: &str) -> Option<&Evaluation> {
        self.evaluations.get(event_id)
    }

    pub(crate) fn store_evaluation(&mut self, event_id: EventId, evaluation: Evaluation) {
        self.evaluations.insert(event_id, evaluation);
    }

    pub(crate) fn current_state(&self, extremities: &[EventId]) -> Option<&Arc<StateMap>> {
        self.current_states.get(extremities)
    }

    pub(crate) fn store_current_state(&mut self, extremities: Vec<EventId>, state: Arc<StateMap>) {
        if self.current_states.len() >= CURRENT_STATES_CAPACITY {
            self.current_states.clear();
        }
        self.current_states.insert(extremities, state);
    }
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
}

#[derive(Default)]
struct Counters {
    evaluations_reused: AtomicU64,
    evaluations_computed: AtomicU64,
    evaluations_unshareable: AtomicU64,
    current_states_reused: AtomicU64,
    current_states_computed: AtomicU64,
}

/// Rooms by (room version ID, create event ID).
type Rooms = HashMap<(&'static str, EventId), Arc<Mutex<RoomFacts>>>;

#[derive(Default)]
struct Inner {
    rooms: Mutex<Rooms>,
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

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Count {
    EvaluationReused,
    EvaluationComputed,
    EvaluationUnshareable,
    CurrentStateReused,
    CurrentStateComputed,
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
        }
    }
}

/// Locks `mutex`; a poisoned lock (a panic elsewhere while holding it) still holds consistent
/// data, since every update is a single map insertion.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
