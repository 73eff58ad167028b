//! The inputs of each operation as one value, handed to a kernel and back when it declines.

use burn::tensor::Tensor;

/// The inputs of [`super::linear`]: x, weight, bias, the layer's prepared slot.
pub(crate) type LinearInputs<'a, B> = (
    Tensor<B, 2>,
    Tensor<B, 2>,
    Option<Tensor<B, 1>>,
    &'a super::Prepared,
);
/// The inputs of [`super::attention`]: q, k, v, mask, heads, dropout probability.
pub(crate) type AttentionInputs<B> = (
    Tensor<B, 2>,
    Tensor<B, 2>,
    Tensor<B, 2>,
    super::AttentionMask<B>,
    usize,
    f64,
);
/// The inputs of [`super::layer_norm`]: x, gamma, beta, epsilon.
pub(crate) type LayerNormInputs<B, const D: usize> =
    (Tensor<B, D>, Tensor<B, 1>, Tensor<B, 1>, f64);
