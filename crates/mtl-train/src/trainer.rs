//! The multi-task training loop: task-sampled batches, per-task losses, AdamW with warmup and
//! decay, evaluation with early stopping, checkpoints and exact resume.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use mtl_encoder::runtime::default_workers;
use mtl_encoder::{length_sorted_batches, Encoded};
use mtl_model::{FreezePolicy, MultiTaskModel};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    checkpoint_dir, read_state, swap_dir, write_state, EvalRecord, TrainState,
};
use crate::data::Dataset;
use crate::error::{Result, TrainError};
use crate::loss::{cross_entropy, uncertainty_combine, LossWeighting};
use crate::metrics::{ConfusionMatrix, TaskMetrics};
use crate::optim::{AdamW, GradAccumulator, OptimConfig};
use crate::parallel::{by_length, shard_gradients};
use crate::sampler::{plan_epoch, pool_keys, PlanOptions, Rng, SamplerKind};
use crate::schedule::LinearSchedule;

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
    /// What is frozen.
    pub freeze: FreezePolicy,
    /// Seed of the batch order and dropout.
    pub seed: u64,
    /// Evaluate every N optimizer steps instead of after every epoch.
    pub eval_every: Option<usize>,
    /// Stop after this many evaluations without a better mean dev macro-F1.
    pub patience: Option<usize>,
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
            freeze: FreezePolicy::default(),
            seed: 42,
            eval_every: None,
            patience: None,
            checkpoint_every: None,
            eval_batch_size: 64,
            shards: None,
        }
    }
}

impl TrainConfig {
    fn validate(&self) -> Result<()> {
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
        self.optim.validate()
    }
}

/// Run-time options that do not change the result.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from `<out>/checkpoint` when it exists.
    pub resume: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Stop (after writing a checkpoint) once this many optimizer steps are done, as if killed.
    pub stop_after_steps: Option<usize>,
}

/// The data of a run.
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
    /// The best (or, without a dev set, last) dev evaluation.
    pub best: Option<EvalRecord>,
    /// The test evaluation of the resulting model.
    pub test: Option<EvalRecord>,
    /// Optimizer steps done.
    pub steps: usize,
    /// Whether the run finished (false when stopped by `stop_after_steps`).
    pub finished: bool,
    /// Seconds spent in training steps (this process).
    pub train_seconds: f64,
    /// Training sentences per second (this process).
    pub sentences_per_second: f64,
    /// `<out>/model`.
    pub model_dir: PathBuf,
}

/// Tokenized data, and (with a frozen encoder) cached embeddings.
struct Split<B: Backend> {
    encoded: Vec<Encoded>,
    cache: Option<Tensor<B, 2>>,
}

fn tokenize<B: Backend>(model: &MultiTaskModel<B>, data: &Dataset) -> Result<Vec<Encoded>> {
    let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
    Ok(model.encoder.tokenize(&texts)?)
}

fn index_tensor<B: Backend>(rows: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let ids: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    Tensor::from_data(TensorData::new(ids, [rows.len()]), device)
}

/// The heads' input for every row, in row order.
fn embed_all<B: Backend>(
    model: &MultiTaskModel<B>,
    encoded: &[Encoded],
    batch: usize,
) -> Tensor<B, 2> {
    let encoder = &model.encoder;
    encoder.map_sorted(encoded, batch, encoder.dim(), |b| model.embed(b))
}

/// Per task metrics of `model` on `data` (rows without a label for a task are not counted).
pub fn evaluate<B: Backend>(
    model: &MultiTaskModel<B>,
    data: &Dataset,
    encoded: &[Encoded],
    cache: Option<&Tensor<B, 2>>,
    batch: usize,
) -> Result<Vec<TaskMetrics>> {
    let device = model.encoder.device();
    let mut matrices: Vec<ConfusionMatrix> = model
        .tasks()
        .iter()
        .map(|t| ConfusionMatrix::new(t.num_classes()))
        .collect();
    // Without a cache, embed everything first: the batches run on the encoder's workers.
    let computed;
    let cache = match cache {
        Some(c) => c,
        None => {
            computed = embed_all(model, encoded, batch);
            &computed
        }
    };
    for rows in length_sorted_batches(encoded, batch) {
        let embeddings = cache.clone().select(0, index_tensor(&rows, &device));
        for (task, logits) in model.heads_forward(embeddings).into_iter().enumerate() {
            let predicted = logits
                .argmax(1)
                .into_data()
                .convert::<i64>()
                .into_vec::<i64>()
                .map_err(|e| TrainError::Data(format!("cannot read predictions: {e:?}")))?;
            for (&row, &p) in rows.iter().zip(&predicted) {
                if let Some(truth) = data.examples[row].labels[task] {
                    matrices[task].add(truth, p as usize);
                }
            }
        }
    }
    Ok(matrices.iter().map(TaskMetrics::from).collect())
}

fn record(
    model_tasks: &[mtl_model::TaskSpec],
    metrics: Vec<TaskMetrics>,
    split: &str,
    epoch: usize,
    step: usize,
    train_loss: BTreeMap<String, f64>,
) -> EvalRecord {
    let tasks: BTreeMap<String, TaskMetrics> = model_tasks
        .iter()
        .map(|t| t.name.clone())
        .zip(metrics)
        .collect();
    let scored: Vec<f64> = tasks
        .values()
        .filter(|m| m.support > 0)
        .map(|m| m.macro_f1)
        .collect();
    let mean_macro_f1 = if scored.is_empty() {
        0.0
    } else {
        scored.iter().sum::<f64>() / scored.len() as f64
    };
    EvalRecord {
        epoch,
        step,
        split: split.to_string(),
        tasks,
        mean_macro_f1,
        train_loss,
    }
}

fn append_jsonl(path: &Path, record: &EvalRecord) -> Result<()> {
    let io = |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let mut line = serde_json::to_vec(record).expect("record serialises");
    line.push(b'\n');
    file.write_all(&line).map_err(io)
}

fn check_tasks<B: Backend>(model: &MultiTaskModel<B>, data: &Dataset, what: &str) -> Result<()> {
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
        return Err(TrainError::Config(format!(
            "the {what} tasks {data_tasks:?} differ from the model's {model_tasks:?}"
        )));
    }
    Ok(())
}

/// Dropout seed of backward pass `micro` of a run seeded `seed`.
fn step_seed(seed: u64, micro: usize) -> u64 {
    let mut rng = Rng::new(seed ^ (micro as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.next_u64()
}

/// Trains `model` on `data`, writing `<out>/model`, `<out>/checkpoint/`, `<out>/metrics.jsonl`
/// and `<out>/results.json`. With `options.resume` and an existing checkpoint, the run continues
/// from it (and `model` is replaced by the checkpoint's).
pub fn train<AB: AutodiffBackend>(
    model: MultiTaskModel<AB>,
    data: TrainData<'_>,
    config: &TrainConfig,
    out: &Path,
    options: &RunOptions,
) -> Result<TrainReport> {
    config.validate()?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let device = model.encoder.device();
    let threads = default_workers::<AB>(&device);
    let shards = config.shards.unwrap_or(threads);
    let config = &TrainConfig {
        shards: Some(shards),
        ..config.clone()
    };
    let config_json = serde_json::to_value(config).expect("config serialises");
    let ckpt = checkpoint_dir(out);
    let num_layers = model.encoder.bert.num_layers();

    // Model, optimizer and state: fresh or from the checkpoint.
    let resuming = options.resume && ckpt.join("state.json").is_file();
    let (model, mut optim, mut state) = if resuming {
        let state = read_state(&ckpt)?;
        if state.config != config_json {
            return Err(TrainError::Config(format!(
                "{} was written by a run with another configuration; resume with the same flags or use another --out",
                ckpt.display()
            )));
        }
        let model = MultiTaskModel::<AB>::load(ckpt.join("model"), &device)?;
        let optim = AdamW::load(config.optim.clone(), &ckpt, &device)?;
        (model, optim, state)
    } else {
        if out.join("metrics.jsonl").exists() {
            std::fs::remove_file(out.join("metrics.jsonl")).map_err(io(out))?;
        }
        let state = TrainState {
            epoch: 0,
            batch_in_epoch: 0,
            step: 0,
            micro: 0,
            epoch_rng: Rng::new(config.seed),
            best_score: None,
            best_step: None,
            evals_since_best: 0,
            loss_weights: None,
            sentences: 0,
            finished: false,
            config: config_json,
        };
        (model, AdamW::new(config.optim.clone(), num_layers)?, state)
    };
    check_tasks(&model, data.train, "training")?;
    for (split, d) in [("dev", data.dev), ("test", data.test)] {
        if let Some(d) = d {
            check_tasks(&model, d, split)?;
        }
    }
    let model = model.freeze(&config.freeze)?;
    let num_tasks = model.tasks().len();
    let task_names: Vec<String> = model.tasks().iter().map(|t| t.name.clone()).collect();
    let loss_weights = match config.loss_weighting {
        LossWeighting::Uncertainty => {
            let init = state
                .loss_weights
                .clone()
                .unwrap_or_else(|| vec![0.0; num_tasks]);
            Some(Param::from_data(
                TensorData::new(init, [num_tasks]),
                &device,
            ))
        }
        LossWeighting::Static(_) => None,
    };
    let mut trainable = Trainable {
        model,
        loss_weights,
    };

    // Tokenize once; with a frozen encoder, embed once.
    let cache_encoder = config.freeze.freezes_encoder();
    let prepare = |d: &Dataset, model: &MultiTaskModel<AB>| -> Result<Split<AB::InnerBackend>> {
        let encoded = tokenize(model, d)?;
        let cache =
            cache_encoder.then(|| embed_all(&model.valid(), &encoded, config.eval_batch_size));
        Ok(Split { encoded, cache })
    };
    let train_split = prepare(data.train, &trainable.model)?;
    let dev_split = data.dev.map(|d| prepare(d, &trainable.model)).transpose()?;

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
    let plan_options = PlanOptions {
        batch_size: config.batch_size,
        sampler: config.sampler,
        group_by_length: config.group_by_length,
    };
    let batches_per_epoch: usize = pools
        .iter()
        .map(|p| p.len().div_ceil(config.batch_size))
        .sum();
    let steps_per_epoch = batches_per_epoch.div_ceil(config.grad_accum);
    let schedule = LinearSchedule::from_ratio(steps_per_epoch * config.epochs, config.warmup_ratio);

    let bar = if options.progress {
        let bar = ProgressBar::new(schedule.total_steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] step {pos}/{len} {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        bar.set_position(state.step as u64);
        bar
    } else {
        ProgressBar::hidden()
    };

    let metrics_path = out.join("metrics.jsonl");
    let model_dir = out.join("model");
    let mut acc = GradAccumulator::<AB::InnerBackend>::default();
    let mut loss_sums = vec![0.0f64; num_tasks];
    let mut loss_counts = vec![0usize; num_tasks];
    let mut train_seconds = 0.0f64;
    let mut sentences_here = 0u64;
    let mut best: Option<EvalRecord> = None;
    let mut stopped_early = false;

    let save_checkpoint = |trainable: &Trainable<AB>,
                           optim: &AdamW<AB::InnerBackend>,
                           state: &TrainState|
     -> Result<()> {
        let partial = out.join("checkpoint.partial");
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(io(&partial))?;
        }
        trainable.model.save(partial.join("model"))?;
        optim.save(&partial)?;
        write_state(&partial, state)?;
        swap_dir(&partial, &ckpt)
    };

    // One evaluation on dev: record, select, maybe stop.
    let evaluate_dev = |trainable: &Trainable<AB>,
                        epoch: usize,
                        state: &mut TrainState,
                        loss_sums: &mut Vec<f64>,
                        loss_counts: &mut Vec<usize>,
                        best: &mut Option<EvalRecord>|
     -> Result<bool> {
        let (Some(dev), Some(split)) = (data.dev, dev_split.as_ref()) else {
            return Ok(false);
        };
        let valid = trainable.model.valid();
        let metrics = evaluate(
            &valid,
            dev,
            &split.encoded,
            split.cache.as_ref(),
            config.eval_batch_size,
        )?;
        let train_loss: BTreeMap<String, f64> = task_names
            .iter()
            .enumerate()
            .filter(|(t, _)| loss_counts[*t] > 0)
            .map(|(t, name)| (name.clone(), loss_sums[t] / loss_counts[t] as f64))
            .collect();
        loss_sums.iter_mut().for_each(|v| *v = 0.0);
        loss_counts.iter_mut().for_each(|v| *v = 0);
        let rec = record(
            trainable.model.tasks(),
            metrics,
            "dev",
            epoch,
            state.step,
            train_loss,
        );
        append_jsonl(&metrics_path, &rec)?;
        let summary: Vec<String> = rec
            .tasks
            .iter()
            .map(|(t, m)| format!("{t}: acc {:.4} F1 {:.4}", m.accuracy, m.macro_f1))
            .collect();
        let improved = state.best_score.is_none_or(|b| rec.mean_macro_f1 > b);
        bar.println(format!(
            "dev @ epoch {} step {}: {} (mean F1 {:.4}){}",
            rec.epoch,
            rec.step,
            summary.join(", "),
            rec.mean_macro_f1,
            if improved { " *" } else { "" }
        ));
        if improved {
            state.best_score = Some(rec.mean_macro_f1);
            state.best_step = Some(state.step);
            state.evals_since_best = 0;
            trainable.model.save(&model_dir)?;
            *best = Some(rec);
        } else {
            state.evals_since_best += 1;
        }
        Ok(config.patience.is_some_and(|p| state.evals_since_best >= p))
    };

    let mut interrupted = false;
    'epochs: while state.epoch < config.epochs && !state.finished {
        let mut rng = state.epoch_rng.clone();
        let plan = plan_epoch(&pools, &lengths, &plan_options, &mut rng);
        for (index, batch) in plan.iter().enumerate().skip(state.batch_in_epoch) {
            let started = Instant::now();
            let pool = &pool_tasks[batch.pool];
            let n = batch.rows.len();
            let sorted = by_length(&batch.rows, |r| lengths[r]);
            // One shard's loss, scaled by its share of the rows so that the shards sum to the
            // batch's loss; with it, each task's scaled mean loss for the log.
            let shard_loss = |m: &Trainable<AB>, range: Range<usize>| {
                let rows = &sorted[range];
                let share = rows.len() as f64 / n as f64;
                let embeddings = match &train_split.cache {
                    Some(cache) => {
                        Tensor::from_inner(cache.clone().select(0, index_tensor(rows, &device)))
                    }
                    None => {
                        let refs: Vec<&Encoded> =
                            rows.iter().map(|&r| &train_split.encoded[r]).collect();
                        m.model.embed(&m.model.encoder.batch(&refs))
                    }
                };
                let losses: Vec<(usize, Tensor<AB, 1>)> = pool
                    .iter()
                    .map(|&task| {
                        let targets: Vec<i64> = rows
                            .iter()
                            .map(|&r| {
                                data.train.examples[r].labels[task]
                                    .expect("pool rows carry the label")
                                    as i64
                            })
                            .collect();
                        let targets = Tensor::<AB, 1, Int>::from_data(
                            TensorData::new(targets, [rows.len()]),
                            &device,
                        );
                        let logits = m.model.heads[task].forward(embeddings.clone());
                        (task, cross_entropy(logits, targets))
                    })
                    .collect();
                let values: Vec<f64> = losses
                    .iter()
                    .map(|(_, l)| l.clone().into_scalar().elem::<f64>() * share)
                    .collect();
                let total = match (&config.loss_weighting, &m.loss_weights) {
                    (LossWeighting::Uncertainty, Some(log_vars)) => {
                        uncertainty_combine(losses, log_vars.val())
                    }
                    _ => losses
                        .into_iter()
                        .map(|(task, l)| l * config.loss_weighting.weight(&task_names[task]))
                        .reduce(|a, b| a + b)
                        .expect("a pool has at least one task"),
                };
                (total * share, values)
            };
            let parts = shard_gradients(
                &trainable,
                n,
                shards,
                threads,
                step_seed(config.seed, state.micro),
                shard_loss,
            );
            let mut values = vec![0.0f64; pool.len()];
            let mut grads = Vec::with_capacity(parts.len());
            for (g, v) in parts {
                grads.push(g);
                values.iter_mut().zip(v).for_each(|(sum, x)| *sum += x);
            }
            for (task, v) in pool.iter().zip(&values) {
                loss_sums[*task] += v;
                loss_counts[*task] += 1;
            }
            acc.add_parts(&trainable, grads);
            state.micro += 1;
            state.batch_in_epoch = index + 1;
            state.sentences += batch.rows.len() as u64;
            sentences_here += batch.rows.len() as u64;

            if acc.micro_batches() == config.grad_accum || index + 1 == plan.len() {
                let factor = schedule.factor(state.step);
                let (next, _) = optim.step(trainable, &mut acc, factor);
                trainable = next;
                state.step += 1;
                state.loss_weights = trainable.loss_weights.as_ref().map(|w| {
                    w.val()
                        .into_data()
                        .convert::<f32>()
                        .into_vec::<f32>()
                        .expect("f32")
                });
                train_seconds += started.elapsed().as_secs_f64();
                let losses: Vec<String> = pool
                    .iter()
                    .zip(&values)
                    .map(|(t, v)| format!("{} {v:.3}", task_names[*t]))
                    .collect();
                bar.set_message(format!(
                    "loss {} | lr {:.2e} | {:.1} sent/s",
                    losses.join(" "),
                    config.optim.lr * factor,
                    sentences_here as f64 / train_seconds.max(1e-9)
                ));
                bar.set_position(state.step as u64);
                if config.eval_every.is_some_and(|n| state.step % n == 0)
                    && evaluate_dev(
                        &trainable,
                        state.epoch + 1,
                        &mut state,
                        &mut loss_sums,
                        &mut loss_counts,
                        &mut best,
                    )?
                {
                    stopped_early = true;
                    state.finished = true;
                    break 'epochs;
                }
                let stop = options.stop_after_steps.is_some_and(|n| state.step >= n);
                let mid_epoch = index + 1 < plan.len();
                if mid_epoch
                    && (stop || config.checkpoint_every.is_some_and(|n| state.step % n == 0))
                {
                    save_checkpoint(&trainable, &optim, &state)?;
                }
                if mid_epoch && stop {
                    interrupted = true;
                    break 'epochs;
                }
            } else {
                train_seconds += started.elapsed().as_secs_f64();
            }
        }
        state.epoch += 1;
        state.batch_in_epoch = 0;
        state.epoch_rng = rng;
        if config.eval_every.is_none()
            && evaluate_dev(
                &trainable,
                state.epoch,
                &mut state,
                &mut loss_sums,
                &mut loss_counts,
                &mut best,
            )?
        {
            stopped_early = true;
            state.finished = true;
        }
        if state.epoch == config.epochs {
            state.finished = true;
        }
        save_checkpoint(&trainable, &optim, &state)?;
        if options.stop_after_steps.is_some_and(|n| state.step >= n) && !state.finished {
            interrupted = true;
            break;
        }
    }
    bar.finish_and_clear();
    let report = |best, test, finished| TrainReport {
        best,
        test,
        steps: state.step,
        finished,
        train_seconds,
        sentences_per_second: sentences_here as f64 / train_seconds.max(1e-9),
        model_dir: model_dir.clone(),
    };
    if interrupted {
        return Ok(report(best, None, false));
    }
    if stopped_early {
        eprintln!(
            "early stopping: no better dev mean macro-F1 in {} evaluations",
            state.evals_since_best
        );
    }

    // The result: the best dev checkpoint, or the last model without a dev set.
    if data.dev.is_none() {
        trainable.model.save(&model_dir)?;
    }
    if best.is_none() {
        best = read_best(&metrics_path)?;
    }
    let result = MultiTaskModel::<AB::InnerBackend>::load(&model_dir, &device)?;
    let test = match data.test {
        Some(test) => {
            let encoded = tokenize(&result, test)?;
            let metrics = evaluate(&result, test, &encoded, None, config.eval_batch_size)?;
            let rec = record(
                result.tasks(),
                metrics,
                "test",
                state.epoch,
                state.best_step.unwrap_or(state.step),
                BTreeMap::new(),
            );
            append_jsonl(&metrics_path, &rec)?;
            Some(rec)
        }
        None => None,
    };
    if let Some(rec) = test.as_ref().or(best.as_ref()) {
        let tasks: BTreeMap<&String, serde_json::Value> = rec
            .tasks
            .iter()
            .map(|(t, m)| (t, serde_json::json!({"accuracy": m.accuracy, "macro_f1": m.macro_f1, "mcc": m.mcc})))
            .collect();
        let json = serde_json::json!({"split": rec.split, "tasks": tasks});
        let path = out.join("results.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&json).expect("JSON"))
            .map_err(io(&path))?;
    }
    Ok(report(best, test, true))
}

/// The best dev record of a run's `metrics.jsonl` (for a run resumed after its best evaluation).
fn read_best(path: &Path) -> Result<Option<EvalRecord>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let mut best: Option<EvalRecord> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rec: EvalRecord = serde_json::from_str(line)
            .map_err(|e| TrainError::Config(format!("{}: malformed: {e}", path.display())))?;
        if rec.split == "dev"
            && best
                .as_ref()
                .is_none_or(|b| rec.mean_macro_f1 > b.mean_macro_f1)
        {
            best = Some(rec);
        }
    }
    Ok(best)
}
