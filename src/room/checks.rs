//! PDU checks 1–3 on receipt (s2s "Checks performed on receipt of a PDU"), which need only the
//! event, its room version and the keys the server holds:
//!
//! 1. Is a valid event for its room version, otherwise it is dropped.
//! 2. Passes signature checks, otherwise it is dropped.
//! 3. Passes hash checks, otherwise it is redacted before being processed further.
//!
//! Checks 4–6 need the room (its DAG, the state before the event, the current state) and live in
//! [`super::pipeline`].

use serde_json::Value;

use super::keys::KeySource;
use crate::matrix::auth::{is_valid_member_id, is_valid_user_id};
use crate::matrix::canonical_json::{self, CanonicalJsonError, MAX_SAFE_INTEGER};
use crate::matrix::event_builder::{
    self, LimitViolation, MAX_AUTH_EVENTS, MAX_ID_BYTES, MAX_PDU_BYTES, MAX_PREV_EVENTS,
    PduSignatureError,
};
use crate::matrix::hashes::{self, ContentHashCheck, HashError};
use crate::matrix::member_keys::decode_member_key;
use crate::matrix::pdu::PduFormatError;
use crate::matrix::{EventId, Pdu, RoomVersion, redaction};

impl From<LimitViolation> for FormatError {
    fn from(violation: LimitViolation) -> FormatError {
        match violation {
            LimitViolation::TooManyPrevEvents { count } => FormatError::TooManyPrevEvents { count },
            LimitViolation::TooManyAuthEvents { count } => FormatError::TooManyAuthEvents { count },
            LimitViolation::FieldTooLong { field, bytes } => {
                FormatError::FieldTooLong { field, bytes }
            }
        }
    }
}

/// Why an event is not valid for its room version (check 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not canonical JSON: {0}")]
    NotCanonical(CanonicalJsonError),
    #[error("{0}")]
    Fields(PduFormatError),
    #[error("the PDU is {bytes} bytes of canonical JSON, at most {MAX_PDU_BYTES} allowed")]
    TooLarge { bytes: usize },
    #[error("{count} prev_events, at most {MAX_PREV_EVENTS} allowed")]
    TooManyPrevEvents { count: usize },
    #[error("{count} auth_events, at most {MAX_AUTH_EVENTS} allowed")]
    TooManyAuthEvents { count: usize },
    #[error("`{field}` is {bytes} bytes, at most {MAX_ID_BYTES} allowed")]
    FieldTooLong { field: &'static str, bytes: usize },
    #[error("depth {depth} is outside 0..=2^53-1")]
    BadDepth { depth: i64 },
    #[error("room_id is {found:?}, the room is {expected:?}")]
    WrongRoom {
        expected: String,
        found: Option<String>,
    },
    #[error("sender {0:?} is not a valid sender for the room version")]
    BadSender(String),
    #[error("m.room.member state_key {0:?} is not a valid member ID for the room version")]
    BadMemberStateKey(String),
    #[error("in this room version the create event has no room_id, prev_events or auth_events")]
    CreateShape,
    #[error("no `hashes.sha256` string: the PDU format requires the content hash")]
    MissingContentHash,
}

/// Check 1: parses `json` into a [`Pdu`] of `version` in the room `room_id`, computing its event
/// ID, and checks the format: strict canonical JSON, the size limits, the fields' types, the
/// room, and the sender's grammar (a user ID, or an MSC4430 member key).
///
/// For room versions whose room ID derives from the create event, a create event belongs to
/// `room_id` when its event ID derives that room ID.
pub fn check_format(version: &RoomVersion, room_id: &str, json: Value) -> Result<Pdu, FormatError> {
    check_format_shared(version, room_id, std::sync::Arc::new(json))
}

/// As [`check_format`] for JSON that is shared already: the parsed event keeps this copy.
pub fn check_format_shared(
    version: &RoomVersion,
    room_id: &str,
    json: std::sync::Arc<Value>,
) -> Result<Pdu, FormatError> {
    if version.strict_canonical_json {
        canonical_json::check_strict(&json).map_err(FormatError::NotCanonical)?;
    }
    let bytes = canonical_json::to_canonical_string(&json)
        .map_err(FormatError::NotCanonical)?
        .len();
    if bytes > MAX_PDU_BYTES {
        return Err(FormatError::TooLarge { bytes });
    }
    let event_id = hashes::event_id(version, &json).map_err(|error| match error {
        HashError::Canonical(error) => FormatError::NotCanonical(error),
        HashError::NotAnObject => FormatError::Fields(PduFormatError::NotAnObject),
    })?;
    let pdu = Pdu::from_shared_json(json, event_id, version).map_err(FormatError::Fields)?;
    // The PDU format requires `hashes.sha256` (pdu_base.yaml): without it the event is
    // malformed (dropped, as Synapse refuses it), whereas a hash that does not match is check
    // 3's to handle (the redacted copy is kept).
    let content_hash = pdu
        .json
        .get("hashes")
        .and_then(|hashes| hashes.get("sha256"));
    if !content_hash.is_some_and(Value::is_string) {
        return Err(FormatError::MissingContentHash);
    }
    event_builder::check_field_limits(
        &pdu.sender,
        &pdu.event_type,
        pdu.room_id.as_deref(),
        pdu.state_key.as_deref(),
        &pdu.prev_events,
        &pdu.auth_events,
    )
    .map_err(FormatError::from)?;
    if !(0..=MAX_SAFE_INTEGER).contains(&pdu.depth) {
        return Err(FormatError::BadDepth { depth: pdu.depth });
    }
    let is_create = pdu.event_type == "m.room.create" && pdu.state_key.as_deref() == Some("");
    if version.room_id_from_create_event && is_create {
        if pdu.room_id.is_some() || !pdu.prev_events.is_empty() || !pdu.auth_events.is_empty() {
            return Err(FormatError::CreateShape);
        }
        let derived = hashes::room_id_from_create_event_id(&pdu.event_id);
        if derived != room_id {
            return Err(FormatError::WrongRoom {
                expected: room_id.to_owned(),
                found: Some(derived),
            });
        }
    } else if pdu.room_id.as_deref() != Some(room_id) {
        return Err(FormatError::WrongRoom {
            expected: room_id.to_owned(),
            found: pdu.room_id.clone(),
        });
    }
    let sender_ok = if version.member_keys {
        decode_member_key(&pdu.sender).is_ok()
    } else {
        is_valid_user_id(&pdu.sender)
    };
    if !sender_ok {
        return Err(FormatError::BadSender(pdu.sender.clone()));
    }
    if pdu.event_type == "m.room.member"
        && let Some(state_key) = &pdu.state_key
        && !is_valid_member_id(version, state_key)
    {
        return Err(FormatError::BadMemberStateKey(state_key.clone()));
    }
    Ok(pdu)
}

/// Check 2: the signatures the room version requires (see
/// [`event_builder::verify_pdu_signatures`]): the sender's server and, for a restricted join, the
/// authorising server, with keys from `keys` that are valid for the event's `origin_server_ts`
/// (room v5+ rule); under MSC4430 the member key's signature (and the authorising member key's),
/// which needs no keys. The server co-signature of member events is not check 2 but link
/// verification.
pub fn check_signatures(
    version: &RoomVersion,
    pdu: &Pdu,
    keys: &impl KeySource,
) -> Result<(), PduSignatureError> {
    event_builder::verify_pdu_signatures(version, pdu, |server, key_id| {
        keys.held_keys(server)?
            .key_for_event(key_id, pdu.origin_server_ts)
    })
}

/// The servers whose keys check 2 needs for `pdu` (empty under MSC4430): what a caller fetches
/// before running the pipeline.
pub fn servers_needed_for_signatures(version: &RoomVersion, pdu: &Pdu) -> Vec<String> {
    if version.member_keys {
        return Vec::new();
    }
    let mut servers: Vec<String> = Vec::with_capacity(2);
    let mut add = |user_id: &str| {
        if let Some(server) = event_builder::server_of_user_id(user_id)
            && !servers.iter().any(|known| known == server)
        {
            servers.push(server.to_owned());
        }
    };
    add(&pdu.sender);
    // The authoriser's signature on any membership, as check 2 asks for it (auth rule 4.2
    // reads so; `event_builder::authorising_user`): asking for its keys on joins only left the
    // verdict on a leave or ban carrying the key to whatever keys were cached.
    if version.restricted_joins
        && pdu.event_type == "m.room.member"
        && let Some(authoriser) = pdu
            .content
            .get("join_authorised_via_users_server")
            .and_then(Value::as_str)
    {
        add(authoriser);
    }
    servers
}

/// Check 3: if `hashes.sha256` does not match (or does not decode), the event is replaced by its
/// redacted form (same event ID: the reference hash covers only the redacted form). Returns the
/// event to process further and what the hash check found.
pub fn check_hashes(version: &RoomVersion, pdu: Pdu) -> (Pdu, ContentHashCheck) {
    let check = hashes::check_content_hash(&pdu.json).unwrap_or(ContentHashCheck::Missing);
    if check == ContentHashCheck::Valid {
        return (pdu, check);
    }
    let redacted = redaction::redact(version, &pdu.json);
    let event_id: EventId = pdu.event_id.clone();
    // The redacted form keeps every field `Pdu::from_json` requires, so parsing cannot fail for
    // an event that passed check 1; fall back to the unredacted parse if it somehow does.
    match Pdu::from_json(redacted, event_id, version) {
        Ok(redacted) => (redacted, check),
        Err(_) => (pdu, check),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::event_builder::{EventDraft, EventSigner, build_pdu};
    use crate::matrix::member_keys::{member_key_user_id, member_signing_key};
    use crate::matrix::server_keys::ServerKeys;
    use crate::matrix::signing::{KeyId, ServerSigningKey};
    use crate::room::keys::KeyRing;
    use serde_json::json;

    fn key(seed: u8) -> ServerSigningKey {
        ServerSigningKey::from_seed(KeyId::ed25519("1").unwrap(), &[seed; 32])
    }

    fn message(sender: &str, body: &str) -> EventDraft {
        EventDraft {
            room_id: Some("!room:a.example".into()),
            sender: sender.into(),
            event_type: "m.room.message".into(),
            state_key: None,
            content: json!({"body": body}),
            prev_events: vec!["$prev".into()],
            auth_events: vec!["$auth".into()],
            depth: 3,
            origin_server_ts_ms: 1_000,
        }
    }

    fn signed_message(server_key: &ServerSigningKey) -> Pdu {
        let signer = EventSigner::Server {
            server_name: "a.example",
            key: server_key,
        };
        build_pdu(message("@alice:a.example", "hi"), &RoomVersion::V12, signer).unwrap()
    }

    #[test]
    fn format_accepts_a_built_event_and_refuses_wrong_rooms_senders_and_sizes() {
        let v12 = RoomVersion::V12;
        let pdu = signed_message(&key(1));
        let parsed =
            check_format(&v12, "!room:a.example", serde_json::Value::clone(&pdu.json)).unwrap();
        assert_eq!(parsed.event_id, pdu.event_id);
        assert!(matches!(
            check_format(
                &v12,
                "!other:a.example",
                serde_json::Value::clone(&pdu.json)
            ),
            Err(FormatError::WrongRoom { .. })
        ));
        let mut bad_sender = serde_json::Value::clone(&pdu.json);
        bad_sender["sender"] = json!("alice");
        assert!(matches!(
            check_format(&v12, "!room:a.example", bad_sender),
            Err(FormatError::BadSender(_))
        ));
        let mut floaty = serde_json::Value::clone(&pdu.json);
        floaty["content"]["x"] = json!(1.5);
        assert!(matches!(
            check_format(&v12, "!room:a.example", floaty),
            Err(FormatError::NotCanonical(_))
        ));
        let mut no_depth = serde_json::Value::clone(&pdu.json);
        no_depth.as_object_mut().unwrap().remove("depth");
        assert!(matches!(
            check_format(&v12, "!room:a.example", no_depth),
            Err(FormatError::Fields(PduFormatError::Missing {
                field: "depth"
            }))
        ));
        let mut many = serde_json::Value::clone(&pdu.json);
        many["prev_events"] = json!(vec!["$p"; 21]);
        assert_eq!(
            check_format(&v12, "!room:a.example", many).unwrap_err(),
            FormatError::TooManyPrevEvents { count: 21 }
        );
        let mut huge = serde_json::Value::clone(&pdu.json);
        huge["content"]["body"] = json!("x".repeat(MAX_PDU_BYTES));
        assert!(matches!(
            check_format(&v12, "!room:a.example", huge),
            Err(FormatError::TooLarge { .. })
        ));
        // Under MSC4430 a user ID is no sender; a member key is.
        let msc = RoomVersion::MSC4430;
        assert!(matches!(
            check_format(&msc, "!room:a.example", serde_json::Value::clone(&pdu.json)),
            Err(FormatError::BadSender(_))
        ));
        let member = member_signing_key(&[4; 32]);
        let sender = member_key_user_id(&member.verifying_key());
        let signer = EventSigner::Member {
            member_key: &member,
            cosigner: None,
        };
        let member_pdu = build_pdu(message(&sender, "hi"), &msc, signer).unwrap();
        assert!(
            check_format(
                &msc,
                "!room:a.example",
                serde_json::Value::clone(&member_pdu.json)
            )
            .is_ok()
        );
    }

    #[test]
    fn a_v12_create_event_belongs_to_the_room_its_id_derives() {
        let server_key = key(1);
        let signer = EventSigner::Server {
            server_name: "a.example",
            key: &server_key,
        };
        let draft = EventDraft {
            room_id: None,
            sender: "@alice:a.example".into(),
            event_type: "m.room.create".into(),
            state_key: Some(String::new()),
            content: json!({"room_version": "12"}),
            prev_events: vec![],
            auth_events: vec![],
            depth: 1,
            origin_server_ts_ms: 1,
        };
        let create = build_pdu(draft, &RoomVersion::V12, signer).unwrap();
        let room_id = hashes::room_id_from_create_event_id(&create.event_id);
        assert!(
            check_format(
                &RoomVersion::V12,
                &room_id,
                serde_json::Value::clone(&create.json)
            )
            .is_ok()
        );
        assert!(matches!(
            check_format(
                &RoomVersion::V12,
                "!elsewhere",
                serde_json::Value::clone(&create.json)
            ),
            Err(FormatError::WrongRoom { .. })
        ));
    }

    #[test]
    fn signatures_need_the_senders_key_and_hash_mismatches_redact() {
        let v12 = RoomVersion::V12;
        let server_key = key(1);
        let pdu = signed_message(&server_key);
        assert_eq!(servers_needed_for_signatures(&v12, &pdu), vec!["a.example"]);
        // A membership naming an authoriser (a leave here, not only a join) needs its server's
        // keys too, as check 2 asks for its signature.
        let leave = Pdu::from_json(
            json!({
                "type": "m.room.member", "sender": "@bob:b.example", "state_key": "@bob:b.example",
                "room_id": "!r", "content": {"membership": "leave",
                    "join_authorised_via_users_server": "@carol:c.example"},
                "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": 1
            }),
            "$leave".into(),
            &v12,
        )
        .unwrap();
        assert_eq!(
            servers_needed_for_signatures(&v12, &leave),
            ["b.example", "c.example"]
        );
        let mut ring = KeyRing::new();
        assert!(matches!(
            check_signatures(&v12, &pdu, &ring),
            Err(PduSignatureError::NoUsableKey { .. })
        ));
        ring.insert(
            ServerKeys::with_current_key("a.example", &server_key, 10_000),
            0,
        );
        check_signatures(&v12, &pdu, &ring).unwrap();
        // A key that expired before the event was sent does not count (room v5+ rule).
        let mut stale = KeyRing::new();
        stale.insert(
            ServerKeys::with_current_key("a.example", &server_key, 999),
            0,
        );
        assert!(check_signatures(&v12, &pdu, &stale).is_err());
        // Tampering with a signed (redaction-preserved) field breaks the signature.
        let mut tampered = serde_json::Value::clone(&pdu.json);
        tampered["origin_server_ts"] = json!(2_000);
        let tampered = check_format(&v12, "!room:a.example", tampered).unwrap();
        assert!(matches!(
            check_signatures(&v12, &tampered, &ring),
            Err(PduSignatureError::Signature { .. })
        ));
        // Tampering with the content keeps the signature (it covers the redacted form) but fails
        // the hash: the event continues redacted, under the same ID.
        let mut edited = serde_json::Value::clone(&pdu.json);
        edited["content"]["body"] = json!("edited");
        let edited = check_format(&v12, "!room:a.example", edited).unwrap();
        assert_eq!(edited.event_id, pdu.event_id);
        check_signatures(&v12, &edited, &ring).unwrap();
        let (redacted, check) = check_hashes(&v12, edited);
        assert_eq!(check, ContentHashCheck::Mismatch);
        assert_eq!(redacted.content, json!({}));
        assert_eq!(redacted.event_id, pdu.event_id);
        let (intact, check) = check_hashes(&v12, pdu.clone());
        assert_eq!(check, ContentHashCheck::Valid);
        assert_eq!(intact, pdu);
        // Without a content hash (or with one that is not a string) the event is malformed:
        // check 1 drops it, check 3 never sees it.
        for hashes in [None, Some(json!({})), Some(json!({"sha256": 5}))] {
            let mut unhashed = serde_json::Value::clone(&pdu.json);
            match hashes {
                None => drop(unhashed.as_object_mut().unwrap().remove("hashes")),
                Some(hashes) => unhashed["hashes"] = hashes,
            }
            assert!(matches!(
                check_format(&v12, "!room:a.example", unhashed),
                Err(FormatError::MissingContentHash)
            ));
        }
    }
}
