//! The redaction algorithm, driven by [`RedactionRules`] flags.
//!
//! Room versions 1-10 keep the top-level `origin`, `membership` and `prev_state` keys (the spec's
//! signing test vectors depend on this); room version 11 (`content/rooms/fragments/
//! v11-redactions.md`) dropped them and keeps more content; room version 12 redacts like 11; the
//! MSC4430 version also keeps `content.domain` of `m.room.member` (routing information) while
//! `content.localpart` is stripped like any other key.

use serde_json::{Map, Value};

use super::canonical_json::{self, CanonicalJsonError};
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

/// Appends the canonical JSON of [`redact_for_hashing`]'s result to `out` without copying any
/// part of the event: the bytes the reference hash and event signatures cover.
pub fn write_redacted_canonical(
    version: &RoomVersion,
    event: &Value,
    out: &mut String,
) -> Result<(), CanonicalJsonError> {
    match event.as_object() {
        Some(object) => write_kept_object(kept_top_level(&version.redaction, object, false), out),
        None => {
            out.push_str("{}");
            Ok(())
        }
    }
}

fn redact_object(
    rules: &RedactionRules,
    event: &Value,
    keep_signatures: bool,
) -> Map<String, Value> {
    match event.as_object() {
        Some(object) => kept_to_map(kept_top_level(rules, object, keep_signatures)),
        None => Map::new(),
    }
}

/// What redaction keeps of a value, borrowed from the event: the whole value, or an object
/// with some of its keys.
enum Kept<'event> {
    Whole(&'event Value),
    Object(Vec<(&'event str, Kept<'event>)>),
}

fn kept_to_map(entries: Vec<(&str, Kept<'_>)>) -> Map<String, Value> {
    entries
        .into_iter()
        .map(|(key, kept)| {
            let value = match kept {
                Kept::Whole(value) => value.clone(),
                Kept::Object(entries) => Value::Object(kept_to_map(entries)),
            };
            (key.to_owned(), value)
        })
        .collect()
}

fn write_kept_object(
    mut entries: Vec<(&str, Kept<'_>)>,
    out: &mut String,
) -> Result<(), CanonicalJsonError> {
    // Sorted by code point (= UTF-8 byte order), whatever order the map iterated in.
    entries.sort_unstable_by(|left, right| left.0.cmp(right.0));
    out.push('{');
    for (index, (key, kept)) in entries.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        canonical_json::write_json_string(key, out);
        out.push(':');
        match kept {
            Kept::Whole(value) => canonical_json::write_canonical(value, out)?,
            Kept::Object(entries) => write_kept_object(entries, out)?,
        }
    }
    out.push('}');
    Ok(())
}

/// 1. Keep only the allowed top-level keys; 2. strip the content to what its type keeps.
fn kept_top_level<'event>(
    rules: &RedactionRules,
    object: &'event Map<String, Value>,
    keep_signatures: bool,
) -> Vec<(&'event str, Kept<'event>)> {
    let mut kept = Vec::with_capacity(KEPT_TOP_LEVEL.len());
    // 1.
    for (key, value) in object {
        let allowed = KEPT_TOP_LEVEL.contains(&key.as_str())
            || (rules.keep_origin_membership_prev_state
                && KEPT_TOP_LEVEL_BEFORE_V11.contains(&key.as_str()));
        if allowed && key != "content" && (keep_signatures || key != "signatures") {
            kept.push((key.as_str(), Kept::Whole(value)));
        }
    }
    // 2. A missing or non-object content becomes `{}`.
    let event_type = object.get("type").and_then(Value::as_str).unwrap_or("");
    let content = match object.get("content") {
        Some(Value::Object(content)) => redact_content(rules, event_type, content),
        _ => Vec::new(),
    };
    kept.push(("content", Kept::Object(content)));
    kept
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

fn redact_content<'event>(
    rules: &RedactionRules,
    event_type: &str,
    content: &'event Map<String, Value>,
) -> Vec<(&'event str, Kept<'event>)> {
    if event_type == "m.room.create" && rules.keep_all_create_content {
        return content
            .iter()
            .map(|(key, value)| (key.as_str(), Kept::Whole(value)))
            .collect();
    }
    let mut kept = Vec::new();
    let mut keep = |key: &str| {
        if let Some((key, value)) = content.get_key_value(key) {
            kept.push((key.as_str(), Kept::Whole(value)));
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
            // allowed in it and is removed. (ruma keeps a non-object as is; see
            // tests/differential_ruma.rs.)
            if let Some((key, Value::Object(invite))) = content.get_key_value("third_party_invite")
            {
                let signed = invite
                    .get_key_value("signed")
                    .map(|(key, value)| (key.as_str(), Kept::Whole(value)));
                kept.push((key.as_str(), Kept::Object(signed.into_iter().collect())));
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
