//! Containment-time CDFs of a sweep, pooled over seeds: for each watched action label and each
//! value of the first swept parameter, one chart with a step line per observer group, from the
//! runs' `containment.csv` files (written by the key world). `fedsim plot DIR` draws them.

use std::path::{Path, PathBuf};

use super::sweep_charts::SweepTable;
use super::xy::{XyChart, XyLine, cdf_points};

/// One chart: (file stem, chart).
pub type NamedChart = (String, XyChart);

struct Pool {
    label: String,
    x_value: String,
    /// (group, drop times in hours; `None` = never within the run), in first-seen order.
    groups: Vec<(String, Vec<Option<f64>>)>,
    runs: usize,
}

/// The pooled CDF charts of the sweep in `sweep_dir` whose table is `table` (rows of failed
/// runs and runs without `containment.csv` are skipped). Empty when no run has one.
pub fn pooled_cdf_charts(
    sweep_dir: &Path,
    table: &SweepTable,
    title_prefix: &str,
) -> Result<Vec<NamedChart>, String> {
    let param = table
        .param_paths
        .first()
        .cloned()
        .unwrap_or_else(|| "all runs".into());
    let mut run_names = Vec::new();
    let csv_path = sweep_dir.join(crate::sweep::store::TABLE_FILE);
    let mut reader = csv::Reader::from_path(&csv_path)
        .map_err(|error| format!("{}: {error}", csv_path.display()))?;
    for record in reader.records() {
        let record = record.map_err(|error| format!("{}: {error}", csv_path.display()))?;
        run_names.push(record[0].to_string());
    }
    let mut pools: Vec<Pool> = Vec::new();
    for (row, run) in table.rows.iter().zip(&run_names) {
        if !row.ok {
            continue;
        }
        let path = sweep_dir
            .join(crate::sweep::store::RUNS_DIR)
            .join(run)
            .join("containment.csv");
        if !path.is_file() {
            continue;
        }
        let x_value = row.params.first().cloned().unwrap_or_else(|| "all".into());
        let mut reader = csv::Reader::from_path(&path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        let header = reader
            .headers()
            .map_err(|error| format!("{}: {error}", path.display()))?
            .clone();
        let column = |name: &str| {
            header
                .iter()
                .position(|cell| cell == name)
                .ok_or_else(|| format!("{}: no column {name}", path.display()))
        };
        let (label_at, group_at, dropped_at) = (
            column("label")?,
            column("group")?,
            column("dropped_after_s")?,
        );
        let mut seen_labels: Vec<String> = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|error| format!("{}: {error}", path.display()))?;
            let label = record[label_at].to_string();
            let group = record[group_at].to_string();
            let dropped = record[dropped_at].parse::<f64>().ok().map(|s| s / 3600.0);
            let index = match pools
                .iter()
                .position(|pool| pool.label == label && pool.x_value == x_value)
            {
                Some(index) => index,
                None => {
                    pools.push(Pool {
                        label: label.clone(),
                        x_value: x_value.clone(),
                        groups: Vec::new(),
                        runs: 0,
                    });
                    pools.len() - 1
                }
            };
            let pool = &mut pools[index];
            if !seen_labels.contains(&label) {
                seen_labels.push(label.clone());
                pool.runs += 1;
            }
            match pool.groups.iter_mut().find(|(name, _)| *name == group) {
                Some((_, values)) => values.push(dropped),
                None => pool.groups.push((group, vec![dropped])),
            }
        }
    }
    let floor_h = 1.0 / 3600.0;
    let mut charts = Vec::new();
    for pool in pools {
        let right_h = pool
            .groups
            .iter()
            .flat_map(|(_, values)| values.iter().flatten())
            .copied()
            .fold(1.0, f64::max);
        let lines = pool
            .groups
            .iter()
            .enumerate()
            .map(|(colour, (group, values))| {
                let never = values.iter().filter(|value| value.is_none()).count();
                let mut points = cdf_points(values, floor_h);
                if let Some(&(x, y)) = points.last()
                    && x < right_h
                {
                    points.push((right_h, y));
                }
                XyLine {
                    label: format!(
                        "{group} ({} pairs, never within run: {:.0}%)",
                        values.len(),
                        100.0 * never as f64 / values.len().max(1) as f64
                    ),
                    points,
                    step: true,
                    dashed: false,
                    colour,
                }
            })
            .collect();
        let stem: String = format!("cdf.{}.{param}={}", pool.label, pool.x_value)
            .chars()
            .map(|character| {
                if character.is_ascii_alphanumeric() || "._=-".contains(character) {
                    character
                } else {
                    '_'
                }
            })
            .collect();
        charts.push((
            stem,
            XyChart {
                title: format!(
                    "{title_prefix}{} at {param}={}: observers dropping the key ({} runs pooled)",
                    pool.label, pool.x_value, pool.runs
                ),
                x_label: "time after t0 (hours, log; 1 s floor)".into(),
                y_label: "observer x domain pairs no longer accepting the key (%)".into(),
                x_log: true,
                y_log: false,
                lines,
                reference_lines: Vec::new(),
                y_range: Some((0.0, 102.0)),
            },
        ));
    }
    Ok(charts)
}

/// Writes the charts into `chart_dir` (SVG and PNG each); returns the paths.
pub fn write_all(charts: &[NamedChart], chart_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    for (stem, chart) in charts {
        let svg = chart_dir.join(format!("{stem}.svg"));
        let png = chart_dir.join(format!("{stem}.png"));
        chart.write(&svg, &png).map_err(|error| error.to_string())?;
        written.push(svg);
        written.push(png);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_pooled_per_swept_value_with_a_line_per_group() {
        let directory = std::env::temp_dir().join(format!("fedsim-cdf-{}", std::process::id()));
        let header = "label,kind,t0_s,domain,observer,group,policy,dropped_after_s,pinned_dropped_after_s,new_key_after_s,detected_at_s\n";
        let runs = [
            ("l=1h_seed=1", "1h"),
            ("l=1h_seed=2", "1h"),
            ("l=1d_seed=1", "1d"),
        ];
        let mut table = String::from("run,l,seed,status,x\n");
        for (index, (run, value)) in runs.iter().enumerate() {
            table.push_str(&format!("{run},{value},{},ok,1\n", index + 1));
            let folder = directory.join("runs").join(run);
            std::fs::create_dir_all(&folder).unwrap();
            let rows = format!(
                "{header}rot,rotate-key,0,a,o1,P1,P1,3600,3600,3600,\nrot,rotate-key,0,a,o2,P4,P4,,,,\n"
            );
            std::fs::write(folder.join("containment.csv"), rows).unwrap();
        }
        std::fs::write(directory.join("runs.csv"), &table).unwrap();
        let parsed = super::super::sweep_charts::read_table(&directory.join("runs.csv")).unwrap();
        let charts = pooled_cdf_charts(&directory, &parsed, "").unwrap();
        let stems: Vec<&str> = charts.iter().map(|(stem, _)| stem.as_str()).collect();
        assert_eq!(stems, ["cdf.rot.l=1h", "cdf.rot.l=1d"]);
        let lines = &charts[0].1.lines;
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0]
                .label
                .starts_with("P1 (2 pairs, never within run: 0%)")
        );
        assert!(lines[1].label.contains("never within run: 100%"));
        assert!(charts[0].1.title.contains("2 runs pooled"));
        // P1 reaches 100 % at 1 h.
        assert!(lines[0].points.contains(&(1.0, 100.0)));
        std::fs::remove_dir_all(directory).unwrap();
    }
}
