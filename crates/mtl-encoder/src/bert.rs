//! `BertModel`: embeddings and the encoder stack, returning the last hidden state.

use burn::module::Module;
use burn::tensor::{backend::Backend, Int, Tensor};

use crate::config::BertConfig;
use crate::embeddings::BertEmbeddings;
use crate::layer::BertEncoder;

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
        self.encoder.forward(hidden, mask_bias)
    }

    /// The number of encoder layers.
    pub fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }
}
