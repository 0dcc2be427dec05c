//! Signing JSON and events with ed25519 (appendices "Signing JSON", "Checking for a signature";
//! s2s "Adding hashes and signatures to outgoing events").
//!
//! Keys are constructed from 32-byte seeds only: nothing here draws OS randomness. Signatures are
//! standard-alphabet unpadded base64; decoding accepts padded and unpadded input as the spec asks.
//! Verification uses `verify_strict`, which also rejects small-order keys and non-canonical `R`.

use std::fmt;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use serde_json::{Map, Value};

use super::canonical_json::{self, CanonicalJsonError};
use super::crypto_mode;
use super::hashes::{self, HashError};
use super::room_version::RoomVersion;

const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_encode_padding(false)
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    // The spec's own test seed (`...XA1`) has non-zero trailing bits; Synapse accepts it too.
    .with_decode_allow_trailing_bits(true);
/// Standard alphabet, no padding written, padding optional when read.
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
/// URL-safe alphabet, no padding written, padding optional when read.
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);

/// Standard-alphabet unpadded base64 (signatures, keys, content hashes).
pub fn unpadded_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Appends the standard-alphabet unpadded base64 of `bytes` to `out` (as [`unpadded_base64`]).
pub fn push_unpadded_base64(bytes: &[u8], out: &mut String) {
    STANDARD.encode_string(bytes, out);
}

/// URL-safe unpadded base64 (event IDs, room IDs, MSC4430 member-key senders).
pub fn url_safe_unpadded_base64(bytes: &[u8]) -> String {
    URL_SAFE.encode(bytes)
}

/// Decodes standard-alphabet base64, padded or unpadded.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(text)
}

/// Decodes standard-alphabet base64 (as [`decode_base64`]) into exactly `N` bytes on the
/// stack; `None` if it does not decode or decodes to another length.
pub fn decode_base64_exact<const N: usize>(text: &str) -> Option<[u8; N]> {
    // Room for any text that could decode to N bytes, so only a longer decoding overflows.
    let mut buffer = [0u8; 96];
    let decoded = STANDARD.decode_slice(text, &mut buffer[..]).ok()?;
    (decoded == N).then(|| buffer[..N].try_into().expect("N bytes"))
}

/// Decodes URL-safe base64, padded or unpadded.
pub fn decode_url_safe_base64(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE.decode(text)
}

/// Decodes a 32-byte ed25519 public key from standard base64 (padded or unpadded).
pub fn decode_verifying_key(text: &str) -> Result<VerifyingKey, KeyFormatError> {
    let bytes = decode_base64(text).map_err(|error| KeyFormatError::Base64(error.to_string()))?;
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| KeyFormatError::Length(bytes.len()))?;
    verifying_key_from_bytes(&bytes).ok_or(KeyFormatError::NotACurvePoint)
}

/// [`decode_verifying_key`] without the reason: `Some` exactly when it gives `Ok`.
pub fn decode_verifying_key_exact(text: &str) -> Option<VerifyingKey> {
    verifying_key_from_bytes(&decode_base64_exact::<32>(text)?)
}

/// A multiply-rotate hasher for 32-byte public keys (uniformly random bytes): a lookup-only map
/// needs no keyed hashing, and this one takes no OS randomness.
#[derive(Default)]
struct PublicKeyHasher(u64);

impl std::hash::Hasher for PublicKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

/// Decoded public keys, by their bytes (see [`verifying_key_from_bytes`]).
type DecodedKeys = std::collections::HashMap<
    [u8; 32],
    Option<VerifyingKey>,
    std::hash::BuildHasherDefault<PublicKeyHasher>,
>;

/// Decoded keys kept per thread before the memo starts afresh (about 200 bytes each).
const DECODED_KEYS_MAX: usize = 1 << 18;

thread_local! {
    static DECODED_KEYS: std::cell::RefCell<DecodedKeys> = std::cell::RefCell::new(DecodedKeys::default());
}

/// The ed25519 public key with these 32 bytes, or `None` if they are not a curve point.
///
/// Decompressing a point costs a field square root (~10 µs, as much as a quarter of a
/// verification); a simulation decodes the same few keys from every key response, member ID and
/// event, so the result (a pure function of the bytes) is memoized per thread.
pub fn verifying_key_from_bytes(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    DECODED_KEYS.with(|decoded| {
        let mut decoded = decoded.borrow_mut();
        if let Some(key) = decoded.get(bytes) {
            return *key;
        }
        if decoded.len() >= DECODED_KEYS_MAX {
            decoded.clear();
        }
        let key = VerifyingKey::from_bytes(bytes).ok();
        decoded.insert(*bytes, key);
        key
    })
}

/// Why a key or key ID is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("key ID {0:?} is not `ed25519:<version>` with a version of [a-zA-Z0-9_]")]
    KeyId(String),
    #[error("bad base64: {0}")]
    Base64(String),
    #[error("a key must be 32 bytes, got {0}")]
    Length(usize),
    #[error("the public key is not a valid ed25519 point")]
    NotACurvePoint,
    #[error("a seed must be 64 hex digits (32 bytes): {0}")]
    SeedHex(String),
}

/// A signing key identifier, `ed25519:<version>` with a version of `[a-zA-Z0-9_]+`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// The key ID `ed25519:<version>`.
    pub fn ed25519(version: &str) -> Result<KeyId, KeyFormatError> {
        KeyId::parse(&format!("ed25519:{version}"))
    }

    /// Parses `ed25519:<version>`; other algorithms are rejected (the only one Matrix defines).
    pub fn parse(text: &str) -> Result<KeyId, KeyFormatError> {
        if KeyId::is_valid(text) {
            Ok(KeyId(text.to_owned()))
        } else {
            Err(KeyFormatError::KeyId(text.to_owned()))
        }
    }

    /// Whether [`KeyId::parse`] accepts `text` (without making a `KeyId`).
    pub fn is_valid(text: &str) -> bool {
        text.strip_prefix("ed25519:").is_some_and(|version| {
            !version.is_empty()
                && version
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after `ed25519:`.
    pub fn version(&self) -> &str {
        &self.0["ed25519:".len()..]
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// An ed25519 signing key with its key ID. Used for server keys and, with key ID `ed25519:1`,
/// for MSC4430 member keys.
#[derive(Clone)]
pub struct ServerSigningKey {
    pub key_id: KeyId,
    pub signing_key: SigningKey,
}

impl fmt::Debug for ServerSigningKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        formatter
            .debug_struct("ServerSigningKey")
            .field("key_id", &self.key_id)
            .field("public", &unpadded_base64(self.verifying_key().as_bytes()))
            .finish()
    }
}

impl ServerSigningKey {
    /// The key derived from a 32-byte seed (RFC 8032).
    pub fn from_seed(key_id: KeyId, seed: &[u8; 32]) -> ServerSigningKey {
        ServerSigningKey {
            key_id,
            signing_key: SigningKey::from_bytes(seed),
        }
    }

    /// The key from a seed given as 64 hex digits.
    pub fn from_hex_seed(key_id: KeyId, hex: &str) -> Result<ServerSigningKey, KeyFormatError> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(KeyFormatError::SeedHex(format!(
                "got {} characters",
                hex.len()
            )));
        }
        let mut seed = [0u8; 32];
        for (index, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * index..2 * index + 2], 16)
                .map_err(|error| KeyFormatError::SeedHex(error.to_string()))?;
        }
        Ok(ServerSigningKey::from_seed(key_id, &seed))
    }

    /// The key from a seed given as base64 (padded or unpadded), as the spec's test vectors do.
    pub fn from_base64_seed(
        key_id: KeyId,
        base64_seed: &str,
    ) -> Result<ServerSigningKey, KeyFormatError> {
        let bytes = decode_base64(base64_seed.trim())
            .map_err(|error| KeyFormatError::Base64(error.to_string()))?;
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyFormatError::Length(bytes.len()))?;
        Ok(ServerSigningKey::from_seed(key_id, &seed))
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing_key.verifying_key()
    }

    /// Signs raw bytes in the thread's [`crypto_mode`], returning the standard unpadded base64
    /// signature.
    pub fn sign_to_base64(&self, message: &[u8]) -> String {
        unpadded_base64(&crypto_mode::sign(&self.signing_key, message))
    }
}

/// Why signing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("only JSON objects can be signed")]
    NotAnObject,
    #[error("`signatures` is not an object of objects")]
    MalformedSignatures,
    #[error("not canonical JSON: {0}")]
    Canonical(#[from] CanonicalJsonError),
    #[error("{0}")]
    Hash(#[from] HashError),
}

/// Why a signature check failed, following the spec's "Checking for a signature".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signed value is not a JSON object")]
    NotAnObject,
    #[error("no signatures from {entity:?}")]
    MissingEntity { entity: String },
    #[error("no signature from {entity:?} with key {key_id}")]
    MissingKey { entity: String, key_id: String },
    #[error("key ID {0:?} does not use a known algorithm")]
    UnknownAlgorithm(String),
    #[error("signature by {entity:?} {key_id} is not valid base64 of 64 bytes")]
    Malformed { entity: String, key_id: String },
    #[error("signature by {entity:?} {key_id} does not verify")]
    Invalid { entity: String, key_id: String },
    #[error("none of the keys {entity:?} signed with is known")]
    NoKnownKey { entity: String },
    #[error("not canonical JSON: {0}")]
    Canonical(#[from] CanonicalJsonError),
}

/// Signs `object` as `signatures[entity][key_id]`, keeping existing signatures and `unsigned`.
/// The signature covers the canonical JSON of the object without `signatures` and `unsigned`.
pub fn sign_json(
    value: &mut Value,
    entity: &str,
    key: &ServerSigningKey,
) -> Result<(), SigningError> {
    let object = value.as_object().ok_or(SigningError::NotAnObject)?;
    let mut canonical = String::with_capacity(256);
    canonical_json::write_object_without(object, &["signatures", "unsigned"], &mut canonical)?;
    let signature = key.sign_to_base64(canonical.as_bytes());
    insert_signature(value, entity, key.key_id.as_str(), signature)
}

/// Stores a signature at `signatures[entity][key_id]`, creating the objects as needed.
pub fn insert_signature(
    value: &mut Value,
    entity: &str,
    key_id: &str,
    signature: String,
) -> Result<(), SigningError> {
    let object = value.as_object_mut().ok_or(SigningError::NotAnObject)?;
    let signatures = object
        .entry("signatures")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(SigningError::MalformedSignatures)?;
    let by_entity = signatures
        .entry(entity)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(SigningError::MalformedSignatures)?;
    by_entity.insert(key_id.to_owned(), Value::String(signature));
    Ok(())
}

/// Looks up and decodes `signatures[entity][key_id]` (spec steps 1-4 for one key).
pub fn read_signature(
    value: &Value,
    entity: &str,
    key_id: &str,
) -> Result<Signature, SignatureError> {
    // 1. The entity must have signed.
    let by_entity = value
        .get("signatures")
        .and_then(|signatures| signatures.get(entity))
        .and_then(Value::as_object)
        .ok_or_else(|| SignatureError::MissingEntity {
            entity: entity.to_owned(),
        })?;
    // 2. Only ed25519 is a known algorithm.
    if !key_id.starts_with("ed25519:") {
        return Err(SignatureError::UnknownAlgorithm(key_id.to_owned()));
    }
    // 3. (The caller supplies the verification key for this key ID.)
    let text = by_entity
        .get(key_id)
        .and_then(Value::as_str)
        .ok_or_else(|| SignatureError::MissingKey {
            entity: entity.to_owned(),
            key_id: key_id.to_owned(),
        })?;
    // 4. Decode the signature, padded or unpadded.
    let malformed = || SignatureError::Malformed {
        entity: entity.to_owned(),
        key_id: key_id.to_owned(),
    };
    let bytes = decode_base64(text).map_err(|_| malformed())?;
    let bytes: [u8; 64] = bytes.as_slice().try_into().map_err(|_| malformed())?;
    Ok(Signature::from_bytes(&bytes))
}

/// Checks `signatures[entity][key_id]` on `value` with `key`: the spec's "Checking for a
/// signature" for one key. Steps 5-6 (strip `signatures` and `unsigned`, canonicalise) are done
/// without copying the object.
pub fn verify_json_signature(
    value: &Value,
    entity: &str,
    key_id: &str,
    key: &VerifyingKey,
) -> Result<(), SignatureError> {
    let object = value.as_object().ok_or(SignatureError::NotAnObject)?;
    let signature = read_signature(value, entity, key_id)?;
    // 5-6. The signed bytes: canonical JSON without `signatures` and `unsigned`.
    let mut canonical = String::with_capacity(256);
    canonical_json::write_object_without(object, &["signatures", "unsigned"], &mut canonical)?;
    // 7. Verify.
    verify_bytes(canonical.as_bytes(), &signature, key, entity, key_id)
}

fn verify_bytes(
    message: &[u8],
    signature: &Signature,
    key: &VerifyingKey,
    entity: &str,
    key_id: &str,
) -> Result<(), SignatureError> {
    if crypto_mode::verify(key, message, signature) {
        Ok(())
    } else {
        Err(SignatureError::Invalid {
            entity: entity.to_owned(),
            key_id: key_id.to_owned(),
        })
    }
}

/// The spec's "Checking for a signature" for an entity, with keys from `lookup(key_id)`:
///
/// 1. `signatures[entity]` must exist;
/// 2. key IDs of unknown algorithms are dropped;
/// 3. keys are looked up, unknown (or, by the caller's rule, expired) ones dropped, and if none
///    is left the check fails;
/// 4. to 7. every remaining signature must verify over the canonical JSON without `signatures`
///    and `unsigned`.
///
/// Returns how many signatures were checked.
pub fn verify_json_entity<F>(
    value: &Value,
    entity: &str,
    lookup: F,
) -> Result<usize, SignatureError>
where
    F: FnMut(&str) -> Option<VerifyingKey>,
{
    let object = value.as_object().ok_or(SignatureError::NotAnObject)?;
    verify_entity_over(value, entity, lookup, || {
        let mut canonical = String::with_capacity(256);
        canonical_json::write_object_without(object, &["signatures", "unsigned"], &mut canonical)?;
        Ok(canonical)
    })
}

/// [`verify_json_entity`] for an event: the signatures cover the redacted event.
pub fn verify_event_entity<F>(
    version: &RoomVersion,
    event: &Value,
    entity: &str,
    lookup: F,
) -> Result<usize, SignatureError>
where
    F: FnMut(&str) -> Option<VerifyingKey>,
{
    if !event.is_object() {
        return Err(SignatureError::NotAnObject);
    }
    verify_entity_over(event, entity, lookup, || {
        hashes::redacted_canonical(version, event).map_err(|error| match error {
            HashError::Canonical(error) => SignatureError::Canonical(error),
            HashError::NotAnObject => SignatureError::NotAnObject,
        })
    })
}

fn verify_entity_over<F, B>(
    value: &Value,
    entity: &str,
    mut lookup: F,
    signed_bytes: B,
) -> Result<usize, SignatureError>
where
    F: FnMut(&str) -> Option<VerifyingKey>,
    B: FnOnce() -> Result<String, SignatureError>,
{
    // 1.
    let by_entity = value
        .get("signatures")
        .and_then(|signatures| signatures.get(entity))
        .and_then(Value::as_object)
        .ok_or_else(|| SignatureError::MissingEntity {
            entity: entity.to_owned(),
        })?;
    // 2-3. Known algorithms with keys the caller holds, in key ID order (map order not trusted).
    let mut known: Vec<(&String, VerifyingKey)> = by_entity
        .keys()
        .filter(|key_id| key_id.starts_with("ed25519:"))
        .filter_map(|key_id| lookup(key_id).map(|key| (key_id, key)))
        .collect();
    if known.is_empty() {
        return Err(SignatureError::NoKnownKey {
            entity: entity.to_owned(),
        });
    }
    known.sort_unstable_by(|left, right| left.0.cmp(right.0));
    // 4-7. The signed bytes are built once for all keys.
    let bytes = signed_bytes()?;
    for (key_id, key) in &known {
        let signature = read_signature(value, entity, key_id)?;
        verify_bytes(bytes.as_bytes(), &signature, key, entity, key_id)?;
    }
    Ok(known.len())
}

/// Signs an event the way a server does (s2s "Adding hashes and signatures to outgoing
/// events"): 1. compute and store the content hash; 2. redact; 3. sign the redacted event
/// (without `signatures` and `unsigned`); 4. copy the signature onto the full event.
pub fn sign_event(
    version: &RoomVersion,
    event: &mut Value,
    entity: &str,
    key: &ServerSigningKey,
) -> Result<(), SigningError> {
    // 1.
    hashes::add_content_hash(event)?;
    // 2-3.
    let signature = event_signature(version, event, key)?;
    // 4.
    insert_signature(event, entity, key.key_id.as_str(), signature)
}

/// The signature `key` makes over the redacted `event` (whose `hashes` must already be set),
/// without storing it. Co-signing (MSC4430) and re-signing use this.
pub fn event_signature(
    version: &RoomVersion,
    event: &Value,
    key: &ServerSigningKey,
) -> Result<String, SigningError> {
    let canonical = hashes::redacted_canonical(version, event)?;
    Ok(key.sign_to_base64(canonical.as_bytes()))
}

/// Checks `signatures[entity][key_id]` of an event with `key`, over the redacted event (s2s
/// "Validating hashes and signatures on received events"). Checking the content hash is a
/// separate step (`hashes::check_content_hash`).
pub fn verify_event_signature(
    version: &RoomVersion,
    event: &Value,
    entity: &str,
    key_id: &str,
    key: &VerifyingKey,
) -> Result<(), SignatureError> {
    if !event.is_object() {
        return Err(SignatureError::NotAnObject);
    }
    let signature = read_signature(event, entity, key_id)?;
    let canonical = hashes::redacted_canonical(version, event).map_err(|error| match error {
        HashError::Canonical(error) => SignatureError::Canonical(error),
        HashError::NotAnObject => SignatureError::NotAnObject,
    })?;
    verify_bytes(canonical.as_bytes(), &signature, key, entity, key_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC_SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";

    fn spec_key() -> ServerSigningKey {
        ServerSigningKey::from_base64_seed(KeyId::parse("ed25519:1").unwrap(), SPEC_SEED).unwrap()
    }

    #[test]
    fn key_id_validity_is_exactly_what_parse_accepts() {
        for text in [
            "ed25519:a1",
            "ed25519:",
            "ed25519:a_B9",
            "ed25519:a-1",
            "ed25519:a 1",
            "ed25519:é",
            "curve25519:a",
            "ed25519",
            "",
            "ed25519:a:b",
            "ED25519:a",
        ] {
            assert_eq!(
                KeyId::is_valid(text),
                KeyId::parse(text).is_ok(),
                "{text:?}"
            );
        }
        assert!(KeyId::is_valid("ed25519:a1"));
        assert!(!KeyId::is_valid("ed25519:"));
    }

    #[test]
    fn spec_json_signing_vectors() {
        let key = spec_key();
        assert_eq!(
            unpadded_base64(key.verifying_key().as_bytes()),
            "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI"
        );
        let mut empty = json!({});
        sign_json(&mut empty, "domain", &key).unwrap();
        assert_eq!(
            empty["signatures"]["domain"]["ed25519:1"],
            "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
        );
        let mut two = json!({"one": 1, "two": "Two"});
        sign_json(&mut two, "domain", &key).unwrap();
        assert_eq!(
            two["signatures"]["domain"]["ed25519:1"],
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"
        );
        verify_json_signature(&two, "domain", "ed25519:1", &key.verifying_key()).unwrap();
    }

    #[test]
    fn padded_signatures_are_accepted_and_tampering_is_caught() {
        let key = spec_key();
        let mut value = json!({"a": 1, "unsigned": {"x": 1}});
        sign_json(&mut value, "domain", &key).unwrap();
        let signature = value["signatures"]["domain"]["ed25519:1"]
            .as_str()
            .unwrap()
            .to_owned();
        value["signatures"]["domain"]["ed25519:1"] = json!(format!("{signature}=="));
        verify_json_signature(&value, "domain", "ed25519:1", &key.verifying_key()).unwrap();
        // `unsigned` is not covered.
        value["unsigned"] = json!({"y": 2});
        verify_json_signature(&value, "domain", "ed25519:1", &key.verifying_key()).unwrap();
        value["a"] = json!(2);
        assert!(matches!(
            verify_json_signature(&value, "domain", "ed25519:1", &key.verifying_key()),
            Err(SignatureError::Invalid { .. })
        ));
        assert!(matches!(
            verify_json_signature(&value, "other", "ed25519:1", &key.verifying_key()),
            Err(SignatureError::MissingEntity { .. })
        ));
        assert!(matches!(
            verify_json_signature(&value, "domain", "ed25519:2", &key.verifying_key()),
            Err(SignatureError::MissingKey { .. })
        ));
        assert!(matches!(
            verify_json_signature(&value, "domain", "curve:1", &key.verifying_key()),
            Err(SignatureError::UnknownAlgorithm(_))
        ));
        value["signatures"]["domain"]["ed25519:1"] = json!("!!");
        assert!(matches!(
            verify_json_signature(&value, "domain", "ed25519:1", &key.verifying_key()),
            Err(SignatureError::Malformed { .. })
        ));
    }

    #[test]
    fn spec_event_signing_vector_with_v10_redaction() {
        let mut event = json!({
            "room_id": "!x:domain", "sender": "@a:domain", "origin": "domain",
            "origin_server_ts": 1000000, "signatures": {}, "hashes": {}, "type": "X",
            "content": {}, "prev_events": [], "auth_events": [], "depth": 3,
            "unsigned": {"age_ts": 1000000}
        });
        let mut v12_event = event.clone();
        sign_event(&RoomVersion::V10, &mut event, "domain", &spec_key()).unwrap();
        assert_eq!(
            event["signatures"]["domain"]["ed25519:1"],
            "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
        );
        sign_event(&RoomVersion::V12, &mut v12_event, "domain", &spec_key()).unwrap();
        assert_eq!(
            v12_event["signatures"]["domain"]["ed25519:1"],
            "Jxp+1glFcZM+nnHpY0EkedRR7u0VmKsJYGnQqIvqus3UvL5X/p1y6wSkLhGoTBel6MZ9lrMIzUqrjqFquWJKBw"
        );
        let key = spec_key().verifying_key();
        verify_event_signature(&RoomVersion::V12, &v12_event, "domain", "ed25519:1", &key).unwrap();
        // A v10 signature does not verify under v12 redaction (it covered `origin`).
        assert!(
            verify_event_signature(&RoomVersion::V12, &event, "domain", "ed25519:1", &key).is_err()
        );
        // Redactable content is not covered by the signature, only by the hash.
        v12_event["content"]["body"] = json!("x");
        verify_event_signature(&RoomVersion::V12, &v12_event, "domain", "ed25519:1", &key).unwrap();
    }

    #[test]
    fn entity_checks_need_one_known_key_and_all_known_keys_valid() {
        let first = spec_key();
        let second = ServerSigningKey::from_seed(KeyId::parse("ed25519:2").unwrap(), &[2; 32]);
        let mut value = json!({"a": 1});
        sign_json(&mut value, "domain", &first).unwrap();
        sign_json(&mut value, "domain", &second).unwrap();
        value["signatures"]["domain"]["curve25519:x"] = json!("ignored");
        let both = |key_id: &str| match key_id {
            "ed25519:1" => Some(first.verifying_key()),
            "ed25519:2" => Some(second.verifying_key()),
            _ => None,
        };
        assert_eq!(verify_json_entity(&value, "domain", both), Ok(2));
        let only_second = |key_id: &str| (key_id == "ed25519:2").then(|| second.verifying_key());
        assert_eq!(verify_json_entity(&value, "domain", only_second), Ok(1));
        assert_eq!(
            verify_json_entity(&value, "domain", |_| None),
            Err(SignatureError::NoKnownKey {
                entity: "domain".into()
            })
        );
        // A known key whose signature is wrong fails the whole check.
        let swapped = |key_id: &str| match key_id {
            "ed25519:1" => Some(second.verifying_key()),
            "ed25519:2" => Some(second.verifying_key()),
            _ => None,
        };
        assert!(matches!(
            verify_json_entity(&value, "domain", swapped),
            Err(SignatureError::Invalid { .. })
        ));
        assert!(matches!(
            verify_json_entity(&value, "other", both),
            Err(SignatureError::MissingEntity { .. })
        ));
        let mut event = json!({"type": "X", "content": {"body": "b"}, "sender": "@a:domain"});
        sign_event(&RoomVersion::V12, &mut event, "domain", &first).unwrap();
        assert_eq!(
            verify_event_entity(&RoomVersion::V12, &event, "domain", both),
            Ok(1)
        );
    }

    #[test]
    fn key_ids_and_seeds_are_validated() {
        assert!(KeyId::parse("ed25519:a_1B").is_ok());
        assert_eq!(KeyId::ed25519("abc").unwrap().version(), "abc");
        for bad in ["ed25519:", "ed25519:a-b", "curve25519:1", "ed25519:a:b"] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
        let id = KeyId::parse("ed25519:1").unwrap();
        assert!(ServerSigningKey::from_hex_seed(id.clone(), "00").is_err());
        assert!(ServerSigningKey::from_hex_seed(id.clone(), &"g".repeat(64)).is_err());
        let from_hex = ServerSigningKey::from_hex_seed(id.clone(), &"01".repeat(32)).unwrap();
        let from_bytes = ServerSigningKey::from_seed(id.clone(), &[1; 32]);
        assert_eq!(from_hex.verifying_key(), from_bytes.verifying_key());
        assert!(ServerSigningKey::from_base64_seed(id, "AAAA").is_err());
        assert!(decode_verifying_key("AAAA").is_err());
        assert_eq!(
            decode_verifying_key("XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI=").unwrap(),
            spec_key().verifying_key()
        );
    }

    #[test]
    fn decoded_keys_are_the_same_from_the_memo_and_bad_points_stay_bad() {
        let key = spec_key().verifying_key();
        for _ in 0..2 {
            assert_eq!(verifying_key_from_bytes(key.as_bytes()), Some(key));
        }
        // y = 2 is not on the curve (no square root): refused, also the second time.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(VerifyingKey::from_bytes(&not_a_point).is_err());
        for _ in 0..2 {
            assert_eq!(verifying_key_from_bytes(&not_a_point), None);
        }
    }

    #[test]
    fn exact_decoding_agrees_with_decoding_then_checking_the_length() {
        let mut texts = vec![String::new(), "!!!!".to_owned(), "A".to_owned()];
        for length in 0..80usize {
            let bytes: Vec<u8> = (0..length)
                .map(|index| (index * 37 + length) as u8)
                .collect();
            let unpadded = unpadded_base64(&bytes);
            texts.push(base64::engine::general_purpose::STANDARD.encode(&bytes));
            // The last character's unused bits set (accepted here, see CONFIG).
            if let Some(last) = unpadded.chars().last() {
                let mut odd = unpadded.clone();
                odd.pop();
                odd.push(if last == '/' { 'A' } else { '/' });
                texts.push(odd);
            }
            texts.push(format!("{unpadded}="));
            texts.push(unpadded);
        }
        for text in &texts {
            let expected = decode_base64(text).ok();
            assert_eq!(
                decode_base64_exact::<32>(text).map(Vec::from),
                expected.clone().filter(|bytes| bytes.len() == 32),
                "{text}"
            );
            assert_eq!(
                decode_base64_exact::<64>(text).map(Vec::from),
                expected.filter(|bytes| bytes.len() == 64),
                "{text}"
            );
            assert_eq!(
                decode_verifying_key_exact(text),
                decode_verifying_key(text).ok()
            );
        }
    }

    #[test]
    fn unpadded_base64_matches_the_spec_examples() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(unpadded_base64(input.as_bytes()), expected);
            assert_eq!(decode_base64(expected).unwrap(), input.as_bytes());
        }
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(url_safe_unpadded_base64(&[0xfb, 0xff]), "-_8");
    }
}
