//! Training state on disk: `<out>/checkpoint/` holds the model directory, the optimizer state
//! and `state.json` (step, epoch, sampler RNG, best score, history), written as a whole into
//! `checkpoint.partial/` and renamed into place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::metrics::TaskMetrics;
use crate::sampler::Rng;

/// One evaluation, as written to `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// The epoch (1-based) that was run when evaluated.
    pub epoch: usize,
    /// Optimizer steps done.
    pub step: usize,
    /// `dev` or `test`.
    pub split: String,
    /// Per task metrics.
    pub tasks: BTreeMap<String, TaskMetrics>,
    /// The mean macro-F1 over tasks (the selection score).
    pub mean_macro_f1: f64,
    /// Mean training loss per task since the previous evaluation.
    pub train_loss: BTreeMap<String, f64>,
}

/// Everything besides model and optimizer needed to continue a run exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The epoch being run (0-based).
    pub epoch: usize,
    /// Batches of that epoch already done.
    pub batch_in_epoch: usize,
    /// Optimizer steps done.
    pub step: usize,
    /// Backward passes done.
    pub micro: usize,
    /// The sampler RNG as it was at the start of `epoch` (the epoch's plan is redrawn from it).
    pub epoch_rng: Rng,
    /// The best selection score so far.
    pub best_score: Option<f64>,
    /// The step of the best evaluation.
    pub best_step: Option<usize>,
    /// Evaluations since the best one.
    pub evals_since_best: usize,
    /// Learned log-variances of uncertainty weighting.
    pub loss_weights: Option<Vec<f32>>,
    /// Sentences run through training so far.
    pub sentences: u64,
    /// Set when training ended (by schedule or early stopping).
    pub finished: bool,
    /// The configuration the run was started with (JSON), to refuse resuming another one.
    pub config: serde_json::Value,
}

/// The checkpoint folder of a run.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

/// Replaces `dir` by `partial` (both complete directories) with renames only.
pub fn swap_dir(partial: &Path, dir: &Path) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    let old = dir.with_extension("old");
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(io(dir))?;
    }
    std::fs::rename(partial, dir).map_err(io(dir))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

/// Reads `state.json` of a checkpoint.
pub fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join("state.json");
    let bytes = std::fs::read(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TrainError::Config(format!("{}: malformed: {e}", path.display())))
}

/// Writes `state.json` into a checkpoint folder being built.
pub fn write_state(dir: &Path, state: &TrainState) -> Result<()> {
    let path = dir.join("state.json");
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    std::fs::write(&path, json).map_err(|source| TrainError::Io { path, source })
}
