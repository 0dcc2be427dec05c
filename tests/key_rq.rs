//! The key-level research-question metrics and adversaries: containment after a rotation
//! (RQ2), the fail-open window after a compromise and decommission (RQ3), honest link-hours lost
//! (RQ6), key flapping (RQ8), a lying server (RQ10), clock skew, wake-ups (RQ12).

use fedsim::engine::Trace;
use fedsim::scenario::{Scenario, parse};
use fedsim::world::World;
use serde_json::{Map, Value};

fn scenario(text: &str) -> Scenario {
    parse("test.toml", text, &[]).unwrap_or_else(|error| panic!("{error}"))
}

fn run(text: &str) -> (World, Map<String, Value>) {
    let mut world = World::build(&scenario(text), 1, Trace::default());
    world.run(|_| {});
    let metrics = world.metrics();
    (world, metrics)
}

fn number(metrics: &Map<String, Value>, key: &str) -> Option<f64> {
    match metrics.get(key) {
        Some(Value::Null) => None,
        Some(value) => Some(value.as_f64().unwrap_or_else(|| panic!("{key}: {value}"))),
        None => panic!(
            "no metric {key}; have: {}",
            metrics
                .keys()
                .filter(|name| name.starts_with(key.split('.').next().unwrap()))
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

const DAY_S: f64 = 86_400.0;

fn observers(presets: &[&str], known: u32) -> String {
    presets
        .iter()
        .map(|preset| {
            format!(
                "[[observers]]\nname = \"{preset}\"\ndomains = \"o\"\nknown_domains = [{known}]\npolicy = {{ preset = \"{preset}\" }}\n"
            )
        })
        .collect()
}

#[test]
fn after_a_rotation_at_expiry_observers_drop_the_old_key_within_one_lifetime_and_p4_never() {
    let text = format!(
        r#"
name = "rq2"
duration = "3d"
[federation]
notaries = 1
domain_groups = [{{ name = "o", count = 100, key_lifetime = "1d" }}]
{}
[[phases]]
name = "rotation"
at = "12h"
actions = [{{ kind = "rotate-key", label = "rot", targets = {{ group = "o" }} }}]
[outputs]
chart = "none"
"#,
        observers(&["P0", "P1", "P2", "P3", "P4", "P6", "P7"], 100)
    );
    let (_, metrics) = run(&text);
    for preset in ["p1", "p2", "p7"] {
        let t100 = number(&metrics, &format!("containment.rot.{preset}.t100_s")).unwrap();
        let t50 = number(&metrics, &format!("containment.rot.{preset}.t50_s")).unwrap();
        assert!(t100 <= DAY_S + 60.0, "{preset}: t100 {t100} s");
        // Random phases: the median is near half a lifetime.
        assert!(
            (0.3 * DAY_S..0.7 * DAY_S).contains(&t50),
            "{preset}: t50 {t50} s"
        );
    }
    // P4 never re-checks: nobody drops the old key.
    assert_eq!(number(&metrics, "containment.rot.p4.t50_s"), None);
    assert_eq!(
        number(&metrics, "containment.rot.p4.never_dropped_share"),
        Some(1.0)
    );
    assert_eq!(
        number(&metrics, "containment.rot.p4.still_valid_at_1d"),
        Some(1.0)
    );
    // P6 push: every observer re-fetches within a few round trips.
    let push_t100 = number(&metrics, "containment.rot.p6.t100_s").unwrap();
    assert!(push_t100 < 5.0, "push containment {push_t100} s");
    // The pinned-timestamp attacker: P0's v5 rule and P7 accept the old key forever; P1 does not.
    assert_eq!(number(&metrics, "containment.rot.p0.pinned_t50_s"), None);
    assert_eq!(number(&metrics, "containment.rot.p7.pinned_t50_s"), None);
    assert_eq!(
        number(&metrics, "containment.rot.p1.pinned_t100_s"),
        number(&metrics, "containment.rot.p1.t100_s")
    );
    // Everyone who dropped the key holds the new one at the same moment (no gap).
    assert_eq!(
        number(&metrics, "containment.rot.p1.new_key_t100_s"),
        number(&metrics, "containment.rot.p1.t100_s")
    );
    // Honest domains, no partition: no link-hours lost.
    assert_eq!(
        number(&metrics, "group.p1.false_invalid_domain_hours"),
        Some(0.0)
    );
}

#[test]
fn after_compromise_and_silent_decommission_fail_open_never_drops_and_fail_closed_does() {
    let text = format!(
        r#"
name = "rq3"
duration = "10d"
[federation]
domain_groups = [{{ name = "o", count = 40, key_lifetime = "1d" }}]
{}
[[phases]]
name = "attack"
at = "1d"
actions = [
  {{ kind = "compromise", label = "c", targets = {{ group = "o" }} }},
  {{ at = "2h", kind = "decommission", mode = "no-answer", label = "gone", targets = {{ group = "o" }} }},
]
[outputs]
chart = "none"
"#,
        observers(&["P1", "P2", "P7"], 40)
    );
    let (_, metrics) = run(&text);
    assert_eq!(number(&metrics, "containment.c.p1.t50_s"), None);
    assert_eq!(
        number(&metrics, "containment.c.p1.still_valid_at_7d"),
        Some(1.0)
    );
    assert_eq!(
        number(&metrics, "containment.c.p7.still_valid_at_7d"),
        Some(1.0)
    );
    let closed = number(&metrics, "containment.c.p2.t100_s").unwrap();
    assert!(
        closed <= DAY_S + 2.0 * 3600.0 + 60.0,
        "P2 drops by expiry: {closed}"
    );
    // Re-checks in the 2 h between compromise and decommission still got fresh responses, valid
    // for one more day: those keys outlive t0 + 1 d.
    let at_1d = number(&metrics, "containment.c.p2.still_valid_at_1d").unwrap();
    assert!(at_1d > 0.0 && at_1d <= 0.25, "{at_1d}");
    assert_eq!(
        number(&metrics, "containment.c.p2.still_valid_at_7d"),
        Some(0.0)
    );
    // The owner reacted 2 h after the compromise.
    let after = number(&metrics, "containment.c.p2.after_detection_t100_s").unwrap();
    assert!(after <= closed - 7_000.0, "{after} vs {closed}");
    // A decommissioned domain is not honest: its invalidity is not a false one.
    assert_eq!(
        number(&metrics, "group.p2.false_invalid_domain_hours"),
        Some(0.0)
    );
}

#[test]
fn fail_closed_loses_honest_link_hours_behind_a_partition_and_fail_open_does_not() {
    let text = format!(
        r#"
name = "rq6"
duration = "4d"
[federation]
domain_groups = [{{ name = "o", count = 50, key_lifetime = "6h" }}]
{}
[[phases]]
name = "cut"
at = "12h"
actions = [
  {{ kind = "partition", partition = "symmetric", duration = "2d", a = {{ group = "o" }}, b = {{ group = "P2" }} }},
  {{ kind = "partition", partition = "symmetric", duration = "2d", a = {{ group = "o" }}, b = {{ group = "P1" }} }},
]
[outputs]
chart = "none"
"#,
        observers(&["P1", "P2"], 50)
    );
    let (world, metrics) = run(&text);
    assert_eq!(
        number(&metrics, "group.p1.false_invalid_domain_hours"),
        Some(0.0)
    );
    let lost = number(&metrics, "group.p2.false_invalid_domain_hours").unwrap();
    // Each domain's key expires within 6 h of the cut and stays invalid until the first retry
    // after the heal (2 d after the cut). The per-domain backoff (1 min doubling, cap 1 d) has
    // reached its cap by then, so that retry comes 10-16 h after the heal: 52-64 h lost.
    let per_domain = lost / 50.0;
    assert!(
        (52.0..64.0).contains(&per_domain),
        "P2 lost {per_domain} h per domain"
    );
    let p2 = &world.observers[1];
    assert!(
        p2.transitions.len() >= 100,
        "an invalidation and a revalidation per domain"
    );
}

#[test]
fn a_lying_server_splits_observers_by_its_audience() {
    let text = r#"
name = "rq10"
duration = "2d"
[federation]
domain_groups = [{ name = "o", count = 20, key_lifetime = "6h" }]
[[observers]]
name = "moderators"
domains = "o"
known_domains = [20, 20, 20]
policy = { preset = "P1" }
[[observers]]
name = "others"
domains = "o"
known_domains = [20, 20, 20, 20, 20, 20, 20]
policy = { preset = "P1" }
[[phases]]
name = "lie"
at = "1h"
actions = [{ kind = "lying-server", label = "lie", targets = { group = "o", count = 5 }, audience = { group = "moderators" } }]
[outputs]
chart = "none"
"#;
    let (_, metrics) = run(text);
    assert_eq!(
        number(&metrics, "containment.lie.moderators.never_dropped_share"),
        Some(1.0)
    );
    assert_eq!(
        number(&metrics, "containment.lie.others.never_dropped_share"),
        Some(0.0)
    );
    assert_eq!(number(&metrics, "containment.lie.others.pairs"), Some(35.0));
    // The others now hold the second key valid: the split is complete within one lifetime.
    let split = number(&metrics, "containment.lie.others.new_key_t100_s").unwrap();
    assert!(split <= 6.0 * 3600.0 + 60.0, "{split}");
}

#[test]
fn key_flapping_makes_every_observer_invalidate_once_per_period() {
    let text = r#"
name = "rq8"
duration = "12h"
[federation]
domain_groups = [{ name = "o", count = 10, key_lifetime = "2h" }]
[[observers]]
name = "P1"
domains = "o"
known_domains = [10]
policy = { preset = "P1" }
[[phases]]
name = "flap"
at = "0s"
actions = [{ kind = "key-flapping", period = "30m", targets = { group = "o" } }]
[outputs]
chart = "none"
"#;
    let (world, metrics) = run(text);
    let observer = &world.observers[0];
    let invalidations = observer.cache.stats.invalidations_total() as f64 / 10.0;
    // After the first re-check (within the first 2 h), one swap seen every 30 minutes: 20-24
    // per domain in 12 h.
    assert!(
        (19.0..=24.0).contains(&invalidations),
        "{invalidations} invalidations per domain"
    );
    let rechecks = number(&metrics, "p1.n10.fetches_per_h.periodic").unwrap();
    assert!(
        (16.0..=21.0).contains(&rechecks),
        "{rechecks} re-checks/h for 10 domains"
    );
    // Flapping domains are not honest: their invalidity is not counted as lost.
    assert_eq!(
        number(&metrics, "group.p1.false_invalid_domain_hours"),
        Some(0.0)
    );
}

#[test]
fn an_observer_whose_clock_runs_ahead_sees_fresh_responses_as_expired() {
    let text = r#"
name = "skew"
duration = "4d"
[federation]
domain_groups = [{ name = "o", count = 30, key_lifetime = "1d" }]
[[observers]]
name = "ahead"
domains = "o"
known_domains = [30]
policy = { preset = "P1" }
[[observers]]
name = "exact"
domains = "o"
known_domains = [30]
policy = { preset = "P1" }
[[phases]]
name = "skew"
at = "0s"
actions = [{ kind = "clock-skew", offset_ms = 7200000, targets = { group = "ahead" } }]
[outputs]
chart = "none"
"#;
    let (_, metrics) = run(text);
    assert_eq!(
        number(&metrics, "group.exact.false_invalid_domain_hours"),
        Some(0.0)
    );
    let lost = number(&metrics, "group.ahead.false_invalid_domain_hours").unwrap();
    // About 2 h (plus the backoff overshoot) per domain per day.
    let per_domain_day = lost / 30.0 / 4.0;
    assert!(
        (1.5..4.5).contains(&per_domain_day),
        "{per_domain_day} h per domain-day"
    );
}

#[test]
fn wakeups_follow_n_over_l_and_batching_caps_them() {
    let text = r#"
name = "rq12"
duration = "2d"
[federation]
domain_groups = [{ name = "o", count = 2000, key_lifetime = "1d" }]
[[observers]]
name = "exact"
domains = "o"
known_domains = [2000]
policy = { preset = "P1" }
[[observers]]
name = "batched"
domains = "o"
known_domains = [2000]
policy = { preset = "P1", timer_granularity = "1h" }
[metrics]
wakeup_budget_per_hour = 60.0
[outputs]
chart = "none"
"#;
    let (_, metrics) = run(text);
    let exact = number(&metrics, "exact.n2000.wakeups_per_h").unwrap();
    // 2000 domains per day = 83.3 re-checks/h, nearly all in distinct seconds.
    assert!((75.0..=84.0).contains(&exact), "{exact} wake-ups/h");
    let batched = number(&metrics, "batched.n2000.wakeups_per_h").unwrap();
    assert!(batched <= 1.0, "{batched} wake-ups/h with 1 h batching");
    let periodic = number(&metrics, "exact.n2000.fetches_per_h.periodic").unwrap();
    assert!((80.0..=86.0).contains(&periodic), "{periodic}");
    let verifications = number(&metrics, "exact.n2000.verifications_per_h").unwrap();
    assert!((periodic - verifications).abs() < 1.0);
    assert_eq!(
        number(&metrics, "group.exact.max_domains_within_wakeup_budget"),
        None
    );
    assert_eq!(
        number(&metrics, "group.batched.max_domains_within_wakeup_budget"),
        Some(2000.0)
    );
}

#[test]
fn a_push_lost_behind_a_partition_is_never_repeated_and_a_database_loss_is_logged() {
    let text = r#"
name = "push"
duration = "3d"
[federation]
domain_groups = [{ name = "o", count = 20, key_lifetime = "1d" }]
[[observers]]
name = "reached"
domains = "o"
known_domains = [20]
policy = { preset = "P6" }
[[observers]]
name = "cut off"
domains = "o"
known_domains = [20]
policy = { preset = "P6" }
[[observers]]
name = "amnesiac"
domains = "o"
known_domains = [20]
policy = { preset = "P1" }
[[phases]]
name = "rotation"
at = "12h"
actions = [
  { kind = "partition", partition = "symmetric", duration = "1h", a = { group = "o" }, b = { group = "cut off" } },
  { at = "10m", kind = "rotate-key", label = "rot", targets = { group = "o" } },
  { at = "1d", kind = "lose-database", targets = { group = "amnesiac" } },
]
[outputs]
chart = "none"
"#;
    let (world, metrics) = run(text);
    assert_eq!(number(&metrics, "pushes_sent_total"), Some(40.0));
    assert!(number(&metrics, "containment.rot.reached.t100_s").unwrap() < 5.0);
    // The partition healed 50 minutes later, but a push is sent once and P6 never polls.
    assert_eq!(
        number(&metrics, "containment.rot.cut-off.never_dropped_share"),
        Some(1.0)
    );
    let pushed = number(&metrics, "reached.n20.fetches_per_h.push").unwrap();
    assert!((pushed - 20.0 / 72.0).abs() < 1e-6, "{pushed}");
    // The database loss: every slot is logged as forgotten, then revalidated by the re-fetch.
    let amnesiac = &world.observers[2];
    let forgotten = amnesiac
        .transitions
        .iter()
        .filter(|transition| transition.change == fedsim::world::Change::Forgotten)
        .count();
    assert_eq!(forgotten, 20);
    let last = amnesiac.transitions.last().unwrap();
    assert_eq!(last.change, fedsim::world::Change::Revalidated);
    // Forgetting an honest domain's key is lost link time (a few seconds per domain here).
    let lost = number(&metrics, "group.amnesiac.false_invalid_domain_hours").unwrap();
    assert!(lost > 0.0 && lost < 20.0 * 0.01, "{lost}");
}

#[test]
fn runs_write_the_per_question_charts_and_csvs() {
    let base = std::env::temp_dir().join(format!("fedsim-key-rq-charts-{}", std::process::id()));
    let scenario_text = |chart: &str| {
        format!(
            r#"
name = "charts"
duration = "2d"
[federation]
domain_groups = [{{ name = "o", count = 20, key_lifetime = "6h" }}]
[[observers]]
name = "P1, cut 6h"
domains = "o"
known_domains = [10, 20]
policy = {{ preset = "P1" }}
[[observers]]
name = "P2, cut 6h"
domains = "o"
known_domains = [10, 20]
policy = {{ preset = "P2" }}
[[phases]]
name = "events"
at = "6h"
actions = [
  {{ kind = "partition", partition = "symmetric", duration = "6h", a = {{ group = "o" }}, b = {{ group = "P2, cut 6h" }} }},
  {{ kind = "partition", partition = "symmetric", duration = "6h", a = {{ group = "o" }}, b = {{ group = "P1, cut 6h" }} }},
  {{ kind = "rotate-key", label = "rot", targets = {{ group = "o", count = 5 }} }},
]
[metrics]
wakeup_budget_per_hour = 1.0
[outputs]
chart = "{chart}"
"#
        )
    };
    for (chart, files) in [
        (
            "rq2-containment",
            &["containment-rot.svg", "containment-rot.png"][..],
        ),
        (
            "rq6-link-hours-lost",
            &["link-hours-lost.svg", "link-hours-lost.png"][..],
        ),
        ("rq12-wakeups", &["wakeups.svg", "wakeups.png"][..]),
    ] {
        let directory = base.join(chart);
        fedsim::world::run_to_dir(&scenario(&scenario_text(chart)), 1, &directory, false).unwrap();
        for file in files {
            let bytes = std::fs::read(directory.join(file)).unwrap();
            assert!(
                bytes.len() > 1000,
                "{chart}: {file} is {} bytes",
                bytes.len()
            );
        }
        let containment = std::fs::read_to_string(directory.join("containment.csv")).unwrap();
        // 5 rotated domains x 4 observers, plus the header.
        assert_eq!(containment.lines().count(), 1 + 5 * 4, "{containment}");
        let transitions = std::fs::read_to_string(directory.join("transitions.csv")).unwrap();
        assert!(transitions.contains("moved_to_old"), "{transitions}");
    }
    let svg =
        std::fs::read_to_string(base.join("rq6-link-hours-lost/link-hours-lost.svg")).unwrap();
    assert!(svg.contains("P2") && svg.contains("partition length"));
    std::fs::remove_dir_all(base).unwrap();
}

/// RQ10 under P9 in the key world: the observers that saw the real key first never adopt the
/// lying server's second key under the same key ID, while P1 observers do; both stop trusting
/// the first.
#[test]
fn first_seen_wins_observers_never_adopt_a_lying_servers_second_key() {
    let text = std::fs::read_to_string("scenarios/rq10-lying-server.toml").unwrap();
    let scenario =
        parse("rq10.toml", &text, &["duration=12h".to_owned()]).unwrap_or_else(|e| panic!("{e}"));
    let mut world = World::build(&scenario, 1, Trace::default());
    world.run(|_| {});
    let metrics = world.metrics();
    let lie =
        |group: &str, figure: &str| number(&metrics, &format!("containment.lie.{group}.{figure}"));
    assert!(lie("others", "new_key_t100_s").is_some());
    assert_eq!(lie("others-first-seen-wins", "new_key_t50_s"), None);
    assert!(lie("others-first-seen-wins", "t100_s").is_some());
    assert!(number(&metrics, "others-first-seen-wins.n200.key_collisions").unwrap() > 0.0);
}
