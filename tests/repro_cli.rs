//! `fedsim repro`: the three reproductions of issue 5 item 9 behave as the design predicts and
//! are deterministic; the DAG view has one node per held event; bad scripts give one-line
//! errors (exit 2); a check that misses its expectation exits 1 with the reproduce line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn fedsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("fedsim runs")
}

/// A fresh directory for one test, under cargo's scratch directory for integration tests
/// (`target/tmp`): the next run replaces it, so nothing piles up in `/tmp`.
fn scratch(name: &str) -> PathBuf {
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fedsim-repro")
        .join(name);
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a shipped scenario with `--check-determinism` and returns its summary.
fn run_scenario(name: &str) -> (PathBuf, Value) {
    let out = scratch(name);
    let file = format!("scenarios/repro/{name}.toml");
    let output = fedsim(&[
        "repro",
        &file,
        "--out",
        out.to_str().unwrap(),
        "--check-determinism",
    ]);
    assert!(
        output.status.success(),
        "{name}: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let stdout = text(&output.stdout);
    assert!(stdout.contains("deterministic: two runs gave identical files"));
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["all_met"], true);
    for check in summary["checks"].as_array().unwrap() {
        assert_eq!(check["met"], true, "{name}: {check}");
    }
    (out, summary)
}

/// (expect, result) of every check, in order.
fn outcomes(summary: &Value) -> Vec<(String, String)> {
    summary["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|check| {
            (
                check["expect"].as_str().unwrap().to_owned(),
                check["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(expect, result)| (expect.to_string(), result.to_string()))
        .collect()
}

/// Nodes (names) and edges of a dot file written by `fedsim repro`.
fn dot_graph(path: &Path) -> (BTreeSet<String>, Vec<(String, String)>) {
    let dot = std::fs::read_to_string(path).unwrap();
    assert!(dot.contains("digraph room {"));
    let mut nodes = BTreeSet::new();
    let mut edges = Vec::new();
    for line in dot.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('"') {
            let (name, after) = rest.split_once('"').unwrap();
            if let Some(target) = after.strip_prefix(" -> \"") {
                edges.push((name.to_owned(), target.trim_end_matches("\";").to_owned()));
            } else {
                assert!(after.starts_with(" [label="), "{line}");
                assert!(nodes.insert(name.to_owned()), "node {name} twice");
            }
        }
    }
    (nodes, edges)
}

/// Event names in timeline.csv (every held event of every server).
fn held_events(out: &Path) -> BTreeSet<String> {
    let mut reader = csv::Reader::from_path(out.join("timeline.csv")).unwrap();
    reader
        .records()
        .map(|record| record.unwrap()[2].to_owned())
        .collect()
}

#[test]
fn the_partition_ban_needs_extremity_exchange() {
    let (out, summary) = run_scenario("partition-ban");
    assert_eq!(
        outcomes(&summary),
        pairs(&[
            ("pass", "pass"),
            ("fail", "fail"),
            ("fail", "fail"),
            ("pass", "pass"),
            ("fail", "fail"),
            ("pass", "pass"),
            ("pass", "pass"),
            ("pass", "pass"),
            ("pass", "pass"),
        ])
    );
    assert_eq!(
        summary["servers"]["b.example"]["memberships"]["alice"],
        "ban"
    );
    // The DAG: one node per held event, edges to prev events between nodes.
    let (nodes, edges) = dot_graph(&out.join("dag.dot"));
    assert_eq!(nodes, held_events(&out));
    assert_eq!(nodes.len(), 9);
    assert!(edges.contains(&("ban".to_owned(), "hello".to_owned())));
    assert!(edges.contains(&("bob-1".to_owned(), "hello".to_owned())));
    for (from, to) in &edges {
        assert!(nodes.contains(from) && nodes.contains(to));
    }
    // At the checkpoint b.example lacks the ban: its node says so and is coloured for it.
    let healed = std::fs::read_to_string(out.join("dag-healed.dot")).unwrap();
    let ban_line = healed
        .lines()
        .find(|line| line.trim_start().starts_with("\"ban\" [label="))
        .unwrap();
    assert!(ban_line.contains("b.example: not held"), "{ban_line}");
    assert!(ban_line.contains("fillcolor=\"lightblue\""), "{ban_line}");
}

#[test]
fn with_the_sender_retrying_the_ban_arrives_without_extremity_exchange() {
    let (_, summary) = run_scenario("partition-ban-retry");
    assert_eq!(
        outcomes(&summary),
        pairs(&[("pass", "pass"), ("pass", "pass"), ("pass", "pass")])
    );
    let exchanges = summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|step| step["action"] == "exchange-extremities")
        .count();
    assert_eq!(exchanges, 0);
}

#[test]
fn the_late_joiner_hides_what_older_members_show() {
    let (out, summary) = run_scenario("late-joiner");
    assert_eq!(
        outcomes(&summary),
        pairs(&[
            ("pass", "pass"),
            ("pass", "pass"),
            ("pass", "pass"),
            ("pass", "pass"),
            ("pass", "pass"),
            ("fail", "fail"),
            ("pass", "pass"),
            ("fail", "fail"),
            ("pass", "pass"),
            ("pass", "pass"),
        ])
    );
    let metrics = &summary["metrics"];
    assert_eq!(metrics["hidden"]["d.example"]["hidden_share"], 0.5);
    assert_eq!(
        metrics["hidden"]["d.example"]["hidden_by_reason"]["soft-failed-link-unverified"],
        2
    );
    assert_eq!(metrics["orphans"]["d.example"]["orphan_ratio"], 1.0);
    assert_eq!(metrics["visible_somewhere_hidden_elsewhere"], 0.5);
    // Bitrot of the late joiners: d.example verifies carol's and alice's links, not bob's, and
    // shows 2 of the 4 historical messages; e.example also saw dave's join (verified) and shows
    // all 4 messages (labelled).
    let bitrot = |server: &str| summary["servers"][server]["late_joiner_bitrot"].clone();
    assert_eq!(bitrot("d.example")["historical_links"], 3);
    assert_eq!(bitrot("d.example")["historical_links_verified"], 2);
    assert_eq!(bitrot("d.example")["historical_messages"], 4);
    assert_eq!(bitrot("d.example")["historical_messages_visible"], 2);
    assert_eq!(bitrot("e.example")["historical_links"], 4);
    assert_eq!(bitrot("e.example")["historical_links_verified"], 3);
    assert_eq!(bitrot("e.example")["historical_messages_visible"], 4);
    assert_eq!(bitrot("c.example"), Value::Null);
    let (nodes, _) = dot_graph(&out.join("dag.dot"));
    assert_eq!(nodes, held_events(&out));
}

#[test]
fn a_compromised_key_is_shown_under_fail_open_and_hidden_under_fail_closed() {
    let (out, summary) = run_scenario("compromised-fail-open");
    let expected: Vec<(&str, &str)> = (0..10)
        .map(|index| {
            if index == 7 {
                ("fail", "fail")
            } else {
                ("pass", "pass")
            }
        })
        .collect();
    assert_eq!(outcomes(&summary), pairs(&expected));
    // Containment of bob's link after the compromise at 6 s: only d.example (fail-closed, at
    // the 12 s step) of the three observers ever unverifies it.
    let containment = &summary["metrics"]["containment"]["bob"];
    assert_eq!(containment["compromised_at_ms"], 6000);
    assert_eq!(containment["observers"], 3);
    assert_eq!(containment["unverified_at_ms"]["d.example"], 12000);
    assert_eq!(containment["unverified_at_ms"]["a.example"], Value::Null);
    assert_eq!(containment["p50_ms"], Value::Null);
    assert_eq!(containment["p100_ms"], Value::Null);
    let dot = std::fs::read_to_string(out.join("dag.dot")).unwrap();
    assert_eq!(dot.matches("(attacker)").count(), 3);
    let (nodes, _) = dot_graph(&out.join("dag.dot"));
    assert_eq!(nodes, held_events(&out));
}

#[test]
fn two_member_keys_claiming_one_user_id_collide_on_every_observer() {
    let (_, summary) = run_scenario("duplicate-identity");
    assert_eq!(
        outcomes(&summary),
        pairs(&[
            ("pass", "pass"),
            ("pass", "pass"),
            ("fail", "fail"),
            ("fail", "fail"),
            ("pass", "pass"),
            ("pass", "pass"),
            ("pass", "pass"),
        ])
    );
    for server in ["a.example", "b.example", "c.example"] {
        let view = &summary["servers"][server];
        assert_eq!(view["member_info"]["bob2"], "@bob:b.example", "{server}");
        assert_eq!(view["identity_collisions"][0], "@bob:b.example", "{server}");
    }
}

/// A three-server P0 script: alice creates and says hello; b.example receives it.
const BASE: &str = r#"
[room]
policy = "P0"
[[servers]]
name = "a.example"
[[servers]]
name = "b.example"
[[users]]
name = "alice"
server = "a.example"
[[steps]]
action = "create"
user = "alice"
[[steps]]
action = "send"
user = "alice"
name = "hello"
[[steps]]
action = "deliver"
[[checks]]
kind = "visible"
server = "b.example"
event = "hello"
"#;

fn run_text(name: &str, script: &str) -> (Output, String, PathBuf) {
    let directory = scratch(name);
    let file = directory.join(format!("{name}.toml"));
    std::fs::write(&file, script).unwrap();
    let file = file.to_str().unwrap().to_owned();
    let out = directory.join("out");
    let output = fedsim(&["repro", &file, "--out", out.to_str().unwrap()]);
    (output, file, out)
}

#[test]
fn a_script_meeting_its_checks_exits_0() {
    let (output, _, out) = run_text("base", BASE);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(out.join("summary.json").exists());
    assert!(out.join("timeline.csv").exists());
}

#[test]
fn a_check_missing_its_expectation_exits_1_with_the_reproduce_line() {
    let (output, file, _) = run_text("unmet", &format!("{BASE}expect = \"fail\"\n"));
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("FAIL checks[0] visible at end: expected fail, got pass (visible)"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("reproduce: fedsim repro {file}")));
    assert_eq!(
        text(&output.stderr),
        format!("fedsim: {file}: 1 of 1 check(s) did not meet the expectation\n")
    );
}

#[test]
fn bad_scripts_give_one_line_errors_with_exit_2() {
    let cases = [
        (
            "unknown-user",
            BASE.replace("user = \"alice\"\nname = \"hello\"", "user = \"bob\"\nname = \"hello\""),
            "steps[1].user: unknown user \"bob\"",
        ),
        (
            "unknown-event",
            BASE.replace("event = \"hello\"", "event = \"goodbye\""),
            "checks[0].event: no step names an event \"goodbye\"",
        ),
        (
            "missing-field",
            BASE.replace("action = \"send\"\nuser = \"alice\"", "action = \"send\""),
            "steps[1].user: `send` needs `user`",
        ),
        (
            "wrong-type",
            BASE.replace("name = \"hello\"", "name = 5"),
            "steps[1].name: invalid type: integer `5`, expected a string",
        ),
        (
            "localpart-without-member-keys",
            BASE.replace(
                "name = \"alice\"\nserver = \"a.example\"",
                "name = \"alice\"\nserver = \"a.example\"\nlocalpart = \"al\"",
            ),
            "users[0].localpart: only member-key rooms separate a user from its localpart (P0 is room version 12)",
        ),
        (
            // A step that cannot happen is found while running, and named the same way.
            "offline-sender",
            BASE.replace(
                "[[steps]]\naction = \"send\"",
                "[[steps]]\naction = \"take-offline\"\nserver = \"a.example\"\n[[steps]]\naction = \"send\"",
            ),
            "steps[2]: a.example is offline",
        ),
    ];
    for (name, script, expected) in cases {
        let (output, file, _) = run_text(name, &script);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{name}: {}",
            text(&output.stderr)
        );
        assert_eq!(
            text(&output.stderr),
            format!("fedsim: {file}: {expected}\n"),
            "{name}"
        );
    }
    let output = fedsim(&["repro", "scenarios/repro/no-such-file.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr)
            .starts_with("fedsim: scenarios/repro/no-such-file.toml: -: cannot read:")
    );
}

#[test]
fn the_default_output_is_results_repro_name_under_the_working_directory() {
    let directory = scratch("default-out");
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/repro/partition-ban.toml"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args(["repro", file])
        .current_dir(&directory)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let out = directory.join("results/repro/partition-ban");
    for name in ["summary.json", "timeline.csv", "dag.dot", "dag-healed.dot"] {
        assert!(out.join(name).is_file(), "{name}");
    }
    // Nothing half-written is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
}
