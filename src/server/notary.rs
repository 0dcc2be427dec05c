//! A notary (`/_matrix/key/v2/query`), sans-IO.
//!
//! As the spec advises and Synapse does: a cached answer is served while less than half its
//! lifetime has passed and its `valid_until_ts` is still ahead (the query's
//! `minimum_valid_until_ts` defaults to now); otherwise the notary re-fetches from the origin,
//! parking the queries for that domain (one origin fetch per domain at a time). It adds its own
//! signature to the origin's object. If the origin cannot be reached it keeps serving the last
//! answer it had, stale or not; with nothing cached it answers an empty `server_keys` list.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::matrix::signing::{self, ServerSigningKey};
use crate::net::{DomainId, Outcome};

use super::memo::{NotaryIdentity, VerifyMemo};

/// What the notary asks the world to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotaryOutput {
    /// Answer the query `token` with this body (200).
    Respond { token: u64, body: Arc<str> },
    /// Fetch the origin's keys.
    FetchOrigin { domain: DomainId },
}

struct CacheEntry {
    body: Arc<str>,
    valid_until_ms: i64,
    fetched_at_ms: i64,
}

/// Counters of a notary's work.
#[derive(Debug, Clone, Default)]
pub struct NotaryStats {
    pub queries: u64,
    pub cache_hits: u64,
    pub origin_fetches: u64,
    pub stale_answers: u64,
    pub empty_answers: u64,
}

/// A notary's state.
pub struct Notary {
    identity: NotaryIdentity,
    signing_key: ServerSigningKey,
    cache: BTreeMap<DomainId, CacheEntry>,
    pending: BTreeMap<DomainId, Vec<u64>>,
    empty_answer: Arc<str>,
    pub stats: NotaryStats,
}

impl Notary {
    /// A notary named `server_name` signing with `signing_key`.
    pub fn new(server_name: String, signing_key: ServerSigningKey) -> Notary {
        let identity = NotaryIdentity {
            server_name,
            key_id: signing_key.key_id.to_string(),
            key: signing_key.verifying_key(),
        };
        Notary {
            identity,
            signing_key,
            cache: BTreeMap::new(),
            pending: BTreeMap::new(),
            empty_answer: Arc::from("{\"server_keys\":[]}"),
            stats: NotaryStats::default(),
        }
    }

    /// How clients know this notary.
    pub fn identity(&self) -> &NotaryIdentity {
        &self.identity
    }

    /// Forgets every cached answer (database loss).
    pub fn forget(&mut self) {
        self.cache.clear();
    }

    /// A query about `domain` arrives at `now_abs_ms`.
    pub fn on_query(
        &mut self,
        now_abs_ms: i64,
        domain: DomainId,
        token: u64,
        out: &mut Vec<NotaryOutput>,
    ) {
        self.stats.queries += 1;
        if let Some(entry) = self.cache.get(&domain) {
            let half_life_ms = (entry.fetched_at_ms + entry.valid_until_ms) / 2;
            if now_abs_ms < half_life_ms && now_abs_ms < entry.valid_until_ms {
                self.stats.cache_hits += 1;
                out.push(NotaryOutput::Respond {
                    token,
                    body: entry.body.clone(),
                });
                return;
            }
        }
        let waiting = self.pending.entry(domain).or_default();
        waiting.push(token);
        if waiting.len() == 1 {
            self.stats.origin_fetches += 1;
            out.push(NotaryOutput::FetchOrigin { domain });
        }
    }

    /// The origin's answer (or failure) for `domain` arrives.
    pub fn on_origin_answer(
        &mut self,
        now_abs_ms: i64,
        domain: DomainId,
        domain_name: &str,
        outcome: &Outcome,
        memo: &mut VerifyMemo,
        out: &mut Vec<NotaryOutput>,
    ) {
        if let Outcome::Ok(body) = outcome
            && let Ok(Some(keys)) = memo.check_direct(domain, domain_name, body)
            && let Ok(mut value) = serde_json::from_str::<Value>(body)
            && signing::sign_json(&mut value, &self.identity.server_name, &self.signing_key).is_ok()
        {
            let answer = serde_json::json!({ "server_keys": [value] });
            self.cache.insert(
                domain,
                CacheEntry {
                    body: Arc::from(answer.to_string()),
                    valid_until_ms: keys.valid_until_ts_ms,
                    fetched_at_ms: now_abs_ms,
                },
            );
        } else if self.cache.contains_key(&domain) {
            self.stats.stale_answers += 1;
        }
        let body = match self.cache.get(&domain) {
            Some(entry) => entry.body.clone(),
            None => {
                self.stats.empty_answers += 1;
                self.empty_answer.clone()
            }
        };
        for token in self.pending.remove(&domain).unwrap_or_default() {
            out.push(NotaryOutput::Respond {
                token,
                body: body.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SimRng;
    use crate::matrix::signing::KeyId;
    use crate::server::memo::check_notary;
    use crate::server::publisher::KeyPublisher;

    fn notary() -> Notary {
        let key = ServerSigningKey::from_seed(KeyId::ed25519("n1").unwrap(), &[7; 32]);
        Notary::new("notary.example".into(), key)
    }

    #[test]
    fn caches_for_half_a_lifetime_then_refetches_and_serves_stale_when_origin_is_down() {
        let mut origin = KeyPublisher::new("a.example".into(), 1_000, SimRng::stream(1, "keys", 0));
        let mut notary = notary();
        let mut memo = VerifyMemo::new(1);
        let mut out = Vec::new();
        // First query: a miss, one origin fetch; a second query meanwhile joins it.
        notary.on_query(0, 0, 1, &mut out);
        notary.on_query(1, 0, 2, &mut out);
        assert_eq!(out, vec![NotaryOutput::FetchOrigin { domain: 0 }]);
        out.clear();
        let answer = Outcome::Ok(origin.response(0));
        notary.on_origin_answer(10, 0, "a.example", &answer, &mut memo, &mut out);
        assert_eq!(out.len(), 2);
        let NotaryOutput::Respond { body, .. } = &out[0] else {
            panic!("expected a response")
        };
        // The client sees the origin's keys, countersigned by the notary.
        let keys = check_notary("a.example", notary.identity(), body)
            .unwrap()
            .unwrap();
        assert_eq!(keys.valid_until_ts_ms, 1_000);
        out.clear();
        // Before half-life (fetched at 10, valid until 1000 -> 505): a hit.
        notary.on_query(400, 0, 3, &mut out);
        assert!(matches!(out[0], NotaryOutput::Respond { token: 3, .. }));
        out.clear();
        // After half-life: a re-fetch; the origin is down, so the stale answer is served.
        notary.on_query(600, 0, 4, &mut out);
        assert_eq!(out, vec![NotaryOutput::FetchOrigin { domain: 0 }]);
        out.clear();
        notary.on_origin_answer(610, 0, "a.example", &Outcome::Timeout, &mut memo, &mut out);
        assert!(matches!(out[0], NotaryOutput::Respond { token: 4, .. }));
        assert_eq!(notary.stats.stale_answers, 1);
        assert_eq!(notary.stats.origin_fetches, 2);
    }

    #[test]
    fn with_nothing_cached_a_failed_fetch_gives_an_empty_answer() {
        let mut notary = notary();
        let mut memo = VerifyMemo::new(1);
        let mut out = Vec::new();
        notary.on_query(0, 0, 1, &mut out);
        out.clear();
        notary.on_origin_answer(5, 0, "a.example", &Outcome::Refused, &mut memo, &mut out);
        let NotaryOutput::Respond { body, .. } = &out[0] else {
            panic!("expected a response")
        };
        assert_eq!(check_notary("a.example", notary.identity(), body), Ok(None));
    }
}
