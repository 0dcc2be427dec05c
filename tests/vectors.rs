//! The spec's cryptographic test vectors (tests/fixtures/signing.json, copied from
//! /work/shared/vectors/signing.json, transcribed from matrix-spec content/appendices.md) and the
//! derived v11/v12 values, reproduced exactly through the library.

use fedsim::matrix::canonical_json;
use fedsim::matrix::hashes;
use fedsim::matrix::member_keys;
use fedsim::matrix::redaction;
use fedsim::matrix::room_version::RoomVersion;
use fedsim::matrix::signing::{self, KeyId, ServerSigningKey};
use serde_json::Value;

fn vectors() -> Value {
    let text = include_str!("fixtures/signing.json");
    serde_json::from_str(text).expect("the fixture is JSON")
}

fn spec_key(vectors: &Value) -> ServerSigningKey {
    let key = &vectors["signing_key"];
    ServerSigningKey::from_base64_seed(
        KeyId::parse(key["key_id"].as_str().unwrap()).unwrap(),
        key["seed_unpadded_base64"].as_str().unwrap(),
    )
    .unwrap()
}

#[test]
fn derived_public_key() {
    let vectors = vectors();
    let key = spec_key(&vectors);
    assert_eq!(
        signing::unpadded_base64(key.verifying_key().as_bytes()),
        vectors["signing_key"]["derived_public_key_unpadded_base64"]
    );
}

#[test]
fn canonical_json_examples() {
    let vectors = vectors();
    let examples = vectors["canonical_json_examples"].as_array().unwrap();
    assert_eq!(examples.len(), 10);
    for example in examples {
        let input = example["input_text"].as_str().unwrap();
        let value = canonical_json::parse_canonicalizable(input).unwrap();
        assert_eq!(
            canonical_json::to_canonical_string(&value).unwrap(),
            example["expected_canonical"].as_str().unwrap(),
            "{input}"
        );
    }
}

#[test]
fn unpadded_base64_examples() {
    let vectors = vectors();
    for (input, expected) in vectors["unpadded_base64_examples"].as_object().unwrap() {
        assert_eq!(
            signing::unpadded_base64(input.as_bytes()),
            expected.as_str().unwrap()
        );
    }
}

#[test]
fn json_signing_vectors() {
    let vectors = vectors();
    let key = spec_key(&vectors);
    let server = vectors["signing_key"]["server_name"].as_str().unwrap();
    for vector in vectors["json_signing"].as_array().unwrap() {
        let mut value = vector["input"].clone();
        signing::sign_json(&mut value, server, &key).unwrap();
        assert_eq!(value, vector["expected_output"]);
        signing::verify_json_signature(&value, server, "ed25519:1", &key.verifying_key()).unwrap();
    }
}

#[test]
fn event_signing_vectors_with_the_v1_to_v10_redaction() {
    let vectors = vectors();
    let key = spec_key(&vectors);
    for vector in vectors["event_signing"].as_array().unwrap() {
        let mut event = vector["input"].clone();
        signing::sign_event(&RoomVersion::V10, &mut event, "domain", &key).unwrap();
        assert_eq!(event, vector["expected_output"], "{}", vector["name"]);
        signing::verify_event_signature(
            &RoomVersion::V10,
            &event,
            "domain",
            "ed25519:1",
            &key.verifying_key(),
        )
        .unwrap();
    }
}

#[test]
fn derived_v11_v12_vectors() {
    let vectors = vectors();
    let key = spec_key(&vectors);
    let derived = vectors["derived_not_from_spec"]["vectors"]
        .as_array()
        .unwrap();
    let inputs = vectors["event_signing"].as_array().unwrap();
    for (vector, input) in derived.iter().zip(inputs) {
        assert_eq!(vector["applies_to_spec_example"], input["name"]);
        for version in [RoomVersion::V10, RoomVersion::V11, RoomVersion::V12] {
            let mut event = input["input"].clone();
            signing::sign_event(&version, &mut event, "domain", &key).unwrap();
            assert_eq!(
                event["hashes"]["sha256"],
                vector["content_hash_sha256_unpadded_base64"]
            );
            let (signature, event_id) = if version == RoomVersion::V10 {
                (
                    &vector["signature_if_signed_over_v1_redaction (reproduces spec)"],
                    &vector["reference_hash_event_id_if_v1_redaction"],
                )
            } else {
                (
                    &vector["signature_if_signed_over_v11_v12_redaction"],
                    &vector["reference_hash_event_id_if_v11_v12_redaction"],
                )
            };
            assert_eq!(
                &event["signatures"]["domain"]["ed25519:1"], signature,
                "{version}"
            );
            assert_eq!(
                &Value::from(hashes::event_id(&version, &event).unwrap()),
                event_id
            );
            if version != RoomVersion::V10 {
                // The object that was signed, as the vector file lists it (signatures empty).
                let mut signed_object =
                    vector["redacted_object_signed_under_v11_v12_rules"].clone();
                signed_object["signatures"] = serde_json::json!({});
                // Redact the hashed input (`hashes` filled in, signatures not yet added).
                let mut hashed = input["input"].clone();
                hashes::add_content_hash(&mut hashed).unwrap();
                let redacted = redaction::redact(&version, &hashed);
                assert_eq!(redacted, signed_object);
            }
        }
    }
}

#[test]
fn member_key_sender_for_the_test_seed() {
    let vectors = vectors();
    let key = spec_key(&vectors);
    assert_eq!(
        member_keys::member_key_user_id(&key.verifying_key()),
        vectors["derived_not_from_spec"]["msc4430_member_key_sender_for_test_seed"]["value"]
    );
}
