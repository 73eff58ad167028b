//! The operations as burn tensor operations: what every backend without a kernel of its own
//! runs (CUDA, flex, ...), differentiable by burn's autodiff, and the oracle the kernels are
//! tested against.

use core::f64::consts::SQRT_2;

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use super::inputs::{AttentionInputs, LayerNormInputs, LinearInputs};
use super::{packed_sentences, AttentionMask};
use crate::runtime::dropout_mask;

/// burn's `linear`.
pub(super) fn linear<B: Backend>((x, weight, bias, _): LinearInputs<B>) -> Tensor<B, 2> {
    burn::tensor::module::linear(x, weight, bias)
}

/// Heads split from the rows, scores, mask, softmax, dropout, and the heads merged back; packed
/// sentences one at a time.
pub(super) fn attention<B: Backend>(
    (q, k, v, mask, heads, dropout_prob): AttentionInputs<B>,
) -> Tensor<B, 2> {
    let lengths = match mask {
        AttentionMask::Padded(bias) => return padded_attention(q, k, v, bias, heads, dropout_prob),
        AttentionMask::Packed(lengths) => lengths,
    };
    let (device, width) = (q.device(), q.dims()[1]);
    let mut parts = Vec::with_capacity(lengths.len());
    for (start, len) in packed_sentences(&lengths) {
        if len == 0 {
            continue;
        }
        let rows = start..start + len;
        let [q, k, v] = [&q, &k, &v].map(|x| x.clone().slice([rows.clone(), 0..width]));
        let bias = Tensor::zeros([1, 1, 1, len], &device);
        parts.push(padded_attention(q, k, v, bias, heads, dropout_prob));
    }
    if parts.is_empty() {
        return q;
    }
    Tensor::cat(parts, 0)
}

/// Attention over `batch` padded sentences.
fn padded_attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    mask_bias: Tensor<B, 4>,
    heads: usize,
    dropout_prob: f64,
) -> Tensor<B, 2> {
    let [batch, _, _, seq] = mask_bias.dims();
    let [rows, width] = q.dims();
    let head_dim = width / heads;
    let split = |x: Tensor<B, 2>| x.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
    let (q, k, v) = (split(q), split(k), split(v));
    let scale = 1.0 / (head_dim as f64).sqrt();
    let scores = q.matmul(k.swap_dims(2, 3)) * scale + mask_bias;
    let probs = dropout(softmax(scores, 3), dropout_prob);
    probs.matmul(v).swap_dims(1, 2).reshape([rows, width])
}

/// burn's `layer_norm`.
pub(super) fn layer_norm<B: Backend, const D: usize>(
    (x, gamma, beta, epsilon): LayerNormInputs<B, D>,
) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
        x.into_primitive().tensor(),
        gamma.into_primitive().tensor(),
        Some(beta.into_primitive().tensor()),
        epsilon,
    )))
}

/// `x·(erf(x/√2) + 1)·0.5` in differentiable operations, so autodiff's gradient is exact. (A
/// host pass computing value and slope, handed to autodiff as `v + (x − detach(x))·slope`,
/// measured 10-15% slower per training step on CPU.)
pub(super) fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    // Multiplying by 0.5 is exact, so the forward values equal burn's `x·(erf + 1) / 2`.
    let cdf = x
        .clone()
        .div_scalar(SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5);
    x * cdf
}

/// The mask from this thread's dropout generator, applied by one multiplication (burn's
/// `Dropout` costs a Bernoulli sample per element, a multiplication and a scaling, and draws
/// from the backend's global generator).
pub(super) fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, prob: f64) -> Tensor<B, D> {
    let device = x.device();
    if prob <= 0.0 || !B::ad_enabled(&device) {
        return x;
    }
    let shape = x.shape();
    let mask = dropout_mask(shape.num_elements(), prob);
    x * Tensor::from_data(TensorData::new(mask, shape), &device)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{activation, Tensor, TensorData};

    use crate::ops::testing::AB;

    #[test]
    fn gelu_forward_equals_burns_gelu() {
        let device = Default::default();
        let xs = [-6.0f32, -3.0, -1.5, -0.5, 0.0, 0.3, 1.0, 2.5, 5.0];
        let x = Tensor::<AB, 1>::from_data(TensorData::from(xs), &device);
        let ours = super::gelu(x.clone()).into_data().to_vec::<f32>().unwrap();
        let burns = activation::gelu(x).into_data().to_vec::<f32>().unwrap();
        assert_eq!(ours, burns);
    }
}
