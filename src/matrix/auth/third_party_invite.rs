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
    let mut unsigned_object = signed.clone();
    unsigned_object.remove("signatures");
    unsigned_object.remove("unsigned");
    let mut message = String::new();
    write_canonical_json(&Value::Object(unsigned_object), &mut message);

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
                .any(|key| key.verify_strict(message.as_bytes(), &signature).is_ok())
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

/// Canonical JSON (appendices §Canonical JSON): object keys sorted by code point, no
/// insignificant whitespace, strings with only the mandatory escapes, integers as-is.
pub fn write_canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by_key(|(key, _)| *key);
            out.push('{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_json_string(key, out);
                out.push(':');
                write_canonical_json(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical_json(item, out);
            }
            out.push(']');
        }
        Value::String(text) => write_json_string(text, out),
        // Numbers, booleans and null print the same in canonical JSON as in serde_json's
        // compact form.
        other => out.push_str(&other.to_string()),
    }
}

fn write_json_string(text: &str, out: &mut String) {
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            control if (control as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", control as u32));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_and_escapes_minimally() {
        let mut out = String::new();
        write_canonical_json(
            &json!({"b": 1, "a": {"d": "\u{1}\n\"é", "c": [true, null]}}),
            &mut out,
        );
        assert_eq!(out, r#"{"a":{"c":[true,null],"d":"\u0001\n\"é"},"b":1}"#);
    }
}
