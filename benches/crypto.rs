//! Cost of fedsim's signed PDUs against raw ed25519-dalek.
//!
//! `cargo bench --bench crypto` prints divan's table (raw sign/verify, PDU build/verify, MSC4430
//! member-event verification with the member key decoded per event or cached, and the key
//! validity checks the engine calls in hot loops), then a short same-process comparison with
//! the ratios the issue targets: PDU build <= 1.3x a raw sign, PDU verify <= 1.2x a raw verify.
//! The raw operations sign and verify the very bytes a PDU signature covers, so the ratio is the
//! overhead of canonical JSON, hashing and redaction.

use std::hint::black_box;
use std::time::{Duration, Instant};

use divan::Bencher;
use divan::counter::ItemsCount;
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use fedsim::matrix::event_builder::{self, EventDraft, EventSigner};
use fedsim::matrix::hashes;
use fedsim::matrix::member_keys;
use fedsim::matrix::pdu::Pdu;
use fedsim::matrix::room_version::RoomVersion;
use fedsim::matrix::server_keys::{self, ServerKeys, ValidityClamp};
use fedsim::matrix::signing::{KeyId, ServerSigningKey};
use serde_json::json;

fn main() {
    divan::main();
    print_ratios();
}

fn server_key() -> ServerSigningKey {
    ServerSigningKey::from_seed(KeyId::parse("ed25519:a_1").unwrap(), &[11; 32])
}

fn member_key() -> ServerSigningKey {
    member_keys::member_signing_key(&[22; 32])
}

/// A typical message: 3 prev_events, 4 auth_events, a 100-character body.
fn message_draft() -> EventDraft {
    let id = |n: u8| format!("${}", "A".repeat(42) + &n.to_string());
    EventDraft {
        room_id: Some("!abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ".into()),
        sender: "@alice:server-17.example".into(),
        event_type: "m.room.message".into(),
        state_key: None,
        content: json!({"msgtype": "m.text", "body": "x".repeat(100)}),
        prev_events: (1..=3).map(id).collect(),
        auth_events: (4..=7).map(id).collect(),
        depth: 1234,
        origin_server_ts_ms: 1_700_000_000_000,
    }
}

/// An MSC4430 join: member-key sender, localpart and domain, co-signed by the domain.
fn member_draft() -> EventDraft {
    let sender = member_keys::member_key_user_id(&member_key().verifying_key());
    EventDraft {
        sender: sender.clone(),
        event_type: "m.room.member".into(),
        state_key: Some(sender),
        content: json!({"membership": "join", "localpart": "alice", "domain": "server-17.example", "displayname": "Alice"}),
        ..message_draft()
    }
}

fn built_message() -> Pdu {
    let key = server_key();
    let signer = EventSigner::Server {
        server_name: "server-17.example",
        key: &key,
    };
    event_builder::build_pdu(message_draft(), &RoomVersion::V12, signer).unwrap()
}

fn built_member() -> Pdu {
    let member = member_key();
    let server = server_key();
    let signer = EventSigner::Member {
        member_key: &member,
        cosigner: Some(("server-17.example", &server)),
    };
    event_builder::build_pdu(member_draft(), &RoomVersion::MSC4430, signer).unwrap()
}

/// The bytes a message PDU's signature covers.
fn signed_bytes() -> Vec<u8> {
    hashes::redacted_canonical(&RoomVersion::V12, &built_message().json)
        .unwrap()
        .into_bytes()
}

fn domain_keys() -> ServerKeys {
    ServerKeys::with_current_key("server-17.example", &server_key(), 1_800_000_000_000)
}

#[divan::bench]
fn raw_ed25519_sign(bencher: Bencher) {
    let key = server_key();
    let message = signed_bytes();
    bencher
        .counter(ItemsCount::new(1usize))
        .bench_local(|| key.signing_key.sign(black_box(&message)));
}

#[divan::bench]
fn raw_ed25519_verify_strict(bencher: Bencher) {
    let key = server_key();
    let message = signed_bytes();
    let signature: Signature = key.signing_key.sign(&message);
    let public = key.verifying_key();
    bencher
        .counter(ItemsCount::new(1usize))
        .bench_local(|| public.verify_strict(black_box(&message), black_box(&signature)));
}

#[divan::bench]
fn pdu_build_v12(bencher: Bencher) {
    let key = server_key();
    let signer = EventSigner::Server {
        server_name: "server-17.example",
        key: &key,
    };
    bencher
        .counter(ItemsCount::new(1usize))
        .with_inputs(message_draft)
        .bench_local_values(|draft| event_builder::build_pdu(draft, &RoomVersion::V12, signer));
}

#[divan::bench]
fn pdu_verify_v12(bencher: Bencher) {
    let pdu = built_message();
    let public = server_key().verifying_key();
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        event_builder::verify_pdu_signatures(&RoomVersion::V12, black_box(&pdu), |_, _| {
            Some(public)
        })
    });
}

#[divan::bench]
fn pdu_verify_and_content_hash_v12(bencher: Bencher) {
    let pdu = built_message();
    let public = server_key().verifying_key();
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        event_builder::verify_pdu_signatures(&RoomVersion::V12, black_box(&pdu), |_, _| {
            Some(public)
        })
        .unwrap();
        hashes::check_content_hash(&pdu.json)
    });
}

#[divan::bench]
fn msc4430_member_build_cosigned(bencher: Bencher) {
    let member = member_key();
    let server = server_key();
    let signer = EventSigner::Member {
        member_key: &member,
        cosigner: Some(("server-17.example", &server)),
    };
    bencher
        .counter(ItemsCount::new(1usize))
        .with_inputs(member_draft)
        .bench_local_values(|draft| event_builder::build_pdu(draft, &RoomVersion::MSC4430, signer));
}

/// Member signature (key decoded from `sender` each time) + server co-signature (link).
#[divan::bench]
fn msc4430_member_verify_uncached_key(bencher: Bencher) {
    let pdu = built_member();
    let keys = domain_keys();
    let clamp = ValidityClamp::spec(1_700_000_000_000);
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        member_keys::verify_member_signature(&RoomVersion::MSC4430, black_box(&pdu.json)).unwrap();
        member_keys::verify_member_link(
            &RoomVersion::MSC4430,
            &pdu.json,
            &keys,
            1_700_000_000_001,
            clamp,
        )
    });
}

/// The same with the sender's key decoded once and reused.
#[divan::bench]
fn msc4430_member_verify_cached_key(bencher: Bencher) {
    let pdu = built_member();
    let keys = domain_keys();
    let clamp = ValidityClamp::spec(1_700_000_000_000);
    let member: VerifyingKey = member_keys::decode_member_key(&pdu.sender).unwrap();
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        member_keys::verify_member_signature_with_key(
            &RoomVersion::MSC4430,
            black_box(&pdu.json),
            &member,
        )
        .unwrap();
        member_keys::verify_member_link(
            &RoomVersion::MSC4430,
            &pdu.json,
            &keys,
            1_700_000_000_001,
            clamp,
        )
    });
}

/// Decoding a member key from `sender` alone (base64 + curve point decompression).
#[divan::bench]
fn msc4430_decode_member_key(bencher: Bencher) {
    let sender = built_member().sender;
    bencher
        .counter(ItemsCount::new(1usize))
        .bench_local(|| member_keys::decode_member_key(black_box(&sender)));
}

#[divan::bench]
fn key_valid_for_event(bencher: Bencher) {
    let keys = domain_keys();
    let clamp = ValidityClamp::spec(1_700_000_000_000);
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        server_keys::key_valid_for_event(
            black_box(&keys),
            black_box("ed25519:a_1"),
            black_box(1_700_000_000_500),
            clamp,
        )
        .is_ok()
    });
}

#[divan::bench]
fn key_valid_for_member_cosignature(bencher: Bencher) {
    let keys = domain_keys();
    let clamp = ValidityClamp::spec(1_700_000_000_000);
    bencher.counter(ItemsCount::new(1usize)).bench_local(|| {
        server_keys::key_valid_for_member_cosignature(
            black_box(&keys),
            black_box("ed25519:a_1"),
            black_box(1_700_000_000_500),
            clamp,
        )
        .is_ok()
    });
}

/// The median over `rounds` of the mean time per call in a batch of about `batch` duration.
/// The operations are measured in interleaved rounds, so load from other processes on a shared
/// machine affects all of them alike.
fn interleaved_medians(
    rounds: usize,
    batch: Duration,
    operations: &mut [&mut dyn FnMut()],
) -> Vec<Duration> {
    let mut samples = vec![Vec::with_capacity(rounds); operations.len()];
    for operation in operations.iter_mut() {
        for _ in 0..100 {
            operation();
        }
    }
    for _ in 0..rounds {
        for (operation, samples) in operations.iter_mut().zip(&mut samples) {
            let start = Instant::now();
            let mut calls = 0u32;
            while start.elapsed() < batch {
                for _ in 0..20 {
                    operation();
                }
                calls += 20;
            }
            samples.push(start.elapsed() / calls);
        }
    }
    samples
        .into_iter()
        .map(|mut samples| {
            samples.sort_unstable();
            samples[samples.len() / 2]
        })
        .collect()
}

/// Same-process comparison printed after divan's table: throughput and the target ratios.
fn print_ratios() {
    let key = server_key();
    let public = key.verifying_key();
    let message = signed_bytes();
    let signature: Signature = key.signing_key.sign(&message);
    let signer = EventSigner::Server {
        server_name: "server-17.example",
        key: &key,
    };
    let pdu = built_message();
    let draft = message_draft();
    let mut raw_sign_operation = || {
        black_box(key.signing_key.sign(black_box(&message)));
    };
    let mut raw_verify_operation = || {
        black_box(public.verify_strict(black_box(&message), &signature)).unwrap();
    };
    let mut build_operation = || {
        black_box(event_builder::build_pdu(
            draft.clone(),
            &RoomVersion::V12,
            signer,
        ))
        .unwrap();
    };
    let mut verify_operation = || {
        black_box(event_builder::verify_pdu_signatures(
            &RoomVersion::V12,
            black_box(&pdu),
            |_, _| Some(public),
        ))
        .unwrap();
    };
    let medians = interleaved_medians(
        15,
        Duration::from_millis(20),
        &mut [
            &mut raw_sign_operation,
            &mut raw_verify_operation,
            &mut build_operation,
            &mut verify_operation,
        ],
    );
    let [raw_sign, raw_verify, build, verify] = medians[..] else {
        unreachable!("four operations were measured")
    };
    let per_second = |duration: Duration| 1.0 / duration.as_secs_f64();
    let ratio = |fedsim: Duration, raw: Duration| fedsim.as_secs_f64() / raw.as_secs_f64();
    println!();
    println!(
        "same-process comparison, interleaved medians ({} signed bytes per PDU; build includes cloning the draft):",
        message.len()
    );
    println!(
        "  raw ed25519 sign           {:>9.0}/s",
        per_second(raw_sign)
    );
    println!(
        "  raw ed25519 verify_strict  {:>9.0}/s",
        per_second(raw_verify)
    );
    println!("  fedsim PDU build (v12)     {:>9.0}/s", per_second(build));
    println!("  fedsim PDU verify (v12)    {:>9.0}/s", per_second(verify));
    println!(
        "  build / raw sign   = {:.2}x (target <= 1.30x)",
        ratio(build, raw_sign)
    );
    println!(
        "  verify / raw verify = {:.2}x (target <= 1.20x)",
        ratio(verify, raw_verify)
    );
}
