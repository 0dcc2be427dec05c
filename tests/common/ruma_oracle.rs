//! The `ruma-state-res` oracle shared by the differential test and the benchmark: fedsim PDUs
//! as ruma events, and ruma's resolution fed with auth chains and the conflicted state subgraph
//! computed by a plain implementation over event-ID strings (independent of fedsim's indexed,
//! memoised code). Each state set's full auth chain includes its own events (Synapse's
//! convention, which fedsim follows).

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use fedsim::matrix::{Pdu, RoomVersion, StateMap};
use ruma_common::room_version_rules::{
    RoomVersionRules, StateResolutionV2Rules, StateResolutionVersion,
};
use ruma_common::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
};
use ruma_events::{StateEventType, TimelineEventType};
use ruma_state_res::utils::event_id_set::EventIdSet;
use serde_json::value::RawValue;

/// An event as ruma reads it.
pub struct RumaEvent {
    event_id: OwnedEventId,
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    event_type: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
    rejected: bool,
}

impl ruma_state_res::Event for RumaEvent {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.event_type
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        None
    }
    fn rejected(&self) -> bool {
        self.rejected
    }
}

pub fn ruma_event(pdu: &Pdu, rejected: bool) -> RumaEvent {
    let ts = u64::try_from(pdu.origin_server_ts).unwrap();
    RumaEvent {
        event_id: EventId::parse(&pdu.event_id).unwrap(),
        room_id: pdu.room_id.as_deref().map(|id| RoomId::parse(id).unwrap()),
        sender: UserId::parse(&pdu.sender).unwrap(),
        origin_server_ts: MilliSecondsSinceUnixEpoch::from_system_time(
            UNIX_EPOCH + Duration::from_millis(ts),
        )
        .unwrap(),
        event_type: TimelineEventType::from(pdu.event_type.as_str()),
        content: serde_json::value::to_raw_value(&pdu.content).unwrap(),
        state_key: pdu.state_key.clone(),
        prev_events: pdu
            .prev_events
            .iter()
            .map(|id| EventId::parse(id).unwrap())
            .collect(),
        auth_events: pdu
            .auth_events
            .iter()
            .map(|id| EventId::parse(id).unwrap())
            .collect(),
        rejected,
    }
}

/// The plain reference computations the oracle needs, over event-ID strings.
pub struct Reference<'a> {
    pub events: &'a HashMap<String, RumaEvent>,
    pub chains: std::cell::RefCell<HashMap<String, BTreeSet<String>>>,
}

impl Reference<'_> {
    /// Every event reachable through `auth_events` (not the event itself), by plain recursion.
    pub fn auth_chain(&self, event_id: &str) -> BTreeSet<String> {
        if let Some(chain) = self.chains.borrow().get(event_id) {
            return chain.clone();
        }
        let mut chain = BTreeSet::new();
        for parent in &self.events[event_id].auth_events {
            chain.insert(parent.to_string());
            chain.extend(self.auth_chain(parent.as_str()));
        }
        self.chains
            .borrow_mut()
            .insert(event_id.to_owned(), chain.clone());
        chain
    }

    /// A state set's full auth chain: its events and their auth chains.
    pub fn full_auth_chain(&self, state: &StateMap) -> EventIdSet<OwnedEventId> {
        let mut ids: BTreeSet<String> = BTreeSet::new();
        for event_id in state.values() {
            ids.insert(event_id.clone());
            ids.extend(self.auth_chain(event_id));
        }
        ids.iter().map(|id| EventId::parse(id).unwrap()).collect()
    }

    /// Events on an auth path from one conflicted event to another: X such that some
    /// conflicted event is X or has X in its auth chain, and X is or has in its auth chain a
    /// conflicted event.
    pub fn conflicted_subgraph(&self, conflicted: &BTreeSet<String>) -> EventIdSet<OwnedEventId> {
        let mut reachable: BTreeSet<String> = conflicted.clone();
        for event_id in conflicted {
            reachable.extend(self.auth_chain(event_id));
        }
        reachable
            .into_iter()
            .filter(|candidate| {
                conflicted.contains(candidate)
                    || self
                        .auth_chain(candidate)
                        .iter()
                        .any(|ancestor| conflicted.contains(ancestor))
            })
            .map(|id| EventId::parse(&id).unwrap())
            .collect()
    }
}

pub fn ruma_rules(version: &RoomVersion) -> RoomVersionRules {
    match version.id {
        "10" => RoomVersionRules::V10,
        "11" => RoomVersionRules::V11,
        "12" => RoomVersionRules::V12,
        other => panic!("no ruma rules for room version {other}"),
    }
}

/// Resolves `states` with ruma, feeding it the reference auth chains and conflicted subgraph.
/// Everything ruma's `resolve` takes besides the events, prepared ahead (the benchmark keeps
/// this out of the timed part: a server has auth chains indexed in its database).
pub struct RumaInput {
    pub rules: RoomVersionRules,
    pub state_res_rules: StateResolutionV2Rules,
    pub states: Vec<HashMap<(StateEventType, String), OwnedEventId>>,
    pub auth_chains: Vec<EventIdSet<OwnedEventId>>,
    pub conflicted_subgraph: EventIdSet<OwnedEventId>,
}

/// Prepares ruma's inputs for resolving `states`, with the reference auth chains and the
/// reference conflicted subgraph of the states' conflicted set.
pub fn prepare(
    version: &RoomVersion,
    states: &[&StateMap],
    events: &HashMap<String, RumaEvent>,
) -> RumaInput {
    let rules = ruma_rules(version);
    let StateResolutionVersion::V2(state_res_rules) = rules.state_res else {
        panic!("room versions 10-12 use state resolution v2");
    };
    let reference = Reference {
        events,
        chains: Default::default(),
    };
    let ruma_states = states
        .iter()
        .map(|state| {
            state
                .iter()
                .map(|((event_type, state_key), id)| {
                    (
                        (StateEventType::from(event_type.as_str()), state_key.clone()),
                        EventId::parse(id).unwrap(),
                    )
                })
                .collect()
        })
        .collect();
    let auth_chains = states
        .iter()
        .map(|state| reference.full_auth_chain(state))
        .collect();
    // The conflicted state set, by the definition: every value of a key that is not present in
    // every state set with the same value.
    let mut keys: BTreeSet<&(String, String)> = BTreeSet::new();
    for state in states {
        keys.extend(state.keys());
    }
    let mut conflicted: BTreeSet<String> = BTreeSet::new();
    for key in keys {
        let values: Vec<Option<&String>> = states.iter().map(|state| state.get(key)).collect();
        if values
            .iter()
            .any(|value| value.is_none() || *value != values[0])
        {
            conflicted.extend(values.into_iter().flatten().cloned());
        }
    }
    RumaInput {
        rules,
        state_res_rules,
        states: ruma_states,
        auth_chains,
        conflicted_subgraph: reference.conflicted_subgraph(&conflicted),
    }
}

impl RumaInput {
    /// Runs ruma's resolution; `auth_chains` is a copy of `self.auth_chains` (ruma consumes it).
    pub fn resolve(
        &self,
        auth_chains: Vec<EventIdSet<OwnedEventId>>,
        events: &HashMap<String, RumaEvent>,
    ) -> HashMap<(StateEventType, String), OwnedEventId> {
        ruma_state_res::resolve(
            &self.rules.authorization,
            &self.state_res_rules,
            &self.states,
            auth_chains,
            |id: &EventId| events.get(id.as_str()),
            |_| Some(self.conflicted_subgraph.clone()),
        )
        .expect("ruma resolves")
    }
}

/// Resolves `states` with ruma, fed with the reference auth chains and conflicted subgraph.
pub fn ruma_resolve(
    version: &RoomVersion,
    states: &[&StateMap],
    events: &HashMap<String, RumaEvent>,
) -> StateMap {
    let input = prepare(version, states, events);
    input
        .resolve(input.auth_chains.clone(), events)
        .into_iter()
        .map(|((event_type, state_key), id)| ((event_type.to_string(), state_key), id.to_string()))
        .collect()
}
