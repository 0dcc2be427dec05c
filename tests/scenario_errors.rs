//! Golden tests: every malformed scenario under tests/scenarios/bad/ gives exactly the one-line
//! error in its `.err` file. Run with `UPDATE_GOLDEN=1` to rewrite the `.err` files after an
//! intended change of wording (then read the diff).

use std::path::Path;

#[test]
fn malformed_scenarios_give_their_golden_one_line_errors() {
    let directory = Path::new("tests/scenarios/bad");
    let mut files: Vec<_> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "toml")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10, "at least ten malformed scenarios");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatches = Vec::new();
    for file in &files {
        let error = fedsim::scenario::load(Some(file), &[])
            .expect_err(&format!("{} should be refused", file.display()))
            .to_string();
        assert!(!error.contains('\n'), "one line: {error}");
        assert!(
            error.starts_with(&file.display().to_string()),
            "names the file: {error}"
        );
        let golden_path = file.with_extension("err");
        if update {
            std::fs::write(&golden_path, format!("{error}\n")).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&golden_path).unwrap_or_default();
        if golden.trim_end() != error {
            mismatches.push(format!(
                "{}:\n  expected: {}\n  actual:   {error}",
                file.display(),
                golden.trim_end()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn the_small_good_scenario_passes_and_set_overrides_it() {
    let good = Path::new("tests/scenarios/good-small.toml");
    let scenario = fedsim::scenario::load(Some(good), &[]).unwrap();
    assert_eq!(scenario.federation.domain_groups[0].count, 10);
    let overridden = fedsim::scenario::load(
        Some(good),
        &[
            "observers[0].policy.recheck=half-life".into(),
            "duration=5d".into(),
        ],
    )
    .unwrap();
    assert_eq!(overridden.duration.ms(), 5 * 86_400_000);
    let error = fedsim::scenario::load(Some(good), &["observers[3].name=x".into()]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "tests/scenarios/good-small.toml: --set observers[3].name: no element 3 (the array has 1)"
    );
}

#[test]
fn every_scenario_in_the_repository_is_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir("scenarios").unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            fedsim::scenario::load(Some(&path), &[]).unwrap_or_else(|error| panic!("{error}"));
            checked += 1;
        }
    }
    assert!(checked >= 2);
}

/// `fedsim check` also validates the scenario's own `[sweep]` table, each declared value on its
/// own (before, a bad path there passed the check and failed only when the sweep started,
/// blamed on a `--param` nobody typed). Every shipped scenario's declared sweep is valid.
#[test]
fn check_validates_the_declared_sweep() {
    use fedsim::cli::check::{Args, run};
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("declared-sweep");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad-sweep.toml");
    let good = std::fs::read_to_string("tests/scenarios/good-small.toml").unwrap();
    std::fs::write(
        &file,
        format!("{good}\n[sweep]\nparams = [{{ path = \"nope.nope\", values = [1, 2] }}]\n"),
    )
    .unwrap();
    let error = run(&Args {
        scenario: file.clone(),
        sets: Vec::new(),
    })
    .unwrap_err();
    assert_eq!(error.exit_code, 2);
    assert!(
        error
            .message
            .contains("sweep.params[0] (nope.nope=1): nope: unknown field `nope`"),
        "{}",
        error.message
    );
    assert!(check_every_file_in("scenarios") >= 2);
}

/// Runs `fedsim check` on every `.toml` file of `directory`, panicking at the first refusal;
/// returns how many it checked.
fn check_every_file_in(directory: &str) -> usize {
    use fedsim::cli::check::{Args, run};
    let mut checked = 0;
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            run(&Args {
                scenario: path.clone(),
                sets: Vec::new(),
            })
            .unwrap_or_else(|error| panic!("{}: {}", path.display(), error.message));
            checked += 1;
        }
    }
    checked
}

/// `fedsim check` recognises a reproduction script (`scenarios/repro/*.toml`) and validates it
/// with the script language's rules; it used to refuse every one with "unknown field `checks`".
#[test]
fn check_validates_reproduction_scripts_with_their_own_rules() {
    use fedsim::cli::check::{Args, run};
    assert!(check_every_file_in("scenarios/repro") >= 3);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("check-repro");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad-repro.toml");
    let good = std::fs::read_to_string("scenarios/repro/partition-ban.toml").unwrap();
    std::fs::write(&file, format!("{good}\n[[steps]]\nban = \"nobody\"\n")).unwrap();
    let error = run(&Args {
        scenario: file.clone(),
        sets: Vec::new(),
    })
    .unwrap_err();
    assert_eq!(error.exit_code, 2);
    assert!(error.message.contains("steps["), "{}", error.message);
    let error = run(&Args {
        scenario: "scenarios/repro/partition-ban.toml".into(),
        sets: vec!["name=\"x\"".to_owned()],
    })
    .unwrap_err();
    assert!(error.message.contains("--set"), "{}", error.message);
}
