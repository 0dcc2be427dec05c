//! Always-properties over the servers' views of one room (issue 5 item 8), as pure functions
//! that return the violations they find. A scenario checks them after every step; tests assert
//! they find nothing on correct runs and find what a deliberate inconsistency plants.
//!
//! - [`no_rejected_event_shown`]: no client is shown a rejected event.
//! - [`checks_agree`]: checks 1–5 give the same outcome on every server holding the same event
//!   (checks 1–3 are per copy and shared; 4 is a function of the event and its auth events; 5 of
//!   the DAG — unless a server was given the state before the event from outside, which the
//!   caller may include to detect divergent `/state_ids` answers).
//! - [`same_extremities_same_state`]: servers with the same forward extremities have the same
//!   current state, whatever their link tables and soft-fail decisions.

use std::collections::{BTreeMap, HashMap};

use super::room_state::{Fate, RejectedAt, RoomState, Visibility};
use crate::matrix::EventId;
use crate::matrix::auth::Rule;

/// One broken property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The property's name.
    pub property: &'static str,
    /// Which servers and events, and how.
    pub detail: String,
}

/// No client of `server` is shown a rejected event.
pub fn no_rejected_event_shown(server: &str, room: &RoomState) -> Vec<Violation> {
    room.timeline_indices()
        .filter(|&index| matches!(*room.fate_at(index), Fate::Rejected { .. }))
        .filter(|&index| !matches!(room.visibility(index), Visibility::Hidden(_)))
        .map(|index| Violation {
            property: "no_rejected_event_shown",
            detail: format!(
                "{server} shows rejected event {}",
                room.dag().event(index).event_id
            ),
        })
        .collect()
}

/// Every server holding an event judged it alike in checks 4 and 5: both passed, or the same
/// check rejected it by the same rule. Events whose state before was given from outside on some
/// server are compared only if `include_given_states`.
pub fn checks_agree(rooms: &[(&str, &RoomState)], include_given_states: bool) -> Vec<Violation> {
    type Judgement = Option<(RejectedAt, Rule)>;
    // Looked up by ID only; the violations are put in event ID order at the end.
    let mut seen: HashMap<&str, Vec<(&str, Judgement, bool)>> = HashMap::new();
    for (server, room) in rooms {
        for (pdu, held) in room.held_events() {
            let judgement = match &held.fate {
                Fate::Rejected { check, rejection } => Some((*check, rejection.rule)),
                Fate::Accepted { .. } | Fate::SoftFailed(_) => None,
            };
            seen.entry(pdu.event_id.as_str()).or_default().push((
                server,
                judgement,
                held.state_given,
            ));
        }
    }
    let mut disagreeing: Vec<(&str, Vec<Violation>)> = Vec::new();
    for (event_id, judgements) in seen {
        let compared: Vec<&(&str, Judgement, bool)> = judgements
            .iter()
            .filter(|(_, judgement, given)| {
                include_given_states
                    || !given
                    || matches!(judgement, Some((RejectedAt::AuthEvents, _)))
            })
            .collect();
        let mut violations = Vec::new();
        if let Some(((first_server, first, _), rest)) = compared.split_first() {
            for (server, judgement, _) in rest {
                if judgement != first {
                    violations.push(Violation {
                        property: "checks_agree",
                        detail: format!(
                            "event {event_id}: {first_server} judged {first:?}, {server} judged {judgement:?}"
                        ),
                    });
                }
            }
        }
        if !violations.is_empty() {
            disagreeing.push((event_id, violations));
        }
    }
    disagreeing.sort_unstable_by(|a, b| a.0.cmp(b.0));
    disagreeing
        .into_iter()
        .flat_map(|(_, violations)| violations)
        .collect()
}

/// Servers with the same forward extremities have the same current state.
pub fn same_extremities_same_state(rooms: &mut [(&str, &mut RoomState)]) -> Vec<Violation> {
    let mut by_extremities: BTreeMap<Vec<EventId>, Vec<usize>> = BTreeMap::new();
    for (position, (_, room)) in rooms.iter().enumerate() {
        by_extremities
            .entry(room.forward_extremities())
            .or_default()
            .push(position);
    }
    let mut violations = Vec::new();
    for (extremities, positions) in by_extremities {
        let mut states = Vec::with_capacity(positions.len());
        for &position in &positions {
            let (server, room) = &mut rooms[position];
            states.push((*server, room.current_state()));
        }
        let (first_server, first) = &states[0];
        for (server, state) in &states[1..] {
            if state != first {
                violations.push(Violation {
                    property: "same_extremities_same_state",
                    detail: format!(
                        "{first_server} and {server} share extremities {extremities:?} but not their current state"
                    ),
                });
            }
        }
    }
    violations
}
