//! Seeded randomness: one generator (SplitMix64) for the whole workspace, and the per-thread
//! generator that dropout masks are drawn from.
//!
//! burn's `Dropout` draws from the backend's global generator, so two threads training at once
//! (data-parallel shards) would interleave their draws and no run could be repeated. Here each
//! thread has its own dropout generator ([`seed_dropout`]); the same seed gives the same masks
//! whatever runs on other threads.

use std::cell::Cell;

use serde::{Deserialize, Serialize};

/// SplitMix64: a small, fast, seedable generator whose whole state is one serializable `u64`, so
/// a run can be resumed exactly from a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    /// The generator state; advanced by every draw.
    pub state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `0..n` without modulo bias (rejection sampling); 0 when `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        if n == 0 {
            return 0;
        }
        // The largest multiple of n that fits: draws at or above it would favour small values.
        let limit = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < limit {
                return (x % n) as usize;
            }
        }
    }

    /// Shuffles `items` in place (Fisher–Yates), every permutation equally likely.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

thread_local! {
    static DROPOUT: Cell<u64> = const { Cell::new(0x853C_49E6_748F_EA9B) };
}

/// Seeds this thread's dropout generator; the masks drawn after it depend only on `seed`.
pub fn seed_dropout(seed: u64) {
    DROPOUT.with(|s| s.set(seed));
}

/// `n` mask values from this thread's dropout generator: `0` with probability `prob`, else
/// `1/(1-prob)` (built once on the host and applied by one multiplication).
pub fn dropout_mask(n: usize, prob: f64) -> Vec<f32> {
    if prob >= 1.0 {
        return vec![0.0; n];
    }
    let scale = (1.0 / (1.0 - prob)) as f32;
    // Drop when a uniform 32-bit draw falls below prob·2³².
    let threshold = (prob.max(0.0) * 4_294_967_296.0) as u64;
    let value = |half: u64| if half < threshold { 0.0 } else { scale };
    DROPOUT.with(|s| {
        let mut rng = Rng::new(s.get());
        let mut out = Vec::with_capacity(n);
        while out.len() + 1 < n {
            let r = rng.next_u64();
            out.push(value(r & 0xFFFF_FFFF));
            out.push(value(r >> 32));
        }
        if out.len() < n {
            out.push(value(rng.next_u64() & 0xFFFF_FFFF));
        }
        s.set(rng.state);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_follow_the_seed_and_probability() {
        seed_dropout(5);
        let a = dropout_mask(100_001, 0.1);
        seed_dropout(5);
        let b = dropout_mask(100_001, 0.1);
        assert_eq!(a, b);
        assert_eq!(a.len(), 100_001);
        seed_dropout(6);
        assert_ne!(a, dropout_mask(100_001, 0.1));
        let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - 0.1).abs() < 0.005, "dropped {dropped}");
        let kept: Vec<f32> = a.iter().copied().filter(|&v| v != 0.0).collect();
        assert!(kept.iter().all(|&v| v == (1.0f64 / 0.9) as f32));
        assert!(dropout_mask(10, 1.0).iter().all(|&v| v == 0.0));
        assert!(dropout_mask(10, 0.0).iter().all(|&v| v == 1.0));
    }

    #[test]
    fn masks_do_not_depend_on_other_threads() {
        seed_dropout(9);
        let here = dropout_mask(1000, 0.5);
        let there = std::thread::spawn(|| {
            seed_dropout(9);
            dropout_mask(1000, 0.5)
        })
        .join()
        .unwrap();
        assert_eq!(here, there);
    }

    #[test]
    fn splitmix64_reference_values() {
        let mut rng = Rng::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
        let mut rng = Rng::new(42);
        assert_eq!(rng.next_u64(), 0xBDD7_3226_2FEB_6E95);
        // The state alone resumes the stream.
        let mut resumed = Rng { state: rng.state };
        assert_eq!(resumed.next_u64(), 0x28EF_E333_B266_F103);
        assert_eq!(rng.next_u64(), 0x28EF_E333_B266_F103);
    }

    #[test]
    fn uniform_draws_stay_in_range() {
        let mut rng = Rng::new(7);
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            let f = rng.next_f64();
            assert!((0.0..1.0).contains(&f));
            counts[rng.below(3)] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
        assert_eq!(rng.below(0), 0);
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let shuffled = |seed| {
            let mut v: Vec<usize> = (0..20).collect();
            Rng::new(seed).shuffle(&mut v);
            v
        };
        let a = shuffled(1);
        assert_eq!(a, shuffled(1));
        assert_ne!(a, shuffled(2));
        assert_ne!(a, (0..20).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
        Rng::new(1).shuffle::<u8>(&mut []);
    }
}
