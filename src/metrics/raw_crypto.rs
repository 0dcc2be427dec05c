//! The raw single-core cost of ed25519 on this machine, for the crypto floor that `fedsim bench`
//! and run-info.json report (events signed x one signature + distinct checks x one strict
//! verification). A measurement, never a result: it goes only into wall-clock files.

use std::time::Instant;

use ed25519_dalek::{Signer, SigningKey};

/// Raw single-core ed25519 costs measured on this machine (seconds per operation).
#[derive(Debug, Clone, Copy)]
pub struct RawCrypto {
    pub sign_seconds: f64,
    pub verify_seconds: f64,
}

/// The size of the message timed: a typical signed event's canonical JSON (the floor is
/// dominated by events; the hashing inside ed25519 makes the size matter only a little).
const MESSAGE_BYTES: usize = 600;
const BATCHES: usize = 7;
const PER_BATCH: u32 = 100;

/// Times raw ed25519 signing and strict verification: the fastest of several batches. Other
/// work on a shared machine only ever slows a batch down, so the fastest one is the closest to
/// the machine's own cost, and a floor that is too high would flatter the ratio.
pub fn measure_raw_crypto() -> RawCrypto {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let verifying_key = key.verifying_key();
    let message = vec![b'x'; MESSAGE_BYTES];
    let signature = key.sign(&message);
    let fastest_batch = |operation: &dyn Fn()| {
        (0..BATCHES)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..PER_BATCH {
                    operation();
                }
                started.elapsed().as_secs_f64() / f64::from(PER_BATCH)
            })
            .fold(f64::INFINITY, f64::min)
    };
    RawCrypto {
        sign_seconds: fastest_batch(&|| {
            std::hint::black_box(key.sign(std::hint::black_box(&message)));
        }),
        verify_seconds: fastest_batch(&|| {
            let result = verifying_key.verify_strict(std::hint::black_box(&message), &signature);
            std::hint::black_box(result.is_ok());
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_costs_are_positive_and_finite() {
        let raw = measure_raw_crypto();
        for seconds in [raw.sign_seconds, raw.verify_seconds] {
            assert!(seconds.is_finite() && seconds > 0.0, "{raw:?}");
        }
    }
}
