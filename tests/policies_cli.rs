//! `fedsim policies`: the preset listing of both policy layers, run through the binary.

use std::process::{Command, Output};

use serde_json::Value;

const PRESETS: [&str; 12] = [
    "P0", "P1", "P1a", "P1b", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9",
];

fn fedsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args(args)
        .output()
        .expect("the fedsim binary runs")
}

fn json(args: &[&str]) -> Value {
    let output = fedsim(args);
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

#[test]
fn text_lists_every_preset() {
    let output = fedsim(&["policies"]);
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.lines().next().unwrap().contains("rooms.policy"));
    for name in PRESETS {
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!("{name}: "))),
            "{name} missing from:\n{text}"
        );
    }
    assert!(text.contains("    recheck = at-expiry"));
    assert!(text.contains("    unverified_link = soft_fail"));
}

#[test]
fn json_has_every_preset_with_both_layers() {
    let all = json(&["policies", "--format", "json"]);
    let object = all.as_object().expect("an object keyed by preset");
    for name in PRESETS {
        let entry = &object[name];
        assert!(!entry["description"].as_str().unwrap().is_empty());
        assert!(entry["room_layer"].is_object(), "{name}: {entry}");
        assert!(entry.get("key_layer").is_some(), "{name}: {entry}");
        assert_eq!(
            entry["key_layer"].is_object(),
            entry["key_world_preset"] == Value::Bool(true)
        );
        assert_eq!(
            entry["room_layer"].is_object(),
            entry["room_world_preset"] == Value::Bool(true)
        );
    }
    // Presets that both layers define carry both.
    for name in ["P0", "P1", "P1a", "P1b", "P2", "P3", "P4", "P6", "P9"] {
        assert!(object[name]["key_layer"].is_object(), "{name}");
    }
    assert_eq!(object["P1a"]["key_layer"]["transport"], "notary-first");
    assert_eq!(object["P1b"]["key_layer"]["transport"], "direct");
    // Deterministic: the same bytes twice.
    assert_eq!(
        fedsim(&["policies", "--format", "json"]).stdout,
        fedsim(&["policies", "--format", "json"]).stdout
    );
}

#[test]
fn presets_differ_where_questions_md_says() {
    let all = json(&["policies", "--format", "json"]);
    let room = |name: &str, knob: &str| all[name]["room_layer"][knob].clone();
    // P5 labels instead of hiding.
    assert_eq!(room("P1", "unverified_link"), "soft_fail");
    assert_eq!(room("P5", "unverified_link"), "label");
    // P0 is today's room version; P1 is MSC4430's.
    assert_eq!(room("P0", "room_version"), "12");
    assert_eq!(room("P1", "room_version"), "org.matrix.12.4430");
}

#[test]
fn a_single_preset() {
    let one = json(&["policies", "--format", "json", "P2"]);
    let object = one.as_object().unwrap();
    assert_eq!(object.keys().collect::<Vec<_>>(), ["P2"]);
    assert_eq!(object["P2"]["key_layer"]["unreachable"], "fail-closed");
    assert_eq!(object["P2"]["room_layer"]["fail_closed"], "true");

    let output = fedsim(&["policies", "P7"]);
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("P7: Expiry"));
    assert!(!text.contains("P1: "));
    assert!(text.contains("invalidation = expiry_is_not_revocation"));
}

#[test]
fn an_unknown_preset_is_a_one_line_input_error() {
    let output = fedsim(&["policies", "P10"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("P10") && stderr.contains("P1a"), "{stderr}");
}
