//! AdamW with per-parameter learning rates (layer-wise decay, a head rate), no weight decay on
//! biases and LayerNorm, global-norm gradient clipping and gradient accumulation.
//!
//! State is kept by parameter *path* (`encoder.bert.encoder.layer.3.output.dense.weight`), so it
//! survives a save and load of the model, whose parameter ids change.
//!
//! [`config`]: settings and learning-rate groups; [`accumulate`]: gradients summed over
//! micro-batches; [`adamw`]: the optimizer, its state and its files; [`host`]: the fused update
//! over host memory used on CPU backends.

mod accumulate;
mod adamw;
mod config;
mod host;

pub use accumulate::GradAccumulator;
pub(crate) use accumulate::GradLayout;
pub use adamw::{AdamW, StepStats};
pub use config::OptimConfig;
