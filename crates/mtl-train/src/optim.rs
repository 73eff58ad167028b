//! AdamW with per-parameter learning rates (layer-wise decay, a head rate), no weight decay on
//! biases and LayerNorm, global-norm gradient clipping and gradient accumulation.
//!
//! State is kept by parameter *path* (`encoder.bert.encoder.layer.3.output.dense.weight`), so it
//! survives a save and load of the model, whose parameter ids change.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use mtl_encoder::io::{serialize_tensors, write_atomic};
use mtl_encoder::runtime::is_cpu as runs_on_cpu;
use mtl_encoder::Checkpoint;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::schedule::{embeddings_rate, layer_rate};

/// AdamW settings and learning-rate groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// The base learning rate (the top encoder layer's).
    pub lr: f64,
    /// The heads' learning rate (default: `lr`).
    pub head_lr: Option<f64>,
    /// Layer-wise decay: each encoder layer below the top is multiplied by it, the embeddings
    /// once more (1.0: no decay).
    pub layer_decay: f64,
    /// Decoupled weight decay (not applied to biases, LayerNorm and loss weights).
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Clip gradients to this global L2 norm (None: no clipping).
    pub max_grad_norm: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 5e-5,
            head_lr: None,
            layer_decay: 1.0,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: Some(1.0),
        }
    }
}

impl OptimConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(TrainError::Config(what.to_string()));
        if !(self.lr > 0.0) || self.head_lr.is_some_and(|h| !(h > 0.0)) {
            return bad("learning rates must be positive");
        }
        if !(self.layer_decay > 0.0 && self.layer_decay <= 1.0) {
            return bad("layer decay must be in (0, 1]");
        }
        if !(0.0..1.0).contains(&self.beta1)
            || !(0.0..1.0).contains(&self.beta2)
            || !(self.eps > 0.0)
        {
            return bad("AdamW betas must be in [0, 1) and eps positive");
        }
        if self.weight_decay < 0.0 || self.max_grad_norm.is_some_and(|n| !(n > 0.0)) {
            return bad("weight decay must be >= 0 and the clipping norm positive");
        }
        Ok(())
    }

    /// The learning rate (before the schedule) of the parameter at `path` of a model whose
    /// encoder has `num_layers` layers.
    pub fn param_lr(&self, path: &str, num_layers: usize) -> f64 {
        // The trainer's module (`Trainable`) holds the model under `model`.
        let path = path.strip_prefix("model.").unwrap_or(path);
        if path.starts_with("heads.") || path.starts_with("loss_weights") {
            return self.head_lr.unwrap_or(self.lr);
        }
        let bert = path.split_once("bert.").map_or(path, |(_, rest)| rest);
        if bert.starts_with("embeddings.") {
            return embeddings_rate(self.lr, self.layer_decay, num_layers);
        }
        let layer = bert
            .strip_prefix("encoder.layer.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        match layer {
            Some(i) => layer_rate(self.lr, self.layer_decay, i, num_layers),
            None => self.lr,
        }
    }

    /// Whether weight decay applies to the parameter at `path`.
    pub fn decays(path: &str) -> bool {
        !(path.ends_with(".bias")
            || path.contains("layer_norm")
            || path.starts_with("loss_weights"))
    }
}

/// Gradients summed over micro-batches, by parameter path, on the inner backend (ordered, so
/// the global norm is summed in the same order every time).
pub struct GradAccumulator<B: Backend> {
    grads: BTreeMap<String, Summed<B>>,
    micro_batches: usize,
}

impl<B: Backend> Default for GradAccumulator<B> {
    fn default() -> Self {
        Self {
            grads: BTreeMap::new(),
            micro_batches: 0,
        }
    }
}

/// One parameter's summed gradient, flattened: on CPU backends host values, moved out of the
/// tensors without copies and summed in place (burn-ndarray's reshape and addition would each
/// copy, 47 MB for the word embeddings alone); elsewhere a tensor.
enum Summed<B: Backend> {
    Host(Vec<f32>),
    Device(Tensor<B, 1>),
}

impl<B: Backend> Summed<B> {
    fn new<const D: usize>(g: Tensor<B, D>) -> Self {
        if runs_on_cpu::<B>(&g.device()) {
            Self::Host(host_vec(g))
        } else {
            let n = g.shape().num_elements();
            Self::Device(g.reshape([n]))
        }
    }

    fn add(self, other: Self) -> Self {
        match (self, other) {
            (Self::Host(mut a), Self::Host(b)) => {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                Self::Host(a)
            }
            (Self::Device(a), Self::Device(b)) => Self::Device(a + b),
            (a, b) => {
                let device = a.device().or(b.device()).unwrap_or_default();
                Self::Device(a.tensor(&device) + b.tensor(&device))
            }
        }
    }

    fn device(&self) -> Option<B::Device> {
        match self {
            Self::Host(_) => None,
            Self::Device(t) => Some(t.device()),
        }
    }

    fn tensor(self, device: &B::Device) -> Tensor<B, 1> {
        match self {
            Self::Host(values) => {
                let n = values.len();
                Tensor::from_data(TensorData::new(values, [n]), device)
            }
            Self::Device(t) => t,
        }
    }

    fn host(self) -> Vec<f32> {
        match self {
            Self::Host(values) => values,
            Self::Device(t) => host_vec(t),
        }
    }

    /// The sum of squares, in `f64` (on the host, `f32` sums of blocks of 1024 added in `f64`).
    fn squared_norm(&self) -> f64 {
        match self {
            Self::Host(values) => values
                .chunks(1024)
                .map(|block| {
                    // Eight partial sums, so that the loop vectorises.
                    let mut lanes = [0.0f32; 8];
                    let mut chunks = block.chunks_exact(8);
                    for chunk in &mut chunks {
                        lanes.iter_mut().zip(chunk).for_each(|(s, x)| *s += x * x);
                    }
                    let tail: f32 = chunks.remainder().iter().map(|x| x * x).sum();
                    (lanes.iter().sum::<f32>() + tail) as f64
                })
                .sum(),
            Self::Device(g) => (g.clone() * g.clone()).sum().into_scalar().elem(),
        }
    }
}

struct CollectGrads<'a, B: Backend> {
    grads: &'a mut GradientsParams,
    into: &'a mut BTreeMap<String, Summed<B>>,
    path: Vec<String>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for CollectGrads<'_, AB::InnerBackend> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        if let Some(g) = self.grads.remove::<AB::InnerBackend, D>(param.id) {
            let g = Summed::new(g);
            let path = self.path.join(".");
            let sum = match self.into.remove(&path) {
                Some(acc) => acc.add(g),
                None => g,
            };
            self.into.insert(path, sum);
        }
    }
}

impl<B: Backend> GradAccumulator<B> {
    /// Adds the gradients of one backward pass.
    pub fn add<AB, M>(&mut self, module: &M, grads: GradientsParams)
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        self.add_parts(module, [grads]);
    }

    /// Adds the gradients of one batch computed in parts (data-parallel shards): they are summed
    /// in order and count as one backward pass.
    pub fn add_parts<AB, M>(&mut self, module: &M, parts: impl IntoIterator<Item = GradientsParams>)
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        for mut grads in parts {
            let mut visitor = CollectGrads {
                grads: &mut grads,
                into: &mut self.grads,
                path: Vec::new(),
            };
            module.visit(&mut visitor);
        }
        self.micro_batches += 1;
    }

    /// The number of backward passes summed.
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// True before any gradient was added.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }

    /// The global L2 norm of the (averaged) gradients.
    pub fn global_norm(&self) -> f64 {
        let scale = 1.0 / self.micro_batches.max(1) as f64;
        let total: f64 = self.grads.values().map(Summed::squared_norm).sum();
        total.sqrt() * scale
    }
}

/// One parameter's AdamW state.
#[derive(Clone)]
struct Moments<B: Backend> {
    m: Tensor<B, 1>,
    v: Tensor<B, 1>,
    steps: u64,
}

/// AdamW over a module's parameters, keyed by path.
pub struct AdamW<B: Backend> {
    config: OptimConfig,
    num_layers: usize,
    state: HashMap<String, Moments<B>>,
    /// Forces the host (`Some(true)`) or tensor (`Some(false)`) update; `None`: host on CPU.
    host_update: Option<bool>,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// The number of parameter tensors updated.
    pub updated: usize,
}

struct Update<'a, B: Backend> {
    optim: &'a mut AdamW<B>,
    /// Update in one fused pass over host memory (CPU backends) instead of tensor operations.
    host: bool,
    grads: BTreeMap<String, Summed<B>>,
    grad_scale: f64,
    lr_factor: f64,
    path: Vec<String>,
    updated: usize,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Update<'_, AB::InnerBackend> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let path = self.path.join(".");
        let Some(grad) = self.grads.remove(&path) else {
            return param;
        };
        let c = &self.optim.config;
        let lr = c.param_lr(&path, self.optim.num_layers) * self.lr_factor;
        let wd = if OptimConfig::decays(&path) {
            c.weight_decay
        } else {
            0.0
        };
        let (beta1, beta2, eps) = (c.beta1, c.beta2, c.eps);
        let (id, tensor, mapper) = param.consume();
        let inner = tensor.inner();
        let (shape, device) = (inner.shape(), inner.device());
        let n = shape.num_elements();
        let state = self.optim.state.remove(&path);
        let steps = state.as_ref().map_or(0, |s| s.steps) + 1;
        let k = AdamStep {
            beta1,
            beta2,
            eps,
            grad_scale: self.grad_scale,
            decay: 1.0 - lr * wd,
            bias2: 1.0 - beta2.powi(steps as i32),
            step_size: lr / (1.0 - beta1.powi(steps as i32)),
        };
        let (p, m, v) = if self.host {
            let (m, v) = match state {
                Some(s) => (host_vec(s.m), host_vec(s.v)),
                None => (vec![0.0; n], vec![0.0; n]),
            };
            let (p, m, v) = k.on_host(host_vec(inner), grad.host(), m, v);
            let tensor = |x: Vec<f32>| {
                Tensor::<AB::InnerBackend, 1>::from_data(TensorData::new(x, [n]), &device)
            };
            let p = Tensor::from_data(TensorData::new(p, shape), &device);
            (p, tensor(m), tensor(v))
        } else {
            let p = inner.reshape([n]);
            let g = grad.tensor(&device) * self.grad_scale;
            let (m, v) = match state {
                Some(s) => (s.m, s.v),
                None => (g.zeros_like(), g.zeros_like()),
            };
            let m = m * beta1 + g.clone() * (1.0 - beta1);
            let v = v * beta2 + g.clone() * g * (1.0 - beta2);
            let denom = (v.clone() / k.bias2).sqrt() + eps;
            let p = p * k.decay - (m.clone() / denom) * k.step_size;
            (p.reshape(shape), m, v)
        };
        self.optim.state.insert(path, Moments { m, v, steps });
        self.updated += 1;
        let value = Tensor::<AB, D>::from_inner(p).require_grad();
        Param::from_mapped_value(id, value, mapper)
    }
}

/// The scalars of one AdamW update of one parameter.
struct AdamStep {
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// Averaging over micro-batches times clipping.
    grad_scale: f64,
    /// `1 - lr·weight_decay`.
    decay: f64,
    /// `1 - beta2^t`.
    bias2: f64,
    /// `lr / (1 - beta1^t)`.
    step_size: f64,
}

/// Tensor data as host `f32` values in row-major order (no copy for a CPU backend's uniquely
/// held, contiguous f32 tensor).
fn host_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32")
}

impl AdamStep {
    /// The update as one pass over host memory, large tensors split across the cores, with the
    /// same `f32` arithmetic, in the same order, as the tensor-operation path. On CPU backends
    /// the data moves in and out of the tensors without copies; the tensor path makes about ten
    /// passes and as many allocations.
    fn on_host(
        &self,
        mut p: Vec<f32>,
        g: Vec<f32>,
        mut m: Vec<f32>,
        mut v: Vec<f32>,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let f = |x: f64| x as f32;
        let (b1, c1, b2, c2) = (
            f(self.beta1),
            f(1.0 - self.beta1),
            f(self.beta2),
            f(1.0 - self.beta2),
        );
        let (scale, decay, bias2, eps, step) = (
            f(self.grad_scale),
            f(self.decay),
            f(self.bias2),
            f(self.eps),
            f(self.step_size),
        );
        let update = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let g = g * scale;
                *m = *m * b1 + g * c1;
                *v = *v * b2 + g * g * c2;
                *p = *p * decay - (*m / ((*v / bias2).sqrt() + eps)) * step;
            }
        };
        let n = p.len();
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let chunk = n.div_ceil(threads).max(1 << 18);
        if chunk >= n {
            update(&mut p, &g, &mut m, &mut v);
        } else {
            std::thread::scope(|scope| {
                let parts = p
                    .chunks_mut(chunk)
                    .zip(g.chunks(chunk))
                    .zip(m.chunks_mut(chunk))
                    .zip(v.chunks_mut(chunk));
                for (((p, g), m), v) in parts {
                    scope.spawn(move || update(p, g, m, v));
                }
            });
        }
        (p, m, v)
    }
}

/// Saved optimizer state: steps per path.
#[derive(Serialize, Deserialize)]
struct SavedSteps {
    num_layers: usize,
    steps: BTreeMap<String, u64>,
}

impl<B: Backend> AdamW<B> {
    /// A fresh optimizer for a model whose encoder has `num_layers` layers.
    pub fn new(config: OptimConfig, num_layers: usize) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            num_layers,
            state: HashMap::new(),
            host_update: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OptimConfig {
        &self.config
    }

    /// Applies the accumulated gradients (averaged over micro-batches, clipped to the global
    /// norm) with the learning rates scaled by `lr_factor` (the schedule), and empties `grads`.
    pub fn step<AB, M>(
        &mut self,
        module: M,
        grads: &mut GradAccumulator<B>,
        lr_factor: f64,
    ) -> (M, StepStats)
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        let grad_norm = grads.global_norm();
        let clip = self
            .config
            .max_grad_norm
            .map_or(1.0, |max| crate::schedule::clip_factor(grad_norm, max));
        let grad_scale = clip / grads.micro_batches.max(1) as f64;
        let on_cpu = grads
            .grads
            .values()
            .next()
            .is_some_and(|g| matches!(g, Summed::Host(_)));
        let mut update = Update {
            host: self.host_update.unwrap_or(on_cpu),
            optim: self,
            grads: std::mem::take(&mut grads.grads),
            grad_scale,
            lr_factor,
            path: Vec::new(),
            updated: 0,
        };
        let module = module.map(&mut update);
        let updated = update.updated;
        grads.micro_batches = 0;
        (module, StepStats { grad_norm, updated })
    }

    /// Writes the moments (`<dir>/optimizer.safetensors`) and step counts (`<dir>/optimizer.json`).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut tensors = BTreeMap::new();
        let mut steps = BTreeMap::new();
        for (path, s) in &self.state {
            let n = s.m.dims()[0];
            tensors.insert(format!("m.{path}"), (vec![n], host_vec(s.m.clone())));
            tensors.insert(format!("v.{path}"), (vec![n], host_vec(s.v.clone())));
            steps.insert(path.clone(), s.steps);
        }
        write_atomic(
            &dir.join("optimizer.safetensors"),
            &serialize_tensors(&tensors),
        )?;
        let saved = SavedSteps {
            num_layers: self.num_layers,
            steps,
        };
        write_atomic(
            &dir.join("optimizer.json"),
            serde_json::to_string(&saved).expect("JSON").as_bytes(),
        )?;
        Ok(())
    }

    /// Restores the state written by [`save`](Self::save).
    pub fn load(config: OptimConfig, dir: &Path, device: &B::Device) -> Result<Self> {
        let json_path = dir.join("optimizer.json");
        let bytes = std::fs::read(&json_path).map_err(|source| TrainError::Io {
            path: json_path.clone(),
            source,
        })?;
        let saved: SavedSteps = serde_json::from_slice(&bytes)
            .map_err(|e| TrainError::Config(format!("{}: malformed: {e}", json_path.display())))?;
        let checkpoint = Checkpoint::open(&dir.join("optimizer.safetensors"))?;
        let mut optim = Self::new(config, saved.num_layers)?;
        for (path, steps) in saved.steps {
            let load = |name: String| -> Result<Tensor<B, 1>> {
                let (shape, values) = checkpoint.tensor(&name)?;
                Ok(Tensor::from_data(TensorData::new(values, shape), device))
            };
            let m = load(format!("m.{path}"))?;
            let v = load(format!("v.{path}"))?;
            optim.state.insert(path, Moments { m, v, steps });
        }
        Ok(optim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};

    type AB = Autodiff<NdArray>;

    #[derive(Module, Debug)]
    struct Net<B: Backend> {
        heads: Vec<Linear<B>>,
    }

    fn net() -> Net<AB> {
        let device = Default::default();
        let mut linear = LinearConfig::new(2, 1).init::<AB>(&device);
        linear.weight = Param::from_data(TensorData::new(vec![1.0f32, -2.0], [2, 1]), &device);
        linear.bias = Some(Param::from_data(
            TensorData::new(vec![0.5f32], [1]),
            &device,
        ));
        Net {
            heads: vec![linear],
        }
    }

    fn values<B2: Backend, const D: usize>(t: Tensor<B2, D>) -> Vec<f32> {
        t.into_data().into_vec::<f32>().unwrap()
    }

    #[test]
    fn layer_wise_rates_per_path() {
        let c = OptimConfig {
            lr: 1.0,
            head_lr: Some(3.0),
            layer_decay: 0.5,
            ..OptimConfig::default()
        };
        assert_eq!(
            c.param_lr("encoder.bert.encoder.layer.5.output.dense.weight", 6),
            1.0
        );
        assert_eq!(
            c.param_lr("encoder.bert.encoder.layer.3.output.dense.weight", 6),
            0.25
        );
        assert_eq!(
            c.param_lr("encoder.bert.encoder.layer.0.output.dense.weight", 6),
            1.0 / 32.0
        );
        assert_eq!(
            c.param_lr("encoder.bert.embeddings.word_embeddings.weight", 6),
            1.0 / 64.0
        );
        assert_eq!(c.param_lr("heads.1.dense.weight", 6), 3.0);
        assert!(!OptimConfig::decays("heads.0.dense.bias"));
        assert!(!OptimConfig::decays(
            "encoder.bert.embeddings.layer_norm.gamma"
        ));
        assert!(OptimConfig::decays(
            "encoder.bert.encoder.layer.0.output.dense.weight"
        ));
    }

    #[test]
    fn adamw_step_matches_hand_computation_with_clipping() {
        // y = w.x + b with x = [3, 4]; loss = y, so grad w = [3, 4], grad b = 1.
        let model = net();
        let x = Tensor::<AB, 2>::from_data(
            TensorData::new(vec![3.0f32, 4.0], [1, 2]),
            &Default::default(),
        );
        let loss = model.heads[0].forward(x).sum();
        let mut acc = GradAccumulator::default();
        acc.add(&model, GradientsParams::from_grads(loss.backward(), &model));
        // Global norm sqrt(9 + 16 + 1) = sqrt(26).
        assert!((acc.global_norm() - 26f64.sqrt()).abs() < 1e-6);
        let config = OptimConfig {
            lr: 0.1,
            max_grad_norm: Some(1.0),
            weight_decay: 0.5,
            ..OptimConfig::default()
        };
        let mut optim = AdamW::new(config, 0).unwrap();
        let (model, stats) = optim.step(model, &mut acc, 1.0);
        assert_eq!(stats.updated, 2);
        // First Adam step moves each element by lr * sign(g) (m_hat / sqrt(v_hat) = ±1, eps
        // negligible); weight decay scales weights by (1 - lr * wd) first, biases are not decayed.
        let w = values(model.heads[0].weight.val());
        let b = values(model.heads[0].bias.as_ref().unwrap().val());
        let expected = [1.0 * (1.0 - 0.05) - 0.1, -2.0 * (1.0 - 0.05) - 0.1];
        assert!(
            (w[0] - expected[0]).abs() < 1e-6 && (w[1] - expected[1]).abs() < 1e-6,
            "{w:?}"
        );
        assert!((b[0] - 0.4).abs() < 1e-6, "{b:?}");
    }

    #[test]
    fn accumulation_averages_micro_batches_and_state_round_trips() {
        let run = |accumulate: bool| {
            let model = net();
            let mut acc = GradAccumulator::default();
            let xs: Vec<Vec<f32>> = if accumulate {
                vec![vec![1.0, 0.0], vec![0.0, 3.0]]
            } else {
                vec![vec![0.5, 1.5]]
            };
            for x in xs {
                let x = Tensor::<AB, 2>::from_data(TensorData::new(x, [1, 2]), &Default::default());
                let loss = model.heads[0].forward(x).sum().powi_scalar(2);
                acc.add(&model, GradientsParams::from_grads(loss.backward(), &model));
            }
            let mut optim = AdamW::new(OptimConfig::default(), 0).unwrap();
            let (model, _) = optim.step(model, &mut acc, 1.0);
            (values(model.heads[0].weight.val()), optim)
        };
        let (accumulated, optim) = run(true);
        let (single, _) = run(false);
        assert_ne!(accumulated, single, "different data gives different steps");
        let dir = tempfile::tempdir().unwrap();
        optim.save(dir.path()).unwrap();
        let loaded =
            AdamW::<NdArray>::load(OptimConfig::default(), dir.path(), &Default::default())
                .unwrap();
        assert_eq!(loaded.state.len(), 2);
        for (path, s) in &optim.state {
            let l = &loaded.state[path];
            assert_eq!(l.steps, s.steps);
            assert_eq!(values(l.m.clone()), values(s.m.clone()));
            assert_eq!(values(l.v.clone()), values(s.v.clone()));
        }
    }

    /// The fused host update and the tensor-operation update agree bit for bit over several
    /// steps, on a tensor large enough to be split across threads.
    #[test]
    fn host_update_equals_tensor_update() {
        let device = Default::default();
        let run = |host: bool| {
            let mut linear = LinearConfig::new(600, 1000).init::<AB>(&device);
            let w: Vec<f32> = (0..600_000)
                .map(|i| ((i % 97) as f32 - 48.0) / 50.0)
                .collect();
            linear.weight = Param::from_data(TensorData::new(w, [600, 1000]), &device);
            linear.bias = Some(Param::from_data(
                TensorData::new(vec![0.1f32; 1000], [1000]),
                &device,
            ));
            let mut model = Net {
                heads: vec![linear],
            };
            let config = OptimConfig {
                lr: 1e-2,
                max_grad_norm: Some(0.5),
                ..OptimConfig::default()
            };
            let mut optim = AdamW::new(config, 0).unwrap();
            optim.host_update = Some(host);
            for step in 0..3 {
                let x: Vec<f32> = (0..1200)
                    .map(|i| ((i * 7 + step) % 13) as f32 - 6.0)
                    .collect();
                let x = Tensor::<AB, 2>::from_data(TensorData::new(x, [2, 600]), &device);
                let loss = model.heads[0].forward(x).powi_scalar(2).mean();
                let mut acc = GradAccumulator::default();
                acc.add(&model, GradientsParams::from_grads(loss.backward(), &model));
                model = optim.step(model, &mut acc, 0.5).0;
            }
            let m = optim.state["heads.0.weight"].m.clone();
            (values(model.heads[0].weight.val()), values(m))
        };
        let (host, tensor) = (run(true), run(false));
        assert_eq!(host, tensor);
        assert!(host
            .0
            .iter()
            .zip(0..)
            .any(|(&w, i)| w != ((i % 97) as f32 - 48.0) / 50.0));
    }
}
