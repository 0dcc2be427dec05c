//! The receipt pipeline of one homeserver for one room, on real signed events
//! (s2s "Checks performed on receipt of a PDU"), with MSC4430's link rule on top:
//!
//! 1. valid format for the room version, else **dropped**;
//! 2. signatures (the sender's server and a restricted join's authorising server; MSC4430: the
//!    member key and the authorising member key), else **dropped**;
//! 3. content hash, else **redacted** (processing continues with the redacted copy);
//! 4. auth rules on the event's `auth_events`, else **rejected**;
//! 5. auth rules on the state before the event, else **rejected**;
//! 6. auth rules on the current state, else **soft-failed** (on the arrival paths the policy
//!    names);
//!
//! then, in member-key rooms: an accepted `m.room.member` event of the sender updates its link
//! (checked against the keys held for `content.domain`), and a message from a sender whose link
//! is not verified is soft-failed or labelled, by policy. State events from such senders still
//! go through state resolution (unless the policy soft-fails them too).
//!
//! Checks 4 and 5 and the state at each event are computed once per event by the DAG. The
//! pipeline is sans-IO: events whose `auth_events` (or, without a given state, `prev_events`)
//! are not held come back as [`Verdict::MissingEvents`] for the caller to fetch, and keys it
//! lacks show as a dropped event (see [`super::checks::servers_needed_for_signatures`]).

use std::sync::Arc;

use serde_json::Value;

use super::checks::FormatError;
use super::keys::KeySource;
use super::links::{self, LinkStatus, LinkTable, LinkVerdict};
use super::memo::{CheckMemo, FrontChecks, PduCopy, front_checks};
use super::policy::{ArrivalPath, LinkAction, RoomPolicy, UnverifiedStateEvents};
use super::room_state::{Fate, HeldEvent, RejectedAt, RoomState, SoftFailReason};
use crate::matrix::auth::{Rejection, Rule};
use crate::matrix::dag::DagError;
use crate::matrix::event_builder::PduSignatureError;
use crate::matrix::hashes::ContentHashCheck;
use crate::matrix::{EventId, Pdu, StateMap};

/// Why an event was dropped (as if never received).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DropReason {
    /// Check 1.
    #[error("check 1 (format): {0}")]
    Format(FormatError),
    /// Check 2.
    #[error("check 2 (signatures): {0}")]
    Signature(PduSignatureError),
    /// The DAG refused the event (a second create event).
    #[error("the room DAG refused it: {0}")]
    Dag(DagError),
}

/// What the pipeline decided about one received PDU.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Check 1 or 2 failed; nothing was stored.
    Dropped(DropReason),
    /// The event was already held; a member event's newer signatures still update its link
    /// (a re-signed copy after a rotation).
    AlreadyHeld,
    /// Some referenced events are not held; nothing was stored. The caller fetches them
    /// (`/get_missing_events`, `/event_auth`) and tries again.
    MissingEvents {
        prev_events: Vec<EventId>,
        auth_events: Vec<EventId>,
    },
    /// Check 4 or 5 failed; stored in the DAG but never shown nor built upon.
    Rejected {
        check: RejectedAt,
        rejection: Rejection,
    },
    /// Check 6 or the link rule failed; stored, not shown, not a forward extremity.
    SoftFailed(SoftFailReason),
    /// Stored, shown to clients (labelled if the sender's link is not verified and the policy
    /// labels), and a forward extremity.
    Accepted { labelled: bool },
}

/// The headline outcome of a receipt, as the spec names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Dropped,
    /// Check 3 failed and the redacted copy was then accepted.
    Redacted,
    Rejected,
    SoftFailed,
    Accepted,
    AlreadyHeld,
    MissingEvents,
}

/// The record of one received PDU.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// `None` only if check 1 failed before the ID could be computed.
    pub event_id: Option<EventId>,
    pub path: ArrivalPath,
    pub at_ms: i64,
    /// Check 3's finding, once checks 1 and 2 passed.
    pub hash_check: Option<ContentHashCheck>,
    pub verdict: Verdict,
    /// The sender's link status after processing (member-key rooms, events that got that far).
    pub link_after: Option<LinkStatus>,
    /// For an event that passed checks 4 and 5: the auth rule that allowed it against the
    /// current state (check 6), or against the state before it where check 6 did not run.
    pub allowed_by: Option<Rule>,
}

impl Receipt {
    /// The spec's name for what happened.
    pub fn outcome(&self) -> Outcome {
        let redacted = matches!(
            self.hash_check,
            Some(ContentHashCheck::Mismatch | ContentHashCheck::Missing)
        );
        match &self.verdict {
            Verdict::Dropped(_) => Outcome::Dropped,
            Verdict::AlreadyHeld => Outcome::AlreadyHeld,
            Verdict::MissingEvents { .. } => Outcome::MissingEvents,
            Verdict::Rejected { .. } => Outcome::Rejected,
            Verdict::SoftFailed(_) => Outcome::SoftFailed,
            Verdict::Accepted { .. } if redacted => Outcome::Redacted,
            Verdict::Accepted { .. } => Outcome::Accepted,
        }
    }
}

/// What one server brings to the pipeline besides the room: the keys it holds, its link table
/// and its policy.
pub struct ServerView<'a, K: KeySource> {
    pub keys: &'a K,
    pub links: &'a mut LinkTable,
    pub policy: &'a RoomPolicy,
}

/// Runs a PDU that arrived by `path` at `now_ms` through the pipeline of `room`. Its prev and
/// auth events must be held.
pub fn receive_pdu<K: KeySource>(
    room: &mut RoomState,
    server: &mut ServerView<'_, K>,
    json: Value,
    path: ArrivalPath,
    now_ms: i64,
) -> Receipt {
    let front = front_checks(room.version(), room.room_id(), json, server.keys);
    receive(room, server, front, path, None, now_ms)
}

/// As [`receive_pdu`], with checks 1–3 shared through `memo` by every server that receives the
/// same copy of the event (identical receipts; the event is parsed and stored once).
pub fn receive_pdu_shared<K: KeySource>(
    room: &mut RoomState,
    server: &mut ServerView<'_, K>,
    memo: &mut CheckMemo,
    json: Value,
    path: ArrivalPath,
    now_ms: i64,
) -> Receipt {
    let front = memo.front_checks(room.version(), room.room_id(), json, server.keys);
    receive(room, server, front, path, None, now_ms)
}

/// As [`receive_pdu_shared`] for JSON shared as `Arc<Value>` by every server that receives the
/// same copy: the memo wraps each `Arc` once (found again by its address), so receivers neither
/// clone nor canonicalise the JSON again (identical receipts).
pub fn receive_arc_shared<K: KeySource>(
    room: &mut RoomState,
    server: &mut ServerView<'_, K>,
    memo: &mut CheckMemo,
    json: &Arc<Value>,
    path: ArrivalPath,
    now_ms: i64,
) -> Receipt {
    let front = memo.front_checks_arc(room.version(), room.room_id(), json, server.keys);
    receive(room, server, front, path, None, now_ms)
}

/// As [`receive_arc_shared`] with the state before the event given from outside (a join's
/// state, or a `/state` answer for an event whose prev events cannot be had): checks 1–3
/// shared, then as [`receive_pdu_with_state_before`].
pub fn receive_arc_shared_with_state<K: KeySource>(
    room: &mut RoomState,
    server: &mut ServerView<'_, K>,
    memo: &mut CheckMemo,
    json: &Arc<Value>,
    path: ArrivalPath,
    state_before: Arc<StateMap>,
    now_ms: i64,
) -> Receipt {
    let front = memo.front_checks_arc(room.version(), room.room_id(), json, server.keys);
    receive(room, server, front, path, Some(state_before), now_ms)
}

/// Stores an event of a `send_join` or `/state` answer as an outlier (s2s: the state and auth
/// chain are "outliers", not part of the timeline): checks 1–3 (shared), then check 4 — the
/// auth rules against its own auth events, which must be held. No state before or after, no
/// check 5 or 6, no timeline entry, never a forward extremity. A member event of the sender
/// still updates its link (MSC4430: the joiner learns the members' links from the state).
pub fn receive_outlier_arc_shared<K: KeySource>(
    room: &mut RoomState,
    server: &mut ServerView<'_, K>,
    memo: &mut CheckMemo,
    json: &Arc<Value>,
    now_ms: i64,
) -> Receipt {
    let version = *room.version();
    let path = ArrivalPath::JoinState;
    let mut receipt = Receipt {
        event_id: None,
        path,
        at_ms: now_ms,
        hash_check: None,
        verdict: Verdict::AlreadyHeld,
        link_after: None,
        allowed_by: None,
    };
    let (pdu, hash_check) =
        match memo.front_checks_arc(room.version(), room.room_id(), json, server.keys) {
            FrontChecks::Format { event_id, error } => {
                receipt.event_id = event_id;
                receipt.verdict = Verdict::Dropped(DropReason::Format(error));
                return receipt;
            }
            FrontChecks::Signature { event_id, error } => {
                receipt.event_id = Some(event_id);
                receipt.verdict = Verdict::Dropped(DropReason::Signature(error));
                return receipt;
            }
            FrontChecks::Passed { pdu, hash_check } => (pdu, hash_check),
        };
    receipt.event_id = Some(pdu.event_id.clone());
    receipt.hash_check = Some(hash_check);
    if room.holds(&pdu.event_id) {
        return receipt;
    }
    // Each auth event is looked up once: what is missing, and where the held ones are.
    let (auth, missing_auth) = room.dag().look_up_auth_events(&pdu);
    if !missing_auth.is_empty() {
        receipt.verdict = Verdict::MissingEvents {
            prev_events: Vec::new(),
            auth_events: missing_auth,
        };
        return receipt;
    }
    let redacted = hash_check != ContentHashCheck::Valid;
    let (index, rejection) = match room.insert_outlier(Arc::clone(&pdu), auth, redacted) {
        Ok(inserted) => inserted,
        Err(error) => {
            receipt.verdict = Verdict::Dropped(DropReason::Dag(error));
            return receipt;
        }
    };
    let mut held = HeldEvent {
        fate: Fate::Accepted { labelled: false },
        redacted,
        path,
        received_at_ms: now_ms,
        // No state is known for an outlier: check 5 never ran.
        state_given: true,
    };
    match rejection {
        Some((check, rejection)) => {
            held.fate = Fate::Rejected {
                check,
                rejection: rejection.clone(),
            };
            receipt.verdict = Verdict::Rejected { check, rejection };
        }
        None => {
            if version.member_keys {
                receipt.link_after = Some(observe_link(server, &version, &pdu, now_ms));
            }
            receipt.verdict = Verdict::Accepted { labelled: false };
        }
    }
    room.record_outlier(index, held);
    receipt
}

/// As [`receive_pdu_shared`] for a copy wrapped once ([`PduCopy`]) and handed to every server
/// that receives it: no receiver clones or canonicalises the JSON again (identical receipts).
pub fn receive_copy_shared<K: KeySource>(
    room: &mut RoomState,
    server: &mut ServerView<'_, K>,
    memo: &mut CheckMemo,
    copy: &PduCopy,
    path: ArrivalPath,
    now_ms: i64,
) -> Receipt {
    let front = memo.front_checks_copy(room.version(), room.room_id(), copy, server.keys);
    receive(room, server, front, path, None, now_ms)
}

/// As [`receive_pdu`] for an event whose prev events are (partly) not held, with the state
/// before it given from outside (a join's state, a `/state_ids` answer). Every event the state
/// names must be held.
pub fn receive_pdu_with_state_before<K: KeySource>(
    room: &mut RoomState,
    server: &mut ServerView<'_, K>,
    json: Value,
    path: ArrivalPath,
    state_before: Arc<StateMap>,
    now_ms: i64,
) -> Receipt {
    let front = front_checks(room.version(), room.room_id(), json, server.keys);
    receive(room, server, front, path, Some(state_before), now_ms)
}

/// Checks 4–6 and the link rule on the result of checks 1–3 (`front`).
fn receive<K: KeySource>(
    room: &mut RoomState,
    server: &mut ServerView<'_, K>,
    front: FrontChecks,
    path: ArrivalPath,
    state_before: Option<Arc<StateMap>>,
    now_ms: i64,
) -> Receipt {
    let version = *room.version();
    let mut receipt = Receipt {
        event_id: None,
        path,
        at_ms: now_ms,
        hash_check: None,
        verdict: Verdict::AlreadyHeld,
        link_after: None,
        allowed_by: None,
    };
    // 1. A valid event for the room version; 2. signatures; 3. hashes (continue with the
    //    redacted copy on a mismatch): done by the caller, shared across servers with a memo.
    let (pdu, hash_check) = match front {
        FrontChecks::Format { event_id, error } => {
            receipt.event_id = event_id;
            receipt.verdict = Verdict::Dropped(DropReason::Format(error));
            return receipt;
        }
        FrontChecks::Signature { event_id, error } => {
            receipt.event_id = Some(event_id);
            receipt.verdict = Verdict::Dropped(DropReason::Signature(error));
            return receipt;
        }
        FrontChecks::Passed { pdu, hash_check } => (pdu, hash_check),
    };
    receipt.event_id = Some(pdu.event_id.clone());
    receipt.hash_check = Some(hash_check);
    if room.holds(&pdu.event_id) {
        // A copy with new signatures (re-signed after a rotation) still refreshes the link,
        // unless this server rejected the event: its first copy's claim did not count (checks
        // 4 and 5 come before the link), and neither does any later copy's.
        if version.member_keys && hash_check == ContentHashCheck::Valid {
            let rejected_here = links::claims_link(&pdu)
                && room
                    .held(&pdu.event_id)
                    .is_some_and(|held| matches!(held.fate, Fate::Rejected { .. }));
            receipt.link_after = Some(if rejected_here {
                server.links.status(&pdu.sender)
            } else {
                observe_link(server, &version, &pdu, now_ms)
            });
        }
        receipt.verdict = Verdict::AlreadyHeld;
        return receipt;
    }
    // Each parent is looked up once: what is missing, and where the held ones are for the
    // insertion. An outlier has no state to build on: as a prev event it is missing (with a
    // state given, prev events not held in the graph are not needed and simply not linked).
    let lookup = room.dag().look_up_parents(&pdu);
    let missing_auth = lookup.missing_auth;
    let missing_prev = match &state_before {
        Some(_) => Vec::new(),
        None => lookup.missing_prev,
    };
    let state_names_unheld = state_before
        .as_ref()
        .is_some_and(|state| state.values().any(|id| !room.holds(id)));
    if !missing_auth.is_empty() || !missing_prev.is_empty() || state_names_unheld {
        let mut prev_events = missing_prev;
        if let Some(state) = &state_before {
            prev_events.extend(state.values().filter(|id| !room.holds(id)).cloned());
        }
        receipt.verdict = Verdict::MissingEvents {
            prev_events,
            auth_events: missing_auth,
        };
        return receipt;
    }
    // 4 and 5. The DAG evaluates them on insertion (once per event).
    let state_given = state_before.is_some();
    let redacted = hash_check != ContentHashCheck::Valid;
    let (index, rejection) =
        match room.insert(Arc::clone(&pdu), lookup.held, state_before, redacted) {
            Ok(inserted) => inserted,
            Err(error) => {
                receipt.verdict = Verdict::Dropped(DropReason::Dag(error));
                return receipt;
            }
        };
    let mut held = HeldEvent {
        fate: Fate::Accepted { labelled: false },
        redacted,
        path,
        received_at_ms: now_ms,
        state_given,
    };
    if let Some((check, rejection)) = rejection {
        held.fate = Fate::Rejected {
            check,
            rejection: rejection.clone(),
        };
        room.record(index, held);
        receipt.verdict = Verdict::Rejected { check, rejection };
        return receipt;
    }
    // 6. The current state (before this event joins the extremities).
    let mut fate = Fate::Accepted { labelled: false };
    if server.policy.auth_soft_fail_paths.contains(path) {
        match room.check_current_state(index) {
            Ok(rule) => receipt.allowed_by = Some(rule),
            Err(reason) => fate = Fate::SoftFailed(reason),
        }
    } else {
        receipt.allowed_by = room.allowing_rule_before(index);
    }
    // MSC4430: the sender's own member event carries its link claim; then the link rule.
    if version.member_keys {
        let status = observe_link(server, &version, &pdu, now_ms);
        receipt.link_after = Some(status);
        if fate == (Fate::Accepted { labelled: false }) {
            fate = link_rule(server.links, status, server.policy, &pdu, path);
        }
    }
    held.fate = fate.clone();
    room.record(index, held);
    receipt.verdict = match fate {
        Fate::Accepted { labelled } => Verdict::Accepted { labelled },
        Fate::SoftFailed(reason) => Verdict::SoftFailed(reason),
        Fate::Rejected { check, rejection } => Verdict::Rejected { check, rejection },
    };
    receipt
}

/// Updates the sender's link from its own member event (other events leave it unchanged) and
/// returns the sender's link status.
fn observe_link<K: KeySource>(
    server: &mut ServerView<'_, K>,
    version: &crate::matrix::RoomVersion,
    pdu: &Arc<Pdu>,
    now_ms: i64,
) -> LinkStatus {
    // Most events claim nothing: their sender's status, without reading `content.domain`.
    if !links::claims_link(pdu) {
        return server.links.status(&pdu.sender);
    }
    let domain_keys = pdu
        .content
        .get("domain")
        .and_then(Value::as_str)
        .and_then(|domain| server.keys.held_keys(domain));
    server
        .links
        .observe_member_event(version, pdu, domain_keys, now_ms)
}

/// MSC4430's rule for an event that passed checks 1–6: what the sender's link status does to it.
/// `status` is the sender's link status, just read from `links`.
fn link_rule(
    links: &LinkTable,
    status: LinkStatus,
    policy: &RoomPolicy,
    pdu: &Pdu,
    path: ArrivalPath,
) -> Fate {
    if !policy.link_rule {
        return Fate::Accepted { labelled: false };
    }
    let verdict = links.verdict_with_status(status, &pdu.sender, pdu.origin_server_ts);
    let action = match verdict {
        LinkVerdict::Verified => return Fate::Accepted { labelled: false },
        LinkVerdict::Pending => policy.pending_link,
        LinkVerdict::Unverified => policy.unverified_link,
    };
    let action = match action {
        LinkAction::SoftFail
            if pdu.is_state()
                && policy.unverified_state_events == UnverifiedStateEvents::Resolve =>
        {
            LinkAction::Label
        }
        LinkAction::SoftFail if !policy.link_soft_fail_paths.contains(path) => LinkAction::Label,
        action => action,
    };
    match action {
        LinkAction::Deliver => Fate::Accepted { labelled: false },
        LinkAction::Label => Fate::Accepted { labelled: true },
        LinkAction::SoftFail => Fate::SoftFailed(SoftFailReason::Link(verdict)),
    }
}

/// After links changed (keys arrived, a re-signed member event was re-fetched), reveals the
/// messages of now-verified senders that the link rule had hidden, if the policy says so (gap
/// A6; spec soft-fail decisions are otherwise never revisited). Returns how many were revealed.
pub fn reveal_verified(
    room: &mut RoomState,
    links: &LinkTable,
    policy: &RoomPolicy,
    changed_members: &[String],
    now_ms: i64,
) -> usize {
    if !policy.reveal_on_verification {
        return 0;
    }
    changed_members
        .iter()
        .filter(|member| links.status(member) == LinkStatus::Verified)
        .map(|member| room.reveal_link_hidden(member, now_ms))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::RoomVersion;
    use crate::matrix::member_keys::{member_key_user_id, member_signing_key};
    use crate::matrix::server_keys::ServerKeys;
    use crate::matrix::signing::{KeyId, ServerSigningKey};
    use crate::room::keys::KeyRing;
    use crate::room::policy::ArrivalPaths;
    use serde_json::json;

    /// An event by `sender` (a member key); a state event if `state`.
    fn event(sender: &str, state: bool) -> Pdu {
        let mut json = json!({
            "type": if state { "m.room.topic" } else { "m.room.message" },
            "sender": sender, "room_id": "!r", "content": {}, "prev_events": [],
            "auth_events": [], "depth": 1, "origin_server_ts": 5
        });
        if state {
            json["state_key"] = json!("");
        }
        Pdu::from_json(json, "$e".into(), &RoomVersion::MSC4430).unwrap()
    }

    /// A table where `unverified` has an uncosigned member event and `pending` has none.
    fn table() -> (LinkTable, String, String) {
        let version = RoomVersion::MSC4430;
        let unverified = member_key_user_id(&member_signing_key(&[1; 32]).verifying_key());
        let pending = member_key_user_id(&member_signing_key(&[2; 32]).verifying_key());
        let member_event = Pdu::from_json(
            json!({"type": "m.room.member", "state_key": unverified, "sender": unverified,
                   "room_id": "!r", "content": {"membership": "join", "domain": "a.example"},
                   "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": 1}),
            "$m".into(),
            &version,
        )
        .unwrap();
        let mut links = LinkTable::new(RoomPolicy::P1.invalidation);
        let key = ServerSigningKey::from_seed(KeyId::ed25519("1").unwrap(), &[9; 32]);
        let mut ring = KeyRing::new();
        ring.insert(ServerKeys::with_current_key("a.example", &key, 1_000), 0);
        links.observe_member_event(
            &version,
            &Arc::new(member_event),
            ring.held_keys("a.example"),
            1,
        );
        assert_eq!(links.status(&unverified), LinkStatus::Unverified);
        (links, unverified, pending)
    }

    #[test]
    fn the_link_rule_follows_each_knob() {
        let (links, unverified, pending) = table();
        let soft = |verdict| Fate::SoftFailed(SoftFailReason::Link(verdict));
        let label = Fate::Accepted { labelled: true };
        let p1 = RoomPolicy::P1;
        let rule = |policy: &RoomPolicy, sender: &str, state: bool, path| {
            link_rule(
                &links,
                links.status(sender),
                policy,
                &event(sender, state),
                path,
            )
        };
        assert_eq!(
            rule(&p1, &unverified, false, ArrivalPath::Send),
            soft(LinkVerdict::Unverified)
        );
        assert_eq!(rule(&p1, &pending, false, ArrivalPath::Send), label);
        assert_eq!(
            rule(&RoomPolicy::P2, &pending, false, ArrivalPath::Send),
            soft(LinkVerdict::Pending)
        );
        // State events resolve (labelled) unless the policy soft-fails them too.
        assert_eq!(rule(&p1, &unverified, true, ArrivalPath::Send), label);
        let strict = RoomPolicy {
            unverified_state_events: UnverifiedStateEvents::SoftFail,
            ..RoomPolicy::P1
        };
        assert_eq!(
            rule(&strict, &unverified, true, ArrivalPath::Send),
            soft(LinkVerdict::Unverified)
        );
        // Paths outside the policy's set label instead; local events are never soft-failed.
        let send_only = RoomPolicy {
            link_soft_fail_paths: ArrivalPaths::SEND_ONLY,
            ..RoomPolicy::P1
        };
        assert_eq!(
            rule(&send_only, &unverified, false, ArrivalPath::Backfill),
            label
        );
        assert_eq!(rule(&p1, &unverified, false, ArrivalPath::Local), label);
        // P5 labels; P0 has no link rule; Deliver shows without a label.
        assert_eq!(
            rule(&RoomPolicy::P5, &unverified, false, ArrivalPath::Send),
            label
        );
        assert_eq!(
            rule(&RoomPolicy::P0, &unverified, false, ArrivalPath::Send),
            Fate::Accepted { labelled: false }
        );
        let deliver = RoomPolicy {
            unverified_link: LinkAction::Deliver,
            ..RoomPolicy::P1
        };
        assert_eq!(
            rule(&deliver, &unverified, false, ArrivalPath::Send),
            Fate::Accepted { labelled: false }
        );
    }
}
