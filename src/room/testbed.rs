//! A hand-fed federation: a few homeservers sharing one room, each with its own keys, link table,
//! policy and [`RoomState`], with no network in between. Whoever drives it decides which server
//! receives which event when — a partition is simply not delivering. Tests and scripted
//! reproductions use it to exercise the real pipeline on events built and signed for real.

use std::sync::Arc;

use serde_json::{Value, json};

use super::keys::KeyRing;
use super::links::LinkTable;
use super::memo::{CheckMemo, PduCopy};
use super::pipeline::{self, Receipt, ServerView, Verdict};
use super::policy::{ArrivalPath, RoomPolicy};
use super::room_state::{RoomState, create_event_draft};
use super::shared::SharedEventFacts;
use crate::matrix::event_builder::{BuildError, EventDraft, EventSigner, build_pdu};
use crate::matrix::hashes;
use crate::matrix::member_keys::{member_key_user_id, member_signing_key};
use crate::matrix::server_keys::ServerKeys;
use crate::matrix::signing::{KeyId, ServerSigningKey};
use crate::matrix::{Pdu, RoomVersion};

/// Keys published by every testbed server stay valid this long (ms) unless a test says
/// otherwise.
pub const KEY_VALIDITY_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// A user of a testbed server.
#[derive(Debug, Clone)]
pub struct User {
    pub localpart: String,
    pub server: String,
    /// The member key in the room (member-key rooms only), from a seed derived from the name.
    pub member_key: Option<ServerSigningKey>,
}

impl User {
    /// `@localpart:server` on `server`; with a member key if `version` uses member keys.
    pub fn new(version: &RoomVersion, localpart: &str, server: &str) -> User {
        let member_key = version.member_keys.then(|| {
            let mut seed = [0u8; 32];
            for (index, byte) in format!("{localpart}@{server}").bytes().enumerate() {
                seed[index % 32] = seed[index % 32].wrapping_mul(31).wrapping_add(byte);
            }
            member_signing_key(&seed)
        });
        User {
            localpart: localpart.to_owned(),
            server: server.to_owned(),
            member_key,
        }
    }

    /// The ID the room knows the user by: the member key, or `@localpart:server`.
    pub fn id(&self) -> String {
        match &self.member_key {
            Some(key) => member_key_user_id(&key.verifying_key()),
            None => format!("@{}:{}", self.localpart, self.server),
        }
    }

    /// The user ID `@localpart:server` (what a verified link shows).
    pub fn user_id(&self) -> String {
        format!("@{}:{}", self.localpart, self.server)
    }

    /// Content of the user's own membership event: with `localpart` and `domain` in
    /// member-key rooms.
    pub fn membership_content(&self, membership: &str) -> Value {
        if self.member_key.is_some() {
            json!({"membership": membership, "localpart": self.localpart, "domain": self.server})
        } else {
            json!({ "membership": membership })
        }
    }
}

/// One testbed homeserver.
pub struct Server {
    pub name: String,
    pub signing_key: ServerSigningKey,
    pub keys: KeyRing,
    pub links: LinkTable,
    pub policy: RoomPolicy,
    pub room: RoomState,
    /// Every receipt, in order.
    pub receipts: Vec<Receipt>,
}

impl Server {
    /// A server called `name` whose signing key `ed25519:1` derives from `seed`, in room
    /// `room_id` under `policy`.
    pub fn new(name: &str, seed: u8, policy: RoomPolicy, room_id: &str) -> Server {
        Server {
            name: name.to_owned(),
            signing_key: ServerSigningKey::from_seed(
                KeyId::ed25519("1").expect("a valid key ID"),
                &[seed; 32],
            ),
            keys: KeyRing::new(),
            links: LinkTable::new(policy.invalidation),
            room: RoomState::new(policy.room_version, room_id),
            policy,
            receipts: Vec::new(),
        }
    }

    /// The key object this server publishes, valid until `valid_until_ms`.
    pub fn published_keys(&self, valid_until_ms: i64) -> ServerKeys {
        ServerKeys::with_current_key(&self.name, &self.signing_key, valid_until_ms)
    }

    /// Runs `pdu` through this server's pipeline as arriving by `path` at `now_ms`.
    pub fn receive(&mut self, pdu: &Pdu, path: ArrivalPath, now_ms: i64) -> Receipt {
        self.receive_with(None, pdu, path, now_ms)
    }

    /// As [`Server::receive`], sharing checks 1–3 through `memo` if given.
    pub fn receive_with(
        &mut self,
        memo: Option<&mut CheckMemo>,
        pdu: &Pdu,
        path: ArrivalPath,
        now_ms: i64,
    ) -> Receipt {
        let mut view = ServerView {
            keys: &self.keys,
            links: &mut self.links,
            policy: &self.policy,
        };
        let json = Value::clone(&pdu.json);
        let receipt = match memo {
            Some(memo) => {
                pipeline::receive_pdu_shared(&mut self.room, &mut view, memo, json, path, now_ms)
            }
            None => pipeline::receive_pdu(&mut self.room, &mut view, json, path, now_ms),
        };
        self.receipts.push(receipt.clone());
        receipt
    }

    /// Runs a copy wrapped once for all its receivers through this server's pipeline, sharing
    /// checks 1–3 through `memo`.
    pub fn receive_copy(
        &mut self,
        memo: &mut CheckMemo,
        copy: &PduCopy,
        path: ArrivalPath,
        now_ms: i64,
    ) -> Receipt {
        let mut view = ServerView {
            keys: &self.keys,
            links: &mut self.links,
            policy: &self.policy,
        };
        let receipt =
            pipeline::receive_copy_shared(&mut self.room, &mut view, memo, copy, path, now_ms);
        self.receipts.push(receipt.clone());
        receipt
    }

    /// Builds and signs an event by `user` (who must belong to this server) on top of this
    /// server's view, runs it through its own pipeline (path `Local`) and returns it.
    pub fn send(
        &mut self,
        user: &User,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
        now_ms: i64,
    ) -> Result<Pdu, BuildError> {
        let draft = self
            .room
            .draft_event(&user.id(), event_type, state_key, content, now_ms)
            .expect("the server's own state resolves");
        let pdu = self.sign(user, draft)?;
        self.receive(&pdu, ArrivalPath::Local, now_ms);
        Ok(pdu)
    }

    /// Signs `draft` as `user` would through this server: the server key in rooms without
    /// member keys; the member key (and the server's co-signature on the user's own member
    /// events) with them.
    pub fn sign(&self, user: &User, draft: EventDraft) -> Result<Pdu, BuildError> {
        let version = *self.room.version();
        let signer = match &user.member_key {
            None => EventSigner::Server {
                server_name: &self.name,
                key: &self.signing_key,
            },
            Some(member_key) => {
                let own_member_event = draft.event_type == "m.room.member"
                    && draft.state_key.as_deref() == Some(draft.sender.as_str())
                    && draft.content.get("domain").and_then(Value::as_str)
                        == Some(self.name.as_str());
                EventSigner::Member {
                    member_key,
                    cosigner: own_member_event.then_some((self.name.as_str(), &self.signing_key)),
                }
            }
        };
        build_pdu(draft, &version, signer)
    }
}

/// The create event of a new room by `creator`, signed by `creator_server_key` of
/// `creator.server`, and the room ID it derives (room versions 12+).
pub fn create_room(
    version: &RoomVersion,
    creator: &User,
    creator_server_key: &ServerSigningKey,
    now_ms: i64,
) -> Result<(Pdu, String), BuildError> {
    let draft = create_event_draft(version, &creator.id(), None, now_ms);
    let signer = match &creator.member_key {
        None => EventSigner::Server {
            server_name: &creator.server,
            key: creator_server_key,
        },
        Some(member_key) => EventSigner::Member {
            member_key,
            cosigner: None,
        },
    };
    let create = build_pdu(draft, version, signer)?;
    let room_id = hashes::room_id_from_create_event_id(&create.event_id);
    Ok((create, room_id))
}

/// Several servers sharing one room.
pub struct Federation {
    pub servers: Vec<Server>,
    /// If set, deliveries share checks 1–3 through it (see [`Federation::share_checks`]).
    pub memo: Option<CheckMemo>,
}

impl Federation {
    /// Servers `names` (signing key seeds 1, 2, ...) under `policy`, each holding every server's
    /// keys (fetched at 0, valid for [`KEY_VALIDITY_MS`]), in the room `room_id`.
    pub fn new(names: &[&str], policy: &RoomPolicy, room_id: &str) -> Federation {
        let mut servers: Vec<Server> = names
            .iter()
            .enumerate()
            .map(|(index, name)| Server::new(name, index as u8 + 1, policy.clone(), room_id))
            .collect();
        let published: Vec<ServerKeys> = servers
            .iter()
            .map(|server| server.published_keys(KEY_VALIDITY_MS))
            .collect();
        for server in &mut servers {
            for keys in &published {
                server.keys.insert(keys.clone(), 0);
            }
        }
        Federation {
            servers,
            memo: None,
        }
    }

    /// Makes every later delivery share checks 1–3 across servers (receipts are unchanged).
    pub fn share_checks(&mut self) {
        self.memo = Some(CheckMemo::new());
    }

    /// Makes every server share checks 4–5, the states at each event, check 6 and member-link
    /// co-signature checks through `facts` from now on (results are unchanged; see
    /// [`super::shared`]).
    pub fn share_facts(&mut self, facts: &SharedEventFacts) {
        for server in &mut self.servers {
            server.room.set_shared_facts(Some(facts.clone()));
            server.links.set_shared_facts(Some(facts.clone()));
        }
    }

    /// Delivers `pdu` to the server called `name` by `path`, through the shared memo if any (as
    /// a [`PduCopy`]).
    pub fn deliver_one(
        &mut self,
        pdu: &Pdu,
        name: &str,
        path: ArrivalPath,
        now_ms: i64,
    ) -> Receipt {
        let index = self
            .servers
            .iter()
            .position(|server| server.name == name)
            .unwrap_or_else(|| panic!("no testbed server {name}"));
        match &mut self.memo {
            Some(memo) => {
                let copy = PduCopy::from_arc(Arc::clone(&pdu.json));
                self.servers[index].receive_copy(memo, &copy, path, now_ms)
            }
            None => self.servers[index].receive(pdu, path, now_ms),
        }
    }

    /// The server called `name`.
    pub fn server(&mut self, name: &str) -> &mut Server {
        self.servers
            .iter_mut()
            .find(|server| server.name == name)
            .unwrap_or_else(|| panic!("no testbed server {name}"))
    }

    /// Delivers `pdu` by `/send` to each server in `to` at `now_ms`, returning their verdicts in
    /// that order.
    pub fn deliver(&mut self, pdu: &Pdu, to: &[&str], now_ms: i64) -> Vec<Verdict> {
        to.iter()
            .map(|name| {
                self.deliver_one(pdu, name, ArrivalPath::Send, now_ms)
                    .verdict
            })
            .collect()
    }

    /// `user`'s server sends an event and delivers it to every other server.
    pub fn broadcast(
        &mut self,
        user: &User,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
        now_ms: i64,
    ) -> Arc<Pdu> {
        let pdu = self
            .server(&user.server)
            .send(user, event_type, state_key, content, now_ms)
            .expect("the testbed builds valid events");
        let others: Vec<String> = self
            .servers
            .iter()
            .map(|server| server.name.clone())
            .filter(|name| *name != user.server)
            .collect();
        for name in others {
            self.deliver_one(&pdu, &name, ArrivalPath::Send, now_ms);
        }
        Arc::new(pdu)
    }
}

/// A room on `names` under `policy`, created by `creator` (whose server must be among them) with
/// a public join rule, and joined by `members` in order; every event is delivered to every
/// server. Returns the federation and the room ID.
pub fn public_room(
    names: &[&str],
    policy: &RoomPolicy,
    creator: &User,
    members: &[&User],
) -> (Federation, String) {
    public_room_sharing(names, policy, creator, members, None)
}

/// As [`public_room`], with every server sharing everything from the create event on if `facts`
/// is given: checks 1–3 through a [`CheckMemo`], the rest through `facts`.
pub fn public_room_sharing(
    names: &[&str],
    policy: &RoomPolicy,
    creator: &User,
    members: &[&User],
    facts: Option<&SharedEventFacts>,
) -> (Federation, String) {
    let creator_seed = names
        .iter()
        .position(|name| *name == creator.server)
        .expect("the creator's server is in the federation") as u8
        + 1;
    let creator_key = ServerSigningKey::from_seed(
        KeyId::ed25519("1").expect("a valid key ID"),
        &[creator_seed; 32],
    );
    let version = policy.room_version;
    let (create, room_id) =
        create_room(&version, creator, &creator_key, 1).expect("the create event builds");
    let mut federation = Federation::new(names, policy, &room_id);
    if let Some(facts) = facts {
        federation.share_facts(facts);
        federation.share_checks();
    }
    let all: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    for name in &all {
        let path = if *name == creator.server {
            ArrivalPath::Local
        } else {
            ArrivalPath::Send
        };
        federation.server(name).receive(&create, path, 1);
    }
    let creator_id = creator.id();
    federation.broadcast(
        creator,
        "m.room.member",
        Some(&creator_id),
        creator.membership_content("join"),
        2,
    );
    federation.broadcast(
        creator,
        "m.room.join_rules",
        Some(""),
        json!({"join_rule": "public"}),
        3,
    );
    for (offset, member) in members.iter().enumerate() {
        let member_id = member.id();
        federation.broadcast(
            member,
            "m.room.member",
            Some(&member_id),
            member.membership_content("join"),
            4 + offset as i64,
        );
    }
    (federation, room_id)
}
