//! Verify each distinct key response once.
//!
//! Parsing a key response and checking its signatures is a pure function of (the bytes, the
//! expected server name, the notary key for notary answers): when several observers fetch the
//! same published response, the first check is remembered and the others reuse its result.
//! Entries are keyed by the exact bytes, so a changed body is always checked afresh. A few
//! entries are kept per domain (the latest direct and notary bodies), which bounds memory.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use serde_json::Value;

use crate::matrix::server_keys::ServerKeys;
use crate::matrix::signing;

/// Marks a direct (origin) answer in the memo.
const DIRECT: u32 = u32::MAX;
/// Entries kept per domain (oldest first), stored inline: a lookup reads one cache line or two
/// of a flat array instead of following a pointer to a separate allocation.
type DomainEntries = [Option<Entry>; 2];

/// What checking a response gave.
pub type Checked = Result<Option<Arc<ServerKeys>>, String>;

struct Entry {
    via: u32,
    /// [`fingerprint`] of the body: compared first, so a miss (every body in a one-observer run
    /// is new) does not read the stored body, which is long out of cache.
    fingerprint: u64,
    body: Arc<str>,
    result: Checked,
}

/// A notary as its clients know it (from their `trusted_key_servers` configuration).
#[derive(Debug, Clone)]
pub struct NotaryIdentity {
    pub server_name: String,
    pub key_id: String,
    pub key: VerifyingKey,
}

/// The memo of checked responses, by domain.
#[derive(Default)]
pub struct VerifyMemo {
    per_domain: Vec<DomainEntries>,
    /// Answers taken from the memo.
    pub hits: u64,
    /// Answers that were parsed and verified.
    pub checks: u64,
    /// Switch the memo off (every answer is checked afresh): results must not change.
    pub disabled: bool,
    /// Wall-clock nanoseconds spent parsing and verifying (for benchmarks and run-info.json
    /// only; never read by the simulation).
    pub check_nanos: u64,
}

impl VerifyMemo {
    /// A memo for `domain_count` domains (it grows as domains are added).
    pub fn new(domain_count: usize) -> VerifyMemo {
        VerifyMemo {
            per_domain: (0..domain_count).map(|_| Default::default()).collect(),
            ..VerifyMemo::default()
        }
    }

    /// Prefetch hint (see [`crate::engine::prefetch`]): the domain's entries, which the next
    /// check of one of its bodies reads first.
    pub fn prefetch_entries(&self, domain: u32) {
        if let Some(entries) = self.per_domain.get(domain as usize) {
            crate::engine::prefetch::prefetch_all(entries);
        }
    }

    /// Prefetch hint, once the entries are cached: the key objects and bodies they hold (the
    /// next check compares against, recycles or drops them).
    pub fn prefetch_entry_targets(&self, domain: u32) {
        use crate::engine::prefetch::{prefetch_arc, prefetch_arc_str};
        let Some(entries) = self.per_domain.get(domain as usize) else {
            return;
        };
        for entry in entries.iter().flatten() {
            prefetch_arc_str(&entry.body);
            if let Ok(Some(keys)) = &entry.result {
                prefetch_arc(keys);
            }
        }
    }

    /// Prefetch hint, once the key objects are cached too: their server names' bytes (the
    /// next check overwrites one of them).
    pub fn prefetch_entry_names(&self, domain: u32) {
        let Some(entries) = self.per_domain.get(domain as usize) else {
            return;
        };
        for entry in entries.iter().flatten() {
            if let Ok(Some(keys)) = &entry.result {
                crate::engine::prefetch::prefetch_bytes(keys.server_name.as_bytes(), 64);
            }
        }
    }

    /// A direct `/_matrix/key/v2/server` answer from `domain_name`: `Ok(Some(keys))`, or the
    /// reason it was refused.
    pub fn check_direct(&mut self, domain: u32, domain_name: &str, body: &Arc<str>) -> Checked {
        self.memoized(domain, DIRECT, body, |recycled| {
            check_direct_recycling(domain_name, body, recycled)
        })
    }

    /// A notary's `/_matrix/key/v2/query` answer about `domain_name`: `Ok(None)` when the notary
    /// had nothing for it.
    pub fn check_notary(
        &mut self,
        domain: u32,
        domain_name: &str,
        notary_index: u32,
        notary: &NotaryIdentity,
        body: &Arc<str>,
    ) -> Checked {
        self.memoized(domain, notary_index, body, |_| {
            check_notary(domain_name, notary, body)
        })
    }

    fn memoized(
        &mut self,
        domain: u32,
        via: u32,
        body: &Arc<str>,
        check: impl FnOnce(Option<Arc<ServerKeys>>) -> Checked,
    ) -> Checked {
        let index = domain as usize;
        if self.per_domain.len() <= index {
            self.per_domain.resize_with(index + 1, Default::default);
        }
        let fingerprint = fingerprint(body.as_bytes());
        if !self.disabled {
            let entries = &self.per_domain[index];
            if let Some(entry) = entries.iter().flatten().find(|entry| {
                entry.via == via
                    && (Arc::ptr_eq(&entry.body, body)
                        || (entry.fingerprint == fingerprint && entry.body == *body))
            }) {
                self.hits += 1;
                return entry.result.clone();
            }
        }
        self.checks += 1;
        // The entry the new one will push out (the oldest, when both are taken): its key
        // object, if nothing else holds it any more, is recycled by the check.
        let entries = &mut self.per_domain[index];
        let evicted = match entries {
            [Some(_), Some(_)] => entries[0].take(),
            _ => None,
        };
        let recycled = evicted.and_then(|entry| match entry.result {
            Ok(Some(keys)) if Arc::strong_count(&keys) == 1 && Arc::weak_count(&keys) == 0 => {
                Some(keys)
            }
            _ => None,
        });
        let started = std::time::Instant::now();
        let result = check(recycled);
        self.check_nanos += started.elapsed().as_nanos() as u64;
        let entries = &mut self.per_domain[index];
        let entry = Some(Entry {
            via,
            fingerprint,
            body: body.clone(),
            result: result.clone(),
        });
        match entries {
            [first @ None, second @ Some(_)] => {
                // The oldest was taken out above.
                *first = second.take();
                *second = entry;
            }
            [first @ None, _] => *first = entry,
            [_, second @ None] => *second = entry,
            [first, second] => {
                *first = second.take();
                *second = entry;
            }
        }
        result
    }
}

/// A 64-bit multiply-rotate hash of `bytes`: equal bodies have equal fingerprints (a lookup
/// aid only; a match is confirmed byte by byte).
fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hash = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        hash = (hash.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    let mut last = [0u8; 8];
    last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    (hash.rotate_left(5) ^ u64::from_le_bytes(last)).wrapping_mul(0x517c_c1b7_2722_0a95)
}

/// Parses and verifies an origin's own answer: the canonical fast path first (bodies as
/// servers write them), the general path for anything it does not accept.
pub fn check_direct(domain_name: &str, body: &str) -> Checked {
    if let Some(keys) = ServerKeys::parse_canonical_and_verify(body, domain_name) {
        return Ok(Some(Arc::new(keys)));
    }
    check_direct_general(domain_name, body)
}

/// [`check_direct`], writing the accepted keys over `recycled` (an unshared key object no
/// longer needed) when there is one and the fast path accepts: the same result, without
/// allocating a new object or decoding a verify key seen before.
pub fn check_direct_recycling(
    domain_name: &str,
    body: &str,
    recycled: Option<Arc<ServerKeys>>,
) -> Checked {
    if let Some(mut keys) = recycled
        && let Some(into) = Arc::get_mut(&mut keys)
        && ServerKeys::parse_canonical_and_verify_into(body, domain_name, into)
    {
        return Ok(Some(keys));
    }
    check_direct(domain_name, body)
}

/// Parses and verifies an origin's own answer with serde_json and the general checks.
pub fn check_direct_general(domain_name: &str, body: &str) -> Checked {
    let value: Value = serde_json::from_str(body).map_err(|error| format!("not JSON: {error}"))?;
    ServerKeys::parse_and_verify(&value, domain_name)
        .map(|keys| Some(Arc::new(keys)))
        .map_err(|error| error.to_string())
}

/// Parses a notary answer `{"server_keys": [...]}`, finds the entry for `domain_name`, checks
/// the notary's signature on it and the origin's self-signature.
pub fn check_notary(domain_name: &str, notary: &NotaryIdentity, body: &str) -> Checked {
    let value: Value = serde_json::from_str(body).map_err(|error| format!("not JSON: {error}"))?;
    let entries = value
        .get("server_keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "notary answer has no server_keys array".to_owned())?;
    let Some(entry) = entries
        .iter()
        .find(|entry| entry.get("server_name").and_then(Value::as_str) == Some(domain_name))
    else {
        return Ok(None);
    };
    signing::verify_json_signature(entry, &notary.server_name, &notary.key_id, &notary.key)
        .map_err(|error| format!("notary signature: {error}"))?;
    ServerKeys::parse_and_verify(entry, domain_name)
        .map(|keys| Some(Arc::new(keys)))
        .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SimRng;
    use crate::server::publisher::KeyPublisher;

    #[test]
    fn the_memo_checks_each_body_once_and_refuses_tampering() {
        let mut publisher =
            KeyPublisher::new("a.example".into(), 1_000, SimRng::stream(1, "keys", 0));
        let body = publisher.response(0);
        let mut memo = VerifyMemo::new(1);
        let first = memo.check_direct(0, "a.example", &body).unwrap().unwrap();
        let again = memo.check_direct(0, "a.example", &body).unwrap().unwrap();
        assert_eq!(first, again);
        assert_eq!((memo.checks, memo.hits), (1, 1));
        // Same length, one byte changed inside the signed content: checked afresh, refused.
        let tampered: Arc<str> = Arc::from(body.replacen("a.example", "b.example", 1));
        assert!(memo.check_direct(0, "a.example", &tampered).is_err());
        let field = "\"valid_until_ts\":";
        let position = body.find(field).unwrap() + field.len();
        let mut forged = body.to_string();
        forged.insert(position, '9');
        let forged: Arc<str> = Arc::from(forged);
        assert!(memo.check_direct(0, "a.example", &forged).is_err());
        assert_eq!(memo.checks, 3);
    }

    /// The body `signer` makes claiming `claimed`'s public key: a wrong-key signature.
    fn signed_by_wrong_key(claimed: &KeyPublisher, signer_seed: u8) -> Arc<str> {
        use crate::matrix::server_keys::ServerKeys;
        use crate::matrix::signing::ServerSigningKey;
        use std::collections::BTreeMap;
        let real = claimed.current_key();
        let signer = ServerSigningKey::from_seed(real.key_id.clone(), &[signer_seed; 32]);
        let keys = ServerKeys {
            server_name: "a.example".into(),
            verify_keys: BTreeMap::from([(real.key_id.to_string(), real.verifying_key())]),
            old_verify_keys: BTreeMap::new(),
            valid_until_ts_ms: 10_000,
        };
        Arc::from(keys.to_signed_json(&signer).unwrap().to_string())
    }

    #[test]
    fn a_wrong_key_signature_never_passes_in_either_mode_even_after_a_valid_body() {
        use crate::matrix::crypto_mode::{self, CryptoMode};
        let mut bodies_by_mode = Vec::new();
        for mode in [CryptoMode::Ed25519, CryptoMode::Symbolic] {
            let _mode = crypto_mode::enter(mode);
            let mut publisher =
                KeyPublisher::new("a.example".into(), 1_000, SimRng::stream(1, "keys", 0));
            let body = publisher.response(0);
            let mut memo = VerifyMemo::new(1);
            assert!(memo.check_direct(0, "a.example", &body).unwrap().is_some());
            // Signed by another key (same key ID, same length): checked afresh and refused,
            // by the memo and without it.
            let forged = signed_by_wrong_key(&publisher, 9);
            let refused = memo.check_direct(0, "a.example", &forged).unwrap_err();
            assert!(refused.contains("does not verify"), "{mode:?}: {refused}");
            assert!(memo.check_direct(0, "a.example", &forged).is_err());
            assert!(check_direct("a.example", &forged).is_err());
            // A notary answer countersigned by a key other than the configured one.
            let notary = NotaryIdentity {
                server_name: "notary.example".into(),
                key_id: "ed25519:n".into(),
                key: ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key(),
            };
            let mut entry: Value = serde_json::from_str(&body).unwrap();
            let impostor = crate::matrix::signing::ServerSigningKey::from_seed(
                crate::matrix::signing::KeyId::parse("ed25519:n").unwrap(),
                &[4; 32],
            );
            crate::matrix::signing::sign_json(&mut entry, "notary.example", &impostor).unwrap();
            let answer: Arc<str> =
                Arc::from(serde_json::json!({ "server_keys": [entry] }).to_string());
            assert!(
                memo.check_notary(0, "a.example", 0, &notary, &answer)
                    .is_err()
            );
            bodies_by_mode.push(body);
        }
        // A body signed in one mode does not verify in the other.
        let (real, symbolic) = (&bodies_by_mode[0], &bodies_by_mode[1]);
        assert_ne!(real, symbolic);
        assert_eq!(real.len(), symbolic.len(), "same size in both modes");
        assert!(check_direct("a.example", symbolic).is_err());
        let _symbolic = crypto_mode::enter(CryptoMode::Symbolic);
        assert!(check_direct("a.example", real).is_err());
        assert!(check_direct("a.example", symbolic).is_ok());
    }

    /// Every body a publisher makes over rotations, a key loss and flapping, plus bodies the
    /// fast path refuses (tampered, another name, a wrong-key signature): checking over a
    /// recycled key object gives exactly the fresh check's result, and a refused body leaves
    /// the object as it was. The memo, recycling as it evicts, agrees with fresh checks.
    #[test]
    fn checking_over_a_recycled_key_object_equals_a_fresh_check() {
        use crate::matrix::crypto_mode::{self, CryptoMode};
        for mode in [CryptoMode::Ed25519, CryptoMode::Symbolic] {
            let _mode = crypto_mode::enter(mode);
            let mut publisher =
                KeyPublisher::new("a.example".into(), 1_000, SimRng::stream(1, "keys", 0));
            let mut other =
                KeyPublisher::new("b.example".into(), 1_000, SimRng::stream(1, "keys", 1));
            let mut bodies: Vec<Arc<str>> = Vec::new();
            for step in 0..40i64 {
                let now = step * 1_000;
                match step {
                    10 | 25 => publisher.rotate(now),
                    17 => publisher.lose_key(),
                    30 => publisher.start_flapping(now, 2_000),
                    _ => {}
                }
                let body = publisher.publish_at(now);
                bodies.push(body.clone());
                if step % 7 == 3 {
                    bodies.push(Arc::from(body.replacen("a.example", "c.example", 1)));
                    bodies.push(other.publish_at(now));
                    bodies.push(signed_by_wrong_key(&publisher, 9));
                }
            }
            let mut memo = VerifyMemo::new(1);
            let mut previous: Option<Arc<ServerKeys>> = None;
            for body in &bodies {
                let fresh = check_direct("a.example", body);
                // Over every earlier object (fresh copies, so each is unshared).
                for recycled in [previous.clone(), fresh.clone().ok().flatten()] {
                    let Some(recycled) = recycled else { continue };
                    let before = (*recycled).clone();
                    let copy = Arc::new(before.clone());
                    assert_eq!(
                        check_direct_recycling("a.example", body, Some(copy)),
                        fresh,
                        "{mode:?}: {body}"
                    );
                    let mut into = before.clone();
                    let accepted =
                        ServerKeys::parse_canonical_and_verify_into(body, "a.example", &mut into);
                    if !accepted {
                        assert_eq!(into, before, "a refused body leaves the object as it was");
                    } else {
                        assert_eq!(Some(Arc::new(into)), fresh.clone().ok().flatten());
                    }
                }
                assert_eq!(memo.check_direct(0, "a.example", body), fresh);
                if let Ok(Some(keys)) = &fresh {
                    previous = Some(keys.clone());
                }
            }
            assert!(memo.checks > 40);
        }
    }
}
