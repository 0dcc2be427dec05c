//! The classic state-resolution cases (/work/shared/vectors/state_res_classic.md: Synapse's
//! `test_v2.py` S1-S7) and MSC4297's Problem A and Problem B, as JSON fixtures under
//! `tests/fixtures/state_res/` (written by its `generate.py`), each run through one check helper
//! under room version 10 (state res v2.0) and room version 12 (state res v2.1).

use std::path::PathBuf;

use fedsim::cli::resolve::parse_events;
use fedsim::matrix::dag::Dag;
use fedsim::matrix::{Pdu, RoomVersion, StateMap, state_res};
use serde_json::Value;

fn fixture_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/state_res")
        .join(file)
}

fn load_dag(case: &str, version: &RoomVersion) -> Dag {
    let file = format!("{case}.v{}.json", version.id);
    let text = std::fs::read_to_string(fixture_path(&file)).unwrap();
    let events = parse_events(&text, &file).unwrap();
    let pdus: Vec<Pdu> = events
        .into_iter()
        .map(|(event_id, json)| Pdu::from_json(json, event_id, version).unwrap())
        .collect();
    Dag::from_events(*version, pdus).unwrap()
}

fn expected_state(expected: &Value) -> StateMap {
    expected
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let field = |name: &str| entry[name].as_str().unwrap().to_owned();
            ((field("type"), field("state_key")), field("event_id"))
        })
        .collect()
}

/// Builds the case's DAG in `version`, checks that no event of the fixture is rejected on
/// insertion (the harness the cases come from rejects nothing), resolves what the case asks for
/// (the state before `$END`, or explicit state sets) and compares with the expectation for the
/// version's algorithm.
fn check(case: &str, version: RoomVersion) {
    let expect: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_path(&format!("{case}.expect.json"))).unwrap(),
    )
    .unwrap();
    let algorithm = match version.state_res {
        fedsim::matrix::StateResVersion::V2_0 => "v2.0",
        fedsim::matrix::StateResVersion::V2_1 => "v2.1",
    };
    let expected = expected_state(&expect["expected"][algorithm]);
    let dag = load_dag(case, &version);
    for index in dag.topological_order() {
        assert!(
            dag.evaluation(index).rejection.is_none(),
            "{case} v{}: {} rejected: {:?}",
            version.id,
            dag.event(index).event_id,
            dag.evaluation(index).rejection
        );
    }
    let resolved = if let Some(at) = expect["query"]["at"].as_array() {
        assert_eq!(at.len(), 1);
        let end = at[0].as_str().unwrap();
        // The state before END (a message, so also the state after it) is the resolution of the
        // states after its prev events.
        let prev_states: Vec<StateMap> = dag
            .prev_indices(dag.index(end).unwrap())
            .iter()
            .map(|&parent| dag.evaluation(parent).state_after.to_map())
            .collect();
        let resolved = state_res::resolve(&version, &prev_states, &dag).unwrap();
        assert_eq!(dag.state_before(end).unwrap(), resolved);
        assert_eq!(dag.state_after(end).unwrap(), resolved);
        resolved
    } else {
        let state_sets: Vec<StateMap> = expect["query"]["state_sets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|set| {
                set.as_array()
                    .unwrap()
                    .iter()
                    .map(|id| {
                        let event = dag.event(dag.index(id.as_str().unwrap()).unwrap());
                        (event.state_key_pair().unwrap(), event.event_id.clone())
                    })
                    .collect()
            })
            .collect();
        // Resolution must not depend on the order of the state sets.
        let mut reversed = state_sets.clone();
        reversed.reverse();
        let resolved = state_res::resolve(&version, &state_sets, &dag).unwrap();
        assert_eq!(
            state_res::resolve(&version, &reversed, &dag).unwrap(),
            resolved
        );
        resolved
    };
    assert_eq!(
        resolved, expected,
        "{case} under room version {}",
        version.id
    );
}

/// Runs a case under v2.0 (room 10) and v2.1 (room 12).
fn check_both(case: &str) {
    check(case, RoomVersion::V10);
    check(case, RoomVersion::V12);
}

/// Test that a ban beats a concurrent power-levels change by the banned user.
#[test]
fn s1_ban_vs_pl() {
    check_both("s1_ban_vs_pl");
}

/// Test that a join concurrent with a join-rules change (to an effectively invite-only room)
/// does not survive.
#[test]
fn s2_join_rule_evasion() {
    check_both("s2_join_rule_evasion");
}

/// Test that a chain of delegated power-levels changes survives a fork that changed nothing.
#[test]
fn s3_offtopic_pl() {
    check_both("s3_offtopic_pl");
}

/// Test that a demotion wins, so the demoted user's concurrent topic is dropped.
#[test]
fn s4_topic_basic() {
    check_both("s4_topic_basic");
}

/// Test that a topic from a since-banned user does not override an older topic.
#[test]
fn s5_topic_reset() {
    check_both("s5_topic_reset");
}

/// Test that after forks merge at a message, the later topic from the winning side stands.
#[test]
fn s6_topic() {
    check_both("s6_topic");
}

/// Test that the mainline ordering, not timestamps, orders ordinary state.
#[test]
fn s7_mainline_sort() {
    check_both("s7_mainline_sort");
}

/// Test that conflicted join rules survive under v2.1 but are lost under v2.0, where they are
/// replayed on top of an unconflicted state in which their sender has left (MSC4297 Problem A).
#[test]
fn msc4297_problem_a_fails_under_v2_0_and_passes_under_v2_1() {
    check_both("problem_a");
    let expect: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_path("problem_a.expect.json")).unwrap(),
    )
    .unwrap();
    assert_ne!(expect["expected"]["v2.0"], expect["expected"]["v2.1"]);
}

/// Test that a promotion chain survives under v2.1 (the conflicted subgraph replays the middle
/// promotion) but resets under v2.0 (MSC4297 Problem B).
#[test]
fn msc4297_problem_b_fails_under_v2_0_and_passes_under_v2_1() {
    check_both("problem_b");
    let expect: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_path("problem_b.expect.json")).unwrap(),
    )
    .unwrap();
    assert_ne!(expect["expected"]["v2.0"], expect["expected"]["v2.1"]);
}

/// Test the explanation of Problem B under v2.1: the conflicted subgraph holds every event on an
/// auth path from `$PC2` down to `$IPOWER` (the middle promotion, and Bob's join with the join
/// rules it cites), and the power ordering replays them parents first, higher power first.
#[test]
fn problem_b_explanation_names_the_conflicted_subgraph() {
    let dag = load_dag("problem_b", &RoomVersion::V12);
    let state = |ids: &[&str]| -> StateMap {
        ids.iter()
            .map(|id| {
                let event = dag.event(dag.index(id).unwrap());
                (event.state_key_pair().unwrap(), event.event_id.clone())
            })
            .collect()
    };
    let common = ["$CREATE", "$IMA", "$IJR", "$IMB", "$IMC", "$IMZ", "$TC"];
    let with = |power: &str| {
        let mut ids = common.to_vec();
        ids.push(power);
        state(&ids)
    };
    let (_, explanation) =
        state_res::resolve_explained(&RoomVersion::V12, &[with("$PC2"), with("$IPOWER")], &dag)
            .unwrap();
    assert_eq!(
        explanation.conflicted_subgraph,
        vec!["$IJR", "$IMB", "$PB1"]
    );
    assert!(explanation.auth_difference.is_empty());
    assert_eq!(
        explanation.power_order,
        vec!["$IPOWER", "$IJR", "$PB1", "$IMB", "$PC2"]
    );
    assert!(explanation.auth_failures.is_empty());
}
