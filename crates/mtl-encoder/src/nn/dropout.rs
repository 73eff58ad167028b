//! Dropout whose masks come from a per-thread generator seeded by the caller
//! ([`crate::runtime::seed_dropout`]), so data-parallel shards draw reproducible masks.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::ops;

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
        ops::dropout(input, self.prob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::seed_dropout;
    use burn::backend::{Autodiff, NdArray};

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
