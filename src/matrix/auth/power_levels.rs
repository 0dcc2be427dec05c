//! Power levels: reading them from the state (with the spec's defaults and v12's infinitely
//! powerful creators) and rule 10, the checks on a new `m.room.power_levels` event.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::identifiers::is_valid_member_id;
use super::rule::{Rejection, Rule};
use super::{AuthState, creators, creators_contain};
use crate::matrix::{Pdu, RoomVersion};

/// The largest integer a power level (or any canonical-JSON integer) may hold: 2^53 - 1.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// A user's power level: an integer, or — for room creators from room version 12 on — infinite.
///
/// `Int(_) < Infinite` for every integer, which is what every comparison in the rules needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PowerLevel {
    /// An ordinary power level.
    Int(i64),
    /// A room creator's level from room version 12 on: above every integer.
    Infinite,
}

impl PowerLevel {
    fn compare_int(self, level: i64) -> Ordering {
        self.cmp(&PowerLevel::Int(level))
    }
}

impl std::fmt::Display for PowerLevel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PowerLevel::Int(level) => write!(formatter, "{level}"),
            PowerLevel::Infinite => formatter.write_str("infinite"),
        }
    }
}

/// The seven scalar fields of `m.room.power_levels` rule 10.6 compares, with their defaults.
///
/// The defaults are the event schema's (`invite` 0; `kick`, `ban`, `redact`, `state_default` 50;
/// `users_default`, `events_default` 0). The server-server "Definitions" section says the invite
/// level "defaults to 50", but the `m.room.power_levels` schema, Synapse and ruma all use 0.
pub const SCALAR_FIELDS: [(&str, i64); 7] = [
    ("users_default", 0),
    ("events_default", 0),
    ("state_default", 50),
    ("ban", 50),
    ("redact", 50),
    ("kick", 50),
    ("invite", 0),
];

/// The default of a scalar power-level field.
fn scalar_default(field: &str) -> i64 {
    SCALAR_FIELDS
        .iter()
        .find(|(name, _)| *name == field)
        .map_or(0, |(_, default)| *default)
}

/// A power-level value as an integer, if it is one the rules accept: a JSON integer within
/// ±(2^53 - 1). Room versions 10+ reject strings and floats (rule 10.1).
pub fn integer_value(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .filter(|level| (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(level))
}

/// Read access to the current `m.room.power_levels` content (if any) with the spec's defaults.
#[derive(Clone, Copy)]
pub struct PowerLevels<'a> {
    content: Option<&'a Map<String, Value>>,
}

impl<'a> PowerLevels<'a> {
    /// The power levels in `state`.
    pub fn from_state(state: &'a (impl AuthState + ?Sized)) -> PowerLevels<'a> {
        PowerLevels {
            content: state
                .get("m.room.power_levels", "")
                .and_then(|event| event.content.as_object()),
        }
    }

    /// Whether the state holds a power-levels event.
    pub fn exists(&self) -> bool {
        self.content.is_some()
    }

    /// A scalar field as present in the content (`None` if absent or not an integer).
    pub fn scalar(&self, field: &str) -> Option<i64> {
        self.content?.get(field).and_then(integer_value)
    }

    /// A scalar field, or its default.
    pub fn scalar_or_default(&self, field: &str) -> i64 {
        self.scalar(field).unwrap_or_else(|| scalar_default(field))
    }

    /// The level required to send an event of `event_type` (rule 8): `events[type]`, else
    /// `state_default` for state events or `events_default` for others.
    pub fn required_level(&self, event_type: &str, is_state: bool) -> i64 {
        if let Some(level) = self
            .content
            .and_then(|content| content.get("events"))
            .and_then(|events| events.get(event_type))
            .and_then(integer_value)
        {
            return level;
        }
        self.scalar_or_default(if is_state {
            "state_default"
        } else {
            "events_default"
        })
    }
}

/// The power level of `user` in `state` (the spec's "sender's power level" / "target user's power
/// level"):
/// - from room version 12, a creator (the create event's sender or one of its
///   `additional_creators`) has infinite power, whatever `m.room.power_levels` says;
/// - with an `m.room.power_levels` event: `users[user]`, else `users_default`, else 0;
/// - without one: 100 for the creator (before v12: `content.creator` in v10, the create event's
///   sender in v11), 0 for everyone else.
pub fn user_power_level(
    version: &RoomVersion,
    user: &str,
    state: &(impl AuthState + ?Sized),
) -> PowerLevel {
    let create = state.get("m.room.create", "");
    let is_creator = create.is_some_and(|create| creators_contain(version, create, user));
    if version.privileged_creators && is_creator {
        return PowerLevel::Infinite;
    }
    let levels = PowerLevels::from_state(state);
    match levels.content {
        Some(content) => PowerLevel::Int(
            content
                .get("users")
                .and_then(|users| users.get(user))
                .and_then(integer_value)
                .unwrap_or_else(|| levels.scalar_or_default("users_default")),
        ),
        None => PowerLevel::Int(if is_creator { 100 } else { 0 }),
    }
}

/// Rule 10: the checks on a new `m.room.power_levels` event, after rules 1-9 passed.
/// `sender_level` is the sender's power level in `state`.
pub(super) fn check_power_levels_event(
    version: &RoomVersion,
    event: &Pdu,
    state: &(impl AuthState + ?Sized),
    sender_level: PowerLevel,
) -> Result<Rule, Rejection> {
    let empty = Map::new();
    let new = event.content.as_object().unwrap_or(&empty);

    // 10.1: the scalar fields must be integers when present.
    for (field, _) in SCALAR_FIELDS {
        if let Some(value) = new.get(field)
            && integer_value(value).is_none()
        {
            return Err(Rejection::new(
                Rule::PowerLevelsNonIntegerField,
                format!("`{field}` is {value}, not an integer"),
            ));
        }
    }
    // 10.2: `events` and `notifications` must be objects of integers.
    for field in ["events", "notifications"] {
        if let Some(value) = new.get(field) {
            let valid = value
                .as_object()
                .is_some_and(|map| map.values().all(|level| integer_value(level).is_some()));
            if !valid {
                return Err(Rejection::new(
                    Rule::PowerLevelsInvalidEventsOrNotifications,
                    format!("`{field}` is not an object of integers"),
                ));
            }
        }
    }
    // 10.3: `users` must map valid user IDs (MSC4430: member keys) to integers.
    if let Some(users) = new.get("users") {
        let Some(users) = users.as_object() else {
            return Err(Rejection::new(
                Rule::PowerLevelsInvalidUsers,
                "`users` is not an object",
            ));
        };
        for (user, level) in users {
            if !is_valid_member_id(version, user) {
                return Err(Rejection::new(
                    Rule::PowerLevelsInvalidUsers,
                    format!("`users` key {user:?} is not a valid user ID for this room version"),
                ));
            }
            if integer_value(level).is_none() {
                return Err(Rejection::new(
                    Rule::PowerLevelsInvalidUsers,
                    format!("`users[{user}]` is {level}, not an integer"),
                ));
            }
        }
        // 10.4 (v12+): creators may not be listed in `users`: their power is infinite and fixed.
        // (Looking each creator up in `users` costs O(creators · log users).)
        if version.privileged_creators
            && let Some(create) = state.get("m.room.create", "")
            && let Some(creator) = creators(create).find(|creator| users.contains_key(*creator))
        {
            return Err(Rejection::new(
                Rule::PowerLevelsUsersContainCreator,
                format!("`users` lists the room creator {creator}"),
            ));
        }
    }

    // 10.5: the room's first power-levels event is allowed.
    let Some(current) = state
        .get("m.room.power_levels", "")
        .and_then(|current| current.content.as_object())
    else {
        return Ok(Rule::PowerLevelsInitial);
    };

    // 10.6: each scalar field added, changed or removed: neither its current nor its new value
    // may exceed the sender's level. An absent value counts as its default ("power levels are
    // inferred from defaults when not explicitly supplied"; ruma reads it the same way, Synapse
    // compares only values actually present).
    for (field, default) in SCALAR_FIELDS {
        let old_value = current.get(field).and_then(integer_value);
        let new_value = new.get(field).and_then(integer_value);
        if old_value == new_value {
            continue;
        }
        let old_level = old_value.unwrap_or(default);
        let new_level = new_value.unwrap_or(default);
        if sender_level.compare_int(old_level) == Ordering::Less {
            return Err(Rejection::new(
                Rule::PowerLevelsFieldChangeTooHigh,
                format!("`{field}` is currently {old_level}, above the sender's {sender_level}"),
            ));
        }
        if sender_level.compare_int(new_level) == Ordering::Less {
            return Err(Rejection::new(
                Rule::PowerLevelsFieldChangeTooHigh,
                format!("`{field}` would become {new_level}, above the sender's {sender_level}"),
            ));
        }
    }

    // The entries of `events`, `notifications` and `users` that were added, changed or removed.
    let differences = |field: &'static str| {
        changed_entries(
            field,
            current.get(field).and_then(Value::as_object),
            new.get(field).and_then(Value::as_object),
        )
    };
    let mut event_changes = differences("events");
    event_changes.extend(differences("notifications"));
    let user_changes = differences("users");

    // 10.7 For each entry changed in, or removed from, `events` or `notifications`: if its current
    //      value exceeds the sender's level, reject.
    for change in &event_changes {
        if let Some(old_level) = change.old
            && sender_level.compare_int(old_level) == Ordering::Less
        {
            return Err(Rejection::new(
                Rule::PowerLevelsEventsRemovalTooHigh,
                format!(
                    "`{}[{}]` is currently {old_level}, above the sender's {sender_level}",
                    change.field, change.key
                ),
            ));
        }
    }
    // 10.8 For each entry added to, or changed in, `events` or `notifications`: if its new value
    //      exceeds the sender's level, reject.
    for change in &event_changes {
        if let Some(new_level) = change.new
            && sender_level.compare_int(new_level) == Ordering::Less
        {
            return Err(Rejection::new(
                Rule::PowerLevelsEventsAdditionTooHigh,
                format!(
                    "`{}[{}]` would become {new_level}, above the sender's {sender_level}",
                    change.field, change.key
                ),
            ));
        }
    }
    // 10.9 For each entry changed in, or removed from, `users`, other than the sender's own: if
    //      its current value is at least the sender's level, reject.
    for change in &user_changes {
        if let Some(old_level) = change.old
            && change.key != event.sender
            && sender_level.compare_int(old_level) != Ordering::Greater
        {
            return Err(Rejection::new(
                Rule::PowerLevelsUsersRemovalTooHigh,
                format!(
                    "`users[{}]` is {old_level}, not below the sender's {sender_level}",
                    change.key
                ),
            ));
        }
    }
    // 10.10 For each entry added to, or changed in, `users`: if its new value exceeds the
    //       sender's level, reject.
    for change in &user_changes {
        if let Some(new_level) = change.new
            && sender_level.compare_int(new_level) == Ordering::Less
        {
            return Err(Rejection::new(
                Rule::PowerLevelsUsersAdditionTooHigh,
                format!(
                    "`users[{}]` would become {new_level}, above the sender's {sender_level}",
                    change.key
                ),
            ));
        }
    }

    // 10.11 Otherwise, allow.
    Ok(Rule::PowerLevelsAllowed)
}

/// An entry of `events`, `notifications` or `users` that a power-levels event adds, changes or
/// removes: `old` is `None` when added, `new` is `None` when removed.
struct ChangedEntry<'a> {
    field: &'static str,
    key: &'a str,
    old: Option<i64>,
    new: Option<i64>,
}

/// The entries whose (integer) value differs between `old` and `new`, in key order.
///
/// Both maps are walked in step when they iterate in key order (serde_json's default map), so
/// comparing two `users` maps of n entries costs O(n) string comparisons and no allocation but
/// the (usually tiny) result. Otherwise (serde_json's `preserve_order`) every key is looked up.
fn changed_entries<'a>(
    field: &'static str,
    old: Option<&'a Map<String, Value>>,
    new: Option<&'a Map<String, Value>>,
) -> Vec<ChangedEntry<'a>> {
    let entries = |map: Option<&'a Map<String, Value>>| map.into_iter().flat_map(|map| map.iter());
    let mut changes = Vec::new();
    let mut record = |key: &'a str, old: Option<&Value>, new: Option<&Value>| {
        let (old, new) = (old.and_then(integer_value), new.and_then(integer_value));
        if old != new {
            changes.push(ChangedEntry {
                field,
                key,
                old,
                new,
            });
        }
    };
    let sorted = |map: Option<&Map<String, Value>>| map.is_none_or(|map| map.keys().is_sorted());
    if sorted(old) && sorted(new) {
        let mut old_entries = entries(old).peekable();
        let mut new_entries = entries(new).peekable();
        loop {
            match (old_entries.peek(), new_entries.peek()) {
                (None, None) => break,
                (Some((old_key, old_value)), None) => {
                    record(old_key, Some(old_value), None);
                    old_entries.next();
                }
                (None, Some((new_key, new_value))) => {
                    record(new_key, None, Some(new_value));
                    new_entries.next();
                }
                (Some((old_key, old_value)), Some((new_key, new_value))) => {
                    match old_key.cmp(new_key) {
                        Ordering::Less => {
                            record(old_key, Some(old_value), None);
                            old_entries.next();
                        }
                        Ordering::Greater => {
                            record(new_key, None, Some(new_value));
                            new_entries.next();
                        }
                        Ordering::Equal => {
                            record(old_key, Some(old_value), Some(new_value));
                            old_entries.next();
                            new_entries.next();
                        }
                    }
                }
            }
        }
    } else {
        let keys: BTreeSet<&'a String> = entries(old)
            .chain(entries(new))
            .map(|(key, _)| key)
            .collect();
        let get = |map: Option<&'a Map<String, Value>>, key: &str| map.and_then(|map| map.get(key));
        for key in keys {
            record(key, get(old, key), get(new, key));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_entries_reports_additions_changes_and_removals_in_key_order() {
        let old = json!({"a": 1, "b": 2, "c": 3, "e": 5});
        let new = json!({"b": 2, "c": 30, "d": 4, "e": "5"});
        let changes = changed_entries("users", old.as_object(), new.as_object());
        let summary: Vec<(&str, Option<i64>, Option<i64>)> = changes
            .iter()
            .map(|change| (change.key, change.old, change.new))
            .collect();
        // "e" changes from 5 to a non-integer: that counts as removing the integer.
        assert_eq!(
            summary,
            vec![
                ("a", Some(1), None),
                ("c", Some(3), Some(30)),
                ("d", None, Some(4)),
                ("e", Some(5), None),
            ]
        );
        assert!(changed_entries("users", None, None).is_empty());
        assert_eq!(changed_entries("users", None, new.as_object()).len(), 3);
        assert!(changed_entries("users", old.as_object(), old.as_object()).is_empty());
    }

    #[test]
    fn power_levels_order_infinite_above_every_integer() {
        assert!(PowerLevel::Infinite > PowerLevel::Int(MAX_SAFE_INTEGER));
        assert!(PowerLevel::Int(-1) < PowerLevel::Int(0));
        assert_eq!(
            integer_value(&json!(MAX_SAFE_INTEGER)),
            Some(MAX_SAFE_INTEGER)
        );
        assert_eq!(integer_value(&json!(MAX_SAFE_INTEGER + 1)), None);
        assert_eq!(integer_value(&json!(-MAX_SAFE_INTEGER - 1)), None);
        assert_eq!(integer_value(&json!(1.0)), None);
        assert_eq!(integer_value(&json!("1")), None);
    }
}
