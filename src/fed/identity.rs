//! RQ14 in the room world: duplicate identities. A `duplicate-identity` action makes a server
//! co-sign a second member key claiming the localpart of its user in a room (a user who made a
//! new member key, a moved identity, or a lying domain); the second member joins and talks.
//! Nothing in the link check ties a user ID to one member key, so every observer that verifies
//! both links shows two members as the same user ID. The figures at the end: per server and
//! room, the user IDs its `member_info` (verified links) shows for more than one member key
//! (`room::metrics::identity_collisions`).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::metrics::rounded;
use crate::net::ServerId;
use crate::room::metrics::identity_collisions;
use crate::room::policy::ArrivalPath;
use crate::server::absolute_ms;

use super::{FedWorld, RoomIndex, build};

/// The user index of the `n`-th duplicate member of a server in a room (beyond any real user).
const DUPLICATE_USER_BASE: u32 = 1 << 20;

impl FedWorld {
    /// `server` co-signs a new member key claiming its planned user's localpart in `room`; the
    /// new member joins (a local join: the server is resident) and sends `count` messages.
    pub(super) fn duplicate_identity(&mut self, server: ServerId, room: RoomIndex, count: u32) {
        let version = self.version;
        let now_ms = self.queue.now_ms();
        if !version.member_keys || !self.is_up(server) {
            return;
        }
        let Some(&(_, user)) = self.plans[room as usize]
            .members
            .iter()
            .find(|(member, _)| *member == server)
        else {
            return;
        };
        let hs = &mut self.servers[server as usize];
        let Some(state) = hs.rooms.get_mut(&room).filter(|state| state.joined) else {
            return;
        };
        let duplicate = DUPLICATE_USER_BASE
            + state
                .member_keys
                .keys()
                .filter(|index| **index >= DUPLICATE_USER_BASE)
                .count() as u32;
        let key = build::member_key(self.seed, room, server, duplicate);
        let sender = crate::matrix::member_keys::member_key_user_id(&key.verifying_key());
        state.member_keys.insert(duplicate, key);
        let content = json!({
            "membership": "join",
            "localpart": hs.users[user as usize],
            "domain": hs.name,
        });
        let Ok(draft) = state.state.draft_event(
            &sender,
            "m.room.member",
            Some(&sender),
            content,
            absolute_ms(now_ms),
        ) else {
            return;
        };
        self.refresh_own_keys(server);
        let Some(pdu) = self.sign(server, room, duplicate, draft) else {
            return;
        };
        let receipt = self.process_now(server, room, &pdu, ArrivalPath::Local, server);
        if !matches!(
            receipt.verdict,
            crate::room::pipeline::Verdict::Accepted { .. }
        ) {
            return;
        }
        self.counters.state_events_sent += 1;
        self.fan_out(server, room, &pdu, &[]);
        for n in 0..count {
            self.send_local(
                server,
                room,
                duplicate,
                "m.room.message",
                None,
                json!({"msgtype": "m.text", "body": format!("duplicate {n} at {now_ms}")}),
            );
        }
    }
}

/// Adds RQ14's figures when the scenario has a `duplicate-identity` action: over every (server,
/// room joined), how many show some user ID for two or more verified member keys.
pub(super) fn identity_metrics(world: &FedWorld, metrics: &mut Map<String, Value>) {
    let has_action = world
        .config
        .actions
        .iter()
        .any(|action| action.kind == crate::scenario::RoomActionKind::DuplicateIdentity);
    if !has_action {
        return;
    }
    let affected: std::collections::BTreeSet<RoomIndex> = world
        .config
        .actions
        .iter()
        .filter(|action| action.kind == crate::scenario::RoomActionKind::DuplicateIdentity)
        .filter_map(|action| action.room)
        .collect();
    let mut server_rooms = 0u64;
    let mut colliding = 0u64;
    let mut collisions = 0u64;
    let (mut affected_server_rooms, mut affected_colliding) = (0u64, 0u64);
    for server in &world.servers {
        for (room, state) in server.rooms.iter().filter(|(_, state)| state.joined) {
            server_rooms += 1;
            let in_affected = affected.contains(room);
            affected_server_rooms += u64::from(in_affected);
            let member_info: BTreeMap<String, Option<String>> = state
                .links
                .links()
                .map(|link| (link.member_key.to_string(), link.user_id()))
                .collect();
            let found = identity_collisions(&member_info);
            colliding += u64::from(!found.is_empty());
            affected_colliding += u64::from(in_affected && !found.is_empty());
            collisions += found.len() as u64;
        }
    }
    metrics.insert("identity_server_rooms".into(), server_rooms.into());
    metrics.insert("identity_colliding_server_rooms".into(), colliding.into());
    metrics.insert("identity_collisions".into(), collisions.into());
    metrics.insert(
        "identity_collision_share_in_affected_rooms".into(),
        if affected_server_rooms == 0 {
            Value::Null
        } else {
            rounded(affected_colliding as f64 / affected_server_rooms as f64)
        },
    );
    metrics.insert(
        "identity_collision_share".into(),
        if server_rooms == 0 {
            Value::Null
        } else {
            rounded(colliding as f64 / server_rooms as f64)
        },
    );
}
