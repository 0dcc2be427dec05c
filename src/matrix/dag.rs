//! The event DAG of one room: events interned to dense indices, their `prev_events` and
//! `auth_events` edges (index lists per node; [`Dag::graph`] builds a petgraph graph on demand),
//! memoised auth chains, and for each event the state before and after it and whether it was
//! rejected.
//!
//! Invariants:
//! - Indices are assigned in insertion order, and an event is only inserted once every event it
//!   references is present, so index order is a topological order (parents before children) and
//!   the graph can never hold a cycle.
//! - Every inserted event is evaluated once, at insertion: PDU check 4 (the auth rules against
//!   its own `auth_events`) and check 5 (against the state before it). The state after a rejected
//!   event equals the state before it. Events rejected by check 4 never enter state resolution
//!   (the spec's "Rejected events" note); events rejected by check 5 do, as usual.
//! - States are shared behind `Arc`: a message or a rejected event shares its state with its
//!   parent, and a state event stores only what changed since a shared snapshot
//!   ([`LayeredState`]).

use std::collections::HashMap;
use std::sync::Arc;

use once_cell::race::OnceBox;

use petgraph::graph::{DiGraph, NodeIndex};

use super::auth::{self, AuthState, Rejection};
use super::state_res::{self, EventSource, ResolveError};
use super::{EventId, Pdu, RoomVersion, StateMap};

/// The dense index of an event in a [`Dag`] (its insertion position).
pub type EventIndex = u32;

/// Which reference an edge of the DAG stands for. Edges point from an event to the event it
/// references (child to parent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    Prev,
    Auth,
}

/// Why events cannot form a room DAG. Each names the offending event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagError {
    #[error("event {0}: duplicate event ID")]
    DuplicateEventId(EventId),
    #[error("event {event}: unknown prev event {missing}")]
    UnknownPrevEvent { event: EventId, missing: EventId },
    #[error("event {event}: unknown auth event {missing}")]
    UnknownAuthEvent { event: EventId, missing: EventId },
    #[error("event {0}: part of a cycle of prev_events/auth_events references")]
    Cycle(EventId),
    #[error("no m.room.create event with an empty state key")]
    MissingCreate,
    #[error("event {0}: a second m.room.create event (the room already has one)")]
    SecondCreate(EventId),
    #[error("event {event}: state resolution of the state before it failed: {error}")]
    Resolution { event: EventId, error: ResolveError },
}

/// Which PDU check rejected an event.
#[derive(Debug, Clone, PartialEq)]
pub enum RejectionCheck {
    /// Check 4: the auth rules against the event's own `auth_events`.
    AuthEvents,
    /// Check 5: the auth rules against the state before the event.
    StateBefore,
}

/// How an event was judged on insertion.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// `None` if the event passed checks 4 and 5.
    pub rejection: Option<(RejectionCheck, Rejection)>,
    pub state_before: Arc<LayeredState>,
    pub state_after: Arc<LayeredState>,
}

/// A room state stored as a shared snapshot plus the few entries changed since it, so that a
/// state event costs O(changes) rather than a copy of the whole state (a 10,000-member room would
/// otherwise hold 10,000 copies of a 10,000-entry map). A new snapshot is taken once
/// [`LayeredState::MAX_CHANGES`] entries have piled up, so lookups stay cheap.
#[derive(Debug, Clone, Default)]
pub struct LayeredState {
    snapshot: Arc<StateMap>,
    changes: StateMap,
}

impl LayeredState {
    /// How many changed entries a state keeps on top of its snapshot before taking a new one.
    pub const MAX_CHANGES: usize = 128;

    /// A state that is exactly `state`.
    pub fn from_map(state: StateMap) -> LayeredState {
        LayeredState {
            snapshot: Arc::new(state),
            changes: StateMap::new(),
        }
    }

    /// The event for `(event_type, state_key)`.
    pub fn get(&self, event_type: &str, state_key: &str) -> Option<&EventId> {
        let key = (event_type.to_owned(), state_key.to_owned());
        self.changes.get(&key).or_else(|| self.snapshot.get(&key))
    }

    /// This state with `key` set to `event_id`.
    pub fn with(&self, key: crate::matrix::StateKey, event_id: EventId) -> LayeredState {
        let mut changes = self.changes.clone();
        changes.insert(key, event_id);
        if changes.len() > LayeredState::MAX_CHANGES {
            let mut state = StateMap::clone(&self.snapshot);
            state.extend(changes);
            return LayeredState::from_map(state);
        }
        LayeredState {
            snapshot: Arc::clone(&self.snapshot),
            changes,
        }
    }

    /// Whether this state is exactly `map`, without building the whole map: the snapshot and
    /// the changes are walked together in key order (a change replaces the snapshot's entry
    /// with the same key), as [`LayeredState::to_map`] would list them.
    pub fn equals_map(&self, map: &StateMap) -> bool {
        if self.changes.is_empty() {
            return *self.snapshot == *map;
        }
        let mut snapshot = self.snapshot.iter().peekable();
        let mut changes = self.changes.iter().peekable();
        let merged = std::iter::from_fn(|| match (snapshot.peek(), changes.peek()) {
            (None, None) => None,
            (Some(_), None) => snapshot.next(),
            (None, Some(_)) => changes.next(),
            (Some((held, _)), Some((changed, _))) => match held.cmp(changed) {
                std::cmp::Ordering::Less => snapshot.next(),
                std::cmp::Ordering::Greater => changes.next(),
                std::cmp::Ordering::Equal => {
                    snapshot.next();
                    changes.next()
                }
            },
        });
        merged.eq(map.iter())
    }

    /// The whole state as one map.
    pub fn to_map(&self) -> StateMap {
        if self.changes.is_empty() {
            return StateMap::clone(&self.snapshot);
        }
        let mut state = StateMap::clone(&self.snapshot);
        state.extend(
            self.changes
                .iter()
                .map(|(key, id)| (key.clone(), id.clone())),
        );
        state
    }

    /// The whole state as one shared map: the snapshot itself when nothing changed since it.
    pub fn to_shared_map(&self) -> Arc<StateMap> {
        if self.changes.is_empty() {
            return Arc::clone(&self.snapshot);
        }
        Arc::new(self.to_map())
    }

    /// Whether two states are the same object (and so certainly equal).
    pub fn same_as(&self, other: &LayeredState) -> bool {
        Arc::ptr_eq(&self.snapshot, &other.snapshot) && self.changes == other.changes
    }
}

/// A fast hasher for event IDs in lookup-only maps: FxHash's multiply-rotate over 8-byte words.
/// Deterministic; event IDs of room versions 4+ are hashes already, so SipHash's protection
/// against chosen keys buys nothing here.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdHasher(u64);

impl std::hash::BuildHasher for IdHasher {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(SEED);
        }
    }
}

/// Event IDs to indices without storing the IDs again (each node's event holds it): a hash
/// table of indices (4 bytes a slot), hashed by the ID of the node they point to; lookups
/// compare the ID with the node's, so the map is exact.
#[derive(Default)]
struct IdIndex {
    table: hashbrown::HashTable<EventIndex>,
}

/// Hashes an event ID for [`IdIndex`].
fn id_hash(event_id: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = IdHasher::default();
    hasher.write(event_id.as_bytes());
    // Mix the high bits down: the table uses the low bits (and the top 7 as tags).
    let hash = hasher.finish();
    hash ^ (hash >> 29) ^ (hash >> 47)
}

impl IdIndex {
    fn get(&self, nodes: &[Node], event_id: &str) -> Option<EventIndex> {
        self.table
            .find(id_hash(event_id), |&index| {
                nodes[index as usize].pdu.event_id == event_id
            })
            .copied()
    }

    /// Records `event_id` (not present yet) at `index`; `nodes` are the nodes indexed so far.
    fn insert(&mut self, nodes: &[Node], event_id: &str, index: EventIndex) {
        self.table.insert_unique(id_hash(event_id), index, |&held| {
            id_hash(&nodes[held as usize].pdu.event_id)
        });
    }
}

/// Makes room for `additional` more elements in `vec`, growing it by half rather than
/// doubling it: a large world holds several vectors with one element per event per room per
/// server, and doubling leaves about 28% of their capacity unused on average, growth by half
/// about 18%. (Growth by a quarter, ~10%, saved only ~9 MiB of full-size bench-medium's peak
/// but copied twice as often: growth by half has 5.5% fewer last-level data misses on the
/// proxy, docs/notes/perf.md session 20.)
/// Still amortised O(1).
pub fn reserve_gently<T>(vec: &mut Vec<T>, additional: usize) {
    if vec.capacity() - vec.len() < additional {
        vec.reserve_exact(additional.max(vec.len() / 2).max(4));
    }
}

/// The evaluation of every outlier that passed check 4 (no rejection, empty states), one for
/// the process.
fn accepted_outlier_evaluation() -> &'static Arc<Evaluation> {
    static EVALUATION: std::sync::OnceLock<Arc<Evaluation>> = std::sync::OnceLock::new();
    EVALUATION.get_or_init(|| {
        let empty = Arc::new(LayeredState::default());
        Arc::new(Evaluation {
            rejection: None,
            state_before: Arc::clone(&empty),
            state_after: empty,
        })
    })
}

/// One event of a DAG. Kept small: a large world holds one per event per server (32 bytes;
/// the references live in the DAG's one `references` vector).
struct Node {
    pdu: Arc<Pdu>,
    /// Shared with every other DAG that holds the event clean (`room::shared`).
    evaluation: Arc<Evaluation>,
    /// Memoised auth chain: every event reachable through `auth_events`, not the event itself,
    /// sorted by index (one pointer while unset: most events never need theirs).
    auth_chain: OnceBox<Box<[EventIndex]>>,
    /// Where this node's references end in [`Dag::references`] (they start where the previous
    /// node's end): the indices of the held prev events, then of the auth events.
    references_end: u32,
    /// How many of the references are prev events.
    prev_count: u16,
    /// Stored without a place in the graph (s2s "outliers": the state and auth chain of a
    /// `send_join` or `/state` answer): checked against its auth events only (check 4), no
    /// state before or after, never a prev event of an inserted event.
    outlier: bool,
}

/// The indices of an event's parents held in one DAG, found by [`Dag::look_up_parents`]: the
/// receipt pipeline looks each parent up once, to learn what is missing, and inserts with what
/// it found. A lookup is a comparison with the last inserted events (prev events) or a probe of
/// the ID table, whose control bytes and slot are cold reads in a large world; repeating it
/// reads warm memory but is still work (looking up three times cost 1.4% of bench-medium's
/// instructions, docs/notes/perf.md sessions 17–18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldParents {
    /// The prev events held in the graph (not as outliers), in the event's order.
    pub prev: Vec<EventIndex>,
    /// The auth events held (outliers too), in the event's order.
    pub auth: Vec<EventIndex>,
}

/// What [`Dag::look_up_parents`] found: the held parents, and the IDs of those not held.
#[derive(Debug, Clone)]
pub struct ParentLookup {
    pub held: HeldParents,
    /// Prev events not held in the graph (unknown, or held only as outliers), in order.
    pub missing_prev: Vec<EventId>,
    /// Auth events not held at all, in order.
    pub missing_auth: Vec<EventId>,
}

/// The event DAG of one room. See the module documentation for the invariants.
pub struct Dag {
    version: RoomVersion,
    nodes: Vec<Node>,
    /// Every node's references, node after node (see [`Node::references_end`]).
    references: Vec<EventIndex>,
    index_of: IdIndex,
    create: Option<EventIndex>,
}

impl Dag {
    /// How many of the events inserted last [`Dag::look_up_parents`] compares a prev event's
    /// ID with before it asks the ID table.
    const RECENT: usize = 4;

    /// An empty DAG for a room of `version`.
    pub fn new(version: RoomVersion) -> Dag {
        Dag {
            version,
            nodes: Vec::new(),
            references: Vec::new(),
            index_of: IdIndex::default(),
            create: None,
        }
    }

    /// Builds a DAG from events in any order (such as a homeserver export): rejects duplicate
    /// IDs, references to unknown events, cycles and a missing create event, then inserts the
    /// events parents first, evaluating each.
    pub fn from_events(version: RoomVersion, events: Vec<Pdu>) -> Result<Dag, DagError> {
        let mut position_of: HashMap<&str, usize> = HashMap::with_capacity(events.len());
        for (position, event) in events.iter().enumerate() {
            if position_of.insert(&event.event_id, position).is_some() {
                return Err(DagError::DuplicateEventId(event.event_id.clone()));
            }
        }
        let is_create = |event: &Pdu| {
            event.event_type == "m.room.create" && event.state_key.as_deref() == Some("")
        };
        let mut creates = events.iter().filter(|event| is_create(event));
        if creates.next().is_none() {
            return Err(DagError::MissingCreate);
        }
        if let Some(second) = creates.next() {
            return Err(DagError::SecondCreate(second.event_id.clone()));
        }
        // An order graph with an edge parent -> child for every reference, to sort parents first.
        let mut order_graph: DiGraph<usize, (), u32> =
            DiGraph::with_capacity(events.len(), events.len() * 4);
        for position in 0..events.len() {
            order_graph.add_node(position);
        }
        for (position, event) in events.iter().enumerate() {
            for prev in &event.prev_events {
                let Some(&parent) = position_of.get(prev.as_str()) else {
                    return Err(DagError::UnknownPrevEvent {
                        event: event.event_id.clone(),
                        missing: prev.clone(),
                    });
                };
                order_graph.add_edge(NodeIndex::new(parent), NodeIndex::new(position), ());
            }
            for auth_event in &event.auth_events {
                let Some(&parent) = position_of.get(auth_event.as_str()) else {
                    return Err(DagError::UnknownAuthEvent {
                        event: event.event_id.clone(),
                        missing: auth_event.clone(),
                    });
                };
                order_graph.add_edge(NodeIndex::new(parent), NodeIndex::new(position), ());
            }
        }
        let order = petgraph::algo::toposort(&order_graph, None).map_err(|cycle| {
            DagError::Cycle(events[order_graph[cycle.node_id()]].event_id.clone())
        })?;
        drop(position_of);
        let mut slots: Vec<Option<Pdu>> = events.into_iter().map(Some).collect();
        let mut dag = Dag::new(version);
        for node in order {
            let event = slots[order_graph[node]]
                .take()
                .expect("each event is sorted once");
            dag.insert(Arc::new(event))?;
        }
        Ok(dag)
    }

    /// Inserts an event whose prev and auth events are all present, and evaluates it (PDU checks
    /// 4 and 5). Returns its index. Inserting an ID already present is an error.
    pub fn insert(&mut self, pdu: Arc<Pdu>) -> Result<EventIndex, DagError> {
        let prev = self.resolve_references(&pdu, EdgeKind::Prev, true)?;
        self.insert_after_prev(pdu, prev, None)
    }

    /// [`Dag::insert`] with the parents [`Dag::look_up_parents`] found, none missing.
    pub fn insert_with_parents(
        &mut self,
        pdu: Arc<Pdu>,
        parents: HeldParents,
    ) -> Result<EventIndex, DagError> {
        let prev = self.found_or_resolved(&pdu, EdgeKind::Prev, Some(parents.prev))?;
        self.insert_after_prev(pdu, prev, Some(parents.auth))
    }

    /// Inserts an event whose prev events are held at `prev` (all of them), resolving the state
    /// before it from theirs; `auth`: its auth events' indices if the caller found them all.
    fn insert_after_prev(
        &mut self,
        pdu: Arc<Pdu>,
        prev: Vec<EventIndex>,
        auth: Option<Vec<EventIndex>>,
    ) -> Result<EventIndex, DagError> {
        let state_before = if prev.is_empty() {
            Arc::new(LayeredState::default())
        } else {
            // Parents sharing one state (messages after the same state) resolve trivially.
            let mut parent_states: Vec<&Arc<LayeredState>> = Vec::with_capacity(prev.len());
            for &parent in &prev {
                let state = &self.nodes[parent as usize].evaluation.state_after;
                if !parent_states.iter().any(|seen| seen.same_as(state)) {
                    parent_states.push(state);
                }
            }
            if parent_states.len() == 1 {
                Arc::clone(parent_states[0])
            } else {
                let states: Vec<StateMap> =
                    parent_states.iter().map(|state| state.to_map()).collect();
                let resolved =
                    state_res::resolve(&self.version, &states, self).map_err(|error| {
                        DagError::Resolution {
                            event: pdu.event_id.clone(),
                            error,
                        }
                    })?;
                Arc::new(LayeredState::from_map(resolved))
            }
        };
        // The prev events were resolved above (all held): not looked up again.
        self.insert_resolved(pdu, state_before, Some(prev), auth)
    }

    /// Inserts an event with a state before it given from outside (for example from a
    /// `/state_ids` answer when its prev events are unknown). Its auth events must be present;
    /// unknown prev events are allowed.
    pub fn insert_with_state_before(
        &mut self,
        pdu: Arc<Pdu>,
        state_before: Arc<LayeredState>,
    ) -> Result<EventIndex, DagError> {
        self.insert_resolved(pdu, state_before, None, None)
    }

    /// [`Dag::insert_with_state_before`] with the parents [`Dag::look_up_parents`] found, no
    /// auth event missing (prev events not held in the graph are skipped, as there).
    pub fn insert_with_state_before_and_parents(
        &mut self,
        pdu: Arc<Pdu>,
        state_before: Arc<LayeredState>,
        parents: HeldParents,
    ) -> Result<EventIndex, DagError> {
        self.insert_resolved(pdu, state_before, Some(parents.prev), Some(parents.auth))
    }

    /// [`Dag::insert_with_state_before`], with the prev and auth events' indices if the caller
    /// resolved them already (the indices `resolve_references` finds: one per held prev event
    /// ID, one per auth event ID).
    fn insert_resolved(
        &mut self,
        pdu: Arc<Pdu>,
        state_before: Arc<LayeredState>,
        prev: Option<Vec<EventIndex>>,
        auth: Option<Vec<EventIndex>>,
    ) -> Result<EventIndex, DagError> {
        if self.index(&pdu.event_id).is_some() {
            return Err(DagError::DuplicateEventId(pdu.event_id.clone()));
        }
        let is_create = pdu.event_type == "m.room.create" && pdu.state_key.as_deref() == Some("");
        if is_create && self.create.is_some() {
            return Err(DagError::SecondCreate(pdu.event_id.clone()));
        }
        let prev = match prev {
            Some(prev) => prev,
            None => self.resolve_references(&pdu, EdgeKind::Prev, false)?,
        };
        let auth = self.found_or_resolved(&pdu, EdgeKind::Auth, auth)?;
        let rejection = self.check_event(&pdu, &auth, &state_before);
        let state_after = match (&rejection, pdu.state_key_pair()) {
            (None, Some(key)) => Arc::new(state_before.with(key, pdu.event_id.clone())),
            _ => Arc::clone(&state_before),
        };
        let evaluation = Arc::new(Evaluation {
            rejection,
            state_before,
            state_after,
        });
        Ok(self.add_node(pdu, is_create, prev, auth, evaluation, false))
    }

    /// Inserts an outlier: an event known without its place in the graph (the state and auth
    /// chain of a `send_join` or `/state` answer). Its auth events must be present; its prev
    /// events are not linked. Only PDU check 4 runs (the auth rules against its own auth
    /// events, as for any event); its state before and after are empty (unknown), and no
    /// inserted event may use it as a prev event.
    pub fn insert_outlier(&mut self, pdu: Arc<Pdu>) -> Result<EventIndex, DagError> {
        self.insert_outlier_with(pdu, None, None)
    }

    /// [`Dag::insert_outlier`] with the auth events' indices [`Dag::look_up_auth_events`] found
    /// (none missing), and check 4's verdict if known already (`Some(None)`: passed): for an
    /// outlier whose copy, auth events' copies and rejections and create event are the same as
    /// where the verdict was reached (`room::shared`). Every other check is made as there.
    pub fn insert_outlier_with_auth(
        &mut self,
        pdu: Arc<Pdu>,
        auth: Vec<EventIndex>,
        judged: Option<Option<(RejectionCheck, Rejection)>>,
    ) -> Result<EventIndex, DagError> {
        self.insert_outlier_with(pdu, judged, Some(auth))
    }

    fn insert_outlier_with(
        &mut self,
        pdu: Arc<Pdu>,
        judged: Option<Option<(RejectionCheck, Rejection)>>,
        auth: Option<Vec<EventIndex>>,
    ) -> Result<EventIndex, DagError> {
        if self.index(&pdu.event_id).is_some() {
            return Err(DagError::DuplicateEventId(pdu.event_id.clone()));
        }
        let is_create = pdu.event_type == "m.room.create" && pdu.state_key.as_deref() == Some("");
        if is_create && self.create.is_some() {
            return Err(DagError::SecondCreate(pdu.event_id.clone()));
        }
        let auth = self.found_or_resolved(&pdu, EdgeKind::Auth, auth)?;
        let rejection = match judged {
            Some(rejection) => rejection,
            None => self.check_outlier(&pdu, is_create, &auth),
        };
        let evaluation = match rejection {
            // Most outliers pass: they share one evaluation (an outlier's state is never read).
            None => Arc::clone(accepted_outlier_evaluation()),
            Some(rejection) => {
                let empty = Arc::new(LayeredState::default());
                Arc::new(Evaluation {
                    rejection: Some(rejection),
                    state_before: Arc::clone(&empty),
                    state_after: empty,
                })
            }
        };
        Ok(self.add_node(pdu, is_create, Vec::new(), auth, evaluation, true))
    }

    /// Check 4 on an outlier: the auth rules against its own auth events (held at `auth`).
    fn check_outlier(
        &self,
        pdu: &Pdu,
        is_create: bool,
        auth: &[EventIndex],
    ) -> Option<(RejectionCheck, Rejection)> {
        let auth_pdus: Vec<&Pdu> = auth.iter().map(|&index| self.pdu(index)).collect();
        let create = self
            .create
            .filter(|&create| !self.is_rejected(create))
            .map(|create| self.pdu(create));
        let create = if is_create { None } else { create };
        auth::check_against_auth_events(&self.version, pdu, &auth_pdus, create, |id| {
            self.index(id).is_some_and(|index| self.is_rejected(index))
        })
        .err()
        .map(|rejection| (RejectionCheck::AuthEvents, rejection))
    }

    /// Replaces the evaluation of the event at `index` by an equal one held elsewhere (another
    /// DAG's, shared through `room::shared`), so that one copy of its states is kept. The caller
    /// guarantees equality (same rejection, same state before; the state after follows).
    pub fn share_evaluation(&mut self, index: EventIndex, evaluation: Arc<Evaluation>) {
        self.nodes[index as usize].evaluation = evaluation;
    }

    /// Whether the event at `index` is an outlier (see [`Dag::insert_outlier`]).
    pub fn is_outlier(&self, index: EventIndex) -> bool {
        self.nodes[index as usize].outlier
    }

    /// Inserts an event whose prev and auth events are all present with an evaluation computed
    /// elsewhere: by another DAG of the same room that holds the same copies of the event and of
    /// all its ancestors, each inserted with [`Dag::insert`] (then checks 4 and 5 and the states
    /// are the same, see `room::shared`). Skips resolving the state before and the checks;
    /// refuses what [`Dag::insert`] refuses.
    pub fn insert_evaluated(
        &mut self,
        pdu: Arc<Pdu>,
        evaluation: Arc<Evaluation>,
    ) -> Result<EventIndex, DagError> {
        self.insert_evaluated_with(pdu, evaluation, None)
    }

    /// [`Dag::insert_evaluated`] with the parents [`Dag::look_up_parents`] found, none missing.
    pub fn insert_evaluated_with_parents(
        &mut self,
        pdu: Arc<Pdu>,
        evaluation: Arc<Evaluation>,
        parents: HeldParents,
    ) -> Result<EventIndex, DagError> {
        self.insert_evaluated_with(pdu, evaluation, Some(parents))
    }

    fn insert_evaluated_with(
        &mut self,
        pdu: Arc<Pdu>,
        evaluation: Arc<Evaluation>,
        parents: Option<HeldParents>,
    ) -> Result<EventIndex, DagError> {
        if self.index(&pdu.event_id).is_some() {
            return Err(DagError::DuplicateEventId(pdu.event_id.clone()));
        }
        let is_create = pdu.event_type == "m.room.create" && pdu.state_key.as_deref() == Some("");
        if is_create && self.create.is_some() {
            return Err(DagError::SecondCreate(pdu.event_id.clone()));
        }
        let (prev, auth) = match parents {
            Some(HeldParents { prev, auth }) => (Some(prev), Some(auth)),
            None => (None, None),
        };
        let prev = self.found_or_resolved(&pdu, EdgeKind::Prev, prev)?;
        let auth = self.found_or_resolved(&pdu, EdgeKind::Auth, auth)?;
        Ok(self.add_node(pdu, is_create, prev, auth, evaluation, false))
    }

    /// Adds an evaluated event with its edges; returns its index.
    fn add_node(
        &mut self,
        pdu: Arc<Pdu>,
        is_create: bool,
        prev: Vec<EventIndex>,
        auth: Vec<EventIndex>,
        evaluation: Arc<Evaluation>,
        outlier: bool,
    ) -> EventIndex {
        let index = self.nodes.len() as EventIndex;
        self.index_of.insert(&self.nodes, &pdu.event_id, index);
        if is_create {
            self.create = Some(index);
        }
        // At most 20 prev events pass check 1; a longer list (a DAG fed directly) still fits.
        let prev_count = u16::try_from(prev.len()).expect("fewer than 65,536 prev events");
        reserve_gently(&mut self.references, prev.len() + auth.len());
        self.references.extend_from_slice(&prev);
        self.references.extend_from_slice(&auth);
        let references_end =
            u32::try_from(self.references.len()).expect("fewer than 2^32 references in a DAG");
        reserve_gently(&mut self.nodes, 1);
        self.nodes.push(Node {
            pdu,
            evaluation,
            auth_chain: OnceBox::new(),
            references_end,
            prev_count,
            outlier,
        });
        index
    }

    /// Looks up each of the event's prev and auth events once: the indices held (prev events
    /// only in the graph, as [`Dag::insert`] wants them) and the IDs missing. With nothing
    /// missing, `held` is what the `*_with_parents` insertions take in place of looking up
    /// again; with a state given, the held prev events are what
    /// [`Dag::insert_with_state_before`] links.
    pub fn look_up_parents(&self, pdu: &Pdu) -> ParentLookup {
        let mut lookup = ParentLookup {
            held: HeldParents {
                prev: Vec::with_capacity(pdu.prev_events.len()),
                auth: Vec::new(),
            },
            missing_prev: Vec::new(),
            missing_auth: Vec::new(),
        };
        for id in &pdu.prev_events {
            let found = self.recent_index(id).or_else(|| self.index(id));
            match found.filter(|&index| !self.is_outlier(index)) {
                Some(index) => lookup.held.prev.push(index),
                None => lookup.missing_prev.push(id.clone()),
            }
        }
        (lookup.held.auth, lookup.missing_auth) = self.look_up_auth_events(pdu);
        lookup
    }

    /// The index of `event_id` if it is one of the [`Dag::RECENT`] events inserted last. An
    /// arriving event's prev events are nearly always among them (events arrive about in
    /// order), and comparing with the tail of the node array, which the insertion reads next
    /// anyway for the parents' states, spares the ID table's two cold reads (control bytes and
    /// slot; docs/notes/perf.md session 18). Exact: IDs are compared in full.
    fn recent_index(&self, event_id: &str) -> Option<EventIndex> {
        let start = self.nodes.len().saturating_sub(Self::RECENT);
        (start..self.nodes.len())
            .rev()
            .find(|&position| self.nodes[position].pdu.event_id == event_id)
            .map(|position| position as EventIndex)
    }

    /// The auth half of [`Dag::look_up_parents`] (all an outlier needs): the indices of the
    /// held auth events and the IDs of those not held, each in the event's order.
    pub fn look_up_auth_events(&self, pdu: &Pdu) -> (Vec<EventIndex>, Vec<EventId>) {
        let mut held = Vec::with_capacity(pdu.auth_events.len());
        let mut missing = Vec::new();
        for id in &pdu.auth_events {
            match self.index(id) {
                Some(index) => held.push(index),
                None => missing.push(id.clone()),
            }
        }
        (held, missing)
    }

    /// The indices of every event `pdu` references by `kind`: `found` if the caller found one
    /// per reference, else looked up here (then an unknown one is the error that names it).
    fn found_or_resolved(
        &self,
        pdu: &Pdu,
        kind: EdgeKind,
        found: Option<Vec<EventIndex>>,
    ) -> Result<Vec<EventIndex>, DagError> {
        let count = match kind {
            EdgeKind::Prev => pdu.prev_events.len(),
            EdgeKind::Auth => pdu.auth_events.len(),
        };
        match found {
            Some(found) if found.len() == count => Ok(found),
            _ => self.resolve_references(pdu, kind, true),
        }
    }

    /// The indices of the events `pdu` references by `kind`; an unknown one is an error if
    /// `required`, and skipped otherwise.
    fn resolve_references(
        &self,
        pdu: &Pdu,
        kind: EdgeKind,
        required: bool,
    ) -> Result<Vec<EventIndex>, DagError> {
        let ids = match kind {
            EdgeKind::Prev => &pdu.prev_events,
            EdgeKind::Auth => &pdu.auth_events,
        };
        let mut indices = Vec::with_capacity(ids.len());
        for id in ids {
            // An outlier has no state to build on: as a prev event it counts as unknown.
            let found = self
                .index(id)
                .filter(|&index| kind == EdgeKind::Auth || !self.nodes[index as usize].outlier);
            match (found, kind) {
                (Some(index), _) => indices.push(index),
                (None, _) if !required => {}
                (None, EdgeKind::Prev) => {
                    return Err(DagError::UnknownPrevEvent {
                        event: pdu.event_id.clone(),
                        missing: id.clone(),
                    });
                }
                (None, EdgeKind::Auth) => {
                    return Err(DagError::UnknownAuthEvent {
                        event: pdu.event_id.clone(),
                        missing: id.clone(),
                    });
                }
            }
        }
        Ok(indices)
    }

    /// PDU checks 4 and 5 for an event not yet inserted.
    fn check_event(
        &self,
        pdu: &Pdu,
        auth: &[EventIndex],
        state_before: &LayeredState,
    ) -> Option<(RejectionCheck, Rejection)> {
        // 4. The auth rules against the event's own auth events: first their shape (no
        //    duplicates, only the types the selection algorithm picks, none rejected), then the
        //    rules evaluated with those events as the state. Room v12 never lists the create
        //    event (its ID is the room ID), so it is added for the rules to read.
        let auth_pdus: Vec<&Pdu> = auth.iter().map(|&index| self.pdu(index)).collect();
        // v12 rule 2 wants an *accepted* create event: a rejected one authorises nothing.
        let create = self
            .create
            .filter(|&create| !self.is_rejected(create))
            .map(|create| self.pdu(create));
        if let Err(rejection) =
            auth::check_against_auth_events(&self.version, pdu, &auth_pdus, create, |id| {
                self.index(id).is_some_and(|index| self.is_rejected(index))
            })
        {
            return Some((RejectionCheck::AuthEvents, rejection));
        }
        // 5. The auth rules against the state before the event.
        let view = StateMapView {
            state: state_before,
            dag: self,
        };
        if let Err(rejection) = auth::check_auth_rules(&self.version, pdu, &view) {
            return Some((RejectionCheck::StateBefore, rejection));
        }
        None
    }

    /// The room version this DAG follows.
    pub fn version(&self) -> &RoomVersion {
        &self.version
    }

    /// How many events the DAG holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The index of an event ID, if present.
    pub fn index(&self, event_id: &str) -> Option<EventIndex> {
        self.index_of.get(&self.nodes, event_id)
    }

    /// The event at `index`, shared.
    pub fn event(&self, index: EventIndex) -> &Arc<Pdu> {
        &self.nodes[index as usize].pdu
    }

    /// The indices of the event's prev events that are in the DAG.
    pub fn prev_indices(&self, index: EventIndex) -> &[EventIndex] {
        let (start, node) = self.references_start(index);
        &self.references[start..start + usize::from(node.prev_count)]
    }

    /// The indices of the event's auth events.
    pub fn auth_event_indices(&self, index: EventIndex) -> &[EventIndex] {
        let (start, node) = self.references_start(index);
        &self.references[start + usize::from(node.prev_count)..node.references_end as usize]
    }

    /// Where the references of the event at `index` start, and its node.
    fn references_start(&self, index: EventIndex) -> (usize, &Node) {
        let start = match index {
            0 => 0,
            _ => self.nodes[index as usize - 1].references_end as usize,
        };
        (start, &self.nodes[index as usize])
    }

    /// How the event was judged on insertion.
    pub fn evaluation(&self, index: EventIndex) -> &Evaluation {
        &self.nodes[index as usize].evaluation
    }

    /// How the event was judged on insertion, shared (for handing to another DAG holding the
    /// same event clean, see `room::shared`).
    pub fn shared_evaluation(&self, index: EventIndex) -> &Arc<Evaluation> {
        &self.nodes[index as usize].evaluation
    }

    /// The state after the event (equal to the state before it if it was rejected or is not a
    /// state event), as one map.
    pub fn state_after(&self, event_id: &str) -> Option<StateMap> {
        self.index(event_id)
            .map(|index| self.nodes[index as usize].evaluation.state_after.to_map())
    }

    /// The state before the event (the resolution of the states after its prev events), as one
    /// map.
    pub fn state_before(&self, event_id: &str) -> Option<StateMap> {
        self.index(event_id)
            .map(|index| self.nodes[index as usize].evaluation.state_before.to_map())
    }

    /// The forward extremities: accepted events that no accepted event names in its
    /// `prev_events` (a rejected child does not make its parents stop being extremities),
    /// sorted by index.
    pub fn forward_extremities(&self) -> Vec<EventIndex> {
        let accepted = |node: &Node| node.evaluation.rejection.is_none() && !node.outlier;
        let mut named = vec![false; self.nodes.len()];
        for (index, node) in self.nodes.iter().enumerate() {
            if accepted(node) {
                for &parent in self.prev_indices(index as EventIndex) {
                    named[parent as usize] = true;
                }
            }
        }
        (0..self.nodes.len() as EventIndex)
            .filter(|&index| accepted(&self.nodes[index as usize]) && !named[index as usize])
            .collect()
    }

    /// Every event, parents before children (the insertion order).
    pub fn topological_order(&self) -> impl Iterator<Item = EventIndex> + '_ {
        0..self.nodes.len() as EventIndex
    }

    /// The references of the DAG as a petgraph graph (built on demand: node weights are event
    /// indices, edges point from an event to the events it references).
    pub fn graph(&self) -> DiGraph<EventIndex, EdgeKind, EventIndex> {
        let mut graph = DiGraph::with_capacity(self.nodes.len(), self.nodes.len() * 4);
        for index in 0..self.nodes.len() as EventIndex {
            graph.add_node(index);
        }
        for index in 0..self.nodes.len() {
            let child = NodeIndex::new(index);
            for &parent in self.prev_indices(index as EventIndex) {
                graph.add_edge(child, NodeIndex::new(parent as usize), EdgeKind::Prev);
            }
            for &parent in self.auth_event_indices(index as EventIndex) {
                graph.add_edge(child, NodeIndex::new(parent as usize), EdgeKind::Auth);
            }
        }
        graph
    }

    /// The resolution of the states after the given events (the current state when they are the
    /// forward extremities).
    pub fn resolve_states_after(&self, events: &[EventIndex]) -> Result<StateMap, ResolveError> {
        let states: Vec<StateMap> = events
            .iter()
            .map(|&index| self.nodes[index as usize].evaluation.state_after.to_map())
            .collect();
        state_res::resolve(&self.version, &states, self)
    }
}

impl EventSource for Dag {
    fn index_of(&self, event_id: &str) -> Option<EventIndex> {
        self.index_of.get(&self.nodes, event_id)
    }

    fn pdu(&self, index: EventIndex) -> &Pdu {
        &self.nodes[index as usize].pdu
    }

    fn auth_indices(&self, index: EventIndex) -> &[EventIndex] {
        self.auth_event_indices(index)
    }

    fn is_rejected(&self, index: EventIndex) -> bool {
        self.nodes[index as usize].evaluation.rejection.is_some()
    }

    fn is_rejected_by_auth_events(&self, index: EventIndex) -> bool {
        matches!(
            self.nodes[index as usize].evaluation.rejection,
            Some((RejectionCheck::AuthEvents, _))
        )
    }

    fn create_index(&self) -> Option<EventIndex> {
        self.create
    }

    fn event_count(&self) -> usize {
        self.nodes.len()
    }

    fn auth_chain(&self, index: EventIndex) -> &[EventIndex] {
        if let Some(chain) = self.nodes[index as usize].auth_chain.get() {
            return chain;
        }
        // Compute the chains of the auth ancestors that are not memoised yet, deepest first, with
        // an explicit stack: auth chains can be thousands of events deep.
        let mut stack = vec![(index, false)];
        while let Some((current, children_done)) = stack.pop() {
            let node = &self.nodes[current as usize];
            if node.auth_chain.get().is_some() {
                continue;
            }
            if !children_done {
                stack.push((current, true));
                for &parent in self.auth_event_indices(current) {
                    if self.nodes[parent as usize].auth_chain.get().is_none() {
                        stack.push((parent, false));
                    }
                }
                continue;
            }
            let mut chain: Vec<EventIndex> = Vec::new();
            for &parent in self.auth_event_indices(current) {
                chain.push(parent);
                chain.extend_from_slice(
                    self.nodes[parent as usize]
                        .auth_chain
                        .get()
                        .expect("parents are computed first"),
                );
            }
            chain.sort_unstable();
            chain.dedup();
            let _ = node.auth_chain.set(Box::new(chain.into_boxed_slice()));
        }
        self.nodes[index as usize]
            .auth_chain
            .get()
            .expect("computed above")
    }
}

/// A state of event IDs read as auth state through the DAG that holds the events.
pub struct StateMapView<'a> {
    pub state: &'a LayeredState,
    pub dag: &'a Dag,
}

impl AuthState for StateMapView<'_> {
    fn get(&self, event_type: &str, state_key: &str) -> Option<&Pdu> {
        let id = self.state.get(event_type, state_key)?;
        self.dag.index(id).map(|index| &**self.dag.event(index))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const ALICE: &str = "@alice:x.example";

    #[test]
    fn inserted_events_keep_their_prev_events_in_order() {
        let (mut room, rules) = Room::new();
        let first = room.add(
            &[rules],
            ALICE,
            "m.room.message",
            None,
            json!({"body": "a"}),
        );
        let second = room.add(
            &[rules],
            ALICE,
            "m.room.message",
            None,
            json!({"body": "b"}),
        );
        let both = room.add(
            &[second, first],
            ALICE,
            "m.room.message",
            None,
            json!({"body": "c"}),
        );
        assert_eq!(room.dag.prev_indices(first), [rules]);
        assert_eq!(room.dag.prev_indices(both), [second, first]);
        // The same event with its state given resolves the same prev events itself.
        let pdu = Arc::clone(room.dag.event(both));
        let mut other = Dag::new(RoomVersion::V10);
        for index in 0..both {
            other.insert(Arc::clone(room.dag.event(index))).unwrap();
        }
        let state = Arc::clone(&room.dag.evaluation(both).state_before);
        let again = other.insert_with_state_before(pdu, state).unwrap();
        assert_eq!(other.prev_indices(again), [second, first]);
        assert_eq!(
            other.evaluation(again).rejection,
            room.dag.evaluation(both).rejection
        );
    }

    #[test]
    fn equals_map_answers_as_comparing_the_whole_map() {
        let key = |t: &str, k: &str| (t.to_owned(), k.to_owned());
        let mut base = StateMap::new();
        for (i, member) in ["@a", "@c", "@e", "@g"].iter().enumerate() {
            base.insert(key("m.room.member", member), format!("$m{i}"));
        }
        base.insert(key("m.room.create", ""), "$create".to_owned());
        let mut states = vec![LayeredState::from_map(base.clone())];
        // Changes replacing snapshot entries, before, between and after them.
        let changes = [
            (key("m.room.member", "@c"), "$c2"),
            (key("m.room.member", "@b"), "$b"),
            (key("m.room.aaa", ""), "$first"),
            (key("z.last", ""), "$last"),
            (key("m.room.member", "@g"), "$g2"),
        ];
        for (state_key, id) in changes {
            let next = states.last().unwrap().with(state_key, id.to_owned());
            states.push(next);
        }
        for state in &states {
            let whole = state.to_map();
            assert!(state.equals_map(&whole));
            for other in &states {
                assert_eq!(state.equals_map(&other.to_map()), whole == other.to_map());
            }
            let mut changed = whole.clone();
            changed.insert(key("m.room.member", "@a"), "$other".to_owned());
            assert!(!state.equals_map(&changed));
            let mut shorter = whole.clone();
            shorter.pop_last();
            assert!(!state.equals_map(&shorter));
            let mut longer = whole.clone();
            longer.insert(key("zz", ""), "$x".to_owned());
            assert!(!state.equals_map(&longer));
            assert!(!state.equals_map(&StateMap::new()));
        }
    }

    /// Builds room version 10 events with auth events picked from the state after `prev`.
    struct Room {
        dag: Dag,
        next: u32,
    }

    impl Room {
        fn new() -> (Room, EventIndex) {
            let mut room = Room {
                dag: Dag::new(RoomVersion::V10),
                next: 0,
            };
            let create = room.add(
                &[],
                ALICE,
                "m.room.create",
                Some(""),
                json!({"creator": ALICE, "room_version": "10"}),
            );
            let join = room.add(
                &[create],
                ALICE,
                "m.room.member",
                Some(ALICE),
                json!({"membership": "join"}),
            );
            let power = room.add(
                &[join],
                ALICE,
                "m.room.power_levels",
                Some(""),
                json!({"users": {ALICE: 100}}),
            );
            let rules = room.add(
                &[power],
                ALICE,
                "m.room.join_rules",
                Some(""),
                json!({"join_rule": "public"}),
            );
            (room, rules)
        }

        fn add(
            &mut self,
            prev: &[EventIndex],
            sender: &str,
            event_type: &str,
            state_key: Option<&str>,
            content: Value,
        ) -> EventIndex {
            self.next += 1;
            let state: StateMap = match prev.first() {
                Some(&parent) => self.dag.evaluation(parent).state_after.to_map(),
                None => StateMap::new(),
            };
            let auth_events: Vec<EventId> = auth::auth_types_for_event(
                &RoomVersion::V10,
                event_type,
                sender,
                state_key,
                &content,
            )
            .into_iter()
            .filter_map(|key| state.get(&key).cloned())
            .collect();
            let prev_events: Vec<EventId> = prev
                .iter()
                .map(|&index| self.dag.event(index).event_id.clone())
                .collect();
            let mut json = json!({
                "type": event_type, "sender": sender, "room_id": "!r:x.example", "content": content,
                "prev_events": prev_events, "auth_events": auth_events, "depth": self.next,
                "origin_server_ts": self.next,
            });
            if let Some(state_key) = state_key {
                json["state_key"] = json!(state_key);
            }
            let pdu =
                Pdu::from_json(json, format!("$e{:04}", self.next), &RoomVersion::V10).unwrap();
            self.dag.insert(Arc::new(pdu)).unwrap()
        }
    }

    /// Test that a rejected child leaves its parent a forward extremity and is none itself, and
    /// that its state after equals its state before.
    #[test]
    fn forward_extremities_skip_rejected_events() {
        let (mut room, tip) = Room::new();
        let topic = room.add(
            &[tip],
            ALICE,
            "m.room.topic",
            Some(""),
            json!({"topic": "a"}),
        );
        // Bob never joined: his topic fails check 5 (and 4: no membership to cite).
        let rejected = room.add(
            &[topic],
            "@bob:y.example",
            "m.room.topic",
            Some(""),
            json!({"topic": "b"}),
        );
        assert!(room.dag.evaluation(rejected).rejection.is_some());
        assert_eq!(room.dag.forward_extremities(), vec![topic]);
        let evaluation = room.dag.evaluation(rejected);
        assert_eq!(
            evaluation.state_after.to_map(),
            evaluation.state_before.to_map()
        );
        let message = room.add(
            &[topic],
            ALICE,
            "m.room.message",
            None,
            json!({"body": "hi"}),
        );
        let second = room.add(
            &[topic],
            ALICE,
            "m.room.topic",
            Some(""),
            json!({"topic": "c"}),
        );
        assert_eq!(room.dag.forward_extremities(), vec![message, second]);
        // Their merge resolves to the newer topic.
        let merged = room.dag.resolve_states_after(&[message, second]).unwrap();
        assert_eq!(
            merged.get(&("m.room.topic".to_owned(), String::new())),
            Some(&room.dag.event(second).event_id)
        );
    }

    /// Test that states stay right across many state events (the layered representation takes
    /// new snapshots past `MAX_CHANGES` changes) and that auth chains are memoised correctly.
    #[test]
    fn states_and_auth_chains_over_many_joins() {
        let (mut room, mut tip) = Room::new();
        let mut expected = room.dag.evaluation(tip).state_after.to_map();
        for user in 0..(LayeredState::MAX_CHANGES * 2 + 7) {
            let user_id = format!("@user{user}:x.example");
            tip = room.add(
                &[tip],
                &user_id,
                "m.room.member",
                Some(&user_id),
                json!({"membership": "join"}),
            );
            assert!(room.dag.evaluation(tip).rejection.is_none());
            expected.insert(
                ("m.room.member".to_owned(), user_id),
                room.dag.event(tip).event_id.clone(),
            );
        }
        assert_eq!(
            room.dag
                .state_after(&room.dag.event(tip).event_id.clone())
                .unwrap(),
            expected
        );
        // A member's auth chain: create, Alice's join, the power levels, the join rules.
        let chain: Vec<&str> = room
            .dag
            .auth_chain(tip)
            .iter()
            .map(|&index| room.dag.event(index).event_id.as_str())
            .collect();
        assert_eq!(chain, ["$e0001", "$e0002", "$e0003", "$e0004"]);
    }

    /// Test that the ID index stays exact when two IDs' hashes collide: an entry under the same
    /// hash naming another event's node is not taken for a match.
    #[test]
    fn the_id_index_resolves_hash_collisions_exactly() {
        let (room, tip) = Room::new();
        let ids: Vec<EventId> = (0..=tip)
            .map(|index| room.dag.event(index).event_id.clone())
            .collect();
        let nodes = &room.dag.nodes;
        // Room enough that no insertion rehashes (which would move the planted entry).
        let mut index = IdIndex {
            table: hashbrown::HashTable::with_capacity(16),
        };
        // Pretend ids[1] hashes like ids[0]: its entry sits under ids[0]'s hash, first.
        index
            .table
            .insert_unique(id_hash(&ids[0]), 1, |&held| id_hash(&ids[held as usize]));
        index.insert(nodes, &ids[0], 0);
        index.insert(nodes, &ids[1], 1);
        let nodes = &room.dag.nodes;
        assert_eq!(index.get(nodes, &ids[0]), Some(0));
        assert_eq!(index.get(nodes, &ids[1]), Some(1));
        assert_eq!(index.get(nodes, &ids[2]), None);
        for (position, id) in ids.iter().enumerate() {
            assert_eq!(room.dag.index(id), Some(position as EventIndex));
        }
        assert_eq!(room.dag.index("$absent"), None);
    }

    /// Test that insertion refuses unknown references, duplicate IDs and a second create event.
    #[test]
    fn insert_refuses_bad_references() {
        let (mut room, tip) = Room::new();
        let template = (**room.dag.event(tip)).clone();
        let mut duplicate = template.clone();
        duplicate.prev_events = vec![room.dag.event(tip).event_id.clone()];
        assert_eq!(
            room.dag.insert(Arc::new(duplicate)),
            Err(DagError::DuplicateEventId("$e0004".into()))
        );
        let mut orphan = template.clone();
        orphan.event_id = "$orphan".into();
        orphan.prev_events = vec!["$missing".into()];
        assert_eq!(
            room.dag.insert(Arc::new(orphan)),
            Err(DagError::UnknownPrevEvent {
                event: "$orphan".into(),
                missing: "$missing".into()
            })
        );
        let mut second_create = (**room.dag.event(0)).clone();
        second_create.event_id = "$create2".into();
        assert_eq!(
            room.dag.insert(Arc::new(second_create)),
            Err(DagError::SecondCreate("$create2".into()))
        );
    }

    /// Test that prev events are found wherever they are: among the events inserted last
    /// (compared first) and further back (the ID table), in the event's order.
    #[test]
    fn prev_events_are_found_among_the_recent_events_and_before_them() {
        let (mut room, tip) = Room::new();
        let mut last = tip;
        for body in 0..2 * Dag::RECENT {
            last = room.add(
                &[last],
                ALICE,
                "m.room.message",
                None,
                json!({"body": body}),
            );
        }
        // `old` is far behind the last events, `last` is the newest.
        let old = tip - 1;
        let merge = room.add(&[last, old], ALICE, "m.room.message", None, json!({}));
        let pdu = Arc::clone(room.dag.event(merge));
        let mut copy = Dag::new(RoomVersion::V10);
        for index in 0..merge {
            copy.insert(Arc::clone(room.dag.event(index))).unwrap();
        }
        assert_eq!(
            copy.recent_index(&room.dag.event(last).event_id),
            Some(last)
        );
        assert_eq!(copy.recent_index(&room.dag.event(old).event_id), None);
        let lookup = copy.look_up_parents(&pdu);
        assert!(lookup.missing_prev.is_empty());
        assert_eq!(lookup.held.prev, [last, old]);
        assert_eq!(lookup.held.prev, room.dag.prev_indices(merge));
    }

    /// Test that `look_up_parents` finds what `insert` resolves (an outlier counting as a
    /// missing prev event), that inserting with what it found links the same edges, and that
    /// a lookup with something missing still gets the error that names it.
    #[test]
    fn parents_looked_up_once_insert_as_parents_resolved_again() {
        let (mut room, tip) = Room::new();
        let message = room.add(&[tip], ALICE, "m.room.message", None, json!({"body": "a"}));
        let pdu = Arc::clone(room.dag.event(message));
        let mut copy = Dag::new(RoomVersion::V10);
        for index in 0..message {
            copy.insert(Arc::clone(room.dag.event(index))).unwrap();
        }
        let lookup = copy.look_up_parents(&pdu);
        assert!(lookup.missing_prev.is_empty() && lookup.missing_auth.is_empty());
        assert_eq!(lookup.held.prev, room.dag.prev_indices(message));
        let again = copy
            .insert_with_parents(Arc::clone(&pdu), lookup.held)
            .unwrap();
        assert_eq!(again, message);
        assert_eq!(copy.prev_indices(again), room.dag.prev_indices(message));
        assert_eq!(
            copy.auth_event_indices(again),
            room.dag.auth_event_indices(message)
        );
        assert_eq!(
            copy.evaluation(again).rejection,
            room.dag.evaluation(message).rejection
        );
        // Its prev event held only as an outlier: missing as a prev event, held as an auth one.
        let mut gap = Dag::new(RoomVersion::V10);
        for index in 0..tip {
            gap.insert(Arc::clone(room.dag.event(index))).unwrap();
        }
        gap.insert_outlier(Arc::clone(room.dag.event(tip))).unwrap();
        let tip_id = room.dag.event(tip).event_id.clone();
        let lookup = gap.look_up_parents(&pdu);
        assert_eq!(lookup.missing_prev, vec![tip_id.clone()]);
        assert!(lookup.held.prev.is_empty());
        assert_eq!(
            gap.insert_with_parents(Arc::clone(&pdu), lookup.held.clone()),
            Err(DagError::UnknownPrevEvent {
                event: pdu.event_id.clone(),
                missing: tip_id
            })
        );
        // With a state given, the prev events not held in the graph are simply not linked.
        let state = Arc::clone(&room.dag.evaluation(message).state_before);
        let given = gap
            .insert_with_state_before_and_parents(Arc::clone(&pdu), state, lookup.held)
            .unwrap();
        assert!(gap.prev_indices(given).is_empty());
        assert_eq!(
            gap.auth_event_indices(given),
            room.dag.auth_event_indices(message)
        );
        // An auth event not held: the lookup names it, and inserting with it fails naming it.
        let mut bare = Dag::new(RoomVersion::V10);
        bare.insert(Arc::clone(room.dag.event(0))).unwrap();
        let (auth, missing) = bare.look_up_auth_events(&pdu);
        assert_eq!(auth.len() + missing.len(), pdu.auth_events.len());
        assert!(!missing.is_empty());
        assert_eq!(
            bare.insert_outlier_with_auth(Arc::clone(&pdu), auth, None),
            Err(DagError::UnknownAuthEvent {
                event: pdu.event_id.clone(),
                missing: missing[0].clone()
            })
        );
    }
}
