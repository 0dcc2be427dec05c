//! RQ4, bitrot for newcomers: the directed re-query of history whose co-signing key is no
//! longer current, and the per-newcomer figures (`bitrot.csv`).
//!
//! A server that meets a member event only after the claimed domain rotated (a newcomer reading
//! the room's history) finds it co-signed by a key that is now in `old_verify_keys`. That is the
//! same knowledge a key invalidation gives an old resident, so it takes the MSC's receiver
//! strategy (domain.md §1.6): it asks `content.domain` once for the event by ID; a re-signed copy
//! verifies the link, anything else leaves it unverified. Messages already judged stay as they
//! were (soft-fail decisions are not revisited unless the policy reveals).

use std::sync::Arc;

use serde_json::Value;

use crate::matrix::member_keys::LinkOutcome;
use crate::matrix::server_keys::KeyUnusable;
use crate::net::ServerId;
use crate::room::links::{LinkReason, LinkStatus};
use crate::room::metrics::{NewcomerHistory, RoomHistory, newcomer_history};
use crate::room::policy::ArrivalPath;
use crate::scenario::RoomActionKind;

use super::{Body, FedWorld, Purpose, RoomIndex, server_of_domain};

/// A newcomer's figures are taken at the first sample at least this long after its `join-late`
/// action (time for the join, the key fetches and the re-queries to finish).
pub const BITROT_SETTLE_MS: u64 = 3_600_000;

/// One newcomer's view of one room's history at the end of the run.
#[derive(Debug, Clone)]
pub struct NewcomerRow {
    pub room: RoomIndex,
    pub server: String,
    /// When its `join-late` action fired, after the room was created (ms).
    pub room_age_ms: u64,
    /// When its join event was made (sim ms): the history is what was sent before.
    pub joined_at_ms: u64,
    /// When the figures were taken (sim ms; see [`FedWorld::snapshot_newcomers`]).
    pub measured_at_ms: u64,
    pub history: NewcomerHistory,
}

impl FedWorld {
    /// After `server` ran a PDU of `room`: if it is a member's own member event whose claim
    /// failed only because its co-signing key is no longer current, re-query it (once).
    pub(super) fn requery_if_stale_claim(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        json: &Arc<Value>,
        path: ArrivalPath,
    ) {
        if !self.version.member_keys || matches!(path, ArrivalPath::EventFetch | ArrivalPath::Local)
        {
            return;
        }
        let sender: Option<Arc<str>> = super::WireFacts::of(
            &self.wire_facts,
            json,
            |facts| facts.own_member_sender.clone(),
            |json| super::own_member_sender(json).map(Arc::from),
        );
        if let Some(sender) = sender {
            self.requery_stale_claims(server, room, &[sender]);
        }
    }

    /// For each of `members` whose link in `server`'s table of `room` is unverified because its
    /// claim is co-signed only by a key the domain has since moved to `old_verify_keys`: a
    /// directed `/event/{id}` re-query to the claimed domain, once per (server, event).
    pub(super) fn requery_stale_claims(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        members: &[impl AsRef<str>],
    ) {
        if !self.version.member_keys {
            return;
        }
        let count = self.servers.len();
        let Some(state) = self.servers[server as usize].rooms.get(&room) else {
            return;
        };
        let mut requests = Vec::new();
        for member in members {
            let Some(link) = state.links.link(member.as_ref()) else {
                continue;
            };
            if link.status != LinkStatus::Unverified {
                continue;
            }
            let Some(LinkReason::CosignatureFailed { event_id, outcome }) =
                link.transitions.last().map(|last| &last.reason)
            else {
                continue;
            };
            if !matches!(
                **outcome,
                LinkOutcome::NoCurrentKey {
                    reason: KeyUnusable::NotCurrent,
                    ..
                }
            ) {
                continue;
            }
            let Some(domain) = link
                .domain
                .as_deref()
                .and_then(|domain| server_of_domain(domain, count))
            else {
                continue;
            };
            if domain != server {
                requests.push((domain, event_id.to_string()));
            }
        }
        for (domain, event_id) in requests {
            if self.stale_requeried.insert((server, event_id.clone())) {
                self.dispatch(
                    server,
                    domain,
                    Purpose::EventRequery,
                    Body::EventFetch { room, event_id },
                );
            }
        }
    }

    /// When `newcomer`'s `join-late` action for `room` fired (sim ms).
    fn late_join_ms(&self, room: RoomIndex, newcomer: ServerId) -> Option<u64> {
        self.config
            .actions
            .iter()
            .filter(|action| {
                action.kind == RoomActionKind::JoinLate
                    && action.room.is_none_or(|only| only == room)
                    && action
                        .servers
                        .iter()
                        .any(|r| r.index(self.servers.len() as u32) == Some(newcomer))
            })
            .map(|action| action.at.ms())
            .min()
    }

    /// Called at every sample: newcomers whose join-late action is at least
    /// [`BITROT_SETTLE_MS`] old and whose join completed get their figures taken now (once),
    /// so a row shows what the newcomer verified and showed of the history just after joining,
    /// not after months of living in the room. `at_end` takes everyone not taken yet.
    pub(super) fn snapshot_newcomers(&mut self, now_ms: u64, at_end: bool) {
        let mut due = Vec::new();
        for (room, plan) in self.plans.iter().enumerate() {
            let room = room as RoomIndex;
            for &newcomer in &plan.late {
                if self.bitrot_taken.contains(&(room, newcomer)) {
                    continue;
                }
                let joined = self.servers[newcomer as usize]
                    .rooms
                    .get(&room)
                    .is_some_and(|state| state.joined);
                let settled = self
                    .late_join_ms(room, newcomer)
                    .is_some_and(|at_ms| now_ms >= at_ms + BITROT_SETTLE_MS);
                if at_end || (joined && settled) {
                    due.push((room, newcomer));
                }
            }
        }
        for (room, newcomer) in due {
            self.bitrot_taken.insert((room, newcomer));
            if let Some(row) = self.newcomer_row(room, newcomer, now_ms) {
                self.bitrot_rows.push(row);
            }
        }
    }

    /// The room's history: every event any server holds of it.
    fn room_history(&self, room: RoomIndex) -> RoomHistory {
        let mut history = RoomHistory::default();
        for state in self
            .servers
            .iter()
            .filter_map(|server| server.rooms.get(&room))
        {
            history.add(&state.state);
        }
        history
    }

    /// `newcomer`'s figures for `room` now: what it holds and shows of the history if its join
    /// is placed, else [`FedWorld::unplaced_row`].
    fn newcomer_row(
        &self,
        room: RoomIndex,
        newcomer: ServerId,
        now_ms: u64,
    ) -> Option<NewcomerRow> {
        self.placed_row(room, newcomer, now_ms)
            .or_else(|| self.unplaced_row(room, newcomer, now_ms))
    }

    /// A newcomer whose join was never placed (it could not join, or could not place its own
    /// member event or the create event: P0 without a notary drops a dead server's events and
    /// everything built on them) still counts: the room's history before its join attempt
    /// against what it holds and shows of it (nothing, if it never got the room). Leaving it out made the pooled shares read 100%
    /// exactly when newcomers failed. `None` if no server holds the room's create event.
    fn unplaced_row(
        &self,
        room: RoomIndex,
        newcomer: ServerId,
        now_ms: u64,
    ) -> Option<NewcomerRow> {
        let start_abs_ms = crate::server::absolute_ms(0);
        let attempt_ms = self.late_join_ms(room, newcomer)?;
        let attempt_abs_ms = start_abs_ms + attempt_ms as i64;
        let history = self.room_history(room);
        let created_abs_ms = self
            .servers
            .iter()
            .filter_map(|server| server.rooms.get(&room))
            .find_map(|state| {
                state
                    .state
                    .held_events()
                    .find(|(pdu, _)| pdu.event_type == "m.room.create")
                    .map(|(pdu, _)| pdu.origin_server_ts)
            })?;
        let created_ms = (created_abs_ms - start_abs_ms).max(0) as u64;
        // What it holds and shows of the history before its attempt, if it holds anything.
        let history = match self.servers[newcomer as usize].rooms.get(&room) {
            Some(state) => newcomer_history(&state.state, &state.links, attempt_abs_ms, &history),
            None => NewcomerHistory {
                links: history
                    .claims
                    .values()
                    .filter(|times| times.iter().any(|at| *at < attempt_abs_ms))
                    .count(),
                messages: history
                    .messages
                    .values()
                    .filter(|(_, sent_at_ms)| *sent_at_ms < attempt_abs_ms)
                    .count(),
                ..NewcomerHistory::default()
            },
        };
        Some(NewcomerRow {
            room,
            server: self.servers[newcomer as usize].name.clone(),
            room_age_ms: attempt_ms.saturating_sub(created_ms),
            joined_at_ms: attempt_ms,
            measured_at_ms: now_ms,
            history,
        })
    }

    /// `newcomer`'s figures for `room` now, if its join is placed.
    fn placed_row(&self, room: RoomIndex, newcomer: ServerId, now_ms: u64) -> Option<NewcomerRow> {
        let start_abs_ms = crate::server::absolute_ms(0);
        let plan = &self.plans[room as usize];
        let state = self.servers[newcomer as usize]
            .rooms
            .get(&room)
            .filter(|state| state.joined)?;
        let position = plan.members.iter().position(|(m, _)| *m == newcomer)?;
        let member = &plan.member_ids[position];
        let joined_at_abs_ms = state
            .state
            .held_events()
            .filter(|(pdu, _)| {
                pdu.event_type == "m.room.member"
                    && pdu.sender == *member
                    && pdu.state_key.as_deref() == Some(member.as_str())
            })
            .map(|(pdu, _)| pdu.origin_server_ts)
            .min()?;
        let created_abs_ms = state
            .state
            .held_events()
            .find(|(pdu, _)| pdu.event_type == "m.room.create")
            .map(|(pdu, _)| pdu.origin_server_ts)?;
        let history = self.room_history(room);
        let created_ms = (created_abs_ms - start_abs_ms).max(0) as u64;
        let late_join_ms = self.late_join_ms(room, newcomer).unwrap_or(0);
        Some(NewcomerRow {
            room,
            server: self.servers[newcomer as usize].name.clone(),
            room_age_ms: late_join_ms.saturating_sub(created_ms),
            joined_at_ms: (joined_at_abs_ms - start_abs_ms).max(0) as u64,
            measured_at_ms: now_ms,
            history: newcomer_history(&state.state, &state.links, joined_at_abs_ms, &history),
        })
    }
}

/// Writes `bitrot.csv` (one row per newcomer and room) and the run's chart `bitrot.{svg,png}`,
/// and adds the pooled figures to the headline metrics — only when the run has newcomers, so
/// other scenarios' result files are unchanged.
pub(super) fn write_bitrot(
    world: &mut FedWorld,
    out_dir: &std::path::Path,
    metrics: &mut serde_json::Map<String, Value>,
) -> Result<(), crate::world::RunError> {
    use crate::metrics::{CsvTable, fixed, rounded};
    let end_ms = world.end_ms();
    world.snapshot_newcomers(end_ms, true);
    let mut rows = world.bitrot_rows.clone();
    rows.sort_by(|a, b| (a.room, &a.server).cmp(&(b.room, &b.server)));
    if rows.is_empty() {
        return Ok(());
    }
    let io = |path: &std::path::Path, message: String| crate::world::RunError::Io {
        path: path.display().to_string(),
        message,
    };
    let share = |part: usize, whole: usize| {
        NewcomerHistory::share(part, whole).map_or(String::new(), |share| fixed(share, 4))
    };
    let mut table = CsvTable::new(&crate::chart::bitrot::BITROT_COLUMNS);
    let mut total = NewcomerHistory::default();
    for row in &rows {
        let h = &row.history;
        for (sum, part) in [
            (&mut total.links, h.links),
            (&mut total.links_verifiable, h.links_verifiable),
            (&mut total.messages, h.messages),
            (&mut total.messages_held, h.messages_held),
            (&mut total.messages_visible, h.messages_visible),
            (
                &mut total.messages_sender_verified,
                h.messages_sender_verified,
            ),
            (&mut total.messages_hidden, h.messages_hidden),
        ] {
            *sum += part;
        }
        table.row(&[
            row.room.to_string(),
            row.server.clone(),
            world.room_policy.name.to_owned(),
            fixed(row.room_age_ms as f64 / 1000.0, 0),
            fixed(row.joined_at_ms as f64 / 1000.0, 3),
            fixed(row.measured_at_ms as f64 / 1000.0, 0),
            h.links.to_string(),
            h.links_verifiable.to_string(),
            h.messages.to_string(),
            h.messages_held.to_string(),
            h.messages_visible.to_string(),
            h.messages_sender_verified.to_string(),
            h.messages_hidden.to_string(),
            share(h.links_verifiable, h.links),
            share(h.messages_visible, h.messages),
            share(h.messages_sender_verified, h.messages),
        ]);
    }
    let path = out_dir.join("bitrot.csv");
    table
        .write(&path)
        .map_err(|error| io(&path, error.to_string()))?;
    let pooled = |part: usize, whole: usize| {
        NewcomerHistory::share(part, whole).map_or(Value::Null, rounded)
    };
    metrics.insert("bitrot_newcomers".into(), rows.len().into());
    metrics.insert("bitrot_links".into(), total.links.into());
    metrics.insert(
        "bitrot_links_verifiable_share".into(),
        pooled(total.links_verifiable, total.links),
    );
    metrics.insert("bitrot_messages".into(), total.messages.into());
    for (name, part) in [
        ("held", total.messages_held),
        ("visible", total.messages_visible),
        ("sender_verified", total.messages_sender_verified),
        ("hidden", total.messages_hidden),
    ] {
        metrics.insert(
            format!("bitrot_messages_{name}_share"),
            pooled(part, total.messages),
        );
    }
    let points = crate::chart::bitrot::read_bitrot_csv(&path).map_err(|error| io(&path, error))?;
    let title = format!(
        "{} ({}, seed {}): what a newcomer can verify and see",
        world.scenario.name, world.room_policy.name, world.seed
    );
    crate::chart::bitrot::bitrot_chart(&points, &title)
        .write(&out_dir.join("bitrot"))
        .map_err(|error| io(&out_dir.join("bitrot.svg"), error))?;
    Ok(())
}
