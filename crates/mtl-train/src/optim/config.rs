//! AdamW settings and the learning-rate groups: which rate each parameter path trains at.

use mtl_model::ParamRole;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::schedule::{embeddings_rate, layer_rate};

/// AdamW settings and learning-rate groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// The base learning rate (the top encoder layer's).
    pub lr: f64,
    /// The heads' learning rate (default: `lr`).
    pub head_lr: Option<f64>,
    /// Layer-wise decay: each encoder layer below the top is multiplied by it, the embeddings
    /// once more (1.0: no decay).
    pub layer_decay: f64,
    /// Decoupled weight decay (not applied to biases, LayerNorm and loss weights).
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Clip gradients to this global L2 norm (None: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Keep an exponential moving average of the trained weights with this decay per step
    /// (warmed up: step `t` decays by `min(decay, (1 + t) / (10 + t))`); evaluations and the
    /// resulting model use the average. `None`: no average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 5e-5,
            head_lr: None,
            layer_decay: 1.0,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: Some(1.0),
            ema_decay: None,
        }
    }
}

impl OptimConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(TrainError::Config(what.to_string()));
        // `!positive(x)` is also true for NaN.
        let positive = |x: f64| x > 0.0;
        if !positive(self.lr) || self.head_lr.is_some_and(|h| !positive(h)) {
            return bad("learning rates must be positive");
        }
        if !(self.layer_decay > 0.0 && self.layer_decay <= 1.0) {
            return bad("layer decay must be in (0, 1]");
        }
        if !(0.0..1.0).contains(&self.beta1)
            || !(0.0..1.0).contains(&self.beta2)
            || !positive(self.eps)
        {
            return bad("AdamW betas must be in [0, 1) and eps positive");
        }
        if self.weight_decay < 0.0 || self.max_grad_norm.is_some_and(|n| !positive(n)) {
            return bad("weight decay must be >= 0 and the clipping norm positive");
        }
        if self.ema_decay.is_some_and(|d| !(0.0..1.0).contains(&d)) {
            return bad("the weights' moving-average decay must be in [0, 1)");
        }
        Ok(())
    }

    /// The decay of the weights' moving average at a parameter's `step`-th update (1-based),
    /// if an average is kept.
    pub fn average_decay(&self, step: u64) -> Option<f64> {
        let warm = (1.0 + step as f64) / (10.0 + step as f64);
        self.ema_decay.map(|d| d.min(warm))
    }

    /// The learning rate (before the schedule) of the parameter at `path` of a model whose
    /// encoder has `num_layers` layers.
    pub fn param_lr(&self, path: &str, num_layers: usize) -> f64 {
        // The trainer's module (`Trainable`) holds the model under `model` and the learned loss
        // weights beside it.
        let path = path.strip_prefix("model.").unwrap_or(path);
        if path.starts_with("loss_weights") {
            return self.head_lr.unwrap_or(self.lr);
        }
        match ParamRole::of(path) {
            ParamRole::Head(_) => self.head_lr.unwrap_or(self.lr),
            ParamRole::Embeddings => embeddings_rate(self.lr, self.layer_decay, num_layers),
            ParamRole::Layer(i) => layer_rate(self.lr, self.layer_decay, i, num_layers),
            ParamRole::OtherBert | ParamRole::Other => self.lr,
        }
    }

    /// Whether weight decay applies to the parameter at `path`.
    pub fn decays(path: &str) -> bool {
        !(path.ends_with(".bias")
            || path.contains("layer_norm")
            || path.starts_with("loss_weights"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_wise_rates_per_path() {
        let c = OptimConfig {
            lr: 1.0,
            head_lr: Some(3.0),
            layer_decay: 0.5,
            ..OptimConfig::default()
        };
        assert_eq!(
            c.param_lr("encoder.bert.encoder.layer.5.output.dense.weight", 6),
            1.0
        );
        assert_eq!(
            c.param_lr("encoder.bert.encoder.layer.3.output.dense.weight", 6),
            0.25
        );
        assert_eq!(
            c.param_lr("encoder.bert.encoder.layer.0.output.dense.weight", 6),
            1.0 / 32.0
        );
        assert_eq!(
            c.param_lr("encoder.bert.embeddings.word_embeddings.weight", 6),
            1.0 / 64.0
        );
        assert_eq!(c.param_lr("heads.1.dense.weight", 6), 3.0);
        assert!(!OptimConfig::decays("heads.0.dense.bias"));
        assert!(!OptimConfig::decays(
            "encoder.bert.embeddings.layer_norm.gamma"
        ));
        assert!(OptimConfig::decays(
            "encoder.bert.encoder.layer.0.output.dense.weight"
        ));
    }
}
