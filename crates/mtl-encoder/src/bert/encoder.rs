//! Hugging Face's `BertEncoder`: the stack of layers.

use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

use super::layer::BertLayer;
use crate::config::BertConfig;
use crate::ops::AttentionMask;

/// Hugging Face's `BertEncoder`.
#[derive(Module, Debug)]
pub struct BertEncoder<B: Backend> {
    pub layer: Vec<BertLayer<B>>,
}

impl<B: Backend> BertEncoder<B> {
    pub fn init(config: &BertConfig, device: &B::Device) -> Self {
        Self {
            layer: (0..config.num_hidden_layers)
                .map(|_| BertLayer::init(config, device))
                .collect(),
        }
    }

    /// Layers run on tokens flattened to rows, so each linear layer is one matrix product for
    /// the whole batch.
    ///
    /// # Shapes
    /// - hidden: `[batch, seq, hidden]` padded, or `[1, rows, hidden]` packed (as `mask` says)
    ///   -> same
    pub fn forward(&self, hidden: Tensor<B, 3>, mask: AttentionMask<B>) -> Tensor<B, 3> {
        let [batch, seq, width] = hidden.dims();
        let rows = hidden.reshape([batch * seq, width]);
        self.layer
            .iter()
            .fold(rows, |h, layer| layer.forward(h, mask.clone()))
            .reshape([batch, seq, width])
    }
}
