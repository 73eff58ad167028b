//! Hugging Face's `BertLayer`: attention, then the feed-forward block (`intermediate`, `output`)
//! with its residual and post-LayerNorm.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use super::attention::BertAttention;
use crate::config::{BertConfig, HiddenAct};
use crate::nn::{Dropout, LayerNorm, Linear};
use crate::ops::AttentionMask;

/// Hugging Face's `BertIntermediate`: the widening projection and its activation.
#[derive(Module, Debug)]
pub struct BertIntermediate<B: Backend> {
    pub dense: Linear<B>,
    pub activation: HiddenAct,
}

impl<B: Backend> BertIntermediate<B> {
    pub fn init(config: &BertConfig, device: &B::Device) -> Self {
        Self {
            dense: config.linear(config.hidden_size, config.intermediate_size, device),
            activation: config.hidden_act,
        }
    }

    /// # Shapes
    /// - hidden: `[tokens, hidden]` -> `[tokens, intermediate]`
    pub fn forward(&self, hidden: Tensor<B, 2>) -> Tensor<B, 2> {
        self.activation.forward(self.dense.forward(hidden))
    }
}

/// Hugging Face's `BertOutput`: the narrowing projection, dropout, residual and LayerNorm.
#[derive(Module, Debug)]
pub struct BertOutput<B: Backend> {
    pub dense: Linear<B>,
    pub layer_norm: LayerNorm<B>,
    pub dropout: Dropout,
}

impl<B: Backend> BertOutput<B> {
    pub fn init(config: &BertConfig, device: &B::Device) -> Self {
        Self {
            dense: config.linear(config.intermediate_size, config.hidden_size, device),
            layer_norm: config.layer_norm(device),
            dropout: Dropout::new(config.hidden_dropout_prob),
        }
    }

    /// # Shapes
    /// - inner: `[tokens, intermediate]`, residual: `[tokens, hidden]` -> `[tokens, hidden]`
    pub fn forward(&self, inner: Tensor<B, 2>, residual: Tensor<B, 2>) -> Tensor<B, 2> {
        let out = self.dropout.forward(self.dense.forward(inner));
        self.layer_norm.forward(out + residual)
    }
}

/// Hugging Face's `BertLayer`.
#[derive(Module, Debug)]
pub struct BertLayer<B: Backend> {
    pub attention: BertAttention<B>,
    pub intermediate: BertIntermediate<B>,
    pub output: BertOutput<B>,
}

impl<B: Backend> BertLayer<B> {
    pub fn init(config: &BertConfig, device: &B::Device) -> Self {
        Self {
            attention: BertAttention::init(config, device),
            intermediate: BertIntermediate::init(config, device),
            output: BertOutput::init(config, device),
        }
    }

    /// # Shapes
    /// - hidden: `[rows, hidden]` (the sentences of `mask`) -> `[rows, hidden]`
    pub fn forward(&self, hidden: Tensor<B, 2>, mask: AttentionMask<B>) -> Tensor<B, 2> {
        let attended = self.attention.forward(hidden, mask);
        let inner = self.intermediate.forward(attended.clone());
        self.output.forward(inner, attended)
    }
}
