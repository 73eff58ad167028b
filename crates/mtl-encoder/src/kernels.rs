//! CPU kernels for burn-ndarray, at inference and under autodiff.
//!
//! burn-ndarray copies both operands of every matrix product into fresh arrays before
//! multiplying (its reshape to three dimensions copies even contiguous data, and the transposed
//! operands of the backward pass are gathered element by element); under autodiff, softmax and
//! LayerNorm are chains of about ten operations, each a pass over memory forward and back; GELU's
//! `erf` runs in `f64` per element. On `NdArray` and `Autodiff<NdArray>` the model's linear
//! layers, attention, LayerNorm and GELU run here instead:
//!
//! - matrix products read the arrays where they lie (ndarray's `general_mat_mul`, which hands
//!   matrixmultiply, or BLAS with the `openblas` feature, the strides of transposed views);
//! - attention runs one sentence and head at a time on strided views of the Q, K and V
//!   projections (no head split or merge copies), softmax and dropout in place;
//! - LayerNorm and GELU are one loop each (GELU in AVX2 where the CPU has it);
//! - under autodiff each is one step of the graph, whose backward pass is written out (the same
//!   products; softmax's, LayerNorm's and GELU's exact derivatives).
//!
//! Any other backend, or a tensor that is not `f32`, takes burn's own operations, so the model
//! stays generic over `B: Backend`. The dispatch is by type: a `Tensor<B, D>` is moved into a
//! `Tensor<NdArray, D>` (or `Tensor<Autodiff<NdArray>, D>`) when `B` is that type, and back. Tests
//! check values and gradients against burn's operations (attention's gradients against central
//! differences in `f64`).

use burn::nn::Linear;
use burn::tensor::{backend::Backend, DType, Tensor};

/// `x·W + b` for one of the model's linear layers: burn-ndarray's matrix products without their
/// copies where the backend is `NdArray` or `Autodiff<NdArray>` (see the module's
/// documentation), `Linear::forward` elsewhere.
///
/// # Shapes
/// - x: `[rows, d_input]` -> `[rows, d_output]`
pub fn linear<B: Backend>(layer: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    #[cfg(feature = "ndarray")]
    let x = match &layer.bias {
        Some(bias) => match cpu::linear(x, layer.weight.val(), bias.val()) {
            Ok(y) => return y,
            Err(x) => x,
        },
        None => x,
    };
    layer.forward(x)
}

/// GELU on burn-ndarray, at inference or under autodiff (with the exact derivative); the
/// tensor back where the backend is another.
///
/// # Shapes
/// - x: any -> same
pub(crate) fn gelu<B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    #[cfg(feature = "ndarray")]
    return cpu::gelu(x);
    #[cfg(not(feature = "ndarray"))]
    Err(x)
}

/// Whether [`layer_norm`] and [`attention`] run for tensors of these element types: `B` is
/// `NdArray` or `Autodiff<NdArray>` and every tensor is `f32`.
#[cfg_attr(not(feature = "ndarray"), allow(unused_variables))]
pub(crate) fn applies<B: Backend>(dtypes: &[DType]) -> bool {
    #[cfg(feature = "ndarray")]
    return cpu::is_cpu::<B>() && dtypes.iter().all(|d| *d == DType::F32);
    #[cfg(not(feature = "ndarray"))]
    false
}

/// LayerNorm over the last axis in one pass per row (and one backward step under autodiff):
/// `(x − mean)/√(var + ε)·γ + β`, burn's arithmetic in `f32`. Callers check
/// [`applies`] first.
///
/// # Shapes
/// - x: `[..., d]`, gamma, beta: `[d]` -> `[..., d]`
#[cfg_attr(not(feature = "ndarray"), allow(unused_variables))]
pub(crate) fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "ndarray")]
    return cpu::layer_norm(x, gamma, beta, epsilon);
    #[cfg(not(feature = "ndarray"))]
    unreachable!("`applies` is false without the ndarray feature")
}

/// Multi-head scaled dot-product attention over tokens flattened to rows, one sentence and head
/// at a time on strided views of the projections (no head split or merge copies):
/// `softmax(Q·Kᵀ/√d + mask)·V`, with dropout on the probabilities (masks from
/// [`crate::dropout::dropout_mask`], drawn in the order of a `[batch, heads, seq, seq]` tensor)
/// when `dropout_prob > 0` under autodiff. Under autodiff it is one step of the graph. Callers
/// check [`applies`] first.
///
/// # Shapes
/// - q, k, v: `[batch * seq, heads * head_dim]`, mask_bias: `[batch, 1, 1, seq]` ->
///   `[batch * seq, heads * head_dim]`
#[cfg_attr(not(feature = "ndarray"), allow(unused_variables))]
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    mask_bias: Tensor<B, 4>,
    heads: usize,
    dropout_prob: f64,
) -> Tensor<B, 2> {
    #[cfg(feature = "ndarray")]
    return cpu::attention(q, k, v, mask_bias, heads, dropout_prob);
    #[cfg(not(feature = "ndarray"))]
    unreachable!("`applies` is false without the ndarray feature")
}

#[cfg(feature = "ndarray")]
mod cpu {
    use std::any::{Any, TypeId};
    use std::borrow::Cow;

    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
    use burn::backend::ndarray::NdArrayTensor;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::backend::{Backend, BackendTypes};
    use burn::tensor::{Tensor, TensorPrimitive};
    use ndarray::linalg::general_mat_mul;
    use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, Axis, Ix1, Ix2, Zip};

    use crate::activation::{
        exp_f32, gelu_backward_slice, gelu_derivative_f32, gelu_f32, gelu_slice,
    };
    use crate::dropout::dropout_mask;

    type Inner = NdArray;
    type Ad = Autodiff<Inner>;
    type AdPrimitive = <Ad as BackendTypes>::FloatTensorPrimitive;

    pub(super) fn is_cpu<B: Backend>() -> bool {
        TypeId::of::<B>() == TypeId::of::<Inner>() || TypeId::of::<B>() == TypeId::of::<Ad>()
    }

    /// `value` as a `U` when `T` is `U`, else `value` back.
    fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
        if TypeId::of::<T>() != TypeId::of::<U>() {
            return Err(value);
        }
        let mut slot = Some(value);
        let target = (&mut slot as &mut dyn Any)
            .downcast_mut::<Option<U>>()
            .expect("T is U");
        Ok(target.take().expect("filled above"))
    }

    /// The tensor's float primitive, if `B` is `To`.
    fn primitive<B: Backend, To: Backend, const D: usize>(
        tensor: Tensor<B, D>,
    ) -> Result<<To as BackendTypes>::FloatTensorPrimitive, Tensor<B, D>> {
        cast::<Tensor<B, D>, Tensor<To, D>>(tensor).map(|t| t.into_primitive().tensor())
    }

    /// A float primitive of `From` as a tensor of `B` (which is `From`).
    fn tensor<B: Backend, From: Backend, const D: usize>(
        primitive: <From as BackendTypes>::FloatTensorPrimitive,
    ) -> Tensor<B, D> {
        let tensor = Tensor::<From, D>::from_primitive(TensorPrimitive::Float(primitive));
        cast::<Tensor<From, D>, Tensor<B, D>>(tensor)
            .ok()
            .expect("called only when B is From")
    }

    fn view(tensor: &NdArrayTensor) -> Option<ArrayViewD<'_, f32>> {
        match tensor {
            NdArrayTensor::F32(storage) => Some(storage.view()),
            _ => None,
        }
    }

    fn view2(tensor: &NdArrayTensor) -> Option<ArrayView2<'_, f32>> {
        view(tensor)?.into_dimensionality::<Ix2>().ok()
    }

    fn wrap(array: ArrayD<f32>) -> NdArrayTensor {
        NdArrayTensor::from(array.into_shared())
    }

    fn wrap2(array: Array2<f32>) -> NdArrayTensor {
        wrap(array.into_dyn())
    }

    /// `a·b`, one matrix product on the views' strides.
    fn matmul(a: &ArrayView2<f32>, b: &ArrayView2<f32>) -> Array2<f32> {
        let mut out = Array2::zeros((a.nrows(), b.ncols()));
        general_mat_mul(1.0, a, b, 0.0, &mut out);
        out
    }

    /// `x·w + b`, `None` when a tensor is not `f32`.
    fn linear_forward(
        x: &NdArrayTensor,
        w: &NdArrayTensor,
        b: &NdArrayTensor,
    ) -> Option<NdArrayTensor> {
        let (x, w, b) = (view2(x)?, view2(w)?, view(b)?);
        let b = b.into_dimensionality::<Ix1>().ok()?;
        let mut out = Array2::zeros((x.nrows(), w.ncols()));
        out.assign(&b.broadcast((x.nrows(), w.ncols()))?);
        general_mat_mul(1.0, &x, &w, 1.0, &mut out);
        Some(wrap2(out))
    }

    pub(super) fn linear<B: Backend>(
        x: Tensor<B, 2>,
        weight: Tensor<B, 2>,
        bias: Tensor<B, 1>,
    ) -> Result<Tensor<B, 2>, Tensor<B, 2>> {
        if TypeId::of::<B>() == TypeId::of::<Inner>() {
            let x = primitive::<B, Inner, 2>(x)?;
            let (w, b) = (
                primitive::<B, Inner, 2>(weight).ok().expect("B is Inner"),
                primitive::<B, Inner, 1>(bias).ok().expect("B is Inner"),
            );
            return match linear_forward(&x, &w, &b) {
                Some(y) => Ok(tensor::<B, Inner, 2>(y)),
                None => Ok(burn::tensor::module::linear(
                    tensor::<B, Inner, 2>(x),
                    tensor::<B, Inner, 2>(w),
                    Some(tensor::<B, Inner, 1>(b)),
                )),
            };
        }
        if TypeId::of::<B>() == TypeId::of::<Ad>() {
            let x = primitive::<B, Ad, 2>(x)?;
            let (w, b) = (
                primitive::<B, Ad, 2>(weight).ok().expect("B is Ad"),
                primitive::<B, Ad, 1>(bias).ok().expect("B is Ad"),
            );
            return Ok(tensor::<B, Ad, 2>(linear_tracked(x, w, b)));
        }
        Err(x)
    }

    /// The linear layer's autodiff step. State: the input when the weight needs its gradient,
    /// the weight when the input does.
    #[derive(Debug)]
    struct LinearStep;

    impl Backward<Inner, 3> for LinearStep {
        type State = (Option<NdArrayTensor>, Option<NdArrayTensor>);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_x, node_w, node_b] = ops.parents;
            let grad = grads.consume::<Inner>(&ops.node);
            let g = view2(&grad).expect("the forward pass checked f32");
            let (x, w) = ops.state;
            if let (Some(node), Some(w)) = (node_x, &w) {
                let w = view2(w).expect("checked f32");
                grads.register::<Inner>(node.id, wrap2(matmul(&g, &w.t())));
            }
            if let (Some(node), Some(x)) = (node_w, &x) {
                let x = view2(x).expect("checked f32");
                grads.register::<Inner>(node.id, wrap2(matmul(&x.t(), &g)));
            }
            if let Some(node) = node_b {
                grads.register::<Inner>(node.id, wrap(g.sum_axis(Axis(0)).into_dyn()));
            }
        }
    }

    fn linear_tracked(x: AdPrimitive, w: AdPrimitive, b: AdPrimitive) -> AdPrimitive {
        let Some(y) = linear_forward(&x.primitive, &w.primitive, &b.primitive) else {
            let y = burn::tensor::module::linear(
                Tensor::<Ad, 2>::from_primitive(TensorPrimitive::Float(x)),
                Tensor::<Ad, 2>::from_primitive(TensorPrimitive::Float(w)),
                Some(Tensor::<Ad, 1>::from_primitive(TensorPrimitive::Float(b))),
            );
            return y.into_primitive().tensor();
        };
        match LinearStep
            .prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x_state = w.is_tracked().then(|| x.primitive.clone());
                let w_state = x.is_tracked().then(|| w.primitive.clone());
                prep.finish((x_state, w_state), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    /// GELU over an `f32` array, in place where the array is held alone (else on a copy), in
    /// one loop over contiguous memory; the tensor back if it is not `f32`.
    fn gelu_forward(x: NdArrayTensor) -> Result<NdArrayTensor, NdArrayTensor> {
        match x {
            NdArrayTensor::F32(storage) => {
                let mut values = storage.into_owned();
                match values.as_slice_memory_order_mut() {
                    Some(slice) => gelu_slice(slice),
                    None => values.mapv_inplace(gelu_f32),
                }
                Ok(NdArrayTensor::from(values))
            }
            other => Err(other),
        }
    }

    pub(super) fn gelu<B: Backend, const D: usize>(
        x: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        if TypeId::of::<B>() == TypeId::of::<Inner>() {
            let x = primitive::<B, Inner, D>(x)?;
            return gelu_forward(x)
                .map(tensor::<B, Inner, D>)
                .map_err(tensor::<B, Inner, D>);
        }
        if TypeId::of::<B>() == TypeId::of::<Ad>() {
            let x = primitive::<B, Ad, D>(x)?;
            return match gelu_tracked(x) {
                Ok(y) => Ok(tensor::<B, Ad, D>(y)),
                Err(x) => Err(tensor::<B, Ad, D>(x)),
            };
        }
        Err(x)
    }

    /// GELU's autodiff step; state: the input.
    #[derive(Debug)]
    struct GeluStep;

    impl Backward<Inner, 1> for GeluStep {
        type State = NdArrayTensor;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let x = ops.state;
            unary::<Inner, _>(ops.parents, ops.node, grads, |grad| {
                let x = view(&x).expect("checked f32");
                let NdArrayTensor::F32(grad) = grad else {
                    unreachable!("gradients of an f32 tensor are f32")
                };
                let mut grad = grad.into_owned();
                match (x.as_slice(), grad.as_slice_mut()) {
                    (Some(x), Some(g)) => gelu_backward_slice(g, x),
                    _ => Zip::from(&mut grad)
                        .and(&x)
                        .for_each(|g, &x| *g *= gelu_derivative_f32(x)),
                }
                NdArrayTensor::from(grad)
            });
        }
    }

    fn gelu_tracked(x: AdPrimitive) -> Result<AdPrimitive, AdPrimitive> {
        if !matches!(x.primitive, NdArrayTensor::F32(_)) {
            return Err(x);
        }
        let y = gelu_forward(x.primitive.clone()).ok().expect("checked f32");
        Ok(
            match GeluStep
                .prepare::<NoCheckpointing>([x.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => prep.finish(x.primitive, y),
                OpsKind::UnTracked(prep) => prep.finish(y),
            },
        )
    }

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
                general_mat_mul(dims.scale, &qb, &kb.t(), 0.0, &mut scores);
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
                general_mat_mul(1.0, &scores, &vb, 0.0, &mut ctx);
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
        view(mask_bias)
            .expect("checked f32")
            .iter()
            .copied()
            .collect()
    }

    fn attention_dims(
        q: &ArrayView2<f32>,
        mask: &[f32],
        mask_dims: &[usize],
        heads: usize,
    ) -> Dims {
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

    pub(super) fn attention<B: Backend>(
        q: Tensor<B, 2>,
        k: Tensor<B, 2>,
        v: Tensor<B, 2>,
        mask_bias: Tensor<B, 4>,
        heads: usize,
        dropout_prob: f64,
    ) -> Tensor<B, 2> {
        let mask_dims = mask_bias.dims();
        if TypeId::of::<B>() == TypeId::of::<Inner>() {
            let [q, k, v] =
                [q, k, v].map(|t| primitive::<B, Inner, 2>(t).ok().expect("B is Inner"));
            let mask = mask_values(
                &primitive::<B, Inner, 4>(mask_bias)
                    .ok()
                    .expect("B is Inner"),
            );
            let (q, k, v) = (
                view2(&q).expect("f32"),
                view2(&k).expect("f32"),
                view2(&v).expect("f32"),
            );
            let dims = attention_dims(&q, &mask, &mask_dims, heads);
            let (out, _) = attention_forward(&q, &k, &v, &mask, dims, None, false);
            return tensor::<B, Inner, 2>(wrap2(out));
        }
        let [q, k, v] = [q, k, v].map(|t| primitive::<B, Ad, 2>(t).ok().expect("B is Ad"));
        let mask = mask_values(
            &primitive::<B, Ad, 4>(mask_bias)
                .ok()
                .expect("B is Ad")
                .primitive,
        );
        let (qv, kv, vv) = (
            view2(&q.primitive).expect("f32"),
            view2(&k.primitive).expect("f32"),
            view2(&v.primitive).expect("f32"),
        );
        let dims = attention_dims(&qv, &mask, &mask_dims, heads);
        let dropout = (dropout_prob > 0.0).then(|| dropout_mask(dims.probs_len(), dropout_prob));
        let tracked = q.is_tracked() || k.is_tracked() || v.is_tracked();
        let (out, probs) =
            attention_forward(&qv, &kv, &vv, &mask, dims, dropout.as_deref(), tracked);
        let out = wrap2(out);
        let y = match AttentionStep
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
        };
        tensor::<B, Ad, 2>(y)
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
            let g = view2(&grad).expect("checked f32");
            let AttentionState {
                q,
                k,
                v,
                probs,
                dropout,
                dims,
            } = ops.state;
            let (q, k, v) = (
                view2(&q).expect("f32"),
                view2(&k).expect("f32"),
                view2(&v).expect("f32"),
            );
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
                        general_mat_mul(1.0, &dropped.t(), &gb, 0.0, &mut dv.slice_mut(block));
                    }
                    if dq.is_none() && dk.is_none() {
                        continue;
                    }
                    general_mat_mul(1.0, &gb, &v.slice(block).t(), 0.0, &mut ds);
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
                        general_mat_mul(
                            dims.scale,
                            &ds,
                            &k.slice(block),
                            0.0,
                            &mut dq.slice_mut(block),
                        );
                    }
                    if let Some(dk) = dk.as_mut() {
                        general_mat_mul(
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

    /// LayerNorm over the last axis of a contiguous `f32` array: the output, the normalised
    /// values `x̂` and each row's `1/σ`.
    fn layer_norm_forward(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        epsilon: f32,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let d = gamma.len();
        let mut out = vec![0.0f32; x.len()];
        let mut normalised = vec![0.0f32; x.len()];
        let mut inv_std = Vec::with_capacity(x.len() / d.max(1));
        for ((row, y), xhat) in x
            .chunks_exact(d)
            .zip(out.chunks_exact_mut(d))
            .zip(normalised.chunks_exact_mut(d))
        {
            let mean = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let inv = 1.0 / (var + epsilon).sqrt();
            inv_std.push(inv);
            for (((xh, y), &v), (&g, &b)) in xhat
                .iter_mut()
                .zip(y.iter_mut())
                .zip(row)
                .zip(gamma.iter().zip(beta))
            {
                *xh = (v - mean) * inv;
                *y = *xh * g + b;
            }
        }
        (out, normalised, inv_std)
    }

    /// An `f32` tensor's values in row-major order, borrowed where its memory already is.
    fn contiguous(tensor: &NdArrayTensor) -> Cow<'_, [f32]> {
        let view = view(tensor).expect("checked f32");
        match view.to_slice() {
            Some(values) => Cow::Borrowed(values),
            None => Cow::Owned(view.iter().copied().collect()),
        }
    }

    fn wrap_shaped(values: Vec<f32>, shape: &[usize]) -> NdArrayTensor {
        wrap(ArrayD::from_shape_vec(shape, values).expect("sizes agree"))
    }

    pub(super) fn layer_norm<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        gamma: Tensor<B, 1>,
        beta: Tensor<B, 1>,
        epsilon: f64,
    ) -> Tensor<B, D> {
        let shape = x.dims();
        if TypeId::of::<B>() == TypeId::of::<Inner>() {
            let x = primitive::<B, Inner, D>(x).ok().expect("B is Inner");
            let [gamma, beta] =
                [gamma, beta].map(|t| primitive::<B, Inner, 1>(t).ok().expect("B is Inner"));
            let (gamma, beta) = (contiguous(&gamma), contiguous(&beta));
            let (out, _, _) = layer_norm_forward(&contiguous(&x), &gamma, &beta, epsilon as f32);
            return tensor::<B, Inner, D>(wrap_shaped(out, &shape));
        }
        let x = primitive::<B, Ad, D>(x).ok().expect("B is Ad");
        let [gamma, beta] = [gamma, beta].map(|t| primitive::<B, Ad, 1>(t).ok().expect("B is Ad"));
        let gamma_values = contiguous(&gamma.primitive).into_owned();
        let (out, normalised, inv_std) = layer_norm_forward(
            &contiguous(&x.primitive),
            &gamma_values,
            &contiguous(&beta.primitive),
            epsilon as f32,
        );
        let out = wrap_shaped(out, &shape);
        let y = match LayerNormStep
            .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                LayerNormState {
                    normalised,
                    inv_std,
                    gamma: gamma_values,
                    shape: shape.to_vec(),
                },
                out,
            ),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        tensor::<B, Ad, D>(y)
    }

    #[derive(Debug)]
    struct LayerNormStep;

    #[derive(Clone, Debug)]
    struct LayerNormState {
        normalised: Vec<f32>,
        inv_std: Vec<f32>,
        gamma: Vec<f32>,
        shape: Vec<usize>,
    }

    impl Backward<Inner, 3> for LayerNormStep {
        type State = LayerNormState;

        /// With `x̂` the normalised input and `g` the output's gradient: `dβ = Σ g`,
        /// `dγ = Σ g⊙x̂` over rows; per row, `dx̂ = g⊙γ` and
        /// `dx = (dx̂ − mean(dx̂) − x̂·mean(dx̂⊙x̂))/σ`.
        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_x, node_gamma, node_beta] = ops.parents;
            let grad = grads.consume::<Inner>(&ops.node);
            let grad = contiguous(&grad);
            let LayerNormState {
                normalised,
                inv_std,
                gamma,
                shape,
            } = ops.state;
            let d = gamma.len();
            if node_gamma.is_some() || node_beta.is_some() {
                let (mut dgamma, mut dbeta) = (vec![0.0f32; d], vec![0.0f32; d]);
                for (g, xhat) in grad.chunks_exact(d).zip(normalised.chunks_exact(d)) {
                    for (((dg, db), &g), &xh) in
                        dgamma.iter_mut().zip(dbeta.iter_mut()).zip(g).zip(xhat)
                    {
                        *dg += g * xh;
                        *db += g;
                    }
                }
                if let Some(node) = node_gamma {
                    grads.register::<Inner>(node.id, wrap_shaped(dgamma, &[d]));
                }
                if let Some(node) = node_beta {
                    grads.register::<Inner>(node.id, wrap_shaped(dbeta, &[d]));
                }
            }
            if let Some(node) = node_x {
                let mut dx = vec![0.0f32; grad.len()];
                for (((dx, g), xhat), &inv) in dx
                    .chunks_exact_mut(d)
                    .zip(grad.chunks_exact(d))
                    .zip(normalised.chunks_exact(d))
                    .zip(&inv_std)
                {
                    let (mut mean_dxhat, mut mean_dxhat_xhat) = (0.0f32, 0.0f32);
                    for ((&g, &gm), &xh) in g.iter().zip(&gamma).zip(xhat) {
                        mean_dxhat += g * gm;
                        mean_dxhat_xhat += g * gm * xh;
                    }
                    mean_dxhat /= d as f32;
                    mean_dxhat_xhat /= d as f32;
                    for (((dx, &g), &gm), &xh) in dx.iter_mut().zip(g).zip(&gamma).zip(xhat) {
                        *dx = inv * (g * gm - mean_dxhat - xh * mean_dxhat_xhat);
                    }
                }
                grads.register::<Inner>(node.id, wrap_shaped(dx, &shape));
            }
        }
    }
}

#[cfg(all(test, feature = "ndarray"))]
pub(crate) mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::{Module, Param};
    use burn::nn::LinearConfig;
    use burn::tensor::TensorData;

    type AB = Autodiff<NdArray>;

    /// Deterministic, roughly normal values (a sum of four hashed uniforms), so that a failure
    /// can be replayed.
    pub(crate) fn normal<B: Backend, const D: usize>(
        shape: [usize; D],
        mean: f32,
        std: f32,
        seed: u64,
    ) -> Tensor<B, D> {
        let n: usize = shape.iter().product();
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        let mut uniform = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
        };
        // Four uniforms sum to mean 2, variance 1/3.
        let values: Vec<f32> = (0..n)
            .map(|_| {
                mean + std * (uniform() + uniform() + uniform() + uniform() - 2.0) * 3f32.sqrt()
            })
            .collect();
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs burn's {y}"
            );
        }
    }

    fn layer<B: Backend>(d_in: usize, d_out: usize) -> Linear<B> {
        let device = Default::default();
        let mut layer = LinearConfig::new(d_in, d_out).init::<B>(&device);
        layer.weight = Param::from_tensor(normal([d_in, d_out], 0.0, 0.3, (d_in * d_out) as u64));
        // A bias that is not zero, so that its broadcast is tested.
        layer.bias = Some(Param::from_tensor(normal([d_out], 0.0, 1.0, 1)));
        layer
    }

    #[test]
    fn linear_at_inference_equals_burns() {
        let device = Default::default();
        let layer = layer::<NdArray>(37, 23);
        let x = normal::<NdArray, 2>([11, 37], 0.0, 1.0, 2);
        assert_close(
            &values(linear(&layer, x.clone())),
            &values(layer.forward(x.clone())),
            "y",
        );
        // A transposed input is read through its strides.
        let xt = x.clone().transpose().into_data();
        let xt = Tensor::<NdArray, 2>::from_data(xt, &device).transpose();
        assert_close(
            &values(linear(&layer, xt)),
            &values(layer.forward(x)),
            "y of a transposed x",
        );
    }

    /// Values and the gradients of input, weight and bias against burn's own `linear`, for a
    /// loss that weighs each output differently.
    #[test]
    fn linear_gradients_equal_burns() {
        let layer = layer::<AB>(29, 17);
        let x = normal::<AB, 2>([13, 29], 0.0, 1.0, 3);
        let weights = normal::<AB, 2>([13, 17], 0.0, 1.0, 4);
        let run = |ours: bool| {
            let x = x.clone().detach().require_grad();
            let y = if ours {
                linear(&layer, x.clone())
            } else {
                layer.forward(x.clone())
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let bias = layer.bias.as_ref().unwrap();
            (
                values(y),
                values(x.grad(&grads).unwrap()),
                values(layer.weight.val().grad(&grads).unwrap()),
                values(bias.val().grad(&grads).unwrap()),
            )
        };
        let (ours, burns) = (run(true), run(false));
        assert_close(&ours.0, &burns.0, "y");
        assert_close(&ours.1, &burns.1, "dx");
        assert_close(&ours.2, &burns.2, "dW");
        assert_close(&ours.3, &burns.3, "db");
    }

    /// A frozen layer passes the gradient through to its input and builds none for itself; an
    /// input that needs no gradient gets none.
    #[test]
    fn linear_gradients_follow_what_is_tracked() {
        let frozen = layer::<AB>(8, 5).no_grad();
        let x = normal::<AB, 2>([4, 8], 0.0, 1.0, 5).require_grad();
        let grads = linear(&frozen, x.clone()).sum().backward();
        assert!(frozen.weight.val().grad(&grads).is_none());
        assert!(frozen.bias.as_ref().unwrap().val().grad(&grads).is_none());
        let dx = values(x.grad(&grads).unwrap());
        let w = values(frozen.weight.val());
        // d(sum y)/dx[r][i] = sum_j W[i][j].
        for (k, g) in dx.iter().enumerate() {
            let i = k % 8;
            let want: f32 = w[i * 5..(i + 1) * 5].iter().sum();
            assert!((g - want).abs() < 1e-5, "dx[{k}]: {g} vs {want}");
        }

        let trained = layer::<AB>(8, 5);
        let x = normal::<AB, 2>([4, 8], 0.0, 1.0, 6);
        let grads = linear(&trained, x.clone()).sum().backward();
        assert!(x.grad(&grads).is_none());
        let db = values(trained.bias.as_ref().unwrap().val().grad(&grads).unwrap());
        assert_eq!(db, vec![4.0; 5]);
    }

    /// Attention by burn's tensor operations (the encoder's generic path), with an explicit
    /// dropout mask.
    fn reference_attention<B: Backend>(
        q: Tensor<B, 2>,
        k: Tensor<B, 2>,
        v: Tensor<B, 2>,
        mask_bias: Tensor<B, 4>,
        heads: usize,
        dropout: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 2> {
        let [batch, _, _, seq] = mask_bias.dims();
        let [rows, width] = q.dims();
        let split = |x: Tensor<B, 2>| {
            x.reshape([batch, seq, heads, width / heads])
                .swap_dims(1, 2)
        };
        let scale = 1.0 / ((width / heads) as f64).sqrt();
        let scores = split(q).matmul(split(k).swap_dims(2, 3)) * scale + mask_bias;
        let mut probs = burn::tensor::activation::softmax(scores, 3);
        if let Some(mask) = dropout {
            probs = probs * mask;
        }
        probs
            .matmul(split(v))
            .swap_dims(1, 2)
            .reshape([rows, width])
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
        assert!(applies::<NdArray>(&[q.dtype(), mask.dtype()]));
        let ours = attention(q.clone(), k.clone(), v.clone(), mask.clone(), 4, 0.1);
        let reference = reference_attention(q, k, v, mask, 4, None);
        assert_close(&values(ours), &values(reference), "context");
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
            crate::dropout::seed_dropout(42);
            let y = attention(q.clone(), k.clone(), v.clone(), mask.clone(), 4, prob);
            let grads = (y.clone() * weights.clone()).sum().backward();
            let ours = [
                values(y),
                values(q.grad(&grads).unwrap()),
                values(k.grad(&grads).unwrap()),
                values(v.grad(&grads).unwrap()),
            ];
            crate::dropout::seed_dropout(42);
            let dropout: Option<Vec<f64>> = (prob > 0.0).then(|| {
                crate::dropout::dropout_mask(3 * 4 * 5 * 5, prob)
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
            assert_close(&ours[0], &context, &format!("context (dropout {prob})"));
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
        let grads = attention(q.clone(), k.clone(), v.clone(), mask_bias(), 4, 0.0)
            .sum()
            .backward();
        assert!(q.grad(&grads).is_none() && k.grad(&grads).is_none());
        // Each row of probabilities sums to 1, so the gradient of the sum with respect to V
        // sums to the number of rows times the width.
        let dv = values(v.grad(&grads).unwrap());
        let total: f32 = dv.iter().sum();
        assert!((total - 15.0 * 24.0).abs() < 1e-3, "{total}");
    }

    /// GELU's gradient under autodiff, through the kernel, on a grid from -8 to 8: the exact
    /// derivative computed by burn's tensor operations in f32 (erf and exp).
    #[test]
    fn gelu_gradient_matches_the_derivative_on_a_grid() {
        let device = Default::default();
        let xs: Vec<f32> = (-800..=800).map(|i| i as f32 * 0.01).collect();
        let x = Tensor::<AB, 1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &device)
            .require_grad();
        let y = gelu(x.clone())
            .ok()
            .expect("Autodiff<NdArray> has the kernel");
        let grads = y.sum().backward();
        let grad = values(x.grad(&grads).unwrap());
        for (&x, &g) in xs.iter().zip(&grad) {
            let x64 = x as f64;
            let cdf = 0.5 * libm_erfc(-x64 / core::f64::consts::SQRT_2);
            let pdf = (-0.5 * x64 * x64).exp() / (2.0 * core::f64::consts::PI).sqrt();
            let want = cdf + x64 * pdf;
            assert!((g as f64 - want).abs() < 1e-6, "x = {x}: {g} vs {want}");
        }
    }

    /// erfc in f64 by the continued fraction (x > 2) or 1 - erf's series.
    fn libm_erfc(x: f64) -> f64 {
        if x < -2.0 {
            return 2.0 - libm_erfc(-x);
        }
        if x > 2.0 {
            // Lentz's continued fraction for erfc.
            let mut f = x;
            for k in (1..200).rev() {
                f = x + (k as f64 / 2.0) / f;
            }
            return (-x * x).exp() / (f * core::f64::consts::PI.sqrt());
        }
        let (mut term, mut sum, mut n) = (x, x, 0.0f64);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        1.0 - 2.0 / core::f64::consts::PI.sqrt() * sum
    }
}
