//! AdamW over a module's parameters, keyed by path: the update, and its state on disk
//! (`optimizer.safetensors`, `optimizer.json`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::{AutodiffModule, Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use mtl_encoder::io::{map_paths, serialize_tensors, write_atomic, PathMapper};
use mtl_encoder::Checkpoint;
use serde::{Deserialize, Serialize};

use super::accumulate::{host_vec, GradAccumulator, Summed};
use super::config::OptimConfig;
use super::host::{AdamStep, HostSlot};
use crate::error::{Result, TrainError};

/// One parameter's AdamW state, and the moving average of its values when one is kept.
#[derive(Clone)]
struct Moments<B: Backend> {
    m: Tensor<B, 1>,
    v: Tensor<B, 1>,
    avg: Option<Tensor<B, 1>>,
    steps: u64,
}

/// AdamW over a module's parameters, keyed by path. Clones share the moments' storage until
/// either is updated.
#[derive(Clone)]
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
    updated: usize,
}

impl<AB: AutodiffBackend> PathMapper<AB> for Update<'_, AB::InnerBackend> {
    fn map<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<AB, D>>,
    ) -> Param<Tensor<AB, D>> {
        let Some(grad) = self.grads.remove(path) else {
            return param;
        };
        let c = &self.optim.config;
        let lr = c.param_lr(path, self.optim.num_layers) * self.lr_factor;
        let wd = if OptimConfig::decays(path) {
            c.weight_decay
        } else {
            0.0
        };
        let (beta1, beta2, eps) = (c.beta1, c.beta2, c.eps);
        let (id, tensor, mapper) = param.consume();
        let state = self.optim.state.remove(path);
        let steps = state.as_ref().map_or(0, |s| s.steps) + 1;
        let k = AdamStep {
            beta1,
            beta2,
            eps,
            grad_scale: self.grad_scale,
            decay: 1.0 - lr * wd,
            bias2: 1.0 - beta2.powi(steps as i32),
            step_size: lr / (1.0 - beta1.powi(steps as i32)),
            average: c.average_decay(steps),
        };
        let slot = Slot {
            inner: tensor.inner(),
            grad,
            state,
        };
        let (p, m, v, avg) = if self.host {
            host_update(&k, slot)
        } else {
            tensor_update(&k, slot)
        };
        let moments = Moments { m, v, avg, steps };
        self.optim.state.insert(path.to_string(), moments);
        self.updated += 1;
        let value = Tensor::<AB, D>::from_inner(p).require_grad();
        Param::from_mapped_value(id, value, mapper)
    }
}

/// A parameter, its first and its second moment, and its moving average.
type Updated<B, const D: usize> = (
    Tensor<B, D>,
    Tensor<B, 1>,
    Tensor<B, 1>,
    Option<Tensor<B, 1>>,
);

/// One parameter to update: its value, its gradient and its moments so far.
struct Slot<B: Backend, const D: usize> {
    inner: Tensor<B, D>,
    grad: Summed<B>,
    state: Option<Moments<B>>,
}

/// The update of one parameter in one fused pass over host memory ([`AdamStep::on_host`]).
fn host_update<B: Backend, const D: usize>(k: &AdamStep, slot: Slot<B, D>) -> Updated<B, D> {
    let Slot { inner, grad, state } = slot;
    let (shape, device) = (inner.shape(), inner.device());
    let n = shape.num_elements();
    let (m, v, avg) = match state {
        Some(s) => (host_vec(s.m), host_vec(s.v), s.avg.map(host_vec)),
        None => (vec![0.0; n], vec![0.0; n], None),
    };
    let slot = HostSlot {
        p: host_vec(inner),
        g: grad.host(),
        m,
        v,
        avg,
    };
    let HostSlot { p, m, v, avg, .. } = k.on_host(slot);
    let tensor = |x: Vec<f32>| Tensor::<B, 1>::from_data(TensorData::new(x, [n]), &device);
    let p = Tensor::from_data(TensorData::new(p, shape), &device);
    (p, tensor(m), tensor(v), avg.map(tensor))
}

/// The update of one parameter with tensor operations (the same `f32` arithmetic, in the same
/// order, as [`host_update`]).
fn tensor_update<B: Backend, const D: usize>(k: &AdamStep, slot: Slot<B, D>) -> Updated<B, D> {
    let Slot { inner, grad, state } = slot;
    let (shape, device) = (inner.shape(), inner.device());
    let n = shape.num_elements();
    let (beta1, beta2, eps) = (k.beta1, k.beta2, k.eps);
    let p = inner.reshape([n]);
    let g = grad.tensor(&device) * k.grad_scale;
    let (m, v, avg) = match state {
        Some(s) => (s.m, s.v, s.avg),
        None => (g.zeros_like(), g.zeros_like(), None),
    };
    let m = m * beta1 + g.clone() * (1.0 - beta1);
    let v = v * beta2 + g.clone() * g * (1.0 - beta2);
    let denom = (v.clone() / k.bias2).sqrt() + eps;
    let p = p * k.decay - (m.clone() / denom) * k.step_size;
    // The same f32 operations as the host's: the decay and its complement rounded first.
    let avg = k.average.map(|decay| match avg {
        Some(a) => a * (decay as f32) as f64 + p.clone() * ((1.0 - decay) as f32) as f64,
        None => p.clone(),
    });
    (p.reshape(shape), m, v, avg)
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
            updated: 0,
        };
        let module = map_paths(module, &mut update);
        let updated = update.updated;
        grads.micro_batches = 0;
        (module, StepStats { grad_norm, updated })
    }

    /// `module` with every parameter that has a moving average (see
    /// [`OptimConfig::ema_decay`]) replaced by it; the others as they are.
    pub fn averaged<M: Module<B>>(&self, module: M) -> M {
        struct Averages<'a, B: Backend>(&'a HashMap<String, Moments<B>>);
        impl<B: Backend> PathMapper<B> for Averages<'_, B> {
            fn map<const D: usize>(
                &mut self,
                path: &str,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                let Some(avg) = self.0.get(path).and_then(|s| s.avg.clone()) else {
                    return param;
                };
                let (id, tensor, mapper) = param.consume();
                Param::from_mapped_value(id, avg.reshape(tensor.shape()), mapper)
            }
        }
        map_paths(module, &mut Averages(&self.state))
    }

    /// Writes the moments (`<dir>/optimizer.safetensors`) and step counts (`<dir>/optimizer.json`).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut tensors = BTreeMap::new();
        let mut steps = BTreeMap::new();
        for (path, s) in &self.state {
            let n = s.m.dims()[0];
            tensors.insert(format!("m.{path}"), (vec![n], host_vec(s.m.clone())));
            tensors.insert(format!("v.{path}"), (vec![n], host_vec(s.v.clone())));
            if let Some(avg) = &s.avg {
                tensors.insert(format!("avg.{path}"), (vec![n], host_vec(avg.clone())));
            }
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
        let saved: SavedSteps =
            serde_json::from_slice(&bytes).map_err(|e| TrainError::MalformedState {
                path: json_path.clone(),
                message: e.to_string(),
            })?;
        let checkpoint = Checkpoint::open(&dir.join("optimizer.safetensors"))?;
        let averaged = config.ema_decay.is_some();
        let mut optim = Self::new(config, saved.num_layers)?;
        for (path, steps) in saved.steps {
            let load = |name: String| -> Result<Tensor<B, 1>> {
                let (shape, values) = checkpoint.tensor(&name)?;
                Ok(Tensor::from_data(TensorData::new(values, shape), device))
            };
            let m = load(format!("m.{path}"))?;
            let v = load(format!("v.{path}"))?;
            let avg = averaged.then(|| load(format!("avg.{path}"))).transpose()?;
            optim.state.insert(path, Moments { m, v, avg, steps });
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
    use burn::optim::GradientsParams;

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
                ema_decay: Some(0.9),
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
            let state = &optim.state["heads.0.weight"];
            let avg = values(state.avg.clone().unwrap());
            (
                values(model.heads[0].weight.val()),
                values(state.m.clone()),
                avg,
            )
        };
        let (host, tensor) = (run(true), run(false));
        assert_eq!(host, tensor);
        assert!(host
            .0
            .iter()
            .zip(0..)
            .any(|(&w, i)| w != ((i % 97) as f32 - 48.0) / 50.0));
    }

    /// The weights' moving average: the first update's weights, then `avg·d + w·(1 - d)` with
    /// the warmed-up decay; `averaged` swaps it in, and it survives a save and load.
    #[test]
    fn moving_average_follows_the_weights_and_round_trips() {
        let device = Default::default();
        let config = OptimConfig {
            lr: 0.1,
            ema_decay: Some(0.3),
            ..OptimConfig::default()
        };
        let mut optim = AdamW::new(config.clone(), 0).unwrap();
        let mut model = net();
        let mut expected: Option<Vec<f32>> = None;
        for step in 1..=3u64 {
            let x = Tensor::<AB, 2>::from_data(
                TensorData::new(vec![step as f32, -1.0], [1, 2]),
                &device,
            );
            let loss = model.heads[0].forward(x).sum().powi_scalar(2);
            let mut acc = GradAccumulator::default();
            acc.add(&model, GradientsParams::from_grads(loss.backward(), &model));
            model = optim.step(model, &mut acc, 1.0).0;
            let w = values(model.heads[0].weight.val());
            // Decays min(0.3, (1 + t) / (10 + t)): 0.18, 0.25, then 0.3.
            let d = config.average_decay(step).unwrap();
            assert_eq!(d, 0.3f64.min((1.0 + step as f64) / (10.0 + step as f64)));
            let (d, c) = (d as f32, (1.0 - d) as f32);
            expected = Some(match expected {
                None => w.clone(),
                Some(a) => a.iter().zip(&w).map(|(a, w)| a * d + w * c).collect(),
            });
        }
        let expected = expected.unwrap();
        let trained = values(model.heads[0].weight.val());
        let averaged = optim.averaged(model.valid());
        assert_eq!(values(averaged.heads[0].weight.val()), expected);
        assert_ne!(expected, trained, "the average lags the weights");
        assert_eq!(values(model.heads[0].weight.val()), trained);

        let dir = tempfile::tempdir().unwrap();
        optim.save(dir.path()).unwrap();
        let loaded = AdamW::<NdArray>::load(config, dir.path(), &device).unwrap();
        let again = loaded.averaged(model.valid());
        assert_eq!(values(again.heads[0].weight.val()), expected);
        // A checkpoint without averages does not load into a run that keeps them.
        let plain = AdamW::<NdArray>::new(OptimConfig::default(), 0);
        let mut plain = plain.unwrap();
        plain.state = optim.state.clone();
        plain.state.values_mut().for_each(|s| s.avg = None);
        let bare = tempfile::tempdir().unwrap();
        plain.save(bare.path()).unwrap();
        let with_ema = OptimConfig {
            ema_decay: Some(0.3),
            ..OptimConfig::default()
        };
        assert!(AdamW::<NdArray>::load(with_ema, bare.path(), &device).is_err());
    }
}
