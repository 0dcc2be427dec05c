//! The optional `[rooms]` table: a federation of full homeservers sharing rooms (the room world,
//! `src/fed/`). When it is present `world::run_to_dir` runs the room world instead of the key
//! world, and the key-world tables (`federation`, `observers`, `phases`) are not used.

use serde::{Deserialize, Serialize};

use super::{Duration, Invalid, PartitionKind, Scenario, validate_network};
use crate::engine::time::format_duration_ms;

/// The policy names `rooms.policy` accepts: the room-layer presets of questions.md §2.3.
pub const ROOM_POLICY_NAMES: &[&str] = &[
    "P0", "P1", "P1a", "P1b", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9",
];

/// The room world's knobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rooms {
    /// Homeservers; each publishes its own keys under `hs<index>.example`.
    pub servers: u32,
    /// Users per server.
    #[serde(default = "one_user")]
    pub users_per_server: CountSpec,
    /// Rooms in the world.
    pub rooms: u32,
    /// Servers per room (heavy-tailed with an `exponent`), drawn at random; the member with the
    /// smallest server index creates the room and holds its power.
    pub servers_per_room: CountSpec,
    /// A policy preset (P0..P9): P0 = room version 12 with user-ID senders and on-demand key
    /// fetches; the others = the MSC4430 room version with member keys.
    #[serde(default = "default_policy")]
    pub policy: String,
    /// The `valid_until_ts` every server publishes ahead of its signing time.
    #[serde(default = "one_day")]
    pub key_lifetime: Duration,
    /// Mean message rate per room (Poisson).
    #[serde(default)]
    pub messages_per_room_per_hour: f64,
    /// Mean rate of topic changes per room (by the creator, Poisson).
    #[serde(default)]
    pub topic_changes_per_room_per_day: f64,
    /// Servers join their rooms at uniform times within this window after the room is created.
    #[serde(default = "one_hour")]
    pub join_window: Duration,
    /// Rooms are created at uniform times within this window from the start.
    #[serde(default = "one_minute")]
    pub create_window: Duration,
    /// If set, every server sends its forward extremities to the other residents of each room at
    /// this interval (MSC4242-style "eventual delivery"); receivers fetch what they lack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extremity_exchange_interval: Option<Duration>,
    /// How often a failed `/send` transaction is retried before its PDUs are given up.
    #[serde(default = "default_transaction_retries")]
    pub transaction_retries: u32,
    /// Share the evaluation of events (checks 4-5, states) and current states across servers
    /// (`room::shared`); results are identical either way, only speed differs.
    #[serde(default = "yes")]
    pub share_facts: bool,
    /// How a joining server gets the room: `history` (the default for now; fedsim's earlier
    /// simplification: the `send_join` answer carries the resident's whole held history, which
    /// the joiner replays) or `state` (the spec's: the answer carries the state before the join
    /// and its auth chain, stored as outliers; the join event is the joiner's first timeline
    /// event, and it fetches `backfill_limit` earlier events with `/backfill`).
    #[serde(default, skip_serializing_if = "JoinMode::is_history")]
    pub join: JoinMode,
    /// Under `join = "state"`: how many events before the join a joiner backfills (0 = none;
    /// default [`DEFAULT_BACKFILL_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill_limit: Option<u32>,
    /// Scripted actions.
    #[serde(default)]
    pub actions: Vec<RoomAction>,
}

/// Events a joiner backfills by default: one screenful of history, what a client shows when
/// a room is opened (Synapse backfills in pages of this order when a client paginates), not
/// the room's whole past.
pub const DEFAULT_BACKFILL_LIMIT: u32 = 50;

/// How a joining server gets the room (`rooms.join`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinMode {
    /// The resident's whole held history, replayed by the joiner.
    #[default]
    History,
    /// The state and auth chain as outliers, then `/backfill`.
    State,
}

impl JoinMode {
    fn is_history(&self) -> bool {
        *self == JoinMode::History
    }
}

impl Rooms {
    /// The backfill limit in effect.
    pub fn backfill_limit(&self) -> u32 {
        self.backfill_limit.unwrap_or(DEFAULT_BACKFILL_LIMIT)
    }
}

fn yes() -> bool {
    true
}

fn one_user() -> CountSpec {
    CountSpec {
        min: 1,
        max: 1,
        exponent: None,
    }
}

fn default_policy() -> String {
    "P1".to_owned()
}

fn one_day() -> Duration {
    Duration(crate::engine::time::DAY_MS)
}

fn one_hour() -> Duration {
    Duration(crate::engine::time::HOUR_MS)
}

fn one_minute() -> Duration {
    Duration(crate::engine::time::MINUTE_MS)
}

fn default_transaction_retries() -> u32 {
    8
}

/// A count drawn per item: uniform over `min..=max`, or a bounded Zipf law
/// (P(k) proportional to k^-exponent on `min..=max`) when `exponent` is given.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountSpec {
    pub min: u32,
    pub max: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exponent: Option<f64>,
}

/// A server named by its index or its name (`hs3.example`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerRef {
    Index(u32),
    Name(String),
}

impl ServerRef {
    /// The server index, if it names one of `servers` servers.
    pub fn index(&self, servers: u32) -> Option<u32> {
        match self {
            ServerRef::Index(index) => (*index < servers).then_some(*index),
            ServerRef::Name(name) => name
                .strip_prefix("hs")
                .and_then(|rest| rest.strip_suffix(".example"))
                .and_then(|digits| digits.parse::<u32>().ok())
                .filter(|index| *index < servers && name == &server_name(*index)),
        }
    }
}

impl std::fmt::Display for ServerRef {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerRef::Index(index) => write!(formatter, "{index}"),
            ServerRef::Name(name) => write!(formatter, "{name:?}"),
        }
    }
}

/// The name of server `index`.
pub fn server_name(index: u32) -> String {
    format!("hs{index}.example")
}

/// What a scripted action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoomActionKind {
    /// Split `a` from `b` (everyone else if `b` is empty).
    Partition,
    /// End every partition.
    Heal,
    /// The `servers` rotate their signing keys (and re-sign their users' member events).
    RotateKey,
    /// An attacker obtains the `servers`' current signing keys and their users' member keys.
    Compromise,
    /// The attacker sends `count` messages as each compromised server's users.
    AttackerSend,
    /// The `servers` go down (connections refused).
    TakeOffline,
    /// The `servers` come back.
    BringOnline,
    /// The `servers` join `room` (or every room planned for them) at this time instead of
    /// during the join window.
    JoinLate,
    /// The room's creator bans the users of `servers` from `room`.
    Ban,
    /// The users of `servers` leave `room`.
    Leave,
    /// The users of `servers` send `count` messages in `room`.
    Send,
}

/// One scripted action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomAction {
    pub at: Duration,
    pub kind: RoomActionKind,
    /// The servers acted on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerRef>,
    /// Partition side a.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub a: Vec<ServerRef>,
    /// Partition side b (empty: every server not in a).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub b: Vec<ServerRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionKind>,
    /// The room index (actions that need one; `join-late` and `attacker-send` default to all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<u32>,
    /// Messages to send (`send`, `attacker-send`; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// `attacker-send`: pin `origin_server_ts` at the time of the compromise (inside the old
    /// key's validity) instead of the current time.
    #[serde(default)]
    pub pin_timestamp: bool,
    /// `rotate-key`: whether the origin re-signs its users' member events (default true;
    /// member events of compromised member keys are never re-signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resign: Option<bool>,
}

/// Validates a scenario with a `[rooms]` table (the key-world tables are not used).
pub(super) fn validate(scenario: &Scenario, rooms: &Rooms) -> Result<(), Invalid> {
    validate_network(&scenario.network)?;
    if rooms.servers < 2 {
        return Err(("rooms.servers".to_owned(), "must be at least 2".to_owned()));
    }
    if rooms.rooms == 0 {
        return Err(("rooms.rooms".to_owned(), "must be at least 1".to_owned()));
    }
    validate_count("rooms.users_per_server", &rooms.users_per_server, u32::MAX)?;
    validate_count(
        "rooms.servers_per_room",
        &rooms.servers_per_room,
        rooms.servers,
    )?;
    if !ROOM_POLICY_NAMES.contains(&rooms.policy.as_str()) {
        return Err((
            "rooms.policy".to_owned(),
            format!(
                "unknown policy {:?} (allowed: {})",
                rooms.policy,
                ROOM_POLICY_NAMES.join(", ")
            ),
        ));
    }
    if rooms.key_lifetime.ms() < crate::engine::time::MINUTE_MS {
        return Err((
            "rooms.key_lifetime".to_owned(),
            "must be at least 1m".to_owned(),
        ));
    }
    for (path, rate) in [
        (
            "rooms.messages_per_room_per_hour",
            rooms.messages_per_room_per_hour,
        ),
        (
            "rooms.topic_changes_per_room_per_day",
            rooms.topic_changes_per_room_per_day,
        ),
    ] {
        if !(rate.is_finite() && rate >= 0.0) {
            return Err((path.to_owned(), format!("{rate} must be a number >= 0")));
        }
    }
    if let Some(interval) = rooms.extremity_exchange_interval
        && interval.ms() < crate::engine::time::SECOND_MS
    {
        return Err((
            "rooms.extremity_exchange_interval".to_owned(),
            "must be at least 1s".to_owned(),
        ));
    }
    for (index, action) in rooms.actions.iter().enumerate() {
        validate_action(&format!("rooms.actions[{index}]"), action, scenario, rooms)?;
    }
    if scenario.metrics.sample_interval.ms() == 0 {
        return Err((
            "metrics.sample_interval".to_owned(),
            "must be longer than 0ms".to_owned(),
        ));
    }
    Ok(())
}

fn validate_count(path: &str, count: &CountSpec, largest: u32) -> Result<(), Invalid> {
    if count.min == 0 || count.min > count.max {
        return Err((path.to_owned(), "needs 1 <= min <= max".to_owned()));
    }
    if count.max > largest {
        return Err((
            format!("{path}.max"),
            format!("{} is more than the {largest} servers", count.max),
        ));
    }
    if let Some(exponent) = count.exponent
        && !(exponent.is_finite() && (0.0..=10.0).contains(&exponent))
    {
        return Err((
            format!("{path}.exponent"),
            format!("{exponent} is out of range (allowed: 0.0 to 10.0)"),
        ));
    }
    Ok(())
}

fn validate_action(
    path: &str,
    action: &RoomAction,
    scenario: &Scenario,
    rooms: &Rooms,
) -> Result<(), Invalid> {
    if action.at.ms() > scenario.duration.ms() {
        return Err((
            format!("{path}.at"),
            format!(
                "{} is after the end of the run ({})",
                format_duration_ms(action.at.ms()),
                format_duration_ms(scenario.duration.ms())
            ),
        ));
    }
    for (field, list) in [
        ("servers", &action.servers),
        ("a", &action.a),
        ("b", &action.b),
    ] {
        for (index, server) in list.iter().enumerate() {
            if server.index(rooms.servers).is_none() {
                return Err((
                    format!("{path}.{field}[{index}]"),
                    format!(
                        "{server} names no server (allowed: 0 to {} or hs<index>.example)",
                        rooms.servers - 1
                    ),
                ));
            }
        }
    }
    if let Some(room) = action.room
        && room >= rooms.rooms
    {
        return Err((
            format!("{path}.room"),
            format!(
                "room {room} does not exist (allowed: 0 to {})",
                rooms.rooms - 1
            ),
        ));
    }
    use RoomActionKind as Kind;
    match action.kind {
        Kind::Partition if action.a.is_empty() => Err((
            format!("{path}.a"),
            "a partition needs at least one server in a".to_owned(),
        )),
        Kind::Heal | Kind::Partition => Ok(()),
        Kind::Ban | Kind::Leave | Kind::Send if action.room.is_none() => Err((
            format!("{path}.room"),
            "is required by this kind of action".to_owned(),
        )),
        _ if action.servers.is_empty() => Err((
            format!("{path}.servers"),
            "needs at least one server".to_owned(),
        )),
        _ => Ok(()),
    }
}
