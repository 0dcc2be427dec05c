//! Event signing cross-checked with ruma-signatures 0.22: events fedsim signs verify in ruma,
//! and ruma's `hash_and_sign_event` produces byte-identical JSON to fedsim's `sign_event`
//! (ed25519 signatures are deterministic), for random events in room versions 10, 11 and 12.

mod common;

use fedsim::matrix::hashes::{self, ContentHashCheck};
use fedsim::matrix::room_version::RoomVersion;
use fedsim::matrix::signing::{self, KeyId, ServerSigningKey};
use proptest::prelude::*;
use ruma_common::CanonicalJsonValue;
use ruma_common::canonical_json::CanonicalJsonObject;
use ruma_common::room_version_rules::RoomVersionRules;
use ruma_common::serde::Base64;
use ruma_signatures::{Ed25519KeyPair, PublicKeyMap, Verified};
use serde_json::Value;

fn to_ruma_object(value: &Value) -> CanonicalJsonObject {
    match CanonicalJsonValue::try_from(value.clone()).unwrap() {
        CanonicalJsonValue::Object(object) => object,
        other => panic!("not an object: {other:?}"),
    }
}

/// A PKCS#8 v1 DER document for an ed25519 seed (fixed 16-byte header + the seed).
fn ruma_key_pair(seed: &[u8; 32]) -> Ed25519KeyPair {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    Ed25519KeyPair::from_der(&der, "k1".to_owned()).unwrap()
}

fn rules(version: &RoomVersion) -> RoomVersionRules {
    match version.id {
        "10" => RoomVersionRules::V10,
        "11" => RoomVersionRules::V11,
        _ => RoomVersionRules::V12,
    }
}

/// ruma asks for more signatures than the spec for two content keys, which random content can
/// hold: `join_authorised_via_users_server` on any event (the spec: joins only) and a
/// third-party `m.room.member` invite (which needs the 3PID signature). Those keys are removed;
/// everything else is random. ruma also insists that an `m.room.member` event has a string
/// `membership` before it checks signatures, so one is supplied where missing.
fn strip_extra_signers(mut event: Value) -> Value {
    let is_member = event["type"] == "m.room.member";
    let content = event["content"].as_object_mut().unwrap();
    if is_member && !content.get("membership").is_some_and(Value::is_string) {
        content.insert("membership".into(), Value::from("join"));
    }
    content.remove("join_authorised_via_users_server");
    content.remove("third_party_invite");
    event.as_object_mut().unwrap().remove("signatures");
    event
}

fn check(version: &RoomVersion, event: Value, seed: [u8; 32]) -> Result<(), TestCaseError> {
    let event = strip_extra_signers(event);
    let ours_key = ServerSigningKey::from_seed(KeyId::parse("ed25519:k1").unwrap(), &seed);
    let rules = rules(version);

    // fedsim signs, ruma verifies.
    let mut ours = event.clone();
    signing::sign_event(version, &mut ours, "example.org", &ours_key).unwrap();
    let public_keys: PublicKeyMap = [(
        "example.org".to_owned(),
        [(
            "ed25519:k1".to_owned(),
            Base64::new(ours_key.verifying_key().to_bytes().to_vec()),
        )]
        .into(),
    )]
    .into();
    let verdict = ruma_signatures::verify_event(&public_keys, &to_ruma_object(&ours), &rules);
    prop_assert!(matches!(verdict, Ok(Verified::All)), "{verdict:?}");

    // ruma signs: the same JSON, and fedsim verifies it.
    let mut theirs = to_ruma_object(&event);
    ruma_signatures::hash_and_sign_event(
        "example.org",
        &ruma_key_pair(&seed),
        &mut theirs,
        &rules.redaction,
    )
    .unwrap();
    let theirs = serde_json::to_value(theirs).unwrap();
    prop_assert_eq!(&theirs, &ours);
    signing::verify_event_signature(
        version,
        &theirs,
        "example.org",
        "ed25519:k1",
        &ours_key.verifying_key(),
    )
    .unwrap();
    prop_assert_eq!(
        hashes::check_content_hash(&theirs).unwrap(),
        ContentHashCheck::Valid
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(debug_assertions) { 100 } else { 500 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn v10_signing_agrees_with_ruma(event in common::arb_event(), seed in any::<[u8; 32]>()) {
        check(&RoomVersion::V10, event, seed)?;
    }

    #[test]
    fn v11_signing_agrees_with_ruma(event in common::arb_event(), seed in any::<[u8; 32]>()) {
        check(&RoomVersion::V11, event, seed)?;
    }

    #[test]
    fn v12_signing_agrees_with_ruma(event in common::arb_event(), seed in any::<[u8; 32]>()) {
        check(&RoomVersion::V12, event, seed)?;
    }
}
