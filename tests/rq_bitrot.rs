//! RQ4 in the room world (`scenarios/rq4-bitrot.toml`'s machinery): a newcomer with an empty key
//! cache reads a room's history after one server died, one rotated without re-signing and one
//! rotated and re-signed; what it can verify and show differs by policy exactly as the policies
//! say. Also: the churn knobs generate the same actions for the same seed, and the files are the
//! same with shared facts on or off.

#[path = "common/world_run.rs"]
mod world_run;

use std::path::PathBuf;

use fedsim::scenario::{Scenario, parse};
use serde_json::Value;
use world_run::assert_files_equal;

const STORY: &str = r#"
name = "bitrot-story"
duration = "6d"

[rooms]
servers = 8
rooms = 1
servers_per_room = { min = 8, max = 8 }
users_per_server = { min = 1, max = 1 }
policy = "P1"
messages_per_room_per_hour = 2.0
join_window = "1h"

[[rooms.actions]]
at = "2d"
kind = "take-offline"
servers = [3]

[[rooms.actions]]
at = "3d"
kind = "rotate-key"
servers = [4]
resign = false

[[rooms.actions]]
at = "3d"
kind = "rotate-key"
servers = [5]

[[rooms.actions]]
at = "5d"
kind = "join-late"
servers = [7]
"#;

fn scenario(sets: &[&str]) -> Scenario {
    let sets: Vec<String> = sets.iter().map(|set| set.to_string()).collect();
    parse("bitrot-story.toml", STORY, &sets).unwrap()
}

fn run(sets: &[&str], name: &str) -> (PathBuf, Value, Vec<Vec<String>>) {
    let (dir, summary) = world_run::run(&scenario(sets), 1, name);
    let rows: Vec<Vec<String>> = std::fs::read_to_string(dir.join("bitrot.csv"))
        .unwrap()
        .lines()
        .map(|line| line.split(',').map(str::to_owned).collect())
        .collect();
    (dir, summary, rows)
}

/// The value of `column` in the newcomer's (only) data row.
fn cell<'a>(rows: &'a [Vec<String>], column: &str) -> &'a str {
    let at = rows[0].iter().position(|name| name == column).unwrap();
    assert_eq!(rows.len(), 2, "one newcomer row: {rows:?}");
    &rows[1][at]
}

fn number(rows: &[Vec<String>], column: &str) -> f64 {
    cell(rows, column).parse().unwrap()
}

#[test]
fn a_newcomer_loses_the_dead_and_the_unre_signed_links_under_p1_and_p7_keeps_the_unre_signed() {
    let (p1_dir, p1, p1_rows) = run(&["rooms.policy=P1"], "p1");
    assert_eq!(cell(&p1_rows, "newcomer"), "hs7.example");
    // The room was created within the first minute; the newcomer came at 5 days.
    let age_s = number(&p1_rows, "room_age_s");
    assert!(
        (5.0 * 86_400.0 - 60.0..=5.0 * 86_400.0).contains(&age_s),
        "{age_s}"
    );
    // hs0..hs6 each had one member with a claim before the join.
    assert_eq!(number(&p1_rows, "links"), 7.0);
    // P1: hs3 is dead (no keys to fetch), hs4's claim is co-signed by a key now in
    // old_verify_keys and its re-query returns the same copy; hs5 re-signed, so the newcomer's
    // re-query verifies it.
    assert_eq!(number(&p1_rows, "links_verifiable"), 5.0);
    let messages = number(&p1_rows, "messages");
    assert!(
        messages > 100.0,
        "two messages an hour for five days: {messages}"
    );
    assert_eq!(number(&p1_rows, "messages_held"), messages);
    assert!(number(&p1_rows, "messages_hidden") > 0.0);
    assert_eq!(
        number(&p1_rows, "messages_visible") + number(&p1_rows, "messages_hidden"),
        messages
    );
    assert!(p1["metrics"]["requests_event_requery_ok"].as_u64().unwrap() >= 2);
    assert!(p1_dir.join("bitrot.svg").is_file() && p1_dir.join("bitrot.png").is_file());
    // P7: the claim co-signed by hs4's old key vouches for what hs4's user sent before the
    // rotation; the dead server's claim still cannot be checked.
    let (_, _, p7_rows) = run(&["rooms.policy=P7"], "p7");
    assert_eq!(number(&p7_rows, "links_verifiable"), 6.0);
    assert!(number(&p7_rows, "messages_visible") > number(&p1_rows, "messages_visible"));
    // P5: the same links as P1, and every message shown.
    let (_, p5, p5_rows) = run(&["rooms.policy=P5"], "p5");
    assert_eq!(number(&p5_rows, "links_verifiable"), 5.0);
    assert_eq!(number(&p5_rows, "messages_visible"), messages);
    assert_eq!(number(&p5_rows, "messages_hidden"), 0.0);
    assert!(number(&p5_rows, "messages_sender_verified") < messages);
    assert_eq!(
        p5["metrics"]["bitrot_messages_hidden_share"],
        Value::from(0.0)
    );
}

#[test]
fn bitrot_files_are_identical_twice_and_with_shared_facts_off() {
    let sets = [
        "rooms.server_lifetime_mean=4d",
        "rooms.key_rotation_mean=2d",
        "rooms.resign_probability=0.5",
    ];
    let (a, _, _) = run(&sets, "det-a");
    let (b, _, _) = run(&sets, "det-b");
    let mut unshared = sets.to_vec();
    unshared.push("rooms.share_facts=false");
    let (c, _, _) = run(&unshared, "det-c");
    assert_files_equal(
        &a,
        &b,
        &[
            "summary.json",
            "timeseries.csv",
            "servers.csv",
            "bitrot.csv",
        ],
        "two runs of seed 1",
    );
    assert_files_equal(
        &a,
        &c,
        &["timeseries.csv", "servers.csv", "bitrot.csv"],
        "seed 1 with share_facts off",
    );
    for dir in [a, b, c] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn with_a_notary_p0_checks_the_dead_servers_history_and_p7_vouches_for_it_while_p1_cannot() {
    // hs0 (the creator, alive) answers key queries from its cache for the dead hs3.
    let (_, p0, p0_rows) = run(&["rooms.policy=P0", "rooms.notary=0"], "notary-p0");
    assert_eq!(number(&p0_rows, "links_verifiable"), 7.0);
    assert_eq!(
        number(&p0_rows, "messages_visible"),
        number(&p0_rows, "messages")
    );
    assert!(p0["metrics"]["requests_key_notary_ok"].as_u64().unwrap() >= 1);
    assert_eq!(p0["metrics"]["gaps_given_up"], Value::from(0));
    // P1: a historic key is not a current key; the dead server's link stays unverified.
    let (_, _, p1_rows) = run(&["rooms.policy=P1", "rooms.notary=0"], "notary-p1");
    assert_eq!(number(&p1_rows, "links_verifiable"), 5.0);
    // P7: the historic key vouches for what hs3 sent before its key expired.
    let (_, _, p7_rows) = run(&["rooms.policy=P7", "rooms.notary=0"], "notary-p7");
    assert_eq!(number(&p7_rows, "links_verifiable"), 7.0);
}

/// Every newcomer has a row, placed or not: without a notary a P0 newcomer drops a dead
/// server's events and cannot place its own join (hs21..hs25 here), and it counts with what it
/// holds of the history before its attempt (almost nothing) instead of being left out, which
/// made the pooled shares read 100% exactly when newcomers failed.
#[test]
fn newcomers_that_cannot_place_their_join_still_count() {
    let text: String = std::fs::read_to_string("scenarios/rq4-bitrot.toml")
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with("notary ="))
        .map(|line| format!("{line}\n"))
        .collect();
    let scenario = parse("rq4-no-notary.toml", &text, &["rooms.policy=P0".to_owned()]).unwrap();
    let (dir, summary) = world_run::run(&scenario, 1, "no-notary-p0");
    let metrics = &summary["metrics"];
    // Six newcomers in each of the two rooms.
    assert_eq!(metrics["bitrot_newcomers"], 12);
    let held = metrics["bitrot_messages_held_share"].as_f64().unwrap();
    assert!(held < 0.1, "held share {held}");
    let _ = std::fs::remove_dir_all(dir);
}
