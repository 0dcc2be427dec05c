//! Seeded randomness: one run seed, many independent named streams.
//!
//! Each stream is a ChaCha8 generator keyed by SHA-256(run seed, purpose, entity). A consumer
//! draws only from its own stream, so adding a consumer of randomness (a new purpose, or a new
//! entity) never changes the draws any other stream makes. Conversions to floats and ranges are
//! written here, not borrowed from `rand`'s helpers, so a `rand` upgrade cannot change results.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// The seed of one named stream: derived from the run seed, a purpose and an entity id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSeed(pub [u8; 32]);

impl StreamSeed {
    /// SHA-256 over the run seed, the purpose's bytes (length-prefixed) and the entity id.
    pub fn derive(run_seed: u64, purpose: &str, entity: u64) -> StreamSeed {
        let mut hasher = Sha256::new();
        hasher.update(b"fedsim-stream-v1");
        hasher.update(run_seed.to_le_bytes());
        hasher.update((purpose.len() as u64).to_le_bytes());
        hasher.update(purpose.as_bytes());
        hasher.update(entity.to_le_bytes());
        let digest = hasher.finalize();
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&digest);
        StreamSeed(seed)
    }
}

/// A deterministic random stream (ChaCha8).
#[derive(Clone)]
pub struct SimRng {
    inner: ChaCha8Rng,
}

impl SimRng {
    /// The stream for (`purpose`, `entity`) of the run with `run_seed`.
    pub fn stream(run_seed: u64, purpose: &str, entity: u64) -> SimRng {
        SimRng::from_stream_seed(StreamSeed::derive(run_seed, purpose, entity))
    }

    /// The stream with an already derived seed.
    pub fn from_stream_seed(seed: StreamSeed) -> SimRng {
        SimRng {
            inner: ChaCha8Rng::from_seed(seed.0),
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// 32 random bytes (used as ed25519 key seeds).
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        bytes
    }

    /// A uniform float in [0, 1) with 53 random bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in [0, bound), `bound > 0`, by Lemire's widening multiply with
    /// rejection (unbiased).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0) has no values");
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = (self.next_u64() as u128) * (bound as u128);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// A uniform integer in [low, high] (inclusive).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "between({low}, {high}): empty range");
        if high - low == u64::MAX {
            return self.next_u64();
        }
        low + self.below(high - low + 1)
    }

    /// `true` with probability `probability` (clamped to [0, 1]).
    pub fn chance(&mut self, probability: f64) -> bool {
        if probability <= 0.0 {
            return false;
        }
        if probability >= 1.0 {
            return true;
        }
        self.unit_f64() < probability
    }

    /// An exponential draw with the given mean (for Poisson arrivals).
    pub fn exponential(&mut self, mean: f64) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        -mean * (1.0 - self.unit_f64()).ln()
    }

    /// A standard normal draw (Box-Muller).
    pub fn standard_normal(&mut self) -> f64 {
        let radius_source = 1.0 - self.unit_f64();
        let angle = std::f64::consts::TAU * self.unit_f64();
        (-2.0 * radius_source.ln()).sqrt() * angle.cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(rng: &mut SimRng, count: usize) -> Vec<u64> {
        (0..count).map(|_| rng.next_u64()).collect()
    }

    #[test]
    fn same_seed_purpose_and_entity_give_the_same_stream() {
        let first = draws(&mut SimRng::stream(7, "latency", 3), 16);
        let second = draws(&mut SimRng::stream(7, "latency", 3), 16);
        assert_eq!(first, second);
    }

    #[test]
    fn streams_differ_by_seed_purpose_and_entity() {
        let base = draws(&mut SimRng::stream(7, "latency", 3), 4);
        assert_ne!(base, draws(&mut SimRng::stream(8, "latency", 3), 4));
        assert_ne!(base, draws(&mut SimRng::stream(7, "loss", 3), 4));
        assert_ne!(base, draws(&mut SimRng::stream(7, "latency", 4), 4));
        // Length prefixing keeps ("ab", ..) and ("a", ..) apart.
        assert_ne!(
            StreamSeed::derive(1, "ab", 0),
            StreamSeed::derive(1, "a", u64::from(b'b'))
        );
    }

    #[test]
    fn adding_a_consumer_does_not_change_another_streams_draws() {
        // World A: one consumer. World B: a second consumer draws heavily in between.
        let mut latency_a = SimRng::stream(42, "latency", 0);
        let alone: Vec<u64> = draws(&mut latency_a, 100);

        let mut latency_b = SimRng::stream(42, "latency", 0);
        let mut newcomer = SimRng::stream(42, "new-purpose", 0);
        let mut interleaved = Vec::new();
        for _ in 0..100 {
            draws(&mut newcomer, 3);
            interleaved.push(latency_b.next_u64());
        }
        assert_eq!(alone, interleaved);
    }

    #[test]
    fn ranges_and_floats_stay_in_bounds() {
        let mut rng = SimRng::stream(1, "bounds", 0);
        for _ in 0..10_000 {
            let unit = rng.unit_f64();
            assert!((0.0..1.0).contains(&unit));
            assert!(rng.below(7) < 7);
            let value = rng.between(5, 9);
            assert!((5..=9).contains(&value));
            assert!(rng.exponential(3.0) >= 0.0);
        }
        assert!(!rng.chance(0.0));
        assert!(rng.chance(1.0));
    }

    #[test]
    fn exponential_mean_is_close() {
        let mut rng = SimRng::stream(1, "mean", 0);
        let count = 20_000;
        let total: f64 = (0..count).map(|_| rng.exponential(10.0)).sum();
        let mean = total / count as f64;
        assert!((mean - 10.0).abs() < 0.3, "mean {mean}");
    }
}
