//! Scenario files: the TOML schema, validation with precise errors, `--set` overrides and the
//! built-in default (RQ1).
//!
//! Every table refuses unknown fields. An error names the file, the field path, the problem and,
//! where the field takes one of a fixed set of values, the allowed values, on one line.

mod rooms;
mod set;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::time::{format_duration_ms, parse_duration_ms};
use crate::server::policy::{
    BackoffKind, KeyBinding, KeyPolicy, Malformed, OldKeys, PRESET_NAMES, Recheck, Transport,
    Unreachable,
};

pub use rooms::{
    CountSpec, ROOM_POLICY_NAMES, RoomAction, RoomActionKind, Rooms, ServerRef, server_name,
};
pub use rooms::{DEFAULT_BACKFILL_LIMIT, JoinMode};
pub use set::apply_set;

/// The built-in default scenario: RQ1, polling load.
pub const DEFAULT_SCENARIO_TOML: &str = include_str!("../../scenarios/rq1-polling-load.toml");
/// The name the default scenario is reported under.
pub const DEFAULT_SCENARIO_FILE: &str = "scenarios/rq1-polling-load.toml";

/// A scenario that could not be loaded, as one line: `file: field: problem` (`file: problem` when
/// the problem is with the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{problem}", if path == "-" { String::new() } else { format!("{path}: ") })]
pub struct ScenarioError {
    pub file: String,
    /// The field path (`observers[0].policy.recheck`), or `-` for the file as a whole.
    pub path: String,
    pub problem: String,
}

/// A duration written as a string with a unit ("250ms", "90s", "6h", "7d").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub u64);

impl Duration {
    /// Milliseconds.
    pub fn ms(self) -> u64 {
        self.0
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration_ms(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration_ms(&text)
            .map(Duration)
            .map_err(|error| serde::de::Error::custom(format!("bad duration: {error}")))
    }
}

/// A whole scenario file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Names the results directory (`results/<name>/seed-<N>/`).
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Simulated time the run covers.
    pub duration: Duration,
    /// The key world's domains (not used when `rooms` is present).
    #[serde(default)]
    pub federation: Federation,
    #[serde(default)]
    pub network: Network,
    /// Groups of servers whose key layer is simulated and measured.
    #[serde(default)]
    pub observers: Vec<ObserverGroup>,
    /// Scripted actions at times.
    #[serde(default)]
    pub phases: Vec<Phase>,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub outputs: Outputs,
    /// Parameter sweeps over this scenario; read by `fedsim sweep`, ignored by `fedsim run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<toml::Table>,
    /// The room world: full homeservers sharing rooms (`src/fed/`); when present, the run uses
    /// it instead of the key world.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Rooms>,
    /// How signatures are made and checked: `"ed25519"` (default, real) or `"symbolic"`
    /// (a SHA-256 stand-in for very large sweeps, not secure; see `matrix::crypto_mode`). Both
    /// give byte-identical results, so it is recorded in `run-info.json` and never written to
    /// `summary.json`.
    #[serde(default, skip_serializing)]
    pub crypto: crate::matrix::crypto_mode::CryptoMode,
}

/// The servers and domains.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Federation {
    /// Groups of remote domains, each served by its own server publishing its keys.
    pub domain_groups: Vec<DomainGroup>,
    /// Notary servers (`/_matrix/key/v2/query`), used by policies with transport notary-first.
    #[serde(default)]
    pub notaries: u32,
}

/// A group of similar remote domains.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainGroup {
    pub name: String,
    pub count: u32,
    /// The `valid_until_ts` each server publishes, ahead of its (re)signing time
    /// (Synapse's `key_refresh_interval`, default 1 d).
    #[serde(default = "default_key_lifetime")]
    pub key_lifetime: Duration,
    /// Fraction of the group that is dead from the start.
    #[serde(default)]
    pub dead_fraction: f64,
    /// How a dead domain answers.
    #[serde(default = "default_dead_mode")]
    pub dead_mode: DeadMode,
    /// Region index of the group (see `network.regions`).
    #[serde(default)]
    pub region: u32,
}

fn default_key_lifetime() -> Duration {
    Duration(crate::engine::time::DAY_MS)
}

fn default_dead_mode() -> DeadMode {
    DeadMode::NoAnswer
}

/// How a decommissioned domain answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeadMode {
    /// Parked: nothing answers, requests time out.
    NoAnswer,
    /// Something answers 404 on the key endpoint.
    NotFound,
    /// Connection refused.
    Refused,
    /// Some other HTTP status (`status`).
    Status,
}

/// The network model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default = "default_latency")]
    pub latency: Latency,
    /// Added to the latency when the two servers are in different regions.
    #[serde(default)]
    pub inter_region_latency: Option<Latency>,
    /// Number of regions; servers are in region `group.region` (domains) or 0.
    #[serde(default = "one")]
    pub regions: u32,
    /// Probability that any one message is lost.
    #[serde(default)]
    pub loss: f64,
    /// Partitions drawn at random.
    #[serde(default)]
    pub random_partitions: RandomPartitions,
}

fn one() -> u32 {
    1
}

impl Default for Network {
    fn default() -> Self {
        Network {
            latency: default_latency(),
            inter_region_latency: None,
            regions: 1,
            loss: 0.0,
            random_partitions: RandomPartitions::default(),
        }
    }
}

fn default_latency() -> Latency {
    Latency {
        kind: LatencyKind::Constant,
        value: Some(Duration(50)),
        min: None,
        max: None,
        median: None,
        sigma: None,
    }
}

/// A one-way latency distribution.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub kind: LatencyKind,
    /// For `constant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Duration>,
    /// For `uniform`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
    /// For `log-normal`: the median and the sigma of the underlying normal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma: Option<f64>,
}

/// Latency distribution families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatencyKind {
    Constant,
    Uniform,
    LogNormal,
}

/// Partitions drawn with rates: each isolates one random server from everyone.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomPartitions {
    /// Expected partitions per simulated day (0 = none).
    #[serde(default)]
    pub rate_per_day: f64,
    /// Mean duration (exponentially distributed).
    #[serde(default)]
    pub mean_duration: Option<Duration>,
    #[serde(default)]
    pub kind: Option<PartitionKind>,
}

/// How a partition cuts traffic between sides a and b.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionKind {
    /// Nothing crosses in either direction.
    Symmetric,
    /// Each direction loses messages with its own probability (`loss_a_to_b`, `loss_b_to_a`).
    Asymmetric,
    /// Messages from a to b are lost; b to a pass.
    OneWay,
}

/// A group of observing servers, all with the same policy; one server per `known_domains` value.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserverGroup {
    pub name: String,
    /// The domain group whose domains these servers know.
    pub domains: String,
    /// How many domains each server of the group knows (the first N of the domain group): one
    /// server per value.
    #[serde(default)]
    pub known_domains: Vec<u32>,
    /// Or: draw the counts from a distribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_domains_distribution: Option<KnownDomainsDistribution>,
    pub policy: PolicySpec,
}

/// Known-domain counts drawn at random (seeded).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownDomainsDistribution {
    pub kind: CountDistribution,
    pub min: u32,
    pub max: u32,
    /// How many servers to draw.
    pub servers: u32,
}

/// Distributions of counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CountDistribution {
    Uniform,
    LogUniform,
}

/// A policy: a preset and per-knob overrides (see `server::policy::KeyPolicy`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck: Option<Recheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck_interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_fraction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_floor: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_multiplier: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_cap: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<Unreachable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub malformed: Option<Malformed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamp_7d: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming_requests_per_domain_per_day: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_keys: Option<OldKeys>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer_granularity: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_binding: Option<KeyBinding>,
}

impl PolicySpec {
    /// The preset (P1 when none is named) with each given knob applied.
    pub fn resolve(&self) -> Result<KeyPolicy, String> {
        let preset = self.preset.as_deref().unwrap_or("P1");
        let mut policy = KeyPolicy::preset(preset).ok_or_else(|| {
            format!(
                "unknown preset {preset:?} (allowed: {})",
                PRESET_NAMES.join(", ")
            )
        })?;
        if let Some(value) = self.recheck {
            policy.recheck = value;
        }
        if let Some(value) = self.recheck_interval {
            policy.recheck_interval_ms = value.ms();
        }
        if let Some(value) = self.jitter_fraction {
            policy.jitter_fraction = value;
        }
        if let Some(value) = self.transport {
            policy.transport = value;
        }
        if let Some(value) = self.backoff {
            policy.apply_backoff_kind(value);
        }
        if let Some(value) = self.backoff_floor {
            policy.backoff_floor_ms = value.ms();
        }
        if let Some(value) = self.backoff_multiplier {
            policy.backoff_multiplier = value;
        }
        if let Some(value) = self.backoff_cap {
            policy.backoff_cap_ms = value.ms();
        }
        if let Some(value) = self.retry_interval {
            policy.retry_interval_ms = value.ms();
        }
        if let Some(value) = self.max_in_flight {
            policy.max_in_flight = value;
        }
        if let Some(value) = self.coalesce {
            policy.coalesce = value;
        }
        if let Some(value) = self.unreachable {
            policy.unreachable = value;
        }
        if let Some(value) = self.malformed {
            policy.malformed = value;
        }
        if let Some(value) = self.clamp_7d {
            policy.clamp_7d = value;
        }
        if let Some(value) = self.request_timeout {
            policy.request_timeout_ms = value.ms();
        }
        if let Some(value) = self.incoming_requests_per_domain_per_day {
            policy.incoming_requests_per_domain_per_day = value;
        }
        if let Some(value) = self.old_keys {
            policy.old_keys = value;
        }
        if let Some(value) = self.push {
            policy.push = value;
        }
        if let Some(value) = self.timer_granularity {
            policy.timer_granularity_ms = value.ms();
        }
        if let Some(value) = self.key_binding {
            policy.key_binding = value;
        }
        Ok(policy)
    }
}

/// A named phase starting at `at`, with actions at offsets from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    pub at: Duration,
    #[serde(default)]
    pub actions: Vec<Action>,
}

/// One scripted action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Offset from the phase start.
    #[serde(default = "zero_duration")]
    pub at: Duration,
    pub kind: ActionKind,
    /// The servers acted on (all but `partition`/`heal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Selector>,
    /// For `partition`: the two sides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<Selector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_a_to_b: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_b_to_a: Option<f64>,
    /// For `decommission`: how the domain answers afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DeadMode>,
    /// For `decommission` with mode `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Names the action in metrics (`containment.<label>.<observer group>.…`); default
    /// `<phase name>-<action index>`, slugged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// For `lying-server`: the servers shown the real key; every other requester (observers,
    /// notaries) gets a second key under the same key ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Selector>,
    /// For `key-flapping`: how often the key swaps in and out of `old_verify_keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Duration>,
    /// For `clock-skew`: the observers' clock offset in milliseconds (positive = ahead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_ms: Option<i64>,
    /// For `partition`: heal this partition after this long (default: at the next `heal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

fn zero_duration() -> Duration {
    Duration(0)
}

/// Scripted action kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Cut traffic between `a` and `b`.
    Partition,
    /// Remove every partition.
    Heal,
    /// The servers stop answering (connection refused) until `restart`.
    Crash,
    Restart,
    /// The servers leave for good; their domains are parked (no answer).
    Depart,
    /// The servers forget their caches (key cache, backoff, notary cache).
    LoseDatabase,
    /// The servers lose their signing key and make a new one under the same key ID.
    LoseKey,
    /// The servers rotate: a new key ID, the old key moves to `old_verify_keys`.
    RotateKey,
    /// The domains stop being served: `mode` says how they answer.
    Decommission,
    /// The domains get a new owner running a new server with new keys.
    Reregister,
    /// An attacker obtains the origins' current signing keys (marks t0; the origin does not
    /// know until it rotates).
    Compromise,
    /// The origins serve their real key to `audience` and a second key under the same ID to
    /// every other requester (RQ10).
    LyingServer,
    /// The origins swap their key in and out of `old_verify_keys` every `period` (RQ8).
    KeyFlapping,
    /// The observers' clocks are off by `offset_ms` for every validity check.
    ClockSkew,
}

impl ActionKind {
    /// The kebab-case name used in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Partition => "partition",
            ActionKind::Heal => "heal",
            ActionKind::Crash => "crash",
            ActionKind::Restart => "restart",
            ActionKind::Depart => "depart",
            ActionKind::LoseDatabase => "lose-database",
            ActionKind::LoseKey => "lose-key",
            ActionKind::RotateKey => "rotate-key",
            ActionKind::Decommission => "decommission",
            ActionKind::Reregister => "reregister",
            ActionKind::Compromise => "compromise",
            ActionKind::LyingServer => "lying-server",
            ActionKind::KeyFlapping => "key-flapping",
            ActionKind::ClockSkew => "clock-skew",
        }
    }

    /// Whether the action exists only for origins (its targets must name a domain group). The
    /// older kinds (rotate-key, decommission, ...) accept any group and skip non-origins.
    pub fn acts_on_keys(self) -> bool {
        matches!(
            self,
            ActionKind::Compromise | ActionKind::LyingServer | ActionKind::KeyFlapping
        )
    }
}

/// A set of servers: a group (domain group, observer group or `notaries`), optionally a range.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub group: String,
    #[serde(default)]
    pub from: u32,
    /// How many from `from` (default: the rest of the group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

/// Metrics sampling.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// One `timeseries.csv` row per interval, and the window of the per-window rates (p99).
    #[serde(default = "one_minute")]
    pub sample_interval: Duration,
    /// Time excluded from the headline rates at the start of the run.
    #[serde(default = "zero_duration")]
    pub warmup: Duration,
    /// RQ12: report, per observer group, the most known domains whose wake-ups per hour stay
    /// within this budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wakeup_budget_per_hour: Option<f64>,
}

fn one_minute() -> Duration {
    Duration(crate::engine::time::MINUTE_MS)
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            sample_interval: one_minute(),
            warmup: zero_duration(),
            wakeup_budget_per_hour: None,
        }
    }
}

/// What a run writes besides the CSV and JSON files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// Write `trace.jsonl` (one line per processed event).
    #[serde(default)]
    pub trace: bool,
    /// Which chart to draw.
    #[serde(default = "default_chart")]
    pub chart: ChartKind,
}

fn default_chart() -> ChartKind {
    ChartKind::Rq1PollingLoad
}

impl Default for Outputs {
    fn default() -> Self {
        Outputs {
            trace: false,
            chart: default_chart(),
        }
    }
}

/// Charts a run can draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChartKind {
    None,
    Rq1PollingLoad,
    /// A CDF per watched action (`containment-<label>.svg/.png`): share of observer × domain
    /// pairs that stopped accepting the key, against time after t0, one line per group.
    Rq2Containment,
    /// False-invalid domain-hours per domain against partition length, one line per policy
    /// (`link-hours-lost.svg/.png`).
    Rq6LinkHoursLost,
    /// Wake-ups per hour against known domains with the budget line (`wakeups.svg/.png`).
    Rq12Wakeups,
    /// Room world: a heat map of pairwise client-visible divergence between servers and the
    /// orphan-reply share per server (`divergence.svg/.png`).
    Rq5Divergence,
    /// Room world: the re-query storm at the rotating origin, requests per second against time
    /// (`requery-storm.svg/.png`).
    Rq7RequeryStorm,
}

/// Loads a scenario: the file at `path` (or the built-in default when `None`), with each
/// `path=value` of `sets` applied, then validated.
pub fn load(path: Option<&Path>, sets: &[String]) -> Result<Scenario, ScenarioError> {
    let (file, text) = match path {
        None => (
            DEFAULT_SCENARIO_FILE.to_owned(),
            DEFAULT_SCENARIO_TOML.to_owned(),
        ),
        Some(path) => {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|error| ScenarioError {
                file: file.clone(),
                path: "-".to_owned(),
                problem: format!("cannot read: {error}"),
            })?;
            (file, text)
        }
    };
    parse(&file, &text, sets)
}

/// Parses scenario text (reported as `file` in errors), applies `sets`, validates.
pub fn parse(file: &str, text: &str, sets: &[String]) -> Result<Scenario, ScenarioError> {
    let error = |path: String, problem: String| ScenarioError {
        file: file.to_owned(),
        path,
        problem,
    };
    let mut table: toml::Table = toml::from_str(text).map_err(|toml_error| {
        let location = toml_error
            .span()
            .map(|span| line_column(text, span.start))
            .map(|(line, column)| format!("line {line}, column {column}"))
            .unwrap_or_else(|| "-".to_owned());
        error(
            location,
            format!("not valid TOML: {}", toml_error.message()),
        )
    })?;
    for set in sets {
        apply_set(&mut table, set).map_err(|(path, problem)| error(path, problem))?;
    }
    let scenario: Scenario =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|path_error| {
            let path = path_error.path().to_string();
            let path = if path == "." { "-".to_owned() } else { path };
            let problem = path_error.inner().message().to_owned();
            error(path, problem)
        })?;
    validate(&scenario).map_err(|(path, problem)| error(path, problem))?;
    Ok(scenario)
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|index| index + 1).unwrap_or(0) + 1;
    (line, column)
}

type Invalid = (String, String);

fn check_fraction(path: String, value: f64) -> Result<(), Invalid> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err((
            path,
            format!("{value} is out of range (allowed: 0.0 to 1.0)"),
        ))
    }
}

/// The semantic checks serde cannot express.
fn validate(scenario: &Scenario) -> Result<(), Invalid> {
    // The name is a directory under results/: "." and ".." would escape it.
    if scenario.name.is_empty()
        || scenario.name.chars().all(|character| character == '.')
        || !scenario
            .name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "-_.".contains(character))
    {
        return Err((
            "name".to_owned(),
            format!(
                "{:?} is not a directory-safe name (allowed: letters, digits, '-', '_', '.', not dots alone)",
                scenario.name
            ),
        ));
    }
    if scenario.duration.ms() == 0 {
        return Err(("duration".to_owned(), "must be longer than 0ms".to_owned()));
    }
    if let Some(rooms) = &scenario.rooms {
        return rooms::validate(scenario, rooms);
    }
    let federation = &scenario.federation;
    if federation.domain_groups.is_empty() {
        return Err((
            "federation.domain_groups".to_owned(),
            "needs at least one domain group".to_owned(),
        ));
    }
    // Each group a selector may name, with its size (selectors must stay inside it).
    let mut groups: Vec<(&str, u32)> = vec![("notaries", federation.notaries)];
    for (index, group) in federation.domain_groups.iter().enumerate() {
        let path = format!("federation.domain_groups[{index}]");
        if group.count == 0 {
            return Err((format!("{path}.count"), "must be at least 1".to_owned()));
        }
        if group.key_lifetime.ms() < crate::engine::time::MINUTE_MS {
            return Err((
                format!("{path}.key_lifetime"),
                "must be at least 1m".to_owned(),
            ));
        }
        check_fraction(format!("{path}.dead_fraction"), group.dead_fraction)?;
        if group.region >= scenario.network.regions {
            return Err((
                format!("{path}.region"),
                format!(
                    "region {} does not exist (allowed: 0 to {})",
                    group.region,
                    scenario.network.regions - 1
                ),
            ));
        }
        if groups.iter().any(|(name, _)| *name == group.name) {
            return Err((
                format!("{path}.name"),
                format!("group name {:?} is used twice", group.name),
            ));
        }
        groups.push((&group.name, group.count));
    }
    validate_network(&scenario.network)?;
    if scenario.observers.is_empty() {
        return Err((
            "observers".to_owned(),
            "needs at least one observer group".to_owned(),
        ));
    }
    for (index, observers) in scenario.observers.iter().enumerate() {
        let path = format!("observers[{index}]");
        let Some(domains) = federation
            .domain_groups
            .iter()
            .find(|group| group.name == observers.domains)
        else {
            let allowed: Vec<&str> = federation
                .domain_groups
                .iter()
                .map(|group| group.name.as_str())
                .collect();
            return Err((
                format!("{path}.domains"),
                format!(
                    "no domain group {:?} (allowed: {})",
                    observers.domains,
                    allowed.join(", ")
                ),
            ));
        };
        match (
            &observers.known_domains_distribution,
            observers.known_domains.is_empty(),
        ) {
            (Some(_), false) => {
                return Err((
                    format!("{path}.known_domains"),
                    "give known_domains or known_domains_distribution, not both".to_owned(),
                ));
            }
            (None, true) => {
                return Err((
                    format!("{path}.known_domains"),
                    "needs at least one count (or known_domains_distribution)".to_owned(),
                ));
            }
            _ => {}
        }
        for (value_index, count) in observers.known_domains.iter().enumerate() {
            if *count == 0 {
                return Err((
                    format!("{path}.known_domains[{value_index}]"),
                    "must be at least 1 (an observer that knows no domain does nothing)".to_owned(),
                ));
            }
            if *count > domains.count {
                return Err((
                    format!("{path}.known_domains[{value_index}]"),
                    format!(
                        "{count} is more than the {} domains of group {:?}",
                        domains.count, domains.name
                    ),
                ));
            }
        }
        if let Some(distribution) = &observers.known_domains_distribution {
            if distribution.min == 0 || distribution.min > distribution.max {
                return Err((
                    format!("{path}.known_domains_distribution"),
                    "needs 1 <= min <= max".to_owned(),
                ));
            }
            if distribution.max > domains.count {
                return Err((
                    format!("{path}.known_domains_distribution.max"),
                    format!(
                        "{} is more than the group's {} domains",
                        distribution.max, domains.count
                    ),
                ));
            }
        }
        if groups.iter().any(|(name, _)| *name == observers.name) {
            return Err((
                format!("{path}.name"),
                format!("group name {:?} is used twice", observers.name),
            ));
        }
        let size = match &observers.known_domains_distribution {
            Some(distribution) => distribution.servers,
            None => observers.known_domains.len() as u32,
        };
        groups.push((&observers.name, size));
        let policy = observers
            .policy
            .resolve()
            .map_err(|problem| (format!("{path}.policy.preset"), problem))?;
        validate_policy(&format!("{path}.policy"), &policy, federation.notaries)?;
    }
    for (phase_index, phase) in scenario.phases.iter().enumerate() {
        if phase.at.ms() > scenario.duration.ms() {
            return Err((
                format!("phases[{phase_index}].at"),
                format!(
                    "{} is after the end of the run ({})",
                    format_duration_ms(phase.at.ms()),
                    format_duration_ms(scenario.duration.ms())
                ),
            ));
        }
        for (action_index, action) in phase.actions.iter().enumerate() {
            let path = format!("phases[{phase_index}].actions[{action_index}]");
            let at_ms = phase.at.ms() + action.at.ms();
            if at_ms > scenario.duration.ms() {
                return Err((
                    format!("{path}.at"),
                    format!(
                        "the phase's {} plus {} is after the end of the run ({})",
                        format_duration_ms(phase.at.ms()),
                        format_duration_ms(action.at.ms()),
                        format_duration_ms(scenario.duration.ms())
                    ),
                ));
            }
            validate_action(&path, action, scenario, &groups)?;
        }
    }
    if let Some(budget) = scenario.metrics.wakeup_budget_per_hour
        && !(budget.is_finite() && budget > 0.0)
    {
        return Err((
            "metrics.wakeup_budget_per_hour".to_owned(),
            format!("{budget} is out of range (allowed: a number > 0)"),
        ));
    }
    validate_metrics(scenario)
}

/// The sampling knobs both worlds read: a sample interval or warm-up as long as the run leaves
/// every rate unmeasured (all 0.0), which reads like a result.
pub(super) fn validate_metrics(scenario: &Scenario) -> Result<(), Invalid> {
    let duration_ms = scenario.duration.ms();
    let interval_ms = scenario.metrics.sample_interval.ms();
    if interval_ms == 0 {
        return Err((
            "metrics.sample_interval".to_owned(),
            "must be longer than 0ms".to_owned(),
        ));
    }
    if interval_ms > duration_ms {
        return Err((
            "metrics.sample_interval".to_owned(),
            format!(
                "{} is longer than the run ({}): nothing would be sampled",
                format_duration_ms(interval_ms),
                format_duration_ms(duration_ms)
            ),
        ));
    }
    let warmup_ms = scenario.metrics.warmup.ms();
    if warmup_ms.saturating_add(interval_ms) > duration_ms {
        return Err((
            "metrics.warmup".to_owned(),
            format!(
                "{} leaves less than one sample interval ({}) of the run ({}) to measure",
                format_duration_ms(warmup_ms),
                format_duration_ms(interval_ms),
                format_duration_ms(duration_ms)
            ),
        ));
    }
    Ok(())
}

fn validate_network(network: &Network) -> Result<(), Invalid> {
    check_fraction("network.loss".to_owned(), network.loss)?;
    if network.regions == 0 {
        return Err((
            "network.regions".to_owned(),
            "must be at least 1".to_owned(),
        ));
    }
    validate_latency("network.latency", &network.latency)?;
    if let Some(latency) = &network.inter_region_latency {
        validate_latency("network.inter_region_latency", latency)?;
    }
    let random = &network.random_partitions;
    if !(random.rate_per_day.is_finite() && random.rate_per_day >= 0.0) {
        return Err((
            "network.random_partitions.rate_per_day".to_owned(),
            "must be a number >= 0".to_owned(),
        ));
    }
    if random.rate_per_day > 0.0 && random.mean_duration.is_none() {
        return Err((
            "network.random_partitions.mean_duration".to_owned(),
            "is required when rate_per_day > 0".to_owned(),
        ));
    }
    Ok(())
}

fn validate_latency(path: &str, latency: &Latency) -> Result<(), Invalid> {
    let (needed, present): (&[&str], Vec<&str>) = match latency.kind {
        LatencyKind::Constant => (&["value"], field_names(latency)),
        LatencyKind::Uniform => (&["min", "max"], field_names(latency)),
        LatencyKind::LogNormal => (&["median", "sigma"], field_names(latency)),
    };
    for field in &present {
        if !needed.contains(field) {
            return Err((
                format!("{path}.{field}"),
                format!(
                    "not used by kind {:?} (allowed: {})",
                    kind_name(latency.kind),
                    needed.join(", ")
                ),
            ));
        }
    }
    for field in needed {
        if !present.contains(field) {
            return Err((
                format!("{path}.{field}"),
                format!("is required by kind {:?}", kind_name(latency.kind)),
            ));
        }
    }
    if let (Some(min), Some(max)) = (latency.min, latency.max)
        && min > max
    {
        return Err((format!("{path}.min"), "is greater than max".to_owned()));
    }
    if let Some(sigma) = latency.sigma
        && !(sigma.is_finite() && (0.0..=5.0).contains(&sigma))
    {
        return Err((
            format!("{path}.sigma"),
            format!("{sigma} is out of range (allowed: 0.0 to 5.0)"),
        ));
    }
    Ok(())
}

fn kind_name(kind: LatencyKind) -> &'static str {
    match kind {
        LatencyKind::Constant => "constant",
        LatencyKind::Uniform => "uniform",
        LatencyKind::LogNormal => "log-normal",
    }
}

fn field_names(latency: &Latency) -> Vec<&'static str> {
    let mut names = Vec::new();
    if latency.value.is_some() {
        names.push("value");
    }
    if latency.min.is_some() {
        names.push("min");
    }
    if latency.max.is_some() {
        names.push("max");
    }
    if latency.median.is_some() {
        names.push("median");
    }
    if latency.sigma.is_some() {
        names.push("sigma");
    }
    names
}

fn validate_policy(path: &str, policy: &KeyPolicy, notaries: u32) -> Result<(), Invalid> {
    check_fraction(format!("{path}.jitter_fraction"), policy.jitter_fraction)?;
    if policy.recheck == Recheck::Interval && policy.recheck_interval_ms == 0 {
        return Err((
            format!("{path}.recheck_interval"),
            "must be longer than 0ms".to_owned(),
        ));
    }
    if policy.transport == Transport::NotaryFirst && notaries == 0 {
        return Err((
            format!("{path}.transport"),
            "notary-first needs federation.notaries >= 1".to_owned(),
        ));
    }
    if !(policy.backoff_multiplier.is_finite() && policy.backoff_multiplier >= 1.0) {
        return Err((
            format!("{path}.backoff_multiplier"),
            format!(
                "{} is out of range (allowed: >= 1.0)",
                policy.backoff_multiplier
            ),
        ));
    }
    if policy.backoff_floor_ms == 0 || policy.backoff_floor_ms > policy.backoff_cap_ms {
        return Err((
            format!("{path}.backoff_floor"),
            "needs 0 < backoff_floor <= backoff_cap".to_owned(),
        ));
    }
    if policy.retry_interval_ms == 0 {
        return Err((
            format!("{path}.retry_interval"),
            "must be longer than 0ms".to_owned(),
        ));
    }
    if policy.request_timeout_ms == 0 {
        return Err((
            format!("{path}.request_timeout"),
            "must be longer than 0ms".to_owned(),
        ));
    }
    let rate = policy.incoming_requests_per_domain_per_day;
    if !(rate.is_finite() && rate >= 0.0) {
        return Err((
            format!("{path}.incoming_requests_per_domain_per_day"),
            "must be a number >= 0".to_owned(),
        ));
    }
    Ok(())
}

fn validate_action(
    path: &str,
    action: &Action,
    scenario: &Scenario,
    groups: &[(&str, u32)],
) -> Result<(), Invalid> {
    let check_selector = |field: &str, selector: &Option<Selector>| -> Result<(), Invalid> {
        let Some(selector) = selector else {
            return Err((
                format!("{path}.{field}"),
                "is required by this kind".to_owned(),
            ));
        };
        let Some(&(_, size)) = groups.iter().find(|(name, _)| *name == selector.group) else {
            let names: Vec<&str> = groups.iter().map(|(name, _)| *name).collect();
            return Err((
                format!("{path}.{field}.group"),
                format!(
                    "no group {:?} (allowed: {})",
                    selector.group,
                    names.join(", ")
                ),
            ));
        };
        if size == 0 {
            return Err((
                format!("{path}.{field}.group"),
                format!(
                    "group {:?} is empty: it has no servers to act on",
                    selector.group
                ),
            ));
        }
        // A selector past the group's end would silently act on fewer servers (or none).
        if selector.from >= size {
            return Err((
                format!("{path}.{field}.from"),
                format!(
                    "{} is past the end of group {:?} ({size} servers: from 0 to {})",
                    selector.from,
                    selector.group,
                    size.saturating_sub(1)
                ),
            ));
        }
        if let Some(count) = selector.count {
            let room = size - selector.from;
            if count == 0 || count > room {
                return Err((
                    format!("{path}.{field}.count"),
                    format!(
                        "{count} is out of range (group {:?} has {size} servers, so from {} \
                         at most {room}; leave count out for the rest)",
                        selector.group, selector.from
                    ),
                ));
            }
        }
        Ok(())
    };
    match action.kind {
        ActionKind::Partition => {
            check_selector("a", &action.a)?;
            check_selector("b", &action.b)?;
            if action.partition.is_none() {
                return Err((
                    format!("{path}.partition"),
                    "is required (allowed: symmetric, asymmetric, one-way)".to_owned(),
                ));
            }
            for (field, value) in [
                ("loss_a_to_b", action.loss_a_to_b),
                ("loss_b_to_a", action.loss_b_to_a),
            ] {
                if let Some(value) = value {
                    check_fraction(format!("{path}.{field}"), value)?;
                    if action.partition != Some(PartitionKind::Asymmetric) {
                        return Err((
                            format!("{path}.{field}"),
                            "applies only to partition = \"asymmetric\" (symmetric and one-way \
                             partitions lose everything they cut)"
                                .to_owned(),
                        ));
                    }
                }
            }
        }
        ActionKind::Heal => {}
        _ => check_selector("targets", &action.targets)?,
    }
    let kind = action.kind.name();
    let domain_groups: Vec<&str> = scenario
        .federation
        .domain_groups
        .iter()
        .map(|group| group.name.as_str())
        .collect();
    let observer_groups: Vec<&str> = scenario
        .observers
        .iter()
        .map(|group| group.name.as_str())
        .collect();
    if let Some(targets) = &action.targets {
        let (wanted, allowed) = if action.kind.acts_on_keys() {
            ("a domain group", &domain_groups)
        } else if action.kind == ActionKind::ClockSkew {
            ("an observer group", &observer_groups)
        } else {
            ("", &domain_groups)
        };
        if !wanted.is_empty() && !allowed.contains(&targets.group.as_str()) {
            return Err((
                format!("{path}.targets.group"),
                format!(
                    "{kind} acts on {wanted}; {:?} is not one (allowed: {})",
                    targets.group,
                    allowed.join(", ")
                ),
            ));
        }
    }
    let unused = |field: &str, present: bool, used_by: &[ActionKind]| -> Result<(), Invalid> {
        if present && !used_by.contains(&action.kind) {
            let users: Vec<&str> = used_by.iter().map(|kind| kind.name()).collect();
            return Err((
                format!("{path}.{field}"),
                format!("not used by kind {kind:?} (used by: {})", users.join(", ")),
            ));
        }
        Ok(())
    };
    // The kinds whose containment is measured (`World::open_watches`) are the ones a label names.
    let measured: &[ActionKind] = &[
        ActionKind::RotateKey,
        ActionKind::LoseKey,
        ActionKind::Decommission,
        ActionKind::Depart,
        ActionKind::Reregister,
        ActionKind::Compromise,
        ActionKind::LyingServer,
        ActionKind::KeyFlapping,
    ];
    let partition_only: &[ActionKind] = &[ActionKind::Partition];
    for (field, present, used_by) in [
        (
            "audience",
            action.audience.is_some(),
            &[ActionKind::LyingServer][..],
        ),
        (
            "period",
            action.period.is_some(),
            &[ActionKind::KeyFlapping],
        ),
        (
            "offset_ms",
            action.offset_ms.is_some(),
            &[ActionKind::ClockSkew],
        ),
        ("duration", action.duration.is_some(), partition_only),
        ("mode", action.mode.is_some(), &[ActionKind::Decommission]),
        ("label", action.label.is_some(), measured),
        (
            "status",
            action.status.is_some(),
            &[ActionKind::Decommission],
        ),
        ("a", action.a.is_some(), partition_only),
        ("b", action.b.is_some(), partition_only),
        ("partition", action.partition.is_some(), partition_only),
        ("loss_a_to_b", action.loss_a_to_b.is_some(), partition_only),
        ("loss_b_to_a", action.loss_b_to_a.is_some(), partition_only),
    ] {
        unused(field, present, used_by)?;
    }
    if matches!(action.kind, ActionKind::Partition | ActionKind::Heal) && action.targets.is_some() {
        return Err((
            format!("{path}.targets"),
            format!(
                "not used by kind {kind:?} (a partition cuts `a` from `b`; a heal ends every \
                 partition)"
            ),
        ));
    }
    match action.kind {
        ActionKind::LyingServer => check_selector("audience", &action.audience)?,
        ActionKind::KeyFlapping => match action.period {
            Some(period) if period.ms() >= crate::engine::time::SECOND_MS => {}
            Some(_) => {
                return Err((format!("{path}.period"), "must be at least 1s".to_owned()));
            }
            None => {
                return Err((
                    format!("{path}.period"),
                    "is required by kind \"key-flapping\" (the swap interval, e.g. \"1h\")"
                        .to_owned(),
                ));
            }
        },
        ActionKind::ClockSkew => match action.offset_ms {
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
                    "is required by kind \"clock-skew\" (milliseconds, positive = ahead)"
                        .to_owned(),
                ));
            }
        },
        ActionKind::Partition if action.duration.is_some_and(|duration| duration.ms() == 0) => {
            return Err((
                format!("{path}.duration"),
                "must be longer than 0ms".to_owned(),
            ));
        }
        _ => {}
    }
    if let Some(label) = &action.label
        && (label.is_empty()
            || !label
                .chars()
                .all(|character| character.is_ascii_alphanumeric() || "-_".contains(character)))
    {
        return Err((
            format!("{path}.label"),
            format!("{label:?} is not a metric-safe name (allowed: letters, digits, '-', '_')"),
        ));
    }
    if action.kind == ActionKind::Decommission
        && action.status.is_some()
        && action.mode != Some(DeadMode::Status)
    {
        return Err((
            format!("{path}.status"),
            "is used only with mode = \"status\"".to_owned(),
        ));
    }
    if action.kind == ActionKind::Decommission && action.mode == Some(DeadMode::Status) {
        match action.status {
            Some(status) if (100..=599).contains(&status) && status != 200 && status != 404 => {}
            _ => {
                return Err((
                    format!("{path}.status"),
                    "mode \"status\" needs a status from 100 to 599, other than 200 and 404"
                        .to_owned(),
                ));
            }
        }
    }
    let _ = scenario;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_scenario_loads() {
        let scenario = load(None, &[]).expect("the built-in scenario is valid");
        assert_eq!(scenario.name, "rq1-polling-load");
        assert!(!scenario.observers.is_empty());
    }

    #[test]
    fn set_overrides_a_field_and_is_validated() {
        let scenario = load(None, &["duration=\"2d\"".to_owned()]).unwrap();
        assert_eq!(scenario.duration.ms(), 2 * crate::engine::time::DAY_MS);
        let error = load(None, &["network.loss=2.0".to_owned()]).unwrap_err();
        assert_eq!(error.path, "network.loss");
        assert!(error.problem.contains("allowed: 0.0 to 1.0"), "{error}");
    }

    #[test]
    fn unknown_enum_values_list_the_allowed_ones() {
        let error = load(
            None,
            &["observers[0].policy.recheck=\"sometimes\"".to_owned()],
        )
        .unwrap_err();
        assert_eq!(error.path, "observers[0].policy.recheck");
        assert!(error.problem.contains("at-expiry"), "{error}");
    }
}
