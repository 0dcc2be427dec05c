//! The sweep directory on disk, and the rules that make it safe to interrupt.
//!
//! ```text
//! OUT/sweep.json            the SweepSpec (plus the shard, if any) this directory holds
//! OUT/runs.csv              one row per run (see `table`)
//! OUT/runs/<run name>/      a finished run: summary.json and whatever else the run wrote,
//!                           or error.txt if it failed
//! OUT/runs/.partial-<name>/ a run in progress; never read, removed when the sweep restarts
//! ```
//! Invariant: a path without the `.partial-` prefix only ever appears by `rename` of a complete
//! file or folder, so a sweep killed at any instant leaves complete runs and partial ones that
//! are recognisably partial — never a half-written `summary.json` or `runs.csv`.

use super::spec::{RunSpec, Shard, SweepSpec};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The prefix of anything still being written.
pub const PARTIAL_PREFIX: &str = ".partial-";
/// The file a runner must leave in a run folder for the run to count as complete.
pub const SUMMARY_FILE: &str = "summary.json";
/// The file written into a run folder when the run failed.
pub const ERROR_FILE: &str = "error.txt";
pub const SPEC_FILE: &str = "sweep.json";
pub const TABLE_FILE: &str = "runs.csv";
pub const RUNS_DIR: &str = "runs";
/// Held (an advisory lock on it, not its existence) by the one process writing a sweep
/// directory. The file stays: removing it would let a waiting process lock an unlinked copy.
pub const LOCK_FILE: &str = "sweep.lock";

/// A sweep directory's write lock: held until dropped (or until the process ends, however it
/// ends, so a killed sweep leaves no stale lock).
#[derive(Debug)]
pub struct DirLock {
    /// `None` where the file system cannot lock (some cluster mounts): the run goes on unguarded.
    _file: Option<fs::File>,
}

/// A file-system or consistency problem with a sweep directory, as one line naming the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {action}: {source}")]
    Io {
        path: String,
        action: &'static str,
        source: std::io::Error,
    },
    /// The directory's contents do not fit what was asked (another sweep, a missing shard, ...).
    #[error("{path}: {message}")]
    Mismatch { path: String, message: String },
}

pub(crate) fn io_error(
    path: &Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |source| StoreError::Io {
        path,
        action,
        source,
    }
}

/// What `sweep.json` holds: the spec, which shard of it this directory ran, and the version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepRecord {
    pub fedsim_version: String,
    /// The build that ran it ([`crate::BUILD`]); empty in a record written before builds were
    /// named.
    #[serde(default)]
    pub fedsim_build: String,
    #[serde(flatten)]
    pub spec: SweepSpec,
    /// `None` for a whole sweep (including one assembled by `merge`).
    pub shard: Option<Shard>,
}

/// Writes `bytes` to `path` so that readers see either the old file or the whole new one: the
/// bytes go to `.partial-<file name>` beside it, are synced, then renamed over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let file_name = path
        .file_name()
        .expect("write_atomically needs a file path")
        .to_string_lossy();
    let partial = path.with_file_name(format!("{PARTIAL_PREFIX}{file_name}"));
    let mut file = fs::File::create(&partial).map_err(io_error(&partial, "cannot create"))?;
    file.write_all(bytes)
        .map_err(io_error(&partial, "cannot write"))?;
    file.sync_all().map_err(io_error(&partial, "cannot sync"))?;
    drop(file);
    fs::rename(&partial, path).map_err(io_error(path, "cannot rename into place"))
}

/// Flushes every regular file directly inside `dir` to disk, so that a folder renamed into place
/// afterwards holds complete files even after a power cut, not only after a killed process.
fn sync_files_in(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(io_error(dir, "cannot list"))? {
        let entry = entry.map_err(io_error(dir, "cannot list"))?;
        let path = entry.path();
        if path.is_file() {
            let file = fs::File::open(&path).map_err(io_error(&path, "cannot open"))?;
            file.sync_all().map_err(io_error(&path, "cannot sync"))?;
        }
    }
    Ok(())
}

/// A sweep directory: paths and the state of each run in it.
#[derive(Debug, Clone)]
pub struct SweepDir {
    pub root: PathBuf,
}

/// Where a run stands in a sweep directory.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Finished with a readable summary; holds its `metrics` object.
    Complete(serde_json::Map<String, serde_json::Value>),
    /// Finished with an error (the first line of `error.txt`).
    Failed(String),
    /// Not run yet (or interrupted, or its folder is unreadable): to be run.
    Missing,
}

impl SweepDir {
    pub fn new(root: &Path) -> SweepDir {
        SweepDir {
            root: root.to_path_buf(),
        }
    }

    pub fn runs_dir(&self) -> PathBuf {
        self.root.join(RUNS_DIR)
    }

    pub fn run_dir(&self, run: &RunSpec) -> PathBuf {
        self.runs_dir().join(&run.name)
    }

    pub fn partial_run_dir(&self, run: &RunSpec) -> PathBuf {
        self.runs_dir()
            .join(format!("{PARTIAL_PREFIX}{}", run.name))
    }

    pub fn spec_path(&self) -> PathBuf {
        self.root.join(SPEC_FILE)
    }

    pub fn table_path(&self) -> PathBuf {
        self.root.join(TABLE_FILE)
    }

    /// Refuses a directory that exists and holds files other than a sweep's: without its
    /// `sweep.json` only what a sweep writes before that (its lock, `.partial-*`) may be there
    /// as files. A sweep or merge into a run's folder would mix its files with the run's.
    /// Subdirectories are allowed: a merge's output holds its shards and the Slurm logs
    /// (`scripts/slurm/submit-sweep.sh`), and a sweep writes only its own names beside them.
    /// Call before [`SweepDir::lock`], which creates `sweep.lock`.
    pub fn check_is_sweep_or_new(&self) -> Result<(), StoreError> {
        if self.spec_path().is_file() {
            return Ok(());
        }
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(io_error(&self.root, "cannot list")(error)),
        };
        let mut foreign: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|entry| !entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name != LOCK_FILE && !name.starts_with(PARTIAL_PREFIX))
            .collect();
        if foreign.is_empty() {
            return Ok(());
        }
        foreign.sort();
        foreign.truncate(5);
        Err(StoreError::Mismatch {
            path: self.root.display().to_string(),
            message: format!(
                "holds files that are not a sweep's ({}) and no {SPEC_FILE}; give a new \
                 directory, or one holding only directories (shards, logs)",
                foreign.join(", ")
            ),
        })
    }

    /// Takes the directory's write lock (creating the directory), or fails at once if another
    /// sweep or merge holds it: two writers would remove each other's half-written runs
    /// ([`SweepDir::prepare`]) and interleave `runs.csv`.
    pub fn lock(&self) -> Result<DirLock, StoreError> {
        fs::create_dir_all(&self.root).map_err(io_error(&self.root, "cannot create"))?;
        let path = self.root.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(&path, "cannot open"))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: Some(file) }),
            Err(fs::TryLockError::WouldBlock) => Err(StoreError::Mismatch {
                path: self.root.display().to_string(),
                message: "another fedsim sweep or merge is writing here (it holds sweep.lock); \
                          wait for it to finish or give another directory"
                    .to_owned(),
            }),
            // Lustre mounted without flock, NFS without its lock daemon: the lock is a guard,
            // not a condition, so say so and go on.
            Err(fs::TryLockError::Error(error)) => {
                eprintln!(
                    "fedsim: warning: {}: cannot lock ({error}); going on without the lock: do \
                     not start a second sweep or merge in this directory meanwhile",
                    path.display()
                );
                Ok(DirLock { _file: None })
            }
        }
    }

    /// Takes a shared lock on a directory this process only reads (a shard being merged), so
    /// that a sweep still writing it makes the merge stop instead of copying a run the sweep
    /// is about to replace. A directory without `sweep.lock` (written before locks existed) or
    /// on a file system that cannot lock is read unguarded.
    pub fn lock_shared(&self) -> Result<DirLock, StoreError> {
        let path = self.root.join(LOCK_FILE);
        let Ok(file) = fs::File::open(&path) else {
            return Ok(DirLock { _file: None });
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(DirLock { _file: Some(file) }),
            Err(fs::TryLockError::WouldBlock) => Err(StoreError::Mismatch {
                path: self.root.display().to_string(),
                message: "a fedsim sweep is still writing this directory (it holds sweep.lock); \
                          merge once it has finished"
                    .to_owned(),
            }),
            Err(fs::TryLockError::Error(_)) => Ok(DirLock { _file: None }),
        }
    }

    /// Creates the directory tree and removes what an interrupted earlier sweep left half done.
    /// The caller holds the directory's [`SweepDir::lock`].
    pub fn prepare(&self) -> Result<(), StoreError> {
        let runs_dir = self.runs_dir();
        fs::create_dir_all(&runs_dir).map_err(io_error(&runs_dir, "cannot create"))?;
        for directory in [&self.root, &runs_dir] {
            for entry in fs::read_dir(directory).map_err(io_error(directory, "cannot list"))? {
                let entry = entry.map_err(io_error(directory, "cannot list"))?;
                if !entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(PARTIAL_PREFIX)
                {
                    continue;
                }
                let path = entry.path();
                if path.is_dir() {
                    fs::remove_dir_all(&path).map_err(io_error(&path, "cannot remove"))?;
                } else {
                    fs::remove_file(&path).map_err(io_error(&path, "cannot remove"))?;
                }
            }
        }
        Ok(())
    }

    /// Reads `sweep.json`, or `None` if the directory holds no sweep yet.
    pub fn read_record(&self) -> Result<Option<SweepRecord>, StoreError> {
        let path = self.spec_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error(&path, "cannot read")(error)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|error| StoreError::Mismatch {
                path: path.display().to_string(),
                message: format!("not a sweep record: {error}"),
            })
    }

    pub fn write_record(&self, record: &SweepRecord) -> Result<(), StoreError> {
        let mut text = serde_json::to_string_pretty(record).expect("a sweep record serializes");
        text.push('\n');
        write_atomically(&self.spec_path(), text.as_bytes())
    }

    /// The state of `run` in this directory. A summary that does not parse, lacks a `metrics`
    /// object or names another seed counts as missing, so the run is done again.
    pub fn run_state(&self, run: &RunSpec) -> RunState {
        let run_dir = self.run_dir(run);
        // The error file wins: a run that failed after writing its summary has still failed.
        if let Ok(text) = fs::read_to_string(run_dir.join(ERROR_FILE)) {
            return RunState::Failed(text.lines().next().unwrap_or("").to_string());
        }
        match read_summary_metrics(&run_dir.join(SUMMARY_FILE), run.seed) {
            Some(metrics) => RunState::Complete(metrics),
            None => RunState::Missing,
        }
    }

    /// Moves a finished partial run folder into place. On success the folder must hold a valid
    /// summary (else the run is turned into a failure); on failure `error` is recorded in it.
    pub fn finish_run(&self, run: &RunSpec, error: Option<&str>) -> Result<RunState, StoreError> {
        let partial = self.partial_run_dir(run);
        let mut error = error.map(str::to_string);
        if error.is_none() && read_summary_metrics(&partial.join(SUMMARY_FILE), run.seed).is_none()
        {
            error = Some(format!(
                "the run finished without a complete {SUMMARY_FILE} for seed {}",
                run.seed
            ));
        }
        if let Some(message) = &error {
            let path = partial.join(ERROR_FILE);
            fs::write(&path, format!("{message}\n")).map_err(io_error(&path, "cannot write"))?;
        }
        sync_files_in(&partial)?;
        let final_dir = self.run_dir(run);
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir).map_err(io_error(&final_dir, "cannot remove"))?;
        }
        fs::rename(&partial, &final_dir)
            .map_err(io_error(&final_dir, "cannot rename into place"))?;
        Ok(self.run_state(run))
    }

    /// Copies the run folder of `run` from `source` into this directory (via a partial folder;
    /// files are hard-linked when both are on one file system), unless this directory already
    /// has it complete. Used by `merge`.
    pub fn import_run(&self, source: &SweepDir, run: &RunSpec) -> Result<(), StoreError> {
        if self.root == source.root || matches!(self.run_state(run), RunState::Complete(_)) {
            return Ok(());
        }
        let partial = self.partial_run_dir(run);
        if partial.exists() {
            fs::remove_dir_all(&partial).map_err(io_error(&partial, "cannot remove"))?;
        }
        copy_tree(&source.run_dir(run), &partial)?;
        sync_files_in(&partial)?;
        let final_dir = self.run_dir(run);
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir).map_err(io_error(&final_dir, "cannot remove"))?;
        }
        fs::rename(&partial, &final_dir).map_err(io_error(&final_dir, "cannot rename into place"))
    }
}

/// Reads the `metrics` object of a summary if the file is a complete summary for `seed`.
fn read_summary_metrics(
    path: &Path,
    seed: u64,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let text = fs::read_to_string(path).ok()?;
    let summary: serde_json::Value = serde_json::from_str(&text).ok()?;
    if let Some(summary_seed) = summary.get("seed")
        && summary_seed.as_u64() != Some(seed)
    {
        return None;
    }
    summary.get("metrics")?.as_object().cloned()
}

fn copy_tree(source: &Path, target: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(target).map_err(io_error(target, "cannot create"))?;
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(source)
        .map_err(io_error(source, "cannot list"))?
        .collect::<Result<_, _>>()
        .map_err(io_error(source, "cannot list"))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let from = entry.path();
        let to = target.join(entry.file_name());
        if from.is_dir() {
            copy_tree(&from, &to)?;
        } else if fs::hard_link(&from, &to).is_err() {
            // Finished run files are never modified, so a hard link is as good as a copy and
            // costs nothing; copy only across file systems.
            fs::copy(&from, &to).map_err(io_error(&from, "cannot copy"))?;
        }
    }
    Ok(())
}
