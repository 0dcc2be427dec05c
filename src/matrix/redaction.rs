//! The redaction algorithm, driven by [`RedactionRules`] flags.
//!
//! Room versions 1-10 keep the top-level `origin`, `membership` and `prev_state` keys (the spec's
//! signing test vectors depend on this); room version 11 (`content/rooms/fragments/
//! v11-redactions.md`) dropped them and keeps more content; room version 12 redacts like 11; the
//! MSC4430 version also keeps `content.domain` of `m.room.member` (routing information) while
//! `content.localpart` is stripped like any other key.

use serde_json::{Map, Value};

use super::room_version::{RedactionRules, RoomVersion};

/// Top-level keys every supported room version keeps.
const KEPT_TOP_LEVEL: [&str; 12] = [
    "event_id",
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "signatures",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
];

/// Top-level keys room versions 1-10 keep in addition.
const KEPT_TOP_LEVEL_BEFORE_V11: [&str; 3] = ["origin", "membership", "prev_state"];

/// Returns the redacted copy of `event` under `version`'s rules. A non-object `event` yields an
/// empty object (nothing of it survives); a missing or non-object `content` becomes `{}`.
pub fn redact(version: &RoomVersion, event: &Value) -> Value {
    Value::Object(redact_object(&version.redaction, event, true))
}

/// Like [`redact`], but drops `signatures` and `unsigned` too (never copying them): the object
/// the reference hash and event signatures are computed over.
pub fn redact_for_hashing(version: &RoomVersion, event: &Value) -> Map<String, Value> {
    redact_object(&version.redaction, event, false)
}

fn redact_object(
    rules: &RedactionRules,
    event: &Value,
    keep_signatures: bool,
) -> Map<String, Value> {
    let mut redacted = Map::new();
    let Some(object) = event.as_object() else {
        return redacted;
    };
    // 1. Keep only the allowed top-level keys.
    for (key, value) in object {
        let kept = KEPT_TOP_LEVEL.contains(&key.as_str())
            || (rules.keep_origin_membership_prev_state
                && KEPT_TOP_LEVEL_BEFORE_V11.contains(&key.as_str()));
        if kept && key != "content" && (keep_signatures || key != "signatures") {
            redacted.insert(key.clone(), value.clone());
        }
    }
    // 2. Strip the content to the keys its event type keeps.
    let event_type = object.get("type").and_then(Value::as_str).unwrap_or("");
    let content = match object.get("content") {
        Some(Value::Object(content)) => redact_content(rules, event_type, content),
        _ => Map::new(),
    };
    redacted.insert("content".to_owned(), Value::Object(content));
    redacted
}

/// The content keys kept for `event_type`, before special cases.
fn kept_content_keys(rules: &RedactionRules, event_type: &str) -> &'static [&'static str] {
    match event_type {
        "m.room.member" => &["membership"],
        "m.room.create" => &["creator"],
        "m.room.join_rules" if rules.keep_join_rules_allow => &["join_rule", "allow"],
        "m.room.join_rules" => &["join_rule"],
        "m.room.power_levels" if rules.keep_power_levels_invite => &[
            "ban",
            "events",
            "events_default",
            "invite",
            "kick",
            "redact",
            "state_default",
            "users",
            "users_default",
        ],
        "m.room.power_levels" => &[
            "ban",
            "events",
            "events_default",
            "kick",
            "redact",
            "state_default",
            "users",
            "users_default",
        ],
        "m.room.history_visibility" => &["history_visibility"],
        "m.room.redaction" if rules.keep_redaction_redacts => &["redacts"],
        _ => &[],
    }
}

fn redact_content(
    rules: &RedactionRules,
    event_type: &str,
    content: &Map<String, Value>,
) -> Map<String, Value> {
    if event_type == "m.room.create" && rules.keep_all_create_content {
        return content.clone();
    }
    let mut kept = Map::new();
    let mut keep = |key: &str| {
        if let Some(value) = content.get(key) {
            kept.insert(key.to_owned(), value.clone());
        }
    };
    for key in kept_content_keys(rules, event_type) {
        keep(key);
    }
    if event_type == "m.room.member" {
        if rules.keep_member_join_authorised {
            keep("join_authorised_via_users_server");
        }
        if rules.keep_member_domain {
            keep("domain");
        }
        if rules.keep_member_third_party_invite_signed {
            // v11: "it allows the `signed` key of the `third_party_invite` key". Only an object
            // can have a `signed` key: an object keeps just that key (and stays, possibly empty,
            // as Synapse does); a null or any other non-object `third_party_invite` has nothing
            // allowed in it and is removed.
            if let Some(Value::Object(invite)) = content.get("third_party_invite") {
                let mut kept_invite = Map::new();
                if let Some(signed) = invite.get("signed") {
                    kept_invite.insert("signed".to_owned(), signed.clone());
                }
                kept.insert("third_party_invite".to_owned(), Value::Object(kept_invite));
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn member_event(content: Value) -> Value {
        json!({
            "type": "m.room.member", "state_key": "@a:x", "sender": "@a:x", "room_id": "!r",
            "content": content, "origin": "x", "membership": "join", "prev_state": [],
            "unsigned": {"age": 1}, "signatures": {"x": {"ed25519:1": "s"}}, "hashes": {"sha256": "h"},
            "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": 2, "extra": 3
        })
    }

    #[test]
    fn v10_keeps_origin_and_old_member_keys() {
        let event = member_event(json!({
            "membership": "join", "displayname": "A", "join_authorised_via_users_server": "@b:y",
            "third_party_invite": {"signed": {"token": "t"}, "display_name": "d"}
        }));
        let redacted = redact(&RoomVersion::V10, &event);
        assert_eq!(redacted["origin"], "x");
        assert_eq!(redacted["membership"], "join");
        assert_eq!(redacted["prev_state"], json!([]));
        assert!(redacted.get("unsigned").is_none());
        assert!(redacted.get("extra").is_none());
        assert_eq!(
            redacted["content"],
            json!({"membership": "join", "join_authorised_via_users_server": "@b:y"})
        );
    }

    #[test]
    fn v11_drops_origin_and_keeps_third_party_invite_signed_only() {
        let event = member_event(json!({
            "membership": "invite", "displayname": "A",
            "third_party_invite": {"signed": {"token": "t"}, "display_name": "d"}
        }));
        let redacted = redact(&RoomVersion::V11, &event);
        assert!(redacted.get("origin").is_none());
        assert!(redacted.get("membership").is_none());
        assert!(redacted.get("prev_state").is_none());
        assert_eq!(
            redacted["content"],
            json!({"membership": "invite", "third_party_invite": {"signed": {"token": "t"}}})
        );
    }

    #[test]
    fn v11_third_party_invite_without_signed_or_not_an_object() {
        let without_signed =
            member_event(json!({"membership": "invite", "third_party_invite": {"x": 1}}));
        assert_eq!(
            redact(&RoomVersion::V11, &without_signed)["content"],
            json!({"membership": "invite", "third_party_invite": {}})
        );
        for odd in [json!(null), json!("s"), json!([1]), json!(3)] {
            let event = member_event(json!({"membership": "invite", "third_party_invite": odd}));
            assert_eq!(
                redact(&RoomVersion::V11, &event)["content"],
                json!({"membership": "invite"})
            );
        }
    }

    #[test]
    fn msc4430_keeps_domain_and_strips_localpart() {
        let event = member_event(json!({
            "membership": "join", "localpart": "alice", "domain": "x",
            "join_authorised_via_users_server": "@b"
        }));
        assert_eq!(
            redact(&RoomVersion::MSC4430, &event)["content"],
            json!({"membership": "join", "domain": "x", "join_authorised_via_users_server": "@b"})
        );
        assert_eq!(
            redact(&RoomVersion::V12, &event)["content"],
            json!({"membership": "join", "join_authorised_via_users_server": "@b"})
        );
    }

    #[test]
    fn create_power_levels_redaction_and_others_per_version() {
        let create = json!({"type": "m.room.create", "content": {"creator": "@a:x", "room_version": "10", "m.federate": false}});
        assert_eq!(
            redact(&RoomVersion::V10, &create)["content"],
            json!({"creator": "@a:x"})
        );
        assert_eq!(
            redact(&RoomVersion::V11, &create)["content"],
            create["content"]
        );
        let power = json!({"type": "m.room.power_levels", "content": {"invite": 0, "ban": 50, "notifications": {"room": 50}}});
        assert_eq!(
            redact(&RoomVersion::V10, &power)["content"],
            json!({"ban": 50})
        );
        assert_eq!(
            redact(&RoomVersion::V12, &power)["content"],
            json!({"ban": 50, "invite": 0})
        );
        let redaction = json!({"type": "m.room.redaction", "redacts": "$a", "content": {"redacts": "$a", "reason": "r"}});
        let v10 = redact(&RoomVersion::V10, &redaction);
        assert_eq!(v10["content"], json!({}));
        assert!(v10.get("redacts").is_none());
        assert_eq!(
            redact(&RoomVersion::V11, &redaction)["content"],
            json!({"redacts": "$a"})
        );
        let rules = json!({"type": "m.room.join_rules", "content": {"join_rule": "restricted", "allow": [], "x": 1}});
        assert_eq!(
            redact(&RoomVersion::V10, &rules)["content"],
            json!({"join_rule": "restricted", "allow": []})
        );
        let history = json!({"type": "m.room.history_visibility", "content": {"history_visibility": "shared", "x": 1}});
        assert_eq!(
            redact(&RoomVersion::V12, &history)["content"],
            json!({"history_visibility": "shared"})
        );
        let message = json!({"type": "m.room.message", "content": {"body": "hi"}});
        assert_eq!(redact(&RoomVersion::V12, &message)["content"], json!({}));
    }

    #[test]
    fn odd_shapes_do_not_panic() {
        assert_eq!(redact(&RoomVersion::V12, &json!([1])), json!({}));
        assert_eq!(
            redact(&RoomVersion::V12, &json!({"type": 5, "content": "x"})),
            json!({"type": 5, "content": {}})
        );
        assert_eq!(
            redact(&RoomVersion::V12, &json!({})),
            json!({"content": {}})
        );
    }
}
