//! Moderation at scenario rates in the room world (src/fed/workload.rs): kicks, bans with
//! unbans, power-level changes by the creator, and rejoins.

#[path = "common/world_run.rs"]
mod world_run;

use fedsim::engine::Trace;
use fedsim::fed::FedWorld;
use fedsim::scenario::{Scenario, parse};
use world_run::{all_checks_pass, assert_files_equal, read_summary, run};

const MODERATED: &str = r#"
name = "moderated"
duration = "1d"

[rooms]
servers = 8
rooms = 3
servers_per_room = { min = 4, max = 8 }
messages_per_room_per_hour = 20.0
join_window = "30m"
kicks_per_room_per_day = 6.0
bans_per_room_per_day = 4.0
power_changes_per_room_per_day = 6.0
rejoin_after = "5m"
ban_duration = "30m"
"#;

fn scenario(sets: &[&str]) -> Scenario {
    let sets: Vec<String> = sets.iter().map(|set| set.to_string()).collect();
    parse("test.toml", MODERATED, &sets).unwrap()
}

#[test]
fn the_creator_kicks_bans_and_changes_power_at_rates_and_members_come_back() {
    for policy in ["P0", "P1"] {
        let mut world = FedWorld::build(
            &scenario(&[&format!("rooms.policy={policy}")]),
            21,
            Trace::default(),
        );
        world.run(|_| {});
        let adv = &world.counters.adv;
        assert!(adv.kicks_sent >= 5, "{policy}: {adv:?}");
        assert!(adv.bans_sent >= 3, "{policy}: {adv:?}");
        assert!(adv.power_changes_sent >= 5, "{policy}: {adv:?}");
        assert!(adv.unbans_sent >= 1, "{policy}");
        assert!(adv.rejoins_started >= adv.kicks_sent, "{policy}: {adv:?}");
        // Every server that holds a room at the end holds the creator's power-level events.
        for (room, plan) in world.plans.iter().enumerate() {
            let creator = plan.creator.0 as usize;
            let state = &mut world.servers[creator]
                .rooms
                .get_mut(&(room as u32))
                .unwrap()
                .state;
            let levels = state
                .current_state_event("m.room.power_levels", "")
                .unwrap();
            assert!(levels.is_some(), "{policy}: room {room} has power levels");
        }
        // Members come back: more joins completed than planned joiners.
        let planned: usize = world.plans.iter().map(|plan| plan.members.len() - 1).sum();
        assert!(
            world.counters.joins_completed as usize > planned,
            "{policy}"
        );
    }
}

#[test]
fn moderated_runs_pass_their_checks_and_are_byte_identical() {
    let mut dirs = Vec::new();
    for (name, sets) in [
        ("a", vec![]),
        ("b", vec![]),
        ("c", vec!["rooms.share_facts=false"]),
    ] {
        let (dir, _) = run(&scenario(&sets), 22, name);
        dirs.push(dir);
    }
    let summary = read_summary(&dirs[0]);
    all_checks_pass(&summary);
    assert_eq!(summary["metrics"]["rooms_disagreeing_at_end"], 0);
    assert_files_equal(
        &dirs[0],
        &dirs[1],
        &["summary.json", "timeseries.csv", "servers.csv"],
        "two runs of seed 22",
    );
    assert_files_equal(
        &dirs[0],
        &dirs[2],
        &["timeseries.csv", "servers.csv"],
        "seed 22 with share_facts off",
    );
    assert_eq!(summary["metrics"], read_summary(&dirs[2])["metrics"]);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}
