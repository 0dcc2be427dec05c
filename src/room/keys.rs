//! The server keys a homeserver holds, as the room layer reads them.
//!
//! The key layer (fetching, notaries, re-checks, backoff) decides *which* key objects a server
//! holds and whether it still trusts one whose validity has passed (fail-open). The room layer
//! only reads them through [`KeySource`]: for PDU check 2 in room versions with server
//! signatures, and for verifying MSC4430 member links. [`KeyRing`] is the plain in-memory holder
//! (a map from server name to the key object it fetched), used by tests and by callers that have
//! no key layer of their own.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;

use crate::matrix::server_keys::{self, ServerKeys, ValidityClamp};

/// A key object a server holds for one domain, and how it may use it.
#[derive(Debug, Clone, Copy)]
pub struct HeldKeys<'keys> {
    /// The `/_matrix/key/v2/server` response as fetched.
    pub keys: &'keys ServerKeys,
    /// The fetch time and the `valid_until_ts` cap.
    pub clamp: ValidityClamp,
    /// Fail-open (MSC4430): the server could not re-fetch the keys when they expired, so it keeps
    /// treating the current key as current past its validity.
    pub trusted_past_expiry: bool,
}

impl HeldKeys<'_> {
    /// The time to evaluate "is this key current" at: `now_ms`, or for a fail-open key past its
    /// validity the last instant it was valid (so it still counts as current).
    pub fn currency_check_time_ms(&self, now_ms: i64) -> i64 {
        if !self.trusted_past_expiry {
            return now_ms;
        }
        let valid_until_ms = self
            .clamp
            .effective_valid_until_ms(self.keys.valid_until_ts_ms);
        now_ms.min(valid_until_ms.saturating_sub(1))
    }

    /// Room v5+ rule: the key `key_id` if it may check an event sent at `origin_server_ts_ms`.
    pub fn key_for_event(&self, key_id: &str, origin_server_ts_ms: i64) -> Option<VerifyingKey> {
        server_keys::key_valid_for_event(self.keys, key_id, origin_server_ts_ms, self.clamp)
            .ok()
            .copied()
    }
}

/// Read access to the server keys a homeserver holds.
pub trait KeySource {
    /// The key object held for `server`, if any.
    fn held_keys(&self, server: &str) -> Option<HeldKeys<'_>>;
}

/// One held key object, owned.
#[derive(Debug, Clone)]
pub struct KeyRingEntry {
    pub keys: ServerKeys,
    pub clamp: ValidityClamp,
    pub trusted_past_expiry: bool,
}

/// A map from server name to the key object held for it.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    entries: BTreeMap<String, KeyRingEntry>,
}

impl KeyRing {
    pub fn new() -> KeyRing {
        KeyRing::default()
    }

    /// Holds `keys` (replacing what was held for that server), fetched at `fetched_at_ms`, with
    /// the spec's 7-day clamp.
    pub fn insert(&mut self, keys: ServerKeys, fetched_at_ms: i64) {
        self.insert_entry(KeyRingEntry {
            keys,
            clamp: ValidityClamp::spec(fetched_at_ms),
            trusted_past_expiry: false,
        });
    }

    /// Holds an entry as given.
    pub fn insert_entry(&mut self, entry: KeyRingEntry) {
        self.entries.insert(entry.keys.server_name.clone(), entry);
    }

    /// Forgets the keys of `server`.
    pub fn remove(&mut self, server: &str) -> Option<KeyRingEntry> {
        self.entries.remove(server)
    }

    /// Marks the keys of `server` as trusted past their expiry (fail-open) or not.
    pub fn set_trusted_past_expiry(&mut self, server: &str, trusted: bool) {
        if let Some(entry) = self.entries.get_mut(server) {
            entry.trusted_past_expiry = trusted;
        }
    }
}

impl KeySource for KeyRing {
    fn held_keys(&self, server: &str) -> Option<HeldKeys<'_>> {
        self.entries.get(server).map(|entry| HeldKeys {
            keys: &entry.keys,
            clamp: entry.clamp,
            trusted_past_expiry: entry.trusted_past_expiry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::signing::{KeyId, ServerSigningKey};

    #[test]
    fn fail_open_keys_stay_current_past_their_validity() {
        let key = ServerSigningKey::from_seed(KeyId::ed25519("1").unwrap(), &[3; 32]);
        let mut ring = KeyRing::new();
        ring.insert(ServerKeys::with_current_key("a.example", &key, 1_000), 0);
        let held = ring.held_keys("a.example").unwrap();
        assert_eq!(held.currency_check_time_ms(5_000), 5_000);
        assert!(held.key_for_event("ed25519:1", 1_000).is_some());
        assert!(held.key_for_event("ed25519:1", 1_001).is_none());
        assert!(held.key_for_event("ed25519:2", 10).is_none());
        ring.set_trusted_past_expiry("a.example", true);
        let held = ring.held_keys("a.example").unwrap();
        assert_eq!(held.currency_check_time_ms(5_000), 999);
        assert_eq!(held.currency_check_time_ms(10), 10);
        assert!(ring.held_keys("b.example").is_none());
        assert!(ring.remove("a.example").is_some());
        assert!(ring.held_keys("a.example").is_none());
    }
}
