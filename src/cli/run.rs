//! `fedsim run [SCENARIO] [--seed N] [--out DIR] [--set k=v ...] [--check-determinism]`.

use std::path::{Path, PathBuf};

use super::CliError;

/// Arguments of `fedsim run`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The scenario file (default: the built-in RQ1 polling-load scenario).
    pub scenario: Option<PathBuf>,
    /// The run seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output directory (default: results/<scenario>/seed-<N>/, or
    /// results/<scenario>/set-<overrides>/seed-<N>/ with --set).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override a scenario field: --set observers[0].policy.recheck=half-life (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
    /// Run twice and fail unless every result file (except run-info.json) is byte-identical.
    #[arg(long)]
    pub check_determinism: bool,
}

/// Files that may differ between identical runs (wall-clock figures).
const NONDETERMINISTIC_FILES: &[&str] = &["run-info.json"];

/// Runs the command.
pub fn run(args: &Args) -> Result<(), CliError> {
    if let Some(file) = &args.scenario
        && super::check::is_reproduction_script(file)
    {
        return Err(CliError::input(format!(
            "{}: a reproduction script, not a scenario: run it with `fedsim repro {}`",
            file.display(),
            file.display()
        )));
    }
    let scenario =
        crate::scenario::load(args.scenario.as_deref(), &args.sets).map_err(CliError::input)?;
    // `X/.` and `X/` name X: normalise, so the run's sibling `.partial` is X's.
    let out_dir = args
        .out
        .as_deref()
        .map(|out| out.components().collect::<PathBuf>());
    let out_dir = out_dir.unwrap_or_else(|| default_out_dir(&scenario.name, &args.sets, args.seed));
    let reproduce = reproduce_command(args);
    let partial = prepare_out_dir(&out_dir)?;
    let outcome =
        crate::world::run_to_dir(&scenario, args.seed, &partial, true).map_err(|error| {
            CliError::failure(format!("run failed: {error}\nreproduce: {reproduce}"))
        })?;
    write_manifest(&partial)?;
    move_into_place(&partial, &out_dir)?;
    println!(
        "fedsim: {} seed {}: {} events in {:.1}s; results in {}",
        scenario.name,
        args.seed,
        outcome.events_processed,
        outcome.wall_seconds,
        out_dir.display()
    );
    if let Some(chart) = ["polling-load.png", "polling-load.svg"]
        .iter()
        .map(|name| out_dir.join(name))
        .find(|path| path.exists())
    {
        println!("fedsim: chart: {}", chart.display());
    }
    if args.check_determinism {
        let second_dir = out_dir.with_file_name(format!(
            "{}.determinism-check",
            out_dir
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        // A directory left by an earlier check would add its files to the comparison.
        remove_leftover(&second_dir)?;
        crate::world::run_to_dir(&scenario, args.seed, &second_dir, true)
            .map_err(|error| CliError::failure(format!("second run failed: {error}")))?;
        let difference = first_difference(&out_dir, &second_dir)
            .map_err(|error| CliError::failure(format!("comparing runs: {error}")))?;
        let _ = std::fs::remove_dir_all(&second_dir);
        if let Some(difference) = difference {
            return Err(CliError::failure(format!(
                "determinism check failed: {difference}\nreproduce: {reproduce}"
            )));
        }
        println!("fedsim: determinism check passed: two runs wrote byte-identical result files");
    }
    if !outcome.failed_checks.is_empty() {
        for (name, detail) in &outcome.failed_checks {
            eprintln!("fedsim: check failed: {name}: {detail}");
        }
        return Err(CliError::failure(format!(
            "{} check(s) failed\nreproduce: {reproduce}",
            outcome.failed_checks.len()
        )));
    }
    Ok(())
}

/// Where a run writes without `--out`: `results/<name>/seed-<N>`, and with `--set` overrides
/// `results/<name>/set-<overrides>/seed-<N>`, so runs of one scenario under two policies
/// (`--set rooms.policy=P1`, `--set rooms.policy=P5`) keep both results instead of the second
/// replacing the first. The overrides are spelled into the name as far as they are safe in a
/// path (letters, digits, `.`, `_`, `-`, `=`; the `--set`s joined by `+`); when
/// anything had to be replaced or cut, `@` and a hash of the exact overrides follow, so two
/// different override lists never share a directory.
pub fn default_out_dir(name: &str, sets: &[String], seed: u64) -> PathBuf {
    let mut dir = PathBuf::from("results").join(name);
    if !sets.is_empty() {
        const MAX_LABEL_CHARS: usize = 60;
        let safe =
            |character: char| character.is_ascii_alphanumeric() || "._-=".contains(character);
        let mut label = sets
            .iter()
            .map(|set| {
                set.chars()
                    .map(|character| if safe(character) { character } else { '_' })
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("+");
        let lossy = sets.iter().any(|set| !set.chars().all(safe));
        let cut = label.chars().count() > MAX_LABEL_CHARS;
        if cut {
            label = label.chars().take(MAX_LABEL_CHARS).collect();
        }
        if lossy || cut {
            // Each override length-prefixed, so no two lists hash the same text.
            let mut exact = Vec::new();
            for set in sets {
                exact.extend_from_slice(&(set.len() as u64).to_le_bytes());
                exact.extend_from_slice(set.as_bytes());
            }
            // '@' is outside the safe set: no plain label can equal a hashed one.
            label.push_str(&format!("@{:08x}", fnv1a_32(&exact)));
        }
        dir = dir.join(format!("set-{label}"));
    }
    dir.join(format!("seed-{seed}"))
}

/// FNV-1a (32 bits): a short, stable name for an override list (not a security hash).
fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// The one command that reproduces this run.
fn reproduce_command(args: &Args) -> String {
    let mut command = String::from("fedsim run");
    if let Some(scenario) = &args.scenario {
        command.push_str(&format!(" {}", scenario.display()));
    }
    command.push_str(&format!(" --seed {}", args.seed));
    for set in &args.sets {
        command.push_str(&format!(" --set '{set}'"));
    }
    if let Some(out) = &args.out {
        command.push_str(&format!(" --out {}", out.display()));
    }
    if args.check_determinism {
        command.push_str(" --check-determinism");
    }
    command
}

/// Readies `out_dir` for a run and returns the directory the run writes into: a sibling
/// `<out>.partial`, created now (so a place that cannot be written fails before the
/// simulation, with exit 2, not after it) and moved into place complete
/// ([`move_into_place`]): a run killed half-way leaves no mix of new and old files, and no
/// file of an earlier run (another scenario's chart, a stale trace) survives beside the new
/// ones. `out_dir` must be new, empty, or exactly an earlier run's files ([`replaceable`]),
/// which are replaced: any other directory is refused, so nothing else is ever deleted.
pub(crate) fn prepare_out_dir(out_dir: &Path) -> Result<PathBuf, CliError> {
    let shown = out_dir.display();
    let Some(name) = out_dir.file_name() else {
        return Err(CliError::input(format!(
            "--out {shown}: not a directory name a run can be written to"
        )));
    };
    if std::fs::symlink_metadata(out_dir).is_ok_and(|metadata| !metadata.is_dir()) {
        return Err(CliError::input(format!(
            "--out {shown}: is a file (or a link), not a directory; give a new or empty directory"
        )));
    }
    if out_dir.exists() && !replaceable(out_dir) {
        let foreign = foreign_files(out_dir);
        let what = if foreign.is_empty() {
            "is not an earlier fedsim run's directory (it has subdirectories, or none of a \
             run's run-info.json, manifest or timeline.csv)"
                .to_owned()
        } else {
            format!(
                "holds files fedsim did not write there ({})",
                foreign.join(", ")
            )
        };
        return Err(CliError::input(format!(
            "--out {shown}: {what}; a run replaces only an empty directory or one earlier \
             run's; give a new or empty directory"
        )));
    }
    let partial = out_dir.with_file_name(format!("{}.partial", name.to_string_lossy()));
    remove_leftover(&partial)?;
    std::fs::create_dir_all(&partial).map_err(|error| {
        CliError::input(format!(
            "--out {shown}: cannot create {}: {error}",
            partial.display()
        ))
    })?;
    // create_dir_all succeeds on a directory that cannot be written: try it.
    let probe = partial.join(".write-probe");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|error| CliError::input(format!("--out {shown}: cannot write: {error}")))?;
    Ok(partial)
}

/// The file a run leaves in its directory listing every file it wrote (hidden: result
/// comparisons skip dot files), so that a later run replaces exactly those and nothing a user
/// added beside them.
const MANIFEST_FILE: &str = ".fedsim-run";

/// What runs (and reproductions, with their `dag*.dot` files) wrote before the manifest existed
/// (session 27): a directory of these names alone is an earlier run's.
const LEGACY_RUN_FILES: &[&str] = &[
    "bitrot.csv",
    "bitrot.svg",
    "bitrot.png",
    "containment.csv",
    "divergence.csv",
    "divergence.png",
    "divergence.svg",
    "link-hours-lost.png",
    "link-hours-lost.svg",
    "orphans.csv",
    "polling-load.png",
    "polling-load.svg",
    "requery-storm.png",
    "requery-storm.svg",
    "run-info.json",
    "servers.csv",
    "storm.csv",
    "summary.json",
    "timeline.csv",
    "timeseries.csv",
    "trace.jsonl",
    "transitions.csv",
    "wakeups.png",
    "wakeups.svg",
];

/// Whether `name` is a file a run or reproduction from before manifests wrote: a fixed name, a
/// per-action containment chart (`containment-<label>.{svg,png}`, `world::key_charts`) or a
/// reproduction's DAG (`dag*.dot`).
fn legacy_run_file(name: &str) -> bool {
    let chart = name.ends_with(".svg") || name.ends_with(".png");
    LEGACY_RUN_FILES.contains(&name)
        || (chart && name.starts_with("containment-"))
        || (name.starts_with("dag") && name.ends_with(".dot"))
}

/// Whether `dir` may be replaced by a run: it is a directory holding nothing, or exactly the
/// files an earlier run wrote (its manifest's, or for a run older than manifests the names runs
/// write) with its `run-info.json`. A symlink is not followed: it is refused. A directory with
/// anything else in it (a notebook beside a run, a project folder, several runs) is never
/// deleted.
fn replaceable(dir: &Path) -> bool {
    let empty = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none());
    // A run leaves run-info.json, a reproduction (`fedsim repro`) timeline.csv; with a
    // manifest either is enough to be sure, without one the file names must all be known.
    let written_by_fedsim = dir.join(MANIFEST_FILE).is_file()
        || dir.join("run-info.json").is_file()
        || (dir.join("summary.json").is_file() && dir.join("timeline.csv").is_file());
    empty || (files_only(dir) && written_by_fedsim && foreign_files(dir).is_empty())
}

/// The files in `dir` that no earlier run wrote there (sorted, at most five named).
fn foreign_files(dir: &Path) -> Vec<String> {
    let listed: Option<Vec<String>> = std::fs::read_to_string(dir.join(MANIFEST_FILE))
        .ok()
        .map(|text| text.lines().map(str::to_owned).collect());
    let mut foreign: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name != MANIFEST_FILE)
                .filter(|name| match &listed {
                    Some(listed) => !listed.contains(name),
                    None => !legacy_run_file(name),
                })
                .collect()
        })
        .unwrap_or_default();
    foreign.sort();
    foreign.truncate(5);
    foreign
}

/// Writes the run's manifest into its (complete) scratch directory.
pub(crate) fn write_manifest(partial: &Path) -> Result<(), CliError> {
    let mut names: Vec<String> = std::fs::read_dir(partial)
        .map_err(|error| CliError::failure(format!("{}: cannot list: {error}", partial.display())))?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name != MANIFEST_FILE)
        .collect();
    names.sort();
    let path = partial.join(MANIFEST_FILE);
    let mut text = names.join("\n");
    text.push('\n');
    std::fs::write(&path, text)
        .map_err(|error| CliError::failure(format!("{}: cannot write: {error}", path.display())))
}

/// Removes a scratch directory an earlier run left at `path` (its `.partial` or
/// `.determinism-check`), refusing to remove anything that does not look like one.
fn remove_leftover(path: &Path) -> Result<(), CliError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    if !files_only(path) {
        return Err(CliError::input(format!(
            "{}: exists and is not a run's scratch directory; remove it or use another --out",
            path.display()
        )));
    }
    std::fs::remove_dir_all(path)
        .map_err(|error| CliError::input(format!("{}: cannot remove: {error}", path.display())))
}

/// Whether `path` is a real directory holding only files (a run killed before it wrote
/// run-info.json leaves such a `.partial`).
fn files_only(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|metadata| metadata.is_dir())
        && std::fs::read_dir(path).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .all(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
        })
}

/// Replaces `out_dir` (an earlier run's, if any) with the complete run in `partial`.
pub(crate) fn move_into_place(partial: &Path, out_dir: &Path) -> Result<(), CliError> {
    let failure = |what: &str, path: &Path, error: std::io::Error| {
        CliError::failure(format!("{what} {}: {error}", path.display()))
    };
    if out_dir.exists() {
        eprintln!("fedsim: replacing the earlier run in {}", out_dir.display());
        std::fs::remove_dir_all(out_dir)
            .map_err(|error| failure("cannot remove", out_dir, error))?;
    }
    std::fs::rename(partial, out_dir).map_err(|error| failure("cannot move into", out_dir, error))
}

/// The first difference between two result directories, ignoring wall-clock files.
pub fn first_difference(first: &Path, second: &Path) -> std::io::Result<Option<String>> {
    let names = |directory: &Path| -> std::io::Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(directory)?
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| {
                !NONDETERMINISTIC_FILES.contains(&name.as_str()) && !name.starts_with('.')
            })
            .collect();
        names.sort();
        Ok(names)
    };
    let first_names = names(first)?;
    let second_names = names(second)?;
    if first_names != second_names {
        return Ok(Some(format!(
            "file lists differ: {first_names:?} vs {second_names:?}"
        )));
    }
    for name in first_names {
        let a = std::fs::read(first.join(&name))?;
        let b = std::fs::read(second.join(&name))?;
        if a != b {
            let offset = a
                .iter()
                .zip(&b)
                .position(|(x, y)| x != y)
                .unwrap_or(a.len().min(b.len()));
            let line = a[..offset.min(a.len())]
                .iter()
                .filter(|byte| **byte == b'\n')
                .count()
                + 1;
            return Ok(Some(format!(
                "{name} differs first at byte {offset} (line {line})"
            )));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two override lists never share a default directory; plain ones stay readable.
    #[test]
    fn default_out_dir_keeps_runs_with_different_overrides_apart() {
        let dir = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|set| (*set).to_owned()).collect();
            default_out_dir("rq5", &sets, 2).display().to_string()
        };
        assert_eq!(dir(&[]), "results/rq5/seed-2");
        assert_eq!(
            dir(&["rooms.policy=P5"]),
            "results/rq5/set-rooms.policy=P5/seed-2"
        );
        assert_eq!(
            dir(&["rooms.policy=P5", "duration=1d"]),
            "results/rq5/set-rooms.policy=P5+duration=1d/seed-2"
        );
        let quoted = dir(&["rooms.policy=\"P5\""]);
        assert!(
            quoted.starts_with("results/rq5/set-rooms.policy=_P5_@"),
            "{quoted}"
        );
        // A plain label cannot spell a hashed one (found in review).
        let hashed = dir(&["description=a b"]);
        let label = hashed
            .split("set-")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        assert_ne!(dir(&[label]), hashed);
        // Replaced characters, a literal '+' and cut labels get a hash of the exact text.
        let mut seen = std::collections::BTreeSet::new();
        for sets in [
            &["a[0]=1"][..],
            &["a_0_=1"],
            &["a=1+2"],
            &["a=1", "2"],
            &["x=1,2"],
            &["x=1", "2"],
            &["observers[0].policy.recheck=half-life"],
            &["observers[1].policy.recheck=half-life"],
            &[&"k".repeat(100)],
            &[&format!("{}j", "k".repeat(99))],
        ] {
            let name = dir(sets);
            assert!(seen.insert(name.clone()), "{sets:?} shares {name}");
            let label = name.split('/').nth(2).unwrap();
            assert!(label.len() <= "set-".len() + 60 + 9, "{name}");
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir()
            .join(format!("fedsim-run-out-{}", std::process::id()))
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Only an earlier run's directory (files only, with run-info.json or summary.json) or an
    /// empty one is replaced; a folder with anything else in it, a subdirectory above all, is
    /// refused with exit 2 and left as it was (a project folder holding a summary.json once
    /// lost its src/).
    #[test]
    fn only_an_earlier_run_or_an_empty_directory_is_replaced() {
        let run = scratch("run");
        std::fs::write(run.join("run-info.json"), "{}").unwrap();
        std::fs::write(run.join("timeseries.csv"), "t\n").unwrap();
        assert!(replaceable(&run));
        assert!(replaceable(&scratch("empty")));
        // A file the user added beside a run's keeps the directory (found in session 27's
        // walkthrough: a notebook beside a run was deleted), whether the run listed its files
        // or is older than the manifest.
        std::fs::write(run.join("analysis.ipynb"), "{}").unwrap();
        assert!(!replaceable(&run));
        let error = prepare_out_dir(&run).unwrap_err();
        assert!(
            error.message.contains("analysis.ipynb"),
            "{}",
            error.message
        );
        std::fs::write(run.join("chart-of-mine.svg"), "<svg/>").unwrap();
        write_manifest(&run).unwrap();
        assert!(replaceable(&run), "the manifest lists every file");
        std::fs::write(run.join("NOTES.md"), "mine").unwrap();
        assert_eq!(foreign_files(&run), ["NOTES.md"]);
        assert!(!replaceable(&run));
        // A reproduction's folder from before manifests: its own names, no run-info.json.
        let repro = scratch("repro");
        for name in ["summary.json", "timeline.csv", "dag.dot", "dag-healed.dot"] {
            std::fs::write(repro.join(name), "x").unwrap();
        }
        assert!(replaceable(&repro));
        std::fs::write(repro.join("mine.txt"), "x").unwrap();
        assert!(!replaceable(&repro));
        // A key-world run from before manifests, with a per-action containment chart.
        let keys = scratch("keys");
        for name in ["run-info.json", "containment-rotation.svg", "wakeups.png"] {
            std::fs::write(keys.join(name), "x").unwrap();
        }
        assert!(replaceable(&keys));
        // A summary.json alone is not a run.
        let garbage = scratch("garbage");
        std::fs::write(garbage.join("summary.json"), "x").unwrap();
        assert!(!replaceable(&garbage));
        // --out naming a file says so.
        let file = scratch("file-out").join("afile");
        std::fs::write(&file, "x").unwrap();
        assert!(
            prepare_out_dir(&file)
                .unwrap_err()
                .message
                .contains("is a file")
        );

        let project = scratch("project");
        std::fs::write(project.join("summary.json"), "{}").unwrap();
        std::fs::create_dir_all(project.join("src")).unwrap();
        std::fs::write(project.join("src").join("main.rs"), "fn main() {}").unwrap();
        assert!(!replaceable(&project));
        let error = prepare_out_dir(&project).unwrap_err();
        assert_eq!(error.exit_code, 2);
        assert!(project.join("src").join("main.rs").exists());

        let notes = scratch("notes");
        std::fs::write(notes.join("notes.txt"), "mine").unwrap();
        assert!(!replaceable(&notes));

        // A leftover scratch directory with a subdirectory is not removed either.
        let out = scratch("out").join("seed-1");
        let partial = out.with_file_name("seed-1.partial");
        std::fs::create_dir_all(partial.join("kept")).unwrap();
        assert_eq!(prepare_out_dir(&out).unwrap_err().exit_code, 2);
        assert!(partial.join("kept").exists());
        std::fs::remove_dir_all(partial.join("kept")).unwrap();
        assert_eq!(prepare_out_dir(&out).unwrap(), partial);
    }
}
