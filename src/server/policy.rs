//! The key re-check policy: orthogonal knobs, and the named presets of questions.md §2.3.
//!
//! A policy is data. The key layer reads only these fields; the scenario resolves a preset plus
//! per-knob overrides into one `KeyPolicy`.

use serde::{Deserialize, Serialize};

use crate::engine::time::{DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS};

/// When a server re-checks a cached key of another domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recheck {
    /// At the cached (possibly clamped) `valid_until_ts`: MSC4430's "no change to polling".
    AtExpiry,
    /// Every `recheck_interval`, whatever the key's lifetime.
    Interval,
    /// At expiry plus a uniform delay of up to `jitter_fraction` of the lifetime (late jitter:
    /// it spreads the load; a re-check before expiry would get the same response back).
    Jittered,
    /// When half the remaining lifetime has passed (what notaries do with their cache); if that
    /// returns the same response, at expiry.
    HalfLife,
    /// Only when a signature must be checked and the cached key is missing or expired.
    OnDemand,
    /// Never after the first fetch (verify once, cache forever).
    Never,
}

/// Where a re-check asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// `GET /_matrix/key/v2/server` on the origin.
    Direct,
    /// `/_matrix/key/v2/query` on a notary first, the origin if the notary fails.
    NotaryFirst,
}

/// How failed fetches to a domain delay the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackoffKind {
    /// Retry after a constant `retry_interval`.
    None,
    /// Synapse's destination backoff: 10 min, x2 with a 0.8-1.4 jitter, cap 7 d.
    Synapse,
    /// MSC4499 negative caching: 60 s floor, x2, cap 1 h.
    Msc4499,
    /// MSC4430's "global backoff timer per-domain": floor/multiplier/cap from the knobs; it also
    /// blocks on-demand fetches to the domain while it runs.
    PerDomainGlobal,
}

/// What a failed re-check (no valid HTTP answer, or a status other than 200/404) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unreachable {
    /// MSC4430 as written: the cached key stays valid.
    FailOpen,
    /// The original draft: the key becomes invalid once its `valid_until_ts` has passed.
    FailClosed,
}

/// What a 200 with an unparseable body or a bad self-signature means (gap A2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Malformed {
    /// Treat it like an unreachable origin.
    FailOpen,
    /// Treat it like "no key": the cached key becomes invalid.
    Invalidate,
}

/// Which keys a signature with a past timestamp may be checked against (what an attacker who
/// pins `origin_server_ts` inside an old key's validity gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OldKeys {
    /// MSC4430's member co-signature rule: only the current key, at check time; a timestamp
    /// buys nothing.
    CurrentOnly,
    /// The room v5+ rule (P0 today) and P7 "expiry is not revocation": a key in
    /// `old_verify_keys` still verifies events whose timestamp is at most its `expired_ts`.
    UntilExpiredTs,
}

/// Which key body a cache binds to a `(domain, key ID)` when answers disagree over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyBinding {
    /// The latest answer wins: a new body under a known key ID replaces the old one (today's
    /// caches, and MSC4430 as written).
    Latest,
    /// MSC4499's "First Seen Wins": the first body seen for a key ID stays bound for good (not
    /// purged at expiry); a later answer listing another body under that ID is a collision and
    /// that entry is ignored, with no trial verification. Protects history from a lying server
    /// or a domain's new owner reusing a key ID, at the price of refusing a server that lost its
    /// key and made a new one under the same ID.
    FirstSeenWins,
}

/// A complete key re-check policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyPolicy {
    /// The preset it started from.
    pub preset: String,
    pub recheck: Recheck,
    /// For `Recheck::Interval`.
    pub recheck_interval_ms: u64,
    /// For `Recheck::Jittered`: the largest fraction of the lifetime a re-check comes late.
    pub jitter_fraction: f64,
    pub transport: Transport,
    pub backoff: BackoffKind,
    /// First backoff interval after a failure.
    pub backoff_floor_ms: u64,
    /// Growth per further failure.
    pub backoff_multiplier: f64,
    /// Largest backoff interval.
    pub backoff_cap_ms: u64,
    /// Random factor range applied to each backoff step (Synapse: 0.8-1.4); 1.0-1.0 = none.
    pub backoff_jitter_low: f64,
    pub backoff_jitter_high: f64,
    /// With `BackoffKind::None`: the delay before retrying a failed re-check.
    pub retry_interval_ms: u64,
    /// At most this many key requests in flight at once (0 = unlimited); the rest queue FIFO.
    pub max_in_flight: u32,
    /// Whether a fetch for a domain joins one already in flight instead of sending another.
    pub coalesce: bool,
    pub unreachable: Unreachable,
    pub malformed: Malformed,
    /// Cap `valid_until_ts` at fetch time + 7 days (the spec's rule).
    pub clamp_7d: bool,
    /// How long a request may take before it counts as a timeout (Synapse: 10 s).
    pub request_timeout_ms: u64,
    /// For `Recheck::OnDemand`: the mean rate of incoming signed requests per known domain
    /// (a seeded Poisson stream standing in for the events that later issues deliver).
    pub incoming_requests_per_domain_per_day: f64,
    /// Which keys verify signatures with past timestamps (the attacker's pinned-timestamp
    /// strategy).
    pub old_keys: OldKeys,
    /// Whether a rotating origin's notification makes this server re-fetch at once (P6).
    pub push: bool,
    /// Re-check timers are rounded up to a multiple of this (0 = exact): batching re-checks so
    /// an idle host wakes at most once per granule (RQ12).
    pub timer_granularity_ms: u64,
    /// Which body a known key ID stays bound to (P9: first seen wins).
    pub key_binding: KeyBinding,
}

/// The preset names `policy.preset` accepts.
pub const PRESET_NAMES: &[&str] = &[
    "P0",
    "P1",
    "P1a",
    "P1b",
    "P2",
    "P3",
    "P4",
    "P6",
    "P7",
    "P9",
    "half-life",
    "jittered",
];

impl KeyPolicy {
    /// MSC4430 as written (P1): re-check at expiry, directly, per-domain global backoff,
    /// fail-open.
    pub fn msc4430() -> KeyPolicy {
        KeyPolicy {
            preset: "P1".to_owned(),
            recheck: Recheck::AtExpiry,
            recheck_interval_ms: DAY_MS,
            jitter_fraction: 0.1,
            transport: Transport::Direct,
            backoff: BackoffKind::PerDomainGlobal,
            backoff_floor_ms: MINUTE_MS,
            backoff_multiplier: 2.0,
            backoff_cap_ms: DAY_MS,
            backoff_jitter_low: 1.0,
            backoff_jitter_high: 1.0,
            retry_interval_ms: MINUTE_MS,
            max_in_flight: 64,
            coalesce: true,
            unreachable: Unreachable::FailOpen,
            malformed: Malformed::FailOpen,
            clamp_7d: true,
            request_timeout_ms: 10 * SECOND_MS,
            incoming_requests_per_domain_per_day: 24.0,
            old_keys: OldKeys::CurrentOnly,
            push: false,
            timer_granularity_ms: 0,
            key_binding: KeyBinding::Latest,
        }
    }

    /// The named preset, or `None` for an unknown name (see [`PRESET_NAMES`]).
    pub fn preset(name: &str) -> Option<KeyPolicy> {
        let mut policy = KeyPolicy::msc4430();
        policy.preset = name.to_owned();
        match name {
            // Today (Synapse): on demand, notaries first, key fetches bypass the destination
            // backoff, and a key that cannot be refreshed cannot check new signatures.
            "P0" => {
                policy.recheck = Recheck::OnDemand;
                policy.transport = Transport::NotaryFirst;
                policy.backoff = BackoffKind::None;
                policy.unreachable = Unreachable::FailClosed;
                policy.max_in_flight = 0;
                policy.old_keys = OldKeys::UntilExpiredTs;
            }
            "P1" | "P1b" => {}
            "P1a" => policy.transport = Transport::NotaryFirst,
            "P2" => policy.unreachable = Unreachable::FailClosed,
            "P3" => policy.recheck = Recheck::OnDemand,
            "P4" => policy.recheck = Recheck::Never,
            // Push instead of poll: no steady-state polling; a rotating origin notifies the
            // servers that know it, and they re-fetch.
            "P6" => {
                policy.recheck = Recheck::Never;
                policy.push = true;
            }
            // Expiry is not revocation: P1, but a key moved to old_verify_keys keeps verifying
            // events up to its expired_ts (only 404 or a foreign key revokes everything).
            "P7" => policy.old_keys = OldKeys::UntilExpiredTs,
            // MSC4499's cache discipline: negative caching (60 s floor, 1 h cap), coalescing
            // (already P1's), and first-seen-wins key bindings.
            "P9" => {
                policy.backoff = BackoffKind::Msc4499;
                policy.backoff_floor_ms = MINUTE_MS;
                policy.backoff_cap_ms = HOUR_MS;
                policy.key_binding = KeyBinding::FirstSeenWins;
            }
            "half-life" => policy.recheck = Recheck::HalfLife,
            "jittered" => policy.recheck = Recheck::Jittered,
            _ => return None,
        }
        Some(policy)
    }

    /// Applies the fixed parameters of a backoff kind (Synapse, MSC4499); the per-domain global
    /// kind keeps the floor/multiplier/cap knobs.
    pub fn apply_backoff_kind(&mut self, kind: BackoffKind) {
        self.backoff = kind;
        match kind {
            BackoffKind::Synapse => {
                self.backoff_floor_ms = 10 * MINUTE_MS;
                self.backoff_multiplier = 2.0;
                self.backoff_cap_ms = 7 * DAY_MS;
                self.backoff_jitter_low = 0.8;
                self.backoff_jitter_high = 1.4;
            }
            BackoffKind::Msc4499 => {
                self.backoff_floor_ms = MINUTE_MS;
                self.backoff_multiplier = 2.0;
                self.backoff_cap_ms = HOUR_MS;
                self.backoff_jitter_low = 1.0;
                self.backoff_jitter_high = 1.0;
            }
            BackoffKind::None | BackoffKind::PerDomainGlobal => {}
        }
    }
}
