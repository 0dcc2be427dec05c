//! The typed view of a PDU that the auth rules, state resolution and the simulator read.
//!
//! A [`Pdu`] keeps the full JSON it was built from (`json`, including `hashes` and `signatures`)
//! next to the fields the rules read, parsed once. It is immutable after construction; the
//! simulator shares it behind an `Arc`.

use std::collections::BTreeMap;
use std::sync::Arc;

use once_cell::race::OnceBox;
use serde_json::Value;

use super::room_version::RoomVersion;

/// An event ID (`$` + URL-safe unpadded base64 of the reference hash in room versions 4+).
pub type EventId = String;

/// The key of a piece of room state: `(event type, state key)`.
pub type StateKey = (String, String);

/// A state map: what each `(type, state_key)` points to. Ordered, so iterating it is deterministic.
pub type StateMap = BTreeMap<StateKey, EventId>;

/// A parsed PDU.
#[derive(Debug, Clone, PartialEq)]
pub struct Pdu {
    pub event_id: EventId,
    /// Absent only on the create event of room versions with `room_id_from_create_event`.
    pub room_id: Option<String>,
    pub sender: String,
    /// The event `type`.
    pub event_type: String,
    pub state_key: Option<String>,
    pub content: Value,
    pub prev_events: Vec<EventId>,
    pub auth_events: Vec<EventId>,
    pub depth: i64,
    pub origin_server_ts: i64,
    /// For `m.room.redaction`: the redacted event, read from `content.redacts` (v11+) or the
    /// top-level `redacts` (earlier versions; a v11+ top-level `redacts` is ignored).
    pub redacts: Option<EventId>,
    /// The complete event as JSON, without `event_id` (which is derived, not sent, in v4+).
    /// Shared: a world keeps one copy of each event's JSON for its wire copy and every parse.
    pub json: std::sync::Arc<Value>,
    /// See [`Pdu::member_link_strings`].
    link_strings: LinkStringsCache,
}

/// Shared handles on the strings a member-link table keeps of a member event (`room::links`):
/// the member key (the sender), the event ID and the claimed `domain` and `localpart`.
#[derive(Debug, Clone)]
pub struct MemberLinkStrings {
    pub member_key: Arc<str>,
    pub event_id: Arc<str>,
    pub domain: Option<Arc<str>>,
    pub localpart: Option<Arc<str>>,
}

/// A [`MemberLinkStrings`] made once per parsed event. A cache: it takes part in no comparison
/// and no output, so two PDUs are equal whatever their caches hold.
#[derive(Default)]
struct LinkStringsCache(OnceBox<MemberLinkStrings>);

impl Clone for LinkStringsCache {
    fn clone(&self) -> Self {
        let cache = LinkStringsCache::default();
        if let Some(strings) = self.0.get() {
            let _ = cache.0.set(Box::new(strings.clone()));
        }
        cache
    }
}

impl PartialEq for LinkStringsCache {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for LinkStringsCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("LinkStringsCache")
    }
}

/// Why a JSON object is not a well-formed PDU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduFormatError {
    #[error("the event is not a JSON object")]
    NotAnObject,
    #[error("field `{field}` is missing")]
    Missing { field: &'static str },
    #[error("field `{field}` has the wrong type: expected {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
}

impl Pdu {
    /// Parses the fields the rules need from `json`. `event_id` is passed in because in room
    /// versions 4+ it is computed from the event (see `hashes::event_id`), not read from it.
    pub fn from_json(
        json: Value,
        event_id: EventId,
        version: &RoomVersion,
    ) -> Result<Pdu, PduFormatError> {
        Pdu::from_shared_json(std::sync::Arc::new(json), event_id, version)
    }

    /// As [`Pdu::from_json`] for JSON that is shared already (kept as it is, not copied).
    pub fn from_shared_json(
        json: std::sync::Arc<Value>,
        event_id: EventId,
        version: &RoomVersion,
    ) -> Result<Pdu, PduFormatError> {
        let object = json.as_object().ok_or(PduFormatError::NotAnObject)?;
        let string = |field: &'static str| -> Result<Option<String>, PduFormatError> {
            match object.get(field) {
                None => Ok(None),
                Some(Value::String(text)) => Ok(Some(text.clone())),
                Some(_) => Err(PduFormatError::WrongType {
                    field,
                    expected: "a string",
                }),
            }
        };
        let required_string = |field: &'static str| -> Result<String, PduFormatError> {
            string(field)?.ok_or(PduFormatError::Missing { field })
        };
        let integer = |field: &'static str| -> Result<i64, PduFormatError> {
            object
                .get(field)
                .ok_or(PduFormatError::Missing { field })?
                .as_i64()
                .ok_or(PduFormatError::WrongType {
                    field,
                    expected: "an integer",
                })
        };
        let id_list = |field: &'static str| -> Result<Vec<EventId>, PduFormatError> {
            let wrong_type = PduFormatError::WrongType {
                field,
                expected: "an array of event ID strings",
            };
            let items = object
                .get(field)
                .ok_or(PduFormatError::Missing { field })?
                .as_array()
                .ok_or(wrong_type.clone())?;
            items
                .iter()
                .map(|item| item.as_str().map(str::to_owned).ok_or(wrong_type.clone()))
                .collect()
        };
        let event_type = required_string("type")?;
        let content = object
            .get("content")
            .ok_or(PduFormatError::Missing { field: "content" })?;
        if !content.is_object() {
            return Err(PduFormatError::WrongType {
                field: "content",
                expected: "an object",
            });
        }
        let redacts = if event_type != "m.room.redaction" {
            None
        } else if version.redacts_in_content {
            // v11 moved `redacts` into the content. A top-level one is no part of the format
            // any more, nor covered by the hashes or signatures (anyone relaying the event could
            // add or change it), so it is neither read nor type-checked, as in Synapse and ruma.
            content
                .get("redacts")
                .and_then(Value::as_str)
                .map(str::to_owned)
        } else {
            string("redacts")?
        };
        Ok(Pdu {
            room_id: string("room_id")?,
            sender: required_string("sender")?,
            state_key: string("state_key")?,
            content: content.clone(),
            prev_events: id_list("prev_events")?,
            auth_events: id_list("auth_events")?,
            depth: integer("depth")?,
            origin_server_ts: integer("origin_server_ts")?,
            redacts,
            event_type,
            event_id,
            json,
            link_strings: LinkStringsCache::default(),
        })
    }

    /// The strings of this member event that member-link tables keep, made by `make` the first
    /// time any table asks. A world shares each event's `Pdu` among all the servers that hold
    /// it, so the strings are looked up (interned) once per event instead of once per server.
    /// `make` must be a function of the event alone.
    pub fn member_link_strings(
        &self,
        make: impl FnOnce(&Pdu) -> MemberLinkStrings,
    ) -> &MemberLinkStrings {
        self.link_strings.0.get_or_init(|| Box::new(make(self)))
    }

    /// The state key pair if this is a state event.
    pub fn state_key_pair(&self) -> Option<StateKey> {
        self.state_key
            .as_ref()
            .map(|state_key| (self.event_type.clone(), state_key.clone()))
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// `content.membership` for `m.room.member` events.
    pub fn membership(&self) -> Option<&str> {
        self.content.get("membership").and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn member_link_strings_are_made_once_and_leave_equality_alone() {
        let event = json!({
            "type": "m.room.member", "state_key": "@a:x", "sender": "@a:x", "room_id": "!r",
            "content": {"membership": "join", "domain": "x"}, "prev_events": [],
            "auth_events": [], "depth": 1, "origin_server_ts": 5
        });
        let pdu = Pdu::from_json(event.clone(), "$e".into(), &RoomVersion::V12).unwrap();
        let fresh = pdu.clone();
        let make = |pdu: &Pdu| MemberLinkStrings {
            member_key: Arc::from(pdu.sender.as_str()),
            event_id: Arc::from(pdu.event_id.as_str()),
            domain: Some(Arc::from("x")),
            localpart: None,
        };
        let first = Arc::clone(&pdu.member_link_strings(make).event_id);
        let mut calls = 0;
        let again = pdu.member_link_strings(|pdu| {
            calls += 1;
            make(pdu)
        });
        assert_eq!(calls, 0, "the second request reuses the first answer");
        assert!(Arc::ptr_eq(&first, &again.event_id));
        // A clone carries what was made; the cache is no part of equality.
        assert!(Arc::ptr_eq(
            &first,
            &pdu.clone().member_link_strings(make).event_id
        ));
        assert_eq!(pdu, fresh);
        let other = Pdu::from_json(event, "$other".into(), &RoomVersion::V12).unwrap();
        assert_ne!(pdu, other);
    }

    /// Test that v11+ reads a redaction's target from the content only: a top-level `redacts`
    /// (unsigned there, so anyone relaying could set it) neither names the target nor makes
    /// the event malformed, whereas v10 reads and type-checks it.
    #[test]
    fn v11_redactions_read_redacts_from_the_content_only() {
        let redaction = |content: serde_json::Value, top_level: Option<serde_json::Value>| {
            let mut event = json!({
                "type": "m.room.redaction", "sender": "@a:x", "room_id": "!r",
                "content": content, "prev_events": [], "auth_events": [], "depth": 1,
                "origin_server_ts": 5
            });
            if let Some(top_level) = top_level {
                event["redacts"] = top_level;
            }
            event
        };
        let parse = |event, version| Pdu::from_json(event, "$e".into(), version);
        let tampered = redaction(json!({"redacts": "$t"}), Some(json!(5)));
        assert_eq!(
            parse(tampered.clone(), &RoomVersion::V11)
                .unwrap()
                .redacts
                .as_deref(),
            Some("$t")
        );
        let top_level_only = redaction(json!({}), Some(json!("$t")));
        assert_eq!(
            parse(top_level_only.clone(), &RoomVersion::V12)
                .unwrap()
                .redacts,
            None
        );
        assert_eq!(
            parse(top_level_only, &RoomVersion::V10)
                .unwrap()
                .redacts
                .as_deref(),
            Some("$t")
        );
        assert_eq!(
            parse(tampered, &RoomVersion::V10),
            Err(PduFormatError::WrongType {
                field: "redacts",
                expected: "a string"
            })
        );
    }

    #[test]
    fn parses_a_member_event_and_reports_missing_fields() {
        let event = json!({
            "type": "m.room.member", "state_key": "@a:x", "sender": "@a:x", "room_id": "!r",
            "content": {"membership": "join"}, "prev_events": ["$p"], "auth_events": [],
            "depth": 3, "origin_server_ts": 5
        });
        let pdu = Pdu::from_json(event.clone(), "$e".into(), &RoomVersion::V12).unwrap();
        assert_eq!(pdu.membership(), Some("join"));
        assert_eq!(
            pdu.state_key_pair(),
            Some(("m.room.member".into(), "@a:x".into()))
        );
        let mut without_depth = event;
        without_depth.as_object_mut().unwrap().remove("depth");
        assert_eq!(
            Pdu::from_json(without_depth, "$e".into(), &RoomVersion::V12),
            Err(PduFormatError::Missing { field: "depth" })
        );
    }
}
