//! Regression tests for the findings of the adversarial spec review (NOTES-review.md). Each test
//! failed before its fix and names the finding it pins.

use std::sync::Arc;

use fedsim::matrix::auth::Rule;
use fedsim::matrix::dag::{Dag, RejectionCheck};
use fedsim::matrix::{Pdu, RoomVersion};
use serde_json::{Value, json};

fn pdu(version: &RoomVersion, event: Value) -> Arc<Pdu> {
    let event_id = event["event_id"].as_str().unwrap().to_owned();
    Arc::new(Pdu::from_json(event, event_id, version).unwrap())
}

fn event(
    event_id: &str,
    (event_type, state_key): (&str, &str),
    sender: &str,
    content: Value,
    prev_events: &[&str],
    auth_events: &[&str],
    origin_server_ts: i64,
) -> Value {
    json!({
        "event_id": event_id, "type": event_type, "sender": sender, "room_id": "!CREATE",
        "state_key": state_key, "content": content, "prev_events": prev_events,
        "auth_events": auth_events, "depth": origin_server_ts + 1,
        "origin_server_ts": origin_server_ts, "hashes": {"sha256": "unchecked"}, "signatures": {}
    })
}

/// Finding R1: v12 rule 2 — "If the event's `room_id` is not an event ID for an accepted (not
/// rejected) `m.room.create` event ... reject." A rejected create event must not authorise
/// anything in PDU check 4 (the event is rejected against its auth events, so it never enters
/// state resolution), not merely fail check 5 because the state before it is empty.
#[test]
fn r1_v12_rejected_create_event_authorises_nothing_in_check_4() {
    let version = RoomVersion::V12;
    let mut dag = Dag::new(version);
    // Rule 1.4: additional_creators must be an array of user IDs: the create event is rejected.
    let create = json!({
        "event_id": "$CREATE", "type": "m.room.create", "sender": "@alice:a.example",
        "state_key": "", "content": {"room_version": "12", "additional_creators": "@bob:b.example"},
        "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": 0,
        "hashes": {"sha256": "unchecked"}, "signatures": {}
    });
    let create = dag.insert(pdu(&version, create)).unwrap();
    let (check, rejection) = dag.evaluation(create).rejection.clone().unwrap();
    assert_eq!(check, RejectionCheck::AuthEvents);
    assert_eq!(rejection.rule, Rule::CreateInvalidAdditionalCreators);
    // The creator's join would pass rule 5.3.1 if the rejected create event were used.
    let join = event(
        "$JOIN",
        ("m.room.member", "@alice:a.example"),
        "@alice:a.example",
        json!({"membership": "join"}),
        &["$CREATE"],
        &[],
        1,
    );
    let join = dag.insert(pdu(&version, join)).unwrap();
    let (check, _) = dag
        .evaluation(join)
        .rejection
        .clone()
        .expect("no accepted create event: rejected");
    assert_eq!(
        check,
        RejectionCheck::AuthEvents,
        "rule 2 is a check-4 rule: a rejected create event is not an accepted one"
    );
}

/// Finding R2: rule 1.3 — "If `content.room_version` is present and is not a recognised
/// version, reject." `msc4430` is fedsim's command-line alias for `org.matrix.12.4430`, not a room
/// version identifier any server recognises, so a create event naming it must be rejected.
#[test]
fn r2_the_cli_alias_msc4430_is_not_a_recognised_room_version() {
    let version = RoomVersion::V12;
    let create = |room_version: &str| {
        pdu(
            &version,
            json!({
                "event_id": "$CREATE", "type": "m.room.create", "sender": "@alice:a.example",
                "state_key": "", "content": {"room_version": room_version},
                "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": 0,
                "hashes": {"sha256": "unchecked"}, "signatures": {}
            }),
        )
    };
    let no_state: Vec<&Pdu> = Vec::new();
    for recognised in ["1", "10", "12", "org.matrix.12.4430"] {
        assert_eq!(
            fedsim::matrix::auth::authorize(&version, &create(recognised), &no_state),
            Ok(Rule::CreateAllowed),
            "{recognised}"
        );
    }
    let rejection =
        fedsim::matrix::auth::authorize(&version, &create("msc4430"), &no_state).unwrap_err();
    assert_eq!(rejection.rule, Rule::CreateUnknownRoomVersion);
}
