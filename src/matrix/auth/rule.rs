//! [`Rule`]: every authorization rule that can decide an event, and [`Rejection`].

use std::fmt;

use crate::matrix::RoomVersion;

/// One authorization rule of the spec that decided an event: either the rule that rejected it (in
/// a [`Rejection`]) or the rule that allowed it (returned by [`super::authorize`]).
///
/// Variants follow the order of the rules in the room version 12 spec; [`Rule::spec_number`] gives
/// the rule's number in a given room version (the numbers shift by one below v12, which inserted
/// rule 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// 1.1: a create event has `prev_events`.
    CreateHasPrevEvents,
    /// 1.2 (v10, v11): the create event's `room_id` domain differs from its sender's domain.
    CreateRoomIdDomainMismatch,
    /// 1.2 (v12+): the create event has a `room_id`.
    CreateHasRoomId,
    /// 1.3: `content.room_version` is present and not a recognised room version.
    CreateUnknownRoomVersion,
    /// 1.4 (v10): the create event's content has no `creator`.
    CreateMissingCreator,
    /// 1.4 (v12+): `additional_creators` is not an array of valid user IDs (member keys).
    CreateInvalidAdditionalCreators,
    /// 1.4/1.5: a valid create event is allowed.
    CreateAllowed,
    /// 2 (v12+): the `room_id` is not the ID of the (accepted) create event in the state.
    RoomIdNotCreateEvent,
    /// There is no create event to authorise against (v12 rule 2; rule 2.4 in v10/v11).
    MissingCreateEvent,
    /// 3.1 (2.1): two auth events share a `(type, state_key)`.
    AuthEventsDuplicate,
    /// 3.2 (2.2): an auth event is not one the auth events selection would pick.
    AuthEventsUnexpected,
    /// 3.3 (2.3): an auth event was itself rejected.
    AuthEventsRejected,
    /// v12 3.4; MSC4307 2.5 in earlier versions: an auth event belongs to another room.
    AuthEventsWrongRoom,
    /// 2.4 (v10, v11): no create event among the auth events.
    AuthEventsMissingCreate,
    /// 4 (3): `m.federate` is false and the sender's domain differs from the creator's.
    NotFederated,
    /// 5.1 (4.1): a member event without a valid `state_key`.
    MemberInvalidStateKey,
    /// 5.1 (4.1): a member event without a string `membership`.
    MemberMissingMembership,
    /// 5.2 (4.2): `join_authorised_via_users_server` does not name a valid user (member key).
    /// Whether the event carries that user's server's (member key's) signature is PDU check 2.
    JoinAuthoriserInvalid,
    /// 5.3.1: the creator's first join, right after the create event.
    JoinCreator,
    /// 5.3.2: a join whose sender is not its target.
    JoinSenderNotTarget,
    /// 5.3.3: the joining sender is banned.
    SenderBanned,
    /// 5.3.4: join rule `invite`/`knock` and the sender is invited or joined.
    JoinInvited,
    /// 5.3.5.1: join rule `restricted`/`knock_restricted` and the sender is invited or joined.
    JoinRestrictedMember,
    /// 5.3.5.2: restricted join whose authoriser is absent, not joined, or cannot invite.
    JoinRestrictedUnauthorised,
    /// 5.3.5.3: restricted join vouched for by a joined user who can invite.
    JoinRestrictedAuthorised,
    /// 5.3.6: join rule `public`.
    JoinPublic,
    /// 5.3.7: no join rule lets this sender join.
    JoinNotAllowed,
    /// 5.4.1.1: third-party invite of a banned target.
    ThirdPartyInviteTargetBanned,
    /// 5.4.1.2: `third_party_invite` without `signed`.
    ThirdPartyInviteMissingSigned,
    /// 5.4.1.3: `signed` lacks a string `mxid` or `token`.
    ThirdPartyInviteSignedIncomplete,
    /// 5.4.1.4: `signed.mxid` differs from the `state_key`.
    ThirdPartyInviteMxidMismatch,
    /// 5.4.1.5: no `m.room.third_party_invite` state event for `signed.token`.
    ThirdPartyInviteNoMatchingEvent,
    /// 5.4.1.6: the invite's sender did not send the `m.room.third_party_invite`.
    ThirdPartyInviteSenderMismatch,
    /// 5.4.1.7: a signature in `signed` verifies with a public key of the third-party invite.
    ThirdPartyInviteSigned,
    /// 5.4.1.8: no signature in `signed` verifies.
    ThirdPartyInviteBadSignature,
    /// 5.4.2: the inviter is not joined.
    InviteSenderNotJoined,
    /// 5.4.3: the invitee is joined or banned.
    InviteTargetJoinedOrBanned,
    /// 5.4.4: the inviter has at least the invite level.
    InviteAllowed,
    /// 5.4.5: the inviter is below the invite level.
    InviteInsufficientPower,
    /// 5.5.1: a user leaves (or rejects an invite / rescinds a knock).
    LeaveSelf,
    /// 5.5.1: a user who is not invited, joined or knocking tries to leave.
    LeaveSelfNotMember,
    /// 5.5.2: the kicker (or unbanner) is not joined.
    KickSenderNotJoined,
    /// 5.5.3: unban by a sender below the ban level.
    UnbanInsufficientPower,
    /// 5.5.4: kick by a sender at the kick level and above the target.
    KickAllowed,
    /// 5.5.5: kick by a sender below the kick level or not above the target.
    KickInsufficientPower,
    /// 5.6.1: the banner is not joined.
    BanSenderNotJoined,
    /// 5.6.2: ban by a sender at the ban level and above the target.
    BanAllowed,
    /// 5.6.3: ban by a sender below the ban level or not above the target.
    BanInsufficientPower,
    /// 5.7.1: knock while the join rule is not `knock` or `knock_restricted`.
    KnockJoinRuleForbids,
    /// 5.7.2: knock on someone else's behalf.
    KnockSenderNotTarget,
    /// 5.7.3: knock by a user who is not banned, invited or joined.
    KnockAllowed,
    /// 5.7.4: knock by a banned, invited or joined user.
    KnockAlreadyMember,
    /// 5.8: a membership value the room version does not know.
    UnknownMembership,
    /// 6 (5): the sender of a non-member event is not joined.
    SenderNotJoined,
    /// 7.1 (6.1): `m.room.third_party_invite` by a sender at the invite level.
    ThirdPartyInviteEventAllowed,
    /// 7.1 (6.1): `m.room.third_party_invite` by a sender below the invite level.
    ThirdPartyInviteEventInsufficientPower,
    /// 8 (7): the sender is below the event type's required power level.
    EventPowerTooLow,
    /// 9 (8): a `state_key` starting with `@` that is not the sender.
    StateKeyIsOtherUser,
    /// 10.1 (9.1): a scalar power-level field is not an integer.
    PowerLevelsNonIntegerField,
    /// 10.2 (9.2): `events` or `notifications` is not an object of integers.
    PowerLevelsInvalidEventsOrNotifications,
    /// 10.3 (9.3): `users` is not an object of valid user IDs (member keys) to integers.
    PowerLevelsInvalidUsers,
    /// 10.4 (v12+): `users` lists a room creator.
    PowerLevelsUsersContainCreator,
    /// 10.5 (9.4): the room's first power-levels event.
    PowerLevelsInitial,
    /// 10.6 (9.5): a scalar field changes from or to a level above the sender's.
    PowerLevelsFieldChangeTooHigh,
    /// 10.7 (9.6): an `events`/`notifications` entry above the sender's level changes.
    PowerLevelsEventsRemovalTooHigh,
    /// 10.8 (9.7): an `events`/`notifications` entry is set above the sender's level.
    PowerLevelsEventsAdditionTooHigh,
    /// 10.9 (9.8): another user's entry at or above the sender's level changes.
    PowerLevelsUsersRemovalTooHigh,
    /// 10.10 (9.9): a user's entry is set above the sender's level.
    PowerLevelsUsersAdditionTooHigh,
    /// 10.11 (9.10): a power-levels change within the sender's power.
    PowerLevelsAllowed,
    /// 11 (10): any other event that passed the rules above.
    Otherwise,
}

impl Rule {
    /// Every rule, in the order of the spec (v12 numbering).
    pub const ALL: [Rule; 70] = [
        Rule::CreateHasPrevEvents,
        Rule::CreateRoomIdDomainMismatch,
        Rule::CreateHasRoomId,
        Rule::CreateUnknownRoomVersion,
        Rule::CreateMissingCreator,
        Rule::CreateInvalidAdditionalCreators,
        Rule::CreateAllowed,
        Rule::RoomIdNotCreateEvent,
        Rule::MissingCreateEvent,
        Rule::AuthEventsDuplicate,
        Rule::AuthEventsUnexpected,
        Rule::AuthEventsRejected,
        Rule::AuthEventsWrongRoom,
        Rule::AuthEventsMissingCreate,
        Rule::NotFederated,
        Rule::MemberInvalidStateKey,
        Rule::MemberMissingMembership,
        Rule::JoinAuthoriserInvalid,
        Rule::JoinCreator,
        Rule::JoinSenderNotTarget,
        Rule::SenderBanned,
        Rule::JoinInvited,
        Rule::JoinRestrictedMember,
        Rule::JoinRestrictedUnauthorised,
        Rule::JoinRestrictedAuthorised,
        Rule::JoinPublic,
        Rule::JoinNotAllowed,
        Rule::ThirdPartyInviteTargetBanned,
        Rule::ThirdPartyInviteMissingSigned,
        Rule::ThirdPartyInviteSignedIncomplete,
        Rule::ThirdPartyInviteMxidMismatch,
        Rule::ThirdPartyInviteNoMatchingEvent,
        Rule::ThirdPartyInviteSenderMismatch,
        Rule::ThirdPartyInviteSigned,
        Rule::ThirdPartyInviteBadSignature,
        Rule::InviteSenderNotJoined,
        Rule::InviteTargetJoinedOrBanned,
        Rule::InviteAllowed,
        Rule::InviteInsufficientPower,
        Rule::LeaveSelf,
        Rule::LeaveSelfNotMember,
        Rule::KickSenderNotJoined,
        Rule::UnbanInsufficientPower,
        Rule::KickAllowed,
        Rule::KickInsufficientPower,
        Rule::BanSenderNotJoined,
        Rule::BanAllowed,
        Rule::BanInsufficientPower,
        Rule::KnockJoinRuleForbids,
        Rule::KnockSenderNotTarget,
        Rule::KnockAllowed,
        Rule::KnockAlreadyMember,
        Rule::UnknownMembership,
        Rule::SenderNotJoined,
        Rule::ThirdPartyInviteEventAllowed,
        Rule::ThirdPartyInviteEventInsufficientPower,
        Rule::EventPowerTooLow,
        Rule::StateKeyIsOtherUser,
        Rule::PowerLevelsNonIntegerField,
        Rule::PowerLevelsInvalidEventsOrNotifications,
        Rule::PowerLevelsInvalidUsers,
        Rule::PowerLevelsUsersContainCreator,
        Rule::PowerLevelsInitial,
        Rule::PowerLevelsFieldChangeTooHigh,
        Rule::PowerLevelsEventsRemovalTooHigh,
        Rule::PowerLevelsEventsAdditionTooHigh,
        Rule::PowerLevelsUsersRemovalTooHigh,
        Rule::PowerLevelsUsersAdditionTooHigh,
        Rule::PowerLevelsAllowed,
        Rule::Otherwise,
    ];

    /// The short snake_case name shown by `Display` and used in metrics.
    pub fn name(self) -> &'static str {
        use Rule::*;
        match self {
            CreateHasPrevEvents => "create_has_prev_events",
            CreateRoomIdDomainMismatch => "create_room_id_domain_mismatch",
            CreateHasRoomId => "create_has_room_id",
            CreateUnknownRoomVersion => "create_unknown_room_version",
            CreateMissingCreator => "create_missing_creator",
            CreateInvalidAdditionalCreators => "create_invalid_additional_creators",
            CreateAllowed => "create_allowed",
            RoomIdNotCreateEvent => "room_id_not_create_event",
            MissingCreateEvent => "missing_create_event",
            AuthEventsDuplicate => "auth_events_duplicate",
            AuthEventsUnexpected => "auth_events_unexpected",
            AuthEventsRejected => "auth_events_rejected",
            AuthEventsWrongRoom => "auth_events_wrong_room",
            AuthEventsMissingCreate => "auth_events_missing_create",
            NotFederated => "not_federated",
            MemberInvalidStateKey => "member_invalid_state_key",
            MemberMissingMembership => "member_missing_membership",
            JoinAuthoriserInvalid => "join_authoriser_invalid",
            JoinCreator => "join_creator",
            JoinSenderNotTarget => "join_sender_not_target",
            SenderBanned => "sender_banned",
            JoinInvited => "join_invited",
            JoinRestrictedMember => "join_restricted_member",
            JoinRestrictedUnauthorised => "join_restricted_unauthorised",
            JoinRestrictedAuthorised => "join_restricted_authorised",
            JoinPublic => "join_public",
            JoinNotAllowed => "join_not_allowed",
            ThirdPartyInviteTargetBanned => "third_party_invite_target_banned",
            ThirdPartyInviteMissingSigned => "third_party_invite_missing_signed",
            ThirdPartyInviteSignedIncomplete => "third_party_invite_signed_incomplete",
            ThirdPartyInviteMxidMismatch => "third_party_invite_mxid_mismatch",
            ThirdPartyInviteNoMatchingEvent => "third_party_invite_no_matching_event",
            ThirdPartyInviteSenderMismatch => "third_party_invite_sender_mismatch",
            ThirdPartyInviteSigned => "third_party_invite_signed",
            ThirdPartyInviteBadSignature => "third_party_invite_bad_signature",
            InviteSenderNotJoined => "invite_sender_not_joined",
            InviteTargetJoinedOrBanned => "invite_target_joined_or_banned",
            InviteAllowed => "invite_allowed",
            InviteInsufficientPower => "invite_insufficient_power",
            LeaveSelf => "leave_self",
            LeaveSelfNotMember => "leave_self_not_member",
            KickSenderNotJoined => "kick_sender_not_joined",
            UnbanInsufficientPower => "unban_insufficient_power",
            KickAllowed => "kick_allowed",
            KickInsufficientPower => "kick_insufficient_power",
            BanSenderNotJoined => "ban_sender_not_joined",
            BanAllowed => "ban_allowed",
            BanInsufficientPower => "ban_insufficient_power",
            KnockJoinRuleForbids => "knock_join_rule_forbids",
            KnockSenderNotTarget => "knock_sender_not_target",
            KnockAllowed => "knock_allowed",
            KnockAlreadyMember => "knock_already_member",
            UnknownMembership => "unknown_membership",
            SenderNotJoined => "sender_not_joined",
            ThirdPartyInviteEventAllowed => "third_party_invite_event_allowed",
            ThirdPartyInviteEventInsufficientPower => "third_party_invite_event_insufficient_power",
            EventPowerTooLow => "event_power_too_low",
            StateKeyIsOtherUser => "state_key_is_other_user",
            PowerLevelsNonIntegerField => "power_levels_non_integer_field",
            PowerLevelsInvalidEventsOrNotifications => {
                "power_levels_invalid_events_or_notifications"
            }
            PowerLevelsInvalidUsers => "power_levels_invalid_users",
            PowerLevelsUsersContainCreator => "power_levels_users_contain_creator",
            PowerLevelsInitial => "power_levels_initial",
            PowerLevelsFieldChangeTooHigh => "power_levels_field_change_too_high",
            PowerLevelsEventsRemovalTooHigh => "power_levels_events_removal_too_high",
            PowerLevelsEventsAdditionTooHigh => "power_levels_events_addition_too_high",
            PowerLevelsUsersRemovalTooHigh => "power_levels_users_removal_too_high",
            PowerLevelsUsersAdditionTooHigh => "power_levels_users_addition_too_high",
            PowerLevelsAllowed => "power_levels_allowed",
            Otherwise => "otherwise_allowed",
        }
    }

    /// The rule's number in the authorization rules of `version` (e.g. `"5.3.3"` in v12, `"4.3.3"`
    /// in v11). Room version 12 inserted rule 2 (room ID) and rule 10.4 (creators); v11 dropped
    /// v10's rule 1.4 (`creator`).
    pub fn spec_number(self, version: &RoomVersion) -> &'static str {
        use Rule::*;
        let v12 = version.room_id_from_create_event;
        let v10 = version.create_has_creator_key;
        // (number from v12 on, number in v10/v11)
        let (new, old) = match self {
            CreateHasPrevEvents => ("1.1", "1.1"),
            CreateRoomIdDomainMismatch | CreateHasRoomId => ("1.2", "1.2"),
            CreateUnknownRoomVersion => ("1.3", "1.3"),
            CreateMissingCreator | CreateInvalidAdditionalCreators => ("1.4", "1.4"),
            CreateAllowed => ("1.5", if v10 { "1.5" } else { "1.4" }),
            RoomIdNotCreateEvent | MissingCreateEvent => ("2", "2.4"),
            AuthEventsDuplicate => ("3.1", "2.1"),
            AuthEventsUnexpected => ("3.2", "2.2"),
            AuthEventsRejected => ("3.3", "2.3"),
            AuthEventsWrongRoom => ("3.4", "2.5"),
            AuthEventsMissingCreate => ("2", "2.4"),
            NotFederated => ("4", "3"),
            MemberInvalidStateKey | MemberMissingMembership => ("5.1", "4.1"),
            JoinAuthoriserInvalid => ("5.2", "4.2"),
            JoinCreator => ("5.3.1", "4.3.1"),
            JoinSenderNotTarget => ("5.3.2", "4.3.2"),
            SenderBanned => ("5.3.3", "4.3.3"),
            JoinInvited => ("5.3.4", "4.3.4"),
            JoinRestrictedMember => ("5.3.5.1", "4.3.5.1"),
            JoinRestrictedUnauthorised => ("5.3.5.2", "4.3.5.2"),
            JoinRestrictedAuthorised => ("5.3.5.3", "4.3.5.3"),
            JoinPublic => ("5.3.6", "4.3.6"),
            JoinNotAllowed => ("5.3.7", "4.3.7"),
            ThirdPartyInviteTargetBanned => ("5.4.1.1", "4.4.1.1"),
            ThirdPartyInviteMissingSigned => ("5.4.1.2", "4.4.1.2"),
            ThirdPartyInviteSignedIncomplete => ("5.4.1.3", "4.4.1.3"),
            ThirdPartyInviteMxidMismatch => ("5.4.1.4", "4.4.1.4"),
            ThirdPartyInviteNoMatchingEvent => ("5.4.1.5", "4.4.1.5"),
            ThirdPartyInviteSenderMismatch => ("5.4.1.6", "4.4.1.6"),
            ThirdPartyInviteSigned => ("5.4.1.7", "4.4.1.7"),
            ThirdPartyInviteBadSignature => ("5.4.1.8", "4.4.1.8"),
            InviteSenderNotJoined => ("5.4.2", "4.4.2"),
            InviteTargetJoinedOrBanned => ("5.4.3", "4.4.3"),
            InviteAllowed => ("5.4.4", "4.4.4"),
            InviteInsufficientPower => ("5.4.5", "4.4.5"),
            LeaveSelf | LeaveSelfNotMember => ("5.5.1", "4.5.1"),
            KickSenderNotJoined => ("5.5.2", "4.5.2"),
            UnbanInsufficientPower => ("5.5.3", "4.5.3"),
            KickAllowed => ("5.5.4", "4.5.4"),
            KickInsufficientPower => ("5.5.5", "4.5.5"),
            BanSenderNotJoined => ("5.6.1", "4.6.1"),
            BanAllowed => ("5.6.2", "4.6.2"),
            BanInsufficientPower => ("5.6.3", "4.6.3"),
            KnockJoinRuleForbids => ("5.7.1", "4.7.1"),
            KnockSenderNotTarget => ("5.7.2", "4.7.2"),
            KnockAllowed => ("5.7.3", "4.7.3"),
            KnockAlreadyMember => ("5.7.4", "4.7.4"),
            UnknownMembership => ("5.8", "4.8"),
            SenderNotJoined => ("6", "5"),
            ThirdPartyInviteEventAllowed | ThirdPartyInviteEventInsufficientPower => ("7.1", "6.1"),
            EventPowerTooLow => ("8", "7"),
            StateKeyIsOtherUser => ("9", "8"),
            PowerLevelsNonIntegerField => ("10.1", "9.1"),
            PowerLevelsInvalidEventsOrNotifications => ("10.2", "9.2"),
            PowerLevelsInvalidUsers => ("10.3", "9.3"),
            PowerLevelsUsersContainCreator => ("10.4", "9.3"),
            PowerLevelsInitial => ("10.5", "9.4"),
            PowerLevelsFieldChangeTooHigh => ("10.6", "9.5"),
            PowerLevelsEventsRemovalTooHigh => ("10.7", "9.6"),
            PowerLevelsEventsAdditionTooHigh => ("10.8", "9.7"),
            PowerLevelsUsersRemovalTooHigh => ("10.9", "9.8"),
            PowerLevelsUsersAdditionTooHigh => ("10.10", "9.9"),
            PowerLevelsAllowed => ("10.11", "9.10"),
            Otherwise => ("11", "10"),
        };
        if v12 { new } else { old }
    }

    /// Whether this rule allows the event (`false`: it rejects).
    pub fn allows(self) -> bool {
        use Rule::*;
        matches!(
            self,
            CreateAllowed
                | JoinCreator
                | JoinInvited
                | JoinRestrictedMember
                | JoinRestrictedAuthorised
                | JoinPublic
                | ThirdPartyInviteSigned
                | InviteAllowed
                | LeaveSelf
                | KickAllowed
                | BanAllowed
                | KnockAllowed
                | ThirdPartyInviteEventAllowed
                | PowerLevelsInitial
                | PowerLevelsAllowed
                | Otherwise
        )
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Why an event failed the authorization rules: the rule that rejected it, and the specifics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: {detail}")]
pub struct Rejection {
    /// The rule that rejected the event.
    pub rule: Rule,
    /// What about the event made the rule reject it, for people reading logs.
    pub detail: String,
}

impl Rejection {
    /// A rejection by `rule`.
    pub fn new(rule: Rule, detail: impl Into<String>) -> Rejection {
        debug_assert!(!rule.allows(), "{rule} is an allowing rule");
        Rejection {
            rule,
            detail: detail.into(),
        }
    }
}
