//! `fedsim bench`: runs scenarios in child processes and reports their figures.

use std::process::Command;

use serde_json::Value;

#[test]
fn bench_runs_a_scenario_and_reports_the_crypto_floor() {
    let out = std::env::temp_dir().join(format!("fedsim-bench-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let output = Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args(["bench", "scenarios/key-lifecycle-faults.toml", "--out"])
        .arg(&out)
        .output()
        .expect("fedsim runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("wall/flr"), "{stdout}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    assert!(report["raw_sign_seconds"].as_f64().unwrap() > 0.0);
    let row = &report["scenarios"][0];
    assert_eq!(row["scenario"], "key-lifecycle-faults");
    // Origins sign responses and observers check them: the floor is positive.
    assert!(row["signatures_made"].as_u64().unwrap() > 0, "{row}");
    assert!(row["signature_checks"].as_u64().unwrap() > 0, "{row}");
    assert!(row["crypto_floor_seconds"].as_f64().unwrap() > 0.0);
    assert!(out.join("key-lifecycle-faults/summary.json").exists());
    let csv = std::fs::read_to_string(out.join("bench.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_missing_scenario_is_refused_before_anything_runs() {
    let output = Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args([
            "bench",
            "no-such-file.toml",
            "--out",
            "/nonexistent/never-written",
        ])
        .output()
        .expect("fedsim runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr.trim(),
        "fedsim: no-such-file.toml: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn a_run_over_its_budget_is_stopped_and_reported_with_how_far_it_got() {
    let out = std::env::temp_dir().join(format!("fedsim-bench-budget-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    // Every process is past 1 MiB at once: the run is stopped at its first memory sample.
    let output = Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args([
            "bench",
            "scenarios/bench-small.toml",
            "--max-memory-mib",
            "1",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("fedsim runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("stopped at its memory budget"), "{stdout}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    let row = &report["scenarios"][0];
    assert_eq!(row["completed"], false, "{row}");
    assert_eq!(row["stopped_by"], "memory", "{row}");
    assert!(row["peak_memory_mib"].as_f64().unwrap() > 1.0, "{row}");
    assert!(row["wall_over_crypto_floor"].is_null(), "{row}");
    // Nothing half-written: a stopped run leaves no summary.
    assert!(!out.join("bench-small/summary.json").exists());
    let csv = std::fs::read_to_string(out.join("bench.csv")).unwrap();
    assert!(
        csv.lines().nth(1).unwrap().contains(",false,memory,"),
        "{csv}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
