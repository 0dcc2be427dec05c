//! The world: builds servers, the network and the queue from a scenario, runs the event loop,
//! and collects what the results report.
//!
//! Architecture invariant: servers never call each other. Every key request goes through
//! `net::Network` (latency, loss, partitions, lifecycles) and ends in exactly one `Outcome`
//! delivered back through the queue, so every fault applies to it and every request is counted.

mod build;
pub mod key_charts;
pub mod key_rq;
mod output;
pub mod validity;

use std::collections::BTreeMap;

use crate::engine::{EventQueue, SimRng, Trace};
use crate::net::{
    DomainId, DomainState, Network, Outcome, Partition, Route, ServerId, ServerStatus,
};
use crate::scenario::{ActionKind, Scenario};
use crate::server::key_cache::{self, KeyCache, KeyCacheOutput, Via};
use crate::server::memo::{NotaryIdentity, VerifyMemo};
use crate::server::notary::{Notary, NotaryOutput};
use crate::server::publisher::KeyPublisher;
use crate::server::{absolute_ms, outcome_table::InvalidReason};

pub(crate) use output::{Progress, peak_memory_kib};
pub use output::{RunError, RunOutcome, drop_in_background, run_to_dir};
pub use validity::{Change, Tracker, Transition, Watch, WatchPair};

/// How long a notary waits for an origin before answering from its (possibly stale) cache;
/// shorter than the clients' 10 s so a stale answer can still reach them.
pub const NOTARY_ORIGIN_TIMEOUT_MS: u64 = 5_000;

/// Something scheduled in the queue.
#[derive(Debug, Clone)]
pub enum Event {
    /// A key cache timer.
    Recheck {
        observer: u32,
        slot: u32,
        generation: u32,
    },
    /// A signed request from a known domain reaches an observer (on-demand driver).
    Incoming { observer: u32, slot: u32 },
    /// A request reaches the server it was routed to.
    Arrive { request: u64 },
    /// A request ends at its sender with this outcome.
    Complete { request: u64, outcome: Outcome },
    /// A scripted action.
    Action { index: u32 },
    /// A random partition starts.
    RandomPartition,
    /// A random partition (or a scripted one with a duration) ends.
    HealRandom { id: u64 },
    /// A rotating origin's notification reaches an observer (P6 push).
    Push { observer: u32, slot: u32 },
}

impl Event {
    fn kind_code(&self) -> u32 {
        match self {
            Event::Recheck { .. } => 1,
            Event::Incoming { .. } => 2,
            Event::Arrive { .. } => 3,
            Event::Complete { .. } => 4,
            Event::Action { .. } => 5,
            Event::RandomPartition => 6,
            Event::HealRandom { .. } => 7,
            Event::Push { .. } => 8,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum RequestKind {
    Key {
        observer: u32,
        slot: u32,
        via: Via,
        epoch: u32,
    },
    NotaryOrigin {
        notary: u32,
        domain: DomainId,
    },
}

#[derive(Debug, Clone, Copy)]
struct Request {
    from: ServerId,
    kind: RequestKind,
    deadline_ms: u64,
}

/// The requests in flight, by id. Ids are handed out in order and every request ends (at its
/// deadline at the latest), so they live in a ring indexed by `id - first_id`, advanced past
/// ended requests: no hashing, and the requests of one time window sit together in memory.
#[derive(Default)]
struct RequestTable {
    first_id: u64,
    slots: std::collections::VecDeque<Option<Request>>,
    live: usize,
}

impl RequestTable {
    /// Adds request `id`, which must be the next id after every id added so far.
    fn insert(&mut self, id: u64, request: Request) {
        if self.slots.is_empty() {
            self.first_id = id;
        }
        assert_eq!(
            id,
            self.first_id + self.slots.len() as u64,
            "request ids are added in order"
        );
        self.slots.push_back(Some(request));
        self.live += 1;
    }

    fn slot(&self, id: u64) -> Option<&Option<Request>> {
        let offset = id.checked_sub(self.first_id)?;
        self.slots.get(usize::try_from(offset).ok()?)
    }

    fn get(&self, id: u64) -> Option<Request> {
        self.slot(id).copied().flatten()
    }

    fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    /// Ends request `id`, returning it if it was in flight.
    fn remove(&mut self, id: u64) -> Option<Request> {
        let offset = usize::try_from(id.checked_sub(self.first_id)?).ok()?;
        let request = self.slots.get_mut(offset)?.take()?;
        self.live -= 1;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.first_id += 1;
        }
        Some(request)
    }

    fn len(&self) -> usize {
        self.live
    }
}

/// What a server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves the keys of a domain.
    Origin,
    /// A notary (index into the notaries).
    Notary(u32),
    /// An observer (index into the observers).
    Observer(u32),
}

/// A measured server: its key cache and what it did.
pub struct Observer {
    pub group: usize,
    pub server: ServerId,
    pub name: String,
    pub known_domains: u32,
    /// The key lifetime of the domain group it knows.
    pub key_lifetime_ms: u64,
    pub cache: KeyCache,
    /// Outbound key requests per metrics window.
    pub window_requests: Vec<u32>,
    pub requests_to_dead_domains: u64,
    /// Bytes of 200 bodies received (key responses and notary answers).
    pub bytes_received: u64,
    incoming_mean_gap_ms: f64,
    incoming_rng: SimRng,
    crashed: bool,
    /// The domain id of slot 0 (slots are the first N domains of the group).
    pub domain_group_start: u32,
    /// Wake-ups: distinct 1-second ticks in which a live key-cache timer fired or a push
    /// arrived (an idle host's process had to run).
    pub wakeups: u64,
    last_wakeup_second: u64,
    /// Key responses (200 bodies) this observer parsed and verified (the memo shares the CPU
    /// work between simulated observers; each real host would do it).
    pub verifications: u64,
    /// Every change of every slot, in time order.
    pub transitions: Vec<Transition>,
}

impl Observer {
    /// The slot holding `domain`, if this observer knows it.
    pub fn slot_of(&self, domain: DomainId) -> Option<u32> {
        let slot = domain.checked_sub(self.domain_group_start)?;
        (slot < self.known_domains).then_some(slot)
    }

    fn wake(&mut self, now_ms: u64) {
        let second = now_ms / 1000;
        if self.last_wakeup_second != second {
            self.last_wakeup_second = second;
            self.wakeups += 1;
        }
    }
}

/// Counters of the whole world, sampled into `timeseries.csv`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub key_requests: u64,
    pub direct_requests: u64,
    pub notary_queries: u64,
    pub notary_origin_fetches: u64,
    pub answers_ok: u64,
    pub answers_not_found: u64,
    pub answers_status: u64,
    pub answers_timeout: u64,
    pub answers_refused: u64,
    pub requests_to_dead_domains: u64,
    /// On-demand recheck triggers (requests from a domain) a partition stopped.
    pub incoming_cut_by_partition: u64,
    pub invalidations: u64,
    pub revalidations: u64,
}

/// The simulated world.
pub struct World {
    pub seed: u64,
    pub scenario: Scenario,
    queue: EventQueue<Event>,
    pub net: Network,
    pub memo: VerifyMemo,
    pub domain_names: Vec<String>,
    /// By server id.
    pub roles: Vec<Role>,
    /// By server id: the key publisher of origin servers.
    pub publishers: Vec<Option<KeyPublisher>>,
    /// By server id: key requests (direct and notary) that reached it.
    pub requests_received: Vec<u64>,
    pub notaries: Vec<Notary>,
    pub notary_servers: Vec<ServerId>,
    notary_identities: Vec<NotaryIdentity>,
    pub observers: Vec<Observer>,
    /// Group name -> servers (domain groups, observer groups, "notaries").
    pub groups: Vec<(String, Vec<ServerId>)>,
    requests: RequestTable,
    next_request: u64,
    actions: Vec<(u64, usize, usize)>,
    random_partition_rng: SimRng,
    next_partition_id: u64,
    pub trace: Trace,
    pub totals: Totals,
    pub samples: Vec<(u64, Totals, u32)>,
    next_sample_ms: u64,
    window_ms: u64,
    end_ms: u64,
    key_outputs: Vec<KeyCacheOutput>,
    notary_outputs: Vec<NotaryOutput>,
    pub events_processed: u64,
    /// Per observer × domain validity, watches on scripted key events.
    pub tracker: Tracker,
    /// Lying origins: by origin server, whether each requesting server (by id) is shown the
    /// real key.
    lying_audience: BTreeMap<ServerId, Vec<bool>>,
    /// By domain: dead from the start.
    pub initially_dead: Vec<bool>,
    /// Key-change notifications sent by rotating origins (P6 push).
    pub pushes_sent: u64,
}

impl World {
    /// The simulated time now.
    pub fn now_ms(&self) -> u64 {
        self.queue.now_ms()
    }

    /// The end of the run.
    pub fn end_ms(&self) -> u64 {
        self.end_ms
    }

    /// Largest number of pending events.
    pub fn queue_len_max(&self) -> usize {
        self.queue.len_max()
    }

    /// Starts recording the queue's schedule (benchmarks: see [`EventQueue::record_schedule`]).
    pub fn record_schedule(&mut self) {
        self.queue.record_schedule();
    }

    /// The queue schedule recorded since [`World::record_schedule`].
    pub fn take_schedule(&mut self) -> Vec<u64> {
        self.queue.take_schedule()
    }

    /// Processes events until the end of the run, calling `progress(now_ms)` every so often.
    pub fn run(&mut self, mut progress: impl FnMut(u64)) {
        let _crypto = crate::matrix::crypto_mode::enter(self.scenario.crypto);
        while let Some(at_ms) = self.queue.peek_time_ms() {
            if at_ms > self.end_ms {
                break;
            }
            let (at_ms, _seq, event) = self.queue.pop().expect("peeked");
            self.prefetch_next(false);
            self.take_samples_until(at_ms);
            self.events_processed += 1;
            self.record(at_ms, &event);
            self.handle(event);
            self.prefetch_next(true);
            if self.events_processed.is_multiple_of(65_536) {
                progress(at_ms);
            }
        }
        self.take_samples_until(self.end_ms);
        progress(self.end_ms);
    }

    fn record(&mut self, at_ms: u64, event: &Event) {
        let entity = match event {
            Event::Recheck { observer, slot, .. }
            | Event::Incoming { observer, slot }
            | Event::Push { observer, slot } => (u64::from(*observer) << 32) | u64::from(*slot),
            Event::Arrive { request } | Event::Complete { request, .. } => *request,
            Event::Action { index } => u64::from(*index),
            Event::RandomPartition => 0,
            Event::HealRandom { id } => *id,
        };
        self.trace.record(at_ms, event.kind_code(), entity);
        if self.trace.writes_lines() {
            let outcome = match event {
                Event::Complete { outcome, .. } => outcome.label(),
                _ => "",
            };
            let line = format!(
                "{{\"t_ms\":{at_ms},\"kind\":{},\"entity\":{entity},\"outcome\":\"{outcome}\"}}",
                event.kind_code()
            );
            // A trace that cannot be written is reported at the end through flush().
            let _ = self.trace.write_line(&line);
        }
    }

    fn take_samples_until(&mut self, at_ms: u64) {
        while self.next_sample_ms <= at_ms && self.next_sample_ms <= self.end_ms {
            let in_flight: u32 = self
                .observers
                .iter()
                .map(|observer| observer.cache.in_flight())
                .sum();
            self.samples
                .push((self.next_sample_ms, self.totals, in_flight));
            self.next_sample_ms += self.window_ms;
        }
    }

    fn handle(&mut self, event: Event) {
        let now_ms = self.queue.now_ms();
        match event {
            Event::Recheck {
                observer,
                slot,
                generation,
            } => {
                let state = &mut self.observers[observer as usize];
                if state.crashed {
                    return;
                }
                if state
                    .cache
                    .on_timer(now_ms, slot, generation, &mut self.key_outputs)
                {
                    state.wake(now_ms);
                }
                self.apply_key_outputs(observer);
            }
            Event::Push { observer, slot } => {
                let state = &mut self.observers[observer as usize];
                if state.crashed {
                    return;
                }
                state.wake(now_ms);
                state.cache.on_push(now_ms, slot, &mut self.key_outputs);
                self.apply_key_outputs(observer);
            }
            Event::Incoming { observer, slot } => {
                let state = &mut self.observers[observer as usize];
                let gap_ms = state.incoming_rng.exponential(state.incoming_mean_gap_ms) as u64;
                self.queue
                    .push(now_ms + gap_ms.max(1), Event::Incoming { observer, slot });
                let state = &mut self.observers[observer as usize];
                if state.crashed
                    || self
                        .net
                        .domain_is_dead(state.cache.slots()[slot as usize].domain)
                {
                    // Dead domains send nothing; crashed observers receive nothing.
                    return;
                }
                // A partition between the domain's server and the observer stops its requests
                // (a fractional cut drops this share of them, drawn from the observer's own
                // incoming stream so no other server's draws move). The base loss is not
                // applied: a real sender retries a lost transaction until it gets through.
                let domain = state.cache.slots()[slot as usize].domain;
                if let Some(sender) = self.net.server_of(domain) {
                    let cut = self.net.partition_loss(sender, state.server);
                    if cut > 0.0 && (cut >= 1.0 || state.incoming_rng.chance(cut)) {
                        self.totals.incoming_cut_by_partition += 1;
                        return;
                    }
                }
                state
                    .cache
                    .on_incoming_request(now_ms, slot, &mut self.key_outputs);
                self.apply_key_outputs(observer);
            }
            Event::Arrive { request } => self.arrive(now_ms, request),
            Event::Complete { request, outcome } => self.complete(now_ms, request, outcome),
            Event::Action { index } => self.act(now_ms, index as usize),
            Event::RandomPartition => self.random_partition(now_ms),
            Event::HealRandom { id } => self.net.heal_id(id),
        }
    }

    fn apply_key_outputs(&mut self, observer: u32) {
        let mut outputs = std::mem::take(&mut self.key_outputs);
        for output in outputs.drain(..) {
            match output {
                KeyCacheOutput::Send { slot, via } => self.send_key_request(observer, slot, via),
                KeyCacheOutput::SetTimer {
                    at_ms,
                    slot,
                    generation,
                } => {
                    self.queue.push(
                        at_ms,
                        Event::Recheck {
                            observer,
                            slot,
                            generation,
                        },
                    );
                }
                KeyCacheOutput::Decision { decision, slot } => {
                    let change = match decision {
                        key_cache::Decision::Invalidated(reason) => {
                            self.totals.invalidations += 1;
                            Change::Invalidated(reason)
                        }
                        key_cache::Decision::Revalidated => {
                            self.totals.revalidations += 1;
                            Change::Revalidated
                        }
                    };
                    self.observers[observer as usize]
                        .transitions
                        .push(Transition {
                            at_ms: self.queue.now_ms(),
                            slot,
                            change,
                        });
                }
            }
        }
        self.key_outputs = outputs;
    }

    fn send_key_request(&mut self, observer: u32, slot: u32, via: Via) {
        let now_ms = self.queue.now_ms();
        let state = &mut self.observers[observer as usize];
        let domain = state.cache.slots()[slot as usize].domain;
        let window = (now_ms / self.window_ms) as usize;
        if let Some(count) = state.window_requests.get_mut(window) {
            *count += 1;
        }
        let from = state.server;
        let timeout_ms = state.cache.policy().request_timeout_ms;
        let epoch = state.cache.epoch;
        self.totals.key_requests += 1;
        let target_domain = match via {
            Via::Direct => {
                self.totals.direct_requests += 1;
                if self.net.domain_is_dead(domain) {
                    self.observers[observer as usize].requests_to_dead_domains += 1;
                    self.totals.requests_to_dead_domains += 1;
                }
                domain
            }
            Via::Notary(index) => {
                self.totals.notary_queries += 1;
                self.notary_domain(index)
            }
        };
        let request = Request {
            from,
            kind: RequestKind::Key {
                observer,
                slot,
                via,
                epoch,
            },
            deadline_ms: now_ms + timeout_ms,
        };
        self.dispatch(now_ms, request, target_domain);
    }

    /// The domain id a notary answers under (notaries' names follow the domains').
    fn notary_domain(&self, index: u32) -> DomainId {
        self.notary_servers[index as usize]
    }

    /// Routes a request and schedules its arrival or its end.
    fn dispatch(&mut self, now_ms: u64, request: Request, target_domain: DomainId) {
        let id = self.next_request;
        self.next_request += 1;
        let deadline_ms = request.deadline_ms;
        let within = |at_ms: u64| at_ms < deadline_ms;
        match self.net.route_request(request.from, target_domain) {
            Route::Deliver { latency_ms, .. } if within(now_ms + latency_ms) => {
                self.queue
                    .push(now_ms + latency_ms, Event::Arrive { request: id });
            }
            Route::Answer {
                outcome_status,
                round_trip_ms,
            } if within(now_ms + round_trip_ms) => {
                let outcome = match outcome_status {
                    None => Outcome::NotFound,
                    Some(status) => Outcome::Status(status),
                };
                self.queue.push(
                    now_ms + round_trip_ms,
                    Event::Complete {
                        request: id,
                        outcome,
                    },
                );
            }
            Route::Refuse { round_trip_ms } if within(now_ms + round_trip_ms) => {
                self.queue.push(
                    now_ms + round_trip_ms,
                    Event::Complete {
                        request: id,
                        outcome: Outcome::Refused,
                    },
                );
            }
            _ => {
                self.queue.push(
                    deadline_ms,
                    Event::Complete {
                        request: id,
                        outcome: Outcome::Timeout,
                    },
                );
            }
        }
        self.requests.insert(id, request);
    }

    /// Prefetch hints (see [`crate::engine::prefetch`]; they read state but change nothing)
    /// for the event the queue returns next. A key fetch is three events in a row (timer,
    /// arrival at the origin, answer at the observer), each reading per-domain state last
    /// touched a simulated day ago. Called before an event is handled (`deep = false`: the
    /// first level, whose addresses are known without reading cold memory) and after it
    /// (`deep`: also what those lines point to, by now loaded), so the loads overlap with the
    /// signing and checking in between instead of stalling one after another.
    fn prefetch_next(&self, deep: bool) {
        use crate::engine::prefetch::{prefetch, prefetch_all, prefetch_bytes};
        let (observer, slot, via) = match self.queue.peek() {
            Some(Event::Recheck { observer, slot, .. }) => (*observer, *slot, None),
            Some(Event::Arrive { request }) => match self.requests.get(*request) {
                Some(Request {
                    kind:
                        RequestKind::Key {
                            observer,
                            slot,
                            via,
                            ..
                        },
                    ..
                }) => (observer, slot, Some(via)),
                _ => return,
            },
            _ => return,
        };
        let Some(state) = self.observers.get(observer as usize) else {
            return;
        };
        if slot >= state.known_domains {
            return;
        }
        let domain = state.domain_group_start + slot;
        let server = match via {
            None | Some(Via::Direct) => match self.net.domain_state(domain) {
                DomainState::Served(server) => server,
                _ => return,
            },
            Some(Via::Notary(_)) => return,
        };
        prefetch(&state.cache.slots()[slot as usize]);
        // Addresses only: reading whether the publisher exists would itself wait for it.
        let Some(publisher) = self.publishers.get(server as usize) else {
            return;
        };
        prefetch_all(publisher);
        if let Some(count) = self.requests_received.get(server as usize) {
            prefetch(count);
        }
        self.memo.prefetch_entries(domain);
        let Some(name) = self.domain_names.get(domain as usize) else {
            return;
        };
        prefetch(name);
        if deep {
            if let Some(publisher) = publisher {
                publisher.prefetch_response();
            }
            self.memo.prefetch_entry_targets(domain);
            prefetch_bytes(name.as_bytes(), 64);
            if via.is_some() {
                // An arrival: the key objects were asked for before the timer's turn.
                self.memo.prefetch_entry_names(domain);
            }
        }
    }

    fn arrive(&mut self, now_ms: u64, id: u64) {
        let Some(request) = self.requests.get(id) else {
            return;
        };
        let target = match request.kind {
            RequestKind::Key {
                observer,
                slot,
                via: Via::Direct,
                ..
            } => {
                let domain = self.observers[observer as usize].cache.slots()[slot as usize].domain;
                self.serving_server(domain)
            }
            RequestKind::Key {
                via: Via::Notary(index),
                ..
            } => Some(self.notary_servers[index as usize]),
            RequestKind::NotaryOrigin { domain, .. } => self.serving_server(domain),
        };
        let Some(server) = target else {
            // The name moved away while the request travelled: nothing answers.
            self.queue.push(
                request.deadline_ms.max(now_ms),
                Event::Complete {
                    request: id,
                    outcome: Outcome::Timeout,
                },
            );
            return;
        };
        if self.net.server_status(server) != ServerStatus::Up {
            self.queue.push(
                request.deadline_ms.max(now_ms),
                Event::Complete {
                    request: id,
                    outcome: Outcome::Timeout,
                },
            );
            return;
        }
        self.requests_received[server as usize] += 1;
        match self.roles[server as usize] {
            Role::Origin => {
                let publisher = self.publishers[server as usize]
                    .as_mut()
                    .expect("origin servers publish keys");
                let in_audience = self.lying_audience.get(&server).is_none_or(|shown_real| {
                    shown_real
                        .get(request.from as usize)
                        .copied()
                        .unwrap_or(false)
                });
                let body = publisher.response_for(absolute_ms(now_ms), in_audience);
                self.respond(now_ms, server, id, Outcome::Ok(body));
            }
            Role::Notary(index) => {
                let RequestKind::Key { observer, slot, .. } = request.kind else {
                    unreachable!("only key queries are sent to notaries");
                };
                let domain = self.observers[observer as usize].cache.slots()[slot as usize].domain;
                let mut outputs = std::mem::take(&mut self.notary_outputs);
                self.notaries[index as usize].on_query(
                    absolute_ms(now_ms),
                    domain,
                    id,
                    &mut outputs,
                );
                self.apply_notary_outputs(now_ms, index, &mut outputs);
                self.notary_outputs = outputs;
                // A parked query still ends at its deadline if the notary is slow.
                if self.requests.contains(id) {
                    self.queue.push(
                        request.deadline_ms,
                        Event::Complete {
                            request: id,
                            outcome: Outcome::Timeout,
                        },
                    );
                }
            }
            Role::Observer(_) => {
                self.respond(now_ms, server, id, Outcome::NotFound);
            }
        }
    }

    fn serving_server(&self, domain: DomainId) -> Option<ServerId> {
        match self.net.domain_state(domain) {
            DomainState::Served(server) => Some(server),
            _ => None,
        }
    }

    /// Sends a response back from `server` for request `id`: it completes after the return
    /// latency, or times out at the deadline if lost or too slow.
    fn respond(&mut self, now_ms: u64, server: ServerId, id: u64, outcome: Outcome) {
        let Some(request) = self.requests.get(id) else {
            return;
        };
        match self.net.route_response(server, request.from) {
            Some(latency_ms) if now_ms + latency_ms < request.deadline_ms => {
                self.queue.push(
                    now_ms + latency_ms,
                    Event::Complete {
                        request: id,
                        outcome,
                    },
                );
            }
            _ => {
                let at_ms = request.deadline_ms.max(now_ms);
                self.queue.push(
                    at_ms,
                    Event::Complete {
                        request: id,
                        outcome: Outcome::Timeout,
                    },
                );
            }
        }
    }

    fn apply_notary_outputs(&mut self, now_ms: u64, notary: u32, outputs: &mut Vec<NotaryOutput>) {
        for output in outputs.drain(..) {
            match output {
                NotaryOutput::Respond { token, body } => {
                    let server = self.notary_servers[notary as usize];
                    if self.requests.contains(token) {
                        // Replace the parked timeout by the answer (the first to come wins).
                        self.respond(now_ms, server, token, Outcome::Ok(body));
                    }
                }
                NotaryOutput::FetchOrigin { domain } => {
                    self.totals.notary_origin_fetches += 1;
                    let request = Request {
                        from: self.notary_servers[notary as usize],
                        kind: RequestKind::NotaryOrigin { notary, domain },
                        deadline_ms: now_ms + NOTARY_ORIGIN_TIMEOUT_MS,
                    };
                    self.dispatch(now_ms, request, domain);
                }
            }
        }
    }

    fn complete(&mut self, now_ms: u64, id: u64, outcome: Outcome) {
        let Some(request) = self.requests.remove(id) else {
            return; // already ended (a parked notary query answered before its timeout)
        };
        match &outcome {
            Outcome::Ok(_) => self.totals.answers_ok += 1,
            Outcome::NotFound => self.totals.answers_not_found += 1,
            Outcome::Status(_) => self.totals.answers_status += 1,
            Outcome::Timeout => self.totals.answers_timeout += 1,
            Outcome::Refused => self.totals.answers_refused += 1,
        }
        match request.kind {
            RequestKind::Key {
                observer,
                slot,
                via,
                epoch,
            } => {
                let state = &mut self.observers[observer as usize];
                if state.crashed || state.cache.epoch != epoch {
                    return;
                }
                if let Outcome::Ok(body) = &outcome {
                    state.bytes_received += body.len() as u64;
                    state.verifications += 1;
                }
                let domain = state.cache.slots()[slot as usize].domain;
                let fetched = key_cache::classify(
                    &outcome,
                    via,
                    domain,
                    &self.domain_names[domain as usize],
                    &self.notary_identities,
                    &mut self.memo,
                );
                state
                    .cache
                    .on_response(now_ms, slot, via, fetched, &mut self.key_outputs);
                self.apply_key_outputs(observer);
                let state = &self.observers[observer as usize];
                self.tracker.evaluate(observer, slot, &state.cache, now_ms);
            }
            RequestKind::NotaryOrigin { notary, domain } => {
                let mut outputs = std::mem::take(&mut self.notary_outputs);
                self.notaries[notary as usize].on_origin_answer(
                    absolute_ms(now_ms),
                    domain,
                    &self.domain_names[domain as usize],
                    &outcome,
                    &mut self.memo,
                    &mut outputs,
                );
                self.apply_notary_outputs(now_ms, notary, &mut outputs);
                self.notary_outputs = outputs;
            }
        }
    }

    fn random_partition(&mut self, now_ms: u64) {
        let random = self.scenario.network.random_partitions.clone();
        let server_count = self.net.server_count() as u64;
        let isolated = self.random_partition_rng.below(server_count) as ServerId;
        let kind = random
            .kind
            .unwrap_or(crate::scenario::PartitionKind::Symmetric);
        let mut partition = Partition::new(kind, server_count as usize, &[isolated], None);
        self.next_partition_id += 1;
        partition.id = self.next_partition_id;
        self.net.partition(partition);
        let mean_ms = random.mean_duration.map(|d| d.ms()).unwrap_or(0) as f64;
        let duration_ms = self.random_partition_rng.exponential(mean_ms) as u64;
        self.queue.push(
            now_ms + duration_ms.max(1),
            Event::HealRandom {
                id: self.next_partition_id,
            },
        );
        let gap_ms = self
            .random_partition_rng
            .exponential(crate::engine::time::DAY_MS as f64 / random.rate_per_day)
            as u64;
        self.queue
            .push(now_ms + gap_ms.max(1), Event::RandomPartition);
    }

    /// The servers a selector names.
    pub fn select(&self, selector: &crate::scenario::Selector) -> Vec<ServerId> {
        let Some((_, servers)) = self.groups.iter().find(|(name, _)| *name == selector.group)
        else {
            return Vec::new();
        };
        let from = (selector.from as usize).min(servers.len());
        let count = selector
            .count
            .map(|count| count as usize)
            .unwrap_or(servers.len());
        servers[from..(from + count).min(servers.len())].to_vec()
    }

    fn act(&mut self, now_ms: u64, index: usize) {
        let (_, phase_index, action_index) = self.actions[index];
        let action = self.scenario.phases[phase_index].actions[action_index].clone();
        let targets = action
            .targets
            .as_ref()
            .map(|selector| self.select(selector))
            .unwrap_or_default();
        let now_abs_ms = absolute_ms(now_ms);
        self.open_watches(now_ms, phase_index, action_index, &action, &targets);
        match action.kind {
            ActionKind::Partition => {
                let a = self.select(action.a.as_ref().expect("validated"));
                let b = self.select(action.b.as_ref().expect("validated"));
                let kind = action.partition.expect("validated");
                let mut partition = Partition::new(kind, self.net.server_count(), &a, Some(&b));
                if kind == crate::scenario::PartitionKind::Asymmetric {
                    partition = partition.with_losses(
                        action.loss_a_to_b.unwrap_or(1.0),
                        action.loss_b_to_a.unwrap_or(0.5),
                    );
                }
                if let Some(duration) = action.duration {
                    self.next_partition_id += 1;
                    partition.id = self.next_partition_id;
                    self.queue.push(
                        now_ms + duration.ms(),
                        Event::HealRandom {
                            id: self.next_partition_id,
                        },
                    );
                }
                self.net.partition(partition);
            }
            ActionKind::Heal => self.net.heal(),
            ActionKind::Crash => {
                for server in targets {
                    self.net.set_server_status(server, ServerStatus::Crashed);
                    self.stop_observer(server);
                }
            }
            ActionKind::Restart => {
                for server in targets {
                    if self.net.server_status(server) == ServerStatus::Departed {
                        continue;
                    }
                    self.net.set_server_status(server, ServerStatus::Up);
                    if let Role::Observer(observer) = self.roles[server as usize] {
                        let state = &mut self.observers[observer as usize];
                        state.crashed = false;
                        state.cache.resume(now_ms, &mut self.key_outputs);
                        self.apply_key_outputs(observer);
                    }
                }
            }
            ActionKind::Depart => {
                for server in targets {
                    self.net.set_server_status(server, ServerStatus::Departed);
                    self.stop_observer(server);
                    self.park_domains_of(server, DomainState::Parked);
                }
            }
            ActionKind::LoseDatabase => {
                for server in targets {
                    match self.roles[server as usize] {
                        Role::Observer(observer) => {
                            let state = &mut self.observers[observer as usize];
                            for (slot, entry) in state.cache.slots().iter().enumerate() {
                                if entry.valid {
                                    state.transitions.push(Transition {
                                        at_ms: now_ms,
                                        slot: slot as u32,
                                        change: Change::Forgotten,
                                    });
                                }
                            }
                            state.cache.forget_all(now_ms, &mut self.key_outputs);
                            self.apply_key_outputs(observer);
                            let state = &self.observers[observer as usize];
                            self.tracker
                                .evaluate_observer(observer, &state.cache, now_ms);
                        }
                        Role::Notary(index) => self.notaries[index as usize].forget(),
                        // An origin keeps its signing key in a file, not the database.
                        Role::Origin => {}
                    }
                }
            }
            ActionKind::LoseKey => {
                for server in targets {
                    if let Some(publisher) = self.publishers[server as usize].as_mut() {
                        publisher.lose_key();
                        if let Some(domain) = self.original_domain(server) {
                            self.set_honest_if_served(domain, now_ms);
                        }
                    }
                }
            }
            ActionKind::RotateKey => {
                for server in targets {
                    if let Some(publisher) = self.publishers[server as usize].as_mut() {
                        publisher.rotate(now_abs_ms);
                        if let Some(domain) = self.original_domain(server) {
                            self.set_honest_if_served(domain, now_ms);
                            self.push_key_change(now_ms, server, domain);
                        }
                    }
                }
            }
            ActionKind::Compromise => {
                // The attacker now holds the key; nothing the origin serves changes. The
                // watch opened above measures how long observers keep the key valid.
            }
            ActionKind::LyingServer => {
                let audience = self.select(action.audience.as_ref().expect("validated"));
                let mut shown_real = vec![false; self.roles.len()];
                for server in audience {
                    shown_real[server as usize] = true;
                }
                for server in targets {
                    if let Some(publisher) = self.publishers[server as usize].as_mut() {
                        publisher.start_split_view();
                        self.lying_audience.insert(server, shown_real.clone());
                        if let Some(domain) = self.original_domain(server) {
                            self.tracker.set_honest(domain, now_ms, false);
                        }
                    }
                }
            }
            ActionKind::KeyFlapping => {
                let period_ms = action.period.expect("validated").ms();
                for server in targets {
                    if let Some(publisher) = self.publishers[server as usize].as_mut() {
                        publisher.start_flapping(now_abs_ms, period_ms);
                        if let Some(domain) = self.original_domain(server) {
                            self.tracker.set_honest(domain, now_ms, false);
                        }
                    }
                }
            }
            ActionKind::ClockSkew => {
                let offset_ms = action.offset_ms.expect("validated");
                for server in targets {
                    if let Role::Observer(observer) = self.roles[server as usize] {
                        self.observers[observer as usize]
                            .cache
                            .set_clock_offset(offset_ms);
                    }
                }
            }
            ActionKind::Decommission => {
                let mode = action.mode.unwrap_or(crate::scenario::DeadMode::NoAnswer);
                let state = DomainState::dead(mode, action.status.unwrap_or(503));
                for server in targets {
                    self.net.set_server_status(server, ServerStatus::Departed);
                    self.stop_observer(server);
                    self.park_domains_of(server, state);
                }
            }
            ActionKind::Reregister => {
                for server in targets {
                    self.reregister(server);
                }
            }
        }
    }

    /// An observer that crashes, departs or is decommissioned stops: it polls, fetches and
    /// hears nothing more (until a `restart`, which a departed server ignores). Before, only a
    /// crash stopped it, and a departed observer kept polling every domain.
    fn stop_observer(&mut self, server: ServerId) {
        if let Role::Observer(observer) = self.roles[server as usize] {
            self.observers[observer as usize].crashed = true;
        }
    }

    fn park_domains_of(&mut self, server: ServerId, state: DomainState) {
        let now_ms = self.queue.now_ms();
        for domain in 0..self.domain_names.len() as DomainId {
            if self.net.domain_state(domain) == DomainState::Served(server) {
                self.net.set_domain_state(domain, state);
                self.tracker.set_honest(domain, now_ms, false);
            }
        }
    }

    /// After an honest key change (rotation, key loss): the domain is honest again if it is
    /// still served (a rotation ends lying and flapping).
    fn set_honest_if_served(&mut self, domain: DomainId, now_ms: u64) {
        if self.serving_server(domain).is_some() {
            self.tracker.set_honest(domain, now_ms, true);
        }
    }

    /// P6: a rotating origin notifies every observer that knows its domain; each notification
    /// travels through the network (a partition or loss drops it).
    fn push_key_change(&mut self, now_ms: u64, origin: ServerId, domain: DomainId) {
        for observer in 0..self.observers.len() {
            let state = &self.observers[observer];
            let Some(slot) = state.slot_of(domain) else {
                continue;
            };
            if !state.cache.policy().push {
                continue;
            }
            self.pushes_sent += 1;
            let to = state.server;
            if let Some(latency_ms) = self.net.route_response(origin, to) {
                self.queue.push(
                    now_ms + latency_ms,
                    Event::Push {
                        observer: observer as u32,
                        slot,
                    },
                );
            }
        }
    }

    /// Opens a validity watch per origin an action changes (before the change), so every
    /// observer's reaction to it is measured from now.
    fn open_watches(
        &mut self,
        now_ms: u64,
        phase_index: usize,
        action_index: usize,
        action: &crate::scenario::Action,
        targets: &[ServerId],
    ) {
        let watched = matches!(
            action.kind,
            ActionKind::RotateKey
                | ActionKind::LoseKey
                | ActionKind::Decommission
                | ActionKind::Depart
                | ActionKind::Reregister
                | ActionKind::Compromise
                | ActionKind::LyingServer
                | ActionKind::KeyFlapping
        );
        if !watched {
            return;
        }
        let label = action.label.clone().unwrap_or_else(|| {
            format!(
                "{}-{action_index}",
                build::slug(&self.scenario.phases[phase_index].name)
            )
        });
        for server in targets {
            let Some(domain) = self.original_domain(*server) else {
                continue;
            };
            if action.kind != ActionKind::Compromise {
                self.tracker.owner_reacted(domain, now_ms);
            }
            let Some(publisher) = self.publishers[*server as usize].as_ref() else {
                continue;
            };
            let key = publisher.current_key();
            let observers = self
                .observers
                .iter()
                .enumerate()
                .filter_map(|(index, state)| {
                    state
                        .slot_of(domain)
                        .map(|slot| (index as u32, slot, &state.cache))
                });
            self.tracker.open_watch(
                label.clone(),
                action.kind,
                domain,
                now_ms,
                key.key_id.to_string(),
                key.verifying_key(),
                observers,
            );
        }
    }

    /// A new owner takes the domain(s) first served by `server` and runs a new server there.
    fn reregister(&mut self, server: ServerId) {
        let Some(domain) = self.original_domain(server) else {
            return;
        };
        // The new owner's server sits where the old one did (same region).
        let region = self.net.region_of(server);
        let new_server = self.net.add_server(self.seed, region);
        let lifetime_ms = self.publishers[server as usize]
            .as_ref()
            .map(|publisher| publisher.lifetime_ms())
            .unwrap_or(crate::engine::time::DAY_MS);
        let publisher = KeyPublisher::new(
            self.domain_names[domain as usize].clone(),
            lifetime_ms,
            SimRng::stream(self.seed, "key-seeds", u64::from(new_server)),
        );
        self.roles.push(Role::Origin);
        self.publishers.push(Some(publisher));
        self.requests_received.push(0);
        if self.net.server_status(server) == ServerStatus::Up {
            self.net.set_server_status(server, ServerStatus::Departed);
        }
        self.net
            .set_domain_state(domain, DomainState::Served(new_server));
        self.tracker.set_honest(domain, self.queue.now_ms(), true);
    }

    /// Origin servers are created with the domain of the same index.
    fn original_domain(&self, server: ServerId) -> Option<DomainId> {
        ((server as usize) < self.domain_names.len() && self.roles[server as usize] == Role::Origin)
            .then_some(server)
    }

    /// Invalidations by reason, summed over observers.
    pub fn invalidations_by_reason(&self) -> Vec<(InvalidReason, u64)> {
        InvalidReason::ALL
            .iter()
            .map(|reason| {
                let total = self
                    .observers
                    .iter()
                    .map(|observer| observer.cache.stats.invalidations[*reason as usize])
                    .sum();
                (*reason, total)
            })
            .collect()
    }

    /// Wall-clock seconds spent signing and verifying key responses so far (benchmarks and
    /// run-info.json only).
    pub fn crypto_seconds(&self) -> f64 {
        let sign_nanos: u64 = self
            .publishers
            .iter()
            .flatten()
            .map(|publisher| publisher.sign_nanos)
            .sum();
        (sign_nanos + self.memo.check_nanos) as f64 / 1e9
    }

    /// Whether the world holds requests that have not ended (for tests).
    pub fn requests_pending(&self) -> usize {
        self.requests.len()
    }

    /// The notary identities observers are configured with.
    pub fn notary_identities(&self) -> &[NotaryIdentity] {
        &self.notary_identities
    }
}

#[cfg(test)]
mod request_table_tests {
    use super::*;

    fn request(deadline_ms: u64) -> Request {
        Request {
            from: 0,
            kind: RequestKind::NotaryOrigin {
                notary: 0,
                domain: 0,
            },
            deadline_ms,
        }
    }

    #[test]
    fn the_ring_behaves_like_a_map_of_requests_in_flight() {
        let mut table = RequestTable::default();
        let mut reference = BTreeMap::new();
        let mut next_id = 5;
        // Requests end out of order; ids keep growing.
        for step in 0u64..2_000 {
            table.insert(next_id, request(step));
            reference.insert(next_id, step);
            next_id += 1;
            if step % 3 != 0 {
                let end = next_id - 1 - (step * 7919 % 5).min(reference.len() as u64 - 1);
                assert_eq!(
                    table.remove(end).map(|r| r.deadline_ms),
                    reference.remove(&end)
                );
                assert_eq!(table.remove(end).map(|r| r.deadline_ms), None);
            }
            for probe in [0, 4, next_id - 3, next_id - 1, next_id, next_id + 10] {
                assert_eq!(
                    table.get(probe).map(|r| r.deadline_ms),
                    reference.get(&probe).copied()
                );
                assert_eq!(table.contains(probe), reference.contains_key(&probe));
            }
            assert_eq!(table.len(), reference.len());
        }
        for id in reference.keys().copied().collect::<Vec<_>>() {
            assert!(table.remove(id).is_some());
        }
        assert_eq!(table.len(), 0);
        assert!(table.slots.is_empty(), "ended requests are dropped");
        table.insert(next_id + 3, request(1));
        assert!(table.contains(next_id + 3));
    }
}
