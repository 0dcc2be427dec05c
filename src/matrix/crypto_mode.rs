//! How signatures are made and checked: real ed25519 (the default) or a symbolic stand-in for
//! very large sweeps (issue 5 item 10).
//!
//! **Symbolic signatures are NOT secure.** A symbolic signature is SHA-256 over a fixed tag, the
//! signer's ed25519 public key and the message, followed by SHA-256 of that digest: 64 bytes,
//! so it encodes to the same 86 base64 characters as an ed25519 signature and every byte count
//! stays the same. Anyone who knows the
//! public key could compute it; it is faithful only inside the closed world of a simulation,
//! where the one function that makes it ([`sign`]) needs the signing key, so only the holder of
//! a key produces signatures that verify under it. Verification recomputes the value from the
//! public key the verifier holds and compares: a signature by another key, over other bytes, or
//! an ed25519 signature checked symbolically (and the other way round) fails, as with ed25519.
//! Keys stay real ed25519 key pairs, because public keys appear in member IDs, event content and
//! so in event IDs and content hashes; those exclude signatures, so a run gives byte-identical
//! result files in both modes (tested in `tests/crypto_mode.rs`).
//!
//! The mode is part of the simulated universe, not of a function's arguments: a world sets it
//! for the current thread while it builds and runs ([`enter`], restored when the guard drops),
//! and every signature made or checked on that thread (`signing`, `server_keys`,
//! `member_keys`, `event_builder`, the auth rules' third-party invites) goes through [`sign`]
//! and [`verify`]. Each run is single-threaded (sweeps run whole runs on rayon workers), so a
//! thread-local cannot leak from one run into another; outside any world it is ed25519.

use std::cell::Cell;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Which signatures a run makes and checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CryptoMode {
    /// Real ed25519 (RFC 8032 signing, `verify_strict`).
    #[default]
    Ed25519,
    /// A keyed SHA-256 of (public key, message): the same size, not secure, for large sweeps.
    Symbolic,
}

impl CryptoMode {
    /// The name used in scenario files and `run-info.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            CryptoMode::Ed25519 => "ed25519",
            CryptoMode::Symbolic => "symbolic",
        }
    }

    /// Whether this is the default (ed25519), for `skip_serializing_if`.
    pub fn is_default(&self) -> bool {
        *self == CryptoMode::Ed25519
    }
}

thread_local! {
    static MODE: Cell<CryptoMode> = const { Cell::new(CryptoMode::Ed25519) };
}

/// The mode signatures are made and checked in on this thread.
pub fn current() -> CryptoMode {
    MODE.with(Cell::get)
}

/// Restores the previous mode when dropped.
#[must_use = "the mode is restored when the guard drops"]
pub struct ModeGuard {
    previous: CryptoMode,
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        MODE.with(|mode| mode.set(self.previous));
    }
}

/// Makes and checks signatures in `mode` on this thread until the guard drops.
pub fn enter(mode: CryptoMode) -> ModeGuard {
    let previous = MODE.with(|cell| cell.replace(mode));
    ModeGuard { previous }
}

/// Domain separation: a symbolic signature is never a hash some other part of fedsim makes.
const SYMBOLIC_TAG: &[u8] = b"fedsim symbolic signature v1\0";

/// `d || SHA-256(d)` with `d = SHA-256(tag || public key || message)`: 64 bytes, like an
/// ed25519 signature. SHA-256 rather than SHA-512 because x86 SHA extensions make it several
/// times cheaper, and a symbolic signature is made and checked for every key response.
fn symbolic_signature(public_key: &[u8; 32], message: &[u8]) -> [u8; 64] {
    let mut hasher = Sha256::new();
    hasher.update(SYMBOLIC_TAG);
    hasher.update(public_key);
    hasher.update(message);
    let digest: [u8; 32] = hasher.finalize().into();
    let filler: [u8; 32] = Sha256::digest(digest).into();
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&digest);
    signature[32..].copy_from_slice(&filler);
    signature
}

/// Signs `message` with `key` in the current mode: 64 bytes either way.
pub fn sign(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    match current() {
        CryptoMode::Ed25519 => key.sign(message).to_bytes(),
        // By reference: the public key's 32 bytes, not a copy of the whole key (which holds
        // the decompressed point too).
        CryptoMode::Symbolic => {
            symbolic_signature(AsRef::<VerifyingKey>::as_ref(key).as_bytes(), message)
        }
    }
}

/// Whether `signature` is `key`'s signature over `message` in the current mode (ed25519:
/// `verify_strict`, which also refuses small-order keys and non-canonical signatures).
pub fn verify(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
    match current() {
        CryptoMode::Ed25519 => key.verify_strict(message, signature).is_ok(),
        CryptoMode::Symbolic => symbolic_signature(key.as_bytes(), message) == signature.to_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn each_mode_accepts_only_the_signers_key_over_the_same_bytes() {
        for mode in [CryptoMode::Ed25519, CryptoMode::Symbolic] {
            let _guard = enter(mode);
            let signature = Signature::from_bytes(&sign(&key(1), b"message"));
            assert!(verify(&key(1).verifying_key(), b"message", &signature));
            // Another key, other bytes, a flipped bit: refused.
            assert!(!verify(&key(2).verifying_key(), b"message", &signature));
            assert!(!verify(&key(1).verifying_key(), b"messagf", &signature));
            let mut flipped = signature.to_bytes();
            flipped[5] ^= 1;
            assert!(!verify(
                &key(1).verifying_key(),
                b"message",
                &Signature::from_bytes(&flipped)
            ));
        }
    }

    #[test]
    fn signatures_of_one_mode_do_not_verify_in_the_other() {
        let symbolic = {
            let _guard = enter(CryptoMode::Symbolic);
            Signature::from_bytes(&sign(&key(1), b"m"))
        };
        let real = Signature::from_bytes(&sign(&key(1), b"m"));
        assert_ne!(symbolic, real);
        assert!(!verify(&key(1).verifying_key(), b"m", &symbolic));
        let _guard = enter(CryptoMode::Symbolic);
        assert!(!verify(&key(1).verifying_key(), b"m", &real));
    }

    #[test]
    fn the_guard_restores_the_previous_mode_and_ed25519_is_the_default() {
        assert_eq!(current(), CryptoMode::Ed25519);
        {
            let _outer = enter(CryptoMode::Symbolic);
            {
                let _inner = enter(CryptoMode::Ed25519);
                assert_eq!(current(), CryptoMode::Ed25519);
            }
            assert_eq!(current(), CryptoMode::Symbolic);
        }
        assert_eq!(current(), CryptoMode::Ed25519);
        // Real mode still gives the RFC 8032 signature (deterministic).
        assert_eq!(sign(&key(1), b"m"), key(1).sign(b"m").to_bytes());
    }
}
