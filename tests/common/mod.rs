//! Shared proptest strategies: arbitrary canonical-JSON-compatible values and random events
//! whose types and keys hit every branch of the redaction rules.

#![allow(dead_code)]

use proptest::prelude::*;
use serde_json::{Map, Value};

pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Strings mixing ASCII, escapes that need care (quotes, backslashes, control characters,
/// DEL), and non-ASCII (two, three and four UTF-8 bytes).
pub fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z_.]{0,8}",
        2 => any::<String>(),
        1 => proptest::collection::vec(
            prop::sample::select(vec!['"', '\\', '\u{0}', '\u{8}', '\t', '\n', '\u{c}', '\r', '\u{1f}', '\u{7f}', 'é', '日', '😀', '/']),
            0..6
        ).prop_map(|chars| chars.into_iter().collect()),
    ]
}

pub fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        arb_string().prop_map(Value::String),
    ]
}

/// Any JSON value that is valid strict canonical JSON (no floats, integers in range).
pub fn arb_json() -> impl Strategy<Value = Value> {
    arb_leaf().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(arb_string(), inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

pub fn arb_object() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(arb_string(), arb_json(), 0..6)
        .prop_map(|map| map.into_iter().collect())
}

const EVENT_TYPES: [&str; 11] = [
    "m.room.member",
    "m.room.create",
    "m.room.join_rules",
    "m.room.power_levels",
    "m.room.history_visibility",
    "m.room.redaction",
    "m.room.message",
    "m.room.aliases",
    "m.room.server_acl",
    "m.room.name",
    "org.example.custom",
];

const CONTENT_KEYS: [&str; 28] = [
    "membership",
    "join_authorised_via_users_server",
    "third_party_invite",
    "displayname",
    "localpart",
    "domain",
    "creator",
    "room_version",
    "m.federate",
    "join_rule",
    "allow",
    "ban",
    "events",
    "events_default",
    "invite",
    "kick",
    "redact",
    "notifications",
    "users",
    "history_visibility",
    "redacts",
    "body",
    "state_default",
    "users_default",
    "aliases",
    "deny",
    "allow_ip_literals",
    "signed",
];

const TOP_LEVEL_EXTRAS: [&str; 7] = [
    "origin",
    "membership",
    "prev_state",
    "redacts",
    "unsigned",
    "event_id",
    "extra_key",
];

/// `third_party_invite` in every shape that matters: objects with and without `signed`, and
/// non-objects (null, string, array, number).
fn arb_third_party_invite() -> impl Strategy<Value = Value> {
    prop_oneof![
        (arb_json(), arb_object()).prop_map(|(signed, mut rest)| {
            rest.insert("signed".into(), signed);
            Value::Object(rest)
        }),
        arb_object().prop_map(Value::Object),
        arb_leaf(),
    ]
}

/// A random event: a PDU-shaped object with random content and extra top-level keys.
pub fn arb_event() -> impl Strategy<Value = Value> {
    let content = (
        proptest::collection::btree_map(
            prop::sample::select(CONTENT_KEYS.to_vec()),
            arb_json(),
            0..8,
        ),
        arb_object(),
        proptest::option::of(arb_third_party_invite()),
    )
        .prop_map(|(known, random, third_party_invite)| {
            let mut content: Map<String, Value> = random;
            for (key, value) in known {
                content.insert(key.to_owned(), value);
            }
            if let Some(invite) = third_party_invite {
                content.insert("third_party_invite".into(), invite);
            }
            content
        });
    (
        prop::sample::select(EVENT_TYPES.to_vec()),
        content,
        proptest::collection::btree_map(
            prop::sample::select(TOP_LEVEL_EXTRAS.to_vec()),
            arb_json(),
            0..4,
        ),
        proptest::option::of("[a-z@:]{0,6}"),
        0i64..1000,
        0i64..MAX_SAFE_INTEGER,
        proptest::collection::vec("\\$[A-Za-z0-9_-]{4}", 0..3),
    )
        .prop_map(
            |(event_type, content, extras, state_key, depth, ts, prev)| {
                let mut event = Map::new();
                for (key, value) in extras {
                    event.insert(key.to_owned(), value);
                }
                event.insert("type".into(), Value::from(event_type));
                event.insert("content".into(), Value::Object(content));
                event.insert("room_id".into(), Value::from("!room:example.org"));
                event.insert("sender".into(), Value::from("@alice:example.org"));
                if let Some(state_key) = state_key {
                    event.insert("state_key".into(), Value::from(state_key));
                }
                event.insert("depth".into(), Value::from(depth));
                event.insert("origin_server_ts".into(), Value::from(ts));
                event.insert("prev_events".into(), Value::from(prev.clone()));
                event.insert("auth_events".into(), Value::from(prev));
                event.insert("hashes".into(), serde_json::json!({"sha256": "abc"}));
                event.insert(
                    "signatures".into(),
                    serde_json::json!({"example.org": {"ed25519:1": "sig"}}),
                );
                Value::Object(event)
            },
        )
}
