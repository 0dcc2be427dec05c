//! Time per received PDU through one server's whole receipt pipeline (checks 1–6 and, under P1,
//! the MSC4430 link rule), on real signed events: a 3-server room (creator, two members), and a
//! chain of 200 messages by one member that another server receives by `/send` in order.
//! Messages are built and signed once, outside the timing; each sample starts from a fresh
//! server that holds only the room's setup events.
//!
//! `two_receivers_*`: two servers receive each message, with and without sharing checks 1–3.
//!
//! `receivers_*` (N = 10, 100): N servers receive each of the 200 messages under P1 —
//! `unshared` (every server runs everything), `shared_checks` (checks 1–3 through one
//! `CheckMemo`), `shared_all` (and checks 4–5, the states and current states through one
//! `SharedEventFacts`). Divan's items are server-receipts, so its throughput is the cost per PDU
//! per server.
//!
//! `crypto_floor_sign` / `crypto_floor_verify`: one raw ed25519-dalek signature / strict
//! verification of a message's signed bytes (the redacted canonical JSON), the floor of
//! issue 5's bench-medium target. Before the benches run, one pass of `receivers_shared_all`
//! for each N is timed by hand and printed with its ratio to that floor (one signature and one
//! verification per message: under P1 every receiver checks the same member-key signature,
//! once through the memo).
//!
//! Run: `cargo bench --bench room_pipeline`.

use std::sync::OnceLock;
use std::time::Instant;

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use ed25519_dalek::{Signer, SigningKey};
use fedsim::matrix::Pdu;
use fedsim::matrix::hashes::redacted_canonical;
use fedsim::room::memo::PduCopy;
use fedsim::room::policy::{ArrivalPath, RoomPolicy};
use fedsim::room::shared::SharedEventFacts;
use fedsim::room::testbed::{Federation, User, public_room};
use serde_json::json;

fn main() {
    print_ratio_to_crypto_floor();
    divan::main();
}

/// Times one pass of N receivers (shared) and the raw crypto per message, and prints both.
fn print_ratio_to_crypto_floor() {
    let messages = p1_messages();
    let (sign_us, verify_us) = crypto_floor_us(messages);
    let floor_us = sign_us + verify_us;
    println!(
        "crypto floor per message: sign {sign_us:.1} us + verify {verify_us:.1} us = {floor_us:.1} us"
    );
    for receivers in RECEIVERS {
        // The fastest of three passes: the machine is shared, slower passes are interference.
        let per_message_us = (0..3)
            .map(|_| {
                let federation = receivers_setup(receivers, Sharing::All);
                let started = Instant::now();
                black_box(receive_all(federation, messages, receivers));
                started.elapsed().as_secs_f64() * 1e6 / MESSAGES as f64
            })
            .fold(f64::INFINITY, f64::min);
        println!(
            "{receivers} receivers, shared: {per_message_us:.1} us per message, \
             {:.2} us per PDU per server, {:.1}x the crypto floor",
            per_message_us / receivers as f64,
            per_message_us / floor_us
        );
    }
}

/// Microseconds per raw ed25519 signature and per strict verification of the messages' signed
/// bytes (the fastest of twenty passes over the 200 messages).
fn crypto_floor_us(messages: &[Pdu]) -> (f64, f64) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let verifying = key.verifying_key();
    let signed: Vec<String> = messages
        .iter()
        .map(|pdu| redacted_canonical(&RoomPolicy::P1.room_version, &pdu.json).unwrap())
        .collect();
    let signatures: Vec<_> = signed
        .iter()
        .map(|bytes| key.sign(bytes.as_bytes()))
        .collect();
    let fastest_us = |pass: &dyn Fn()| {
        (0..20)
            .map(|_| {
                let started = Instant::now();
                pass();
                started.elapsed().as_secs_f64() * 1e6 / signed.len() as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    let sign_us = fastest_us(&|| {
        for bytes in &signed {
            black_box(key.sign(black_box(bytes.as_bytes())));
        }
    });
    let verify_us = fastest_us(&|| {
        for (bytes, signature) in signed.iter().zip(&signatures) {
            verifying
                .verify_strict(black_box(bytes.as_bytes()), signature)
                .unwrap();
        }
    });
    (sign_us, verify_us)
}

const MESSAGES: usize = 200;

fn setup(policy: &RoomPolicy) -> (Federation, User) {
    let version = policy.room_version;
    let carol = User::new(&version, "carol", "c.example");
    let alice = User::new(&version, "alice", "a.example");
    let bob = User::new(&version, "bob", "b.example");
    let (federation, _) = public_room(
        &["a.example", "b.example", "c.example"],
        policy,
        &carol,
        &[&alice, &bob],
    );
    (federation, bob)
}

fn messages(policy: &RoomPolicy) -> Vec<Pdu> {
    let (mut federation, bob) = setup(policy);
    (0..MESSAGES)
        .map(|index| {
            federation
                .server("b.example")
                .send(
                    &bob,
                    "m.room.message",
                    None,
                    json!({"body": format!("message {index}")}),
                    100 + index as i64,
                )
                .expect("the message builds")
        })
        .collect()
}

fn bench_policy(bencher: Bencher, policy: &RoomPolicy, messages: &[Pdu]) {
    bencher
        .counter(ItemsCount::new(MESSAGES))
        .with_inputs(|| setup(policy).0)
        .bench_local_values(|mut federation| {
            let server = federation.server("a.example");
            for message in messages {
                black_box(server.receive(message, ArrivalPath::Send, 1_000));
            }
            federation
        });
}

/// Two servers (a.example and c.example) receive every message; with `shared`, checks 1–3 run
/// once per message through a `CheckMemo`.
fn bench_two_receivers(bencher: Bencher, messages: &[Pdu], shared: bool) {
    bencher
        .counter(ItemsCount::new(2 * MESSAGES))
        .with_inputs(|| {
            let mut federation = setup(&RoomPolicy::P1).0;
            if shared {
                federation.share_checks();
            }
            federation
        })
        .bench_local_values(|mut federation| {
            for message in messages {
                for name in ["a.example", "c.example"] {
                    black_box(federation.deliver_one(message, name, ArrivalPath::Send, 1_000));
                }
            }
            federation
        });
}

#[divan::bench(sample_count = 20)]
fn two_receivers_p1_unshared(bencher: Bencher) {
    bench_two_receivers(bencher, p1_messages(), false);
}

#[divan::bench(sample_count = 20)]
fn two_receivers_p1_shared_checks(bencher: Bencher) {
    bench_two_receivers(bencher, p1_messages(), true);
}

fn p1_messages() -> &'static [Pdu] {
    static MESSAGES_P1: OnceLock<Vec<Pdu>> = OnceLock::new();
    MESSAGES_P1.get_or_init(|| messages(&RoomPolicy::P1))
}

#[divan::bench(sample_count = 20)]
fn receive_message_p0(bencher: Bencher) {
    static MESSAGES_P0: OnceLock<Vec<Pdu>> = OnceLock::new();
    let messages = MESSAGES_P0.get_or_init(|| messages(&RoomPolicy::P0));
    bench_policy(bencher, &RoomPolicy::P0, messages);
}

#[divan::bench(sample_count = 20)]
fn receive_message_p1(bencher: Bencher) {
    bench_policy(bencher, &RoomPolicy::P1, p1_messages());
}

const RECEIVERS: [usize; 2] = [10, 100];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sharing {
    Nothing,
    Checks,
    All,
}

/// The 3-server room plus receivers up to `receivers` (a.example, c.example and
/// r3.example...), every receiver holding the room's setup events; sharing per `sharing` from
/// then on. b.example (bob's) is not a receiver.
fn receivers_setup(receivers: usize, sharing: Sharing) -> Federation {
    let policy = RoomPolicy::P1;
    let version = policy.room_version;
    let carol = User::new(&version, "carol", "c.example");
    let alice = User::new(&version, "alice", "a.example");
    let bob = User::new(&version, "bob", "b.example");
    let mut names: Vec<String> = ["a.example", "b.example", "c.example"]
        .map(str::to_owned)
        .to_vec();
    names.extend((3..=receivers).map(|index| format!("r{index}.example")));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut federation, _) = public_room(&names, &policy, &carol, &[&alice, &bob]);
    if sharing != Sharing::Nothing {
        federation.share_checks();
    }
    if sharing == Sharing::All {
        federation.share_facts(&SharedEventFacts::new());
    }
    federation
}

/// Every receiver receives every message by `/send`, message by message; with a memo, each
/// message is wrapped once as a `PduCopy` for all receivers.
fn receive_all(mut federation: Federation, messages: &[Pdu], receivers: usize) -> Federation {
    let receiver_indices: Vec<usize> = (0..=receivers).filter(|&index| index != 1).collect();
    assert_eq!(receiver_indices.len(), receivers);
    for message in messages {
        match &mut federation.memo {
            // The copy is wrapped once, as the sender's transaction would carry it.
            Some(memo) => {
                let copy = PduCopy::new(serde_json::Value::clone(&message.json));
                for &index in &receiver_indices {
                    let server = &mut federation.servers[index];
                    black_box(server.receive_copy(memo, &copy, ArrivalPath::Send, 1_000));
                }
            }
            None => {
                for &index in &receiver_indices {
                    let server = &mut federation.servers[index];
                    black_box(server.receive(message, ArrivalPath::Send, 1_000));
                }
            }
        }
    }
    federation
}

fn bench_receivers(bencher: Bencher, receivers: usize, sharing: Sharing) {
    let messages = p1_messages();
    bencher
        .counter(ItemsCount::new(receivers * MESSAGES))
        .with_inputs(|| receivers_setup(receivers, sharing))
        .bench_local_values(|federation| receive_all(federation, messages, receivers));
}

#[divan::bench(args = RECEIVERS, sample_count = 3, sample_size = 1)]
fn receivers_unshared(bencher: Bencher, receivers: usize) {
    bench_receivers(bencher, receivers, Sharing::Nothing);
}

#[divan::bench(args = RECEIVERS, sample_count = 3, sample_size = 1)]
fn receivers_shared_checks(bencher: Bencher, receivers: usize) {
    bench_receivers(bencher, receivers, Sharing::Checks);
}

#[divan::bench(args = RECEIVERS, sample_count = 5, sample_size = 1)]
fn receivers_shared_all(bencher: Bencher, receivers: usize) {
    bench_receivers(bencher, receivers, Sharing::All);
}

#[divan::bench(sample_count = 20)]
fn crypto_floor_sign(bencher: Bencher) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let signed = redacted_canonical(&RoomPolicy::P1.room_version, &p1_messages()[0].json).unwrap();
    bencher.bench_local(|| key.sign(black_box(signed.as_bytes())));
}

#[divan::bench(sample_count = 20)]
fn crypto_floor_verify(bencher: Bencher) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let verifying = key.verifying_key();
    let signed = redacted_canonical(&RoomPolicy::P1.room_version, &p1_messages()[0].json).unwrap();
    let signature = key.sign(signed.as_bytes());
    bencher.bench_local(|| {
        verifying
            .verify_strict(black_box(signed.as_bytes()), &signature)
            .unwrap()
    });
}
