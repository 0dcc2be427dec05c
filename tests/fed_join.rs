//! Joins as the spec describes them (`rooms.join = "state"`, `src/fed/join.rs`): the
//! `send_join` answer carries the state and the auth chain (stored as outliers), the join event
//! is the joiner's first timeline event, and history comes by `/backfill`. Determinism, sharing
//! on/off, delivery without faults, and what backfill shows.

#[path = "common/world_run.rs"]
mod world_run;

use fedsim::engine::Trace;
use fedsim::fed::FedWorld;
use fedsim::room::policy::ArrivalPath;
use world_run::{all_checks_pass, assert_files_equal, metric, run, scenario};

const SMALL: &str = r#"
name = "fed-join"
duration = "1d"

[rooms]
servers = 8
rooms = 3
servers_per_room = { min = 3, max = 8 }
users_per_server = { min = 1, max = 3 }
policy = "P1"
messages_per_room_per_hour = 12.0
topic_changes_per_room_per_day = 4.0
join_window = "3h"
join = "state"
"#;

#[test]
fn state_joins_are_byte_identical_twice_and_with_sharing_off() {
    let on = scenario(SMALL, &[]);
    let off = scenario(SMALL, &["rooms.share_facts=false"]);
    let (first, a) = run(&on, 5, "det-a");
    let (second, _) = run(&on, 5, "det-b");
    let (unshared, b) = run(&off, 5, "det-off");
    assert_files_equal(
        &first,
        &second,
        &["summary.json", "timeseries.csv", "servers.csv"],
        "two runs of seed 5",
    );
    assert_files_equal(
        &first,
        &unshared,
        &["timeseries.csv", "servers.csv"],
        "seed 5 with sharing off",
    );
    assert_eq!(
        a["metrics"], b["metrics"],
        "metrics differ with sharing off"
    );
    for dir in [first, second, unshared] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn the_rq5_world_with_state_joins_shares_facts_exactly() {
    let load = |sets: &[&str]| {
        let mut sets: Vec<String> = sets.iter().map(|set| set.to_string()).collect();
        sets.push("rooms.join=state".into());
        fedsim::scenario::load(
            Some(std::path::Path::new("scenarios/rq5-divergence.toml")),
            &sets,
        )
        .unwrap()
    };
    let (on, a) = run(&load(&[]), 2, "rq5-on");
    let (off, b) = run(&load(&["rooms.share_facts=false"]), 2, "rq5-off");
    assert_eq!(a["metrics"], b["metrics"]);
    assert!(
        std::fs::read(on.join("timeseries.csv")).unwrap()
            == std::fs::read(off.join("timeseries.csv")).unwrap()
    );
    all_checks_pass(&a);
    for dir in [on, off] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn without_faults_state_joins_deliver_everything_with_smaller_join_answers() {
    let (state_dir, state) = run(&scenario(SMALL, &[]), 3, "faultless-state");
    let (history_dir, history) = run(&scenario(SMALL, &["rooms.join=history"]), 3, "history");
    all_checks_pass(&state);
    assert_eq!(
        metric(&state, "joins_completed"),
        metric(&history, "joins_completed")
    );
    assert_eq!(metric(&state, "message_coverage"), 1.0);
    for outcome in ["soft_failed_link", "rejected", "dropped", "gaps_given_up"] {
        assert_eq!(metric(&state, outcome), 0.0, "{outcome}");
    }
    assert_eq!(metric(&state, "divergence_mean"), 0.0);
    assert!(metric(&state, "outliers_stored") > 0.0);
    assert!(metric(&state, "requests_backfill_ok") > 0.0);
    assert!(
        metric(&state, "bytes_send_join") < metric(&history, "bytes_send_join"),
        "the state and auth chain are smaller than the whole history"
    );
    for dir in [state_dir, history_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn backfilled_history_is_in_the_timeline_and_no_backfill_leaves_it_out() {
    let with = scenario(SMALL, &[]);
    let mut world = FedWorld::build(&with, 6, Trace::default());
    world.run(|_| {});
    let mut backfilled = 0;
    let mut outliers = 0;
    for server in &world.servers {
        for room in server.rooms.values() {
            for (pdu, held) in room.state.held_events() {
                if held.path == ArrivalPath::Backfill {
                    backfilled += 1;
                    assert!(
                        room.state.timeline_entry_of(&pdu.event_id).is_some(),
                        "a backfilled event has a timeline entry"
                    );
                }
                if room.state.is_outlier(&pdu.event_id) {
                    outliers += 1;
                    assert!(room.state.timeline_entry_of(&pdu.event_id).is_none());
                    assert!(!room.state.forward_extremities().contains(&pdu.event_id));
                }
            }
        }
    }
    assert!(backfilled > 0 && outliers > 0, "{backfilled} {outliers}");
    let (dir, none) = run(
        &scenario(SMALL, &["rooms.backfill_limit=0"]),
        6,
        "no-backfill",
    );
    all_checks_pass(&none);
    assert_eq!(metric(&none, "requests_backfill_ok"), 0.0);
    assert!(
        metric(&none, "message_coverage") < 1.0,
        "without backfill joiners miss the messages sent before they joined"
    );
    let _ = std::fs::remove_dir_all(dir);
}
