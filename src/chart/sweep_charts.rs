//! Charts of a sweep directory, from its `runs.csv` alone: for every headline metric, the mean
//! and 95% CI across seeds against the first swept parameter, one line per combination of the
//! other swept parameters (e.g. one per policy).

use super::line::{LineChart, Point, Series, XAxis, spans_decades};
use super::stats::MeanCi;
use std::path::{Path, PathBuf};

/// `runs.csv` read back: parameter columns sit between `run` and `seed`, metrics after `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepTable {
    pub param_paths: Vec<String>,
    pub metric_names: Vec<String>,
    pub rows: Vec<TableRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    pub params: Vec<String>,
    pub seed: u64,
    pub ok: bool,
    /// One cell per metric; `None` when empty or not a number.
    pub metrics: Vec<Option<f64>>,
}

/// Reads a `runs.csv` written by `fedsim sweep` or `fedsim merge`.
pub fn read_table(path: &Path) -> Result<SweepTable, String> {
    let name = path.display();
    let mut reader = csv::Reader::from_path(path).map_err(|error| format!("{name}: {error}"))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|error| format!("{name}: {error}"))?
        .iter()
        .map(str::to_string)
        .collect();
    let position = |column: &str| header.iter().position(|name| name == column);
    let (Some(0), Some(seed_at), Some(status_at)) =
        (position("run"), position("seed"), position("status"))
    else {
        return Err(format!(
            "{name}: header must start with run, the parameters, seed, status"
        ));
    };
    if status_at != seed_at + 1 {
        return Err(format!("{name}: header must have status right after seed"));
    }
    let mut rows = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let line = index + 2;
        let record = record.map_err(|error| format!("{name}: line {line}: {error}"))?;
        let seed = record[seed_at].parse::<u64>().map_err(|_| {
            format!(
                "{name}: line {line}: seed '{}' is not a number",
                &record[seed_at]
            )
        })?;
        rows.push(TableRow {
            params: (1..seed_at)
                .map(|column| record[column].to_string())
                .collect(),
            seed,
            ok: &record[status_at] == "ok",
            metrics: (status_at + 1..header.len())
                .map(|column| record.get(column).and_then(|cell| cell.parse::<f64>().ok()))
                .collect(),
        });
    }
    Ok(SweepTable {
        param_paths: header[1..seed_at].to_vec(),
        metric_names: header[status_at + 1..].to_vec(),
        rows,
    })
}

/// Values in first-appearance order (which is the sweep's `--param` order).
fn distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for value in values {
        if !seen.contains(&value) {
            seen.push(value);
        }
    }
    seen
}

/// One chart per metric that has at least one number, named by the metric.
pub fn charts_for(table: &SweepTable, title_prefix: &str) -> Vec<(String, LineChart)> {
    let ok_rows: Vec<&TableRow> = table.rows.iter().filter(|row| row.ok).collect();
    let seeds = distinct(ok_rows.iter().map(|row| row.seed.to_string())).len();
    // The x axis: the first swept parameter, or the seed when only seeds were swept.
    let x_of = |row: &TableRow| -> String {
        row.params
            .first()
            .cloned()
            .unwrap_or_else(|| row.seed.to_string())
    };
    let x_label = table
        .param_paths
        .first()
        .cloned()
        .unwrap_or_else(|| "seed".into());
    let x_values = distinct(ok_rows.iter().map(|row| x_of(row)));
    let numeric: Option<Vec<f64>> = x_values
        .iter()
        .map(|text| text.parse::<f64>().ok())
        .collect();
    let x_axis = match &numeric {
        Some(numbers) => {
            let min = numbers.iter().copied().fold(f64::INFINITY, f64::min);
            let max = numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            XAxis::Numeric {
                log: spans_decades(min, max),
            }
        }
        None => XAxis::Categories(x_values.clone()),
    };
    let position_of = |text: &str| -> f64 {
        let index = x_values
            .iter()
            .position(|value| value == text)
            .expect("x value seen");
        match &numeric {
            Some(numbers) => numbers[index],
            None => index as f64,
        }
    };
    let series_key = |row: &TableRow| -> String {
        let others: Vec<String> = table
            .param_paths
            .iter()
            .zip(&row.params)
            .skip(1)
            .map(|(path, value)| format!("{path}={value}"))
            .collect();
        others.join(", ")
    };
    let series_names = distinct(ok_rows.iter().map(|row| series_key(row)));

    let mut charts = Vec::new();
    for (metric_index, metric) in table.metric_names.iter().enumerate() {
        let mut series_list = Vec::new();
        // Runs whose cell is empty (null: a share never reached, a ratio with nothing to
        // divide): not a number to average, so left out, and the title says how many.
        let mut left_out = 0;
        for series_name in &series_names {
            let mut points = Vec::new();
            for x_value in &x_values {
                let cells: Vec<Option<f64>> = ok_rows
                    .iter()
                    .filter(|row| &series_key(row) == series_name && &x_of(row) == x_value)
                    .map(|row| row.metrics[metric_index])
                    .collect();
                let values: Vec<f64> = cells.iter().flatten().copied().collect();
                left_out += cells.len() - values.len();
                if let Some(summary) = MeanCi::of(&values) {
                    points.push(Point {
                        x: position_of(x_value),
                        summary,
                    });
                }
            }
            points.sort_by(|a, b| a.x.total_cmp(&b.x));
            if !points.is_empty() {
                series_list.push(Series {
                    name: series_name.clone(),
                    points,
                });
            }
        }
        if series_list.is_empty() {
            continue;
        }
        let mut interval = if table.param_paths.is_empty() {
            "one run per seed".to_string()
        } else {
            format!("mean ± 95% CI over {seeds} seeds")
        };
        if left_out > 0 {
            let runs = if left_out == 1 { "run" } else { "runs" };
            interval.push_str(&format!("; {left_out} {runs} without a value left out"));
        }
        charts.push((
            file_stem(metric),
            LineChart {
                title: format!("{title_prefix}{metric} by {x_label} ({interval})"),
                x_label: x_label.clone(),
                y_label: metric.clone(),
                x_axis: x_axis.clone(),
                series: series_list,
            },
        ));
    }
    charts
}

/// Which family a metric belongs to, and its member name: metrics that differ only in the
/// observer group are drawn together, one line per group (keyrq's key-RQ metrics):
/// `containment.<label>.<group>.<stat>` -> (`containment.<label>.<stat>`, group) and
/// `group.<group>.<stat>` -> (`group.<stat>`, group), and the per-size load metrics
/// `<group>.n<known domains>.<stat...>` -> (`n<known domains>.<stat...>`, group).
pub fn family_of(metric: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = metric.split('.').collect();
    match parts.as_slice() {
        ["containment", label, group, stat] => {
            Some((format!("containment.{label}.{stat}"), (*group).to_owned()))
        }
        ["group", group, stat] => Some((format!("group.{stat}"), (*group).to_owned())),
        [group, size, stat @ ..] if !stat.is_empty() && is_known_domains_size(size) => {
            Some((format!("{size}.{}", stat.join(".")), (*group).to_owned()))
        }
        _ => None,
    }
}

/// `n` followed by digits: the known-domain count in the key world's per-size metric names.
fn is_known_domains_size(part: &str) -> bool {
    part.strip_prefix('n')
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// One chart per metric family (see [`family_of`]) with a line per observer group (and per
/// combination of the other swept parameters). A run where the metric is `null` (e.g. a
/// containment time never reached) does not enter the mean; the title says so.
pub fn family_charts(table: &SweepTable, title_prefix: &str) -> Vec<(String, LineChart)> {
    let mut families: Vec<(String, Vec<(String, usize)>)> = Vec::new();
    for (index, metric) in table.metric_names.iter().enumerate() {
        let Some((family, member)) = family_of(metric) else {
            continue;
        };
        match families.iter_mut().find(|(name, _)| *name == family) {
            Some((_, members)) => members.push((member, index)),
            None => families.push((family, vec![(member, index)])),
        }
    }
    let mut charts = Vec::new();
    for (family, members) in families {
        if members.len() < 2 {
            continue;
        }
        let mut merged: Option<LineChart> = None;
        for (member, index) in members {
            let single = SweepTable {
                param_paths: table.param_paths.clone(),
                metric_names: vec![table.metric_names[index].clone()],
                rows: table
                    .rows
                    .iter()
                    .map(|row| TableRow {
                        params: row.params.clone(),
                        seed: row.seed,
                        ok: row.ok,
                        metrics: vec![row.metrics[index]],
                    })
                    .collect(),
            };
            let Some((_, mut chart)) = charts_for(&single, title_prefix).into_iter().next() else {
                continue;
            };
            let series = std::mem::take(&mut chart.series);
            let renamed = series.into_iter().map(|mut series| {
                series.name = if series.name.is_empty() {
                    member.clone()
                } else {
                    format!("{member}, {}", series.name)
                };
                series
            });
            match &mut merged {
                Some(existing) => existing.series.extend(renamed),
                None => {
                    chart.series.extend(renamed);
                    merged = Some(chart);
                }
            }
        }
        if let Some(mut chart) = merged {
            chart.title = format!("{title_prefix}{family} per observer group (null runs left out)");
            chart.y_label = family.clone();
            charts.push((file_stem(&format!("family.{family}")), chart));
        }
    }
    charts
}

fn file_stem(metric: &str) -> String {
    metric
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() || "._-".contains(character) {
                character
            } else {
                '_'
            }
        })
        .collect()
}

/// Whether `--metric filter` selects `metric`: the metric's name contains it, or the filter names a
/// family chart (`family.<family>`, the file stem [`family_charts`] writes) that the metric's
/// family name contains.
fn filter_matches(filter: &str, metric: &str) -> bool {
    metric.contains(filter)
        || filter.strip_prefix("family.").is_some_and(|wanted| {
            family_of(metric).is_some_and(|(family, _)| family.contains(wanted))
        })
}

/// Draws the charts of the sweep in `sweep_dir` into `chart_dir` (SVG and PNG per metric): every
/// metric, or those whose name (or family chart, `family.<family>`) contains one of
/// `metric_filters`.
pub fn plot_sweep_dir(
    sweep_dir: &Path,
    chart_dir: &Path,
    metric_filters: &[String],
) -> Result<Vec<PathBuf>, String> {
    let mut table = read_table(&sweep_dir.join(crate::sweep::store::TABLE_FILE))?;
    for filter in metric_filters {
        if !table
            .metric_names
            .iter()
            .any(|name| filter_matches(filter, name))
        {
            return Err(format!(
                "--metric {filter}: no metric in runs.csv contains it"
            ));
        }
    }
    if !metric_filters.is_empty() {
        let keep: Vec<bool> = table
            .metric_names
            .iter()
            .map(|name| {
                metric_filters
                    .iter()
                    .any(|filter| filter_matches(filter, name))
            })
            .collect();
        let retain = |cells: &mut Vec<Option<f64>>| {
            let mut position = 0;
            cells.retain(|_| {
                position += 1;
                keep[position - 1]
            });
        };
        for row in &mut table.rows {
            retain(&mut row.metrics);
        }
        let mut position = 0;
        table.metric_names.retain(|_| {
            position += 1;
            keep[position - 1]
        });
    }
    let prefix = sweep_dir
        .file_name()
        .map(|name| format!("{}: ", name.to_string_lossy()))
        .unwrap_or_default();
    let mut charts = charts_for(&table, &prefix);
    charts.extend(family_charts(&table, &prefix));
    if charts.is_empty() {
        return Err(format!(
            "{}: no complete run with a numeric metric to plot",
            sweep_dir.join(crate::sweep::store::TABLE_FILE).display()
        ));
    }
    std::fs::create_dir_all(chart_dir)
        .map_err(|error| format!("{}: cannot create: {error}", chart_dir.display()))?;
    let mut written = Vec::new();
    for (stem, chart) in charts {
        written.extend(chart.write(&chart_dir.join(stem))?);
    }
    // Key-world sweeps: containment CDFs pooled over seeds, from the runs' containment.csv.
    let wants_cdfs = metric_filters.is_empty()
        || metric_filters
            .iter()
            .any(|filter| filter.contains("containment") || filter.contains("cdf"));
    if wants_cdfs {
        let cdfs = super::containment_cdf::pooled_cdf_charts(sweep_dir, &table, &prefix)?;
        written.extend(super::containment_cdf::write_all(&cdfs, chart_dir)?);
    }
    // Room-world RQ4 sweeps: bitrot pooled over the runs' bitrot.csv (one line pair per policy).
    if metric_filters.is_empty() || metric_filters.iter().any(|f| f.contains("bitrot")) {
        written.extend(super::bitrot::plot_sweep_bitrot(
            sweep_dir, chart_dir, &prefix,
        )?);
    }
    Ok(written)
}

#[cfg(test)]
mod family_tests {
    use super::*;

    #[test]
    fn metrics_that_differ_only_in_the_group_form_one_chart() {
        assert_eq!(
            family_of("containment.rot.p1.t50_s"),
            Some(("containment.rot.t50_s".into(), "p1".into()))
        );
        assert_eq!(
            family_of("p1.n10.fetches_per_h.periodic"),
            Some(("n10.fetches_per_h.periodic".into(), "p1".into()))
        );
        assert_eq!(family_of("p1.nodes.wakeups_per_h"), None);
        assert_eq!(family_of("p1.n10"), None);
        assert!(filter_matches("family.n10.wakeups", "p1.n10.wakeups_per_h"));
        assert!(!filter_matches(
            "family.n10.wakeups",
            "p1.n100.wakeups_per_h"
        ));
        assert!(filter_matches("wakeups", "p1.n100.wakeups_per_h"));
        let row = |lifetime: &str, seed, a, b| TableRow {
            params: vec![lifetime.into()],
            seed,
            ok: true,
            metrics: vec![Some(a), b],
        };
        let table = SweepTable {
            param_paths: vec!["key_lifetime".into()],
            metric_names: vec![
                "group.p1.false_invalid_domain_hours".into(),
                "group.p2.false_invalid_domain_hours".into(),
            ],
            rows: vec![
                row("1", 1, 0.0, Some(5.0)),
                row("1", 2, 0.0, Some(7.0)),
                row("7", 1, 0.0, None),
            ],
        };
        let charts = family_charts(&table, "");
        assert_eq!(charts.len(), 1);
        let (stem, chart) = &charts[0];
        assert_eq!(stem, "family.group.false_invalid_domain_hours");
        let names: Vec<&str> = chart.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["p1", "p2"]);
        // p2 at x = 7 has no number: only x = 1 (mean of 5 and 7).
        assert_eq!(chart.series[1].points.len(), 1);
        assert_eq!(chart.series[1].points[0].summary.mean, 6.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `text` as a runs.csv; `label` keeps parallel tests out of each other's folder.
    fn table(label: &str, text: &str) -> SweepTable {
        let process = std::process::id();
        let dir = std::env::temp_dir().join(format!("fedsim-chart-table-{process}-{label}"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("runs.csv");
        std::fs::write(&path, text).unwrap();
        let table = read_table(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        table
    }

    #[test]
    fn one_chart_per_metric_one_series_per_other_parameter() {
        let csv = "run,rate,policy,seed,status,latency_ms,requests\n\
                   a,1,never,1,ok,10,100\n\
                   b,1,never,2,ok,12,\n\
                   c,1,always,1,ok,20,300\n\
                   d,10,never,1,ok,30,1000\n\
                   e,10,always,1,failed,,\n";
        let charts = charts_for(&table("series", csv), "");
        assert_eq!(charts.len(), 2);
        let (stem, latency) = &charts[0];
        assert_eq!(stem, "latency_ms");
        assert_eq!(latency.x_axis, XAxis::Numeric { log: false });
        assert_eq!(latency.series.len(), 2);
        assert_eq!(latency.series[0].name, "policy=never");
        let never = &latency.series[0].points;
        assert_eq!(
            (never[0].x, never[0].summary.mean, never[0].summary.count),
            (1.0, 11.0, 2)
        );
        assert_eq!((never[1].x, never[1].summary.mean), (10.0, 30.0));
        // The failed run contributes nothing: 'always' has a point at rate 1 only.
        assert_eq!(latency.series[1].points.len(), 1);
        assert!(latency.title.contains("latency_ms by rate"));
        assert!(!latency.title.contains("left out"), "{}", latency.title);
        // Seed 2's empty `requests` cell (null) is not averaged, and the title says so.
        let (_, requests) = &charts[1];
        assert_eq!(requests.series[0].points[0].summary.count, 1);
        assert!(
            requests
                .title
                .ends_with("; 1 run without a value left out)"),
            "{}",
            requests.title
        );
    }

    #[test]
    fn text_parameters_become_categories() {
        let csv = "run,policy,seed,status,m\na,never,1,ok,1\nb,expiry,1,ok,2\n";
        let charts = charts_for(&table("categories", csv), "");
        assert_eq!(
            charts[0].1.x_axis,
            XAxis::Categories(vec!["never".into(), "expiry".into()])
        );
        assert_eq!(charts[0].1.series[0].points[1].x, 1.0);
    }
}
