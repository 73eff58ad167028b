//! Training state on disk: `<out>/checkpoint/` holds the model directory, the optimizer state
//! and `state.json` (step, epoch, sampler RNG, best score, history), written as a whole into
//! `checkpoint.partial/` and renamed into place; and the start of a run, fresh or resumed from it.

use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use mtl_model::MultiTaskModel;
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::optim::AdamW;
use mtl_encoder::io::{fresh_partial, swap_dir};
use mtl_encoder::Rng;

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

impl TrainState {
    /// The state of a run that has not started.
    fn fresh(seed: u64, config: serde_json::Value) -> Self {
        Self {
            epoch: 0,
            batch_in_epoch: 0,
            step: 0,
            micro: 0,
            epoch_rng: Rng::new(seed),
            best_score: None,
            best_step: None,
            evals_since_best: 0,
            loss_weights: None,
            sentences: 0,
            finished: false,
            config,
        }
    }
}

/// The checkpoint folder of a run.
pub(super) fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

/// An `Io` error about `path`.
pub(super) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> TrainError {
    let path = path.to_path_buf();
    move |source| TrainError::Io {
        path: path.clone(),
        source,
    }
}

/// The model, optimizer and state a run starts from: `model` and fresh ones, or with `resume`
/// and an existing checkpoint, the checkpoint's (refused when written with another `config`).
/// A fresh start removes an old `metrics.jsonl` when `writes` (the run's files are this
/// process's).
pub(super) fn start<AB: AutodiffBackend>(
    model: MultiTaskModel<AB>,
    config: &TrainConfig,
    out: &Path,
    resume: bool,
    writes: bool,
) -> Result<(MultiTaskModel<AB>, AdamW<AB::InnerBackend>, TrainState)> {
    let config_json = serde_json::to_value(config).expect("config serialises");
    let ckpt = checkpoint_dir(out);
    if resume && ckpt.join("state.json").is_file() {
        let state = read_state(&ckpt)?;
        if state.config != config_json {
            return Err(TrainError::Config(format!(
                "{} was written by a run with another configuration; resume with the same flags or use another --out",
                ckpt.display()
            )));
        }
        let device = model.encoder.device();
        let model = MultiTaskModel::<AB>::load(ckpt.join("model"), &device)?;
        let optim = AdamW::load(config.optim.clone(), &ckpt, &device)?;
        return Ok((model, optim, state));
    }
    let metrics = out.join("metrics.jsonl");
    if writes && metrics.exists() {
        std::fs::remove_file(&metrics).map_err(io_error(&metrics))?;
    }
    let num_layers = model.encoder.bert.num_layers();
    let optim = AdamW::new(config.optim.clone(), num_layers)?;
    Ok((model, optim, TrainState::fresh(config.seed, config_json)))
}

/// Writes `<out>/checkpoint/` (model, optimizer, state) as a whole.
pub(super) fn save<B: Backend>(
    out: &Path,
    model: &MultiTaskModel<B>,
    optim: &AdamW<B>,
    state: &TrainState,
) -> Result<()> {
    let dir = checkpoint_dir(out);
    let partial = fresh_partial(&dir)?;
    model.save(partial.join("model"))?;
    optim.save(&partial)?;
    write_state(&partial, state)?;
    Ok(swap_dir(&partial, &dir)?)
}

/// Reads `state.json` of a checkpoint.
fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join("state.json");
    let bytes = std::fs::read(&path).map_err(io_error(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::MalformedState {
        path,
        message: e.to_string(),
    })
}

/// Writes `state.json` into a checkpoint folder being built.
fn write_state(dir: &Path, state: &TrainState) -> Result<()> {
    let path = dir.join("state.json");
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    std::fs::write(&path, json).map_err(io_error(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_state_is_malformed_state() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), b"{\"epoch\": ").unwrap();
        match read_state(dir.path()) {
            Err(TrainError::MalformedState { path, .. }) => {
                assert_eq!(path, dir.path().join("state.json"))
            }
            other => panic!("unexpected {other:?}"),
        }
        let state = TrainState::fresh(5, serde_json::json!({"seed": 5}));
        write_state(dir.path(), &state).unwrap();
        assert_eq!(read_state(dir.path()).unwrap(), state);
    }
}
