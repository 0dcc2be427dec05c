//! Sweep behaviour end to end, with a small deterministic runner defined here (the real
//! simulator is exercised by scripts/test-sweep.sh): results independent of --jobs, resume after
//! an interruption, shards merged equal to one machine, and bad input rejected with exit code 2.

use fedsim::cli::sweep::{MergeArgs, SweepArgs, run_merge, run_with};
use fedsim::sweep::{RunSpec, Runner};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Writes a summary whose metrics are a fixed function of the run's values and seed, plus a
/// small time series; fails (Err) for `rate=bad` and panics for `rate=panic`.
struct ArithmeticRunner {
    calls: Mutex<Vec<String>>,
}

impl ArithmeticRunner {
    fn new() -> ArithmeticRunner {
        ArithmeticRunner {
            calls: Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<String> {
        let mut calls = self.calls.lock().unwrap().clone();
        calls.sort();
        calls
    }
}

impl Runner for ArithmeticRunner {
    fn validate(&self, overrides: &[String]) -> Result<(), String> {
        match overrides.iter().find(|text| text.ends_with("=invalid")) {
            Some(bad) => Err(format!("{bad}: not a number")),
            None => Ok(()),
        }
    }

    fn run(&self, run: &RunSpec, out_dir: &Path) -> Result<(), String> {
        self.calls.lock().unwrap().push(run.name.clone());
        let value = |path: &str| {
            run.params
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, v)| v.as_str())
        };
        let rate_text = value("net.rate").unwrap_or("1");
        if rate_text == "panic" {
            panic!("the runner panicked on purpose");
        }
        let rate: f64 = rate_text
            .parse()
            .map_err(|_| format!("net.rate={rate_text}: not a number"))?;
        let servers: f64 = value("servers").unwrap_or("10").parse().unwrap();
        let seed = run.seed as f64;
        let mut metrics = serde_json::Map::new();
        metrics.insert(
            "requests_total".into(),
            (servers * rate * (seed + 1.0)).into(),
        );
        metrics.insert("share_visible".into(), (1.0 / (seed + rate + 2.0)).into());
        if servers > 10.0 {
            metrics.insert("large_only".into(), 1.into());
        }
        let summary = serde_json::json!({
            "scenario": "test",
            "seed": run.seed,
            "fedsim_version": "test",
            "parameters": run.params.iter().cloned().collect::<BTreeMap<_, _>>(),
            "metrics": metrics,
        });
        fs::write(
            out_dir.join("summary.json"),
            serde_json::to_string_pretty(&summary).unwrap(),
        )
        .unwrap();
        let series: String = (0..5)
            .map(|step| format!("{},{}\n", step * 1000, step as f64 * rate + seed))
            .collect();
        fs::write(
            out_dir.join("timeseries.csv"),
            format!("time_ms,value\n{series}"),
        )
        .unwrap();
        Ok(())
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("sweep-tests")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn scenario_file(dir: &Path) -> PathBuf {
    let path = dir.join("scenario.toml");
    fs::write(
        &path,
        "# a scenario file: only its bytes matter to the sweep\nname = \"t\"\n",
    )
    .unwrap();
    path
}

fn args(scenario: &Path, out: &Path, extra: &[&str]) -> SweepArgs {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SweepArgs,
    }
    let mut argv: Vec<String> = vec!["fedsim-sweep".into(), scenario.display().to_string()];
    argv.extend(["--out".into(), out.display().to_string(), "--quiet".into()]);
    argv.extend(extra.iter().map(|text| text.to_string()));
    Wrapper::try_parse_from(argv)
        .expect("test flags parse")
        .args
}

const SWEEP: [&str; 6] = [
    "--param",
    "net.rate=0.5,2",
    "--param",
    "servers=10,20",
    "--seeds",
    "1..3",
];

/// Every file under `dir` (relative path → bytes), for comparing whole sweep directories.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().display().to_string();
                files.insert(relative, fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn table(dir: &Path) -> String {
    fs::read_to_string(dir.join("runs.csv")).unwrap()
}

#[test]
fn results_are_identical_whatever_jobs_is() {
    let root = scratch("jobs");
    let scenario = scenario_file(&root);
    let (one, four) = (root.join("one"), root.join("four"));
    let runner = ArithmeticRunner::new();
    run_with(
        &args(&scenario, &one, &[&SWEEP[..], &["--jobs", "1"]].concat()),
        &runner,
    )
    .unwrap();
    run_with(
        &args(&scenario, &four, &[&SWEEP[..], &["--jobs", "4"]].concat()),
        &runner,
    )
    .unwrap();
    let text = table(&one);
    assert_eq!(text.lines().count(), 1 + 2 * 2 * 3);
    assert_eq!(
        text.lines().next().unwrap(),
        "run,net.rate,servers,seed,status,large_only,requests_total,share_visible"
    );
    assert_eq!(
        text.lines().nth(1).unwrap(),
        "net.rate=0.5_servers=10_seed=1,0.5,10,1,ok,,10.0,0.2857142857142857"
    );
    assert_eq!(tree(&one), tree(&four));
    assert!(!text.contains(".partial"));
}

#[test]
fn resume_after_an_interruption_runs_only_what_is_missing() {
    let root = scratch("resume");
    let scenario = scenario_file(&root);
    let (reference, resumed) = (root.join("reference"), root.join("resumed"));
    run_with(
        &args(&scenario, &reference, &SWEEP),
        &ArithmeticRunner::new(),
    )
    .unwrap();
    run_with(&args(&scenario, &resumed, &SWEEP), &ArithmeticRunner::new()).unwrap();

    // Put `resumed` in the state a kill -9 can leave: runs.csv not written yet (only its partial
    // file, half written), one run in its partial folder with a truncated summary, one run never
    // started, and every other run complete.
    fs::remove_file(resumed.join("runs.csv")).unwrap();
    fs::write(resumed.join(".partial-runs.csv"), "run,net.ra").unwrap();
    let runs = resumed.join("runs");
    let interrupted = "net.rate=2_servers=10_seed=2";
    let partial = runs.join(format!(".partial-{interrupted}"));
    fs::rename(runs.join(interrupted), &partial).unwrap();
    fs::write(partial.join("summary.json"), "{\"seed\": 2, \"metr").unwrap();
    let never_started = "net.rate=0.5_servers=20_seed=3";
    fs::remove_dir_all(runs.join(never_started)).unwrap();
    // A run folder whose summary is unreadable (e.g. truncated by a crash in an older version)
    // is also done again.
    let truncated = "net.rate=0.5_servers=10_seed=1";
    fs::write(runs.join(truncated).join("summary.json"), "{\"seed\": 1,").unwrap();

    let runner = ArithmeticRunner::new();
    run_with(
        &args(
            &scenario,
            &resumed,
            &[&SWEEP[..], &["--jobs", "3"]].concat(),
        ),
        &runner,
    )
    .unwrap();
    let mut expected = vec![interrupted, never_started, truncated];
    expected.sort();
    assert_eq!(runner.calls(), expected);
    assert_eq!(tree(&reference), tree(&resumed));

    // Running it once more does nothing and changes nothing.
    let idle = ArithmeticRunner::new();
    run_with(&args(&scenario, &resumed, &SWEEP), &idle).unwrap();
    assert!(idle.calls().is_empty());
    assert_eq!(tree(&reference), tree(&resumed));
}

#[test]
fn failed_runs_are_recorded_then_retried() {
    let root = scratch("failures");
    let scenario = scenario_file(&root);
    let out = root.join("out");
    let flags = ["--param", "net.rate=1,bad,panic", "--seeds", "1,2"];
    let error = run_with(&args(&scenario, &out, &flags), &ArithmeticRunner::new()).unwrap_err();
    assert_eq!(error.exit_code, 1);
    assert!(
        error.message.contains("4 of 6 runs failed"),
        "{}",
        error.message
    );
    let text = table(&out);
    assert_eq!(text.matches(",failed,").count(), 4);
    assert_eq!(text.matches(",ok,").count(), 2);
    let message = fs::read_to_string(out.join("runs/net.rate=panic_seed=1/error.txt")).unwrap();
    assert!(
        message.contains("panicked: the runner panicked on purpose"),
        "{message}"
    );
    // A resume tries the failures again and keeps the complete runs.
    let runner = ArithmeticRunner::new();
    assert!(run_with(&args(&scenario, &out, &flags), &runner).is_err());
    assert_eq!(runner.calls().len(), 4);
    assert!(
        runner
            .calls()
            .iter()
            .all(|name| !name.starts_with("net.rate=1_"))
    );
}

/// Sweeping `SWEEP` into `out` is refused (exit 2) with a message containing `needle`, and
/// no run starts.
fn assert_refused(scenario: &Path, out: &Path, needle: &str) {
    let runner = ArithmeticRunner::new();
    let error = run_with(&args(scenario, out, &SWEEP), &runner).unwrap_err();
    assert_eq!(error.exit_code, 2);
    assert!(error.message.contains(needle), "{}", error.message);
    assert!(runner.calls().is_empty(), "nothing ran");
}

/// Two sweeps in one directory would delete each other's half-written runs: the second is
/// refused while the first holds the directory's lock, and runs once it is released.
#[test]
fn a_second_sweep_in_the_same_directory_is_refused_while_the_first_runs() {
    let root = scratch("locked");
    let scenario = scenario_file(&root);
    let out = root.join("sweep");
    let held = fedsim::sweep::store::SweepDir::new(&out).lock().unwrap();
    assert_refused(
        &scenario,
        &out,
        "another fedsim sweep or merge is writing here",
    );
    drop(held);
    run_with(&args(&scenario, &out, &SWEEP), &ArithmeticRunner::new()).unwrap();
    // A merge takes its output directory's lock too.
    let merged = root.join("merged");
    let held = fedsim::sweep::store::SweepDir::new(&merged).lock().unwrap();
    let error = run_merge(&MergeArgs {
        out: merged.clone(),
        shards: vec![out.clone()],
    })
    .unwrap_err();
    assert!(error.message.contains("sweep.lock"), "{}", error.message);
    assert!(!merged.join("sweep.json").exists());
    drop(held);
    // ... and a shared lock on each source: a sweep still writing one stops the merge.
    let writing = fedsim::sweep::store::SweepDir::new(&out).lock().unwrap();
    let error = run_merge(&MergeArgs {
        out: merged.clone(),
        shards: vec![out.clone()],
    })
    .unwrap_err();
    assert!(error.message.contains("still writing"), "{}", error.message);
    drop(writing);
    run_merge(&MergeArgs {
        out: merged.clone(),
        shards: vec![out.clone()],
    })
    .unwrap();
}

/// A sweep or merge into a folder that holds something else (a run's files, a project) is
/// refused and the folder left as it was (found in session 27's walkthrough).
#[test]
fn a_sweep_or_merge_into_a_folder_of_other_files_is_refused() {
    let root = scratch("foreign");
    let scenario = scenario_file(&root);
    let out = root.join("a-run");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("summary.json"), "{}").unwrap();
    assert_refused(&scenario, &out, "summary.json");
    assert!(!out.join("sweep.lock").exists() && !out.join("runs").exists());
    let sweep = root.join("sweep");
    run_with(&args(&scenario, &sweep, &SWEEP), &ArithmeticRunner::new()).unwrap();
    let error = run_merge(&MergeArgs {
        out: out.clone(),
        shards: vec![sweep.clone()],
    })
    .unwrap_err();
    assert_eq!(error.exit_code, 2);
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1);
    // A folder of directories only (shards, logs: the Slurm layout) takes the merge.
    let parent = root.join("parent");
    fs::create_dir_all(parent.join("logs")).unwrap();
    run_merge(&MergeArgs {
        out: parent.clone(),
        shards: vec![sweep.clone()],
    })
    .unwrap();
    assert!(parent.join("runs.csv").is_file());
}

/// A sweep is not resumed by another build: its table would mix two builds' results. The
/// record names the build that ran it, as run-info.json files and `fedsim --version` do.
#[test]
fn a_sweep_is_not_resumed_by_another_build() {
    let root = scratch("other-build");
    let scenario = scenario_file(&root);
    let out = root.join("sweep");
    run_with(&args(&scenario, &out, &SWEEP), &ArithmeticRunner::new()).unwrap();
    let record_path = out.join("sweep.json");
    let record = fs::read_to_string(&record_path).unwrap();
    let this_build = format!("\"fedsim_build\": \"{}\"", fedsim::BUILD);
    assert!(record.contains(&this_build), "{record}");
    assert!(fedsim::BUILD.starts_with(env!("CARGO_PKG_VERSION")));
    fs::write(
        &record_path,
        record.replace(
            &this_build,
            "\"fedsim_build\": \"0.0.1+src.0123456789abcdef\"",
        ),
    )
    .unwrap();
    assert_refused(&scenario, &out, "was run by 0.0.1+src.0123456789abcdef");
}

#[test]
fn shards_merged_equal_a_single_machine() {
    let root = scratch("shards");
    let scenario = scenario_file(&root);
    let single = root.join("single");
    run_with(&args(&scenario, &single, &SWEEP), &ArithmeticRunner::new()).unwrap();
    let shard_dirs: Vec<PathBuf> = (0..5)
        .map(|index| root.join(format!("shard-{index}")))
        .collect();
    let mut executed = 0;
    for (index, dir) in shard_dirs.iter().enumerate() {
        let shard = format!("{index}/5");
        let jobs = (index % 2 + 1).to_string();
        let runner = ArithmeticRunner::new();
        run_with(
            &args(
                &scenario,
                dir,
                &[&SWEEP[..], &["--shard", &shard, "--jobs", &jobs]].concat(),
            ),
            &runner,
        )
        .unwrap();
        executed += runner.calls().len();
        assert!(
            table(dir).lines().count() <= 1 + 3,
            "a shard holds only its own runs"
        );
    }
    assert_eq!(executed, 12, "shards are disjoint and cover the sweep");

    let merged = root.join("merged");
    // Shards given in any order.
    let mut sources = shard_dirs.clone();
    sources.reverse();
    run_merge(&MergeArgs {
        out: merged.clone(),
        shards: sources.clone(),
    })
    .unwrap();
    assert_eq!(
        fs::read(single.join("runs.csv")).unwrap(),
        fs::read(merged.join("runs.csv")).unwrap()
    );
    assert_eq!(tree(&single), tree(&merged));
    // Merging again into the same place is harmless.
    run_merge(&MergeArgs {
        out: merged.clone(),
        shards: sources,
    })
    .unwrap();
    assert_eq!(tree(&single), tree(&merged));

    // A missing shard is named.
    let error = run_merge(&MergeArgs {
        out: root.join("incomplete"),
        shards: shard_dirs[..4].to_vec(),
    })
    .unwrap_err();
    assert_eq!(error.exit_code, 2);
    assert!(error.message.contains("shard 4/5"), "{}", error.message);
    // ... before anything is written: the output directory is not even created.
    assert!(!root.join("incomplete").exists());
    // A shard of another sweep is refused.
    let other = root.join("other");
    let other_flags = [
        "--param",
        "net.rate=0.5,3",
        "--seeds",
        "1..3",
        "--shard",
        "0/5",
    ];
    run_with(
        &args(&scenario, &other, &other_flags),
        &ArithmeticRunner::new(),
    )
    .unwrap();
    let mut mixed = shard_dirs[1..].to_vec();
    mixed.push(other);
    let error = run_merge(&MergeArgs {
        out: root.join("mixed"),
        shards: mixed,
    })
    .unwrap_err();
    assert_eq!(error.exit_code, 2);
    assert!(
        error.message.contains("different sweep") && error.message.contains("--param"),
        "{}",
        error.message
    );
    // The same scenario given by another path (another machine's checkout) is the same sweep.
    let respelled = root.join(".").join("scenario.toml");
    let last = root.join("shard-4-respelled");
    run_with(
        &args(
            &respelled,
            &last,
            &[&SWEEP[..], &["--shard", "4/5"]].concat(),
        ),
        &ArithmeticRunner::new(),
    )
    .unwrap();
    let mut sources = shard_dirs[..4].to_vec();
    sources.push(last);
    let respelled_merge = root.join("merged-respelled");
    run_merge(&MergeArgs {
        out: respelled_merge.clone(),
        shards: sources,
    })
    .unwrap();
    assert_eq!(
        fs::read(single.join("runs.csv")).unwrap(),
        fs::read(respelled_merge.join("runs.csv")).unwrap()
    );
}

#[test]
fn bad_input_is_one_line_naming_the_flag_with_exit_code_2() {
    let root = scratch("bad");
    let scenario = scenario_file(&root);
    let out = root.join("out");
    let cases: [(&[&str], &str); 11] = [
        (
            &["--param", "net.rate"],
            "--param net.rate: expected path=value1,value2",
        ),
        (
            &["--param", "net.rate=1,,2"],
            "--param net.rate=1,,2: empty value",
        ),
        (&["--param", "seed=1,2"], "runs.csv column"),
        (&["--seeds", "9..3"], "--seeds 9..3: the range is empty"),
        (&["--seeds", "1,x"], "--seeds 1,x: 'x' is not a seed"),
        (
            &["--shard", "4/4"],
            "--shard 4/4: the shard index is 0-based",
        ),
        (&["--shard", "1of4"], "--shard 1of4: expected I/N"),
        (&["--jobs", "0"], "--jobs 0"),
        (&["--set", "x=invalid"], "--set: x=invalid: not a number"),
        (
            &["--param", "a=1", "--set", "a=2"],
            "--set a=2: 'a' is also swept",
        ),
        (
            &["--param", "net.rate=1,invalid"],
            "--param net.rate=invalid: net.rate=invalid: not a number",
        ),
    ];
    for (flags, expected) in cases {
        let runner = ArithmeticRunner::new();
        let error = run_with(&args(&scenario, &out, flags), &runner).unwrap_err();
        assert_eq!(error.exit_code, 2, "{flags:?}");
        assert!(
            error.message.contains(expected),
            "{flags:?}: {}",
            error.message
        );
        assert!(!error.message.contains('\n'), "{flags:?}");
        assert!(runner.calls().is_empty(), "nothing runs after bad input");
    }
    let missing = root.join("missing.toml");
    let error = run_with(&args(&missing, &out, &[]), &ArithmeticRunner::new()).unwrap_err();
    assert_eq!(error.exit_code, 2);
    assert!(error.message.contains("missing.toml: cannot read scenario"));

    // A directory holding another sweep is not silently mixed with this one.
    run_with(
        &args(&scenario, &out, &["--param", "net.rate=1"]),
        &ArithmeticRunner::new(),
    )
    .unwrap();
    let error = run_with(
        &args(&scenario, &out, &["--param", "servers=10"]),
        &ArithmeticRunner::new(),
    )
    .unwrap_err();
    assert_eq!(error.exit_code, 2);
    assert!(
        error
            .message
            .contains("sweep.json: this directory sweeps parameters"),
        "{}",
        error.message
    );
    // ...but extending the seeds of the same sweep reuses what is there.
    let runner = ArithmeticRunner::new();
    run_with(
        &args(
            &scenario,
            &out,
            &["--param", "net.rate=1", "--seeds", "1..2"],
        ),
        &runner,
    )
    .unwrap();
    assert_eq!(runner.calls(), vec!["net.rate=1_seed=2"]);
}

#[test]
fn merge_command_rejects_a_directory_that_is_not_a_sweep() {
    let root = scratch("merge-cli");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args([
            "merge",
            &root.join("out").display().to_string(),
            &root.display().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no sweep.json here; not a sweep directory"),
        "{stderr}"
    );
}

#[test]
fn plot_redraws_charts_from_runs_csv_deterministically() {
    let root = scratch("plot");
    let scenario = scenario_file(&root);
    let out = root.join("out");
    run_with(&args(&scenario, &out, &SWEEP), &ArithmeticRunner::new()).unwrap();
    let plot = |chart_dir: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fedsim"))
            .args([
                "plot",
                &out.display().to_string(),
                "--out",
                &chart_dir.display().to_string(),
            ])
            .output()
            .unwrap()
    };
    let (first, second) = (root.join("charts-1"), root.join("charts-2"));
    let output = plot(&first);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().lines().count(),
        3 * 2
    );
    let svg = fs::read_to_string(first.join("requests_total.svg")).unwrap();
    assert!(
        svg.contains("requests_total by net.rate"),
        "the title names metric and parameter"
    );
    assert!(svg.contains("servers=20"), "the legend names each series");
    assert!(
        fs::read(first.join("share_visible.png"))
            .unwrap()
            .starts_with(b"\x89PNG")
    );
    assert!(plot(&second).status.success());
    assert_eq!(
        tree(&first),
        tree(&second),
        "charts are a pure function of runs.csv"
    );

    let only = root.join("charts-only");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args([
            "plot",
            &out.display().to_string(),
            "--out",
            &only.display().to_string(),
        ])
        .args(["--metric", "share"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        tree(&only).keys().collect::<Vec<_>>(),
        vec!["share_visible.png", "share_visible.svg"]
    );
    assert_eq!(
        tree(&only)["share_visible.svg"],
        tree(&first)["share_visible.svg"]
    );
    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args(["plot", &out.display().to_string(), "--metric", "nonesuch"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("--metric nonesuch: no metric"));
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args(["plot", &root.join("not-a-sweep").display().to_string()])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not-a-sweep/runs.csv: no such file")
    );
}

#[test]
fn a_scenario_can_declare_its_sweep_and_flags_replace_it() {
    let root = scratch("declared");
    let scenario = root.join("declared.toml");
    let declared = "name = \"t\"\n[sweep]\nseeds = \"1..2\"\n\
                    params = [{ path = \"net.rate\", values = [1, 3] }]\n";
    fs::write(&scenario, declared).unwrap();
    let runner = ArithmeticRunner::new();
    run_with(&args(&scenario, &root.join("a"), &[]), &runner).unwrap();
    assert_eq!(
        runner.calls(),
        vec![
            "net.rate=1_seed=1",
            "net.rate=1_seed=2",
            "net.rate=3_seed=1",
            "net.rate=3_seed=2"
        ]
    );
    let runner = ArithmeticRunner::new();
    run_with(
        &args(
            &scenario,
            &root.join("b"),
            &["--seeds", "5", "--param", "servers=20"],
        ),
        &runner,
    )
    .unwrap();
    assert_eq!(runner.calls(), vec!["servers=20_seed=5"]);
    fs::write(&scenario, "[sweep]\nseeds = \"x\"\n").unwrap();
    let error = run_with(&args(&scenario, &root.join("c"), &[]), &runner).unwrap_err();
    assert_eq!(error.exit_code, 2);
    assert!(
        error
            .message
            .contains("declared.toml: sweep.seeds: 'x' is not a seed"),
        "{}",
        error.message
    );
}

/// A small key-world scenario for the real simulator (a fraction of a second per run).
const TINY_KEY_WORLD: &str = r#"
name = "tiny"
duration = "2h"
crypto = "symbolic"

[[federation.domain_groups]]
name = "live"
count = 600
key_lifetime = "1h"

[[observers]]
name = "P1"
domains = "live"
known_domains = [600]
policy = { preset = "P1" }

[metrics]
sample_interval = "1m"

[outputs]
chart = "none"
"#;

/// The real runner runs every run from the scenario text read when the sweep started (the file
/// named here does not even exist), so editing the file mid-sweep cannot mix two scenarios.
#[test]
fn the_simulator_runner_runs_the_scenario_as_read_when_the_sweep_started() {
    use fedsim::sweep::simulator::SimulatorRunner;
    let root = scratch("simulator-runner");
    let scenario = root.join("tiny.toml");
    fs::write(&scenario, TINY_KEY_WORLD).unwrap();
    let out = root.join("out");
    let runner = SimulatorRunner {
        file: "no-such-file.toml".into(),
        text: TINY_KEY_WORLD.into(),
        sets: Vec::new(),
    };
    let flags = ["--param", "metrics.sample_interval=1m,2h", "--seeds", "1"];
    run_with(&args(&scenario, &out, &flags), &runner).unwrap();
    let text = table(&out);
    assert_eq!(text.matches(",ok,").count(), 2, "{text}");
}
