//! MSC4430 member keys.
//!
//! - A member key is an ed25519 key per (user, room). The event `sender` is `@` + URL-safe
//!   unpadded base64 of its public key (43 characters after the sigil, no `:domain`).
//! - Every event is signed under the constant entity `"sender"` with the constant key ID
//!   `ed25519:1`; the verification key is decoded from the event's own `sender`, so the check
//!   needs no key lookup and every server reaches the same verdict.
//! - `m.room.member` content carries the claimed `localpart` and `domain`; the event is
//!   co-signed by a server key of `content.domain`. The link (member key <-> `@localpart:domain`)
//!   is verified only by a *current* key of that domain at check time ([`verify_member_link`]).
//! - Restricted joins: `join_authorised_via_users_server` holds a member key, and the event must
//!   carry that key's signature. The MSC does not say under which entity; fedsim uses the member
//!   key itself (`signatures["@<key>"]["ed25519:1"]`), since `"sender"` is taken by the joiner.

use ed25519_dalek::VerifyingKey;
use serde_json::Value;

use super::room_version::RoomVersion;
use super::server_keys::{self, KeyUnusable, ServerKeys, ValidityClamp};
use super::signing::{
    self, KeyId, ServerSigningKey, SignatureError, SigningError, decode_url_safe_base64,
    url_safe_unpadded_base64,
};

/// The entity every MSC4430 event is signed under.
pub const MEMBER_ENTITY: &str = "sender";
/// The key ID of every member-key signature.
pub const MEMBER_KEY_ID: &str = "ed25519:1";

/// Why a string is not a member key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberKeyError {
    #[error("member key {0:?} does not start with '@'")]
    NoSigil(String),
    #[error("member key {0:?} is not '@' + 43 characters of URL-safe unpadded base64 of 32 bytes")]
    Encoding(String),
    #[error("member key {0:?} is not a valid ed25519 public key")]
    NotACurvePoint(String),
}

/// The `sender` of a member key: `@` + URL-safe unpadded base64 of the public key.
pub fn member_key_user_id(key: &VerifyingKey) -> String {
    let mut id = String::with_capacity(44);
    id.push('@');
    id.push_str(&url_safe_unpadded_base64(key.as_bytes()));
    id
}

/// Decodes the public key from a member-key `sender`. Only the one canonical spelling is
/// accepted (43 characters, no padding, zero trailing bits), so each key has exactly one sender.
pub fn decode_member_key(sender: &str) -> Result<VerifyingKey, MemberKeyError> {
    let body = sender
        .strip_prefix('@')
        .ok_or_else(|| MemberKeyError::NoSigil(sender.to_owned()))?;
    let encoding = || MemberKeyError::Encoding(sender.to_owned());
    if body.len() != 43 {
        return Err(encoding());
    }
    let bytes = decode_url_safe_base64(body).map_err(|_| encoding())?;
    let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| encoding())?;
    if url_safe_unpadded_base64(&bytes) != body {
        return Err(encoding());
    }
    signing::verifying_key_from_bytes(&bytes)
        .ok_or_else(|| MemberKeyError::NotACurvePoint(sender.to_owned()))
}

/// A member signing key from a 32-byte seed, with the constant key ID `ed25519:1`.
pub fn member_signing_key(seed: &[u8; 32]) -> ServerSigningKey {
    let key_id = KeyId::parse(MEMBER_KEY_ID).expect("the constant member key ID is well formed");
    ServerSigningKey::from_seed(key_id, seed)
}

/// Why signing as a member failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberSigningError {
    #[error("the event's sender {sender:?} is not the member key {expected:?}")]
    SenderMismatch { sender: String, expected: String },
    #[error("only m.room.member events with a string content.domain are co-signed")]
    NotCosignable,
    #[error("content.domain is {domain:?} but the co-signing server is {server_name:?}")]
    DomainMismatch { domain: String, server_name: String },
    #[error("{0}")]
    Signing(#[from] SigningError),
}

/// Hashes and signs `event` with `member_key` under the entity `"sender"`. The event's `sender`
/// must be the member key's user ID.
pub fn sign_as_member(
    version: &RoomVersion,
    event: &mut Value,
    member_key: &ServerSigningKey,
) -> Result<(), MemberSigningError> {
    let expected = member_key_user_id(&member_key.verifying_key());
    let sender = event.get("sender").and_then(Value::as_str).unwrap_or("");
    if sender != expected {
        return Err(MemberSigningError::SenderMismatch {
            sender: sender.to_owned(),
            expected,
        });
    }
    let key = if member_key.key_id.as_str() == MEMBER_KEY_ID {
        member_key.clone()
    } else {
        member_key_with_constant_id(member_key)
    };
    signing::sign_event(version, event, MEMBER_ENTITY, &key)?;
    Ok(())
}

fn member_key_with_constant_id(key: &ServerSigningKey) -> ServerSigningKey {
    member_signing_key(&key.signing_key.to_bytes())
}

/// Adds the co-signature of `server_key` (a key of `server_name`) to an `m.room.member` event
/// whose `hashes` are already set, as `signatures[server_name][key_id]`. `server_name` must equal
/// `content.domain`. Re-signing after a key rotation (MSC4430) is the same call with the new key;
/// it does not change the event ID.
pub fn cosign_member_event(
    version: &RoomVersion,
    event: &mut Value,
    server_name: &str,
    server_key: &ServerSigningKey,
) -> Result<(), MemberSigningError> {
    let domain = cosign_domain(event).ok_or(MemberSigningError::NotCosignable)?;
    if domain != server_name {
        return Err(MemberSigningError::DomainMismatch {
            domain: domain.to_owned(),
            server_name: server_name.to_owned(),
        });
    }
    let signature = signing::event_signature(version, event, server_key)?;
    signing::insert_signature(event, server_name, server_key.key_id.as_str(), signature)?;
    Ok(())
}

/// `content.domain` of an `m.room.member` event.
pub fn cosign_domain(event: &Value) -> Option<&str> {
    if event.get("type").and_then(Value::as_str) != Some("m.room.member") {
        return None;
    }
    event.get("content")?.get("domain")?.as_str()
}

/// Why a member-key signature check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberSignatureError {
    #[error("the event has no string sender")]
    NoSender,
    #[error("{0}")]
    Key(#[from] MemberKeyError),
    #[error("{0}")]
    Signature(#[from] SignatureError),
}

/// PDU check 2 for MSC4430: the event's `"sender"` signature, with the key decoded from its
/// `sender`. No lookup is needed.
pub fn verify_member_signature(
    version: &RoomVersion,
    event: &Value,
) -> Result<(), MemberSignatureError> {
    let sender = event
        .get("sender")
        .and_then(Value::as_str)
        .ok_or(MemberSignatureError::NoSender)?;
    let key = decode_member_key(sender)?;
    verify_member_signature_with_key(version, event, &key)
}

/// [`verify_member_signature`] with the sender's key already decoded (callers that cache
/// decoded keys skip the curve point decompression).
pub fn verify_member_signature_with_key(
    version: &RoomVersion,
    event: &Value,
    key: &VerifyingKey,
) -> Result<(), MemberSignatureError> {
    signing::verify_event_signature(version, event, MEMBER_ENTITY, MEMBER_KEY_ID, key)?;
    Ok(())
}

/// The result of checking a member event's link (member key <-> `@localpart:domain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    /// A current key of `content.domain` signed the event.
    Verified { key_id: String },
    /// Not an `m.room.member` event, or it has no string `content.domain`: there is no link.
    NoLinkClaimed,
    /// The keys passed in are not those of `content.domain`.
    WrongServerKeys { domain: String, keys_of: String },
    /// `content.domain` did not sign the event at all.
    NotCosigned,
    /// The domain signed only with keys that may not be used now (old, expired or unknown);
    /// the first such key ID and why, in key ID order.
    NoCurrentKey { key_id: String, reason: KeyUnusable },
    /// A current key's signature does not verify (or is malformed).
    BadSignature { key_id: String },
}

impl LinkOutcome {
    pub fn is_verified(&self) -> bool {
        matches!(self, LinkOutcome::Verified { .. })
    }
}

/// Checks the link of an MSC4430 `m.room.member` event against `domain_keys` (the key object of
/// `content.domain`, fetched at `clamp.fetched_at_ms`) at `now_ms`:
/// 1. the event claims a domain; 2. the keys are that domain's; 3. the domain signed the event;
/// 4. some signing key is current at `now_ms` (MSC4430: old keys never count) and its signature
///    verifies over the redacted event.
///
/// The member key's own signature is PDU check 2 ([`verify_member_signature`]), not part of this.
pub fn verify_member_link(
    version: &RoomVersion,
    event: &Value,
    domain_keys: &ServerKeys,
    now_ms: i64,
    clamp: ValidityClamp,
) -> LinkOutcome {
    // 1.
    let Some(domain) = cosign_domain(event) else {
        return LinkOutcome::NoLinkClaimed;
    };
    // 2.
    if domain_keys.server_name != domain {
        return LinkOutcome::WrongServerKeys {
            domain: domain.to_owned(),
            keys_of: domain_keys.server_name.clone(),
        };
    }
    // 3.
    let Some(by_domain) = event
        .get("signatures")
        .and_then(|signatures| signatures.get(domain))
        .and_then(Value::as_object)
        .filter(|by_domain| !by_domain.is_empty())
    else {
        return LinkOutcome::NotCosigned;
    };
    // 4. Key IDs in sorted order, whatever the map's iteration order.
    let mut key_ids: Vec<&String> = by_domain.keys().collect();
    key_ids.sort_unstable();
    let mut first_unusable = None;
    let mut first_bad = None;
    for key_id in key_ids {
        match server_keys::key_valid_for_member_cosignature(domain_keys, key_id, now_ms, clamp) {
            Ok(key) => match signing::verify_event_signature(version, event, domain, key_id, key) {
                Ok(()) => {
                    return LinkOutcome::Verified {
                        key_id: key_id.clone(),
                    };
                }
                Err(_) => {
                    first_bad.get_or_insert_with(|| key_id.clone());
                }
            },
            Err(reason) => {
                first_unusable.get_or_insert((key_id.clone(), reason));
            }
        }
    }
    match (first_bad, first_unusable) {
        (Some(key_id), _) => LinkOutcome::BadSignature { key_id },
        (None, Some((key_id, reason))) => LinkOutcome::NoCurrentKey { key_id, reason },
        (None, None) => LinkOutcome::NotCosigned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::hashes;
    use serde_json::json;

    fn server_key(version: &str, seed: u8) -> ServerSigningKey {
        ServerSigningKey::from_seed(KeyId::ed25519(version).unwrap(), &[seed; 32])
    }

    fn member_event(member: &ServerSigningKey) -> Value {
        let sender = member_key_user_id(&member.verifying_key());
        json!({
            "type": "m.room.member", "state_key": sender, "sender": sender,
            "room_id": "!room", "content": {"membership": "join", "localpart": "alice", "domain": "a.example"},
            "prev_events": ["$p"], "auth_events": ["$a"], "depth": 2, "origin_server_ts": 1000
        })
    }

    #[test]
    fn member_key_ids_round_trip_and_reject_odd_spellings() {
        let key = member_signing_key(&[7; 32]).verifying_key();
        let sender = member_key_user_id(&key);
        assert_eq!(sender.len(), 44);
        assert_eq!(decode_member_key(&sender), Ok(key));
        // The spec's test key as a member key (derived vector).
        let spec_seed =
            signing::decode_base64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1").unwrap();
        let spec = member_signing_key(&spec_seed.try_into().unwrap());
        assert_eq!(
            member_key_user_id(&spec.verifying_key()),
            "@XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"
        );
        assert!(matches!(
            decode_member_key(&sender[1..]),
            Err(MemberKeyError::NoSigil(_))
        ));
        assert!(decode_member_key(&format!("{sender}=")).is_err());
        assert!(decode_member_key("@alice:example.org").is_err());
        let standard_alphabet = sender.replace('-', "+").replace('_', "/");
        if standard_alphabet != sender {
            assert!(decode_member_key(&standard_alphabet).is_err());
        }
        // Non-zero trailing bits: the last character of a 43-char body carries 2 spare bits.
        let mut last_changed = sender.clone();
        let last = last_changed.pop().unwrap();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let position = alphabet.find(last).unwrap();
        last_changed.push(alphabet.as_bytes()[position ^ 1] as char);
        assert!(decode_member_key(&last_changed).is_err());
    }

    #[test]
    fn sign_verify_cosign_and_link() {
        let version = RoomVersion::MSC4430;
        let member = member_signing_key(&[9; 32]);
        let mut event = member_event(&member);
        sign_as_member(&version, &mut event, &member).unwrap();
        verify_member_signature(&version, &event).unwrap();
        let event_id = hashes::event_id(&version, &event).unwrap();

        let old = server_key("1", 1);
        let current = server_key("2", 2);
        cosign_member_event(&version, &mut event, "a.example", &old).unwrap();
        let mut keys = ServerKeys::with_current_key("a.example", &current, 10_000);
        keys.old_verify_keys.insert(
            "ed25519:1".into(),
            server_keys::OldVerifyKey {
                key: old.verifying_key(),
                expired_ts_ms: 5_000,
            },
        );
        let clamp = ValidityClamp::spec(0);
        // Signed only by an old key: not verified, even though origin_server_ts < expired_ts.
        assert_eq!(
            verify_member_link(&version, &event, &keys, 2_000, clamp),
            LinkOutcome::NoCurrentKey {
                key_id: "ed25519:1".into(),
                reason: KeyUnusable::NotCurrent
            }
        );
        // Re-signed with the current key: verified, same event ID.
        cosign_member_event(&version, &mut event, "a.example", &current).unwrap();
        assert_eq!(
            verify_member_link(&version, &event, &keys, 2_000, clamp),
            LinkOutcome::Verified {
                key_id: "ed25519:2".into()
            }
        );
        assert_eq!(hashes::event_id(&version, &event).unwrap(), event_id);
        verify_member_signature(&version, &event).unwrap();
        // After valid_until_ts: not current any more.
        assert!(matches!(
            verify_member_link(&version, &event, &keys, 10_000, clamp),
            LinkOutcome::NoCurrentKey { .. }
        ));
        // localpart is redactable, so not signed; domain is kept, so signed.
        let mut renamed = event.clone();
        renamed["content"]["localpart"] = json!("mallory");
        assert!(verify_member_link(&version, &renamed, &keys, 2_000, clamp).is_verified());
        verify_member_signature(&version, &renamed).unwrap();
        let mut moved = event.clone();
        moved["content"]["domain"] = json!("b.example");
        assert!(matches!(
            verify_member_link(&version, &moved, &keys, 2_000, clamp),
            LinkOutcome::WrongServerKeys { .. }
        ));
        assert!(verify_member_signature(&version, &moved).is_err());
        // A forged co-signature by another key under the current ID.
        let mut forged = event.clone();
        let forger = server_key("2", 3);
        forged["signatures"]["a.example"] = json!({});
        cosign_member_event(&version, &mut forged, "a.example", &forger).unwrap();
        assert_eq!(
            verify_member_link(&version, &forged, &keys, 2_000, clamp),
            LinkOutcome::BadSignature {
                key_id: "ed25519:2".into()
            }
        );
        forged["signatures"]
            .as_object_mut()
            .unwrap()
            .remove("a.example");
        assert_eq!(
            verify_member_link(&version, &forged, &keys, 2_000, clamp),
            LinkOutcome::NotCosigned
        );
    }

    #[test]
    fn signing_errors_are_values() {
        let version = RoomVersion::MSC4430;
        let member = member_signing_key(&[9; 32]);
        let mut event = member_event(&member);
        event["sender"] = json!("@someone:else");
        assert!(matches!(
            sign_as_member(&version, &mut event, &member),
            Err(MemberSigningError::SenderMismatch { .. })
        ));
        let mut event = member_event(&member);
        assert!(matches!(
            cosign_member_event(&version, &mut event, "b.example", &server_key("1", 1)),
            Err(MemberSigningError::DomainMismatch { .. })
        ));
        event["type"] = json!("m.room.message");
        assert_eq!(
            cosign_member_event(&version, &mut event, "a.example", &server_key("1", 1)),
            Err(MemberSigningError::NotCosignable)
        );
        assert_eq!(
            verify_member_link(
                &version,
                &event,
                &ServerKeys::with_current_key("a.example", &server_key("1", 1), 1),
                0,
                ValidityClamp::spec(0)
            ),
            LinkOutcome::NoLinkClaimed
        );
        let mut unsigned = member_event(&member);
        hashes::add_content_hash(&mut unsigned).unwrap();
        assert!(matches!(
            verify_member_signature(&version, &unsigned),
            Err(MemberSignatureError::Signature(
                SignatureError::MissingEntity { .. }
            ))
        ));
    }
}
