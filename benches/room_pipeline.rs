//! Time per received PDU through one server's whole receipt pipeline (checks 1–6 and, under P1,
//! the MSC4430 link rule), on real signed events: a 3-server room (creator, two members), and a
//! chain of 200 messages by one member that another server receives by `/send` in order.
//! Messages are built and signed once, outside the timing; each sample starts from a fresh
//! server that holds only the room's setup events.
//!
//! `two_receivers_*`: two servers receive each message, with and without sharing checks 1–3.
//!
//! Run: `cargo bench --bench room_pipeline`.

use std::sync::OnceLock;

use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use fedsim::matrix::Pdu;
use fedsim::room::policy::{ArrivalPath, RoomPolicy};
use fedsim::room::testbed::{Federation, User, public_room};
use serde_json::json;

fn main() {
    divan::main();
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
