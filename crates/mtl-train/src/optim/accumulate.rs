//! Gradient accumulation: the gradients of backward passes summed by parameter path.

use std::collections::BTreeMap;

use burn::module::{AutodiffModule, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use mtl_encoder::runtime::is_cpu;

use mtl_encoder::io::{visit_paths, PathVisitor};

/// Gradients summed over micro-batches, by parameter path, on the inner backend (ordered, so
/// the global norm is summed in the same order every time).
pub struct GradAccumulator<B: Backend> {
    pub(super) grads: BTreeMap<String, Summed<B>>,
    pub(super) micro_batches: usize,
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
pub(super) enum Summed<B: Backend> {
    Host(Vec<f32>),
    Device(Tensor<B, 1>),
}

impl<B: Backend> Summed<B> {
    fn new<const D: usize>(g: Tensor<B, D>) -> Self {
        if is_cpu::<B>(&g.device()) {
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

    pub(super) fn tensor(self, device: &B::Device) -> Tensor<B, 1> {
        match self {
            Self::Host(values) => {
                let n = values.len();
                Tensor::from_data(TensorData::new(values, [n]), device)
            }
            Self::Device(t) => t,
        }
    }

    pub(super) fn host(self) -> Vec<f32> {
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
}

impl<AB: AutodiffBackend> PathVisitor<AB> for CollectGrads<'_, AB::InnerBackend> {
    fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<AB, D>>) {
        if let Some(g) = self.grads.remove::<AB::InnerBackend, D>(param.id) {
            let g = Summed::new(g);
            let sum = match self.into.remove(path) {
                Some(acc) => acc.add(g),
                None => g,
            };
            self.into.insert(path.to_string(), sum);
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
            };
            visit_paths(module, &mut visitor);
        }
        self.micro_batches += 1;
    }

    /// Moves the gradients into one host vector laid out by `layout` (zeros for a parameter
    /// without a gradient), followed by one flag per parameter: 1 where it has one.
    pub(crate) fn into_flat(mut self, layout: &GradLayout) -> Vec<f32> {
        let mut flat = Vec::with_capacity(layout.len());
        let mut present = Vec::with_capacity(layout.params.len());
        for (path, n) in &layout.params {
            match self.grads.remove(path) {
                Some(g) => {
                    flat.extend_from_slice(&g.host());
                    present.push(1.0);
                }
                None => {
                    flat.resize(flat.len() + n, 0.0);
                    present.push(0.0);
                }
            }
        }
        flat.extend(present);
        flat
    }

    /// Adds gradients laid out by [`into_flat`](Self::into_flat) (summed over peers) as one
    /// backward pass: those of the parameters flagged as having one.
    pub(crate) fn add_flat(&mut self, layout: &GradLayout, flat: &[f32]) {
        let flags = &flat[layout.len() - layout.params.len()..layout.len()];
        let mut start = 0;
        for ((path, n), flag) in layout.params.iter().zip(flags) {
            let values = &flat[start..start + n];
            start += n;
            if *flag == 0.0 {
                continue;
            }
            let g = Summed::Host(values.to_vec());
            let sum = match self.grads.remove(path) {
                Some(acc) => acc.add(g),
                None => g,
            };
            self.grads.insert(path.clone(), sum);
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

    /// The summed gradients averaged over the micro-batches and multiplied by `scale`, by
    /// parameter path, as host values in the parameters' own layout (row-major).
    pub fn averaged(&self, scale: f64) -> BTreeMap<String, Vec<f32>> {
        let factor = (scale / self.micro_batches.max(1) as f64) as f32;
        self.grads
            .iter()
            .map(|(path, summed)| {
                let values = match summed {
                    Summed::Host(values) => values.clone(),
                    Summed::Device(t) => host_vec(t.clone()),
                };
                (
                    path.clone(),
                    values.into_iter().map(|v| v * factor).collect(),
                )
            })
            .collect()
    }

    /// The global L2 norm of the (averaged) gradients.
    pub fn global_norm(&self) -> f64 {
        let scale = 1.0 / self.micro_batches.max(1) as f64;
        let total: f64 = self.grads.values().map(Summed::squared_norm).sum();
        total.sqrt() * scale
    }
}

/// Where each trainable parameter's gradient lies in a flat vector ([`GradAccumulator::into_flat`]).
pub(crate) struct GradLayout {
    /// Path and element count of each parameter that trains, in path order.
    params: Vec<(String, usize)>,
}

impl GradLayout {
    /// The layout of `module`'s trainable parameters.
    pub(crate) fn of<B: Backend, M: burn::module::Module<B>>(module: &M) -> Self {
        struct Trainable(BTreeMap<String, usize>);
        impl<B: Backend> PathVisitor<B> for Trainable {
            fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
                let value = param.val();
                if value.is_require_grad() {
                    self.0
                        .insert(path.to_string(), value.shape().num_elements());
                }
            }
        }
        let mut visitor = Trainable(BTreeMap::new());
        visit_paths(module, &mut visitor);
        Self {
            params: visitor.0.into_iter().collect(),
        }
    }

    /// The flat vector's length: every gradient, then one flag per parameter.
    pub(crate) fn len(&self) -> usize {
        self.params.iter().map(|(_, n)| n).sum::<usize>() + self.params.len()
    }
}

/// Tensor data as host `f32` values in row-major order (no copy for a burn-ndarray tensor held
/// alone, one pass for a shared one).
pub(super) use mtl_encoder::ops::host_values as host_vec;
