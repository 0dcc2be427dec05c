//! Joins as the spec describes them (`rooms.join = "state"`; s2s "Joining Rooms",
//! `PUT /send_join` v2, "Backfilling and retrieving missing events", `GET /state`).
//!
//! - The resident answers `send_join` with the state before the join event and the auth chain
//!   of that state and of the join event (wire copies, in its DAG order, so every auth event
//!   comes before the events it authorises).
//! - The joiner stores those as **outliers** (checks 1–4: each is checked against its own auth
//!   events; no state is known for them, they are not in the timeline and never a prev event),
//!   then processes its own join event with the answer's state as the state before it: the
//!   join is its first timeline event and its first forward extremity.
//! - Then it asks the resident for history with `GET /backfill` (`rooms.backfill_limit` events
//!   before the join, 0 = none), processed on the `Backfill` arrival path, so the policy's
//!   soft-fail knobs for that path apply. Backfilled events are history: they do not become
//!   forward extremities (as in Synapse).
//! - An event whose prev events cannot be had (the oldest backfilled events; an event made
//!   concurrently with the join, once `/get_missing_events` — bounded by the spec's
//!   `min_depth`, the joiner's lowest timeline event — cannot fill the gap) is processed with
//!   the state before it from `GET /state` to the server that sent it, as Synapse does with
//!   `/state_ids` for missing prev events; the answer's unknown events become outliers.
//!
//! Not modelled: de-outliering (an event held as an outlier that later arrives with its place
//! in the graph stays an outlier: its children then take their state from `/state`), the
//! `/state_ids` + `/event` variant (fedsim asks `/state` and counts its bytes), partial-state
//! joins (MSC3902).

use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::{Block, Body, FedWorld, Inbound, Purpose, Reply, RoomIndex, wire_copy};
use crate::matrix::dag::EventIndex;
use crate::matrix::state_res::EventSource;
use crate::matrix::{EventId, StateMap};
use crate::net::ServerId;
use crate::room::pipeline::{self, Receipt, ServerView};
use crate::room::policy::ArrivalPath;
use crate::room::room_state::RoomState;
use crate::scenario::JoinMode;
use crate::server::absolute_ms;

use super::keys::CacheKeys;

impl FedWorld {
    /// The state before `event_id` on `server` and the events to send with it: the events of
    /// that state with their auth chains and the event's own auth chain, in DAG order. `None`
    /// if the event is not held with its place in the graph.
    fn state_and_chain(
        &self,
        server: ServerId,
        room: RoomIndex,
        event_id: &str,
    ) -> Option<(Arc<StateMap>, Vec<EventIndex>)> {
        let state = &self.servers[server as usize].rooms.get(&room)?.state;
        let dag = state.dag();
        let index = dag.index(event_id)?;
        if dag.is_outlier(index) {
            return None;
        }
        // The snapshot itself when the state has no changes on top of it (no copy).
        let state_map = dag.evaluation(index).state_before.to_shared_map();
        // One mark per held event rather than an ordered set: a large room's state names
        // thousands of events whose auth chains mostly overlap, and every join asks for them.
        let mut wanted = vec![false; dag.len()];
        let mut mark = |chain: &[EventIndex]| {
            for &event in chain {
                wanted[event as usize] = true;
            }
        };
        mark(dag.auth_chain(index));
        for id in state_map.values() {
            let member = dag.index(id)?;
            mark(std::slice::from_ref(&member));
            mark(dag.auth_chain(member));
        }
        let events = (0..dag.len() as EventIndex)
            .filter(|&event| wanted[event as usize])
            .collect();
        Some((state_map, events))
    }

    /// The `send_join` (state mode) and `/state` answer of `server` for `event_id`.
    pub(super) fn state_answer(
        &self,
        server: ServerId,
        room: RoomIndex,
        event_id: &str,
    ) -> Option<Reply> {
        let (state_map, events) = self.state_and_chain(server, room, event_id)?;
        let dag = self.servers[server as usize].rooms[&room].state.dag();
        let events = events
            .into_iter()
            .map(|index| wire_copy(&self.wire, dag.event(index)))
            .collect();
        Some(Reply::State {
            state: state_map,
            events,
        })
    }

    /// The `/state_ids` answer of `server` for `event_id`.
    pub(super) fn state_ids_answer(
        &self,
        server: ServerId,
        room: RoomIndex,
        event_id: &str,
    ) -> Option<Reply> {
        let (state_map, events) = self.state_and_chain(server, room, event_id)?;
        let dag = self.servers[server as usize].rooms[&room].state.dag();
        let in_state: BTreeSet<&str> = state_map.values().map(String::as_str).collect();
        let auth_chain = events
            .into_iter()
            .map(|index| &dag.event(index).event_id)
            .filter(|id| !in_state.contains(id.as_str()))
            .cloned()
            .collect();
        Some(Reply::StateIds {
            state: state_map,
            auth_chain,
        })
    }

    /// The `send_join` answer arrived (state mode): outliers, then the join event with the
    /// answer's state, then what waited; then `/backfill`.
    pub(super) fn install_state_join(
        &mut self,
        room: RoomIndex,
        server: ServerId,
        resident: ServerId,
        state: Arc<StateMap>,
        events: Vec<Arc<Value>>,
        join: Arc<Value>,
    ) {
        let Some(server_room) = self.servers[server as usize].rooms.get_mut(&room) else {
            return;
        };
        if server_room.joined {
            return;
        }
        server_room.joined = true;
        server_room.state.set_backfill_is_history(true);
        self.counters.joins_completed += 1;
        self.counters.join_history_events += events.len() as u64;
        let earlier: Vec<Inbound> = server_room.inbound.drain(..).collect();
        for json in events {
            let mut item = Inbound::new(json, ArrivalPath::JoinState, resident);
            item.outlier = true;
            server_room.inbound.push_back(item);
        }
        let from: Vec<EventId> = join
            .get("prev_events")
            .and_then(Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mut own = Inbound::new(join, ArrivalPath::Local, server);
        own.state = Some(state);
        server_room.inbound.push_back(own);
        server_room.inbound.extend(earlier);
        self.drain(server, room);
        self.server_joined(room, server);
        let limit = self.config.backfill_limit();
        if limit > 0 && !from.is_empty() {
            self.dispatch(
                server,
                resident,
                Purpose::Backfill,
                Body::Backfill { room, from, limit },
            );
        }
    }

    /// The room of `server` unblocked, if it was waiting for exactly this gap request (an
    /// answer to an older, abandoned request changes nothing).
    fn unblock_gap(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        request: u64,
    ) -> Option<&mut super::ServerRoom> {
        let server_room = self.servers[server as usize].rooms.get_mut(&room)?;
        if server_room.blocked != Some(Block::Gap(request)) {
            return None;
        }
        server_room.blocked = None;
        Some(server_room)
    }

    /// A `/state` answer arrived for the event at the front of the room's inbound queue: its
    /// unknown events go first as outliers, then the event with the answer's state.
    pub(super) fn state_arrived(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        request: u64,
        reply: Option<Reply>,
    ) {
        let Some(server_room) = self.unblock_gap(server, room, request) else {
            return;
        };
        if let Some(Reply::State { state, events }) = reply
            && let Some(mut item) = server_room.inbound.pop_front()
        {
            let from = item.from;
            item.state = Some(state);
            server_room.inbound.push_front(item);
            for json in events.into_iter().rev() {
                let mut outlier = Inbound::new(json, ArrivalPath::JoinState, from);
                outlier.outlier = true;
                server_room.inbound.push_front(outlier);
            }
        }
        self.drain(server, room);
    }

    /// A `/state_ids` answer arrived for the event at the front of the queue: if every event it
    /// names is held, the event is processed with that state at once; else the events are
    /// fetched with `/state` (Synapse fetches the missing ones; fedsim asks for the answer with
    /// its events).
    pub(super) fn state_ids_arrived(
        &mut self,
        server: ServerId,
        responder: ServerId,
        room: RoomIndex,
        request: u64,
        event_id: EventId,
        reply: Option<Reply>,
    ) {
        let Some(server_room) = self.unblock_gap(server, room, request) else {
            return;
        };
        if let Some(Reply::StateIds { state, auth_chain }) = reply {
            let all_held = state
                .values()
                .chain(&auth_chain)
                .all(|id| server_room.state.holds(id));
            if all_held {
                if let Some(item) = server_room.inbound.front_mut() {
                    item.state = Some(state);
                }
            } else {
                self.dispatch_parked(
                    server,
                    room,
                    responder,
                    Purpose::State,
                    Body::State { room, event_id },
                );
                return;
            }
        }
        self.drain(server, room);
    }

    /// Under state joins, an event whose prev events cannot be had is processed with the state
    /// from `/state`: for a backfilled event at once, for others once `/get_missing_events`
    /// rounds are used up. Returns whether a request was made (the queue is parked).
    pub(super) fn fetch_state_instead(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        item: &mut Inbound,
        event_id: Option<EventId>,
        missing_auth: &[EventId],
    ) -> bool {
        if self.config.join != JoinMode::State
            || item.state.is_some()
            || item.state_fetched
            || item.outlier
            || !missing_auth.is_empty()
            || item.from == server
            || !(item.path == ArrivalPath::Backfill || item.gap_rounds >= super::MAX_GAP_ROUNDS)
        {
            return false;
        }
        let Some(event_id) = event_id else {
            return false;
        };
        item.state_fetched = true;
        self.counters.state_fetches += 1;
        let target = item.from;
        self.servers[server as usize]
            .rooms
            .get_mut(&room)
            .expect("the room is held")
            .inbound
            .push_front(item.clone());
        self.dispatch_parked(
            server,
            room,
            target,
            Purpose::StateIds,
            Body::StateIds { room, event_id },
        );
        true
    }

    /// The spec's `min_depth` for this server's `/get_missing_events`: its lowest timeline
    /// event's depth under state joins (history before it comes by `/backfill`), else 0.
    pub(super) fn min_depth(&self, server: ServerId, room: RoomIndex) -> i64 {
        if self.config.join != JoinMode::State {
            return 0;
        }
        self.servers[server as usize]
            .rooms
            .get(&room)
            .map_or(0, |server_room| min_timeline_depth(&server_room.state))
    }

    /// Runs one queued PDU through the server's pipeline: as an outlier, with a given state, or
    /// as usual.
    pub(super) fn process_inbound(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        item: &Inbound,
    ) -> Receipt {
        if !item.outlier && item.state.is_none() {
            return self.process_now(server, room, &item.json, item.path, item.from);
        }
        let now_abs_ms = absolute_ms(self.queue.now_ms());
        let hs = &mut self.servers[server as usize];
        let keys = CacheKeys {
            own_id: server,
            own_name: &hs.name,
            own_keys: &hs.own_keys,
            cache: &hs.cache,
            slot_of: &hs.slot_of,
            archive: &hs.archive,
            now_abs_ms,
        };
        let state = hs.rooms.get_mut(&room).expect("the room is held");
        let mut view = ServerView {
            keys: &keys,
            links: &mut state.links,
            policy: &self.room_policy,
        };
        let receipt = match &item.state {
            _ if item.outlier => pipeline::receive_outlier_arc_shared(
                &mut state.state,
                &mut view,
                &mut self.memo,
                &item.json,
                now_abs_ms,
            ),
            Some(given) => pipeline::receive_arc_shared_with_state(
                &mut state.state,
                &mut view,
                &mut self.memo,
                &item.json,
                item.path,
                Arc::clone(given),
                now_abs_ms,
            ),
            None => unreachable!("handled above"),
        };
        if item.outlier {
            // A `/state` answer repeats what the server holds; it looks each event up (as a
            // server checks "have I seen it") and processes only the new ones.
            if receipt.verdict == pipeline::Verdict::AlreadyHeld {
                return receipt;
            }
            if matches!(
                receipt.verdict,
                pipeline::Verdict::Accepted { .. } | pipeline::Verdict::Rejected { .. }
            ) {
                self.counters.outliers_stored += 1;
            }
        }
        self.account(server, &receipt, &item.json);
        receipt
    }
}

/// `GET /backfill` on the responder: up to `limit` events preceding `from` (included),
/// deepest first as Synapse walks (a max-heap on depth), returned in DAG order (oldest first).
pub(super) fn backfill_answer(
    state: &RoomState,
    from: &[EventId],
    limit: u32,
    wire: &HashMap<EventId, Arc<Value>>,
) -> Vec<Arc<Value>> {
    let dag = state.dag();
    let mut heap: BinaryHeap<(i64, EventIndex)> = BinaryHeap::new();
    let mut seen: BTreeSet<EventIndex> = BTreeSet::new();
    for id in from {
        if let Some(index) = dag.index(id)
            && !dag.is_outlier(index)
            && seen.insert(index)
        {
            heap.push((dag.event(index).depth, index));
        }
    }
    let mut found: BTreeSet<EventIndex> = BTreeSet::new();
    while let Some((_, index)) = heap.pop() {
        if found.len() >= limit as usize {
            break;
        }
        found.insert(index);
        for &prev in dag.prev_indices(index) {
            if !dag.is_outlier(prev) && seen.insert(prev) {
                heap.push((dag.event(prev).depth, prev));
            }
        }
    }
    found
        .into_iter()
        .map(|index| wire_copy(wire, dag.event(index)))
        .collect()
}

/// The lowest depth of a timeline (non-outlier) event held, 0 if none.
fn min_timeline_depth(state: &RoomState) -> i64 {
    let dag = state.dag();
    (0..dag.len() as EventIndex)
        .filter(|&index| !dag.is_outlier(index))
        .map(|index| dag.event(index).depth)
        .min()
        .unwrap_or(0)
}
