//! What a server publishes at `GET /_matrix/key/v2/server`.
//!
//! Like Synapse, the signed response is made once and served until its `valid_until_ts`
//! passes, then re-made with `valid_until_ts = now + lifetime` and signed again. A rotation
//! moves the current key to `old_verify_keys` with `expired_ts = now`; a key loss makes a new
//! key under the same key ID (the wiped-database failure of Synapse #4012).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::engine::SimRng;
use crate::matrix::server_keys::{OldVerifyKey, ServerKeys};
use crate::matrix::signing::{KeyId, ServerSigningKey};

/// A server's key publication.
pub struct KeyPublisher {
    server_name: String,
    current: ServerSigningKey,
    key_version: u32,
    old_verify_keys: BTreeMap<String, OldVerifyKey>,
    lifetime_ms: i64,
    published: Option<(Arc<str>, i64)>,
    key_seeds: SimRng,
    /// Responses signed so far.
    pub signatures_made: u64,
    /// Wall-clock nanoseconds spent signing (benchmarks and run-info.json only).
    pub sign_nanos: u64,
}

impl KeyPublisher {
    /// A server with a fresh key `ed25519:a1` drawn from `key_seeds`.
    pub fn new(server_name: String, lifetime_ms: u64, mut key_seeds: SimRng) -> KeyPublisher {
        let current = Self::make_key(1, &mut key_seeds);
        KeyPublisher {
            server_name,
            current,
            key_version: 1,
            old_verify_keys: BTreeMap::new(),
            lifetime_ms: lifetime_ms as i64,
            published: None,
            key_seeds,
            signatures_made: 0,
            sign_nanos: 0,
        }
    }

    fn make_key(version: u32, key_seeds: &mut SimRng) -> ServerSigningKey {
        let key_id = KeyId::ed25519(&format!("a{version}")).expect("a<digits> is a valid version");
        ServerSigningKey::from_seed(key_id, &key_seeds.bytes32())
    }

    /// The server name the keys are published under.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The current signing key.
    pub fn current_key(&self) -> &ServerSigningKey {
        &self.current
    }

    /// The key lifetime it publishes.
    pub fn lifetime_ms(&self) -> u64 {
        self.lifetime_ms as u64
    }

    /// The signed response body at `now_abs_ms`, re-made if the last one has expired.
    pub fn response(&mut self, now_abs_ms: i64) -> Arc<str> {
        if let Some((body, valid_until_ms)) = &self.published
            && now_abs_ms < *valid_until_ms
        {
            return body.clone();
        }
        self.publish_at(now_abs_ms)
    }

    /// Signs a new response as made at `made_at_abs_ms` (which may be before the run: warm
    /// start), valid until `made_at + lifetime`.
    pub fn publish_at(&mut self, made_at_abs_ms: i64) -> Arc<str> {
        let valid_until_ms = made_at_abs_ms + self.lifetime_ms;
        let keys = ServerKeys {
            server_name: self.server_name.clone(),
            verify_keys: BTreeMap::from([(
                self.current.key_id.to_string(),
                self.current.verifying_key(),
            )]),
            old_verify_keys: self.old_verify_keys.clone(),
            valid_until_ts_ms: valid_until_ms,
        };
        let started = std::time::Instant::now();
        let value = keys
            .to_signed_json(&self.current)
            .expect("a key object always signs");
        let body: Arc<str> = Arc::from(value.to_string());
        self.sign_nanos += started.elapsed().as_nanos() as u64;
        self.signatures_made += 1;
        self.published = Some((body.clone(), valid_until_ms));
        body
    }

    /// Rotates: a new key ID; the old key goes to `old_verify_keys` with `expired_ts = now`.
    pub fn rotate(&mut self, now_abs_ms: i64) {
        self.key_version += 1;
        let new_key = Self::make_key(self.key_version, &mut self.key_seeds);
        let old = std::mem::replace(&mut self.current, new_key);
        self.old_verify_keys.insert(
            old.key_id.to_string(),
            OldVerifyKey {
                key: old.verifying_key(),
                expired_ts_ms: now_abs_ms,
            },
        );
        self.published = None;
    }

    /// Loses the key: a new key under the same key ID, and no record of the old one.
    pub fn lose_key(&mut self) {
        let key_id = self.current.key_id.clone();
        self.current = ServerSigningKey::from_seed(key_id, &self.key_seeds.bytes32());
        self.old_verify_keys.clear();
        self.published = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn parse(body: &str, name: &str) -> ServerKeys {
        let value: Value = serde_json::from_str(body).unwrap();
        ServerKeys::parse_and_verify(&value, name).unwrap()
    }

    #[test]
    fn a_response_is_reused_until_it_expires_then_re_signed() {
        let mut publisher =
            KeyPublisher::new("a.example".into(), 1_000, SimRng::stream(1, "keys", 0));
        let first = publisher.response(10_000);
        assert!(Arc::ptr_eq(&first, &publisher.response(10_999)));
        let second = publisher.response(11_000);
        assert_ne!(first, second);
        assert_eq!(parse(&second, "a.example").valid_until_ts_ms, 12_000);
        assert_eq!(publisher.signatures_made, 2);
    }

    #[test]
    fn rotation_moves_the_key_to_old_verify_keys() {
        let mut publisher =
            KeyPublisher::new("a.example".into(), 1_000, SimRng::stream(1, "keys", 0));
        let before = parse(&publisher.response(0), "a.example");
        publisher.rotate(500);
        let after = parse(&publisher.response(600), "a.example");
        assert!(after.verify_keys.contains_key("ed25519:a2"));
        let old = &after.old_verify_keys["ed25519:a1"];
        assert_eq!(old.expired_ts_ms, 500);
        assert_eq!(old.key, before.verify_keys["ed25519:a1"]);
    }

    #[test]
    fn key_loss_keeps_the_id_but_changes_the_bytes() {
        let mut publisher =
            KeyPublisher::new("a.example".into(), 1_000, SimRng::stream(1, "keys", 0));
        let before = parse(&publisher.response(0), "a.example");
        publisher.lose_key();
        let after = parse(&publisher.response(1), "a.example");
        assert_ne!(
            before.verify_keys["ed25519:a1"],
            after.verify_keys["ed25519:a1"]
        );
        assert!(after.old_verify_keys.is_empty());
    }
}
