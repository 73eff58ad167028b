//! Multi-head scaled dot-product attention over tokens flattened to rows, one sentence and head
//! at a time on strided views of the projections (no head split or merge copies):
//! `softmax(Q·Kᵀ/√d + mask)·V`, with dropout on the probabilities under autodiff (masks from
//! [`dropout_mask`], drawn in the order of a `[batch, heads, seq, seq]` tensor); its backward
//! pass written out.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ndarray::NdArrayTensor;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use ndarray::{Array2, ArrayView2, Ix2};

use super::{primitive, product, tensor, view, view2, wrap2, Ad, AdPrimitive, Bridge, Inner};
use crate::ops::inputs::AttentionInputs;
use crate::ops::math::exp_f32;
use crate::runtime::dropout_mask;

/// The sizes of an attention call.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    scale: f32,
}

impl Dims {
    /// Rows and columns of sentence `b`'s head `h` in the `[rows, width]` projections.
    fn block(
        &self,
        b: usize,
        h: usize,
    ) -> ndarray::SliceInfo<[ndarray::SliceInfoElem; 2], Ix2, Ix2> {
        ndarray::s![
            b * self.seq..(b + 1) * self.seq,
            h * self.head_dim..(h + 1) * self.head_dim
        ]
    }

    fn probs_len(&self) -> usize {
        self.batch * self.heads * self.seq * self.seq
    }
}

/// The context rows, and the probabilities (after softmax, before dropout) that the backward
/// pass needs.
fn attention_forward(
    q: &ArrayView2<f32>,
    k: &ArrayView2<f32>,
    v: &ArrayView2<f32>,
    mask: &[f32],
    dims: Dims,
    dropout: Option<&[f32]>,
    keep_probs: bool,
) -> (Array2<f32>, Vec<f32>) {
    let Dims {
        batch, seq, heads, ..
    } = dims;
    let mut out = Array2::<f32>::zeros(q.raw_dim());
    let mut kept = Vec::with_capacity(if keep_probs { dims.probs_len() } else { 0 });
    let mut scores = Array2::<f32>::zeros((seq, seq));
    for b in 0..batch {
        let mask = &mask[b * seq..(b + 1) * seq];
        for h in 0..heads {
            let block = dims.block(b, h);
            let (qb, kb, vb) = (q.slice(block), k.slice(block), v.slice(block));
            product(dims.scale, &qb, &kb.t(), 0.0, &mut scores);
            let probs = scores.as_slice_mut().expect("fresh arrays are contiguous");
            for row in probs.chunks_exact_mut(seq) {
                softmax_row(row, mask);
            }
            if keep_probs {
                kept.extend_from_slice(probs);
            }
            if let Some(dropout) = dropout {
                let start = (b * heads + h) * seq * seq;
                for (p, m) in probs.iter_mut().zip(&dropout[start..start + seq * seq]) {
                    *p *= m;
                }
            }
            let mut ctx = out.slice_mut(block);
            product(1.0, &scores, &vb, 0.0, &mut ctx);
        }
    }
    (out, kept)
}

/// `row + mask`, then softmax, in place.
fn softmax_row(row: &mut [f32], mask: &[f32]) {
    let mut max = f32::NEG_INFINITY;
    for (x, m) in row.iter_mut().zip(mask) {
        *x += m;
        max = max.max(*x);
    }
    let mut sum = 0.0;
    for x in row.iter_mut() {
        *x = exp_f32(*x - max);
        sum += *x;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

fn mask_values(mask_bias: &NdArrayTensor) -> Vec<f32> {
    view(mask_bias).iter().copied().collect()
}

fn attention_dims(q: &ArrayView2<f32>, mask: &[f32], mask_dims: &[usize], heads: usize) -> Dims {
    let (batch, seq) = (mask_dims[0], mask_dims[3]);
    debug_assert_eq!(mask.len(), batch * seq);
    let head_dim = q.ncols() / heads;
    Dims {
        batch,
        seq,
        heads,
        head_dim,
        scale: (1.0 / (head_dim as f64).sqrt()) as f32,
    }
}

/// The kernel when `B` is burn-ndarray and every tensor is `f32`; the inputs back otherwise.
pub(crate) fn attention<B: Backend>(
    inputs: AttentionInputs<B>,
) -> Result<Tensor<B, 2>, AttentionInputs<B>> {
    let (q, k, v, mask_bias, heads, dropout_prob) = inputs;
    let dtypes = [q.dtype(), k.dtype(), v.dtype(), mask_bias.dtype()];
    let mask_dims = mask_bias.dims();
    match Bridge::of::<B>(&dtypes) {
        None => Err((q, k, v, mask_bias, heads, dropout_prob)),
        Some(Bridge::Inner) => {
            let [q, k, v] = [q, k, v].map(primitive::<B, Inner, 2>);
            let mask = mask_values(&primitive::<B, Inner, 4>(mask_bias));
            let (q, k, v) = (view2(&q), view2(&k), view2(&v));
            let dims = attention_dims(&q, &mask, &mask_dims, heads);
            let (out, _) = attention_forward(&q, &k, &v, &mask, dims, None, false);
            Ok(tensor::<B, Inner, 2>(wrap2(out)))
        }
        Some(Bridge::Autodiff) => {
            let [q, k, v] = [q, k, v].map(primitive::<B, Ad, 2>);
            let mask = mask_values(&primitive::<B, Ad, 4>(mask_bias).primitive);
            let dims = attention_dims(&view2(&q.primitive), &mask, &mask_dims, heads);
            Ok(tensor::<B, Ad, 2>(tracked(
                q,
                k,
                v,
                &mask,
                dims,
                dropout_prob,
            )))
        }
    }
}

/// Attention as one step of the autodiff graph, with dropout on the probabilities when
/// `dropout_prob > 0`.
fn tracked(
    q: AdPrimitive,
    k: AdPrimitive,
    v: AdPrimitive,
    mask: &[f32],
    dims: Dims,
    dropout_prob: f64,
) -> AdPrimitive {
    let (qv, kv, vv) = (
        view2(&q.primitive),
        view2(&k.primitive),
        view2(&v.primitive),
    );
    let dropout = (dropout_prob > 0.0).then(|| dropout_mask(dims.probs_len(), dropout_prob));
    let keep = q.is_tracked() || k.is_tracked() || v.is_tracked();
    let (out, probs) = attention_forward(&qv, &kv, &vv, mask, dims, dropout.as_deref(), keep);
    let out = wrap2(out);
    match AttentionStep
        .prepare::<NoCheckpointing>([q.node.clone(), k.node.clone(), v.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            AttentionState {
                q: q.primitive.clone(),
                k: k.primitive.clone(),
                v: v.primitive.clone(),
                probs,
                dropout,
                dims,
            },
            out,
        ),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

#[derive(Debug)]
struct AttentionStep;

#[derive(Clone, Debug)]
struct AttentionState {
    q: NdArrayTensor,
    k: NdArrayTensor,
    v: NdArrayTensor,
    probs: Vec<f32>,
    dropout: Option<Vec<f32>>,
    dims: Dims,
}

impl Backward<Inner, 3> for AttentionStep {
    type State = AttentionState;

    /// With `P` the probabilities, `M` the dropout mask and `G` the context's gradient, per
    /// sentence and head: `dV = (P⊙M)ᵀ·G`, `dP = (G·Vᵀ)⊙M`, `dS = P⊙(dP − rowsum(dP⊙P))`,
    /// `dQ = dS·K/√d`, `dK = dSᵀ·Q/√d`.
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let grad = grads.consume::<Inner>(&ops.node);
        let g = view2(&grad);
        let AttentionState {
            q,
            k,
            v,
            probs,
            dropout,
            dims,
        } = ops.state;
        let (q, k, v) = (view2(&q), view2(&k), view2(&v));
        let Dims {
            batch, seq, heads, ..
        } = dims;
        let mut dq = node_q.is_some().then(|| Array2::<f32>::zeros(q.raw_dim()));
        let mut dk = node_k.is_some().then(|| Array2::<f32>::zeros(k.raw_dim()));
        let mut dv = node_v.is_some().then(|| Array2::<f32>::zeros(v.raw_dim()));
        let mut dropped = Array2::<f32>::zeros((seq, seq));
        let mut ds = Array2::<f32>::zeros((seq, seq));
        for b in 0..batch {
            for h in 0..heads {
                let block = dims.block(b, h);
                let start = (b * heads + h) * seq * seq;
                let p = &probs[start..start + seq * seq];
                let mask = dropout.as_ref().map(|m| &m[start..start + seq * seq]);
                let gb = g.slice(block);
                if let Some(dv) = dv.as_mut() {
                    let pd = dropped.as_slice_mut().expect("contiguous");
                    pd.copy_from_slice(p);
                    if let Some(mask) = mask {
                        pd.iter_mut().zip(mask).for_each(|(x, m)| *x *= m);
                    }
                    product(1.0, &dropped.t(), &gb, 0.0, &mut dv.slice_mut(block));
                }
                if dq.is_none() && dk.is_none() {
                    continue;
                }
                product(1.0, &gb, &v.slice(block).t(), 0.0, &mut ds);
                let dsv = ds.as_slice_mut().expect("contiguous");
                if let Some(mask) = mask {
                    dsv.iter_mut().zip(mask).for_each(|(x, m)| *x *= m);
                }
                for (row, prow) in dsv.chunks_exact_mut(seq).zip(p.chunks_exact(seq)) {
                    let dot: f32 = row.iter().zip(prow).map(|(d, p)| d * p).sum();
                    row.iter_mut()
                        .zip(prow)
                        .for_each(|(d, p)| *d = p * (*d - dot));
                }
                if let Some(dq) = dq.as_mut() {
                    product(
                        dims.scale,
                        &ds,
                        &k.slice(block),
                        0.0,
                        &mut dq.slice_mut(block),
                    );
                }
                if let Some(dk) = dk.as_mut() {
                    product(
                        dims.scale,
                        &ds.t(),
                        &q.slice(block),
                        0.0,
                        &mut dk.slice_mut(block),
                    );
                }
            }
        }
        for (node, d) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
            if let (Some(node), Some(d)) = (node, d) {
                grads.register::<Inner>(node.id, wrap2(d));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorData};

    use crate::ops::inputs::AttentionInputs;
    use crate::ops::reference;
    use crate::ops::testing::{assert_close, normal, values, AB};
    use crate::runtime::{dropout_mask, seed_dropout};

    /// Through the kernel, which must take the inputs.
    fn attention<B: Backend>(inputs: AttentionInputs<B>) -> Tensor<B, 2> {
        let Ok(y) = super::attention(inputs) else {
            panic!("the kernel takes f32 burn-ndarray tensors")
        };
        y
    }

    /// Three sentences of 5 tokens (the second padded after 3, the third after 1), 4 heads of 6.
    fn attention_inputs<B: Backend>() -> [Tensor<B, 2>; 3] {
        [7, 8, 9].map(|seed| normal::<B, 2>([15, 24], 0.0, 1.0, seed))
    }

    fn mask_bias<B: Backend>() -> Tensor<B, 4> {
        let mut bias = vec![0.0f32; 15];
        bias[8..10].fill(-1e4);
        bias[11..15].fill(-1e4);
        Tensor::from_data(TensorData::new(bias, [3, 1, 1, 5]), &Default::default())
    }

    #[test]
    fn attention_at_inference_equals_the_tensor_ops() {
        let [q, k, v] = attention_inputs::<NdArray>();
        let mask = mask_bias::<NdArray>();
        let ours = attention((q.clone(), k.clone(), v.clone(), mask.clone(), 4, 0.1));
        let reference = reference::attention((q, k, v, mask, 4, 0.0));
        assert_close(&values(ours), &values(reference), 1e-5, "context");
    }

    /// Attention in `f64` on the host, row by row (the definition, independent of burn and of
    /// the kernel's blocking): the context for row-major q, k, v and a `[batch * seq]` mask.
    fn host_attention(
        [q, k, v]: [&[f64]; 3],
        mask: &[f64],
        dropout: Option<&[f64]>,
        (batch, seq, heads, width): (usize, usize, usize, usize),
    ) -> Vec<f64> {
        let d = width / heads;
        let scale = 1.0 / (d as f64).sqrt();
        let mut out = vec![0.0; batch * seq * width];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..seq {
                    let row = (b * seq + i) * width + h * d;
                    let mut p: Vec<f64> = (0..seq)
                        .map(|j| {
                            let col = (b * seq + j) * width + h * d;
                            let dot: f64 = (0..d).map(|c| q[row + c] * k[col + c]).sum();
                            dot * scale + mask[b * seq + j]
                        })
                        .collect();
                    let max = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    p.iter_mut().for_each(|x| *x = (*x - max).exp());
                    let sum: f64 = p.iter().sum();
                    for (j, p) in p.iter().enumerate() {
                        let mut p = p / sum;
                        if let Some(m) = dropout {
                            p *= m[((b * heads + h) * seq + i) * seq + j];
                        }
                        let col = (b * seq + j) * width + h * d;
                        for c in 0..d {
                            out[row + c] += p * v[col + c];
                        }
                    }
                }
            }
        }
        out
    }

    /// Under autodiff, with and without dropout: the context against [`host_attention`], and
    /// the gradients of q, k and v of `sum(context ⊙ weights)` against central differences of
    /// it in `f64`. (burn's own operations are no reference here: burn-ndarray's SIMD kernels,
    /// on in the workspace build, move its attention gradients by up to 2e-3 relative, `f64`
    /// included.)
    #[test]
    fn attention_gradients_match_finite_differences() {
        let [q, k, v] = attention_inputs::<AB>();
        let mask = mask_bias::<AB>();
        let weights = normal::<AB, 2>([15, 24], 0.0, 1.0, 10);
        let host = |t: &Tensor<AB, 2>| -> Vec<f64> {
            values(t.clone()).iter().map(|&x| x as f64).collect()
        };
        let (mask64, weights64) = (
            values(mask.clone())
                .iter()
                .map(|&x| x as f64)
                .collect::<Vec<_>>(),
            host(&weights),
        );
        let dims = (3, 5, 4, 24);
        for prob in [0.0, 0.3] {
            let [q, k, v] = [&q, &k, &v].map(|t| t.clone().detach().require_grad());
            seed_dropout(42);
            let y = attention((q.clone(), k.clone(), v.clone(), mask.clone(), 4, prob));
            let grads = (y.clone() * weights.clone()).sum().backward();
            let ours = [
                values(y),
                values(q.grad(&grads).unwrap()),
                values(k.grad(&grads).unwrap()),
                values(v.grad(&grads).unwrap()),
            ];
            seed_dropout(42);
            let dropout: Option<Vec<f64>> = (prob > 0.0).then(|| {
                dropout_mask(3 * 4 * 5 * 5, prob)
                    .iter()
                    .map(|&m| m as f64)
                    .collect()
            });
            let mut inputs = [host(&q), host(&k), host(&v)];
            let loss = |inputs: &[Vec<f64>; 3]| -> f64 {
                let out = host_attention(
                    [&inputs[0], &inputs[1], &inputs[2]],
                    &mask64,
                    dropout.as_deref(),
                    dims,
                );
                out.iter().zip(&weights64).map(|(o, w)| o * w).sum()
            };
            let context = host_attention(
                [&inputs[0], &inputs[1], &inputs[2]],
                &mask64,
                dropout.as_deref(),
                dims,
            );
            let context: Vec<f32> = context.iter().map(|&x| x as f32).collect();
            assert_close(
                &ours[0],
                &context,
                1e-5,
                &format!("context (dropout {prob})"),
            );
            for (which, what) in ["dq", "dk", "dv"].iter().enumerate() {
                let numeric: Vec<f32> = (0..inputs[which].len())
                    .map(|i| {
                        let step = 1e-5;
                        let x = inputs[which][i];
                        inputs[which][i] = x + step;
                        let up = loss(&inputs);
                        inputs[which][i] = x - step;
                        let down = loss(&inputs);
                        inputs[which][i] = x;
                        ((up - down) / (2.0 * step)) as f32
                    })
                    .collect();
                assert_close(
                    &ours[which + 1],
                    &numeric,
                    1e-5,
                    &format!("{what} (dropout {prob})"),
                );
            }
        }
    }

    /// Only the inputs that need a gradient get one.
    #[test]
    fn attention_gradients_follow_what_is_tracked() {
        let [q, k, v] = attention_inputs::<AB>();
        let v = v.require_grad();
        let grads = attention((q.clone(), k.clone(), v.clone(), mask_bias(), 4, 0.0))
            .sum()
            .backward();
        assert!(q.grad(&grads).is_none() && k.grad(&grads).is_none());
        // Each row of probabilities sums to 1, so the gradient of the sum with respect to V
        // sums to the number of rows times the width.
        let dv = values(v.grad(&grads).unwrap());
        let total: f32 = dv.iter().sum();
        assert!((total - 15.0 * 24.0).abs() < 1e-3, "{total}");
    }
}
