//! Gaps that keep failing back off (`src/fed/pulls.rs`): under P0 a server that cannot check a
//! lying server's signatures used to re-pull and re-drop its events for every later event (2 M
//! drops in 8 simulated hours); with Synapse's pull backoff each failed event is pulled again
//! only after 2 h, 4 h, ... and what depends on it is given up without a request.

use fedsim::engine::Trace;
use fedsim::fed::{FedWorld, PULL_BACKOFF_STEP_MS};
use fedsim::scenario::Scenario;
use serde_json::Value;

fn load(file: &str, sets: &[&str]) -> Scenario {
    let sets: Vec<String> = sets.iter().map(|set| set.to_string()).collect();
    fedsim::scenario::load(Some(std::path::Path::new(file)), &sets).unwrap()
}

fn summary(scenario: &Scenario, name: &str) -> (std::path::PathBuf, Value) {
    let dir = std::env::temp_dir().join(format!(
        "fedsim-fed-pull-backoff-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    fedsim::world::run_to_dir(scenario, 1, &dir, false).unwrap();
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    (dir, summary)
}

fn metric(summary: &Value, name: &str) -> f64 {
    summary["metrics"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("metric {name} in {}", summary["metrics"]))
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
