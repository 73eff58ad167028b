//! LayerNorm with burn's parameters, forwarding to [`ops::layer_norm`].

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

use crate::ops;

/// Layer normalisation over the last axis: `(x − mean)/√(var + ε)·γ + β` (Hugging Face's
/// `LayerNorm`; `gamma` and `beta` are its `weight` and `bias`). burn's `LayerNorm` keeps its
/// epsilon private and runs as about ten operations under autodiff; this one is a single
/// operation ([`ops::layer_norm`]).
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale, `[d_model]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// Shift, `[d_model]`.
    pub beta: Param<Tensor<B, 1>>,
    /// Added to the variance before the square root.
    pub epsilon: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Scale 1 and shift 0.
    pub fn new(d_model: usize, epsilon: f64, device: &B::Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([d_model], device)),
            beta: Param::from_tensor(Tensor::zeros([d_model], device)),
            epsilon,
        }
    }

    /// # Shapes
    /// - x: `[..., d_model]` -> same
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        ops::layer_norm(x, self.gamma.val(), self.beta.val(), self.epsilon)
    }
}
