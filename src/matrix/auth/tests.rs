//! Unit tests for every authorization rule: the allowing and the rejecting path, in every room
//! version the rule exists in.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::*;
use crate::matrix::canonical_json::to_canonical_string;
use crate::matrix::member_keys::{member_key_user_id, member_signing_key};

const ALL: [RoomVersion; 4] = RoomVersion::ALL;

/// A small room: `alice` created it, `moderator` has 50, `user` has the default 0, `outsider`
/// never joined. The join rule is `invite`.
struct Room {
    version: RoomVersion,
    state: BTreeMap<StateKey, Pdu>,
    create_id: EventId,
    next_id: usize,
}

impl Room {
    fn new(version: RoomVersion) -> Room {
        let mut room = Room {
            version,
            state: BTreeMap::new(),
            create_id: "$create".into(),
            next_id: 0,
        };
        let alice = room.user("alice");
        let mut create_content = json!({"room_version": version.id});
        if version.create_has_creator_key {
            create_content["creator"] = json!(alice);
        }
        let create = room.event_without_room_id("m.room.create", &alice, Some(""), create_content);
        room.set(create);
        room.join("alice");
        let moderator = room.user("moderator");
        let mut users = json!({ moderator.clone(): 50 });
        if !version.privileged_creators {
            users[&alice] = json!(100);
        }
        room.set_state("m.room.power_levels", "alice", "", json!({"users": users}));
        room.set_state(
            "m.room.join_rules",
            "alice",
            "",
            json!({"join_rule": "invite"}),
        );
        room.join("moderator");
        room.join("user");
        room
    }

    /// The room member called `name`: `@name:<server>` before MSC4430, a member key derived from
    /// the name under MSC4430.
    fn user(&self, name: &str) -> String {
        if self.version.member_keys {
            let seed: [u8; 32] = Sha256::digest(name.as_bytes()).into();
            member_key_user_id(&member_signing_key(&seed).verifying_key())
        } else {
            format!("@{name}:{name}.example")
        }
    }

    fn room_id(&self) -> String {
        if self.version.room_id_from_create_event {
            format!("!{}", &self.create_id[1..])
        } else {
            "!room:alice.example".into()
        }
    }

    fn event_without_room_id(
        &mut self,
        event_type: &str,
        sender: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Pdu {
        let mut json = json!({
            "type": event_type, "sender": sender, "content": content,
            "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": 0,
        });
        if let Some(state_key) = state_key {
            json["state_key"] = json!(state_key);
        }
        if event_type != "m.room.create" || !self.version.room_id_from_create_event {
            json["room_id"] = json!(self.room_id());
        }
        if event_type != "m.room.create" {
            json["prev_events"] = json!(["$previous"]);
        }
        let event_id = if event_type == "m.room.create" {
            self.create_id.clone()
        } else {
            self.next_id += 1;
            format!("$event{}", self.next_id)
        };
        Pdu::from_json(json, event_id, &self.version).unwrap()
    }

    /// An event sent by the member called `sender`.
    fn event(
        &mut self,
        event_type: &str,
        sender: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Pdu {
        let sender = self.user(sender);
        self.event_without_room_id(event_type, &sender, state_key, content)
    }

    fn member_event(&mut self, sender: &str, target: &str, content: Value) -> Pdu {
        let target = self.user(target);
        self.event("m.room.member", sender, Some(&target), content)
    }

    fn set(&mut self, event: Pdu) {
        self.state.insert(event.state_key_pair().unwrap(), event);
    }

    fn set_state(&mut self, event_type: &str, sender: &str, state_key: &str, content: Value) {
        let event = self.event(event_type, sender, Some(state_key), content);
        self.set(event);
    }

    fn set_membership(&mut self, name: &str, membership: &str) {
        let event = self.member_event(name, name, json!({"membership": membership}));
        self.set(event);
    }

    fn join(&mut self, name: &str) {
        self.set_membership(name, "join");
    }

    fn set_join_rule(&mut self, join_rule: &str) {
        self.set_state(
            "m.room.join_rules",
            "alice",
            "",
            json!({"join_rule": join_rule}),
        );
    }

    fn power_levels(&self) -> Value {
        self.state[&("m.room.power_levels".to_owned(), String::new())]
            .content
            .clone()
    }

    fn set_power_levels(&mut self, content: Value) {
        self.set_state("m.room.power_levels", "alice", "", content);
    }

    /// The decision as the rule that made it, `Ok` for allowing rules.
    fn decide(&self, event: &Pdu) -> Result<Rule, Rule> {
        authorize(&self.version, event, &self.state).map_err(|rejection| rejection.rule)
    }
}

/// Runs `case` in every room version `applies` selects.
fn in_versions(applies: impl Fn(&RoomVersion) -> bool, case: impl Fn(RoomVersion)) {
    let mut ran = 0;
    for version in ALL.into_iter().filter(|version| applies(version)) {
        case(version);
        ran += 1;
    }
    assert!(ran > 0, "no room version selected");
}

fn every_version(case: impl Fn(RoomVersion)) {
    in_versions(|_| true, case);
}

// ---- 1. Create events -------------------------------------------------------------------------

#[test]
fn rule_1_create_event_is_allowed_and_needs_no_prev_events() {
    every_version(|version| {
        let mut room = Room::new(version);
        let create = room.state[&("m.room.create".to_owned(), String::new())].clone();
        assert_eq!(room.decide(&create), Ok(Rule::CreateAllowed));
        assert_eq!(create.event_type, "m.room.create");
        let mut json = serde_json::Value::clone(&create.json);
        json["prev_events"] = json!(["$other"]);
        let with_prev = Pdu::from_json(json, "$c2".into(), &version).unwrap();
        assert_eq!(room.decide(&with_prev), Err(Rule::CreateHasPrevEvents));
        let _ = room.event("m.room.topic", "alice", Some(""), json!({}));
    });
}

#[test]
fn rule_1_2_create_room_id() {
    // v12+: no room_id at all.
    in_versions(
        |version| version.room_id_from_create_event,
        |version| {
            let room = Room::new(version);
            let mut json = room.state[&("m.room.create".to_owned(), String::new())]
                .json
                .as_ref()
                .clone();
            json["room_id"] = json!("!whatever");
            let create = Pdu::from_json(json, "$c".into(), &version).unwrap();
            assert_eq!(room.decide(&create), Err(Rule::CreateHasRoomId));
        },
    );
    // v10, v11: the room_id's domain is the sender's.
    in_versions(
        |version| !version.room_id_from_create_event,
        |version| {
            let room = Room::new(version);
            let mut json = room.state[&("m.room.create".to_owned(), String::new())]
                .json
                .as_ref()
                .clone();
            json["room_id"] = json!("!room:elsewhere.example");
            let create = Pdu::from_json(json.clone(), "$c".into(), &version).unwrap();
            assert_eq!(room.decide(&create), Err(Rule::CreateRoomIdDomainMismatch));
            json.as_object_mut().unwrap().remove("room_id");
            let create = Pdu::from_json(json, "$c".into(), &version).unwrap();
            assert_eq!(room.decide(&create), Err(Rule::CreateRoomIdDomainMismatch));
        },
    );
}

#[test]
fn rule_1_3_create_room_version_must_be_recognised() {
    every_version(|version| {
        let room = Room::new(version);
        let mut json = room.state[&("m.room.create".to_owned(), String::new())]
            .json
            .as_ref()
            .clone();
        for (room_version, allowed) in [
            (json!("1"), true),
            (json!("12"), true),
            (json!("org.matrix.12.4430"), true),
            (json!("13"), false),
            (json!(12), false),
        ] {
            json["content"]["room_version"] = room_version.clone();
            let create = Pdu::from_json(json.clone(), "$c".into(), &version).unwrap();
            let expected = if allowed {
                Ok(Rule::CreateAllowed)
            } else {
                Err(Rule::CreateUnknownRoomVersion)
            };
            assert_eq!(room.decide(&create), expected, "{room_version}");
        }
        json["content"]
            .as_object_mut()
            .unwrap()
            .remove("room_version");
        let create = Pdu::from_json(json, "$c".into(), &version).unwrap();
        assert_eq!(room.decide(&create), Ok(Rule::CreateAllowed));
    });
}

#[test]
fn rule_1_4_v10_create_needs_creator() {
    in_versions(
        |version| version.create_has_creator_key,
        |version| {
            let room = Room::new(version);
            let mut json = room.state[&("m.room.create".to_owned(), String::new())]
                .json
                .as_ref()
                .clone();
            json["content"].as_object_mut().unwrap().remove("creator");
            let create = Pdu::from_json(json, "$c".into(), &version).unwrap();
            assert_eq!(room.decide(&create), Err(Rule::CreateMissingCreator));
        },
    );
    // v11 dropped the rule.
    let room = Room::new(RoomVersion::V11);
    let create = &room.state[&("m.room.create".to_owned(), String::new())];
    assert!(create.content.get("creator").is_none());
    assert_eq!(room.decide(create), Ok(Rule::CreateAllowed));
}

#[test]
fn rule_1_4_v12_additional_creators_are_valid_user_ids() {
    in_versions(
        |version| version.privileged_creators,
        |version| {
            let room = Room::new(version);
            let bob = room.user("bob");
            let mut json = room.state[&("m.room.create".to_owned(), String::new())]
                .json
                .as_ref()
                .clone();
            let invalid_for_version = if version.member_keys {
                "@bob:bob.example".to_owned()
            } else {
                "bob".to_owned()
            };
            for (additional, allowed) in [
                (json!([bob]), true),
                (json!([]), true),
                (json!(bob), false),
                (json!([1]), false),
                (json!([bob, invalid_for_version]), false),
            ] {
                json["content"]["additional_creators"] = additional.clone();
                let create = Pdu::from_json(json.clone(), "$c".into(), &version).unwrap();
                let expected = if allowed {
                    Ok(Rule::CreateAllowed)
                } else {
                    Err(Rule::CreateInvalidAdditionalCreators)
                };
                assert_eq!(room.decide(&create), expected, "{additional}");
            }
        },
    );
    // Before v12 the field means nothing to the rules.
    let room = Room::new(RoomVersion::V11);
    let mut json = room.state[&("m.room.create".to_owned(), String::new())]
        .json
        .as_ref()
        .clone();
    json["content"]["additional_creators"] = json!("nonsense");
    let create = Pdu::from_json(json, "$c".into(), &RoomVersion::V11).unwrap();
    assert_eq!(room.decide(&create), Ok(Rule::CreateAllowed));
}

// ---- 2. Room ID (v12+) and a create event in the state ----------------------------------------

#[test]
fn rule_2_room_id_is_the_create_event_id() {
    in_versions(
        |version| version.room_id_from_create_event,
        |version| {
            let mut room = Room::new(version);
            let topic = room.event("m.room.topic", "moderator", Some(""), json!({"topic": "t"}));
            assert_eq!(room.decide(&topic), Ok(Rule::Otherwise));
            let mut json = serde_json::Value::clone(&topic.json);
            json["room_id"] = json!("!someotherroom");
            let elsewhere = Pdu::from_json(json.clone(), "$x".into(), &version).unwrap();
            assert_eq!(room.decide(&elsewhere), Err(Rule::RoomIdNotCreateEvent));
            json.as_object_mut().unwrap().remove("room_id");
            let nowhere = Pdu::from_json(json, "$x".into(), &version).unwrap();
            assert_eq!(room.decide(&nowhere), Err(Rule::RoomIdNotCreateEvent));
        },
    );
}

#[test]
fn an_event_needs_a_create_event_in_its_state() {
    every_version(|version| {
        let mut room = Room::new(version);
        let topic = room.event("m.room.topic", "user", Some(""), json!({}));
        room.state
            .remove(&("m.room.create".to_owned(), String::new()));
        assert_eq!(room.decide(&topic), Err(Rule::MissingCreateEvent));
    });
}

// ---- 3. (v10/v11: 2.) The auth events themselves ----------------------------------------------

/// The auth events the selection picks for `event` from `room`'s state.
fn selected_auth_events<'a>(room: &'a Room, event: &Pdu) -> Vec<&'a Pdu> {
    select_auth_events(
        &room.version,
        &event.event_type,
        &event.sender,
        event.state_key.as_deref(),
        &event.content,
        &room.state,
    )
}

#[test]
fn rule_3_auth_events_shape() {
    every_version(|version| {
        let mut room = Room::new(version);
        let topic = room.event("m.room.topic", "moderator", Some(""), json!({}));
        let older_power_levels = room.event("m.room.power_levels", "alice", Some(""), json!({}));
        let create = room.state[&("m.room.create".to_owned(), String::new())].clone();
        let auth_events = selected_auth_events(&room, &topic);
        let selected_types: Vec<&str> = auth_events
            .iter()
            .map(|event| event.event_type.as_str())
            .collect();
        let mut expected_types = vec!["m.room.power_levels", "m.room.member"];
        if !version.room_id_from_create_event {
            expected_types.insert(0, "m.room.create");
        }
        assert_eq!(selected_types, expected_types);
        let never_rejected = |_: &EventId| false;
        assert_eq!(
            check_auth_events_shape(&version, &topic, &auth_events, never_rejected),
            Ok(())
        );
        assert_eq!(
            check_against_auth_events(
                &version,
                &topic,
                &auth_events,
                Some(&create),
                never_rejected
            ),
            Ok(Rule::Otherwise)
        );
        let shape = |auth_events: &[&Pdu], rejected: &dyn Fn(&EventId) -> bool| {
            check_auth_events_shape(&version, &topic, auth_events, rejected)
                .map_err(|rejection| rejection.rule)
        };

        // 3.1 duplicates.
        let mut duplicated = auth_events.clone();
        duplicated.push(&older_power_levels);
        assert_eq!(
            shape(&duplicated, &never_rejected),
            Err(Rule::AuthEventsDuplicate)
        );

        // 3.2 an event the selection does not pick: the join rules for a topic; v12: the create.
        let join_rules = &room.state[&("m.room.join_rules".to_owned(), String::new())];
        let mut unexpected = auth_events.clone();
        unexpected.push(join_rules);
        assert_eq!(
            shape(&unexpected, &never_rejected),
            Err(Rule::AuthEventsUnexpected)
        );
        if version.room_id_from_create_event {
            let mut with_create = auth_events.clone();
            with_create.push(&create);
            assert_eq!(
                shape(&with_create, &never_rejected),
                Err(Rule::AuthEventsUnexpected)
            );
        }

        // 3.3 a rejected auth event.
        let power_levels_id = room.state[&("m.room.power_levels".to_owned(), String::new())]
            .event_id
            .clone();
        let is_power_levels = move |id: &EventId| *id == power_levels_id;
        assert_eq!(
            shape(&auth_events, &is_power_levels),
            Err(Rule::AuthEventsRejected)
        );

        // 3.4 an auth event from another room.
        let mut json = room.state[&("m.room.member".to_owned(), room.user("moderator"))]
            .json
            .as_ref()
            .clone();
        json["room_id"] = json!("!other:alice.example");
        let foreign_member = Pdu::from_json(json, "$foreign".into(), &version).unwrap();
        let mut foreign: Vec<&Pdu> = auth_events
            .iter()
            .copied()
            .filter(|event| event.event_type != "m.room.member")
            .collect();
        foreign.push(&foreign_member);
        assert_eq!(
            shape(&foreign, &never_rejected),
            Err(Rule::AuthEventsWrongRoom)
        );

        // 2.4 (v10, v11) the create event must be among them.
        let without_create: Vec<&Pdu> = auth_events
            .iter()
            .copied()
            .filter(|event| event.event_type != "m.room.create")
            .collect();
        let expected = if version.room_id_from_create_event {
            Ok(())
        } else {
            Err(Rule::AuthEventsMissingCreate)
        };
        assert_eq!(shape(&without_create, &never_rejected), expected);

        // A create event has no auth events to check.
        assert_eq!(
            check_auth_events_shape(&version, &create, &[&older_power_levels], never_rejected),
            Ok(())
        );
    });
}

#[test]
fn auth_events_selection_per_version() {
    every_version(|version| {
        let room = Room::new(version);
        let (alice, bob, carol) = (room.user("alice"), room.user("bob"), room.user("carol"));
        let create_pair = ("m.room.create".to_owned(), String::new());
        let power_levels = ("m.room.power_levels".to_owned(), String::new());
        let join_rules = ("m.room.join_rules".to_owned(), String::new());
        let member = |user: &str| ("m.room.member".to_owned(), user.to_owned());
        let with_create = |mut pairs: Vec<StateKey>| {
            if !version.room_id_from_create_event {
                pairs.insert(0, create_pair.clone());
            }
            pairs
        };
        let select = |event_type: &str, state_key: Option<&str>, content: Value| {
            auth_types_for_event(&version, event_type, &alice, state_key, &content)
        };
        assert!(select("m.room.create", Some(""), json!({})).is_empty());
        assert_eq!(
            select("m.room.message", None, json!({})),
            with_create(vec![power_levels.clone(), member(&alice)])
        );
        assert_eq!(
            select("m.room.member", Some(&alice), json!({"membership": "join"})),
            with_create(vec![
                power_levels.clone(),
                member(&alice),
                join_rules.clone()
            ])
        );
        assert_eq!(
            select("m.room.member", Some(&bob), json!({"membership": "ban"})),
            with_create(vec![power_levels.clone(), member(&alice), member(&bob)])
        );
        assert_eq!(
            select("m.room.member", Some(&bob), json!({"membership": "knock"})),
            with_create(vec![
                power_levels.clone(),
                member(&alice),
                member(&bob),
                join_rules.clone()
            ])
        );
        assert_eq!(
            select(
                "m.room.member",
                Some(&bob),
                json!({"membership": "invite", "third_party_invite": {"signed": {"token": "tok"}}})
            ),
            with_create(vec![
                power_levels.clone(),
                member(&alice),
                member(&bob),
                join_rules.clone(),
                ("m.room.third_party_invite".to_owned(), "tok".to_owned()),
            ])
        );
        assert_eq!(
            select(
                "m.room.member",
                Some(&alice),
                json!({"membership": "join", "join_authorised_via_users_server": carol})
            ),
            with_create(vec![
                power_levels.clone(),
                member(&alice),
                join_rules.clone(),
                member(&carol),
            ])
        );
        // Only joins pick the authoriser.
        assert_eq!(
            select(
                "m.room.member",
                Some(&alice),
                json!({"membership": "leave", "join_authorised_via_users_server": carol})
            ),
            with_create(vec![power_levels.clone(), member(&alice)])
        );
    });
}

// ---- 4. m.federate ----------------------------------------------------------------------------

#[test]
fn rule_4_m_federate_false_keeps_other_servers_out() {
    every_version(|version| {
        let mut room = Room::new(version);
        let mut create = room.state[&("m.room.create".to_owned(), String::new())].clone();
        create.content["m.federate"] = json!(false);
        room.set(create);
        let alice_topic = room.event("m.room.topic", "alice", Some(""), json!({}));
        assert_eq!(room.decide(&alice_topic), Ok(Rule::Otherwise));
        let user_message = room.event("m.room.message", "user", None, json!({}));
        let expected = if version.federate_in_auth_rules {
            Err(Rule::NotFederated)
        } else {
            // MSC4430 moves m.federate to the network layer.
            Ok(Rule::Otherwise)
        };
        assert_eq!(room.decide(&user_message), expected);
    });
}

// ---- 5. Member events -------------------------------------------------------------------------

#[test]
fn rule_5_1_member_events_need_a_user_state_key_and_membership() {
    every_version(|version| {
        let mut room = Room::new(version);
        let no_state_key = room.event("m.room.member", "user", None, json!({"membership": "join"}));
        assert_eq!(room.decide(&no_state_key), Err(Rule::MemberInvalidStateKey));
        let bad_state_key = room.event(
            "m.room.member",
            "user",
            Some("not-a-user"),
            json!({"membership": "join"}),
        );
        assert_eq!(
            room.decide(&bad_state_key),
            Err(Rule::MemberInvalidStateKey)
        );
        let no_membership = room.member_event("user", "user", json!({}));
        assert_eq!(
            room.decide(&no_membership),
            Err(Rule::MemberMissingMembership)
        );
        let number_membership = room.member_event("user", "user", json!({"membership": 1}));
        assert_eq!(
            room.decide(&number_membership),
            Err(Rule::MemberMissingMembership)
        );
        let profile_change = room.member_event("user", "user", json!({"membership": "join"}));
        assert_eq!(room.decide(&profile_change), Ok(Rule::JoinInvited));
    });
}

#[test]
fn rule_5_2_join_authorised_via_users_server_must_name_a_user() {
    every_version(|version| {
        let mut room = Room::new(version);
        room.set_join_rule("restricted");
        let moderator = room.user("moderator");
        let vouched = room.member_event(
            "carol",
            "carol",
            json!({"membership": "join", "join_authorised_via_users_server": moderator}),
        );
        assert_eq!(room.decide(&vouched), Ok(Rule::JoinRestrictedAuthorised));
        for invalid in [json!("moderator"), json!(5), json!(null)] {
            let event = room.member_event(
                "carol",
                "carol",
                json!({"membership": "join", "join_authorised_via_users_server": invalid}),
            );
            assert_eq!(room.decide(&event), Err(Rule::JoinAuthoriserInvalid));
        }
    });
}

#[test]
fn rule_5_3_1_the_creator_joins_right_after_creating() {
    every_version(|version| {
        let mut room = Room::new(version);
        let create_id = room.create_id.clone();
        let mut first_join = room.member_event("alice", "alice", json!({"membership": "join"}));
        first_join.prev_events = vec![create_id.clone()];
        // The state after the create event holds only the create event.
        let create = room.state[&("m.room.create".to_owned(), String::new())].clone();
        let after_create: Vec<&Pdu> = vec![&create];
        assert_eq!(
            authorize(&version, &first_join, after_create.as_slice()).map_err(|r| r.rule),
            Ok(Rule::JoinCreator)
        );
        // Someone else after the create event: no join rules yet, so nothing lets them in.
        let mut other = room.member_event("user", "user", json!({"membership": "join"}));
        other.prev_events = vec![create_id];
        assert_eq!(
            authorize(&version, &other, after_create.as_slice()).map_err(|r| r.rule),
            Err(Rule::JoinNotAllowed)
        );
    });
}

#[test]
fn rule_5_3_2_and_3_joins_are_by_the_target_and_not_banned() {
    every_version(|version| {
        let mut room = Room::new(version);
        room.set_join_rule("public");
        let for_someone_else = room.member_event("user", "carol", json!({"membership": "join"}));
        assert_eq!(
            room.decide(&for_someone_else),
            Err(Rule::JoinSenderNotTarget)
        );
        let carol_joins = room.member_event("carol", "carol", json!({"membership": "join"}));
        assert_eq!(room.decide(&carol_joins), Ok(Rule::JoinPublic));
        room.set_membership("carol", "ban");
        assert_eq!(room.decide(&carol_joins), Err(Rule::SenderBanned));
    });
}

#[test]
fn rule_5_3_4_to_7_join_rules() {
    every_version(|version| {
        let mut room = Room::new(version);
        let carol_joins = room.member_event("carol", "carol", json!({"membership": "join"}));
        for join_rule in ["invite", "knock"] {
            room.set_join_rule(join_rule);
            room.set_membership("carol", "leave");
            assert_eq!(
                room.decide(&carol_joins),
                Err(Rule::JoinNotAllowed),
                "{join_rule}"
            );
            room.set_membership("carol", "invite");
            assert_eq!(
                room.decide(&carol_joins),
                Ok(Rule::JoinInvited),
                "{join_rule}"
            );
        }
        room.set_membership("carol", "leave");
        room.set_join_rule("public");
        assert_eq!(room.decide(&carol_joins), Ok(Rule::JoinPublic));
        for join_rule in ["private", "unknown"] {
            room.set_join_rule(join_rule);
            assert_eq!(room.decide(&carol_joins), Err(Rule::JoinNotAllowed));
        }
        room.state
            .remove(&("m.room.join_rules".to_owned(), String::new()));
        assert_eq!(room.decide(&carol_joins), Err(Rule::JoinNotAllowed));
    });
}

#[test]
fn rule_5_3_5_restricted_joins() {
    every_version(|version| {
        for join_rule in ["restricted", "knock_restricted"] {
            let mut room = Room::new(version);
            room.set_join_rule(join_rule);
            let (moderator, user, outsider) = (
                room.user("moderator"),
                room.user("user"),
                room.user("outsider"),
            );
            let join_via = |room: &mut Room, authoriser: Option<&str>| {
                let mut content = json!({"membership": "join"});
                if let Some(authoriser) = authoriser {
                    content["join_authorised_via_users_server"] = json!(authoriser);
                }
                let event = room.member_event("carol", "carol", content);
                room.decide(&event)
            };
            // 5.3.5.1 invited (or joined) members need no authoriser.
            room.set_membership("carol", "invite");
            assert_eq!(join_via(&mut room, None), Ok(Rule::JoinRestrictedMember));
            room.set_membership("carol", "leave");
            // 5.3.5.2 no authoriser, an authoriser who is not joined, or one who cannot invite.
            assert_eq!(
                join_via(&mut room, None),
                Err(Rule::JoinRestrictedUnauthorised)
            );
            assert_eq!(
                join_via(&mut room, Some(&outsider)),
                Err(Rule::JoinRestrictedUnauthorised)
            );
            let mut levels = room.power_levels();
            levels["invite"] = json!(10);
            room.set_power_levels(levels);
            assert_eq!(
                join_via(&mut room, Some(&user)),
                Err(Rule::JoinRestrictedUnauthorised)
            );
            // 5.3.5.3 a joined authoriser at the invite level.
            assert_eq!(
                join_via(&mut room, Some(&moderator)),
                Ok(Rule::JoinRestrictedAuthorised)
            );
            // The creator can always invite; from v12 on even though `users` omits them.
            let alice = room.user("alice");
            assert_eq!(
                join_via(&mut room, Some(&alice)),
                Ok(Rule::JoinRestrictedAuthorised)
            );
        }
    });
}

/// A third-party invite setup: the `m.room.third_party_invite` event by `moderator` with token
/// `tok` and the identity server key, and the signing key.
fn third_party_invite_room(version: RoomVersion) -> (Room, SigningKey) {
    let mut room = Room::new(version);
    let signing_key = SigningKey::from_bytes(&[42; 32]);
    let public_key = STANDARD_NO_PAD.encode(signing_key.verifying_key().as_bytes());
    room.set_state(
        "m.room.third_party_invite",
        "moderator",
        "tok",
        json!({"display_name": "c…", "key_validity_url": "https://is", "public_key": public_key}),
    );
    (room, signing_key)
}

/// `signed` for `mxid` and `token`, signed by `key` as identity server `is.example`.
fn signed_object(mxid: &str, token: &str, key: &SigningKey) -> Value {
    let mut signed = json!({"mxid": mxid, "token": token});
    let canonical = to_canonical_string(&signed).unwrap();
    let signature = STANDARD_NO_PAD.encode(key.sign(canonical.as_bytes()).to_bytes());
    signed["signatures"] = json!({"is.example": {"ed25519:0": signature}});
    signed
}

#[test]
fn rule_5_4_1_third_party_invites() {
    every_version(|version| {
        let (mut room, key) = third_party_invite_room(version);
        let carol = room.user("carol");
        let invite = |room: &mut Room, sender: &str, third_party_invite: Value| {
            let event = room.member_event(
                sender,
                "carol",
                json!({"membership": "invite", "third_party_invite": third_party_invite}),
            );
            room.decide(&event)
        };
        let good = json!({"display_name": "c", "signed": signed_object(&carol, "tok", &key)});
        // 5.4.1.7 allowed with a valid signature — even from a sender below the invite level,
        // since the sender already proved it by sending the m.room.third_party_invite.
        assert_eq!(
            invite(&mut room, "moderator", good.clone()),
            Ok(Rule::ThirdPartyInviteSigned)
        );
        // The key may also come from `public_keys`.
        let mut invite_event =
            room.state[&("m.room.third_party_invite".to_owned(), "tok".to_owned())].clone();
        let public_key = invite_event.content["public_key"].clone();
        invite_event.content["public_key"] = json!("AAAA");
        invite_event.content["public_keys"] = json!([{"public_key": public_key}]);
        room.set(invite_event);
        assert_eq!(
            invite(&mut room, "moderator", good.clone()),
            Ok(Rule::ThirdPartyInviteSigned)
        );
        // 5.4.1.6 the sender must be the one who sent the m.room.third_party_invite.
        assert_eq!(
            invite(&mut room, "user", good.clone()),
            Err(Rule::ThirdPartyInviteSenderMismatch)
        );
        // 5.4.1.8 a signature by another key, or over other content, does not verify.
        let other_key = SigningKey::from_bytes(&[7; 32]);
        let forged = json!({"signed": signed_object(&carol, "tok", &other_key)});
        assert_eq!(
            invite(&mut room, "moderator", forged),
            Err(Rule::ThirdPartyInviteBadSignature)
        );
        let mut tampered = signed_object(&carol, "tok", &key);
        tampered["extra"] = json!(1);
        assert_eq!(
            invite(&mut room, "moderator", json!({"signed": tampered})),
            Err(Rule::ThirdPartyInviteBadSignature)
        );
        // 5.4.1.5 no m.room.third_party_invite for the token.
        let other_token = json!({"signed": signed_object(&carol, "other", &key)});
        assert_eq!(
            invite(&mut room, "moderator", other_token),
            Err(Rule::ThirdPartyInviteNoMatchingEvent)
        );
        // 5.4.1.4 mxid must be the invitee.
        let wrong_mxid = json!({"signed": signed_object(&room.user("dave"), "tok", &key)});
        assert_eq!(
            invite(&mut room, "moderator", wrong_mxid),
            Err(Rule::ThirdPartyInviteMxidMismatch)
        );
        // 5.4.1.3 mxid and token must be there.
        assert_eq!(
            invite(&mut room, "moderator", json!({"signed": {"mxid": carol}})),
            Err(Rule::ThirdPartyInviteSignedIncomplete)
        );
        // 5.4.1.2 signed must be there. A `third_party_invite` of null is still a property the
        // content has (Synapse reads it so; ruma treats null as absent and would judge a plain
        // invite).
        assert_eq!(
            invite(&mut room, "moderator", json!({"display_name": "c"})),
            Err(Rule::ThirdPartyInviteMissingSigned)
        );
        assert_eq!(
            invite(&mut room, "moderator", Value::Null),
            Err(Rule::ThirdPartyInviteMissingSigned)
        );
        // 5.4.1.1 a banned target cannot be invited this way either.
        room.set_membership("carol", "ban");
        assert_eq!(
            invite(&mut room, "moderator", good),
            Err(Rule::ThirdPartyInviteTargetBanned)
        );
    });
}

#[test]
fn rule_5_4_2_to_5_invites() {
    every_version(|version| {
        let mut room = Room::new(version);
        let invite = |room: &mut Room, sender: &str, target: &str| {
            let event = room.member_event(sender, target, json!({"membership": "invite"}));
            room.decide(&event)
        };
        assert_eq!(invite(&mut room, "user", "carol"), Ok(Rule::InviteAllowed));
        assert_eq!(
            invite(&mut room, "outsider", "carol"),
            Err(Rule::InviteSenderNotJoined)
        );
        assert_eq!(
            invite(&mut room, "user", "moderator"),
            Err(Rule::InviteTargetJoinedOrBanned)
        );
        room.set_membership("carol", "ban");
        assert_eq!(
            invite(&mut room, "user", "carol"),
            Err(Rule::InviteTargetJoinedOrBanned)
        );
        let mut levels = room.power_levels();
        levels["invite"] = json!(50);
        room.set_power_levels(levels);
        assert_eq!(
            invite(&mut room, "user", "dave"),
            Err(Rule::InviteInsufficientPower)
        );
        assert_eq!(
            invite(&mut room, "moderator", "dave"),
            Ok(Rule::InviteAllowed)
        );
    });
}

#[test]
fn rule_5_5_leaves_kicks_and_unbans() {
    every_version(|version| {
        let mut room = Room::new(version);
        let leave = |room: &mut Room, sender: &str, target: &str| {
            let event = room.member_event(sender, target, json!({"membership": "leave"}));
            room.decide(&event)
        };
        // 5.5.1 leaving yourself.
        for membership in ["join", "invite", "knock"] {
            room.set_membership("carol", membership);
            assert_eq!(
                leave(&mut room, "carol", "carol"),
                Ok(Rule::LeaveSelf),
                "{membership}"
            );
        }
        for membership in ["leave", "ban"] {
            room.set_membership("carol", membership);
            assert_eq!(
                leave(&mut room, "carol", "carol"),
                Err(Rule::LeaveSelfNotMember),
                "{membership}"
            );
        }
        // 5.5.2 kicker must be joined.
        room.set_membership("carol", "join");
        assert_eq!(
            leave(&mut room, "outsider", "carol"),
            Err(Rule::KickSenderNotJoined)
        );
        // 5.5.4 / 5.5.5 kick level and a target below the kicker.
        assert_eq!(
            leave(&mut room, "moderator", "carol"),
            Ok(Rule::KickAllowed)
        );
        assert_eq!(
            leave(&mut room, "user", "carol"),
            Err(Rule::KickInsufficientPower)
        );
        assert_eq!(
            leave(&mut room, "moderator", "alice"),
            Err(Rule::KickInsufficientPower)
        );
        assert_eq!(
            leave(&mut room, "alice", "moderator"),
            Ok(Rule::KickAllowed)
        );
        let mut levels = room.power_levels();
        levels["users"][room.user("user")] = json!(50);
        room.set_power_levels(levels.clone());
        assert_eq!(
            leave(&mut room, "moderator", "user"),
            Err(Rule::KickInsufficientPower)
        );
        // 5.5.3 unbanning needs the ban level too.
        room.set_membership("carol", "ban");
        levels["ban"] = json!(60);
        room.set_power_levels(levels);
        assert_eq!(
            leave(&mut room, "moderator", "carol"),
            Err(Rule::UnbanInsufficientPower)
        );
        assert_eq!(leave(&mut room, "alice", "carol"), Ok(Rule::KickAllowed));
    });
}

#[test]
fn rule_5_6_bans() {
    every_version(|version| {
        let mut room = Room::new(version);
        let ban = |room: &mut Room, sender: &str, target: &str| {
            let event = room.member_event(sender, target, json!({"membership": "ban"}));
            room.decide(&event)
        };
        assert_eq!(
            ban(&mut room, "outsider", "carol"),
            Err(Rule::BanSenderNotJoined)
        );
        assert_eq!(ban(&mut room, "moderator", "carol"), Ok(Rule::BanAllowed));
        assert_eq!(ban(&mut room, "moderator", "user"), Ok(Rule::BanAllowed));
        assert_eq!(
            ban(&mut room, "user", "carol"),
            Err(Rule::BanInsufficientPower)
        );
        assert_eq!(
            ban(&mut room, "moderator", "alice"),
            Err(Rule::BanInsufficientPower)
        );
        assert_eq!(
            ban(&mut room, "moderator", "moderator"),
            Err(Rule::BanInsufficientPower)
        );
        assert_eq!(ban(&mut room, "alice", "moderator"), Ok(Rule::BanAllowed));
    });
}

#[test]
fn rule_5_7_knocks() {
    every_version(|version| {
        let mut room = Room::new(version);
        let knock = |room: &mut Room, sender: &str, target: &str| {
            let event = room.member_event(sender, target, json!({"membership": "knock"}));
            room.decide(&event)
        };
        assert_eq!(
            knock(&mut room, "carol", "carol"),
            Err(Rule::KnockJoinRuleForbids)
        );
        for join_rule in ["knock", "knock_restricted"] {
            room.set_join_rule(join_rule);
            room.set_membership("carol", "leave");
            assert_eq!(knock(&mut room, "carol", "carol"), Ok(Rule::KnockAllowed));
            assert_eq!(
                knock(&mut room, "user", "carol"),
                Err(Rule::KnockSenderNotTarget)
            );
            for membership in ["ban", "invite", "join"] {
                room.set_membership("carol", membership);
                assert_eq!(
                    knock(&mut room, "carol", "carol"),
                    Err(Rule::KnockAlreadyMember),
                    "{membership}"
                );
            }
            room.set_membership("carol", "knock");
            assert_eq!(knock(&mut room, "carol", "carol"), Ok(Rule::KnockAllowed));
        }
    });
}

#[test]
fn rule_5_8_unknown_membership() {
    every_version(|version| {
        let mut room = Room::new(version);
        let event = room.member_event("user", "user", json!({"membership": "sleep"}));
        assert_eq!(room.decide(&event), Err(Rule::UnknownMembership));
    });
}

// ---- 6.-9. Any event --------------------------------------------------------------------------

#[test]
fn rule_6_sender_must_be_joined() {
    every_version(|version| {
        let mut room = Room::new(version);
        let message = room.event("m.room.message", "user", None, json!({}));
        assert_eq!(room.decide(&message), Ok(Rule::Otherwise));
        for membership in ["leave", "invite", "ban", "knock"] {
            room.set_membership("user", membership);
            assert_eq!(
                room.decide(&message),
                Err(Rule::SenderNotJoined),
                "{membership}"
            );
        }
        let from_outsider = room.event("m.room.message", "outsider", None, json!({}));
        assert_eq!(room.decide(&from_outsider), Err(Rule::SenderNotJoined));
    });
}

#[test]
fn rule_7_third_party_invite_events_need_the_invite_level() {
    every_version(|version| {
        let mut room = Room::new(version);
        let event = room.event("m.room.third_party_invite", "user", Some("tok"), json!({}));
        // The invite level defaults to 0, below the state_default of 50 that rule 8 would apply.
        assert_eq!(room.decide(&event), Ok(Rule::ThirdPartyInviteEventAllowed));
        let mut levels = room.power_levels();
        levels["invite"] = json!(1);
        room.set_power_levels(levels);
        assert_eq!(
            room.decide(&event),
            Err(Rule::ThirdPartyInviteEventInsufficientPower)
        );
    });
}

#[test]
fn rule_8_required_power_level() {
    every_version(|version| {
        let mut room = Room::new(version);
        let topic_by_user = room.event("m.room.topic", "user", Some(""), json!({}));
        let topic_by_moderator = room.event("m.room.topic", "moderator", Some(""), json!({}));
        let message = room.event("m.room.message", "user", None, json!({}));
        assert_eq!(room.decide(&topic_by_user), Err(Rule::EventPowerTooLow));
        assert_eq!(room.decide(&topic_by_moderator), Ok(Rule::Otherwise));
        assert_eq!(room.decide(&message), Ok(Rule::Otherwise));
        let mut levels = room.power_levels();
        levels["events"] = json!({"m.room.topic": 0, "m.room.message": 10});
        room.set_power_levels(levels.clone());
        assert_eq!(room.decide(&topic_by_user), Ok(Rule::Otherwise));
        assert_eq!(room.decide(&message), Err(Rule::EventPowerTooLow));
        levels["events"] = json!({});
        levels["events_default"] = json!(1);
        levels["state_default"] = json!(0);
        room.set_power_levels(levels);
        assert_eq!(room.decide(&topic_by_user), Ok(Rule::Otherwise));
        assert_eq!(room.decide(&message), Err(Rule::EventPowerTooLow));
        // Redactions are authorised like any event: only events/events_default matter.
        let redaction = room.event(
            "m.room.redaction",
            "moderator",
            None,
            json!({"redacts": "$x"}),
        );
        assert_eq!(room.decide(&redaction), Ok(Rule::Otherwise));
        let by_user = room.event("m.room.redaction", "user", None, json!({"redacts": "$x"}));
        assert_eq!(room.decide(&by_user), Err(Rule::EventPowerTooLow));
    });
}

#[test]
fn rule_8_without_power_levels_the_creator_has_100_or_infinite() {
    every_version(|version| {
        let mut room = Room::new(version);
        room.state
            .remove(&("m.room.power_levels".to_owned(), String::new()));
        let by_alice = room.event("m.room.topic", "alice", Some(""), json!({}));
        let by_moderator = room.event("m.room.topic", "moderator", Some(""), json!({}));
        assert_eq!(room.decide(&by_alice), Ok(Rule::Otherwise));
        assert_eq!(room.decide(&by_moderator), Err(Rule::EventPowerTooLow));
        let expected = if version.privileged_creators {
            PowerLevel::Infinite
        } else {
            PowerLevel::Int(100)
        };
        assert_eq!(
            sender_power_level(&version, &room.user("alice"), &room.state),
            expected
        );
        assert_eq!(
            sender_power_level(&version, &room.user("moderator"), &room.state),
            PowerLevel::Int(0)
        );
    });
}

#[test]
fn rule_9_state_keys_naming_users_belong_to_them() {
    every_version(|version| {
        let mut room = Room::new(version);
        let moderator = room.user("moderator");
        let alice = room.user("alice");
        let own = room.event(
            "org.example.status",
            "moderator",
            Some(&moderator),
            json!({}),
        );
        let others = room.event("org.example.status", "moderator", Some(&alice), json!({}));
        let plain = room.event("org.example.status", "moderator", Some("@"), json!({}));
        assert_eq!(room.decide(&own), Ok(Rule::Otherwise));
        assert_eq!(room.decide(&others), Err(Rule::StateKeyIsOtherUser));
        assert_eq!(room.decide(&plain), Err(Rule::StateKeyIsOtherUser));
    });
}

// ---- 10. Power levels -------------------------------------------------------------------------

/// Decides a power-levels event with `content` sent by the member called `sender`.
fn decide_power_levels(room: &mut Room, sender: &str, content: Value) -> Result<Rule, Rule> {
    let event = room.event("m.room.power_levels", sender, Some(""), content);
    room.decide(&event)
}

#[test]
fn rule_10_1_to_3_power_level_values_are_integers_and_users_are_users() {
    every_version(|version| {
        let mut room = Room::new(version);
        let current = room.power_levels();
        assert_eq!(
            decide_power_levels(&mut room, "alice", current.clone()),
            Ok(Rule::PowerLevelsAllowed)
        );
        for (field, value) in [
            ("ban", json!("50")),
            ("kick", json!(50.5)),
            ("invite", json!(null)),
            ("users_default", json!(9_007_199_254_740_992_i64)),
        ] {
            let mut content = current.clone();
            content[field] = value;
            assert_eq!(
                decide_power_levels(&mut room, "alice", content),
                Err(Rule::PowerLevelsNonIntegerField),
                "{field}"
            );
        }
        for value in [json!([]), json!({"m.room.name": "50"}), json!({"x": 1.5})] {
            for field in ["events", "notifications"] {
                let mut content = current.clone();
                content[field] = value.clone();
                assert_eq!(
                    decide_power_levels(&mut room, "alice", content),
                    Err(Rule::PowerLevelsInvalidEventsOrNotifications)
                );
            }
        }
        let bad_user = if version.member_keys {
            "@bob:bob.example"
        } else {
            "bob"
        };
        for users in [
            json!([]),
            json!({ bad_user: 1 }),
            json!({ room.user("bob"): "1" }),
        ] {
            let mut content = current.clone();
            content["users"] = users.clone();
            assert_eq!(
                decide_power_levels(&mut room, "alice", content),
                Err(Rule::PowerLevelsInvalidUsers),
                "{users}"
            );
        }
        let mut valid = current.clone();
        valid["events"] = json!({"m.room.name": 50});
        valid["notifications"] = json!({"room": 20});
        valid["users"][room.user("bob")] = json!(-5);
        assert_eq!(
            decide_power_levels(&mut room, "alice", valid),
            Ok(Rule::PowerLevelsAllowed)
        );
    });
}

#[test]
fn rule_10_4_v12_creators_cannot_be_listed() {
    in_versions(
        |version| version.privileged_creators,
        |version| {
            let mut room = Room::new(version);
            let mut content = room.power_levels();
            content["users"][room.user("alice")] = json!(100);
            assert_eq!(
                decide_power_levels(&mut room, "alice", content),
                Err(Rule::PowerLevelsUsersContainCreator)
            );
            // additional_creators count too.
            let mut create = room.state[&("m.room.create".to_owned(), String::new())].clone();
            create.content["additional_creators"] = json!([room.user("moderator")]);
            room.set(create);
            let content = room.power_levels();
            assert_eq!(
                decide_power_levels(&mut room, "alice", content),
                Err(Rule::PowerLevelsUsersContainCreator)
            );
            assert_eq!(
                sender_power_level(&version, &room.user("moderator"), &room.state),
                PowerLevel::Infinite
            );
        },
    );
    // Before v12 the creator is listed like anyone.
    let mut room = Room::new(RoomVersion::V11);
    let content = room.power_levels();
    assert!(content["users"].get(room.user("alice")).is_some());
    assert_eq!(
        decide_power_levels(&mut room, "alice", content),
        Ok(Rule::PowerLevelsAllowed)
    );
}

#[test]
fn rule_10_5_the_first_power_levels_event_is_allowed() {
    every_version(|version| {
        let mut room = Room::new(version);
        room.state
            .remove(&("m.room.power_levels".to_owned(), String::new()));
        let lavish = json!({"users": {room.user("moderator"): 1000}, "ban": 1000});
        assert_eq!(
            decide_power_levels(&mut room, "alice", lavish),
            Ok(Rule::PowerLevelsInitial)
        );
    });
}

#[test]
fn rule_10_6_scalar_fields() {
    every_version(|version| {
        let mut room = Room::new(version);
        let current = room.power_levels();
        // The moderator (50) may lower `kick` from its default 50 ...
        let mut lower = current.clone();
        lower["kick"] = json!(10);
        assert_eq!(
            decide_power_levels(&mut room, "moderator", lower.clone()),
            Ok(Rule::PowerLevelsAllowed)
        );
        // ... but not raise anything above 50.
        let mut raise = current.clone();
        raise["kick"] = json!(51);
        assert_eq!(
            decide_power_levels(&mut room, "moderator", raise),
            Err(Rule::PowerLevelsFieldChangeTooHigh)
        );
        // Nor change a field that currently exceeds 50 — or is absent and defaults to it.
        let mut high = current.clone();
        high["ban"] = json!(60);
        room.set_power_levels(high.clone());
        let mut lower_ban = high.clone();
        lower_ban["ban"] = json!(10);
        assert_eq!(
            decide_power_levels(&mut room, "moderator", lower_ban),
            Err(Rule::PowerLevelsFieldChangeTooHigh)
        );
        let mut remove_ban = high.clone();
        remove_ban.as_object_mut().unwrap().remove("ban");
        assert_eq!(
            decide_power_levels(&mut room, "moderator", remove_ban),
            Err(Rule::PowerLevelsFieldChangeTooHigh)
        );
        let mut user = room.power_levels();
        user["users"][room.user("user")] = json!(20);
        user["events"] = json!({"m.room.power_levels": 20});
        room.set_power_levels(user.clone());
        let mut add_redact = user.clone();
        add_redact["redact"] = json!(10);
        // `redact` is absent: its default 50 is above the user's 20.
        assert_eq!(
            decide_power_levels(&mut room, "user", add_redact),
            Err(Rule::PowerLevelsFieldChangeTooHigh)
        );
        // An unchanged value is no alteration, whatever its level.
        assert_eq!(
            decide_power_levels(&mut room, "user", user),
            Ok(Rule::PowerLevelsAllowed)
        );
    });
}

#[test]
fn rule_10_7_and_8_events_and_notifications() {
    every_version(|version| {
        for field in ["events", "notifications"] {
            let mut room = Room::new(version);
            let mut current = room.power_levels();
            current[field] = json!({"high": 80, "low": 10});
            room.set_power_levels(current.clone());
            let with = |entries: Value| {
                let mut content = current.clone();
                content[field] = entries;
                content
            };
            assert_eq!(
                decide_power_levels(&mut room, "moderator", with(json!({"high": 80, "low": 40}))),
                Ok(Rule::PowerLevelsAllowed)
            );
            assert_eq!(
                decide_power_levels(
                    &mut room,
                    "moderator",
                    with(json!({"high": 80, "low": 10, "new": 50}))
                ),
                Ok(Rule::PowerLevelsAllowed)
            );
            // 10.7 changing or removing an entry above the sender.
            assert_eq!(
                decide_power_levels(&mut room, "moderator", with(json!({"high": 10, "low": 10}))),
                Err(Rule::PowerLevelsEventsRemovalTooHigh)
            );
            assert_eq!(
                decide_power_levels(&mut room, "moderator", with(json!({"low": 10}))),
                Err(Rule::PowerLevelsEventsRemovalTooHigh)
            );
            // 10.8 adding or raising an entry above the sender.
            assert_eq!(
                decide_power_levels(&mut room, "moderator", with(json!({"high": 80, "low": 51}))),
                Err(Rule::PowerLevelsEventsAdditionTooHigh)
            );
            assert_eq!(
                decide_power_levels(
                    &mut room,
                    "moderator",
                    with(json!({"high": 80, "low": 10, "new": 99}))
                ),
                Err(Rule::PowerLevelsEventsAdditionTooHigh)
            );
        }
    });
}

#[test]
fn rule_10_9_and_10_users() {
    every_version(|version| {
        let mut room = Room::new(version);
        let (moderator, user, carol) = (
            room.user("moderator"),
            room.user("user"),
            room.user("carol"),
        );
        let mut current = room.power_levels();
        current["users"][&user] = json!(20);
        room.set_power_levels(current.clone());
        let with = |changes: &[(&str, Option<i64>)]| {
            let mut content = current.clone();
            for (who, level) in changes {
                match level {
                    Some(level) => content["users"][*who] = json!(level),
                    None => {
                        content["users"].as_object_mut().unwrap().remove(*who);
                    }
                }
            }
            content
        };
        // Promote and demote users below you, up to your own level.
        assert_eq!(
            decide_power_levels(
                &mut room,
                "moderator",
                with(&[(&user, Some(50)), (&carol, Some(1))])
            ),
            Ok(Rule::PowerLevelsAllowed)
        );
        assert_eq!(
            decide_power_levels(&mut room, "moderator", with(&[(&user, None)])),
            Ok(Rule::PowerLevelsAllowed)
        );
        // Demote yourself.
        assert_eq!(
            decide_power_levels(&mut room, "moderator", with(&[(&moderator, Some(0))])),
            Ok(Rule::PowerLevelsAllowed)
        );
        // 10.10 not above yourself (not even yourself).
        assert_eq!(
            decide_power_levels(&mut room, "moderator", with(&[(&carol, Some(51))])),
            Err(Rule::PowerLevelsUsersAdditionTooHigh)
        );
        assert_eq!(
            decide_power_levels(&mut room, "moderator", with(&[(&moderator, Some(51))])),
            Err(Rule::PowerLevelsUsersAdditionTooHigh)
        );
        // 10.9 not a peer or superior.
        let mut peer = current.clone();
        peer["users"][&carol] = json!(50);
        room.set_power_levels(peer.clone());
        let mut demote_peer = peer.clone();
        demote_peer["users"][&carol] = json!(0);
        assert_eq!(
            decide_power_levels(&mut room, "moderator", demote_peer),
            Err(Rule::PowerLevelsUsersRemovalTooHigh)
        );
        let mut remove_peer = peer;
        remove_peer["users"].as_object_mut().unwrap().remove(&carol);
        assert_eq!(
            decide_power_levels(&mut room, "moderator", remove_peer),
            Err(Rule::PowerLevelsUsersRemovalTooHigh)
        );
    });
}

#[test]
fn v12_creators_outrank_everyone() {
    in_versions(
        |version| version.privileged_creators,
        |version| {
            let mut room = Room::new(version);
            let mut levels = room.power_levels();
            levels["users"][room.user("moderator")] = json!(9_007_199_254_740_991_i64);
            levels["ban"] = json!(9_007_199_254_740_991_i64);
            room.set_power_levels(levels.clone());
            let ban = room.member_event("alice", "moderator", json!({"membership": "ban"}));
            assert_eq!(room.decide(&ban), Ok(Rule::BanAllowed));
            let ban_creator = room.member_event("moderator", "alice", json!({"membership": "ban"}));
            assert_eq!(room.decide(&ban_creator), Err(Rule::BanInsufficientPower));
            levels["users"][room.user("moderator")] = json!(0);
            assert_eq!(
                decide_power_levels(&mut room, "alice", levels),
                Ok(Rule::PowerLevelsAllowed)
            );
        },
    );
}

// ---- helpers used by state resolution ---------------------------------------------------------

#[test]
fn power_events_are_those_that_can_take_power_away() {
    let mut room = Room::new(RoomVersion::V12);
    let kick = room.member_event("moderator", "user", json!({"membership": "leave"}));
    let leave = room.member_event("user", "user", json!({"membership": "leave"}));
    let ban = room.member_event("moderator", "user", json!({"membership": "ban"}));
    let join = room.member_event("user", "user", json!({"membership": "join"}));
    let levels = room.event("m.room.power_levels", "alice", Some(""), json!({}));
    let join_rules = room.event("m.room.join_rules", "alice", Some(""), json!({}));
    let topic = room.event("m.room.topic", "alice", Some(""), json!({}));
    let not_state = room.event("m.room.power_levels", "alice", None, json!({}));
    assert!(is_power_event(&kick) && is_power_event(&ban));
    assert!(is_power_event(&levels) && is_power_event(&join_rules));
    assert!(!is_power_event(&leave) && !is_power_event(&join));
    assert!(!is_power_event(&topic) && !is_power_event(&not_state));
}

#[test]
fn every_rule_has_a_unique_snake_case_name_and_a_number() {
    let names: std::collections::BTreeSet<&str> =
        Rule::ALL.iter().map(|rule| rule.name()).collect();
    assert_eq!(names.len(), Rule::ALL.len());
    for rule in Rule::ALL {
        assert!(
            rule.name()
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte == b'_'),
            "{rule}"
        );
        for version in ALL {
            let number = rule.spec_number(&version);
            assert!(
                number.split('.').all(|part| part.parse::<u32>().is_ok()),
                "{rule} {number}"
            );
        }
    }
    assert_eq!(Rule::ALL.iter().filter(|rule| rule.allows()).count(), 16);
    assert!(Rule::ALL.is_sorted(), "ALL follows the declaration order");
}

#[test]
fn rules_display_their_names_and_numbers() {
    let rejection = Rejection::new(Rule::SenderBanned, "@x:y is banned");
    assert_eq!(rejection.to_string(), "sender_banned: @x:y is banned");
    assert_eq!(Rule::SenderBanned.spec_number(&RoomVersion::V12), "5.3.3");
    assert_eq!(Rule::SenderBanned.spec_number(&RoomVersion::V11), "4.3.3");
    assert_eq!(
        Rule::PowerLevelsAllowed.spec_number(&RoomVersion::V10),
        "9.10"
    );
    assert!(Rule::Otherwise.allows() && !Rule::SenderBanned.allows());
}

#[test]
fn auth_state_works_over_maps_of_any_pdu_handle_and_lists() {
    let room = Room::new(RoomVersion::V11);
    let by_arc: BTreeMap<StateKey, std::sync::Arc<Pdu>> = room
        .state
        .iter()
        .map(|(key, event)| (key.clone(), std::sync::Arc::new(event.clone())))
        .collect();
    let by_ref: BTreeMap<StateKey, &Pdu> = room
        .state
        .iter()
        .map(|(key, event)| (key.clone(), event))
        .collect();
    let list: Vec<&Pdu> = room.state.values().collect();
    let alice = room.user("alice");
    for state in [
        AuthState::get(&by_arc, "m.room.member", &alice),
        AuthState::get(&by_ref, "m.room.member", &alice),
        AuthState::get(list.as_slice(), "m.room.member", &alice),
        AuthState::get(&room.state, "m.room.member", &alice),
    ] {
        assert_eq!(
            state.map(|event| event.sender.as_str()),
            Some(alice.as_str())
        );
    }
    assert!(AuthState::get(&room.state, "m.room.member", "@nobody:x").is_none());
}

proptest::proptest! {
    /// The allocation-free lookup through `dyn StateKeyView` must find exactly what an owned
    /// `(String, String)` key finds: `Borrow` requires the two orders to agree.
    #[test]
    fn borrowed_state_lookup_agrees_with_owned_keys(
        keys in proptest::collection::vec(("[a-c.]{0,3}", "[@a-c:]{0,3}"), 0..40),
        probes in proptest::collection::vec(("[a-c.]{0,3}", "[@a-c:]{0,3}"), 0..40),
    ) {
        let room = Room::new(RoomVersion::V11);
        let template = room.state[&("m.room.create".to_owned(), String::new())].clone();
        let state: BTreeMap<StateKey, Pdu> = keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let mut event = template.clone();
                event.event_id = format!("${index}");
                (key.clone(), event)
            })
            .collect();
        for (event_type, state_key) in probes.iter().chain(&keys) {
            let borrowed = AuthState::get(&state, event_type, state_key).map(|event| &event.event_id);
            let owned = state
                .get(&(event_type.clone(), state_key.clone()))
                .map(|event| &event.event_id);
            proptest::prop_assert_eq!(borrowed, owned);
        }
    }
}
