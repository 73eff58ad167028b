//! Multi-task training: data, batching, task sampling, losses, optimisation, evaluation and
//! checkpoints, generic over burn autodiff backends.

pub mod checkpoint;
pub mod data;
pub mod error;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod sampler;
pub mod schedule;
pub mod trainer;

pub use checkpoint::{EvalRecord, TrainState};
pub use data::{read_table, Dataset, Format, ReadOptions, Task};
pub use error::{Result, TrainError};
pub use loss::LossWeighting;
pub use metrics::{ConfusionMatrix, TaskMetrics};
pub use optim::{AdamW, OptimConfig};
pub use sampler::SamplerKind;
pub use schedule::LinearSchedule;
pub use trainer::{evaluate, train, RunOptions, TrainConfig, TrainData, TrainReport, Trainable};
