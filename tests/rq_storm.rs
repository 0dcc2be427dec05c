//! RQ7 in the room world: after hs0 rotates, every other server re-queries hs0's member event
//! in every room (P1) — rooms × (servers - 1) GETs at the origin, all answered, counted per
//! second in storm.csv — while P6's push carries the re-signed events and brings only one key
//! request per observer.

#[path = "common/world_run.rs"]
mod world_run;

use std::path::PathBuf;

use serde_json::Value;
use world_run::load;

fn run(policy: &str) -> (PathBuf, Value) {
    let sets: Vec<String> = [
        format!("rooms.policy={policy}"),
        "rooms.servers=12".to_owned(),
        "rooms.servers_per_room.min=12".to_owned(),
        "rooms.servers_per_room.max=12".to_owned(),
        "rooms.rooms=3".to_owned(),
    ]
    .to_vec();
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    world_run::run(&load("scenarios/rq7-requery-storm.toml", &sets), 1, policy)
}

fn metric(summary: &Value, name: &str) -> u64 {
    summary["metrics"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{name}: {}", summary["metrics"][name]))
}

#[test]
fn p1_brings_rooms_times_observers_requeries_to_the_origin_and_p6_none() {
    let (p1_dir, p1) = run("P1");
    assert_eq!(metric(&p1, "storm_requery_gets"), 3 * 11);
    assert_eq!(metric(&p1, "requests_event_requery_ok"), 3 * 11);
    assert_eq!(
        p1["metrics"]["storm_requeries_unanswered_share"],
        Value::from(0.0)
    );
    let peak = metric(&p1, "storm_peak_requery_gets_per_s");
    assert!((1..=33).contains(&peak), "{peak}");
    // The per-second series adds up to the totals.
    let csv = std::fs::read_to_string(p1_dir.join("storm.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("t_s,requery_gets,key_gets"));
    let (requeries, keys) = lines.fold((0, 0), |(r, k), line| {
        let cells: Vec<u64> = line.split(',').map(|cell| cell.parse().unwrap()).collect();
        (r + cells[1], k + cells[2])
    });
    assert_eq!(requeries, 33);
    assert_eq!(keys, metric(&p1, "storm_key_gets"));
    assert!(p1_dir.join("requery-storm.svg").is_file());
    let (_, p6) = run("P6");
    assert_eq!(metric(&p6, "storm_requery_gets"), 0);
    assert_eq!(metric(&p6, "storm_key_gets"), 11);
    assert!(metric(&p6, "bytes_push") > 0);
}
