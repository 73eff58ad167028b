//! A linear layer with burn's parameter names and layout, forwarding to [`ops::linear`].

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::tensor::{backend::Backend, Tensor};

use crate::ops;

/// The configuration of a [`Linear`] layer.
#[derive(Config, Debug)]
pub struct LinearConfig {
    /// Input width.
    pub d_input: usize,
    /// Output width.
    pub d_output: usize,
    /// Whether the layer adds a bias.
    #[config(default = true)]
    pub bias: bool,
    /// How weight and bias are initialised (burn's default: Kaiming uniform).
    #[config(
        default = "Initializer::KaimingUniform { gain: 1.0 / 3.0f64.sqrt(), fan_out_only: false }"
    )]
    pub initializer: Initializer,
}

impl LinearConfig {
    /// A layer initialised as burn's `LinearConfig::init` does (lazily: a checkpoint loaded over
    /// it never draws the random values).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Linear<B> {
        let (d_in, d_out) = (Some(self.d_input), Some(self.d_output));
        let weight = self
            .initializer
            .init_with([self.d_input, self.d_output], d_in, d_out, device);
        let bias = self.bias.then(|| {
            self.initializer
                .init_with([self.d_output], d_in, d_out, device)
        });
        Linear {
            weight,
            bias,
            prepared: Default::default(),
        }
    }
}

/// `y = x·W + b`, with burn's parameter names (`weight` stored `[d_input, d_output]`, `bias`), so
/// checkpoints and the key table read it as they read burn's `Linear`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[d_input, d_output]`
    pub weight: Param<Tensor<B, 2>>,
    /// `[d_output]`
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// The weight as the backend's kernel prepares it (not saved; rebuilt when the weight
    /// changes).
    #[module(skip)]
    pub prepared: ops::Prepared,
}

impl<B: Backend> Linear<B> {
    /// # Shapes
    /// - x: `[rows, d_input]` -> `[rows, d_output]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let bias = self.bias.as_ref().map(|b| b.val());
        ops::linear(x, self.weight.val(), bias, &self.prepared)
    }

    /// The input width.
    pub fn d_input(&self) -> usize {
        self.weight.shape().dims::<2>()[0]
    }

    /// The output width.
    pub fn d_output(&self) -> usize {
        self.weight.shape().dims::<2>()[1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn init_gives_burns_shapes() {
        let layer = LinearConfig::new(5, 3).init::<NdArray>(&Default::default());
        assert_eq!(layer.weight.dims(), [5, 3]);
        assert_eq!((layer.d_input(), layer.d_output()), (5, 3));
        assert!(LinearConfig::new(5, 3)
            .with_bias(false)
            .init::<NdArray>(&Default::default())
            .bias
            .is_none());
        let x = Tensor::<NdArray, 2>::ones([4, 5], &Default::default());
        assert_eq!(layer.forward(x).dims(), [4, 3]);
    }
}
