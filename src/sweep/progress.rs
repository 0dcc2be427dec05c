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
}

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
            bar
        });
        Progress {
            lines: bar.is_none() && mode != ProgressMode::Quiet,
            bar,
            to_run,
            counts: Mutex::new(Counts { done: 0, failed: 0 }),
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

    /// Records one finished run.
    pub fn finished(&self, run_name: &str, error: Option<&str>) {
        let mut counts = self.counts.lock().expect("progress lock");
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
