//! The settings of a training run and their checks.

use std::str::FromStr;

use mtl_model::FreezePolicy;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::loss::LossWeighting;
use crate::optim::OptimConfig;
use crate::sampler::SamplerKind;

/// Everything that shapes a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Batches whose gradients are summed into one optimizer step.
    pub grad_accum: usize,
    /// AdamW, learning rates and clipping.
    pub optim: OptimConfig,
    /// Fraction of all steps spent warming the learning rate up from 0.
    pub warmup_ratio: f64,
    /// How batches of rows labelled for different tasks are interleaved.
    pub sampler: SamplerKind,
    /// Batch rows of similar token length together.
    pub group_by_length: bool,
    /// How task losses are combined.
    pub loss_weighting: LossWeighting,
    /// Label smoothing of every task's cross-entropy (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub label_smoothing: f64,
    /// What is frozen.
    pub freeze: FreezePolicy,
    /// Seed of the batch order and dropout.
    pub seed: u64,
    /// Evaluate every N optimizer steps instead of after every epoch.
    pub eval_every: Option<usize>,
    /// Stop after this many evaluations without a better mean dev macro-F1.
    pub patience: Option<usize>,
    /// Which model a run with dev data ends with.
    #[serde(default, skip_serializing_if = "Keep::is_best")]
    pub keep: Keep,
    /// Also write a checkpoint every N optimizer steps.
    pub checkpoint_every: Option<usize>,
    /// Rows per forward pass at evaluation.
    pub eval_batch_size: usize,
    /// Pieces each batch is cut into, each running its forward and backward pass on a thread of
    /// its own (data parallelism, for CPU backends). Results depend on this count, not on the
    /// cores that run it. `None`: one per core on CPU backends, 1 on accelerators.
    #[serde(default)]
    pub shards: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 4,
            batch_size: 32,
            grad_accum: 1,
            optim: OptimConfig::default(),
            warmup_ratio: 0.1,
            sampler: SamplerKind::Proportional,
            group_by_length: false,
            loss_weighting: LossWeighting::default(),
            label_smoothing: 0.0,
            freeze: FreezePolicy::default(),
            seed: 42,
            eval_every: None,
            patience: None,
            keep: Keep::Best,
            checkpoint_every: None,
            eval_batch_size: 64,
            shards: None,
        }
    }
}

impl TrainConfig {
    /// Checks the ranges and the optimizer settings.
    pub(super) fn validate(&self) -> Result<()> {
        if self.epochs == 0
            || self.batch_size == 0
            || self.grad_accum == 0
            || self.eval_batch_size == 0
            || self.shards == Some(0)
        {
            return Err(TrainError::Config(
                "epochs, batch sizes, grad_accum and shards must be positive".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return Err(TrainError::Config(format!(
                "warmup ratio {} is not in [0, 1)",
                self.warmup_ratio
            )));
        }
        if self.eval_every == Some(0)
            || self.checkpoint_every == Some(0)
            || self.patience == Some(0)
        {
            return Err(TrainError::Config(
                "eval_every, checkpoint_every and patience must be positive".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(TrainError::Config(format!(
                "label smoothing {} is not in [0, 1)",
                self.label_smoothing
            )));
        }
        self.optim.validate()
    }
}

/// The model a run ends with (and writes to `<out>/model`) when it has dev data; without dev
/// data it is always the last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// The best dev evaluation's (mean macro-F1).
    #[default]
    Best,
    /// The last one's (dev is still evaluated, logged and drives early stopping).
    Last,
}

impl Keep {
    fn is_best(&self) -> bool {
        *self == Keep::Best
    }
}

impl FromStr for Keep {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "best" => Ok(Self::Best),
            "last" => Ok(Self::Last),
            _ => Err(TrainError::Config(format!(
                "unknown model to keep {s:?}: expected best or last"
            ))),
        }
    }
}

/// Whether a setting is at its default of 0 (left out of the JSON, as older runs wrote it).
fn is_zero(x: &f64) -> bool {
    *x == 0.0
}
