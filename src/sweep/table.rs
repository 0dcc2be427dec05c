//! `runs.csv`: the tidy table of a sweep, one row per run.
//!
//! Columns, in this order: `run` (the run folder name under `runs/`), one column per swept
//! parameter (named by its path, in `--param` order), `seed`, `status` (`ok`, `failed` or
//! `missing`), then every headline metric found in any run's `summary.json`, sorted by name.
//! Rows follow the sweep order. The table is a pure function of the spec and the run folders, so
//! a sweep written on one machine, resumed after a kill, or merged from shards gives the same bytes.

use super::spec::RunSpec;
use super::store::RunState;
use std::collections::BTreeSet;

/// The text of `status` for a run state.
pub fn status_text(state: &RunState) -> &'static str {
    match state {
        RunState::Complete(_) => "ok",
        RunState::Failed(_) => "failed",
        RunState::Missing => "missing",
    }
}

/// Renders one metric value as a CSV cell. Numbers keep the exact text serde_json gives them
/// (shortest round-trip form), so reading and rewriting a summary never changes a cell.
fn metric_cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Builds `runs.csv` for `runs` (in the order given) with the given states and parameter paths.
pub fn render_table(param_paths: &[String], rows: &[(RunSpec, RunState)]) -> Vec<u8> {
    let mut metric_names: BTreeSet<&str> = BTreeSet::new();
    for (_, state) in rows {
        if let RunState::Complete(metrics) = state {
            metric_names.extend(metrics.keys().map(String::as_str));
        }
    }
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let mut header: Vec<&str> = vec!["run"];
    header.extend(param_paths.iter().map(String::as_str));
    header.extend(["seed", "status"]);
    header.extend(metric_names.iter().copied());
    writer.write_record(&header).expect("writing to memory");
    for (run, state) in rows {
        let mut record: Vec<String> = vec![run.name.clone()];
        record.extend(run.params.iter().map(|(_, value)| value.clone()));
        record.push(run.seed.to_string());
        record.push(status_text(state).to_string());
        for name in &metric_names {
            let cell = match state {
                RunState::Complete(metrics) => metrics.get(*name).map(metric_cell),
                _ => None,
            };
            record.push(cell.unwrap_or_default());
        }
        writer.write_record(&record).expect("writing to memory");
    }
    writer.into_inner().expect("flushing to memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(value: &str, seed: u64) -> RunSpec {
        let params = vec![("p".to_string(), value.to_string())];
        RunSpec {
            position: 0,
            name: super::super::spec::run_name(&params, seed),
            params,
            seed,
        }
    }

    fn metrics(value: serde_json::Value) -> RunState {
        RunState::Complete(value.as_object().unwrap().clone())
    }

    #[test]
    fn columns_are_stable_and_missing_cells_empty() {
        let rows = vec![
            (run("a", 1), metrics(json!({"zeta": 1, "alpha": 0.5}))),
            (run("a,b", 2), RunState::Failed("boom".into())),
            (run("b", 1), metrics(json!({"beta": 3e-7, "alpha": null}))),
        ];
        let text = String::from_utf8(render_table(&["p".into()], &rows)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "run,p,seed,status,alpha,beta,zeta");
        assert_eq!(lines[1], "p=a_seed=1,a,1,ok,0.5,,1");
        assert!(lines[2].ends_with(",\"a,b\",2,failed,,,"), "{}", lines[2]);
        assert_eq!(lines[3], "p=b_seed=1,b,1,ok,,3e-7,");
        assert!(text.ends_with('\n') && !text.contains('\r'));
    }
}
