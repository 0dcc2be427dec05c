//! RQ4's bitrot chart: the share of a room's history a newcomer can verify (member links) and
//! shows (messages), against the room's age when it joined, one pair of lines per policy, means
//! with 95% confidence intervals over the newcomers of that age (several rooms and seeds).
//! Drawn from `bitrot.csv` files: one run's (`fedsim run`) or every run of a sweep over
//! `rooms.policy` (`fedsim plot DIR`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::line::{LineChart, Point, Series, XAxis};
use super::stats::MeanCi;

/// The columns of `bitrot.csv`, in order.
pub const BITROT_COLUMNS: [&str; 16] = [
    "room",
    "newcomer",
    "policy",
    "room_age_s",
    "joined_at_s",
    "measured_at_s",
    "links",
    "links_verifiable",
    "messages",
    "messages_held",
    "messages_visible",
    "messages_sender_verified",
    "messages_hidden",
    "links_verifiable_share",
    "messages_visible_share",
    "messages_sender_verified_share",
];

/// One newcomer row of `bitrot.csv`, as the chart reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct BitrotPoint {
    pub policy: String,
    pub room_age_days: f64,
    /// Shares in [0, 1]; `None` when there was nothing to share (no history).
    pub links_verifiable_share: Option<f64>,
    pub messages_visible_share: Option<f64>,
}

/// Reads the rows of one `bitrot.csv`.
pub fn read_bitrot_csv(path: &Path) -> Result<Vec<BitrotPoint>, String> {
    let name = path.display();
    let mut reader = csv::Reader::from_path(path).map_err(|error| format!("{name}: {error}"))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|error| format!("{name}: {error}"))?
        .iter()
        .map(str::to_owned)
        .collect();
    let column = |wanted: &str| {
        header
            .iter()
            .position(|name| name == wanted)
            .ok_or_else(|| format!("{name}: no column {wanted}"))
    };
    let (policy, age, links, visible) = (
        column("policy")?,
        column("room_age_s")?,
        column("links_verifiable_share")?,
        column("messages_visible_share")?,
    );
    let mut points = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(|error| format!("{name}: line {}: {error}", index + 2))?;
        let age_s: f64 = record[age]
            .parse()
            .map_err(|_| format!("{name}: line {}: room_age_s is not a number", index + 2))?;
        points.push(BitrotPoint {
            policy: record[policy].to_owned(),
            room_age_days: age_s / 86_400.0,
            links_verifiable_share: record[links].parse().ok(),
            messages_visible_share: record[visible].parse().ok(),
        });
    }
    Ok(points)
}

/// The chart: per policy (in first-appearance order), "links verifiable" and "messages
/// visible" in percent against the room age in days; newcomers of the same policy and age
/// (to 0.01 day) are pooled into a mean with its 95% CI.
pub fn bitrot_chart(points: &[BitrotPoint], title: &str) -> LineChart {
    let mut policies: Vec<&str> = Vec::new();
    for point in points {
        if !policies.contains(&point.policy.as_str()) {
            policies.push(&point.policy);
        }
    }
    let mut series = Vec::new();
    for policy in policies {
        for (label, pick) in [
            (
                "member links verifiable",
                (|p: &BitrotPoint| p.links_verifiable_share) as fn(&BitrotPoint) -> Option<f64>,
            ),
            ("messages visible", |p: &BitrotPoint| {
                p.messages_visible_share
            }),
        ] {
            // Age in hundredths of a day -> the samples at that age.
            let mut by_age: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
            for point in points.iter().filter(|point| point.policy == policy) {
                if let Some(share) = pick(point) {
                    let age = (point.room_age_days * 100.0).round() as i64;
                    by_age.entry(age).or_default().push(share * 100.0);
                }
            }
            let line: Vec<Point> = by_age
                .into_iter()
                .filter_map(|(age, values)| {
                    MeanCi::of(&values).map(|summary| Point {
                        x: age as f64 / 100.0,
                        summary,
                    })
                })
                .collect();
            if !line.is_empty() {
                series.push(Series {
                    name: format!("{policy}: {label}"),
                    points: line,
                });
            }
        }
    }
    LineChart {
        title: title.to_owned(),
        x_label: "room age when the newcomer joins (days)".to_owned(),
        y_label: "share of the history before the join (%)".to_owned(),
        x_axis: XAxis::Numeric { log: false },
        series,
    }
}

/// The `bitrot.csv` of every run under `sweep_dir/runs/` (sorted by run name), pooled into one
/// chart `chart_dir/bitrot.{svg,png}`; nothing when no run wrote one.
pub fn plot_sweep_bitrot(
    sweep_dir: &Path,
    chart_dir: &Path,
    title_prefix: &str,
) -> Result<Vec<PathBuf>, String> {
    let runs_dir = sweep_dir.join(crate::sweep::store::RUNS_DIR);
    let Ok(entries) = std::fs::read_dir(&runs_dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bitrot.csv"))
        .filter(|path| path.is_file())
        .filter(|path| {
            !path.parent().and_then(Path::file_name).is_some_and(|name| {
                name.to_string_lossy()
                    .starts_with(crate::sweep::store::PARTIAL_PREFIX)
            })
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let mut points = Vec::new();
    for file in &files {
        points.extend(read_bitrot_csv(file)?);
    }
    let chart = bitrot_chart(
        &points,
        &format!("{title_prefix}RQ4 bitrot: what a newcomer can verify and see"),
    );
    std::fs::create_dir_all(chart_dir)
        .map_err(|error| format!("{}: cannot create: {error}", chart_dir.display()))?;
    chart.write(&chart_dir.join("bitrot"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(policy: &str, days: f64, links: f64, visible: f64) -> BitrotPoint {
        BitrotPoint {
            policy: policy.to_owned(),
            room_age_days: days,
            links_verifiable_share: Some(links),
            messages_visible_share: Some(visible),
        }
    }

    #[test]
    fn newcomers_of_one_policy_and_age_are_pooled() {
        let points = vec![
            point("P1", 7.0, 0.5, 0.25),
            point("P1", 7.0, 1.0, 0.75),
            point("P1", 30.0, 0.0, 0.0),
            point("P5", 7.0, 0.5, 1.0),
        ];
        let chart = bitrot_chart(&points, "t");
        let names: Vec<&str> = chart.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "P1: member links verifiable",
                "P1: messages visible",
                "P5: member links verifiable",
                "P5: messages visible"
            ]
        );
        let links = &chart.series[0].points;
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].x, 7.0);
        assert!((links[0].summary.mean - 75.0).abs() < 1e-9);
        assert_eq!(links[0].summary.count, 2);
        assert!((chart.series[1].points[0].summary.mean - 50.0).abs() < 1e-9);
        assert_eq!(chart.series[3].points[0].summary.mean, 100.0);
    }
}
