//! The fit loop: epochs of task-sampled batches, an optimizer step every `grad_accum` batches,
//! evaluations, checkpoints, and the run's result.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use mtl_encoder::Encoded;
use mtl_model::MultiTaskModel;

use super::card::write_model_card;
use super::checkpoint::{self, TrainState};
use super::config::{Keep, TrainConfig};
use super::eval::{read_kept, write_results, EvalRecord, Split};
use super::progress::{LossLog, Progress};
use super::step::{Batch, TrainRows, TrainStep};
use super::writer::Writer;
use super::{TrainData, TrainReport, Trainable, Trainer};
use crate::error::{Result, TrainError};
use crate::sampler::{plan_epoch, pool_keys, BatchPlan, PlanOptions};
use crate::schedule::LinearSchedule;

/// How a stretch of training ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Go on (or, at the end of the epochs, done).
    Continue,
    /// Patience ran out.
    EarlyStop,
    /// `stop_after_steps` was reached (a checkpoint was written).
    Interrupted,
}

/// Where a run writes.
pub(super) struct Paths {
    pub(super) out: PathBuf,
    pub(super) metrics: PathBuf,
    pub(super) model: PathBuf,
}

impl Paths {
    fn new(out: &Path) -> Self {
        Self {
            out: out.to_path_buf(),
            metrics: out.join("metrics.jsonl"),
            model: out.join("model"),
        }
    }
}

/// The learning-rate schedule over all epochs' optimizer steps.
fn schedule(pools: &[Vec<usize>], config: &TrainConfig) -> LinearSchedule {
    let batches_per_epoch: usize = pools
        .iter()
        .map(|p| p.len().div_ceil(config.batch_size))
        .sum();
    let steps_per_epoch = batches_per_epoch.div_ceil(config.grad_accum);
    LinearSchedule::from_ratio(steps_per_epoch * config.epochs, config.warmup_ratio)
}

/// A run in progress: everything the loop reads and updates, except the module being trained,
/// which is passed through by value (the optimizer consumes and returns it).
pub(super) struct Run<'a, AB: AutodiffBackend> {
    pub(super) config: &'a TrainConfig,
    pub(super) trainer: &'a Trainer,
    pub(super) paths: Paths,
    pub(super) data: TrainData<'a>,
    pub(super) device: AB::Device,
    pub(super) task_names: Vec<String>,
    pub(super) step: TrainStep<AB>,
    pub(super) state: TrainState,
    pub(super) train_split: Split<AB::InnerBackend>,
    pub(super) dev_split: Option<Split<AB::InnerBackend>>,
    /// Every training row's labels.
    pub(super) labels: Vec<Vec<Option<usize>>>,
    /// The task set of each pool, and each pool's rows.
    pub(super) pool_tasks: Vec<Vec<usize>>,
    pub(super) pools: Vec<Vec<usize>>,
    /// Every training row's length in tokens.
    pub(super) lengths: Vec<usize>,
    pub(super) plan_options: PlanOptions,
    pub(super) schedule: LinearSchedule,
    pub(super) progress: Progress,
    pub(super) losses: LossLog,
    /// Seconds in training steps and sentences trained, in this process.
    pub(super) train_seconds: f64,
    pub(super) sentences_here: u64,
    /// Seconds of those in all-reduces between peers.
    pub(super) all_reduce_seconds: f64,
    /// The dev evaluation of the model kept so far (the best, or with `Keep::Last` the last).
    pub(super) kept: Option<EvalRecord>,
    /// Checkpoints and the best model, written while training goes on.
    pub(super) writer: Writer,
}

impl<'a, AB: AutodiffBackend> Run<'a, AB> {
    /// Tokenizes (with a frozen encoder, embeds) the data and sizes the schedule.
    pub(super) fn new(
        trainer: &'a Trainer,
        config: &'a TrainConfig,
        data: TrainData<'a>,
        model: &MultiTaskModel<AB>,
        step: TrainStep<AB>,
        state: TrainState,
    ) -> Result<Self> {
        let (cache, batch) = (config.freeze.freezes_encoder(), config.eval_batch_size);
        let train_split = Split::prepare(model, data.train, cache, batch)?;
        let dev_split = data
            .dev
            .map(|d| Split::prepare(model, d, cache, batch))
            .transpose()?;
        let labels: Vec<Vec<Option<usize>>> = data
            .train
            .examples
            .iter()
            .map(|e| e.labels.clone())
            .collect();
        let (pool_tasks, pools) = pool_keys(&labels);
        if pools.is_empty() {
            return Err(TrainError::Data("no labelled training rows".into()));
        }
        let lengths: Vec<usize> = train_split.encoded.iter().map(Encoded::len).collect();
        let schedule = schedule(&pools, config);
        let leader = step.peer().is_none_or(|p| p.is_leader());
        let progress = Progress::new(
            trainer.options.progress && leader,
            schedule.total_steps,
            state.step,
        );
        let task_names: Vec<String> = model.tasks().iter().map(|t| t.name.clone()).collect();
        Ok(Self {
            config,
            trainer,
            paths: Paths::new(&trainer.out),
            data,
            device: model.encoder.device(),
            losses: LossLog::new(task_names.len()),
            task_names,
            step,
            state,
            train_split,
            dev_split,
            labels,
            pool_tasks,
            pools,
            lengths,
            plan_options: PlanOptions {
                batch_size: config.batch_size,
                sampler: config.sampler,
                group_by_length: config.group_by_length,
            },
            schedule,
            progress,
            train_seconds: 0.0,
            sentences_here: 0,
            all_reduce_seconds: 0.0,
            kept: None,
            writer: Writer::default(),
        })
    }

    /// Epochs until the schedule ends, patience runs out or the run is interrupted.
    pub(super) fn epochs(&mut self, mut trainable: Trainable<AB>) -> Result<(Trainable<AB>, Flow)> {
        while self.state.epoch < self.config.epochs && !self.state.finished {
            let (next, flow) = self.epoch(trainable)?;
            trainable = next;
            if flow != Flow::Continue {
                return Ok((trainable, flow));
            }
        }
        Ok((trainable, Flow::Continue))
    }

    /// The rest of the current epoch (from `state.batch_in_epoch`), then its evaluation (unless
    /// evaluating every N steps) and checkpoint.
    fn epoch(&mut self, mut trainable: Trainable<AB>) -> Result<(Trainable<AB>, Flow)> {
        let mut rng = self.state.epoch_rng.clone();
        let plan = plan_epoch(&self.pools, &self.lengths, &self.plan_options, &mut rng);
        for (index, batch) in plan.iter().enumerate().skip(self.state.batch_in_epoch) {
            let last = index + 1 == plan.len();
            let (next, flow) = self.train_batch(trainable, index, batch, last)?;
            trainable = next;
            if flow != Flow::Continue {
                return Ok((trainable, flow));
            }
        }
        let state = &mut self.state;
        state.epoch += 1;
        state.batch_in_epoch = 0;
        state.epoch_rng = rng;
        let mut flow = Flow::Continue;
        if self.config.eval_every.is_none() && self.dev_decision(&trainable, self.state.epoch)? {
            flow = Flow::EarlyStop;
            self.state.finished = true;
        }
        if self.state.epoch == self.config.epochs {
            self.state.finished = true;
        }
        self.save_checkpoint(&trainable)?;
        if self.stop_requested() && !self.state.finished {
            flow = Flow::Interrupted;
        }
        Ok((trainable, flow))
    }

    /// One batch (number `index` of the epoch's plan): its backward pass, and when enough
    /// gradients are summed (or the epoch ends), the optimizer step and what follows it.
    fn train_batch(
        &mut self,
        trainable: Trainable<AB>,
        index: usize,
        batch: &BatchPlan,
        last: bool,
    ) -> Result<(Trainable<AB>, Flow)> {
        let started = Instant::now();
        let tasks = &self.pool_tasks[batch.pool];
        let rows = TrainRows {
            encoded: &self.train_split.encoded,
            labels: &self.labels,
            cache: self.train_split.cache.as_ref(),
        };
        let batch_rows = Batch {
            rows: &batch.rows,
            tasks,
        };
        let out = self
            .step
            .backward(&trainable, &rows, batch_rows, self.state.micro)?;
        self.all_reduce_seconds += out.times.all_reduce;
        let losses = out.losses;
        self.losses.add(tasks, &losses);
        let n = batch.rows.len() as u64;
        self.state.micro += 1;
        self.state.batch_in_epoch = index + 1;
        self.state.sentences += n;
        self.sentences_here += n;
        if !(self.step.is_ready() || last) {
            self.train_seconds += started.elapsed().as_secs_f64();
            return Ok((trainable, Flow::Continue));
        }
        let factor = self.schedule.factor(self.state.step);
        let (trainable, _) = self.step.apply(trainable, factor);
        self.state.step += 1;
        self.state.loss_weights = trainable.loss_weights.as_ref().map(|w| {
            w.val()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("f32")
        });
        self.train_seconds += started.elapsed().as_secs_f64();
        self.report_step(batch.pool, &losses, factor);
        let flow = self.after_step(&trainable, last)?;
        Ok((trainable, flow))
    }

    /// The progress bar's message after an optimizer step.
    fn report_step(&self, pool: usize, losses: &[f64], factor: f64) {
        let losses: Vec<String> = self.pool_tasks[pool]
            .iter()
            .zip(losses)
            .map(|(t, v)| format!("{} {v:.3}", self.task_names[*t]))
            .collect();
        let message = format!(
            "loss {} | lr {:.2e} | {:.1} sent/s",
            losses.join(" "),
            self.config.optim.lr * factor,
            self.sentences_here as f64 / self.train_seconds.max(1e-9)
        );
        self.progress.step(self.state.step, message);
    }

    /// After an optimizer step: an evaluation every `eval_every` steps, and inside an epoch a
    /// checkpoint every `checkpoint_every` steps or when stopping.
    fn after_step(&mut self, trainable: &Trainable<AB>, last: bool) -> Result<Flow> {
        let step = self.state.step;
        if self
            .config
            .eval_every
            .is_some_and(|n| step.is_multiple_of(n))
            && self.dev_decision(trainable, self.state.epoch + 1)?
        {
            self.state.finished = true;
            return Ok(Flow::EarlyStop);
        }
        let stop = self.stop_requested();
        let mid_epoch = !last;
        if mid_epoch
            && (stop
                || self
                    .config
                    .checkpoint_every
                    .is_some_and(|n| step.is_multiple_of(n)))
        {
            self.save_checkpoint(trainable)?;
        }
        if mid_epoch && stop {
            return Ok(Flow::Interrupted);
        }
        Ok(Flow::Continue)
    }

    /// The model evaluated and kept, without autodiff: the weights' moving average when one
    /// is kept, else the trained weights.
    pub(super) fn selected(&self, trainable: &Trainable<AB>) -> MultiTaskModel<AB::InnerBackend> {
        let valid = trainable.valid();
        match self.config.optim.ema_decay {
            Some(_) => self.step.optimizer().averaged(valid).model,
            None => valid.model,
        }
    }

    /// Whether `stop_after_steps` optimizer steps are done.
    fn stop_requested(&self) -> bool {
        let options = &self.trainer.options;
        options
            .stop_after_steps
            .is_some_and(|n| self.state.step >= n)
    }

    /// Whether this process writes the run's files: without peers, or as their leader.
    pub(super) fn is_leader(&self) -> bool {
        self.step.peer().is_none_or(|p| p.is_leader())
    }

    /// The dev evaluation's verdict, whether to stop early: the leader evaluates (and writes
    /// what it found), and every peer learns its verdict.
    fn dev_decision(&mut self, trainable: &Trainable<AB>, epoch: usize) -> Result<bool> {
        let stop = self.is_leader() && self.evaluate_dev(trainable, epoch)?;
        let device = self.device.clone();
        match self.step.peer_mut() {
            Some(peer) => peer.leader_says::<AB::InnerBackend>(stop, &device),
            None => Ok(stop),
        }
    }

    fn save_checkpoint(&mut self, trainable: &Trainable<AB>) -> Result<()> {
        if !self.is_leader() {
            return Ok(());
        }
        let (out, model) = (self.paths.out.clone(), trainable.model.valid());
        let (optim, state) = (self.step.optimizer().clone(), self.state.clone());
        self.writer
            .submit(move || checkpoint::save(&out, &model, &optim, &state))
    }

    /// The result: the best dev model (with `Keep::Last` or without a dev set, the last),
    /// evaluated on test, with
    /// `results.json`; after an interruption, the model as it is.
    pub(super) fn finish(
        mut self,
        trainable: Trainable<AB>,
        flow: Flow,
    ) -> Result<(MultiTaskModel<AB::InnerBackend>, TrainReport)> {
        self.progress.finish();
        self.writer.wait()?;
        if let Some(peer) = self.step.peer_mut() {
            peer.finish::<AB::InnerBackend>()?;
        }
        if flow == Flow::Interrupted || !self.is_leader() {
            let kept = self.kept.take();
            let finished = flow != Flow::Interrupted;
            return Ok((trainable.model.valid(), self.report(kept, None, finished)));
        }
        if flow == Flow::EarlyStop {
            eprintln!(
                "early stopping: no better dev mean macro-F1 in {} evaluations",
                self.state.evals_since_best
            );
        }
        let keep = self.config.keep;
        if self.data.dev.is_none() || keep == Keep::Last {
            self.selected(&trainable).save(&self.paths.model)?;
        }
        let kept = match self.kept.take() {
            Some(kept) => Some(kept),
            None => read_kept(&self.paths.metrics, keep)?,
        };
        // The last model's dev evaluation, unless it was not evaluated (`eval_every`).
        let step = self.state.step;
        let kept = kept.filter(|k| keep == Keep::Best || k.step == step);
        let result = MultiTaskModel::<AB::InnerBackend>::load(&self.paths.model, &self.device)?;
        let test = self.evaluate_test(&result)?;
        let record = test.as_ref().or(kept.as_ref());
        if let Some(rec) = record {
            write_results(&self.paths.out, rec)?;
        }
        let base = self.trainer.options.base_model.as_deref();
        write_model_card(&self.paths.model, base, result.tasks(), self.config, record)?;
        Ok((result, self.report(kept, test, true)))
    }

    fn report(
        &self,
        dev: Option<EvalRecord>,
        test: Option<EvalRecord>,
        finished: bool,
    ) -> TrainReport {
        TrainReport {
            dev,
            test,
            steps: self.state.step,
            finished,
            train_seconds: self.train_seconds,
            all_reduce_seconds: self.all_reduce_seconds,
            sentences_per_second: self.sentences_here as f64 / self.train_seconds.max(1e-9),
            model_dir: self.paths.model.clone(),
        }
    }
}
