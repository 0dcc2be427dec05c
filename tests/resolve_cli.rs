//! `fedsim resolve` end to end: the binary on the state-resolution fixtures (both room versions,
//! JSON array and JSON lines input), and on bad inputs, which must fail with exit code 2 and one
//! line on stderr naming the event and the problem.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const CASES: [&str; 9] = [
    "s1_ban_vs_pl",
    "s2_join_rule_evasion",
    "s3_offtopic_pl",
    "s4_topic_basic",
    "s5_topic_reset",
    "s6_topic",
    "s7_mainline_sort",
    "problem_a",
    "problem_b",
];

fn fixture_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/state_res")
        .join(file)
}

fn read_json(file: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture_path(file)).unwrap()).unwrap()
}

/// Runs `fedsim resolve ARGS`, feeding `stdin`.
fn fedsim(args: &[String], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .arg("resolve")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn query_args(case: &str) -> Vec<String> {
    let query = &read_json(&format!("{case}.expect.json"))["query"];
    let mut args = Vec::new();
    for at in query["at"].as_array().into_iter().flatten() {
        args.extend(["--at".to_owned(), at.as_str().unwrap().to_owned()]);
    }
    for set in query["state_sets"].as_array().into_iter().flatten() {
        let ids: Vec<&str> = set
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap())
            .collect();
        args.extend(["--state-set".to_owned(), ids.join(",")]);
    }
    args
}

/// Test that the binary prints the expected resolved state for every fixture, in both room
/// versions, from a file.
#[test]
fn prints_the_expected_state_for_every_fixture() {
    for case in CASES {
        for (version, algorithm) in [("10", "v2.0"), ("12", "v2.1")] {
            let file = fixture_path(&format!("{case}.v{version}.json"));
            let mut args = vec![file.to_str().unwrap().to_owned()];
            args.extend(query_args(case));
            let output = fedsim(&args, "");
            assert!(
                output.status.success(),
                "{case} v{version}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
            let expected = &read_json(&format!("{case}.expect.json"))["expected"][algorithm];
            assert_eq!(&printed, expected, "{case} in room version {version}");
        }
    }
}

/// The S1 fixture as one JSON object per line.
fn json_lines(case: &str) -> String {
    let events = read_json(&format!("{case}.v10.json"));
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|event| serde_json::to_string(event).unwrap() + "\n")
        .collect()
}

/// Test that JSON lines on stdin work, and that without --at the state after the forward
/// extremities (here only $END) is printed; --explain writes the report to stderr only.
#[test]
fn reads_json_lines_from_stdin_and_defaults_to_the_forward_extremities() {
    let output = fedsim(
        &["-".to_owned(), "--explain".to_owned()],
        &json_lines("s1_ban_vs_pl"),
    );
    assert!(output.status.success());
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        printed,
        read_json("s1_ban_vs_pl.expect.json")["expected"]["v2.0"]
    );
    let report = String::from_utf8(output.stderr).unwrap();
    assert!(report.contains("room version: 10"), "{report}");
    // Resolving the two sides explicitly: the explanation lists the conflict and PB's failure.
    let output = fedsim(
        &[
            "-".to_owned(),
            "--at".to_owned(),
            "$MB".to_owned(),
            "--at".to_owned(),
            "$PB".to_owned(),
            "--explain".to_owned(),
        ],
        &json_lines("s1_ban_vs_pl"),
    );
    assert!(output.status.success());
    let report = String::from_utf8(output.stderr).unwrap();
    assert!(
        report.contains("(m.room.power_levels, \"\"): $PA $PB"),
        "{report}"
    );
    assert!(
        report
            .contains("step 1, reverse topological power ordering (6): $IMA $PA $MA $IMB $MB $PB"),
        "{report}"
    );
    assert!(report.contains("  $PB: sender_not_joined: "), "{report}");
}

/// Runs the binary on a modified S1 event list and returns (exit code, stderr).
fn run_bad(modify: impl FnOnce(&mut Vec<Value>), extra_args: &[&str]) -> (i32, String) {
    let mut events = read_json("s1_ban_vs_pl.v10.json")
        .as_array()
        .unwrap()
        .clone();
    modify(&mut events);
    let mut args = vec!["-".to_owned()];
    args.extend(extra_args.iter().map(|arg| (*arg).to_owned()));
    let output = fedsim(&args, &serde_json::to_string(&events).unwrap());
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn event_mut<'a>(events: &'a mut [Value], id: &str) -> &'a mut Value {
    events
        .iter_mut()
        .find(|event| event["event_id"] == id)
        .unwrap()
}

/// A change to the event list that makes it bad.
type Modification = Box<dyn FnOnce(&mut Vec<Value>)>;

/// Test that every kind of bad input fails with exit code 2 and the exact one-line message.
#[test]
fn bad_input_fails_with_one_line_naming_the_event() {
    let cases: Vec<(&str, Modification, Vec<&str>, &str)> = vec![
        (
            "unknown prev event",
            Box::new(|events| event_mut(events, "$END")["prev_events"][0] = "$NOPE".into()),
            vec![],
            "fedsim: <stdin>: event $END: unknown prev event $NOPE\n",
        ),
        (
            "unknown auth event",
            Box::new(|events| event_mut(events, "$MB")["auth_events"][1] = "$GONE".into()),
            vec![],
            "fedsim: <stdin>: event $MB: unknown auth event $GONE\n",
        ),
        (
            "cycle",
            Box::new(|events| {
                event_mut(events, "$IMA")["prev_events"] = serde_json::json!(["$CREATE", "$START"])
            }),
            vec![],
            "fedsim: <stdin>: event $START: part of a cycle of prev_events/auth_events references\n",
        ),
        (
            "duplicate event ID",
            Box::new(|events| {
                let copy = event_mut(events, "$PB").clone();
                events.push(copy);
            }),
            vec![],
            "fedsim: <stdin>: event $PB: duplicate event ID\n",
        ),
        (
            "missing create event",
            Box::new(|events| events.retain(|event| event["event_id"] != "$CREATE")),
            vec![],
            "fedsim: <stdin>: no m.room.create event with an empty state key\n",
        ),
        (
            "room version absent means 1",
            Box::new(|events| {
                event_mut(events, "$CREATE")["content"]
                    .as_object_mut()
                    .unwrap()
                    .remove("room_version");
            }),
            vec![],
            "fedsim: <stdin>: event $CREATE: unsupported room version \"1\" (supported: \"10\", \"11\", \"12\", \"org.matrix.12.4430\" alias \"msc4430\") (content.room_version is absent, which means \"1\")\n",
        ),
        (
            "unknown --at event",
            Box::new(|_| {}),
            vec!["--at", "$ELSEWHERE"],
            "fedsim: <stdin>: event $ELSEWHERE: not in the input\n",
        ),
        (
            "a message in a state set",
            Box::new(|_| {}),
            vec!["--state-set", "$CREATE,$START"],
            "fedsim: <stdin>: event $START: not a state event, so not in a state set\n",
        ),
        (
            "missing event_id",
            Box::new(|events| {
                event_mut(events, "$PB")
                    .as_object_mut()
                    .unwrap()
                    .remove("event_id");
            }),
            vec![],
            "fedsim: <stdin>: element 12: field `event_id` is missing\n",
        ),
        (
            "missing field",
            Box::new(|events| {
                event_mut(events, "$PB")
                    .as_object_mut()
                    .unwrap()
                    .remove("depth");
            }),
            vec![],
            "fedsim: <stdin>: event $PB: field `depth` is missing\n",
        ),
        (
            "bad --room-version",
            Box::new(|_| {}),
            vec!["--room-version", "9"],
            "fedsim: --room-version: unsupported room version \"9\" (supported: \"10\", \"11\", \"12\", \"org.matrix.12.4430\" alias \"msc4430\")\n",
        ),
    ];
    for (name, modify, args, expected) in cases {
        let (code, stderr) = run_bad(modify, &args);
        assert_eq!((code, stderr.as_str()), (2, expected), "{name}");
    }
}

/// Test that a JSON-lines input with a broken line names the line.
#[test]
fn invalid_json_line_names_the_line() {
    let mut input = json_lines("s1_ban_vs_pl");
    input.push_str("{\"event_id\": \"$X\", \n");
    let output = fedsim(&["-".to_owned()], &input);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("fedsim: <stdin>: line 14: invalid JSON: "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
}

/// The S1 fixture (room version 10) as a real signed room: every event hashed and signed by
/// example.com's key, event IDs recomputed as reference hashes and references rewritten. Returns
/// the events and the key response for example.com.
fn signed_s1() -> (
    Vec<Value>,
    Value,
    std::collections::BTreeMap<String, String>,
) {
    use fedsim::matrix::server_keys::ServerKeys;
    use fedsim::matrix::signing::{KeyId, ServerSigningKey, sign_event};
    use fedsim::matrix::{RoomVersion, hashes};
    let version = RoomVersion::V10;
    let key = ServerSigningKey::from_seed(KeyId::ed25519("1").unwrap(), &[7; 32]);
    let mut new_ids: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let mut events = Vec::new();
    for mut event in read_json("s1_ban_vs_pl.v10.json")
        .as_array()
        .unwrap()
        .clone()
    {
        let old_id = event.as_object_mut().unwrap().remove("event_id").unwrap();
        for field in ["prev_events", "auth_events"] {
            for reference in event[field].as_array_mut().unwrap() {
                *reference = Value::from(new_ids[reference.as_str().unwrap()].clone());
            }
        }
        event.as_object_mut().unwrap().remove("hashes");
        sign_event(&version, &mut event, "example.com", &key).unwrap();
        let new_id = hashes::event_id(&version, &event).unwrap();
        new_ids.insert(old_id.as_str().unwrap().to_owned(), new_id.clone());
        event["event_id"] = Value::from(new_id);
        events.push(event);
    }
    let keys = ServerKeys::with_current_key("example.com", &key, 1_000_000)
        .to_signed_json(&key)
        .unwrap();
    (events, keys, new_ids)
}

/// Test that --verify accepts a correctly signed room and resolves it as without --verify, and
/// rejects (exit 2, one line naming the event) a bad event ID, a bad signature and missing keys;
/// an event whose content no longer matches its hash is used in its redacted form.
#[test]
fn verify_checks_event_ids_signatures_and_content_hashes() {
    let (events, keys, new_ids) = signed_s1();
    let keys_path =
        std::env::temp_dir().join(format!("fedsim-resolve-keys-{}.json", std::process::id()));
    std::fs::write(&keys_path, serde_json::to_string(&vec![keys]).unwrap()).unwrap();
    let keys_arg = keys_path.to_str().unwrap().to_owned();
    let run = |events: &[Value], with_keys: bool| {
        let mut args = vec!["-".to_owned(), "--verify".to_owned()];
        if with_keys {
            args.extend(["--keys".to_owned(), keys_arg.clone()]);
        }
        fedsim(&args, &serde_json::to_string(events).unwrap())
    };
    let output = run(&events, true);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let expected: Vec<Value> = read_json("s1_ban_vs_pl.expect.json")["expected"]["v2.0"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let mut entry = entry.clone();
            entry["event_id"] = Value::from(new_ids[entry["event_id"].as_str().unwrap()].clone());
            entry
        })
        .collect();
    let mut expected = expected;
    expected.sort_by_key(|entry| (entry["type"].to_string(), entry["state_key"].to_string()));
    assert_eq!(printed, Value::Array(expected));

    let pb = new_ids["$PB"].clone();
    let position = events
        .iter()
        .position(|event| event["event_id"] == pb.as_str())
        .unwrap();
    // No keys for the sender's server.
    let output = run(&events, false);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "fedsim: <stdin>: event {}: no keys for server example.com (give them with --keys)\n",
            new_ids["$CREATE"]
        )
    );
    // A forged signature (made by another key) on PB.
    let mut forged = events.clone();
    let other = fedsim::matrix::signing::ServerSigningKey::from_seed(
        fedsim::matrix::signing::KeyId::ed25519("1").unwrap(),
        &[8; 32],
    );
    let mut unsigned = forged[position].clone();
    unsigned.as_object_mut().unwrap().remove("event_id");
    let signature = fedsim::matrix::signing::event_signature(
        &fedsim::matrix::RoomVersion::V10,
        &unsigned,
        &other,
    )
    .unwrap();
    forged[position]["signatures"]["example.com"]["ed25519:1"] = Value::from(signature);
    let output = run(&forged, true);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!(
            "fedsim: <stdin>: event {pb}: signature check for example.com failed: "
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
    // A wrong event ID.
    let mut renamed = events.clone();
    renamed[position]["event_id"] = Value::from("$notthehash");
    let output = run(&renamed, true);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr,
        format!(
            "fedsim: <stdin>: event $notthehash: the event ID does not match the event (its reference hash gives {pb})\n"
        )
    );
    // Content changed after signing: the content hash no longer matches, so PB is used redacted
    // (a power-levels event keeps its `users`, so the result is unchanged), and the signatures,
    // which cover the redacted event, still verify.
    let mut edited = events.clone();
    edited[position]["content"]["extra"] = Value::from("not covered by the hash");
    let output = run(&edited, true);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&output.stdout).unwrap(),
        printed
    );
    let _ = std::fs::remove_file(&keys_path);
}
