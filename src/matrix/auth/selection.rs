//! Auth events selection (server-server API §Auth events selection): which state events an event
//! lists in `auth_events`.

use serde_json::Value;

use crate::matrix::{RoomVersion, StateKey};

/// The `(type, state_key)` pairs whose current state events an event must list in `auth_events`
/// (each only if the state has it), in the spec's order, without duplicates:
/// 1. `m.room.create` — not from room version 12 on, where the room ID names it;
/// 2. `m.room.power_levels`;
/// 3. the sender's `m.room.member`;
/// 4. for `m.room.member` events:
///    1. the target's (`state_key`) `m.room.member`;
///    2. if `membership` is `join`, `invite` or `knock`, `m.room.join_rules` (the knock rule
///       depends on the join rule; Synapse and ruma pick it for knocks too);
///    3. if `membership` is `invite` with `content.third_party_invite`, the
///       `m.room.third_party_invite` whose state key is `third_party_invite.signed.token`;
///    4. if `membership` is `join` with `content.join_authorised_via_users_server` (room versions
///       with restricted joins), that user's `m.room.member` (matrix-spec PR 2100 limits this to
///       joins, as Synapse and ruma do).
///
/// A create event has no auth events.
pub fn auth_types_for_event(
    version: &RoomVersion,
    event_type: &str,
    sender: &str,
    state_key: Option<&str>,
    content: &Value,
) -> Vec<StateKey> {
    if event_type == "m.room.create" {
        return Vec::new();
    }
    let mut selected: Vec<StateKey> = Vec::with_capacity(6);
    let mut select = |event_type: &str, state_key: &str| {
        if !selected
            .iter()
            .any(|(kind, key)| kind == event_type && key == state_key)
        {
            selected.push((event_type.to_owned(), state_key.to_owned()));
        }
    };
    if !version.room_id_from_create_event {
        select("m.room.create", "");
    }
    select("m.room.power_levels", "");
    select("m.room.member", sender);
    if event_type == "m.room.member" {
        if let Some(target) = state_key {
            select("m.room.member", target);
        }
        let membership = content.get("membership").and_then(Value::as_str);
        if matches!(membership, Some("join" | "invite" | "knock")) {
            select("m.room.join_rules", "");
        }
        if membership == Some("invite")
            && let Some(token) = content
                .get("third_party_invite")
                .and_then(|invite| invite.get("signed"))
                .and_then(|signed| signed.get("token"))
                .and_then(Value::as_str)
        {
            select("m.room.third_party_invite", token);
        }
        if membership == Some("join")
            && version.restricted_joins
            && let Some(authoriser) = content
                .get("join_authorised_via_users_server")
                .and_then(Value::as_str)
        {
            select("m.room.member", authoriser);
        }
    }
    selected
}
