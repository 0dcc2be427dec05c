//! Progress of a sweep on stderr: an indicatif bar on a terminal, plain lines otherwise (indicatif
//! draws nothing when stderr is not a terminal, e.g. in CI or a Slurm job's output file).
//! Wall-clock time is used here for the estimate only; it never reaches a result file.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar if stderr is a terminal, plain lines otherwise.
    Auto,
    /// Plain lines, one per finished run.
    Lines,
    /// Nothing.
    Quiet,
}

struct Counts {
    done: u64,
    failed: u64,
    /// Runs started and not finished, with when they started (for the heartbeat).
    running: Vec<(String, Instant)>,
}

/// How often a sweep in plain-line mode says which runs are still going: a run of a large
/// scenario takes many minutes, and a log with no line for that long looks hung.
pub const HEARTBEAT: Duration = Duration::from_secs(120);

/// Counts finished runs and reports them.
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    to_run: u64,
    counts: Mutex<Counts>,
    started: Instant,
}

impl Progress {
    /// `to_run` is the number of runs this invocation will execute (already complete ones excluded).
    pub fn new(mode: ProgressMode, to_run: u64) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (mode == ProgressMode::Auto && terminal).then(|| {
            let bar = ProgressBar::new(to_run);
            let style = ProgressStyle::with_template(
                "{bar:30} {pos}/{len} runs, {msg} [{elapsed_precise}, ETA {eta}]",
            )
            .expect("the template is valid");
            bar.set_style(style);
            bar.set_message("0 failed");
            // Redraw every second, so the elapsed time moves while long runs are going.
            bar.enable_steady_tick(Duration::from_secs(1));
            bar
        });
        Progress {
            lines: bar.is_none() && mode != ProgressMode::Quiet,
            bar,
            to_run,
            counts: Mutex::new(Counts {
                done: 0,
                failed: 0,
                running: Vec::new(),
            }),
            started: Instant::now(),
        }
    }

    /// Prints a line above the bar (or on its own).
    pub fn note(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None if self.lines => eprintln!("{message}"),
            None => {}
        }
    }

    /// Records that a run started.
    pub fn started(&self, run_name: &str) {
        let mut counts = self.counts.lock().expect("progress lock");
        counts.running.push((run_name.to_owned(), Instant::now()));
    }

    /// Whether a heartbeat thread should run: plain lines only (a bar redraws itself).
    pub fn wants_heartbeat(&self) -> bool {
        self.lines
    }

    /// The heartbeat line: how many runs finished and which are going, for how long (longest
    /// first), or `None` when nothing is running.
    pub fn heartbeat(&self) -> Option<String> {
        let counts = self.counts.lock().expect("progress lock");
        if counts.running.is_empty() {
            return None;
        }
        let mut running: Vec<(&str, Duration)> = counts
            .running
            .iter()
            .map(|(name, since)| (name.as_str(), since.elapsed()))
            .collect();
        running.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let listed: Vec<String> = running
            .iter()
            .take(4)
            .map(|(name, elapsed)| format!("{name} ({})", format_duration(*elapsed)))
            .collect();
        let more = running.len().saturating_sub(listed.len());
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        Some(format!(
            "sweep: {}/{} finished; running: {}{more}",
            counts.done,
            self.to_run,
            listed.join(", ")
        ))
    }

    /// Records one finished run.
    pub fn finished(&self, run_name: &str, error: Option<&str>) {
        let mut counts = self.counts.lock().expect("progress lock");
        if let Some(position) = counts.running.iter().position(|(name, _)| name == run_name) {
            counts.running.remove(position);
        }
        counts.done += 1;
        if error.is_some() {
            counts.failed += 1;
        }
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{} failed", counts.failed));
            bar.inc(1);
            if let Some(error) = error {
                bar.println(format!("sweep: {run_name} failed: {error}"));
            }
        } else if self.lines {
            let elapsed = self.started.elapsed();
            let remaining = self.to_run.saturating_sub(counts.done);
            let eta = elapsed.mul_f64(remaining as f64 / counts.done as f64);
            let outcome = match error {
                None => "ok".to_string(),
                Some(error) => format!("FAILED: {error}"),
            };
            eprintln!(
                "sweep: [{}/{}] {run_name} {outcome} ({} failed, ETA {})",
                counts.done,
                self.to_run,
                counts.failed,
                format_duration(eta)
            );
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds >= 3600 {
        format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60)
    } else {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_names_the_runs_still_going() {
        let progress = Progress::new(ProgressMode::Lines, 3);
        assert_eq!(progress.heartbeat(), None);
        progress.started("a=1_seed=1");
        progress.started("a=2_seed=1");
        progress.finished("a=1_seed=1", None);
        let line = progress.heartbeat().unwrap();
        assert!(
            line.starts_with("sweep: 1/3 finished; running: a=2_seed=1 ("),
            "{line}"
        );
        assert!(!line.contains("a=1_seed=1"), "{line}");
        for index in 0..6 {
            progress.started(&format!("b={index}_seed=1"));
        }
        assert!(progress.heartbeat().unwrap().ends_with(" and 3 more"));
    }
}
