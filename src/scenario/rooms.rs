//! The optional `[rooms]` table: a federation of full homeservers sharing rooms (the room world,
//! `src/fed/`). When it is present `world::run_to_dir` runs the room world instead of the key
//! world, and the key-world tables (`federation`, `observers`, `phases`) are not used.

use serde::{Deserialize, Serialize};

use super::{DeadMode, Duration, Invalid, PartitionKind, Scenario, validate_network};
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
    /// Users of one server in one room: per planned member server, a count drawn from this
    /// (capped at the server's users; stream `room-members`/(room, server), drawn only when
    /// `max` > 1). The server's first user joins with `make_join`/`send_join`; the others, once
    /// their server is resident, with a plain join event sent over `/send`, as Matrix servers
    /// join further local users.
    #[serde(default = "one_user", skip_serializing_if = "CountSpec::is_one")]
    pub members_per_server: CountSpec,
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
    /// Mean rate of kicks per room (Poisson): the room's creator (its moderator) kicks a random
    /// joined member, whose server joins again `rejoin_after` later.
    #[serde(default, skip_serializing_if = "is_zero_rate")]
    pub kicks_per_room_per_day: f64,
    /// Mean rate of bans per room (Poisson): the creator bans a random joined member, unbans it
    /// `ban_duration` later, and the member's server joins again `rejoin_after` after that.
    #[serde(default, skip_serializing_if = "is_zero_rate")]
    pub bans_per_room_per_day: f64,
    /// Mean rate of power-level changes per room (Poisson): the creator sends an
    /// `m.room.power_levels` event raising a random joined member to 50 or back to the default.
    #[serde(default, skip_serializing_if = "is_zero_rate")]
    pub power_changes_per_room_per_day: f64,
    /// How long a kicked (or unbanned) member waits before joining again (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejoin_after: Option<Duration>,
    /// How long a ban lasts before the creator lifts it (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban_duration: Option<Duration>,
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
    /// Rooms (by index) created with `m.federate: false` in their create event: today an auth
    /// rule keeps other servers' senders out; under MSC4430 every server refuses all inbound
    /// federation for the room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unfederated_rooms: Vec<u32>,
    /// The last `bystanders` servers are in no planned room (victims of a fake `domain` claim,
    /// outside attackers); they only take part through scripted actions.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bystanders: u32,
    /// Whether servers send a room's events to domains claimed only by members whose link they
    /// have not verified (RQ9: `false` stops a fake `domain` claim from redirecting room traffic
    /// to a victim, at the price of not pushing to members whose link is still pending).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub fan_out_to_unverified_links: bool,
    /// RQ4 churn: if set, every server except the rooms' creators and the late joiners goes
    /// offline for good (connections refused) after an exponentially distributed lifetime with
    /// this mean (random stream `server-lifetime`/server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_lifetime_mean: Option<Duration>,
    /// RQ4 key rotation: if set, every server rotates its signing key at exponentially
    /// distributed intervals with this mean while it is alive (stream `key-rotation`/server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation_mean: Option<Duration>,
    /// The chance that such a rotation re-signs the server's member events (default 1: the
    /// MSC's SHOULD); the rest are "rotation without re-signing".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resign_probability: Option<f64>,
    /// RQ4 notary: this server also answers `/key/v2/query` for other domains from its own key
    /// cache (the last response it holds, however old) — for a share `notary_coverage` of the
    /// domains (default all; stream `notary-coverage`/domain). A server whose direct key fetch
    /// fails asks it once per domain and keeps what it gets as historic keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notary: Option<ServerRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notary_coverage: Option<f64>,
    /// RQ5: the chance that a workload message replies (`m.relates_to.m.in_reply_to`) to the
    /// latest message its sender's server shows (stream `room-replies`/room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_probability: Option<f64>,
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

fn is_true(value: &bool) -> bool {
    *value
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn is_zero_rate(value: &f64) -> bool {
    *value == 0.0
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

impl CountSpec {
    /// Whether it always draws 1 (the default of the per-server counts).
    pub fn is_one(&self) -> bool {
        self.min == 1 && self.max == 1
    }
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
    /// RQ14: each of `servers` co-signs a second member key claiming the same localpart as its
    /// user in `room`; that member joins and sends `count` messages (member-key rooms).
    DuplicateIdentity,
    /// The room's creator (its moderator) sends an `m.room.server_acl` state event to `room`
    /// with `allow` (default `["*"]`), `deny` and `allow_ip_literals`.
    SetAcl,
    /// Amplification (RQ9): a user of each of `servers` joins `room` (every room if omitted)
    /// with a member event whose `content.domain` claims `victim`; residents then push the room's
    /// traffic to, and fetch keys from, the victim.
    FakeDomainJoin,
    /// RQ10: the `servers` serve their real key to `audience` and a second key under the same
    /// key ID to every other server (the key layer's `KeyPublisher::response_for`).
    LyingServer,
    /// RQ8: the `servers` move their key in and out of `old_verify_keys` every `period`.
    KeyFlapping,
    /// The `servers`' clocks are off by `offset_ms` (positive = ahead): their key caches judge
    /// validity by it and their events carry it in `origin_server_ts`.
    ClockSkew,
    /// The `servers` lose their signing key (a new key under the same ID, no old keys kept);
    /// they re-sign their users' member events with the new one.
    LoseKey,
    /// The `servers` lose their database: their key caches forget every key (and re-signed
    /// member events are gone).
    LoseDatabase,
    /// RQ11: the `servers`' domains expire: the servers stop, and the names answer as `mode`
    /// says (default `not-found`: a parking page answers 404).
    ExpireDomain,
    /// RQ11: a new owner registers the `servers`' domains and runs a fresh server there: a new
    /// key under the same key ID, no rooms, no events.
    Reregister,
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
    /// `ban`, `leave`, `send`: which of each server's planned users in the room acts or is
    /// acted on, by position among them (0 = the server's first user, the default; see
    /// `rooms.members_per_server`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    /// `attacker-send`: pin `origin_server_ts` at the time of the compromise (inside the old
    /// key's validity) instead of the current time.
    #[serde(default)]
    pub pin_timestamp: bool,
    /// `rotate-key`: whether the origin re-signs its users' member events (default true;
    /// member events of compromised member keys are never re-signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resign: Option<bool>,
    /// `lying-server`: the servers shown the real key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<ServerRef>,
    /// `key-flapping`: how often the key swaps in and out of `old_verify_keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Duration>,
    /// `clock-skew`: the clock offset in milliseconds (positive = ahead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_ms: Option<i64>,
    /// `expire-domain`: how the expired names answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DeadMode>,
    /// `fake-domain-join`: the server the fake `domain` claim names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub victim: Option<ServerRef>,
    /// `set-acl`: the ACL's `allow` globs (default `["*"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// `set-acl`: the ACL's `deny` globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// `set-acl`: the ACL's `allow_ip_literals` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_ip_literals: Option<bool>,
}

/// Whether rooms of the policy preset `name` use member keys (every preset but P0).
fn rooms_policy_has_member_keys(name: &str) -> bool {
    name != "P0"
}

/// Validates a scenario with a `[rooms]` table (the key-world tables are not used).
pub(super) fn validate(scenario: &Scenario, rooms: &Rooms) -> Result<(), Invalid> {
    validate_network(&scenario.network)?;
    // The key world's tables would be accepted and silently not run: refuse them.
    let key_world_only = [
        (
            scenario.network.random_partitions.rate_per_day > 0.0,
            "network.random_partitions",
            "random partitions are not modelled in a room-world scenario; script them with \
             [[rooms.actions]] kind = \"partition\" / \"heal\"",
        ),
        (
            !scenario.phases.is_empty(),
            "phases",
            "[[phases]] run only in key-world scenarios; a room-world scenario scripts its \
             faults with [[rooms.actions]]",
        ),
        (
            !scenario.observers.is_empty(),
            "observers",
            "[[observers]] belong to key-world scenarios; a room-world scenario's servers are \
             set by [rooms]",
        ),
        (
            !scenario.federation.domain_groups.is_empty() || scenario.federation.notaries > 0,
            "federation",
            "[federation] belongs to key-world scenarios; a room-world scenario's servers are \
             set by [rooms]",
        ),
    ];
    if let Some((_, path, problem)) = key_world_only.iter().find(|(present, ..)| *present) {
        return Err(((*path).to_owned(), (*problem).to_owned()));
    }
    if rooms.servers < 2 {
        return Err(("rooms.servers".to_owned(), "must be at least 2".to_owned()));
    }
    if rooms.rooms == 0 {
        return Err(("rooms.rooms".to_owned(), "must be at least 1".to_owned()));
    }
    validate_count("rooms.users_per_server", &rooms.users_per_server, u32::MAX)?;
    validate_count(
        "rooms.members_per_server",
        &rooms.members_per_server,
        u32::MAX,
    )?;
    if rooms.bystanders >= rooms.servers - 1 {
        return Err((
            "rooms.bystanders".to_owned(),
            format!(
                "{} leaves fewer than 2 of the {} servers for rooms",
                rooms.bystanders, rooms.servers
            ),
        ));
    }
    validate_count(
        "rooms.servers_per_room",
        &rooms.servers_per_room,
        rooms.servers - rooms.bystanders,
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
        ("rooms.kicks_per_room_per_day", rooms.kicks_per_room_per_day),
        ("rooms.bans_per_room_per_day", rooms.bans_per_room_per_day),
        (
            "rooms.power_changes_per_room_per_day",
            rooms.power_changes_per_room_per_day,
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
    for (index, room) in rooms.unfederated_rooms.iter().enumerate() {
        if *room >= rooms.rooms {
            return Err((
                format!("rooms.unfederated_rooms[{index}]"),
                format!(
                    "room {room} does not exist (allowed: 0 to {})",
                    rooms.rooms - 1
                ),
            ));
        }
    }
    for (path, mean) in [
        ("rooms.server_lifetime_mean", rooms.server_lifetime_mean),
        ("rooms.key_rotation_mean", rooms.key_rotation_mean),
    ] {
        if let Some(mean) = mean
            && mean.ms() < crate::engine::time::MINUTE_MS
        {
            return Err((path.to_owned(), "must be at least 1m".to_owned()));
        }
    }
    for (path, probability) in [
        ("rooms.resign_probability", rooms.resign_probability),
        ("rooms.reply_probability", rooms.reply_probability),
        ("rooms.notary_coverage", rooms.notary_coverage),
    ] {
        if let Some(probability) = probability
            && !(probability.is_finite() && (0.0..=1.0).contains(&probability))
        {
            return Err((
                path.to_owned(),
                format!("{probability} is not a probability (allowed: 0.0 to 1.0)"),
            ));
        }
    }
    if let Some(notary) = &rooms.notary
        && notary.index(rooms.servers).is_none()
    {
        return Err((
            "rooms.notary".to_owned(),
            format!(
                "{notary} names no server (allowed: 0 to {} or hs<index>.example)",
                rooms.servers - 1
            ),
        ));
    }
    for (index, action) in rooms.actions.iter().enumerate() {
        validate_action(&format!("rooms.actions[{index}]"), action, scenario, rooms)?;
    }
    super::validate_metrics(scenario)
}

/// The kebab-case name of an action kind (as scenario files spell it).
fn kind_name(kind: RoomActionKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
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
    // Fields a kind does not read would be ignored in silence: refuse them, naming the kinds
    // that do read them.
    let partition_only: &[Kind] = &[Kind::Partition];
    let with_room: &[Kind] = &[
        Kind::JoinLate,
        Kind::AttackerSend,
        Kind::SetAcl,
        Kind::FakeDomainJoin,
        Kind::DuplicateIdentity,
        Kind::Ban,
        Kind::Leave,
        Kind::Send,
    ];
    for (field, present, used_by) in [
        ("a", !action.a.is_empty(), partition_only),
        ("b", !action.b.is_empty(), partition_only),
        ("partition", action.partition.is_some(), partition_only),
        ("room", action.room.is_some(), with_room),
        (
            "count",
            action.count.is_some(),
            &[Kind::Send, Kind::AttackerSend, Kind::DuplicateIdentity],
        ),
        ("pin_timestamp", action.pin_timestamp, &[Kind::AttackerSend]),
        ("resign", action.resign.is_some(), &[Kind::RotateKey]),
    ] {
        if present && !used_by.contains(&action.kind) {
            let users: Vec<String> = used_by.iter().map(|kind| kind_name(*kind)).collect();
            return Err((
                format!("{path}.{field}"),
                format!(
                    "not used by kind {:?} (used by: {})",
                    kind_name(action.kind),
                    users.join(", ")
                ),
            ));
        }
    }
    if matches!(action.kind, Kind::Partition | Kind::Heal | Kind::SetAcl)
        && !action.servers.is_empty()
    {
        return Err((
            format!("{path}.servers"),
            format!(
                "not used by kind {:?} (a partition cuts `a` from `b`, a heal ends every \
                 partition, an ACL is sent by the room's creator)",
                kind_name(action.kind)
            ),
        ));
    }
    for (field, present, kind) in [
        ("audience", !action.audience.is_empty(), Kind::LyingServer),
        ("period", action.period.is_some(), Kind::KeyFlapping),
        ("offset_ms", action.offset_ms.is_some(), Kind::ClockSkew),
        ("mode", action.mode.is_some(), Kind::ExpireDomain),
    ] {
        if present && action.kind != kind {
            return Err((
                format!("{path}.{field}"),
                format!("is only for {} actions", kind_name(kind)),
            ));
        }
    }
    for (index, server) in action.audience.iter().enumerate() {
        if server.index(rooms.servers).is_none() {
            return Err((
                format!("{path}.audience[{index}]"),
                format!(
                    "{server} names no server (allowed: 0 to {} or hs<index>.example)",
                    rooms.servers - 1
                ),
            ));
        }
    }
    match action.kind {
        Kind::KeyFlapping
            if action
                .period
                .is_none_or(|period| period.ms() < crate::engine::time::SECOND_MS) =>
        {
            return Err((
                format!("{path}.period"),
                "a key-flapping action needs a period of at least 1s".to_owned(),
            ));
        }
        Kind::ClockSkew => match action.offset_ms {
            Some(offset) if offset.unsigned_abs() <= 365 * crate::engine::time::DAY_MS => {}
            Some(offset) => {
                return Err((
                    format!("{path}.offset_ms"),
                    format!("{offset} is out of range (allowed: -365 to +365 days in ms)"),
                ));
            }
            None => {
                return Err((
                    format!("{path}.offset_ms"),
                    "a clock-skew action needs offset_ms".to_owned(),
                ));
            }
        },
        Kind::ExpireDomain if action.mode == Some(DeadMode::Status) => {
            return Err((
                format!("{path}.mode"),
                "status is not supported here (allowed: no-answer, not-found, refused)".to_owned(),
            ));
        }
        _ => {}
    }
    if let Some(user) = action.user {
        if !matches!(action.kind, Kind::Ban | Kind::Leave | Kind::Send) {
            return Err((
                format!("{path}.user"),
                "is only for ban, leave and send actions".to_owned(),
            ));
        }
        if user >= rooms.members_per_server.max {
            return Err((
                format!("{path}.user"),
                format!(
                    "{user} is out of range (allowed: 0 to {}, below rooms.members_per_server.max)",
                    rooms.members_per_server.max - 1
                ),
            ));
        }
    }
    let acl_fields =
        action.allow.is_some() || !action.deny.is_empty() || action.allow_ip_literals.is_some();
    if acl_fields && action.kind != Kind::SetAcl {
        return Err((
            format!("{path}.kind"),
            "allow, deny and allow_ip_literals are only for set-acl actions".to_owned(),
        ));
    }
    for (field, globs) in [
        ("allow", action.allow.as_deref().unwrap_or_default()),
        ("deny", action.deny.as_slice()),
    ] {
        for (index, glob) in globs.iter().enumerate() {
            if glob.trim().is_empty() || glob.contains(char::is_whitespace) {
                return Err((
                    format!("{path}.{field}[{index}]"),
                    format!("{glob:?} is not a server name glob"),
                ));
            }
        }
    }
    if let Some(victim) = &action.victim {
        if action.kind != Kind::FakeDomainJoin {
            return Err((
                format!("{path}.victim"),
                "is only for fake-domain-join actions".to_owned(),
            ));
        }
        let Some(index) = victim.index(rooms.servers) else {
            return Err((
                format!("{path}.victim"),
                format!(
                    "{victim} names no server (allowed: 0 to {} or hs<index>.example)",
                    rooms.servers - 1
                ),
            ));
        };
        if action
            .servers
            .iter()
            .any(|server| server.index(rooms.servers) == Some(index))
        {
            return Err((
                format!("{path}.victim"),
                format!("{victim} is also one of the attacking servers"),
            ));
        }
    } else if action.kind == Kind::FakeDomainJoin {
        return Err((
            format!("{path}.victim"),
            "a fake-domain-join needs the victim server its claim names".to_owned(),
        ));
    }
    match action.kind {
        Kind::Partition if action.a.is_empty() => Err((
            format!("{path}.a"),
            "a partition needs at least one server in a".to_owned(),
        )),
        Kind::Heal | Kind::Partition => Ok(()),
        Kind::Ban | Kind::Leave | Kind::Send | Kind::SetAcl | Kind::DuplicateIdentity
            if action.room.is_none() =>
        {
            Err((
                format!("{path}.room"),
                "is required by this kind of action".to_owned(),
            ))
        }
        Kind::DuplicateIdentity if !rooms_policy_has_member_keys(&rooms.policy) => Err((
            format!("{path}.kind"),
            "duplicate-identity needs member keys (a policy other than P0)".to_owned(),
        )),
        Kind::SetAcl => Ok(()),
        _ if action.servers.is_empty() => Err((
            format!("{path}.servers"),
            "needs at least one server".to_owned(),
        )),
        _ => Ok(()),
    }
}
