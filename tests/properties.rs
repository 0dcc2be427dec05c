//! Property tests: canonical JSON round-trips and is stable with sorted keys; signing then
//! verifying always passes and any change to signed data fails; event IDs follow the hashed
//! fields only; MSC4430 member-key events verify without any key lookup.

mod common;

use ed25519_dalek::VerifyingKey;
use fedsim::matrix::canonical_json;
use fedsim::matrix::event_builder::{self, EventDraft, EventSigner};
use fedsim::matrix::hashes::{self, ContentHashCheck};
use fedsim::matrix::member_keys;
use fedsim::matrix::redaction;
use fedsim::matrix::room_version::RoomVersion;
use fedsim::matrix::signing::{self, KeyId, ServerSigningKey};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn signing_key(seed: [u8; 32]) -> ServerSigningKey {
    ServerSigningKey::from_seed(KeyId::parse("ed25519:k1").unwrap(), &seed)
}

fn arb_version() -> impl Strategy<Value = RoomVersion> {
    prop::sample::select(RoomVersion::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn canonical_json_round_trips_and_is_stable(value in common::arb_json()) {
        let canonical = canonical_json::to_canonical_string(&value).unwrap();
        let parsed = canonical_json::parse_strict(&canonical).unwrap();
        prop_assert_eq!(&parsed, &value);
        prop_assert_eq!(canonical_json::to_canonical_string(&parsed).unwrap(), canonical.clone());
        // Whitespace and layout of the input do not matter.
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let reparsed = canonical_json::parse_strict(&pretty).unwrap();
        prop_assert_eq!(canonical_json::to_canonical_string(&reparsed).unwrap(), canonical);
    }

    #[test]
    fn canonical_objects_list_keys_in_code_point_order(object in common::arb_object()) {
        let mut entries: Vec<(&String, &Value)> = object.iter().collect();
        entries.sort_by(|left, right| {
            left.0.chars().cmp(right.0.chars())
        });
        let expected = format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(key, value)| format!(
                    "{}:{}",
                    canonical_json::to_canonical_string(&Value::from(key.as_str())).unwrap(),
                    canonical_json::to_canonical_string(value).unwrap()
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        prop_assert_eq!(
            canonical_json::to_canonical_string(&Value::Object(object)).unwrap(),
            expected
        );
    }

    #[test]
    fn canonical_strings_have_no_needless_escapes(text in common::arb_string()) {
        let canonical = canonical_json::to_canonical_string(&Value::from(text.clone())).unwrap();
        // Non-ASCII is written raw: the only backslashes are for required escapes.
        for character in text.chars().filter(|character| !character.is_ascii()) {
            prop_assert!(canonical.contains(character));
        }
        prop_assert!(!canonical.contains("\\u00") || text.chars().any(|c| (c as u32) < 0x20));
        prop_assert_eq!(serde_json::from_str::<String>(&canonical).unwrap(), text);
    }

    #[test]
    fn sign_then_verify_passes_and_tampering_fails(
        object in common::arb_object(),
        seed in any::<[u8; 32]>(),
        extra_key in "[a-z]{1,6}",
        extra_value in common::arb_json(),
        flip in any::<prop::sample::Index>(),
    ) {
        let key = signing_key(seed);
        let public = key.verifying_key();
        let mut value = Value::Object(object);
        signing::sign_json(&mut value, "example.org", &key).unwrap();
        signing::verify_json_signature(&value, "example.org", "ed25519:k1", &public).unwrap();

        // Any changed signed byte fails: flip one byte of the signed canonical text.
        let map = value.as_object().unwrap();
        let mut signed_bytes = String::new();
        canonical_json::write_object_without(map, &["signatures", "unsigned"], &mut signed_bytes).unwrap();
        let mut bytes = signed_bytes.into_bytes();
        let position = flip.index(bytes.len());
        bytes[position] ^= 0x01;
        let signature = signing::read_signature(&value, "example.org", "ed25519:k1").unwrap();
        prop_assert!(public.verify_strict(&bytes, &signature).is_err());

        // Adding or changing a signed key fails.
        let mut changed = value.clone();
        let changed_map = changed.as_object_mut().unwrap();
        let differs = changed_map.get(&extra_key) != Some(&extra_value);
        changed_map.insert(extra_key.clone(), extra_value);
        if differs && extra_key != "unsigned" && extra_key != "signatures" {
            prop_assert!(signing::verify_json_signature(&changed, "example.org", "ed25519:k1", &public).is_err());
        }
        // A signature by another key fails.
        let other = signing_key([seed[0].wrapping_add(1); 32]).verifying_key();
        if other != public {
            prop_assert!(signing::verify_json_signature(&value, "example.org", "ed25519:k1", &other).is_err());
        }
    }

    #[test]
    fn signed_events_verify_under_their_version(
        event in common::arb_event(),
        version in arb_version(),
        seed in any::<[u8; 32]>(),
    ) {
        let key = signing_key(seed);
        let mut event = event;
        event.as_object_mut().unwrap().remove("signatures");
        signing::sign_event(&version, &mut event, "example.org", &key).unwrap();
        signing::verify_event_signature(&version, &event, "example.org", "ed25519:k1", &key.verifying_key()).unwrap();
        prop_assert_eq!(hashes::check_content_hash(&event).unwrap(), ContentHashCheck::Valid);
        // Changing hashed content: the content hash fails (the signature may or may not, as
        // redaction may drop the key).
        let mut changed = event.clone();
        changed["content"]["fedsim_marker"] = Value::from(1);
        prop_assert_eq!(hashes::check_content_hash(&changed).unwrap(), ContentHashCheck::Mismatch);
        // Changing a field every redaction keeps fails the signature.
        let mut deeper = event.clone();
        deeper["depth"] = Value::from(deeper["depth"].as_i64().unwrap() + 1);
        prop_assert!(signing::verify_event_signature(&version, &deeper, "example.org", "ed25519:k1", &key.verifying_key()).is_err());
    }

    #[test]
    fn the_borrowing_redacted_writer_matches_redact(event in common::arb_event(), version in arb_version()) {
        let mut written = String::new();
        redaction::write_redacted_canonical(&version, &event, &mut written).unwrap();
        let redacted = Value::Object(redaction::redact_for_hashing(&version, &event));
        prop_assert_eq!(&written, &canonical_json::to_canonical_string(&redacted).unwrap());
        let mut full = redaction::redact(&version, &event);
        full.as_object_mut().unwrap().remove("signatures");
        prop_assert_eq!(full, redacted);
    }

    #[test]
    fn event_ids_follow_the_hashed_fields_only(
        event in common::arb_event(),
        version in arb_version(),
        signatures in common::arb_object(),
        unsigned in common::arb_json(),
        new_depth in 0i64..1000,
    ) {
        let id = hashes::event_id(&version, &event).unwrap();
        let mut resigned = event.clone();
        resigned["signatures"] = Value::Object(signatures);
        resigned["unsigned"] = unsigned;
        prop_assert_eq!(hashes::event_id(&version, &resigned).unwrap(), id.clone());
        let mut deeper = event.clone();
        deeper["depth"] = Value::from(new_depth);
        prop_assert_eq!(hashes::event_id(&version, &deeper).unwrap() == id, event["depth"] == new_depth);
        let mut retyped = event.clone();
        retyped["origin_server_ts"] = Value::from(event["origin_server_ts"].as_i64().unwrap() + 1);
        prop_assert_ne!(hashes::event_id(&version, &retyped).unwrap(), id);
    }

    #[test]
    fn member_key_events_verify_with_no_key_lookup(
        member_seed in any::<[u8; 32]>(),
        server_seed in any::<[u8; 32]>(),
        content in common::arb_object(),
        localpart in "[a-z]{1,8}",
        is_member_event in any::<bool>(),
    ) {
        let version = RoomVersion::MSC4430;
        let member = member_keys::member_signing_key(&member_seed);
        let server = signing_key(server_seed);
        let sender = member_keys::member_key_user_id(&member.verifying_key());
        let mut content: Map<String, Value> = content;
        let (event_type, state_key, cosigner) = if is_member_event {
            content.insert("membership".into(), Value::from("join"));
            content.insert("localpart".into(), Value::from(localpart));
            content.insert("domain".into(), Value::from("a.example"));
            content.remove("join_authorised_via_users_server");
            ("m.room.member", Some(sender.clone()), Some(("a.example", &server)))
        } else {
            ("m.room.message", None, None)
        };
        let draft = EventDraft {
            room_id: Some("!room".into()),
            sender: sender.clone(),
            event_type: event_type.into(),
            state_key,
            content: Value::Object(content),
            prev_events: vec!["$p".into()],
            auth_events: vec![],
            depth: 2,
            origin_server_ts_ms: 7,
        };
        let pdu = event_builder::build_pdu(draft, &version, EventSigner::Member { member_key: &member, cosigner }).unwrap();
        let no_lookup = |_: &str, _: &str| -> Option<VerifyingKey> { panic!("no lookup expected") };
        prop_assert!(event_builder::verify_pdu_signatures(&version, &pdu, no_lookup).is_ok());
        prop_assert!(member_keys::verify_member_signature(&version, &pdu.json).is_ok());
        // Another member key claiming this event fails.
        let impostor = member_keys::member_signing_key(&[member_seed[0].wrapping_add(1); 32]);
        let mut forged = pdu.clone();
        std::sync::Arc::make_mut(&mut forged.json)["sender"] = Value::from(member_keys::member_key_user_id(&impostor.verifying_key()));
        forged.sender = forged.json["sender"].as_str().unwrap().to_owned();
        if forged.sender != sender {
            prop_assert!(event_builder::verify_pdu_signatures(&version, &forged, no_lookup).is_err());
        }
    }

    #[test]
    fn nothing_panics_on_arbitrary_json(value in arb_any_json(), version in arb_version(), seed in any::<[u8; 32]>()) {
        let key = signing_key(seed);
        let _ = canonical_json::to_canonical_string(&value);
        let _ = canonical_json::check_strict(&value);
        let _ = hashes::content_hash(&value);
        let _ = hashes::check_content_hash(&value);
        let _ = hashes::event_id(&version, &value);
        let _ = redaction::redact(&version, &value);
        let _ = signing::verify_event_signature(&version, &value, "x", "ed25519:1", &key.verifying_key());
        let _ = signing::verify_json_signature(&value, "x", "ed25519:1", &key.verifying_key());
        let _ = member_keys::verify_member_signature(&version, &value);
        let _ = fedsim::matrix::server_keys::ServerKeys::parse_and_verify(&value, "x");
        let mut signed = value.clone();
        let _ = signing::sign_event(&version, &mut signed, "x", &key);
        let mut signed = value.clone();
        let _ = signing::sign_json(&mut signed, "x", &key);
        let _ = canonical_json::parse_strict(&value.to_string());
        if let Ok(pdu) = fedsim::matrix::Pdu::from_json(value.clone(), "$e".into(), &version) {
            let _ = event_builder::verify_pdu_signatures(&version, &pdu, |_, _| Some(key.verifying_key()));
        }
    }

    #[test]
    fn member_key_decoding_never_panics(text in "@?[A-Za-z0-9_+/=-]{0,50}|\\PC{0,50}") {
        let _ = member_keys::decode_member_key(&text);
    }
}

/// Any JSON, including floats, huge integers and odd shapes around event fields.
fn arb_any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        common::arb_leaf(),
        any::<f64>()
            .prop_filter_map("finite", serde_json::Number::from_f64)
            .prop_map(Value::Number),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
    ];
    let keys = prop_oneof![
        prop::sample::select(vec![
            "type",
            "content",
            "sender",
            "signatures",
            "hashes",
            "sha256",
            "depth",
            "prev_events",
            "auth_events",
            "room_id",
            "state_key",
            "unsigned",
            "domain",
            "membership",
            "third_party_invite",
            "signed",
            "x",
            "ed25519:1",
            "origin_server_ts",
            "verify_keys",
            "old_verify_keys",
            "server_name",
            "valid_until_ts",
            "key",
            "expired_ts",
        ])
        .prop_map(str::to_owned),
        common::arb_string(),
    ];
    leaf.prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(keys.clone(), inner, 0..7)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}
