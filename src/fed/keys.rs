//! The room layer's read side of a homeserver's keys ([`KeySource`]) over its key-layer
//! [`KeyCache`], plus its own published keys.

use crate::matrix::server_keys::{ServerKeys, ValidityClamp};
use crate::room::keys::{HeldKeys, KeySource};
use crate::server::key_cache::KeyCache;
use crate::server::policy::Unreachable;

/// Domain name -> key-cache slot (lookup only).
pub(crate) type SlotOf = std::collections::HashMap<String, u32, crate::matrix::dag::IdHasher>;

/// What one homeserver holds, as the room layer reads it, at one instant.
pub(crate) struct CacheKeys<'a> {
    /// The server's own name and its own current key object (always trusted as current).
    pub own_name: &'a str,
    pub own_keys: &'a ServerKeys,
    pub cache: &'a KeyCache,
    /// Domain name -> key-cache slot.
    pub slot_of: &'a SlotOf,
    /// Now, in the absolute milliseconds key objects use.
    pub now_abs_ms: i64,
    /// Historic key objects a notary handed out (RQ4; `fed/notary.rs`), used for a domain whose
    /// keys the cache does not hold.
    pub archive: &'a std::collections::BTreeMap<String, std::sync::Arc<ServerKeys>>,
}

impl KeySource for CacheKeys<'_> {
    fn held_keys(&self, server: &str) -> Option<HeldKeys<'_>> {
        if server == self.own_name {
            // A server's own key is current by definition: it is the one it signs with.
            return Some(HeldKeys {
                keys: self.own_keys,
                clamp: ValidityClamp::unclamped(self.now_abs_ms),
                trusted_past_expiry: true,
            });
        }
        let slot = *self.slot_of.get(server)?;
        let entry = &self.cache.slots()[slot as usize];
        let Some(keys) = entry.keys() else {
            // A notary's historic copy, as it was signed (its validity may be long past).
            return self.archive.get(server).map(|keys| HeldKeys {
                keys,
                clamp: ValidityClamp::unclamped(self.now_abs_ms),
                trusted_past_expiry: false,
            });
        };
        let policy = self.cache.policy();
        let clamp = if policy.clamp_7d {
            ValidityClamp::spec(entry.fetched_at_ms())
        } else {
            ValidityClamp::unclamped(entry.fetched_at_ms())
        };
        // Fail-open (MSC4430): a key the cache still believes valid after its validity passed
        // (the origin could not be reached) keeps counting as current.
        let trusted_past_expiry = policy.unreachable == Unreachable::FailOpen
            && entry.valid
            && self.now_abs_ms >= entry.valid_until_ms();
        Some(HeldKeys {
            keys,
            clamp,
            trusted_past_expiry,
        })
    }
}
