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
use crate::ops::{packed_sentences, AttentionMask};
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
    /// Rows `start..start + len` (one sentence) and the columns of head `h` in the
    /// `[rows, width]` projections.
    fn block(
        &self,
        start: usize,
        len: usize,
        h: usize,
    ) -> ndarray::SliceInfo<[ndarray::SliceInfoElem; 2], Ix2, Ix2> {
        ndarray::s![
            start..start + len,
            h * self.head_dim..(h + 1) * self.head_dim
        ]
    }

    fn probs_len(&self) -> usize {
        self.batch * self.heads * self.seq * self.seq
    }

    /// The padded sentences as (first row, length).
    fn padded_sentences(&self) -> Vec<(usize, usize)> {
        (0..self.batch).map(|b| (b * self.seq, self.seq)).collect()
    }
}

/// The context rows, and the probabilities (after softmax, before dropout; sentence by
/// sentence, head by head) that the backward pass needs. `sentences` are (first row, length);
/// `mask` holds one bias per row, added to the scores of that row as a key.
#[allow(clippy::too_many_arguments)]
fn attention_forward(
    q: &ArrayView2<f32>,
    k: &ArrayView2<f32>,
    v: &ArrayView2<f32>,
    mask: &[f32],
    sentences: &[(usize, usize)],
    dims: Dims,
    dropout: Option<&[f32]>,
    keep_probs: bool,
) -> (Array2<f32>, Vec<f32>) {
    let heads = dims.heads;
    let longest = sentences.iter().map(|s| s.1).max().unwrap_or(0);
    let mut out = Array2::<f32>::zeros(q.raw_dim());
    let squares: usize = sentences.iter().map(|s| s.1 * s.1).sum();
    let mut kept = Vec::with_capacity(if keep_probs { heads * squares } else { 0 });
    let mut buffer = vec![0.0f32; longest * longest];
    let mut drawn = 0;
    for &(start, seq) in sentences {
        let mask = &mask[start..start + seq];
        let mut scores = ndarray::ArrayViewMut2::from_shape((seq, seq), &mut buffer[..seq * seq])
            .expect("the buffer holds the longest sentence's scores");
        for h in 0..heads {
            let block = dims.block(start, seq, h);
            let (qb, kb, vb) = (q.slice(block), k.slice(block), v.slice(block));
            product(dims.scale, &qb, &kb.t(), 0.0, &mut scores);
            let probs = scores
                .as_slice_mut()
                .expect("views of a whole buffer are contiguous");
            for row in probs.chunks_exact_mut(seq) {
                softmax_row(row, mask);
            }
            if keep_probs {
                kept.extend_from_slice(probs);
            }
            if let Some(dropout) = dropout {
                for (p, m) in probs.iter_mut().zip(&dropout[drawn..drawn + seq * seq]) {
                    *p *= m;
                }
            }
            drawn += seq * seq;
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

fn attention_dims(q: &ArrayView2<f32>, batch: usize, seq: usize, heads: usize) -> Dims {
    let head_dim = q.ncols() / heads;
    Dims {
        batch,
        seq,
        heads,
        head_dim,
        scale: (1.0 / (head_dim as f64).sqrt()) as f32,
    }
}

/// The kernel when `B` is burn-ndarray and every tensor is `f32`, packed sentences at inference
/// only; the inputs back otherwise.
pub(crate) fn attention<B: Backend>(
    inputs: AttentionInputs<B>,
) -> Result<Tensor<B, 2>, AttentionInputs<B>> {
    let (q, k, v, mask, heads, dropout_prob) = inputs;
    let mask_dtype = match &mask {
        AttentionMask::Padded(bias) => bias.dtype(),
        AttentionMask::Packed(_) => q.dtype(),
    };
    let dtypes = [q.dtype(), k.dtype(), v.dtype(), mask_dtype];
    match (Bridge::of::<B>(&dtypes), mask) {
        (Some(Bridge::Inner), mask) => {
            let [q, k, v] = [q, k, v].map(primitive::<B, Inner, 2>);
            let (q, k, v) = (view2(&q), view2(&k), view2(&v));
            let (bias, sentences, dims) = match mask {
                AttentionMask::Padded(bias) => {
                    let [batch, _, _, seq] = bias.dims();
                    let dims = attention_dims(&q, batch, seq, heads);
                    let bias = mask_values(&primitive::<B, Inner, 4>(bias));
                    (bias, dims.padded_sentences(), dims)
                }
                AttentionMask::Packed(lengths) => {
                    let dims = attention_dims(&q, 0, 0, heads);
                    (vec![0.0; q.nrows()], packed_sentences(&lengths), dims)
                }
            };
            let (out, _) = attention_forward(&q, &k, &v, &bias, &sentences, dims, None, false);
            Ok(tensor::<B, Inner, 2>(wrap2(out)))
        }
        (Some(Bridge::Autodiff), AttentionMask::Padded(bias)) => {
            let [q, k, v] = [q, k, v].map(primitive::<B, Ad, 2>);
            let [batch, _, _, seq] = bias.dims();
            let mask = mask_values(&primitive::<B, Ad, 4>(bias).primitive);
            let dims = attention_dims(&view2(&q.primitive), batch, seq, heads);
            Ok(tensor::<B, Ad, 2>(tracked(
                q,
                k,
                v,
                &mask,
                dims,
                dropout_prob,
            )))
        }
        (_, mask) => Err((q, k, v, mask, heads, dropout_prob)),
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
    let sentences = dims.padded_sentences();
    let (out, probs) = attention_forward(
        &qv,
        &kv,
        &vv,
        mask,
        &sentences,
        dims,
        dropout.as_deref(),
        keep,
    );
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
                let block = dims.block(b * seq, seq, h);
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
    use crate::ops::AttentionMask;
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
        let padded = || AttentionMask::Padded(mask.clone());
        let ours = attention((q.clone(), k.clone(), v.clone(), padded(), 4, 0.1));
        let reference = reference::attention((q, k, v, padded(), 4, 0.0));
        assert_close(&values(ours), &values(reference), 1e-5, "context");
    }

    /// Packed sentences (5, 3 and 1 tokens, no padding) give the padded call's rows for the
    /// real tokens, through the kernel and through the tensor ops.
    #[test]
    fn packed_sentences_equal_the_padded_tokens() {
        let [q, k, v] = attention_inputs::<NdArray>();
        let padded = AttentionMask::Padded(mask_bias());
        let want = values(attention((q.clone(), k.clone(), v.clone(), padded, 4, 0.0)));
        let real: Vec<usize> = (0..5).chain(5..8).chain(10..11).collect();
        let pick = |x: &Tensor<NdArray, 2>| {
            let index = real.iter().map(|&r| r as i64).collect::<Vec<_>>();
            let index = TensorData::new(index, [real.len()]);
            x.clone()
                .select(0, Tensor::from_data(index, &Default::default()))
        };
        let want: Vec<f32> = real
            .iter()
            .flat_map(|&r| want[r * 24..(r + 1) * 24].to_vec())
            .collect();
        let packed = || AttentionMask::Packed(vec![5, 3, 1].into());
        let inputs = || (pick(&q), pick(&k), pick(&v), packed(), 4, 0.0);
        let ours = values(attention(inputs()));
        assert_close(&ours, &want, 1e-5, "packed kernel");
        let tensor_ops = values(reference::attention(inputs()));
        assert_close(&tensor_ops, &want, 1e-5, "packed tensor ops");
        // Under autodiff the kernel hands packed sentences back.
        let [q, k, v] =
            [&q, &k, &v].map(|x| Tensor::<AB, 2>::from_data(x.to_data(), &Default::default()));
        let declined = super::attention((q, k, v, AttentionMask::Packed(vec![15].into()), 4, 0.0));
        assert!(declined.is_err());
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
            let padded = AttentionMask::Padded(mask.clone());
            let y = attention((q.clone(), k.clone(), v.clone(), padded, 4, prob));
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
        let mask = AttentionMask::Padded(mask_bias());
        let grads = attention((q.clone(), k.clone(), v.clone(), mask, 4, 0.0))
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
