//! Adversaries of the room world beyond compromise (issue 5 item 6), and the counters of this
//! module and `acl.rs`.
//!
//! **Fake `domain` claim (amplification, RQ9, MSC4430 §Security considerations 2).** An
//! attacking server's user joins rooms with a member event whose `content.domain` names a victim
//! (the attacker cannot co-sign for it, so the link never verifies). Residents map members to
//! servers by `content.domain`, so they push the room's traffic to the victim, and each of them
//! fetches the victim's keys to check the claim (then re-checks them on its policy's schedule).
//! The attacker itself receives nothing after its join. Counted at the victim: every request
//! arriving there that the claim caused — `/send` transactions carrying PDUs of rooms the victim
//! is not in, key fetches through key-cache slots added when a claim named the victim, and
//! room-scoped requests for rooms it is not in — with request and answer bytes; for the
//! attacker, its own requests and their answers. `amplification_factor` = victim bytes /
//! attacker bytes. Under room version 12 (P0) there is no claim to fake: the attacker joins as
//! itself and the victim gets nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::metrics::rounded;
use crate::net::ServerId;
use crate::scenario::RoomAction;

use super::{Body, FedWorld, RoomIndex, json_bytes};

/// How many times an attacker tries a fake-claim join (30 s apart, each resident in turn).
pub const FAKE_JOIN_ATTEMPTS: u32 = 8;

/// Adversary state of the room world (besides the compromise attacker in `mod.rs`).
#[derive(Debug, Default)]
pub struct Adversaries {
    /// (attacking server, room) -> the victim its user's member event claims.
    pub fake_joins: BTreeMap<(ServerId, RoomIndex), ServerId>,
    pub attackers: BTreeSet<ServerId>,
    pub victims: BTreeSet<ServerId>,
    /// Key-cache slots added for domains met outside planned rooms: (server, slot).
    pub met_slots: BTreeSet<(ServerId, u32)>,
    /// When the first fake-claim join started (sim ms).
    pub attack_started_ms: Option<u64>,
}

impl Adversaries {
    fn active(&self) -> bool {
        !self.attackers.is_empty()
    }
}

/// Counters of ACLs, the join gate, the adversaries and the moderation workload (part of
/// [`super::Counters`]).
#[derive(Debug, Clone, Default)]
pub struct AdvCounters {
    pub acl_events_sent: u64,
    pub acl_refused_pdus: u64,
    pub acl_refused_requests: u64,
    pub federate_refused_pdus: u64,
    pub federate_refused_requests: u64,
    pub join_gate_refused: u64,
    pub join_gate_key_waits: u64,
    pub fake_domain_joins_started: u64,
    pub victim_requests: u64,
    pub victim_requests_send: u64,
    pub victim_requests_key: u64,
    pub victim_requests_other: u64,
    pub victim_pdus: u64,
    pub victim_bytes: u64,
    pub attacker_requests: u64,
    pub attacker_bytes: u64,
    pub kicks_sent: u64,
    pub bans_sent: u64,
    pub unbans_sent: u64,
    pub power_changes_sent: u64,
    pub rejoins_started: u64,
}

impl AdvCounters {
    /// `(name, value)` in a stable order (summary metrics and CSV columns).
    pub fn fields(&self) -> Vec<(String, u64)> {
        [
            ("acl_events_sent", self.acl_events_sent),
            ("acl_refused_pdus", self.acl_refused_pdus),
            ("acl_refused_requests", self.acl_refused_requests),
            ("federate_refused_pdus", self.federate_refused_pdus),
            ("federate_refused_requests", self.federate_refused_requests),
            ("join_gate_refused", self.join_gate_refused),
            ("join_gate_key_waits", self.join_gate_key_waits),
            ("fake_domain_joins_started", self.fake_domain_joins_started),
            ("victim_requests", self.victim_requests),
            ("victim_requests_send", self.victim_requests_send),
            ("victim_requests_key", self.victim_requests_key),
            ("victim_requests_other", self.victim_requests_other),
            ("victim_pdus", self.victim_pdus),
            ("victim_bytes", self.victim_bytes),
            ("attacker_requests", self.attacker_requests),
            ("attacker_bytes", self.attacker_bytes),
            ("kicks_sent", self.kicks_sent),
            ("bans_sent", self.bans_sent),
            ("unbans_sent", self.unbans_sent),
            ("power_changes_sent", self.power_changes_sent),
            ("rejoins_started", self.rejoins_started),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }
}

/// The room a room-scoped request is about.
pub(super) fn body_room(body: &Body) -> Option<RoomIndex> {
    match body {
        Body::MakeJoin { room, .. }
        | Body::SendJoin { room, .. }
        | Body::GetMissing { room, .. }
        | Body::EventFetch { room, .. }
        | Body::Extremities { room, .. } => Some(*room),
        _ => None,
    }
}

impl FedWorld {
    /// Whether `server_name` holds `room` only through a fake `domain` claim (such a server
    /// receives nothing after its join: metrics of what honest servers see leave it out).
    pub(crate) fn fake_member(&self, server_name: &str, room: RoomIndex) -> bool {
        !self.adv.fake_joins.is_empty()
            && self.adv.fake_joins.keys().any(|(attacker, fake_room)| {
                *fake_room == room && self.servers[*attacker as usize].name == server_name
            })
    }

    /// `fake-domain-join`: each attacking server's first user starts joining the rooms with a
    /// member event that will claim the victim's domain (see [`FedWorld::amend_fake_join`]).
    pub(super) fn fake_domain_join(&mut self, action: &RoomAction, attackers: &[ServerId]) {
        let count = self.servers.len() as u32;
        let Some(victim) = action
            .victim
            .as_ref()
            .and_then(|victim| victim.index(count))
        else {
            return;
        };
        for &attacker in attackers {
            for room in 0..self.plans.len() as RoomIndex {
                if action.room.is_some_and(|only| only != room) {
                    continue;
                }
                let plan = &self.plans[room as usize];
                let Some(room_id) = plan.room_id.clone() else {
                    continue;
                };
                // A planned member already has its real membership; the claim is a new user.
                if plan.members.iter().any(|(member, _)| *member == attacker)
                    || self.servers[attacker as usize].rooms.contains_key(&room)
                {
                    continue;
                }
                let user = 0;
                let mut server_room = self.new_server_room(room, attacker, &room_id);
                if self.version.member_keys {
                    server_room.member_keys.insert(
                        user,
                        super::build::member_key(self.seed, room, attacker, user),
                    );
                }
                self.servers[attacker as usize]
                    .rooms
                    .insert(room, server_room);
                self.adv.fake_joins.insert((attacker, room), victim);
                self.adv.attackers.insert(attacker);
                self.adv.victims.insert(victim);
                self.counters.adv.fake_domain_joins_started += 1;
                let now_ms = self.now_ms();
                self.adv.attack_started_ms.get_or_insert(now_ms);
                self.retry_fake_join(room, attacker, 0);
            }
        }
    }

    /// Attempt `attempt` of a fake-claim join: `make_join` to the room's planned members in turn
    /// (the same candidate `finish_make_join` sends the `send_join` to), at most
    /// [`FAKE_JOIN_ATTEMPTS`] times.
    pub(super) fn retry_fake_join(&mut self, room: RoomIndex, attacker: ServerId, attempt: u32) {
        if attempt >= FAKE_JOIN_ATTEMPTS
            || self.servers[attacker as usize]
                .rooms
                .get(&room)
                .is_some_and(|state| state.joined)
        {
            return;
        }
        let members = self.plans[room as usize].servers();
        if members.is_empty() {
            return;
        }
        let target = members[attempt as usize % members.len()];
        self.join_attempts.insert((room, attacker), attempt);
        self.dispatch(
            attacker,
            target,
            super::Purpose::MakeJoin,
            Body::MakeJoin { room, user: 0 },
        );
    }

    /// The attacker rewrites the join template's `content.domain` to the victim before signing
    /// (member-key rooms only: a user ID names its server).
    pub(super) fn amend_fake_join(&self, room: RoomIndex, server: ServerId, content: &mut Value) {
        if !self.version.member_keys {
            return;
        }
        if let Some(victim) = self.adv.fake_joins.get(&(server, room)) {
            content["domain"] = json!(self.servers[*victim as usize].name);
        }
    }

    /// A request arrives at `to`: counts what the attackers send and what reaches a victim
    /// because of a fake claim. Returns whether the answer's bytes count too (and to whom).
    pub(super) fn note_arrival(
        &mut self,
        from: ServerId,
        to: ServerId,
        body: &Body,
    ) -> Option<bool> {
        if !self.adv.active() {
            return None;
        }
        // The attacker's spending: its requests about the rooms it joined with a fake claim (it
        // may also be an honest member elsewhere).
        let from_attacker =
            body_room(body).is_some_and(|room| self.adv.fake_joins.contains_key(&(from, room)));
        if from_attacker {
            self.counters.adv.attacker_requests += 1;
            self.counters.adv.attacker_bytes += super::body_bytes(body, &self.wire_sizes);
        }
        if !self.adv.victims.contains(&to) {
            return from_attacker.then_some(false);
        }
        let joined = |world: &FedWorld, room: RoomIndex| {
            world.servers[to as usize]
                .rooms
                .get(&room)
                .is_some_and(|state| state.joined)
        };
        let counters = &mut self.counters.adv;
        match body {
            Body::Send(pdus) | Body::AttackerSend(pdus) | Body::Push(pdus) => {
                let foreign: Vec<&std::sync::Arc<Value>> = pdus
                    .iter()
                    .filter(|pdu| {
                        pdu.get("room_id")
                            .and_then(Value::as_str)
                            .and_then(|room_id| self.room_of_id.get(room_id))
                            .is_none_or(|room| !joined(self, *room))
                    })
                    .collect();
                if foreign.is_empty() {
                    return from_attacker.then_some(false);
                }
                let counters = &mut self.counters.adv;
                counters.victim_requests += 1;
                counters.victim_requests_send += 1;
                counters.victim_pdus += foreign.len() as u64;
                counters.victim_bytes +=
                    foreign.iter().map(|pdu| json_bytes(pdu)).sum::<u64>() + 64;
                // The answer (an acknowledgement) is charged to the victim too.
                Some(true)
            }
            Body::NotaryQuery { .. } => from_attacker.then_some(false),
            Body::Key { slot, .. } => {
                if !self.adv.met_slots.contains(&(from, *slot)) {
                    return from_attacker.then_some(false);
                }
                counters.victim_requests += 1;
                counters.victim_requests_key += 1;
                counters.victim_bytes += super::body_bytes(body, &self.wire_sizes);
                Some(true)
            }
            Body::MakeJoin { room, .. }
            | Body::SendJoin { room, .. }
            | Body::GetMissing { room, .. }
            | Body::EventFetch { room, .. }
            | Body::Extremities { room, .. }
            | Body::Backfill { room, .. }
            | Body::StateIds { room, .. }
            | Body::State { room, .. } => {
                if joined(self, *room) {
                    return from_attacker.then_some(false);
                }
                let counters = &mut self.counters.adv;
                counters.victim_requests += 1;
                counters.victim_requests_other += 1;
                counters.victim_bytes += super::body_bytes(body, &self.wire_sizes);
                Some(true)
            }
        }
    }

    /// The answer to a request noted by [`FedWorld::note_arrival`] (`to_victim`: it was charged
    /// to a victim; else to the attacker that sent it).
    pub(super) fn note_answer(
        &mut self,
        to_victim: bool,
        from: ServerId,
        body_room: Option<RoomIndex>,
        bytes: u64,
    ) {
        if to_victim {
            self.counters.adv.victim_bytes += bytes;
        }
        if body_room.is_some_and(|room| self.adv.fake_joins.contains_key(&(from, room))) {
            self.counters.adv.attacker_bytes += bytes;
        }
    }

    /// RQ9's per-run figures: fake-claim joins completed and the amplification factor (victim
    /// bytes / attacker bytes; null without an attacker).
    pub(super) fn adversary_metrics(&self, metrics: &mut Map<String, Value>) {
        let completed = self
            .adv
            .fake_joins
            .keys()
            .filter(|(attacker, room)| {
                self.servers[*attacker as usize]
                    .rooms
                    .get(room)
                    .is_some_and(|state| state.joined)
            })
            .count();
        self.key_adversary_metrics(metrics);
        if self.adv.fake_joins.is_empty() {
            return;
        }
        metrics.insert("fake_domain_joins_completed".into(), json!(completed));
        let counters = &self.counters.adv;
        let factor = if counters.attacker_bytes == 0 {
            Value::Null
        } else {
            rounded(counters.victim_bytes as f64 / counters.attacker_bytes as f64)
        };
        metrics.insert("amplification_factor".into(), factor);
        // The victim's load from the start of the attack to the end of the run.
        let hours = self
            .adv
            .attack_started_ms
            .map(|started_ms| self.end_ms().saturating_sub(started_ms) as f64 / 3_600_000.0)
            .filter(|hours| *hours > 0.0);
        for (name, total) in [
            ("victim_requests_per_hour", counters.victim_requests),
            ("victim_bytes_per_hour", counters.victim_bytes),
        ] {
            let rate = hours.map_or(Value::Null, |hours| rounded(total as f64 / hours));
            metrics.insert(name.into(), rate);
        }
    }
}
