//! MSC4430's reading of a key re-check (domain.md §1.5), as a pure function.
//!
//! | re-check result from the domain                          | effect on links signed by K |
//! |----------------------------------------------------------|-----------------------------|
//! | 200, K (same ID and bytes) in verify_keys, valid_until ahead | stay valid, refresh       |
//! | 200, K moved to old_verify_keys                          | invalid                     |
//! | 200, K absent, or the same ID with other bytes           | invalid                     |
//! | 200, valid_until_ts already in the past                  | invalid                     |
//! | 404                                                      | invalid                     |
//! | timeout, refused, another status                         | fail-open: unchanged; fail-closed: invalid once expired |
//! | 200 unparseable / bad self-signature                     | unspecified (gap A2): a knob |

use ed25519_dalek::VerifyingKey;

use crate::matrix::server_keys::ServerKeys;

use super::policy::{Malformed, Unreachable};

/// What a re-check returned, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecheckResult<'keys> {
    /// 200 with a well-formed, self-signed key object.
    Keys(&'keys ServerKeys),
    /// 404.
    NotFound,
    /// No valid HTTP response (timeout, refused) or a status other than 200 and 404.
    Unreachable,
    /// 200 with a body that does not parse or whose self-signature fails.
    Malformed,
}

/// The row of the table a result falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Row {
    StillCurrent,
    MovedToOld,
    Absent,
    DifferentBytes,
    ExpiredInResponse,
    NotFound,
    Unreachable,
    Malformed,
}

/// Why a key stopped being valid (an output later issues connect to links).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum InvalidReason {
    MovedToOld,
    Absent,
    DifferentBytes,
    ExpiredInResponse,
    NotFound,
    /// Fail-closed: unreachable after the key's validity ended.
    UnreachableAfterExpiry,
    Malformed,
}

impl InvalidReason {
    /// Every reason, in a stable order.
    pub const ALL: [InvalidReason; 7] = [
        InvalidReason::MovedToOld,
        InvalidReason::Absent,
        InvalidReason::DifferentBytes,
        InvalidReason::ExpiredInResponse,
        InvalidReason::NotFound,
        InvalidReason::UnreachableAfterExpiry,
        InvalidReason::Malformed,
    ];

    /// A stable snake_case label.
    pub fn label(self) -> &'static str {
        match self {
            InvalidReason::MovedToOld => "moved_to_old",
            InvalidReason::Absent => "absent",
            InvalidReason::DifferentBytes => "different_bytes",
            InvalidReason::ExpiredInResponse => "expired_in_response",
            InvalidReason::NotFound => "not_found",
            InvalidReason::UnreachableAfterExpiry => "unreachable_after_expiry",
            InvalidReason::Malformed => "malformed",
        }
    }
}

/// What the cache does with the key K it tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// K stays valid; its validity is extended to the response's.
    Refresh,
    /// K is no longer valid.
    Invalidate(InvalidReason),
    /// Nothing changes (fail-open).
    Unchanged,
}

/// Classifies a result against the tracked key (`key_id`, `key`) at `now_abs_ms`, with the
/// response's validity already clamped to `effective_valid_until_ms`.
pub fn row(
    result: RecheckResult<'_>,
    key_id: &str,
    key: &VerifyingKey,
    effective_valid_until_ms: i64,
    now_abs_ms: i64,
) -> Row {
    match result {
        RecheckResult::NotFound => Row::NotFound,
        RecheckResult::Unreachable => Row::Unreachable,
        RecheckResult::Malformed => Row::Malformed,
        RecheckResult::Keys(keys) => {
            if effective_valid_until_ms <= now_abs_ms {
                return Row::ExpiredInResponse;
            }
            match keys.verify_keys.get(key_id) {
                Some(listed) if listed == key => Row::StillCurrent,
                Some(_) => Row::DifferentBytes,
                None if keys.old_verify_keys.contains_key(key_id) => Row::MovedToOld,
                None => Row::Absent,
            }
        }
    }
}

/// The effect of a row under the policy's readings of unreachable and malformed answers.
/// `key_expired` says whether the tracked key's own validity has already ended.
pub fn effect(
    row: Row,
    unreachable: Unreachable,
    malformed: Malformed,
    key_expired: bool,
) -> Effect {
    let unreachable_effect = match unreachable {
        Unreachable::FailOpen => Effect::Unchanged,
        Unreachable::FailClosed if key_expired => {
            Effect::Invalidate(InvalidReason::UnreachableAfterExpiry)
        }
        Unreachable::FailClosed => Effect::Unchanged,
    };
    match row {
        Row::StillCurrent => Effect::Refresh,
        Row::MovedToOld => Effect::Invalidate(InvalidReason::MovedToOld),
        Row::Absent => Effect::Invalidate(InvalidReason::Absent),
        Row::DifferentBytes => Effect::Invalidate(InvalidReason::DifferentBytes),
        Row::ExpiredInResponse => Effect::Invalidate(InvalidReason::ExpiredInResponse),
        Row::NotFound => Effect::Invalidate(InvalidReason::NotFound),
        Row::Unreachable => unreachable_effect,
        Row::Malformed => match malformed {
            Malformed::Invalidate => Effect::Invalidate(InvalidReason::Malformed),
            Malformed::FailOpen => unreachable_effect,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::matrix::server_keys::OldVerifyKey;
    use crate::matrix::signing::{KeyId, ServerSigningKey};

    fn key(seed: u8) -> VerifyingKey {
        ServerSigningKey::from_seed(KeyId::ed25519("a1").unwrap(), &[seed; 32]).verifying_key()
    }

    fn keys_with(current: &[(&str, u8)], old: &[(&str, u8)]) -> ServerKeys {
        ServerKeys {
            server_name: "origin.example".into(),
            verify_keys: current
                .iter()
                .map(|(id, seed)| (id.to_string(), key(*seed)))
                .collect(),
            old_verify_keys: old
                .iter()
                .map(|(id, seed)| {
                    let old = OldVerifyKey {
                        key: key(*seed),
                        expired_ts_ms: 50,
                    };
                    (id.to_string(), old)
                })
                .collect::<BTreeMap<_, _>>(),
            valid_until_ts_ms: 2_000,
        }
    }

    const NOW: i64 = 1_000;

    fn row_of(keys: &ServerKeys, valid_until: i64) -> Row {
        row(
            RecheckResult::Keys(keys),
            "ed25519:a1",
            &key(1),
            valid_until,
            NOW,
        )
    }

    fn open(row: Row) -> Effect {
        effect(row, Unreachable::FailOpen, Malformed::FailOpen, true)
    }

    #[test]
    fn row_200_same_key_in_verify_keys_refreshes() {
        let keys = keys_with(&[("ed25519:a1", 1)], &[]);
        assert_eq!(row_of(&keys, 2_000), Row::StillCurrent);
        assert_eq!(open(Row::StillCurrent), Effect::Refresh);
    }

    #[test]
    fn row_200_key_moved_to_old_invalidates() {
        let keys = keys_with(&[("ed25519:a2", 2)], &[("ed25519:a1", 1)]);
        assert_eq!(row_of(&keys, 2_000), Row::MovedToOld);
        assert_eq!(
            open(Row::MovedToOld),
            Effect::Invalidate(InvalidReason::MovedToOld)
        );
    }

    #[test]
    fn row_200_key_absent_or_other_bytes_invalidates() {
        let absent = keys_with(&[("ed25519:a2", 2)], &[]);
        assert_eq!(row_of(&absent, 2_000), Row::Absent);
        assert_eq!(open(Row::Absent), Effect::Invalidate(InvalidReason::Absent));
        let other_bytes = keys_with(&[("ed25519:a1", 9)], &[]);
        assert_eq!(row_of(&other_bytes, 2_000), Row::DifferentBytes);
        assert_eq!(
            open(Row::DifferentBytes),
            Effect::Invalidate(InvalidReason::DifferentBytes)
        );
    }

    #[test]
    fn row_200_valid_until_in_the_past_invalidates() {
        let keys = keys_with(&[("ed25519:a1", 1)], &[]);
        assert_eq!(row_of(&keys, NOW), Row::ExpiredInResponse);
        assert_eq!(row_of(&keys, NOW - 1), Row::ExpiredInResponse);
        assert_eq!(
            open(Row::ExpiredInResponse),
            Effect::Invalidate(InvalidReason::ExpiredInResponse)
        );
    }

    #[test]
    fn row_404_invalidates() {
        let found = row(RecheckResult::NotFound, "ed25519:a1", &key(1), 0, NOW);
        assert_eq!(found, Row::NotFound);
        assert_eq!(
            open(Row::NotFound),
            Effect::Invalidate(InvalidReason::NotFound)
        );
    }

    #[test]
    fn row_unreachable_is_fail_open_or_closed_after_expiry() {
        let result = row(RecheckResult::Unreachable, "ed25519:a1", &key(1), 0, NOW);
        assert_eq!(result, Row::Unreachable);
        assert_eq!(open(Row::Unreachable), Effect::Unchanged);
        let closed = |expired| {
            effect(
                Row::Unreachable,
                Unreachable::FailClosed,
                Malformed::FailOpen,
                expired,
            )
        };
        assert_eq!(closed(false), Effect::Unchanged);
        assert_eq!(
            closed(true),
            Effect::Invalidate(InvalidReason::UnreachableAfterExpiry)
        );
    }

    #[test]
    fn row_malformed_follows_its_knob() {
        let result = row(RecheckResult::Malformed, "ed25519:a1", &key(1), 0, NOW);
        assert_eq!(result, Row::Malformed);
        assert_eq!(open(Row::Malformed), Effect::Unchanged);
        assert_eq!(
            effect(
                Row::Malformed,
                Unreachable::FailOpen,
                Malformed::Invalidate,
                false
            ),
            Effect::Invalidate(InvalidReason::Malformed)
        );
        // Malformed read as unreachable follows fail-closed too.
        assert_eq!(
            effect(
                Row::Malformed,
                Unreachable::FailClosed,
                Malformed::FailOpen,
                true
            ),
            Effect::Invalidate(InvalidReason::UnreachableAfterExpiry)
        );
    }
}
