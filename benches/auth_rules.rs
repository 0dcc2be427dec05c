//! Time per authorization check (room version 12), in rooms of 100 and 10 000 joined members,
//! for the three events a busy room sees most: a message, a kick, and a power-level change.
//!
//! The room: the creator, 1 moderator at 50, every other member at the default 0; the
//! `m.room.power_levels` `users` map lists the moderator and every 10th member (10 or 1 000
//! entries), so the power-level change compares 11 or 1 001 entries. The state is a
//! `BTreeMap<StateKey, Arc<Pdu>>`, as state resolution holds it.
//!
//! - `check5_*`: `check_auth_rules` against the full state (PDU check 5/6).
//! - `check4_*`: `check_against_auth_events` against the event's own auth events (PDU check 4).
//! - `ruma_check5_*`: ruma-state-res 0.18's `check_state_dependent_auth_rules` on the same event
//!   and state, for scale (its state lookups take owned strings, so the lookup closure clones).
//!
//! Run: `cargo bench --bench auth_rules`.

use std::collections::BTreeMap;
use std::sync::Arc;

use divan::{Bencher, black_box};
use fedsim::matrix::auth::{auth_types_for_event, check_against_auth_events, check_auth_rules};
use fedsim::matrix::{Pdu, RoomVersion, StateKey};
use ruma_common::room_version_rules::AuthorizationRules;
use ruma_common::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId,
};
use ruma_events::TimelineEventType;
use serde_json::value::RawValue;
use serde_json::{Value, json};

fn main() {
    divan::main();
}

const VERSION: RoomVersion = RoomVersion::V12;
const CREATE_ID: &str = "$createeventreferencehashinbase64xxxxxxxxxxxx";
const MEMBER_COUNTS: [usize; 2] = [100, 10_000];

fn member(index: usize) -> String {
    format!("@member{index}:server{}.example", index % 50)
}

const CREATOR: &str = "@creator:server0.example";
const MODERATOR: &str = "@moderator:server1.example";

struct Room {
    state: BTreeMap<StateKey, Arc<Pdu>>,
    next_id: usize,
}

impl Room {
    fn new(members: usize) -> Room {
        let mut room = Room {
            state: BTreeMap::new(),
            next_id: 0,
        };
        let create = Pdu::from_json(
            json!({"type": "m.room.create", "state_key": "", "sender": CREATOR,
                   "content": {"room_version": "12"}, "prev_events": [], "auth_events": [],
                   "depth": 1, "origin_server_ts": 0}),
            CREATE_ID.into(),
            &VERSION,
        )
        .unwrap();
        room.insert(create);
        for user in [CREATOR, MODERATOR] {
            let join = room.event(
                "m.room.member",
                user,
                Some(user),
                json!({"membership": "join"}),
            );
            room.insert(join);
        }
        for index in 0..members.saturating_sub(2) {
            let user = member(index);
            let join = room.event(
                "m.room.member",
                &user,
                Some(&user),
                json!({"membership": "join"}),
            );
            room.insert(join);
        }
        let mut users = json!({ MODERATOR: 50 });
        for index in (0..members.saturating_sub(2)).step_by(10) {
            users[member(index)] = json!(0);
        }
        let power_levels = room.event(
            "m.room.power_levels",
            CREATOR,
            Some(""),
            json!({"users": users, "events": {"m.room.name": 50}}),
        );
        room.insert(power_levels);
        let join_rules = room.event(
            "m.room.join_rules",
            CREATOR,
            Some(""),
            json!({"join_rule": "public"}),
        );
        room.insert(join_rules);
        room
    }

    fn event(
        &mut self,
        event_type: &str,
        sender: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Pdu {
        self.next_id += 1;
        let mut json = json!({
            "type": event_type, "sender": sender, "content": content,
            "room_id": format!("!{}", &CREATE_ID[1..]), "prev_events": ["$prev"],
            "auth_events": [], "depth": 10, "origin_server_ts": self.next_id,
        });
        if let Some(state_key) = state_key {
            json["state_key"] = json!(state_key);
        }
        Pdu::from_json(json, format!("$event{}", self.next_id), &VERSION).unwrap()
    }

    fn insert(&mut self, event: Pdu) {
        self.state
            .insert(event.state_key_pair().unwrap(), Arc::new(event));
    }

    fn message(&mut self) -> Pdu {
        self.event(
            "m.room.message",
            &member(3),
            None,
            json!({"body": "hello", "msgtype": "m.text"}),
        )
    }

    fn kick(&mut self) -> Pdu {
        let target = member(7);
        self.event(
            "m.room.member",
            MODERATOR,
            Some(&target),
            json!({"membership": "leave"}),
        )
    }

    fn power_level_change(&mut self) -> Pdu {
        let mut content = self.state[&("m.room.power_levels".to_owned(), String::new())]
            .content
            .clone();
        content["users"][member(20)] = json!(10);
        self.event("m.room.power_levels", MODERATOR, Some(""), content)
    }

    /// The event's auth events (without the create event, which v12 never lists).
    fn auth_events(&self, event: &Pdu) -> Vec<&Pdu> {
        auth_types_for_event(
            &VERSION,
            &event.event_type,
            &event.sender,
            event.state_key.as_deref(),
            &event.content,
        )
        .iter()
        .filter_map(|key| self.state.get(key).map(|event| &**event))
        .collect()
    }

    fn create(&self) -> &Pdu {
        &self.state[&("m.room.create".to_owned(), String::new())]
    }
}

fn bench_check5(bencher: Bencher, members: usize, make: fn(&mut Room) -> Pdu) {
    let mut room = Room::new(members);
    let event = make(&mut room);
    assert!(check_auth_rules(&VERSION, &event, &room.state).is_ok());
    bencher.bench_local(|| check_auth_rules(&VERSION, black_box(&event), black_box(&room.state)));
}

fn bench_check4(bencher: Bencher, members: usize, make: fn(&mut Room) -> Pdu) {
    let mut room = Room::new(members);
    let event = make(&mut room);
    let auth_events = room.auth_events(&event);
    let create = room.create();
    let check = || {
        check_against_auth_events(
            &VERSION,
            black_box(&event),
            black_box(&auth_events),
            Some(create),
            |_| false,
        )
    };
    assert!(check().is_ok());
    bencher.bench_local(check);
}

#[divan::bench(args = MEMBER_COUNTS)]
fn check5_message(bencher: Bencher, members: usize) {
    bench_check5(bencher, members, Room::message);
}

#[divan::bench(args = MEMBER_COUNTS)]
fn check5_kick(bencher: Bencher, members: usize) {
    bench_check5(bencher, members, Room::kick);
}

#[divan::bench(args = MEMBER_COUNTS)]
fn check5_power_level_change(bencher: Bencher, members: usize) {
    bench_check5(bencher, members, Room::power_level_change);
}

#[divan::bench(args = MEMBER_COUNTS)]
fn check4_message(bencher: Bencher, members: usize) {
    bench_check4(bencher, members, Room::message);
}

#[divan::bench(args = MEMBER_COUNTS)]
fn check4_kick(bencher: Bencher, members: usize) {
    bench_check4(bencher, members, Room::kick);
}

#[divan::bench(args = MEMBER_COUNTS)]
fn check4_power_level_change(bencher: Bencher, members: usize) {
    bench_check4(bencher, members, Room::power_level_change);
}

// ---- ruma-state-res on the same inputs --------------------------------------------------------

struct RumaEvent {
    event_id: OwnedEventId,
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    event_type: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
}

impl RumaEvent {
    fn from_pdu(pdu: &Pdu) -> RumaEvent {
        let event_id = |id: &str| OwnedEventId::try_from(id).unwrap();
        RumaEvent {
            event_id: event_id(&pdu.event_id),
            room_id: pdu
                .room_id
                .as_deref()
                .map(|room_id| OwnedRoomId::try_from(room_id).unwrap()),
            sender: OwnedUserId::try_from(pdu.sender.as_str()).unwrap(),
            origin_server_ts: serde_json::from_value(json!(pdu.origin_server_ts)).unwrap(),
            event_type: TimelineEventType::from(pdu.event_type.as_str()),
            content: serde_json::value::to_raw_value(&pdu.content).unwrap(),
            state_key: pdu.state_key.clone(),
            prev_events: pdu.prev_events.iter().map(|id| event_id(id)).collect(),
            auth_events: pdu.auth_events.iter().map(|id| event_id(id)).collect(),
        }
    }
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
        false
    }
}

fn bench_ruma_check5(bencher: Bencher, members: usize, make: fn(&mut Room) -> Pdu) {
    let mut room = Room::new(members);
    let event = RumaEvent::from_pdu(&make(&mut room));
    let state: BTreeMap<StateKey, RumaEvent> = room
        .state
        .iter()
        .map(|(key, pdu)| (key.clone(), RumaEvent::from_pdu(pdu)))
        .collect();
    let rules = AuthorizationRules::V12;
    let check = || {
        ruma_state_res::check_state_dependent_auth_rules(
            &rules,
            black_box(&event),
            |event_type, state_key| state.get(&(event_type.to_string(), state_key.to_owned())),
        )
    };
    assert!(check().is_ok());
    bencher.bench_local(check);
}

#[divan::bench(args = MEMBER_COUNTS)]
fn ruma_check5_message(bencher: Bencher, members: usize) {
    bench_ruma_check5(bencher, members, Room::message);
}

#[divan::bench(args = MEMBER_COUNTS)]
fn ruma_check5_kick(bencher: Bencher, members: usize) {
    bench_ruma_check5(bencher, members, Room::kick);
}

#[divan::bench(args = MEMBER_COUNTS)]
fn ruma_check5_power_level_change(bencher: Bencher, members: usize) {
    bench_ruma_check5(bencher, members, Room::power_level_change);
}
