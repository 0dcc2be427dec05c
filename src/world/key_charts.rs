//! The per-question charts of the key world: RQ2 containment CDFs, RQ6 honest link-hours lost
//! against partition length, RQ12 wake-ups against known domains with the budget line.

use std::path::{Path, PathBuf};

use crate::chart::ChartError;
use crate::chart::xy::{XyChart, XyLine, cdf_points};
use crate::engine::time::format_duration_ms;
use crate::scenario::ActionKind;

use super::World;
use super::key_rq::{containment_samples, false_invalid_ms};

const HOUR_MS: f64 = 3_600_000.0;

/// The chart files written, for the caller to report.
pub type Written = Vec<PathBuf>;

fn write(chart: &XyChart, out_dir: &Path, stem: &str) -> Result<Written, ChartError> {
    let svg = out_dir.join(format!("{stem}.svg"));
    let png = out_dir.join(format!("{stem}.png"));
    chart.write(&svg, &png)?;
    Ok(vec![svg, png])
}

fn lifetimes(world: &World) -> String {
    let mut lifetimes: Vec<u64> = world
        .scenario
        .federation
        .domain_groups
        .iter()
        .map(|group| group.key_lifetime.ms())
        .collect();
    lifetimes.sort_unstable();
    lifetimes.dedup();
    lifetimes
        .iter()
        .map(|ms| format_duration_ms(*ms))
        .collect::<Vec<_>>()
        .join("/")
}

/// RQ2 (and RQ3, RQ11): one CDF chart per watched action label.
pub fn containment_charts(world: &World, out_dir: &Path) -> Result<Written, ChartError> {
    let samples = containment_samples(world);
    let mut labels: Vec<&str> = Vec::new();
    for sample in &samples {
        if !labels.contains(&sample.label.as_str()) {
            labels.push(&sample.label);
        }
    }
    let floor_h = 1.0 / 3600.0;
    let to_hours = |values: &[Option<u64>]| -> Vec<Option<f64>> {
        values
            .iter()
            .map(|value| value.map(|ms| ms as f64 / HOUR_MS))
            .collect()
    };
    let mut written = Vec::new();
    for label in labels {
        let mut lines = Vec::new();
        let mut kind = "";
        let mut domains = 0;
        for sample in samples.iter().filter(|sample| sample.label == label) {
            kind = sample.kind;
            domains = domains.max(sample.domains.len());
            let group = &world.scenario.observers[sample.group].name;
            let colour = sample.group;
            let never = |values: &[Option<u64>]| {
                100.0 * values.iter().filter(|value| value.is_none()).count() as f64
                    / values.len().max(1) as f64
            };
            lines.push(XyLine {
                label: format!(
                    "{group} (never within run: {:.0}%)",
                    never(&sample.dropped_after_ms)
                ),
                points: cdf_points(&to_hours(&sample.dropped_after_ms), floor_h),
                step: true,
                dashed: false,
                colour,
            });
            if sample.pinned_dropped_after_ms != sample.dropped_after_ms {
                lines.push(XyLine {
                    label: format!(
                        "{group}, attacker pins origin_server_ts before t0 (never: {:.0}%)",
                        never(&sample.pinned_dropped_after_ms)
                    ),
                    points: cdf_points(&to_hours(&sample.pinned_dropped_after_ms), floor_h),
                    step: true,
                    dashed: true,
                    colour,
                });
            }
        }
        // Carry every CDF to the right edge so plateaus (and "never" lines at 0 %) show.
        let right_h = lines
            .iter()
            .flat_map(|line| line.points.iter().map(|point| point.0))
            .fold(world.end_ms() as f64 / HOUR_MS / 10.0, f64::max);
        for line in &mut lines {
            if let Some(&(x, y)) = line.points.last()
                && x < right_h
            {
                line.points.push((right_h, y));
            }
        }
        let chart = XyChart {
            title: format!(
                "Key containment: {label} ({kind} of {domains} domains at t0; L={}; seed {})",
                lifetimes(world),
                world.seed
            ),
            x_label: "time after t0 (hours, log; 1 s floor)".into(),
            y_label: "observer x domain pairs no longer accepting the key (%)".into(),
            x_log: true,
            y_log: false,
            lines,
            reference_lines: Vec::new(),
            y_range: Some((0.0, 102.0)),
        };
        written.extend(write(&chart, out_dir, &format!("containment-{label}"))?);
    }
    Ok(written)
}

/// The total scripted partition time (ms) of an observer group: partitions with a duration
/// whose side a or b names the whole group.
fn partition_ms_of(world: &World, group: &str) -> u64 {
    world
        .scenario
        .phases
        .iter()
        .flat_map(|phase| phase.actions.iter())
        .filter(|action| action.kind == ActionKind::Partition)
        .filter(|action| {
            [&action.a, &action.b].iter().any(|side| {
                side.as_ref()
                    .is_some_and(|selector| selector.group == group)
            })
        })
        .filter_map(|action| action.duration.map(|duration| duration.ms()))
        .sum()
}

/// The series an observer group belongs to: its name up to the first comma
/// ("P2 fail-closed, cut 6h" -> "P2 fail-closed").
fn series_name(group: &str) -> &str {
    group.split(',').next().unwrap_or(group).trim()
}

/// RQ6: false-invalid hours per known domain against the group's partition length.
pub fn link_hours_chart(world: &World, out_dir: &Path) -> Result<Written, ChartError> {
    let mut lines: Vec<XyLine> = Vec::new();
    for (group_index, group) in world.scenario.observers.iter().enumerate() {
        let partition_h = partition_ms_of(world, &group.name) as f64 / HOUR_MS;
        let (mut lost_ms, mut domains) = (0u64, 0u64);
        for (index, state) in world.observers.iter().enumerate() {
            if state.group == group_index {
                lost_ms += false_invalid_ms(world, index).0;
                domains += u64::from(state.known_domains);
            }
        }
        if partition_h <= 0.0 || domains == 0 {
            continue;
        }
        let y = lost_ms as f64 / HOUR_MS / domains as f64;
        let name = series_name(&group.name);
        match lines.iter_mut().find(|line| line.label == name) {
            Some(line) => line.points.push((partition_h, y)),
            None => {
                let colour = lines.len();
                lines.push(XyLine {
                    label: name.to_owned(),
                    points: vec![(partition_h, y)],
                    step: false,
                    dashed: false,
                    colour,
                });
            }
        }
    }
    for line in &mut lines {
        line.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    // A reference diagonal: losing exactly the partition's length.
    let xs: Vec<f64> = lines
        .iter()
        .flat_map(|line| line.points.iter().map(|point| point.0))
        .collect();
    if let (Some(min), Some(max)) = (
        xs.iter().copied().reduce(f64::min),
        xs.iter().copied().reduce(f64::max),
    ) {
        let colour = lines.len() + 5;
        lines.push(XyLine {
            label: "lost = partition length".into(),
            // y = x is a curve on a log x axis: sample it.
            points: (0..=40)
                .map(|step| {
                    let x = min * (max / min).powf(f64::from(step) / 40.0);
                    (x, x)
                })
                .collect(),
            step: false,
            dashed: true,
            colour,
        });
    }
    let chart = XyChart {
        title: format!(
            "RQ6: honest link-hours lost per domain vs partition length (L={}; seed {})",
            lifetimes(world),
            world.seed
        ),
        x_label: "partition length between observer and origins (hours, log)".into(),
        y_label: "hours a live, honest domain's key was held invalid (h per domain)".into(),
        x_log: true,
        y_log: false,
        lines,
        reference_lines: Vec::new(),
        y_range: None,
    };
    write(&chart, out_dir, "link-hours-lost")
}

/// RQ12: wake-ups per hour against known domains, one line per group, with the budget.
pub fn wakeups_chart(world: &World, out_dir: &Path) -> Result<Written, ChartError> {
    let hours = world.end_ms() as f64 / HOUR_MS;
    let mut lines = Vec::new();
    for (group_index, group) in world.scenario.observers.iter().enumerate() {
        let mut points: Vec<(f64, f64)> = world
            .observers
            .iter()
            .filter(|state| state.group == group_index)
            .map(|state| (f64::from(state.known_domains), state.wakeups as f64 / hours))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let zero = points.iter().all(|point| point.1 <= 0.0);
        lines.push(XyLine {
            label: if zero {
                format!("{} (0 wake-ups: not drawn on the log axis)", group.name)
            } else {
                group.name.clone()
            },
            points,
            step: false,
            dashed: false,
            colour: group_index,
        });
    }
    // The analytic N/L lines (one wake-up per re-check) for each key lifetime known.
    let xs: Vec<f64> = lines
        .iter()
        .flat_map(|line| line.points.iter().map(|point| point.0))
        .collect();
    let mut lifetimes_ms: Vec<u64> = world
        .observers
        .iter()
        .map(|state| state.key_lifetime_ms.min(7 * 86_400_000))
        .collect();
    lifetimes_ms.sort_unstable();
    lifetimes_ms.dedup();
    if let (Some(min), Some(max)) = (
        xs.iter().copied().reduce(f64::min),
        xs.iter().copied().reduce(f64::max),
    ) {
        for (index, lifetime_ms) in lifetimes_ms.iter().enumerate() {
            let per_hour = |n: f64| n * HOUR_MS / *lifetime_ms as f64;
            lines.push(XyLine {
                label: format!("analytic N/L, L={}", format_duration_ms(*lifetime_ms)),
                points: vec![(min, per_hour(min)), (max, per_hour(max))],
                step: false,
                dashed: true,
                colour: 6 + index,
            });
        }
    }
    let budget = world.scenario.metrics.wakeup_budget_per_hour;
    let chart = XyChart {
        title: format!(
            "RQ12: key-check wake-ups of one host vs known domains ({} simulated, seed {})",
            format_duration_ms(world.end_ms()),
            world.seed
        ),
        x_label: "known remote domains N".into(),
        y_label: "wake-ups per hour (distinct seconds with a timer or push)".into(),
        x_log: true,
        y_log: true,
        lines,
        reference_lines: budget
            .map(|budget| (format!("budget: {budget} wake-ups/h"), budget))
            .into_iter()
            .collect(),
        y_range: None,
    };
    write(&chart, out_dir, "wakeups")
}
