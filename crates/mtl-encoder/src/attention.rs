//! Padding-masked multi-head self-attention, with Hugging Face's module names.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{activation::softmax, backend::Backend, Tensor};

use crate::config::BertConfig;
use crate::dropout::Dropout;
use crate::embeddings::{layer_norm, normal_init};
use crate::kernels::{self, linear as linear_forward};
use crate::layer_norm::LayerNorm;

pub(crate) fn linear<B: Backend>(
    config: &BertConfig,
    d_in: usize,
    d_out: usize,
    device: &B::Device,
) -> Linear<B> {
    LinearConfig::new(d_in, d_out)
        .with_initializer(normal_init(config))
        .init(device)
}

/// Hugging Face's `BertSelfAttention` (`attention.self`).
#[derive(Module, Debug)]
pub struct BertSelfAttention<B: Backend> {
    pub query: Linear<B>,
    pub key: Linear<B>,
    pub value: Linear<B>,
    pub dropout: Dropout,
    pub num_attention_heads: usize,
    pub head_dim: usize,
}

impl<B: Backend> BertSelfAttention<B> {
    pub fn init(config: &BertConfig, device: &B::Device) -> Self {
        let h = config.hidden_size;
        Self {
            query: linear(config, h, h, device),
            key: linear(config, h, h, device),
            value: linear(config, h, h, device),
            dropout: Dropout::new(config.attention_probs_dropout_prob),
            num_attention_heads: config.num_attention_heads,
            head_dim: config.head_dim(),
        }
    }

    /// Attention over tokens flattened to rows (one matrix product per projection for the whole
    /// batch, instead of one per sentence).
    ///
    /// # Shapes
    /// - hidden: `[batch * seq, hidden]`, mask_bias: `[batch, 1, 1, seq]` (0 to attend, a large
    ///   negative number for padding) -> `[batch * seq, hidden]`
    pub fn forward(&self, hidden: Tensor<B, 2>, mask_bias: Tensor<B, 4>) -> Tensor<B, 2> {
        let [batch, _, _, seq] = mask_bias.dims();
        let [rows, width] = hidden.dims();
        let heads = |x: Tensor<B, 2>| {
            x.reshape([batch, seq, self.num_attention_heads, self.head_dim])
                .swap_dims(1, 2)
        };
        let q = linear_forward(&self.query, hidden.clone());
        let k = linear_forward(&self.key, hidden.clone());
        let v = linear_forward(&self.value, hidden);
        if kernels::applies::<B>(&[q.dtype(), k.dtype(), v.dtype(), mask_bias.dtype()]) {
            let heads = self.num_attention_heads;
            return kernels::attention(q, k, v, mask_bias, heads, self.dropout.prob);
        }
        let (q, k, v) = (heads(q), heads(k), heads(v));
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = q.matmul(k.swap_dims(2, 3)) * scale + mask_bias;
        let probs = self.dropout.forward(softmax(scores, 3));
        probs.matmul(v).swap_dims(1, 2).reshape([rows, width])
    }
}

/// Hugging Face's `BertSelfOutput` (`attention.output`).
#[derive(Module, Debug)]
pub struct BertSelfOutput<B: Backend> {
    pub dense: Linear<B>,
    pub layer_norm: LayerNorm<B>,
    pub dropout: Dropout,
}

impl<B: Backend> BertSelfOutput<B> {
    pub fn init(config: &BertConfig, device: &B::Device) -> Self {
        Self {
            dense: linear(config, config.hidden_size, config.hidden_size, device),
            layer_norm: layer_norm(config, device),
            dropout: Dropout::new(config.hidden_dropout_prob),
        }
    }

    /// # Shapes
    /// - hidden, residual: `[tokens, hidden]` -> `[tokens, hidden]`
    pub fn forward(&self, hidden: Tensor<B, 2>, residual: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = self.dropout.forward(linear_forward(&self.dense, hidden));
        self.layer_norm.forward(x + residual)
    }
}

/// Hugging Face's `BertAttention`: self-attention, projection, residual and LayerNorm.
#[derive(Module, Debug)]
pub struct BertAttention<B: Backend> {
    pub self_attention: BertSelfAttention<B>,
    pub output: BertSelfOutput<B>,
}

impl<B: Backend> BertAttention<B> {
    pub fn init(config: &BertConfig, device: &B::Device) -> Self {
        Self {
            self_attention: BertSelfAttention::init(config, device),
            output: BertSelfOutput::init(config, device),
        }
    }

    /// # Shapes
    /// - hidden: `[batch * seq, hidden]`, mask_bias: `[batch, 1, 1, seq]` -> `[batch * seq, hidden]`
    pub fn forward(&self, hidden: Tensor<B, 2>, mask_bias: Tensor<B, 4>) -> Tensor<B, 2> {
        let attended = self.self_attention.forward(hidden.clone(), mask_bias);
        self.output.forward(attended, hidden)
    }
}
