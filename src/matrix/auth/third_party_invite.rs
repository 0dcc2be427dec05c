//! Rule 5.4.1.7: does any signature in a third-party invite's `signed` object verify with any
//! public key of the room's matching `m.room.third_party_invite` event?
//!
//! Unlike the event's own signatures (PDU check 2, outside the auth rules), this signature check
//! *is* an authorization rule: the identity server's signature over `{mxid, token}` is what makes
//! the invite valid.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Map, Value};

use crate::matrix::canonical_json::write_object_without;
use crate::matrix::crypto_mode;

/// Whether some signature in `signed.signatures` verifies, with some public key of the
/// `m.room.third_party_invite` content (`public_key`, and `public_keys[].public_key`), over the
/// canonical JSON of `signed` without `signatures` and `unsigned` (appendices §Signing JSON).
pub fn any_signature_verifies(signed: &Map<String, Value>, invite_content: &Value) -> bool {
    let Some(signatures) = signed.get("signatures").and_then(Value::as_object) else {
        return false;
    };
    let public_keys: Vec<VerifyingKey> = invite_content
        .get("public_key")
        .into_iter()
        .chain(
            invite_content
                .get("public_keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|entry| entry.get("public_key")),
        )
        .filter_map(Value::as_str)
        .filter_map(decode_public_key)
        .collect();
    if public_keys.is_empty() {
        return false;
    }
    // The signed bytes: canonical JSON of `signed` without `signatures` and `unsigned`. A
    // `signed` that has no canonical form (a float, say) verifies with no key.
    let mut message = String::with_capacity(128);
    if write_object_without(signed, &["signatures", "unsigned"], &mut message).is_err() {
        return false;
    }

    signatures
        .values()
        .filter_map(Value::as_object)
        .flat_map(|by_key_id| by_key_id.iter())
        // Only Ed25519 signatures can match an Ed25519 identity-server key.
        .filter(|(key_id, _)| key_id.starts_with("ed25519:"))
        .filter_map(|(_, signature)| signature.as_str().and_then(decode_signature))
        .any(|signature| {
            public_keys
                .iter()
                .any(|key| crypto_mode::verify(key, message.as_bytes(), &signature))
        })
}

/// Unpadded base64 in either alphabet, tolerating padding (identity servers have used both).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
        .ok()
}

fn decode_public_key(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = decode_base64(text)?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

fn decode_signature(text: &str) -> Option<Signature> {
    let bytes: [u8; 64] = decode_base64(text)?.try_into().ok()?;
    Some(Signature::from_bytes(&bytes))
}
