//! Dropout whose masks come from a per-thread generator seeded by the caller.
//!
//! burn's `Dropout` draws from the backend's global generator, so two threads training at once
//! (data-parallel shards) would interleave their draws and no run could be repeated. Here each
//! thread has its own generator ([`seed_dropout`]); the same seed gives the same masks whatever
//! runs on other threads. A mask is built once on the host as `0` or `1/(1-p)` and applied by one
//! multiplication (burn's costs a Bernoulli sample per element, a multiplication and a scaling).

use std::cell::Cell;

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor, TensorData};

thread_local! {
    static STATE: Cell<u64> = const { Cell::new(0x853C_49E6_748F_EA9B) };
}

/// Seeds this thread's dropout generator; the masks drawn after it depend only on `seed`.
pub fn seed_dropout(seed: u64) {
    STATE.with(|s| s.set(seed));
}

/// SplitMix64: one step of the generator.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` mask values from this thread's generator: `0` with probability `prob`, else `1/(1-prob)`.
pub fn dropout_mask(n: usize, prob: f64) -> Vec<f32> {
    if prob >= 1.0 {
        return vec![0.0; n];
    }
    let scale = (1.0 / (1.0 - prob)) as f32;
    // Drop when a uniform 32-bit draw falls below prob·2³².
    let threshold = (prob.max(0.0) * 4_294_967_296.0) as u64;
    STATE.with(|s| {
        let mut state = s.get();
        let mut out = Vec::with_capacity(n);
        while out.len() + 1 < n {
            let r = next(&mut state);
            for half in [r & 0xFFFF_FFFF, r >> 32] {
                out.push(if half < threshold { 0.0 } else { scale });
            }
        }
        if out.len() < n {
            let half = next(&mut state) & 0xFFFF_FFFF;
            out.push(if half < threshold { 0.0 } else { scale });
        }
        s.set(state);
        out
    })
}

/// Zeroes each element with probability `prob` and scales the rest by `1/(1-prob)`, in training
/// (autodiff backends) only; at inference it is the identity.
#[derive(Module, Clone, Debug)]
pub struct Dropout {
    /// The probability of zeroing an element.
    pub prob: f64,
}

impl Dropout {
    /// A dropout layer; `prob` is clamped to `[0, 1]`.
    pub fn new(prob: f64) -> Self {
        Self {
            prob: prob.clamp(0.0, 1.0),
        }
    }

    /// # Shapes
    /// - input: any -> same
    pub fn forward<B: Backend, const D: usize>(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        let device = input.device();
        if self.prob <= 0.0 || !B::ad_enabled(&device) {
            return input;
        }
        let shape = input.shape();
        let mask = dropout_mask(shape.num_elements(), self.prob);
        input * Tensor::from_data(TensorData::new(mask, shape), &device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

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
    fn drops_in_training_only_and_passes_gradients_through_the_mask() {
        type AB = Autodiff<NdArray>;
        let device = Default::default();
        let dropout = Dropout::new(0.5);
        let x = Tensor::<AB, 2>::ones([8, 16], &device).require_grad();
        seed_dropout(1);
        let y = dropout.forward(x.clone());
        let values = y.clone().into_data().into_vec::<f32>().unwrap();
        assert!(values.iter().all(|&v| v == 0.0 || v == 2.0));
        assert!(values.contains(&0.0) && values.contains(&2.0));
        let grad = y.sum().backward();
        let g = x
            .grad(&grad)
            .unwrap()
            .into_data()
            .into_vec::<f32>()
            .unwrap();
        assert_eq!(g, values, "d(sum)/dx is the mask itself for x = 1");

        let x = Tensor::<NdArray, 2>::ones([8, 16], &device);
        let y = dropout.forward(x).into_data().into_vec::<f32>().unwrap();
        assert!(y.iter().all(|&v| v == 1.0));
    }
}
