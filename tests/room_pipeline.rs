//! The receipt pipeline on real signed events, fed by hand to a few servers: every outcome of
//! PDU checks 1–6, MSC4430's link rule under P1 and P5, and the partition ban of issue 5 item
//! 9(a).

use std::sync::Arc;

use fedsim::matrix::auth::Rule;
use fedsim::matrix::event_builder::EventDraft;
use fedsim::matrix::event_builder::countersign_pdu;
use fedsim::matrix::server_keys::{OldVerifyKey, ServerKeys};
use fedsim::matrix::signing::{KeyId, ServerSigningKey};
use fedsim::matrix::{Pdu, RoomVersion};
use fedsim::room::links::{KeyInvalidation, LinkStatus, LinkVerdict};
use fedsim::room::pipeline::{
    DropReason, Outcome, ServerView, Verdict, receive_pdu_with_state_before, reveal_verified,
};
use fedsim::room::policy::{ArrivalPath, ArrivalPaths, RoomPolicy};
use fedsim::room::properties;
use fedsim::room::room_state::{Fate, RejectedAt, RoomState, SoftFailReason, Visibility};
use fedsim::room::testbed::{Federation, KEY_VALIDITY_MS, User, public_room};
use serde_json::json;

struct Room {
    federation: Federation,
    carol: User,
    alice: User,
    bob: User,
}

/// carol on c.example creates a public room; alice (a.example) and bob (b.example) join.
fn room(policy: &RoomPolicy) -> Room {
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
    Room {
        federation,
        carol,
        alice,
        bob,
    }
}

/// Asserts every always-property holds across the room's servers.
fn assert_properties(room: &mut Room) {
    let mut violations = Vec::new();
    for server in &room.federation.servers {
        violations.extend(properties::no_rejected_event_shown(
            &server.name,
            &server.room,
        ));
    }
    let views: Vec<(&str, &RoomState)> = room
        .federation
        .servers
        .iter()
        .map(|server| (server.name.as_str(), &server.room))
        .collect();
    violations.extend(properties::checks_agree(&views, true));
    let mut views: Vec<(&str, &mut RoomState)> = room
        .federation
        .servers
        .iter_mut()
        .map(|server| (server.name.as_str(), &mut server.room))
        .collect();
    violations.extend(properties::same_extremities_same_state(&mut views));
    assert_eq!(violations, vec![]);
}

fn member_event_id(room: &mut Room, server: &str, user: &User) -> String {
    room.federation
        .server(server)
        .room
        .current_state_event("m.room.member", &user.id())
        .unwrap()
        .unwrap()
        .event_id
        .clone()
}

fn message_draft(
    room: &mut Room,
    server: &str,
    user: &User,
    body: &str,
    now_ms: i64,
) -> EventDraft {
    room.federation
        .server(server)
        .room
        .draft_event(
            &user.id(),
            "m.room.message",
            None,
            json!({"body": body}),
            now_ms,
        )
        .unwrap()
}

fn sign(room: &mut Room, server: &str, user: &User, draft: EventDraft) -> Pdu {
    room.federation.server(server).sign(user, draft).unwrap()
}

#[test]
fn a_message_from_a_member_is_accepted_everywhere_and_extends_the_extremities() {
    let mut room = room(&RoomPolicy::P0);
    let bob = room.bob.clone();
    let message =
        room.federation
            .broadcast(&bob, "m.room.message", None, json!({"body": "hi"}), 100);
    for name in ["a.example", "b.example", "c.example"] {
        let server = room.federation.server(name);
        let receipt = server.receipts.last().unwrap();
        assert_eq!(receipt.outcome(), Outcome::Accepted, "on {name}");
        assert_eq!(receipt.allowed_by, Some(Rule::Otherwise), "on {name}");
        assert_eq!(
            server.room.forward_extremities(),
            vec![message.event_id.clone()]
        );
        assert_eq!(
            server.room.timeline().last().unwrap().visibility,
            Visibility::Delivered { labelled: false }
        );
    }
}

#[test]
fn bad_signatures_and_bad_formats_are_dropped_and_not_stored() {
    let mut room = room(&RoomPolicy::P0);
    let bob = room.bob.clone();
    let draft = message_draft(&mut room, "b.example", &bob, "hi", 100);
    let pdu = sign(&mut room, "b.example", &bob, draft);
    // A signed field changed in transit: the signature no longer verifies.
    let mut tampered = serde_json::Value::clone(&pdu.json);
    tampered["origin_server_ts"] = json!(101);
    let tampered = Pdu::from_json(tampered, "$unused".into(), &RoomVersion::V12).unwrap();
    let receipt = room
        .federation
        .server("a.example")
        .receive(&tampered, ArrivalPath::Send, 110);
    assert!(matches!(
        receipt.verdict,
        Verdict::Dropped(DropReason::Signature(_))
    ));
    assert_eq!(receipt.outcome(), Outcome::Dropped);
    let event_id = receipt.event_id.unwrap();
    assert!(!room.federation.server("a.example").room.holds(&event_id));
    // Signed by a server that is not the sender's (check 2 needs the sender's server).
    let alice = room.alice.clone();
    let draft = message_draft(&mut room, "b.example", &bob, "hi", 120);
    let as_alice = EventDraft {
        sender: alice.id(),
        ..draft
    };
    let mut forged = serde_json::Value::clone(&sign(&mut room, "a.example", &alice, as_alice).json);
    forged["sender"] = json!(bob.id());
    let forged = Pdu::from_json(forged, "$unused".into(), &RoomVersion::V12).unwrap();
    let receipt = room
        .federation
        .server("c.example")
        .receive(&forged, ArrivalPath::Send, 130);
    assert!(matches!(
        receipt.verdict,
        Verdict::Dropped(DropReason::Signature(_))
    ));
    // Another room's event fails check 1.
    let mut elsewhere = serde_json::Value::clone(&pdu.json);
    elsewhere["room_id"] = json!("!other");
    let elsewhere = Pdu::from_json(elsewhere, "$unused".into(), &RoomVersion::V12).unwrap();
    let receipt = room
        .federation
        .server("c.example")
        .receive(&elsewhere, ArrivalPath::Send, 140);
    assert!(matches!(
        receipt.verdict,
        Verdict::Dropped(DropReason::Format(_))
    ));
}

#[test]
fn a_content_hash_mismatch_continues_with_the_redacted_event() {
    let mut room = room(&RoomPolicy::P0);
    let bob = room.bob.clone();
    let draft = message_draft(&mut room, "b.example", &bob, "original", 100);
    let pdu = sign(&mut room, "b.example", &bob, draft);
    let mut edited = serde_json::Value::clone(&pdu.json);
    edited["content"]["body"] = json!("edited in transit");
    let edited = Pdu::from_json(edited, pdu.event_id.clone(), &RoomVersion::V12).unwrap();
    let server = room.federation.server("a.example");
    let receipt = server.receive(&edited, ArrivalPath::Send, 110);
    assert_eq!(receipt.outcome(), Outcome::Redacted);
    assert_eq!(receipt.event_id.as_deref(), Some(pdu.event_id.as_str()));
    let held = server.room.event(&pdu.event_id).unwrap();
    assert_eq!(held.content, json!({}));
    assert!(server.room.held(&pdu.event_id).unwrap().redacted);
    // The intact copy elsewhere is accepted unredacted, under the same ID.
    let server = room.federation.server("c.example");
    assert_eq!(
        server.receive(&pdu, ArrivalPath::Send, 110).outcome(),
        Outcome::Accepted
    );
    assert_eq!(
        server.room.event(&pdu.event_id).unwrap().content["body"],
        "original"
    );
}

#[test]
fn wrong_auth_events_are_rejected_at_check_4() {
    let mut room = room(&RoomPolicy::P0);
    let bob = room.bob.clone();
    let mut draft = message_draft(&mut room, "b.example", &bob, "hi", 100);
    // A message's auth events never include the join rules.
    let join_rules = room
        .federation
        .server("b.example")
        .room
        .current_state_event("m.room.join_rules", "")
        .unwrap()
        .unwrap()
        .event_id
        .clone();
    draft.auth_events.push(join_rules);
    let pdu = sign(&mut room, "b.example", &bob, draft);
    let server = room.federation.server("a.example");
    let receipt = server.receive(&pdu, ArrivalPath::Send, 110);
    match receipt.verdict {
        Verdict::Rejected { check, rejection } => {
            assert_eq!(check, RejectedAt::AuthEvents);
            assert_eq!(check.check_number(), 4);
            assert_eq!(rejection.rule, Rule::AuthEventsUnexpected);
        }
        other => panic!("expected a check-4 rejection, got {other:?}"),
    }
    // Held, hidden with the reason, never an extremity.
    assert!(server.room.holds(&pdu.event_id));
    assert!(!server.room.forward_extremities().contains(&pdu.event_id));
    assert!(matches!(
        server.room.timeline().last().unwrap().visibility,
        Visibility::Hidden(Fate::Rejected {
            check: RejectedAt::AuthEvents,
            ..
        })
    ));
}

/// carol bans alice; a.example and c.example hold the ban. Returns (the event before the ban,
/// alice's join, the ban).
fn ban_alice(room: &mut Room, to: &[&str]) -> (String, String, Arc<Pdu>) {
    let before_ban = room
        .federation
        .server("c.example")
        .room
        .forward_extremities()[0]
        .clone();
    let alice_join = member_event_id(room, "c.example", &room.alice.clone());
    let carol = room.carol.clone();
    let alice_id = room.alice.id();
    let ban = room
        .federation
        .server("c.example")
        .send(
            &carol,
            "m.room.member",
            Some(&alice_id),
            json!({"membership": "ban"}),
            200,
        )
        .unwrap();
    let verdicts = room.federation.deliver(&ban, to, 200);
    assert!(
        verdicts
            .iter()
            .all(|verdict| matches!(verdict, Verdict::Accepted { .. }))
    );
    (before_ban, alice_join, Arc::new(ban))
}

#[test]
fn an_event_allowed_by_its_auth_events_but_not_by_the_state_before_it_is_rejected_at_check_5() {
    let mut room = room(&RoomPolicy::P0);
    let (_, alice_join, ban) = ban_alice(&mut room, &["a.example"]);
    // a.example (malicious, or its clock behind) sends alice's message after the ban, citing
    // her old join as its auth event.
    let alice = room.alice.clone();
    let mut draft = message_draft(&mut room, "a.example", &alice, "still here", 300);
    assert_eq!(draft.prev_events, vec![ban.event_id.clone()]);
    draft.auth_events = vec![alice_join];
    let pdu = sign(&mut room, "a.example", &alice, draft);
    let receipt = room
        .federation
        .server("c.example")
        .receive(&pdu, ArrivalPath::Send, 310);
    match receipt.verdict {
        Verdict::Rejected { check, rejection } => {
            assert_eq!(check, RejectedAt::StateBefore);
            assert_eq!(check.check_number(), 5);
            assert_eq!(rejection.rule, Rule::SenderNotJoined);
        }
        other => panic!("expected a check-5 rejection, got {other:?}"),
    }
}

#[test]
fn an_event_on_an_old_branch_that_the_current_state_forbids_is_soft_failed_at_check_6() {
    let mut room = room(&RoomPolicy::P0);
    let (before_ban, alice_join, ban) = ban_alice(&mut room, &["a.example", "b.example"]);
    // The spec's example: alice's message attached before the ban (valid, indistinguishable from
    // a delayed one) reaches a server that holds the ban.
    let alice = room.alice.clone();
    let mut draft = message_draft(&mut room, "a.example", &alice, "sneaky", 300);
    draft.prev_events = vec![before_ban.clone()];
    draft.auth_events = vec![alice_join];
    draft.depth = room
        .federation
        .server("a.example")
        .room
        .event(&before_ban)
        .unwrap()
        .depth
        + 1;
    let pdu = sign(&mut room, "a.example", &alice, draft);
    let server = room.federation.server("c.example");
    let receipt = server.receive(&pdu, ArrivalPath::Send, 310);
    match &receipt.verdict {
        Verdict::SoftFailed(SoftFailReason::CurrentState(rejection)) => {
            assert_eq!(rejection.rule, Rule::SenderNotJoined);
        }
        other => panic!("expected a check-6 soft-fail, got {other:?}"),
    }
    // Not shown, not built upon; the ban stays the only extremity.
    assert_eq!(
        server.room.forward_extremities(),
        vec![ban.event_id.clone()]
    );
    assert!(!server.room.visible_event_ids().contains(&pdu.event_id));
    // Backfill is not soft-failed under P0 (Synapse's choice): the same event by backfill is
    // accepted on a server that does not hold it yet.
    let server = room.federation.server("b.example");
    assert_eq!(
        server.receive(&pdu, ArrivalPath::Backfill, 320).outcome(),
        Outcome::Accepted
    );
}

#[test]
fn events_with_unknown_parents_come_back_as_missing_events() {
    let mut room = room(&RoomPolicy::P0);
    let bob = room.bob.clone();
    let first = room
        .federation
        .server("b.example")
        .send(&bob, "m.room.message", None, json!({"body": "1"}), 100)
        .unwrap();
    let second = room
        .federation
        .server("b.example")
        .send(&bob, "m.room.message", None, json!({"body": "2"}), 101)
        .unwrap();
    let server = room.federation.server("a.example");
    let receipt = server.receive(&second, ArrivalPath::Send, 110);
    assert_eq!(
        receipt.verdict,
        Verdict::MissingEvents {
            prev_events: vec![first.event_id.clone()],
            auth_events: vec![],
        }
    );
    assert!(!server.room.holds(&second.event_id));
    assert_eq!(
        server
            .receive(&first, ArrivalPath::MissingEvents, 111)
            .outcome(),
        Outcome::Accepted
    );
    assert_eq!(
        server.receive(&second, ArrivalPath::Send, 112).outcome(),
        Outcome::Accepted
    );
    assert_eq!(
        server.receive(&second, ArrivalPath::Send, 113).outcome(),
        Outcome::AlreadyHeld
    );
}

/// Issue 5 item 9(a), at the pipeline layer: a.example and b.example are split; carol (c.example)
/// bans alice and only a.example receives it. After the heal, b.example's traffic reaches the
/// others, but nothing makes b.example learn of the ban: its state keeps alice joined until the
/// ban itself reaches it (what an exchange of forward extremities would do).
#[test]
fn partition_ban_reaches_b_only_if_b_receives_it() {
    let mut room = room(&RoomPolicy::P0);
    let alice_id = room.alice.id();
    let membership = |room: &mut Room, server: &str| -> String {
        room.federation
            .server(server)
            .room
            .current_state_event("m.room.member", &alice_id)
            .unwrap()
            .unwrap()
            .membership()
            .unwrap()
            .to_owned()
    };
    // During the split c.example reaches only a.example.
    let (_, _, ban) = ban_alice(&mut room, &["a.example"]);
    assert_eq!(membership(&mut room, "a.example"), "ban");
    assert_eq!(membership(&mut room, "b.example"), "join");
    // Heal: bob keeps talking; a.example and c.example accept his messages, which do not cite
    // the ban, and build on both branches.
    let bob = room.bob.clone();
    for round in 0..3 {
        let message = room.federation.broadcast(
            &bob,
            "m.room.message",
            None,
            json!({"body": format!("after the heal {round}")}),
            400 + round,
        );
        for name in ["a.example", "c.example"] {
            let server = room.federation.server(name);
            assert_eq!(server.receipts.last().unwrap().outcome(), Outcome::Accepted);
            assert_eq!(
                server.room.forward_extremities(),
                vec![ban.event_id.clone(), message.event_id.clone()]
            );
        }
        assert_eq!(membership(&mut room, "a.example"), "ban");
        assert_eq!(membership(&mut room, "c.example"), "ban");
        // b.example never hears of the ban: alice is still a member there.
        assert_eq!(membership(&mut room, "b.example"), "join");
    }
    // alice's own server knows she is banned and refuses to build her message.
    let alice = room.alice.clone();
    room.federation
        .server("a.example")
        .send(
            &alice,
            "m.room.message",
            None,
            json!({"body": "hello?"}),
            500,
        )
        .unwrap();
    let own = room
        .federation
        .server("a.example")
        .receipts
        .last()
        .unwrap()
        .clone();
    assert!(matches!(own.verdict, Verdict::Rejected { .. }));
    // The ban reaches b.example (an extremity exchange): every server now agrees.
    let receipt =
        room.federation
            .server("b.example")
            .receive(&ban, ArrivalPath::MissingEvents, 600);
    assert_eq!(receipt.outcome(), Outcome::Accepted);
    assert_eq!(receipt.allowed_by, Some(Rule::BanAllowed));
    assert_eq!(membership(&mut room, "b.example"), "ban");
    let states: Vec<_> = ["a.example", "b.example", "c.example"]
        .iter()
        .map(|name| room.federation.server(name).room.current_state().unwrap())
        .collect();
    assert_eq!(states[0], states[1]);
    assert_eq!(states[1], states[2]);
    assert_properties(&mut room);
}

/// b.example rotates its key as a.example sees it: a.example re-fetches b.example's keys (a new
/// `ed25519:2`, the old `ed25519:1` in `old_verify_keys`) and invalidates the old key. Returns the
/// members whose links changed.
fn invalidate_b_key_on_a(room: &mut Room, now_ms: i64) -> Vec<String> {
    rotate_b_key_on_a(room, now_ms, now_ms)
}

/// As [`invalidate_b_key_on_a`], with the old key's `expired_ts` given.
fn rotate_b_key_on_a(room: &mut Room, now_ms: i64, expired_ts_ms: i64) -> Vec<String> {
    let old = room
        .federation
        .server("b.example")
        .signing_key
        .verifying_key();
    let new_key = ServerSigningKey::from_seed(KeyId::ed25519("2").unwrap(), &[42; 32]);
    let mut rotated = ServerKeys::with_current_key("b.example", &new_key, KEY_VALIDITY_MS);
    rotated.old_verify_keys.insert(
        "ed25519:1".into(),
        OldVerifyKey {
            key: old,
            expired_ts_ms,
        },
    );
    room.federation
        .server("a.example")
        .keys
        .insert(rotated, now_ms);
    room.federation.server("a.example").links.key_invalidated(
        "b.example",
        "ed25519:1",
        KeyInvalidation::MovedToOld { expired_ts_ms },
        now_ms,
    )
}

#[test]
fn under_p1_messages_from_unverified_members_are_soft_failed_but_their_state_events_resolve() {
    let mut room = room(&RoomPolicy::P1);
    let bob = room.bob.clone();
    let carol = room.carol.clone();
    // Anyone may set the topic.
    room.federation.broadcast(
        &carol,
        "m.room.power_levels",
        Some(""),
        json!({"events": {"m.room.topic": 0}}),
        40,
    );
    assert_eq!(
        room.federation.server("a.example").links.status(&bob.id()),
        LinkStatus::Verified
    );
    let links = room.federation.server("a.example").links.clone();
    let info = room
        .federation
        .server("a.example")
        .room
        .member_info(&links)
        .unwrap();
    assert_eq!(
        info.get(&bob.id()),
        Some(&Some("@bob:b.example".to_owned()))
    );
    assert_eq!(invalidate_b_key_on_a(&mut room, 50), vec![bob.id()]);
    let message =
        room.federation
            .broadcast(&bob, "m.room.message", None, json!({"body": "hi"}), 100);
    let server = room.federation.server("a.example");
    assert_eq!(
        server.receipts.last().unwrap().verdict,
        Verdict::SoftFailed(SoftFailReason::Link(LinkVerdict::Unverified))
    );
    assert!(!server.room.visible_event_ids().contains(&message.event_id));
    assert!(
        !server
            .room
            .forward_extremities()
            .contains(&message.event_id)
    );
    // c.example still verifies bob and shows the message.
    let other = room.federation.server("c.example");
    assert_eq!(other.receipts.last().unwrap().outcome(), Outcome::Accepted);
    assert!(other.room.visible_event_ids().contains(&message.event_id));
    // bob's topic change (a state event) still goes into the state on a.example, labelled.
    let topic = room.federation.broadcast(
        &bob,
        "m.room.topic",
        Some(""),
        json!({"topic": "bob's"}),
        110,
    );
    let server = room.federation.server("a.example");
    assert_eq!(
        server.receipts.last().unwrap().verdict,
        Verdict::Accepted { labelled: true }
    );
    let current_topic = server
        .room
        .current_state_event("m.room.topic", "")
        .unwrap()
        .unwrap();
    assert_eq!(current_topic.event_id, topic.event_id);
    // member_info shows bob's key with a null user ID on a.example only.
    let links = server.links.clone();
    let info = server.room.member_info(&links).unwrap();
    assert_eq!(info.get(&bob.id()), Some(&None));
    // Every server holding the same events has the same state, whatever its link table says.
    let a_state = room
        .federation
        .server("a.example")
        .room
        .current_state()
        .unwrap();
    let c_state = room
        .federation
        .server("c.example")
        .room
        .current_state()
        .unwrap();
    assert_eq!(a_state, c_state);
}

#[test]
fn under_p5_messages_from_unverified_members_are_labelled_not_hidden() {
    let mut room = room(&RoomPolicy::P5);
    let bob = room.bob.clone();
    invalidate_b_key_on_a(&mut room, 50);
    let message =
        room.federation
            .broadcast(&bob, "m.room.message", None, json!({"body": "hi"}), 100);
    let server = room.federation.server("a.example");
    assert_eq!(
        server.receipts.last().unwrap().verdict,
        Verdict::Accepted { labelled: true }
    );
    assert!(server.room.visible_event_ids().contains(&message.event_id));
    assert_eq!(
        server.room.forward_extremities(),
        vec![message.event_id.clone()]
    );
}

#[test]
fn pending_links_follow_the_policy_and_resolve_when_keys_arrive() {
    for (policy, expected) in [
        (RoomPolicy::P1, Verdict::Accepted { labelled: true }),
        (
            RoomPolicy::P2,
            Verdict::SoftFailed(SoftFailReason::Link(LinkVerdict::Pending)),
        ),
    ] {
        let version = policy.room_version;
        let carol = User::new(&version, "carol", "c.example");
        let alice = User::new(&version, "alice", "a.example");
        let (mut federation, _) =
            public_room(&["a.example", "c.example"], &policy, &carol, &[&alice]);
        // A new server joins the federation; c.example has never fetched its keys.
        let dave = User::new(&version, "dave", "d.example");
        let mut d = fedsim::room::testbed::Server::new(
            "d.example",
            4,
            policy.clone(),
            federation.server("c.example").room.room_id(),
        );
        let d_keys = d.published_keys(KEY_VALIDITY_MS);
        // d.example catches up on the room by replaying c.example's events.
        for server in &federation.servers {
            d.keys.insert(server.published_keys(KEY_VALIDITY_MS), 0);
        }
        d.keys.insert(d_keys.clone(), 0);
        let history: Vec<Arc<Pdu>> = {
            let c = federation.server("c.example");
            c.room
                .timeline()
                .iter()
                .map(|entry| Arc::clone(c.room.event(&entry.event_id).unwrap()))
                .collect()
        };
        for event in &history {
            assert_eq!(
                d.receive(event, ArrivalPath::Backfill, 10).outcome(),
                Outcome::Accepted
            );
        }
        let join = d
            .send(
                &dave,
                "m.room.member",
                Some(&dave.id()),
                dave.membership_content("join"),
                20,
            )
            .unwrap();
        let message = d
            .send(&dave, "m.room.message", None, json!({"body": "hello"}), 21)
            .unwrap();
        let c = federation.server("c.example");
        assert_eq!(
            c.receive(&join, ArrivalPath::Send, 30).outcome(),
            Outcome::Accepted
        );
        assert_eq!(
            c.links.status(&dave.id()),
            LinkStatus::Pending,
            "{}",
            policy.name
        );
        assert_eq!(
            c.receive(&message, ArrivalPath::Send, 31).verdict,
            expected,
            "{}",
            policy.name
        );
        // The keys arrive: the link is verified and dave's next message is delivered.
        c.keys.insert(d_keys.clone(), 40);
        let held = fedsim::room::keys::KeySource::held_keys(&c.keys, "d.example").unwrap();
        let changed = c.links.keys_available(&version, "d.example", held, 40);
        assert_eq!(changed, vec![dave.id()]);
        assert_eq!(
            c.links.user_id(&dave.id()).as_deref(),
            Some("@dave:d.example")
        );
        let later = d
            .send(&dave, "m.room.message", None, json!({"body": "again"}), 50)
            .unwrap();
        assert_eq!(
            c.receive(&later, ArrivalPath::Send, 51).verdict,
            Verdict::Accepted { labelled: false }
        );
    }
}

#[test]
fn the_current_state_memo_and_the_shared_check_memo_change_nothing() {
    let run = |state_memo: bool, shared_checks: bool| {
        let mut room = room(&RoomPolicy::P1);
        for server in &mut room.federation.servers {
            server.room.set_memo(state_memo);
        }
        if shared_checks {
            room.federation.share_checks();
        }
        invalidate_b_key_on_a(&mut room, 50);
        let (_, _, _) = ban_alice(&mut room, &["a.example"]);
        let bob = room.bob.clone();
        let message =
            room.federation
                .broadcast(&bob, "m.room.message", None, json!({"body": "x"}), 400);
        room.federation
            .broadcast(&bob, "m.room.topic", Some(""), json!({"topic": "t"}), 401);
        // A tampered copy (redacted on receipt) and a copy with a broken signature.
        let mut edited = serde_json::Value::clone(&message.json);
        edited["content"]["body"] = json!("edited");
        let edited =
            Pdu::from_json(edited, message.event_id.clone(), &RoomVersion::MSC4430).unwrap();
        let mut forged = serde_json::Value::clone(&message.json);
        forged["origin_server_ts"] = json!(1);
        let forged = Pdu::from_json(forged, "$unused".into(), &RoomVersion::MSC4430).unwrap();
        for copy in [&edited, &forged] {
            for name in ["a.example", "c.example"] {
                room.federation
                    .deliver_one(copy, name, ArrivalPath::Backfill, 500);
            }
        }
        room.federation
            .servers
            .iter_mut()
            .map(|server| {
                (
                    server.room.current_state().unwrap(),
                    server.room.forward_extremities(),
                    server.room.visible_event_ids(),
                    server.receipts.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let plain = run(true, false);
    assert_eq!(run(false, false), plain);
    assert_eq!(run(true, true), plain);
    assert_eq!(run(false, true), plain);
}

#[test]
fn a_resigned_member_event_refetched_after_a_rotation_reverifies_and_may_reveal() {
    for reveal in [false, true] {
        let policy = RoomPolicy {
            reveal_on_verification: reveal,
            ..RoomPolicy::P1
        };
        let mut room = room(&policy);
        let bob = room.bob.clone();
        let bob_join = room
            .federation
            .server("a.example")
            .room
            .current_state_event("m.room.member", &bob.id())
            .unwrap()
            .unwrap();
        invalidate_b_key_on_a(&mut room, 50);
        let message =
            room.federation
                .broadcast(&bob, "m.room.message", None, json!({"body": "hi"}), 100);
        let a = room.federation.server("a.example");
        assert!(!a.room.visible_event_ids().contains(&message.event_id));
        // b.example re-signs bob's join with its new key; a.example re-queries it directly.
        let new_key = ServerSigningKey::from_seed(KeyId::ed25519("2").unwrap(), &[42; 32]);
        let resigned =
            countersign_pdu(&policy.room_version, &bob_join, "b.example", &new_key).unwrap();
        assert_eq!(resigned.event_id, bob_join.event_id);
        let receipt = a.receive(&resigned, ArrivalPath::EventFetch, 200);
        assert_eq!(receipt.verdict, Verdict::AlreadyHeld);
        assert_eq!(receipt.link_after, Some(LinkStatus::Verified));
        assert_eq!(
            a.links.user_id(&bob.id()).as_deref(),
            Some("@bob:b.example")
        );
        let revealed = reveal_verified(&mut a.room, &a.links, &a.policy, &[bob.id()], 201);
        assert_eq!(revealed, usize::from(reveal));
        assert_eq!(
            a.room.visible_event_ids().contains(&message.event_id),
            reveal
        );
        // New messages are delivered either way.
        let later =
            room.federation
                .broadcast(&bob, "m.room.message", None, json!({"body": "back"}), 300);
        let a = room.federation.server("a.example");
        assert!(a.room.visible_event_ids().contains(&later.event_id));
    }
}

#[test]
fn the_link_rule_soft_fails_only_on_the_arrival_paths_the_policy_names() {
    let policy = RoomPolicy {
        link_soft_fail_paths: ArrivalPaths::SEND_ONLY,
        ..RoomPolicy::P1
    };
    let mut room = room(&policy);
    let bob = room.bob.clone();
    invalidate_b_key_on_a(&mut room, 50);
    let first = room
        .federation
        .server("b.example")
        .send(&bob, "m.room.message", None, json!({"body": "1"}), 100)
        .unwrap();
    let second = room
        .federation
        .server("b.example")
        .send(&bob, "m.room.message", None, json!({"body": "2"}), 101)
        .unwrap();
    let a = room.federation.server("a.example");
    assert_eq!(
        a.receive(&first, ArrivalPath::Backfill, 110).verdict,
        Verdict::Accepted { labelled: true }
    );
    assert_eq!(
        a.receive(&second, ArrivalPath::Send, 111).verdict,
        Verdict::SoftFailed(SoftFailReason::Link(LinkVerdict::Unverified))
    );
}

#[test]
fn an_event_after_a_gap_with_a_given_state_and_its_late_parent_keep_the_extremities_right() {
    let mut room = room(&RoomPolicy::P0);
    let bob = room.bob.clone();
    let b = room.federation.server("b.example");
    let first = b
        .send(&bob, "m.room.message", None, json!({"body": "1"}), 100)
        .unwrap();
    let second = b
        .send(&bob, "m.room.message", None, json!({"body": "2"}), 101)
        .unwrap();
    let state_before = Arc::new(b.room.dag().state_before(&second.event_id).unwrap());
    let before_gap = room
        .federation
        .server("a.example")
        .room
        .forward_extremities();
    let a = room.federation.server("a.example");
    let receipt = {
        let mut view = ServerView {
            keys: &a.keys,
            links: &mut a.links,
            policy: &a.policy,
        };
        receive_pdu_with_state_before(
            &mut a.room,
            &mut view,
            serde_json::Value::clone(&second.json),
            ArrivalPath::Send,
            state_before,
            110,
        )
    };
    assert_eq!(receipt.outcome(), Outcome::Accepted);
    let mut expected = before_gap.clone();
    expected.push(second.event_id.clone());
    assert_eq!(a.room.forward_extremities(), expected);
    // The missing parent arrives later: it is not an extremity (it has an accepted child), and
    // the event before the gap stops being one.
    assert_eq!(
        a.receive(&first, ArrivalPath::MissingEvents, 120).outcome(),
        Outcome::Accepted
    );
    assert_eq!(a.room.forward_extremities(), vec![second.event_id.clone()]);
}

/// The same story under every preset: b.example rotates its key (the old one expired at 150 ms)
/// as a.example sees it at 50 ms, then bob's message sent at 100 ms arrives by `/send`.
#[test]
fn each_preset_decides_a_message_after_a_rotation_as_questions_md_says() {
    let hidden = Verdict::SoftFailed(SoftFailReason::Link(LinkVerdict::Unverified));
    let shown = Verdict::Accepted { labelled: false };
    let labelled = Verdict::Accepted { labelled: true };
    for (name, policy) in RoomPolicy::PRESETS {
        let expected = match name {
            // Today: no member links; the old key still checks events sent before it expired.
            "P0" => shown.clone(),
            // Verify once, cache forever: the rotation changes nothing.
            "P4" => shown.clone(),
            // Label, don't hide.
            "P5" => labelled.clone(),
            // Expiry is not revocation: the old key vouches for events up to 150 ms.
            "P7" => shown.clone(),
            // MSC4430 as written and the presets that differ only outside the room layer.
            _ => hidden.clone(),
        };
        let mut room = room(&policy);
        rotate_b_key_on_a(&mut room, 50, 150);
        let bob = room.bob.clone();
        let message =
            room.federation
                .broadcast(&bob, "m.room.message", None, json!({"body": "hi"}), 100);
        let a = room.federation.server("a.example");
        assert_eq!(a.receipts.last().unwrap().verdict, expected, "{name}");
        assert_eq!(
            a.room.visible_event_ids().contains(&message.event_id),
            expected != hidden,
            "{name}"
        );
    }
}

/// Check 2 for restricted joins: the join must also carry the authorising server's signature
/// (room v12) or the authorising member key's (MSC4430); once countersigned, the auth rules
/// accept it through the authoriser.
#[test]
fn a_restricted_join_needs_the_authorisers_signature() {
    for policy in [RoomPolicy::P0, RoomPolicy::P1] {
        let mut room = room(&policy);
        let version = policy.room_version;
        let carol = room.carol.clone();
        room.federation.broadcast(
            &carol,
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": "restricted",
                   "allow": [{"type": "m.room_membership", "room_id": "!space:c.example"}]}),
            50,
        );
        let erin = User::new(&version, "erin", "a.example");
        let mut content = erin.membership_content("join");
        content["join_authorised_via_users_server"] = json!(carol.id());
        let a = room.federation.server("a.example");
        let draft = a
            .room
            .draft_event(&erin.id(), "m.room.member", Some(&erin.id()), content, 60)
            .unwrap();
        let join = a.sign(&erin, draft).unwrap();
        let c = room.federation.server("c.example");
        let receipt = c.receive(&join, ArrivalPath::Send, 70);
        assert!(
            matches!(receipt.verdict, Verdict::Dropped(DropReason::Signature(_))),
            "{}: {:?}",
            policy.name,
            receipt.verdict
        );
        assert!(!c.room.holds(&join.event_id));
        let countersigned = if version.member_keys {
            let carol_key = carol.member_key.as_ref().unwrap();
            countersign_pdu(&version, &join, &carol.id(), carol_key).unwrap()
        } else {
            countersign_pdu(&version, &join, "c.example", &c.signing_key).unwrap()
        };
        assert_eq!(countersigned.event_id, join.event_id);
        let receipt = c.receive(&countersigned, ArrivalPath::Send, 80);
        assert_eq!(receipt.outcome(), Outcome::Accepted, "{}", policy.name);
        assert_eq!(
            receipt.allowed_by,
            Some(Rule::JoinRestrictedAuthorised),
            "{}",
            policy.name
        );
    }
}

/// The checks-agree property flags a server whose state before an event came from outside and
/// disagrees with the DAG (a divergent `/state_ids` answer), when asked to compare such states.
#[test]
fn checks_agree_flags_a_rejection_caused_by_a_given_state() {
    let mut room = room(&RoomPolicy::P0);
    let bob = room.bob.clone();
    let message =
        room.federation
            .broadcast(&bob, "m.room.message", None, json!({"body": "hi"}), 100);
    assert_properties(&mut room);
    // A fourth server is told a state before bob's message that lacks bob's join.
    let room_id = room
        .federation
        .server("a.example")
        .room
        .room_id()
        .to_owned();
    let mut d = fedsim::room::testbed::Server::new("d.example", 4, RoomPolicy::P0, &room_id);
    for server in &room.federation.servers {
        d.keys.insert(server.published_keys(KEY_VALIDITY_MS), 0);
    }
    let a = room.federation.server("a.example");
    let history: Vec<Arc<Pdu>> = a
        .room
        .timeline()
        .iter()
        .map(|entry| Arc::clone(a.room.event(&entry.event_id).unwrap()))
        .filter(|event| event.event_id != message.event_id)
        .collect();
    for event in &history {
        d.receive(event, ArrivalPath::Backfill, 110);
    }
    let mut wrong_state = a.room.dag().state_before(&message.event_id).unwrap();
    wrong_state.remove(&("m.room.member".to_owned(), bob.id()));
    let receipt = {
        let mut view = ServerView {
            keys: &d.keys,
            links: &mut d.links,
            policy: &d.policy,
        };
        receive_pdu_with_state_before(
            &mut d.room,
            &mut view,
            serde_json::Value::clone(&message.json),
            ArrivalPath::Send,
            Arc::new(wrong_state),
            120,
        )
    };
    assert!(matches!(
        receipt.verdict,
        Verdict::Rejected {
            check: RejectedAt::StateBefore,
            ..
        }
    ));
    let a = room.federation.server("a.example");
    let views = [("a.example", &a.room), ("d.example", &d.room)];
    assert_eq!(properties::checks_agree(&views, false), vec![]);
    let flagged = properties::checks_agree(&views, true);
    assert_eq!(flagged.len(), 1);
    assert!(flagged[0].detail.contains(&message.event_id));
}

/// Test that a member event this server rejected never becomes the member's link claim, however
/// many copies arrive: alice's server sends a new self-join for her, claiming another
/// localpart, on top of carol's ban of her (citing her old join, so its auth events allow it);
/// c.example rejects it at check 5, and a second copy (as `/get_missing_events` would bring)
/// is already held and leaves her shown ID alone.
#[test]
fn a_second_copy_of_a_rejected_member_event_does_not_change_the_link() {
    let policy = RoomPolicy::P1;
    let version = policy.room_version;
    let carol = User::new(&version, "carol", "c.example");
    let alice = User::new(&version, "alice", "a.example");
    let bob = User::new(&version, "bob", "b.example");
    let (mut fed, _) = public_room(
        &["a.example", "b.example", "c.example"],
        &policy,
        &carol,
        &[&alice, &bob],
    );
    let alice_join = fed
        .server("c.example")
        .room
        .current_state_event("m.room.member", &alice.id())
        .unwrap()
        .unwrap()
        .event_id
        .clone();
    let shown = fed.server("c.example").links.user_id(&alice.id());
    assert_eq!(shown.as_deref(), Some("@alice:a.example"));
    let ban = fed
        .server("c.example")
        .send(
            &carol,
            "m.room.member",
            Some(&alice.id()),
            json!({"membership": "ban"}),
            200,
        )
        .unwrap();
    fed.deliver(&ban, &["a.example"], 200);
    let mut draft = fed
        .server("a.example")
        .room
        .draft_event(
            &alice.id(),
            "m.room.member",
            Some(&alice.id()),
            json!({"membership": "join", "localpart": "mallory", "domain": "a.example"}),
            300,
        )
        .unwrap();
    draft.auth_events = draft
        .auth_events
        .into_iter()
        .map(|id| {
            if id == ban.event_id {
                alice_join.clone()
            } else {
                id
            }
        })
        .collect();
    let pdu = fed.server("a.example").sign(&alice, draft).unwrap();
    let first = fed
        .server("c.example")
        .receive(&pdu, ArrivalPath::Send, 310);
    assert!(
        matches!(first.verdict, Verdict::Rejected { .. }),
        "{:?}",
        first.verdict
    );
    assert_eq!(fed.server("c.example").links.user_id(&alice.id()), shown);
    let second = fed
        .server("c.example")
        .receive(&pdu, ArrivalPath::MissingEvents, 320);
    assert_eq!(second.verdict, Verdict::AlreadyHeld);
    assert_eq!(second.link_after, Some(LinkStatus::Verified));
    assert_eq!(fed.server("c.example").links.user_id(&alice.id()), shown);
}
