//! `room::metrics` over real testbed servers: divergence, hidden shares, orphan replies,
//! containment and bitrot computed from the servers' own room states and link tables.

use std::sync::Arc;

use fedsim::matrix::Pdu;
use fedsim::room::links::{KeyInvalidation, LinkStatus};
use fedsim::room::metrics::{self, MessageView};
use fedsim::room::policy::{ArrivalPath, RoomPolicy};
use fedsim::room::testbed::{KEY_VALIDITY_MS, Server, User, public_room};
use serde_json::json;

/// Under P1, a.example invalidates b.example's key at 50 ms (bob's link turns unverified there);
/// bob then says "m1" and alice replies to it. a.example hides m1 and shows the reply: one orphan
/// (a reply orphan; the reply follows carol's message, a.example's extremity) of its two visible
/// messages; b and c show all three messages.
#[test]
fn metrics_over_a_room_where_one_server_hides_a_member() {
    let policy = RoomPolicy::P1;
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
    let first = federation.broadcast(&carol, "m.room.message", None, json!({"body": "hi"}), 40);
    let changed = federation.server("a.example").links.key_invalidated(
        "b.example",
        "ed25519:1",
        KeyInvalidation::Absent,
        50,
    );
    assert_eq!(changed, vec![bob.id()]);
    let m1 = federation.broadcast(&bob, "m.room.message", None, json!({"body": "m1"}), 60);
    let reply = federation.broadcast(
        &alice,
        "m.room.message",
        None,
        json!({"body": "re", "m.relates_to": {"m.in_reply_to": {"event_id": m1.event_id}}}),
        70,
    );
    let views: Vec<MessageView> = federation
        .servers
        .iter()
        .map(|server| MessageView::from_room(&server.name, &server.room))
        .collect();
    assert_eq!(
        views[0].visible(),
        [first.event_id.clone(), reply.event_id.clone()]
            .into_iter()
            .collect()
    );
    assert_eq!(views[1].visible().len(), 3);
    assert_eq!(
        views[0].messages[&reply.event_id].reply_to,
        Some(m1.event_id.clone())
    );
    assert_eq!(
        views[0].messages[&reply.event_id].prev_messages,
        vec![first.event_id.clone()],
        "a.example built the reply on its own extremity, which excludes the soft-failed m1"
    );
    // Divergence: a vs b and a vs c = 1/3; b vs c = 0.
    let matrix = metrics::divergence_matrix(&views);
    assert_eq!(matrix.matrix[0][1], 1.0 / 3.0);
    assert_eq!(matrix.matrix[0][2], 1.0 / 3.0);
    assert_eq!(matrix.matrix[1][2], 0.0);
    assert_eq!(matrix.max, 1.0 / 3.0);
    assert!((matrix.mean - 2.0 / 9.0).abs() < 1e-12);
    let shares = metrics::hidden_shares(&views);
    assert_eq!(shares[0].hidden_share, 1.0 / 3.0);
    assert_eq!(
        shares[0]
            .hidden_by_reason
            .get("soft-failed-link-unverified"),
        Some(&1)
    );
    assert_eq!(shares[1].hidden_share, 0.0);
    assert_eq!(
        metrics::visible_somewhere_hidden_elsewhere(&views),
        1.0 / 3.0
    );
    let on_a = metrics::orphans(&views[0]);
    assert_eq!(
        (on_a.visible, on_a.reply_orphans, on_a.follow_orphans),
        (2, 1, 0)
    );
    assert_eq!(on_a.orphan_ratio, 0.5);
    assert_eq!(metrics::orphans(&views[1]).orphan_ratio, 0.0);
    // Containment of bob's link: a.example at 50; b and c never.
    let times: Vec<Option<i64>> = federation
        .servers
        .iter()
        .filter(|server| server.name != "b.example")
        .map(|server| metrics::unverified_since(&server.links, &bob.id(), 45))
        .collect();
    assert_eq!(times, vec![Some(50), None]);
    let containment = metrics::containment(&times, 45);
    assert_eq!(containment.p50_ms, Some(5));
    assert_eq!(containment.p100_ms, None);
    // Asked from after it turned, the link is unverified from that moment on (an observer
    // contained before the rotation counts 0, not "never").
    assert_eq!(
        metrics::unverified_since(&federation.servers[0].links, &bob.id(), 51),
        Some(51)
    );
    let late = [metrics::unverified_since(
        &federation.servers[0].links,
        &bob.id(),
        51,
    )];
    assert_eq!(metrics::containment(&late, 51).p100_ms, Some(0));
}

/// A late joiner (d.example) that cannot fetch b.example's keys backfills a room under P1: bob's
/// link is the only historical link it cannot verify and bob's messages are the historical
/// messages it hides.
#[test]
fn bitrot_for_a_late_joiner_by_age_bucket() {
    let policy = RoomPolicy::P1;
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
    // Members joined at 2 (carol), 4 (alice), 5 (bob). Messages: bob at 100, alice at 900.
    federation.broadcast(&bob, "m.room.message", None, json!({"body": "old"}), 100);
    federation.broadcast(&alice, "m.room.message", None, json!({"body": "new"}), 900);
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
        d.receive(event, ArrivalPath::Backfill, 1_000);
        d.links.keys_unavailable("b.example", 1_000);
    }
    assert_eq!(d.links.status(&bob.id()), LinkStatus::Unverified);
    // Joined at 1000; edges 500 → ages [0, 500) and [500, ∞).
    let buckets = metrics::bitrot(&d.room, &d.links, 1_000, &[500]);
    assert_eq!(buckets.len(), 2);
    // Recent bucket: alice's message (age 100), shown; no member claims.
    assert_eq!(
        (buckets[0].min_age_ms, buckets[0].max_age_ms),
        (0, Some(500))
    );
    assert_eq!((buckets[0].messages, buckets[0].messages_visible), (1, 1));
    assert_eq!(buckets[0].links_verified_share(), None);
    // Old bucket: three links (carol, alice verified; bob not), bob's message hidden.
    assert_eq!((buckets[1].links, buckets[1].links_verified), (3, 2));
    assert_eq!((buckets[1].messages, buckets[1].messages_visible), (1, 0));
    assert_eq!(buckets[1].messages_visible_share(), Some(0.0));
    assert_eq!(buckets[1].max_age_ms, None);
    // Nothing is historical for a joiner at time 0.
    let none = metrics::bitrot(&d.room, &d.links, 0, &[]);
    assert_eq!((none[0].links, none[0].messages), (0, 0));
}
