//! Multi-task training: data, batching, task sampling, losses, optimisation, evaluation and
//! checkpoints, generic over burn autodiff backends.

pub mod data;
pub mod error;
pub mod metrics;
pub mod sampler;
pub mod schedule;

pub use error::{Result, TrainError};
