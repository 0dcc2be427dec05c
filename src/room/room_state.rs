//! One homeserver's view of one room: the events it holds (each stored once, shared as
//! `Arc<Pdu>`), the DAG with the state before and after every event (the `stateres` helper's
//! [`Dag`], which also runs PDU checks 4 and 5 once per event on insertion), how each event was
//! judged, the forward extremities, the current state, and what clients are shown.
//!
//! Invariants:
//! - The forward extremities are the accepted events (not rejected, not soft-failed) that no
//!   accepted event names in its `prev_events` (s2s §Soft failure: soft-failed events are "not
//!   added to forward extremities"; rejected events are never used as `prev_events`).
//! - The current state is the resolution of the states after the forward extremities; it is
//!   memoised by the extremity set (a switch turns the memo off; results must not change).
//! - Nothing here reads a clock: times come in as arguments.
//! - With [`SharedEventFacts`] (see [`super::shared`]), the evaluation of every *clean* event
//!   (held intact, state before resolved from its prev events, all parents and the create event
//!   clean) and the current state of an extremity set of clean events are computed once for all
//!   servers; everything else is computed locally. Results are identical either way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::links::{LinkTable, LinkVerdict};
use super::policy::ArrivalPath;
use super::shared::{Count, RoomFacts, SharedEvaluation, SharedEventFacts, SharedId, lock};
use crate::matrix::auth::{AuthState, Rejection, Rule, auth_types_for_event, authorize};
use crate::matrix::canonical_json::MAX_SAFE_INTEGER;
use crate::matrix::dag::{
    Dag, DagError, EventIndex, HeldParents, LayeredState, RejectionCheck, StateMapView,
    reserve_gently,
};
use crate::matrix::event_builder::{EventDraft, MAX_PREV_EVENTS};
use crate::matrix::state_res::{EventSource, ResolveError};
use crate::matrix::{EventId, Pdu, RoomVersion, StateMap};

/// Which check rejected an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectedAt {
    /// Check 4: the auth rules against the event's own `auth_events`.
    AuthEvents,
    /// Check 5: the auth rules against the state before the event.
    StateBefore,
}

impl RejectedAt {
    /// The number of the check in the spec's list.
    pub fn check_number(self) -> u8 {
        match self {
            RejectedAt::AuthEvents => 4,
            RejectedAt::StateBefore => 5,
        }
    }
}

/// Why an event was soft-failed.
#[derive(Debug, Clone, PartialEq)]
pub enum SoftFailReason {
    /// Check 6: the auth rules against the current state rejected it.
    CurrentState(Rejection),
    /// MSC4430: its sender's member link is not verified (`Pending` or `Unverified`).
    Link(LinkVerdict),
    /// The current state could not be resolved, so check 6 could not pass. Only reachable if a
    /// state given from outside named events the DAG lacks.
    StateUnresolvable(ResolveError),
}

/// How a held event was judged on receipt.
#[derive(Debug, Clone, PartialEq)]
pub enum Fate {
    /// Passed every check; `labelled` when the sender's link was not verified and the policy
    /// labels rather than hides.
    Accepted { labelled: bool },
    /// Failed check 4 or 5.
    Rejected {
        check: RejectedAt,
        rejection: Rejection,
    },
    /// Passed 4 and 5 but failed check 6 or the link rule.
    SoftFailed(SoftFailReason),
}

/// What the server knows about one held event besides the event itself.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldEvent {
    pub fate: Fate,
    /// Check 3 failed: the held copy is the redacted form.
    pub redacted: bool,
    pub path: ArrivalPath,
    pub received_at_ms: i64,
    /// The state before the event was given from outside (a gap or a join) rather than
    /// resolved from its prev events, so check 5 is not a function of the DAG alone.
    pub state_given: bool,
}

/// The fate of a held event as [`LocalFacts`] stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoredFate {
    Delivered,
    Labelled,
    /// In `rare_fates`.
    Rare,
}

/// Whether clients see a timeline entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Visibility {
    /// Sent to clients; `labelled` = shown with an "invalid handle" (member_info `null`).
    Delivered { labelled: bool },
    /// Hidden by a soft-fail that a later link verification revealed (policy A6).
    Revealed { at_ms: i64 },
    /// Not sent to clients, and why.
    Hidden(Fate),
}

/// One event in the client-visible timeline (in order of processing).
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEntry {
    pub event_id: EventId,
    pub sender: String,
    pub event_type: String,
    pub is_state: bool,
    pub at_ms: i64,
    pub visibility: Visibility,
}

impl TimelineEntry {
    /// Whether clients are shown the event.
    pub fn is_visible(&self) -> bool {
        !matches!(self.visibility, Visibility::Hidden(_))
    }
}

/// Extremity sets whose current state is memoised, at most: the most recently used ones. A
/// server asks for its current set again and again and for an older one almost never, and
/// each entry is a whole room state (kept alive here even after the shared store dropped it),
/// so two are enough.
const MEMO_CAPACITY: usize = 2;

/// The shared number of an event that has none (not clean, or not shared).
const NO_SHARED_ID: SharedId = SharedId::MAX;

/// What one server keeps per held event besides its DAG node: 24 bytes (a world holds one per
/// event per server). Written in two steps: `shared_id` and `clean` when the event is
/// inserted, the [`HeldEvent`] part (`received_at_ms` to `state_given`) when it is recorded
/// (`RoomState::record`, `record_outlier`); the children count grows as accepted children are
/// recorded. A common fate is stored inline, a rare one (rejected, soft-failed) in
/// [`RoomState::rare_fates`].
#[derive(Debug, Clone, Copy)]
struct LocalFacts {
    received_at_ms: i64,
    /// Its room-wide number in the shared facts, or [`NO_SHARED_ID`].
    shared_id: SharedId,
    /// How many accepted events name it in `prev_events`.
    accepted_children: u32,
    fate: StoredFate,
    path: ArrivalPath,
    redacted: bool,
    state_given: bool,
    /// Clean in the sense of [`super::shared`] (its evaluation may be shared).
    clean: bool,
}

// The size the comment above promises (one per event per server adds up).
const _: () = assert!(std::mem::size_of::<LocalFacts>() == 24);

/// One server's view of one room. See the module documentation for the invariants.
pub struct RoomState {
    /// Interned (`room::intern`): the check memo recognises the room by this address.
    room_id: Arc<str>,
    dag: Dag,
    /// How many events are recorded (their [`HeldEvent`] part of [`RoomState::local`] written):
    /// all inserted events but the one between its insertion and its recording.
    recorded: usize,
    /// The fates that are neither `Accepted { labelled: false }` nor `{ labelled: true }`, by
    /// event index.
    rare_fates: BTreeMap<EventIndex, Fate>,
    /// The forward extremities, ascending (a sorted vector: read on every receipt, check 6's
    /// key; changed by one insertion and a few removals per accepted event).
    extremities: Vec<EventIndex>,
    /// Accepted events that named a prev event the DAG did not hold yet, by that prev's ID.
    children_of_missing: BTreeMap<EventId, u32>,
    /// Current states by extremity set, most recently used first (at most [`MEMO_CAPACITY`]).
    memo: Option<Vec<(Vec<EventIndex>, Arc<StateMap>)>>,
    /// Events hidden by the link rule and revealed later (policy A6): index -> when. The
    /// timeline itself is derived from the DAG and `local` (one entry per held event, in
    /// processing order = index order), so nothing is stored per event for it.
    revealed: BTreeMap<EventIndex, i64>,
    /// Whether events arriving on the `Backfill` path are history before the server's first
    /// timeline event (s2s backfill after a state-and-auth-chain join): then they neither
    /// become nor end forward extremities (as Synapse treats backfilled events).
    backfill_is_history: bool,
    /// Per event, in index order: what this server keeps besides the DAG node (see
    /// [`LocalFacts`]). One vector rather than one per field: a receipt reads these for each
    /// parent and writes one for the new event, and in a large world each vector's line is
    /// cold, so each separate vector cost a cache miss (docs/notes/perf.md sessions 18, 21).
    local: Vec<LocalFacts>,
    /// Facts shared with other servers, if sharing is on.
    shared: Option<SharedEventFacts>,
    /// This room's entry in `shared`, once the create event is held and clean.
    room_facts: Option<Arc<Mutex<RoomFacts>>>,
}

/// The check-4 part of an evaluation's rejection: what check 4 alone (an outlier's only check)
/// decided on the event.
fn check_four_verdict(
    rejection: &Option<(RejectionCheck, Rejection)>,
) -> Option<(RejectionCheck, Rejection)> {
    match rejection {
        Some((RejectionCheck::AuthEvents, rejection)) => {
            Some((RejectionCheck::AuthEvents, rejection.clone()))
        }
        Some((RejectionCheck::StateBefore, _)) | None => None,
    }
}

/// Adds `index` to the ascending, distinct `indices` (nothing if present).
fn insert_sorted(indices: &mut Vec<EventIndex>, index: EventIndex) {
    if let Err(position) = indices.binary_search(&index) {
        indices.insert(position, index);
    }
}

/// Removes `index` from the ascending, distinct `indices` (nothing if absent).
fn remove_sorted(indices: &mut Vec<EventIndex>, index: EventIndex) {
    if let Ok(position) = indices.binary_search(&index) {
        indices.remove(position);
    }
}

impl RoomState {
    /// An empty view of room `room_id` of `version`, with the current-state memo on.
    pub fn new(version: RoomVersion, room_id: &str) -> RoomState {
        RoomState {
            room_id: super::intern::intern(room_id),
            dag: Dag::new(version),
            recorded: 0,
            rare_fates: BTreeMap::new(),
            extremities: Vec::new(),
            children_of_missing: BTreeMap::new(),
            memo: Some(Vec::new()),
            revealed: BTreeMap::new(),
            backfill_is_history: false,
            local: Vec::new(),
            shared: None,
            room_facts: None,
        }
    }

    /// As [`RoomState::new`], sharing the evaluation of events and current states with every
    /// other room state created with (a clone of) `facts` — see [`super::shared`]. Results are
    /// the same as without sharing.
    pub fn with_shared_facts(
        version: RoomVersion,
        room_id: &str,
        facts: &SharedEventFacts,
    ) -> RoomState {
        let mut room = RoomState::new(version, room_id);
        room.shared = Some(facts.clone());
        room
    }

    /// Starts (`Some`) or stops (`None`) sharing facts with other servers; allowed at any time
    /// (events held already keep their evaluations and count as clean or not as before).
    pub fn set_shared_facts(&mut self, facts: Option<SharedEventFacts>) {
        self.shared = facts;
        self.room_facts = None;
        // Room-wide numbers belong to the store that gave them.
        for facts in &mut self.local {
            facts.shared_id = NO_SHARED_ID;
        }
    }

    /// Whether the held event is clean (its evaluation is the same on every server where it is
    /// clean; see [`super::shared`]).
    pub fn is_clean(&self, event_id: &str) -> bool {
        self.dag
            .index(event_id)
            .is_some_and(|index| self.clean_at(index))
    }

    /// This room's shared facts, if sharing is on and the create event is held and clean.
    fn room_facts(&mut self) -> Option<Arc<Mutex<RoomFacts>>> {
        if self.room_facts.is_none() {
            let shared = self.shared.as_ref()?;
            let create = self.dag.create_index()?;
            if !self.clean_at(create) {
                return None;
            }
            let create_id = &self.dag.event(create).event_id;
            self.room_facts = Some(shared.room(self.dag.version().id, create_id));
        }
        self.room_facts.clone()
    }

    /// Whether an event about to be inserted is clean: intact, no state given, and its prev
    /// events, auth events (all held, at `parents`) and the create event held and clean (the
    /// create event itself: intact and no state given).
    fn clean_on_insert(
        &self,
        pdu: &Pdu,
        parents: &HeldParents,
        state_given: bool,
        redacted: bool,
    ) -> bool {
        if state_given || redacted {
            return false;
        }
        let is_create = pdu.event_type == "m.room.create" && pdu.state_key.as_deref() == Some("");
        if is_create {
            return true;
        }
        let clean = |&index: &EventIndex| self.clean_at(index);
        self.dag
            .create_index()
            .is_some_and(|create| self.clean_at(create))
            && parents.prev.iter().all(clean)
            && parents.auth.iter().all(clean)
    }

    /// Turns the current-state memo on or off (results are identical; only speed differs).
    pub fn set_memo(&mut self, enabled: bool) {
        self.memo = enabled.then(Vec::new);
    }

    pub fn room_id(&self) -> &str {
        &self.room_id
    }

    pub fn version(&self) -> &RoomVersion {
        self.dag.version()
    }

    /// The DAG of held events.
    pub fn dag(&self) -> &Dag {
        &self.dag
    }

    /// Every held event with how it was judged, in DAG index order.
    pub fn held_events(&self) -> impl Iterator<Item = (&Arc<Pdu>, HeldEvent)> {
        (0..self.recorded as EventIndex).map(|index| (self.dag.event(index), self.held_at(index)))
    }

    /// How many events are held (the length of [`RoomState::held_events`], without building
    /// them).
    pub fn held_count(&self) -> usize {
        self.recorded
    }

    /// How the event at `index` was judged.
    pub fn held_at(&self, index: EventIndex) -> HeldEvent {
        let stored = self.recorded_at(index);
        HeldEvent {
            fate: self.fate_at(index).into_owned(),
            redacted: stored.redacted,
            path: stored.path,
            received_at_ms: stored.received_at_ms,
            state_given: stored.state_given,
        }
    }

    /// The fate of the event at `index` (borrowed when stored aside, built when common).
    pub fn fate_at(&self, index: EventIndex) -> std::borrow::Cow<'_, Fate> {
        use std::borrow::Cow;
        match self.recorded_at(index).fate {
            StoredFate::Delivered => Cow::Owned(Fate::Accepted { labelled: false }),
            StoredFate::Labelled => Cow::Owned(Fate::Accepted { labelled: true }),
            StoredFate::Rare => Cow::Borrowed(&self.rare_fates[&index]),
        }
    }

    /// The local facts of the recorded event at `index` (panics for one not recorded, as
    /// reading past the end of a vector would).
    fn recorded_at(&self, index: EventIndex) -> &LocalFacts {
        assert!(
            (index as usize) < self.recorded,
            "event {index} is not recorded ({} are)",
            self.recorded
        );
        &self.local[index as usize]
    }

    /// Stores `held` as the event at `index` (the next one to record, inserted already).
    fn push_held(&mut self, index: EventIndex, held: HeldEvent) {
        debug_assert_eq!(
            index as usize, self.recorded,
            "events are recorded in order"
        );
        let fate = match held.fate {
            Fate::Accepted { labelled: false } => StoredFate::Delivered,
            Fate::Accepted { labelled: true } => StoredFate::Labelled,
            fate => {
                self.rare_fates.insert(index, fate);
                StoredFate::Rare
            }
        };
        let local = &mut self.local[index as usize];
        local.received_at_ms = held.received_at_ms;
        local.fate = fate;
        local.path = held.path;
        local.redacted = held.redacted;
        local.state_given = held.state_given;
        self.recorded += 1;
    }

    /// Whether the event is held.
    pub fn holds(&self, event_id: &str) -> bool {
        self.dag.index(event_id).is_some()
    }

    /// Whether the event is held with its place in the graph (not as an outlier), so that it
    /// can be a prev event.
    pub fn holds_in_graph(&self, event_id: &str) -> bool {
        self.dag
            .index(event_id)
            .is_some_and(|index| !self.dag.is_outlier(index))
    }

    /// Whether the held event is an outlier (known from a `send_join` or `/state` answer only).
    pub fn is_outlier(&self, event_id: &str) -> bool {
        self.dag
            .index(event_id)
            .is_some_and(|index| self.dag.is_outlier(index))
    }

    /// Backfilled events are history before this server's first timeline event: they neither
    /// become nor end forward extremities (default: they do, as any other event).
    pub fn set_backfill_is_history(&mut self, history: bool) {
        self.backfill_is_history = history;
    }

    /// The held event, shared.
    pub fn event(&self, event_id: &str) -> Option<&Arc<Pdu>> {
        self.dag.index(event_id).map(|index| self.dag.event(index))
    }

    /// How the held event was judged.
    pub fn held(&self, event_id: &str) -> Option<HeldEvent> {
        self.dag.index(event_id).map(|index| self.held_at(index))
    }

    /// The forward extremities' event IDs, in DAG index order.
    pub fn forward_extremities(&self) -> Vec<EventId> {
        self.extremities
            .iter()
            .map(|&index| self.dag.event(index).event_id.clone())
            .collect()
    }

    /// The client-visible timeline, in order of processing (one entry per held event; built
    /// on demand from the held events, so a server stores no strings per event for it).
    pub fn timeline(&self) -> Vec<TimelineEntry> {
        self.timeline_indices()
            .map(|index| self.timeline_entry(index))
            .collect()
    }

    /// The DAG indices of the timeline's events, in order: what [`RoomState::timeline`] lists,
    /// without building its entries (read them with [`Dag::event`], [`RoomState::visibility`]
    /// and [`RoomState::held_at`]).
    pub fn timeline_indices(&self) -> impl DoubleEndedIterator<Item = EventIndex> + '_ {
        (0..self.recorded as EventIndex).filter(|&index| !self.dag.is_outlier(index))
    }

    /// How clients are shown the held event at `index` (as its timeline entry says).
    pub fn visibility(&self, index: EventIndex) -> Visibility {
        if let Some(&at_ms) = self.revealed.get(&index) {
            return Visibility::Revealed { at_ms };
        }
        match self.recorded_at(index).fate {
            StoredFate::Delivered => Visibility::Delivered { labelled: false },
            StoredFate::Labelled => Visibility::Delivered { labelled: true },
            StoredFate::Rare => Visibility::Hidden(self.rare_fates[&index].clone()),
        }
    }

    /// The timeline entry of the held event at `index`.
    fn timeline_entry(&self, index: EventIndex) -> TimelineEntry {
        let pdu = self.dag.event(index);
        TimelineEntry {
            event_id: pdu.event_id.clone(),
            sender: pdu.sender.clone(),
            event_type: pdu.event_type.clone(),
            is_state: pdu.is_state(),
            at_ms: self.recorded_at(index).received_at_ms,
            visibility: self.visibility(index),
        }
    }

    /// The timeline entry of a held event.
    pub fn timeline_entry_of(&self, event_id: &str) -> Option<TimelineEntry> {
        self.dag
            .index(event_id)
            .filter(|&index| !self.dag.is_outlier(index))
            .map(|index| self.timeline_entry(index))
    }

    /// Whether clients are shown the held event at `index` (its timeline entry is visible).
    fn is_visible(&self, index: EventIndex) -> bool {
        !self.dag.is_outlier(index)
            && (self.revealed.contains_key(&index)
                || self.recorded_at(index).fate != StoredFate::Rare)
    }

    /// The events clients are shown, in order.
    pub fn visible_event_ids(&self) -> Vec<EventId> {
        (0..self.recorded as EventIndex)
            .filter(|&index| self.is_visible(index))
            .map(|index| self.dag.event(index).event_id.clone())
            .collect()
    }

    /// The current state: the resolution of the states after the forward extremities
    /// (memoised by the extremity set).
    pub fn current_state(&mut self) -> Result<Arc<StateMap>, ResolveError> {
        let extremities: Vec<EventIndex> = self.extremities.clone();
        if extremities.is_empty() {
            return Ok(Arc::new(StateMap::new()));
        }
        if let Some(memo) = &mut self.memo
            && let Some(position) = memo.iter().position(|(key, _)| *key == extremities)
        {
            memo[..=position].rotate_right(1);
            return Ok(Arc::clone(&memo[0].1));
        }
        let state = self.resolve_extremities(&extremities)?;
        if let Some(memo) = &mut self.memo {
            memo.truncate(MEMO_CAPACITY - 1);
            memo.insert(0, (extremities, Arc::clone(&state)));
        }
        Ok(state)
    }

    /// The state after the only extremity as one map, or the resolution of the states after
    /// several, shared across servers when every extremity is clean.
    fn resolve_extremities(
        &mut self,
        extremities: &[EventIndex],
    ) -> Result<Arc<StateMap>, ResolveError> {
        let key = self.shared_key(extremities);
        let room_facts = self.room_facts();
        let facts = if key.is_some() {
            room_facts.clone()
        } else {
            None
        };
        let compute = |dag: &Dag| {
            // Extremities sharing one state (messages after the same state) resolve to it, as
            // `Dag::insert` resolves such parents; consecutive messages share their state
            // object, so one whole-map copy serves them all.
            let first = &dag.evaluation(extremities[0]).state_after;
            if extremities
                .iter()
                .all(|&index| dag.evaluation(index).state_after.same_as(first))
            {
                return Ok(match &room_facts {
                    Some(room_facts) => lock(room_facts).whole_map(first),
                    None => first.to_shared_map(),
                });
            }
            dag.resolve_states_after(extremities).map(Arc::new)
        };
        let (Some(key), Some(facts)) = (key, facts) else {
            return compute(&self.dag);
        };
        let shared = self.shared.as_ref().expect("facts come from a store");
        let found = lock(&facts).current_state(&key).cloned();
        if let Some(state) = found {
            if shared.verifies() {
                assert_eq!(
                    *state,
                    *compute(&self.dag)?,
                    "the shared current state differs from this server's"
                );
            }
            shared.count(Count::CurrentStateReused);
            return Ok(state);
        }
        let state = compute(&self.dag)?;
        shared.count(Count::CurrentStateComputed);
        lock(&facts).store_current_state(key, Arc::clone(&state));
        Ok(state)
    }

    /// The sorted room-wide numbers of `events`, if they all have one.
    fn shared_key(&self, events: &[EventIndex]) -> Option<Vec<SharedId>> {
        let mut key = Vec::with_capacity(events.len());
        for &index in events {
            let id = self.local[index as usize].shared_id;
            if id == NO_SHARED_ID {
                return None;
            }
            key.push(id);
        }
        key.sort_unstable();
        Some(key)
    }

    /// The current state entry for `(event_type, state_key)`, if any.
    pub fn current_state_event(
        &mut self,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<Arc<Pdu>>, ResolveError> {
        let state = self.current_state()?;
        Ok(state
            .get(&(event_type.to_owned(), state_key.to_owned()))
            .and_then(|id| self.event(id).cloned()))
    }

    /// The MSC4428-style `member_info`: every member in the current state -> the user ID clients
    /// are shown, or `None` (`null`) when the link is not verified. In rooms without member keys
    /// the member ID is the user ID.
    pub fn member_info(
        &mut self,
        links: &LinkTable,
    ) -> Result<BTreeMap<String, Option<String>>, ResolveError> {
        let state = self.current_state()?;
        let member_keys = self.version().member_keys;
        Ok(state
            .keys()
            .filter(|(event_type, _)| event_type == "m.room.member")
            .map(|(_, member)| {
                let user_id = if member_keys {
                    links.user_id(member)
                } else {
                    Some(member.clone())
                };
                (member.clone(), user_id)
            })
            .collect())
    }

    /// Inserts an event whose auth events are held: with its prev events held too (the state
    /// before it is resolved from theirs), or with `state_before` given (a gap, or a join's
    /// first event). `parents`: what [`Dag::look_up_parents`] found for it, no auth event
    /// missing and, without a given state, no prev event either. The DAG runs checks 4 and 5,
    /// or takes another server's evaluation when the event is clean and sharing is on.
    /// `redacted`: the copy is check 3's redacted form. The caller records the fate with
    /// [`RoomState::record`].
    pub(crate) fn insert(
        &mut self,
        pdu: Arc<Pdu>,
        parents: HeldParents,
        state_before: Option<Arc<StateMap>>,
        redacted: bool,
    ) -> Result<(EventIndex, Option<(RejectedAt, Rejection)>), DagError> {
        let clean = self.clean_on_insert(&pdu, &parents, state_before.is_some(), redacted);
        let is_create = pdu.event_type == "m.room.create" && pdu.state_key.as_deref() == Some("");
        let facts = if clean && !is_create {
            self.room_facts()
        } else {
            None
        };
        let mut clean = clean;
        let (index, shared_id) = match (state_before, facts) {
            (Some(state), _) => {
                let adoptable = !redacted && self.given_state_parents_clean(&parents, &state);
                let found = if adoptable {
                    self.evaluated_with_state(&pdu.event_id, &state)
                } else {
                    None
                };
                // The state before it as another server evaluated it, when that is the given
                // state: the same entries, without copying a whole room's state per join.
                let state_before = match &found {
                    Some(found) => Arc::clone(&found.evaluation.state_before),
                    None => Arc::new(LayeredState::from_map((*state).clone())),
                };
                let index = self.dag.insert_with_state_before_and_parents(
                    Arc::clone(&pdu),
                    state_before,
                    parents,
                )?;
                let shared_id = match found {
                    Some(found) => self.adopt_evaluation(index, found),
                    None => NO_SHARED_ID,
                };
                clean = shared_id != NO_SHARED_ID;
                (index, shared_id)
            }
            (None, None) => {
                if let Some(shared) = &self.shared {
                    shared.count(Count::EvaluationUnshareable);
                }
                (self.dag.insert_with_parents(pdu, parents)?, NO_SHARED_ID)
            }
            (None, Some(facts)) => self.insert_shared(pdu, parents, &facts)?,
        };
        self.push_local(index, clean, shared_id);
        let rejection = self
            .dag
            .evaluation(index)
            .rejection
            .as_ref()
            .map(|(check, rejection)| {
                let check = match check {
                    RejectionCheck::AuthEvents => RejectedAt::AuthEvents,
                    RejectionCheck::StateBefore => RejectedAt::StateBefore,
                };
                (check, rejection.clone())
            });
        Ok((index, rejection))
    }

    /// Whether the held event at `index` is clean.
    fn clean_at(&self, index: EventIndex) -> bool {
        self.local[index as usize].clean
    }

    /// Records the local facts of the event just inserted at `index` (its [`HeldEvent`] part
    /// comes with `push_held`).
    fn push_local(&mut self, index: EventIndex, clean: bool, shared_id: SharedId) {
        debug_assert_eq!(index as usize, self.local.len());
        reserve_gently(&mut self.local, 1);
        self.local.push(LocalFacts {
            shared_id,
            accepted_children: 0,
            clean,
            // Until `push_held` records the event (nothing reads them before: `recorded_at`).
            received_at_ms: 0,
            fate: StoredFate::Delivered,
            path: ArrivalPath::Send,
            redacted: false,
            state_given: false,
        });
    }

    /// Whether an event given the state before it could be clean: its auth events (held, at
    /// `parents`), every event of the given state and the create event are held and clean.
    fn given_state_parents_clean(&self, parents: &HeldParents, state: &StateMap) -> bool {
        let held_clean =
            |id: &EventId| self.dag.index(id).is_some_and(|index| self.clean_at(index));
        self.dag
            .create_index()
            .is_some_and(|create| self.clean_at(create))
            && parents.auth.iter().all(|&index| self.clean_at(index))
            && state.values().all(held_clean)
    }

    /// An event inserted with a state given from outside (a join's state, a `/state` answer) is
    /// clean when another server evaluated it clean — from its prev events — with exactly this
    /// state before it and the same verdict: then its evaluation here is that one (the same
    /// copies, rejections and state are read), and its descendants can share as usual. This
    /// finds that evaluation if the state before it is `state`; [`RoomState::adopt_evaluation`]
    /// compares the verdict once the event is inserted.
    fn evaluated_with_state(
        &mut self,
        event_id: &str,
        state: &StateMap,
    ) -> Option<SharedEvaluation> {
        let facts = self.room_facts()?;
        let found = lock(&facts).evaluation(event_id).cloned()?;
        found
            .evaluation
            .state_before
            .equals_map(state)
            .then_some(found)
    }

    /// Adopts `found` (see [`RoomState::evaluated_with_state`]) as the evaluation of the event
    /// just inserted at `index` if its verdict is this server's. Returns the event's room-wide
    /// number, or [`NO_SHARED_ID`] if it is not clean.
    fn adopt_evaluation(&mut self, index: EventIndex, found: SharedEvaluation) -> SharedId {
        if self.dag.evaluation(index).rejection == found.evaluation.rejection {
            // Equal: keep one copy of the (whole-room) states instead of this server's.
            self.dag.share_evaluation(index, found.evaluation);
            found.id
        } else {
            NO_SHARED_ID
        }
    }

    /// Inserts an outlier (see [`Dag::insert_outlier`]): an event of a `send_join` or `/state`
    /// answer, checked against its own auth events only. It is clean (usable as a clean auth
    /// event by clean events) when it is intact, its auth events and the create event are clean,
    /// and another server evaluated it clean with the same verdict (so every rejection flag a
    /// descendant reads is the same; its state is never read). `auth`: its auth events'
    /// indices as [`Dag::look_up_auth_events`] found them, none missing. The caller records it
    /// with [`RoomState::record_outlier`].
    pub(crate) fn insert_outlier(
        &mut self,
        pdu: Arc<Pdu>,
        auth: Vec<EventIndex>,
        redacted: bool,
    ) -> Result<(EventIndex, Option<(RejectedAt, Rejection)>), DagError> {
        let is_create = pdu.event_type == "m.room.create" && pdu.state_key.as_deref() == Some("");
        let parents_clean = !redacted
            && (is_create
                || self
                    .dag
                    .create_index()
                    .is_some_and(|create| self.clean_at(create)))
            && auth.iter().all(|&index| self.clean_at(index));
        // Another server's evaluation of the event, if its parents are clean here (then the
        // create event is held and clean, and `room_facts` is the room of its ID).
        let found = if parents_clean && !is_create {
            self.room_facts()
                .and_then(|facts| lock(&facts).evaluation(&pdu.event_id).cloned())
        } else {
            None
        };
        // With clean parents, check 4 here reads what it read where the event was evaluated
        // (the intact copies of the event, of its auth events and of the create event, and the
        // same rejections: see `room::shared`), so its verdict is that evaluation's check-4
        // verdict: its rejection if check 4 rejected it, else none (check 5 does not run on an
        // outlier). A verifying store checks it anyway.
        let verifies = self.shared.as_ref().is_some_and(SharedEventFacts::verifies);
        let judged = match &found {
            Some(found) if !verifies => Some(check_four_verdict(&found.evaluation.rejection)),
            _ => None,
        };
        let index = self
            .dag
            .insert_outlier_with_auth(Arc::clone(&pdu), auth, judged)?;
        if let Some(found) = &found
            && verifies
        {
            assert_eq!(
                check_four_verdict(&found.evaluation.rejection),
                self.dag.evaluation(index).rejection,
                "the shared check-4 verdict on outlier {} differs from this server's",
                pdu.event_id
            );
        }
        let mut clean = false;
        if parents_clean && is_create {
            // The create event is never shared (it is clean wherever it is intact), and its
            // verdict is rule 1 alone, which reads only the event: check 4 as an outlier and
            // checks 4–5 in the graph decide alike.
            clean = self.dag.evaluation(index).rejection.is_none();
        } else if let Some(found) = found {
            clean = found.evaluation.rejection == self.dag.evaluation(index).rejection;
        }
        self.push_local(index, clean, NO_SHARED_ID);
        let rejection = self
            .dag
            .evaluation(index)
            .rejection
            .as_ref()
            .map(|(_, rejection)| (RejectedAt::AuthEvents, rejection.clone()));
        Ok((index, rejection))
    }

    /// Records how the outlier at `index` was judged (no extremities, no timeline entry).
    pub(crate) fn record_outlier(&mut self, index: EventIndex, held: HeldEvent) {
        self.push_held(index, held);
    }

    /// Inserts a clean event, reusing the evaluation another server stored, else evaluating it and
    /// storing the result.
    fn insert_shared(
        &mut self,
        pdu: Arc<Pdu>,
        parents: HeldParents,
        facts: &Arc<Mutex<RoomFacts>>,
    ) -> Result<(EventIndex, SharedId), DagError> {
        let shared = self.shared.clone().expect("facts come from a store");
        let found = lock(facts).evaluation(&pdu.event_id).cloned();
        match found {
            Some(found) if !shared.verifies() => {
                shared.count(Count::EvaluationReused);
                let index =
                    self.dag
                        .insert_evaluated_with_parents(pdu, found.evaluation, parents)?;
                Ok((index, found.id))
            }
            Some(found) => {
                let evaluation = found.evaluation;
                let event_id = pdu.event_id.clone();
                let index = self.dag.insert_with_parents(pdu, parents)?;
                let local = self.dag.evaluation(index);
                assert!(
                    local.rejection == evaluation.rejection
                        && local.state_before.to_map() == evaluation.state_before.to_map()
                        && local.state_after.to_map() == evaluation.state_after.to_map(),
                    "the shared evaluation of {event_id} differs from this server's"
                );
                shared.count(Count::EvaluationReused);
                Ok((index, found.id))
            }
            None => {
                let index = self.dag.insert_with_parents(Arc::clone(&pdu), parents)?;
                shared.count(Count::EvaluationComputed);
                let id = lock(facts).store_evaluation(
                    pdu.event_id.clone(),
                    Arc::clone(self.dag.shared_evaluation(index)),
                );
                Ok((index, id))
            }
        }
    }

    /// Checks the inserted, not yet recorded event at `index` against the auth rules over the
    /// current state (check 6); on success, the rule that allowed it. When the event and every
    /// forward extremity are clean, the verdict is shared across servers (see [`super::shared`]).
    pub(crate) fn check_current_state(
        &mut self,
        index: EventIndex,
    ) -> Result<Rule, SoftFailReason> {
        let event = self.local[index as usize].shared_id;
        let key = match event {
            NO_SHARED_ID => None,
            _ => self.shared_key(&self.extremities),
        };
        let facts = if key.is_some() {
            self.room_facts()
        } else {
            None
        };
        let (Some(key), Some(facts)) = (key, facts) else {
            let pdu = Arc::clone(self.dag.event(index));
            return self.check_current_state_locally(&pdu);
        };
        let shared = self.shared.clone().expect("facts come from a store");
        let found = lock(&facts).current_state_check(event, &key).cloned();
        if let Some(check) = found
            && !shared.verifies()
        {
            shared.count(Count::CurrentStateCheckReused);
            return check.map_err(SoftFailReason::CurrentState);
        }
        let pdu = Arc::clone(self.dag.event(index));
        let local = self.check_current_state_locally(&pdu);
        let check = match &local {
            Ok(rule) => Ok(*rule),
            Err(SoftFailReason::CurrentState(rejection)) => Err(rejection.clone()),
            // Not a verdict of the rules (the state did not resolve): nothing to share.
            Err(_) => return local,
        };
        let mut facts = lock(&facts);
        match facts.current_state_check(event, &key) {
            Some(stored) => {
                assert_eq!(
                    *stored, check,
                    "the shared check-6 verdict on {} differs from this server's",
                    pdu.event_id
                );
                shared.count(Count::CurrentStateCheckReused);
            }
            None => {
                shared.count(Count::CurrentStateCheckComputed);
                facts.store_current_state_check(event, key, check);
            }
        }
        local
    }

    /// Check 6 computed on this server.
    fn check_current_state_locally(&mut self, pdu: &Pdu) -> Result<Rule, SoftFailReason> {
        let version = *self.dag.version();
        if self.extremities.len() == 1 {
            // One extremity: its state after is the current state; read it in place.
            let only = *self.extremities.first().expect("one extremity");
            let view = StateMapView {
                state: &self.dag.evaluation(only).state_after,
                dag: &self.dag,
            };
            return authorize(&version, pdu, &view).map_err(SoftFailReason::CurrentState);
        }
        let state = self
            .current_state()
            .map_err(SoftFailReason::StateUnresolvable)?;
        let view = ResolvedStateView {
            state: &state,
            dag: &self.dag,
        };
        authorize(&version, pdu, &view).map_err(SoftFailReason::CurrentState)
    }

    /// The rule that allowed a held, not rejected event against the state before it (check 5's
    /// deciding rule; the DAG keeps only rejections).
    /// Shared across servers for clean events (a pure function of the event's copy and its
    /// state before, both fixed by the event ID then).
    pub(crate) fn allowing_rule_before(&mut self, index: EventIndex) -> Option<Rule> {
        let id = self.local[index as usize].shared_id;
        let facts = if id == NO_SHARED_ID {
            None
        } else {
            self.room_facts()
        };
        let Some(facts) = facts else {
            return self.allowing_rule_before_locally(index);
        };
        let shared = self.shared.clone().expect("facts come from a store");
        let found = lock(&facts).rule_before(id);
        if let Some(rule) = found {
            if shared.verifies() {
                assert_eq!(
                    rule,
                    self.allowing_rule_before_locally(index),
                    "the shared allowing rule differs from this server's"
                );
            }
            return rule;
        }
        let rule = self.allowing_rule_before_locally(index);
        lock(&facts).store_rule_before(id, rule);
        rule
    }

    /// The allowing rule against the state before, computed on this server.
    fn allowing_rule_before_locally(&self, index: EventIndex) -> Option<Rule> {
        let view = StateMapView {
            state: &self.dag.evaluation(index).state_before,
            dag: &self.dag,
        };
        authorize(self.dag.version(), self.dag.event(index), &view).ok()
    }

    /// Records how the event at `index` was judged, updates the forward extremities and the
    /// timeline.
    pub(crate) fn record(&mut self, index: EventIndex, held: HeldEvent) {
        debug_assert_eq!(
            index as usize, self.recorded,
            "events are recorded in order"
        );
        let pdu = Arc::clone(self.dag.event(index));
        let history = self.backfill_is_history && held.path == ArrivalPath::Backfill;
        if matches!(held.fate, Fate::Accepted { .. }) && history {
            // History before the first timeline event: counted as a child of its prev events
            // (they are history too) but never a forward extremity itself.
            for &parent in self.dag.prev_indices(index) {
                self.local[parent as usize].accepted_children += 1;
            }
        } else if matches!(held.fate, Fate::Accepted { .. }) {
            let mut hidden_parent = false;
            for &parent in self.dag.prev_indices(index) {
                let facts = &mut self.local[parent as usize];
                facts.accepted_children += 1;
                hidden_parent |= facts.fate == StoredFate::Rare;
                remove_sorted(&mut self.extremities, parent);
            }
            if hidden_parent {
                self.drop_extremities_behind_hidden(index);
            }
            // The DAG resolved one index per prev event ID it held in the graph: if it found
            // them all, none is missing (and none needs looking up again).
            if self.dag.prev_indices(index).len() != pdu.prev_events.len() {
                for prev in &pdu.prev_events {
                    if self.dag.index(prev).is_none() {
                        *self.children_of_missing.entry(prev.clone()).or_default() += 1;
                    }
                }
            }
            if let Some(children) = self.children_of_missing.remove(&pdu.event_id) {
                self.local[index as usize].accepted_children += children;
            }
            if self.local[index as usize].accepted_children == 0 {
                insert_sorted(&mut self.extremities, index);
            }
        }
        self.push_held(index, held);
    }

    /// The accepted event at `index` names a prev event this server soft-failed or rejected:
    /// such an event never became a forward extremity, so its own prev events stayed ones in
    /// its place. The new event descends from them, so they stop being extremities, through
    /// any chain of soft-failed or rejected ancestors (Synapse's `_get_prevs_before_rejected`);
    /// else they would dangle, named again in this server's next `prev_events` and resolved
    /// into its current state beside the event that descends from them.
    fn drop_extremities_behind_hidden(&mut self, index: EventIndex) {
        let is_hidden = |local: &[LocalFacts], event: EventIndex| {
            local[event as usize].fate == StoredFate::Rare
        };
        let mut hidden: Vec<EventIndex> = self
            .dag
            .prev_indices(index)
            .iter()
            .copied()
            .filter(|&parent| is_hidden(&self.local, parent))
            .collect();
        let mut walked = BTreeSet::new();
        while let Some(event) = hidden.pop() {
            if !walked.insert(event) {
                continue;
            }
            for &parent in self.dag.prev_indices(event) {
                remove_sorted(&mut self.extremities, parent);
                if is_hidden(&self.local, parent) {
                    hidden.push(parent);
                }
            }
        }
    }

    /// Reveals the timeline entries of `sender` hidden only by the link rule (policy A6).
    /// Returns how many were revealed.
    pub(crate) fn reveal_link_hidden(&mut self, sender: &str, now_ms: i64) -> usize {
        let mut revealed = 0;
        for (&index, fate) in &self.rare_fates {
            if matches!(fate, Fate::SoftFailed(SoftFailReason::Link(_)))
                && !self.revealed.contains_key(&index)
                && self.dag.event(index).sender == sender
            {
                self.revealed.insert(index, now_ms);
                revealed += 1;
            }
        }
        revealed
    }

    /// A draft of a new event by `sender` on top of this server's view: `prev_events` = the
    /// forward extremities (the 20 deepest), `auth_events` = the auth events selection over the
    /// current state, `depth` = the largest prev depth + 1.
    pub fn draft_event(
        &mut self,
        sender: &str,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
        now_ms: i64,
    ) -> Result<EventDraft, ResolveError> {
        let state = self.current_state()?;
        let version = *self.version();
        let mut prevs: Vec<EventIndex> = self.extremities.clone();
        // Keep the deepest (then latest) 20, in index order.
        prevs.sort_by_key(|&index| std::cmp::Reverse((self.dag.event(index).depth, index)));
        prevs.truncate(MAX_PREV_EVENTS);
        prevs.sort_unstable();
        let depth = prevs
            .iter()
            .map(|&index| self.dag.event(index).depth)
            .max()
            .map_or(1, |depth| depth.saturating_add(1).min(MAX_SAFE_INTEGER));
        let auth_events = auth_types_for_event(&version, event_type, sender, state_key, &content)
            .into_iter()
            .filter_map(|key| state.get(&key).cloned())
            .collect();
        Ok(EventDraft {
            room_id: Some(self.room_id.to_string()),
            sender: sender.to_owned(),
            event_type: event_type.to_owned(),
            state_key: state_key.map(str::to_owned),
            content,
            prev_events: prevs
                .iter()
                .map(|&index| self.dag.event(index).event_id.clone())
                .collect(),
            auth_events,
            depth,
            origin_server_ts_ms: now_ms,
        })
    }
}

/// A resolved [`StateMap`] of event IDs read as auth state through the DAG holding the events.
struct ResolvedStateView<'a> {
    state: &'a StateMap,
    dag: &'a Dag,
}

impl AuthState for ResolvedStateView<'_> {
    fn get(&self, event_type: &str, state_key: &str) -> Option<&Pdu> {
        let id = self
            .state
            .get(&(event_type.to_owned(), state_key.to_owned()))?;
        self.dag.index(id).map(|index| &**self.dag.event(index))
    }
}

/// The draft of a room's create event by `creator` (room versions 12+ derive the room ID from
/// it, so it has none; earlier versions need `room_id`).
pub fn create_event_draft(
    version: &RoomVersion,
    creator: &str,
    room_id: Option<&str>,
    now_ms: i64,
) -> EventDraft {
    let mut content = json!({ "room_version": version.id });
    if version.create_has_creator_key {
        content["creator"] = json!(creator);
    }
    EventDraft {
        room_id: if version.room_id_from_create_event {
            None
        } else {
            room_id.map(str::to_owned)
        },
        sender: creator.to_owned(),
        event_type: "m.room.create".to_owned(),
        state_key: Some(String::new()),
        content,
        prev_events: Vec::new(),
        auth_events: Vec::new(),
        depth: 1,
        origin_server_ts_ms: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const ALICE: &str = "@alice:x.example";
    const BOB: &str = "@bob:x.example";

    /// A room version 10 event with the given references (by event ID).
    fn event(
        id: &str,
        sender: &str,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
        prev: &[&str],
        auth: &[&str],
    ) -> Arc<Pdu> {
        let mut json = json!({
            "type": event_type, "sender": sender, "room_id": "!r:x.example",
            "content": content, "prev_events": prev, "auth_events": auth, "depth": 1,
            "origin_server_ts": 1,
        });
        if let Some(state_key) = state_key {
            json["state_key"] = json!(state_key);
        }
        Arc::new(Pdu::from_json(json, id.to_owned(), &RoomVersion::V10).unwrap())
    }

    /// The create event and Alice's join (`$create`, `$alice`), room version 10.
    fn room_start() -> [Arc<Pdu>; 2] {
        [
            event(
                "$create",
                ALICE,
                "m.room.create",
                Some(""),
                json!({"creator": ALICE, "room_version": "10"}),
                &[],
                &[],
            ),
            event(
                "$alice",
                ALICE,
                "m.room.member",
                Some(ALICE),
                json!({"membership": "join"}),
                &["$create"],
                &["$create"],
            ),
        ]
    }

    fn held(state_given: bool) -> HeldEvent {
        HeldEvent {
            fate: Fate::Accepted { labelled: false },
            redacted: false,
            path: ArrivalPath::Send,
            received_at_ms: 0,
            state_given,
        }
    }

    /// Test that an accepted event naming a soft-failed prev event also ends the extremities
    /// behind it, through a chain of soft-failed events, and leaves other branches alone:
    /// $a stays an extremity while only soft-failed events name it, and stops being one when
    /// $d, built on them, is accepted; $b, on a branch of its own, stays.
    #[test]
    fn an_accepted_event_on_soft_failed_parents_ends_the_extremities_behind_them() {
        let message = |id: &str, prev: &str| {
            event(
                id,
                ALICE,
                "m.room.message",
                None,
                json!({"body": id}),
                &[prev],
                &["$create", "$alice"],
            )
        };
        let [create, join] = room_start();
        let events = [
            create,
            join,
            message("$a", "$alice"),
            message("$b", "$alice"),
            message("$c1", "$a"),
            message("$c2", "$c1"),
            message("$d", "$c2"),
        ];
        let mut room = RoomState::new(RoomVersion::V10, "!r:x.example");
        let mut extremities_before_d = Vec::new();
        for pdu in &events {
            if pdu.event_id == "$d" {
                extremities_before_d = room.forward_extremities();
            }
            let parents = room.dag().look_up_parents(pdu).held;
            let (index, rejection) = room.insert(Arc::clone(pdu), parents, None, false).unwrap();
            assert!(rejection.is_none());
            let mut judged = held(false);
            if pdu.event_id.starts_with("$c") {
                judged.fate = Fate::SoftFailed(SoftFailReason::Link(
                    crate::room::links::LinkVerdict::Unverified,
                ));
            }
            room.record(index, judged);
        }
        assert_eq!(extremities_before_d, ["$a", "$b"]);
        assert_eq!(room.forward_extremities(), ["$b", "$d"]);
    }

    /// Outliers whose evaluation another server shared get check 4's verdict from it: the same
    /// rejections and cleanliness as computing check 4 (sharing off, and a verifying store that
    /// recomputes and compares), for an accepted event, one rejected by check 4 and one
    /// rejected by check 5 (check 4 passed: accepted as an outlier).
    #[test]
    fn shared_outlier_verdicts_equal_check_four_computed() {
        let [create, join] = room_start();
        let events = [
            create,
            join,
            event(
                "$power",
                ALICE,
                "m.room.power_levels",
                Some(""),
                json!({"users": {ALICE: 100}}),
                &["$alice"],
                &["$create", "$alice"],
            ),
            event(
                "$rules",
                ALICE,
                "m.room.join_rules",
                Some(""),
                json!({"join_rule": "public"}),
                &["$power"],
                &["$create", "$power", "$alice"],
            ),
            event(
                "$bob",
                BOB,
                "m.room.member",
                Some(BOB),
                json!({"membership": "join"}),
                &["$rules"],
                &["$create", "$power", "$rules"],
            ),
            // Check 4: Bob's membership is not among the auth events.
            event(
                "$no_member",
                BOB,
                "m.room.message",
                None,
                json!({"body": "x"}),
                &["$bob"],
                &["$create", "$power"],
            ),
            // Check 5: joined per the auth events, not in the state before (before Bob joined).
            event(
                "$too_early",
                BOB,
                "m.room.message",
                None,
                json!({"body": "y"}),
                &["$rules"],
                &["$create", "$power", "$bob"],
            ),
            event(
                "$fine",
                BOB,
                "m.room.message",
                None,
                json!({"body": "z"}),
                &["$bob"],
                &["$create", "$power", "$bob"],
            ),
        ];
        let facts = SharedEventFacts::new();
        let mut graph = RoomState::with_shared_facts(RoomVersion::V10, "!r:x.example", &facts);
        let mut in_graph = Vec::new();
        for pdu in &events {
            let parents = graph.dag().look_up_parents(pdu).held;
            let (index, rejection) = graph.insert(Arc::clone(pdu), parents, None, false).unwrap();
            graph.record(index, held(false));
            in_graph.push(rejection.map(|(at, _)| at));
        }
        assert_eq!(in_graph[5], Some(RejectedAt::AuthEvents));
        assert_eq!(in_graph[6], Some(RejectedAt::StateBefore));
        let outliers = |mut room: RoomState| {
            let mut seen = Vec::new();
            for pdu in &events {
                let (auth, _) = room.dag().look_up_auth_events(pdu);
                let (index, rejection) = room.insert_outlier(Arc::clone(pdu), auth, false).unwrap();
                room.record_outlier(index, held(true));
                seen.push((rejection, room.is_clean(&pdu.event_id)));
            }
            seen
        };
        let computed = outliers(RoomState::new(RoomVersion::V10, "!r:x.example"));
        let shared = outliers(RoomState::with_shared_facts(
            RoomVersion::V10,
            "!r:x.example",
            &facts,
        ));
        let verifying = outliers(RoomState::with_shared_facts(
            RoomVersion::V10,
            "!r:x.example",
            &SharedEventFacts::verifying(),
        ));
        let rejections = |seen: &[(Option<(RejectedAt, Rejection)>, bool)]| {
            seen.iter()
                .map(|(rejection, _)| rejection.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(rejections(&shared), rejections(&computed));
        assert_eq!(rejections(&verifying), rejections(&computed));
        assert!(computed[5].0.is_some() && computed[6].0.is_none());
        // Clean where the shared evaluation agrees: not the check-5 rejection.
        let clean: Vec<bool> = shared.iter().map(|(_, clean)| *clean).collect();
        assert_eq!(clean, [true, true, true, true, true, true, false, true]);
    }

    proptest! {
        /// The sorted vector of extremities follows the ordered set it replaced.
        #[test]
        fn sorted_indices_follow_an_ordered_set(
            operations in proptest::collection::vec((any::<bool>(), 0u32..40), 0..200),
        ) {
            let mut sorted = Vec::new();
            let mut set = std::collections::BTreeSet::new();
            for (insert, index) in operations {
                if insert {
                    insert_sorted(&mut sorted, index);
                    set.insert(index);
                } else {
                    remove_sorted(&mut sorted, index);
                    set.remove(&index);
                }
                prop_assert_eq!(&sorted, &set.iter().copied().collect::<Vec<_>>());
                prop_assert_eq!(sorted.first(), set.first());
            }
        }
    }
}
