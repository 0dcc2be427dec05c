//! `fedsim pdu sign` and `fedsim pdu inspect` run as a user would: the spec's vectors reproduce
//! through the binary, and bad input is one line on stderr with exit code 2.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";

fn vectors() -> Value {
    serde_json::from_str(include_str!("fixtures/signing.json")).unwrap()
}

fn fedsim(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // The binary may exit before reading its input (a bad flag): a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "one line of canonical JSON");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn json_signing_vectors_through_the_binary() {
    for vector in vectors()["json_signing"].as_array().unwrap() {
        let output = fedsim(
            &["pdu", "sign", "--server", "domain", "--seed", SEED, "-"],
            &vector["input"].to_string(),
        );
        assert_eq!(stdout_json(&output), vector["expected_output"]);
    }
}

#[test]
fn event_vectors_through_the_binary_per_room_version() {
    let vectors = vectors();
    let derived = vectors["derived_not_from_spec"]["vectors"]
        .as_array()
        .unwrap();
    for (vector, derived) in vectors["event_signing"]
        .as_array()
        .unwrap()
        .iter()
        .zip(derived)
    {
        let input = vector["input"].to_string();
        let args = |version: &'static str| {
            [
                "pdu",
                "sign",
                "--room-version",
                version,
                "--server-name",
                "domain",
                "--seed",
                SEED,
            ]
        };
        let v10 = stdout_json(&fedsim(&args("10"), &input));
        assert_eq!(v10, vector["expected_output"]);
        for version in ["11", "12"] {
            let signed = stdout_json(&fedsim(&args(version), &input));
            assert_eq!(
                signed["signatures"]["domain"]["ed25519:1"],
                derived["signature_if_signed_over_v11_v12_redaction"]
            );
            let report = stdout_json(&fedsim(
                &["pdu", "inspect", "--room-version", version],
                &signed.to_string(),
            ));
            assert_eq!(
                report["event_id"],
                derived["reference_hash_event_id_if_v11_v12_redaction"]
            );
            assert_eq!(report["content_hash_valid"], true);
            assert!(report["redacted"].get("origin").is_none());
            let canonical = report["canonical"].as_str().unwrap();
            assert!(!canonical.contains("signatures") && !canonical.contains("unsigned"));
        }
        let report = stdout_json(&fedsim(
            &["pdu", "inspect", "--room-version", "10"],
            &v10.to_string(),
        ));
        assert_eq!(
            report["event_id"],
            derived["reference_hash_event_id_if_v1_redaction"]
        );
    }
}

#[test]
fn a_hex_seed_and_a_key_file_sign_the_same() {
    let hex = "0101010101010101010101010101010101010101010101010101010101010101";
    let with_hex = fedsim(
        &[
            "pdu",
            "sign",
            "--server-name",
            "s",
            "--key-seed",
            hex,
            "--key-id",
            "ed25519:a",
        ],
        "{}",
    );
    let path = std::env::temp_dir().join(format!("fedsim-pdu-cli-{}.key", std::process::id()));
    std::fs::write(
        &path,
        "ed25519 a AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE\n",
    )
    .unwrap();
    let with_file = fedsim(
        &[
            "pdu",
            "sign",
            "--server-name",
            "s",
            "--key-file",
            path.to_str().unwrap(),
        ],
        "{}",
    );
    std::fs::remove_file(&path).unwrap();
    assert_eq!(stdout_json(&with_hex), stdout_json(&with_file));
}

#[test]
fn msc4430_member_signing_and_inspection() {
    let sender =
        vectors()["derived_not_from_spec"]["msc4430_member_key_sender_for_test_seed"]["value"]
            .as_str()
            .unwrap()
            .to_owned();
    let event = serde_json::json!({
        "type": "m.room.member", "state_key": sender, "sender": sender, "room_id": "!r",
        "content": {"membership": "join", "localpart": "alice", "domain": "domain"},
        "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": 5
    });
    let signed = stdout_json(&fedsim(
        &[
            "pdu",
            "sign",
            "--room-version",
            "msc4430",
            "--member-key",
            SEED,
            "--server-name",
            "domain",
            "--seed",
            SEED,
        ],
        &event.to_string(),
    ));
    assert!(signed["signatures"]["sender"]["ed25519:1"].is_string());
    assert!(signed["signatures"]["domain"]["ed25519:1"].is_string());
    let report = stdout_json(&fedsim(
        &["pdu", "inspect", "--room-version", "msc4430"],
        &signed.to_string(),
    ));
    assert_eq!(report["member_signature_valid"], true);
    assert_eq!(
        report["redacted"]["content"],
        serde_json::json!({"membership": "join", "domain": "domain"})
    );
    let mut tampered = signed.clone();
    tampered["depth"] = Value::from(2);
    let report = stdout_json(&fedsim(
        &["pdu", "inspect", "--room-version", "msc4430"],
        &tampered.to_string(),
    ));
    assert_eq!(report["member_signature_valid"], false);
}

#[test]
fn inspecting_a_v12_create_event_names_the_room() {
    let create = r#"{"type": "m.room.create", "state_key": "", "sender": "@a:x",
        "content": {"room_version": "12"}, "prev_events": [], "auth_events": [], "depth": 1,
        "origin_server_ts": 0}"#;
    let report = stdout_json(&fedsim(&["pdu", "inspect", "--room-version", "12"], create));
    let event_id = report["event_id"].as_str().unwrap();
    assert_eq!(report["room_id"], format!("!{}", &event_id[1..]));
    let v11 = stdout_json(&fedsim(&["pdu", "inspect", "--room-version", "11"], create));
    assert!(v11.get("room_id").is_none());
}

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    let cases: [(&[&str], &str, &str); 9] = [
        (&["pdu", "inspect"], "not json", "invalid JSON"),
        (
            &["pdu", "inspect"],
            r#"{"type": "x", "depth": 1.5}"#,
            "floats are not allowed",
        ),
        (&["pdu", "inspect"], r#"{"a": 1, "a": 2}"#, "duplicate key"),
        (&["pdu", "inspect"], "[1]", "expected one JSON object"),
        (
            &["pdu", "inspect", "--room-version", "9"],
            "{}",
            "unsupported room version",
        ),
        (
            &["pdu", "sign", "--server", "s", "--seed", "AAAA"],
            "{}",
            "32 bytes",
        ),
        (
            &["pdu", "sign", "--server", "s", "--seed", "!!"],
            "{}",
            "--seed",
        ),
        (
            &["pdu", "sign", "--server", "s", "--key-seed", "abc"],
            "{}",
            "64 hex digits",
        ),
        (
            &["pdu", "sign", "--server", "s"],
            "{}",
            "signing key is required",
        ),
    ];
    for (args, stdin, expected) in cases {
        let output = fedsim(args, stdin);
        assert_eq!(output.status.code(), Some(2), "{args:?} {stdin}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty());
    }
    let missing = fedsim(&["pdu", "inspect", "/nonexistent/event.json"], "");
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8(missing.stderr)
            .unwrap()
            .contains("/nonexistent/event.json")
    );
}
