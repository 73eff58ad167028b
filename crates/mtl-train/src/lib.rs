//! Multi-task training: data, batching, task sampling, losses, optimisation, evaluation and
//! checkpoints, generic over burn autodiff backends.
//!
//! [`Trainer`] trains a [`mtl_model::MultiTaskModel`] on [`Dataset`]s read with [`read_table`];
//! [`TrainStep`] is its training step on its own (forward and backward passes on data-parallel
//! shards, gradient accumulation, AdamW).

mod collective;
mod data;
mod error;
mod loss;
mod metrics;
mod optim;
mod parallel;
mod sampler;
mod schedule;
mod trainer;

pub use collective::{run_orchestrator, time_all_reduce, NodeSetup, Peer, PeerGroup};
pub use data::{read_table, Dataset, Example, Format, RawRow, RawTable, ReadOptions};
pub use error::{Result, TrainError};
pub use loss::{cross_entropy, smoothed_cross_entropy, uncertainty_combine, LossWeighting};
pub use metrics::{ConfusionMatrix, TaskMetrics};
pub use mtl_encoder::Rng;
pub use mtl_model::TaskSpec;
pub use optim::{AdamW, GradAccumulator, OptimConfig, StepStats};
pub use sampler::{sampler_probabilities, SamplerKind};
pub use schedule::LinearSchedule;
pub use trainer::{
    evaluate, train, Batch, BatchLosses, EvalRecord, Keep, RunOptions, StepTimes, TrainConfig,
    TrainData, TrainReport, TrainRows, TrainState, TrainStep, Trainable, Trainer,
};
