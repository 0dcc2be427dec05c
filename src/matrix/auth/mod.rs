//! The room authorization rules of room versions 10, 11, 12 and MSC4430, and the auth events
//! selection.
//!
//! Entry points:
//! - [`check_auth_rules`] / [`authorize`]: every rule except the shape of `auth_events`, against a
//!   state (the auth events of PDU check 4, the state before the event for check 5, the current
//!   state for check 6, or a partial state during state resolution's iterative auth checks).
//! - [`check_auth_events_shape`]: the rules about the event's `auth_events` list itself (v12 rule
//!   3, v10/v11 rule 2).
//! - [`check_against_auth_events`]: PDU check 4 — both of the above against the event's own auth
//!   events.
//! - [`auth_types_for_event`]: the auth events selection (server-server API).
//!
//! Every decision names the [`Rule`] that made it. Comments number the rules as the room version
//! 12 spec does; v10 and v11 number them one lower from rule 3 on (v12 inserted rule 2), which
//! [`Rule::spec_number`] accounts for.
//!
//! Signatures are not checked here. The spec couples them to the rules in two places, both
//! handled by PDU check 2 (signature checks) before any rule runs: "Events must be signed by the
//! server denoted by the `sender` property" (MSC4430: by the sender's member key), and rule 5.2
//! ("If the event is not validly signed by the homeserver of the user ID denoted by
//! `join_authorised_via_users_server`, reject"; MSC4430: "by the member key"). Both signatures
//! are verified by `event_builder::verify_pdu_signatures`; here rule 5.2 only checks that the key
//! names a valid user (member key).

mod identifiers;
mod member;
mod power_levels;
mod rule;
mod selection;
mod third_party_invite;

#[cfg(test)]
mod tests;

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::Value;

pub use identifiers::{
    is_valid_member_id, is_valid_member_key, is_valid_server_name, is_valid_user_id, server_name_of,
};
pub use power_levels::{PowerLevel, PowerLevels, integer_value, user_power_level};
pub use rule::{Rejection, Rule};
pub use selection::auth_types_for_event;

use super::{EventId, Pdu, RoomVersion, StateKey};

/// Read access to a room state, as the rules need it: the event at `(type, state_key)`.
pub trait AuthState {
    /// The state event for `(event_type, state_key)`, if the state has one.
    fn get(&self, event_type: &str, state_key: &str) -> Option<&Pdu>;
}

/// A borrowed `(type, state_key)` that a `BTreeMap<StateKey, _>` can be searched with without
/// allocating: `(String, String)` borrows as this trait object, ordered the same way.
trait StateKeyView {
    fn event_type(&self) -> &str;
    fn state_key(&self) -> &str;
}

impl StateKeyView for (String, String) {
    fn event_type(&self) -> &str {
        &self.0
    }
    fn state_key(&self) -> &str {
        &self.1
    }
}

impl StateKeyView for (&str, &str) {
    fn event_type(&self) -> &str {
        self.0
    }
    fn state_key(&self) -> &str {
        self.1
    }
}

impl<'a> Borrow<dyn StateKeyView + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn StateKeyView + 'a) {
        self
    }
}

impl PartialEq for dyn StateKeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.event_type() == other.event_type() && self.state_key() == other.state_key()
    }
}

impl Eq for dyn StateKeyView + '_ {}

impl PartialOrd for dyn StateKeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn StateKeyView + '_ {
    // The same order as `(String, String)`'s, as `Borrow` requires.
    fn cmp(&self, other: &Self) -> Ordering {
        (self.event_type(), self.state_key()).cmp(&(other.event_type(), other.state_key()))
    }
}

impl<P: Borrow<Pdu>> AuthState for BTreeMap<StateKey, P> {
    fn get(&self, event_type: &str, state_key: &str) -> Option<&Pdu> {
        let key: &dyn StateKeyView = &(event_type, state_key);
        BTreeMap::get(self, key).map(Borrow::borrow)
    }
}

/// A list of auth events: the event for `(type, state_key)` is the one with that type and state key.
impl<P: Borrow<Pdu>> AuthState for [P] {
    fn get(&self, event_type: &str, state_key: &str) -> Option<&Pdu> {
        self.iter().map(Borrow::borrow).find(|event| {
            event.event_type == event_type && event.state_key.as_deref() == Some(state_key)
        })
    }
}

impl<P: Borrow<Pdu>> AuthState for Vec<P> {
    fn get(&self, event_type: &str, state_key: &str) -> Option<&Pdu> {
        AuthState::get(self.as_slice(), event_type, state_key)
    }
}

impl<S: AuthState + ?Sized> AuthState for &S {
    fn get(&self, event_type: &str, state_key: &str) -> Option<&Pdu> {
        (**self).get(event_type, state_key)
    }
}

/// Checks `event` against every authorization rule of `version` except the shape of its
/// `auth_events` list (see [`check_auth_events_shape`]), evaluated against `state`.
///
/// From room version 12 on, `state` must hold the create event even though `auth_events` never
/// list it (the room ID names it).
pub fn check_auth_rules(
    version: &RoomVersion,
    event: &Pdu,
    state: &(impl AuthState + ?Sized),
) -> Result<(), Rejection> {
    authorize(version, event, state).map(|_| ())
}

/// Like [`check_auth_rules`], but also names the rule that allowed the event.
pub fn authorize(
    version: &RoomVersion,
    event: &Pdu,
    state: &(impl AuthState + ?Sized),
) -> Result<Rule, Rejection> {
    // 1. If type is m.room.create: decided by rule 1 alone.
    if event.event_type == "m.room.create" {
        return check_create_event(version, event);
    }

    let Some(create) = state.get("m.room.create", "") else {
        return Err(Rejection::new(
            Rule::MissingCreateEvent,
            "no m.room.create event in the state the event is checked against",
        ));
    };
    // 2 (v12+). The room ID must be the create event's ID with the sigil `!` instead of `$`.
    // The create event in the state was accepted: rejected events never enter a state.
    if version.room_id_from_create_event {
        let expected_room_id = create
            .event_id
            .strip_prefix('$')
            .map(|hash| format!("!{hash}"));
        if event.room_id.is_none() || event.room_id != expected_room_id {
            return Err(Rejection::new(
                Rule::RoomIdNotCreateEvent,
                format!(
                    "room_id {:?} is not the ID of create event {}",
                    event.room_id, create.event_id
                ),
            ));
        }
    }

    // 3. The auth_events rules: see check_auth_events_shape.

    // 4. m.federate false: only the creator's server may take part. MSC4430 drops this rule
    //    (senders carry no domain); servers refuse the room's federation traffic instead.
    if version.federate_in_auth_rules
        && create.content.get("m.federate") == Some(&Value::Bool(false))
        && server_name_of(&event.sender) != server_name_of(&create.sender)
    {
        return Err(Rejection::new(
            Rule::NotFederated,
            format!(
                "m.federate is false and {} is not on the creator's server",
                event.sender
            ),
        ));
    }

    // 5. If type is m.room.member: decided by rule 5.
    if event.event_type == "m.room.member" {
        return member::check_member_event(version, event, create, state);
    }

    // 6. If the sender's current membership state is not join, reject.
    let sender_membership = membership_of(state, &event.sender);
    if sender_membership != "join" {
        return Err(Rejection::new(
            Rule::SenderNotJoined,
            format!("sender {} is {sender_membership}, not joined", event.sender),
        ));
    }

    let sender_level = user_power_level(version, &event.sender, state);
    let levels = PowerLevels::from_state(state);

    // 7. If type is m.room.third_party_invite: allow iff the sender may invite.
    if event.event_type == "m.room.third_party_invite" {
        let invite_level = levels.scalar_or_default("invite");
        return if sender_level >= PowerLevel::Int(invite_level) {
            Ok(Rule::ThirdPartyInviteEventAllowed)
        } else {
            Err(Rejection::new(
                Rule::ThirdPartyInviteEventInsufficientPower,
                format!("sender level {sender_level} is below the invite level {invite_level}"),
            ))
        };
    }

    // 8. If the event type's required power level is greater than the sender's, reject.
    let required_level = levels.required_level(&event.event_type, event.is_state());
    if PowerLevel::Int(required_level) > sender_level {
        return Err(Rejection::new(
            Rule::EventPowerTooLow,
            format!(
                "{} needs power level {required_level}, sender has {sender_level}",
                event.event_type
            ),
        ));
    }

    // 9. A state_key starting with `@` is reserved for that user.
    if let Some(state_key) = &event.state_key
        && state_key.starts_with('@')
        && *state_key != event.sender
    {
        return Err(Rejection::new(
            Rule::StateKeyIsOtherUser,
            format!(
                "state_key {state_key} belongs to another user than {}",
                event.sender
            ),
        ));
    }

    // 10. If type is m.room.power_levels: decided by rule 10.
    if event.event_type == "m.room.power_levels" {
        return power_levels::check_power_levels_event(version, event, state, sender_level);
    }

    // 11. Otherwise, allow. (m.room.redaction included: the redact level is applied when the
    //     redaction is, not by the auth rules.)
    Ok(Rule::Otherwise)
}

/// Rule 1: an `m.room.create` event.
fn check_create_event(version: &RoomVersion, event: &Pdu) -> Result<Rule, Rejection> {
    // 1.1 If it has any prev_events, reject.
    if !event.prev_events.is_empty() {
        return Err(Rejection::new(
            Rule::CreateHasPrevEvents,
            format!(
                "the create event has {} prev_events",
                event.prev_events.len()
            ),
        ));
    }
    if version.room_id_from_create_event {
        // 1.2 (v12+) If the event has a room_id, reject: the room ID derives from its hash.
        if let Some(room_id) = &event.room_id {
            return Err(Rejection::new(
                Rule::CreateHasRoomId,
                format!("the create event carries room_id {room_id}"),
            ));
        }
    } else {
        // 1.2 (v10, v11) If the domain of the room_id does not match the sender's, reject.
        let room_domain = event.room_id.as_deref().and_then(server_name_of);
        if room_domain.is_none() || room_domain != server_name_of(&event.sender) {
            return Err(Rejection::new(
                Rule::CreateRoomIdDomainMismatch,
                format!(
                    "room_id {:?} is not on the sender's server ({})",
                    event.room_id, event.sender
                ),
            ));
        }
    }
    // 1.3 If content.room_version is present and is not a recognised version, reject.
    if let Some(room_version) = event.content.get("room_version")
        && !room_version
            .as_str()
            .is_some_and(is_recognised_room_version)
    {
        return Err(Rejection::new(
            Rule::CreateUnknownRoomVersion,
            format!("room_version {room_version} is not a recognised room version"),
        ));
    }
    // 1.4 (v10) If content has no creator property, reject.
    if version.create_has_creator_key && event.content.get("creator").is_none() {
        return Err(Rejection::new(
            Rule::CreateMissingCreator,
            "the create event's content has no `creator`",
        ));
    }
    // 1.4 (v12+) additional_creators, when present, must be an array of valid user IDs (MSC4430:
    //     member keys), validated like `sender`.
    if version.privileged_creators
        && let Some(additional) = event.content.get("additional_creators")
    {
        let valid = additional.as_array().is_some_and(|creators| {
            creators.iter().all(|creator| {
                creator
                    .as_str()
                    .is_some_and(|creator| is_valid_member_id(version, creator))
            })
        });
        if !valid {
            return Err(Rejection::new(
                Rule::CreateInvalidAdditionalCreators,
                format!("additional_creators {additional} is not an array of valid user IDs"),
            ));
        }
    }
    // 1.5 Otherwise, allow.
    Ok(Rule::CreateAllowed)
}

/// The room versions a server recognises for rule 1.3: the spec's stable versions and the MSC4430
/// version's identifier (fedsim can only *run* 10, 11, 12 and MSC4430). Not
/// [`RoomVersion::parse`], which also takes the command-line alias `msc4430`: no server
/// recognises that as a room version.
fn is_recognised_room_version(id: &str) -> bool {
    const STABLE: [&str; 12] = [
        "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12",
    ];
    STABLE.contains(&id) || id == super::MSC4430_ID
}

/// Rule 3 (v10/v11: rule 2): the event's `auth_events` themselves.
///
/// `auth_events` are the events the event lists (resolved by the caller, in the listed order);
/// `is_rejected` says whether one of them was rejected on receipt. Does nothing for create events,
/// which have no auth events. Rule 2 (v12: the room ID names an accepted create event) needs the
/// create event and is part of [`check_auth_rules`].
pub fn check_auth_events_shape(
    version: &RoomVersion,
    event: &Pdu,
    auth_events: &[&Pdu],
    is_rejected: impl Fn(&EventId) -> bool,
) -> Result<(), Rejection> {
    if event.event_type == "m.room.create" {
        return Ok(());
    }
    // 3.1 If there are duplicate entries for a given type and state_key pair, reject.
    for (index, auth_event) in auth_events.iter().enumerate() {
        let key = (&auth_event.event_type, &auth_event.state_key);
        if let Some(earlier) = auth_events[..index]
            .iter()
            .find(|earlier| (&earlier.event_type, &earlier.state_key) == key)
        {
            return Err(Rejection::new(
                Rule::AuthEventsDuplicate,
                format!(
                    "auth events {} and {} are both ({}, {:?})",
                    earlier.event_id,
                    auth_event.event_id,
                    auth_event.event_type,
                    auth_event.state_key
                ),
            ));
        }
    }
    // 3.2 If there are entries the auth events selection would not pick, reject. (v12: it never
    //     picks the create event.)
    let expected = auth_types_for_event(
        version,
        &event.event_type,
        &event.sender,
        event.state_key.as_deref(),
        &event.content,
    );
    for auth_event in auth_events {
        let picked = auth_event.state_key.as_ref().is_some_and(|state_key| {
            expected
                .iter()
                .any(|(kind, key)| *kind == auth_event.event_type && key == state_key)
        });
        if !picked {
            return Err(Rejection::new(
                Rule::AuthEventsUnexpected,
                format!(
                    "auth event {} ({}, {:?}) is not one the auth events selection picks",
                    auth_event.event_id, auth_event.event_type, auth_event.state_key
                ),
            ));
        }
    }
    // 3.3 If there are entries which were themselves rejected, reject.
    if let Some(rejected) = auth_events
        .iter()
        .find(|auth_event| is_rejected(&auth_event.event_id))
    {
        return Err(Rejection::new(
            Rule::AuthEventsRejected,
            format!("auth event {} was rejected", rejected.event_id),
        ));
    }
    // 3.4 (v12; MSC4307 adds it to every room version as 2.5) If any auth event is in another
    //     room, reject.
    if let Some(foreign) = auth_events
        .iter()
        .find(|auth_event| auth_event.room_id != event.room_id)
    {
        return Err(Rejection::new(
            Rule::AuthEventsWrongRoom,
            format!(
                "auth event {} is in room {:?}, the event in {:?}",
                foreign.event_id, foreign.room_id, event.room_id
            ),
        ));
    }
    // 2.4 (v10, v11) If there is no m.room.create event among the entries, reject.
    if !version.room_id_from_create_event
        && !auth_events
            .iter()
            .any(|auth_event| auth_event.event_type == "m.room.create")
    {
        return Err(Rejection::new(
            Rule::AuthEventsMissingCreate,
            "no m.room.create event among the auth events",
        ));
    }
    Ok(())
}

/// PDU check 4: `event` against its own `auth_events`. `create` is the room's accepted create
/// event, which room versions 12+ add to the state (their `auth_events` never list it; pass `None`
/// if it is unknown or was rejected, and rule 2 rejects the event); earlier versions find it among
/// `auth_events` and ignore the argument.
pub fn check_against_auth_events(
    version: &RoomVersion,
    event: &Pdu,
    auth_events: &[&Pdu],
    create: Option<&Pdu>,
    is_rejected: impl Fn(&EventId) -> bool,
) -> Result<Rule, Rejection> {
    check_auth_events_shape(version, event, auth_events, is_rejected)?;
    let mut state: Vec<&Pdu> = auth_events.to_vec();
    if version.room_id_from_create_event
        && let Some(create) = create
    {
        state.push(create);
    }
    authorize(version, event, state.as_slice())
}

/// The auth events an event with these fields should list, taken from `state` (the selection of
/// [`auth_types_for_event`], keeping the entries `state` has), in the selection's order. For
/// building events: `auth_events` = the IDs of the result.
pub fn select_auth_events<'a>(
    version: &RoomVersion,
    event_type: &str,
    sender: &str,
    state_key: Option<&str>,
    content: &Value,
    state: &'a (impl AuthState + ?Sized),
) -> Vec<&'a Pdu> {
    auth_types_for_event(version, event_type, sender, state_key, content)
        .iter()
        .filter_map(|(kind, key)| state.get(kind, key))
        .collect()
}

/// The sender's power level in `state` (see [`user_power_level`]).
pub fn sender_power_level(
    version: &RoomVersion,
    sender: &str,
    state: &(impl AuthState + ?Sized),
) -> PowerLevel {
    user_power_level(version, sender, state)
}

/// Whether `event` is a *power event* in the sense of state resolution: a state event of type
/// `m.room.power_levels` or `m.room.join_rules`, or an `m.room.member` `leave` or `ban` whose
/// sender is not its target (a kick or a ban) — events that may take power away from someone.
pub fn is_power_event(event: &Pdu) -> bool {
    let Some(state_key) = &event.state_key else {
        return false;
    };
    match event.event_type.as_str() {
        "m.room.power_levels" | "m.room.join_rules" => true,
        "m.room.member" => {
            matches!(event.membership(), Some("leave" | "ban")) && *state_key != event.sender
        }
        _ => false,
    }
}

/// `user`'s membership in `state`: the `membership` of their member event, `"leave"` without one.
pub fn membership_of<'a>(state: &'a (impl AuthState + ?Sized), user: &str) -> &'a str {
    state
        .get("m.room.member", user)
        .and_then(Pdu::membership)
        .unwrap_or("leave")
}

/// The current `join_rule` in `state`, if there is a join-rules event with one.
pub fn join_rule_of(state: &(impl AuthState + ?Sized)) -> Option<&str> {
    state
        .get("m.room.join_rules", "")
        .and_then(|event| event.content.get("join_rule"))
        .and_then(Value::as_str)
}

/// The room creators from room version 12 on: the create event's sender, then the strings in
/// `content.additional_creators`.
pub fn creators(create: &Pdu) -> impl Iterator<Item = &str> {
    std::iter::once(create.sender.as_str()).chain(
        create
            .content
            .get("additional_creators")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str),
    )
}

/// Whether `user` is a room creator according to `create`: its `content.creator` in v10, its
/// sender from v11 on, plus `content.additional_creators` from v12 on.
pub fn creators_contain(version: &RoomVersion, create: &Pdu, user: &str) -> bool {
    if version.create_has_creator_key {
        return create.content.get("creator").and_then(Value::as_str) == Some(user);
    }
    if create.sender == user {
        return true;
    }
    version.privileged_creators
        && create
            .content
            .get("additional_creators")
            .and_then(Value::as_array)
            .is_some_and(|creators| {
                creators
                    .iter()
                    .any(|creator| creator.as_str() == Some(user))
            })
}
