//! What a server publishes at `GET /_matrix/key/v2/server`.
//!
//! Like Synapse, the signed response is made once and served until its `valid_until_ts`
//! passes, then re-made with `valid_until_ts = now + lifetime` and signed again. A rotation
//! moves the current key to `old_verify_keys` with `expired_ts = now`; a key loss makes a new
//! key under the same key ID (the wiped-database failure of Synapse #4012).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::engine::SimRng;
use crate::matrix::server_keys::{OldVerifyKey, ServerKeys, SignedBodyTemplate};
use crate::matrix::signing::{KeyId, ServerSigningKey};

/// A lying server's second view: the same key ID with other bytes, served to everyone outside
/// the audience that sees the real key (RQ10).
struct SplitView {
    alternate: ServerSigningKey,
    published: Option<(Arc<str>, i64)>,
}

/// A flapping server's schedule (RQ8): from `start_abs_ms`, every `period_ms` the current key
/// and a second key swap places between `verify_keys` and `old_verify_keys`.
struct Flap {
    start_abs_ms: i64,
    period_ms: i64,
    /// The key current before flapping began (current in odd phases).
    first: ServerSigningKey,
    /// The key that takes its place in even phases.
    second: ServerSigningKey,
}

/// Signs a response of `server_name` (one verify key, `signer_key`), from the template in
/// `kept` (made first if there is none) or from a fresh one.
fn sign_with(
    kept: Option<&mut Option<SignedBodyTemplate>>,
    signatures_made: &mut u64,
    sign_nanos: &mut u64,
    server_name: &str,
    signer_key: &ServerSigningKey,
    old_verify_keys: &BTreeMap<String, OldVerifyKey>,
    valid_until_ms: i64,
) -> Arc<str> {
    let started = std::time::Instant::now();
    let make = || {
        let keys = ServerKeys {
            server_name: server_name.to_owned(),
            verify_keys: BTreeMap::from([(
                signer_key.key_id.to_string(),
                signer_key.verifying_key(),
            )]),
            old_verify_keys: old_verify_keys.clone(),
            valid_until_ts_ms: valid_until_ms,
        };
        SignedBodyTemplate::new(&keys, signer_key)
            .expect("a key object with simulated timestamps always signs")
    };
    let body = match kept {
        Some(kept) => kept
            .get_or_insert_with(make)
            .body_arc(signer_key, valid_until_ms),
        None => make().body_arc(signer_key, valid_until_ms),
    }
    .expect("a key object with simulated timestamps always signs");
    *sign_nanos += started.elapsed().as_nanos() as u64;
    *signatures_made += 1;
    body
}

/// A server's key publication.
pub struct KeyPublisher {
    server_name: String,
    current: ServerSigningKey,
    key_version: u32,
    old_verify_keys: BTreeMap<String, OldVerifyKey>,
    lifetime_ms: i64,
    published: Option<(Arc<str>, i64)>,
    // Boxed, like `split` and `flap`: used only when keys change, so the publisher's fields
    // read at every re-signing stay within a few cache lines (10^4 publishers are visited a
    // simulated day apart, each visit a cache miss per line).
    key_seeds: Box<SimRng>,
    split: Option<Box<SplitView>>,
    flap: Option<Box<Flap>>,
    /// The template of the honest response (`current`, `old_verify_keys`): re-signing the
    /// same keys rewrites only `valid_until_ts`. Dropped whenever either changes.
    template: Option<SignedBodyTemplate>,
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
            key_seeds: Box::new(key_seeds),
            split: None,
            flap: None,
            template: None,
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

    /// Prefetch hints (see [`crate::engine::prefetch`]) for what the next response reads: the
    /// kept template's text and the last body (whose reference count a re-signing drops).
    pub fn prefetch_response(&self) {
        if let Some(template) = &self.template {
            template.prefetch();
        }
        if let Some((body, _)) = &self.published {
            crate::engine::prefetch::prefetch_arc_str(body);
        }
    }

    /// The last response signed (without re-making it), if any.
    pub fn published_body(&self) -> Option<&Arc<str>> {
        self.published.as_ref().map(|(body, _)| body)
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
    /// start), valid until `made_at + lifetime` (a flapping server: until its next swap).
    pub fn publish_at(&mut self, made_at_abs_ms: i64) -> Arc<str> {
        let mut valid_until_ms = made_at_abs_ms + self.lifetime_ms;
        let body = if let Some(flap) = &self.flap {
            let mut old_verify_keys = self.old_verify_keys.clone();
            let since_ms = (made_at_abs_ms - flap.start_abs_ms).max(0);
            let phase = since_ms / flap.period_ms;
            let phase_start_ms = flap.start_abs_ms + phase * flap.period_ms;
            // Even phases: the second key is current and the first sits in old_verify_keys;
            // odd phases the other way round. Each response ends at the next swap, so every
            // re-check at expiry sees the swap.
            let (current, old) = if phase % 2 == 0 {
                (&flap.second, &flap.first)
            } else {
                (&flap.first, &flap.second)
            };
            old_verify_keys.insert(
                old.key_id.to_string(),
                OldVerifyKey {
                    key: old.verifying_key(),
                    expired_ts_ms: phase_start_ms,
                },
            );
            old_verify_keys.remove(&current.key_id.to_string());
            valid_until_ms = valid_until_ms.min(phase_start_ms + flap.period_ms);
            let current = current.clone();
            self.sign(&current, &old_verify_keys, valid_until_ms)
        } else {
            sign_with(
                Some(&mut self.template),
                &mut self.signatures_made,
                &mut self.sign_nanos,
                &self.server_name,
                &self.current,
                &self.old_verify_keys,
                valid_until_ms,
            )
        };
        self.published = Some((body.clone(), valid_until_ms));
        body
    }

    fn sign(
        &mut self,
        signer_key: &ServerSigningKey,
        old_verify_keys: &BTreeMap<String, OldVerifyKey>,
        valid_until_ms: i64,
    ) -> Arc<str> {
        sign_with(
            None,
            &mut self.signatures_made,
            &mut self.sign_nanos,
            &self.server_name,
            signer_key,
            old_verify_keys,
            valid_until_ms,
        )
    }

    /// The response a lying server gives to a requester outside its audience: the same key ID
    /// as the real current key, other bytes (the real one when the server does not lie).
    pub fn response_for(&mut self, now_abs_ms: i64, in_audience: bool) -> Arc<str> {
        if in_audience || self.split.is_none() {
            return self.response(now_abs_ms);
        }
        let split = self.split.as_ref().expect("checked");
        if let Some((body, valid_until_ms)) = &split.published
            && now_abs_ms < *valid_until_ms
        {
            return body.clone();
        }
        let alternate = self.split.take().expect("checked");
        let valid_until_ms = now_abs_ms + self.lifetime_ms;
        let old_verify_keys = std::mem::take(&mut self.old_verify_keys);
        let body = self.sign(&alternate.alternate, &old_verify_keys, valid_until_ms);
        self.old_verify_keys = old_verify_keys;
        self.split = Some(Box::new(SplitView {
            alternate: alternate.alternate,
            published: Some((body.clone(), valid_until_ms)),
        }));
        body
    }

    /// Starts lying: from now on [`Self::response_for`] serves a second key under the current
    /// key's ID to requesters outside the audience.
    pub fn start_split_view(&mut self) {
        let alternate =
            ServerSigningKey::from_seed(self.current.key_id.clone(), &self.key_seeds.bytes32());
        self.split = Some(Box::new(SplitView {
            alternate,
            published: None,
        }));
    }

    /// Whether the server is lying (serving two views).
    pub fn is_split(&self) -> bool {
        self.split.is_some()
    }

    /// Starts flapping at `now_abs_ms`: the current key moves to `old_verify_keys` and a new
    /// key takes its place, then they swap back every `period_ms`.
    pub fn start_flapping(&mut self, now_abs_ms: i64, period_ms: u64) {
        let second = Self::make_key(self.key_version + 1, &mut self.key_seeds);
        self.key_version += 1;
        self.flap = Some(Box::new(Flap {
            start_abs_ms: now_abs_ms,
            period_ms: period_ms.max(1) as i64,
            first: self.current.clone(),
            second,
        }));
        self.published = None;
    }

    /// Whether the server is flapping.
    pub fn is_flapping(&self) -> bool {
        self.flap.is_some()
    }

    /// Rotates: a new key ID; the old key goes to `old_verify_keys` with `expired_ts = now`.
    pub fn rotate(&mut self, now_abs_ms: i64) {
        self.flap = None;
        self.split = None;
        self.key_version += 1;
        let new_key = Self::make_key(self.key_version, &mut self.key_seeds);
        let old = std::mem::replace(&mut self.current, new_key);
        self.template = None;
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
        self.flap = None;
        self.split = None;
        let key_id = self.current.key_id.clone();
        self.current = ServerSigningKey::from_seed(key_id, &self.key_seeds.bytes32());
        self.old_verify_keys.clear();
        self.template = None;
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
    fn re_signing_from_the_kept_template_writes_the_same_bytes_as_a_fresh_body() {
        use crate::matrix::crypto_mode::{self, CryptoMode};
        for mode in [CryptoMode::Ed25519, CryptoMode::Symbolic] {
            let _mode = crypto_mode::enter(mode);
            let mut publisher =
                KeyPublisher::new("a.example".into(), 1_000, SimRng::stream(1, "keys", 0));
            for step in 0..8i64 {
                match step {
                    3 => publisher.rotate(step * 1_000),
                    5 => publisher.lose_key(),
                    6 => publisher.rotate(step * 1_000 + 1),
                    _ => {}
                }
                let body = publisher.publish_at(step * 1_000 + 17);
                let keys = parse(&body, "a.example");
                let fresh = keys.to_signed_body(publisher.current_key()).unwrap();
                assert_eq!(*body, *fresh, "step {step}");
            }
        }
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
    fn a_lying_server_serves_other_bytes_under_the_same_id_outside_its_audience() {
        let mut publisher =
            KeyPublisher::new("a.example".into(), 1_000, SimRng::stream(1, "keys", 0));
        publisher.start_split_view();
        let real = parse(&publisher.response_for(0, true), "a.example");
        let other = parse(&publisher.response_for(0, false), "a.example");
        assert_ne!(
            real.verify_keys["ed25519:a1"],
            other.verify_keys["ed25519:a1"]
        );
        // Each view is re-used until it expires.
        assert_eq!(
            publisher.response_for(10, false),
            publisher.response_for(20, false)
        );
        assert_eq!(publisher.signatures_made, 2);
    }

    #[test]
    fn a_flapping_server_swaps_keys_every_period_and_responses_end_at_the_swap() {
        let mut publisher =
            KeyPublisher::new("a.example".into(), 10_000, SimRng::stream(1, "keys", 0));
        let before = parse(&publisher.response(0), "a.example");
        publisher.start_flapping(100, 1_000);
        let even = parse(&publisher.response(100), "a.example");
        assert!(even.verify_keys.contains_key("ed25519:a2"));
        assert_eq!(
            even.old_verify_keys["ed25519:a1"].key,
            before.verify_keys["ed25519:a1"]
        );
        assert_eq!(even.valid_until_ts_ms, 1_100);
        assert_eq!(publisher.response(1_099), publisher.response(500));
        let odd = parse(&publisher.response(1_100), "a.example");
        assert_eq!(
            odd.verify_keys["ed25519:a1"],
            before.verify_keys["ed25519:a1"]
        );
        assert_eq!(odd.old_verify_keys["ed25519:a2"].expired_ts_ms, 1_100);
        assert!(!odd.old_verify_keys.contains_key("ed25519:a1"));
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
