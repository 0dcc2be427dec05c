//! RQ4's notary: a designated server (`rooms.notary`) that also answers `/key/v2/query` for
//! other domains from its own key cache — the last key object it holds for the domain, however
//! old (Synapse's notary serves its stored copy when it cannot re-fetch: the "bitrot brake" D7
//! refers to). It covers a share `rooms.notary_coverage` of the domains (a draw per domain from
//! stream `notary-coverage`/domain; default all).
//!
//! A server whose direct key fetch for a domain failed asks the notary once for that domain
//! before the PDUs waiting for the keys go on; what it gets is kept as *historic* keys
//! (`Homeserver::archive`), read by the room layer only when the key cache holds nothing for the
//! domain (`fed/keys.rs`). Under the room-v5 rule (P0) an old response still checks events sent
//! while it was valid; an MSC4430 member co-signature needs a current key, so historic keys
//! never verify a link (P7 lets them vouch for events up to their expiry).
//!
//! Simplification: the notary hands out the origin's own signed key object (a real notary adds
//! its own signature to it); the asking server trusts the notary as configured.

use std::sync::Arc;

use crate::engine::SimRng;
use crate::matrix::server_keys::ServerKeys;
use crate::net::ServerId;

use super::{Body, FedWorld, Purpose, Reply};

/// Bytes counted for a notary's answer (about one signed key object with an old key).
pub const NOTARY_ANSWER_BYTES: u64 = 600;

impl FedWorld {
    /// After `server`'s direct fetch of `domain`'s keys (cache `slot`) failed: asks the notary
    /// if there is one, it is neither side, and this slot was not asked before. Returns whether
    /// a query went out (the caller then waits for its answer).
    pub(super) fn ask_notary(&mut self, server: ServerId, slot: u32, domain: ServerId) -> bool {
        let count = self.servers.len() as u32;
        let Some(notary) = self
            .config
            .notary
            .as_ref()
            .and_then(|notary| notary.index(count))
        else {
            return false;
        };
        if notary == server || notary == domain {
            return false;
        }
        let domain_name = self.servers[domain as usize].name.clone();
        let hs = &mut self.servers[server as usize];
        if hs.archive.contains_key(&domain_name) || !hs.notary_asked.insert(slot) {
            return false;
        }
        self.dispatch(
            server,
            notary,
            Purpose::KeyNotary,
            Body::NotaryQuery { slot, domain },
        );
        true
    }

    /// The notary `notary` answers a query for `domain`'s keys: its cached key object if the
    /// domain is covered and it holds one, else 404.
    pub(super) fn notary_answer(&self, notary: ServerId, domain: ServerId) -> Result<Reply, u16> {
        let coverage = self.config.notary_coverage.unwrap_or(1.0);
        if !SimRng::stream(self.seed, "notary-coverage", u64::from(domain)).chance(coverage) {
            return Err(404);
        }
        let hs = &self.servers[notary as usize];
        let slot = hs.slot_of.get_id(domain).ok_or(404u16)?;
        let keys: &Arc<ServerKeys> = hs.cache.slots()[slot as usize].keys().ok_or(404u16)?;
        Ok(Reply::NotaryKeys(Arc::clone(keys)))
    }

    /// The notary's answer (or failure) reached `server`: keep the keys as historic ones, then
    /// go on as after any key fetch.
    pub(super) fn notary_reply(
        &mut self,
        server: ServerId,
        slot: u32,
        domain: ServerId,
        reply: Option<Reply>,
    ) {
        let domain_name = self.servers[domain as usize].name.clone();
        let usable = match reply {
            Some(Reply::NotaryKeys(keys)) => {
                self.servers[server as usize]
                    .archive
                    .insert(domain_name.clone(), keys);
                true
            }
            _ => false,
        };
        self.keys_settled(server, slot, &domain_name, usable);
    }
}
