//! Running a room-world scenario into a results directory: summary.json (flat `metrics`,
//! `checks`), timeseries.csv, servers.csv and run-info.json (the only file allowed to differ
//! between identical runs), written atomically.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::engine::Trace;
use crate::metrics::{CsvTable, fixed, rounded, write_json};
use crate::room::metrics::{self as room_metrics, MessageView, NumberedViews};
use crate::room::properties;
use crate::room::room_state::Fate;
use crate::scenario::Scenario;
use crate::server::policy::KeyBinding;
use crate::world::{Progress, RunError, RunOutcome, peak_memory_kib};

use super::{Counters, Done, FedWorld, Purpose, RoomIndex};

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> RunError + '_ {
    move |error| RunError::Io {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

/// Runs the room-world `scenario` with `seed` and writes its results into `out_dir`.
pub fn run_to_dir(
    scenario: &Scenario,
    seed: u64,
    out_dir: &Path,
    show_progress: bool,
) -> Result<RunOutcome, RunError> {
    std::fs::create_dir_all(out_dir).map_err(io_error(out_dir))?;
    let started = Instant::now();
    let mut world = FedWorld::build(scenario, seed, Trace::default());
    let built_seconds = started.elapsed().as_secs_f64();
    if show_progress && built_seconds >= 5.0 {
        eprintln!("{}", build_line(&world, built_seconds));
    }
    let mut progress = Progress::new(show_progress, world.end_ms());
    world.run(|now_ms| progress.update(now_ms));
    progress.finish();
    let run_seconds = started.elapsed().as_secs_f64();
    let outcome = write_results(&mut world, out_dir, run_seconds, started);
    crate::world::drop_in_background(world);
    outcome
}

/// What a large world's build costs and implies, printed once it is built: the key-cache
/// slots (ordered pairs of servers sharing a room) and the key re-checks they need at one per
/// key lifetime over the run, a floor on the events any run of this world must process.
fn build_line(world: &FedWorld, built_seconds: f64) -> String {
    let lifetime_ms = world.config.key_lifetime.ms().max(1);
    let lifetimes = world.end_ms() / lifetime_ms;
    format!(
        "fedsim: world built in {built_seconds:.0} s: {} servers, {} key-cache slots (ordered \
         pairs of servers sharing a room); at one re-check per {:.1} h key lifetime the run \
         needs at least {} key re-checks",
        world.servers.len(),
        world.key_cache_slots,
        lifetime_ms as f64 / 3_600_000.0,
        world.key_cache_slots * lifetimes,
    )
}

/// Messages sent this close to the end may still be in flight; coverage ignores them.
pub const COVERAGE_GRACE_MS: u64 = 60_000;

fn write_results(
    world: &mut FedWorld,
    out_dir: &Path,
    run_seconds: f64,
    started: Instant,
) -> Result<RunOutcome, RunError> {
    let mut metrics = headline_metrics(world);
    super::bitrot::write_bitrot(world, out_dir, &mut metrics)?;
    super::divergence::write_divergence(world, out_dir, &mut metrics)?;
    super::storm::write_storm(world, out_dir, &mut metrics)?;
    super::identity::identity_metrics(world, &mut metrics);
    let checks = run_checks(world);
    let failed_checks: Vec<(String, String)> = checks
        .iter()
        .filter(|(_, passed, _)| !passed)
        .map(|(name, _, detail)| (name.clone(), detail.clone()))
        .collect();
    let summary = json!({
        "scenario": world.scenario.name,
        "seed": world.seed,
        "fedsim_version": env!("CARGO_PKG_VERSION"),
        "parameters": {
            "scenario": serde_json::to_value(&world.scenario).unwrap_or(Value::Null),
            "room_policy": world.room_policy.describe().into_iter()
                .map(|(knob, value)| (knob.to_owned(), Value::String(value)))
                .collect::<Map<String, Value>>(),
            "key_policy": serde_json::to_value(&world.key_policy).unwrap_or(Value::Null),
        },
        "metrics": Value::Object(metrics.clone()),
        "checks": checks.iter().map(|(name, passed, detail)| json!({
            "name": name, "passed": passed, "detail": detail,
        })).collect::<Vec<_>>(),
        "event_hash": world.trace.hash_hex(),
    });
    let summary_path = out_dir.join("summary.json");
    write_json(&summary_path, &summary).map_err(io_error(&summary_path))?;
    write_timeseries(world, out_dir)?;
    write_servers(world, out_dir)?;
    let wall_seconds = started.elapsed().as_secs_f64();
    // The crypto floor (issue 5): every ed25519 signature the run made x one raw signature +
    // every distinct signature check x one raw strict verification, single core. Signatures:
    // events, co-signatures of member events, key responses. Distinct checks: received event
    // copies (CheckMemo entries: check 2), key-response bodies (VerifyMemo), member-link
    // co-signatures (per event copy and distinct key answers, shared across servers).
    let key_responses_signed: u64 = world
        .servers
        .iter()
        .map(|server| server.publisher.signatures_made)
        .sum();
    let member_link_checks = world
        .shared_facts
        .as_ref()
        .map_or(0, |facts| facts.stats().member_links_computed);
    let signatures_made = world.events_signed + world.cosignatures_made + key_responses_signed;
    let signature_checks = world.memo.len() as u64 + world.verify_memo.checks + member_link_checks;
    let raw = crate::metrics::raw_crypto::measure_raw_crypto();
    let floor_seconds =
        signatures_made as f64 * raw.sign_seconds + signature_checks as f64 * raw.verify_seconds;
    let run_info = json!({
        "fedsim_build": crate::BUILD,
        "wall_seconds": rounded(wall_seconds),
        "run_seconds": rounded(run_seconds),
        "events_processed": world.events_processed,
        "events_per_second": rounded(world.events_processed as f64 / run_seconds.max(1e-9)),
        "queue_len_max": world.queue_len_max(),
        "key_cache_slots": world.key_cache_slots,
        "peak_memory_kib": peak_memory_kib(),
        "prefault": crate::prefault::active(),
        "crypto": world.scenario.crypto.as_str(),
        "events_signed": world.events_signed,
        "sign_seconds": rounded(world.sign_nanos as f64 / 1e9),
        "check_memo_entries": world.memo.len(),
        "cosignatures_made": world.cosignatures_made,
        "key_responses_signed": key_responses_signed,
        "key_response_checks": world.verify_memo.checks,
        "member_link_checks": member_link_checks,
        "signatures_made": signatures_made,
        "signature_checks": signature_checks,
        "raw_sign_us": rounded(raw.sign_seconds * 1e6),
        "raw_verify_us": rounded(raw.verify_seconds * 1e6),
        "crypto_floor_seconds": rounded(floor_seconds),
        "wall_over_crypto_floor": rounded(run_seconds / floor_seconds.max(1e-9)),
    });
    let run_info_path = out_dir.join("run-info.json");
    write_json(&run_info_path, &run_info).map_err(io_error(&run_info_path))?;
    Ok(RunOutcome {
        out_dir: out_dir.to_owned(),
        metrics,
        failed_checks,
        events_processed: world.events_processed,
        wall_seconds,
        event_hash: world.trace.hash_hex(),
    })
}

/// The counters as `(name, value)` in a stable order (summary metrics and CSV columns).
fn counter_fields(counters: &Counters) -> Vec<(String, u64)> {
    let mut fields: Vec<(String, u64)> = vec![
        ("messages_sent".into(), counters.messages_sent),
        ("state_events_sent".into(), counters.state_events_sent),
        ("sends_skipped".into(), counters.sends_skipped),
        ("pdus_processed".into(), counters.pdus_processed),
        ("accepted".into(), counters.accepted),
        ("accepted_labelled".into(), counters.accepted_labelled),
        ("redacted".into(), counters.redacted),
        ("soft_failed_auth".into(), counters.soft_failed_auth),
        ("soft_failed_link".into(), counters.soft_failed_link),
        ("soft_failed_other".into(), counters.soft_failed_other),
        ("rejected".into(), counters.rejected),
        ("dropped".into(), counters.dropped),
        ("already_held".into(), counters.already_held),
        ("missing_events_verdicts".into(), counters.missing_events),
        ("gaps_given_up".into(), counters.gaps_given_up),
        (
            "pdus_given_up_by_sender".into(),
            counters.pdus_given_up_by_sender,
        ),
        ("message_deliveries".into(), counters.message_deliveries),
        ("pdus_not_in_room".into(), counters.not_in_room),
        ("key_waits".into(), counters.key_waits),
        ("key_invalidations".into(), counters.key_invalidations),
        ("key_revalidations".into(), counters.key_revalidations),
        ("link_invalidations".into(), counters.link_invalidations),
        ("links_reverified".into(), counters.links_reverified),
        ("revealed".into(), counters.revealed),
        ("joins_completed".into(), counters.joins_completed),
        ("join_history_events".into(), counters.join_history_events),
        ("backfill_events".into(), counters.backfill_events),
        ("outliers_stored".into(), counters.outliers_stored),
        ("state_fetches".into(), counters.state_fetches),
        (
            "attacker_messages_sent".into(),
            counters.attacker_messages_sent,
        ),
        (
            "attacker_accepted_before_t0".into(),
            counters.attacker_accepted_before_t0,
        ),
        (
            "attacker_accepted_after_t0".into(),
            counters.attacker_accepted_after_t0,
        ),
        (
            "attacker_labelled_after_t0".into(),
            counters.attacker_labelled_after_t0,
        ),
        (
            "attacker_hidden_after_t0".into(),
            counters.attacker_hidden_after_t0,
        ),
        (
            "attacker_dropped_after_t0".into(),
            counters.attacker_dropped_after_t0,
        ),
    ];
    for purpose in Purpose::ALL {
        for (index, label) in Done::LABELS.iter().enumerate() {
            fields.push((
                format!("requests_{}_{label}", purpose.name()),
                counters.requests[purpose as usize][index],
            ));
        }
        fields.push((
            format!("bytes_{}", purpose.name()),
            counters.bytes[purpose as usize],
        ));
    }
    fields.extend(counters.adv.fields());
    fields.push(("requests_total".into(), counters.requests_total()));
    fields.push(("bytes_total".into(), counters.bytes_total()));
    fields
}

/// The servers joined to `room` at the end (fake members excluded), in server order, with
/// their room state.
fn joined_states(
    world: &FedWorld,
    room: RoomIndex,
) -> impl Iterator<Item = (&str, &crate::room::room_state::RoomState)> {
    world.servers.iter().filter_map(move |server| {
        server
            .rooms
            .get(&room)
            .filter(|state| state.joined && !world.fake_member(&server.name, room))
            .map(|state| (server.name.as_str(), &state.state))
    })
}

/// Per room: the message view (room::metrics) of each server that joined it.
pub(crate) fn message_views(world: &FedWorld, room: RoomIndex) -> Vec<MessageView> {
    joined_states(world, room)
        .map(|(name, state)| MessageView::from_room(name, state))
        .collect()
}

fn headline_metrics(world: &mut FedWorld) -> Map<String, Value> {
    let mut metrics = Map::new();
    let users: usize = world.servers.iter().map(|server| server.users.len()).sum();
    let planned: usize = world.plans.iter().map(|plan| plan.members.len()).sum();
    metrics.insert("servers".into(), json!(world.servers.len()));
    metrics.insert("rooms".into(), json!(world.plans.len()));
    metrics.insert("users".into(), json!(users));
    metrics.insert("room_memberships_planned".into(), json!(planned));
    metrics.insert(
        "largest_room_servers".into(),
        json!(
            world
                .plans
                .iter()
                .map(|plan| plan.servers().len())
                .max()
                .unwrap_or(0)
        ),
    );
    for (name, value) in counter_fields(&world.counters) {
        metrics.insert(name, json!(value));
    }
    // Only where a server can have several users in a room (other runs keep their files).
    if world.config.members_per_server.max > 1 {
        metrics.insert("local_joins".into(), json!(world.counters.local_joins));
    }
    // Only where an event failed to be pulled (`pulls.rs`; other runs keep their files).
    if world.counters.pull_failures > 0 || world.counters.gaps_backed_off > 0 {
        metrics.insert("pull_failures".into(), json!(world.counters.pull_failures));
        metrics.insert(
            "gaps_backed_off".into(),
            json!(world.counters.gaps_backed_off),
        );
    }
    // Only under first-seen-wins (P9), where collisions can happen (other runs keep their
    // files): key entries ignored because their ID was bound to another body, over all servers.
    if world.key_policy.key_binding == KeyBinding::FirstSeenWins {
        let collisions: u64 = world
            .servers
            .iter()
            .map(|server| server.cache.stats.key_collisions)
            .sum();
        metrics.insert("key_collisions".into(), json!(collisions));
    }
    world.adversary_metrics(&mut metrics);
    // Coverage: of the (message, server joined at the end) pairs, the share where the server
    // holds the message accepted (messages sent in the last minute are excluded).
    let cutoff_ms = world.end_ms().saturating_sub(COVERAGE_GRACE_MS);
    let mut pairs = 0u64;
    let mut accepted = 0u64;
    let mut visible = 0u64;
    // Per room: the servers joined at the end (in server order), and the messages counted.
    let joined: Vec<Vec<(&str, &crate::room::room_state::RoomState)>> = (0..world.plans.len()
        as RoomIndex)
        .map(|room| joined_states(world, room).collect())
        .collect();
    let mut sent_in: Vec<Vec<&str>> = vec![Vec::new(); joined.len()];
    for sent in world
        .sent
        .iter()
        .filter(|sent| sent.message && sent.at_ms < cutoff_ms)
    {
        if let Some(sent_in) = sent_in.get_mut(sent.room as usize) {
            sent_in.push(&sent.event_id);
        }
    }
    // RQ5: divergence of client-visible message sets (room::metrics), per room over its joined
    // servers, then averaged over rooms with at least two of them.
    let mut divergence_sum = 0.0;
    let mut divergence_max: f64 = 0.0;
    let mut split_sum = 0.0;
    let mut hidden_sum = 0.0;
    let mut orphan_sum = 0.0;
    let mut server_rooms = 0u64;
    let mut rooms_compared = 0u64;
    // The numbered views give the same integers as the message views (room::metrics), so the
    // same floats, summed in the same order.
    for (states, sent_in) in joined.iter().zip(&sent_in) {
        let views = NumberedViews::new(states.iter().map(|&(name, state)| (name, state)));
        // A message's DAG index on each server: found through the room's numbering where the
        // server shows or hides the message, looked up in its DAG otherwise (an outlier, or
        // not held). The same index as a lookup everywhere, so the same counts.
        for event_id in sent_in {
            let number = views.number(event_id);
            for (position, (_, state)) in states.iter().enumerate() {
                pairs += 1;
                let index = number
                    .and_then(|number| views.index_in_view(position, number))
                    .or_else(|| state.dag().index(event_id));
                if let Some(index) = index {
                    let fate = state.fate_at(index);
                    if matches!(*fate, Fate::Accepted { .. }) {
                        accepted += 1;
                    }
                    if matches!(*fate, Fate::Accepted { labelled: false }) {
                        visible += 1;
                    }
                }
            }
        }
        for view in &views.views {
            orphan_sum += NumberedViews::orphan_ratio(view);
        }
        for view in &views.views {
            hidden_sum += views.hidden_share(view);
        }
        server_rooms += views.views.len() as u64;
        if views.views.len() < 2 {
            continue;
        }
        let matrix = views.divergence_matrix();
        divergence_sum += matrix.mean;
        divergence_max = divergence_max.max(matrix.max);
        split_sum += views.visible_somewhere_hidden_elsewhere();
        rooms_compared += 1;
    }
    let share = |part: u64, whole: u64| {
        if whole == 0 {
            json!(1.0)
        } else {
            rounded(part as f64 / whole as f64)
        }
    };
    metrics.insert("message_server_pairs".into(), json!(pairs));
    metrics.insert("message_coverage".into(), share(accepted, pairs));
    metrics.insert("message_unlabelled_share".into(), share(visible, pairs));
    let mean = |sum: f64, count: u64| {
        if count == 0 {
            json!(0.0)
        } else {
            rounded(sum / count as f64)
        }
    };
    metrics.insert(
        "divergence_mean".into(),
        mean(divergence_sum, rooms_compared),
    );
    metrics.insert("divergence_max".into(), rounded(divergence_max));
    metrics.insert(
        "visible_somewhere_hidden_elsewhere".into(),
        mean(split_sum, rooms_compared),
    );
    metrics.insert("hidden_share_mean".into(), mean(hidden_sum, server_rooms));
    metrics.insert("orphan_ratio_mean".into(), mean(orphan_sum, server_rooms));
    metrics.insert(
        "events_held_total".into(),
        json!(
            world
                .servers
                .iter()
                .flat_map(|server| server.rooms.values())
                .map(|state| state.state.held_count())
                .sum::<usize>()
        ),
    );
    metrics.insert("events_signed".into(), json!(world.events_signed));
    containment(world, &mut metrics);
    // RQ13 (c): state agreement at the end and the time it took after the last heal.
    let disagreeing_at_end = world.rooms_disagreeing_now();
    metrics.insert("rooms_disagreeing_at_end".into(), json!(disagreeing_at_end));
    // The first agreement after the heal: seen while `FedWorld::watch_agreement` checked after
    // every event, else the first agreeing sample after it (on the samples' grid), else the end.
    let converged = match (world.last_heal_ms, disagreeing_at_end) {
        (Some(heal_ms), 0) => {
            let agreed_ms = world.agreed_after_heal_ms.or_else(|| {
                world
                    .samples
                    .iter()
                    .zip(&world.rooms_disagreeing)
                    .find(|((at_ms, _), disagreeing)| *at_ms > heal_ms && **disagreeing == 0)
                    .map(|((at_ms, _), _)| *at_ms)
            });
            // No sample after the heal agreed, but the end does.
            let agreed_ms = agreed_ms.unwrap_or(world.end_ms());
            rounded((agreed_ms - heal_ms) as f64 / 1000.0)
        }
        _ => Value::Null,
    };
    metrics.insert("state_converged_after_heal_s".into(), converged);
    metrics
}

/// RQ2 containment after the rotation at t0: per observer (a server other than the compromised
/// ones that shares a room with them), the time until every compromised member link it holds is
/// unverified, and until its key cache invalidated the compromised key; 50/95/100th percentiles
/// in seconds after t0 (room::metrics::containment; `null` = that share never was reached).
fn containment(world: &FedWorld, metrics: &mut Map<String, Value>) {
    let t0_ms = world.attacker.t0_ms;
    let t0_abs_ms = crate::server::absolute_ms(t0_ms.unwrap_or(0));
    let mut link_times: Vec<Option<i64>> = Vec::new();
    let mut key_times: Vec<Option<i64>> = Vec::new();
    if t0_ms.is_some() {
        for (index, server) in world.servers.iter().enumerate() {
            let index = index as u32;
            if world.attacker.servers.contains_key(&index) {
                continue;
            }
            let mut observes = false;
            let mut all_links: Option<i64> = Some(t0_abs_ms);
            for (room, member) in world.attacker.member_keys.keys() {
                let Some(state) = server.rooms.get(room).filter(|state| state.joined) else {
                    continue;
                };
                observes = true;
                let at = room_metrics::unverified_since(&state.links, member, t0_abs_ms);
                all_links = match (all_links, at) {
                    (Some(so_far), Some(at)) => Some(so_far.max(at)),
                    _ => None,
                };
            }
            if observes && world.version.member_keys {
                link_times.push(all_links);
            }
            for domain in world.attacker.servers.keys() {
                let shares_room = world.plans.iter().any(|plan| {
                    plan.members.iter().any(|(member, _)| member == domain)
                        && plan.members.iter().any(|(member, _)| *member == index)
                });
                if shares_room {
                    key_times.push(
                        world
                            .attacker
                            .key_invalidated_at
                            .get(&(index, *domain))
                            .map(|at_ms| crate::server::absolute_ms(*at_ms)),
                    );
                }
            }
        }
    }
    let share = |times: &[Option<i64>]| {
        if times.is_empty() {
            Value::Null
        } else {
            rounded(times.iter().filter(|time| time.is_some()).count() as f64 / times.len() as f64)
        }
    };
    metrics.insert(
        "t0_s".into(),
        t0_ms.map_or(Value::Null, |ms| rounded(ms as f64 / 1000.0)),
    );
    metrics.insert("containment_link_observers".into(), json!(link_times.len()));
    metrics.insert("containment_links_share".into(), share(&link_times));
    metrics.insert("containment_key_observers".into(), json!(key_times.len()));
    metrics.insert("containment_keys_share".into(), share(&key_times));
    let seconds = |ms: Option<i64>| ms.map_or(Value::Null, |ms| rounded(ms as f64 / 1000.0));
    let links = room_metrics::containment(&link_times, t0_abs_ms);
    let keys = room_metrics::containment(&key_times, t0_abs_ms);
    let empty =
        |times: &[Option<i64>], value: Value| if times.is_empty() { Value::Null } else { value };
    for (label, link_ms, key_ms) in [
        ("p50", links.p50_ms, keys.p50_ms),
        ("p95", links.p95_ms, keys.p95_ms),
        ("p100", links.p100_ms, keys.p100_ms),
    ] {
        metrics.insert(
            format!("containment_links_s_{label}"),
            empty(&link_times, seconds(link_ms)),
        );
        metrics.insert(
            format!("containment_keys_s_{label}"),
            empty(&key_times, seconds(key_ms)),
        );
    }
}

fn run_checks(world: &mut FedWorld) -> Vec<(String, bool, String)> {
    let mut checks = Vec::new();
    let end_ms = world.end_ms();
    // A request whose sender is down at the end waits for it to come back (its end is
    // deferred, `FedWorld::complete`): lost with its sender, not stuck.
    let stuck = world
        .requests
        .values()
        .filter(|request| request.deadline_ms < end_ms && world.is_up(request.from))
        .count();
    checks.push((
        "every request ends in one outcome".to_owned(),
        stuck == 0,
        format!("{stuck} requests past their deadline without an outcome"),
    ));
    let mut rejected_shown = Vec::new();
    let mut disagreements = Vec::new();
    let mut extremity_violations = Vec::new();
    let mut same_events_violations = Vec::new();
    for room in 0..world.plans.len() as RoomIndex {
        let names: Vec<String> = world
            .servers
            .iter()
            .filter(|server| server.rooms.contains_key(&room))
            .map(|server| server.name.clone())
            .collect();
        let views: Vec<(&str, &crate::room::room_state::RoomState)> = world
            .servers
            .iter()
            .filter_map(|server| {
                server
                    .rooms
                    .get(&room)
                    .map(|state| (server.name.as_str(), &state.state))
            })
            .collect();
        for (name, view) in &views {
            rejected_shown.extend(properties::no_rejected_event_shown(name, view));
        }
        disagreements.extend(properties::checks_agree(&views, false));
        let mut mutable: Vec<(&str, &mut crate::room::room_state::RoomState)> = world
            .servers
            .iter_mut()
            .filter_map(|server| {
                let name = server.name.as_str();
                server
                    .rooms
                    .get_mut(&room)
                    .map(|state| (name, &mut state.state))
            })
            .collect();
        extremity_violations.extend(properties::same_extremities_same_state(&mut mutable));
        // Servers that hold the same events have the same state.
        let groups = {
            let rooms: Vec<&crate::room::room_state::RoomState> =
                mutable.iter().map(|(_, view)| &**view).collect();
            groups_by_held_events(&rooms)
        };
        for positions in &groups {
            let first = mutable[positions[0]].1.current_state().ok();
            for &position in &positions[1..] {
                let state = mutable[position].1.current_state().ok();
                if state != first {
                    same_events_violations.push(format!(
                        "{} and {} hold the same events but not the same state",
                        names[positions[0]], names[position]
                    ));
                }
            }
        }
    }
    let describe = |violations: &[properties::Violation]| {
        violations
            .first()
            .map(|violation| {
                format!(
                    "{} violations; first: {}",
                    violations.len(),
                    violation.detail
                )
            })
            .unwrap_or_else(|| "none".to_owned())
    };
    checks.push((
        "no client is shown a rejected event".to_owned(),
        rejected_shown.is_empty(),
        describe(&rejected_shown),
    ));
    checks.push((
        "checks 4-5 agree on every server holding an event".to_owned(),
        disagreements.is_empty(),
        describe(&disagreements),
    ));
    checks.push((
        "servers with the same extremities have the same state".to_owned(),
        extremity_violations.is_empty(),
        describe(&extremity_violations),
    ));
    checks.push((
        "servers holding the same events have the same state".to_owned(),
        same_events_violations.is_empty(),
        same_events_violations
            .first()
            .cloned()
            .unwrap_or_else(|| "none".to_owned()),
    ));
    checks
}

/// The positions of `rooms` grouped by the set of event IDs held (each group ascending), the
/// groups in the order of their sorted event IDs. The sets are compared as sorted room-wide
/// numbers (one hash lookup per held event instead of sorting every server's IDs); only one
/// server per group sorts its IDs, to put the groups in that order.
fn groups_by_held_events(rooms: &[&crate::room::room_state::RoomState]) -> Vec<Vec<usize>> {
    let mut numbers: HashMap<&str, u32, crate::matrix::dag::IdHasher> = HashMap::default();
    let mut by_numbers: HashMap<Vec<u32>, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (position, room) in rooms.iter().enumerate() {
        let dag = room.dag();
        let mut held: Vec<u32> = (0..room.held_count() as u32)
            .map(|index| {
                let next = numbers.len() as u32;
                *numbers
                    .entry(dag.event(index).event_id.as_str())
                    .or_insert(next)
            })
            .collect();
        held.sort_unstable();
        let group = *by_numbers.entry(held).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(position);
    }
    let mut keyed: Vec<(Vec<&str>, Vec<usize>)> = groups
        .into_iter()
        .map(|positions| {
            let room = rooms[positions[0]];
            let mut held: Vec<&str> = (0..room.held_count() as u32)
                .map(|index| room.dag().event(index).event_id.as_str())
                .collect();
            held.sort_unstable();
            (held, positions)
        })
        .collect();
    // The groups' ID lists differ, so this order is total.
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, positions)| positions).collect()
}

fn write_timeseries(world: &FedWorld, out_dir: &Path) -> Result<(), RunError> {
    let names: Vec<String> = counter_fields(&Counters::default())
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let mut header = vec!["t_s".to_owned(), "rooms_disagreeing".to_owned()];
    header.extend(names);
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = CsvTable::new(&header_refs);
    for ((at_ms, counters), disagreeing) in world.samples.iter().zip(&world.rooms_disagreeing) {
        let mut row = vec![fixed(*at_ms as f64 / 1000.0, 0), disagreeing.to_string()];
        row.extend(
            counter_fields(counters)
                .into_iter()
                .map(|(_, value)| value.to_string()),
        );
        table.row(&row);
    }
    let path = out_dir.join("timeseries.csv");
    table.write(&path).map_err(io_error(&path))
}

fn write_servers(world: &FedWorld, out_dir: &Path) -> Result<(), RunError> {
    let mut table = CsvTable::new(&[
        "server",
        "users",
        "rooms_joined",
        "events_held",
        "pdus_processed",
        "accepted",
        "soft_failed",
        "rejected",
        "dropped",
        "requests_sent",
        "requests_received",
        "bytes_sent",
        "event_requeries_received",
        "key_requests",
    ]);
    for server in &world.servers {
        let stats = &server.stats;
        let joined = server.rooms.values().filter(|room| room.joined).count();
        let held: usize = server
            .rooms
            .values()
            .map(|room| room.state.held_count())
            .sum();
        table.row(&[
            server.name.clone(),
            server.users.len().to_string(),
            joined.to_string(),
            held.to_string(),
            stats.pdus_processed.to_string(),
            stats.accepted.to_string(),
            stats.soft_failed.to_string(),
            stats.rejected.to_string(),
            stats.dropped.to_string(),
            stats.requests_sent.to_string(),
            stats.requests_received.to_string(),
            stats.bytes_sent.to_string(),
            stats.event_requeries_received.to_string(),
            server.cache.stats.requests().to_string(),
        ]);
    }
    let path = out_dir.join("servers.csv");
    table.write(&path).map_err(io_error(&path))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::room::metrics::Shown;
    use crate::scenario::parse;

    /// Totals over a world's (room, server) views, to show a run exercised what it compares.
    #[derive(Debug, Default)]
    struct Seen {
        views: usize,
        hidden: usize,
        labelled: usize,
        outliers: u64,
        visible_replies: usize,
        reply_orphans: usize,
        follow_orphans: usize,
        split_rooms: usize,
        diverging_rooms: usize,
        found_by_number: usize,
        groups: usize,
    }

    /// The build line's slot count is every cache's planned slots (one per server it shares
    /// a room with, counted by pairs of the planned rooms' members) and its floor is that count
    /// times the key lifetimes in the run.
    #[test]
    fn the_build_line_counts_every_pair_sharing_a_room() {
        let path = format!("{}/scenarios/bench-small.toml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let sets = ["duration=3d".to_owned(), "rooms.key_lifetime=1d".to_owned()];
        let scenario = parse("bench-small.toml", &text, &sets).unwrap();
        let world = FedWorld::build(&scenario, 1, Trace::default());
        let mut pairs = std::collections::BTreeSet::new();
        for plan in &world.plans {
            for &(a, _) in &plan.members {
                for &(b, _) in &plan.members {
                    if a != b {
                        pairs.insert((a, b));
                    }
                }
            }
        }
        assert!(!pairs.is_empty());
        assert_eq!(world.key_cache_slots, pairs.len() as u64);
        let line = build_line(&world, 7.0);
        assert!(
            line.contains(&format!(
                "{} key-cache slots (ordered pairs of servers sharing a room); at one re-check \
                 per 24.0 h key lifetime the run needs at least {} key re-checks",
                pairs.len(),
                3 * pairs.len()
            )),
            "{line}"
        );
    }

    /// Runs the scenario file with `sets` and checks, room by room, that the numbered views give exactly the figures of the message
    /// views (`room::metrics` over `MessageView::from_room`).
    fn numbered_views_equal_message_views(file: &str, sets: &[&str]) -> Seen {
        let path = format!("{}/scenarios/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let sets: Vec<String> = sets.iter().map(|set| set.to_string()).collect();
        let scenario = parse(file, &text, &sets).unwrap();
        let mut world = FedWorld::build(&scenario, 1, Trace::default());
        world.run(|_| {});
        let mut seen = Seen {
            outliers: world.counters.outliers_stored,
            ..Seen::default()
        };
        for room in 0..world.plans.len() as RoomIndex {
            let views = message_views(&world, room);
            let numbered = NumberedViews::new(joined_states(&world, room));
            let context = format!("{file} {sets:?} room {room}");
            assert_eq!(numbered.views.len(), views.len(), "{context}");
            assert_eq!(
                numbered.room_messages,
                room_metrics::room_messages(&views).len(),
                "{context}"
            );
            let shares = numbered.hidden_shares();
            assert_eq!(shares, room_metrics::hidden_shares(&views), "{context}");
            let orphans = numbered.orphans();
            for ((view, fast), orphans) in views.iter().zip(&numbered.views).zip(&orphans) {
                assert_eq!(*orphans, room_metrics::orphans(view), "{context}");
                assert_eq!(
                    NumberedViews::orphan_ratio(fast).to_bits(),
                    room_metrics::orphans(view).orphan_ratio.to_bits(),
                    "{context}"
                );
                let replies = view
                    .messages
                    .values()
                    .filter(|m| m.reply_to.is_some() && matches!(m.shown, Shown::Visible { .. }))
                    .count();
                assert_eq!(fast.visible_replies, replies, "{context}");
                assert_eq!(fast.held, view.messages.len(), "{context}");
                seen.labelled += view
                    .messages
                    .values()
                    .filter(|m| matches!(m.shown, Shown::Visible { labelled: true }))
                    .count();
            }
            for (share, fast) in shares.iter().zip(&numbered.views) {
                assert_eq!(
                    numbered.hidden_share(fast).to_bits(),
                    share.hidden_share.to_bits()
                );
                seen.hidden += share.hidden;
            }
            let matrix = numbered.divergence_matrix();
            assert_eq!(matrix, room_metrics::divergence_matrix(&views), "{context}");
            let split = numbered.visible_somewhere_hidden_elsewhere();
            assert_eq!(
                split.to_bits(),
                room_metrics::visible_somewhere_hidden_elsewhere(&views).to_bits(),
                "{context}"
            );
            // Every event the run sent in the room: its DAG index on each server, through the
            // numbering where the server has it in its view, is the DAG's own.
            let states: Vec<_> = joined_states(&world, room).collect();
            for sent in world.sent.iter().filter(|sent| sent.room == room) {
                let number = numbered.number(&sent.event_id);
                for (position, (_, state)) in states.iter().enumerate() {
                    let through_number =
                        number.and_then(|number| numbered.index_in_view(position, number));
                    let index = state.dag().index(&sent.event_id);
                    assert!(through_number.is_none() || through_number == index);
                    seen.found_by_number += usize::from(through_number.is_some());
                }
            }
            // Servers grouped by the events they hold, as the sorted-ID map did.
            let rooms: Vec<&crate::room::room_state::RoomState> = world
                .servers
                .iter()
                .filter_map(|server| server.rooms.get(&room).map(|state| &state.state))
                .collect();
            let mut by_events: BTreeMap<Vec<&str>, Vec<usize>> = BTreeMap::new();
            for (position, view) in rooms.iter().enumerate() {
                let mut held: Vec<&str> = view
                    .held_events()
                    .map(|(pdu, _)| pdu.event_id.as_str())
                    .collect();
                held.sort_unstable();
                by_events.entry(held).or_default().push(position);
            }
            let groups: Vec<Vec<usize>> = by_events.into_values().collect();
            assert_eq!(groups_by_held_events(&rooms), groups, "{context}");
            seen.groups += groups.len();
            seen.views += views.len();
            seen.visible_replies += numbered
                .views
                .iter()
                .map(|v| v.visible_replies)
                .sum::<usize>();
            seen.reply_orphans += orphans.iter().map(|o| o.reply_orphans).sum::<usize>();
            seen.follow_orphans += orphans.iter().map(|o| o.follow_orphans).sum::<usize>();
            seen.split_rooms += usize::from(split > 0.0);
            seen.diverging_rooms += usize::from(matrix.max > 0.0);
        }
        seen
    }

    #[test]
    fn numbered_views_give_the_message_views_figures_with_soft_fails_and_replies() {
        // RQ5 under P1: a partition and two rotations (one without re-signing) hide messages
        // on some servers and not others; the workload replies.
        let seen = numbered_views_equal_message_views("rq5-divergence.toml", &[]);
        assert!(seen.views > 10, "{seen:?}");
        assert!(seen.hidden > 0, "{seen:?}");
        assert!(
            seen.visible_replies > 0 && seen.reply_orphans > 0,
            "{seen:?}"
        );
        assert!(seen.follow_orphans > 0, "{seen:?}");
        assert!(seen.split_rooms > 0 && seen.diverging_rooms > 0, "{seen:?}");
        assert!(seen.found_by_number > 1000, "{seen:?}");
        assert!(seen.groups >= 3, "{seen:?}");
    }

    #[test]
    fn numbered_views_give_the_message_views_figures_with_labels_outliers_and_lies() {
        // P5 labels instead of hiding.
        let seen = numbered_views_equal_message_views("rq5-divergence.toml", &["rooms.policy=P5"]);
        assert!(seen.labelled > 0, "{seen:?}");
        // RQ2: a compromise and its containment.
        let seen = numbered_views_equal_message_views("rq2-containment.toml", &[]);
        assert!(seen.hidden > 0, "{seen:?}");
        // Servers of one room that hold different events: several groups in a room.
        assert!(seen.groups > 3, "{seen:?}");
        // RQ10: a lying server's rooms.
        let seen = numbered_views_equal_message_views("rq10-lying-server-rooms.toml", &[]);
        assert!(seen.hidden > 0, "{seen:?}");
        // The benchmark's world, reduced as scripts/test-scenarios.sh does: joins by state
        // (outliers), many servers per room.
        let seen = numbered_views_equal_message_views(
            "bench-medium.toml",
            &[
                "duration=6h",
                "rooms.servers=60",
                "rooms.rooms=10",
                "rooms.servers_per_room.max=30",
            ],
        );
        assert!(seen.outliers > 0 && seen.views > 20, "{seen:?}");
    }
}
