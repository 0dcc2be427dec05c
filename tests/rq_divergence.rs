//! RQ5 in the room world: `scenarios/rq5-divergence.toml` writes the pairwise divergence per
//! room (`divergence.csv`), the orphans per server (`orphans.csv`) and the heat map; P1 diverges
//! and orphans replies where P5 (label, don't hide) does neither.

#[path = "common/world_run.rs"]
mod world_run;

use std::path::PathBuf;

use serde_json::Value;
use world_run::load;

fn run(policy: &str) -> (PathBuf, Value) {
    let policy_set = format!("rooms.policy={policy}");
    let sets = [policy_set.as_str()];
    world_run::run(&load("scenarios/rq5-divergence.toml", &sets), 1, policy)
}

fn divergences(dir: &std::path::Path) -> Vec<f64> {
    let text = std::fs::read_to_string(dir.join("divergence.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("room,server_a,server_b,divergence"));
    lines
        .map(|line| line.rsplit(',').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn p1_diverges_and_orphans_replies_where_p5_does_neither() {
    let (p1_dir, p1) = run("P1");
    let p1_pairs = divergences(&p1_dir);
    // 3 rooms of 5-10 servers: every pair of joined servers of each room.
    assert!(p1_pairs.len() >= 3 * 10, "{} pairs", p1_pairs.len());
    let mean = p1_pairs.iter().sum::<f64>() / p1_pairs.len() as f64;
    assert!(mean > 0.0 && p1_pairs.iter().all(|d| (0.0..=1.0).contains(d)));
    assert!(p1["metrics"]["reply_orphans"].as_u64().unwrap() > 0);
    assert!(p1["metrics"]["visible_replies"].as_u64().unwrap() > 1000);
    assert!(p1_dir.join("divergence.svg").is_file() && p1_dir.join("divergence.png").is_file());
    let orphans = std::fs::read_to_string(p1_dir.join("orphans.csv")).unwrap();
    assert!(orphans.starts_with("room,server,messages_held,visible,hidden_share,"));
    let (p5_dir, p5) = run("P5");
    assert!(divergences(&p5_dir).iter().all(|d| *d == 0.0));
    assert_eq!(p5["metrics"]["reply_orphans"], Value::from(0));
    assert_eq!(p5["metrics"]["orphan_reply_share"], Value::from(0.0));
    for dir in [p1_dir, p5_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
