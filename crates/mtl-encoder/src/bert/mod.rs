//! BERT as Hugging Face's `BertModel` (without the pooler): one struct per Hugging Face module,
//! named as in its checkpoints, each calling only module forwards and [`crate::ops`].

mod attention;
mod embeddings;
mod encoder;
mod layer;

use burn::module::{Initializer, Module};
use burn::tensor::{backend::Backend, Int, Tensor};

pub use attention::{BertAttention, BertSelfAttention, BertSelfOutput};
pub use embeddings::BertEmbeddings;
pub use encoder::BertEncoder;
pub use layer::{BertIntermediate, BertLayer, BertOutput};

use std::sync::Arc;

use crate::config::BertConfig;
use crate::nn::{Dropout, LayerNorm, Linear, LinearConfig};
use crate::ops::AttentionMask;

/// The additive value that removes a padded key from attention.
const MASKED: f32 = -1.0e9;

/// Hugging Face's `BertModel` without the pooler.
#[derive(Module, Debug)]
pub struct BertModel<B: Backend> {
    pub embeddings: BertEmbeddings<B>,
    pub encoder: BertEncoder<B>,
}

impl BertConfig {
    /// Builds a randomly initialised model (normal(0, `initializer_range`) weights).
    pub fn init<B: Backend>(&self, device: &B::Device) -> BertModel<B> {
        BertModel {
            embeddings: BertEmbeddings::init(self, device),
            encoder: BertEncoder::init(self, device),
        }
    }

    /// BERT's initialiser: normal(0, `initializer_range`).
    fn initializer(&self) -> Initializer {
        Initializer::Normal {
            mean: 0.0,
            std: self.initializer_range,
        }
    }

    /// A linear layer with BERT's initialiser.
    fn linear<B: Backend>(&self, d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
        LinearConfig::new(d_in, d_out)
            .with_initializer(self.initializer())
            .init(device)
    }

    /// A LayerNorm of the hidden width with the configured epsilon.
    fn layer_norm<B: Backend>(&self, device: &B::Device) -> LayerNorm<B> {
        LayerNorm::new(self.hidden_size, self.layer_norm_eps, device)
    }
}

impl<B: Backend> BertModel<B> {
    /// # Shapes
    /// - input_ids, token_type_ids: `[batch, seq]`; attention_mask: `[batch, seq]` (1 for tokens,
    ///   0 for padding) -> last hidden state `[batch, seq, hidden]`
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2>,
    ) -> Tensor<B, 3> {
        let [batch, seq] = attention_mask.dims();
        let mask_bias = ((attention_mask.neg() + 1.0) * MASKED).reshape([batch, 1, 1, seq]);
        let hidden = self.embeddings.forward(input_ids, token_type_ids);
        self.encoder
            .forward(hidden, AttentionMask::Padded(mask_bias))
    }

    /// Sentences packed one after another in one row, without padding: each attends to its
    /// own tokens, with positions restarting at 0 (the same hidden states as [`Self::forward`]
    /// gives the unpadded tokens, without computing any padding).
    ///
    /// # Shapes
    /// - input_ids, token_type_ids, position_ids: `[1, rows]` (`rows` = the sum of `lengths`)
    ///   -> last hidden state `[rows, hidden]`
    pub fn forward_packed(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Tensor<B, 2, Int>,
        position_ids: Tensor<B, 2, Int>,
        lengths: Arc<[usize]>,
    ) -> Tensor<B, 2> {
        let hidden = self
            .embeddings
            .forward_at(input_ids, token_type_ids, position_ids);
        let [_, rows, width] = hidden.dims();
        self.encoder
            .forward(hidden, AttentionMask::Packed(lengths))
            .reshape([rows, width])
    }

    /// Sets every dropout probability of the model (embeddings, attention probabilities,
    /// projections) to `prob`.
    pub fn set_dropout(&mut self, prob: f64) {
        self.embeddings.dropout = Dropout::new(prob);
        for layer in &mut self.encoder.layer {
            layer.attention.self_attention.dropout = Dropout::new(prob);
            layer.attention.output.dropout = Dropout::new(prob);
            layer.output.dropout = Dropout::new(prob);
        }
    }

    /// The number of encoder layers.
    pub fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }
}
