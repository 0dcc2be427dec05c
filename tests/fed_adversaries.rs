//! The room world's access control and adversaries (src/fed/acl.rs, src/fed/adversary.rs):
//! server ACLs and `m.federate` on requests, P8's join gate, and the fake `domain` claim (RQ9).

#[path = "common/world_run.rs"]
mod world_run;

use fedsim::engine::Trace;
use fedsim::fed::{FedWorld, Purpose};
use fedsim::room::room_state::Fate;
use fedsim::server::absolute_ms;
use world_run::{all_checks_pass, assert_files_equal, run, scenario};

fn world(text: &str, sets: &[&str], seed: u64) -> FedWorld {
    let mut world = FedWorld::build(&scenario(text, sets), seed, Trace::default());
    world.run(|_| {});
    world
}

fn joined(world: &FedWorld, server: usize, room: u32) -> bool {
    world.servers[server]
        .rooms
        .get(&room)
        .is_some_and(|state| state.joined)
}

/// Accepted events of `room` held by `server` with this sender, sent at or after `from_ms`.
fn accepted_from(world: &FedWorld, server: usize, room: u32, sender: &str, from_ms: u64) -> usize {
    world.servers[server].rooms[&room]
        .state
        .held_events()
        .filter(|(pdu, held)| {
            pdu.sender == sender
                && pdu.event_type == "m.room.message"
                && pdu.origin_server_ts >= absolute_ms(from_ms)
                && matches!(held.fate, Fate::Accepted { .. })
        })
        .count()
}

fn member_id(world: &FedWorld, room: u32, server: u32) -> String {
    let plan = &world.plans[room as usize];
    let position = plan
        .members
        .iter()
        .position(|(member, _)| *member == server)
        .expect("planned member");
    plan.member_ids[position].clone()
}

const ACL: &str = r#"
name = "acl"
duration = "5h"

[rooms]
servers = 5
bystanders = 1
rooms = 1
servers_per_room = { min = 4, max = 4 }
messages_per_room_per_hour = 40.0
join_window = "30m"

[[rooms.actions]]
at = "2h"
kind = "set-acl"
room = 0
deny = ["hs3.example", "HS4.*"]

[[rooms.actions]]
at = "3h"
kind = "send"
servers = [3]
room = 0
count = 5

[[rooms.actions]]
at = "3h"
kind = "join-late"
servers = [4]
room = 0
"#;

#[test]
fn a_server_acl_refuses_a_denied_servers_pushes_and_requests_but_still_sends_to_it() {
    const ACL_SETTLED_MS: u64 = 2 * 3_600_000 + 60_000;
    for policy in ["P0", "P1"] {
        let world = world(ACL, &[&format!("rooms.policy={policy}")], 5);
        let counters = &world.counters.adv;
        assert_eq!(counters.acl_events_sent, 1, "{policy}");
        // hs3's 5 scripted messages (and its random ones) are refused by hs0, hs1, hs2 (hs4
        // left); hs4's second join is refused by make_join.
        assert!(counters.acl_refused_pdus >= 15, "{policy}: {counters:?}");
        assert!(counters.acl_refused_requests > 0, "{policy}: {counters:?}");
        assert_eq!(counters.federate_refused_pdus, 0, "{policy}");
        let hs3 = member_id(&world, 0, 3);
        let hs0 = member_id(&world, 0, 0);
        for server in 0..3 {
            assert!(
                accepted_from(&world, server, 0, &hs3, 0) > 0,
                "{policy}: before"
            );
            assert_eq!(
                accepted_from(&world, server, 0, &hs3, ACL_SETTLED_MS),
                0,
                "{policy}: hs{server} took an hs3 message after the ACL"
            );
        }
        // Servers still send to a denied server that is a resident.
        assert!(
            accepted_from(&world, 3, 0, &hs0, ACL_SETTLED_MS) > 0,
            "{policy}"
        );
        // hs4 (in no room until then) cannot join after the ACL: every make_join is refused.
        assert!(!joined(&world, 4, 0), "{policy}");
        assert!(
            world.counters.requests[Purpose::MakeJoin as usize][2] > 0,
            "{policy}: make_join answered 403"
        );
        assert!(joined(&world, 3, 0), "{policy}: hs3 stays a resident");
    }
}

const UNFEDERATED: &str = r#"
name = "unfederated"
duration = "2h"

[rooms]
servers = 4
rooms = 2
servers_per_room = { min = 4, max = 4 }
messages_per_room_per_hour = 20.0
join_window = "20m"
unfederated_rooms = [1]
"#;

#[test]
fn m_federate_false_is_an_auth_rule_today_and_a_network_refusal_under_msc4430() {
    for policy in ["P0", "P1"] {
        let world = world(UNFEDERATED, &[&format!("rooms.policy={policy}")], 6);
        let creator = world.plans[1].creator.0 as usize;
        for server in 0..4 {
            assert!(
                joined(&world, server, 0),
                "{policy}: the federated room is whole"
            );
            assert_eq!(
                joined(&world, server, 1),
                server == creator,
                "{policy}: only the creator's server is in the unfederated room"
            );
        }
        let counters = &world.counters;
        let send_join_refused = counters.requests[Purpose::SendJoin as usize][2];
        if policy == "P0" {
            // Today: the resident drafts the template; the signed join fails auth rule 4.
            assert_eq!(counters.adv.federate_refused_requests, 0);
            assert!(send_join_refused > 0);
            assert!(counters.rejected > 0);
        } else {
            // MSC4430: no auth rule; the resident refuses the requests themselves.
            assert!(counters.adv.federate_refused_requests > 0);
            assert_eq!(send_join_refused, 0);
            assert_eq!(counters.rejected, 0);
        }
    }
}

const AMPLIFICATION: &str = r#"
name = "amplification"
duration = "4h"

[rooms]
servers = 8
bystanders = 2
rooms = 3
servers_per_room = { min = 4, max = 6 }
messages_per_room_per_hour = 30.0
join_window = "30m"
key_lifetime = "1h"

[[rooms.actions]]
at = "1h"
kind = "fake-domain-join"
servers = ["hs7.example"]
victim = "hs6.example"
"#;

/// Test that a resident fetches the victim's keys for a fake claim only while it holds none:
/// with one-day keys, each of the seven servers in the rooms (hs0–hs5 and the attacker) asks
/// once, however many rooms' fake member events reach it over `/send` (19 requests when each
/// one re-fetched).
#[test]
fn a_fake_claim_fetches_the_victims_keys_once_per_resident() {
    let world = world(AMPLIFICATION, &["rooms.key_lifetime=1d"], 7);
    let adv = &world.counters.adv;
    assert_eq!(adv.fake_domain_joins_started, 3);
    assert!(adv.victim_pdus > 100, "{adv:?}");
    assert!((1..=7).contains(&adv.victim_requests_key), "{adv:?}");
}

#[test]
fn a_fake_domain_claim_sends_room_traffic_to_the_victim_unless_gated_or_not_routed() {
    let p1 = world(AMPLIFICATION, &[], 7);
    let adv = &p1.counters.adv;
    assert_eq!(adv.fake_domain_joins_started, 3);
    for room in 0..3 {
        assert!(joined(&p1, 7, room), "the attacker got in");
    }
    // Every message after the joins goes to the victim too, and every resident fetched its keys.
    assert!(adv.victim_pdus > 100, "{adv:?}");
    assert!(adv.victim_requests_key >= 10, "{adv:?}");
    assert!(
        adv.victim_bytes > 2 * adv.attacker_bytes,
        "amplified: {adv:?}"
    );
    // The attacker's member is never verified: nobody can co-sign for the victim.
    for server in 0..6 {
        if let Some(state) = p1.servers[server].rooms.get(&0) {
            for link in state.links.links() {
                if link.domain.as_deref() == Some("hs6.example") {
                    assert_ne!(
                        link.status,
                        fedsim::room::links::LinkStatus::Verified,
                        "hs{server}"
                    );
                }
            }
        }
    }
    // Not routing to unverified links: no pushes reach the victim, honest delivery intact.
    let unrouted = world(
        AMPLIFICATION,
        &["rooms.fan_out_to_unverified_links=false"],
        7,
    );
    assert_eq!(unrouted.counters.adv.victim_pdus, 0);
    assert!(unrouted.counters.adv.victim_requests_key > 0);
    // P8's join gate keeps the attacker out; P0 has no claim to fake.
    for policy in ["P8", "P0"] {
        let gated = world(AMPLIFICATION, &[&format!("rooms.policy={policy}")], 7);
        assert_eq!(gated.counters.adv.victim_pdus, 0, "{policy}");
        for room in 0..3 {
            assert!(
                policy == "P0" || !joined(&gated, 7, room),
                "{policy}: gated"
            );
        }
        if policy == "P8" {
            assert!(gated.counters.adv.join_gate_refused > 0);
        }
    }
}

#[test]
fn the_join_gate_admits_every_honest_joiner() {
    let honest = AMPLIFICATION.split("[[rooms.actions]]").next().unwrap();
    let gated = world(honest, &["rooms.policy=P8"], 8);
    let planned: usize = gated.plans.iter().map(|plan| plan.members.len()).sum();
    let joined_count: usize = gated
        .servers
        .iter()
        .map(|server| server.rooms.values().filter(|room| room.joined).count())
        .sum();
    assert_eq!(joined_count, planned);
    assert_eq!(gated.counters.adv.join_gate_refused, 0);
}

#[test]
fn adversary_runs_are_byte_identical_and_independent_of_shared_facts() {
    let with_acl = format!(
        "{AMPLIFICATION}\n[[rooms.actions]]\nat = \"2h\"\nkind = \"set-acl\"\nroom = 0\ndeny = [\"hs5.example\"]\n"
    );
    let runs = [
        ("a", vec![]),
        ("b", vec![]),
        ("c", vec!["rooms.share_facts=false"]),
    ];
    let mut dirs = Vec::new();
    let mut summaries = Vec::new();
    for (name, sets) in runs {
        let (dir, summary) = run(&scenario(&with_acl, &sets), 9, name);
        dirs.push(dir);
        summaries.push(summary);
    }
    let summary = &summaries[0];
    assert!(summary["metrics"]["amplification_factor"].as_f64().unwrap() > 1.0);
    assert!(summary["metrics"]["acl_events_sent"].as_u64().unwrap() == 1);
    all_checks_pass(summary);
    assert_files_equal(
        &dirs[0],
        &dirs[1],
        &["summary.json", "timeseries.csv", "servers.csv"],
        "two runs of seed 9",
    );
    // With sharing off: the same files, except the scenario echo in summary.json's parameters.
    assert_files_equal(
        &dirs[0],
        &dirs[2],
        &["timeseries.csv", "servers.csv"],
        "seed 9 with sharing off",
    );
    let unshared = &summaries[2];
    assert_eq!(summary["metrics"], unshared["metrics"]);
    assert_eq!(summary["checks"], unshared["checks"]);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// RQ2 with an observer cut off from the compromised origin before the rotation, under
/// fail-closed P2: hs5 drops hs1's key and its member links before t0, and so shows none of the
/// attacker's messages. It counts as contained at t0 (0 s), at key and at link level, not as
/// "never": every observer is contained, and the slowest is one of the others.
const CONTAINED_BEFORE: &str = r#"
name = "contained-before-the-rotation"
duration = "16h"

[network]
latency = { kind = "log-normal", median = "60ms", sigma = 0.5 }

[metrics]
sample_interval = "10m"

[rooms]
servers = 12
rooms = 3
servers_per_room = { min = 12, max = 12 }
users_per_server = { min = 1, max = 1 }
policy = "P2"
key_lifetime = "2h"
messages_per_room_per_hour = 6.0
join_window = "30m"

[[rooms.actions]]
at = "1h"
kind = "partition"
a = [5]
b = [1]

[[rooms.actions]]
at = "6h"
kind = "compromise"
servers = [1]

[[rooms.actions]]
at = "12h"
kind = "rotate-key"
servers = [1]

[[rooms.actions]]
at = "13h"
kind = "attacker-send"
servers = [1]
count = 3
"#;

#[test]
fn an_observer_contained_before_the_rotation_counts_zero_not_never() {
    let (_, summary) = run(
        &scenario(CONTAINED_BEFORE, &[]),
        1,
        "contained-before-the-rotation",
    );
    let metrics = &summary["metrics"];
    for level in ["links", "keys"] {
        assert_eq!(
            metrics[format!("containment_{level}_share")].as_f64(),
            Some(1.0),
            "{level}: {metrics:#}"
        );
        let p100 = metrics[format!("containment_{level}_s_p100")]
            .as_f64()
            .unwrap();
        assert!(p100 > 0.0, "{level}: the slowest observer is not hs5");
    }
    // hs5 shows none of the attacker's messages (sent from 13 h on by hs1's member keys).
    // while observers still holding hs1's old key show some.
    let world = world(CONTAINED_BEFORE, &[], 1);
    let mut shown_elsewhere = 0;
    for room in 0..3 {
        assert!(joined(&world, 5, room));
        let attacker = member_id(&world, room, 1);
        assert_eq!(accepted_from(&world, 5, room, &attacker, 13 * 3_600_000), 0);
        shown_elsewhere += accepted_from(&world, 2, room, &attacker, 13 * 3_600_000);
    }
    assert!(shown_elsewhere > 0);
}
