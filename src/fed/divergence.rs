//! RQ5 in the room world: workload replies, and the files behind the divergence heat map —
//! `divergence.csv` (per room, every pair of joined servers and the divergence of their
//! client-visible message sets), `orphans.csv` (per room and server: hidden share, visible
//! replies and orphans) and the chart `divergence.{svg,png}` (`outputs.chart = "rq5-divergence"`).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::chart::heatmap::DivergenceHeatMap;
use crate::matrix::EventId;
use crate::metrics::{CsvTable, fixed, rounded};
use crate::net::ServerId;
use crate::room::metrics::{self as room_metrics, MESSAGE_TYPE, Shown};
use crate::room::room_state::Visibility;
use crate::scenario::ChartKind;
use crate::world::RunError;

use super::output::message_views;
use super::{FedWorld, RoomIndex};

impl FedWorld {
    /// With `rooms.reply_probability` set: whether the next workload message of `room` replies
    /// (one draw per message), and then to the latest message `server` shows in the room.
    pub(super) fn reply_target(&mut self, server: ServerId, room: RoomIndex) -> Option<EventId> {
        let probability = self.config.reply_probability?;
        if !self.plans[room as usize].reply_rng.chance(probability) {
            return None;
        }
        let state = &self.servers[server as usize].rooms.get(&room)?.state;
        state
            .timeline_indices()
            .rev()
            .find(|&index| {
                state.dag().event(index).event_type == MESSAGE_TYPE
                    && !matches!(state.visibility(index), Visibility::Hidden(_))
            })
            .map(|index| state.dag().event(index).event_id.clone())
    }
}

fn io(path: &Path) -> impl Fn(String) -> RunError + '_ {
    move |message| RunError::Io {
        path: path.display().to_string(),
        message,
    }
}

/// Adds the orphan-reply share to the headline metrics (when the workload replies) and, for
/// `outputs.chart = "rq5-divergence"`, writes the two CSV files and the heat map.
pub(super) fn write_divergence(
    world: &FedWorld,
    out_dir: &Path,
    metrics: &mut Map<String, Value>,
) -> Result<(), RunError> {
    let chart = world.scenario.outputs.chart == ChartKind::Rq5Divergence;
    if world.config.reply_probability.is_none() && !chart {
        return Ok(());
    }
    let mut pairs = CsvTable::new(&["room", "server_a", "server_b", "divergence"]);
    let mut orphans = CsvTable::new(&[
        "room",
        "server",
        "messages_held",
        "visible",
        "hidden_share",
        "visible_replies",
        "reply_orphans",
        "follow_orphans",
        "orphan_ratio",
    ]);
    // (server a, server b) -> divergences over the rooms both joined; per server: (visible
    // replies, reply orphans) over its rooms.
    let mut pooled: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut replies: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for room in 0..world.plans.len() as RoomIndex {
        let views = message_views(world, room);
        let matrix = room_metrics::divergence_matrix(&views);
        for i in 0..views.len() {
            for j in 0..views.len() {
                let (a, b) = (&views[i].server, &views[j].server);
                pooled
                    .entry((a.clone(), b.clone()))
                    .or_default()
                    .push(matrix.matrix[i][j]);
                if i < j {
                    pairs.row(&[
                        room.to_string(),
                        a.clone(),
                        b.clone(),
                        fixed(matrix.matrix[i][j], 4),
                    ]);
                }
            }
        }
        let shares = room_metrics::hidden_shares(&views);
        for (view, share) in views.iter().zip(&shares) {
            let counted = room_metrics::orphans(view);
            let visible_replies = view
                .messages
                .values()
                .filter(|m| m.reply_to.is_some() && matches!(m.shown, Shown::Visible { .. }))
                .count();
            let entry = replies.entry(view.server.clone()).or_default();
            entry.0 += visible_replies;
            entry.1 += counted.reply_orphans;
            orphans.row(&[
                room.to_string(),
                view.server.clone(),
                view.messages.len().to_string(),
                counted.visible.to_string(),
                fixed(share.hidden_share, 4),
                visible_replies.to_string(),
                counted.reply_orphans.to_string(),
                counted.follow_orphans.to_string(),
                fixed(counted.orphan_ratio, 4),
            ]);
        }
    }
    let (all_replies, all_orphans) = replies.values().fold((0, 0), |(r, o), (replies, orphans)| {
        (r + replies, o + orphans)
    });
    metrics.insert("visible_replies".into(), all_replies.into());
    metrics.insert("reply_orphans".into(), all_orphans.into());
    metrics.insert(
        "orphan_reply_share".into(),
        if all_replies == 0 {
            Value::Null
        } else {
            rounded(all_orphans as f64 / all_replies as f64)
        },
    );
    if !chart {
        return Ok(());
    }
    let path = out_dir.join("divergence.csv");
    pairs.write(&path).map_err(|e| io(&path)(e.to_string()))?;
    let path = out_dir.join("orphans.csv");
    orphans.write(&path).map_err(|e| io(&path)(e.to_string()))?;
    // The heat map: every server that joined a room, in server order.
    let servers: Vec<String> = world
        .servers
        .iter()
        .filter(|server| server.rooms.values().any(|room| room.joined))
        .map(|server| server.name.clone())
        .collect();
    let cells = servers
        .iter()
        .map(|a| {
            servers
                .iter()
                .map(|b| {
                    pooled
                        .get(&(a.clone(), b.clone()))
                        .map(|values| values.iter().sum::<f64>() / values.len() as f64)
                })
                .collect()
        })
        .collect();
    let orphan_reply_shares = servers
        .iter()
        .map(|server| {
            replies
                .get(server)
                .filter(|(replies, _)| *replies > 0)
                .map(|(replies, orphans)| *orphans as f64 / *replies as f64)
        })
        .collect();
    let heat_map = DivergenceHeatMap {
        title: format!(
            "{} ({}, seed {}): client-visible divergence and orphan replies",
            world.scenario.name, world.room_policy.name, world.seed
        ),
        servers,
        cells,
        orphan_reply_shares,
    };
    let svg = out_dir.join("divergence.svg");
    heat_map
        .write(&svg, &out_dir.join("divergence.png"))
        .map_err(|error| io(&svg)(error.to_string()))
}
