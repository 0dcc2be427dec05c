//! Content hashes, reference hashes, event IDs (room versions 4+) and room IDs (room version 12).
//!
//! - Content hash (s2s "Calculating the content hash for an event"): SHA-256 of the canonical JSON
//!   of the event without `unsigned`, `signatures` and `hashes`; stored as
//!   `hashes.sha256` in standard unpadded base64.
//! - Reference hash (s2s "Calculating the reference hash for an event"): SHA-256 of the canonical
//!   JSON of the *redacted* event without `signatures` and `unsigned`.
//! - Event ID (`content/rooms/fragments/v4-event-ids.md`): `$` + URL-safe unpadded base64 of the
//!   reference hash. Room ID (room version 12, MSC4291): `!` + the create event's ID body.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::canonical_json::{self, CanonicalJsonError};
use super::pdu::EventId;
use super::redaction;
use super::room_version::RoomVersion;
use super::signing::{decode_base64, unpadded_base64, url_safe_unpadded_base64};

/// Why a hash could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("the event is not a JSON object")]
    NotAnObject,
    #[error("the event is not canonical JSON: {0}")]
    Canonical(#[from] CanonicalJsonError),
}

/// Top-level keys the content hash leaves out.
const NOT_CONTENT_HASHED: [&str; 3] = ["unsigned", "signatures", "hashes"];

/// The SHA-256 content hash of `event`.
pub fn content_hash(event: &Value) -> Result<[u8; 32], HashError> {
    let object = event.as_object().ok_or(HashError::NotAnObject)?;
    let mut canonical = String::with_capacity(512);
    canonical_json::write_object_without(object, &NOT_CONTENT_HASHED, &mut canonical)?;
    Ok(Sha256::digest(canonical.as_bytes()).into())
}

/// Computes the content hash and stores it as `hashes.sha256` (other algorithms in `hashes`, if
/// any, are kept; a non-object `hashes` is replaced).
pub fn add_content_hash(event: &mut Value) -> Result<(), HashError> {
    let hash = unpadded_base64(&content_hash(event)?);
    let object = event.as_object_mut().ok_or(HashError::NotAnObject)?;
    let hashes = object
        .entry("hashes")
        .or_insert_with(|| Value::Object(Map::new()));
    if !hashes.is_object() {
        *hashes = Value::Object(Map::new());
    }
    if let Value::Object(hashes) = hashes {
        hashes.insert("sha256".to_owned(), Value::String(hash));
    }
    Ok(())
}

/// The outcome of checking `hashes.sha256` against the event (PDU receipt check 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentHashCheck {
    /// The stored hash matches.
    Valid,
    /// The stored hash differs: the event must be treated as its redacted form.
    Mismatch,
    /// There is no `hashes.sha256` string, or it is not base64 of 32 bytes.
    Missing,
}

/// Checks `hashes.sha256` (padded or unpadded base64) against the event's content hash.
pub fn check_content_hash(event: &Value) -> Result<ContentHashCheck, HashError> {
    let computed = content_hash(event)?;
    let stored = event
        .get("hashes")
        .and_then(|hashes| hashes.get("sha256"))
        .and_then(Value::as_str)
        .and_then(|text| decode_base64(text).ok());
    Ok(match stored {
        None => ContentHashCheck::Missing,
        Some(bytes) if bytes.len() != 32 => ContentHashCheck::Missing,
        Some(bytes) if bytes[..] == computed[..] => ContentHashCheck::Valid,
        Some(_) => ContentHashCheck::Mismatch,
    })
}

/// The canonical JSON of the redacted event without `signatures` and `unsigned`: what the
/// reference hash and event signatures cover.
pub fn redacted_canonical(version: &RoomVersion, event: &Value) -> Result<String, HashError> {
    if !event.is_object() {
        return Err(HashError::NotAnObject);
    }
    let mut canonical = String::with_capacity(512);
    redaction::write_redacted_canonical(version, event, &mut canonical)?;
    Ok(canonical)
}

/// The SHA-256 reference hash of `event` under `version`'s redaction rules.
pub fn reference_hash(version: &RoomVersion, event: &Value) -> Result<[u8; 32], HashError> {
    let canonical = redacted_canonical(version, event)?;
    Ok(Sha256::digest(canonical.as_bytes()).into())
}

/// The event ID of `event` in room versions 4+: `$` + URL-safe unpadded base64 of the reference
/// hash (43 characters after the sigil). Does not need `hashes` to be filled in first, but the ID
/// of a PDU covers them, so compute it after [`add_content_hash`].
pub fn event_id(version: &RoomVersion, event: &Value) -> Result<EventId, HashError> {
    Ok(event_id_from_reference_hash(&reference_hash(
        version, event,
    )?))
}

/// `$` + URL-safe unpadded base64 of a reference hash.
pub fn event_id_from_reference_hash(hash: &[u8; 32]) -> EventId {
    let mut id = String::with_capacity(44);
    id.push('$');
    id.push_str(&url_safe_unpadded_base64(hash));
    id
}

/// The room ID of a room version 12 room, from its create event's ID: `!` + the ID body.
pub fn room_id_from_create_event_id(create_event_id: &str) -> String {
    let body = create_event_id.strip_prefix('$').unwrap_or(create_event_id);
    format!("!{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal_event() -> Value {
        json!({
            "room_id": "!x:domain", "sender": "@a:domain", "origin": "domain",
            "origin_server_ts": 1000000, "signatures": {}, "hashes": {}, "type": "X",
            "content": {}, "prev_events": [], "auth_events": [], "depth": 3,
            "unsigned": {"age_ts": 1000000}
        })
    }

    #[test]
    fn content_hash_matches_the_spec_vector() {
        let mut event = minimal_event();
        add_content_hash(&mut event).unwrap();
        assert_eq!(
            event["hashes"]["sha256"],
            "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"
        );
        assert_eq!(check_content_hash(&event).unwrap(), ContentHashCheck::Valid);
        event["content"]["body"] = json!("changed");
        assert_eq!(
            check_content_hash(&event).unwrap(),
            ContentHashCheck::Mismatch
        );
        event.as_object_mut().unwrap().remove("hashes");
        assert_eq!(
            check_content_hash(&event).unwrap(),
            ContentHashCheck::Missing
        );
    }

    #[test]
    fn event_ids_match_the_derived_vectors_per_redaction_rules() {
        let mut event = minimal_event();
        add_content_hash(&mut event).unwrap();
        assert_eq!(
            event_id(&RoomVersion::V10, &event).unwrap(),
            "$8yif6p8EqgoSten2BLje9ntKm720NyFLWQv9tn8memc"
        );
        assert_eq!(
            event_id(&RoomVersion::V12, &event).unwrap(),
            "$70O_oKlXzFbkfu0KE88USi98DjSWrOELrPj-8tisl8I"
        );
    }

    #[test]
    fn event_id_ignores_signatures_and_unsigned_but_not_hashed_fields() {
        let mut event = minimal_event();
        add_content_hash(&mut event).unwrap();
        let original = event_id(&RoomVersion::V12, &event).unwrap();
        event["signatures"] = json!({"other": {"ed25519:2": "x"}});
        event["unsigned"] = json!({"age": 5});
        assert_eq!(event_id(&RoomVersion::V12, &event).unwrap(), original);
        event["depth"] = json!(4);
        assert_ne!(event_id(&RoomVersion::V12, &event).unwrap(), original);
    }

    #[test]
    fn room_id_uses_the_create_event_id_body() {
        assert_eq!(room_id_from_create_event_id("$abc_-"), "!abc_-");
    }

    #[test]
    fn errors_are_values() {
        assert_eq!(content_hash(&json!([1])), Err(HashError::NotAnObject));
        assert!(matches!(
            event_id(&RoomVersion::V12, &json!({"depth": 1.5})),
            Err(HashError::Canonical(_))
        ));
    }
}
