//! One post-LayerNorm transformer layer and the encoder stack.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{activation, backend::Backend, Tensor};

use crate::attention::{linear, BertAttention};
use crate::config::{BertConfig, HiddenAct};
use crate::dropout::Dropout;
use crate::embeddings::layer_norm;
use crate::kernels::linear as linear_forward;
use crate::layer_norm::LayerNorm;

/// The feed-forward activation as a module constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Gelu,
    GeluNew,
    Relu,
}

impl From<HiddenAct> for Activation {
    fn from(act: HiddenAct) -> Self {
        match act {
            HiddenAct::Gelu => Self::Gelu,
            HiddenAct::GeluNew => Self::GeluNew,
            HiddenAct::Relu => Self::Relu,
        }
    }
}

impl Activation {
    /// # Shapes
    /// - x: any -> same
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Gelu => crate::activation::gelu(x),
            Self::GeluNew => activation::gelu_approximate(x),
            Self::Relu => activation::relu(x),
        }
    }
}

/// Hugging Face's `BertIntermediate`.
#[derive(Module, Debug)]
pub struct BertIntermediate<B: Backend> {
    pub dense: Linear<B>,
    pub activation: Activation,
}

/// Hugging Face's `BertOutput`.
#[derive(Module, Debug)]
pub struct BertOutput<B: Backend> {
    pub dense: Linear<B>,
    pub layer_norm: LayerNorm<B>,
    pub dropout: Dropout,
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
            intermediate: BertIntermediate {
                dense: linear(config, config.hidden_size, config.intermediate_size, device),
                activation: config.hidden_act.into(),
            },
            output: BertOutput {
                dense: linear(config, config.intermediate_size, config.hidden_size, device),
                layer_norm: layer_norm(config, device),
                dropout: Dropout::new(config.hidden_dropout_prob),
            },
        }
    }

    /// # Shapes
    /// - hidden: `[batch * seq, hidden]`, mask_bias: `[batch, 1, 1, seq]` -> `[batch * seq, hidden]`
    pub fn forward(&self, hidden: Tensor<B, 2>, mask_bias: Tensor<B, 4>) -> Tensor<B, 2> {
        let attended = self.attention.forward(hidden, mask_bias);
        let inner = self
            .intermediate
            .activation
            .forward(linear_forward(&self.intermediate.dense, attended.clone()));
        let out = self
            .output
            .dropout
            .forward(linear_forward(&self.output.dense, inner));
        self.output.layer_norm.forward(out + attended)
    }
}

/// Hugging Face's `BertEncoder`: the stack of layers.
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

    /// # Shapes
    /// - hidden: `[batch, seq, hidden]`, mask_bias: `[batch, 1, 1, seq]` -> `[batch, seq, hidden]`
    pub fn forward(&self, hidden: Tensor<B, 3>, mask_bias: Tensor<B, 4>) -> Tensor<B, 3> {
        // Layers run on tokens flattened to rows: each linear layer is one matrix product.
        let [batch, seq, width] = hidden.dims();
        let rows = hidden.reshape([batch * seq, width]);
        self.layer
            .iter()
            .fold(rows, |h, layer| layer.forward(h, mask_bias.clone()))
            .reshape([batch, seq, width])
    }
}
