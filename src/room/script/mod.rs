//! Scripted reproductions (issue 5 item 9): a small TOML language over the hand-fed
//! [`testbed`](super::testbed) — servers under policy presets, users, a room, and steps that
//! create, join, send, ban, partition, heal, deliver, exchange forward extremities, rotate keys,
//! take servers offline, compromise users and let servers join late — followed by checks, each
//! expected to pass or to fail as the design predicts. `fedsim repro FILE` runs one.
//!
//! ```toml
//! [room]
//! policy = "P0"                 # the room-layer preset; the room version comes from it
//!
//! [[servers]]
//! name = "a.example"            # optional: policy = "P2", late = true, key_validity_ms = 10000
//!
//! [[users]]
//! name = "alice"
//! server = "a.example"
//!
//! [[steps]]
//! action = "create"             # the first step; names `NAME`, `NAME.join`, `NAME.join_rules`
//! user = "carol"
//! name = "create"               # every event step names its event (default: ACTION + index)
//! at_ms = 1000                  # optional: default previous + 1000 (the first: 1000)
//!
//! [[checks]]
//! kind = "state-has-membership"
//! server = "b.example"
//! user = "alice"
//! membership = "ban"
//! at = "healed"                 # optional: a `checkpoint` step; default the end of the script
//! expect = "fail"               # what the design predicts: "pass" (default) or "fail"
//! ```
//!
//! Steps (`action`, then the fields each takes):
//! - `create {user}`: the user's server creates the room (public join rule).
//! - `join {user}`, `leave {user}`: the user's own membership, built on its server's view.
//! - `send {user, body?, reply_to?, attacker?, via?}`: an `m.room.message`; `reply_to` names an
//!   earlier event; `attacker = true` (after `compromise`) builds it with the stolen keys on the
//!   view of `via` (default the user's server) without the user's server taking part.
//! - `ban {user, target, reason?}`: `user` bans `target`.
//! - `partition {groups}`: every server in exactly one group; only servers in the same group
//!   reach each other. `heal`: everyone reaches everyone again.
//! - `deliver {keep_undeliverable?}`: every pending transaction, in order, to its destination if
//!   the origin reaches it (an event with unknown parents is completed by a
//!   `/get_missing_events` to the origin); the others are dropped — the sender gave up, there is
//!   no catch-up — unless `keep_undeliverable = true`.
//! - `exchange-extremities`: MSC4242's eventual delivery — every server tells every server it
//!   reaches its forward extremities; the receiver fetches what it lacks from the teller.
//! - `rotate-key {server, notify?}`: a new signing key; the old one moves to `old_verify_keys`;
//!   the server re-signs its users' member events. With `notify` (default true) every server
//!   that reaches it re-fetches its keys at once and re-queries the re-signed member events;
//!   the others notice when the keys they hold expire.
//! - `take-offline {server}`, `bring-online {server}`.
//! - `compromise {user}`: an attacker now holds the user's keys (see `send`).
//! - `late-join {user, via}`: the user's server (declared `late = true`) fetches the keys it can
//!   reach, backfills the room from `via` and joins.
//! - `checkpoint {name}`: checks with `at = NAME` are evaluated here.
//!
//! Checks (`kind`, then fields): `state-has-membership {server, user, membership}`,
//! `visible {server, event}` (shown, labelled or not), `labelled {server, event}` (shown with an
//! "invalid handle" label), `hidden {server, event, reason?}`, `held {server, event}`,
//! `link-status {server, user, status}`, `same-state {servers}`,
//! `divergence-at-most {servers?, value}`, `orphans-at-most {server, value}`,
//! `always-properties {servers?}`, `verified-as {server, user, user_id}` (the user's member key
//! is shown as that verified user ID), `identity-collisions-at-most {server, count}` (user IDs
//! shown for two or more member keys); `servers` defaults to every server. A user may set
//! `localpart` (default its name) so that two member keys claim one user ID (RQ14).
//!
//! Errors name the file, the step or check (`steps[3].user`) and the problem, on one line.

pub mod output;
pub mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

use super::links::LinkStatus;
use super::policy::RoomPolicy;
use super::testbed::KEY_VALIDITY_MS;

/// A bad script: the file, where in it, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError {
    pub file: String,
    /// `steps[3].user`, `checks[0]`, `line 4, column 2`, or `-` for the whole file.
    pub path: String,
    pub problem: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}: {}", self.file, self.path, self.problem)
    }
}

impl std::error::Error for ScriptError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptSpec {
    room: RoomSpec,
    servers: Vec<ServerSpec>,
    users: Vec<UserSpec>,
    steps: Vec<StepSpec>,
    #[serde(default)]
    checks: Vec<CheckSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomSpec {
    policy: String,
    key_validity_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSpec {
    name: String,
    policy: Option<String>,
    #[serde(default)]
    late: bool,
    key_validity_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSpec {
    name: String,
    server: String,
    localpart: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    action: String,
    name: Option<String>,
    at_ms: Option<i64>,
    user: Option<String>,
    target: Option<String>,
    body: Option<String>,
    reply_to: Option<String>,
    attacker: Option<bool>,
    via: Option<String>,
    server: Option<String>,
    groups: Option<Vec<Vec<String>>>,
    keep_undeliverable: Option<bool>,
    notify: Option<bool>,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckSpec {
    kind: String,
    description: Option<String>,
    at: Option<String>,
    expect: Option<String>,
    server: Option<String>,
    servers: Option<Vec<String>>,
    user: Option<String>,
    membership: Option<String>,
    event: Option<String>,
    reason: Option<String>,
    status: Option<String>,
    value: Option<f64>,
    user_id: Option<String>,
    count: Option<u64>,
}

/// One server of a script.
#[derive(Debug, Clone)]
pub struct ServerDef {
    pub name: String,
    pub policy: RoomPolicy,
    /// Joins late: holds nothing (no events, no keys) until one of its users does `late-join`.
    pub late: bool,
    /// How long the key objects it publishes stay valid (ms after each fetch).
    pub key_validity_ms: i64,
}

/// One user of a script.
#[derive(Debug, Clone)]
pub struct UserDef {
    pub name: String,
    /// Index into [`Script::servers`].
    pub server: usize,
    /// The localpart its member events claim (default: the name). Two users with the same
    /// localpart on one server are two member keys claiming one user ID (RQ14).
    pub localpart: String,
}

/// What a step does (indices into [`Script::servers`] / [`Script::users`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create {
        user: usize,
    },
    Join {
        user: usize,
    },
    Leave {
        user: usize,
    },
    Send {
        user: usize,
        body: String,
        reply_to: Option<String>,
        attacker: bool,
        via: Option<usize>,
    },
    Ban {
        user: usize,
        target: usize,
        reason: Option<String>,
    },
    Partition {
        groups: Vec<Vec<usize>>,
    },
    Heal,
    Deliver {
        keep_undeliverable: bool,
    },
    ExchangeExtremities,
    RotateKey {
        server: usize,
        notify: bool,
    },
    TakeOffline {
        server: usize,
    },
    BringOnline {
        server: usize,
    },
    Compromise {
        user: usize,
    },
    LateJoin {
        user: usize,
        via: usize,
    },
    Checkpoint,
}

/// One validated step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Position in the file (`steps[index]`).
    pub index: usize,
    /// The `action` keyword as written.
    pub keyword: &'static str,
    pub action: Action,
    /// The event's name (event steps) or the checkpoint's name.
    pub name: Option<String>,
    pub at_ms: i64,
}

/// What a check asserts.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    StateHasMembership {
        server: usize,
        user: usize,
        membership: String,
    },
    Visible {
        server: usize,
        event: String,
    },
    Hidden {
        server: usize,
        event: String,
        reason: Option<String>,
    },
    Held {
        server: usize,
        event: String,
    },
    Labelled {
        server: usize,
        event: String,
    },
    LinkStatus {
        server: usize,
        user: usize,
        status: LinkStatus,
    },
    SameState {
        servers: Vec<usize>,
    },
    DivergenceAtMost {
        servers: Vec<usize>,
        value: f64,
    },
    OrphansAtMost {
        server: usize,
        value: f64,
    },
    AlwaysProperties {
        servers: Vec<usize>,
    },
    VerifiedAs {
        server: usize,
        user: usize,
        user_id: String,
    },
    IdentityCollisionsAtMost {
        server: usize,
        count: u64,
    },
}

/// One validated check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub index: usize,
    pub keyword: &'static str,
    pub kind: CheckKind,
    pub description: Option<String>,
    /// The checkpoint it is evaluated at; `None` = the end.
    pub at: Option<String>,
    /// `true` if the design predicts it passes.
    pub expect_pass: bool,
}

/// A parsed, validated script.
#[derive(Debug, Clone)]
pub struct Script {
    /// The file name without directory and extension (the default output folder's name).
    pub name: String,
    /// The path as given (for messages).
    pub file: String,
    pub servers: Vec<ServerDef>,
    pub users: Vec<UserDef>,
    pub steps: Vec<Step>,
    pub checks: Vec<Check>,
}

impl Script {
    /// The server index called `name`.
    pub fn server_index(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|server| server.name == name)
    }

    /// The user index called `name`.
    pub fn user_index(&self, name: &str) -> Option<usize> {
        self.users.iter().position(|user| user.name == name)
    }
}

const STEP_KEYWORDS: [&str; 15] = [
    "create",
    "join",
    "leave",
    "send",
    "ban",
    "partition",
    "heal",
    "deliver",
    "exchange-extremities",
    "rotate-key",
    "take-offline",
    "bring-online",
    "compromise",
    "late-join",
    "checkpoint",
];

const CHECK_KEYWORDS: [&str; 12] = [
    "state-has-membership",
    "visible",
    "hidden",
    "held",
    "labelled",
    "link-status",
    "same-state",
    "divergence-at-most",
    "orphans-at-most",
    "always-properties",
    "verified-as",
    "identity-collisions-at-most",
];

const MEMBERSHIPS: [&str; 5] = ["join", "leave", "ban", "invite", "knock"];

/// The hidden-reason labels a `hidden` check may name ([`super::metrics::HiddenReason::label`]).
const HIDDEN_REASONS: [&str; 6] = [
    "rejected-check-4",
    "rejected-check-5",
    "soft-failed-current-state",
    "soft-failed-link-pending",
    "soft-failed-link-unverified",
    "soft-failed-state-unresolvable",
];

/// The most servers a script may declare.
pub const MAX_SERVERS: usize = 100;

/// The first step's default time and the default gap between steps (ms).
pub const DEFAULT_STEP_MS: i64 = 1_000;

/// Reads and validates the script at `path`.
pub fn load(path: &str) -> Result<Script, ScriptError> {
    let text = std::fs::read_to_string(path).map_err(|error| ScriptError {
        file: path.to_owned(),
        path: "-".to_owned(),
        problem: format!("cannot read: {error}"),
    })?;
    parse(path, &text)
}

/// Parses and validates script text; `file` names it in errors and gives the script its name.
pub fn parse(file: &str, text: &str) -> Result<Script, ScriptError> {
    let fail = |path: String, problem: String| ScriptError {
        file: file.to_owned(),
        path,
        problem,
    };
    let table: toml::Table = toml::from_str(text).map_err(|error| {
        let location = error
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
                format!("line {line}, column {column}")
            })
            .unwrap_or_else(|| "-".to_owned());
        fail(location, format!("not valid TOML: {}", error.message()))
    })?;
    let spec: ScriptSpec =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|error| {
            let path = error.path().to_string();
            let path = if path == "." { "-".to_owned() } else { path };
            fail(path, error.inner().message().to_owned())
        })?;
    let name = std::path::Path::new(file)
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "repro".to_owned());
    validate(file, name, spec).map_err(|(path, problem)| fail(path, problem))
}

type Invalid = (String, String);

fn preset(path: String, name: &str) -> Result<RoomPolicy, Invalid> {
    RoomPolicy::preset(name).ok_or_else(|| {
        let names: Vec<&str> = RoomPolicy::PRESETS.iter().map(|(name, _)| *name).collect();
        (
            path,
            format!(
                "unknown policy preset {name:?} (known: {})",
                names.join(", ")
            ),
        )
    })
}

fn validity(path: String, value: Option<i64>, default: i64) -> Result<i64, Invalid> {
    match value {
        None => Ok(default),
        Some(ms) if ms > 0 => Ok(ms),
        Some(ms) => Err((path, format!("{ms} must be positive"))),
    }
}

fn validate(file: &str, name: String, spec: ScriptSpec) -> Result<Script, Invalid> {
    let room_policy = preset("room.policy".to_owned(), &spec.room.policy)?;
    let default_validity = validity(
        "room.key_validity_ms".to_owned(),
        spec.room.key_validity_ms,
        KEY_VALIDITY_MS,
    )?;
    if spec.servers.is_empty() {
        return Err(("servers".to_owned(), "at least one server is needed".into()));
    }
    if spec.servers.len() > MAX_SERVERS {
        return Err((
            "servers".to_owned(),
            format!(
                "{} servers; a reproduction has at most {MAX_SERVERS} (their keys derive from one byte)",
                spec.servers.len()
            ),
        ));
    }
    let mut servers = Vec::new();
    for (index, server) in spec.servers.iter().enumerate() {
        let path = format!("servers[{index}]");
        check_name(format!("{path}.name"), &server.name)?;
        if servers
            .iter()
            .any(|known: &ServerDef| known.name == server.name)
        {
            return Err((
                format!("{path}.name"),
                format!("server {:?} is declared twice", server.name),
            ));
        }
        let policy = match &server.policy {
            None => room_policy.clone(),
            Some(name) => preset(format!("{path}.policy"), name)?,
        };
        if policy.room_version.id != room_policy.room_version.id {
            return Err((
                format!("{path}.policy"),
                format!(
                    "{} uses room version {} but the room ({}) is {}",
                    policy.name,
                    policy.room_version.id,
                    room_policy.name,
                    room_policy.room_version.id
                ),
            ));
        }
        servers.push(ServerDef {
            name: server.name.clone(),
            policy,
            late: server.late,
            key_validity_ms: validity(
                format!("{path}.key_validity_ms"),
                server.key_validity_ms,
                default_validity,
            )?,
        });
    }
    let server_index = |path: String, name: &str| -> Result<usize, Invalid> {
        servers
            .iter()
            .position(|server| server.name == name)
            .ok_or_else(|| (path, format!("unknown server {name:?}")))
    };
    let mut users: Vec<UserDef> = Vec::new();
    for (index, user) in spec.users.iter().enumerate() {
        let path = format!("users[{index}]");
        check_name(format!("{path}.name"), &user.name)?;
        if user
            .name
            .chars()
            .any(|c| !c.is_ascii_lowercase() && !c.is_ascii_digit() && c != '_')
        {
            return Err((
                format!("{path}.name"),
                format!("{:?} is not a localpart (a-z, 0-9, _)", user.name),
            ));
        }
        if users.iter().any(|known| known.name == user.name) {
            return Err((
                format!("{path}.name"),
                format!("user {:?} is declared twice", user.name),
            ));
        }
        let localpart = user.localpart.clone().unwrap_or_else(|| user.name.clone());
        if localpart.is_empty()
            || localpart
                .chars()
                .any(|c| !c.is_ascii_lowercase() && !c.is_ascii_digit() && c != '_')
        {
            return Err((
                format!("{path}.localpart"),
                format!("{localpart:?} is not a localpart (a-z, 0-9, _)"),
            ));
        }
        if user.localpart.is_some() && !room_policy.room_version.member_keys {
            return Err((
                format!("{path}.localpart"),
                format!(
                    "only member-key rooms separate a user from its localpart ({} is room version {})",
                    room_policy.name, room_policy.room_version.id
                ),
            ));
        }
        users.push(UserDef {
            name: user.name.clone(),
            server: server_index(format!("{path}.server"), &user.server)?,
            localpart,
        });
    }
    let user_index = |path: String, name: &str| -> Result<usize, Invalid> {
        users
            .iter()
            .position(|user| user.name == name)
            .ok_or_else(|| (path, format!("unknown user {name:?}")))
    };

    let mut steps = Vec::new();
    let mut event_names: BTreeSet<String> = BTreeSet::new();
    let mut checkpoints: BTreeSet<String> = BTreeSet::new();
    let mut compromised: BTreeSet<usize> = BTreeSet::new();
    let mut previous_ms: Option<i64> = None;
    if spec.steps.is_empty() {
        return Err((
            "steps".to_owned(),
            "at least a `create` step is needed".into(),
        ));
    }
    for (index, step) in spec.steps.iter().enumerate() {
        let path = format!("steps[{index}]");
        let field = |name: &str| format!("{path}.{name}");
        let keyword = STEP_KEYWORDS
            .iter()
            .copied()
            .find(|keyword| *keyword == step.action)
            .ok_or_else(|| {
                (
                    field("action"),
                    format!(
                        "unknown action {:?} (known: {})",
                        step.action,
                        STEP_KEYWORDS.join(", ")
                    ),
                )
            })?;
        if (index == 0) != (keyword == "create") {
            return Err((
                field("action"),
                if index == 0 {
                    "the first step must be `create`".to_owned()
                } else {
                    "the room is created once, by the first step".to_owned()
                },
            ));
        }
        let allowed: &[&str] = match keyword {
            "create" | "join" | "leave" | "compromise" => &["user"],
            "send" => &["user", "body", "reply_to", "attacker", "via"],
            "ban" => &["user", "target", "reason"],
            "partition" => &["groups"],
            "deliver" => &["keep_undeliverable"],
            "rotate-key" => &["server", "notify"],
            "take-offline" | "bring-online" => &["server"],
            "late-join" => &["user", "via"],
            _ => &[],
        };
        let present = [
            ("user", step.user.is_some()),
            ("target", step.target.is_some()),
            ("body", step.body.is_some()),
            ("reply_to", step.reply_to.is_some()),
            ("attacker", step.attacker.is_some()),
            ("via", step.via.is_some()),
            ("server", step.server.is_some()),
            ("groups", step.groups.is_some()),
            ("keep_undeliverable", step.keep_undeliverable.is_some()),
            ("notify", step.notify.is_some()),
            ("reason", step.reason.is_some()),
        ];
        for (name, is_present) in present {
            if is_present && !allowed.contains(&name) {
                return Err((field(name), format!("not a field of `{keyword}`")));
            }
        }
        let required = |name: &str, value: &Option<String>| -> Result<String, Invalid> {
            value
                .clone()
                .ok_or_else(|| (field(name), format!("`{keyword}` needs `{name}`")))
        };
        let makes_event = matches!(
            keyword,
            "create" | "join" | "leave" | "send" | "ban" | "late-join"
        );
        let name = match (&step.name, makes_event, keyword == "checkpoint") {
            (Some(name), true, _) | (Some(name), _, true) => {
                check_name(field("name"), name)?;
                Some(name.clone())
            }
            (None, true, _) => Some(format!("{keyword}{index}")),
            (None, _, true) => return Err((field("name"), "a checkpoint needs a name".into())),
            (Some(_), false, false) => {
                return Err((field("name"), format!("`{keyword}` makes no event to name")));
            }
            (None, false, false) => None,
        };
        if let Some(name) = &name {
            let names: Vec<String> = if keyword == "create" {
                vec![
                    name.clone(),
                    format!("{name}.join"),
                    format!("{name}.join_rules"),
                ]
            } else {
                vec![name.clone()]
            };
            let set = if keyword == "checkpoint" {
                &mut checkpoints
            } else {
                &mut event_names
            };
            for name in names {
                if !set.insert(name.clone()) {
                    return Err((field("name"), format!("{name:?} is already used")));
                }
            }
        }
        let at_ms = match step.at_ms {
            Some(at_ms) => {
                if at_ms < 0 || previous_ms.is_some_and(|previous| at_ms < previous) {
                    return Err((
                        field("at_ms"),
                        format!(
                            "{at_ms} is before the previous step ({})",
                            previous_ms.unwrap_or(0)
                        ),
                    ));
                }
                at_ms
            }
            None => previous_ms.map_or(DEFAULT_STEP_MS, |previous| previous + DEFAULT_STEP_MS),
        };
        previous_ms = Some(at_ms);
        let user = |users_field: &Option<String>, name: &str| -> Result<usize, Invalid> {
            user_index(field(name), &required(name, users_field)?)
        };
        let action = match keyword {
            "create" => Action::Create {
                user: user(&step.user, "user")?,
            },
            "join" | "leave" => {
                let user = user(&step.user, "user")?;
                if keyword == "join" {
                    Action::Join { user }
                } else {
                    Action::Leave { user }
                }
            }
            "send" => {
                let user = user(&step.user, "user")?;
                let attacker = step.attacker.unwrap_or(false);
                if attacker && !compromised.contains(&user) {
                    return Err((
                        field("attacker"),
                        format!(
                            "{} was not compromised by an earlier step",
                            users[user].name
                        ),
                    ));
                }
                if step.via.is_some() && !attacker {
                    return Err((field("via"), "only an attacker's send takes `via`".into()));
                }
                if let Some(target) = &step.reply_to
                    && !event_names.contains(target)
                {
                    return Err((
                        field("reply_to"),
                        format!("no earlier event is named {target:?}"),
                    ));
                }
                Action::Send {
                    user,
                    body: step
                        .body
                        .clone()
                        .unwrap_or_else(|| format!("message {index}")),
                    reply_to: step.reply_to.clone(),
                    attacker,
                    via: match &step.via {
                        Some(via) => Some(server_index(field("via"), via)?),
                        None => None,
                    },
                }
            }
            "ban" => Action::Ban {
                user: user(&step.user, "user")?,
                target: user(&step.target, "target")?,
                reason: step.reason.clone(),
            },
            "partition" => {
                let groups = step
                    .groups
                    .as_ref()
                    .ok_or_else(|| (field("groups"), "`partition` needs `groups`".to_owned()))?;
                let mut seen = BTreeMap::new();
                let mut resolved = Vec::new();
                for (group_index, group) in groups.iter().enumerate() {
                    let mut members = Vec::new();
                    for (member_index, member) in group.iter().enumerate() {
                        let at = format!("{path}.groups[{group_index}][{member_index}]");
                        let server = server_index(at.clone(), member)?;
                        if seen.insert(server, group_index).is_some() {
                            return Err((at, format!("{member:?} is in two groups")));
                        }
                        members.push(server);
                    }
                    resolved.push(members);
                }
                if let Some(missing) = (0..servers.len()).find(|server| !seen.contains_key(server))
                {
                    return Err((
                        field("groups"),
                        format!("{:?} is in no group", servers[missing].name),
                    ));
                }
                Action::Partition { groups: resolved }
            }
            "heal" => Action::Heal,
            "deliver" => Action::Deliver {
                keep_undeliverable: step.keep_undeliverable.unwrap_or(false),
            },
            "exchange-extremities" => Action::ExchangeExtremities,
            "rotate-key" => Action::RotateKey {
                server: server_index(field("server"), &required("server", &step.server)?)?,
                notify: step.notify.unwrap_or(true),
            },
            "take-offline" => Action::TakeOffline {
                server: server_index(field("server"), &required("server", &step.server)?)?,
            },
            "bring-online" => Action::BringOnline {
                server: server_index(field("server"), &required("server", &step.server)?)?,
            },
            "compromise" => {
                let user = user(&step.user, "user")?;
                compromised.insert(user);
                Action::Compromise { user }
            }
            "late-join" => {
                let user = user(&step.user, "user")?;
                if !servers[users[user].server].late {
                    return Err((
                        field("user"),
                        format!(
                            "{} is not on a server declared `late = true`",
                            users[user].name
                        ),
                    ));
                }
                Action::LateJoin {
                    user,
                    via: server_index(field("via"), &required("via", &step.via)?)?,
                }
            }
            _ => Action::Checkpoint,
        };
        steps.push(Step {
            index,
            keyword,
            action,
            name,
            at_ms,
        });
    }

    let mut checks = Vec::new();
    for (index, check) in spec.checks.iter().enumerate() {
        let path = format!("checks[{index}]");
        let field = |name: &str| format!("{path}.{name}");
        let keyword = CHECK_KEYWORDS
            .iter()
            .copied()
            .find(|keyword| *keyword == check.kind)
            .ok_or_else(|| {
                (
                    field("kind"),
                    format!(
                        "unknown check {:?} (known: {})",
                        check.kind,
                        CHECK_KEYWORDS.join(", ")
                    ),
                )
            })?;
        let allowed: &[&str] = match keyword {
            "state-has-membership" => &["server", "user", "membership"],
            "visible" | "held" | "labelled" => &["server", "event"],
            "hidden" => &["server", "event", "reason"],
            "link-status" => &["server", "user", "status"],
            "same-state" | "always-properties" => &["servers"],
            "divergence-at-most" => &["servers", "value"],
            "verified-as" => &["server", "user", "user_id"],
            "identity-collisions-at-most" => &["server", "count"],
            _ => &["server", "value"],
        };
        let present = [
            ("server", check.server.is_some()),
            ("servers", check.servers.is_some()),
            ("user", check.user.is_some()),
            ("membership", check.membership.is_some()),
            ("event", check.event.is_some()),
            ("reason", check.reason.is_some()),
            ("status", check.status.is_some()),
            ("value", check.value.is_some()),
            ("user_id", check.user_id.is_some()),
            ("count", check.count.is_some()),
        ];
        for (name, is_present) in present {
            if is_present && !allowed.contains(&name) {
                return Err((field(name), format!("not a field of `{keyword}`")));
            }
        }
        let required = |name: &str, value: &Option<String>| -> Result<String, Invalid> {
            value
                .clone()
                .ok_or_else(|| (field(name), format!("`{keyword}` needs `{name}`")))
        };
        let server = || server_index(field("server"), &required("server", &check.server)?);
        let user = || user_index(field("user"), &required("user", &check.user)?);
        let event = || -> Result<String, Invalid> {
            let event = required("event", &check.event)?;
            if event_names.contains(&event) {
                Ok(event)
            } else {
                Err((field("event"), format!("no step names an event {event:?}")))
            }
        };
        let servers_field = || -> Result<Vec<usize>, Invalid> {
            match &check.servers {
                None => Ok((0..servers.len()).collect()),
                Some(names) if names.is_empty() => {
                    Err((field("servers"), "name at least one server".to_owned()))
                }
                Some(names) => names
                    .iter()
                    .enumerate()
                    .map(|(at, name)| server_index(format!("{path}.servers[{at}]"), name))
                    .collect(),
            }
        };
        let value = || -> Result<f64, Invalid> {
            let value = check
                .value
                .ok_or_else(|| (field("value"), format!("`{keyword}` needs `value`")))?;
            if value.is_finite() && (0.0..=1.0).contains(&value) {
                Ok(value)
            } else {
                Err((field("value"), format!("{value} is not in 0.0..=1.0")))
            }
        };
        let kind = match keyword {
            "state-has-membership" => {
                let membership = required("membership", &check.membership)?;
                if !MEMBERSHIPS.contains(&membership.as_str()) {
                    return Err((
                        field("membership"),
                        format!(
                            "{membership:?} is not a membership (known: {})",
                            MEMBERSHIPS.join(", ")
                        ),
                    ));
                }
                CheckKind::StateHasMembership {
                    server: server()?,
                    user: user()?,
                    membership,
                }
            }
            "visible" => CheckKind::Visible {
                server: server()?,
                event: event()?,
            },
            "held" => CheckKind::Held {
                server: server()?,
                event: event()?,
            },
            "labelled" => CheckKind::Labelled {
                server: server()?,
                event: event()?,
            },
            "hidden" => {
                if let Some(reason) = &check.reason
                    && !HIDDEN_REASONS.contains(&reason.as_str())
                {
                    return Err((
                        field("reason"),
                        format!(
                            "{reason:?} is not a reason (known: {})",
                            HIDDEN_REASONS.join(", ")
                        ),
                    ));
                }
                CheckKind::Hidden {
                    server: server()?,
                    event: event()?,
                    reason: check.reason.clone(),
                }
            }
            "link-status" => {
                let status = match required("status", &check.status)?.as_str() {
                    "unknown" => LinkStatus::Unknown,
                    "pending" => LinkStatus::Pending,
                    "verified" => LinkStatus::Verified,
                    "unverified" => LinkStatus::Unverified,
                    other => {
                        return Err((
                            field("status"),
                            format!(
                                "{other:?} is not a link status (known: unknown, pending, verified, unverified)"
                            ),
                        ));
                    }
                };
                CheckKind::LinkStatus {
                    server: server()?,
                    user: user()?,
                    status,
                }
            }
            "same-state" => CheckKind::SameState {
                servers: servers_field()?,
            },
            "always-properties" => CheckKind::AlwaysProperties {
                servers: servers_field()?,
            },
            "divergence-at-most" => CheckKind::DivergenceAtMost {
                servers: servers_field()?,
                value: value()?,
            },
            "verified-as" => CheckKind::VerifiedAs {
                server: server()?,
                user: user()?,
                user_id: required("user_id", &check.user_id)?,
            },
            "identity-collisions-at-most" => CheckKind::IdentityCollisionsAtMost {
                server: server()?,
                count: check
                    .count
                    .ok_or_else(|| (field("count"), format!("`{keyword}` needs `count`")))?,
            },
            _ => CheckKind::OrphansAtMost {
                server: server()?,
                value: value()?,
            },
        };
        if let Some(at) = &check.at
            && !checkpoints.contains(at)
        {
            return Err((field("at"), format!("no checkpoint step is named {at:?}")));
        }
        let expect_pass = match check.expect.as_deref() {
            None | Some("pass") => true,
            Some("fail") => false,
            Some(other) => {
                return Err((
                    field("expect"),
                    format!("{other:?} is neither \"pass\" nor \"fail\""),
                ));
            }
        };
        checks.push(Check {
            index,
            keyword,
            kind,
            description: check.description.clone(),
            at: check.at.clone(),
            expect_pass,
        });
    }
    Ok(Script {
        name,
        file: file.to_owned(),
        servers,
        users,
        steps,
        checks,
    })
}

/// Names: non-empty, printable ASCII without spaces or quotes (they appear in CSV and dot files).
fn check_name(path: String, name: &str) -> Result<(), Invalid> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
    {
        return Err((
            path,
            format!("{name:?} is not a name (printable ASCII, no spaces or quotes)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[room]
policy = "P0"
[[servers]]
name = "a.example"
[[servers]]
name = "b.example"
[[users]]
name = "alice"
server = "a.example"
[[steps]]
action = "create"
user = "alice"
[[steps]]
action = "send"
user = "alice"
name = "hello"
[[steps]]
action = "checkpoint"
name = "end"
[[checks]]
kind = "visible"
server = "b.example"
event = "hello"
at = "end"
expect = "fail"
"#;

    fn error(text: &str) -> String {
        parse("t.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_script_parses_with_default_names_and_times() {
        let script = parse("dir/t.toml", MINIMAL).unwrap();
        assert_eq!(script.name, "t");
        assert_eq!(script.steps[0].name.as_deref(), Some("create0"));
        assert_eq!(script.steps[0].at_ms, 1_000);
        assert_eq!(script.steps[1].at_ms, 2_000);
        assert_eq!(script.steps[2].action, Action::Checkpoint);
        assert!(!script.checks[0].expect_pass);
        assert_eq!(script.servers[1].policy.name, "P0");
    }

    #[test]
    fn errors_name_the_file_the_place_and_the_problem() {
        assert_eq!(
            error(&MINIMAL.replace(
                "user = \"alice\"\nname = \"hello\"",
                "user = \"alicia\"\nname = \"hello\""
            )),
            "t.toml: steps[1].user: unknown user \"alicia\""
        );
        assert_eq!(
            error(&MINIMAL.replace("action = \"send\"", "action = \"shout\"")),
            "t.toml: steps[1].action: unknown action \"shout\" (known: create, join, leave, send, ban, partition, heal, deliver, exchange-extremities, rotate-key, take-offline, bring-online, compromise, late-join, checkpoint)"
        );
        assert_eq!(
            error(&MINIMAL.replace("event = \"hello\"", "event = \"bye\"")),
            "t.toml: checks[0].event: no step names an event \"bye\""
        );
        assert_eq!(
            error(&MINIMAL.replace("at = \"end\"", "at = \"later\"")),
            "t.toml: checks[0].at: no checkpoint step is named \"later\""
        );
        assert_eq!(
            error(&MINIMAL.replace("policy = \"P0\"", "policy = \"P99\"")),
            "t.toml: room.policy: unknown policy preset \"P99\" (known: P0, P1, P1a, P1b, P2, P3, P4, P5, P6, P7, P8, P9)"
        );
        assert_eq!(
            error(&MINIMAL.replace(
                "[[servers]]\nname = \"b.example\"",
                "[[servers]]\nname = \"b.example\"\npolicy = \"P1\""
            )),
            "t.toml: servers[1].policy: P1 uses room version org.matrix.12.4430 but the room (P0) is 12"
        );
        assert_eq!(
            error(&MINIMAL.replace("name = \"hello\"", "name = \"hello\"\ngroups = []")),
            "t.toml: steps[1].groups: not a field of `send`"
        );
        assert_eq!(
            error(&MINIMAL.replace("expect = \"fail\"", "expect = \"maybe\"")),
            "t.toml: checks[0].expect: \"maybe\" is neither \"pass\" nor \"fail\""
        );
        assert_eq!(
            error(&MINIMAL.replace("name = \"hello\"", "name = \"hello\"\ncolour = 1")),
            "t.toml: steps[1].colour: unknown field `colour`, expected one of `action`, `name`, `at_ms`, `user`, `target`, `body`, `reply_to`, `attacker`, `via`, `server`, `groups`, `keep_undeliverable`, `notify`, `reason`"
        );
        assert!(error("[room\n").starts_with("t.toml: line 1, column"));
    }

    #[test]
    fn partitions_place_every_server_once_and_attackers_need_a_compromise() {
        let partition = MINIMAL.replace(
            "[[steps]]\naction = \"checkpoint\"",
            "[[steps]]\naction = \"partition\"\ngroups = [[\"a.example\"]]\n[[steps]]\naction = \"checkpoint\"",
        );
        assert_eq!(
            error(&partition),
            "t.toml: steps[2].groups: \"b.example\" is in no group"
        );
        let twice = partition.replace(
            "[[\"a.example\"]]",
            "[[\"a.example\"], [\"a.example\", \"b.example\"]]",
        );
        assert_eq!(
            error(&twice),
            "t.toml: steps[2].groups[1][0]: \"a.example\" is in two groups"
        );
        let attacker = MINIMAL.replace("name = \"hello\"", "name = \"hello\"\nattacker = true");
        assert_eq!(
            error(&attacker),
            "t.toml: steps[1].attacker: alice was not compromised by an earlier step"
        );
        let no_servers = MINIMAL.replace(
            "event = \"hello\"\nat = \"end\"",
            "event = \"hello\"\nat = \"end\"\n[[checks]]\nkind = \"same-state\"\nservers = []",
        );
        assert_eq!(
            error(&no_servers),
            "t.toml: checks[1].servers: name at least one server"
        );
        let late_time = MINIMAL.replace("name = \"hello\"", "name = \"hello\"\nat_ms = 10");
        assert_eq!(
            error(&late_time),
            "t.toml: steps[1].at_ms: 10 is before the previous step (1000)"
        );
    }
}
