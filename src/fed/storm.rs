//! RQ7, the re-query storm: what arrives at a rotating origin after its rotation. The origins
//! are the servers a `rotate-key` action names; from the first such action on, every
//! `/event/{id}` re-query and every key request arriving at one of them is counted per second
//! of simulated time. `storm.csv` is that series (seconds after the first rotation with any
//! request) and `summary.json` gets the storm's size, peak rate, bytes, completion time and the
//! share of re-queries that did not end with an answer (links the observer could not re-verify
//! because the origin was slow or offline).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value};

use crate::chart::xy::{XyChart, XyLine};
use crate::metrics::{CsvTable, rounded};
use crate::net::ServerId;
use crate::scenario::{ChartKind, RoomActionKind, Rooms};
use crate::world::RunError;

use super::{FedWorld, Purpose};

/// Requests arriving at the rotating origins, per second after the first rotation.
#[derive(Debug, Clone, Default)]
pub struct StormLog {
    /// The servers named by `rotate-key` actions.
    origins: BTreeSet<ServerId>,
    /// The first `rotate-key` action (sim ms); `None` = no storm to watch.
    start_ms: Option<u64>,
    /// Second after `start_ms` -> (re-queries, key requests) arriving at an origin.
    per_second: BTreeMap<u64, (u64, u64)>,
}

impl StormLog {
    /// The log for the scripted rotations of `config` (after churn actions were added).
    pub(super) fn new(config: &Rooms) -> StormLog {
        let rotations = config
            .actions
            .iter()
            .filter(|action| action.kind == RoomActionKind::RotateKey);
        let mut log = StormLog::default();
        for action in rotations {
            log.start_ms = Some(
                log.start_ms
                    .map_or(action.at.ms(), |at| at.min(action.at.ms())),
            );
            log.origins.extend(
                action
                    .servers
                    .iter()
                    .filter_map(|r| r.index(config.servers)),
            );
        }
        log
    }

    /// A request for `purpose` arrived at `to` at `now_ms`.
    pub(super) fn note(&mut self, to: ServerId, purpose: Purpose, now_ms: u64) {
        let Some(start_ms) = self.start_ms else {
            return;
        };
        if now_ms < start_ms || !self.origins.contains(&to) {
            return;
        }
        let entry = self
            .per_second
            .entry((now_ms - start_ms) / 1000)
            .or_default();
        match purpose {
            Purpose::EventRequery => entry.0 += 1,
            Purpose::KeyDirect => entry.1 += 1,
            _ => {}
        }
    }
}

/// Writes `storm.csv`, adds the storm metrics and, for `outputs.chart = "rq7-requery-storm"`,
/// draws `requery-storm.{svg,png}`; nothing for a run without a scripted rotation.
pub(super) fn write_storm(
    world: &FedWorld,
    out_dir: &Path,
    metrics: &mut Map<String, Value>,
) -> Result<(), RunError> {
    let log = &world.storm;
    if log.start_ms.is_none() {
        return Ok(());
    }
    let io = |path: &Path, message: String| RunError::Io {
        path: path.display().to_string(),
        message,
    };
    let series: Vec<(u64, u64, u64)> = log
        .per_second
        .iter()
        .filter(|(_, (requeries, keys))| requeries + keys > 0)
        .map(|(second, (requeries, keys))| (*second, *requeries, *keys))
        .collect();
    let mut table = CsvTable::new(&["t_s", "requery_gets", "key_gets"]);
    for (second, requeries, keys) in &series {
        table.row(&[second.to_string(), requeries.to_string(), keys.to_string()]);
    }
    let path = out_dir.join("storm.csv");
    table.write(&path).map_err(|e| io(&path, e.to_string()))?;
    let requeries: u64 = series.iter().map(|(_, r, _)| r).sum();
    let keys: u64 = series.iter().map(|(_, _, k)| k).sum();
    let peak_requeries = series.iter().map(|(_, r, _)| *r).max().unwrap_or(0);
    let peak_total = series.iter().map(|(_, r, k)| r + k).max().unwrap_or(0);
    let last_requery_s = series
        .iter()
        .filter(|(_, r, _)| *r > 0)
        .map(|(second, _, _)| *second)
        .max();
    let outcomes = &world.counters.requests[Purpose::EventRequery as usize];
    let sent: u64 = outcomes.iter().sum();
    let unanswered = sent - outcomes[0] - outcomes[1];
    metrics.insert("storm_origins".into(), log.origins.len().into());
    metrics.insert("storm_requery_gets".into(), requeries.into());
    metrics.insert("storm_key_gets".into(), keys.into());
    metrics.insert(
        "storm_peak_requery_gets_per_s".into(),
        peak_requeries.into(),
    );
    metrics.insert("storm_peak_gets_per_s".into(), peak_total.into());
    metrics.insert(
        "storm_requery_bytes".into(),
        world.counters.bytes[Purpose::EventRequery as usize].into(),
    );
    metrics.insert(
        "storm_completion_s".into(),
        last_requery_s.map_or(Value::Null, |second| (second + 1).into()),
    );
    metrics.insert("storm_requeries_sent".into(), sent.into());
    metrics.insert(
        "storm_requeries_unanswered_share".into(),
        if sent == 0 {
            Value::Null
        } else {
            rounded(unanswered as f64 / sent as f64)
        },
    );
    if world.scenario.outputs.chart != ChartKind::Rq7RequeryStorm {
        return Ok(());
    }
    // Requests per second at the origin against hours after the rotation, zero seconds drawn
    // as gaps' floor so a burst and a trickle read on one log axis.
    let line = |label: &str, pick: fn(&(u64, u64, u64)) -> u64, colour: usize| XyLine {
        label: label.to_owned(),
        points: series
            .iter()
            .filter(|row| pick(row) > 0)
            .map(|row| (row.0 as f64 / 3600.0, pick(row) as f64))
            .collect(),
        step: false,
        dashed: colour == 1,
        colour,
    };
    let chart = XyChart {
        title: format!(
            "{} ({}, seed {}): requests/s arriving at the rotating origin",
            world.scenario.name, world.room_policy.name, world.seed
        ),
        x_label: "hours after the rotation".to_owned(),
        y_label: "requests in that second (req/s)".to_owned(),
        x_log: false,
        y_log: true,
        lines: vec![
            line(
                &format!("/event re-queries ({requeries} in all, peak {peak_requeries}/s)"),
                |row| row.1,
                0,
            ),
            line(&format!("key requests ({keys} in all)"), |row| row.2, 1),
        ],
        reference_lines: Vec::new(),
        y_range: None,
    };
    let svg = out_dir.join("requery-storm.svg");
    chart
        .write(&svg, &out_dir.join("requery-storm.png"))
        .map_err(|error| io(&svg, error.to_string()))
}
