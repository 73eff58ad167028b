//! The multi-task training loop: task-sampled batches, per-task losses, AdamW with warmup and
//! decay, evaluation with early stopping, checkpoints and exact resume.
//!
//! [`Trainer::fit`] runs it; its parts are each a module of their own: [`config`] (the
//! settings), [`run`] (the loop over epochs and batches), [`step`] (one batch's forward and
//! backward passes on shards and the optimizer update, also timed by the benchmark), [`eval`]
//! (metrics, `metrics.jsonl`, `results.json`, model selection), [`card`] (the model's
//! `README.md`), [`checkpoint`] (state on disk,
//! fresh start or resume) and [`progress`] (the progress bar and loss log).

mod card;
mod checkpoint;
mod config;
mod eval;
mod progress;
mod run;
mod step;
mod writer;

use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use mtl_encoder::runtime::default_workers;
use mtl_model::MultiTaskModel;

use crate::collective::{self, Peer, PeerGroup};
use crate::data::Dataset;
use crate::error::{Result, TrainError};
use crate::loss::LossWeighting;
use checkpoint::io_error;
use run::Run;

pub use checkpoint::TrainState;
pub use config::{Keep, TrainConfig};
pub use eval::{evaluate, EvalRecord};
pub use step::{Batch, BatchLosses, StepTimes, TrainRows, TrainStep};

/// Run-time options that do not change the result.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from `<out>/checkpoint` when it exists.
    pub resume: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Stop (after writing a checkpoint) once this many optimizer steps are done, as if killed.
    pub stop_after_steps: Option<usize>,
    /// The model trained from (a directory or a Hugging Face id), named in the model card.
    pub base_model: Option<String>,
}

/// The data of a run.
#[derive(Clone, Copy)]
pub struct TrainData<'a> {
    pub train: &'a Dataset,
    pub dev: Option<&'a Dataset>,
    pub test: Option<&'a Dataset>,
}

/// The model being trained together with the learned loss weights, if any.
#[derive(Module, Debug)]
pub struct Trainable<B: Backend> {
    pub model: MultiTaskModel<B>,
    pub loss_weights: Option<Param<Tensor<B, 1>>>,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The dev evaluation of the resulting model: the best one, or with [`Keep::Last`] the
    /// last one (`None` without dev data, or when the last model was not evaluated).
    pub dev: Option<EvalRecord>,
    /// The test evaluation of the resulting model.
    pub test: Option<EvalRecord>,
    /// Optimizer steps done.
    pub steps: usize,
    /// Whether the run finished (false when stopped by `stop_after_steps`).
    pub finished: bool,
    /// Seconds spent in training steps (this process).
    pub train_seconds: f64,
    /// Seconds of those spent in all-reduces between peers (0 for one peer).
    pub all_reduce_seconds: f64,
    /// Training sentences per second (this process).
    pub sentences_per_second: f64,
    /// `<out>/model`.
    pub model_dir: PathBuf,
}

/// Trains multi-task models with one configuration into one output folder.
#[derive(Debug, Clone)]
pub struct Trainer {
    config: TrainConfig,
    out: PathBuf,
    options: RunOptions,
}

impl Trainer {
    /// A trainer writing to `out`.
    pub fn new(config: TrainConfig, out: impl Into<PathBuf>, options: RunOptions) -> Self {
        Self {
            config,
            out: out.into(),
            options,
        }
    }

    /// Trains `model` on `data`, writing `<out>/model`, `<out>/checkpoint/`,
    /// `<out>/metrics.jsonl` and `<out>/results.json`. With `resume` and an existing checkpoint,
    /// the run continues from it (and `model` is replaced by the checkpoint's).
    ///
    /// Returns the resulting model (the best dev evaluation's, with [`Keep::Last`] or without a
    /// dev set the last; after `stop_after_steps`, the model as it was when stopped), without
    /// autodiff, and the report.
    pub fn fit<AB: AutodiffBackend>(
        &self,
        model: MultiTaskModel<AB>,
        data: TrainData<'_>,
    ) -> Result<(MultiTaskModel<AB::InnerBackend>, TrainReport)> {
        self.fit_as(model, data, None)
    }

    /// [`fit`](Self::fit) on every peer of this process in `group`, peer `k` on `devices[k]`
    /// (one thread each, `model` copied to each device), together with the group's other nodes
    /// if any. Only the run's leader (rank 0) evaluates and writes files; the result is this
    /// process's first peer's (on a node other than rank 0: its last model and a report without
    /// evaluations). Forgets earlier collective runs of this process first.
    pub fn fit_peers<AB: AutodiffBackend>(
        &self,
        model: MultiTaskModel<AB>,
        data: TrainData<'_>,
        devices: &[AB::Device],
        group: &PeerGroup,
    ) -> Result<(MultiTaskModel<AB::InnerBackend>, TrainReport)> {
        if devices.len() != group.devices() {
            return Err(TrainError::Config(format!(
                "{} devices given for a group of {} peers per node",
                devices.len(),
                group.devices()
            )));
        }
        collective::reset::<AB::InnerBackend>();
        // Every peer must start from the same weights, not draw its own lazily.
        crate::parallel::initialise(&model);
        let results: Vec<Result<_>> = std::thread::scope(|scope| {
            let handles: Vec<_> = devices
                .iter()
                .enumerate()
                .map(|(local, device)| {
                    let copy = model.clone().fork(device);
                    let peer = group.peer(local);
                    scope.spawn(move || self.fit_as(copy, data, Some(peer)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a training peer panicked"))
                .collect()
        });
        // The first failure in rank order (a peer that timed out waiting for a failed one
        // comes after it).
        let mut first = None;
        for result in results {
            match result {
                Ok(r) => first = first.or(Some(Ok(r))),
                Err(e) => return Err(e),
            }
        }
        first.expect("at least one device")
    }

    fn fit_as<AB: AutodiffBackend>(
        &self,
        model: MultiTaskModel<AB>,
        data: TrainData<'_>,
        peer: Option<Peer>,
    ) -> Result<(MultiTaskModel<AB::InnerBackend>, TrainReport)> {
        self.config.validate()?;
        let leader = peer.as_ref().is_none_or(Peer::is_leader);
        let out = self.out.as_path();
        if leader {
            std::fs::create_dir_all(out).map_err(io_error(out))?;
        }
        let device = model.encoder.device();
        let threads = default_workers::<AB>(&device);
        let config = TrainConfig {
            shards: Some(self.config.shards.unwrap_or(threads)),
            ..self.config.clone()
        };
        let mut peer = peer;
        if let Some(p) = peer.as_mut() {
            p.register::<AB::InnerBackend>(&device)?;
            let print = fingerprint(&config, &self.options, data, &model);
            p.check_same::<AB::InnerBackend>("configuration and data", print, &device)?;
        }
        let (model, optim, state) =
            checkpoint::start(model, &config, out, self.options.resume, leader)?;
        if let Some(p) = peer.as_mut() {
            // A node that resumes from another checkpoint (or none) would train another model.
            let print = start_fingerprint(&model, &state);
            p.check_same::<AB::InnerBackend>("starting model and step", print, &device)?;
        }
        check_tasks(&model, data.train, "training")?;
        for (split, d) in [("dev", data.dev), ("test", data.test)] {
            if let Some(d) = d {
                check_tasks(&model, d, split)?;
            }
        }
        let trainable = trainable(model, &config, &state)?;
        let mut step = TrainStep::with_optimizer(&config, &trainable.model, optim);
        if let Some(p) = peer {
            step = step.with_peer(p, &trainable);
        }
        let mut run = Run::new(self, &config, data, &trainable.model, step, state)?;
        let (trainable, flow) = run.epochs(trainable)?;
        let result = run.finish(trainable, flow)?;
        Ok(result)
    }
}

/// What every peer of a run must agree on: the configuration, the options that change what
/// is computed, the tasks and every data row.
fn fingerprint<B: Backend>(
    config: &TrainConfig,
    options: &RunOptions,
    data: TrainData<'_>,
    model: &MultiTaskModel<B>,
) -> u64 {
    let mut print = collective::Fingerprint::default();
    print.add(&serde_json::to_vec(config).expect("config serialises"));
    print.add(format!("{:?} {:?}", options.resume, options.stop_after_steps).as_bytes());
    print.add(format!("{:?}", model.tasks()).as_bytes());
    for set in [Some(data.train), data.dev, data.test]
        .into_iter()
        .flatten()
    {
        print.add(format!("{:?}", set.tasks).as_bytes());
        for example in &set.examples {
            print.add(example.text.as_bytes());
            print.add(format!("{:?}", example.labels).as_bytes());
        }
    }
    print.value()
}

/// What every peer must start from: the step and every parameter's bits.
fn start_fingerprint<B: Backend>(model: &MultiTaskModel<B>, state: &TrainState) -> u64 {
    struct Bits<'a>(&'a mut collective::Fingerprint);
    impl<B: Backend> burn::module::ModuleVisitor<B> for Bits<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            // `host_values` copies a shared buffer in one pass (`into_data`: element by element).
            let values = mtl_encoder::ops::host_values(param.val());
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.0.add(&bytes);
        }
    }
    let mut print = collective::Fingerprint::default();
    print.add(format!("{} {} {}", state.step, state.epoch, state.batch_in_epoch).as_bytes());
    model.visit(&mut Bits(&mut print));
    print.value()
}

/// Fails unless `data`'s tasks are the model's (names, labels and their order).
fn check_tasks<B: Backend>(model: &MultiTaskModel<B>, data: &Dataset, split: &str) -> Result<()> {
    let model_tasks: Vec<(&str, &[String])> = model
        .tasks()
        .iter()
        .map(|t| (t.name.as_str(), t.labels.as_slice()))
        .collect();
    let data_tasks: Vec<(&str, &[String])> = data
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), t.labels.as_slice()))
        .collect();
    if model_tasks != data_tasks {
        return Err(TrainError::TaskMismatch {
            split: split.to_string(),
            data: format!("{data_tasks:?}"),
            model: format!("{model_tasks:?}"),
        });
    }
    Ok(())
}

/// The module trained: the frozen model and, with uncertainty weighting, the loss weights
/// (from the state when resuming).
fn trainable<AB: AutodiffBackend>(
    model: MultiTaskModel<AB>,
    config: &TrainConfig,
    state: &TrainState,
) -> Result<Trainable<AB>> {
    let model = model.freeze(&config.freeze)?;
    let num_tasks = model.tasks().len();
    let loss_weights = match config.loss_weighting {
        LossWeighting::Uncertainty => {
            let init = state
                .loss_weights
                .clone()
                .unwrap_or_else(|| vec![0.0; num_tasks]);
            let device = model.encoder.device();
            Some(Param::from_data(
                TensorData::new(init, [num_tasks]),
                &device,
            ))
        }
        LossWeighting::Static(_) => None,
    };
    Ok(Trainable {
        model,
        loss_weights,
    })
}

/// [`Trainer::fit`], keeping only the report (the model is in `<out>/model`).
pub fn train<AB: AutodiffBackend>(
    model: MultiTaskModel<AB>,
    data: TrainData<'_>,
    config: &TrainConfig,
    out: &Path,
    options: &RunOptions,
) -> Result<TrainReport> {
    let trainer = Trainer::new(config.clone(), out, options.clone());
    Ok(trainer.fit(model, data)?.1)
}
