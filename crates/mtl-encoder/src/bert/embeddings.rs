//! BERT embeddings: word + position + token type, then LayerNorm and dropout.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{backend::Backend, Int, Tensor};

use crate::config::BertConfig;
use crate::nn::{Dropout, LayerNorm};

/// Hugging Face's `BertEmbeddings`.
#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    pub word_embeddings: Embedding<B>,
    pub position_embeddings: Embedding<B>,
    pub token_type_embeddings: Embedding<B>,
    pub layer_norm: LayerNorm<B>,
    pub dropout: Dropout,
}

impl<B: Backend> BertEmbeddings<B> {
    /// Builds randomly initialised embeddings for `config`.
    pub fn init(config: &BertConfig, device: &B::Device) -> Self {
        let embedding = |n: usize| {
            EmbeddingConfig::new(n, config.hidden_size)
                .with_initializer(config.initializer())
                .init(device)
        };
        Self {
            word_embeddings: embedding(config.vocab_size),
            position_embeddings: embedding(config.max_position_embeddings),
            token_type_embeddings: embedding(config.type_vocab_size),
            layer_norm: config.layer_norm(device),
            dropout: Dropout::new(config.hidden_dropout_prob),
        }
    }

    /// # Shapes
    /// - input_ids, token_type_ids: `[batch, seq]` -> `[batch, seq, hidden]`
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let [_, seq] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..seq as i64, &device).unsqueeze::<2>();
        self.forward_at(input_ids, token_type_ids, positions)
    }

    /// With explicit positions (packed sentences restart at 0 inside one row).
    ///
    /// # Shapes
    /// - input_ids, token_type_ids: `[batch, seq]`, position_ids: `[batch or 1, seq]`
    ///   -> `[batch, seq, hidden]`
    pub fn forward_at(
        &self,
        input_ids: Tensor<B, 2, Int>,
        token_type_ids: Tensor<B, 2, Int>,
        positions: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let x = self.word_embeddings.forward(input_ids)
            + self.token_type_embeddings.forward(token_type_ids)
            + self.position_embeddings.forward(positions);
        self.dropout.forward(self.layer_norm.forward(x))
    }
}
