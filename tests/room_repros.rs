//! Issue 5 item 9 (b) and (c), reproduced at the pipeline layer with hand-fed servers: the key
//! layer's decisions (a fetch that fails, a key kept past expiry or invalidated) are given as
//! inputs, exactly as a world loop would feed them. Item 9(a) is in `room_pipeline.rs`.

use std::sync::Arc;

use fedsim::matrix::Pdu;
use fedsim::room::keys::KeySource;
use fedsim::room::links::{KeyInvalidation, LinkStatus, LinkVerdict};
use fedsim::room::pipeline::{Outcome, Verdict};
use fedsim::room::policy::{ArrivalPath, ArrivalPaths, RoomPolicy};
use fedsim::room::properties;
use fedsim::room::room_state::SoftFailReason;
use fedsim::room::testbed::{KEY_VALIDITY_MS, Server, User, public_room};
use serde_json::json;

/// The share of `mine` that `theirs` does not show, over their union (|A Δ B| / |A ∪ B|).
fn divergence(mine: &[String], theirs: &[String]) -> f64 {
    let mine: std::collections::BTreeSet<&String> = mine.iter().collect();
    let theirs: std::collections::BTreeSet<&String> = theirs.iter().collect();
    let union = mine.union(&theirs).count();
    let difference = mine.symmetric_difference(&theirs).count();
    difference as f64 / union as f64
}

/// Item 9(b), "everyone talking to nobody": bob (b.example) chatted in a room; b.example has since
/// gone (its keys can no longer be fetched). A late joiner, d.example, backfills the history: it
/// cannot verify bob's link, so under P1 (the link rule soft-fails on every remote path,
/// backfill included) bob's messages are hidden on d.example while older members show them.
/// With the link rule limited to `/send` (Synapse's reading of soft-fail) they are only
/// labelled, and with P5 they are labelled too.
#[test]
fn a_late_joiner_hides_history_that_older_members_show() {
    let cases = [
        (RoomPolicy::P1, true),
        (
            RoomPolicy {
                link_soft_fail_paths: ArrivalPaths::SEND_ONLY,
                ..RoomPolicy::P1
            },
            false,
        ),
        (RoomPolicy::P5, false),
    ];
    for (policy, hidden_on_late_joiner) in cases {
        let version = policy.room_version;
        let carol = User::new(&version, "carol", "c.example");
        let alice = User::new(&version, "alice", "a.example");
        let bob = User::new(&version, "bob", "b.example");
        let (mut federation, room_id) = public_room(
            &["a.example", "b.example", "c.example"],
            &policy,
            &carol,
            &[&alice, &bob],
        );
        let mut bobs_messages = Vec::new();
        for index in 0..5 {
            let sender = if index % 2 == 0 { &bob } else { &alice };
            let message = federation.broadcast(
                sender,
                "m.room.message",
                None,
                json!({"body": format!("message {index}")}),
                100 + index,
            );
            if sender.server == "b.example" {
                bobs_messages.push(message.event_id.clone());
            }
        }
        // The late joiner holds every key but b.example's, which it can no longer fetch.
        let mut d = Server::new("d.example", 4, policy.clone(), &room_id);
        for server in &federation.servers {
            if server.name != "b.example" {
                d.keys.insert(server.published_keys(KEY_VALIDITY_MS), 1_000);
            }
        }
        let history: Vec<Arc<Pdu>> = {
            let c = federation.server("c.example");
            c.room
                .timeline()
                .iter()
                .map(|entry| Arc::clone(c.room.event(&entry.event_id).unwrap()))
                .collect()
        };
        for event in &history {
            let receipt = d.receive(event, ArrivalPath::Backfill, 2_000);
            assert!(
                !matches!(
                    receipt.verdict,
                    Verdict::Dropped(_) | Verdict::Rejected { .. }
                ),
                "{}: {:?}",
                policy.name,
                receipt.verdict
            );
            if d.links.status(&bob.id()) == LinkStatus::Pending {
                // The key layer reports that b.example's keys cannot be fetched.
                assert_eq!(d.links.keys_unavailable("b.example", 2_000), vec![bob.id()]);
            }
        }
        assert_eq!(d.links.status(&bob.id()), LinkStatus::Unverified);
        let shown_on_d = d.room.visible_event_ids();
        let shown_on_c = federation.server("c.example").room.visible_event_ids();
        for id in &bobs_messages {
            assert!(shown_on_c.contains(id));
            assert_eq!(
                !shown_on_d.contains(id),
                hidden_on_late_joiner,
                "{}",
                policy.name
            );
        }
        let expected = if hidden_on_late_joiner {
            bobs_messages.len() as f64 / shown_on_c.len() as f64
        } else {
            0.0
        };
        assert_eq!(
            divergence(&shown_on_d, &shown_on_c),
            expected,
            "{}",
            policy.name
        );
        // The room state is the same on both: link status never changes state.
        let d_state = d.room.current_state().unwrap();
        let c_state = federation.server("c.example").room.current_state().unwrap();
        assert_eq!(d_state, c_state, "{}", policy.name);
        let c = federation.server("c.example");
        let views = [("c.example", &c.room), ("d.example", &d.room)];
        assert_eq!(properties::checks_agree(&views, true), vec![]);
        assert_eq!(
            properties::no_rejected_event_shown("d.example", &d.room),
            vec![]
        );
    }
}

/// Item 9(c): an attacker holds bob's member key (and b.example's old server key) and keeps
/// sending as bob after b.example went offline. Under fail-open (P1) the observer keeps trusting
/// the expired key it cannot re-fetch, so the link stays verified and the attacker's messages
/// keep being shown; under fail-closed (P2) the key's expiry without a re-fetch invalidates it,
/// the link turns unverified and the attacker's messages are soft-failed.
#[test]
fn a_compromised_member_key_is_shown_under_fail_open_and_hidden_under_fail_closed() {
    const KEY_EXPIRY_MS: i64 = 10_000;
    for policy in [RoomPolicy::P1, RoomPolicy::P2] {
        let version = policy.room_version;
        let carol = User::new(&version, "carol", "c.example");
        let alice = User::new(&version, "alice", "a.example");
        let bob = User::new(&version, "bob", "b.example");
        let (mut federation, _) = public_room(
            &["a.example", "b.example", "c.example"],
            &policy,
            &carol,
            &[&alice, &bob],
        );
        // a.example holds b.example's keys with a short validity.
        let b_keys = federation.server("b.example").published_keys(KEY_EXPIRY_MS);
        federation.server("a.example").keys.insert(b_keys, 0);
        // b.example goes offline at 5 s. The attacker, holding bob's member key, sends as bob
        // through a server of their own (here: a copy of b.example's view).
        let mut attacker_messages = Vec::new();
        for (index, at_ms) in [6_000_i64, 20_000, 30_000].into_iter().enumerate() {
            if at_ms > KEY_EXPIRY_MS {
                // The key layer's re-check at expiry cannot reach b.example.
                let a = federation.server("a.example");
                if policy.fail_closed {
                    let changed = a.links.key_invalidated(
                        "b.example",
                        "ed25519:1",
                        KeyInvalidation::ExpiredUnreachable {
                            valid_until_ms: KEY_EXPIRY_MS,
                        },
                        at_ms,
                    );
                    // The first re-check after expiry unverifies bob; later ones find nothing.
                    let expected = if index == 1 { vec![bob.id()] } else { vec![] };
                    assert_eq!(changed, expected);
                } else {
                    a.keys.set_trusted_past_expiry("b.example", true);
                    assert!(a.keys.held_keys("b.example").unwrap().trusted_past_expiry);
                }
            }
            let message = federation
                .server("b.example")
                .send(
                    &bob,
                    "m.room.message",
                    None,
                    json!({"body": format!("attacker {index}")}),
                    at_ms,
                )
                .unwrap();
            let receipt =
                federation
                    .server("a.example")
                    .receive(&message, ArrivalPath::Send, at_ms);
            attacker_messages.push((at_ms, message.event_id.clone(), receipt));
        }
        let a = federation.server("a.example");
        for (at_ms, id, receipt) in &attacker_messages {
            let hidden = policy.fail_closed && *at_ms > KEY_EXPIRY_MS;
            if hidden {
                assert_eq!(
                    receipt.verdict,
                    Verdict::SoftFailed(SoftFailReason::Link(LinkVerdict::Unverified)),
                    "{} at {at_ms}",
                    policy.name
                );
            } else {
                assert_eq!(
                    receipt.outcome(),
                    Outcome::Accepted,
                    "{} at {at_ms}",
                    policy.name
                );
            }
            assert_eq!(a.room.visible_event_ids().contains(id), !hidden);
        }
        let expected_status = if policy.fail_closed {
            LinkStatus::Unverified
        } else {
            LinkStatus::Verified
        };
        assert_eq!(
            a.links.status(&bob.id()),
            expected_status,
            "{}",
            policy.name
        );
    }
}
