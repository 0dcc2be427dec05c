//! Whole-world tests: the arithmetic anchor N/L, every request outcome, determinism, and the
//! verification memo's transparency.

#[path = "common/world_run.rs"]
mod world_run;

use fedsim::engine::Trace;
use fedsim::scenario::{Scenario, parse};
use fedsim::world::World;
use world_run::result_files;

fn scenario(text: &str) -> Scenario {
    parse("test.toml", text, &[]).unwrap()
}

fn polling(domains: u32, lifetime: &str, duration: &str) -> Scenario {
    scenario(&format!(
        r#"
name = "arithmetic"
duration = "{duration}"
[federation]
domain_groups = [{{ name = "g", count = {domains}, key_lifetime = "{lifetime}" }}]
[network]
latency = {{ kind = "log-normal", median = "60ms", sigma = 0.5 }}
[[observers]]
name = "o"
domains = "g"
known_domains = [{domains}]
policy = {{ preset = "P1" }}
[outputs]
chart = "none"
"#
    ))
}

/// With aligned expiry polling, no faults and N known domains, the measured mean request rate is
/// within 2% of N/L.
#[test]
fn at_expiry_polling_rate_is_n_over_l_within_two_percent() {
    for (domains, lifetime, lifetime_s, duration, duration_s) in [
        (1_000, "1d", 86_400.0, "3d", 3.0 * 86_400.0),
        (10_000, "1d", 86_400.0, "2d", 2.0 * 86_400.0),
        (1_000, "7d", 7.0 * 86_400.0, "21d", 21.0 * 86_400.0),
        (10_000, "7d", 7.0 * 86_400.0, "14d", 14.0 * 86_400.0),
    ] {
        let mut world = World::build(&polling(domains, lifetime, duration), 1, Trace::default());
        world.run(|_| {});
        let measured = world.observers[0].cache.stats.requests() as f64 / duration_s;
        let analytic = f64::from(domains) / lifetime_s;
        let error = (measured / analytic - 1.0).abs();
        assert!(
            error <= 0.02,
            "N={domains} L={lifetime}: measured {measured} req/s, N/L {analytic}, off by {error}"
        );
        assert_eq!(world.totals.invalidations, 0, "no faults, no invalidations");
    }
}

fn outcomes_scenario() -> Scenario {
    scenario(
        r#"
name = "outcomes"
duration = "6h"
[federation]
notaries = 1
domain_groups = [{ name = "g", count = 6, key_lifetime = "1h" }]
[network]
latency = { kind = "uniform", min = "20ms", max = "80ms" }
[[observers]]
name = "o"
domains = "g"
known_domains = [6]
policy = { preset = "P1", backoff = "none", retry_interval = "10m" }
[[phases]]
name = "faults"
at = "30m"
actions = [
  { kind = "crash", targets = { group = "g", from = 0, count = 1 } },
  { kind = "decommission", mode = "not-found", targets = { group = "g", from = 1, count = 1 } },
  { kind = "decommission", mode = "status", status = 503, targets = { group = "g", from = 2, count = 1 } },
  { kind = "decommission", mode = "no-answer", targets = { group = "g", from = 3, count = 1 } },
  { kind = "rotate-key", targets = { group = "g", from = 4, count = 1 } },
  { kind = "reregister", targets = { group = "g", from = 5, count = 1 } },
]
[outputs]
chart = "none"
"#,
    )
}

/// Each kind of domain and server state ends requests in its own outcome, and the key cache
/// reads each as the outcome table says.
#[test]
fn every_request_outcome_occurs_and_is_read_by_the_table() {
    let mut world = World::build(&outcomes_scenario(), 3, Trace::default());
    world.run(|_| {});
    let totals = world.totals;
    assert!(totals.answers_ok > 0, "200");
    assert!(totals.answers_refused > 0, "crashed server: refused");
    assert!(totals.answers_not_found > 0, "404 domain");
    assert!(totals.answers_status > 0, "503 domain");
    assert!(totals.answers_timeout > 0, "parked domain: timeout");
    let reasons: std::collections::BTreeMap<_, _> = world
        .invalidations_by_reason()
        .into_iter()
        .map(|(reason, count)| (reason.label(), count))
        .collect();
    assert_eq!(reasons["not_found"], 1, "{reasons:?}");
    assert_eq!(reasons["moved_to_old"], 1, "{reasons:?}");
    assert_eq!(
        reasons["different_bytes"], 1,
        "re-registered domain: {reasons:?}"
    );
    // Fail-open: refused, 503 and timeouts invalidate nothing.
    assert_eq!(reasons["unreachable_after_expiry"], 0);
    assert!(world.observers[0].requests_to_dead_domains > 0);
}

fn faulty_scenario() -> Scenario {
    scenario(
        r#"
name = "faulty"
duration = "2d"
[federation]
notaries = 1
domain_groups = [
  { name = "a", count = 300, key_lifetime = "6h", dead_fraction = 0.1 },
  { name = "b", count = 200, key_lifetime = "1d", region = 1 },
]
[network]
regions = 2
latency = { kind = "log-normal", median = "50ms", sigma = 0.8 }
inter_region_latency = { kind = "uniform", min = "50ms", max = "150ms" }
loss = 0.02
random_partitions = { rate_per_day = 6.0, mean_duration = "20m", kind = "symmetric" }
[[observers]]
name = "p1a"
domains = "a"
known_domains = [100, 300]
policy = { preset = "P1a", max_in_flight = 4 }
[[observers]]
name = "p0"
domains = "b"
known_domains_distribution = { kind = "log-uniform", min = 20, max = 200, servers = 3 }
policy = { preset = "P0", incoming_requests_per_domain_per_day = 12.0 }
[[observers]]
name = "jittered"
domains = "b"
known_domains = [200]
policy = { preset = "jittered", backoff = "synapse", unreachable = "fail-closed" }
[[phases]]
name = "trouble"
at = "12h"
actions = [
  { kind = "partition", partition = "one-way", a = { group = "a", count = 50 }, b = { group = "p1a" } },
  { at = "2h", kind = "heal" },
  { at = "3h", kind = "rotate-key", targets = { group = "b", count = 20 } },
  { at = "4h", kind = "lose-database", targets = { group = "p1a", count = 1 } },
  { at = "5h", kind = "crash", targets = { group = "notaries" } },
  { at = "9h", kind = "restart", targets = { group = "notaries" } },
  { at = "10h", kind = "crash", targets = { group = "jittered" } },
  { at = "11h", kind = "restart", targets = { group = "jittered" } },
]
[outputs]
trace = true
chart = "rq1-polling-load"
"#,
    )
}

/// The same scenario and seed give byte-identical result files; another seed does not.
#[test]
fn runs_are_deterministic_and_seeds_matter() {
    let base = std::env::temp_dir().join(format!("fedsim-determinism-{}", std::process::id()));
    let scenario = faulty_scenario();
    let first = fedsim::world::run_to_dir(&scenario, 7, &base.join("a"), false).unwrap();
    fedsim::world::run_to_dir(&scenario, 7, &base.join("b"), false).unwrap();
    let other = fedsim::world::run_to_dir(&scenario, 8, &base.join("c"), false).unwrap();
    let files_a = result_files(&base.join("a"));
    let names: Vec<&str> = files_a.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "containment.csv",
            "polling-load.png",
            "polling-load.svg",
            "servers.csv",
            "summary.json",
            "timeseries.csv",
            "trace.jsonl",
            "transitions.csv"
        ]
    );
    assert_eq!(files_a, result_files(&base.join("b")));
    assert_ne!(first.event_hash, other.event_hash);
    let summary_a = std::fs::read(base.join("a/summary.json")).unwrap();
    let summary_c = std::fs::read(base.join("c/summary.json")).unwrap();
    assert_ne!(summary_a, summary_c);
    assert!(first.failed_checks.is_empty(), "{:?}", first.failed_checks);
    assert!(first.events_processed > 10_000);
    std::fs::remove_dir_all(base).unwrap();
}

/// Verifying each distinct response once (the memo) changes no result.
#[test]
fn the_verification_memo_changes_nothing() {
    let scenario = faulty_scenario();
    let mut with_memo = World::build(&scenario, 11, Trace::default());
    with_memo.run(|_| {});
    let mut without_memo = World::build(&scenario, 11, Trace::default());
    without_memo.memo.disabled = true;
    // The warm start (in build) used the memo; count only what the run does.
    let hits_after_build = without_memo.memo.hits;
    without_memo.run(|_| {});
    assert_eq!(with_memo.trace.hash_hex(), without_memo.trace.hash_hex());
    assert_eq!(
        with_memo.totals.key_requests,
        without_memo.totals.key_requests
    );
    assert!(with_memo.memo.hits > 0);
    assert_eq!(without_memo.memo.hits, hits_after_build);
}

/// An observer that departs or is decommissioned stops polling, as a crashed one does: 20
/// domains with one-hour keys are polled once (the first hour), not every hour of the day.
#[test]
fn an_observer_that_leaves_stops_polling() {
    for kind in ["crash", "depart", "decommission"] {
        let text = format!(
            r#"
name = "leaves"
duration = "1d"
[federation]
domain_groups = [{{ name = "origins", count = 20, key_lifetime = "1h" }}]
[network]
latency = {{ kind = "constant", value = "50ms" }}
[[observers]]
name = "obs"
domains = "origins"
known_domains = [20]
policy = {{ preset = "P1" }}
[[phases]]
name = "gone"
at = "1h"
actions = [{{ kind = "{kind}", targets = {{ group = "obs" }} }}]
[outputs]
chart = "none"
"#
        );
        let mut world = World::build(&scenario(&text), 1, Trace::default());
        world.run(|_| {});
        assert_eq!(world.observers[0].cache.stats.requests(), 20, "{kind}");
    }
}

/// An on-demand observer re-checks a domain's key when that domain sends it a request; a
/// partition between them stops those requests (it used to let them through, so a cut-off
/// observer kept re-fetching on triggers it could never have received).
#[test]
fn a_partition_stops_the_requests_that_trigger_on_demand_rechecks() {
    let text = |partition: &str| {
        format!(
            r#"
name = "on-demand-cut"
duration = "2d"
[federation]
notaries = 1
domain_groups = [{{ name = "g", count = 20, key_lifetime = "7d" }}]
[network]
latency = {{ kind = "constant", value = "50ms" }}
[[observers]]
name = "o"
domains = "g"
known_domains = [20]
policy = {{ preset = "P0", incoming_requests_per_domain_per_day = 48.0 }}
{partition}
[outputs]
chart = "none"
"#
        )
    };
    let base = std::env::temp_dir().join(format!("fedsim-on-demand-cut-{}", std::process::id()));
    let cut_metric = |scenario: &Scenario, dir: &str| {
        let outcome = fedsim::world::run_to_dir(scenario, 3, &base.join(dir), false).unwrap();
        outcome.metrics["incoming_cut_by_partition_total"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(cut_metric(&scenario(&text("")), "open"), 0);
    // Half a day of a partition of this kind between sides a and b.
    let split = |kind: &str, a: &str, b: &str| {
        scenario(&text(&format!(
            r#"[[phases]]
name = "split"
at = "12h"
actions = [
  {{ kind = "partition", partition = "{kind}", a = {{ group = "{a}" }}, b = {{ group = "{b}" }} }},
  {{ at = "12h", kind = "heal" }},
]"#
        )))
    };
    // 20 domains x 48 a day x half a day cut: ~480 triggers stopped.
    let cut = cut_metric(&split("symmetric", "g", "o"), "cut");
    assert!((300..=700).contains(&cut), "{cut} triggers cut");
    // A one-way cut from the observer to the domains leaves the domains' requests alone.
    let one_way = cut_metric(&split("one-way", "o", "g"), "one-way");
    assert_eq!(one_way, 0);
    let _ = std::fs::remove_dir_all(&base);
}
