//! Runs a validated [`Script`] over testbed servers: every event is built, signed and judged by
//! the real pipeline; the runner only decides who receives what, when (the network of the
//! story), and plays a small key layer (fetch when reachable, fail-open or fail-closed on
//! expiry). See the module documentation of [`super`] for the steps' meaning.
//!
//! Model choices (stated because the stories depend on them):
//! - A transaction that cannot reach its destination at a `deliver` step is dropped unless the
//!   step keeps it: no retry, no catch-up (the review thread's premise for the partition ban).
//! - `/get_missing_events` returns every ancestor (prev and auth events) the receiver lacks and
//!   the source holds, oldest first, with no limit; the receiver then retries the event.
//! - Keys: servers present from the start hold every server's keys fetched at time 0. A server
//!   that sees a member event claiming a domain whose keys it lacks fetches them at once if the
//!   domain is online and reachable, else marks the links unverifiable. At every step, a held key
//!   object past its validity is re-fetched if reachable; if not, a fail-closed server
//!   invalidates its key (once) and a fail-open one keeps trusting it. No notaries.
//! - The attacker (after `compromise`) knows every event of the room and reaches every online
//!   server whatever the partition.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Action, Check, CheckKind, Script, ScriptError};
use crate::matrix::event_builder::countersign_pdu;
use crate::matrix::server_keys::{OldVerifyKey, ServerKeys};
use crate::matrix::signing::{KeyId, ServerSigningKey};
use crate::matrix::{EventId, Pdu, RoomVersion, StateMap};
use crate::room::keys::KeySource;
use crate::room::links::{KeyInvalidation, LinkStatus};
use crate::room::metrics::{self, HiddenReason, MessageView};
use crate::room::pipeline::{DropReason, Receipt, Verdict, reveal_verified};
use crate::room::policy::ArrivalPath;
use crate::room::properties;
use crate::room::room_state::{RoomState, Visibility};
use crate::room::testbed::{self, Server, User};

/// One server while a script runs.
pub struct RunServer {
    /// The testbed server (keys, links, policy, room state, receipts).
    pub server: Server,
    pub online: bool,
    /// Takes part in the room (from the start, or since its `late-join`).
    pub resident: bool,
    /// When it joined late (its `late-join` step's time).
    pub late_joined_at_ms: Option<i64>,
    key_generation: u32,
    old_keys: BTreeMap<String, OldVerifyKey>,
    /// Member events it re-signed after a rotation, served to re-queries.
    resigned: BTreeMap<EventId, Pdu>,
    /// Key expiries a fail-closed server already acted on, by (domain, valid until).
    expiries_acted_on: BTreeSet<(String, i64)>,
}

/// Who sends a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Server(usize),
    Attacker,
}

struct Pending {
    origin: Origin,
    event: Arc<Pdu>,
    to: usize,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRecord {
    pub index: usize,
    pub keyword: &'static str,
    pub at_ms: i64,
    /// The event it made, by name.
    pub event: Option<String>,
    /// What happened, in words (deliveries, fetches, link changes).
    pub notes: Vec<String>,
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub passed: bool,
    /// What was observed, in words.
    pub observed: String,
}

/// A finished run: every server's final view, the events by name, the step log and the checks.
pub struct Run {
    pub script: Script,
    pub servers: Vec<RunServer>,
    pub users: Vec<User>,
    /// Every event the script made, in creation order (a topological order), with its name.
    pub events: Vec<(String, Arc<Pdu>)>,
    pub by_id: BTreeMap<EventId, usize>,
    /// Events made by an attacker.
    pub attacker_made: BTreeSet<EventId>,
    /// Compromised users (index) and when (ms).
    pub compromised_at_ms: BTreeMap<usize, i64>,
    pub steps: Vec<StepRecord>,
    /// Per check (in file order): its result.
    pub results: Vec<CheckResult>,
    /// The DAG view at each checkpoint step: (checkpoint name, Graphviz text).
    pub dag_snapshots: Vec<(String, String)>,
    pub room_id: String,
    pending: Vec<Pending>,
    /// Per server, its partition group; `None` = no partition.
    groups: Option<Vec<usize>>,
}

impl Run {
    /// The event named `name`.
    pub fn event(&self, name: &str) -> Option<&Arc<Pdu>> {
        self.events
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, pdu)| pdu)
    }

    /// The name of the event `event_id` (its ID if the script did not make it).
    pub fn event_name(&self, event_id: &str) -> String {
        self.by_id.get(event_id).map_or_else(
            || event_id.to_owned(),
            |&index| self.events[index].0.clone(),
        )
    }

    /// The script's user name for a sender ID (member key or user ID), or the ID itself.
    pub fn user_name(&self, sender: &str) -> String {
        self.users
            .iter()
            .position(|user| user.id() == sender)
            .map_or_else(
                || sender.to_owned(),
                |index| self.script.users[index].name.clone(),
            )
    }

    /// Whether the checks all met their expectation.
    pub fn all_met(&self) -> bool {
        self.script
            .checks
            .iter()
            .zip(&self.results)
            .all(|(check, result)| check.expect_pass == result.passed)
    }

    /// Every server's message view (for metrics), in script order.
    pub fn message_views(&self, servers: &[usize]) -> Vec<MessageView> {
        servers
            .iter()
            .map(|&index| {
                MessageView::from_room(&self.script.servers[index].name, self.room(index))
            })
            .collect()
    }

    fn room(&self, server: usize) -> &RoomState {
        &self.servers[server].server.room
    }

    fn version(&self) -> RoomVersion {
        self.script.servers[0].policy.room_version
    }

    fn reachable(&self, from: Origin, to: usize) -> bool {
        if !self.servers[to].online {
            return false;
        }
        match from {
            Origin::Attacker => true,
            Origin::Server(from) => {
                self.servers[from].online
                    && self
                        .groups
                        .as_ref()
                        .is_none_or(|groups| groups[from] == groups[to])
            }
        }
    }

    /// The key object `server` publishes now.
    fn published(&self, server: usize, now_ms: i64) -> ServerKeys {
        let run = &self.servers[server];
        let mut keys = ServerKeys::with_current_key(
            &run.server.name,
            &run.server.signing_key,
            now_ms + self.script.servers[server].key_validity_ms,
        );
        keys.old_verify_keys = run.old_keys.clone();
        keys
    }

    fn receive(&mut self, to: usize, pdu: &Pdu, path: ArrivalPath, now_ms: i64) -> Receipt {
        let mut receipt = self.servers[to].server.receive(pdu, path, now_ms);
        if matches!(receipt.verdict, Verdict::Dropped(DropReason::Signature(_)))
            && self.fetch_rotated_keys(to, &pdu.sender, now_ms)
        {
            // Check 2 failed for want of a key the sender's server rotated to: fetch, retry.
            receipt = self.servers[to].server.receive(pdu, path, now_ms);
        }
        self.settle_pending_links(to, now_ms);
        receipt
    }

    /// If `sender` is a user ID whose server is reachable from `observer` and publishes other
    /// current keys than `observer` holds, re-fetches them; returns whether it did.
    fn fetch_rotated_keys(&mut self, observer: usize, sender: &str, now_ms: i64) -> bool {
        let Some(domain) = sender
            .strip_prefix('@')
            .and_then(|rest| rest.split_once(':'))
            .and_then(|(_, domain)| self.script.server_index(domain))
        else {
            return false;
        };
        if !self.reachable(Origin::Server(observer), domain) {
            return false;
        }
        let published: Vec<String> = self
            .published(domain, now_ms)
            .verify_keys
            .keys()
            .cloned()
            .collect();
        let held: Option<Vec<String>> = self.servers[observer]
            .server
            .keys
            .held_keys(&self.script.servers[domain].name)
            .map(|held| held.keys.verify_keys.keys().cloned().collect());
        if held.as_ref() == Some(&published) {
            return false;
        }
        self.refetch(observer, domain, now_ms);
        true
    }

    /// Links waiting for keys: fetch the domain's keys if it is reachable, else the links are
    /// unverifiable.
    fn settle_pending_links(&mut self, server: usize, now_ms: i64) {
        let version = self.version();
        let domains: BTreeSet<String> = self.servers[server]
            .server
            .links
            .links()
            .filter(|link| link.status == LinkStatus::Pending)
            .filter_map(|link| link.domain.as_deref().map(str::to_owned))
            .collect();
        for domain in domains {
            let source = self.script.server_index(&domain);
            match source {
                Some(source) if self.reachable(Origin::Server(server), source) => {
                    let keys = self.published(source, now_ms);
                    let run = &mut self.servers[server].server;
                    run.keys.insert(keys, now_ms);
                    let held = run.keys.held_keys(&domain).expect("just inserted");
                    run.links.keys_available(&version, &domain, held, now_ms);
                }
                _ => {
                    self.servers[server]
                        .server
                        .links
                        .keys_unavailable(&domain, now_ms);
                }
            }
        }
    }

    /// Receives `pdu` from `origin`; if parents are missing, fetches them from the origin and
    /// tries again.
    fn deliver_from(
        &mut self,
        origin: Origin,
        to: usize,
        pdu: &Arc<Pdu>,
        path: ArrivalPath,
        now_ms: i64,
    ) -> (Receipt, usize) {
        let receipt = self.receive(to, pdu, path, now_ms);
        if let Verdict::MissingEvents {
            prev_events,
            auth_events,
        } = &receipt.verdict
        {
            let wanted: Vec<EventId> = prev_events.iter().chain(auth_events).cloned().collect();
            let fetched = self.fetch_missing(origin, to, &wanted, now_ms);
            return (self.receive(to, pdu, path, now_ms), fetched);
        }
        (receipt, 0)
    }

    /// `/get_missing_events`: the events `wanted` and their ancestors that `to` lacks and
    /// `source` holds, oldest first. Returns how many were received.
    fn fetch_missing(
        &mut self,
        source: Origin,
        to: usize,
        wanted: &[EventId],
        now_ms: i64,
    ) -> usize {
        let mut collected: BTreeSet<usize> = BTreeSet::new();
        let mut stack: Vec<EventId> = wanted.to_vec();
        while let Some(id) = stack.pop() {
            if self.room(to).holds(&id) {
                continue;
            }
            let source_holds = match source {
                Origin::Server(source) => self.room(source).holds(&id),
                Origin::Attacker => self.by_id.contains_key(&id),
            };
            let Some(&index) = self.by_id.get(&id) else {
                continue;
            };
            if !source_holds || !collected.insert(index) {
                continue;
            }
            let pdu = &self.events[index].1;
            stack.extend(pdu.prev_events.iter().cloned());
            stack.extend(pdu.auth_events.iter().cloned());
        }
        for &index in &collected {
            let pdu = Arc::clone(&self.events[index].1);
            self.receive(to, &pdu, ArrivalPath::MissingEvents, now_ms);
        }
        collected.len()
    }

    /// Re-fetches `domain`'s keys on `observer`: keys no longer current invalidate the links
    /// they verified; held claims are re-checked; unverified links' member events are re-queried
    /// from the domain (re-signed copies re-verify); A6 reveals if the policy says so.
    fn refetch(&mut self, observer: usize, domain: usize, now_ms: i64) -> Vec<String> {
        let version = self.version();
        let domain_name = self.script.servers[domain].name.clone();
        let published = self.published(domain, now_ms);
        let resigned = self.servers[domain].resigned.clone();
        let run = &mut self.servers[observer].server;
        let old_current: Vec<String> = run
            .keys
            .held_keys(&domain_name)
            .map(|held| held.keys.verify_keys.keys().cloned().collect())
            .unwrap_or_default();
        let mut changed = Vec::new();
        let invalidations: Vec<(String, KeyInvalidation)> = old_current
            .iter()
            .filter(|key_id| !published.verify_keys.contains_key(*key_id))
            .map(|key_id| {
                let invalidation = match published.old_verify_keys.get(key_id) {
                    Some(old) => KeyInvalidation::MovedToOld {
                        expired_ts_ms: old.expired_ts_ms,
                    },
                    None => KeyInvalidation::Absent,
                };
                (key_id.clone(), invalidation)
            })
            .collect();
        run.keys.insert(published, now_ms);
        for (key_id, invalidation) in invalidations {
            changed.extend(
                run.links
                    .key_invalidated(&domain_name, &key_id, invalidation, now_ms),
            );
        }
        let held = run.keys.held_keys(&domain_name).expect("just inserted");
        changed.extend(
            run.links
                .keys_available(&version, &domain_name, held, now_ms),
        );
        let requery: Vec<Pdu> = run
            .links
            .links()
            .filter(|link| {
                link.domain.as_deref() == Some(domain_name.as_str())
                    && link.status != LinkStatus::Verified
            })
            .filter_map(|link| link.member_event.as_ref())
            .filter_map(|event| resigned.get(&event.event_id).cloned())
            .collect();
        for copy in requery {
            let receipt = run.receive(&copy, ArrivalPath::EventFetch, now_ms);
            if receipt.link_after == Some(LinkStatus::Verified) {
                changed.push(copy.sender.clone());
            }
        }
        let revealed = reveal_verified(&mut run.room, &run.links, &run.policy, &changed, now_ms);
        let mut notes = Vec::new();
        if !changed.is_empty() || revealed > 0 {
            notes.push(format!(
                "{} re-fetched {}'s keys: {} link change(s), {} revealed",
                self.script.servers[observer].name,
                domain_name,
                changed.len(),
                revealed
            ));
        }
        notes
    }

    /// The key layer at the start of a step: expired key objects are re-fetched where
    /// reachable; elsewhere fail-closed servers invalidate and fail-open ones keep trusting.
    fn key_tick(&mut self, now_ms: i64) -> Vec<String> {
        let mut notes = Vec::new();
        for observer in 0..self.servers.len() {
            if !self.servers[observer].online {
                continue;
            }
            for domain in 0..self.servers.len() {
                let name = self.script.servers[domain].name.clone();
                let Some((valid_until_ms, key_ids)) = self.servers[observer]
                    .server
                    .keys
                    .held_keys(&name)
                    .map(|held| {
                        (
                            held.clamp
                                .effective_valid_until_ms(held.keys.valid_until_ts_ms),
                            held.keys.verify_keys.keys().cloned().collect::<Vec<_>>(),
                        )
                    })
                else {
                    continue;
                };
                if now_ms <= valid_until_ms {
                    continue;
                }
                if self.reachable(Origin::Server(observer), domain) {
                    notes.extend(self.refetch(observer, domain, now_ms));
                } else if self.script.servers[observer].policy.fail_closed {
                    let run = &mut self.servers[observer];
                    if run.expiries_acted_on.insert((name.clone(), valid_until_ms)) {
                        let mut changed = Vec::new();
                        for key_id in key_ids {
                            changed.extend(run.server.links.key_invalidated(
                                &name,
                                &key_id,
                                KeyInvalidation::ExpiredUnreachable { valid_until_ms },
                                now_ms,
                            ));
                        }
                        notes.push(format!(
                            "{} (fail-closed): {name}'s keys expired unreachable, {} link(s) unverified",
                            self.script.servers[observer].name,
                            changed.len()
                        ));
                    }
                } else if !self.servers[observer]
                    .server
                    .keys
                    .held_keys(&name)
                    .is_some_and(|held| held.trusted_past_expiry)
                {
                    self.servers[observer]
                        .server
                        .keys
                        .set_trusted_past_expiry(&name, true);
                    notes.push(format!(
                        "{} (fail-open): {name}'s keys expired unreachable, still trusted",
                        self.script.servers[observer].name
                    ));
                }
            }
        }
        notes
    }

    fn register(&mut self, name: &str, pdu: Arc<Pdu>) {
        self.by_id.insert(pdu.event_id.clone(), self.events.len());
        self.events.push((name.to_owned(), pdu));
    }

    fn queue(&mut self, origin: Origin, pdu: &Arc<Pdu>) {
        for to in 0..self.servers.len() {
            if self.servers[to].resident && origin != Origin::Server(to) {
                self.pending.push(Pending {
                    origin,
                    event: Arc::clone(pdu),
                    to,
                });
            }
        }
    }

    /// The user's server builds, signs and judges an event, and queues it to the others if it
    /// accepted it.
    fn local_event(
        &mut self,
        user: usize,
        name: &str,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
        now_ms: i64,
    ) -> Result<Vec<String>, String> {
        let server = self.script.users[user].server;
        let server_name = self.script.servers[server].name.clone();
        if !self.servers[server].online {
            return Err(format!("{server_name} is offline"));
        }
        if !self.servers[server].resident || self.room(server).dag().is_empty() {
            return Err(format!(
                "{server_name} holds no event of the room yet (deliver or late-join first)"
            ));
        }
        let author = self.users[user].clone();
        let pdu = self.servers[server]
            .server
            .send(&author, event_type, state_key, content, now_ms)
            .map_err(|error| format!("cannot build the event: {error}"))?;
        let pdu = Arc::new(pdu);
        self.register(name, Arc::clone(&pdu));
        let receipt = self.servers[server]
            .server
            .receipts
            .last()
            .expect("just received")
            .clone();
        self.settle_pending_links(server, now_ms);
        if matches!(receipt.verdict, Verdict::Accepted { .. }) {
            self.queue(Origin::Server(server), &pdu);
            Ok(Vec::new())
        } else {
            Ok(vec![format!(
                "{server_name} refused its own event ({:?}); not sent",
                receipt.outcome()
            )])
        }
    }

    fn step(&mut self, index: usize) -> Result<Vec<String>, String> {
        let step = self.script.steps[index].clone();
        let now_ms = step.at_ms;
        let name = step.name.clone().unwrap_or_default();
        let mut notes = self.key_tick(now_ms);
        match step.action {
            Action::Create { .. } => unreachable!("the first step, run by `run`"),
            Action::Join { user } | Action::Leave { user } => {
                let membership = if matches!(step.action, Action::Join { .. }) {
                    "join"
                } else {
                    "leave"
                };
                let member = self.users[user].clone();
                let id = member.id();
                notes.extend(self.local_event(
                    user,
                    &name,
                    "m.room.member",
                    Some(&id),
                    member.membership_content(membership),
                    now_ms,
                )?);
            }
            Action::Send {
                user,
                body,
                reply_to,
                attacker,
                via,
            } => {
                let mut content = json!({"msgtype": "m.text", "body": body});
                if let Some(target) = reply_to {
                    let target = self.event(&target).expect("validated").event_id.clone();
                    content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": target}});
                }
                if attacker {
                    let home = self.script.users[user].server;
                    let via = via.unwrap_or(home);
                    let author = self.users[user].clone();
                    let draft = self.servers[via]
                        .server
                        .room
                        .draft_event(&author.id(), "m.room.message", None, content, now_ms)
                        .map_err(|error| {
                            format!(
                                "cannot draft on {}'s view: {error}",
                                self.script.servers[via].name
                            )
                        })?;
                    if draft.prev_events.is_empty() {
                        return Err(format!(
                            "{} holds no event of the room to build on",
                            self.script.servers[via].name
                        ));
                    }
                    let pdu = self.servers[home]
                        .server
                        .sign(&author, draft)
                        .map_err(|error| format!("cannot build the event: {error}"))?;
                    let pdu = Arc::new(pdu);
                    self.attacker_made.insert(pdu.event_id.clone());
                    self.register(&name, Arc::clone(&pdu));
                    self.queue(Origin::Attacker, &pdu);
                } else {
                    notes.extend(self.local_event(
                        user,
                        &name,
                        "m.room.message",
                        None,
                        content,
                        now_ms,
                    )?);
                }
            }
            Action::Ban {
                user,
                target,
                reason,
            } => {
                let target_id = self.users[target].id();
                let mut content = json!({"membership": "ban"});
                if let Some(reason) = reason {
                    content["reason"] = json!(reason);
                }
                notes.extend(self.local_event(
                    user,
                    &name,
                    "m.room.member",
                    Some(&target_id),
                    content,
                    now_ms,
                )?);
            }
            Action::Partition { groups } => {
                let mut group_of = vec![0; self.servers.len()];
                for (group, members) in groups.iter().enumerate() {
                    for &member in members {
                        group_of[member] = group;
                    }
                }
                self.groups = Some(group_of);
            }
            Action::Heal => self.groups = None,
            Action::Deliver { keep_undeliverable } => {
                let pending = std::mem::take(&mut self.pending);
                let (mut delivered, mut dropped, mut fetched) = (0, 0, 0);
                for transaction in pending {
                    let to = transaction.to;
                    if self.reachable(transaction.origin, to) && self.servers[to].resident {
                        let (_, count) = self.deliver_from(
                            transaction.origin,
                            to,
                            &transaction.event,
                            ArrivalPath::Send,
                            now_ms,
                        );
                        delivered += 1;
                        fetched += count;
                    } else if keep_undeliverable {
                        self.pending.push(transaction);
                    } else {
                        dropped += 1;
                    }
                }
                notes.push(format!(
                    "delivered {delivered}, fetched {fetched} missing, dropped {dropped}, kept {}",
                    self.pending.len()
                ));
            }
            Action::ExchangeExtremities => {
                let mut fetched = 0;
                for teller in 0..self.servers.len() {
                    for listener in 0..self.servers.len() {
                        if teller == listener
                            || !self.servers[teller].resident
                            || !self.servers[listener].resident
                            || !self.reachable(Origin::Server(teller), listener)
                        {
                            continue;
                        }
                        let extremities = self.room(teller).forward_extremities();
                        fetched += self.fetch_missing(
                            Origin::Server(teller),
                            listener,
                            &extremities,
                            now_ms,
                        );
                    }
                }
                notes.push(format!("fetched {fetched} missing event(s)"));
            }
            Action::RotateKey { server, notify } => {
                notes.extend(self.rotate_key(server, notify, now_ms));
            }
            Action::TakeOffline { server } => self.servers[server].online = false,
            Action::BringOnline { server } => self.servers[server].online = true,
            Action::Compromise { user } => {
                self.compromised_at_ms.entry(user).or_insert(now_ms);
            }
            Action::LateJoin { user, via } => {
                let joiner = self.script.users[user].server;
                let joiner_name = self.script.servers[joiner].name.clone();
                let via_name = self.script.servers[via].name.clone();
                if self.servers[joiner].resident {
                    return Err(format!("{joiner_name} is already in the room"));
                }
                if !self.servers[via].resident
                    || !self.reachable(Origin::Server(joiner), via)
                    || self.room(via).dag().is_empty()
                {
                    return Err(format!(
                        "{joiner_name} cannot backfill from {via_name}: not reachable or not in the room"
                    ));
                }
                self.servers[joiner].resident = true;
                self.servers[joiner].late_joined_at_ms = Some(now_ms);
                for domain in 0..self.servers.len() {
                    if self.reachable(Origin::Server(joiner), domain) {
                        let keys = self.published(domain, now_ms);
                        self.servers[joiner].server.keys.insert(keys, now_ms);
                    }
                }
                let history: Vec<Arc<Pdu>> = self
                    .events
                    .iter()
                    .filter(|(_, pdu)| self.room(via).holds(&pdu.event_id))
                    .map(|(_, pdu)| Arc::clone(pdu))
                    .collect();
                for pdu in &history {
                    self.receive(joiner, pdu, ArrivalPath::Backfill, now_ms);
                }
                notes.push(format!(
                    "{joiner_name} backfilled {} event(s) from {via_name}",
                    history.len()
                ));
                let member = self.users[user].clone();
                let id = member.id();
                notes.extend(self.local_event(
                    user,
                    &name,
                    "m.room.member",
                    Some(&id),
                    member.membership_content("join"),
                    now_ms,
                )?);
            }
            Action::Checkpoint => {}
        }
        Ok(notes)
    }

    fn rotate_key(&mut self, server: usize, notify: bool, now_ms: i64) -> Vec<String> {
        let version = self.version();
        let run = &mut self.servers[server];
        run.key_generation += 1;
        let generation = run.key_generation;
        let mut seed = [server as u8 + 1; 32];
        seed[0] = seed[0].wrapping_add(generation as u8);
        seed[31] = 0xA5 ^ generation as u8;
        let new_key = ServerSigningKey::from_seed(
            KeyId::ed25519(&(generation + 1).to_string()).expect("a valid key ID"),
            &seed,
        );
        let old = std::mem::replace(&mut run.server.signing_key, new_key.clone());
        run.old_keys.insert(
            old.key_id.as_str().to_owned(),
            OldVerifyKey {
                key: old.verifying_key(),
                expired_ts_ms: now_ms,
            },
        );
        let mut notes = Vec::new();
        if version.member_keys {
            let server_name = self.script.servers[server].name.clone();
            let ids: Vec<String> = self
                .script
                .users
                .iter()
                .enumerate()
                .filter(|(_, user)| user.server == server)
                .map(|(index, _)| self.users[index].id())
                .collect();
            let mut resigned = 0;
            for id in ids {
                let run = &mut self.servers[server];
                let Ok(Some(event)) = run.server.room.current_state_event("m.room.member", &id)
                else {
                    continue;
                };
                if event.sender != id
                    || event.content.get("domain").and_then(Value::as_str)
                        != Some(server_name.as_str())
                {
                    continue;
                }
                if let Ok(copy) = countersign_pdu(&version, &event, &server_name, &new_key) {
                    run.resigned.insert(copy.event_id.clone(), copy);
                    resigned += 1;
                }
            }
            notes.push(format!(
                "{server_name} rotated to {} and re-signed {resigned} member event(s)",
                new_key.key_id.as_str()
            ));
        }
        // The server itself knows its new key at once.
        notes.extend(self.refetch(server, server, now_ms));
        if notify {
            for observer in (0..self.servers.len()).filter(|&observer| observer != server) {
                let holds = self.servers[observer]
                    .server
                    .keys
                    .held_keys(&self.script.servers[server].name)
                    .is_some();
                if holds && self.reachable(Origin::Server(observer), server) {
                    notes.extend(self.refetch(observer, server, now_ms));
                }
            }
        }
        notes
    }

    /// Evaluates one check on the current views.
    pub fn evaluate(&mut self, check: &Check) -> CheckResult {
        let server_name = |server: usize| self.script.servers[server].name.clone();
        match &check.kind {
            CheckKind::StateHasMembership {
                server,
                user,
                membership,
            } => {
                let id = self.users[*user].id();
                match self.servers[*server]
                    .server
                    .room
                    .current_state_event("m.room.member", &id)
                {
                    Ok(Some(event)) => {
                        let found = event.membership().unwrap_or("none").to_owned();
                        CheckResult {
                            passed: found == *membership,
                            observed: format!("membership {found}"),
                        }
                    }
                    Ok(None) => CheckResult {
                        passed: false,
                        observed: "no membership".to_owned(),
                    },
                    Err(error) => CheckResult {
                        passed: false,
                        observed: format!("state unresolvable: {error}"),
                    },
                }
            }
            CheckKind::Visible { server, event } => {
                let shown = self.shown(*server, event);
                CheckResult {
                    passed: shown == "visible" || shown == "labelled" || shown == "revealed",
                    observed: shown,
                }
            }
            CheckKind::Hidden {
                server,
                event,
                reason,
            } => {
                let shown = self.shown(*server, event);
                let passed = match reason {
                    Some(reason) => shown == format!("hidden: {reason}"),
                    None => shown.starts_with("hidden"),
                };
                CheckResult {
                    passed,
                    observed: shown,
                }
            }
            CheckKind::Labelled { server, event } => {
                let shown = self.shown(*server, event);
                CheckResult {
                    passed: shown == "labelled",
                    observed: shown,
                }
            }
            CheckKind::Held { server, event } => {
                let shown = self.shown(*server, event);
                CheckResult {
                    passed: shown != "not held",
                    observed: shown,
                }
            }
            CheckKind::LinkStatus {
                server,
                user,
                status,
            } => {
                let found = self.servers[*server]
                    .server
                    .links
                    .status(&self.users[*user].id());
                CheckResult {
                    passed: found == *status,
                    observed: format!("{found:?}").to_lowercase(),
                }
            }
            CheckKind::SameState { servers } => {
                let mut states: Vec<(usize, Result<Arc<StateMap>, String>)> = Vec::new();
                for &server in servers {
                    let state = self.servers[server]
                        .server
                        .room
                        .current_state()
                        .map_err(|error| error.to_string());
                    states.push((server, state));
                }
                let first = &states[0];
                match states.iter().find(|other| other.1 != first.1) {
                    None => CheckResult {
                        passed: true,
                        observed: "same current state".to_owned(),
                    },
                    Some(other) => CheckResult {
                        passed: false,
                        observed: format!(
                            "{} and {} differ",
                            server_name(first.0),
                            server_name(other.0)
                        ),
                    },
                }
            }
            CheckKind::DivergenceAtMost { servers, value } => {
                let matrix = metrics::divergence_matrix(&self.message_views(servers));
                CheckResult {
                    passed: matrix.max <= *value,
                    observed: format!(
                        "max pairwise divergence {:.4} (mean {:.4})",
                        matrix.max, matrix.mean
                    ),
                }
            }
            CheckKind::OrphansAtMost { server, value } => {
                let orphans = metrics::orphans(&self.message_views(&[*server])[0]);
                CheckResult {
                    passed: orphans.orphan_ratio <= *value,
                    observed: format!(
                        "orphan ratio {:.4} ({} of {} visible)",
                        orphans.orphan_ratio, orphans.orphans, orphans.visible
                    ),
                }
            }
            CheckKind::VerifiedAs {
                server,
                user,
                user_id,
            } => {
                let shown = self.servers[*server]
                    .server
                    .links
                    .user_id(&self.users[*user].id());
                CheckResult {
                    passed: shown.as_deref() == Some(user_id.as_str()),
                    observed: format!("shown as {}", shown.as_deref().unwrap_or("null")),
                }
            }
            CheckKind::IdentityCollisionsAtMost { server, count } => {
                let collisions = metrics::identity_collisions(&self.member_info(*server));
                CheckResult {
                    passed: collisions.len() as u64 <= *count,
                    observed: format!(
                        "{} collision(s){}",
                        collisions.len(),
                        collisions
                            .iter()
                            .map(|(user_id, keys)| format!(
                                "; {user_id} shown for {} member keys",
                                keys.len()
                            ))
                            .collect::<String>()
                    ),
                }
            }
            CheckKind::AlwaysProperties { servers } => {
                let violations = self.violations(servers);
                CheckResult {
                    passed: violations.is_empty(),
                    observed: match violations.first() {
                        None => "no violation".to_owned(),
                        Some(first) => format!("{} violation(s); first: {first}", violations.len()),
                    },
                }
            }
        }
    }

    /// `member_info` of `server` (member key → verified user ID or `None`); empty if its state
    /// cannot be resolved.
    pub fn member_info(&mut self, server: usize) -> BTreeMap<String, Option<String>> {
        let run = &mut self.servers[server].server;
        run.room.member_info(&run.links).unwrap_or_default()
    }

    /// The always-properties' violations over `servers`, as text.
    pub fn violations(&mut self, servers: &[usize]) -> Vec<String> {
        let mut found = Vec::new();
        for &server in servers {
            found.extend(properties::no_rejected_event_shown(
                &self.script.servers[server].name,
                self.room(server),
            ));
        }
        let views: Vec<(&str, &RoomState)> = servers
            .iter()
            .map(|&server| (self.script.servers[server].name.as_str(), self.room(server)))
            .collect();
        found.extend(properties::checks_agree(&views, true));
        let wanted: BTreeSet<usize> = servers.iter().copied().collect();
        let mut views: Vec<(&str, &mut RoomState)> = self
            .servers
            .iter_mut()
            .enumerate()
            .filter(|(index, _)| wanted.contains(index))
            .map(|(_, run)| (run.server.name.as_str(), &mut run.server.room))
            .collect();
        found.extend(properties::same_extremities_same_state(&mut views));
        found
            .into_iter()
            .map(|violation| format!("{}: {}", violation.property, violation.detail))
            .collect()
    }

    /// How `server` shows the event named `event`: `visible`, `labelled`, `revealed`,
    /// `hidden: REASON`, or `not held`.
    pub fn shown(&self, server: usize, event: &str) -> String {
        let Some(pdu) = self.event(event) else {
            return "not held".to_owned();
        };
        self.shown_id(server, &pdu.event_id)
    }

    /// As [`Run::shown`] by event ID.
    pub fn shown_id(&self, server: usize, event_id: &str) -> String {
        let room = self.room(server);
        let Some(entry) = room.timeline_entry_of(event_id) else {
            return "not held".to_owned();
        };
        match &entry.visibility {
            Visibility::Delivered { labelled: false } => "visible".to_owned(),
            Visibility::Delivered { labelled: true } => "labelled".to_owned(),
            Visibility::Revealed { .. } => "revealed".to_owned(),
            Visibility::Hidden(fate) => match HiddenReason::of_fate(fate) {
                Some(reason) => format!("hidden: {}", reason.label()),
                None => "visible".to_owned(),
            },
        }
    }

    fn evaluate_at(&mut self, at: Option<&str>) {
        let checks: Vec<Check> = self
            .script
            .checks
            .iter()
            .filter(|check| check.at.as_deref() == at)
            .cloned()
            .collect();
        for check in checks {
            self.results[check.index] = self.evaluate(&check);
        }
    }
}

/// Runs `script`. Errors (a step that cannot happen, e.g. a user of an offline server sending)
/// name the step.
pub fn run(script: &Script) -> Result<Run, ScriptError> {
    let step_error = |index: usize, problem: String| ScriptError {
        file: script.file.clone(),
        path: format!("steps[{index}]"),
        problem,
    };
    let version = script.servers[0].policy.room_version;
    let users: Vec<User> = script
        .users
        .iter()
        .map(|user| {
            // The member key derives from the script's (unique) name; the claim from the
            // localpart.
            let mut made = User::new(&version, &user.name, &script.servers[user.server].name);
            made.localpart = user.localpart.clone();
            made
        })
        .collect();
    let first = &script.steps[0];
    let Action::Create { user: creator } = first.action else {
        return Err(step_error(0, "the first step must be `create`".into()));
    };
    let creator_server = script.users[creator].server;
    if script.servers[creator_server].late {
        return Err(step_error(
            0,
            "the creator's server cannot be a late joiner".into(),
        ));
    }
    let creator_key = ServerSigningKey::from_seed(
        KeyId::ed25519("1").expect("a valid key ID"),
        &[creator_server as u8 + 1; 32],
    );
    let (create, room_id) =
        testbed::create_room(&version, &users[creator], &creator_key, first.at_ms)
            .map_err(|error| step_error(0, format!("cannot build the create event: {error}")))?;
    let servers: Vec<RunServer> = script
        .servers
        .iter()
        .enumerate()
        .map(|(index, def)| RunServer {
            server: Server::new(&def.name, index as u8 + 1, def.policy.clone(), &room_id),
            online: true,
            resident: !def.late,
            late_joined_at_ms: None,
            key_generation: 0,
            old_keys: BTreeMap::new(),
            resigned: BTreeMap::new(),
            expiries_acted_on: BTreeSet::new(),
        })
        .collect();
    let mut run = Run {
        script: script.clone(),
        servers,
        users,
        events: Vec::new(),
        by_id: BTreeMap::new(),
        attacker_made: BTreeSet::new(),
        compromised_at_ms: BTreeMap::new(),
        steps: Vec::new(),
        results: vec![
            CheckResult {
                passed: false,
                observed: "not evaluated".to_owned(),
            };
            script.checks.len()
        ],
        dag_snapshots: Vec::new(),
        room_id,
        pending: Vec::new(),
        groups: None,
    };
    // Servers present from the start hold every server's keys, fetched at 0.
    for observer in 0..run.servers.len() {
        if script.servers[observer].late {
            continue;
        }
        for domain in 0..run.servers.len() {
            let keys = run.published(domain, 0);
            run.servers[observer].server.keys.insert(keys, 0);
        }
    }
    let name = first.name.clone().unwrap_or_default();
    let create = Arc::new(create);
    run.register(&name, Arc::clone(&create));
    run.receive(creator_server, &create, ArrivalPath::Local, first.at_ms);
    run.queue(Origin::Server(creator_server), &create);
    let creator_id = run.users[creator].id();
    let content = run.users[creator].membership_content("join");
    let mut notes = run
        .local_event(
            creator,
            &format!("{name}.join"),
            "m.room.member",
            Some(&creator_id),
            content,
            first.at_ms,
        )
        .map_err(|problem| step_error(0, problem))?;
    notes.extend(
        run.local_event(
            creator,
            &format!("{name}.join_rules"),
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": "public"}),
            first.at_ms,
        )
        .map_err(|problem| step_error(0, problem))?,
    );
    run.steps.push(StepRecord {
        index: 0,
        keyword: first.keyword,
        at_ms: first.at_ms,
        event: Some(name),
        notes,
    });
    for index in 1..script.steps.len() {
        let notes = run
            .step(index)
            .map_err(|problem| step_error(index, problem))?;
        let step = &script.steps[index];
        run.steps.push(StepRecord {
            index,
            keyword: step.keyword,
            at_ms: step.at_ms,
            event: step.name.clone().filter(|_| step.keyword != "checkpoint"),
            notes,
        });
        if let (Action::Checkpoint, Some(name)) = (&step.action, &step.name) {
            run.evaluate_at(Some(name));
            let dot = super::output::dag_dot(&run, Some(name));
            run.dag_snapshots.push((name.clone(), dot));
        }
    }
    run.evaluate_at(None);
    Ok(run)
}
