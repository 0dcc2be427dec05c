//! The room world: every simulated homeserver is a full server. It publishes its own keys
//! ([`KeyPublisher`]), holds a [`KeyCache`] for the domains it shares rooms with, has users, and
//! keeps a [`RoomState`] and a [`LinkTable`] per room; it runs the real receipt pipeline
//! (`room::pipeline::receive_pdu_shared`) on real signed events.
//!
//! Architecture invariant (as in `world/`): servers never call each other. Every interaction —
//! `/send` transactions, `make_join`/`send_join`, `/get_missing_events`, `/event/{id}`, key
//! fetches, extremity exchange, the attacker's sends — is a request routed through
//! [`Network`] that ends in exactly one outcome, counted by purpose, destination and outcome.
//!
//! Per server and room, received PDUs wait in one inbound queue processed in order: a PDU whose
//! signature check needs keys the server does not hold parks the queue until the key fetch ends
//! (real servers fetch on demand), and a PDU with unknown prev or auth events parks it until a
//! `/get_missing_events` answer arrives (its events are processed first, oldest first).
//!
//! Joins (`rooms.join`): under `state` they follow the spec (`join.rs`: the `send_join` answer
//! carries the state and the auth chain, stored as outliers, then `/backfill`); under
//! `history` (the default, fedsim's earlier simplification documented in docs/notes/fed.md)
//! the answer carries the resident's whole held history in its DAG order, which the joiner runs
//! through its pipeline on the `JoinState` path. Bytes are counted either way.

mod acl;
mod adversary;
mod bitrot;
mod build;
mod churn;
mod divergence;
mod identity;
mod join;
mod keyadv;
mod keys;
mod members;
mod notary;
mod output;
mod pulls;
mod storm;
mod vec_map;
mod workload;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::engine::{EventQueue, SimRng, Trace};
use crate::matrix::event_builder::{EventDraft, EventSigner, build_pdu};
use crate::matrix::member_keys::cosign_member_event;
use crate::matrix::server_keys::ServerKeys;
use crate::matrix::signing::ServerSigningKey;
use crate::matrix::{EventId, RoomVersion};
use crate::net::{Network, Outcome, Partition, Route, ServerId, ServerStatus};
use crate::room::links::{KeyInvalidation, LinkTable, UnsettledTally};
use crate::room::memo::CheckMemo;
use crate::room::pipeline::{self, Receipt, ServerView, Verdict};
use crate::room::policy::{ArrivalPath, RoomPolicy};
use crate::room::room_state::{RoomState, SoftFailReason};
use crate::scenario::{RoomActionKind, Rooms, Scenario, ServerRef};
use crate::server::absolute_ms;
use crate::server::key_cache::{self, Decision, Fetched, KeyCache, KeyCacheOutput, Via};
use crate::server::memo::VerifyMemo;
use crate::server::outcome_table::InvalidReason;
use crate::server::policy::KeyPolicy;
use crate::server::publisher::KeyPublisher;

pub use adversary::{AdvCounters, Adversaries};
pub use build::policies;
use keys::CacheKeys;
pub use output::run_to_dir;
pub use pulls::{PULL_BACKOFF_MAX_DOUBLINGS, PULL_BACKOFF_STEP_MS, PullFailure, pull_backoff_ms};

/// Index of a room in the world.
pub type RoomIndex = u32;

/// At most this many PDUs per `/send` transaction (the spec's limit).
pub const MAX_PDUS_PER_TRANSACTION: usize = 50;
/// `/get_missing_events` answers at most this many events (Synapse asks for 10; fedsim walks
/// further so that a long partition is bridged in a few rounds).
pub const MISSING_EVENTS_LIMIT: usize = 100;
/// A PDU whose gap is still not filled after this many `/get_missing_events` rounds is given up.
pub const MAX_GAP_ROUNDS: u8 = 4;
/// How long a request may take before its sender counts it as timed out.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// First delay before retrying a failed transaction; doubles per failure up to the cap.
pub const TRANSACTION_RETRY_FLOOR_MS: u64 = 10_000;
pub const TRANSACTION_RETRY_CAP_MS: u64 = 3_600_000;
/// Delay before a failed join is tried again (with the next resident).
pub const JOIN_RETRY_MS: u64 = 30_000;

/// What a request is for (the purpose column of the request counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    Send,
    MakeJoin,
    SendJoin,
    GetMissingEvents,
    EventRequery,
    KeyDirect,
    Extremities,
    AttackerSend,
    Push,
    Backfill,
    StateIds,
    State,
    /// A key query to the notary (`/key/v2/query`) after a direct fetch failed (RQ4).
    KeyNotary,
}

impl Purpose {
    pub const ALL: [Purpose; 13] = [
        Purpose::Send,
        Purpose::MakeJoin,
        Purpose::SendJoin,
        Purpose::GetMissingEvents,
        Purpose::EventRequery,
        Purpose::KeyDirect,
        Purpose::Extremities,
        Purpose::AttackerSend,
        Purpose::Push,
        Purpose::Backfill,
        Purpose::StateIds,
        Purpose::State,
        Purpose::KeyNotary,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Purpose::Send => "send",
            Purpose::MakeJoin => "make_join",
            Purpose::SendJoin => "send_join",
            Purpose::GetMissingEvents => "get_missing_events",
            Purpose::EventRequery => "event_requery",
            Purpose::KeyDirect => "key_direct",
            Purpose::Extremities => "extremities",
            Purpose::AttackerSend => "attacker_send",
            Purpose::Push => "push",
            Purpose::Backfill => "backfill",
            Purpose::StateIds => "state_ids",
            Purpose::State => "state",
            Purpose::KeyNotary => "key_notary",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Done {
    Ok,
    NotFound,
    Status(u16),
    Timeout,
    Refused,
}

impl Done {
    pub const LABELS: [&'static str; 5] = ["ok", "not_found", "status", "timeout", "refused"];

    fn index(self) -> usize {
        match self {
            Done::Ok => 0,
            Done::NotFound => 1,
            Done::Status(_) => 2,
            Done::Timeout => 3,
            Done::Refused => 4,
        }
    }
}

/// Scheduled in the queue.
#[derive(Debug, Clone)]
enum Ev {
    CreateRoom {
        room: RoomIndex,
    },
    /// `user` of `server` joins `room` (`members.rs`: `make_join` unless the server is
    /// resident already).
    Join {
        room: RoomIndex,
        server: ServerId,
        user: u32,
        attempt: u32,
    },
    Message {
        room: RoomIndex,
    },
    Topic {
        room: RoomIndex,
    },
    Arrive {
        request: u64,
    },
    Complete {
        request: u64,
        done: Done,
    },
    RetryTransaction {
        server: ServerId,
        destination: ServerId,
        /// The outbox's retry generation when it was set: a heal or a restart retries at once
        /// and makes this one stale.
        generation: u32,
    },
    KeyTimer {
        server: ServerId,
        slot: u32,
        generation: u32,
    },
    Action {
        index: u32,
    },
    Exchange {
        server: ServerId,
    },
    /// Moderation at scenario rates (`workload.rs`).
    Workload {
        room: RoomIndex,
        chore: workload::Chore,
    },
}

impl Ev {
    fn trace_code(&self) -> (u32, u64) {
        match self {
            Ev::CreateRoom { room } => (1, u64::from(*room)),
            Ev::Join { room, server, .. } => (2, u64::from(*room) << 32 | u64::from(*server)),
            Ev::Message { room } => (3, u64::from(*room)),
            Ev::Topic { room } => (4, u64::from(*room)),
            Ev::Arrive { request } => (5, *request),
            Ev::Complete { request, .. } => (6, *request),
            Ev::RetryTransaction {
                server,
                destination,
                ..
            } => (7, u64::from(*server) << 32 | u64::from(*destination)),
            Ev::KeyTimer { server, slot, .. } => (8, u64::from(*server) << 32 | u64::from(*slot)),
            Ev::Action { index } => (9, u64::from(*index)),
            Ev::Exchange { server } => (10, u64::from(*server)),
            Ev::Workload { room, chore } => (11, u64::from(*room) << 32 | chore.trace_code()),
        }
    }
}

/// A request's body.
#[derive(Debug, Clone)]
enum Body {
    Send(Vec<Arc<Value>>),
    MakeJoin {
        room: RoomIndex,
        user: u32,
    },
    SendJoin {
        room: RoomIndex,
        pdu: Arc<Value>,
    },
    /// fedsim's `/get_missing_events`: walk `prev_events` from `missing` (included), stopping at
    /// `known` (the requester's forward extremities).
    GetMissing {
        room: RoomIndex,
        missing: Vec<EventId>,
        known: Vec<EventId>,
        /// Whether the answer fills the gap of the PDU at the front of the inbound queue (else:
        /// extremity exchange, appended at the back).
        for_front: bool,
        /// The spec's `min_depth`: events below it are not returned (the requester's lowest
        /// timeline event; 0 = no bound).
        min_depth: i64,
    },
    /// `GET /backfill`: up to `limit` events preceding `from` (included).
    Backfill {
        room: RoomIndex,
        from: Vec<EventId>,
        limit: u32,
    },
    /// `GET /state_ids`: the IDs of the state before `event_id` and of its auth chain.
    StateIds {
        room: RoomIndex,
        event_id: EventId,
    },
    /// `GET /state`: the state before `event_id` and its auth chain.
    State {
        room: RoomIndex,
        event_id: EventId,
    },
    EventFetch {
        room: RoomIndex,
        event_id: EventId,
    },
    Key {
        slot: u32,
        epoch: u32,
    },
    Extremities {
        room: RoomIndex,
        ids: Vec<EventId>,
    },
    AttackerSend(Vec<Arc<Value>>),
    Push(Vec<Arc<Value>>),
    /// `/key/v2/query` at the notary for `domain`'s keys, for the asker's cache `slot`.
    NotaryQuery {
        slot: u32,
        domain: ServerId,
    },
}

/// A request's answer.
#[derive(Debug, Clone)]
enum Reply {
    Ack,
    Template(Box<EventDraft>),
    Events(Vec<Arc<Value>>),
    Keys(Arc<str>),
    /// A `send_join` (under `rooms.join = "state"`) or `/state` answer: the state before the
    /// event, and the state events with the auth chain as wire copies in the responder's DAG
    /// order (auth events first).
    State {
        state: Arc<crate::matrix::StateMap>,
        events: Vec<Arc<Value>>,
    },
    /// A `/state_ids` answer: the state before the event and its auth chain's IDs.
    StateIds {
        state: Arc<crate::matrix::StateMap>,
        auth_chain: Vec<EventId>,
    },
    /// The notary's copy of a domain's key object (`fed/notary.rs`).
    NotaryKeys(Arc<ServerKeys>),
}

struct Request {
    from: ServerId,
    /// The sender's [`Homeserver::epoch`] when it sent: a reply to a server that went down
    /// since is lost with the process that waited for it.
    sender_epoch: u32,
    to: ServerId,
    purpose: Purpose,
    body: Body,
    deadline_ms: u64,
    reply: Option<Reply>,
}

/// What a key answer's invalidation refers to: the key tracked before the answer, its clamped
/// validity and the key object the answer carried.
struct InvalidationContext {
    /// The key object of the tracked key (its first key; its ID is read only if a key is
    /// invalidated, which few answers do).
    tracked: Option<Arc<ServerKeys>>,
    tracked_valid_until_ms: i64,
    response: Option<Arc<ServerKeys>>,
}

impl InvalidationContext {
    /// The ID of the key tracked before the answer (the slot tracks its object's first key).
    fn tracked_key_id(&self) -> Option<&str> {
        let (key_id, _) = key_cache::first_key(self.tracked.as_deref()?)?;
        Some(key_id)
    }
}

/// The PDUs of the next transaction from `outbox` (at most 50, marked in flight), unless one is
/// in flight or waiting to retry, or nothing is queued.
fn next_transaction(outbox: &mut Outbox) -> Option<Vec<Arc<Value>>> {
    if outbox.in_flight > 0 || outbox.retry_scheduled || outbox.queue.is_empty() {
        return None;
    }
    let count = outbox.queue.len().min(MAX_PDUS_PER_TRANSACTION);
    outbox.in_flight = count;
    Some(outbox.queue.iter().take(count).cloned().collect())
}

/// A PDU waiting in a server's inbound queue for a room.
#[derive(Debug, Clone)]
struct Inbound {
    json: Arc<Value>,
    path: ArrivalPath,
    from: ServerId,
    key_wait_done: bool,
    gap_rounds: u8,
    /// Stored as an outlier (part of a `send_join` or `/state` answer).
    outlier: bool,
    /// The state before it, given from outside (a join's state, a `/state` answer).
    state: Option<Arc<crate::matrix::StateMap>>,
    /// A `/state` request was made for it already.
    state_fetched: bool,
}

impl Inbound {
    fn new(json: Arc<Value>, path: ArrivalPath, from: ServerId) -> Inbound {
        Inbound {
            json,
            path,
            from,
            key_wait_done: false,
            gap_rounds: 0,
            outlier: false,
            state: None,
            state_fetched: false,
        }
    }
}

/// Why a room's inbound queue is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Keys(u32),
    Gap(u64),
}

/// One room as one server holds it.
pub struct ServerRoom {
    pub state: RoomState,
    pub links: LinkTable,
    /// The join finished (the room's history arrived); until then PDUs wait.
    pub joined: bool,
    inbound: VecDeque<Inbound>,
    blocked: Option<Block>,
    /// The member keys of this server's users in the room (member-key rooms).
    member_keys: BTreeMap<u32, ServerSigningKey>,
    /// Further local users waiting for the server's own join to finish (`members.rs`).
    pending_local_joins: BTreeSet<u32>,
    /// Events that failed to be pulled, by event ID (`pulls.rs`).
    failed_pulls: BTreeMap<EventId, PullFailure>,
    /// The residents of the last current state asked for (see [`FedWorld::residents`]).
    resident_memo: Option<ResidentMemo>,
    /// Whether this server's own members are joined in one current state (by member ID), for
    /// the state-agreement samples (`rooms_disagreeing_now`).
    own_join_memo: Option<OwnJoinMemo>,
}

/// A current state object and, per member ID of the server asked about, whether it is joined
/// there.
type OwnJoinMemo = (Arc<crate::matrix::StateMap>, Vec<(String, bool)>);

/// The residents of one current state as one server sees them, with what each member entry
/// of that state contributed, so that the next state's residents reuse the facts of every
/// entry that still names the same event (a held event never changes, so neither does what it
/// says about its member's domain).
struct ResidentMemo {
    state: Arc<crate::matrix::StateMap>,
    /// When only verified links count (RQ9's knob off under member keys), the link table's
    /// [`LinkTable::status_changes`] the residents were read at (`None`: statuses do not
    /// matter). The residents are reused only for the same state and the same count.
    status_changes: Option<u64>,
    /// The resident servers (sorted).
    residents: Vec<ServerId>,
    /// One per `m.room.member` entry of `state`, in map order.
    facts: Vec<MemberFact>,
}

/// What one `m.room.member` state entry says about residency on the server holding it.
#[derive(Debug, Clone, Copy)]
struct MemberFact {
    /// The server of the domain a joined member is on (`None`: not held, not joined, or no
    /// known domain).
    resident: Option<ServerId>,
    /// The domain is the holding server's own.
    own_domain: bool,
    /// The server held the event (a fact about an event not held yet is not reused: the event
    /// may arrive later).
    held: bool,
}

impl ServerRoom {
    /// Events that failed to be pulled here, with their attempts and next allowed attempt
    /// (`pulls.rs`).
    pub fn failed_pulls(&self) -> &BTreeMap<EventId, PullFailure> {
        &self.failed_pulls
    }
}

/// Outgoing PDUs for one destination.
#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<Arc<Value>>,
    in_flight: usize,
    failures: u32,
    retry_scheduled: bool,
    /// Bumped whenever a scheduled retry is superseded (heal, restart).
    retry_generation: u32,
}

/// One homeserver.
pub struct Homeserver {
    pub name: String,
    pub publisher: KeyPublisher,
    own_keys: Arc<ServerKeys>,
    own_body: Arc<str>,
    pub cache: KeyCache,
    slot_of: keys::SlotOf,
    /// Localparts of its users.
    pub users: Vec<String>,
    pub rooms: vec_map::VecMap<RoomIndex, ServerRoom>,
    /// By destination. Lookup-only: listed through [`Homeserver::destinations`], sorted.
    outbox: HashMap<ServerId, Outbox, crate::matrix::dag::IdHasher>,
    key_waiters: BTreeMap<u32, BTreeSet<RoomIndex>>,
    /// Member events re-signed after a rotation, served by `/event/{id}`.
    resigned: BTreeMap<EventId, Arc<Value>>,
    /// Historic key objects a notary handed out (RQ4), by domain name.
    pub archive: BTreeMap<String, Arc<ServerKeys>>,
    /// Cache slots already asked of the notary (once each).
    notary_asked: BTreeSet<u32>,
    /// Which domains its rooms' unsettled links claim (kept by the rooms' link tables): a key
    /// fetch of any other domain changes no link of this server.
    unsettled: UnsettledTally,
    pub stats: ServerStats,
    /// Bumped each time the server goes down: replies to requests sent before are lost.
    epoch: u32,
    /// What fell due while the server was down (its timers, retries, joins, the ends of its
    /// requests), replayed in order when it comes back (`BringOnline`); a server that never
    /// comes back never acts again.
    deferred: Vec<Ev>,
}

impl Homeserver {
    /// The destinations it has an outbox for, ascending.
    fn destinations(&self) -> Vec<ServerId> {
        let mut destinations: Vec<ServerId> = self.outbox.keys().copied().collect();
        destinations.sort_unstable();
        destinations
    }

    /// The keys this server holds, as the room layer reads them at `now_abs_ms`. (Where a
    /// room of the server is borrowed mutably at the same time, the fields are borrowed one by
    /// one instead.)
    fn cache_keys(&self, own_id: ServerId, now_abs_ms: i64) -> CacheKeys<'_> {
        CacheKeys {
            own_id,
            own_name: &self.name,
            own_keys: &self.own_keys,
            cache: &self.cache,
            slot_of: &self.slot_of,
            now_abs_ms,
            archive: &self.archive,
        }
    }
}

/// Per-server counters (servers.csv).
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerStats {
    pub requests_sent: u64,
    pub requests_received: u64,
    pub bytes_sent: u64,
    pub pdus_processed: u64,
    pub accepted: u64,
    pub soft_failed: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub event_requeries_received: u64,
}

/// The plan of one room.
pub struct RoomPlan {
    pub room_id: Option<String>,
    pub creator: (ServerId, u32),
    /// The planned members: (server, user index), the creator first. A server's users are
    /// listed together, its first user (the one that joins with `make_join`/`send_join`) first;
    /// one user per server unless `rooms.members_per_server` asks for more.
    pub members: Vec<(ServerId, u32)>,
    /// The ID each planned member has in the room (parallel to `members`; deriving a member
    /// key is a scalar multiplication, so it is done once).
    pub member_ids: Vec<String>,
    /// (server) that join late (by a `join-late` action).
    pub late: BTreeSet<ServerId>,
    message_rng: SimRng,
    /// When a server's further users join (stream `member-joins`/room; drawn only for them).
    join_rng: SimRng,
    topic_rng: SimRng,
    /// Whether a message replies (`rooms.reply_probability`; stream `room-replies`/room).
    reply_rng: SimRng,
}

impl RoomPlan {
    /// The planned member servers, each once, in the order of `members`.
    pub fn servers(&self) -> Vec<ServerId> {
        let mut servers: Vec<ServerId> = Vec::new();
        for &(server, _) in &self.members {
            if servers.last() != Some(&server) && !servers.contains(&server) {
                servers.push(server);
            }
        }
        servers
    }

    /// `server`'s planned users in the room, its first user first.
    pub fn users_of(&self, server: ServerId) -> impl Iterator<Item = u32> + '_ {
        self.members
            .iter()
            .filter(move |(member, _)| *member == server)
            .map(|(_, user)| *user)
    }

    /// `server`'s first planned user (the one that joins with `make_join`).
    pub fn first_user(&self, server: ServerId) -> Option<u32> {
        self.users_of(server).next()
    }

    /// Whether `server` has more than one planned user in this room.
    pub fn has_several_users(&self, server: ServerId) -> bool {
        self.users_of(server).nth(1).is_some()
    }

    /// The planned member ID of `user` of `server`.
    pub fn member_id_of(&self, server: ServerId, user: u32) -> Option<&str> {
        self.members
            .iter()
            .position(|member| *member == (server, user))
            .map(|position| self.member_ids[position].as_str())
    }
}

/// Counters of the whole world (sampled into timeseries.csv).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub messages_sent: u64,
    pub state_events_sent: u64,
    pub sends_skipped: u64,
    pub pdus_processed: u64,
    pub accepted: u64,
    pub accepted_labelled: u64,
    pub redacted: u64,
    pub soft_failed_auth: u64,
    pub soft_failed_link: u64,
    pub soft_failed_other: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub already_held: u64,
    pub missing_events: u64,
    pub gaps_given_up: u64,
    /// PDUs not processed because an event they miss is in pull backoff (`pulls.rs`; in
    /// summary.json only when non-zero, like `pull_failures`).
    pub gaps_backed_off: u64,
    /// Failed pull attempts recorded (`pulls.rs`).
    pub pull_failures: u64,
    pub pdus_given_up_by_sender: u64,
    pub message_deliveries: u64,
    pub not_in_room: u64,
    pub key_waits: u64,
    pub link_invalidations: u64,
    pub links_reverified: u64,
    pub revealed: u64,
    pub joins_completed: u64,
    /// Further local users joined with a plain join event (`members.rs`; in summary.json only
    /// when `rooms.members_per_server` allows more than one).
    pub local_joins: u64,
    pub join_history_events: u64,
    /// Events received in `/backfill` answers (`rooms.join = "state"`).
    pub backfill_events: u64,
    /// Events stored as outliers (`send_join` and `/state` answers).
    pub outliers_stored: u64,
    /// `/state` requests made for events whose prev events could not be had.
    pub state_fetches: u64,
    pub attacker_messages_sent: u64,
    /// Receipts of attacker events on observers (servers not compromised), by outcome: shown,
    /// labelled, hidden or dropped after t0, and shown before it.
    pub attacker_accepted_after_t0: u64,
    pub attacker_labelled_after_t0: u64,
    pub attacker_hidden_after_t0: u64,
    pub attacker_dropped_after_t0: u64,
    pub attacker_accepted_before_t0: u64,
    pub key_invalidations: u64,
    pub key_revalidations: u64,
    /// [purpose][outcome]
    pub requests: [[u64; 5]; 13],
    /// Request plus answer bytes, by purpose.
    pub bytes: [u64; 13],
    /// ACLs, the join gate and the adversaries (`acl.rs`, `adversary.rs`).
    pub adv: AdvCounters,
}

impl Counters {
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }

    pub fn bytes_total(&self) -> u64 {
        self.bytes.iter().sum()
    }
}

/// What the adversary holds.
#[derive(Default)]
pub struct Attacker {
    /// Server -> (its signing key at the compromise, the time of the compromise (sim ms)).
    pub servers: BTreeMap<ServerId, (ServerSigningKey, u64)>,
    /// Compromised member keys, by (room, member ID).
    pub member_keys: BTreeMap<(RoomIndex, String), ServerSigningKey>,
    /// Event IDs the attacker made.
    pub events: BTreeSet<EventId>,
    /// The first rotation of a compromised server after its compromise (sim ms): t0.
    pub t0_ms: Option<u64>,
    /// (observer, compromised domain) -> when the observer's key cache first invalidated the
    /// domain's key at or after t0 (sim ms).
    pub key_invalidated_at: BTreeMap<(ServerId, ServerId), u64>,
}

/// A message or state event a local user sent (for coverage and divergence).
#[derive(Debug, Clone)]
pub struct Sent {
    pub room: RoomIndex,
    pub event_id: EventId,
    pub at_ms: u64,
    pub message: bool,
}

/// The room world.
pub struct FedWorld {
    pub seed: u64,
    pub scenario: Scenario,
    pub config: Rooms,
    pub room_policy: RoomPolicy,
    pub key_policy: KeyPolicy,
    pub version: RoomVersion,
    queue: EventQueue<Ev>,
    pub net: Network,
    pub servers: Vec<Homeserver>,
    pub plans: Vec<RoomPlan>,
    room_of_id: HashMap<String, RoomIndex, crate::matrix::dag::IdHasher>,
    pub memo: CheckMemo,
    /// Evaluations and current states shared across servers (`rooms.share_facts`).
    pub shared_facts: Option<crate::room::shared::SharedEventFacts>,
    pub verify_memo: VerifyMemo,
    /// Requests in flight by ID (lookup only; the ID hasher is deterministic and cheap).
    requests: HashMap<u64, Request, crate::matrix::dag::IdHasher>,
    next_request: u64,
    pub counters: Counters,
    pub samples: Vec<(u64, Counters)>,
    /// Per sample: the number of rooms whose joined servers do not all have the same current
    /// state.
    pub rooms_disagreeing: Vec<u32>,
    /// When the last `heal` action ran (sim ms).
    pub last_heal_ms: Option<u64>,
    /// RQ13: the first time at or after the last heal at which every room's resident servers
    /// agreed on the current state, if seen within [`AGREEMENT_WATCH_MS`] (or one sample window,
    /// if longer) of the heal, checked after every event there; later agreement is read off
    /// the samples.
    pub agreed_after_heal_ms: Option<u64>,
    /// Until when (sim ms) agreement is checked after every event, while none has been seen.
    agreement_watch_until_ms: Option<u64>,
    pub attacker: Attacker,
    /// The adversaries of `adversary.rs` (fake `domain` claims).
    pub adv: Adversaries,
    /// The key-layer adversaries of `keyadv.rs`.
    pub key_adv: keyadv::KeyAdversaries,
    /// The moderation workload's random streams (`workload.rs`).
    workload: workload::Workload,
    pub sent: Vec<Sent>,
    pub trace: Trace,
    pub events_processed: u64,
    /// Ordered pairs of servers that share a planned room: each keeps a key-cache slot for the
    /// other and re-checks its keys (the world's steady-state load grows with this).
    pub key_cache_slots: u64,
    end_ms: u64,
    window_ms: u64,
    next_sample_ms: u64,
    key_outputs: Vec<KeyCacheOutput>,
    pub sign_nanos: u64,
    pub events_signed: u64,
    /// Server co-signatures on member events (MSC4430 links): at creation and on re-signing
    /// after a rotation. With `events_signed` and the publishers' key responses, every ed25519
    /// signature the run makes (the crypto floor in run-info.json).
    pub cosignatures_made: u64,
    join_attempts: BTreeMap<(RoomIndex, ServerId), u32>,
    /// The user whose `make_join`/`send_join` is in flight, per (room, server).
    join_users: BTreeMap<(RoomIndex, ServerId), u32>,
    /// The wire copy of every event made in the world, by event ID (lookup only): answers
    /// hand out these shared copies instead of re-serialising held events.
    wire: HashMap<EventId, Arc<Value>>,
    /// The wire size of each copy in `wire`, by the copy's address (the copies live as long as
    /// the world, so an address names one copy): counting bytes re-serialised every PDU of
    /// every transaction otherwise.
    wire_sizes: HashMap<usize, u64>,
    /// What the world reads from each copy in `wire` on every receipt, by the copy's address
    /// (as `wire_sizes`).
    wire_facts: HashMap<usize, WireFacts, crate::matrix::dag::IdHasher>,
    /// (server, member event) pairs already re-queried because the copy held was co-signed by
    /// a key that is no longer current (`bitrot.rs`): each is asked for once.
    stale_requeried: BTreeSet<(ServerId, EventId)>,
    /// RQ4: newcomers' figures taken so far, and which (room, newcomer) were taken.
    pub bitrot_rows: Vec<bitrot::NewcomerRow>,
    bitrot_taken: BTreeSet<(RoomIndex, ServerId)>,
    /// RQ7: requests arriving at the rotating origins per second.
    pub storm: storm::StormLog,
    /// Warm-started key-cache slots' first re-check timers, pushed when due.
    initial_timers: keys::InitialTimers,
}

/// The ID a user has in a room: the member key (member-key rooms) or `@localpart:server`.
fn member_id(
    version: &RoomVersion,
    server_name: &str,
    users: &[String],
    room: &ServerRoom,
    user: u32,
) -> String {
    match room.member_keys.get(&user) {
        Some(key) if version.member_keys => {
            crate::matrix::member_keys::member_key_user_id(&key.verifying_key())
        }
        _ => format!("@{}:{}", users[user as usize], server_name),
    }
}

/// Content of a user's own membership event (with `localpart` and `domain` under member keys).
fn membership_content(
    version: &RoomVersion,
    server: &Homeserver,
    user: u32,
    membership: &str,
) -> Value {
    if version.member_keys {
        json!({"membership": membership, "localpart": server.users[user as usize], "domain": server.name})
    } else {
        json!({ "membership": membership })
    }
}

/// The server index a domain name names (`hs<i>.example`).
fn server_of_domain(domain: &str, servers: usize) -> Option<ServerId> {
    ServerRef::Name(domain.to_owned()).index(servers as u32)
}

/// How long after a heal (sim ms) RQ13's agreement is checked after every event (each check
/// walks every room's resident servers, so a room that never converges costs this long).
const AGREEMENT_WATCH_MS: u64 = 10 * 60 * 1000;

/// What [`FedWorld::key_needed`] asks of a PDU's JSON, whatever the server: the domain whose
/// keys its checks need (v12: the sender's server, for the event's `origin_server_ts`; member
/// keys: the domain a member's own member event claims), and the key IDs it is signed with for
/// that domain. `None`: no key is needed (not an own member event under member keys, or a field
/// missing). A pure function of the JSON, so a wire copy's is read once.
#[derive(Debug, Clone, PartialEq)]
struct KeyQuestion {
    domain: String,
    /// The names under `signatures[domain]` (empty if that is not an object).
    key_ids: Vec<String>,
    /// Read only without member keys.
    origin_server_ts: i64,
}

/// What the world reads from a PDU's JSON on every receipt, whatever the server: a pure function
/// of the JSON, so a wire copy's is read once (`FedWorld::remember`) and found again by the
/// copy's address; a copy made elsewhere is read on the spot ([`WireFacts::of`]).
#[derive(Debug, Clone, PartialEq)]
struct WireFacts {
    key_question: Option<KeyQuestion>,
    /// `type` is `m.room.message` (a message delivery, in `FedWorld::account`).
    message: bool,
    /// The sender of an `m.room.member` event whose `state_key` is its `sender`, `None` for
    /// any other event (`bitrot.rs`).
    own_member_sender: Option<Arc<str>>,
}

impl WireFacts {
    fn read(member_keys: bool, json: &Value) -> WireFacts {
        WireFacts {
            key_question: key_question(member_keys, json),
            message: is_message(json),
            own_member_sender: own_member_sender(json).map(Arc::from),
        }
    }

    /// `fact` of the copy `json`: from the wire copy's facts if `json` is one, else read now.
    fn of<T>(
        facts: &HashMap<usize, WireFacts, crate::matrix::dag::IdHasher>,
        json: &Arc<Value>,
        fact: impl FnOnce(&WireFacts) -> T,
        read: impl FnOnce(&Value) -> T,
    ) -> T {
        match facts.get(&(Arc::as_ptr(json) as usize)) {
            Some(known) => fact(known),
            None => read(json),
        }
    }
}

/// Whether the PDU's `type` is `m.room.message`.
fn is_message(json: &Value) -> bool {
    json.get("type").and_then(Value::as_str) == Some("m.room.message")
}

/// The sender of the PDU if it is an `m.room.member` event whose `state_key` is its `sender`.
fn own_member_sender(json: &Value) -> Option<&str> {
    let sender = json.get("sender").and_then(Value::as_str)?;
    let own = json.get("type").and_then(Value::as_str) == Some("m.room.member")
        && json.get("state_key").and_then(Value::as_str) == Some(sender);
    own.then_some(sender)
}

fn key_question(member_keys: bool, json: &Value) -> Option<KeyQuestion> {
    let sender = json.get("sender").and_then(Value::as_str)?;
    let signatures = json.get("signatures").and_then(Value::as_object)?;
    let (domain, origin_server_ts) = if member_keys {
        let is_own_member_event = json.get("type").and_then(Value::as_str) == Some("m.room.member")
            && json.get("state_key").and_then(Value::as_str) == Some(sender);
        if !is_own_member_event {
            return None;
        }
        let domain = json
            .get("content")
            .and_then(|content| content.get("domain"))
            .and_then(Value::as_str)?;
        (domain, 0)
    } else {
        let domain = sender.split_once(':').map(|(_, domain)| domain)?;
        let ts = json.get("origin_server_ts").and_then(Value::as_i64)?;
        (domain, ts)
    };
    let key_ids = signatures
        .get(domain)
        .and_then(Value::as_object)
        .map(|by_key| by_key.keys().cloned().collect())
        .unwrap_or_default();
    Some(KeyQuestion {
        domain: domain.to_owned(),
        key_ids,
        origin_server_ts,
    })
}

/// Canonical-ish size of a JSON value on the wire (serde_json's compact form).
fn json_bytes(value: &Value) -> u64 {
    serde_json::to_vec(value).map_or(0, |bytes| bytes.len() as u64)
}

impl FedWorld {
    pub fn now_ms(&self) -> u64 {
        self.queue.now_ms()
    }

    pub fn end_ms(&self) -> u64 {
        self.end_ms
    }

    pub fn queue_len_max(&self) -> usize {
        self.queue.len_max()
    }

    /// Processes events until the end of the run.
    pub fn run(&mut self, mut progress: impl FnMut(u64)) {
        let _crypto = crate::matrix::crypto_mode::enter(self.scenario.crypto);
        loop {
            self.initial_timers.feed(&mut self.queue, &self.servers);
            let Some(at_ms) = self.queue.peek_time_ms() else {
                break;
            };
            if at_ms > self.end_ms {
                break;
            }
            let (at_ms, _seq, event) = self.queue.pop().expect("peeked");
            self.prefetch_next();
            self.take_samples_until(at_ms);
            self.events_processed += 1;
            let (kind, entity) = event.trace_code();
            self.trace.record(at_ms, kind, entity);
            self.handle(event);
            self.watch_agreement(at_ms);
            if self.events_processed.is_multiple_of(4_096) {
                progress(at_ms);
            }
        }
        self.take_samples_until(self.end_ms);
        progress(self.end_ms);
    }

    /// A prefetch hint (see [`crate::engine::prefetch`]: it changes nothing) for the event the
    /// queue returns next, issued before the current one is handled so the load overlaps with
    /// it: the key-cache slot that a key timer and a key answer read first. Each server's slot
    /// for a domain is visited about once a simulated day, so that read is a cache miss
    /// (~4% of the steady state's samples, in `on_timer` and `on_response`; docs/notes/perf.md,
    /// session 23, for what the hint gains).
    fn prefetch_next(&self) {
        let (server, slot) = match self.queue.peek_near() {
            Some(Ev::KeyTimer { server, slot, .. }) => (*server, *slot),
            Some(Ev::Complete { request, .. }) => match self.requests.get(request) {
                Some(Request {
                    from,
                    body: Body::Key { slot, .. },
                    ..
                }) => (*from, *slot),
                _ => return,
            },
            _ => return,
        };
        if let Some(server) = self.servers.get(server as usize) {
            server.cache.prefetch_slot(slot);
        }
    }

    /// RQ13: right after a heal, whether the rooms agree now (after each event, for
    /// [`AGREEMENT_WATCH_MS`] or a sample window): the samples alone put the convergence time
    /// on their grid, and the sample at the heal's own instant is taken before the heal.
    fn watch_agreement(&mut self, at_ms: u64) {
        let Some(until_ms) = self.agreement_watch_until_ms else {
            return;
        };
        if at_ms > until_ms {
            self.agreement_watch_until_ms = None;
        } else if self.rooms_disagreeing_now() == 0 {
            self.agreed_after_heal_ms = Some(at_ms);
            self.agreement_watch_until_ms = None;
        }
    }

    fn take_samples_until(&mut self, at_ms: u64) {
        while self.next_sample_ms <= at_ms && self.next_sample_ms <= self.end_ms {
            self.samples
                .push((self.next_sample_ms, self.counters.clone()));
            let disagreeing = self.rooms_disagreeing_now();
            self.rooms_disagreeing.push(disagreeing);
            self.snapshot_newcomers(self.next_sample_ms, false);
            self.next_sample_ms += self.window_ms;
        }
    }

    /// Rooms whose resident servers (joined, and whose own member is joined in their own current
    /// state: a server that left or was banned is not expected to follow) do not all have the
    /// same current state now.
    pub fn rooms_disagreeing_now(&mut self) -> u32 {
        let mut disagreeing = 0;
        for room in 0..self.plans.len() as RoomIndex {
            let members: Vec<(ServerId, String)> = self.plans[room as usize]
                .members
                .iter()
                .map(|&(server, user)| (server, self.joiner_member_id(room, server, user)))
                .collect();
            let mut first: Option<Arc<crate::matrix::StateMap>> = None;
            let mut agree = true;
            for (server, member) in members {
                let Some(state) = self.servers[server as usize]
                    .rooms
                    .get_mut(&room)
                    .filter(|state| state.joined)
                else {
                    continue;
                };
                let Ok(current) = state.state.current_state() else {
                    agree = false;
                    break;
                };
                let remembered = state
                    .own_join_memo
                    .as_ref()
                    .filter(|(memo_state, _)| Arc::ptr_eq(memo_state, &current))
                    .and_then(|(_, joined)| joined.iter().find(|(id, _)| *id == member))
                    .map(|(_, joined)| *joined);
                let own_joined = match remembered {
                    Some(joined) => joined,
                    None => {
                        let key = ("m.room.member".to_owned(), member);
                        let entry = current.get(&key);
                        let pdu = entry.and_then(|id| state.state.event(id));
                        let joined = pdu.is_some_and(|pdu| pdu.membership() == Some("join"));
                        // Remembered only when this state object alone decides it (an entry
                        // naming an event not held yet may be decided later).
                        if entry.is_none() || pdu.is_some() {
                            let memo = state
                                .own_join_memo
                                .get_or_insert_with(|| (Arc::clone(&current), Vec::new()));
                            if !Arc::ptr_eq(&memo.0, &current) {
                                *memo = (Arc::clone(&current), Vec::new());
                            }
                            memo.1.push((key.1, joined));
                        }
                        joined
                    }
                };
                if !own_joined {
                    continue;
                }
                match &first {
                    None => first = Some(current),
                    Some(first) if Arc::ptr_eq(first, &current) || **first == *current => {}
                    Some(_) => {
                        agree = false;
                        break;
                    }
                }
            }
            if !agree {
                disagreeing += 1;
            }
        }
        disagreeing
    }

    fn handle(&mut self, event: Ev) {
        let now_ms = self.queue.now_ms();
        // A server that is down does nothing: what falls due for it waits until it comes back
        // (the ends of its requests: `complete`).
        let owner = match &event {
            Ev::Join { server, .. }
            | Ev::RetryTransaction { server, .. }
            | Ev::KeyTimer { server, .. } => Some(*server),
            _ => None,
        };
        if let Some(owner) = owner
            && !self.is_up(owner)
        {
            self.servers[owner as usize].deferred.push(event);
            return;
        }
        match event {
            Ev::CreateRoom { room } => self.create_room(room),
            Ev::Join {
                room,
                server,
                user,
                attempt,
            } => self.join_member(room, server, user, attempt),
            Ev::Message { room } => {
                let rate = self.config.messages_per_room_per_hour;
                let gap_ms = self.plans[room as usize]
                    .message_rng
                    .exponential(3_600_000.0 / rate) as u64;
                self.queue
                    .push(now_ms + gap_ms.max(1), Ev::Message { room });
                let (server, user) = if self.config.members_per_server.max > 1 {
                    // Several users per server (`members.rs`): the sender is one of the users
                    // joined now, each as its own server sees it.
                    let joined = self.joined_members(room);
                    if joined.is_empty() {
                        self.counters.sends_skipped += 1;
                        return;
                    }
                    let rng = &mut self.plans[room as usize].message_rng;
                    joined[rng.below(joined.len() as u64) as usize]
                } else {
                    // One user per server: any planned member (one whose server is not joined
                    // sends nothing).
                    let plan = &mut self.plans[room as usize];
                    let pick = plan.message_rng.below(plan.members.len() as u64) as usize;
                    plan.members[pick]
                };
                let body = format!("message at {now_ms}");
                let mut content = json!({"msgtype": "m.text", "body": body});
                if let Some(target) = self.reply_target(server, room) {
                    content["m.relates_to"] = json!({"m.in_reply_to": {"event_id": target}});
                }
                self.send_local(server, room, user, "m.room.message", None, content);
            }
            Ev::Topic { room } => {
                let plan = &mut self.plans[room as usize];
                let rate = self.config.topic_changes_per_room_per_day;
                let gap_ms = plan.topic_rng.exponential(86_400_000.0 / rate) as u64;
                let (server, user) = plan.creator;
                self.queue.push(now_ms + gap_ms.max(1), Ev::Topic { room });
                self.send_local(
                    server,
                    room,
                    user,
                    "m.room.topic",
                    Some(String::new()),
                    json!({"topic": format!("topic at {now_ms}")}),
                );
            }
            Ev::Arrive { request } => self.arrive(request),
            Ev::Complete { request, done } => self.complete(request, done),
            Ev::RetryTransaction {
                server,
                destination,
                generation,
            } => {
                let Some(outbox) = self.servers[server as usize].outbox.get_mut(&destination)
                else {
                    return;
                };
                if outbox.retry_generation != generation {
                    return;
                }
                outbox.retry_scheduled = false;
                self.pump(server, destination);
            }
            Ev::KeyTimer {
                server,
                slot,
                generation,
            } => {
                let mut out = std::mem::take(&mut self.key_outputs);
                self.servers[server as usize]
                    .cache
                    .on_timer(now_ms, slot, generation, &mut out);
                self.apply_key_outputs(server, &mut out, None);
                self.key_outputs = out;
            }
            Ev::Action { index } => self.act(index as usize),
            Ev::Exchange { server } => self.exchange_extremities(server),
            Ev::Workload { room, chore } => self.workload(room, chore),
        }
    }

    fn is_up(&self, server: ServerId) -> bool {
        self.net.server_status(server) == ServerStatus::Up
    }

    // ----- requests -----------------------------------------------------------------------

    /// Sends a request: routed now, it arrives (and is answered) or ends with a failure.
    /// Sends a request whose answer `server`'s inbound queue of `room` waits for, and parks the
    /// queue on it (the gap requests: `/get_missing_events`, `/state_ids`, `/state`).
    fn dispatch_parked(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        to: ServerId,
        purpose: Purpose,
        body: Body,
    ) {
        let id = self.dispatch(server, to, purpose, body);
        self.servers[server as usize]
            .rooms
            .get_mut(&room)
            .expect("a parked room is held")
            .blocked = Some(Block::Gap(id));
    }

    fn dispatch(&mut self, from: ServerId, to: ServerId, purpose: Purpose, body: Body) -> u64 {
        let now_ms = self.queue.now_ms();
        let id = self.next_request;
        self.next_request += 1;
        let deadline_ms = now_ms + REQUEST_TIMEOUT_MS;
        let bytes = body_bytes(&body, &self.wire_sizes);
        self.counters.bytes[purpose as usize] += bytes;
        let sender = &mut self.servers[from as usize].stats;
        sender.requests_sent += 1;
        sender.bytes_sent += bytes;
        let within = |at_ms: u64| at_ms < deadline_ms;
        let event = match self.net.route_request(from, to) {
            Route::Deliver { latency_ms, .. } if within(now_ms + latency_ms) => {
                (now_ms + latency_ms, Ev::Arrive { request: id })
            }
            Route::Answer {
                outcome_status,
                round_trip_ms,
            } if within(now_ms + round_trip_ms) => {
                let done = match outcome_status {
                    None => Done::NotFound,
                    Some(status) => Done::Status(status),
                };
                (now_ms + round_trip_ms, Ev::Complete { request: id, done })
            }
            Route::Refuse { round_trip_ms } if within(now_ms + round_trip_ms) => (
                now_ms + round_trip_ms,
                Ev::Complete {
                    request: id,
                    done: Done::Refused,
                },
            ),
            _ => (
                deadline_ms,
                Ev::Complete {
                    request: id,
                    done: Done::Timeout,
                },
            ),
        };
        self.queue.push(event.0, event.1);
        self.requests.insert(
            id,
            Request {
                from,
                sender_epoch: self.servers[from as usize].epoch,
                to,
                purpose,
                body,
                deadline_ms,
                reply: None,
            },
        );
        id
    }

    fn arrive(&mut self, id: u64) {
        let now_ms = self.queue.now_ms();
        let Some(request) = self.requests.get(&id) else {
            return;
        };
        let (from, to, deadline_ms, purpose) = (
            request.from,
            request.to,
            request.deadline_ms,
            request.purpose,
        );
        if !self.is_up(to) {
            self.queue.push(
                deadline_ms.max(now_ms),
                Ev::Complete {
                    request: id,
                    done: Done::Timeout,
                },
            );
            return;
        }
        self.servers[to as usize].stats.requests_received += 1;
        self.storm.note(to, purpose, now_ms);
        let body = request.body.clone();
        let noted = self.note_arrival(from, to, &body);
        let room_asked = adversary::body_room(&body);
        let answer = self.answer(to, from, body);
        let done = match &answer {
            Ok(_) => Done::Ok,
            Err(status) if *status == 404 => Done::NotFound,
            Err(status) => Done::Status(*status),
        };
        if let Ok(reply) = answer {
            let bytes = reply_bytes(&reply, &self.wire_sizes);
            if let Some(to_victim) = noted {
                self.note_answer(to_victim, from, room_asked, bytes);
            }
            self.counters.bytes[purpose as usize] += bytes;
            self.servers[to as usize].stats.bytes_sent += bytes;
            if let Some(request) = self.requests.get_mut(&id) {
                request.reply = Some(reply);
            }
        }
        match self.net.route_response(to, from) {
            Some(latency_ms) if now_ms + latency_ms < deadline_ms => {
                self.queue
                    .push(now_ms + latency_ms, Ev::Complete { request: id, done });
            }
            _ => self.queue.push(
                deadline_ms.max(now_ms),
                Ev::Complete {
                    request: id,
                    done: Done::Timeout,
                },
            ),
        }
    }

    /// The server `to` answers a request from `from`: a reply, or an HTTP error status.
    fn answer(&mut self, to: ServerId, from: ServerId, body: Body) -> Result<Reply, u16> {
        let now_ms = self.queue.now_ms();
        if let Some(status) = self.request_refusal(to, from, &body) {
            return Err(status);
        }
        match body {
            Body::Send(pdus) | Body::AttackerSend(pdus) => {
                self.receive_pdus(to, from, pdus, ArrivalPath::Send);
                Ok(Reply::Ack)
            }
            Body::Push(pdus) => {
                // P6: a rotation notice carrying re-signed member events; fetch the keys now.
                if let Some(slot) = self.servers[to as usize].slot_of.get_id(from) {
                    let mut out = std::mem::take(&mut self.key_outputs);
                    self.servers[to as usize].cache.fetch_now(slot, &mut out);
                    self.apply_key_outputs(to, &mut out, None);
                    self.key_outputs = out;
                }
                self.receive_pdus(to, from, pdus, ArrivalPath::EventFetch);
                Ok(Reply::Ack)
            }
            Body::MakeJoin { room, user } => {
                let version = self.version;
                let joiner = &self.servers[from as usize];
                let content = membership_content(&version, joiner, user, "join");
                let joiner_id = self.joiner_member_id(room, from, user);
                let server = &mut self.servers[to as usize];
                let Some(state) = server.rooms.get_mut(&room).filter(|room| room.joined) else {
                    return Err(404);
                };
                let draft = state
                    .state
                    .draft_event(
                        &joiner_id,
                        "m.room.member",
                        Some(&joiner_id),
                        content,
                        absolute_ms(now_ms),
                    )
                    .map_err(|_| 500u16)?;
                Ok(Reply::Template(Box::new(draft)))
            }
            Body::SendJoin { room, pdu } => {
                let joined = self.servers[to as usize]
                    .rooms
                    .get(&room)
                    .is_some_and(|room| room.joined);
                if !joined {
                    return Err(404);
                }
                // A joiner whose key the resident does not hold (P0 fetches on demand): fetch it
                // and answer "try again" (the joiner retries in JOIN_RETRY_MS) instead of
                // dropping the join at check 2 for ever.
                if let Some(slot) = self.key_needed(to, &pdu) {
                    let mut out = std::mem::take(&mut self.key_outputs);
                    self.servers[to as usize].cache.fetch_now(slot, &mut out);
                    self.apply_key_outputs(to, &mut out, None);
                    self.key_outputs = out;
                    return Err(503);
                }
                if self.join_gate_refuses(to, &pdu) {
                    return Err(acl::FORBIDDEN);
                }
                let receipt = self.process_now(to, room, &pdu, ArrivalPath::Send, from);
                if !matches!(receipt.verdict, Verdict::Accepted { .. }) {
                    return Err(403);
                }
                self.fan_out(to, room, &pdu, &[from]);
                if self.config.join == crate::scenario::JoinMode::State {
                    let event_id = receipt.event_id.clone().unwrap_or_default();
                    return self.state_answer(to, room, &event_id).ok_or(500);
                }
                let history: Vec<Arc<Value>> = self.servers[to as usize].rooms[&room]
                    .state
                    .held_events()
                    .map(|(pdu, _)| wire_copy(&self.wire, pdu))
                    .collect();
                Ok(Reply::Events(history))
            }
            Body::GetMissing {
                room,
                missing,
                known,
                min_depth,
                ..
            } => {
                let Some(state) = self.servers[to as usize].rooms.get(&room) else {
                    return Err(404);
                };
                Ok(Reply::Events(walk_missing(
                    &state.state,
                    &missing,
                    &known,
                    min_depth,
                    &self.wire,
                )))
            }
            Body::Backfill { room, from, limit } => {
                let Some(state) = self.servers[to as usize].rooms.get(&room) else {
                    return Err(404);
                };
                Ok(Reply::Events(join::backfill_answer(
                    &state.state,
                    &from,
                    limit,
                    &self.wire,
                )))
            }
            Body::State { room, event_id } => self.state_answer(to, room, &event_id).ok_or(404),
            Body::StateIds { room, event_id } => {
                self.state_ids_answer(to, room, &event_id).ok_or(404)
            }
            Body::EventFetch { room, event_id } => {
                let server = &mut self.servers[to as usize];
                server.stats.event_requeries_received += 1;
                if let Some(resigned) = server.resigned.get(&event_id) {
                    return Ok(Reply::Events(vec![Arc::clone(resigned)]));
                }
                let held = server
                    .rooms
                    .get(&room)
                    .and_then(|room| room.state.event(&event_id))
                    .map(|pdu| wire_copy(&self.wire, pdu));
                held.map(|json| Reply::Events(vec![json])).ok_or(404)
            }
            Body::Key { .. } => Ok(Reply::Keys(self.key_response(to, from))),
            Body::NotaryQuery { domain, .. } => self.notary_answer(to, domain),
            Body::Extremities { room, ids } => {
                let Some(state) = self.servers[to as usize].rooms.get(&room) else {
                    return Err(404);
                };
                if !state.joined {
                    return Ok(Reply::Ack);
                }
                let unknown: Vec<EventId> = ids
                    .into_iter()
                    .filter(|id| !state.state.holds(id))
                    .collect();
                if !unknown.is_empty() {
                    let known = state.state.forward_extremities();
                    let min_depth = self.min_depth(to, room);
                    self.dispatch(
                        to,
                        from,
                        Purpose::GetMissingEvents,
                        Body::GetMissing {
                            room,
                            missing: unknown,
                            known,
                            for_front: false,
                            min_depth,
                        },
                    );
                }
                Ok(Reply::Ack)
            }
        }
    }

    fn complete(&mut self, id: u64, done: Done) {
        let Some(request) = self.requests.remove(&id) else {
            return;
        };
        if !self.is_up(request.from) {
            // Handled when the sender comes back, as lost (below).
            let from = request.from;
            self.requests.insert(id, request);
            self.servers[from as usize]
                .deferred
                .push(Ev::Complete { request: id, done });
            return;
        }
        // The sender went down since it sent: the answer reached nobody. A lost transaction
        // changes nothing more (`go_down` put its PDUs back in line); anything else the
        // server was waiting for has failed.
        let lost = request.sender_epoch != self.servers[request.from as usize].epoch;
        let done = if lost { Done::Timeout } else { done };
        if lost && matches!(request.body, Body::Send(_)) {
            self.counters.requests[request.purpose as usize][done.index()] += 1;
            return;
        }
        self.counters.requests[request.purpose as usize][done.index()] += 1;
        let reply = if done == Done::Ok {
            request.reply
        } else {
            None
        };
        let from = request.from;
        match request.body {
            Body::Send(pdus) => {
                let outbox = self.servers[from as usize]
                    .outbox
                    .entry(request.to)
                    .or_default();
                outbox.in_flight = 0;
                if reply.is_some() {
                    outbox.failures = 0;
                    for _ in 0..pdus.len() {
                        outbox.queue.pop_front();
                    }
                    self.pump(from, request.to);
                } else {
                    outbox.failures += 1;
                    if outbox.failures > self.config.transaction_retries {
                        // Given up: these PDUs never reach the destination by push.
                        for _ in 0..pdus.len() {
                            outbox.queue.pop_front();
                        }
                        outbox.failures = 0;
                        self.counters.pdus_given_up_by_sender += pdus.len() as u64;
                        self.pump(from, request.to);
                    } else {
                        let shift = (outbox.failures - 1).min(20);
                        let delay_ms =
                            (TRANSACTION_RETRY_FLOOR_MS << shift).min(TRANSACTION_RETRY_CAP_MS);
                        outbox.retry_scheduled = true;
                        let generation = outbox.retry_generation;
                        let now_ms = self.queue.now_ms();
                        self.queue.push(
                            now_ms + delay_ms,
                            Ev::RetryTransaction {
                                server: from,
                                destination: request.to,
                                generation,
                            },
                        );
                    }
                }
            }
            Body::MakeJoin { room, user } => match reply {
                Some(Reply::Template(draft)) => self.finish_make_join(room, from, user, *draft),
                _ => self.retry_join(room, from),
            },
            Body::SendJoin { room, pdu } => match reply {
                Some(Reply::Events(history)) => self.install_room(room, from, request.to, history),
                Some(Reply::State { state, events }) => {
                    self.install_state_join(room, from, request.to, state, events, pdu)
                }
                _ => self.retry_join(room, from),
            },
            Body::Backfill { room, .. } => {
                if let Some(Reply::Events(events)) = reply {
                    self.counters.backfill_events += events.len() as u64;
                    self.receive_into(from, request.to, room, events, ArrivalPath::Backfill);
                }
            }
            Body::State { room, .. } => self.state_arrived(from, room, id, reply),
            Body::StateIds { room, event_id } => {
                self.state_ids_arrived(from, request.to, room, id, event_id, reply)
            }
            Body::GetMissing {
                room, for_front, ..
            } => {
                let events = match reply {
                    Some(Reply::Events(events)) => events,
                    _ => Vec::new(),
                };
                if let Some(state) = self.servers[from as usize].rooms.get_mut(&room) {
                    let items = events
                        .into_iter()
                        .map(|json| Inbound::new(json, ArrivalPath::MissingEvents, request.to));
                    if for_front {
                        let items: Vec<Inbound> = items.collect();
                        for item in items.into_iter().rev() {
                            state.inbound.push_front(item);
                        }
                        if state.blocked == Some(Block::Gap(id)) {
                            state.blocked = None;
                        }
                    } else {
                        state.inbound.extend(items);
                    }
                    self.drain(from, room);
                }
            }
            Body::EventFetch { room, .. } => {
                if let Some(Reply::Events(events)) = reply {
                    self.receive_into(from, request.to, room, events, ArrivalPath::EventFetch);
                }
            }
            Body::Key { slot, epoch } => {
                self.key_answer(from, request.to, slot, epoch, done, reply)
            }
            Body::NotaryQuery { slot, domain } => self.notary_reply(from, slot, domain, reply),
            Body::Extremities { .. } | Body::AttackerSend(_) | Body::Push(_) => {}
        }
    }

    // ----- keys ----------------------------------------------------------------------------

    fn apply_key_outputs(
        &mut self,
        server: ServerId,
        out: &mut Vec<KeyCacheOutput>,
        context: Option<&InvalidationContext>,
    ) {
        for output in out.drain(..) {
            match output {
                KeyCacheOutput::Send { slot, .. } => {
                    let domain = self.servers[server as usize].cache.slots()[slot as usize].domain;
                    let epoch = self.servers[server as usize].cache.epoch;
                    self.dispatch(
                        server,
                        domain,
                        Purpose::KeyDirect,
                        Body::Key { slot, epoch },
                    );
                }
                KeyCacheOutput::SetTimer {
                    at_ms,
                    slot,
                    generation,
                } => self.queue.push(
                    at_ms,
                    Ev::KeyTimer {
                        server,
                        slot,
                        generation,
                    },
                ),
                KeyCacheOutput::Decision { slot, decision } => match decision {
                    Decision::Invalidated(reason) => {
                        self.counters.key_invalidations += 1;
                        let domain =
                            self.servers[server as usize].cache.slots()[slot as usize].domain;
                        let now_ms = self.queue.now_ms();
                        if self.attacker.servers.contains_key(&domain)
                            && self.attacker.t0_ms.is_some_and(|t0_ms| now_ms >= t0_ms)
                        {
                            self.attacker
                                .key_invalidated_at
                                .entry((server, domain))
                                .or_insert(now_ms);
                        }
                        if let Some(context) = context
                            && let Some(key_id) = context.tracked_key_id()
                        {
                            self.invalidate_links(
                                server,
                                slot,
                                reason,
                                key_id,
                                context.tracked_valid_until_ms,
                                context.response.as_deref(),
                            );
                        }
                    }
                    Decision::Revalidated => self.counters.key_revalidations += 1,
                },
            }
        }
    }

    fn key_answer(
        &mut self,
        server: ServerId,
        domain: ServerId,
        slot: u32,
        epoch: u32,
        done: Done,
        reply: Option<Reply>,
    ) {
        let now_ms = self.queue.now_ms();
        if self.servers[server as usize].cache.epoch != epoch {
            return;
        }
        let outcome = match (done, reply) {
            (Done::Ok, Some(Reply::Keys(body))) => Outcome::Ok(body),
            (Done::NotFound, _) => Outcome::NotFound,
            (Done::Status(status), _) => Outcome::Status(status),
            (Done::Refused, _) => Outcome::Refused,
            _ => Outcome::Timeout,
        };
        let domain_name = self.servers[domain as usize].name.clone();
        let fetched = key_cache::classify(
            &outcome,
            Via::Direct,
            domain,
            &domain_name,
            &[],
            &mut self.verify_memo,
        );
        let response = match &fetched {
            Fetched::Keys(keys) => Some(Arc::clone(keys)),
            _ => None,
        };
        let entry = &self.servers[server as usize].cache.slots()[slot as usize];
        let tracked = entry.tracked_keys().cloned();
        let tracked_valid_until_ms = entry.valid_until_ms();
        let mut out = std::mem::take(&mut self.key_outputs);
        self.servers[server as usize].cache.on_response(
            now_ms,
            slot,
            Via::Direct,
            fetched,
            &mut out,
        );
        let context = InvalidationContext {
            tracked,
            tracked_valid_until_ms,
            response: response.clone(),
        };
        self.apply_key_outputs(server, &mut out, Some(&context));
        self.key_outputs = out;
        // RQ4: a failed fetch asks the notary (once per domain) before anything goes on.
        if response.is_none() && self.ask_notary(server, slot, domain) {
            return;
        }
        let usable =
            self.servers[server as usize].cache.slots()[slot as usize].valid && response.is_some();
        self.keys_settled(server, slot, &domain_name, usable);
    }

    /// A key fetch for `slot` (the domain `domain_name`) ended, with keys (`usable`) or not:
    /// new or re-fetched keys re-verify pending and unverified links of the domain, a failed
    /// fetch turns pending links unverified, and PDUs parked for these keys go on.
    fn keys_settled(&mut self, server: ServerId, slot: u32, domain_name: &str, usable: bool) {
        let now_ms = self.queue.now_ms();
        let now_abs_ms = absolute_ms(now_ms);
        let version = self.version;
        let policy = self.room_policy.clone();
        let hs = &mut self.servers[server as usize];
        let mut stale_checks = Vec::new();
        // Only rooms with an unsettled link claiming the domain can change (see
        // `UnsettledTally`): in the steady state, none.
        if version.member_keys && hs.unsettled.any_claiming(domain_name) {
            // The held keys are the same for every room of the server: looked up once.
            let keys = CacheKeys {
                own_id: server,
                own_name: &hs.name,
                own_keys: &hs.own_keys,
                cache: &hs.cache,
                slot_of: &hs.slot_of,
                now_abs_ms,
                archive: &hs.archive,
            };
            let held = if usable {
                crate::room::keys::KeySource::held_keys(&keys, domain_name)
            } else {
                None
            };
            for (&room, state) in hs.rooms.iter_mut() {
                let changed = match (usable, held) {
                    (true, Some(held)) => {
                        state
                            .links
                            .keys_available(&version, domain_name, held, now_abs_ms)
                    }
                    (true, None) => Vec::new(),
                    (false, _) => state.links.keys_unavailable(domain_name, now_abs_ms),
                };
                if changed.is_empty() {
                    continue;
                }
                if usable {
                    self.counters.links_reverified += changed.len() as u64;
                    self.counters.revealed += pipeline::reveal_verified(
                        &mut state.state,
                        &state.links,
                        &policy,
                        &changed,
                        now_abs_ms,
                    ) as u64;
                }
                stale_checks.push((room, changed));
            }
        }
        for (room, members) in stale_checks {
            self.requery_stale_claims(server, room, &members);
        }
        // PDUs parked for these keys go on (verified or not).
        let waiting = self.servers[server as usize]
            .key_waiters
            .remove(&slot)
            .unwrap_or_default();
        for room in waiting {
            if let Some(state) = self.servers[server as usize].rooms.get_mut(&room)
                && state.blocked == Some(Block::Keys(slot))
            {
                state.blocked = None;
            }
            self.drain(server, room);
        }
    }

    /// The tracked key of `slot` was invalidated: the links it verified turn unverified (per
    /// the policy's rule) and, after a key change, are re-queried from the domain.
    fn invalidate_links(
        &mut self,
        server: ServerId,
        slot: u32,
        reason: InvalidReason,
        key_id: &str,
        tracked_valid_until_ms: i64,
        response: Option<&ServerKeys>,
    ) {
        if !self.version.member_keys {
            return;
        }
        let now_abs_ms = absolute_ms(self.queue.now_ms());
        let domain = self.servers[server as usize].cache.slots()[slot as usize].domain;
        let domain_name = self.servers[domain as usize].name.clone();
        let invalidation =
            KeyInvalidation::from_key_layer(reason, key_id, response, tracked_valid_until_ms);
        let requery = self.room_policy.name != "P6"
            && matches!(
                reason,
                InvalidReason::MovedToOld | InvalidReason::Absent | InvalidReason::DifferentBytes
            );
        let mut requeries = Vec::new();
        for (room, state) in self.servers[server as usize].rooms.iter_mut() {
            let changed =
                state
                    .links
                    .key_invalidated(&domain_name, key_id, invalidation.clone(), now_abs_ms);
            self.counters.link_invalidations += changed.len() as u64;
            if requery {
                for member in changed {
                    if let Some(event) = state
                        .links
                        .link(&member)
                        .and_then(|link| link.member_event.as_ref())
                    {
                        requeries.push((*room, event.event_id.clone()));
                    }
                }
            }
        }
        for (room, event_id) in requeries {
            self.dispatch(
                server,
                domain,
                Purpose::EventRequery,
                Body::EventFetch { room, event_id },
            );
        }
    }

    /// The key-cache slot whose keys the PDU's checks need and the server does not hold: v12,
    /// the sender's server key for the event's `origin_server_ts`; member keys, the claimed
    /// domain's current key for a member's own member event.
    fn key_needed(&mut self, server: ServerId, json: &Arc<Value>) -> Option<u32> {
        // The wire copies' questions were read once when they were made (`remember`); a copy
        // made elsewhere (an attacker's, a re-signed one) is read now.
        let computed;
        let question = match self.wire_facts.get(&(Arc::as_ptr(json) as usize)) {
            Some(facts) => facts.key_question.as_ref(),
            None => {
                computed = key_question(self.version.member_keys, json);
                computed.as_ref()
            }
        }?;
        let hs = &self.servers[server as usize];
        let keys = hs.cache_keys(server, absolute_ms(self.queue.now_ms()));
        let domain = question.domain.as_str();
        let held = crate::room::keys::KeySource::held_keys(&keys, domain);
        let usable = held.is_some_and(|held| {
            question.key_ids.iter().any(|key_id| {
                if self.version.member_keys {
                    held.keys.verify_keys.contains_key(key_id)
                } else {
                    held.key_for_event(key_id, question.origin_server_ts)
                        .is_some()
                }
            })
        });
        // A member event the claimed domain did not sign (a fake `domain` claim, RQ9) cannot
        // be helped by a fetch once the domain's keys are held: MSC4430 asks for one only
        // without an unexpired cached copy. Without this each fake claim re-fetched the
        // victim's keys. The one rule for both paths that fetch on a PDU's behalf: `/send`
        // receipts and a resident answering `send_join`.
        let fake_claim_keys_held = question.key_ids.is_empty() && held.is_some();
        if usable || fake_claim_keys_held || domain == hs.name {
            return None;
        }
        let domain = domain.to_owned();
        self.slot_for(server, &domain)
    }

    // ----- PDUs ----------------------------------------------------------------------------

    /// PDUs pushed by `from` (a transaction) enter the inbound queues of their rooms.
    fn receive_pdus(
        &mut self,
        to: ServerId,
        from: ServerId,
        pdus: Vec<Arc<Value>>,
        path: ArrivalPath,
    ) {
        let mut by_room: BTreeMap<RoomIndex, Vec<Arc<Value>>> = BTreeMap::new();
        for pdu in pdus {
            let room = pdu
                .get("room_id")
                .and_then(Value::as_str)
                .and_then(|room_id| self.room_of_id.get(room_id).copied());
            match room {
                Some(room) => by_room.entry(room).or_default().push(pdu),
                None => self.counters.not_in_room += 1,
            }
        }
        for (room, pdus) in by_room {
            self.receive_into(to, from, room, pdus, path);
        }
    }

    fn receive_into(
        &mut self,
        to: ServerId,
        from: ServerId,
        room: RoomIndex,
        pdus: Vec<Arc<Value>>,
        path: ArrivalPath,
    ) {
        let Some(state) = self.servers[to as usize].rooms.get_mut(&room) else {
            self.counters.not_in_room += pdus.len() as u64;
            return;
        };
        let mut items = pdus.into_iter().map(|json| Inbound::new(json, path, from));
        if state.inbound.is_empty() && items.len() == 1 {
            // Most transactions carry one PDU for a room with nothing waiting: it is processed
            // as if it had been queued and taken straight out, without writing the queue's
            // buffer (a cold line of this server's room per receipt).
            self.drain_from(to, room, items.next());
        } else {
            state.inbound.extend(items);
            self.drain(to, room);
        }
    }

    /// Processes a room's inbound queue until it is empty or parked.
    fn drain(&mut self, server: ServerId, room: RoomIndex) {
        self.drain_from(server, room, None);
    }

    /// As [`FedWorld::drain`], with `first` (if any) in front of the queue.
    fn drain_from(&mut self, server: ServerId, room: RoomIndex, mut first: Option<Inbound>) {
        loop {
            let now_ms = self.queue.now_ms();
            let Some(state) = self.servers[server as usize].rooms.get_mut(&room) else {
                return;
            };
            if state.blocked.is_some() || !state.joined {
                if let Some(item) = first.take() {
                    state.inbound.push_front(item);
                }
                return;
            }
            let Some(mut item) = first.take().or_else(|| state.inbound.pop_front()) else {
                return;
            };
            if !item.key_wait_done
                && let Some(slot) = self.key_needed(server, &item.json)
            {
                item.key_wait_done = true;
                let mut out = std::mem::take(&mut self.key_outputs);
                self.servers[server as usize]
                    .cache
                    .fetch_now(slot, &mut out);
                self.apply_key_outputs(server, &mut out, None);
                self.key_outputs = out;
                let hs = &mut self.servers[server as usize];
                let state = hs.rooms.get_mut(&room).expect("checked above");
                state.inbound.push_front(item);
                if hs.cache.slots()[slot as usize].fetch_pending() {
                    self.counters.key_waits += 1;
                    state.blocked = Some(Block::Keys(slot));
                    hs.key_waiters.entry(slot).or_default().insert(room);
                    return;
                }
                continue;
            }
            if self.inbound_refused(server, room, &item) {
                continue;
            }
            let receipt = self.process_inbound(server, room, &item);
            self.requery_if_stale_claim(server, room, &item.json, item.path);
            // A pulled event that could not be accepted is a failed pull (`pulls.rs`).
            if matches!(receipt.verdict, Verdict::Dropped(_))
                && item.path == ArrivalPath::MissingEvents
                && let Some(event_id) = &receipt.event_id
            {
                self.record_pull_failure(server, room, event_id);
            }
            if let Verdict::MissingEvents {
                prev_events,
                auth_events,
            } = &receipt.verdict
            {
                let mut missing = prev_events.clone();
                missing.extend(auth_events.iter().cloned());
                // Synapse's pull backoff: an event missing one that recently failed to be
                // pulled is not processed, and nothing is asked for it (`pulls.rs`).
                if let Some(cause) = self.pull_backoff(server, room, &missing) {
                    self.counters.gaps_backed_off += 1;
                    if let Some(event_id) = &receipt.event_id {
                        self.inherit_pull_failure(server, room, event_id, cause);
                    }
                    continue;
                }
                if self.fetch_state_instead(
                    server,
                    room,
                    &mut item,
                    receipt.event_id.clone(),
                    auth_events,
                ) {
                    return;
                }
                let backfilled = self.config.join == crate::scenario::JoinMode::State
                    && (item.path == ArrivalPath::Backfill || item.outlier);
                if item.gap_rounds < MAX_GAP_ROUNDS && item.from != server && !backfilled {
                    let state = self.servers[server as usize]
                        .rooms
                        .get_mut(&room)
                        .expect("checked above");
                    let known = state.state.forward_extremities();
                    let target = item.from;
                    item.gap_rounds += 1;
                    state.inbound.push_front(item);
                    let min_depth = self.min_depth(server, room);
                    self.dispatch_parked(
                        server,
                        room,
                        target,
                        Purpose::GetMissingEvents,
                        Body::GetMissing {
                            room,
                            missing,
                            known,
                            for_front: true,
                            min_depth,
                        },
                    );
                    return;
                }
                self.counters.gaps_given_up += 1;
                if item.gap_rounds > 0 {
                    self.record_gap_given_up(server, room, receipt.event_id.as_ref(), &missing);
                }
            }
            let _ = now_ms;
        }
    }

    /// Runs one PDU through the server's pipeline now and counts the outcome.
    fn process_now(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        json: &Arc<Value>,
        path: ArrivalPath,
        _from: ServerId,
    ) -> Receipt {
        let now_abs_ms = absolute_ms(self.queue.now_ms());
        let hs = &mut self.servers[server as usize];
        let keys = CacheKeys {
            own_id: server,
            own_name: &hs.name,
            own_keys: &hs.own_keys,
            cache: &hs.cache,
            slot_of: &hs.slot_of,
            now_abs_ms,
            archive: &hs.archive,
        };
        let state = hs.rooms.get_mut(&room).expect("the room is held");
        let mut view = ServerView {
            keys: &keys,
            links: &mut state.links,
            policy: &self.room_policy,
        };
        let receipt = pipeline::receive_arc_shared(
            &mut state.state,
            &mut view,
            &mut self.memo,
            json,
            path,
            now_abs_ms,
        );
        self.account(server, &receipt, json);
        receipt
    }

    fn account(&mut self, server: ServerId, receipt: &Receipt, json: &Arc<Value>) {
        let counters = &mut self.counters;
        let stats = &mut self.servers[server as usize].stats;
        counters.pdus_processed += 1;
        stats.pdus_processed += 1;
        match &receipt.verdict {
            Verdict::Accepted { labelled } => {
                counters.accepted += 1;
                stats.accepted += 1;
                if *labelled {
                    counters.accepted_labelled += 1;
                }
                if receipt.outcome() == pipeline::Outcome::Redacted {
                    counters.redacted += 1;
                }
                // The event's type is read only here (a JSON lookup per accepted receipt).
                if receipt.path != ArrivalPath::Local
                    && WireFacts::of(&self.wire_facts, json, |facts| facts.message, is_message)
                {
                    counters.message_deliveries += 1;
                }
            }
            Verdict::SoftFailed(reason) => {
                stats.soft_failed += 1;
                match reason {
                    SoftFailReason::CurrentState(_) => counters.soft_failed_auth += 1,
                    SoftFailReason::Link(_) => counters.soft_failed_link += 1,
                    SoftFailReason::StateUnresolvable(_) => counters.soft_failed_other += 1,
                }
            }
            Verdict::Rejected { .. } => {
                counters.rejected += 1;
                stats.rejected += 1;
            }
            Verdict::Dropped(_) => {
                counters.dropped += 1;
                stats.dropped += 1;
            }
            Verdict::AlreadyHeld => counters.already_held += 1,
            Verdict::MissingEvents { .. } => counters.missing_events += 1,
        }
        let Some(event_id) = &receipt.event_id else {
            return;
        };
        // On observers only, as RQ2's containment times: a compromised server that receives its
        // attacker's events back (referenced by other servers' events) is no observer.
        if !self.attacker.events.contains(event_id) || self.attacker.servers.contains_key(&server) {
            return;
        }
        let after_t0 = self
            .attacker
            .t0_ms
            .is_some_and(|t0_ms| self.queue.now_ms() >= t0_ms);
        match &receipt.verdict {
            Verdict::Accepted { labelled: false } if after_t0 => {
                counters.attacker_accepted_after_t0 += 1
            }
            Verdict::Accepted { labelled: false } => counters.attacker_accepted_before_t0 += 1,
            Verdict::Accepted { labelled: true } if after_t0 => {
                counters.attacker_labelled_after_t0 += 1
            }
            Verdict::SoftFailed(_) | Verdict::Rejected { .. } if after_t0 => {
                counters.attacker_hidden_after_t0 += 1
            }
            Verdict::Dropped(_) if after_t0 => counters.attacker_dropped_after_t0 += 1,
            _ => {}
        }
    }

    /// The servers with a joined member in `server`'s current state of `room` (by the member
    /// event's `content.domain` under member keys, the user ID's server otherwise).
    fn residents(&mut self, server: ServerId, room: RoomIndex) -> Vec<ServerId> {
        let count = self.servers.len();
        let version = self.version;
        // RQ9 knob: skip domains claimed only by links this server has not verified (link
        // statuses change without the state changing, so the residents list is then reused only
        // while no status changed; the per-entry facts are reused either way).
        let verified_only = version.member_keys && !self.config.fan_out_to_unverified_links;
        let own_name = self.servers[server as usize].name.clone();
        let Some(state) = self.servers[server as usize].rooms.get_mut(&room) else {
            return Vec::new();
        };
        let Ok(current) = state.state.current_state() else {
            return Vec::new();
        };
        let status_changes = verified_only.then(|| state.links.status_changes());
        if let Some(memo) = &state.resident_memo
            && Arc::ptr_eq(&memo.state, &current)
            && memo.status_changes == status_changes
        {
            return memo.residents.clone();
        }
        let old_memo = state.resident_memo.take();
        // The previous state's member entries with their facts, walked alongside this state's
        // (both maps are sorted by key): an entry naming the same event reuses its fact.
        let member = "m.room.member";
        let mut previous = old_memo.as_ref().map(|memo| {
            memo.state
                .range((member.to_owned(), String::new())..)
                .take_while(|((event_type, _), _)| event_type == member)
                .zip(&memo.facts)
                .peekable()
        });
        let fact_of = |state_key: &str, event_id: &str| {
            let Some(pdu) = state.state.event(event_id) else {
                return MemberFact {
                    resident: None,
                    own_domain: false,
                    held: false,
                };
            };
            if pdu.membership() != Some("join") {
                return MemberFact {
                    resident: None,
                    own_domain: false,
                    held: true,
                };
            }
            let domain = if version.member_keys {
                pdu.content.get("domain").and_then(Value::as_str)
            } else {
                state_key.split_once(':').map(|(_, domain)| domain)
            };
            MemberFact {
                resident: domain.and_then(|domain| server_of_domain(domain, count)),
                own_domain: domain == Some(own_name.as_str()),
                held: true,
            }
        };
        let mut facts = Vec::new();
        let mut residents = BTreeSet::new();
        for ((_, state_key), event_id) in current
            .range((member.to_owned(), String::new())..)
            .take_while(|((event_type, _), _)| event_type == member)
        {
            let mut reused = None;
            if let Some(previous) = &mut previous {
                while let Some((((_, old_key), old_id), old_fact)) = previous.peek() {
                    match old_key.as_str().cmp(state_key.as_str()) {
                        std::cmp::Ordering::Less => {
                            previous.next();
                        }
                        std::cmp::Ordering::Equal => {
                            if old_fact.held && *old_id == event_id {
                                reused = Some(**old_fact);
                            }
                            previous.next();
                            break;
                        }
                        std::cmp::Ordering::Greater => break,
                    }
                }
            }
            let fact = reused.unwrap_or_else(|| fact_of(state_key, event_id));
            facts.push(fact);
            let Some(resident) = fact.resident else {
                continue;
            };
            // RQ9 knob: skip domains claimed only by links this server has not verified. A
            // domain already found resident needs no other member's link (a server has several
            // users in a room): that saves a link-table probe per such member.
            if verified_only
                && !fact.own_domain
                && !residents.contains(&resident)
                && state.links.status(state_key) != crate::room::links::LinkStatus::Verified
            {
                continue;
            }
            residents.insert(resident);
        }
        let residents: Vec<ServerId> = residents.into_iter().collect();
        state.resident_memo = Some(ResidentMemo {
            state: current,
            status_changes,
            residents: residents.clone(),
            facts,
        });
        residents
    }

    /// Queues `pdu` to every other resident server of `room` (as `server` sees it), except
    /// `exclude`.
    fn fan_out(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        pdu: &Arc<Value>,
        exclude: &[ServerId],
    ) {
        for destination in self.residents(server, room) {
            if destination == server || exclude.contains(&destination) {
                continue;
            }
            self.queue_pdu(server, destination, pdu);
        }
    }

    /// Queues `pdu` for `destination` and sends a transaction if none is pending.
    fn queue_pdu(&mut self, server: ServerId, destination: ServerId, pdu: &Arc<Value>) {
        let outbox = self.servers[server as usize]
            .outbox
            .entry(destination)
            .or_default();
        outbox.queue.push_back(Arc::clone(pdu));
        // As `pump`, on the outbox at hand (one lookup per destination and event).
        if let Some(pdus) = next_transaction(outbox) {
            self.dispatch(server, destination, Purpose::Send, Body::Send(pdus));
        }
    }

    /// Sends the next transaction to `destination` if none is in flight or waiting to retry.
    fn pump(&mut self, server: ServerId, destination: ServerId) {
        if !self.is_up(server) {
            // Its outbox waits: `BringOnline` pumps it.
            return;
        }
        let Some(outbox) = self.servers[server as usize].outbox.get_mut(&destination) else {
            return;
        };
        if let Some(pdus) = next_transaction(outbox) {
            self.dispatch(server, destination, Purpose::Send, Body::Send(pdus));
        }
    }

    /// Signs `draft` as `user` of `server` would: the server key (v12), or the member key with
    /// the server's co-signature on the user's own member events (member keys).
    fn sign(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        user: u32,
        draft: EventDraft,
    ) -> Option<Arc<Value>> {
        let version = self.version;
        let hs = &self.servers[server as usize];
        let key = hs.publisher.current_key();
        let signer = if version.member_keys {
            let member_key = hs.rooms.get(&room)?.member_keys.get(&user)?;
            // A fake `domain` claim (adversary.rs) cannot be co-signed by the claimed domain.
            let own_member_event = draft.event_type == "m.room.member"
                && draft.state_key.as_deref() == Some(draft.sender.as_str())
                && !self.adv.fake_joins.contains_key(&(server, room));
            EventSigner::Member {
                member_key,
                cosigner: own_member_event.then_some((hs.name.as_str(), key)),
            }
        } else {
            EventSigner::Server {
                server_name: &hs.name,
                key,
            }
        };
        let cosigned = matches!(
            signer,
            EventSigner::Member {
                cosigner: Some(_),
                ..
            }
        );
        let started = std::time::Instant::now();
        let pdu = build_pdu(draft, &version, signer).ok()?;
        self.sign_nanos += started.elapsed().as_nanos() as u64;
        self.events_signed += 1;
        self.cosignatures_made += u64::from(cosigned);
        Some(self.remember(pdu))
    }

    /// A local user sends an event: drafted on the server's view, signed, run through its own
    /// pipeline, and queued to every other resident server.
    fn send_local(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        user: u32,
        event_type: &str,
        state_key: Option<String>,
        content: Value,
    ) -> Option<EventId> {
        let now_ms = self.queue.now_ms();
        if !self.is_up(server) {
            self.counters.sends_skipped += 1;
            return None;
        }
        self.refresh_own_keys(server);
        let version = self.version;
        let hs = &mut self.servers[server as usize];
        let Some(state) = hs.rooms.get(&room).filter(|room| room.joined) else {
            self.counters.sends_skipped += 1;
            return None;
        };
        let sender = member_id(&version, &hs.name, &hs.users, state, user);
        let state_key = state_key.map(|key| if key == "@self" { sender.clone() } else { key });
        let stamp_ms = absolute_ms(now_ms) + hs.cache.clock_offset_ms();
        let state = hs.rooms.get_mut(&room).expect("checked");
        let Ok(draft) =
            state
                .state
                .draft_event(&sender, event_type, state_key.as_deref(), content, stamp_ms)
        else {
            self.counters.sends_skipped += 1;
            return None;
        };
        let Some(pdu) = self.sign(server, room, user, draft) else {
            self.counters.sends_skipped += 1;
            return None;
        };
        // Residents before the event too: a kicked, banned or leaving member's server gets it.
        let residents_before = self.residents(server, room);
        let receipt = self.process_now(server, room, &pdu, ArrivalPath::Local, server);
        if !matches!(receipt.verdict, Verdict::Accepted { .. }) {
            // The user may not send this (not joined any more, banned): nothing goes out.
            self.counters.sends_skipped += 1;
            return None;
        }
        let event_id = receipt.event_id.clone()?;
        let message = event_type == "m.room.message";
        if message {
            self.counters.messages_sent += 1;
        } else {
            self.counters.state_events_sent += 1;
        }
        self.sent.push(Sent {
            room,
            event_id: event_id.clone(),
            at_ms: now_ms,
            message,
        });
        self.fan_out(server, room, &pdu, &[]);
        let residents_after = self.residents(server, room);
        for destination in residents_before {
            if destination != server && !residents_after.contains(&destination) {
                self.queue_pdu(server, destination, &pdu);
            }
        }
        Some(event_id)
    }

    /// Keeps the wire copy of a new event and returns it.
    fn remember(&mut self, pdu: crate::matrix::Pdu) -> Arc<Value> {
        let json = pdu.json;
        self.wire_sizes
            .insert(Arc::as_ptr(&json) as usize, json_bytes(&json));
        self.wire_facts.insert(
            Arc::as_ptr(&json) as usize,
            WireFacts::read(self.version.member_keys, &json),
        );
        if let Some(replaced) = self.wire.insert(pdu.event_id, Arc::clone(&json)) {
            // Its address may be reused once the last holder drops it.
            self.wire_sizes.remove(&(Arc::as_ptr(&replaced) as usize));
            self.wire_facts.remove(&(Arc::as_ptr(&replaced) as usize));
        }
        json
    }

    /// Re-reads the server's own key response if the publisher re-signed it.
    fn refresh_own_keys(&mut self, server: ServerId) {
        let now_abs_ms = absolute_ms(self.queue.now_ms());
        let hs = &mut self.servers[server as usize];
        let body = hs.publisher.response(now_abs_ms);
        if Arc::ptr_eq(&body, &hs.own_body) {
            return;
        }
        if let Ok(Some(keys)) = self.verify_memo.check_direct(server, &hs.name, &body) {
            hs.own_keys = keys;
            hs.own_body = body;
        }
    }

    // ----- rooms and joins -----------------------------------------------------------------

    fn new_server_room(&self, room: RoomIndex, server: ServerId, room_id: &str) -> ServerRoom {
        let plan = &self.plans[room as usize];
        let mut member_keys = BTreeMap::new();
        if self.version.member_keys {
            for &(member_server, user) in &plan.members {
                if member_server == server {
                    member_keys.insert(user, build::member_key(self.seed, room, server, user));
                }
            }
        }
        let state = match &self.shared_facts {
            Some(facts) => RoomState::with_shared_facts(self.version, room_id, facts),
            None => RoomState::new(self.version, room_id),
        };
        let mut links = LinkTable::new(self.room_policy.invalidation);
        links.set_shared_facts(self.shared_facts.clone());
        links.set_unsettled_tally(Some(self.servers[server as usize].unsettled.clone()));
        ServerRoom {
            state,
            links,
            joined: false,
            inbound: VecDeque::new(),
            blocked: None,
            member_keys,
            pending_local_joins: BTreeSet::new(),
            failed_pulls: BTreeMap::new(),
            resident_memo: None,
            own_join_memo: None,
        }
    }

    /// The member ID `user` of `server` will have in `room` (its member key's ID under member
    /// keys).
    fn joiner_member_id(&self, room: RoomIndex, server: ServerId, user: u32) -> String {
        if let Some(member_id) = self.plans[room as usize].member_id_of(server, user) {
            return member_id.to_owned();
        }
        if self.version.member_keys {
            let key = build::member_key(self.seed, room, server, user);
            crate::matrix::member_keys::member_key_user_id(&key.verifying_key())
        } else {
            format!(
                "@{}:{}",
                self.servers[server as usize].users[user as usize],
                self.servers[server as usize].name
            )
        }
    }

    fn create_room(&mut self, room: RoomIndex) {
        let now_ms = self.queue.now_ms();
        let (server, user) = self.plans[room as usize].creator;
        let version = self.version;
        let creator_id = self.joiner_member_id(room, server, user);
        let mut draft = crate::room::room_state::create_event_draft(
            &version,
            &creator_id,
            None,
            absolute_ms(now_ms),
        );
        if self.config.unfederated_rooms.contains(&room) {
            draft.content["m.federate"] = json!(false);
        }
        // The room ID derives from the create event (v12+), so the server room is made after.
        let hs = &self.servers[server as usize];
        let member_key = version
            .member_keys
            .then(|| build::member_key(self.seed, room, server, user));
        let signer = match &member_key {
            Some(member_key) => EventSigner::Member {
                member_key,
                cosigner: None,
            },
            None => EventSigner::Server {
                server_name: &hs.name,
                key: hs.publisher.current_key(),
            },
        };
        let Ok(create) = build_pdu(draft, &version, signer) else {
            return;
        };
        self.events_signed += 1;
        let room_id = crate::matrix::hashes::room_id_from_create_event_id(&create.event_id);
        self.plans[room as usize].room_id = Some(room_id.clone());
        self.room_of_id.insert(room_id.clone(), room);
        let mut server_room = self.new_server_room(room, server, &room_id);
        server_room.joined = true;
        self.servers[server as usize]
            .rooms
            .insert(room, server_room);
        self.refresh_own_keys(server);
        let create = self.remember(create);
        self.process_now(server, room, &create, ArrivalPath::Local, server);
        let content = membership_content(&version, &self.servers[server as usize], user, "join");
        self.send_local(
            server,
            room,
            user,
            "m.room.member",
            Some("@self".into()),
            content,
        );
        self.send_local(
            server,
            room,
            user,
            "m.room.join_rules",
            Some(String::new()),
            json!({"join_rule": "public"}),
        );
        // Members join over the join window; the workload starts.
        let window_ms = self.config.join_window.ms().max(1);
        let plan = &mut self.plans[room as usize];
        let members: Vec<(ServerId, u32)> = plan.members.clone();
        for &(member, user) in members.iter().skip(1) {
            if plan.late.contains(&member) {
                continue;
            }
            // A server's first user's join time comes from the room's message stream (as
            // before further users existed), further users' from their own stream.
            let delay_ms = if plan.first_user(member) == Some(user) {
                plan.message_rng.below(window_ms)
            } else {
                plan.join_rng.below(window_ms)
            };
            self.queue.push(
                now_ms + delay_ms,
                Ev::Join {
                    room,
                    server: member,
                    user,
                    attempt: 0,
                },
            );
        }
        let plan = &mut self.plans[room as usize];
        if self.config.messages_per_room_per_hour > 0.0 {
            let gap_ms = plan
                .message_rng
                .exponential(3_600_000.0 / self.config.messages_per_room_per_hour)
                as u64;
            self.queue
                .push(now_ms + gap_ms.max(1), Ev::Message { room });
        }
        if self.config.topic_changes_per_room_per_day > 0.0 {
            let gap_ms = plan
                .topic_rng
                .exponential(86_400_000.0 / self.config.topic_changes_per_room_per_day)
                as u64;
            self.queue.push(now_ms + gap_ms.max(1), Ev::Topic { room });
        }
        self.start_workload(room);
    }

    /// `user` of `server` starts the server's join of `room` through a resident (the creator's
    /// server first, then the other planned member servers in turn on each retry).
    fn start_join(&mut self, room: RoomIndex, server: ServerId, user: u32, attempt: u32) {
        // A server that is down joins nothing (a workload rejoin; planned joins are deferred).
        if !self.is_up(server) {
            return;
        }
        let Some(room_id) = self.plans[room as usize].room_id.clone() else {
            return;
        };
        if self.servers[server as usize]
            .rooms
            .get(&room)
            .is_some_and(|room| room.joined)
        {
            return;
        }
        if self.adv.fake_joins.contains_key(&(server, room)) {
            self.retry_fake_join(room, server, attempt);
            return;
        }
        let plan = &self.plans[room as usize];
        if plan.first_user(server).is_none() {
            return;
        }
        let candidates: Vec<ServerId> = plan
            .servers()
            .into_iter()
            .filter(|member| *member != server)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let target = candidates[attempt as usize % candidates.len()];
        if !self.servers[server as usize].rooms.contains_key(&room) {
            let server_room = self.new_server_room(room, server, &room_id);
            self.servers[server as usize]
                .rooms
                .insert(room, server_room);
        }
        self.join_attempts.insert((room, server), attempt);
        self.join_users.insert((room, server), user);
        self.dispatch(
            server,
            target,
            Purpose::MakeJoin,
            Body::MakeJoin { room, user },
        );
    }

    fn retry_join(&mut self, room: RoomIndex, server: ServerId) {
        let attempt = self
            .join_attempts
            .get(&(room, server))
            .copied()
            .unwrap_or(0);
        let user = self
            .join_users
            .get(&(room, server))
            .copied()
            .or_else(|| self.plans[room as usize].first_user(server))
            .unwrap_or(0);
        let now_ms = self.queue.now_ms();
        self.queue.push(
            now_ms + JOIN_RETRY_MS,
            Ev::Join {
                room,
                server,
                user,
                attempt: attempt + 1,
            },
        );
    }

    fn finish_make_join(
        &mut self,
        room: RoomIndex,
        server: ServerId,
        user: u32,
        mut draft: EventDraft,
    ) {
        let now_ms = self.queue.now_ms();
        let expected = self.joiner_member_id(room, server, user);
        // The joining server checks the template (type, sender, state_key) before signing.
        if draft.event_type != "m.room.member"
            || draft.sender != expected
            || draft.state_key.as_deref() != Some(expected.as_str())
        {
            self.retry_join(room, server);
            return;
        }
        draft.origin_server_ts_ms =
            absolute_ms(now_ms) + self.servers[server as usize].cache.clock_offset_ms();
        self.amend_fake_join(room, server, &mut draft.content);
        self.refresh_own_keys(server);
        let Some(pdu) = self.sign(server, room, user, draft) else {
            self.retry_join(room, server);
            return;
        };
        let attempt = self
            .join_attempts
            .get(&(room, server))
            .copied()
            .unwrap_or(0);
        let candidates: Vec<ServerId> = self.plans[room as usize]
            .servers()
            .into_iter()
            .filter(|member| *member != server)
            .collect();
        let target = candidates[attempt as usize % candidates.len()];
        self.dispatch(
            server,
            target,
            Purpose::SendJoin,
            Body::SendJoin { room, pdu },
        );
    }

    /// The `send_join` answer arrived: the joiner takes the resident's history (JoinState path).
    fn install_room(
        &mut self,
        room: RoomIndex,
        server: ServerId,
        resident: ServerId,
        history: Vec<Arc<Value>>,
    ) {
        let Some(state) = self.servers[server as usize].rooms.get_mut(&room) else {
            return;
        };
        if state.joined {
            return;
        }
        state.joined = true;
        self.counters.joins_completed += 1;
        self.counters.join_history_events += history.len() as u64;
        let earlier: Vec<Inbound> = state.inbound.drain(..).collect();
        state.inbound.extend(
            history
                .into_iter()
                .map(|json| Inbound::new(json, ArrivalPath::JoinState, resident)),
        );
        state.inbound.extend(earlier);
        self.drain(server, room);
        self.server_joined(room, server);
    }

    // ----- extremity exchange --------------------------------------------------------------

    fn exchange_extremities(&mut self, server: ServerId) {
        let now_ms = self.queue.now_ms();
        if let Some(interval) = self.config.extremity_exchange_interval {
            self.queue
                .push(now_ms + interval.ms(), Ev::Exchange { server });
        }
        if !self.is_up(server) {
            return;
        }
        let rooms: Vec<RoomIndex> = self.servers[server as usize]
            .rooms
            .iter()
            .filter(|(_, room)| room.joined)
            .map(|(room, _)| *room)
            .collect();
        for room in rooms {
            let ids = self.servers[server as usize].rooms[&room]
                .state
                .forward_extremities();
            for destination in self.residents(server, room) {
                if destination != server {
                    self.dispatch(
                        server,
                        destination,
                        Purpose::Extremities,
                        Body::Extremities {
                            room,
                            ids: ids.clone(),
                        },
                    );
                }
            }
        }
    }

    // ----- scripted actions ----------------------------------------------------------------

    fn servers_of(&self, refs: &[ServerRef]) -> Vec<ServerId> {
        let count = self.servers.len() as u32;
        refs.iter().filter_map(|r| r.index(count)).collect()
    }

    /// `server` stops (crash, death, an expired domain): from now on it sends nothing, and
    /// answers to what it sent before are lost.
    fn go_down(&mut self, server: ServerId, status: ServerStatus) {
        self.net.set_server_status(server, status);
        let hs = &mut self.servers[server as usize];
        hs.epoch += 1;
        // Transactions in flight are lost; their PDUs are still queued (a homeserver keeps
        // its outgoing events in its database) and go again when it comes back.
        for outbox in hs.outbox.values_mut() {
            outbox.in_flight = 0;
        }
    }

    /// `server` sends to every destination with PDUs waiting now, including those waiting out
    /// a backoff (their scheduled retry becomes stale). Nothing if it is down.
    fn retry_destinations_now(&mut self, server: ServerId) {
        if !self.is_up(server) {
            return;
        }
        for destination in self.servers[server as usize].destinations() {
            // A destination that is down would only refuse, and each refusal counts towards
            // giving its PDUs up: it keeps its backoff.
            if !self.is_up(destination) {
                continue;
            }
            let outbox = self.servers[server as usize]
                .outbox
                .get_mut(&destination)
                .expect("a listed destination");
            if outbox.retry_scheduled {
                outbox.retry_scheduled = false;
                outbox.retry_generation += 1;
            }
            self.pump(server, destination);
        }
    }

    fn act(&mut self, index: usize) {
        let now_ms = self.queue.now_ms();
        let action = self.config.actions[index].clone();
        let targets = self.servers_of(&action.servers);
        match action.kind {
            RoomActionKind::Partition => {
                let a = self.servers_of(&action.a);
                let b = self.servers_of(&action.b);
                let kind = action
                    .partition
                    .unwrap_or(crate::scenario::PartitionKind::Symmetric);
                let b = (!b.is_empty()).then_some(b.as_slice());
                self.net
                    .partition(Partition::new(kind, self.servers.len(), &a, b));
            }
            RoomActionKind::Heal => {
                self.net.heal();
                self.last_heal_ms = Some(now_ms);
                self.agreed_after_heal_ms = None;
                self.agreement_watch_until_ms =
                    Some(now_ms + self.window_ms.max(AGREEMENT_WATCH_MS));
                // Destinations waiting out a backoff are retried now (Synapse wakes a
                // destination when it hears from it), by servers that are up.
                for server in 0..self.servers.len() as ServerId {
                    self.retry_destinations_now(server);
                }
            }
            RoomActionKind::TakeOffline => {
                for server in targets {
                    self.go_down(server, ServerStatus::Crashed);
                }
            }
            RoomActionKind::BringOnline => {
                for server in targets {
                    self.net.set_server_status(server, ServerStatus::Up);
                    // Its key cache restarts as the key world's does: fetches lost with the
                    // crash are made again (their answers, if any come, carry the old epoch and
                    // are dropped) instead of reading as an unreachable domain.
                    let mut out = std::mem::take(&mut self.key_outputs);
                    self.servers[server as usize].cache.resume(now_ms, &mut out);
                    self.apply_key_outputs(server, &mut out, None);
                    self.key_outputs = out;
                    // What fell due while it was down, in order, then its outboxes.
                    let deferred = std::mem::take(&mut self.servers[server as usize].deferred);
                    for event in deferred {
                        self.handle(event);
                    }
                    self.retry_destinations_now(server);
                }
            }
            RoomActionKind::RotateKey => {
                for server in targets {
                    self.rotate(server, action.resign.unwrap_or(true));
                }
            }
            RoomActionKind::Compromise => {
                for server in targets {
                    self.compromise(server);
                }
            }
            RoomActionKind::AttackerSend => {
                for server in targets {
                    self.attacker_send(
                        server,
                        action.room,
                        action.count.unwrap_or(1),
                        action.pin_timestamp,
                    );
                }
            }
            RoomActionKind::SetAcl => self.set_acl(&action),
            RoomActionKind::FakeDomainJoin => self.fake_domain_join(&action, &targets),
            RoomActionKind::LyingServer
            | RoomActionKind::KeyFlapping
            | RoomActionKind::ClockSkew
            | RoomActionKind::LoseKey
            | RoomActionKind::LoseDatabase
            | RoomActionKind::ExpireDomain
            | RoomActionKind::Reregister => self.key_adversary(&action, &targets),
            RoomActionKind::JoinLate => {
                for server in targets {
                    for room in 0..self.plans.len() as RoomIndex {
                        if action.room.is_some_and(|only| only != room) {
                            continue;
                        }
                        if self.plans[room as usize].late.contains(&server) {
                            // The server's first user joins with make_join; its further users
                            // wait for that join and then join locally.
                            let users: Vec<u32> =
                                self.plans[room as usize].users_of(server).collect();
                            for user in users {
                                self.queue.push(
                                    now_ms,
                                    Ev::Join {
                                        room,
                                        server,
                                        user,
                                        attempt: 0,
                                    },
                                );
                            }
                        }
                    }
                }
            }
            RoomActionKind::DuplicateIdentity => {
                let room = action.room.expect("validated");
                for server in targets {
                    self.duplicate_identity(server, room, action.count.unwrap_or(1));
                }
            }
            RoomActionKind::Ban | RoomActionKind::Leave | RoomActionKind::Send => {
                let room = action.room.expect("validated");
                let position = action.user.unwrap_or(0) as usize;
                for server in targets {
                    // The `user`-th planned user of the server in the room (its first by
                    // default); a server with fewer planned users is skipped.
                    let Some(user) = self.plans[room as usize].users_of(server).nth(position)
                    else {
                        continue;
                    };
                    match action.kind {
                        RoomActionKind::Ban => {
                            let (creator, creator_user) = self.plans[room as usize].creator;
                            let target = self.joiner_member_id(room, server, user);
                            self.send_local(
                                creator,
                                room,
                                creator_user,
                                "m.room.member",
                                Some(target),
                                json!({"membership": "ban"}),
                            );
                        }
                        RoomActionKind::Leave => {
                            let content = membership_content(
                                &self.version,
                                &self.servers[server as usize],
                                user,
                                "leave",
                            );
                            self.send_local(
                                server,
                                room,
                                user,
                                "m.room.member",
                                Some("@self".into()),
                                content,
                            );
                        }
                        _ => {
                            for n in 0..action.count.unwrap_or(1) {
                                self.send_local(
                                    server,
                                    room,
                                    user,
                                    "m.room.message",
                                    None,
                                    json!({"msgtype": "m.text", "body": format!("scripted {n} at {now_ms}")}),
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The server rotates its key; it re-signs its users' current member events (except
    /// compromised member keys) for the directed re-query, or pushes them (P6).
    fn rotate(&mut self, server: ServerId, resign: bool) {
        let now_ms = self.queue.now_ms();
        if self.attacker.servers.contains_key(&server) && self.attacker.t0_ms.is_none() {
            self.attacker.t0_ms = Some(now_ms);
            self.note_keys_contained_before(server, now_ms);
        }
        self.servers[server as usize]
            .publisher
            .rotate(absolute_ms(now_ms));
        self.resign_and_notify(server, resign);
    }

    /// RQ2 at t0 (the compromised `origin` is about to rotate): an observer whose cache does
    /// not hold the compromised key as valid now (dropped already, e.g. fail-closed while cut
    /// off from the origin, or never fetched) has it contained from t0 on: its containment time
    /// is 0, not "never" (an invalidation recorded later cannot be earlier than t0).
    fn note_keys_contained_before(&mut self, origin: ServerId, t0_ms: u64) {
        let key = self.servers[origin as usize].publisher.current_key();
        let (key_id, verifying_key) = (key.key_id.as_str().to_owned(), key.verifying_key());
        let origin_name = self.servers[origin as usize].name.clone();
        for (index, server) in self.servers.iter().enumerate() {
            let observer = index as ServerId;
            if observer == origin || self.attacker.servers.contains_key(&observer) {
                continue;
            }
            let holds = server.slot_of.get(&origin_name).is_some_and(|slot| {
                server.cache.slots()[slot as usize].holds_valid(&key_id, &verifying_key)
            });
            if !holds {
                self.attacker
                    .key_invalidated_at
                    .entry((observer, origin))
                    .or_insert(t0_ms);
            }
        }
    }

    /// After a key change: the server re-signs its users' current member events (except
    /// compromised member keys) for the directed re-query, or pushes them (P6).
    fn resign_and_notify(&mut self, server: ServerId, resign: bool) {
        let version = self.version;
        self.refresh_own_keys(server);
        let mut resigned: Vec<(RoomIndex, Arc<Value>)> = Vec::new();
        if version.member_keys && resign {
            let hs = &mut self.servers[server as usize];
            let name = hs.name.clone();
            let key = hs.publisher.current_key().clone();
            let rooms: Vec<RoomIndex> = hs.rooms.keys().copied().collect();
            for room in rooms {
                let users: Vec<u32> = hs.rooms[&room].member_keys.keys().copied().collect();
                for user in users {
                    let state = hs.rooms.get_mut(&room).expect("listed");
                    let member = member_id(&version, &name, &hs.users, state, user);
                    if self
                        .attacker
                        .member_keys
                        .contains_key(&(room, member.clone()))
                    {
                        continue;
                    }
                    let Ok(Some(event)) = state.state.current_state_event("m.room.member", &member)
                    else {
                        continue;
                    };
                    let mut json = Value::clone(&event.json);
                    if cosign_member_event(&version, &mut json, &name, &key).is_ok() {
                        self.cosignatures_made += 1;
                        let json = Arc::new(json);
                        hs.resigned
                            .insert(event.event_id.clone(), Arc::clone(&json));
                        resigned.push((room, json));
                    }
                }
            }
        }
        // P6: the rotating server notifies every server it shares a room with, carrying the
        // re-signed member events of that room; receivers re-fetch its keys at once.
        if self.room_policy.name == "P6" {
            let mut notices: BTreeMap<ServerId, Vec<Arc<Value>>> = BTreeMap::new();
            let rooms: Vec<RoomIndex> = self.servers[server as usize]
                .rooms
                .keys()
                .copied()
                .collect();
            for room in rooms {
                for destination in self.residents(server, room) {
                    if destination == server {
                        continue;
                    }
                    let entry = notices.entry(destination).or_default();
                    entry.extend(
                        resigned
                            .iter()
                            .filter(|(resigned_room, _)| *resigned_room == room)
                            .map(|(_, json)| Arc::clone(json)),
                    );
                }
            }
            for (destination, pdus) in notices {
                self.dispatch(server, destination, Purpose::Push, Body::Push(pdus));
            }
        }
    }

    fn compromise(&mut self, server: ServerId) {
        let now_ms = self.queue.now_ms();
        let version = self.version;
        let hs = &self.servers[server as usize];
        self.attacker
            .servers
            .entry(server)
            .or_insert((hs.publisher.current_key().clone(), now_ms));
        for (room, state) in &hs.rooms {
            for (user, key) in &state.member_keys {
                let member = member_id(&version, &hs.name, &hs.users, state, *user);
                self.attacker
                    .member_keys
                    .insert((*room, member), key.clone());
            }
        }
    }

    /// The attacker sends `count` messages as the compromised server's user in each room
    /// (built on that server's view of the room, sent straight to the other residents).
    fn attacker_send(
        &mut self,
        server: ServerId,
        only_room: Option<RoomIndex>,
        count: u32,
        pin: bool,
    ) {
        let now_ms = self.queue.now_ms();
        let Some((server_key, compromised_at_ms)) = self.attacker.servers.get(&server).cloned()
        else {
            return;
        };
        let ts_ms = if pin {
            absolute_ms(compromised_at_ms)
        } else {
            absolute_ms(now_ms)
        };
        let rooms: Vec<RoomIndex> = self.servers[server as usize]
            .rooms
            .iter()
            .filter(|(room, state)| state.joined && only_room.is_none_or(|only| only == **room))
            .map(|(room, _)| *room)
            .collect();
        for room in rooms {
            let user = self.plans[room as usize]
                .members
                .iter()
                .find(|(member, _)| *member == server)
                .map(|(_, user)| *user);
            if let Some(user) = user {
                self.attacker_messages(server, room, user, count, ts_ms, &server_key);
            }
        }
    }

    fn attacker_messages(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        user: u32,
        count: u32,
        ts_ms: i64,
        server_key: &ServerSigningKey,
    ) {
        let version = self.version;
        let mut pdus = Vec::new();
        for n in 0..count {
            let hs = &mut self.servers[server as usize];
            let state = hs.rooms.get_mut(&room).expect("listed");
            let sender = member_id(&version, &hs.name, &hs.users, state, user);
            let Ok(draft) = state.state.draft_event(
                &sender,
                "m.room.message",
                None,
                json!({"msgtype": "m.text", "body": format!("attacker {n} at {ts_ms}")}),
                ts_ms,
            ) else {
                continue;
            };
            let member_key = self
                .attacker
                .member_keys
                .get(&(room, sender.clone()))
                .cloned();
            let signer = match &member_key {
                Some(member_key) if version.member_keys => EventSigner::Member {
                    member_key,
                    cosigner: None,
                },
                _ => EventSigner::Server {
                    server_name: &self.servers[server as usize].name,
                    key: server_key,
                },
            };
            let Ok(pdu) = build_pdu(draft, &version, signer) else {
                continue;
            };
            self.events_signed += 1;
            self.attacker.events.insert(pdu.event_id.clone());
            self.counters.attacker_messages_sent += 1;
            pdus.push(self.remember(pdu));
        }
        if pdus.is_empty() {
            return;
        }
        for destination in self.residents(server, room) {
            if destination != server {
                self.dispatch(
                    server,
                    destination,
                    Purpose::AttackerSend,
                    Body::AttackerSend(pdus.clone()),
                );
            }
        }
    }
}

/// fedsim's `/get_missing_events` walk: from the `missing` events (included) back along
/// `prev_events`, not past `known`, at most [`MISSING_EVENTS_LIMIT`] events, in the responder's
/// DAG order (parents first).
fn walk_missing(
    state: &RoomState,
    missing: &[EventId],
    known: &[EventId],
    min_depth: i64,
    wire: &HashMap<EventId, Arc<Value>>,
) -> Vec<Arc<Value>> {
    let known: BTreeSet<&str> = known.iter().map(String::as_str).collect();
    let dag = state.dag();
    let mut found: BTreeSet<u32> = BTreeSet::new();
    let mut queue: VecDeque<&str> = missing.iter().map(String::as_str).collect();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    while let Some(id) = queue.pop_front() {
        if found.len() >= MISSING_EVENTS_LIMIT {
            break;
        }
        if known.contains(id) || !seen.insert(id) {
            continue;
        }
        let Some(index) = dag.index(id) else {
            continue;
        };
        // Outliers have no place in the graph to serve; the spec's `min_depth` bounds the walk.
        if dag.is_outlier(index) || dag.event(index).depth < min_depth {
            continue;
        }
        found.insert(index);
        for prev in &dag.event(index).prev_events {
            queue.push_back(prev);
        }
    }
    found
        .into_iter()
        .map(|index| wire_copy(wire, dag.event(index)))
        .collect()
}

/// The shared wire copy of a held event (every event is made in the world, and servers hold the
/// copy they were sent); a fresh copy if it is somehow unknown.
fn wire_copy(wire: &HashMap<EventId, Arc<Value>>, pdu: &crate::matrix::Pdu) -> Arc<Value> {
    wire.get(&pdu.event_id)
        .cloned()
        .unwrap_or_else(|| Arc::clone(&pdu.json))
}

/// The wire size of a shared copy: remembered for the world's own copies, else computed.
fn copy_bytes(copy: &Arc<Value>, sizes: &HashMap<usize, u64>) -> u64 {
    sizes
        .get(&(Arc::as_ptr(copy) as usize))
        .copied()
        .unwrap_or_else(|| json_bytes(copy))
}

fn body_bytes(body: &Body, sizes: &HashMap<usize, u64>) -> u64 {
    match body {
        Body::Send(pdus) | Body::AttackerSend(pdus) | Body::Push(pdus) => {
            pdus.iter().map(|pdu| copy_bytes(pdu, sizes)).sum::<u64>() + 64
        }
        Body::SendJoin { pdu, .. } => copy_bytes(pdu, sizes) + 64,
        Body::GetMissing { missing, known, .. } => {
            missing
                .iter()
                .chain(known)
                .map(|id| id.len() as u64 + 3)
                .sum::<u64>()
                + 64
        }
        Body::Extremities { ids, .. } | Body::Backfill { from: ids, .. } => {
            ids.iter().map(|id| id.len() as u64 + 3).sum::<u64>() + 64
        }
        Body::State { event_id, .. } | Body::StateIds { event_id, .. } => {
            event_id.len() as u64 + 128
        }
        Body::MakeJoin { .. }
        | Body::EventFetch { .. }
        | Body::Key { .. }
        | Body::NotaryQuery { .. } => 128,
    }
}

fn reply_bytes(reply: &Reply, sizes: &HashMap<usize, u64>) -> u64 {
    match reply {
        Reply::Ack => 16,
        Reply::Template(draft) => {
            let ids: u64 = draft
                .prev_events
                .iter()
                .chain(&draft.auth_events)
                .map(|id| id.len() as u64 + 3)
                .sum();
            ids + json_bytes(&draft.content) + 256
        }
        Reply::Events(events) => {
            events
                .iter()
                .map(|event| copy_bytes(event, sizes))
                .sum::<u64>()
                + 32
        }
        Reply::Keys(body) => body.len() as u64,
        Reply::StateIds { state, auth_chain } => {
            let ids: u64 = state
                .values()
                .chain(auth_chain)
                .map(|id| id.len() as u64 + 3)
                .sum();
            ids + 32
        }
        Reply::State { state, events } => {
            let ids: u64 = state
                .iter()
                .map(|((event_type, key), id)| (event_type.len() + key.len() + id.len() + 8) as u64)
                .sum();
            ids + events
                .iter()
                .map(|event| copy_bytes(event, sizes))
                .sum::<u64>()
                + 32
        }
        // About the size of a signed key response with an old key or two.
        Reply::NotaryKeys(_) => notary::NOTARY_ANSWER_BYTES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old inline reads `account` and `requery_if_stale_claim` did on every receipt.
    fn read_inline(json: &Value) -> (bool, bool) {
        let message = json.get("type").and_then(Value::as_str) == Some("m.room.message");
        let own_member = json
            .get("sender")
            .and_then(Value::as_str)
            .is_some_and(|sender| {
                json.get("type").and_then(Value::as_str) == Some("m.room.member")
                    && json.get("state_key").and_then(Value::as_str) == Some(sender)
            });
        (message, own_member)
    }

    #[test]
    fn wire_facts_answer_as_the_json_does_for_wire_copies_and_others() {
        let copies = [
            json!({"type": "m.room.message", "sender": "@a:hs1.example", "content": {}}),
            json!({"type": "m.room.member", "sender": "@a:hs1.example",
                   "state_key": "@a:hs1.example", "content": {"domain": "hs1.example"},
                   "signatures": {"hs1.example": {"ed25519:1": "x"}}}),
            json!({"type": "m.room.member", "sender": "@a:hs1.example",
                   "state_key": "@b:hs1.example", "content": {}}),
            json!({"type": "m.room.member", "state_key": "@a:hs1.example"}),
            json!({"type": 5, "sender": "@a:hs1.example"}),
            json!("not an object"),
        ];
        for member_keys in [false, true] {
            let mut facts: HashMap<usize, WireFacts, crate::matrix::dag::IdHasher> =
                HashMap::default();
            let wire: Vec<Arc<Value>> = copies.iter().cloned().map(Arc::new).collect();
            for copy in &wire {
                facts.insert(
                    Arc::as_ptr(copy) as usize,
                    WireFacts::read(member_keys, copy),
                );
            }
            for (copy, json) in wire.iter().zip(&copies) {
                let elsewhere = Arc::new(json.clone());
                for probe in [copy, &elsewhere] {
                    let message = WireFacts::of(&facts, probe, |f| f.message, is_message);
                    let own = WireFacts::of(
                        &facts,
                        probe,
                        |f| f.own_member_sender.as_deref().map(str::to_owned),
                        |json| own_member_sender(json).map(str::to_owned),
                    );
                    assert_eq!((message, own.is_some()), read_inline(json), "{json}");
                    let sender = json.get("sender").and_then(Value::as_str);
                    assert_eq!(own.as_deref(), sender.filter(|_| own.is_some()), "{json}");
                    let question = WireFacts::of(
                        &facts,
                        probe,
                        |f| f.key_question.clone(),
                        |json| key_question(member_keys, json),
                    );
                    assert_eq!(question, key_question(member_keys, json), "{json}");
                }
            }
        }
    }
}
