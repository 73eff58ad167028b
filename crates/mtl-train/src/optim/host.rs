//! The AdamW update of one parameter as one pass over host memory (CPU backends).

use mtl_encoder::runtime::{cores, map_parallel};

/// The scalars of one AdamW update of one parameter.
pub(super) struct AdamStep {
    pub(super) beta1: f64,
    pub(super) beta2: f64,
    pub(super) eps: f64,
    /// Averaging over micro-batches times clipping.
    pub(super) grad_scale: f64,
    /// `1 - lr·weight_decay`.
    pub(super) decay: f64,
    /// `1 - beta2^t`.
    pub(super) bias2: f64,
    /// `lr / (1 - beta1^t)`.
    pub(super) step_size: f64,
    /// The decay of the weights' moving average this step (`None`: no average kept).
    pub(super) average: Option<f64>,
}

impl AdamStep {
    /// The update as one pass over host memory, large tensors split across the cores, with the
    /// same `f32` arithmetic, in the same order, as the tensor-operation path. On CPU backends
    /// the data moves in and out of the tensors without copies; the tensor path makes about ten
    /// passes and as many allocations. With an average, it follows the updated weights
    /// (`avg·decay + p·(1 - decay)`; the updated weights themselves when there is none yet).
    pub(super) fn on_host(&self, slot: HostSlot) -> HostSlot {
        let HostSlot {
            mut p,
            g,
            mut m,
            mut v,
            mut avg,
        } = slot;
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
        let (d, c) = self.average.map_or((0.0, 0.0), |a| (f(a), f(1.0 - a)));
        let update = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let g = g * scale;
                *m = *m * b1 + g * c1;
                *v = *v * b2 + g * g * c2;
                *p = *p * decay - (*m / ((*v / bias2).sqrt() + eps)) * step;
            }
        };
        let average = |avg: Option<&mut [f32]>, p: &[f32]| {
            if let Some(avg) = avg {
                avg.iter_mut()
                    .zip(p)
                    .for_each(|(a, &p)| *a = *a * d + p * c);
            }
        };
        // Large tensors (the word embeddings) are split over the cores.
        let workers = cores();
        let chunk = p.len().div_ceil(workers).max(1 << 18);
        // An average to follow (none yet at the first update: it starts as the weights).
        if self.average.is_none() {
            avg = None;
        }
        let mut avg_chunks: Vec<Option<&mut [f32]>> = match avg.as_mut() {
            Some(a) => a.chunks_mut(chunk).map(Some).collect(),
            None => Vec::new(),
        };
        avg_chunks.resize_with(p.len().div_ceil(chunk), || None);
        let parts: Vec<_> = p
            .chunks_mut(chunk)
            .zip(g.chunks(chunk))
            .zip(m.chunks_mut(chunk))
            .zip(v.chunks_mut(chunk))
            .zip(avg_chunks)
            .collect();
        map_parallel(parts, workers, |_, ((((p, g), m), v), a)| {
            update(p, g, m, v);
            average(a, p);
        });
        if self.average.is_some() && avg.is_none() {
            avg = Some(p.clone());
        }
        HostSlot { p, g, m, v, avg }
    }
}

/// One parameter's values, gradient, moments and weight average, flat in host memory.
pub(super) struct HostSlot {
    pub(super) p: Vec<f32>,
    pub(super) g: Vec<f32>,
    pub(super) m: Vec<f32>,
    pub(super) v: Vec<f32>,
    pub(super) avg: Option<Vec<f32>>,
}
