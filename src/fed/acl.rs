//! Server ACLs and `m.federate` on requests (issue 5 item 4) and P8's join gate (item 5) in the
//! room world. The decisions are `room::acl`'s; this module applies them where a homeserver's
//! network layer would.
//!
//! - **Requests** (the spec's list of protected endpoints, s2s "Server Access Control Lists"):
//!   a resident answers `make_join`, `send_join`, `/get_missing_events` and fedsim's extremity
//!   exchange with 403 when its current view of the room's `m.room.server_acl` denies the
//!   requesting server. `/event/{id}` is not on the spec's list, so the ACL does not refuse it.
//! - **`/send`, per PDU**: a PDU pushed in a transaction is refused (not processed) when the ACL
//!   denies the transaction's origin, or the sender's domain: today the user ID's server; under
//!   MSC4430 the domain of the sender's link, and only while that link is verified
//!   (`room::acl::inbound_event_allowed`). The check runs when the PDU reaches the front of the
//!   room's inbound queue, against the link table of that moment. PDUs the server pulled itself
//!   (`/get_missing_events`, `/event`, `send_join` answers) are answers, not requests, and are
//!   not ACL-checked (the spec protects endpoints; refusing pulled events would leave gaps no
//!   fetch can fill).
//! - **`m.federate: false`**: today an auth rule (rule 4: senders from other servers are
//!   rejected, so a `send_join` fails at the resident's auth check); under MSC4430 the rule is
//!   gone and a server refuses *all* inbound federation for the room: every room-scoped request
//!   above, `/event` included, and every PDU pushed for the room.
//! - **P8's join gate**: a resident answering `send_join` first checks the joiner's member link
//!   (`member_keys::verify_member_link`, the same check as the link table) against the keys it
//!   holds for the claimed domain. A link that does not verify is refused with 403; if the resident
//!   holds no keys for the domain it starts a fetch and refuses this attempt (the joiner retries
//!   with the next resident 30 s later). fedsim refuses rather than soft-fails: D7 proposes that
//!   servers "may refuse make_join for identities they cannot verify", and the link claim and its
//!   co-signature only exist once the joiner has signed the event, so `send_join` is the first
//!   request at which a resident can judge it. Other residents still accept the join if another
//!   resident let it in (D8: one server's join-time check cannot bind the others).

use serde_json::{Value, json};

use crate::matrix::member_keys::{LinkOutcome, verify_member_link};
use crate::net::ServerId;
use crate::room::acl::{Refusal, inbound_event_allowed, server_acl_allows};
use crate::room::keys::KeySource;
use crate::room::policy::ArrivalPath;
use crate::scenario::{RoomAction, RoomActionKind};
use crate::server::absolute_ms;

use super::{Body, FedWorld, Inbound, RoomIndex};

/// HTTP status of a refusal (`M_FORBIDDEN`).
pub const FORBIDDEN: u16 = 403;

impl FedWorld {
    /// Whether any room can ever have an ACL or `m.federate: false`. Without either every check
    /// allows everything, so skipping them changes no result (only speed).
    pub(super) fn access_checks(&self) -> bool {
        !self.config.unfederated_rooms.is_empty()
            || self
                .config
                .actions
                .iter()
                .any(|action| action.kind == RoomActionKind::SetAcl)
    }

    /// `server`'s current view of `room`: the `m.room.server_acl` content (if any) and the create
    /// event's `m.federate` (default true).
    fn room_access(&mut self, server: ServerId, room: RoomIndex) -> Option<(Option<Value>, bool)> {
        let state = &mut self.servers[server as usize].rooms.get_mut(&room)?.state;
        let acl = state
            .current_state_event("m.room.server_acl", "")
            .ok()
            .flatten()
            .map(|pdu| pdu.content.clone());
        let federate = state
            .current_state_event("m.room.create", "")
            .ok()
            .flatten()
            .is_none_or(|pdu| pdu.content.get("m.federate") != Some(&Value::Bool(false)));
        Some((acl, federate))
    }

    /// The network-layer decision on a room-scoped request from `from` to `to`: the HTTP status
    /// to refuse it with, if any (counted).
    pub(super) fn request_refusal(
        &mut self,
        to: ServerId,
        from: ServerId,
        body: &Body,
    ) -> Option<u16> {
        if !self.access_checks() {
            return None;
        }
        let (room, acl_protected) = match body {
            Body::MakeJoin { room, .. }
            | Body::SendJoin { room, .. }
            | Body::GetMissing { room, .. }
            | Body::Extremities { room, .. } => (*room, true),
            Body::EventFetch { room, .. } => (*room, false),
            _ => return None,
        };
        let joined = self.servers[to as usize]
            .rooms
            .get(&room)
            .is_some_and(|state| state.joined);
        if !joined {
            return None;
        }
        let (acl, federate) = self.room_access(to, room)?;
        if self.version.member_keys && !federate {
            self.counters.adv.federate_refused_requests += 1;
            return Some(FORBIDDEN);
        }
        if acl_protected && !server_acl_allows(acl.as_ref(), &self.servers[from as usize].name) {
            self.counters.adv.acl_refused_requests += 1;
            return Some(FORBIDDEN);
        }
        None
    }

    /// Whether a PDU at the front of `room`'s inbound queue of `server` is refused by the ACL or
    /// `m.federate` (pushed PDUs only; counted).
    pub(super) fn inbound_refused(
        &mut self,
        server: ServerId,
        room: RoomIndex,
        item: &Inbound,
    ) -> bool {
        if item.path != ArrivalPath::Send || !self.access_checks() {
            return false;
        }
        let Some((acl, federate)) = self.room_access(server, room) else {
            return false;
        };
        let sender = item
            .json
            .get("sender")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let origin = &self.servers[item.from as usize].name;
        let links = &self.servers[server as usize].rooms[&room].links;
        match inbound_event_allowed(&self.version, acl.as_ref(), federate, links, origin, sender) {
            Ok(()) => false,
            Err(Refusal::NotFederated) => {
                self.counters.adv.federate_refused_pdus += 1;
                true
            }
            Err(Refusal::AclDenied { .. }) => {
                self.counters.adv.acl_refused_pdus += 1;
                true
            }
        }
    }

    /// `set-acl`: the room's creator (the moderator) sends a real `m.room.server_acl` event.
    pub(super) fn set_acl(&mut self, action: &RoomAction) {
        let Some(room) = action.room else {
            return;
        };
        let (creator, user) = self.plans[room as usize].creator;
        let allow = action.allow.clone().unwrap_or_else(|| vec!["*".to_owned()]);
        let mut content = json!({ "allow": allow, "deny": action.deny });
        if let Some(allow_ip_literals) = action.allow_ip_literals {
            content["allow_ip_literals"] = json!(allow_ip_literals);
        }
        if self
            .send_local(
                creator,
                room,
                user,
                "m.room.server_acl",
                Some(String::new()),
                content,
            )
            .is_some()
        {
            self.counters.adv.acl_events_sent += 1;
        }
    }

    /// P8: whether the resident `resident` refuses the join event `pdu` because it cannot verify
    /// the joiner's member link (counted; starts a key fetch when it holds no keys for the
    /// claimed domain).
    pub(super) fn join_gate_refuses(&mut self, resident: ServerId, pdu: &Value) -> bool {
        if !self.room_policy.join_gate || !self.version.member_keys {
            return false;
        }
        let Some(domain) = pdu
            .get("content")
            .and_then(|content| content.get("domain"))
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            self.counters.adv.join_gate_refused += 1;
            return true;
        };
        let now_abs_ms = absolute_ms(self.queue.now_ms());
        let hs = &self.servers[resident as usize];
        let keys = hs.cache_keys(resident, now_abs_ms);
        let outcome = keys.held_keys(&domain).map(|held| {
            verify_member_link(
                &self.version,
                pdu,
                held.keys,
                held.currency_check_time_ms(now_abs_ms),
                held.clamp,
            )
        });
        match outcome {
            Some(LinkOutcome::Verified { .. }) => false,
            Some(_) => {
                self.counters.adv.join_gate_refused += 1;
                true
            }
            None => {
                if let Some(slot) = self.slot_for(resident, &domain) {
                    let mut out = std::mem::take(&mut self.key_outputs);
                    self.servers[resident as usize]
                        .cache
                        .fetch_now(slot, &mut out);
                    self.apply_key_outputs(resident, &mut out, None);
                    self.key_outputs = out;
                }
                self.counters.adv.join_gate_key_waits += 1;
                true
            }
        }
    }

    /// The key-cache slot of `server` for `domain`, added when the domain is met for the first
    /// time (a member claims a domain outside the server's planned rooms: a real server fetches
    /// keys of any domain it meets). `None` if the domain names no server of the world.
    pub(super) fn slot_for(&mut self, server: ServerId, domain: &str) -> Option<u32> {
        let hs = &self.servers[server as usize];
        if let Some(slot) = hs.slot_of.get(domain) {
            return Some(slot);
        }
        if domain == hs.name {
            return None;
        }
        let domain_id = super::server_of_domain(domain, self.servers.len())?;
        let hs = &mut self.servers[server as usize];
        let slot = hs.cache.add_slot(domain_id);
        hs.slot_of.insert_met(domain_id, slot);
        self.adv.met_slots.insert((server, slot));
        Some(slot)
    }
}
