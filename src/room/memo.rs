//! Checks 1–3 computed once per distinct event and shared by every server that receives it
//! (design.md "compute once what is the same for everyone").
//!
//! What the memo may share, and why it is exact:
//! - Check 1 (format), the event ID and check 3 (hashes, and the redacted copy) are pure
//!   functions of the event's JSON, the room version and the room ID. The memo keys them by a
//!   SHA-256 over the room version, the room ID and the canonical JSON of the whole event
//!   (signatures included), so two copies that differ in any byte — a tampered or re-signed
//!   copy — are different entries. The parsed event is stored once and shared as `Arc<Pdu>`.
//! - Check 2 is a pure function of the event and of the answers the server's key store gives
//!   to the `(server, key ID)` questions the check asks. The memo records those questions and
//!   answers with the verdict, and reuses the verdict only for a server whose key store gives
//!   the same answers (which also means it would ask the same questions); otherwise it checks
//!   again and remembers the newest answers. Under MSC4430 check 2 asks nothing, so its verdict
//!   is shared by everyone.
//!
//! A server using the memo gets exactly the receipts it would get without it (tested in
//! `tests/room_pipeline.rs`).
//!
//! The digest of a copy's canonical JSON is computed once per [`PduCopy`]: a world that sends
//! the same copy to many servers wraps it once and hands every receiver the same `PduCopy`
//! (`pipeline::receive_copy_shared`), so receivers neither clone nor canonicalise the JSON.

use std::collections::HashMap;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::checks::{self, FormatError};
use super::keys::KeySource;
use crate::matrix::canonical_json;
use crate::matrix::dag::IdHasher;
use crate::matrix::event_builder::{self, PduSignatureError};
use crate::matrix::hashes::ContentHashCheck;
use crate::matrix::{EventId, Pdu, RoomVersion};

/// The result of checks 1–3 for one received copy of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum FrontChecks {
    /// Check 1 failed; `event_id` is known if the JSON got as far as computing it.
    Format {
        event_id: Option<EventId>,
        error: FormatError,
    },
    /// Check 2 failed.
    Signature {
        event_id: EventId,
        error: PduSignatureError,
    },
    /// Checks 1 and 2 passed; the event to process further (redacted if check 3 failed).
    Passed {
        pdu: Arc<Pdu>,
        hash_check: ContentHashCheck,
    },
}

/// Runs checks 1–3 without a memo.
pub fn front_checks(
    version: &RoomVersion,
    room_id: &str,
    json: Value,
    keys: &impl KeySource,
) -> FrontChecks {
    let pdu = match checks::check_format(version, room_id, json) {
        Ok(pdu) => pdu,
        Err(error) => {
            return FrontChecks::Format {
                event_id: None,
                error,
            };
        }
    };
    if let Err(error) = checks::check_signatures(version, &pdu, keys) {
        return FrontChecks::Signature {
            event_id: pdu.event_id.clone(),
            error,
        };
    }
    let (pdu, hash_check) = checks::check_hashes(version, pdu);
    FrontChecks::Passed {
        pdu: Arc::new(pdu),
        hash_check,
    }
}

/// A received copy of a PDU, as it travels to several servers: the JSON (shared) and the
/// SHA-256 of its canonical form, computed once. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PduCopy {
    json: Arc<Value>,
    /// `None` if the JSON has no canonical form (check 1 fails on it).
    digest: Option<[u8; 32]>,
}

impl PduCopy {
    /// Wraps `json`, computing the digest of its canonical JSON.
    pub fn new(json: Value) -> PduCopy {
        PduCopy::from_arc(Arc::new(json))
    }

    /// Wraps shared JSON, computing the digest of its canonical JSON.
    pub fn from_arc(json: Arc<Value>) -> PduCopy {
        let digest = canonical_json::to_canonical_string(&json)
            .ok()
            .map(|canonical| Sha256::digest(canonical.as_bytes()).into());
        PduCopy { json, digest }
    }

    /// The JSON as received.
    pub fn json(&self) -> &Value {
        &self.json
    }
}

/// The key questions check 2 asked, with the answers, and the verdict they gave.
#[derive(Debug, Clone)]
struct SignatureVerdict {
    asked: Vec<(String, String, Option<VerifyingKey>)>,
    result: Result<(), PduSignatureError>,
}

#[derive(Debug, Clone)]
enum Entry {
    Format(FormatError),
    Parsed {
        /// The event as parsed (before check 3), for re-running check 2.
        parsed: Arc<Pdu>,
        /// Check 2's verdicts for the distinct key answers seen, most recently used first (at
        /// most [`MAX_VERDICTS`]).
        signatures: Vec<SignatureVerdict>,
        /// After check 3.
        checked: Arc<Pdu>,
        hash_check: ContentHashCheck,
    },
}

/// The entries of one digest, by room version and room ID (interned: see [`same_room`]).
type Slots = Vec<(&'static str, Arc<str>, Entry)>;

/// Whether the slot's room ID `held` (interned) is `room_id`. A room's `RoomState` holds the
/// interned copy too, so a receipt's room ID is usually the very same string: equal addresses
/// and lengths answer without reading the bytes (the held string is a separate allocation, a
/// cache miss per receipt); any other string is compared byte by byte.
fn same_room(held: &Arc<str>, room_id: &str) -> bool {
    (std::ptr::eq(held.as_ptr(), room_id.as_ptr()) && held.len() == room_id.len())
        || **held == *room_id
}

/// At most this many `Arc<Value>` copies are remembered by address (the table is cleared when
/// full; only speed depends on it).
const MAX_WRAPPED: usize = 1 << 18;

/// At most this many check-2 verdicts (distinct key answers) are kept per copy.
const MAX_VERDICTS: usize = 4;

/// Checks 1–3 shared across servers. Lookups only: nothing iterates the map.
#[derive(Debug, Default)]
pub struct CheckMemo {
    /// By the digest of the copy's canonical JSON; then by room version and room ID (check 1
    /// depends on them; almost always one entry).
    entries: HashMap<[u8; 32], Slots, IdHasher>,
    /// Copies handed over as `Arc<Value>`, by the address of the value: each entry holds its
    /// `Arc`, so the address cannot be reused by another value while the entry exists.
    wrapped: HashMap<usize, PduCopy, IdHasher>,
    /// Receipts answered from the memo without any signature verification.
    pub hits: u64,
    /// Receipts that ran check 2 (a new event, or a server whose keys answered differently).
    pub signature_checks: u64,
}

impl CheckMemo {
    pub fn new() -> CheckMemo {
        CheckMemo::default()
    }

    /// How many distinct received copies the memo holds.
    pub fn len(&self) -> usize {
        self.entries.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks 1–3 for `json` received in `room_id` of `version` by a server holding `keys`,
    /// computed once per distinct copy (and per distinct key answers for check 2).
    pub fn front_checks(
        &mut self,
        version: &RoomVersion,
        room_id: &str,
        json: Value,
        keys: &impl KeySource,
    ) -> FrontChecks {
        self.front_checks_copy(version, room_id, &PduCopy::new(json), keys)
    }

    /// As [`CheckMemo::front_checks`] for JSON shared as `Arc<Value>` by every receiver of the
    /// same copy: the digest is computed once per `Arc` (found again by its address).
    pub fn front_checks_arc(
        &mut self,
        version: &RoomVersion,
        room_id: &str,
        json: &Arc<Value>,
        keys: &impl KeySource,
    ) -> FrontChecks {
        let address = Arc::as_ptr(json) as usize;
        let copy = match self.wrapped.get(&address) {
            Some(copy) => copy.clone(),
            None => {
                if self.wrapped.len() >= MAX_WRAPPED {
                    self.wrapped.clear();
                }
                let copy = PduCopy::from_arc(Arc::clone(json));
                self.wrapped.insert(address, copy.clone());
                copy
            }
        };
        self.front_checks_copy(version, room_id, &copy, keys)
    }

    /// As [`CheckMemo::front_checks`] for a copy wrapped once for all its receivers.
    pub fn front_checks_copy(
        &mut self,
        version: &RoomVersion,
        room_id: &str,
        copy: &PduCopy,
        keys: &impl KeySource,
    ) -> FrontChecks {
        let Some(digest) = copy.digest else {
            // Not even canonicalisable: check 1 fails the same way without the memo.
            return front_checks(version, room_id, (*copy.json).clone(), keys);
        };
        let slots = self.entries.entry(digest).or_default();
        let position = slots.iter().position(|(version_id, room, _)| {
            *version_id == version.id && same_room(room, room_id)
        });
        let Some(position) = position else {
            let entry = match checks::check_format_shared(version, room_id, Arc::clone(&copy.json))
            {
                Err(error) => Entry::Format(error),
                Ok(pdu) => {
                    let signature = verify_recording(version, &pdu, keys);
                    self.signature_checks += 1;
                    let parsed = Arc::new(pdu);
                    let (checked, hash_check) = checks::check_hashes(version, (*parsed).clone());
                    // An intact event is stored once; only a redacted copy is a second one.
                    let checked = if hash_check == ContentHashCheck::Valid {
                        Arc::clone(&parsed)
                    } else {
                        Arc::new(checked)
                    };
                    Entry::Parsed {
                        parsed,
                        signatures: vec![signature],
                        checked,
                        hash_check,
                    }
                }
            };
            let answer = answer(&entry);
            slots.push((version.id, super::intern::intern(room_id), entry));
            return answer;
        };
        let entry = &mut slots[position].2;
        // A hit: reuse a check-2 verdict only if this server's keys answer its questions alike.
        if let Entry::Parsed {
            parsed, signatures, ..
        } = entry
        {
            let matching = signatures.iter().position(|verdict| {
                verdict.asked.iter().all(|(server, key_id, answer)| {
                    lookup(keys, parsed.origin_server_ts, server, key_id) == *answer
                })
            });
            match matching {
                Some(position) => {
                    signatures[..=position].rotate_right(1);
                    self.hits += 1;
                }
                None => {
                    signatures.insert(0, verify_recording(version, parsed, keys));
                    signatures.truncate(MAX_VERDICTS);
                    self.signature_checks += 1;
                }
            }
        } else {
            self.hits += 1;
        }
        answer(entry)
    }
}

/// The checks' result recorded in `entry` (check 2's most recently used verdict).
fn answer(entry: &Entry) -> FrontChecks {
    match entry {
        Entry::Format(error) => FrontChecks::Format {
            event_id: None,
            error: error.clone(),
        },
        Entry::Parsed {
            parsed,
            signatures,
            checked,
            hash_check,
        } => match &signatures[0].result {
            Err(error) => FrontChecks::Signature {
                event_id: parsed.event_id.clone(),
                error: error.clone(),
            },
            Ok(()) => FrontChecks::Passed {
                pdu: Arc::clone(checked),
                hash_check: *hash_check,
            },
        },
    }
}

/// The answer check 2's lookup gets from `keys` (see [`checks::check_signatures`]).
fn lookup(
    keys: &impl KeySource,
    origin_server_ts_ms: i64,
    server: &str,
    key_id: &str,
) -> Option<VerifyingKey> {
    keys.held_keys(server)?
        .key_for_event(key_id, origin_server_ts_ms)
}

/// Check 2, recording every key question and its answer.
fn verify_recording(version: &RoomVersion, pdu: &Pdu, keys: &impl KeySource) -> SignatureVerdict {
    let mut asked = Vec::new();
    let result = event_builder::verify_pdu_signatures(version, pdu, |server, key_id| {
        let answer = lookup(keys, pdu.origin_server_ts, server, key_id);
        asked.push((server.to_owned(), key_id.to_owned(), answer));
        answer
    });
    SignatureVerdict { asked, result }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::event_builder::{EventDraft, EventSigner, build_pdu};
    use crate::matrix::server_keys::ServerKeys;
    use crate::matrix::signing::{KeyId, ServerSigningKey};
    use crate::room::keys::KeyRing;
    use crate::room::room_state::RoomState;
    use serde_json::json;

    #[test]
    fn same_room_answers_as_string_equality() {
        let held = crate::room::intern::intern("!memo-room:hs1.example");
        let rooms = [
            "!memo-room:hs1.example".to_owned(),
            "!memo-room:hs2.example".to_owned(),
            "!memo-room:hs1.exampl".to_owned(),
            String::new(),
        ];
        for room in &rooms {
            assert_eq!(same_room(&held, room), *held == **room, "{room}");
        }
        // The interned copy itself (the common case: a RoomState's own room ID), and a prefix
        // of it at the same address.
        assert!(same_room(&held, &held));
        assert!(!same_room(&held, &held[..5]));
        let state = RoomState::new(RoomVersion::V12, "!memo-room:hs1.example");
        assert!(std::ptr::eq(state.room_id().as_ptr(), held.as_ptr()));
    }

    #[test]
    fn verdicts_are_shared_only_between_servers_whose_keys_answer_alike() {
        let version = RoomVersion::V12;
        let key = ServerSigningKey::from_seed(KeyId::ed25519("1").unwrap(), &[1; 32]);
        let draft = EventDraft {
            room_id: Some("!r:a.example".into()),
            sender: "@alice:a.example".into(),
            event_type: "m.room.message".into(),
            state_key: None,
            content: json!({"body": "hi"}),
            prev_events: vec!["$p".into()],
            auth_events: vec![],
            depth: 2,
            origin_server_ts_ms: 10,
        };
        let signer = EventSigner::Server {
            server_name: "a.example",
            key: &key,
        };
        let pdu = build_pdu(draft, &version, signer).unwrap();
        let mut holds_key = KeyRing::new();
        holds_key.insert(ServerKeys::with_current_key("a.example", &key, 1_000), 0);
        let lacks_key = KeyRing::new();
        let mut memo = CheckMemo::new();
        let room = "!r:a.example";
        let check = |memo: &mut CheckMemo, keys: &KeyRing| {
            let shared =
                memo.front_checks(&version, room, serde_json::Value::clone(&pdu.json), keys);
            assert_eq!(
                shared,
                front_checks(&version, room, serde_json::Value::clone(&pdu.json), keys)
            );
            shared
        };
        let first = check(&mut memo, &holds_key);
        assert!(matches!(first, FrontChecks::Passed { .. }));
        assert_eq!((memo.signature_checks, memo.hits), (1, 0));
        // Another server with the same key: answered from the memo, the same Arc<Pdu>.
        let second = check(&mut memo, &holds_key);
        assert_eq!((memo.signature_checks, memo.hits), (1, 1));
        if let (FrontChecks::Passed { pdu: a, .. }, FrontChecks::Passed { pdu: b, .. }) =
            (&first, &second)
        {
            assert!(Arc::ptr_eq(a, b));
        }
        // A server without the key is not given the other servers' verdict.
        assert!(matches!(
            check(&mut memo, &lacks_key),
            FrontChecks::Signature { .. }
        ));
        assert_eq!((memo.signature_checks, memo.hits), (2, 1));
        // Both verdicts are kept: either kind of server is answered without verifying again.
        assert!(matches!(
            check(&mut memo, &holds_key),
            FrontChecks::Passed { .. }
        ));
        assert!(matches!(
            check(&mut memo, &lacks_key),
            FrontChecks::Signature { .. }
        ));
        assert_eq!((memo.signature_checks, memo.hits), (2, 3));
        // JSON shared as Arc<Value>: wrapped once, then found by address, same answers.
        let shared_json = Arc::new(pdu.json.clone());
        for _ in 0..2 {
            assert_eq!(
                memo.front_checks_arc(&version, room, &shared_json, &holds_key),
                front_checks(
                    &version,
                    room,
                    serde_json::Value::clone(&pdu.json),
                    &holds_key
                )
            );
        }
        assert_eq!(memo.wrapped.len(), 1);
        assert_eq!((memo.signature_checks, memo.hits), (2, 5));
        // A different copy of the event is a different entry.
        let mut edited = serde_json::Value::clone(&pdu.json);
        edited["content"]["body"] = json!("edited");
        let redacted = memo.front_checks(&version, room, edited, &holds_key);
        assert!(matches!(
            redacted,
            FrontChecks::Passed {
                hash_check: ContentHashCheck::Mismatch,
                ..
            }
        ));
        assert_eq!(memo.len(), 2);
        // Format failures are shared too.
        let mut elsewhere = serde_json::Value::clone(&pdu.json);
        elsewhere["room_id"] = json!("!other");
        for _ in 0..2 {
            assert!(matches!(
                memo.front_checks(&version, room, elsewhere.clone(), &holds_key),
                FrontChecks::Format { .. }
            ));
        }
        assert_eq!(memo.len(), 3);
    }
}
