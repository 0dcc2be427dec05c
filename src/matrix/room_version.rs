//! Room versions as data: one [`RoomVersion`] struct with a documented flag per difference.
//!
//! fedsim supports the room versions that matter for MSC4430: "10", "11", "12" and the MSC4430
//! version. The proposal names its unstable version `org.matrix.12.xxxx`; we fill in the MSC number
//! and use [`MSC4430_ID`] = `org.matrix.12.4430`. Every command line also accepts the alias
//! `msc4430` (see [`RoomVersion::parse`]).

use std::fmt;

/// The unstable identifier of the MSC4430 room version ("based on room version 12").
pub const MSC4430_ID: &str = "org.matrix.12.4430";

/// Which state resolution algorithm a room version uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateResVersion {
    /// State resolution v2 (room versions 2-11).
    V2_0,
    /// State resolution v2.1 (MSC4297; room version 12 and later): iterative auth checks start
    /// from the empty state, and the conflicted subgraph joins the full conflicted set.
    V2_1,
}

/// Which top-level and content keys the redaction algorithm keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RedactionRules {
    /// v1-10 keep the top-level `origin`, `membership` and `prev_state` keys (MSC2176 and MSC3989
    /// removed them in v11). The spec's event-signing test vectors depend on this.
    pub keep_origin_membership_prev_state: bool,
    /// v11+ keep all of `m.room.create`'s content (v1-10 keep only `creator`).
    pub keep_all_create_content: bool,
    /// v11+ keep `invite` in `m.room.power_levels` content.
    pub keep_power_levels_invite: bool,
    /// v11+ keep `redacts` in `m.room.redaction` content (where v11 moved it, MSC2174).
    pub keep_redaction_redacts: bool,
    /// v9+ keep `join_authorised_via_users_server` in `m.room.member` content.
    pub keep_member_join_authorised: bool,
    /// v11+ keep `third_party_invite.signed` in `m.room.member` content (MSC3821).
    pub keep_member_third_party_invite_signed: bool,
    /// v8+ keep `allow` in `m.room.join_rules` content.
    pub keep_join_rules_allow: bool,
    /// MSC4430 keeps `domain` in `m.room.member` content: it is routing information and must
    /// survive redaction (domain.md gap A7). `localpart` is deliberately stripped (GDPR erasure).
    pub keep_member_domain: bool,
}

/// The rules of one room version. Every field is one difference between supported versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoomVersion {
    /// The identifier as it appears in `m.room.create`'s `content.room_version`.
    pub id: &'static str,
    /// Which state resolution algorithm applies.
    pub state_res: StateResVersion,
    /// What redaction keeps.
    pub redaction: RedactionRules,
    /// v11+: `redacts` lives in the content of `m.room.redaction` rather than at the top level.
    pub redacts_in_content: bool,
    /// v1-10: `m.room.create` content carries `creator`; v11+ uses the create event's `sender`.
    pub create_has_creator_key: bool,
    /// v12+ (MSC4291): the room ID is `!` + the create event's reference hash, the create event has
    /// no `room_id`, and `auth_events` never list the create event.
    pub room_id_from_create_event: bool,
    /// v12+ (MSC4289): the create event's sender and `additional_creators` are creators with
    /// infinite power; they may not appear in `m.room.power_levels` `users`.
    pub privileged_creators: bool,
    /// v6+: events must be strict canonical JSON (no floats, integers within ±(2^53-1)).
    pub strict_canonical_json: bool,
    /// v10+: power level values must be integers, not strings.
    pub integer_power_levels: bool,
    /// v7+: the `knock` membership and join rule.
    pub knocking: bool,
    /// v8+: the `restricted` join rule with `join_authorised_via_users_server`.
    pub restricted_joins: bool,
    /// v10+: the `knock_restricted` join rule.
    pub knock_restricted: bool,
    /// MSC4430: senders and member state keys are member keys (`@` + URL-safe unpadded base64 of
    /// an ed25519 public key), events are signed by the entity `"sender"`, and `m.room.member`
    /// content carries `localpart` and `domain` with a co-signature by the domain's server key.
    pub member_keys: bool,
    /// Today's auth rules reject events whose sender domain differs from the creator's when
    /// `m.federate` is false. MSC4430 removes that rule (senders have no domain) and instead has
    /// servers reject all inbound federation for the room at the network layer.
    pub federate_in_auth_rules: bool,
    /// MSC4430: a member event's co-signature is valid only with the *current* server key of its
    /// domain; the room v5 rule (old keys valid for events before `expired_ts`) does not apply.
    pub member_cosign_current_key_only: bool,
}

const REDACTION_V10: RedactionRules = RedactionRules {
    keep_origin_membership_prev_state: true,
    keep_all_create_content: false,
    keep_power_levels_invite: false,
    keep_redaction_redacts: false,
    keep_member_join_authorised: true,
    keep_member_third_party_invite_signed: false,
    keep_join_rules_allow: true,
    keep_member_domain: false,
};

const REDACTION_V11: RedactionRules = RedactionRules {
    keep_origin_membership_prev_state: false,
    keep_all_create_content: true,
    keep_power_levels_invite: true,
    keep_redaction_redacts: true,
    keep_member_join_authorised: true,
    keep_member_third_party_invite_signed: true,
    keep_join_rules_allow: true,
    keep_member_domain: false,
};

impl RoomVersion {
    pub const V10: RoomVersion = RoomVersion {
        id: "10",
        state_res: StateResVersion::V2_0,
        redaction: REDACTION_V10,
        redacts_in_content: false,
        create_has_creator_key: true,
        room_id_from_create_event: false,
        privileged_creators: false,
        strict_canonical_json: true,
        integer_power_levels: true,
        knocking: true,
        restricted_joins: true,
        knock_restricted: true,
        member_keys: false,
        federate_in_auth_rules: true,
        member_cosign_current_key_only: false,
    };

    pub const V11: RoomVersion = RoomVersion {
        id: "11",
        redaction: REDACTION_V11,
        redacts_in_content: true,
        create_has_creator_key: false,
        ..RoomVersion::V10
    };

    pub const V12: RoomVersion = RoomVersion {
        id: "12",
        state_res: StateResVersion::V2_1,
        room_id_from_create_event: true,
        privileged_creators: true,
        ..RoomVersion::V11
    };

    pub const MSC4430: RoomVersion = RoomVersion {
        id: MSC4430_ID,
        redaction: RedactionRules {
            keep_member_domain: true,
            ..REDACTION_V11
        },
        member_keys: true,
        federate_in_auth_rules: false,
        member_cosign_current_key_only: true,
        ..RoomVersion::V12
    };

    /// All supported versions, oldest first.
    pub const ALL: [RoomVersion; 4] = [
        RoomVersion::V10,
        RoomVersion::V11,
        RoomVersion::V12,
        RoomVersion::MSC4430,
    ];

    /// Looks up a room version by its identifier, accepting `msc4430` as an alias of
    /// [`MSC4430_ID`].
    pub fn parse(id: &str) -> Result<RoomVersion, UnsupportedRoomVersion> {
        let id = if id == "msc4430" { MSC4430_ID } else { id };
        RoomVersion::ALL
            .into_iter()
            .find(|version| version.id == id)
            .ok_or_else(|| UnsupportedRoomVersion(id.to_owned()))
    }
}

impl fmt::Display for RoomVersion {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.id)
    }
}

/// A room version fedsim does not implement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unsupported room version {0:?} (supported: \"10\", \"11\", \"12\", \"org.matrix.12.4430\" alias \"msc4430\")"
)]
pub struct UnsupportedRoomVersion(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_every_supported_id_and_the_alias() {
        for version in RoomVersion::ALL {
            assert_eq!(RoomVersion::parse(version.id), Ok(version));
        }
        assert_eq!(RoomVersion::parse("msc4430"), Ok(RoomVersion::MSC4430));
        assert!(RoomVersion::parse("1").is_err());
        assert!(RoomVersion::parse("9").is_err());
    }

    #[test]
    fn versions_differ_where_the_spec_says() {
        // Looked up by identifier, as a create event's `room_version` would be.
        let version = |id: &str| RoomVersion::parse(id).unwrap();
        assert!(version("10").redaction.keep_origin_membership_prev_state);
        assert!(!version("11").redaction.keep_origin_membership_prev_state);
        assert_eq!(version("11").state_res, StateResVersion::V2_0);
        assert_eq!(version("12").state_res, StateResVersion::V2_1);
        assert!(version("msc4430").redaction.keep_member_domain);
        assert!(!version("12").redaction.keep_member_domain);
        assert!(!version("msc4430").federate_in_auth_rules);
    }
}
