//! `ClassificationHead`: Linear -> activation -> dropout -> Linear, from a sentence embedding to
//! class logits.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{activation, backend::Backend, Tensor, TensorData};
use mtl_encoder::nn::{Dropout, Linear};
use mtl_encoder::ops;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The activation between the two layers of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadActivation {
    /// max(0, x) (the default).
    #[default]
    Relu,
    /// Exact GELU.
    Gelu,
    /// tanh.
    Tanh,
}

impl std::str::FromStr for HeadActivation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "relu" => Ok(Self::Relu),
            "gelu" => Ok(Self::Gelu),
            "tanh" => Ok(Self::Tanh),
            other => Err(format!(
                "unknown activation {other:?} (expected relu, gelu or tanh)"
            )),
        }
    }
}

impl HeadActivation {
    /// # Shapes
    /// - x: any -> same
    pub fn forward<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Relu => activation::relu(x),
            Self::Gelu => ops::gelu(x),
            Self::Tanh => activation::tanh(x),
        }
    }
}

/// The configuration of a [`ClassificationHead`].
#[derive(Config, Debug, PartialEq)]
pub struct ClassificationHeadConfig {
    /// The width of the sentence embedding.
    pub input_size: usize,
    /// The number of classes.
    pub num_classes: usize,
    /// The hidden width (default `input_size / 2`).
    #[config(default = "None")]
    pub hidden_size: Option<usize>,
    /// Dropout after the activation (training only).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// The activation.
    #[config(default = "HeadActivation::Relu")]
    pub activation: HeadActivation,
    /// Seed of the initial weights: the same seed gives the same head on every backend and thread.
    #[config(default = 0)]
    pub seed: u64,
}

impl ClassificationHeadConfig {
    /// The hidden width this configuration resolves to.
    pub fn hidden(&self) -> usize {
        self.hidden_size.unwrap_or(self.input_size / 2).max(1)
    }

    /// Checks the sizes and the dropout probability.
    pub fn validate(&self) -> Result<(), String> {
        if self.input_size == 0 {
            return Err("input_size must be positive".into());
        }
        if self.num_classes < 2 {
            return Err(format!(
                "num_classes must be at least 2, got {}",
                self.num_classes
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }

    /// Builds a head initialised as PyTorch's `Linear` is (weights and biases uniform in
    /// ±1/sqrt(fan_in)), drawn from `seed`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClassificationHead<B> {
        let hidden = self.hidden();
        let mut rng = StdRng::seed_from_u64(self.seed);
        ClassificationHead {
            dense: seeded_linear(self.input_size, hidden, &mut rng, device),
            activation: self.activation,
            dropout: Dropout::new(self.dropout),
            out_proj: seeded_linear(hidden, self.num_classes, &mut rng, device),
        }
    }
}

fn seeded_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    rng: &mut StdRng,
    device: &B::Device,
) -> Linear<B> {
    let bound = 1.0 / (d_in as f32).sqrt();
    let mut uniform =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
    let weight = uniform(d_in * d_out);
    let bias = uniform(d_out);
    Linear {
        weight: Param::from_data(TensorData::new(weight, [d_in, d_out]), device),
        bias: Some(Param::from_data(TensorData::new(bias, [d_out]), device)),
        prepared: Default::default(),
    }
}

/// A two-layer feed-forward classifier.
#[derive(Module, Debug)]
pub struct ClassificationHead<B: Backend> {
    /// `[input_size, hidden]`
    pub dense: Linear<B>,
    /// Applied after `dense`.
    pub activation: HeadActivation,
    /// Applied after the activation, in training only.
    pub dropout: Dropout,
    /// `[hidden, num_classes]`
    pub out_proj: Linear<B>,
}

impl<B: Backend> ClassificationHead<B> {
    /// # Shapes
    /// - embeddings: `[batch, input_size]` -> logits `[batch, num_classes]`
    pub fn forward(&self, embeddings: Tensor<B, 2>) -> Tensor<B, 2> {
        let hidden = self.activation.forward(self.dense.forward(embeddings));
        self.out_proj.forward(self.dropout.forward(hidden))
    }

    /// The number of classes.
    pub fn num_classes(&self) -> usize {
        self.out_proj.d_output()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::Distribution;

    type B = NdArray;

    #[test]
    fn shapes_and_default_hidden() {
        let config = ClassificationHeadConfig::new(384, 3);
        assert_eq!(config.hidden(), 192);
        let head = config.init::<B>(&Default::default());
        let x = Tensor::<B, 2>::random([5, 384], Distribution::Default, &Default::default());
        assert_eq!(head.forward(x).dims(), [5, 3]);
        assert_eq!(head.num_classes(), 3);
        assert_eq!(head.dense.weight.dims(), [384, 192]);
    }

    #[test]
    fn activations_compute_their_function() {
        let x = Tensor::<B, 1>::from_data(
            TensorData::new(vec![-1.0f32, 0.0, 2.0], [3]),
            &Default::default(),
        );
        let v = |t: Tensor<B, 1>| t.into_data().into_vec::<f32>().unwrap();
        assert_eq!(
            v(HeadActivation::Relu.forward(x.clone())),
            vec![0.0, 0.0, 2.0]
        );
        let tanh = v(HeadActivation::Tanh.forward(x.clone()));
        assert!((tanh[2] - 2f32.tanh()).abs() < 1e-6);
        let gelu = v(HeadActivation::Gelu.forward(x));
        assert!((gelu[0] + 0.158_655_25).abs() < 1e-5 && (gelu[2] - 1.954_499_7).abs() < 1e-5);
    }

    #[test]
    fn dropout_acts_in_training_only() {
        let config = ClassificationHeadConfig::new(8, 2).with_dropout(0.5);
        let head = config.init::<Autodiff<B>>(&Default::default());
        let x = Tensor::<Autodiff<B>, 2>::ones([64, 8], &Default::default());
        // With autodiff (training) two passes differ because of dropout; the inner model is exact.
        let a = head
            .forward(x.clone())
            .into_data()
            .into_vec::<f32>()
            .unwrap();
        let b = head.forward(x).into_data().into_vec::<f32>().unwrap();
        assert_ne!(a, b);
        use burn::module::AutodiffModule;
        let valid = head.valid();
        let x = Tensor::<B, 2>::ones([64, 8], &Default::default());
        assert_eq!(
            valid
                .forward(x.clone())
                .into_data()
                .into_vec::<f32>()
                .unwrap(),
            valid.forward(x).into_data().into_vec::<f32>().unwrap()
        );
    }

    #[test]
    fn seed_fixes_the_weights() {
        let device = Default::default();
        let w = |seed| {
            let head = ClassificationHeadConfig::new(16, 3)
                .with_seed(seed)
                .init::<B>(&device);
            head.out_proj
                .weight
                .val()
                .into_data()
                .into_vec::<f32>()
                .unwrap()
        };
        assert_eq!(w(1), w(1));
        assert_ne!(w(1), w(2));
        assert!(w(1).iter().all(|v| v.abs() <= 1.0 / 8f32.sqrt()));
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(ClassificationHeadConfig::new(8, 1).validate().is_err());
        assert!(ClassificationHeadConfig::new(8, 2)
            .with_dropout(1.0)
            .validate()
            .is_err());
        assert!("swish".parse::<HeadActivation>().is_err());
    }
}
