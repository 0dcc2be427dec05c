//! RQ4's churn, expanded into scripted actions when the world is built: servers that go away
//! for good after a random lifetime (`rooms.server_lifetime_mean`) and key rotations at random
//! intervals, some without re-signing (`rooms.key_rotation_mean`, `rooms.resign_probability`).
//! The world runs them like any `take-offline` / `rotate-key` action.

use std::collections::BTreeSet;

use crate::engine::SimRng;
use crate::net::ServerId;
use crate::scenario::{Duration, RoomAction, RoomActionKind, Rooms, ServerRef};

use super::RoomPlan;

/// The servers new to the federation: those a `join-late` action brings into a room. They start
/// with an empty key cache (they never fetched anyone's keys) and never go away.
pub(crate) fn newcomers(plans: &[RoomPlan]) -> BTreeSet<ServerId> {
    plans
        .iter()
        .flat_map(|plan| plan.late.iter().copied())
        .collect()
}

fn action(at_ms: u64, kind: RoomActionKind, server: ServerId, resign: Option<bool>) -> RoomAction {
    RoomAction {
        at: Duration(at_ms),
        kind,
        servers: vec![ServerRef::Index(server)],
        a: Vec::new(),
        b: Vec::new(),
        partition: None,
        room: None,
        count: None,
        user: None,
        pin_timestamp: false,
        resign,
        audience: Vec::new(),
        period: None,
        offset_ms: None,
        mode: None,
        victim: None,
        allow: None,
        deny: Vec::new(),
        allow_ip_literals: None,
    }
}

/// The churn actions of `config` for `seed`, in server then time order, all before `end_ms`.
/// Each server draws from its own streams (`server-lifetime`/server, `key-rotation`/server), so
/// adding servers changes no other server's draws. Room creators, newcomers and the notary never
/// go away.
pub(crate) fn churn_actions(
    config: &Rooms,
    seed: u64,
    plans: &[RoomPlan],
    end_ms: u64,
) -> Vec<RoomAction> {
    let exempt: BTreeSet<ServerId> = plans
        .iter()
        .map(|plan| plan.creator.0)
        .chain(newcomers(plans))
        .chain(
            config
                .notary
                .as_ref()
                .and_then(|notary| notary.index(config.servers)),
        )
        .collect();
    let mut actions = Vec::new();
    for server in 0..config.servers {
        let mut death_ms = u64::MAX;
        if let Some(mean) = config.server_lifetime_mean
            && !exempt.contains(&server)
        {
            let mut rng = SimRng::stream(seed, "server-lifetime", u64::from(server));
            death_ms = (rng.exponential(mean.ms() as f64) as u64).max(1);
            if death_ms <= end_ms {
                actions.push(action(death_ms, RoomActionKind::TakeOffline, server, None));
            }
        }
        if let Some(mean) = config.key_rotation_mean {
            let mut rng = SimRng::stream(seed, "key-rotation", u64::from(server));
            let resign_probability = config.resign_probability.unwrap_or(1.0);
            let mut at_ms = 0u64;
            loop {
                at_ms = at_ms.saturating_add((rng.exponential(mean.ms() as f64) as u64).max(1));
                if at_ms > end_ms || at_ms >= death_ms {
                    break;
                }
                let resign = rng.chance(resign_probability);
                actions.push(action(
                    at_ms,
                    RoomActionKind::RotateKey,
                    server,
                    Some(resign),
                ));
            }
        }
    }
    actions
}
