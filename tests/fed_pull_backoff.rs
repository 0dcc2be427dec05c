//! Gaps that keep failing back off (`src/fed/pulls.rs`): under P0 a server that cannot check a
//! lying server's signatures used to re-pull and re-drop its events for every later event (2 M
//! drops in 8 simulated hours); with Synapse's pull backoff each failed event is pulled again
//! only after 2 h, 4 h, ... and what depends on it is given up without a request.

#[path = "common/world_run.rs"]
mod world_run;

use fedsim::engine::Trace;
use fedsim::fed::{FedWorld, PULL_BACKOFF_STEP_MS};
use fedsim::scenario::Scenario;
use serde_json::Value;
use world_run::{load, metric};

fn summary(scenario: &Scenario, name: &str) -> (std::path::PathBuf, Value) {
    world_run::run(scenario, 1, name)
}

const LYING: &str = "scenarios/rq10-lying-server-rooms.toml";

#[test]
fn a_lying_servers_events_are_pulled_again_only_after_a_growing_backoff() {
    let scenario = load(LYING, &["rooms.policy=P0"]);
    let mut world = FedWorld::build(&scenario, 1, Trace::default());
    world.run(|_| {});
    // hs0 (outside the audience) cannot check hs2's signatures: it drops them.
    let failed = world.servers[0]
        .rooms
        .values()
        .flat_map(|room| room.failed_pulls().values().copied())
        .collect::<Vec<_>>();
    assert!(!failed.is_empty(), "hs0 records failed pulls");
    assert!(
        failed.iter().any(|failure| failure.attempts >= 2),
        "an event failed again after its backoff"
    );
    let lie_ms = 2 * 3_600_000;
    for failure in &failed {
        // Retried no sooner than 2 h after the lie began, never sooner than one step doubled.
        assert!(failure.retry_at_ms >= lie_ms + 2 * PULL_BACKOFF_STEP_MS);
    }
    // Servers shown the real key record nothing.
    for server in &world.servers[1..] {
        for room in server.rooms.values() {
            assert!(room.failed_pulls().is_empty(), "{}", server.name);
        }
    }
    let counters = &world.counters;
    assert!(counters.gaps_backed_off > 0);
    assert!(
        counters.dropped < 5_000,
        "{} drops (2 M without backoff)",
        counters.dropped
    );
    assert!(
        counters.requests[fedsim::fed::Purpose::GetMissingEvents as usize][0] < 200,
        "few /get_missing_events"
    );
}

#[test]
fn the_backoff_keeps_what_clients_see_and_runs_that_never_fail_a_pull_are_unchanged() {
    let (p0_dir, p0) = summary(&load(LYING, &["rooms.policy=P0"]), "p0");
    // What hs0 shows is the same as with unbounded retries (docs/notes/adv.md, before the
    // backoff: coverage 0.942, divergence 0.116, 5,921 accepted).
    assert_eq!(metric(&p0, "message_coverage"), 0.942468619);
    assert_eq!(metric(&p0, "divergence_mean"), 0.115905592);
    assert_eq!(metric(&p0, "accepted"), 5921.0);
    assert!(metric(&p0, "pull_failures") > 0.0);
    // P1 never fails a pull here: no backoff metrics at all.
    let (p1_dir, p1) = summary(&load(LYING, &["rooms.policy=P1"]), "p1");
    assert!(p1["metrics"].get("pull_failures").is_none());
    assert!(p1["metrics"].get("gaps_backed_off").is_none());
    assert_eq!(metric(&p1, "gaps_given_up"), 0.0);
    for dir in [p0_dir, p1_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn servers_cut_off_from_a_rotated_key_catch_up_after_the_heal_and_the_backoff() {
    // RQ5 under P0: hs7 and hs8 cannot reach hs2 from 5 h to 30 h while hs2 signs with a new
    // key from 6 h; they drop its events, back off, and once healed pull everything again.
    let (dir, p0) = summary(
        &load("scenarios/rq5-divergence.toml", &["rooms.policy=P0"]),
        "rq5-p0",
    );
    assert!(metric(&p0, "pull_failures") > 0.0);
    assert!(metric(&p0, "gaps_backed_off") > 0.0);
    assert!(
        metric(&p0, "dropped") < 5_000.0,
        "37 k drops without backoff"
    );
    assert_eq!(metric(&p0, "message_coverage"), 1.0);
    assert_eq!(metric(&p0, "divergence_mean"), 0.0);
    let _ = std::fs::remove_dir_all(dir);
}
