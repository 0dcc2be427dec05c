//! The server keys object of `GET /_matrix/key/v2/server` (s2s "Retrieving server keys"), and
//! the rules for when a fetched key may check a signature.
//!
//! Validity is a pure function of the key object, the time the check is about (an event's
//! `origin_server_ts`, or "now" for MSC4430's current-key rule) and a [`ValidityClamp`] holding
//! the fetch time: nothing here reads a clock.
//!
//! - Room v5+ (`content/rooms/fragments/v5-signing-requirements.md`): a key checks an event only
//!   if its `valid_until_ts` >= the event's `origin_server_ts`; an old key (in `old_verify_keys`)
//!   only if its `expired_ts` >= the event's `origin_server_ts`.
//! - "Servers MUST use the lesser of [`valid_until_ts`] and 7 days into the future": the clamp
//!   caps `valid_until_ts` at fetch time + 7 days. It is a parameter (on by default) so the
//!   simulator can sweep it.
//! - MSC4430: a member event's server co-signature is valid only with the domain's *current* key
//!   (in `verify_keys`, `valid_until_ts` in the future at check time); old keys never count.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use serde_json::{Map, Value};

use super::canonical_json;
use super::crypto_mode;
use super::signing::{
    self, KeyId, ServerSigningKey, SignatureError, SigningError, unpadded_base64,
};

/// Seven days in milliseconds: the spec's cap on how far ahead `valid_until_ts` is believed.
pub const SEVEN_DAYS_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// A key the server no longer uses, still valid for events sent before it expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldVerifyKey {
    pub key: VerifyingKey,
    /// When the key stopped being used (the `expired_ts` field).
    pub expired_ts_ms: i64,
}

/// A parsed `/_matrix/key/v2/server` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKeys {
    pub server_name: String,
    /// Current keys, by key ID (`ed25519:<version>`).
    pub verify_keys: BTreeMap<String, VerifyingKey>,
    /// Retired keys, by key ID.
    pub old_verify_keys: BTreeMap<String, OldVerifyKey>,
    /// When the response should be refreshed (the `valid_until_ts` field), before any clamp.
    pub valid_until_ts_ms: i64,
}

/// Why a server keys object was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerKeyError {
    #[error("server keys: the response is not a JSON object")]
    NotAnObject,
    #[error("server keys: field `{0}` is missing or has the wrong type")]
    Field(&'static str),
    #[error("server keys: server_name is {found:?}, expected {expected:?}")]
    NameMismatch { expected: String, found: String },
    #[error("server keys: {field} {key_id}: {problem}")]
    MalformedKey {
        field: &'static str,
        key_id: String,
        problem: String,
    },
    #[error("server keys: verify_keys lists no ed25519 key, so nothing self-signs the response")]
    NoVerifyKeys,
    #[error("server keys: self-signature: {0}")]
    SelfSignature(SignatureError),
}

impl ServerKeys {
    /// A key object with one current key.
    pub fn with_current_key(
        server_name: &str,
        key: &ServerSigningKey,
        valid_until_ts_ms: i64,
    ) -> ServerKeys {
        ServerKeys {
            server_name: server_name.to_owned(),
            verify_keys: BTreeMap::from([(key.key_id.to_string(), key.verifying_key())]),
            old_verify_keys: BTreeMap::new(),
            valid_until_ts_ms,
        }
    }

    /// The unsigned JSON form.
    pub fn to_json(&self) -> Value {
        let verify_keys: Map<String, Value> = self
            .verify_keys
            .iter()
            .map(|(key_id, key)| {
                let entry = serde_json::json!({ "key": unpadded_base64(key.as_bytes()) });
                (key_id.clone(), entry)
            })
            .collect();
        let old_verify_keys: Map<String, Value> = self
            .old_verify_keys
            .iter()
            .map(|(key_id, old)| {
                let entry = serde_json::json!({
                    "key": unpadded_base64(old.key.as_bytes()),
                    "expired_ts": old.expired_ts_ms,
                });
                (key_id.clone(), entry)
            })
            .collect();
        serde_json::json!({
            "server_name": self.server_name,
            "verify_keys": verify_keys,
            "old_verify_keys": old_verify_keys,
            "valid_until_ts": self.valid_until_ts_ms,
        })
    }

    /// The JSON form signed by `key` under the server's name, as the server publishes it.
    pub fn to_signed_json(&self, key: &ServerSigningKey) -> Result<Value, SigningError> {
        self.to_signed_json_by(&[key])
    }

    /// The JSON form signed by each of `keys` (a server with several current keys signs with all
    /// of them, so every verify key self-signs).
    pub fn to_signed_json_by(&self, keys: &[&ServerSigningKey]) -> Result<Value, SigningError> {
        let mut value = self.to_json();
        for key in keys {
            signing::sign_json(&mut value, &self.server_name, key)?;
        }
        Ok(value)
    }

    /// The response body signed by `key`, as [`Self::to_signed_json`]`(key)` serialises
    /// (canonical JSON: sorted keys, no whitespace), written directly: a server re-signs its
    /// response once per lifetime, and a simulation of 10^5 servers does it millions of times.
    pub fn to_signed_body(&self, key: &ServerSigningKey) -> Result<String, SigningError> {
        SignedBodyTemplate::new(self, key)?.body(key, self.valid_until_ts_ms)
    }

    /// Parses a key response and checks it: 1. it is an object whose `server_name` is
    /// `expected_server_name`; 2. `valid_until_ts` is an integer; 3. `verify_keys` and
    /// `old_verify_keys` are well formed (keys with unknown algorithms are ignored, as the spec
    /// says of unknown algorithms); 4. every ed25519 verify key signed the response.
    pub fn parse_and_verify(
        value: &Value,
        expected_server_name: &str,
    ) -> Result<ServerKeys, ServerKeyError> {
        // 1.
        let object = value.as_object().ok_or(ServerKeyError::NotAnObject)?;
        let server_name = object
            .get("server_name")
            .and_then(Value::as_str)
            .ok_or(ServerKeyError::Field("server_name"))?;
        if server_name != expected_server_name {
            return Err(ServerKeyError::NameMismatch {
                expected: expected_server_name.to_owned(),
                found: server_name.to_owned(),
            });
        }
        // 2.
        let valid_until_ts_ms = object
            .get("valid_until_ts")
            .and_then(Value::as_i64)
            .ok_or(ServerKeyError::Field("valid_until_ts"))?;
        // 3.
        let mut verify_keys = BTreeMap::new();
        let listed = object
            .get("verify_keys")
            .and_then(Value::as_object)
            .ok_or(ServerKeyError::Field("verify_keys"))?;
        for (key_id, entry) in listed {
            if let Some(key) = parse_key_entry("verify_keys", key_id, entry)? {
                verify_keys.insert(key_id.clone(), key);
            }
        }
        let mut old_verify_keys = BTreeMap::new();
        match object.get("old_verify_keys") {
            None => {}
            Some(Value::Object(listed)) => {
                for (key_id, entry) in listed {
                    let Some(key) = parse_key_entry("old_verify_keys", key_id, entry)? else {
                        continue;
                    };
                    let expired_ts_ms = entry
                        .get("expired_ts")
                        .and_then(Value::as_i64)
                        .ok_or_else(|| ServerKeyError::MalformedKey {
                            field: "old_verify_keys",
                            key_id: key_id.clone(),
                            problem: "`expired_ts` is missing or not an integer".to_owned(),
                        })?;
                    old_verify_keys.insert(key_id.clone(), OldVerifyKey { key, expired_ts_ms });
                }
            }
            Some(_) => return Err(ServerKeyError::Field("old_verify_keys")),
        }
        // 4.
        if verify_keys.is_empty() {
            return Err(ServerKeyError::NoVerifyKeys);
        }
        for (key_id, key) in &verify_keys {
            signing::verify_json_signature(value, server_name, key_id, key)
                .map_err(ServerKeyError::SelfSignature)?;
        }
        Ok(ServerKeys {
            server_name: server_name.to_owned(),
            verify_keys,
            old_verify_keys,
            valid_until_ts_ms,
        })
    }
}

/// The parts of a signed key response that do not change when only `valid_until_ts` does
/// (a server re-signing the same keys): [`ServerKeys::to_signed_body`] is `new` then `body`,
/// and a publisher keeps the template between re-signings.
#[derive(Debug, Clone)]
pub struct SignedBodyTemplate {
    /// In one allocation (a re-signing reads it long after it was written, so each separate
    /// piece would be a cache miss): `{"old_verify_keys":{…},"server_name":NAME` (the signed
    /// bytes start with it), then `,"signatures":{NAME:{KEY_ID:` (the signature's string
    /// follows it), then `,"verify_keys":{…}}` (the signed bytes end with it, after
    /// `,"valid_until_ts":N`).
    text: String,
    /// Where the signature prefix starts in `text`.
    signature_prefix_at: usize,
    /// Where the verify keys tail starts in `text`.
    verify_keys_tail_at: usize,
}

/// Refuses an integer outside canonical JSON's range, as serialising the JSON would.
fn canonical_integer(value: i64) -> Result<i64, SigningError> {
    if (canonical_json::MIN_SAFE_INTEGER..=canonical_json::MAX_SAFE_INTEGER).contains(&value) {
        Ok(value)
    } else {
        Err(SigningError::Canonical(
            canonical_json::CanonicalJsonError::IntegerOutOfRange {
                path: "$".to_owned(),
                value: value.to_string(),
            },
        ))
    }
}

impl SignedBodyTemplate {
    /// The template of `keys` signed by `key` (`keys.valid_until_ts_ms` is not used).
    pub fn new(keys: &ServerKeys, key: &ServerSigningKey) -> Result<Self, SigningError> {
        use canonical_json::write_json_string;
        use std::fmt::Write;
        // Top-level keys in code point order: old_verify_keys, server_name, [signatures],
        // valid_until_ts, verify_keys. The signed bytes are the object without `signatures`.
        let mut head = String::with_capacity(160);
        head.push_str("{\"old_verify_keys\":{");
        for (index, (key_id, old)) in keys.old_verify_keys.iter().enumerate() {
            if index > 0 {
                head.push(',');
            }
            write_json_string(key_id, &mut head);
            write!(
                head,
                ":{{\"expired_ts\":{},\"key\":",
                canonical_integer(old.expired_ts_ms)?
            )
            .expect("writing to a String cannot fail");
            write_json_string(&unpadded_base64(old.key.as_bytes()), &mut head);
            head.push('}');
        }
        head.push_str("},\"server_name\":");
        write_json_string(&keys.server_name, &mut head);
        let mut text = head;
        let signature_prefix_at = text.len();
        text.push_str(",\"signatures\":{");
        write_json_string(&keys.server_name, &mut text);
        text.push_str(":{");
        write_json_string(key.key_id.as_str(), &mut text);
        text.push(':');
        let verify_keys_tail_at = text.len();
        text.push_str(",\"verify_keys\":{");
        for (index, (key_id, verify_key)) in keys.verify_keys.iter().enumerate() {
            if index > 0 {
                text.push(',');
            }
            write_json_string(key_id, &mut text);
            text.push_str(":{\"key\":");
            write_json_string(&unpadded_base64(verify_key.as_bytes()), &mut text);
            text.push('}');
        }
        text.push_str("}}");
        text.shrink_to_fit();
        Ok(SignedBodyTemplate {
            text,
            signature_prefix_at,
            verify_keys_tail_at,
        })
    }

    /// Prefetch hints for the template's text (see [`crate::engine::prefetch`]).
    pub fn prefetch(&self) {
        crate::engine::prefetch::prefetch_bytes(self.text.as_bytes(), 512);
    }

    /// The body with `valid_until_ts_ms`, signed by `key` (the key the template was made for).
    pub fn body(
        &self,
        key: &ServerSigningKey,
        valid_until_ts_ms: i64,
    ) -> Result<String, SigningError> {
        let mut body = String::new();
        self.write_body(key, valid_until_ts_ms, &mut String::new(), &mut body)?;
        Ok(body)
    }

    /// [`Self::body`] as an `Arc<str>`, written through two per-thread buffers: the only
    /// allocation is the `Arc` (a publisher re-signs once per key lifetime per server).
    pub fn body_arc(
        &self,
        key: &ServerSigningKey,
        valid_until_ts_ms: i64,
    ) -> Result<std::sync::Arc<str>, SigningError> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<(String, String)> =
                const { std::cell::RefCell::new((String::new(), String::new())) };
        }
        SCRATCH.with(|scratch| {
            let (message, body) = &mut *scratch.borrow_mut();
            self.write_body(key, valid_until_ts_ms, message, body)?;
            Ok(std::sync::Arc::from(body.as_str()))
        })
    }

    /// Writes the signed bytes into `message` and the body into `body` (both cleared first).
    fn write_body(
        &self,
        key: &ServerSigningKey,
        valid_until_ts_ms: i64,
        message: &mut String,
        body: &mut String,
    ) -> Result<(), SigningError> {
        use std::fmt::Write;
        let valid_until_ts_ms = canonical_integer(valid_until_ts_ms)?;
        let head = &self.text[..self.signature_prefix_at];
        let signature_prefix = &self.text[self.signature_prefix_at..self.verify_keys_tail_at];
        let verify_keys_tail = &self.text[self.verify_keys_tail_at..];
        message.clear();
        message.push_str(head);
        write!(message, ",\"valid_until_ts\":{valid_until_ts_ms}")
            .expect("writing to a String cannot fail");
        message.push_str(verify_keys_tail);
        let signature = crypto_mode::sign(&key.signing_key, message.as_bytes());
        body.clear();
        body.reserve(message.len() + signature_prefix.len() + 90);
        body.push_str(head);
        body.push_str(signature_prefix);
        body.push('"');
        signing::push_unpadded_base64(&signature, body);
        body.push_str("\"}}");
        body.push_str(&message[head.len()..]);
        Ok(())
    }
}

impl ServerKeys {
    /// The accept-only fast path of [`Self::parse_and_verify`] for a response body in exactly
    /// the canonical form [`Self::to_signed_body`] writes (what every simulated server
    /// publishes): `Some(keys)` only when the body is that form, names `expected_server_name`,
    /// and its one verify key signed it; `None` means "not shown here", and the caller must
    /// take the general path (which gives the verdict and the reason for anything refused).
    ///
    /// Why the verdict cannot differ from the general path's: the shape is matched byte by
    /// byte (top-level keys in canonical order, inner key IDs strictly ascending, so no
    /// duplicates; no whitespace; strings without escapes or control characters; integers
    /// without leading zeros or `-0`, within ±(2^53 − 1)), so the body *is* the canonical JSON
    /// of what serde_json would parse, and the object without `signatures` is the body with
    /// its `,"signatures":{…}` member cut out — the very bytes the general path re-serialises
    /// and verifies. Keys are decoded by the same functions, the signature is checked by the
    /// same [`crypto_mode::verify`]; anything else (several verify keys, other algorithms,
    /// other signers, extra fields) falls back.
    pub fn parse_canonical_and_verify(
        body: &str,
        expected_server_name: &str,
    ) -> Option<ServerKeys> {
        let parts = CanonicalResponse::parse_and_verify(body, expected_server_name, None)?;
        let mut verify_keys = BTreeMap::new();
        verify_keys.insert(parts.key_id.to_owned(), parts.key);
        Some(ServerKeys {
            server_name: parts.server_name.to_owned(),
            verify_keys,
            old_verify_keys: parts.old_verify_keys,
            valid_until_ts_ms: parts.valid_until_ts_ms,
        })
    }

    /// [`Self::parse_canonical_and_verify`] written over `into` (an object no longer needed:
    /// its strings and map node are reused, and its decoded verify key when the body lists the
    /// same key bytes, which skips the point decoding). Returns whether the fast path accepted
    /// the body; then `into` equals what [`Self::parse_canonical_and_verify`] returns, field by
    /// field. On `false`, `into` is unchanged.
    pub fn parse_canonical_and_verify_into(
        body: &str,
        expected_server_name: &str,
        into: &mut ServerKeys,
    ) -> bool {
        let known = match into.verify_keys.first_key_value() {
            Some((_, key)) if into.verify_keys.len() == 1 => Some(key),
            _ => None,
        };
        let Some(parts) = CanonicalResponse::parse_and_verify(body, expected_server_name, known)
        else {
            return false;
        };
        into.server_name.clear();
        into.server_name.push_str(parts.server_name);
        let only_entry = into.verify_keys.len() == 1;
        match into.verify_keys.get_mut(parts.key_id) {
            Some(key) if only_entry => *key = parts.key,
            _ => {
                into.verify_keys.clear();
                into.verify_keys.insert(parts.key_id.to_owned(), parts.key);
            }
        }
        into.old_verify_keys = parts.old_verify_keys;
        into.valid_until_ts_ms = parts.valid_until_ts_ms;
        true
    }
}

/// What [`ServerKeys::parse_canonical_and_verify`] reads from a canonical body whose signature
/// it has checked.
struct CanonicalResponse<'a> {
    server_name: &'a str,
    key_id: &'a str,
    key: VerifyingKey,
    old_verify_keys: BTreeMap<String, OldVerifyKey>,
    valid_until_ts_ms: i64,
}

impl<'a> CanonicalResponse<'a> {
    /// The fast path's parse and check (see [`ServerKeys::parse_canonical_and_verify`]).
    /// `known`: a key decoded earlier, used instead of decoding the verify key again when its
    /// bytes are the body's (decoding is a pure function of the bytes).
    fn parse_and_verify(
        body: &'a str,
        expected_server_name: &str,
        known: Option<&VerifyingKey>,
    ) -> Option<CanonicalResponse<'a>> {
        let mut cursor = CanonicalCursor {
            text: body,
            bytes: body.as_bytes(),
            at: 0,
        };
        // {"old_verify_keys":{ID:{"expired_ts":INT,"key":STR},...}
        cursor.eat(b"{\"old_verify_keys\":{")?;
        let mut old_verify_keys = BTreeMap::new();
        let mut previous_id: Option<&str> = None;
        while cursor.peek()? != b'}' {
            if previous_id.is_some() {
                cursor.eat(b",")?;
            }
            let key_id = cursor.key_id(previous_id)?;
            cursor.eat(b":{\"expired_ts\":")?;
            let expired_ts_ms = cursor.integer()?;
            cursor.eat(b",\"key\":")?;
            let key = signing::decode_verifying_key_exact(cursor.string()?)?;
            cursor.eat(b"}")?;
            old_verify_keys.insert(key_id.to_owned(), OldVerifyKey { key, expired_ts_ms });
            previous_id = Some(key_id);
        }
        // },"server_name":STR
        cursor.eat(b"},\"server_name\":")?;
        let server_name = cursor.string()?;
        if server_name != expected_server_name {
            return None;
        }
        // ,"signatures":{NAME:{ID:STR}}
        let signatures_start = cursor.at;
        cursor.eat(b",\"signatures\":{")?;
        if cursor.string()? != server_name {
            return None;
        }
        cursor.eat(b":{")?;
        let signed_key_id = cursor.key_id(None)?;
        cursor.eat(b":")?;
        let signature_text = cursor.string()?;
        cursor.eat(b"}}")?;
        let signatures_end = cursor.at;
        // ,"valid_until_ts":INT,"verify_keys":{ID:{"key":STR}}}
        cursor.eat(b",\"valid_until_ts\":")?;
        let valid_until_ts_ms = cursor.integer()?;
        cursor.eat(b",\"verify_keys\":{")?;
        let key_id = cursor.key_id(None)?;
        cursor.eat(b":{\"key\":")?;
        let key_bytes = signing::decode_base64_exact::<32>(cursor.string()?)?;
        let key = match known {
            Some(known) if *known.as_bytes() == key_bytes => *known,
            _ => signing::verifying_key_from_bytes(&key_bytes)?,
        };
        cursor.eat(b"}}}")?;
        if cursor.at != body.len() || key_id != signed_key_id {
            return None;
        }
        let signature_bytes = signing::decode_base64_exact::<64>(signature_text)?;
        thread_local! {
            static MESSAGE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let signature = ed25519_dalek::Signature::from_bytes(&signature_bytes);
        let verified = MESSAGE.with(|message| {
            let mut message = message.borrow_mut();
            message.clear();
            message.extend_from_slice(&body.as_bytes()[..signatures_start]);
            message.extend_from_slice(&body.as_bytes()[signatures_end..]);
            crypto_mode::verify(&key, &message, &signature)
        });
        if !verified {
            return None;
        }
        Some(CanonicalResponse {
            server_name,
            key_id,
            key,
            old_verify_keys,
            valid_until_ts_ms,
        })
    }
}

/// A cursor over bytes expected to be canonical JSON of a known shape (see
/// [`ServerKeys::parse_canonical_and_verify`]); every method returns `None` on anything else.
struct CanonicalCursor<'a> {
    text: &'a str,
    /// `text`'s bytes.
    bytes: &'a [u8],
    at: usize,
}

impl<'a> CanonicalCursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, literal: &[u8]) -> Option<()> {
        self.bytes[self.at..].starts_with(literal).then(|| {
            self.at += literal.len();
        })
    }

    /// A string with no escape and no control character (canonical JSON writes such a string
    /// as its raw bytes); returns its contents.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b"\"")?;
        let start = self.at;
        loop {
            match *self.bytes.get(self.at)? {
                b'"' => break,
                b'\\' | 0x00..=0x1f => return None,
                _ => self.at += 1,
            }
        }
        let text = self.text.get(start..self.at);
        self.at += 1;
        // Cut at ASCII quotes inside a `str`, so always on character boundaries (`get` checks
        // the two ends; the bytes between are valid UTF-8 as part of the `str`).
        text
    }

    /// An `ed25519:<version>` key ID as an object key, strictly after `previous` (canonical
    /// order, no duplicates).
    fn key_id(&mut self, previous: Option<&str>) -> Option<&'a str> {
        let key_id = self.string()?;
        if !KeyId::is_valid(key_id) {
            return None;
        }
        if previous.is_some_and(|previous| previous >= key_id) {
            return None;
        }
        Some(key_id)
    }

    /// A canonical integer: `0` or `-?[1-9][0-9]*`, within ±(2^53 − 1).
    fn integer(&mut self) -> Option<i64> {
        let negative = self.eat(b"-").is_some();
        let start = self.at;
        while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = &self.bytes[start..self.at];
        if digits.is_empty()
            || digits.len() > 16
            || (digits[0] == b'0' && (digits.len() > 1 || negative))
        {
            return None;
        }
        let magnitude = digits
            .iter()
            .fold(0i64, |value, digit| value * 10 + i64::from(digit - b'0'));
        if magnitude > canonical_json::MAX_SAFE_INTEGER {
            return None;
        }
        Some(if negative { -magnitude } else { magnitude })
    }
}

/// Parses `{"key": <base64>}`; `None` for a key ID with an algorithm other than ed25519.
fn parse_key_entry(
    field: &'static str,
    key_id: &str,
    entry: &Value,
) -> Result<Option<VerifyingKey>, ServerKeyError> {
    let malformed = |problem: String| ServerKeyError::MalformedKey {
        field,
        key_id: key_id.to_owned(),
        problem,
    };
    if !key_id.starts_with("ed25519:") {
        return Ok(None);
    }
    KeyId::parse(key_id).map_err(|error| malformed(error.to_string()))?;
    let text = entry
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("`key` is missing or not a string".to_owned()))?;
    signing::decode_verifying_key(text)
        .map(Some)
        .map_err(|error| malformed(error.to_string()))
}

/// The spec's cap on `valid_until_ts`: the lesser of it and `fetched_at_ms + max_validity_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidityClamp {
    /// When the key object was fetched (simulated milliseconds).
    pub fetched_at_ms: i64,
    /// The cap; `None` turns the clamp off (for sweeps; the spec requires 7 days).
    pub max_validity_ms: Option<i64>,
}

impl ValidityClamp {
    /// The spec's rule: believe `valid_until_ts` at most 7 days past the fetch.
    pub fn spec(fetched_at_ms: i64) -> ValidityClamp {
        ValidityClamp {
            fetched_at_ms,
            max_validity_ms: Some(SEVEN_DAYS_MS),
        }
    }

    /// No clamp: `valid_until_ts` is believed as published.
    pub fn unclamped(fetched_at_ms: i64) -> ValidityClamp {
        ValidityClamp {
            fetched_at_ms,
            max_validity_ms: None,
        }
    }

    /// The `valid_until_ts` to use after clamping.
    #[inline]
    pub fn effective_valid_until_ms(&self, valid_until_ts_ms: i64) -> i64 {
        match self.max_validity_ms {
            Some(max) => valid_until_ts_ms.min(self.fetched_at_ms.saturating_add(max)),
            None => valid_until_ts_ms,
        }
    }
}

/// Why a known key object does not supply a usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUnusable {
    /// The key ID is in neither `verify_keys` nor `old_verify_keys`.
    UnknownKey,
    /// A current key whose (clamped) `valid_until_ts` is before the time checked.
    Expired { valid_until_ms: i64 },
    /// An old key that expired before the time checked.
    OldKeyExpired { expired_ts_ms: i64 },
    /// MSC4430: the key is an old key, and only the current key validates a member
    /// co-signature.
    NotCurrent,
}

/// The room v5+ rule: the key that may check a signature on an event sent at
/// `origin_server_ts_ms`, or why there is none.
#[inline]
pub fn key_valid_for_event<'keys>(
    keys: &'keys ServerKeys,
    key_id: &str,
    origin_server_ts_ms: i64,
    clamp: ValidityClamp,
) -> Result<&'keys VerifyingKey, KeyUnusable> {
    if let Some(key) = keys.verify_keys.get(key_id) {
        let valid_until_ms = clamp.effective_valid_until_ms(keys.valid_until_ts_ms);
        return if valid_until_ms >= origin_server_ts_ms {
            Ok(key)
        } else {
            Err(KeyUnusable::Expired { valid_until_ms })
        };
    }
    match keys.old_verify_keys.get(key_id) {
        Some(old) if old.expired_ts_ms >= origin_server_ts_ms => Ok(&old.key),
        Some(old) => Err(KeyUnusable::OldKeyExpired {
            expired_ts_ms: old.expired_ts_ms,
        }),
        None => Err(KeyUnusable::UnknownKey),
    }
}

/// MSC4430: the key that may check a member event's server co-signature at `now_ms`. Only a key
/// in `verify_keys` whose (clamped) `valid_until_ts` is still in the future (`> now_ms`) counts;
/// the event's `origin_server_ts` is irrelevant (a back-dated event gains nothing). Whether a
/// server keeps using an expired response when it cannot re-fetch (the MSC's fail-open rule) is
/// the caller's policy: it decides which `ServerKeys` and fetch time it passes in.
#[inline]
pub fn key_valid_for_member_cosignature<'keys>(
    keys: &'keys ServerKeys,
    key_id: &str,
    now_ms: i64,
    clamp: ValidityClamp,
) -> Result<&'keys VerifyingKey, KeyUnusable> {
    match keys.verify_keys.get(key_id) {
        Some(key) => {
            let valid_until_ms = clamp.effective_valid_until_ms(keys.valid_until_ts_ms);
            if valid_until_ms > now_ms {
                Ok(key)
            } else {
                Err(KeyUnusable::Expired { valid_until_ms })
            }
        }
        None if keys.old_verify_keys.contains_key(key_id) => Err(KeyUnusable::NotCurrent),
        None => Err(KeyUnusable::UnknownKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(version: &str, seed: u8) -> ServerSigningKey {
        ServerSigningKey::from_seed(KeyId::ed25519(version).unwrap(), &[seed; 32])
    }

    fn keys_with_old() -> ServerKeys {
        let mut keys = ServerKeys::with_current_key("a.example", &key("2", 2), 1_000_000);
        keys.old_verify_keys.insert(
            "ed25519:1".into(),
            OldVerifyKey {
                key: key("1", 1).verifying_key(),
                expired_ts_ms: 500_000,
            },
        );
        keys
    }

    #[test]
    fn signed_round_trip_and_checks() {
        let keys = keys_with_old();
        let signed = keys.to_signed_json(&key("2", 2)).unwrap();
        assert_eq!(
            ServerKeys::parse_and_verify(&signed, "a.example"),
            Ok(keys.clone())
        );
        assert!(matches!(
            ServerKeys::parse_and_verify(&signed, "b.example"),
            Err(ServerKeyError::NameMismatch { .. })
        ));
        let mut tampered = signed.clone();
        tampered["valid_until_ts"] = json!(2_000_000);
        assert!(matches!(
            ServerKeys::parse_and_verify(&tampered, "a.example"),
            Err(ServerKeyError::SelfSignature(
                SignatureError::Invalid { .. }
            ))
        ));
        // Signed by a key that is not listed: the listed key's signature is missing.
        let wrong_signer = keys.to_signed_json(&key("1", 1)).unwrap();
        assert!(matches!(
            ServerKeys::parse_and_verify(&wrong_signer, "a.example"),
            Err(ServerKeyError::SelfSignature(
                SignatureError::MissingKey { .. }
            ))
        ));
        // Two current keys: both must sign.
        let mut two = keys.clone();
        two.verify_keys
            .insert("ed25519:3".into(), key("3", 3).verifying_key());
        let one_signature = two.to_signed_json(&key("2", 2)).unwrap();
        assert!(ServerKeys::parse_and_verify(&one_signature, "a.example").is_err());
        let both = two
            .to_signed_json_by(&[&key("2", 2), &key("3", 3)])
            .unwrap();
        assert_eq!(ServerKeys::parse_and_verify(&both, "a.example"), Ok(two));
    }

    #[test]
    fn the_direct_body_is_the_serialised_signed_json_in_both_modes() {
        use crate::matrix::crypto_mode::{self, CryptoMode};
        let mut two = keys_with_old();
        two.verify_keys
            .insert("ed25519:3".into(), key("3", 3).verifying_key());
        two.old_verify_keys.insert(
            "ed25519:0".into(),
            OldVerifyKey {
                key: key("0", 9).verifying_key(),
                expired_ts_ms: -5,
            },
        );
        let mut none_old = ServerKeys::with_current_key("q\"x\u{1}é.example", &key("2", 2), 0);
        none_old.old_verify_keys.clear();
        for mode in [CryptoMode::Ed25519, CryptoMode::Symbolic] {
            let _mode = crypto_mode::enter(mode);
            for keys in [&keys_with_old(), &two, &none_old] {
                for signer in [key("2", 2), key("1", 1)] {
                    assert_eq!(
                        keys.to_signed_body(&signer).unwrap(),
                        keys.to_signed_json(&signer).unwrap().to_string()
                    );
                }
            }
        }
        let mut too_late = keys_with_old();
        too_late.valid_until_ts_ms = 1 << 53;
        assert!(too_late.to_signed_body(&key("2", 2)).is_err());
        assert!(too_late.to_signed_json(&key("2", 2)).is_err());
    }

    /// The general path: serde_json, then [`ServerKeys::parse_and_verify`].
    fn general(body: &str, name: &str) -> Option<ServerKeys> {
        let value: Value = serde_json::from_str(body).ok()?;
        ServerKeys::parse_and_verify(&value, name).ok()
    }

    #[test]
    fn the_canonical_fast_path_accepts_only_what_the_general_path_accepts_identically() {
        use crate::matrix::crypto_mode::{self, CryptoMode};
        let mut with_two_old = keys_with_old();
        with_two_old.old_verify_keys.insert(
            "ed25519:0".into(),
            OldVerifyKey {
                key: key("0", 9).verifying_key(),
                expired_ts_ms: -5,
            },
        );
        let mut none_old = ServerKeys::with_current_key("b.example", &key("2", 2), 0);
        none_old.old_verify_keys.clear();
        let mut escaped = ServerKeys::with_current_key("q\"x\u{1}é.example", &key("2", 2), 7);
        escaped.old_verify_keys.clear();
        let mut two_current = keys_with_old();
        two_current
            .verify_keys
            .insert("ed25519:3".into(), key("3", 3).verifying_key());
        for mode in [CryptoMode::Ed25519, CryptoMode::Symbolic] {
            let _mode = crypto_mode::enter(mode);
            let mut accepted = 0;
            for keys in [&keys_with_old(), &with_two_old, &none_old, &escaped] {
                let name = keys.server_name.as_str();
                // The right signer: accepted by both, identically; a wrong signer: by neither.
                let body = keys.to_signed_body(&key("2", 2)).unwrap();
                let fast = ServerKeys::parse_canonical_and_verify(&body, name);
                assert_eq!(general(&body, name).as_ref(), Some(keys));
                if name == escaped.server_name {
                    // Escapes in strings are left to the general path.
                    assert_eq!(fast, None);
                } else {
                    assert_eq!(fast.as_ref(), Some(keys), "{body}");
                    accepted += 1;
                }
                assert_eq!(ServerKeys::parse_canonical_and_verify(&body, "other"), None);
                let forged = keys.to_signed_body(&key("2", 5)).unwrap();
                assert_eq!(forged.len(), body.len());
                assert_eq!(ServerKeys::parse_canonical_and_verify(&forged, name), None);
                assert_eq!(general(&forged, name), None);
                // Every one-byte change, deletion and insertion: whenever the fast path
                // accepts, the general path accepts the same keys.
                let bytes = body.as_bytes();
                let mut variants = Vec::new();
                for index in 0..bytes.len() {
                    for replacement in [b'0', b'9', b'-', b'"', b'\\', b' ', b'a', b'}', b'.'] {
                        let mut changed = bytes.to_vec();
                        changed[index] = replacement;
                        variants.push(changed);
                    }
                    let mut changed = bytes.to_vec();
                    changed[index] ^= 1;
                    variants.push(changed);
                    let mut shorter = bytes.to_vec();
                    shorter.remove(index);
                    variants.push(shorter);
                    let mut longer = bytes.to_vec();
                    longer.insert(index, b' ');
                    variants.push(longer);
                }
                for variant in variants {
                    let Ok(text) = String::from_utf8(variant) else {
                        continue;
                    };
                    if let Some(fast) = ServerKeys::parse_canonical_and_verify(&text, name) {
                        assert_eq!(Some(fast), general(&text, name), "{text}");
                        // Only the signature's text may differ: its last character carries
                        // two unused bits, which base64 decoding here ignores (both paths).
                        let marker = ":{\"ed25519:2\":\"";
                        let signature_at = body.find(marker).unwrap() + marker.len();
                        // 64 signature bytes are 86 unpadded base64 characters.
                        let last_signature_character = signature_at + 86 - 1;
                        assert_eq!(&body[last_signature_character + 1..][..1], "\"");
                        assert_eq!(text.len(), body.len());
                        assert!(
                            (0..body.len())
                                .filter(|index| text.as_bytes()[*index] != bytes[*index])
                                .all(|index| index == last_signature_character),
                            "a changed body passed: {text}"
                        );
                    }
                }
            }
            assert_eq!(accepted, 3);
            // Shapes the fast path leaves to the general path.
            let both = two_current
                .to_signed_json_by(&[&key("2", 2), &key("3", 3)])
                .unwrap()
                .to_string();
            assert_eq!(
                ServerKeys::parse_canonical_and_verify(&both, "a.example"),
                None
            );
            assert_eq!(general(&both, "a.example"), Some(two_current.clone()));
            let spaced = serde_json::to_string_pretty(
                &keys_with_old().to_signed_json(&key("2", 2)).unwrap(),
            )
            .unwrap();
            assert_eq!(
                ServerKeys::parse_canonical_and_verify(&spaced, "a.example"),
                None
            );
            assert_eq!(general(&spaced, "a.example"), Some(keys_with_old()));
        }
    }

    #[test]
    fn malformed_responses_are_errors() {
        let signed = keys_with_old().to_signed_json(&key("2", 2)).unwrap();
        let parse = |value: &Value| ServerKeys::parse_and_verify(value, "a.example");
        assert_eq!(parse(&json!([])), Err(ServerKeyError::NotAnObject));
        for field in ["server_name", "valid_until_ts", "verify_keys"] {
            let mut broken = signed.clone();
            broken.as_object_mut().unwrap().remove(field);
            assert_eq!(parse(&broken), Err(ServerKeyError::Field(field)), "{field}");
        }
        let mut bad_key = signed.clone();
        bad_key["verify_keys"]["ed25519:2"]["key"] = json!("AAAA");
        assert!(matches!(
            parse(&bad_key),
            Err(ServerKeyError::MalformedKey { .. })
        ));
        let mut bad_id = signed.clone();
        bad_id["verify_keys"]["ed25519:a-b"] = json!({"key": "x"});
        assert!(matches!(
            parse(&bad_id),
            Err(ServerKeyError::MalformedKey { .. })
        ));
        let mut no_expiry = signed.clone();
        no_expiry["old_verify_keys"]["ed25519:1"]
            .as_object_mut()
            .unwrap()
            .remove("expired_ts");
        assert!(matches!(
            parse(&no_expiry),
            Err(ServerKeyError::MalformedKey { .. })
        ));
        let mut empty = ServerKeys::with_current_key("a.example", &key("2", 2), 1);
        empty.verify_keys.clear();
        assert_eq!(parse(&empty.to_json()), Err(ServerKeyError::NoVerifyKeys));
    }

    #[test]
    fn room_v5_rule_with_and_without_the_clamp() {
        let keys = keys_with_old();
        let clamp = ValidityClamp::unclamped(0);
        assert!(key_valid_for_event(&keys, "ed25519:2", 1_000_000, clamp).is_ok());
        assert_eq!(
            key_valid_for_event(&keys, "ed25519:2", 1_000_001, clamp),
            Err(KeyUnusable::Expired {
                valid_until_ms: 1_000_000
            })
        );
        assert!(key_valid_for_event(&keys, "ed25519:1", 500_000, clamp).is_ok());
        assert_eq!(
            key_valid_for_event(&keys, "ed25519:1", 500_001, clamp),
            Err(KeyUnusable::OldKeyExpired {
                expired_ts_ms: 500_000
            })
        );
        assert_eq!(
            key_valid_for_event(&keys, "ed25519:9", 0, clamp),
            Err(KeyUnusable::UnknownKey)
        );
        // Far-future valid_until_ts is capped at fetch + 7 days.
        let mut long = keys.clone();
        long.valid_until_ts_ms = i64::MAX;
        let clamp = ValidityClamp::spec(100);
        assert!(key_valid_for_event(&long, "ed25519:2", 100 + SEVEN_DAYS_MS, clamp).is_ok());
        assert_eq!(
            key_valid_for_event(&long, "ed25519:2", 101 + SEVEN_DAYS_MS, clamp),
            Err(KeyUnusable::Expired {
                valid_until_ms: 100 + SEVEN_DAYS_MS
            })
        );
    }

    #[test]
    fn member_cosignature_needs_the_current_key_at_check_time() {
        let keys = keys_with_old();
        let clamp = ValidityClamp::spec(0);
        assert!(key_valid_for_member_cosignature(&keys, "ed25519:2", 999_999, clamp).is_ok());
        assert_eq!(
            key_valid_for_member_cosignature(&keys, "ed25519:2", 1_000_000, clamp),
            Err(KeyUnusable::Expired {
                valid_until_ms: 1_000_000
            })
        );
        // An old key never validates a co-signature, whatever the event's timestamp.
        assert_eq!(
            key_valid_for_member_cosignature(&keys, "ed25519:1", 0, clamp),
            Err(KeyUnusable::NotCurrent)
        );
        assert_eq!(
            key_valid_for_member_cosignature(&keys, "ed25519:7", 0, clamp),
            Err(KeyUnusable::UnknownKey)
        );
    }
}
