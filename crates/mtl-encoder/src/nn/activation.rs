//! The feed-forward activation of a BERT layer, applied as its configuration names it.

use burn::tensor::{activation, backend::Backend, Tensor};

use crate::config::HiddenAct;
use crate::ops;

impl HiddenAct {
    /// # Shapes
    /// - x: any -> same
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Gelu => ops::gelu(x),
            Self::GeluNew => activation::gelu_approximate(x),
            Self::Relu => activation::relu(x),
        }
    }
}
