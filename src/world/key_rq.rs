//! The key-level research-question metrics (RQ2, RQ3, RQ6, RQ8, RQ10, RQ11, RQ12) computed from
//! the validity tracker and the observers' counters, and the CSV files behind their charts.
//!
//! Definitions (also in docs/notes/keyrq.md):
//! - *containment* of a watched action at t0 (per observer group, over every (observer, watched
//!   domain) pair): the time from t0 until the observer no longer holds the key the domain
//!   served at t0 as valid. `t50_s`/`t95_s`/`t100_s` are nearest-rank quantiles; `null` = that
//!   share of pairs never dropped the key within the run. `pinned_*`: the same for an event
//!   whose timestamp the attacker pinned just before t0. `still_valid_at_{1d,7d,30d}`: share of
//!   pairs still holding the key then (`null` when t0 + that is after the end of the run).
//! - *false-invalid domain-hours*: time an observer held no valid key for a domain while the
//!   domain was alive and serving honestly (not decommissioned, lying or flapping): RQ6's
//!   honest link-hours lost, per domain.
//! - *wake-ups*: distinct 1-second ticks in which a live key-cache timer fired or a push
//!   arrived; *verifications*: key responses parsed and signature-checked.

use std::path::Path;

use serde_json::{Map, Value};

use crate::metrics::{CsvTable, fixed, rounded};
use crate::server::key_cache::Purpose;

use super::build::slug;
use super::output::RunError;
use super::validity::{invalid_intervals, overlap_ms, quantile_of_known};
use super::{Transition, World};

const HOUR_MS: f64 = 3_600_000.0;

/// The metric key of an observer: `<group slug>.n<known domains>` (as the RQ1 metrics).
pub fn observer_key(world: &World, observer: usize) -> String {
    let state = &world.observers[observer];
    format!(
        "{}.n{}",
        slug(&world.scenario.observers[state.group].name),
        state.known_domains
    )
}

/// False-invalid milliseconds of one observer (summed over its domains) and the honest
/// domain-milliseconds it could have lost.
pub fn false_invalid_ms(world: &World, observer: usize) -> (u64, u64) {
    let state = &world.observers[observer];
    let end_ms = world.end_ms();
    let mut transitions: Vec<Transition> = state.transitions.clone();
    // Stable: keeps time order within a slot.
    transitions.sort_by_key(|transition| transition.slot);
    let mut lost_ms = 0;
    let mut honest_total_ms = 0;
    let mut start = 0;
    let mut by_slot: Vec<(u32, &[Transition])> = Vec::new();
    while start < transitions.len() {
        let slot = transitions[start].slot;
        let mut end = start;
        while end < transitions.len() && transitions[end].slot == slot {
            end += 1;
        }
        by_slot.push((slot, &transitions[start..end]));
        start = end;
    }
    let mut next = 0;
    for slot in 0..state.known_domains {
        let domain = state.domain_group_start + slot;
        let initially = !world.initially_dead[domain as usize];
        let honest = world.tracker.honest_intervals(domain, initially, end_ms);
        honest_total_ms += honest.iter().map(|(from, to)| to - from).sum::<u64>();
        if next < by_slot.len() && by_slot[next].0 == slot {
            let invalid = invalid_intervals(by_slot[next].1, end_ms);
            lost_ms += overlap_ms(&invalid, &honest);
            next += 1;
        }
    }
    (lost_ms, honest_total_ms)
}

/// Adds the key-RQ metrics to `metrics`.
pub fn add_metrics(world: &World, metrics: &mut Map<String, Value>) {
    let hours = world.end_ms() as f64 / HOUR_MS;
    let per_hour = |count: u64| rounded(count as f64 / hours);
    let group_count = world.scenario.observers.len();
    let mut group_lost_ms = vec![0u64; group_count];
    let mut group_honest_ms = vec![0u64; group_count];
    for (index, state) in world.observers.iter().enumerate() {
        let key = observer_key(world, index);
        let stats = &state.cache.stats;
        for purpose in Purpose::ALL {
            metrics.insert(
                format!("{key}.fetches_per_h.{}", purpose.label()),
                per_hour(stats.fetches_by_purpose[purpose as usize]),
            );
        }
        metrics.insert(
            format!("{key}.notary_fallbacks_per_h"),
            per_hour(stats.notary_fallbacks),
        );
        metrics.insert(format!("{key}.wakeups_per_h"), per_hour(state.wakeups));
        metrics.insert(
            format!("{key}.verifications_per_h"),
            per_hour(state.verifications),
        );
        metrics.insert(
            format!("{key}.invalidations_per_h"),
            per_hour(stats.invalidations_total()),
        );
        metrics.insert(
            format!("{key}.revalidations_per_h"),
            per_hour(stats.revalidations),
        );
        let (lost_ms, honest_ms) = false_invalid_ms(world, index);
        metrics.insert(
            format!("{key}.false_invalid_domain_hours"),
            rounded(lost_ms as f64 / HOUR_MS),
        );
        group_lost_ms[state.group] += lost_ms;
        group_honest_ms[state.group] += honest_ms;
    }
    for (group_index, group) in world.scenario.observers.iter().enumerate() {
        let group_key = format!("group.{}", slug(&group.name));
        metrics.insert(
            format!("{group_key}.false_invalid_domain_hours"),
            rounded(group_lost_ms[group_index] as f64 / HOUR_MS),
        );
        let share = if group_honest_ms[group_index] > 0 {
            group_lost_ms[group_index] as f64 / group_honest_ms[group_index] as f64
        } else {
            0.0
        };
        metrics.insert(format!("{group_key}.false_invalid_share"), rounded(share));
        if let Some(budget) = world.scenario.metrics.wakeup_budget_per_hour {
            let within = max_domains_within_budget(world, group_index, budget);
            metrics.insert(
                format!("{group_key}.max_domains_within_wakeup_budget"),
                within.map(Value::from).unwrap_or(Value::Null),
            );
            // At expiry, one re-check (and wake-up) per domain per lifetime: N/L <= budget.
            let policy = group.policy.resolve().expect("validated");
            let lifetime_ms = world
                .observers
                .iter()
                .find(|state| state.group == group_index)
                .map(|state| state.key_lifetime_ms.min(7 * 86_400_000));
            if policy.recheck == crate::server::policy::Recheck::AtExpiry
                && policy.timer_granularity_ms == 0
                && let Some(lifetime_ms) = lifetime_ms
            {
                metrics.insert(
                    format!("{group_key}.analytic_max_domains_within_wakeup_budget"),
                    ((budget * lifetime_ms as f64 / HOUR_MS).floor() as u64).into(),
                );
            }
        }
    }
    if world.pushes_sent > 0 {
        metrics.insert("pushes_sent_total".into(), world.pushes_sent.into());
    }
    add_containment_metrics(world, metrics);
}

/// The most known domains among the group's observers whose wake-ups per hour stay within
/// `budget` (`None`: none does).
pub fn max_domains_within_budget(world: &World, group: usize, budget: f64) -> Option<u32> {
    let hours = world.end_ms() as f64 / HOUR_MS;
    world
        .observers
        .iter()
        .filter(|state| state.group == group && state.wakeups as f64 / hours <= budget)
        .map(|state| state.known_domains)
        .max()
}

/// Per (label, observer group): the times (ms after t0) at which each pair dropped the key.
pub struct ContainmentSample {
    pub label: String,
    pub kind: &'static str,
    pub group: usize,
    pub t0_ms: u64,
    pub dropped_after_ms: Vec<Option<u64>>,
    pub pinned_dropped_after_ms: Vec<Option<u64>>,
    pub new_key_after_ms: Vec<Option<u64>>,
    /// For compromises the owner reacted to: drop times after that reaction.
    pub after_detection_ms: Vec<Option<u64>>,
    pub domains: Vec<u32>,
}

/// Groups the watches' pairs by (label, observer group), in order of first appearance.
pub fn containment_samples(world: &World) -> Vec<ContainmentSample> {
    let mut samples: Vec<ContainmentSample> = Vec::new();
    for watch in &world.tracker.watches {
        for pair in &watch.pairs {
            let group = world.observers[pair.observer as usize].group;
            let position = samples
                .iter()
                .position(|sample| sample.label == watch.label && sample.group == group);
            let index = match position {
                Some(index) => index,
                None => {
                    samples.push(ContainmentSample {
                        label: watch.label.clone(),
                        kind: watch.kind.name(),
                        group,
                        t0_ms: watch.t0_ms,
                        dropped_after_ms: Vec::new(),
                        pinned_dropped_after_ms: Vec::new(),
                        new_key_after_ms: Vec::new(),
                        after_detection_ms: Vec::new(),
                        domains: Vec::new(),
                    });
                    samples.len() - 1
                }
            };
            let sample = &mut samples[index];
            let after = |at: Option<u64>| at.map(|at_ms| at_ms - watch.t0_ms);
            sample.dropped_after_ms.push(after(pair.dropped_ms));
            sample
                .pinned_dropped_after_ms
                .push(after(pair.pinned_dropped_ms));
            sample.new_key_after_ms.push(after(pair.new_key_ms));
            if let Some(detected_ms) = watch.detected_at_ms {
                sample.after_detection_ms.push(
                    pair.dropped_ms
                        .map(|at_ms| at_ms.saturating_sub(detected_ms)),
                );
            }
            if !sample.domains.contains(&watch.domain) {
                sample.domains.push(watch.domain);
            }
        }
    }
    samples
}

fn seconds(value: Option<u64>) -> Value {
    value
        .map(|ms| rounded(ms as f64 / 1000.0))
        .unwrap_or(Value::Null)
}

fn add_containment_metrics(world: &World, metrics: &mut Map<String, Value>) {
    let end_ms = world.end_ms();
    for sample in containment_samples(world) {
        let prefix = format!(
            "containment.{}.{}",
            sample.label,
            slug(&world.scenario.observers[sample.group].name)
        );
        metrics.insert(
            format!("{prefix}.pairs"),
            sample.dropped_after_ms.len().into(),
        );
        for (name, values) in [
            ("", &sample.dropped_after_ms),
            ("pinned_", &sample.pinned_dropped_after_ms),
            ("new_key_", &sample.new_key_after_ms),
            ("after_detection_", &sample.after_detection_ms),
        ] {
            if values.is_empty() {
                continue;
            }
            for (quantile, fraction) in [("t50_s", 0.5), ("t95_s", 0.95), ("t100_s", 1.0)] {
                metrics.insert(
                    format!("{prefix}.{name}{quantile}"),
                    seconds(quantile_of_known(values, fraction)),
                );
            }
        }
        let pairs = sample.dropped_after_ms.len() as f64;
        for (name, after_ms) in [
            ("1d", 86_400_000u64),
            ("7d", 7 * 86_400_000),
            ("30d", 30 * 86_400_000),
        ] {
            let value = if sample.t0_ms + after_ms <= end_ms {
                let still = sample
                    .dropped_after_ms
                    .iter()
                    .filter(|dropped| dropped.is_none_or(|ms| ms > after_ms))
                    .count();
                rounded(still as f64 / pairs)
            } else {
                Value::Null
            };
            metrics.insert(format!("{prefix}.still_valid_at_{name}"), value);
        }
        let never = sample
            .dropped_after_ms
            .iter()
            .filter(|dropped| dropped.is_none())
            .count();
        metrics.insert(
            format!("{prefix}.never_dropped_share"),
            rounded(never as f64 / pairs),
        );
        let received: u64 = sample
            .domains
            .iter()
            .map(|domain| match world.net.domain_state(*domain) {
                crate::net::DomainState::Served(server) => server,
                _ => *domain,
            })
            .map(|server| world.requests_received[server as usize])
            .sum();
        metrics.insert(
            format!("{prefix}.origin_requests_received"),
            received.into(),
        );
    }
}

/// `transitions.csv`: every validity change of every observer × domain.
pub fn write_transitions(world: &World, out_dir: &Path) -> Result<(), RunError> {
    let mut table = CsvTable::new(&["t_s", "observer", "domain", "change", "valid_after"]);
    for state in &world.observers {
        for transition in &state.transitions {
            let domain = state.domain_group_start + transition.slot;
            table.row(&[
                fixed(transition.at_ms as f64 / 1000.0, 3),
                state.name.clone(),
                world.domain_names[domain as usize].clone(),
                transition.change.label().to_owned(),
                transition.change.valid_after().to_string(),
            ]);
        }
    }
    let path = out_dir.join("transitions.csv");
    table.write(&path).map_err(|error| RunError::Io {
        path: path.display().to_string(),
        message: error.to_string(),
    })
}

/// `containment.csv`: one row per (watched action, observer, domain).
pub fn write_containment(world: &World, out_dir: &Path) -> Result<(), RunError> {
    let mut table = CsvTable::new(&[
        "label",
        "kind",
        "t0_s",
        "domain",
        "observer",
        "group",
        "policy",
        "dropped_after_s",
        "pinned_dropped_after_s",
        "new_key_after_s",
        "detected_at_s",
    ]);
    let cell = |value: Option<u64>| {
        value
            .map(|ms| fixed(ms as f64 / 1000.0, 3))
            .unwrap_or_default()
    };
    for watch in &world.tracker.watches {
        for pair in &watch.pairs {
            let state = &world.observers[pair.observer as usize];
            let after = |at: Option<u64>| at.map(|at_ms| at_ms - watch.t0_ms);
            table.row(&[
                watch.label.clone(),
                watch.kind.name().to_owned(),
                fixed(watch.t0_ms as f64 / 1000.0, 3),
                world.domain_names[watch.domain as usize].clone(),
                state.name.clone(),
                world.scenario.observers[state.group].name.clone(),
                state.cache.policy().preset.clone(),
                cell(after(pair.dropped_ms)),
                cell(after(pair.pinned_dropped_ms)),
                cell(after(pair.new_key_ms)),
                cell(watch.detected_at_ms),
            ]);
        }
    }
    let path = out_dir.join("containment.csv");
    table.write(&path).map_err(|error| RunError::Io {
        path: path.display().to_string(),
        message: error.to_string(),
    })
}
