//! Running a scenario into a results directory: summary.json, timeseries.csv, servers.csv,
//! run-info.json, the chart, and optionally trace.jsonl.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::chart::{PollingLoadChart, Series, draw_polling_load};
use crate::engine::Trace;
use crate::engine::time::format_duration_ms;
use crate::metrics::{CsvTable, fixed, percentile, rounded, write_json};
use crate::scenario::{ChartKind, Scenario};
use crate::server::policy::{KeyBinding, Recheck};

use super::World;
use super::build::slug;

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub out_dir: PathBuf,
    /// The flat headline metrics written to summary.json.
    pub metrics: Map<String, Value>,
    /// Checks that failed (name and detail).
    pub failed_checks: Vec<(String, String)>,
    pub events_processed: u64,
    pub wall_seconds: f64,
    pub event_hash: String,
}

/// A run that could not write its results.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{0}")]
    Chart(#[from] crate::chart::ChartError),
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> RunError + '_ {
    move |error| RunError::Io {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

/// Runs `scenario` with `seed` and writes its results into `out_dir`.
pub fn run_to_dir(
    scenario: &Scenario,
    seed: u64,
    out_dir: &Path,
    show_progress: bool,
) -> Result<RunOutcome, RunError> {
    // The whole run, writing included, makes and checks signatures in the scenario's mode.
    let _crypto = crate::matrix::crypto_mode::enter(scenario.crypto);
    if scenario.rooms.is_some() {
        return crate::fed::run_to_dir(scenario, seed, out_dir, show_progress);
    }
    std::fs::create_dir_all(out_dir).map_err(io_error(out_dir))?;
    let trace_path = out_dir.join("trace.jsonl");
    let trace_temporary = out_dir.join(".trace.jsonl.tmp");
    let trace = if scenario.outputs.trace {
        let file = std::fs::File::create(&trace_temporary).map_err(io_error(&trace_temporary))?;
        Trace::new(Some(Box::new(std::io::BufWriter::new(file))))
    } else {
        Trace::default()
    };
    let started = Instant::now();
    let mut world = World::build(scenario, seed, trace);
    let mut progress = Progress::new(show_progress, world.end_ms());
    world.run(|now_ms| progress.update(now_ms));
    progress.finish();
    let wall_seconds = started.elapsed().as_secs_f64();
    if scenario.outputs.trace {
        world
            .trace
            .close_sink()
            .map_err(io_error(&trace_temporary))?;
        std::fs::rename(&trace_temporary, &trace_path).map_err(io_error(&trace_path))?;
    }
    let outcome = write_results(&world, out_dir, wall_seconds);
    drop_in_background(world);
    outcome
}

/// Frees `value` on a thread of its own once a run's results are written. A full-size room
/// world is tens of millions of small allocations and freeing them took ~3% of a bench-medium
/// run; nothing needs to wait for it, and a process that exits first simply hands the memory
/// back to the OS. If no thread can be started, `value` is freed here instead.
pub fn drop_in_background<T: Send + 'static>(value: T) {
    // On failure `spawn` drops the closure, and with it `value`, on this thread.
    let _ = std::thread::Builder::new()
        .name("fedsim-drop".to_owned())
        .spawn(move || drop(value));
}

fn write_results(world: &World, out_dir: &Path, wall_seconds: f64) -> Result<RunOutcome, RunError> {
    let scenario = &world.scenario;
    let metrics = headline_metrics(world);
    let checks = run_checks(world);
    let failed_checks: Vec<(String, String)> = checks
        .iter()
        .filter(|(_, passed, _)| !passed)
        .map(|(name, _, detail)| (name.clone(), detail.clone()))
        .collect();
    let policies: Vec<Value> = scenario
        .observers
        .iter()
        .map(|group| {
            json!({
                "group": group.name,
                "policy": serde_json::to_value(group.policy.resolve().expect("validated")).unwrap_or(Value::Null),
            })
        })
        .collect();
    let summary = json!({
        "scenario": scenario.name,
        "seed": world.seed,
        "fedsim_version": env!("CARGO_PKG_VERSION"),
        "parameters": {
            "scenario": serde_json::to_value(scenario).unwrap_or(Value::Null),
            "resolved_policies": policies,
        },
        "metrics": Value::Object(metrics.clone()),
        "checks": checks.iter().map(|(name, passed, detail)| json!({
            "name": name, "passed": passed, "detail": detail,
        })).collect::<Vec<_>>(),
        "event_hash": world.trace.hash_hex(),
    });
    let summary_path = out_dir.join("summary.json");
    write_json(&summary_path, &summary).map_err(io_error(&summary_path))?;
    write_timeseries(world, out_dir)?;
    write_servers(world, out_dir)?;
    super::key_rq::write_transitions(world, out_dir)?;
    super::key_rq::write_containment(world, out_dir)?;
    match scenario.outputs.chart {
        ChartKind::Rq1PollingLoad => {
            let chart = polling_load_chart(world);
            draw_polling_load(
                &chart,
                &out_dir.join("polling-load.svg"),
                &out_dir.join("polling-load.png"),
            )?;
        }
        ChartKind::Rq2Containment => {
            super::key_charts::containment_charts(world, out_dir)?;
        }
        ChartKind::Rq6LinkHoursLost => {
            super::key_charts::link_hours_chart(world, out_dir)?;
        }
        ChartKind::Rq12Wakeups => {
            super::key_charts::wakeups_chart(world, out_dir)?;
        }
        ChartKind::None => {}
        // Room-world charts (drawn by src/fed/).
        ChartKind::Rq5Divergence | ChartKind::Rq7RequeryStorm => {}
    }
    let run_info = json!({
        "fedsim_build": crate::BUILD,
        "wall_seconds": rounded(wall_seconds),
        "events_processed": world.events_processed,
        "events_per_second": rounded(world.events_processed as f64 / wall_seconds.max(1e-9)),
        "queue_len_max": world.queue_len_max(),
        "peak_memory_kib": peak_memory_kib(),
        "prefault": crate::prefault::active(),
        "signatures_made": world
            .publishers
            .iter()
            .flatten()
            .map(|publisher| publisher.signatures_made)
            .sum::<u64>(),
        "verify_checks": world.memo.checks,
        "verify_memo_hits": world.memo.hits,
        "crypto_seconds": rounded(world.crypto_seconds()),
        "crypto": world.scenario.crypto.as_str(),
    });
    let run_info_path = out_dir.join("run-info.json");
    write_json(&run_info_path, &run_info).map_err(io_error(&run_info_path))?;
    Ok(RunOutcome {
        out_dir: out_dir.to_owned(),
        metrics,
        failed_checks,
        events_processed: world.events_processed,
        wall_seconds,
        event_hash: world.trace.hash_hex(),
    })
}

/// Peak resident memory from /proc (Linux), if available.
pub(crate) fn peak_memory_kib() -> Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(Value::from)
        .unwrap_or(Value::Null)
}

/// Per-observer figures used by the metrics, the checks and the chart.
struct ObserverFigures {
    key: String,
    mean_per_s: f64,
    p99_per_s: f64,
    analytic_per_s: f64,
}

fn observer_figures(world: &World) -> Vec<ObserverFigures> {
    let scenario = &world.scenario;
    let warmup_ms = scenario.metrics.warmup.ms();
    let window_ms = scenario.metrics.sample_interval.ms();
    let first_window = warmup_ms.div_ceil(window_ms) as usize;
    let full_windows = (world.end_ms() / window_ms) as usize;
    world
        .observers
        .iter()
        .map(|observer| {
            let windows = &observer.window_requests[first_window.min(full_windows)..full_windows];
            let window_s = window_ms as f64 / 1000.0;
            let total: u64 = windows.iter().map(|count| u64::from(*count)).sum();
            let measured_s = windows.len() as f64 * window_s;
            let lifetime_ms = observer
                .key_lifetime_ms
                .min(crate::matrix::server_keys::SEVEN_DAYS_MS as u64);
            ObserverFigures {
                key: format!(
                    "{}.n{}",
                    slug(&scenario.observers[observer.group].name),
                    observer.known_domains
                ),
                mean_per_s: if measured_s > 0.0 {
                    total as f64 / measured_s
                } else {
                    0.0
                },
                p99_per_s: f64::from(percentile(windows, 99.0)) / window_s,
                analytic_per_s: f64::from(observer.known_domains) / (lifetime_ms as f64 / 1000.0),
            }
        })
        .collect()
}

fn headline_metrics(world: &World) -> Map<String, Value> {
    let mut metrics = Map::new();
    let figures = observer_figures(world);
    for (observer, figure) in world.observers.iter().zip(&figures) {
        let stats = &observer.cache.stats;
        let key = &figure.key;
        metrics.insert(
            format!("{key}.requests_per_s_mean"),
            rounded(figure.mean_per_s),
        );
        metrics.insert(
            format!("{key}.requests_per_s_p99_1m"),
            rounded(figure.p99_per_s),
        );
        metrics.insert(
            format!("{key}.analytic_n_over_l_per_s"),
            rounded(figure.analytic_per_s),
        );
        let duration_s = world.end_ms() as f64 / 1000.0;
        // Every direct request needs a server discovery (.well-known, SRV, DNS); no resolver
        // cache is modelled, so the rate is the direct request rate.
        metrics.insert(
            format!("{key}.discovery_lookups_per_s"),
            rounded(stats.requests_direct as f64 / duration_s),
        );
        metrics.insert(
            format!("{key}.bytes_per_day"),
            rounded(observer.bytes_received as f64 / (duration_s / 86_400.0)),
        );
        metrics.insert(
            format!("{key}.requests_to_dead_domains"),
            observer.requests_to_dead_domains.into(),
        );
        metrics.insert(format!("{key}.in_flight_peak"), stats.in_flight_peak.into());
        metrics.insert(
            format!("{key}.invalidations"),
            stats.invalidations_total().into(),
        );
        // Only under first-seen-wins (P9), where collisions can happen (other runs keep their
        // files).
        if observer.cache.policy().key_binding == KeyBinding::FirstSeenWins {
            metrics.insert(format!("{key}.key_collisions"), stats.key_collisions.into());
        }
    }
    if let ([figure], [observer]) = (figures.as_slice(), world.observers.as_slice()) {
        metrics.insert("requests_per_s_mean".into(), rounded(figure.mean_per_s));
        metrics.insert("requests_per_s_p99_1m".into(), rounded(figure.p99_per_s));
        metrics.insert(
            "analytic_n_over_l_per_s".into(),
            rounded(figure.analytic_per_s),
        );
        let ratio = if figure.analytic_per_s > 0.0 {
            figure.mean_per_s / figure.analytic_per_s
        } else {
            0.0
        };
        metrics.insert("ratio_to_analytic".into(), rounded(ratio));
        metrics.insert(
            "in_flight_peak".into(),
            observer.cache.stats.in_flight_peak.into(),
        );
    }
    let totals = &world.totals;
    metrics.insert("key_requests_total".into(), totals.key_requests.into());
    metrics.insert(
        "requests_to_dead_domains_total".into(),
        totals.requests_to_dead_domains.into(),
    );
    let peak = world
        .observers
        .iter()
        .map(|observer| observer.cache.stats.in_flight_peak)
        .max()
        .unwrap_or(0);
    metrics.insert("in_flight_peak_max".into(), peak.into());
    metrics.insert("notary_queries_total".into(), totals.notary_queries.into());
    metrics.insert(
        "notary_origin_fetches_total".into(),
        totals.notary_origin_fetches.into(),
    );
    let stale: u64 = world
        .notaries
        .iter()
        .map(|notary| notary.stats.stale_answers)
        .sum();
    metrics.insert("notary_stale_answers_total".into(), stale.into());
    let duration_s = world.end_ms() as f64 / 1000.0;
    metrics.insert(
        "notary_queries_per_s".into(),
        rounded(totals.notary_queries as f64 / duration_s),
    );
    metrics.insert("invalidations_total".into(), totals.invalidations.into());
    for (reason, count) in world.invalidations_by_reason() {
        metrics.insert(format!("invalidations.{}", reason.label()), count.into());
    }
    metrics.insert(
        "answers_timeout_total".into(),
        totals.answers_timeout.into(),
    );
    metrics.insert(
        "answers_refused_total".into(),
        totals.answers_refused.into(),
    );
    metrics.insert(
        "answers_not_found_total".into(),
        totals.answers_not_found.into(),
    );
    metrics.insert(
        "incoming_cut_by_partition_total".into(),
        totals.incoming_cut_by_partition.into(),
    );
    metrics.insert("events_processed".into(), world.events_processed.into());
    super::key_rq::add_metrics(world, &mut metrics);
    metrics
}

/// Checks that can fail: a failure prints the command that reproduces it.
fn run_checks(world: &World) -> Vec<(String, bool, String)> {
    let mut checks = Vec::new();
    let duration_ms = world.end_ms() as f64;
    let faults = !world.scenario.phases.is_empty()
        || world.scenario.network.random_partitions.rate_per_day > 0.0;
    for (observer, figure) in world.observers.iter().zip(observer_figures(world)) {
        let group = &world.scenario.federation.domain_groups;
        let dead = group
            .iter()
            .find(|domain_group| {
                domain_group.name == world.scenario.observers[observer.group].domains
            })
            .is_some_and(|domain_group| domain_group.dead_fraction > 0.0);
        let expected_requests = figure.analytic_per_s * duration_ms / 1000.0;
        if observer.cache.policy().recheck != Recheck::AtExpiry
            || dead
            || faults
            || world.scenario.network.loss > 0.0
            || expected_requests < 1000.0
            || world.scenario.metrics.warmup.ms() > 0
        {
            continue;
        }
        let ratio = figure.mean_per_s / figure.analytic_per_s;
        // With warm phases uniform over one lifetime, a run shorter than the lifetime sees each
        // domain once with probability p = duration / lifetime: the count is binomial. Allow
        // four standard deviations of that, and never less than 5%.
        let lifetime_ms = observer
            .key_lifetime_ms
            .min(crate::matrix::server_keys::SEVEN_DAYS_MS as u64) as f64;
        let seen_fraction = (duration_ms / lifetime_ms).fract();
        let domains = f64::from(observer.known_domains);
        let binomial_sd = (domains * seen_fraction * (1.0 - seen_fraction)).sqrt();
        let tolerance = (4.0 * binomial_sd / expected_requests).max(0.05);
        checks.push((
            format!("at-expiry rate matches N/L ({})", figure.key),
            (ratio - 1.0).abs() <= tolerance,
            format!(
                "measured {:.6} req/s, N/L {:.6} req/s, ratio {:.4} (tolerance {:.1}%)",
                figure.mean_per_s,
                figure.analytic_per_s,
                ratio,
                100.0 * tolerance
            ),
        ));
    }
    let answered = world.totals.answers_ok
        + world.totals.answers_not_found
        + world.totals.answers_status
        + world.totals.answers_timeout
        + world.totals.answers_refused;
    let sent = world.totals.key_requests + world.totals.notary_origin_fetches;
    checks.push((
        "every request ends in one outcome".into(),
        answered + world.requests_pending() as u64 >= sent && answered <= sent,
        format!(
            "{sent} sent, {answered} ended, {} still in flight at the end",
            world.requests_pending()
        ),
    ));
    checks
}

fn write_timeseries(world: &World, out_dir: &Path) -> Result<(), RunError> {
    let mut table = CsvTable::new(&[
        "t_s",
        "key_requests",
        "direct_requests",
        "notary_queries",
        "notary_origin_fetches",
        "answers_ok",
        "answers_not_found",
        "answers_status",
        "answers_timeout",
        "answers_refused",
        "requests_to_dead_domains",
        "invalidations",
        "revalidations",
        "in_flight",
    ]);
    let mut previous = super::Totals::default();
    for (at_ms, totals, in_flight) in &world.samples {
        if *at_ms == 0 {
            previous = *totals;
            continue;
        }
        let delta = |now: u64, before: u64| (now - before).to_string();
        table.row(&[
            fixed(*at_ms as f64 / 1000.0, 0),
            delta(totals.key_requests, previous.key_requests),
            delta(totals.direct_requests, previous.direct_requests),
            delta(totals.notary_queries, previous.notary_queries),
            delta(totals.notary_origin_fetches, previous.notary_origin_fetches),
            delta(totals.answers_ok, previous.answers_ok),
            delta(totals.answers_not_found, previous.answers_not_found),
            delta(totals.answers_status, previous.answers_status),
            delta(totals.answers_timeout, previous.answers_timeout),
            delta(totals.answers_refused, previous.answers_refused),
            delta(
                totals.requests_to_dead_domains,
                previous.requests_to_dead_domains,
            ),
            delta(totals.invalidations, previous.invalidations),
            delta(totals.revalidations, previous.revalidations),
            in_flight.to_string(),
        ]);
        previous = *totals;
    }
    let path = out_dir.join("timeseries.csv");
    table.write(&path).map_err(io_error(&path))
}

fn write_servers(world: &World, out_dir: &Path) -> Result<(), RunError> {
    let mut table = CsvTable::new(&[
        "server",
        "role",
        "name",
        "status",
        "key_requests_received",
        "known_domains",
        "requests_sent",
        "requests_per_s_mean",
        "requests_per_s_p99_1m",
        "analytic_n_over_l_per_s",
        "requests_to_dead_domains",
        "in_flight_peak",
        "coalesced",
        "blocked_by_backoff",
        "invalidations",
        "revalidations",
        "signatures_made",
    ]);
    let figures = observer_figures(world);
    for server in 0..world.roles.len() {
        let role = world.roles[server];
        let status = format!("{:?}", world.net.server_status(server as u32)).to_lowercase();
        let received = world.requests_received[server].to_string();
        let empty = String::new;
        let mut row = vec![server.to_string()];
        match role {
            super::Role::Origin => {
                let publisher = world.publishers[server].as_ref();
                row.extend([
                    "origin".into(),
                    publisher
                        .map(|p| p.server_name().to_owned())
                        .unwrap_or_default(),
                    status,
                    received,
                ]);
                row.extend((0..11).map(|_| empty()));
                row.push(
                    publisher
                        .map(|p| p.signatures_made.to_string())
                        .unwrap_or_default(),
                );
            }
            super::Role::Notary(index) => {
                let notary = &world.notaries[index as usize];
                row.extend([
                    "notary".into(),
                    notary.identity().server_name.clone(),
                    status,
                    received,
                ]);
                // known_domains is empty; requests_sent = the notary's fetches from origins.
                row.push(empty());
                row.push(notary.stats.origin_fetches.to_string());
                row.extend((0..10).map(|_| empty()));
            }
            super::Role::Observer(index) => {
                let observer = &world.observers[index as usize];
                let figure = &figures[index as usize];
                let stats = &observer.cache.stats;
                row.extend([
                    "observer".into(),
                    observer.name.clone(),
                    status,
                    received,
                    observer.known_domains.to_string(),
                    stats.requests().to_string(),
                    fixed(figure.mean_per_s, 6),
                    fixed(figure.p99_per_s, 6),
                    fixed(figure.analytic_per_s, 6),
                    observer.requests_to_dead_domains.to_string(),
                    stats.in_flight_peak.to_string(),
                    stats.coalesced.to_string(),
                    stats.blocked_by_backoff.to_string(),
                    stats.invalidations_total().to_string(),
                    stats.revalidations.to_string(),
                    String::new(),
                ]);
            }
        }
        table.row(&row);
    }
    let path = out_dir.join("servers.csv");
    table.write(&path).map_err(io_error(&path))
}

fn polling_load_chart(world: &World) -> PollingLoadChart {
    let figures = observer_figures(world);
    let mut series: Vec<Series> = Vec::new();
    let mut lifetimes: Vec<u64> = Vec::new();
    for (group_index, group) in world.scenario.observers.iter().enumerate() {
        let mut mean_points = Vec::new();
        let mut p99_points = Vec::new();
        for (observer, figure) in world.observers.iter().zip(&figures) {
            if observer.group != group_index {
                continue;
            }
            let lifetime_ms = observer
                .key_lifetime_ms
                .min(crate::matrix::server_keys::SEVEN_DAYS_MS as u64);
            if !lifetimes.contains(&lifetime_ms) {
                lifetimes.push(lifetime_ms);
            }
            let n = f64::from(observer.known_domains);
            mean_points.push((n, figure.mean_per_s));
            p99_points.push((n, figure.p99_per_s));
        }
        mean_points.sort_by(|a, b| a.0.total_cmp(&b.0));
        p99_points.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Policies that never poll have no positive point on a log scale.
        mean_points.retain(|(_, y)| *y > 0.0);
        series.push(Series {
            label: group.name.clone(),
            mean_points,
            p99_points,
        });
    }
    lifetimes.sort_unstable();
    PollingLoadChart {
        title: format!(
            "RQ1: key re-check load of one server ({} simulated, seed {}); dashed = p99 of 1-min windows",
            format_duration_ms(world.end_ms()),
            world.seed
        ),
        series,
        analytic: lifetimes
            .iter()
            .map(|lifetime_ms| {
                (
                    format!("analytic N/L, L={}", format_duration_ms(*lifetime_ms)),
                    *lifetime_ms as f64 / 1000.0,
                )
            })
            .collect(),
    }
}

/// Progress on stderr: a bar on a terminal, plain lines every few seconds otherwise.
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
    end_ms: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    pub(crate) fn new(show: bool, end_ms: u64) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (show && terminal).then(|| {
            let bar = indicatif::ProgressBar::new(end_ms / 1000);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} simulated s  {elapsed_precise} ({eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            bar,
            plain: show && !terminal,
            end_ms,
            started: Instant::now(),
            last_line: Instant::now(),
        }
    }

    pub(crate) fn update(&mut self, now_ms: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(now_ms / 1000);
        } else if self.plain && self.last_line.elapsed().as_secs_f64() >= 5.0 {
            self.last_line = Instant::now();
            eprintln!(
                "fedsim: simulated {:.1} h of {:.1} h ({:.0}%), {:.0} s wall",
                now_ms as f64 / 3_600_000.0,
                self.end_ms as f64 / 3_600_000.0,
                100.0 * now_ms as f64 / self.end_ms.max(1) as f64,
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    pub(crate) fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl World {
    /// The flat headline metrics summary.json would hold for the run so far.
    pub fn metrics(&self) -> Map<String, Value> {
        headline_metrics(self)
    }
}
