//! The room-layer knobs of a verification policy, and the named presets of questions.md §2.3.
//!
//! Only the parts the receipt pipeline and the link table read live here: which room version
//! rooms use, what an unverified or pending member link does to a message, on which arrival
//! paths soft-failing applies, what a key invalidation does to the links it verified, and whether
//! a later verification reveals hidden events. Re-check timing, transport, backoff and pushes are
//! the key layer's knobs (the engine's presets); a preset here names only its pipeline part, so
//! presets that differ only there (P1a, P1b, P6, P9) share P1's values; P8 adds the join gate.

use crate::matrix::RoomVersion;

/// How a PDU reached the server. The spec's soft-fail rule and the MSC's link rule are silent on
/// which paths they cover (domain.md §1.14 A4; Synapse never soft-fails backfilled events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArrivalPath {
    /// Pushed in a `PUT /send/{txnId}` transaction.
    Send,
    /// Fetched with `POST /get_missing_events` to fill a gap before a pushed event.
    MissingEvents,
    /// Fetched with `GET /backfill` (history before the server joined or a gap it paginates).
    Backfill,
    /// Part of the `state` or `auth_chain` of a `send_join` response.
    JoinState,
    /// Re-fetched with `GET /event/{id}` (for example MSC4430's directed re-query).
    EventFetch,
    /// Created by this server itself (its own users' events).
    Local,
}

impl ArrivalPath {
    /// Every path, in declaration order.
    pub const ALL: [ArrivalPath; 6] = [
        ArrivalPath::Send,
        ArrivalPath::MissingEvents,
        ArrivalPath::Backfill,
        ArrivalPath::JoinState,
        ArrivalPath::EventFetch,
        ArrivalPath::Local,
    ];

    /// The lower-case name used in scenario files and listings.
    pub fn name(self) -> &'static str {
        match self {
            ArrivalPath::Send => "send",
            ArrivalPath::MissingEvents => "missing_events",
            ArrivalPath::Backfill => "backfill",
            ArrivalPath::JoinState => "join_state",
            ArrivalPath::EventFetch => "event_fetch",
            ArrivalPath::Local => "local",
        }
    }
}

/// A set of arrival paths (a bit per [`ArrivalPath`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArrivalPaths(u8);

impl ArrivalPaths {
    /// No path.
    pub const NONE: ArrivalPaths = ArrivalPaths(0);
    /// Only pushed transactions.
    pub const SEND_ONLY: ArrivalPaths = ArrivalPaths(1 << ArrivalPath::Send as u8);
    /// Pushed transactions and the gap fill that serves them, not backfill (Synapse's choice for
    /// the auth soft-fail of check 6).
    pub const SEND_AND_MISSING: ArrivalPaths =
        ArrivalPaths(1 << ArrivalPath::Send as u8 | 1 << ArrivalPath::MissingEvents as u8);
    /// Every remote path: also backfill, join state and re-fetches.
    pub const ALL_REMOTE: ArrivalPaths = ArrivalPaths(
        1 << ArrivalPath::Send as u8
            | 1 << ArrivalPath::MissingEvents as u8
            | 1 << ArrivalPath::Backfill as u8
            | 1 << ArrivalPath::JoinState as u8
            | 1 << ArrivalPath::EventFetch as u8,
    );

    /// Whether `path` is in the set.
    pub fn contains(self, path: ArrivalPath) -> bool {
        self.0 & (1 << path as u8) != 0
    }

    /// The set with `path` added.
    pub fn with(self, path: ArrivalPath) -> ArrivalPaths {
        ArrivalPaths(self.0 | 1 << path as u8)
    }

    /// The paths in the set, in [`ArrivalPath::ALL`] order, as names joined by `+`.
    pub fn describe(self) -> String {
        let names: Vec<&str> = ArrivalPath::ALL
            .into_iter()
            .filter(|path| self.contains(*path))
            .map(ArrivalPath::name)
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join("+")
        }
    }
}

/// What happens to a message event whose sender's link is not verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkAction {
    /// Deliver it with the sender's user ID shown (the link status is ignored).
    Deliver,
    /// Deliver it, labelled "invalid handle" (`member_info` maps the key to `null`) — P5.
    Label,
    /// Soft-fail it: not shown to clients, not a forward extremity (MSC4430 as written).
    SoftFail,
}

impl LinkAction {
    pub fn name(self) -> &'static str {
        match self {
            LinkAction::Deliver => "deliver",
            LinkAction::Label => "label",
            LinkAction::SoftFail => "soft_fail",
        }
    }
}

/// What a state event from a member whose link is not verified does. MSC4430: "state events will
/// still participate in state resolution and can be in the room state".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnverifiedStateEvents {
    /// Accept it like any state event: it extends the forward extremities and changes the
    /// current state (the reading the MSC's security section implies: a compromised member key
    /// can still invite, kick and ban).
    Resolve,
    /// Soft-fail it like a message: it takes part in state resolution only once other events
    /// reference it (the spec's soft-fail semantics read literally).
    SoftFail,
}

/// What a key invalidation does to the links the key verified (domain.md §1.5, P4, P7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidationRule {
    /// Every link the key verified becomes unverified, for past and future events alike
    /// (MSC4430: "all verified links signed with it become unverified").
    RevokeAll,
    /// P7, expiry is not revocation: a key that moved to `old_verify_keys` still vouches for
    /// events sent up to its `expired_ts`; only a revocation (404, key absent or replaced, bad
    /// response) unverifies everything.
    ExpiryIsNotRevocation,
    /// P4, verify once and cache forever: nothing un-verifies a link once verified.
    Never,
}

impl InvalidationRule {
    pub fn name(self) -> &'static str {
        match self {
            InvalidationRule::RevokeAll => "revoke_all",
            InvalidationRule::ExpiryIsNotRevocation => "expiry_is_not_revocation",
            InvalidationRule::Never => "never",
        }
    }
}

/// The room-layer part of a verification policy. Each field is one knob, orthogonal to the
/// others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPolicy {
    /// The preset's name (`P0`, `P1`, ...), or `custom`.
    pub name: &'static str,
    /// The room version rooms are created with: "12" (user-ID senders, server signatures) or the
    /// MSC4430 version (member keys).
    pub room_version: RoomVersion,
    /// Whether the MSC4430 link rule applies at all (only meaningful with member keys).
    pub link_rule: bool,
    /// What a message from a member with an unverified link does.
    pub unverified_link: LinkAction,
    /// What a message from a member whose link is still being verified (pending, or never
    /// observed) does (domain.md §1.14 A5; kegsay: linkage need not sit on the critical path).
    pub pending_link: LinkAction,
    /// What a state event from a member whose link is not verified does.
    pub unverified_state_events: UnverifiedStateEvents,
    /// Arrival paths on which the link rule soft-fails (A4). Elsewhere a soft-fail becomes a
    /// label.
    pub link_soft_fail_paths: ArrivalPaths,
    /// Arrival paths on which check 6 (auth against the current state) runs at all.
    pub auth_soft_fail_paths: ArrivalPaths,
    /// What a key invalidation does to the links it verified.
    pub invalidation: InvalidationRule,
    /// Fail-closed (P2): a key whose validity passed without a successful re-fetch invalidates
    /// its links. Fail-open (MSC4430 as written) keeps them.
    pub fail_closed: bool,
    /// A6: whether a link that becomes verified later reveals the messages it had hidden (spec
    /// soft-fail decisions are never revisited, so `false` is the default).
    pub reveal_on_verification: bool,
    /// P8's join gate (D7, D14): a resident answering `send_join` refuses (403) a join whose
    /// member link it cannot verify against the keys it holds for the claimed domain.
    pub join_gate: bool,
}

impl RoomPolicy {
    /// P0, today: room version 12, server signatures, no member links.
    pub const P0: RoomPolicy = RoomPolicy {
        name: "P0",
        room_version: RoomVersion::V12,
        link_rule: false,
        unverified_link: LinkAction::Deliver,
        pending_link: LinkAction::Deliver,
        unverified_state_events: UnverifiedStateEvents::Resolve,
        link_soft_fail_paths: ArrivalPaths::NONE,
        auth_soft_fail_paths: ArrivalPaths::SEND_AND_MISSING,
        invalidation: InvalidationRule::RevokeAll,
        fail_closed: false,
        reveal_on_verification: false,
        join_gate: false,
    };

    /// P1, MSC4430 as written: messages from unverified links soft-fail on every remote path,
    /// fail-open, a key invalidation revokes all its links, pending links deliver (the link is
    /// off the critical path).
    pub const P1: RoomPolicy = RoomPolicy {
        name: "P1",
        room_version: RoomVersion::MSC4430,
        link_rule: true,
        unverified_link: LinkAction::SoftFail,
        pending_link: LinkAction::Label,
        unverified_state_events: UnverifiedStateEvents::Resolve,
        link_soft_fail_paths: ArrivalPaths::ALL_REMOTE,
        auth_soft_fail_paths: ArrivalPaths::SEND_AND_MISSING,
        invalidation: InvalidationRule::RevokeAll,
        fail_closed: false,
        reveal_on_verification: false,
        join_gate: false,
    };

    /// P2, fail-closed (the MSC's original draft): as P1, and an unreachable domain's links turn
    /// unverified once its key's validity passes; pending links soft-fail too.
    pub const P2: RoomPolicy = RoomPolicy {
        name: "P2",
        fail_closed: true,
        pending_link: LinkAction::SoftFail,
        ..RoomPolicy::P1
    };

    /// P3, on-demand verification: as P1 in the pipeline (the key layer verifies when a link is
    /// needed instead of polling), so pending links are common and only labelled.
    pub const P3: RoomPolicy = RoomPolicy {
        name: "P3",
        ..RoomPolicy::P1
    };

    /// P4, verify once and cache forever (MSC4243): nothing un-verifies a link.
    pub const P4: RoomPolicy = RoomPolicy {
        name: "P4",
        invalidation: InvalidationRule::Never,
        ..RoomPolicy::P1
    };

    /// P5, label instead of hide: never soft-fail for link status; unverified senders are
    /// labelled (`user_id: null`).
    pub const P5: RoomPolicy = RoomPolicy {
        name: "P5",
        unverified_link: LinkAction::Label,
        pending_link: LinkAction::Label,
        link_soft_fail_paths: ArrivalPaths::NONE,
        ..RoomPolicy::P1
    };

    /// P7, expiry is not revocation: a key moved to `old_verify_keys` keeps vouching for events
    /// up to its `expired_ts`.
    pub const P7: RoomPolicy = RoomPolicy {
        name: "P7",
        invalidation: InvalidationRule::ExpiryIsNotRevocation,
        ..RoomPolicy::P1
    };

    /// P8, join gate: as P1, and a resident refuses joins whose member link it cannot verify.
    pub const P8: RoomPolicy = RoomPolicy {
        name: "P8",
        join_gate: true,
        ..RoomPolicy::P1
    };

    /// The presets, by name. P1a, P1b, P6 and P9 differ from P1 only outside the room layer
    /// (transport, push, key cache) and are listed with P1's room knobs.
    pub const PRESETS: [(&'static str, RoomPolicy); 12] = [
        ("P0", RoomPolicy::P0),
        ("P1", RoomPolicy::P1),
        ("P1a", RoomPolicy::named("P1a", RoomPolicy::P1)),
        ("P1b", RoomPolicy::named("P1b", RoomPolicy::P1)),
        ("P2", RoomPolicy::P2),
        ("P3", RoomPolicy::P3),
        ("P4", RoomPolicy::P4),
        ("P5", RoomPolicy::P5),
        ("P6", RoomPolicy::named("P6", RoomPolicy::P1)),
        ("P7", RoomPolicy::P7),
        ("P8", RoomPolicy::P8),
        ("P9", RoomPolicy::named("P9", RoomPolicy::P1)),
    ];

    const fn named(name: &'static str, base: RoomPolicy) -> RoomPolicy {
        RoomPolicy { name, ..base }
    }

    /// The preset called `name` (case-sensitive, as in questions.md §2.3).
    pub fn preset(name: &str) -> Option<RoomPolicy> {
        RoomPolicy::PRESETS
            .iter()
            .find(|(preset, _)| *preset == name)
            .map(|(_, policy)| policy.clone())
    }

    /// One line per knob, `name = value`, for listings.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            ("room_version", self.room_version.id.to_owned()),
            ("link_rule", self.link_rule.to_string()),
            ("unverified_link", self.unverified_link.name().to_owned()),
            ("pending_link", self.pending_link.name().to_owned()),
            (
                "unverified_state_events",
                match self.unverified_state_events {
                    UnverifiedStateEvents::Resolve => "resolve",
                    UnverifiedStateEvents::SoftFail => "soft_fail",
                }
                .to_owned(),
            ),
            ("link_soft_fail_paths", self.link_soft_fail_paths.describe()),
            ("auth_soft_fail_paths", self.auth_soft_fail_paths.describe()),
            ("invalidation", self.invalidation.name().to_owned()),
            ("fail_closed", self.fail_closed.to_string()),
            (
                "reveal_on_verification",
                self.reveal_on_verification.to_string(),
            ),
            ("join_gate", self.join_gate.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_found_by_name_and_differ_where_questions_md_says() {
        for (name, policy) in RoomPolicy::PRESETS {
            assert_eq!(policy.name, name);
            assert_eq!(RoomPolicy::preset(name), Some(policy));
        }
        assert_eq!(RoomPolicy::preset("P10"), None);
        let p0 = RoomPolicy::P0;
        let p1 = RoomPolicy::P1;
        assert!(!p0.room_version.member_keys && p1.room_version.member_keys);
        assert_eq!(p1.unverified_link, LinkAction::SoftFail);
        assert_eq!(RoomPolicy::P5.unverified_link, LinkAction::Label);
        assert!(
            !RoomPolicy::P5
                .link_soft_fail_paths
                .contains(ArrivalPath::Send)
        );
        assert!(RoomPolicy::P2.fail_closed && !p1.fail_closed);
        assert_eq!(RoomPolicy::P4.invalidation, InvalidationRule::Never);
        assert_eq!(
            RoomPolicy::P7.invalidation,
            InvalidationRule::ExpiryIsNotRevocation
        );
    }

    #[test]
    fn arrival_path_sets() {
        let synapse = ArrivalPaths::SEND_AND_MISSING;
        assert!(synapse.contains(ArrivalPath::Send));
        assert!(synapse.contains(ArrivalPath::MissingEvents));
        assert!(!synapse.contains(ArrivalPath::Backfill));
        assert!(!ArrivalPaths::ALL_REMOTE.contains(ArrivalPath::Local));
        assert_eq!(
            ArrivalPaths::NONE.with(ArrivalPath::Backfill).describe(),
            "backfill"
        );
        assert_eq!(ArrivalPaths::NONE.describe(), "none");
        assert_eq!(synapse.describe(), "send+missing_events");
    }
}
