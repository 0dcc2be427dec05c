//! Rule 5: `m.room.member` events — join, invite (with third-party invites), leave and kick, ban,
//! knock.

use serde_json::Value;

use super::identifiers::is_valid_member_id;
use super::rule::{Rejection, Rule};
use super::third_party_invite::any_signature_verifies;
use super::{AuthState, PowerLevel, PowerLevels, join_rule_of, membership_of, user_power_level};
use crate::matrix::{Pdu, RoomVersion};

/// Rule 5, after rules 1-4 passed. `create` is the create event in `state`.
pub(super) fn check_member_event(
    version: &RoomVersion,
    event: &Pdu,
    create: &Pdu,
    state: &(impl AuthState + ?Sized),
) -> Result<Rule, Rejection> {
    // 5.1 If there is no state_key property, or no membership property in content, reject.
    //     The state key must also name a user (MSC4430: a member key): the event schema makes it
    //     one, and there is no target user otherwise.
    let Some(target) = event.state_key.as_deref() else {
        return Err(Rejection::new(
            Rule::MemberInvalidStateKey,
            "member event without a state_key",
        ));
    };
    if !is_valid_member_id(version, target) {
        return Err(Rejection::new(
            Rule::MemberInvalidStateKey,
            format!("state_key {target:?} is not a valid user ID for this room version"),
        ));
    }
    let Some(membership) = event.membership() else {
        return Err(Rejection::new(
            Rule::MemberMissingMembership,
            "member event without a string content.membership",
        ));
    };

    // 5.2 If content has join_authorised_via_users_server, the event must be validly signed by
    //     that user's homeserver (MSC4430: by that member key). The signature itself is verified
    //     by PDU check 2; an authoriser that is not a valid user ID can sign nothing, so reject.
    let authoriser = match event.content.get("join_authorised_via_users_server") {
        None => None,
        Some(value) => match value.as_str() {
            Some(user) if is_valid_member_id(version, user) => Some(user),
            _ => {
                return Err(Rejection::new(
                    Rule::JoinAuthoriserInvalid,
                    format!("join_authorised_via_users_server {value} is not a valid user ID"),
                ));
            }
        },
    };

    match membership {
        "join" => check_join(version, event, target, authoriser, create, state),
        "invite" => check_invite(version, event, target, state),
        "leave" => check_leave(version, event, target, state),
        "ban" => check_ban(version, event, target, state),
        "knock" if version.knocking => check_knock(version, event, target, state),
        // 5.8 Otherwise, the membership is unknown. Reject.
        other => Err(Rejection::new(
            Rule::UnknownMembership,
            format!("unknown membership {other:?}"),
        )),
    }
}

/// 5.3 If membership is join.
fn check_join(
    version: &RoomVersion,
    event: &Pdu,
    target: &str,
    authoriser: Option<&str>,
    create: &Pdu,
    state: &(impl AuthState + ?Sized),
) -> Result<Rule, Rejection> {
    // 5.3.1 If the only previous event is the m.room.create and the state_key is the creator
    //       (v10: content.creator; v11+: the create event's sender), allow.
    let original_creator = if version.create_has_creator_key {
        create.content.get("creator").and_then(Value::as_str)
    } else {
        Some(create.sender.as_str())
    };
    if event.prev_events.len() == 1
        && event.prev_events[0] == create.event_id
        && original_creator == Some(target)
    {
        return Ok(Rule::JoinCreator);
    }
    // 5.3.2 If the sender does not match state_key, reject.
    if event.sender != target {
        return Err(Rejection::new(
            Rule::JoinSenderNotTarget,
            format!("{} cannot join on behalf of {target}", event.sender),
        ));
    }
    // 5.3.3 If the sender is banned, reject.
    let current = membership_of(state, target);
    if current == "ban" {
        return Err(Rejection::new(
            Rule::SenderBanned,
            format!("{target} is banned"),
        ));
    }
    // No join-rules event, or one without `join_rule`: no rule below matches, so 5.3.7 rejects,
    // as the rules read and as ruma-state-res does (tests/auth_differential.rs compares).
    // Synapse reads a missing rule as `invite` instead (domain.md §5.3).
    let join_rule = join_rule_of(state);
    let invited_or_joined = matches!(current, "invite" | "join");
    match join_rule {
        // 5.3.4 If the join_rule is invite or knock, allow if membership is invite or join.
        Some("invite") | Some("knock") if invited_or_joined => Ok(Rule::JoinInvited),
        // 5.3.5 If the join_rule is restricted or knock_restricted:
        Some("restricted") | Some("knock_restricted") => {
            // 5.3.5.1 If membership state is join or invite, allow.
            if invited_or_joined {
                return Ok(Rule::JoinRestrictedMember);
            }
            // 5.3.5.2 If join_authorised_via_users_server is not a (joined) user with sufficient
            //         permission to invite other users, reject.
            let Some(authoriser) = authoriser else {
                return Err(Rejection::new(
                    Rule::JoinRestrictedUnauthorised,
                    format!("{target} is not invited and no join_authorised_via_users_server"),
                ));
            };
            let authoriser_membership = membership_of(state, authoriser);
            if authoriser_membership != "join" {
                return Err(Rejection::new(
                    Rule::JoinRestrictedUnauthorised,
                    format!("authoriser {authoriser} is {authoriser_membership}, not joined"),
                ));
            }
            let invite_level = PowerLevels::from_state(state).scalar_or_default("invite");
            let authoriser_level = user_power_level(version, authoriser, state);
            if authoriser_level < PowerLevel::Int(invite_level) {
                return Err(Rejection::new(
                    Rule::JoinRestrictedUnauthorised,
                    format!(
                        "authoriser {authoriser} has level {authoriser_level}, below the invite level {invite_level}"
                    ),
                ));
            }
            // 5.3.5.3 Otherwise, allow.
            Ok(Rule::JoinRestrictedAuthorised)
        }
        // 5.3.6 If the join_rule is public, allow.
        Some("public") => Ok(Rule::JoinPublic),
        // 5.3.7 Otherwise, reject.
        other => Err(Rejection::new(
            Rule::JoinNotAllowed,
            format!("join rule {other:?} does not let {target} ({current}) join"),
        )),
    }
}

/// 5.4 If membership is invite.
fn check_invite(
    version: &RoomVersion,
    event: &Pdu,
    target: &str,
    state: &(impl AuthState + ?Sized),
) -> Result<Rule, Rejection> {
    let target_membership = membership_of(state, target);
    // 5.4.1 If content has a third_party_invite property:
    if let Some(third_party_invite) = event.content.get("third_party_invite") {
        // 5.4.1.1 If target user is banned, reject.
        if target_membership == "ban" {
            return Err(Rejection::new(
                Rule::ThirdPartyInviteTargetBanned,
                format!("{target} is banned"),
            ));
        }
        // 5.4.1.2 If content.third_party_invite does not have a signed property, reject.
        let Some(signed) = third_party_invite.get("signed").and_then(Value::as_object) else {
            return Err(Rejection::new(
                Rule::ThirdPartyInviteMissingSigned,
                "third_party_invite has no `signed` object",
            ));
        };
        // 5.4.1.3 If signed does not have mxid and token properties, reject.
        let (Some(mxid), Some(token)) = (
            signed.get("mxid").and_then(Value::as_str),
            signed.get("token").and_then(Value::as_str),
        ) else {
            return Err(Rejection::new(
                Rule::ThirdPartyInviteSignedIncomplete,
                "third_party_invite.signed lacks a string mxid or token",
            ));
        };
        // 5.4.1.4 If mxid does not match state_key, reject.
        if mxid != target {
            return Err(Rejection::new(
                Rule::ThirdPartyInviteMxidMismatch,
                format!("signed mxid {mxid} is not the invitee {target}"),
            ));
        }
        // 5.4.1.5 If there is no m.room.third_party_invite event in the current room state with
        //         state_key matching token, reject.
        let Some(invite_event) = state.get("m.room.third_party_invite", token) else {
            return Err(Rejection::new(
                Rule::ThirdPartyInviteNoMatchingEvent,
                format!("no m.room.third_party_invite for token {token:?}"),
            ));
        };
        // 5.4.1.6 If sender does not match sender of the m.room.third_party_invite, reject.
        if invite_event.sender != event.sender {
            return Err(Rejection::new(
                Rule::ThirdPartyInviteSenderMismatch,
                format!(
                    "{} did not send the third-party invite {} ({})",
                    event.sender, invite_event.event_id, invite_event.sender
                ),
            ));
        }
        // 5.4.1.7 If any signature in signed matches any public key in the
        //         m.room.third_party_invite event, allow.
        if any_signature_verifies(signed, &invite_event.content) {
            return Ok(Rule::ThirdPartyInviteSigned);
        }
        // 5.4.1.8 Otherwise, reject.
        return Err(Rejection::new(
            Rule::ThirdPartyInviteBadSignature,
            format!(
                "no signature in `signed` verifies with a public key of {}",
                invite_event.event_id
            ),
        ));
    }
    // 5.4.2 If the sender's current membership state is not join, reject.
    let sender_membership = membership_of(state, &event.sender);
    if sender_membership != "join" {
        return Err(Rejection::new(
            Rule::InviteSenderNotJoined,
            format!(
                "inviter {} is {sender_membership}, not joined",
                event.sender
            ),
        ));
    }
    // 5.4.3 If target user's current membership state is join or ban, reject.
    if matches!(target_membership, "join" | "ban") {
        return Err(Rejection::new(
            Rule::InviteTargetJoinedOrBanned,
            format!("invitee {target} is already {target_membership}"),
        ));
    }
    // 5.4.4 If the sender's power level is at least the invite level, allow.
    let invite_level = PowerLevels::from_state(state).scalar_or_default("invite");
    let sender_level = user_power_level(version, &event.sender, state);
    if sender_level >= PowerLevel::Int(invite_level) {
        return Ok(Rule::InviteAllowed);
    }
    // 5.4.5 Otherwise, reject.
    Err(Rejection::new(
        Rule::InviteInsufficientPower,
        format!("inviter level {sender_level} is below the invite level {invite_level}"),
    ))
}

/// 5.5 If membership is leave.
fn check_leave(
    version: &RoomVersion,
    event: &Pdu,
    target: &str,
    state: &(impl AuthState + ?Sized),
) -> Result<Rule, Rejection> {
    let sender_membership = membership_of(state, &event.sender);
    // 5.5.1 If the sender matches state_key, allow iff they are invited, joined or knocking.
    if event.sender == target {
        return if matches!(sender_membership, "invite" | "join" | "knock") {
            Ok(Rule::LeaveSelf)
        } else {
            Err(Rejection::new(
                Rule::LeaveSelfNotMember,
                format!("{target} is {sender_membership} and cannot leave"),
            ))
        };
    }
    // 5.5.2 If the sender's current membership state is not join, reject.
    if sender_membership != "join" {
        return Err(Rejection::new(
            Rule::KickSenderNotJoined,
            format!("kicker {} is {sender_membership}, not joined", event.sender),
        ));
    }
    let levels = PowerLevels::from_state(state);
    let sender_level = user_power_level(version, &event.sender, state);
    // 5.5.3 If the target is banned and the sender is below the ban level, reject.
    let ban_level = levels.scalar_or_default("ban");
    if membership_of(state, target) == "ban" && sender_level < PowerLevel::Int(ban_level) {
        return Err(Rejection::new(
            Rule::UnbanInsufficientPower,
            format!("unbanner level {sender_level} is below the ban level {ban_level}"),
        ));
    }
    // 5.5.4 If the sender is at the kick level and above the target, allow.
    let kick_level = levels.scalar_or_default("kick");
    let target_level = user_power_level(version, target, state);
    if sender_level >= PowerLevel::Int(kick_level) && target_level < sender_level {
        return Ok(Rule::KickAllowed);
    }
    // 5.5.5 Otherwise, reject.
    Err(Rejection::new(
        Rule::KickInsufficientPower,
        format!(
            "kicker level {sender_level} (kick level {kick_level}) does not exceed target level {target_level}"
        ),
    ))
}

/// 5.6 If membership is ban.
fn check_ban(
    version: &RoomVersion,
    event: &Pdu,
    target: &str,
    state: &(impl AuthState + ?Sized),
) -> Result<Rule, Rejection> {
    // 5.6.1 If the sender's current membership state is not join, reject.
    let sender_membership = membership_of(state, &event.sender);
    if sender_membership != "join" {
        return Err(Rejection::new(
            Rule::BanSenderNotJoined,
            format!("banner {} is {sender_membership}, not joined", event.sender),
        ));
    }
    // 5.6.2 If the sender is at the ban level and above the target, allow.
    let ban_level = PowerLevels::from_state(state).scalar_or_default("ban");
    let sender_level = user_power_level(version, &event.sender, state);
    let target_level = user_power_level(version, target, state);
    if sender_level >= PowerLevel::Int(ban_level) && target_level < sender_level {
        return Ok(Rule::BanAllowed);
    }
    // 5.6.3 Otherwise, reject.
    Err(Rejection::new(
        Rule::BanInsufficientPower,
        format!(
            "banner level {sender_level} (ban level {ban_level}) does not exceed target level {target_level}"
        ),
    ))
}

/// 5.7 If membership is knock.
fn check_knock(
    version: &RoomVersion,
    event: &Pdu,
    target: &str,
    state: &(impl AuthState + ?Sized),
) -> Result<Rule, Rejection> {
    // 5.7.1 If the join_rule is anything other than knock or knock_restricted, reject.
    let join_rule = join_rule_of(state);
    let knockable = match join_rule {
        Some("knock") => true,
        Some("knock_restricted") => version.knock_restricted,
        _ => false,
    };
    if !knockable {
        return Err(Rejection::new(
            Rule::KnockJoinRuleForbids,
            format!("join rule {join_rule:?} does not allow knocking"),
        ));
    }
    // 5.7.2 If sender does not match state_key, reject.
    if event.sender != target {
        return Err(Rejection::new(
            Rule::KnockSenderNotTarget,
            format!("{} cannot knock on behalf of {target}", event.sender),
        ));
    }
    // 5.7.3 If the sender is not banned, invited or joined, allow.
    let current = membership_of(state, target);
    if !matches!(current, "ban" | "invite" | "join") {
        return Ok(Rule::KnockAllowed);
    }
    // 5.7.4 Otherwise, reject.
    Err(Rejection::new(
        Rule::KnockAlreadyMember,
        format!("{target} is already {current}"),
    ))
}
