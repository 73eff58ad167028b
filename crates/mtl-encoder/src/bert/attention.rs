//! Hugging Face's `BertAttention`: padding-masked multi-head self-attention (`attention.self`),
//! then the projection, residual and LayerNorm (`attention.output`).

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use crate::config::BertConfig;
use crate::nn::{Dropout, LayerNorm, Linear};
use crate::ops::{self, AttentionMask};

/// Hugging Face's `BertSelfAttention` (`attention.self`).
#[derive(Module, Debug)]
pub struct BertSelfAttention<B: Backend> {
    pub query: Linear<B>,
    pub key: Linear<B>,
    pub value: Linear<B>,
    pub dropout: Dropout,
    pub num_attention_heads: usize,
}

impl<B: Backend> BertSelfAttention<B> {
    pub fn init(config: &BertConfig, device: &B::Device) -> Self {
        let h = config.hidden_size;
        Self {
            query: config.linear(h, h, device),
            key: config.linear(h, h, device),
            value: config.linear(h, h, device),
            dropout: Dropout::new(config.attention_probs_dropout_prob),
            num_attention_heads: config.num_attention_heads,
        }
    }

    /// Attention over tokens flattened to rows (one matrix product per projection for the whole
    /// batch, instead of one per sentence).
    ///
    /// # Shapes
    /// - hidden: `[rows, hidden]` (the sentences of `mask`) -> `[rows, hidden]`
    pub fn forward(&self, hidden: Tensor<B, 2>, mask: AttentionMask<B>) -> Tensor<B, 2> {
        let q = self.query.forward(hidden.clone());
        let k = self.key.forward(hidden.clone());
        let v = self.value.forward(hidden);
        let heads = self.num_attention_heads;
        ops::attention(q, k, v, mask, heads, self.dropout.prob)
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
            dense: config.linear(config.hidden_size, config.hidden_size, device),
            layer_norm: config.layer_norm(device),
            dropout: Dropout::new(config.hidden_dropout_prob),
        }
    }

    /// # Shapes
    /// - hidden, residual: `[tokens, hidden]` -> `[tokens, hidden]`
    pub fn forward(&self, hidden: Tensor<B, 2>, residual: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = self.dropout.forward(self.dense.forward(hidden));
        self.layer_norm.forward(x + residual)
    }
}

/// Hugging Face's `BertAttention`.
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
    /// - hidden: `[rows, hidden]` (the sentences of `mask`) -> `[rows, hidden]`
    pub fn forward(&self, hidden: Tensor<B, 2>, mask: AttentionMask<B>) -> Tensor<B, 2> {
        let attended = self.self_attention.forward(hidden.clone(), mask);
        self.output.forward(attended, hidden)
    }
}
