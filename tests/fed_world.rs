//! The room world (`src/fed/`): full homeservers exchanging real signed events through the
//! network. Determinism, delivery without faults, convergence after a heal, the compromise story
//! under P0 and P1, and the always-properties.

use std::path::PathBuf;

use fedsim::engine::Trace;
use fedsim::fed::FedWorld;
use fedsim::scenario::{Scenario, parse};
use serde_json::Value;

fn scenario(text: &str, sets: &[&str]) -> Scenario {
    let sets: Vec<String> = sets.iter().map(|set| set.to_string()).collect();
    parse("test.toml", text, &sets).unwrap()
}

const SMALL: &str = r#"
name = "fed-small"
duration = "1d"

[rooms]
servers = 6
rooms = 3
servers_per_room = { min = 3, max = 6 }
users_per_server = { min = 1, max = 3 }
policy = "P1"
messages_per_room_per_hour = 12.0
topic_changes_per_room_per_day = 4.0
join_window = "1h"
"#;

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fedsim-fed-world-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn run(scenario: &Scenario, seed: u64, name: &str) -> (PathBuf, Value) {
    let dir = out_dir(name);
    fedsim::world::run_to_dir(scenario, seed, &dir, false).unwrap();
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    (dir, summary)
}

fn metric(summary: &Value, name: &str) -> f64 {
    summary["metrics"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("metric {name} in {}", summary["metrics"]))
}

fn all_checks_pass(summary: &Value) {
    for check in summary["checks"].as_array().unwrap() {
        assert_eq!(check["passed"], Value::Bool(true), "check failed: {check}");
    }
}

#[test]
fn a_small_world_is_byte_identical_twice_and_differs_for_another_seed() {
    let scenario = scenario(SMALL, &[]);
    let (first, _) = run(&scenario, 1, "det-a");
    let (second, _) = run(&scenario, 1, "det-b");
    let (other, _) = run(&scenario, 2, "det-c");
    for file in ["summary.json", "timeseries.csv", "servers.csv"] {
        let a = std::fs::read(first.join(file)).unwrap();
        let b = std::fs::read(second.join(file)).unwrap();
        assert!(a == b, "{file} differs between two runs of seed 1");
    }
    let a = std::fs::read(first.join("summary.json")).unwrap();
    let c = std::fs::read(other.join("summary.json")).unwrap();
    assert_ne!(a, c, "seed 2 gives another run");
    for dir in [first, second, other] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn without_faults_every_message_reaches_every_resident_server() {
    for policy in ["P0", "P1"] {
        let scenario = scenario(SMALL, &[&format!("rooms.policy={policy}")]);
        let (dir, summary) = run(&scenario, 3, &format!("coverage-{policy}"));
        all_checks_pass(&summary);
        assert!(
            metric(&summary, "messages_sent") > 100.0,
            "{policy}: traffic"
        );
        assert!(metric(&summary, "message_server_pairs") > 200.0, "{policy}");
        assert_eq!(metric(&summary, "message_coverage"), 1.0, "{policy}");
        assert_eq!(
            metric(&summary, "message_unlabelled_share"),
            1.0,
            "{policy}"
        );
        for outcome in [
            "soft_failed_auth",
            "soft_failed_link",
            "rejected",
            "dropped",
            "gaps_given_up",
        ] {
            assert_eq!(metric(&summary, outcome), 0.0, "{policy}: {outcome}");
        }
        assert_eq!(metric(&summary, "divergence_mean"), 0.0, "{policy}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn the_world_holds_real_events_and_every_member_joined() {
    let scenario = scenario(SMALL, &[]);
    let mut world = FedWorld::build(&scenario, 4, Trace::default());
    world.run(|_| {});
    let planned: usize = world.plans.iter().map(|plan| plan.members.len()).sum();
    let joined: usize = world
        .servers
        .iter()
        .map(|server| server.rooms.values().filter(|room| room.joined).count())
        .sum();
    assert_eq!(joined, planned, "every planned member joined");
    for (room, plan) in world.plans.iter().enumerate() {
        let views: Vec<_> = world
            .servers
            .iter()
            .filter_map(|server| server.rooms.get(&(room as u32)))
            .collect();
        assert_eq!(views.len(), plan.members.len());
        let first = views[0].state.forward_extremities();
        assert!(!first.is_empty());
    }
}
