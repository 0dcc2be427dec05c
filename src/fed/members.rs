//! Several users of one server in one room (`rooms.members_per_server`), joined as Matrix
//! servers join them (s2s "Joining Rooms" is only for a server that is not in the room yet):
//!
//! - the server's first user to join while the server is not resident goes through
//!   `make_join`/`send_join` (`FedWorld::start_join`);
//! - a further user of a server that is resident (its room joined and at least one of its users
//!   joined in its own current state) joins with a plain `m.room.member` join event, drafted on
//!   the server's view and pushed over `/send` to the other residents like any event
//!   (`send_local`); under MSC4430 the event is signed with the user's own member key and
//!   co-signed by the server, so every receiver keeps one link per member key;
//! - a further user whose server's join is still in flight waits for it
//!   (`ServerRoom::pending_local_joins`) and joins locally once the join finished;
//! - a server stays resident while any of its users is joined: residents are the domains of the
//!   joined members in the current state (`FedWorld::residents`), so a leave, kick or ban of one
//!   user changes nothing for the server; a user of a server whose users all left joins through
//!   `make_join` again.
//!
//! With one planned user per server (the default) every join goes through `start_join` exactly
//! as before, so existing scenarios keep their results.

use crate::net::ServerId;

use super::{Ev, FedWorld, JOIN_RETRY_MS, RoomIndex, membership_content};

/// A local join that cannot be sent yet (the server's own join still being processed, a
/// transient refusal) is tried again this many times, `JOIN_RETRY_MS` apart.
pub const LOCAL_JOIN_ATTEMPTS: u32 = 8;

impl FedWorld {
    /// `user` of `server` joins `room` (a scheduled `Ev::Join`).
    pub(super) fn join_member(
        &mut self,
        room: RoomIndex,
        server: ServerId,
        user: u32,
        attempt: u32,
    ) {
        // A domain's new owner runs a fresh server with no rooms: the old owner's planned
        // joins are not its own.
        if self.key_adv.reregistered_at.contains_key(&server) {
            return;
        }
        let several = self.plans[room as usize].has_several_users(server);
        if !several {
            self.start_join(room, server, user, attempt);
            return;
        }
        let in_flight_for_other = self
            .join_users
            .get(&(room, server))
            .is_some_and(|joining| *joining != user);
        let Some(state) = self.servers[server as usize].rooms.get_mut(&room) else {
            self.start_join(room, server, user, attempt);
            return;
        };
        if !state.joined {
            if in_flight_for_other {
                state.pending_local_joins.insert(user);
            } else {
                self.start_join(room, server, user, attempt);
            }
            return;
        }
        let busy = !state.inbound.is_empty() || state.blocked.is_some();
        match self.local_membership(room, server, user).as_deref() {
            // Joined already; a banned user cannot join (the ban is lifted first).
            Some("join") | Some("ban") => return,
            _ => {}
        }
        if self.has_joined_user(room, server) {
            self.local_join(room, server, user, attempt);
        } else if busy {
            // The room's history (with the server's own join) is still being processed.
            self.retry_member_join(room, server, user, attempt);
        } else {
            // Every user of the server left: the server joins again through a resident.
            if let Some(state) = self.servers[server as usize].rooms.get_mut(&room) {
                state.joined = false;
            }
            self.start_join(room, server, user, attempt);
        }
    }

    /// The server's join of `room` finished: users that waited for it join locally.
    pub(super) fn server_joined(&mut self, room: RoomIndex, server: ServerId) {
        self.join_users.remove(&(room, server));
        let Some(state) = self.servers[server as usize].rooms.get_mut(&room) else {
            return;
        };
        let waiting = std::mem::take(&mut state.pending_local_joins);
        let now_ms = self.now_ms();
        for user in waiting {
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

    /// A further local user joins a room its server is resident in: a plain join event sent
    /// to the other residents over `/send`.
    fn local_join(&mut self, room: RoomIndex, server: ServerId, user: u32, attempt: u32) {
        let content =
            membership_content(&self.version, &self.servers[server as usize], user, "join");
        let sent = self
            .send_local(
                server,
                room,
                user,
                "m.room.member",
                Some("@self".into()),
                content,
            )
            .is_some();
        if sent {
            self.counters.local_joins += 1;
        } else {
            self.retry_member_join(room, server, user, attempt);
        }
    }

    fn retry_member_join(&mut self, room: RoomIndex, server: ServerId, user: u32, attempt: u32) {
        if attempt + 1 >= LOCAL_JOIN_ATTEMPTS {
            return;
        }
        let at_ms = self.now_ms() + JOIN_RETRY_MS;
        self.queue.push(
            at_ms,
            Ev::Join {
                room,
                server,
                user,
                attempt: attempt + 1,
            },
        );
    }

    /// `user`'s membership in `server`'s current state of `room`.
    pub(super) fn local_membership(
        &mut self,
        room: RoomIndex,
        server: ServerId,
        user: u32,
    ) -> Option<String> {
        let member = self.joiner_member_id(room, server, user);
        let state = &mut self.servers[server as usize].rooms.get_mut(&room)?.state;
        let event = state.current_state_event("m.room.member", &member).ok()??;
        event.membership().map(str::to_owned)
    }

    /// Whether one of `server`'s planned users is joined in its own current state of `room`.
    pub(super) fn has_joined_user(&mut self, room: RoomIndex, server: ServerId) -> bool {
        let users: Vec<u32> = self.plans[room as usize].users_of(server).collect();
        users
            .into_iter()
            .any(|user| self.local_membership(room, server, user).as_deref() == Some("join"))
    }

    /// The planned users of `room` joined in their own server's current state, as (server,
    /// user), in plan order. Called for every message when servers have several users, so it
    /// reads the planned member IDs in place (`member_ids[i]` belongs to `members[i]`, both fixed
    /// at build) instead of searching and cloning them per member.
    pub fn joined_members(&mut self, room: RoomIndex) -> Vec<(ServerId, u32)> {
        let plan = &self.plans[room as usize];
        let mut joined = Vec::new();
        for (&(server, user), member) in plan.members.iter().zip(&plan.member_ids) {
            let Some(server_room) = self.servers[server as usize].rooms.get_mut(&room) else {
                continue;
            };
            let event = server_room
                .state
                .current_state_event("m.room.member", member);
            if matches!(event, Ok(Some(event)) if event.membership() == Some("join")) {
                joined.push((server, user));
            }
        }
        joined
    }
}
