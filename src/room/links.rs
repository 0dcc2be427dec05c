//! One homeserver's MSC4430 member link table: for each member key, whether the link to the
//! claimed `@localpart:domain` is verified, and the history of how it got there.
//!
//! State machine (domain.md §1.4–§1.6, §8):
//!
//! ```text
//! unknown --member event seen, no keys held for its domain--> pending
//! verified --a newer member event (a new claim), no keys held for its domain--> pending
//! unknown/pending/unverified --co-signature by a current key of the domain--> verified
//! unknown/pending --co-signature missing, bad or by a non-current key--> unverified
//! pending --the domain's keys cannot be fetched--> unverified
//! verified --the verifying key is invalidated (per InvalidationRule)--> unverified
//! unverified --new keys verify the held event, or a re-signed copy arrives--> verified
//! ```
//!
//! An unverified link stays unverified when a new claim waits for keys (it is re-checked when
//! they arrive): naming a domain whose keys are not held must not turn a revoked link pending.
//!
//! Every transition is recorded with its reason and the time (simulated ms). The table is an
//! input-driven state machine: it never reads a clock and never fetches; the key layer tells it
//! when keys arrive, cannot be fetched, or become invalid.
//!
//! Which event carries a member's link claim: its own `m.room.member` events (`state_key ==
//! sender`). A later one replaces an earlier one (by `origin_server_ts`, then arrival); a copy
//! with the same event ID (re-signed after a rotation) replaces the held JSON.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use smallvec::SmallVec;

use super::intern::intern;
use super::keys::HeldKeys;
use super::policy::InvalidationRule;
use super::shared::SharedEventFacts;
use crate::matrix::dag::IdHasher;
use crate::matrix::member_keys::{self, LinkOutcome};
use crate::matrix::pdu::MemberLinkStrings;
use crate::matrix::server_keys::ServerKeys;
use crate::matrix::{Pdu, RoomVersion};
use crate::server::outcome_table::InvalidReason;

/// Where a link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LinkStatus {
    /// No member event of this key has been seen.
    Unknown,
    /// A member event was seen; the domain's keys are not held yet.
    Pending,
    /// A current key of the claimed domain co-signed the member event.
    Verified,
    /// The link could not be verified, or its verification was withdrawn.
    Unverified,
}

/// Why a key is no longer valid (the key layer's verdict on a re-check, domain.md §1.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyInvalidation {
    /// 200, the key moved to `old_verify_keys` with this `expired_ts`.
    MovedToOld { expired_ts_ms: i64 },
    /// 200, the key is listed nowhere.
    Absent,
    /// 200, the same key ID now has different key bytes.
    Replaced,
    /// 200, but `valid_until_ts` is already in the past.
    ValidUntilPast { valid_until_ms: i64 },
    /// 404 Not Found from the key endpoint.
    NotFound,
    /// 200 with a body that does not parse or whose self-signature fails (gap A2, when the
    /// policy chooses to invalidate).
    BadResponse,
    /// Fail-closed (P2): the key's validity passed without a successful re-fetch.
    ExpiredUnreachable { valid_until_ms: i64 },
}

impl KeyInvalidation {
    /// For an expiry rather than a revocation: the last `origin_server_ts` the key still vouches
    /// for under "expiry is not revocation" (P7).
    pub fn expiry_bound_ms(&self) -> Option<i64> {
        match *self {
            KeyInvalidation::MovedToOld { expired_ts_ms } => Some(expired_ts_ms),
            KeyInvalidation::ValidUntilPast { valid_until_ms }
            | KeyInvalidation::ExpiredUnreachable { valid_until_ms } => Some(valid_until_ms),
            KeyInvalidation::Absent
            | KeyInvalidation::Replaced
            | KeyInvalidation::NotFound
            | KeyInvalidation::BadResponse => None,
        }
    }
}

impl KeyInvalidation {
    /// Translates the key layer's verdict (`server::key_cache::Decision::Invalidated`) for the
    /// tracked key `key_id`: `response` is the key object the re-check returned (if it returned
    /// one), `tracked_valid_until_ms` the clamped validity of the cached response, both in the
    /// absolute milliseconds key objects use.
    pub fn from_key_layer(
        reason: InvalidReason,
        key_id: &str,
        response: Option<&ServerKeys>,
        tracked_valid_until_ms: i64,
    ) -> KeyInvalidation {
        match reason {
            InvalidReason::MovedToOld => KeyInvalidation::MovedToOld {
                expired_ts_ms: response
                    .and_then(|keys| keys.old_verify_keys.get(key_id))
                    .map_or(tracked_valid_until_ms, |old| old.expired_ts_ms),
            },
            InvalidReason::Absent => KeyInvalidation::Absent,
            InvalidReason::DifferentBytes => KeyInvalidation::Replaced,
            InvalidReason::ExpiredInResponse => KeyInvalidation::ValidUntilPast {
                valid_until_ms: response
                    .map_or(tracked_valid_until_ms, |keys| keys.valid_until_ts_ms),
            },
            InvalidReason::NotFound => KeyInvalidation::NotFound,
            InvalidReason::UnreachableAfterExpiry => KeyInvalidation::ExpiredUnreachable {
                valid_until_ms: tracked_valid_until_ms,
            },
            InvalidReason::Malformed => KeyInvalidation::BadResponse,
        }
    }
}

/// Why a link changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
///
/// Strings are interned (`room::intern`): every link table of a world shares one copy.
pub enum LinkReason {
    /// A member event claiming the domain was seen; its keys are not held.
    AwaitingKeys {
        event_id: Arc<str>,
        domain: Arc<str>,
    },
    /// A current key of the domain co-signed the member event.
    Cosigned {
        event_id: Arc<str>,
        domain: Arc<str>,
        key_id: Arc<str>,
    },
    /// Checking the co-signature failed (missing, bad, or only non-current keys).
    CosignatureFailed {
        event_id: Arc<str>,
        outcome: Box<LinkOutcome>,
    },
    /// The domain's keys could not be fetched while the link was pending.
    KeysUnavailable { domain: Arc<str> },
    /// The key that verified the link was invalidated.
    KeyInvalidated {
        domain: Arc<str>,
        key_id: Arc<str>,
        invalidation: Box<KeyInvalidation>,
    },
}

/// One state change of a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkTransition {
    pub from: LinkStatus,
    pub to: LinkStatus,
    pub reason: LinkReason,
    pub at_ms: i64,
}

/// One member key's link.
#[derive(Debug, Clone)]
pub struct Link {
    /// Interned (shared by every table that knows the member).
    pub member_key: Arc<str>,
    pub status: LinkStatus,
    /// The member event whose claim the link is about (the held copy, possibly re-signed).
    pub member_event: Option<Arc<Pdu>>,
    /// `content.domain` of that event (interned).
    pub domain: Option<Arc<str>>,
    /// `content.localpart` of that event (absent once redacted; interned).
    pub localpart: Option<Arc<str>>,
    /// The `(domain, key ID)` that verified the link, while verified (interned).
    pub verified_by: Option<(Arc<str>, Arc<str>)>,
    /// P7: after an expiry, the link still vouches for events sent up to this time.
    pub vouches_until_ms: Option<i64>,
    /// Every transition, oldest first. Most links change once (unknown to verified), so the
    /// first transition lives in the link itself rather than in an allocation of its own.
    pub transitions: SmallVec<[LinkTransition; 1]>,
}

impl Link {
    fn new(member_key: Arc<str>) -> Link {
        Link {
            member_key,
            status: LinkStatus::Unknown,
            member_event: None,
            domain: None,
            localpart: None,
            verified_by: None,
            vouches_until_ms: None,
            transitions: SmallVec::new(),
        }
    }

    /// The verified user ID `@localpart:domain`, if the link is verified and names both.
    pub fn user_id(&self) -> Option<String> {
        if self.status != LinkStatus::Verified {
            return None;
        }
        Some(format!(
            "@{}:{}",
            self.localpart.as_deref()?,
            self.domain.as_deref()?
        ))
    }
}

/// How the link table judges a sender for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkVerdict {
    /// The link is verified (or, under P7, still vouches for the event's timestamp).
    Verified,
    /// No verdict yet: the link is unknown or pending.
    Pending,
    /// The link is unverified.
    Unverified,
}

/// The links each key verified: `(domain, key ID)`, interned, to the member keys whose link it
/// verified. Lookup-only; one key's members are kept sorted. Hashed rather than one ordered
/// set of `(domain, key ID, member)` triples: inserting into that set compared interned
/// strings node after node on every verification.
type VerifiedByKey = hashbrown::HashMap<(Arc<str>, Arc<str>), Members, IdHasher>;

/// A borrowed `(domain, key ID)` that finds its entry in [`VerifiedByKey`] (it hashes as the
/// owned pair does: one string, then the other).
#[derive(Hash)]
struct VerifierKey<'a>(&'a str, &'a str);

impl hashbrown::Equivalent<(Arc<str>, Arc<str>)> for VerifierKey<'_> {
    fn equivalent(&self, key: &(Arc<str>, Arc<str>)) -> bool {
        *key.0 == *self.0 && *key.1 == *self.1
    }
}

/// Member keys in ascending order, the usual single one kept inline (most servers have one
/// member in a room, so most keys verified one link in a given table).
#[derive(Debug, Clone)]
enum Members {
    One(Arc<str>),
    Many(Vec<Arc<str>>),
}

impl Members {
    fn as_slice(&self) -> &[Arc<str>] {
        match self {
            Members::One(member) => std::slice::from_ref(member),
            Members::Many(members) => members,
        }
    }

    /// Adds `member` if absent.
    fn insert(&mut self, member: &Arc<str>) {
        let position = match self.as_slice().binary_search(member) {
            Ok(_) => return,
            Err(position) => position,
        };
        let mut members = match std::mem::replace(self, Members::Many(Vec::new())) {
            Members::One(held) => vec![held],
            Members::Many(held) => held,
        };
        members.insert(position, Arc::clone(member));
        *self = Members::Many(members);
    }

    /// Removes `member` if present; whether none is left.
    fn remove(&mut self, member: &str) -> bool {
        match self {
            Members::One(held) => **held == *member,
            Members::Many(members) => {
                if let Ok(position) = members.binary_search_by(|held| (**held).cmp(member)) {
                    members.remove(position);
                }
                members.is_empty()
            }
        }
    }
}

/// One server's count, per domain, of its rooms' link tables that hold an unsettled link (not
/// verified) claiming that domain. A key fetch of a domain can change links only in those
/// rooms, so a server whose count for the domain is zero (every link verified: the steady
/// state) skips its rooms without touching them. Shared by the server's link tables, which
/// keep it exact as their unsettled index gains and loses domains (also when a table is
/// cloned or dropped).
#[derive(Debug, Clone, Default)]
pub struct UnsettledTally(Arc<Mutex<HashMap<Arc<str>, u32, IdHasher>>>);

impl UnsettledTally {
    /// Whether some link table of the server holds an unsettled link claiming `domain`.
    pub fn any_claiming(&self, domain: &str) -> bool {
        self.counts().contains_key(domain)
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, u32, IdHasher>> {
        // A panic elsewhere cannot leave a count half-updated: every update is one statement.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, domain: &Arc<str>) {
        *self.counts().entry(Arc::clone(domain)).or_default() += 1;
    }

    fn remove(&self, domain: &str) {
        let mut counts = self.counts();
        let count = counts
            .get_mut(domain)
            .expect("a domain leaves a tally it entered");
        *count -= 1;
        if *count == 0 {
            counts.remove(domain);
        }
    }
}

/// Unsettled member keys by the domain they claim (see [`LinkTable`]), reported to the
/// server's [`UnsettledTally`] if one is set.
#[derive(Debug, Default)]
struct UnsettledByDomain {
    members: HashMap<Arc<str>, BTreeSet<Arc<str>>, IdHasher>,
    tally: Option<UnsettledTally>,
}

impl UnsettledByDomain {
    fn get(&self, domain: &str) -> Option<&BTreeSet<Arc<str>>> {
        self.members.get(domain)
    }

    /// Adds `member_key` under `domain`.
    fn insert(&mut self, domain: &Arc<str>, member_key: &Arc<str>) {
        let members = self.members.entry(Arc::clone(domain)).or_insert_with(|| {
            if let Some(tally) = &self.tally {
                tally.add(domain);
            }
            BTreeSet::new()
        });
        members.insert(Arc::clone(member_key));
    }

    /// Removes `member_key` from the unsettled members of `domain`, and the domain's entry
    /// once it has none (so an empty map means "every link is verified").
    fn remove(&mut self, domain: &str, member_key: &str) {
        if let Some(members) = self.members.get_mut(domain) {
            members.remove(member_key);
            if members.is_empty() {
                self.members.remove(domain);
                if let Some(tally) = &self.tally {
                    tally.remove(domain);
                }
            }
        }
    }

    /// Reports to `tally` from now on (the domains held so far enter it).
    fn set_tally(&mut self, tally: Option<UnsettledTally>) {
        self.leave_tally();
        if let Some(tally) = &tally {
            for domain in self.members.keys() {
                tally.add(domain);
            }
        }
        self.tally = tally;
    }

    fn leave_tally(&mut self) {
        if let Some(tally) = self.tally.take() {
            for domain in self.members.keys() {
                tally.remove(domain);
            }
        }
    }
}

impl Clone for UnsettledByDomain {
    fn clone(&self) -> Self {
        let mut clone = UnsettledByDomain {
            members: self.members.clone(),
            tally: None,
        };
        clone.set_tally(self.tally.clone());
        clone
    }
}

impl Drop for UnsettledByDomain {
    fn drop(&mut self) {
        self.leave_tally();
    }
}

/// A [`LinkTable`] entry: the link's status (what every event received asks) beside the key,
/// the rest of the link boxed. A table holds one per member per server per room and grows by
/// doubling; with the whole 136-byte [`Link`] inline, a slot was 152 bytes and every growth
/// moved them all (docs/notes/perf.md session 20). `status` always equals `link.status`: only
/// [`LinkSlot::set_status`] changes either. The other fields are reached through `Deref`.
#[derive(Debug, Clone)]
struct LinkSlot {
    status: LinkStatus,
    link: Box<Link>,
}

impl LinkSlot {
    fn new(member_key: Arc<str>) -> LinkSlot {
        let link = Link::new(member_key);
        LinkSlot {
            status: link.status,
            link: Box::new(link),
        }
    }

    /// Sets the status in both places it is kept.
    fn set_status(&mut self, status: LinkStatus) {
        self.status = status;
        self.link.status = status;
    }
}

impl std::ops::Deref for LinkSlot {
    type Target = Link;

    fn deref(&self) -> &Link {
        &self.link
    }
}

impl std::ops::DerefMut for LinkSlot {
    fn deref_mut(&mut self) -> &mut Link {
        &mut self.link
    }
}

/// One server's member link table.
#[derive(Debug, Clone)]
pub struct LinkTable {
    invalidation: InvalidationRule,
    /// By member key. A hash map (lookup by the 44-character key: every event a server accepts
    /// asks for its sender's link) whose order reaches nothing: [`LinkTable::links`] sorts.
    links: HashMap<Arc<str>, LinkSlot, IdHasher>,
    /// `(domain, key ID)` -> member keys whose link that key verified.
    verified_by_key: VerifiedByKey,
    /// domain -> member keys claiming it whose link is not verified: the only ones a key
    /// arrival or a failed fetch can change. Kept to those so that the common answer to "keys
    /// of this domain arrived" in a room where every link is verified costs one lookup in an
    /// empty map (a key answer reaches every room of the server, once a day per domain under
    /// P1). Maintained by [`reindex_unsettled`] after every status or domain change. Looked up
    /// by domain only (each set is ordered by member key).
    unsettled_by_domain: UnsettledByDomain,
    /// If set, co-signature checks are shared with other servers (see [`super::shared`]).
    shared: Option<SharedEventFacts>,
    /// How many times a link's status has changed: what a reader caching something derived
    /// from statuses compares (see [`LinkTable::status_changes`]).
    status_changes: u64,
}

impl LinkTable {
    /// An empty table whose key invalidations follow `invalidation`.
    pub fn new(invalidation: InvalidationRule) -> LinkTable {
        LinkTable {
            invalidation,
            links: HashMap::default(),
            verified_by_key: VerifiedByKey::default(),
            unsettled_by_domain: UnsettledByDomain::default(),
            shared: None,
            status_changes: 0,
        }
    }

    /// Reports which domains this table's unsettled links claim to the server's `tally` (see
    /// [`UnsettledTally`]), or stops reporting (`None`).
    pub fn set_unsettled_tally(&mut self, tally: Option<UnsettledTally>) {
        self.unsettled_by_domain.set_tally(tally);
    }

    /// Shares co-signature checks with every table and room given (a clone of) `facts`, or
    /// stops sharing (`None`). Results are the same either way.
    pub fn set_shared_facts(&mut self, facts: Option<SharedEventFacts>) {
        self.shared = facts;
    }

    /// The link of `member_key`, if anything is known about it.
    pub fn link(&self, member_key: &str) -> Option<&Link> {
        self.links.get(member_key).map(|slot| &*slot.link)
    }

    /// Every link, ordered by member key.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        let mut links: Vec<(&Arc<str>, &Link)> = self
            .links
            .iter()
            .map(|(member_key, slot)| (member_key, &*slot.link))
            .collect();
        links.sort_unstable_by_key(|(member_key, _)| *member_key);
        links.into_iter().map(|(_, link)| link)
    }

    /// A count that moves whenever any link's status changes (and only then): every answer of
    /// [`LinkTable::status`] is the same as long as this is.
    pub fn status_changes(&self) -> u64 {
        self.status_changes
    }

    /// The status of `member_key`'s link.
    pub fn status(&self, member_key: &str) -> LinkStatus {
        self.links
            .get(member_key)
            .map_or(LinkStatus::Unknown, |link| link.status)
    }

    /// How the link of `member_key` judges an event it sent at `origin_server_ts_ms`.
    pub fn verdict(&self, member_key: &str, origin_server_ts_ms: i64) -> LinkVerdict {
        self.verdict_with_status(self.status(member_key), member_key, origin_server_ts_ms)
    }

    /// [`LinkTable::verdict`] for a member whose link `status` the caller has just read (the
    /// table unchanged since): the link is read again only if it is unverified (for its P7
    /// bound), not once more per event received.
    pub fn verdict_with_status(
        &self,
        status: LinkStatus,
        member_key: &str,
        origin_server_ts_ms: i64,
    ) -> LinkVerdict {
        match status {
            LinkStatus::Verified => LinkVerdict::Verified,
            LinkStatus::Unknown | LinkStatus::Pending => LinkVerdict::Pending,
            LinkStatus::Unverified => {
                let vouches_until_ms = self
                    .links
                    .get(member_key)
                    .and_then(|link| link.vouches_until_ms);
                match vouches_until_ms {
                    Some(until_ms) if origin_server_ts_ms <= until_ms => LinkVerdict::Verified,
                    _ => LinkVerdict::Unverified,
                }
            }
        }
    }

    /// The MSC4428 `member_info` entry: the verified user ID, or `None` (`null`).
    pub fn user_id(&self, member_key: &str) -> Option<String> {
        self.links.get(member_key).and_then(|slot| slot.user_id())
    }

    /// The member keys whose link the key `(domain, key_id)` verified.
    pub fn verified_by(&self, domain: &str, key_id: &str) -> Vec<String> {
        self.verified_by_members(domain, key_id)
            .iter()
            .map(|member| member.to_string())
            .collect()
    }

    /// A member event was accepted into a room (PDU checks 1–5 passed). If it is the member's own
    /// event (`state_key == sender`, see [`claims_link`]), it becomes the link's claim when it is
    /// newer than the held one (or the same event re-signed), and is checked: against `keys`
    /// (the keys held for `content.domain`) if given, else the link turns pending. Returns the
    /// link's status after.
    ///
    /// Every server observes every member event of its rooms (live, and the whole membership
    /// at its own join), so this looks the member up once to update the claim and once to
    /// record a check, and re-indexes the unsettled links once, at the end: a new member
    /// verified at once never enters the unsettled index only to leave it again.
    pub fn observe_member_event(
        &mut self,
        version: &RoomVersion,
        event: &Arc<Pdu>,
        keys: Option<HeldKeys<'_>>,
        now_ms: i64,
    ) -> LinkStatus {
        if !claims_link(event) {
            return self.status(&event.sender);
        }
        let strings = link_strings(event);
        // One lookup for a known member.
        let link = match self.links.get_mut(event.sender.as_str()) {
            Some(link) => link,
            None => {
                let member_key = Arc::clone(&strings.member_key);
                self.links
                    .entry(Arc::clone(&member_key))
                    .or_insert_with(|| LinkSlot::new(member_key))
            }
        };
        // The same event again (a re-signed copy): its ID covers its content hash, so the claim
        // (domain and localpart) is the one already judged.
        let same_event = link
            .member_event
            .as_ref()
            .is_some_and(|held| held.event_id == event.event_id);
        let replaces = match &link.member_event {
            None => true,
            Some(held) => same_event || held.origin_server_ts <= event.origin_server_ts,
        };
        if !replaces {
            return link.status;
        }
        let member_key = Arc::clone(&link.member_key);
        let domain = strings.domain.clone();
        if let Some(old_domain) = link.domain.take()
            && Some(&old_domain) != domain.as_ref()
        {
            self.unsettled_by_domain.remove(&old_domain, &member_key);
        }
        link.localpart = strings.localpart.clone();
        link.domain = domain.clone();
        link.member_event = Some(Arc::clone(event));
        match (domain, keys) {
            (Some(domain), None) => {
                // The claim waits for the domain's keys. A verified link keeps its status only
                // for the claim it verified: a new claim (another domain or localpart) is
                // unchecked, and showing it or applying server ACLs to it would trust what
                // nobody verified. An unverified link stays unverified: a revoked member key
                // must not escape soft-failing by naming a domain whose keys are not held
                // (pending links deliver under P1). The keys' arrival checks the claim.
                let keeps_status = match link.status {
                    LinkStatus::Verified => same_event,
                    LinkStatus::Unverified => true,
                    LinkStatus::Unknown | LinkStatus::Pending => false,
                };
                if !keeps_status {
                    let reason = LinkReason::AwaitingKeys {
                        event_id: Arc::clone(&strings.event_id),
                        domain,
                    };
                    unindex_verifier(&mut self.verified_by_key, link);
                    record_transition(
                        link,
                        &mut self.status_changes,
                        LinkStatus::Pending,
                        reason,
                        now_ms,
                    );
                }
                reindex_unsettled(&mut self.unsettled_by_domain, link);
                link.status
            }
            (Some(_), Some(keys)) => {
                let outcome = self.judge(version, event, keys, now_ms);
                self.record_check(version, &member_key, event, keys, outcome, now_ms)
            }
            (None, _) => {
                let reason = LinkReason::CosignatureFailed {
                    event_id: Arc::clone(&strings.event_id),
                    outcome: Box::new(LinkOutcome::NoLinkClaimed),
                };
                unindex_verifier(&mut self.verified_by_key, link);
                record_transition(
                    link,
                    &mut self.status_changes,
                    LinkStatus::Unverified,
                    reason,
                    now_ms,
                );
                // Without a domain the link is in no domain's unsettled set.
                link.status
            }
        }
    }

    /// The keys of `domain` are now held (first fetch, or a re-fetch after a rotation): every
    /// link claiming the domain that is not verified is checked against them.
    pub fn keys_available(
        &mut self,
        version: &RoomVersion,
        domain: &str,
        keys: HeldKeys<'_>,
        now_ms: i64,
    ) -> Vec<String> {
        let mut changed = Vec::new();
        for member_key in self.unsettled_members_claiming(domain) {
            let Some((interned, event, before)) =
                self.links.get(member_key.as_str()).and_then(|link| {
                    let event = link.member_event.clone()?;
                    Some((Arc::clone(&link.member_key), event, link.status))
                })
            else {
                continue;
            };
            let outcome = self.judge(version, &event, keys, now_ms);
            let after = self.record_check(version, &interned, &event, keys, outcome, now_ms);
            if after != before {
                changed.push(member_key);
            }
        }
        changed
    }

    /// The keys of `domain` could not be fetched: pending links claiming it become unverified.
    pub fn keys_unavailable(&mut self, domain: &str, now_ms: i64) -> Vec<String> {
        let mut changed = Vec::new();
        for member_key in self.unsettled_members_claiming(domain) {
            if self.status(&member_key) == LinkStatus::Pending {
                let reason = LinkReason::KeysUnavailable {
                    domain: intern(domain),
                };
                self.transition(&member_key, LinkStatus::Unverified, reason, now_ms);
                changed.push(member_key);
            }
        }
        changed
    }

    /// The key `(domain, key_id)` is no longer valid. Under [`InvalidationRule::RevokeAll`] every
    /// link it verified becomes unverified; under [`InvalidationRule::ExpiryIsNotRevocation`]
    /// they do too, but an expiry leaves them vouching for events sent up to the expiry bound;
    /// under [`InvalidationRule::Never`] nothing changes. Returns the member keys that changed,
    /// in order (the candidates for a directed re-query).
    pub fn key_invalidated(
        &mut self,
        domain: &str,
        key_id: &str,
        invalidation: KeyInvalidation,
        now_ms: i64,
    ) -> Vec<String> {
        if self.invalidation == InvalidationRule::Never {
            return Vec::new();
        }
        let vouches_until_ms = match self.invalidation {
            InvalidationRule::ExpiryIsNotRevocation => invalidation.expiry_bound_ms(),
            InvalidationRule::RevokeAll | InvalidationRule::Never => None,
        };
        let (domain, key_id) = (intern(domain), intern(key_id));
        // Every link the key verified turns unverified: its whole entry goes.
        let affected = self
            .verified_by_key
            .remove(&VerifierKey(&domain, &key_id))
            .map(|members| members.as_slice().to_vec())
            .unwrap_or_default();
        let mut changed = Vec::with_capacity(affected.len());
        for member_key in affected {
            let reason = LinkReason::KeyInvalidated {
                domain: Arc::clone(&domain),
                key_id: Arc::clone(&key_id),
                invalidation: Box::new(invalidation.clone()),
            };
            self.transition(&member_key, LinkStatus::Unverified, reason, now_ms);
            if let Some(link) = self.links.get_mut(&member_key) {
                link.vouches_until_ms = vouches_until_ms;
            }
            changed.push(member_key.to_string());
        }
        changed
    }

    /// The member keys claiming `domain` whose link is not verified, ordered by member key.
    fn unsettled_members_claiming(&self, domain: &str) -> Vec<String> {
        self.unsettled_by_domain
            .get(domain)
            .map(|members| members.iter().map(|member| member.to_string()).collect())
            .unwrap_or_default()
    }

    /// The member keys whose link the key `(domain, key_id)` verified, ascending.
    fn verified_by_members(&self, domain: &str, key_id: &str) -> &[Arc<str>] {
        self.verified_by_key
            .get(&VerifierKey(domain, key_id))
            .map_or(&[], Members::as_slice)
    }

    /// What a check of the member event `event` against `keys` concludes (shared with the
    /// world's other tables if this one shares its facts).
    fn judge(
        &self,
        version: &RoomVersion,
        event: &Arc<Pdu>,
        keys: HeldKeys<'_>,
        now_ms: i64,
    ) -> LinkOutcome {
        let now_for_keys_ms = keys.currency_check_time_ms(now_ms);
        match &self.shared {
            Some(facts) => {
                facts.member_link(version, event, keys.keys, now_for_keys_ms, keys.clamp)
            }
            None => member_keys::verify_member_link(
                version,
                &event.json,
                keys.keys,
                now_for_keys_ms,
                keys.clamp,
            ),
        }
    }

    /// Records `outcome`, the check of `member_key`'s held member event `event` against `keys`:
    /// the verifier index, the link's transition and its place in the unsettled index (one
    /// lookup of the link). Returns the link's status after.
    fn record_check(
        &mut self,
        version: &RoomVersion,
        member_key: &Arc<str>,
        event: &Pdu,
        keys: HeldKeys<'_>,
        outcome: LinkOutcome,
        now_ms: i64,
    ) -> LinkStatus {
        let LinkTable {
            invalidation,
            links,
            verified_by_key,
            unsettled_by_domain,
            status_changes,
            ..
        } = self;
        let link = links
            .get_mut(&**member_key)
            .expect("a checked link is held");
        let strings = link_strings(event);
        let previous_verifier = unindex_verifier(verified_by_key, link);
        match outcome {
            LinkOutcome::Verified { key_id } => {
                // A verified co-signature names a domain: the claim is there.
                let domain = strings.domain.clone().unwrap_or_else(|| intern(""));
                // An interned key ID this table already holds is reused: the link's previous
                // verifier (a re-check by the same key), else the index's entry for the key.
                let key_id = match previous_verifier {
                    Some((_, held)) if *held == *key_id => held,
                    _ => match verified_by_key.get_key_value(&VerifierKey(&domain, &key_id)) {
                        Some(((_, held), _)) => Arc::clone(held),
                        None => intern(&key_id),
                    },
                };
                let reason = LinkReason::Cosigned {
                    event_id: Arc::clone(&strings.event_id),
                    domain: Arc::clone(&domain),
                    key_id: Arc::clone(&key_id),
                };
                match verified_by_key.get_mut(&VerifierKey(&domain, &key_id)) {
                    Some(members) => members.insert(member_key),
                    None => {
                        verified_by_key.insert(
                            (Arc::clone(&domain), Arc::clone(&key_id)),
                            Members::One(Arc::clone(member_key)),
                        );
                    }
                }
                link.verified_by = Some((domain, key_id));
                link.vouches_until_ms = None;
                record_transition(link, status_changes, LinkStatus::Verified, reason, now_ms);
            }
            outcome => {
                let vouches_until_ms = match (&outcome, *invalidation) {
                    (
                        LinkOutcome::NoCurrentKey { key_id, .. },
                        InvalidationRule::ExpiryIsNotRevocation,
                    ) => old_key_vouches_until_ms(version, event, keys, key_id),
                    _ => None,
                };
                let reason = LinkReason::CosignatureFailed {
                    event_id: Arc::clone(&strings.event_id),
                    outcome: Box::new(outcome),
                };
                record_transition(link, status_changes, LinkStatus::Unverified, reason, now_ms);
                link.vouches_until_ms = vouches_until_ms;
            }
        }
        reindex_unsettled(unsettled_by_domain, link);
        link.status
    }

    /// Records a transition of a held link by key, and re-indexes it (see [`record_transition`]).
    fn transition(&mut self, member_key: &str, to: LinkStatus, reason: LinkReason, at_ms: i64) {
        let link = self
            .links
            .get_mut(member_key)
            .expect("only held links change");
        record_transition(link, &mut self.status_changes, to, reason, at_ms);
        reindex_unsettled(&mut self.unsettled_by_domain, link);
    }
}

/// Whether `event` carries its sender's link claim: the sender's own `m.room.member` event
/// (`state_key == sender`). Only those change a link ([`LinkTable::observe_member_event`]).
pub fn claims_link(event: &Pdu) -> bool {
    event.event_type == "m.room.member" && event.state_key.as_deref() == Some(event.sender.as_str())
}

/// Takes `link`'s verifier and removes the link from that key's entry in `verified_by_key`
/// (the entry goes with its last link). Returns the verifier taken.
fn unindex_verifier(
    verified_by_key: &mut VerifiedByKey,
    link: &mut Link,
) -> Option<(Arc<str>, Arc<str>)> {
    let (domain, key_id) = link.verified_by.take()?;
    let key = VerifierKey(&domain, &key_id);
    if let Some(members) = verified_by_key.get_mut(&key)
        && members.remove(&link.member_key)
    {
        verified_by_key.remove(&key);
    }
    Some((domain, key_id))
}

/// Records a transition of `link` (also a re-verification that keeps the status, so a
/// re-signed event shows in the history). The caller re-indexes the unsettled links
/// ([`reindex_unsettled`]) once it has changed all it changes.
fn record_transition(
    link: &mut LinkSlot,
    status_changes: &mut u64,
    to: LinkStatus,
    reason: LinkReason,
    at_ms: i64,
) {
    if to != LinkStatus::Verified {
        link.verified_by = None;
    }
    let from = link.status;
    if from == to
        && link
            .transitions
            .last()
            .is_some_and(|last| last.reason == reason)
    {
        return;
    }
    link.set_status(to);
    if from != to {
        *status_changes += 1;
    }
    // Most links change once or twice: grow the history one entry at a time.
    link.transitions.reserve_exact(1);
    link.transitions.push(LinkTransition {
        from,
        to,
        reason,
        at_ms,
    });
}

/// The interned strings of the member event `event` (made once per event for the world, see
/// [`Pdu::member_link_strings`]).
fn link_strings(event: &Pdu) -> &MemberLinkStrings {
    event.member_link_strings(|event| {
        let content_string = |field: &str| event.content.get(field).and_then(Value::as_str);
        MemberLinkStrings {
            member_key: intern(&event.sender),
            event_id: intern(&event.event_id),
            domain: content_string("domain").map(intern),
            localpart: content_string("localpart").map(intern),
        }
    })
}

/// Brings `link`'s entry in `unsettled_by_domain` in line with its current domain and status
/// (an entry under its previous domain is removed by the caller that changes the domain).
fn reindex_unsettled(unsettled_by_domain: &mut UnsettledByDomain, link: &Link) {
    let Some(domain) = &link.domain else {
        return;
    };
    if link.status == LinkStatus::Verified {
        unsettled_by_domain.remove(domain, &link.member_key);
    } else {
        unsettled_by_domain.insert(domain, &link.member_key);
    }
}

/// P7 at first sight (a server that meets a member event only after its co-signing key expired,
/// e.g. a newcomer backfilling history): expiry is not revocation, so a valid co-signature by a
/// key in `old_verify_keys` still vouches for the member's events sent up to the key's
/// `expired_ts` — the same bound a link verified earlier keeps when that key moves to
/// `old_verify_keys` ([`LinkTable::key_invalidated`]) — and one by an expired current key up to
/// its `valid_until_ts`. `None` if the bound is before the member event, or the signature does
/// not verify.
fn old_key_vouches_until_ms(
    version: &RoomVersion,
    event: &Pdu,
    keys: HeldKeys<'_>,
    key_id: &str,
) -> Option<i64> {
    let domain = event.content.get("domain").and_then(Value::as_str)?;
    // An old key until its expired_ts; or a current key whose validity has passed (a historic
    // key object, e.g. from a notary, of a server that is gone) until its valid_until_ts.
    let (key, until_ms) = match keys.keys.old_verify_keys.get(key_id) {
        Some(old) => (&old.key, old.expired_ts_ms),
        None => (
            keys.keys.verify_keys.get(key_id)?,
            keys.clamp
                .effective_valid_until_ms(keys.keys.valid_until_ts_ms),
        ),
    };
    if until_ms < event.origin_server_ts {
        return None;
    }
    crate::matrix::signing::verify_event_signature(version, &event.json, domain, key_id, key)
        .ok()
        .map(|()| until_ms)
}

#[cfg(test)]
mod tests {

    proptest::proptest! {
        /// One key's member list answers and lists as an ordered set of its members would.
        #[test]
        fn a_keys_members_behave_as_an_ordered_set(
            operations in proptest::collection::vec((proptest::bool::ANY, 0u8..6), 1..40)
        ) {
            let name = |n: u8| -> Arc<str> { Arc::from(format!("@m{n}:a.example")) };
            let mut members: Option<Members> = None;
            let mut model = std::collections::BTreeSet::new();
            for (add, n) in operations {
                let member = name(n);
                if add {
                    match &mut members {
                        Some(members) => members.insert(&member),
                        None => members = Some(Members::One(Arc::clone(&member))),
                    }
                    model.insert(member);
                } else if let Some(held) = &mut members {
                    if held.remove(&member) {
                        members = None;
                    }
                    model.remove(&member);
                }
                let listed = members.as_ref().map_or(&[][..], Members::as_slice);
                proptest::prop_assert!(listed.iter().eq(model.iter()));
            }
        }
    }
    use super::*;
    use crate::matrix::event_builder::{EventDraft, EventSigner, build_pdu};
    use crate::matrix::member_keys::{member_key_user_id, member_signing_key};
    use crate::matrix::server_keys::{OldVerifyKey, ServerKeys};
    use crate::matrix::signing::{KeyId, ServerSigningKey};
    use crate::room::keys::{KeyRing, KeySource};
    use serde_json::json;

    const V: RoomVersion = RoomVersion::MSC4430;
    const DAY_MS: i64 = 86_400_000;

    fn server_key(version: &str, seed: u8) -> ServerSigningKey {
        ServerSigningKey::from_seed(KeyId::ed25519(version).unwrap(), &[seed; 32])
    }

    /// A join of the member key from `member_seed`, claiming `alice` on `a.example`, co-signed
    /// by `cosigner` if given.
    fn join(member_seed: u8, cosigner: Option<&ServerSigningKey>, ts_ms: i64) -> Arc<Pdu> {
        join_claiming(member_seed, "a.example", cosigner, ts_ms)
    }

    /// [`join`], claiming `domain` instead (co-signed as `domain`).
    fn join_claiming(
        member_seed: u8,
        domain: &str,
        cosigner: Option<&ServerSigningKey>,
        ts_ms: i64,
    ) -> Arc<Pdu> {
        let member = member_signing_key(&[member_seed; 32]);
        let sender = member_key_user_id(&member.verifying_key());
        let draft = EventDraft {
            room_id: Some("!room".into()),
            sender: sender.clone(),
            event_type: "m.room.member".into(),
            state_key: Some(sender),
            content: json!({"membership": "join", "localpart": "alice", "domain": domain}),
            prev_events: vec!["$p".into()],
            auth_events: vec![],
            depth: 2,
            origin_server_ts_ms: ts_ms,
        };
        let signer = EventSigner::Member {
            member_key: &member,
            cosigner: cosigner.map(|key| (domain, key)),
        };
        Arc::new(build_pdu(draft, &V, signer).unwrap())
    }

    fn ring_with(key: &ServerSigningKey, valid_until_ms: i64) -> KeyRing {
        let mut ring = KeyRing::new();
        ring.insert(
            ServerKeys::with_current_key("a.example", key, valid_until_ms),
            0,
        );
        ring
    }

    /// Asserts `member`'s status, as the table answers it and as its link records it (the
    /// table keeps a copy beside the key, see `LinkSlot`).
    fn assert_status(table: &LinkTable, member: &str, expected: LinkStatus) {
        assert_eq!(table.status(member), expected);
        let recorded = table
            .link(member)
            .map_or(LinkStatus::Unknown, |link| link.status);
        assert_eq!(recorded, expected);
        // The verdict follows the status, and an unverified link vouches only up to its P7
        // bound, whatever the event's timestamp.
        let vouches_until_ms = table.link(member).and_then(|link| link.vouches_until_ms);
        for origin_server_ts_ms in [i64::MIN, 0, 1_000, 10_000_000, i64::MAX] {
            let verdict = match expected {
                LinkStatus::Verified => LinkVerdict::Verified,
                LinkStatus::Unknown | LinkStatus::Pending => LinkVerdict::Pending,
                LinkStatus::Unverified
                    if vouches_until_ms.is_some_and(|until| origin_server_ts_ms <= until) =>
                {
                    LinkVerdict::Verified
                }
                LinkStatus::Unverified => LinkVerdict::Unverified,
            };
            assert_eq!(
                table.verdict(member, origin_server_ts_ms),
                verdict,
                "{member} at {origin_server_ts_ms}"
            );
        }
    }

    #[test]
    fn unknown_pending_verified_then_invalidated_then_reverified_after_resigning() {
        let key1 = server_key("1", 1);
        let event = join(9, Some(&key1), 100);
        let member = event.sender.clone();
        let mut table = LinkTable::new(InvalidationRule::RevokeAll);
        assert_status(&table, &member, LinkStatus::Unknown);
        assert_eq!(table.verdict(&member, 0), LinkVerdict::Pending);
        // Seen before the keys are held: pending.
        assert_eq!(
            table.observe_member_event(&V, &event, None, 10),
            LinkStatus::Pending
        );
        // Keys arrive: verified by ed25519:1.
        let ring = ring_with(&key1, DAY_MS);
        let changed =
            table.keys_available(&V, "a.example", ring.held_keys("a.example").unwrap(), 20);
        assert_eq!(changed, vec![member.clone()]);
        assert_status(&table, &member, LinkStatus::Verified);
        assert_eq!(table.user_id(&member).as_deref(), Some("@alice:a.example"));
        assert_eq!(
            table.verified_by("a.example", "ed25519:1"),
            vec![member.clone()]
        );
        // The key is rotated: the link turns unverified and names the reason.
        let changed = table.key_invalidated(
            "a.example",
            "ed25519:1",
            KeyInvalidation::MovedToOld { expired_ts_ms: 500 },
            30,
        );
        assert_eq!(changed, vec![member.clone()]);
        assert_status(&table, &member, LinkStatus::Unverified);
        assert_eq!(table.verdict(&member, 400), LinkVerdict::Unverified);
        assert_eq!(table.user_id(&member), None);
        assert!(table.verified_by("a.example", "ed25519:1").is_empty());
        // The new key alone does not verify the event signed by the old one...
        let key2 = server_key("2", 2);
        let mut rotated = ServerKeys::with_current_key("a.example", &key2, DAY_MS);
        rotated.old_verify_keys.insert(
            "ed25519:1".into(),
            OldVerifyKey {
                key: key1.verifying_key(),
                expired_ts_ms: 500,
            },
        );
        let mut ring = KeyRing::new();
        ring.insert(rotated, 25);
        table.keys_available(&V, "a.example", ring.held_keys("a.example").unwrap(), 40);
        assert_status(&table, &member, LinkStatus::Unverified);
        let last = table
            .link(&member)
            .unwrap()
            .transitions
            .last()
            .unwrap()
            .clone();
        assert!(matches!(
            &last.reason,
            LinkReason::CosignatureFailed { outcome, .. }
                if matches!(**outcome, LinkOutcome::NoCurrentKey { .. })
        ));
        // ...but the re-signed copy (same event ID) does.
        let resigned = Arc::new(
            crate::matrix::event_builder::countersign_pdu(&V, &event, "a.example", &key2).unwrap(),
        );
        assert_eq!(resigned.event_id, event.event_id);
        table.observe_member_event(&V, &resigned, ring.held_keys("a.example"), 50);
        assert_status(&table, &member, LinkStatus::Verified);
        assert_eq!(
            table.verified_by("a.example", "ed25519:2"),
            vec![member.clone()]
        );
        let history: Vec<(LinkStatus, LinkStatus, i64)> = table
            .link(&member)
            .unwrap()
            .transitions
            .iter()
            .map(|transition| (transition.from, transition.to, transition.at_ms))
            .collect();
        assert_eq!(
            history,
            vec![
                (LinkStatus::Unknown, LinkStatus::Pending, 10),
                (LinkStatus::Pending, LinkStatus::Verified, 20),
                (LinkStatus::Verified, LinkStatus::Unverified, 30),
                (LinkStatus::Unverified, LinkStatus::Unverified, 40),
                (LinkStatus::Unverified, LinkStatus::Verified, 50),
            ]
        );
    }

    #[test]
    fn the_status_change_count_moves_with_every_status_change_and_only_then() {
        let key1 = server_key("1", 1);
        let event = join(9, Some(&key1), 100);
        let mut table = LinkTable::new(InvalidationRule::RevokeAll);
        assert_eq!(table.status_changes(), 0);
        // Unknown -> pending.
        table.observe_member_event(&V, &event, None, 10);
        assert_eq!(table.status_changes(), 1);
        // Seen again before the keys: still pending, no change.
        table.observe_member_event(&V, &event, None, 11);
        assert_eq!(table.status_changes(), 1);
        // Pending -> verified.
        let ring = ring_with(&key1, DAY_MS);
        table.keys_available(&V, "a.example", ring.held_keys("a.example").unwrap(), 20);
        assert_eq!(table.status(&event.sender), LinkStatus::Verified);
        assert_eq!(table.status_changes(), 2);
        // Checked again by the same key: verified before and after, no change.
        table.observe_member_event(&V, &event, ring.held_keys("a.example"), 30);
        assert_eq!(table.status(&event.sender), LinkStatus::Verified);
        assert_eq!(table.status_changes(), 2);
    }

    #[test]
    fn uncosigned_or_wrongly_cosigned_events_are_unverified_at_once() {
        let key = server_key("1", 1);
        let ring = ring_with(&key, DAY_MS);
        let mut table = LinkTable::new(InvalidationRule::RevokeAll);
        let bare = join(3, None, 100);
        assert_eq!(
            table.observe_member_event(&V, &bare, ring.held_keys("a.example"), 5),
            LinkStatus::Unverified
        );
        assert!(matches!(
            &table.link(&bare.sender).unwrap().transitions[0].reason,
            LinkReason::CosignatureFailed { outcome, .. }
                if matches!(**outcome, LinkOutcome::NotCosigned)
        ));
        // Signed by a key the domain does not publish.
        let impostor = server_key("1", 77);
        let forged = join(4, Some(&impostor), 100);
        assert_eq!(
            table.observe_member_event(&V, &forged, ring.held_keys("a.example"), 5),
            LinkStatus::Unverified
        );
        // Checked after the key's validity: not current.
        let late = join(5, Some(&key), 100);
        assert_eq!(
            table.observe_member_event(&V, &late, ring.held_keys("a.example"), DAY_MS + 1),
            LinkStatus::Unverified
        );
    }

    #[test]
    fn fail_open_keys_keep_verifying_after_expiry() {
        let key = server_key("1", 1);
        let mut ring = ring_with(&key, 1_000);
        ring.set_trusted_past_expiry("a.example", true);
        let mut table = LinkTable::new(InvalidationRule::RevokeAll);
        let event = join(6, Some(&key), 100);
        assert_eq!(
            table.observe_member_event(&V, &event, ring.held_keys("a.example"), 5_000),
            LinkStatus::Verified
        );
    }

    /// The unsettled index holds exactly the links with a domain that are not verified, and
    /// a tally the table alone reports to names exactly the domains they claim.
    fn assert_unsettled_index_matches_links(table: &LinkTable) {
        for domain in ["a.example", "b.example"] {
            if let Some(tally) = &table.unsettled_by_domain.tally {
                assert_eq!(
                    tally.any_claiming(domain),
                    table
                        .links()
                        .any(|link| link.domain.as_deref() == Some(domain)
                            && link.status != LinkStatus::Verified),
                    "tally of {domain}"
                );
            }
            let expected: Vec<String> = table
                .links()
                .filter(|link| link.domain.as_deref() == Some(domain))
                .filter(|link| link.status != LinkStatus::Verified)
                .map(|link| link.member_key.to_string())
                .collect();
            assert_eq!(
                table.unsettled_members_claiming(domain),
                expected,
                "{domain}"
            );
        }
        assert!(
            table
                .unsettled_by_domain
                .members
                .values()
                .all(|members| !members.is_empty())
        );
    }

    #[test]
    fn links_come_out_ordered_by_member_key_and_lookups_find_each() {
        let key = server_key("1", 1);
        let ring = ring_with(&key, DAY_MS);
        let mut table = LinkTable::new(InvalidationRule::RevokeAll);
        let mut members = Vec::new();
        for seed in [40u8, 3, 77, 12, 250, 9, 101, 58, 33, 1, 190, 66] {
            let event = join(seed, Some(&key), 100);
            members.push(event.sender.clone());
            let keys = (seed % 2 == 0).then(|| ring.held_keys("a.example").unwrap());
            table.observe_member_event(&V, &event, keys, i64::from(seed));
        }
        let listed: Vec<String> = table.links().map(|l| l.member_key.to_string()).collect();
        let mut expected = members.clone();
        expected.sort();
        assert_eq!(listed, expected);
        for member in &members {
            let link = table.link(member).expect("held");
            assert_eq!(&*link.member_key, member.as_str());
            assert_eq!(table.status(member), link.status);
        }
        assert_eq!(table.status("@absent"), LinkStatus::Unknown);
    }

    /// Test that a verified link does not vouch for a newer claim nobody checked: a newer
    /// member event claiming b.example without its co-signature, while b.example's keys are not
    /// held, makes the link pending (no user ID shown, no longer indexed under a.example's key),
    /// and b.example's keys then judge the claim; the same event again keeps the status.
    #[test]
    fn a_new_claim_waiting_for_keys_is_not_verified_by_the_old_one() {
        let key_a = server_key("1", 1);
        let ring_a = ring_with(&key_a, DAY_MS);
        let mut table = LinkTable::new(InvalidationRule::RevokeAll);
        let first = join(40, Some(&key_a), 100);
        let member = first.sender.clone();
        let keys_a = ring_a.held_keys("a.example");
        assert_eq!(
            table.observe_member_event(&V, &first, keys_a, 1),
            LinkStatus::Verified
        );
        // The same event again, keys not at hand: the verified claim stands.
        assert_eq!(
            table.observe_member_event(&V, &first, None, 2),
            LinkStatus::Verified
        );
        let moved = join_claiming(40, "b.example", None, 200);
        assert_eq!(
            table.observe_member_event(&V, &moved, None, 3),
            LinkStatus::Pending
        );
        assert_status(&table, &member, LinkStatus::Pending);
        assert_eq!(table.user_id(&member), None);
        assert_eq!(table.verdict(&member, 201), LinkVerdict::Pending);
        // a.example's key no longer counts as having verified it.
        table.key_invalidated("a.example", "ed25519:1", KeyInvalidation::NotFound, 4);
        assert_status(&table, &member, LinkStatus::Pending);
        let mut ring_b = KeyRing::new();
        ring_b.insert(
            ServerKeys::with_current_key("b.example", &server_key("1", 2), DAY_MS),
            0,
        );
        let keys_b = ring_b.held_keys("b.example").unwrap();
        assert_eq!(
            table.keys_available(&V, "b.example", keys_b, 5),
            [member.as_str()]
        );
        assert_status(&table, &member, LinkStatus::Unverified);
    }

    /// Test that a revoked link stays unverified when a newer member event names a domain whose
    /// keys are not held (a compromised member key cannot turn its messages from soft-failed to
    /// pending that way), and that the claim is judged when that domain's keys arrive.
    #[test]
    fn a_revoked_link_stays_unverified_while_a_new_claim_waits_for_keys() {
        let key_a = server_key("1", 1);
        let ring_a = ring_with(&key_a, DAY_MS);
        let mut table = LinkTable::new(InvalidationRule::RevokeAll);
        let first = join(41, Some(&key_a), 100);
        let member = first.sender.clone();
        table.observe_member_event(&V, &first, ring_a.held_keys("a.example"), 1);
        table.key_invalidated("a.example", "ed25519:1", KeyInvalidation::NotFound, 2);
        assert_status(&table, &member, LinkStatus::Unverified);
        let key_b = server_key("1", 3);
        let claim = join_claiming(41, "b.example", Some(&key_b), 300);
        assert_eq!(
            table.observe_member_event(&V, &claim, None, 3),
            LinkStatus::Unverified
        );
        assert_eq!(table.verdict(&member, 301), LinkVerdict::Unverified);
        // b.example's keys arrive: its co-signature verifies the new claim.
        let mut ring_b = KeyRing::new();
        ring_b.insert(ServerKeys::with_current_key("b.example", &key_b, DAY_MS), 0);
        let keys_b = ring_b.held_keys("b.example").unwrap();
        assert_eq!(
            table.keys_available(&V, "b.example", keys_b, 4),
            [member.as_str()]
        );
        assert_status(&table, &member, LinkStatus::Verified);
        assert_eq!(table.user_id(&member).as_deref(), Some("@alice:b.example"));
    }

    #[test]
    fn the_unsettled_index_follows_every_status_and_domain_change() {
        let key_a = server_key("1", 1);
        let ring_a = ring_with(&key_a, DAY_MS);
        let mut table = LinkTable::new(InvalidationRule::RevokeAll);
        table.set_unsettled_tally(Some(UnsettledTally::default()));
        // Three members of a.example: one verified at once, one pending, one uncosigned.
        let verified = join(20, Some(&key_a), 100);
        let pending = join(21, Some(&key_a), 100);
        let bare = join(22, None, 100);
        table.observe_member_event(&V, &verified, ring_a.held_keys("a.example"), 1);
        table.observe_member_event(&V, &pending, None, 2);
        table.observe_member_event(&V, &bare, ring_a.held_keys("a.example"), 3);
        assert_unsettled_index_matches_links(&table);
        assert_eq!(table.unsettled_by_domain.members.len(), 1);
        // Keys arrive: the pending one is checked, the uncosigned one stays unverified, and
        // the verified one is not touched.
        let changed =
            table.keys_available(&V, "a.example", ring_a.held_keys("a.example").unwrap(), 4);
        assert_eq!(changed, vec![pending.sender.clone()]);
        assert_unsettled_index_matches_links(&table);
        // The verifying key is rotated away: both verified links return to the index.
        table.key_invalidated("a.example", "ed25519:1", KeyInvalidation::Absent, 5);
        assert_unsettled_index_matches_links(&table);
        assert_eq!(table.unsettled_members_claiming("a.example").len(), 3);
        // A member moves its claim to b.example (a newer member event): unsettled there (and
        // still unverified, as its link was revoked).
        let moved = join_claiming(20, "b.example", Some(&server_key("1", 2)), 200);
        table.observe_member_event(&V, &moved, None, 6);
        assert_unsettled_index_matches_links(&table);
        assert_eq!(
            table.unsettled_members_claiming("b.example"),
            vec![verified.sender.clone()]
        );
        // b.example's keys cannot be fetched (nothing changes); then they arrive and verify it.
        assert!(table.keys_unavailable("b.example", 7).is_empty());
        assert_unsettled_index_matches_links(&table);
        let ring_b = {
            let mut ring = KeyRing::new();
            ring.insert(
                ServerKeys::with_current_key("b.example", &server_key("1", 2), DAY_MS),
                0,
            );
            ring
        };
        table.keys_available(&V, "b.example", ring_b.held_keys("b.example").unwrap(), 8);
        assert_eq!(table.status(&verified.sender), LinkStatus::Verified);
        assert!(table.unsettled_members_claiming("b.example").is_empty());
        assert!(!table.unsettled_by_domain.members.contains_key("b.example"));
        assert_unsettled_index_matches_links(&table);
    }

    #[test]
    fn a_servers_tally_counts_its_tables_through_clones_and_drops() {
        let key = server_key("1", 1);
        let ring = ring_with(&key, DAY_MS);
        let tally = UnsettledTally::default();
        // A table with a pending link set to report afterwards: its domain enters the tally.
        let mut first = LinkTable::new(InvalidationRule::RevokeAll);
        first.observe_member_event(&V, &join(30, Some(&key), 100), None, 1);
        assert!(!tally.any_claiming("a.example"));
        first.set_unsettled_tally(Some(tally.clone()));
        assert!(tally.any_claiming("a.example"));
        // A second room's table with another pending link of the same domain, and a clone.
        let mut second = LinkTable::new(InvalidationRule::RevokeAll);
        second.set_unsettled_tally(Some(tally.clone()));
        second.observe_member_event(&V, &join(31, Some(&key), 100), None, 2);
        let copy = second.clone();
        // The first settles: the domain stays (the second and its copy still wait).
        first.keys_available(&V, "a.example", ring.held_keys("a.example").unwrap(), 3);
        assert!(tally.any_claiming("a.example"));
        second.keys_available(&V, "a.example", ring.held_keys("a.example").unwrap(), 4);
        assert!(tally.any_claiming("a.example"), "the copy still counts");
        drop(copy);
        assert!(!tally.any_claiming("a.example"));
        // A dropped table leaves the tally; one that stops reporting too.
        let mut third = LinkTable::new(InvalidationRule::RevokeAll);
        third.set_unsettled_tally(Some(tally.clone()));
        third.observe_member_event(&V, &join(32, None, 100), ring.held_keys("a.example"), 5);
        assert!(tally.any_claiming("a.example"));
        third.set_unsettled_tally(None);
        assert!(!tally.any_claiming("a.example"));
        third.set_unsettled_tally(Some(tally.clone()));
        assert!(tally.any_claiming("a.example"));
        drop(third);
        assert!(!tally.any_claiming("a.example"));
    }

    #[test]
    fn pending_links_turn_unverified_when_keys_cannot_be_fetched() {
        let mut table = LinkTable::new(InvalidationRule::RevokeAll);
        let key = server_key("1", 1);
        let event = join(7, Some(&key), 100);
        table.observe_member_event(&V, &event, None, 1);
        assert_eq!(table.keys_unavailable("b.example", 2), Vec::<String>::new());
        assert_eq!(
            table.keys_unavailable("a.example", 3),
            vec![event.sender.clone()]
        );
        assert_eq!(table.status(&event.sender), LinkStatus::Unverified);
        // Keys arriving later still verify it.
        let ring = ring_with(&key, DAY_MS);
        table.keys_available(&V, "a.example", ring.held_keys("a.example").unwrap(), 4);
        assert_eq!(table.status(&event.sender), LinkStatus::Verified);
    }

    #[test]
    fn invalidation_rules_p4_and_p7() {
        let key = server_key("1", 1);
        let ring = ring_with(&key, DAY_MS);
        let event = join(8, Some(&key), 100);
        let member = event.sender.clone();
        // P4: nothing un-verifies.
        let mut forever = LinkTable::new(InvalidationRule::Never);
        forever.observe_member_event(&V, &event, ring.held_keys("a.example"), 1);
        assert!(
            forever
                .key_invalidated("a.example", "ed25519:1", KeyInvalidation::NotFound, 2)
                .is_empty()
        );
        assert_eq!(forever.status(&member), LinkStatus::Verified);
        // P7: an expiry keeps vouching for events up to expired_ts; a revocation does not.
        let mut p7 = LinkTable::new(InvalidationRule::ExpiryIsNotRevocation);
        p7.observe_member_event(&V, &event, ring.held_keys("a.example"), 1);
        p7.key_invalidated(
            "a.example",
            "ed25519:1",
            KeyInvalidation::MovedToOld { expired_ts_ms: 700 },
            2,
        );
        assert_eq!(p7.status(&member), LinkStatus::Unverified);
        assert_eq!(p7.verdict(&member, 700), LinkVerdict::Verified);
        assert_eq!(p7.verdict(&member, 701), LinkVerdict::Unverified);
        let mut revoked = LinkTable::new(InvalidationRule::ExpiryIsNotRevocation);
        revoked.observe_member_event(&V, &event, ring.held_keys("a.example"), 1);
        revoked.key_invalidated("a.example", "ed25519:1", KeyInvalidation::NotFound, 2);
        assert_eq!(revoked.verdict(&member, 0), LinkVerdict::Unverified);
        // Another key's invalidation touches nothing.
        let mut other = LinkTable::new(InvalidationRule::RevokeAll);
        other.observe_member_event(&V, &event, ring.held_keys("a.example"), 1);
        assert!(
            other
                .key_invalidated("a.example", "ed25519:9", KeyInvalidation::Absent, 2)
                .is_empty()
        );
        assert_eq!(other.status(&member), LinkStatus::Verified);
    }

    #[test]
    fn older_member_events_do_not_replace_newer_claims_and_others_events_are_ignored() {
        let key = server_key("1", 1);
        let ring = ring_with(&key, DAY_MS);
        let mut table = LinkTable::new(InvalidationRule::RevokeAll);
        let newer = join(10, Some(&key), 200);
        let older = join(10, None, 100);
        table.observe_member_event(&V, &newer, ring.held_keys("a.example"), 1);
        assert_eq!(
            table.observe_member_event(&V, &older, ring.held_keys("a.example"), 2),
            LinkStatus::Verified
        );
        assert_eq!(
            table
                .link(&newer.sender)
                .unwrap()
                .member_event
                .as_ref()
                .unwrap()
                .event_id,
            newer.event_id
        );
        // An event that is not the member's own member event does not touch links.
        let mut invite = (*newer).clone();
        invite.state_key = Some("@someone-else".into());
        let invite = Arc::new(invite);
        let mut fresh = LinkTable::new(InvalidationRule::RevokeAll);
        assert_eq!(
            fresh.observe_member_event(&V, &invite, ring.held_keys("a.example"), 1),
            LinkStatus::Unknown
        );
    }

    #[test]
    fn key_layer_verdicts_translate_with_their_bounds() {
        let key = server_key("1", 1);
        let mut response = ServerKeys::with_current_key("a.example", &server_key("2", 2), 900);
        response.old_verify_keys.insert(
            "ed25519:1".into(),
            OldVerifyKey {
                key: key.verifying_key(),
                expired_ts_ms: 700,
            },
        );
        let translate = |reason, response| {
            KeyInvalidation::from_key_layer(reason, "ed25519:1", response, 1_000)
        };
        assert_eq!(
            translate(InvalidReason::MovedToOld, Some(&response)),
            KeyInvalidation::MovedToOld { expired_ts_ms: 700 }
        );
        assert_eq!(
            translate(InvalidReason::ExpiredInResponse, Some(&response)),
            KeyInvalidation::ValidUntilPast {
                valid_until_ms: 900
            }
        );
        assert_eq!(
            translate(InvalidReason::UnreachableAfterExpiry, None),
            KeyInvalidation::ExpiredUnreachable {
                valid_until_ms: 1_000
            }
        );
        assert_eq!(
            translate(InvalidReason::NotFound, None),
            KeyInvalidation::NotFound
        );
        assert_eq!(
            translate(InvalidReason::Absent, None),
            KeyInvalidation::Absent
        );
        assert_eq!(
            translate(InvalidReason::DifferentBytes, None),
            KeyInvalidation::Replaced
        );
        assert_eq!(
            translate(InvalidReason::Malformed, None),
            KeyInvalidation::BadResponse
        );
        // Only expiries carry a bound for P7.
        assert_eq!(
            translate(InvalidReason::MovedToOld, Some(&response)).expiry_bound_ms(),
            Some(700)
        );
        assert_eq!(
            translate(InvalidReason::NotFound, None).expiry_bound_ms(),
            None
        );
    }
}
