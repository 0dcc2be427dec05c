//! The two orderings of state resolution v2: the reverse topological power ordering (step 1) and
//! the mainline ordering (step 3). Both break ties by `origin_server_ts`, then event ID.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::{EventSource, IndexSet};
use crate::matrix::RoomVersion;
use crate::matrix::auth;
use crate::matrix::dag::EventIndex;

/// Step 1 of the algorithm: X = `power_events` enlarged by the events of their auth chains that
/// are in the full conflicted set (walking `auth_events` edges through full-conflicted-set
/// events only), sorted by the reverse topological power ordering: Kahn's algorithm on the
/// `auth_events` edges inside X, taking at each step the smallest ready event by (sender's power
/// level from the event's own auth events, descending; `origin_server_ts`; event ID).
pub fn reverse_topological_power_order(
    version: &RoomVersion,
    power_events: &[EventIndex],
    in_full_conflicted: &IndexSet,
    events: &impl EventSource,
) -> Vec<EventIndex> {
    // Enlarge X: each member with the number of its auth events inside X still to be emitted.
    let mut members: Vec<EventIndex> = Vec::new();
    let mut in_x = HashMap::<EventIndex, usize>::new();
    let mut stack: Vec<EventIndex> = power_events.to_vec();
    for &event in power_events {
        in_x.insert(event, 0);
    }
    while let Some(current) = stack.pop() {
        members.push(current);
        for &parent in events.auth_indices(current) {
            if in_full_conflicted.contains(parent) && !in_x.contains_key(&parent) {
                in_x.insert(parent, 0);
                stack.push(parent);
            }
        }
    }
    // Edges inside X: child -> its auth parents in X; count them, and index children by parent.
    let mut children: HashMap<EventIndex, Vec<EventIndex>> = HashMap::new();
    for &event in &members {
        let mut outstanding = 0;
        for &parent in events.auth_indices(event) {
            if in_x.contains_key(&parent) {
                outstanding += 1;
                children.entry(parent).or_default().push(event);
            }
        }
        in_x.insert(event, outstanding);
    }
    // Only room versions whose room ID names the create event leave it out of `auth_events`;
    // earlier versions read it from the auth events (or the partial state) like any other.
    let create = events
        .create_index()
        .filter(|_| version.room_id_from_create_event)
        .map(|create| events.pdu(create));
    let sort_key = |event: EventIndex| {
        let pdu = events.pdu(event);
        // The sender's power level "when looking at their respective auth_events"; room v12
        // events name the create event through the room ID, so it is added for the creators.
        let mut auth_pdus: Vec<&crate::matrix::Pdu> = events
            .auth_indices(event)
            .iter()
            .map(|&auth_event| events.pdu(auth_event))
            .collect();
        if let Some(create) = create
            && !auth_pdus
                .iter()
                .any(|auth_pdu| std::ptr::eq(*auth_pdu, create))
        {
            auth_pdus.push(create);
        }
        let level = auth::sender_power_level(version, &pdu.sender, auth_pdus.as_slice());
        Reverse((
            Reverse(level),
            pdu.origin_server_ts,
            pdu.event_id.as_str(),
            event,
        ))
    };
    let mut ready: BinaryHeap<_> = members
        .iter()
        .filter(|event| in_x[event] == 0)
        .map(|&event| sort_key(event))
        .collect();
    let mut order = Vec::with_capacity(members.len());
    while let Some(Reverse((_, _, _, event))) = ready.pop() {
        order.push(event);
        for &child in children.get(&event).into_iter().flatten() {
            let outstanding = in_x.get_mut(&child).expect("children are in X");
            *outstanding -= 1;
            if *outstanding == 0 {
                ready.push(sort_key(child));
            }
        }
    }
    order
}

/// Step 3: `events` in the mainline ordering based on the power levels event `power_levels`:
/// events whose closest power levels ancestor on the mainline is older come first (no ancestor on
/// the mainline = oldest of all), then older `origin_server_ts`, then smaller event ID.
pub fn mainline_order(
    events_to_sort: &[EventIndex],
    power_levels: Option<EventIndex>,
    events: &impl EventSource,
) -> Vec<EventIndex> {
    let power_levels_auth_event = |event: EventIndex| {
        events
            .auth_indices(event)
            .iter()
            .copied()
            .find(|&auth_event| {
                let pdu = events.pdu(auth_event);
                pdu.event_type == "m.room.power_levels" && pdu.state_key.as_deref() == Some("")
            })
    };
    // The mainline of P: P0 = P, P(i+1) = the power levels event in P(i)'s auth events.
    let mut position_of: HashMap<EventIndex, usize> = HashMap::new();
    let mut mainline_event = power_levels;
    let mut position = 0;
    while let Some(event) = mainline_event {
        position_of.insert(event, position);
        position += 1;
        mainline_event = power_levels_auth_event(event);
    }
    // The mainline position of e: the position of the first e(j), j >= 1, on the mainline, where
    // e(j+1) is the power levels event in e(j)'s auth events; usize::MAX (infinity) if none.
    // Positions of the walked power levels events are memoised.
    let mut memo: HashMap<EventIndex, usize> = HashMap::new();
    let mut walked: Vec<EventIndex> = Vec::new();
    let mut keyed: Vec<_> = events_to_sort
        .iter()
        .map(|&event| {
            walked.clear();
            let mut current = power_levels_auth_event(event);
            let position = loop {
                let Some(ancestor) = current else {
                    break usize::MAX;
                };
                if let Some(&position) = position_of.get(&ancestor) {
                    break position;
                }
                if let Some(&position) = memo.get(&ancestor) {
                    break position;
                }
                walked.push(ancestor);
                current = power_levels_auth_event(ancestor);
            };
            for &ancestor in &walked {
                memo.insert(ancestor, position);
            }
            let pdu = events.pdu(event);
            (
                Reverse(position),
                pdu.origin_server_ts,
                pdu.event_id.as_str(),
                event,
            )
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, _, _, event)| event).collect()
}
