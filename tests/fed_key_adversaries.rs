//! Key-layer adversaries and accidents in the room world (src/fed/keyadv.rs): a lying server,
//! key flapping, clock skew, key loss, database loss, domain expiry and re-registration.

use fedsim::engine::Trace;
use fedsim::fed::FedWorld;
use fedsim::room::links::LinkStatus;
use fedsim::scenario::parse;

const BASE: &str = r#"
name = "key-adversaries"
duration = "8h"

[rooms]
servers = 6
rooms = 2
servers_per_room = { min = 6, max = 6 }
messages_per_room_per_hour = 30.0
join_window = "20m"
key_lifetime = "1h"
"#;

fn world(actions: &str, sets: &[&str], seed: u64) -> FedWorld {
    let text = format!("{BASE}\n{actions}");
    let sets: Vec<String> = sets.iter().map(|set| set.to_string()).collect();
    let scenario = parse("test.toml", &text, &sets).unwrap();
    let mut world = FedWorld::build(&scenario, seed, Trace::default());
    world.run(|_| {});
    world
}

/// The statuses `observer` holds for the links claiming `domain` in room 0.
fn statuses(world: &FedWorld, observer: usize, domain: &str) -> Vec<LinkStatus> {
    world.servers[observer].rooms[&0]
        .links
        .links()
        .filter(|link| link.domain.as_deref() == Some(domain))
        .map(|link| link.status)
        .collect()
}

#[test]
fn a_lying_server_is_verified_by_its_audience_only() {
    let lying = r#"
[[rooms.actions]]
at = "1h"
kind = "lying-server"
servers = [2]
audience = [0, 1]
"#;
    let world = world(lying, &[], 11);
    for observer in [0, 1] {
        let seen = statuses(&world, observer, "hs2.example");
        assert!(!seen.is_empty());
        assert!(
            seen.iter().all(|status| *status == LinkStatus::Verified),
            "hs{observer}: {seen:?}"
        );
    }
    for observer in [3, 4, 5] {
        let seen = statuses(&world, observer, "hs2.example");
        assert!(
            seen.iter().all(|status| *status == LinkStatus::Unverified),
            "hs{observer}: {seen:?}"
        );
    }
    assert!(
        world.counters.soft_failed_link > 0,
        "hs2's messages hidden outside the audience"
    );
    // Without the lie every observer verifies hs2.
    let honest = self::world("", &[], 11);
    for observer in [0, 1, 3, 4, 5] {
        assert!(
            statuses(&honest, observer, "hs2.example")
                .iter()
                .all(|s| *s == LinkStatus::Verified)
        );
    }
    assert_eq!(honest.counters.soft_failed_link, 0);
}

#[test]
fn key_flapping_churns_links_and_requeries() {
    let flapping = r#"
[[rooms.actions]]
at = "1h"
kind = "key-flapping"
servers = [2]
period = "20m"
"#;
    let world = world(flapping, &[], 12);
    let honest = self::world("", &[], 12);
    assert_eq!(honest.counters.link_invalidations, 0);
    assert!(
        world.counters.link_invalidations >= 5,
        "{}",
        world.counters.link_invalidations
    );
    assert!(world.counters.links_reverified > 0);
    let requeries: u64 = world.counters.requests[fedsim::fed::Purpose::EventRequery as usize]
        .iter()
        .sum();
    assert!(requeries > 0);
    assert!(
        world.servers[2].stats.event_requeries_received > 0,
        "the flapping origin pays too"
    );
}

#[test]
fn a_fast_clock_gets_its_events_dropped_under_v12_but_not_with_member_keys() {
    // hs2's clock runs two days ahead: its events claim a time past its key's validity.
    let skew = r#"
[[rooms.actions]]
at = "1h"
kind = "clock-skew"
servers = [2]
offset_ms = 172800000
"#;
    let p0 = world(skew, &["rooms.policy=P0"], 13);
    assert!(
        p0.counters.dropped > 0,
        "v12: the v5 validity rule drops them"
    );
    let p1 = world(skew, &["rooms.policy=P1"], 13);
    assert_eq!(
        p1.counters.dropped, 0,
        "member-key signatures carry no validity"
    );
    let honest = world("", &["rooms.policy=P0"], 13);
    assert_eq!(honest.counters.dropped, 0);
}

#[test]
fn after_key_loss_links_turn_unverified_then_reverify_from_the_requeried_resigned_events() {
    let loss = r#"
[[rooms.actions]]
at = "2h"
kind = "lose-key"
servers = [2]
"#;
    let world = world(loss, &[], 14);
    assert!(world.counters.link_invalidations > 0);
    let requeries: u64 = world.counters.requests[fedsim::fed::Purpose::EventRequery as usize]
        .iter()
        .sum();
    assert!(requeries > 0);
    for observer in [0, 1, 3, 4, 5] {
        let seen = statuses(&world, observer, "hs2.example");
        assert!(
            seen.iter().all(|status| *status == LinkStatus::Verified),
            "hs{observer}: {seen:?}"
        );
    }
}

#[test]
fn database_loss_makes_the_server_fetch_every_key_again() {
    let loss = r#"
[[rooms.actions]]
at = "2h"
kind = "lose-database"
servers = [3]
"#;
    let world = world(loss, &[], 15);
    let honest = self::world("", &[], 15);
    let fetched = |world: &FedWorld| world.servers[3].cache.stats.requests();
    assert!(
        fetched(&world) > fetched(&honest),
        "{} vs {}",
        fetched(&world),
        fetched(&honest)
    );
}

#[test]
fn a_reregistered_domain_loses_its_old_links_except_under_verify_once() {
    let reuse = r#"
[[rooms.actions]]
at = "2h"
kind = "expire-domain"
servers = [2]

[[rooms.actions]]
at = "4h"
kind = "reregister"
servers = [2]
"#;
    let world = world(reuse, &[], 16);
    for observer in [0, 1, 3, 4, 5] {
        let seen = statuses(&world, observer, "hs2.example");
        assert!(!seen.is_empty());
        assert!(
            seen.iter().all(|status| *status == LinkStatus::Unverified),
            "hs{observer}: {seen:?}"
        );
    }
    assert!(
        world.servers[2].rooms.is_empty(),
        "the new owner has no rooms"
    );
    let p4 = self::world(reuse, &["rooms.policy=P4"], 16);
    for observer in [0, 1, 3, 4, 5] {
        assert!(
            statuses(&p4, observer, "hs2.example")
                .iter()
                .all(|s| *s == LinkStatus::Verified)
        );
    }
}

/// P9 in the room world, where caches start from a warm start shared by the world unless the
/// policy binds keys: the server shown a second key under the lying server's key ID never
/// adopts it (collisions, no revalidation), where P1 adopts it. The lie starts at 1 min, before
/// any re-check, so only the warm start has shown the real key: sharing the unbound warm start
/// under P9 would let the first re-check bind the second key (checked: this test then fails).
#[test]
fn p9_never_adopts_a_second_key_under_a_known_key_id() {
    let lie = "[[rooms.actions]]\nat = \"1m\"\nkind = \"lying-server\"\nservers = [2]\n\
               audience = [1, 3, 4, 5]\n";
    let p1 = world(lie, &["rooms.policy=P1"], 1);
    let p9 = world(lie, &["rooms.policy=P9"], 1);
    let collisions = |world: &FedWorld| -> u64 {
        world
            .servers
            .iter()
            .map(|hs| hs.cache.stats.key_collisions)
            .sum()
    };
    assert_eq!(collisions(&p1), 0);
    assert!(p1.counters.key_revalidations > 0);
    assert!(collisions(&p9) > 0);
    assert_eq!(p9.counters.key_revalidations, 0);
}
