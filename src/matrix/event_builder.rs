//! Building signed PDUs for today's room versions (user-ID senders, server signatures) and for
//! MSC4430 (member-key senders, member events co-signed by the domain's server key), and the
//! signature part of the checks on receipt of a PDU (check 2).
//!
//! Building computes the canonical JSON of the redacted event once: with `hashes` filled in, the
//! bytes the signatures cover are exactly the bytes the reference hash (event ID) covers.

use ed25519_dalek::VerifyingKey;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::canonical_json::{self, CanonicalJsonError, MAX_SAFE_INTEGER};
use super::hashes;
use super::member_keys::{self, MEMBER_ENTITY, MEMBER_KEY_ID, MemberKeyError};
use super::pdu::{EventId, Pdu, PduFormatError};
use super::redaction;
use super::room_version::RoomVersion;
use super::signing::{self, ServerSigningKey, SignatureError, SigningError, unpadded_base64};

/// At most this many `prev_events` (s2s PDU schema).
pub const MAX_PREV_EVENTS: usize = 20;
/// At most this many `auth_events` (s2s PDU schema).
pub const MAX_AUTH_EVENTS: usize = 10;
/// A PDU in canonical JSON, signatures included, may not exceed this many bytes (s2s "Size
/// limits").
pub const MAX_PDU_BYTES: usize = 65_536;
/// `sender`, `room_id`, `type`, `state_key` and event IDs may not exceed this many bytes.
pub const MAX_ID_BYTES: usize = 255;

/// A per-field size limit of the PDU format (s2s PDU schema and "Size limits") that an event
/// breaks. Shared by [`build_pdu`] and receipt check 1, so building and checking cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitViolation {
    TooManyPrevEvents { count: usize },
    TooManyAuthEvents { count: usize },
    FieldTooLong { field: &'static str, bytes: usize },
}

/// Checks the per-field limits: at most [`MAX_PREV_EVENTS`] prev and [`MAX_AUTH_EVENTS`] auth
/// events, and `sender`, `type`, `room_id`, `state_key` and every referenced event ID at most
/// [`MAX_ID_BYTES`] bytes. The whole-PDU size limit needs the signed bytes and is checked apart.
pub fn check_field_limits(
    sender: &str,
    event_type: &str,
    room_id: Option<&str>,
    state_key: Option<&str>,
    prev_events: &[EventId],
    auth_events: &[EventId],
) -> Result<(), LimitViolation> {
    if prev_events.len() > MAX_PREV_EVENTS {
        return Err(LimitViolation::TooManyPrevEvents {
            count: prev_events.len(),
        });
    }
    if auth_events.len() > MAX_AUTH_EVENTS {
        return Err(LimitViolation::TooManyAuthEvents {
            count: auth_events.len(),
        });
    }
    let lengths = [
        ("sender", Some(sender.len())),
        ("type", Some(event_type.len())),
        ("room_id", room_id.map(str::len)),
        ("state_key", state_key.map(str::len)),
    ];
    for (field, bytes) in lengths {
        if let Some(bytes) = bytes.filter(|&bytes| bytes > MAX_ID_BYTES) {
            return Err(LimitViolation::FieldTooLong { field, bytes });
        }
    }
    if let Some(id) = prev_events
        .iter()
        .chain(auth_events)
        .find(|id| id.len() > MAX_ID_BYTES)
    {
        return Err(LimitViolation::FieldTooLong {
            field: "event_id",
            bytes: id.len(),
        });
    }
    Ok(())
}

impl From<LimitViolation> for BuildError {
    fn from(violation: LimitViolation) -> BuildError {
        match violation {
            LimitViolation::TooManyPrevEvents { count } => BuildError::TooManyPrevEvents { count },
            LimitViolation::TooManyAuthEvents { count } => BuildError::TooManyAuthEvents { count },
            LimitViolation::FieldTooLong { field, bytes } => {
                BuildError::FieldTooLong { field, bytes }
            }
        }
    }
}

/// The fields of an event before hashing and signing.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    /// `None` only for the create event of room versions whose room ID derives from it (v12+).
    pub room_id: Option<String>,
    pub sender: String,
    pub event_type: String,
    pub state_key: Option<String>,
    /// Must be a JSON object.
    pub content: Value,
    pub prev_events: Vec<EventId>,
    pub auth_events: Vec<EventId>,
    /// The largest depth of `prev_events` plus one (the caller knows them; checked for range).
    pub depth: i64,
    pub origin_server_ts_ms: i64,
}

/// Who signs an event.
#[derive(Debug, Clone, Copy)]
pub enum EventSigner<'keys> {
    /// Room versions 10-12: the sender's server signs under its name.
    Server {
        server_name: &'keys str,
        key: &'keys ServerSigningKey,
    },
    /// MSC4430: the member key signs under `"sender"`; an `m.room.member` event may also be
    /// co-signed by a server key of its `content.domain`, given as `(server_name, key)`.
    Member {
        member_key: &'keys ServerSigningKey,
        cosigner: Option<(&'keys str, &'keys ServerSigningKey)>,
    },
}

/// Why a PDU could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("{count} prev_events, at most {MAX_PREV_EVENTS} allowed")]
    TooManyPrevEvents { count: usize },
    #[error("{count} auth_events, at most {MAX_AUTH_EVENTS} allowed")]
    TooManyAuthEvents { count: usize },
    #[error("`{field}` is {bytes} bytes, at most {MAX_ID_BYTES} allowed")]
    FieldTooLong { field: &'static str, bytes: usize },
    #[error("the signed PDU is {bytes} bytes of canonical JSON, at most {MAX_PDU_BYTES} allowed")]
    TooLarge { bytes: usize },
    #[error(
        "depth {depth} is out of range (0..=2^53-1, and at least 1 when there are prev_events)"
    )]
    BadDepth { depth: i64 },
    #[error("origin_server_ts {0} is outside the canonical JSON integer range")]
    BadTimestamp(i64),
    #[error("content must be a JSON object")]
    ContentNotObject,
    #[error("room version {version} needs a room_id on every event except the create event")]
    RoomIdRequired { version: &'static str },
    #[error("in room version {version} the create event has no room_id")]
    CreateHasRoomId { version: &'static str },
    #[error("in room version {version} the create event has no prev_events or auth_events")]
    CreateHasParents { version: &'static str },
    #[error("room version {version} {problem}")]
    WrongSigner {
        version: &'static str,
        problem: &'static str,
    },
    #[error("sender {sender:?} does not belong to the signer {signer:?}")]
    SenderMismatch { sender: String, signer: String },
    #[error("the co-signer is {server_name:?} but content.domain is {domain:?}")]
    CosignerMismatch {
        server_name: String,
        domain: Option<String>,
    },
    #[error("not canonical JSON: {0}")]
    Canonical(#[from] CanonicalJsonError),
    #[error("{0}")]
    Format(#[from] PduFormatError),
    #[error("{0}")]
    Signing(#[from] SigningError),
}

/// The server name of a user ID `@localpart:server` (everything after the first `:`).
pub fn server_of_user_id(user_id: &str) -> Option<&str> {
    user_id
        .strip_prefix('@')?
        .split_once(':')
        .map(|(_, server)| server)
        .filter(|server| !server.is_empty())
}

/// Builds a signed PDU from `draft`: 1. check the limits and the signer against the room version;
/// 2. assemble the event JSON; 3. add the content hash; 4. redact and canonicalise once; 5. sign
/// those bytes (and co-sign); 6. derive the event ID from the same bytes; 7. check the size.
pub fn build_pdu(
    draft: EventDraft,
    version: &RoomVersion,
    signer: EventSigner<'_>,
) -> Result<Pdu, BuildError> {
    // 1.
    check_draft(&draft, version, &signer)?;
    // 2.
    let is_redaction = draft.event_type == "m.room.redaction";
    let mut object = Map::new();
    if let Some(room_id) = draft.room_id {
        object.insert("room_id".into(), Value::String(room_id));
    }
    object.insert("sender".into(), Value::String(draft.sender));
    object.insert("type".into(), Value::String(draft.event_type));
    if let Some(state_key) = draft.state_key {
        object.insert("state_key".into(), Value::String(state_key));
    }
    if is_redaction && !version.redacts_in_content {
        // Before v11 the redacted event ID lives at the top level.
        if let Some(redacts) = draft.content.get("redacts").cloned() {
            object.insert("redacts".into(), redacts);
        }
    }
    object.insert("content".into(), draft.content);
    object.insert("prev_events".into(), id_array(draft.prev_events));
    object.insert("auth_events".into(), id_array(draft.auth_events));
    object.insert("depth".into(), Value::from(draft.depth));
    object.insert(
        "origin_server_ts".into(),
        Value::from(draft.origin_server_ts_ms),
    );
    // 3.
    let mut hashed = String::with_capacity(512);
    canonical_json::write_object_without(&object, &[], &mut hashed)?;
    let content_hash = unpadded_base64(&Sha256::digest(hashed.as_bytes()));
    let hashes_value = serde_json::json!({ "sha256": content_hash });
    object.insert("hashes".into(), hashes_value);
    let mut json = Value::Object(object);
    // 4.
    let mut signed_bytes = String::with_capacity(hashed.len() + 64);
    redaction::write_redacted_canonical(version, &json, &mut signed_bytes)?;
    // 5.
    let mut signatures = Map::new();
    match signer {
        EventSigner::Server { server_name, key } => {
            let signature = key.sign_to_base64(signed_bytes.as_bytes());
            signatures.insert(
                server_name.to_owned(),
                single_signature(key.key_id.as_str(), signature),
            );
        }
        EventSigner::Member {
            member_key,
            cosigner,
        } => {
            let signature = member_key.sign_to_base64(signed_bytes.as_bytes());
            signatures.insert(
                MEMBER_ENTITY.to_owned(),
                single_signature(MEMBER_KEY_ID, signature),
            );
            if let Some((server_name, key)) = cosigner {
                let signature = key.sign_to_base64(signed_bytes.as_bytes());
                signatures.insert(
                    server_name.to_owned(),
                    single_signature(key.key_id.as_str(), signature),
                );
            }
        }
    }
    // 6.
    let event_id =
        hashes::event_id_from_reference_hash(&Sha256::digest(signed_bytes.as_bytes()).into());
    // 7. The full canonical size: the hashed text plus the `hashes` and `signatures` entries
    // (each `,"key":value`), computed without serialising the whole event again.
    let signatures = Value::Object(signatures);
    let bytes = hashed.len()
        + entry_len("hashes", &json["hashes"])?
        + entry_len("signatures", &signatures)?;
    if bytes > MAX_PDU_BYTES {
        return Err(BuildError::TooLarge { bytes });
    }
    if let Value::Object(object) = &mut json {
        object.insert("signatures".into(), signatures);
    }
    Ok(Pdu::from_json(json, event_id, version)?)
}

fn id_array(ids: Vec<EventId>) -> Value {
    Value::Array(ids.into_iter().map(Value::String).collect())
}

fn single_signature(key_id: &str, signature: String) -> Value {
    let mut by_key = Map::new();
    by_key.insert(key_id.to_owned(), Value::String(signature));
    Value::Object(by_key)
}

/// The length of `,"key":<canonical value>` for an ASCII key without escapes.
fn entry_len(key: &str, value: &Value) -> Result<usize, CanonicalJsonError> {
    Ok(1 + key.len() + 2 + 1 + canonical_json::to_canonical_string(value)?.len())
}

fn check_draft(
    draft: &EventDraft,
    version: &RoomVersion,
    signer: &EventSigner<'_>,
) -> Result<(), BuildError> {
    check_field_limits(
        &draft.sender,
        &draft.event_type,
        draft.room_id.as_deref(),
        draft.state_key.as_deref(),
        &draft.prev_events,
        &draft.auth_events,
    )?;
    let depth_ok = (0..=MAX_SAFE_INTEGER).contains(&draft.depth)
        && (draft.prev_events.is_empty() || draft.depth >= 1);
    if !depth_ok {
        return Err(BuildError::BadDepth { depth: draft.depth });
    }
    if !(0..=MAX_SAFE_INTEGER).contains(&draft.origin_server_ts_ms) {
        return Err(BuildError::BadTimestamp(draft.origin_server_ts_ms));
    }
    if !draft.content.is_object() {
        return Err(BuildError::ContentNotObject);
    }
    let is_create = draft.event_type == "m.room.create" && draft.state_key.as_deref() == Some("");
    if version.room_id_from_create_event && is_create {
        if draft.room_id.is_some() {
            return Err(BuildError::CreateHasRoomId {
                version: version.id,
            });
        }
        if !draft.prev_events.is_empty() || !draft.auth_events.is_empty() {
            return Err(BuildError::CreateHasParents {
                version: version.id,
            });
        }
    } else if draft.room_id.is_none() {
        return Err(BuildError::RoomIdRequired {
            version: version.id,
        });
    }
    match (signer, version.member_keys) {
        (EventSigner::Server { server_name, .. }, false) => {
            if server_of_user_id(&draft.sender) != Some(server_name) {
                return Err(BuildError::SenderMismatch {
                    sender: draft.sender.clone(),
                    signer: (*server_name).to_owned(),
                });
            }
        }
        (
            EventSigner::Member {
                member_key,
                cosigner,
            },
            true,
        ) => {
            let expected = member_keys::member_key_user_id(&member_key.verifying_key());
            if draft.sender != expected {
                return Err(BuildError::SenderMismatch {
                    sender: draft.sender.clone(),
                    signer: expected,
                });
            }
            if let Some((server_name, _)) = cosigner {
                let domain = (draft.event_type == "m.room.member")
                    .then(|| draft.content.get("domain").and_then(Value::as_str))
                    .flatten();
                if domain != Some(server_name) {
                    return Err(BuildError::CosignerMismatch {
                        server_name: (*server_name).to_owned(),
                        domain: domain.map(str::to_owned),
                    });
                }
            }
        }
        (EventSigner::Server { .. }, true) => {
            return Err(BuildError::WrongSigner {
                version: version.id,
                problem: "uses member keys: sign with EventSigner::Member",
            });
        }
        (EventSigner::Member { .. }, false) => {
            return Err(BuildError::WrongSigner {
                version: version.id,
                problem: "has no member keys: sign with EventSigner::Server",
            });
        }
    }
    Ok(())
}

/// Adds another signature to a built PDU without changing its event ID: a resident server
/// signing a restricted join (v8+), the authorising member key of an MSC4430 restricted join
/// (entity = that member key), or an MSC4430 server re-signing a member event after rotating its
/// key (entity = the domain).
pub fn countersign_pdu(
    version: &RoomVersion,
    pdu: &Pdu,
    entity: &str,
    key: &ServerSigningKey,
) -> Result<Pdu, BuildError> {
    let signature = signing::event_signature(version, &pdu.json, key)?;
    let mut json = Value::clone(&pdu.json);
    signing::insert_signature(&mut json, entity, key.key_id.as_str(), signature)?;
    let mut signed = pdu.clone();
    signed.json = std::sync::Arc::new(json);
    Ok(signed)
}

/// Why a PDU failed check 2 (signatures).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduSignatureError {
    #[error("event {event_id}: sender {sender:?} has no server name")]
    NoServerName { event_id: EventId, sender: String },
    #[error("event {event_id}: no known, unexpired key of {server} signed it")]
    NoUsableKey { event_id: EventId, server: String },
    #[error("event {event_id}: {error}")]
    Signature {
        event_id: EventId,
        error: SignatureError,
    },
    #[error("event {event_id}: {error}")]
    MemberKey {
        event_id: EventId,
        error: MemberKeyError,
    },
}

/// PDU receipt check 2: the event carries valid signatures from the entities that must sign it.
///
/// - Room versions 10-12: the sender's server, and for an `m.room.member` event with
///   `join_authorised_via_users_server` (a restricted join) also the authorising user's server. For each, every
///   signature whose key `lookup(server, key_id)` supplies must verify and at least one must
///   exist; key IDs `lookup` does not know (or knows to be expired for this event's
///   `origin_server_ts`, see `server_keys::key_valid_for_event`) are ignored, as the spec says.
/// - MSC4430: the member-key signature under `"sender"` with the key decoded from `sender` (no
///   lookup), and for a restricted join the signature of the authorising member key under its own
///   ID. The server co-signature of member events is link verification, not check 2.
pub fn verify_pdu_signatures<F>(
    version: &RoomVersion,
    pdu: &Pdu,
    mut lookup: F,
) -> Result<(), PduSignatureError>
where
    F: FnMut(&str, &str) -> Option<VerifyingKey>,
{
    let authorised_via = authorising_user(version, pdu);
    if version.member_keys {
        verify_member_entity(version, pdu, MEMBER_ENTITY, &pdu.sender)?;
        if let Some(authoriser) = authorised_via {
            verify_member_entity(version, pdu, authoriser, authoriser)?;
        }
        return Ok(());
    }
    let sender_server = server_of(pdu, &pdu.sender)?;
    verify_server_entity(version, pdu, sender_server, &mut lookup)?;
    if let Some(authoriser) = authorised_via {
        let server = server_of(pdu, authoriser)?;
        if server != sender_server {
            verify_server_entity(version, pdu, server, &mut lookup)?;
        }
    }
    Ok(())
}

fn server_of<'id>(pdu: &Pdu, user_id: &'id str) -> Result<&'id str, PduSignatureError> {
    server_of_user_id(user_id).ok_or_else(|| PduSignatureError::NoServerName {
        event_id: pdu.event_id.clone(),
        sender: user_id.to_owned(),
    })
}

/// `content.join_authorised_via_users_server` of an `m.room.member` event in a version with
/// restricted joins. Auth rule 4.2 (v8+) applies it whatever the membership: "If `content` has a
/// `join_authorised_via_users_server` key: if the event is not validly signed by the homeserver of
/// the user ID denoted by the key, reject", so check 2 asks for that signature on any membership.
/// (ruma asks for it on every event type; the spec's rule is under `m.room.member`.)
fn authorising_user<'pdu>(version: &RoomVersion, pdu: &'pdu Pdu) -> Option<&'pdu str> {
    if !version.restricted_joins || pdu.event_type != "m.room.member" {
        return None;
    }
    pdu.content
        .get("join_authorised_via_users_server")
        .and_then(Value::as_str)
}

fn verify_member_entity(
    version: &RoomVersion,
    pdu: &Pdu,
    entity: &str,
    member_key: &str,
) -> Result<(), PduSignatureError> {
    let key = member_keys::decode_member_key(member_key).map_err(|error| {
        PduSignatureError::MemberKey {
            event_id: pdu.event_id.clone(),
            error,
        }
    })?;
    signing::verify_event_signature(version, &pdu.json, entity, MEMBER_KEY_ID, &key).map_err(
        |error| PduSignatureError::Signature {
            event_id: pdu.event_id.clone(),
            error,
        },
    )
}

fn verify_server_entity<F>(
    version: &RoomVersion,
    pdu: &Pdu,
    server: &str,
    lookup: &mut F,
) -> Result<(), PduSignatureError>
where
    F: FnMut(&str, &str) -> Option<VerifyingKey>,
{
    signing::verify_event_entity(version, &pdu.json, server, |key_id| lookup(server, key_id))
        .map(|_| ())
        .map_err(|error| match error {
            SignatureError::NoKnownKey { .. } => PduSignatureError::NoUsableKey {
                event_id: pdu.event_id.clone(),
                server: server.to_owned(),
            },
            error => PduSignatureError::Signature {
                event_id: pdu.event_id.clone(),
                error,
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::hashes::ContentHashCheck;
    use crate::matrix::member_keys::{LinkOutcome, member_key_user_id, member_signing_key};
    use crate::matrix::server_keys::{ServerKeys, ValidityClamp};
    use crate::matrix::signing::KeyId;
    use serde_json::json;

    fn server_key(seed: u8) -> ServerSigningKey {
        ServerSigningKey::from_seed(KeyId::ed25519("1").unwrap(), &[seed; 32])
    }

    fn draft(sender: &str) -> EventDraft {
        EventDraft {
            room_id: Some("!room".into()),
            sender: sender.into(),
            event_type: "m.room.message".into(),
            state_key: None,
            content: json!({"body": "hello"}),
            prev_events: vec!["$prev".into()],
            auth_events: vec!["$auth".into()],
            depth: 5,
            origin_server_ts_ms: 1234,
        }
    }

    #[test]
    fn server_signed_pdu_verifies_and_matches_the_library_functions() {
        let key = server_key(1);
        let version = RoomVersion::V12;
        let signer = EventSigner::Server {
            server_name: "a.example",
            key: &key,
        };
        let pdu = build_pdu(draft("@alice:a.example"), &version, signer).unwrap();
        assert_eq!(pdu.event_id, hashes::event_id(&version, &pdu.json).unwrap());
        assert_eq!(
            hashes::check_content_hash(&pdu.json).unwrap(),
            ContentHashCheck::Valid
        );
        // The same signature as sign_event produces.
        let mut resigned = serde_json::Value::clone(&pdu.json);
        resigned.as_object_mut().unwrap().remove("signatures");
        signing::sign_event(&version, &mut resigned, "a.example", &key).unwrap();
        assert_eq!(resigned, *pdu.json);
        // The size computed without reserialising is exact.
        let size = canonical_json::to_canonical_string(&pdu.json)
            .unwrap()
            .len();
        let big = "x".repeat(MAX_PDU_BYTES - size + "hello".len());
        let mut too_big = draft("@alice:a.example");
        too_big.content = json!({"body": big});
        assert_eq!(
            build_pdu(too_big.clone(), &version, signer).map(|_| ()),
            Ok(())
        );
        too_big.content = json!({"body": format!("{big}x")});
        assert_eq!(
            build_pdu(too_big, &version, signer).unwrap_err(),
            BuildError::TooLarge {
                bytes: MAX_PDU_BYTES + 1
            }
        );

        let lookup = |server: &str, key_id: &str| {
            (server == "a.example" && key_id == "ed25519:1").then(|| key.verifying_key())
        };
        verify_pdu_signatures(&version, &pdu, lookup).unwrap();
        assert!(matches!(
            verify_pdu_signatures(&version, &pdu, |_, _| None),
            Err(PduSignatureError::NoUsableKey { .. })
        ));
        let other = server_key(2).verifying_key();
        assert!(matches!(
            verify_pdu_signatures(&version, &pdu, |_, _| Some(other)),
            Err(PduSignatureError::Signature { .. })
        ));
    }

    #[test]
    fn restricted_joins_need_the_authorising_server_too() {
        let joiner_key = server_key(1);
        let resident_key = server_key(2);
        let version = RoomVersion::V12;
        let mut join = draft("@bob:b.example");
        join.event_type = "m.room.member".into();
        join.state_key = Some("@bob:b.example".into());
        join.content =
            json!({"membership": "join", "join_authorised_via_users_server": "@carol:c.example"});
        let pdu = build_pdu(
            join,
            &version,
            EventSigner::Server {
                server_name: "b.example",
                key: &joiner_key,
            },
        )
        .unwrap();
        let lookup = |server: &str, _: &str| match server {
            "b.example" => Some(joiner_key.verifying_key()),
            "c.example" => Some(resident_key.verifying_key()),
            _ => None,
        };
        assert!(matches!(
            verify_pdu_signatures(&version, &pdu, lookup),
            Err(PduSignatureError::Signature {
                error: SignatureError::MissingEntity { .. },
                ..
            })
        ));
        let countersigned = countersign_pdu(&version, &pdu, "c.example", &resident_key).unwrap();
        assert_eq!(countersigned.event_id, pdu.event_id);
        verify_pdu_signatures(&version, &countersigned, lookup).unwrap();
        // Auth rule 4.2 applies to any membership carrying the key, so check 2 does too.
        let mut leave = draft("@bob:b.example");
        leave.event_type = "m.room.member".into();
        leave.state_key = Some("@bob:b.example".into());
        leave.content =
            json!({"membership": "leave", "join_authorised_via_users_server": "@carol:c.example"});
        let signer = EventSigner::Server {
            server_name: "b.example",
            key: &joiner_key,
        };
        let leave = build_pdu(leave, &version, signer).unwrap();
        assert!(verify_pdu_signatures(&version, &leave, lookup).is_err());
        // Other event types never need it.
        let mut message = draft("@bob:b.example");
        message.content = json!({"join_authorised_via_users_server": "@carol:c.example"});
        let message = build_pdu(message, &version, signer).unwrap();
        verify_pdu_signatures(&version, &message, lookup).unwrap();
    }

    #[test]
    fn msc4430_member_events_verify_without_lookup_and_link_with_the_cosigner() {
        let version = RoomVersion::MSC4430;
        let member = member_signing_key(&[5; 32]);
        let server = server_key(6);
        let sender = member_key_user_id(&member.verifying_key());
        let mut join = draft(&sender);
        join.event_type = "m.room.member".into();
        join.state_key = Some(sender.clone());
        join.content = json!({"membership": "join", "localpart": "alice", "domain": "a.example"});
        let pdu = build_pdu(
            join.clone(),
            &version,
            EventSigner::Member {
                member_key: &member,
                cosigner: Some(("a.example", &server)),
            },
        )
        .unwrap();
        verify_pdu_signatures(&version, &pdu, |_, _| -> Option<VerifyingKey> {
            panic!("MSC4430 check 2 needs no key lookup")
        })
        .unwrap();
        let keys = ServerKeys::with_current_key("a.example", &server, 1_000_000);
        assert!(
            member_keys::verify_member_link(&version, &pdu.json, &keys, 10, ValidityClamp::spec(0))
                .is_verified()
        );
        assert!(matches!(
            member_keys::verify_member_link(
                &version,
                &pdu.json,
                &keys,
                1_000_000,
                ValidityClamp::spec(0)
            ),
            LinkOutcome::NoCurrentKey { .. }
        ));
        // Wrong co-signer, wrong signer kind, wrong sender.
        assert!(matches!(
            build_pdu(
                join.clone(),
                &version,
                EventSigner::Member {
                    member_key: &member,
                    cosigner: Some(("b.example", &server))
                }
            ),
            Err(BuildError::CosignerMismatch { .. })
        ));
        assert!(matches!(
            build_pdu(
                join.clone(),
                &version,
                EventSigner::Server {
                    server_name: "a.example",
                    key: &server
                }
            ),
            Err(BuildError::WrongSigner { .. })
        ));
        let other = member_signing_key(&[8; 32]);
        assert!(matches!(
            build_pdu(
                join,
                &version,
                EventSigner::Member {
                    member_key: &other,
                    cosigner: None
                }
            ),
            Err(BuildError::SenderMismatch { .. })
        ));
    }

    #[test]
    fn msc4430_restricted_join_needs_the_authorising_member_key() {
        let version = RoomVersion::MSC4430;
        let member = member_signing_key(&[5; 32]);
        let authoriser = member_signing_key(&[7; 32]);
        let authoriser_id = member_key_user_id(&authoriser.verifying_key());
        let sender = member_key_user_id(&member.verifying_key());
        let mut join = draft(&sender);
        join.event_type = "m.room.member".into();
        join.state_key = Some(sender.clone());
        join.content = json!({"membership": "join", "domain": "a.example", "join_authorised_via_users_server": authoriser_id});
        let signer = EventSigner::Member {
            member_key: &member,
            cosigner: None,
        };
        let pdu = build_pdu(join, &version, signer).unwrap();
        assert!(verify_pdu_signatures(&version, &pdu, |_, _| None).is_err());
        let signed = countersign_pdu(&version, &pdu, &authoriser_id, &authoriser).unwrap();
        verify_pdu_signatures(&version, &signed, |_, _| None).unwrap();
    }

    #[test]
    fn building_is_deterministic() {
        let key = server_key(1);
        let signer = EventSigner::Server {
            server_name: "a.example",
            key: &key,
        };
        let first = build_pdu(draft("@alice:a.example"), &RoomVersion::V12, signer).unwrap();
        let second = build_pdu(draft("@alice:a.example"), &RoomVersion::V12, signer).unwrap();
        assert_eq!(first, second);
        let mut later = draft("@alice:a.example");
        later.origin_server_ts_ms += 1;
        let third = build_pdu(later, &RoomVersion::V12, signer).unwrap();
        assert_ne!(first.event_id, third.event_id);
    }

    #[test]
    fn limits_and_shapes_are_enforced() {
        let key = server_key(1);
        let version = RoomVersion::V12;
        let signer = EventSigner::Server {
            server_name: "a.example",
            key: &key,
        };
        let build = |draft: EventDraft| build_pdu(draft, &version, signer).map(|_| ());
        let mut many = draft("@a:a.example");
        many.prev_events = vec!["$p".into(); 21];
        assert_eq!(
            build(many),
            Err(BuildError::TooManyPrevEvents { count: 21 })
        );
        let mut many = draft("@a:a.example");
        many.auth_events = vec!["$p".into(); 11];
        assert_eq!(
            build(many),
            Err(BuildError::TooManyAuthEvents { count: 11 })
        );
        let mut exactly = draft("@a:a.example");
        exactly.prev_events = vec!["$p".into(); 20];
        exactly.auth_events = vec!["$p".into(); 10];
        assert_eq!(build(exactly), Ok(()));
        let mut long = draft("@a:a.example");
        long.event_type = "t".repeat(256);
        assert!(matches!(
            build(long),
            Err(BuildError::FieldTooLong { field: "type", .. })
        ));
        let mut deep = draft("@a:a.example");
        deep.depth = 0;
        assert_eq!(build(deep), Err(BuildError::BadDepth { depth: 0 }));
        let mut deep = draft("@a:a.example");
        deep.depth = MAX_SAFE_INTEGER + 1;
        assert!(matches!(build(deep), Err(BuildError::BadDepth { .. })));
        let mut floaty = draft("@a:a.example");
        floaty.content = json!({"x": 1.5});
        assert!(matches!(build(floaty), Err(BuildError::Canonical(_))));
        let mut not_object = draft("@a:a.example");
        not_object.content = json!([1]);
        assert_eq!(build(not_object), Err(BuildError::ContentNotObject));
        let mut no_room = draft("@a:a.example");
        no_room.room_id = None;
        assert!(matches!(
            build(no_room),
            Err(BuildError::RoomIdRequired { .. })
        ));
        assert!(matches!(
            build(draft("@a:b.example")),
            Err(BuildError::SenderMismatch { .. })
        ));
        // A v12 create event: no room_id, no parents; the room ID derives from its event ID.
        let create = EventDraft {
            room_id: None,
            event_type: "m.room.create".into(),
            state_key: Some(String::new()),
            content: json!({"room_version": "12"}),
            prev_events: vec![],
            auth_events: vec![],
            depth: 1,
            ..draft("@a:a.example")
        };
        let pdu = build_pdu(create.clone(), &version, signer).unwrap();
        assert_eq!(pdu.room_id, None);
        assert!(hashes::room_id_from_create_event_id(&pdu.event_id).starts_with('!'));
        let with_room = EventDraft {
            room_id: Some("!r".into()),
            ..create.clone()
        };
        assert!(matches!(
            build(with_room),
            Err(BuildError::CreateHasRoomId { .. })
        ));
        let with_parents = EventDraft {
            prev_events: vec!["$p".into()],
            ..create
        };
        assert!(matches!(
            build(with_parents),
            Err(BuildError::CreateHasParents { .. })
        ));
    }

    #[test]
    fn v10_redactions_carry_redacts_at_the_top_level() {
        let key = server_key(1);
        let mut redaction = draft("@a:a.example");
        redaction.event_type = "m.room.redaction".into();
        redaction.content = json!({"redacts": "$target"});
        let signer = EventSigner::Server {
            server_name: "a.example",
            key: &key,
        };
        let v10 = build_pdu(redaction.clone(), &RoomVersion::V10, signer).unwrap();
        assert_eq!(v10.json["redacts"], "$target");
        assert_eq!(v10.redacts.as_deref(), Some("$target"));
        let v11 = build_pdu(redaction, &RoomVersion::V11, signer).unwrap();
        assert!(v11.json.get("redacts").is_none());
        assert_eq!(v11.redacts.as_deref(), Some("$target"));
    }
}
