//! Moderation workload at scenario rates (issue 5 item 1): kicks, bans (lifted after
//! `rooms.ban_duration`) and power-level changes by each room's creator, its moderator (room
//! version 12 and MSC4430 give the creator unlimited power). Each is a real state event sent
//! through `send_local`, so it goes through the sender's pipeline and every resident's.
//!
//! A kicked or unbanned member's server joins again `rooms.rejoin_after` later with a fresh
//! `make_join`/`send_join` (its room is marked not joined until the answer arrives; the history
//! it already holds comes back as already held). Targets are drawn uniformly from the planned
//! members (not the creator) whose membership is `join` in the creator's current state; with
//! none, the draw is skipped. One random stream per room (`room-moderation`), drawn only when a
//! rate is set, so runs without moderation are unchanged.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::engine::SimRng;
use crate::net::ServerId;

use super::{Ev, FedWorld, RoomIndex};

/// What a scheduled workload event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chore {
    Kick,
    Ban,
    PowerChange,
    /// The creator lifts the ban on this member (server, user).
    Unban(ServerId, u32),
    /// This member (server, user) joins again.
    Rejoin(ServerId, u32),
}

impl Chore {
    /// A number for the event trace. The user sits above the server so that two users of one
    /// server get different codes, while user 0 (the only one with one user per server) keeps
    /// the code it had before several users existed.
    pub(super) fn trace_code(self) -> u64 {
        match self {
            Chore::Kick => 0,
            Chore::Ban => 1,
            Chore::PowerChange => 2,
            Chore::Unban(server, user) => 3 | u64::from(server) << 4 | u64::from(user) << 36,
            Chore::Rejoin(server, user) => 4 | u64::from(server) << 4 | u64::from(user) << 36,
        }
    }
}

/// The moderation workload's random streams (one per room, made on first use).
#[derive(Default)]
pub struct Workload {
    rngs: BTreeMap<RoomIndex, SimRng>,
}

const DAY_MS: f64 = 86_400_000.0;

impl FedWorld {
    /// The mean rate (per room per day) of a rate-driven chore.
    fn chore_rate(&self, chore: Chore) -> f64 {
        match chore {
            Chore::Kick => self.config.kicks_per_room_per_day,
            Chore::Ban => self.config.bans_per_room_per_day,
            Chore::PowerChange => self.config.power_changes_per_room_per_day,
            Chore::Unban(..) | Chore::Rejoin(..) => 0.0,
        }
    }

    /// Schedules the next `chore` of `room` after an exponential gap (nothing if its rate is 0).
    pub(super) fn schedule_chore(&mut self, room: RoomIndex, chore: Chore) {
        let rate = self.chore_rate(chore);
        if rate <= 0.0 {
            return;
        }
        let seed = self.seed;
        let rng = self
            .workload
            .rngs
            .entry(room)
            .or_insert_with(|| SimRng::stream(seed, "room-moderation", u64::from(room)));
        let gap_ms = rng.exponential(DAY_MS / rate) as u64;
        let at_ms = self.now_ms() + gap_ms.max(1);
        self.queue.push(at_ms, Ev::Workload { room, chore });
    }

    /// The rate-driven chores of a new room.
    pub(super) fn start_workload(&mut self, room: RoomIndex) {
        for chore in [Chore::Kick, Chore::Ban, Chore::PowerChange] {
            self.schedule_chore(room, chore);
        }
    }

    /// A scheduled workload event.
    pub(super) fn workload(&mut self, room: RoomIndex, chore: Chore) {
        let now_ms = self.now_ms();
        let (creator, creator_user) = self.plans[room as usize].creator;
        match chore {
            Chore::Kick | Chore::Ban | Chore::PowerChange => {
                self.schedule_chore(room, chore);
                let Some((target, target_user, target_id)) = self.draw_joined_member(room) else {
                    return;
                };
                let content = match chore {
                    Chore::Kick => json!({"membership": "leave"}),
                    Chore::Ban => json!({"membership": "ban"}),
                    _ => {
                        let (event_type, content) = self.power_levels_toggled(room, &target_id);
                        let sent = self
                            .send_local(
                                creator,
                                room,
                                creator_user,
                                event_type,
                                Some(String::new()),
                                content,
                            )
                            .is_some();
                        if sent {
                            self.counters.adv.power_changes_sent += 1;
                        }
                        return;
                    }
                };
                let sent = self
                    .send_local(
                        creator,
                        room,
                        creator_user,
                        "m.room.member",
                        Some(target_id),
                        content,
                    )
                    .is_some();
                if !sent {
                    return;
                }
                let (follow_up, after_ms) = if chore == Chore::Kick {
                    self.counters.adv.kicks_sent += 1;
                    (Chore::Rejoin(target, target_user), self.rejoin_after_ms())
                } else {
                    self.counters.adv.bans_sent += 1;
                    let ban_ms = self
                        .config
                        .ban_duration
                        .map_or(3_600_000, |duration| duration.ms());
                    (Chore::Unban(target, target_user), ban_ms)
                };
                self.queue.push(
                    now_ms + after_ms.max(1),
                    Ev::Workload {
                        room,
                        chore: follow_up,
                    },
                );
            }
            Chore::Unban(target, target_user) => {
                let target_id = self.planned_member_id(room, target, target_user);
                let sent = target_id.is_some_and(|target_id| {
                    self.send_local(
                        creator,
                        room,
                        creator_user,
                        "m.room.member",
                        Some(target_id),
                        json!({"membership": "leave"}),
                    )
                    .is_some()
                });
                if sent {
                    self.counters.adv.unbans_sent += 1;
                    let after_ms = self.rejoin_after_ms();
                    self.queue.push(
                        now_ms + after_ms.max(1),
                        Ev::Workload {
                            room,
                            chore: Chore::Rejoin(target, target_user),
                        },
                    );
                }
            }
            Chore::Rejoin(target, target_user) => {
                // Only a member that is out (kicked or unbanned, not banned again) comes back.
                let Some(target_id) = self.planned_member_id(room, target, target_user) else {
                    return;
                };
                if self.membership_seen_by_creator(room, &target_id).as_deref() != Some("leave") {
                    return;
                }
                if self.plans[room as usize].has_several_users(target) {
                    // A server with several users in the room: a local join while another of
                    // its users is joined, else `make_join` (`members.rs`).
                    if self.servers[target as usize].rooms.contains_key(&room) {
                        self.counters.adv.rejoins_started += 1;
                        self.join_member(room, target, target_user, 0);
                    }
                    return;
                }
                let Some(state) = self.servers[target as usize].rooms.get_mut(&room) else {
                    return;
                };
                state.joined = false;
                self.counters.adv.rejoins_started += 1;
                self.start_join(room, target, target_user, 0);
            }
        }
    }

    fn rejoin_after_ms(&self) -> u64 {
        self.config
            .rejoin_after
            .map_or(600_000, |duration| duration.ms())
    }

    /// The member ID of planned `user` of `server` in `room`.
    fn planned_member_id(&self, room: RoomIndex, server: ServerId, user: u32) -> Option<String> {
        self.plans[room as usize]
            .member_id_of(server, user)
            .map(str::to_owned)
    }

    /// `member`'s membership in the creator's current state of `room`.
    fn membership_seen_by_creator(&mut self, room: RoomIndex, member: &str) -> Option<String> {
        let creator = self.plans[room as usize].creator.0;
        let state = &mut self.servers[creator as usize].rooms.get_mut(&room)?.state;
        let event = state.current_state_event("m.room.member", member).ok()??;
        event.membership().map(str::to_owned)
    }

    /// A planned member other than the creator, joined in the creator's current state, drawn
    /// from the room's moderation stream: (its server, its user, its member ID).
    fn draw_joined_member(&mut self, room: RoomIndex) -> Option<(ServerId, u32, String)> {
        let plan = &self.plans[room as usize];
        let creator = plan.creator;
        let candidates: Vec<(ServerId, u32, String)> = plan
            .members
            .iter()
            .zip(&plan.member_ids)
            .filter(|(member, _)| **member != creator)
            .map(|((server, user), id)| (*server, *user, id.clone()))
            .collect();
        let joined: Vec<(ServerId, u32, String)> = candidates
            .into_iter()
            .filter(|(_, _, id)| {
                self.membership_seen_by_creator(room, id).as_deref() == Some("join")
            })
            .collect();
        if joined.is_empty() {
            return None;
        }
        let rng = self.workload.rngs.get_mut(&room)?;
        let pick = rng.below(joined.len() as u64) as usize;
        joined.into_iter().nth(pick)
    }

    /// The creator's current `m.room.power_levels` content with `member` toggled between 50 and
    /// the default (a fresh content if the room has none yet).
    fn power_levels_toggled(&mut self, room: RoomIndex, member: &str) -> (&'static str, Value) {
        let creator = self.plans[room as usize].creator.0;
        let mut content = self.servers[creator as usize]
            .rooms
            .get_mut(&room)
            .and_then(|state| {
                state
                    .state
                    .current_state_event("m.room.power_levels", "")
                    .ok()
                    .flatten()
            })
            .map_or_else(|| json!({}), |event| event.content.clone());
        if !content.get("users").is_some_and(Value::is_object) {
            content["users"] = json!({});
        }
        let users = content["users"].as_object_mut().expect("made an object");
        if users.remove(member).is_none() {
            users.insert(member.to_owned(), json!(50));
        }
        ("m.room.power_levels", content)
    }
}
