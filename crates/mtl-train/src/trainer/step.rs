//! One training step: a batch's forward and backward passes on data-parallel shards, their
//! gradients summed into the accumulator, and (once enough batches are summed) the optimizer's
//! update. The trainer's loop and the benchmark both run it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use mtl_encoder::runtime::default_workers;
use mtl_encoder::Encoded;
use mtl_model::MultiTaskModel;

use super::config::TrainConfig;
use super::eval::index_tensor;
use super::Trainable;
use crate::collective::Peer;
use crate::error::Result;
use crate::loss::{smoothed_cross_entropy, uncertainty_combine, LossWeighting};
use crate::optim::{AdamW, GradAccumulator, GradLayout};
use crate::parallel::{balanced_ranges, by_length, peer_shards, shard_gradients};
use crate::schedule::clip_factor;
use mtl_encoder::Rng;

/// The rows batches are drawn from.
pub struct TrainRows<'a, B: Backend> {
    /// Every row, tokenized.
    pub encoded: &'a [Encoded],
    /// Every row's label index per task (`None`: not labelled).
    pub labels: &'a [Vec<Option<usize>>],
    /// With a frozen encoder, every row's heads' input (row order), used instead of the encoder.
    pub cache: Option<&'a Tensor<B, 2>>,
}

/// One batch: rows of [`TrainRows`], all labelled for `tasks`.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Row indices.
    pub rows: &'a [usize],
    /// The tasks trained on (ascending model task indices).
    pub tasks: &'a [usize],
}

/// Seconds spent in the phases of a step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimes {
    /// The shards' forward and backward passes.
    pub forward_backward: f64,
    /// Summing the shards' gradients into the accumulator (with several peers, including
    /// [`all_reduce`](Self::all_reduce)).
    pub add: f64,
    /// With several peers: the all-reduce of the gradients (including the wait for the
    /// slowest peer).
    pub all_reduce: f64,
    /// The optimizer's update (0 for a batch whose gradients were only accumulated).
    pub optim: f64,
}

/// What one batch gave.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchLosses {
    /// Each of the batch's tasks' mean loss, in the order of [`Batch::tasks`].
    pub losses: Vec<f64>,
    /// Where the time went.
    pub times: StepTimes,
}

/// The training step of a run: the optimizer, the gradients accumulated since its last update,
/// and how losses are combined and batches sharded.
pub struct TrainStep<AB: AutodiffBackend> {
    optim: AdamW<AB::InnerBackend>,
    acc: GradAccumulator<AB::InnerBackend>,
    loss_weighting: LossWeighting,
    label_smoothing: f64,
    task_names: Vec<String>,
    seed: u64,
    grad_accum: usize,
    shards: usize,
    threads: usize,
    /// The encoder's width (for the shards' work).
    hidden_size: usize,
    /// With several peers: this one, and where the gradients lie in what is all-reduced.
    peer: Option<(Peer, GradLayout)>,
}

/// The work of one row of a shard padded to `len` tokens, in tokens through the linear layers:
/// per layer about 12·d² multiply-adds per token there and 4·len·d in attention (scores and
/// weighted values; backward scales both alike).
fn shard_cost(len: usize, hidden: usize) -> f64 {
    len as f64 * (1.0 + len as f64 / (3.0 * hidden as f64))
}

/// Dropout seed of backward pass `micro` of a run seeded `seed`.
fn step_seed(seed: u64, micro: usize) -> u64 {
    let mut rng = Rng::new(seed ^ (micro as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.next_u64()
}

impl<AB: AutodiffBackend> TrainStep<AB> {
    /// A step for `model` trained with `config`, with a fresh optimizer.
    pub fn new(config: &TrainConfig, model: &MultiTaskModel<AB>) -> Result<Self> {
        let optim = AdamW::new(config.optim.clone(), model.encoder.bert.num_layers())?;
        Ok(Self::with_optimizer(config, model, optim))
    }

    /// A step for `model` trained with `config` that continues with `optim`.
    pub fn with_optimizer(
        config: &TrainConfig,
        model: &MultiTaskModel<AB>,
        optim: AdamW<AB::InnerBackend>,
    ) -> Self {
        let threads = default_workers::<AB>(&model.encoder.device());
        Self {
            optim,
            acc: GradAccumulator::default(),
            loss_weighting: config.loss_weighting.clone(),
            label_smoothing: config.label_smoothing,
            task_names: model.tasks().iter().map(|t| t.name.clone()).collect(),
            seed: config.seed,
            grad_accum: config.grad_accum,
            shards: config.shards.unwrap_or(threads),
            threads,
            hidden_size: model.encoder.config().hidden_size,
            peer: None,
        }
    }

    /// The step of `peer`, one of several training `model` together: it computes its slice of
    /// each batch's shards and sums the gradients with the other peers' ([`crate::PeerGroup`]).
    /// This process's cores are shared among its peers.
    pub fn with_peer(mut self, peer: Peer, model: &Trainable<AB>) -> Self {
        self.threads = (self.threads / peer.local_peers()).max(1);
        self.peer = Some((peer, GradLayout::of(model)));
        self
    }

    /// The peer this step runs on, if it is one of several.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_ref().map(|(p, _)| p)
    }

    /// The peer, mutably (for the run's own collective calls).
    pub(super) fn peer_mut(&mut self) -> Option<&mut Peer> {
        self.peer.as_mut().map(|(p, _)| p)
    }

    /// The optimizer (to save it).
    pub fn optimizer(&self) -> &AdamW<AB::InnerBackend> {
        &self.optim
    }

    /// The number of shards a batch is cut into (over all peers).
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The global L2 norm of the gradients accumulated since the last update, before clipping
    /// (what PyTorch's `clip_grad_norm_` returns).
    pub fn grad_norm(&self) -> f64 {
        self.acc.global_norm()
    }

    /// The gradients the next update applies, by parameter path: averaged over the batches
    /// accumulated and clipped to the global norm, in the parameters' layout.
    pub fn pending_gradients(&self) -> BTreeMap<String, Vec<f32>> {
        let clip = self
            .optim
            .config()
            .max_grad_norm
            .map_or(1.0, |max| clip_factor(self.acc.global_norm(), max));
        self.acc.averaged(clip)
    }

    /// Whether `grad_accum` batches are summed, so that the optimizer should update.
    pub fn is_ready(&self) -> bool {
        self.acc.micro_batches() == self.grad_accum
    }

    /// The forward and backward passes of `batch` (the run's backward pass number `micro`,
    /// which seeds dropout), its gradients added to those accumulated.
    pub fn backward(
        &mut self,
        trainable: &Trainable<AB>,
        rows: &TrainRows<'_, AB::InnerBackend>,
        batch: Batch<'_>,
        micro: usize,
    ) -> Result<BatchLosses> {
        let started = Instant::now();
        let n = batch.rows.len();
        let sorted = by_length(batch.rows, |r| rows.encoded[r].len());
        let loss = ShardLoss {
            rows,
            sorted: &sorted,
            tasks: batch.tasks,
            n,
            weighting: &self.loss_weighting,
            smoothing: self.label_smoothing,
            task_names: &self.task_names,
            device: trainable.model.encoder.device(),
        };
        let (rank, world) = self.peer().map_or((0, 1), |p| (p.rank(), p.world()));
        let lengths: Vec<usize> = sorted.iter().map(|&r| rows.encoded[r].len()).collect();
        let hidden = self.hidden_size;
        let all = balanced_ranges(&lengths, self.shards.max(world), |len| {
            shard_cost(len, hidden)
        });
        let (first, shards) = peer_shards(all, rank, world);
        // The shards run on the worker pool of `mtl_encoder::runtime`.
        let parts = shard_gradients(
            trainable,
            &shards,
            first,
            self.threads,
            step_seed(self.seed, micro),
            |m, range| loss.of(m, range),
        );
        let forward_backward = started.elapsed().as_secs_f64();
        let mut losses = vec![0.0f64; batch.tasks.len()];
        let mut grads = Vec::with_capacity(parts.len());
        for (g, v) in parts {
            grads.push(g);
            losses.iter_mut().zip(v).for_each(|(sum, x)| *sum += x);
        }
        let mut all_reduce = 0.0;
        match &mut self.peer {
            None => self.acc.add_parts(trainable, grads),
            Some((peer, layout)) => {
                let mut mine = GradAccumulator::default();
                mine.add_parts(trainable, grads);
                let mut flat = mine.into_flat(layout);
                flat.extend(losses.iter().map(|&l| l as f32));
                let device = trainable.model.encoder.device();
                let reducing = Instant::now();
                let summed =
                    peer.sum_host::<AB::InnerBackend>("summing gradients", flat, &device)?;
                all_reduce = reducing.elapsed().as_secs_f64();
                self.acc.add_flat(layout, &summed);
                let tail = &summed[layout.len()..];
                losses
                    .iter_mut()
                    .zip(tail)
                    .for_each(|(l, s)| *l = f64::from(*s));
            }
        }
        let times = StepTimes {
            forward_backward,
            add: started.elapsed().as_secs_f64() - forward_backward,
            all_reduce,
            optim: 0.0,
        };
        Ok(BatchLosses { losses, times })
    }

    /// The optimizer's update with the gradients accumulated, the learning rates scaled by
    /// `lr_factor` (the schedule); returns the updated module and the seconds it took.
    pub fn apply(&mut self, trainable: Trainable<AB>, lr_factor: f64) -> (Trainable<AB>, f64) {
        let started = Instant::now();
        let (next, _) = self.optim.step(trainable, &mut self.acc, lr_factor);
        (next, started.elapsed().as_secs_f64())
    }

    /// [`backward`](Self::backward) and [`apply`](Self::apply): one batch, one update.
    pub fn step(
        &mut self,
        trainable: Trainable<AB>,
        rows: &TrainRows<'_, AB::InnerBackend>,
        batch: Batch<'_>,
        micro: usize,
        lr_factor: f64,
    ) -> Result<(Trainable<AB>, BatchLosses)> {
        let mut out = self.backward(&trainable, rows, batch, micro)?;
        let (next, optim) = self.apply(trainable, lr_factor);
        out.times.optim = optim;
        Ok((next, out))
    }
}

/// The loss of one shard of a batch whose rows are ordered by length.
struct ShardLoss<'a, B: AutodiffBackend> {
    rows: &'a TrainRows<'a, B::InnerBackend>,
    sorted: &'a [usize],
    tasks: &'a [usize],
    /// Rows in the batch.
    n: usize,
    weighting: &'a LossWeighting,
    /// Label smoothing of the cross-entropy.
    smoothing: f64,
    task_names: &'a [String],
    device: B::Device,
}

impl<AB: AutodiffBackend> ShardLoss<'_, AB> {
    /// The shard's loss, scaled by its share of the rows so that the shards sum to the batch's
    /// loss; with it, each task's scaled mean loss for the log.
    fn of(&self, m: &Trainable<AB>, range: Range<usize>) -> (Tensor<AB, 1>, Vec<f64>) {
        let rows = &self.sorted[range];
        let share = rows.len() as f64 / self.n as f64;
        let embeddings = match self.rows.cache {
            Some(cache) => {
                Tensor::from_inner(cache.clone().select(0, index_tensor(rows, &self.device)))
            }
            None => {
                let refs: Vec<&Encoded> = rows.iter().map(|&r| &self.rows.encoded[r]).collect();
                m.model.embed(&m.model.encoder.batch(&refs))
            }
        };
        let losses: Vec<(usize, Tensor<AB, 1>)> = self
            .tasks
            .iter()
            .map(|&task| {
                let targets = self.targets(rows, task);
                let logits = m.model.heads[task].forward(embeddings.clone());
                (
                    task,
                    smoothed_cross_entropy(logits, targets, self.smoothing),
                )
            })
            .collect();
        let values: Vec<f64> = losses
            .iter()
            .map(|(_, l)| l.clone().into_scalar().elem::<f64>() * share)
            .collect();
        let total = match (self.weighting, &m.loss_weights) {
            (LossWeighting::Uncertainty, Some(log_vars)) => {
                uncertainty_combine(losses, log_vars.val())
            }
            _ => losses
                .into_iter()
                .map(|(task, l)| l * self.weighting.weight(&self.task_names[task]))
                .reduce(|a, b| a + b)
                .expect("a batch has at least one task"),
        };
        (total * share, values)
    }

    /// The labels of `rows` for `task`.
    fn targets(&self, rows: &[usize], task: usize) -> Tensor<AB, 1, Int> {
        let targets: Vec<i64> = rows
            .iter()
            .map(|&r| self.rows.labels[r][task].expect("batch rows carry the label") as i64)
            .collect();
        Tensor::from_data(TensorData::new(targets, [rows.len()]), &self.device)
    }
}
