//! Multi-task models: a shared BERT sentence encoder with one classification head per named task.

mod error;
mod freeze;
mod io;
mod model;
mod params;
mod task;

pub use error::{ModelError, Result};
pub use freeze::{EncoderFreeze, FreezePolicy};
pub use io::{read_model_file, ModelFile, FORMAT};
pub use model::{
    head_config, HeadOptions, ModelMeta, MultiTaskModel, MultiTaskOutput, TaskPrediction,
};
pub use params::ParamRole;
pub use task::{seed_tasks, validate_tasks, TaskSpec};
