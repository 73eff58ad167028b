//! `x·W + b` on the arrays as they lie, and its backward pass `dx = g·Wᵀ`, `dW = xᵀ·g`,
//! `db = Σ g` on strided views.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ndarray::NdArrayTensor;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use ndarray::{Array2, Axis};

use super::{
    contiguous, matmul, packed, primitive, product, tensor, view2, wrap, wrap2, wrap_shaped, Ad,
    AdPrimitive, Bridge, Inner,
};
use crate::ops::inputs::LinearInputs;
use crate::ops::Prepared;

/// `x·w + b` for `f32` tensors: on the weight packed in `prepared` when the product has few
/// rows ([`packed`]), else one product into rows that start as the bias (no pass to zero them).
fn forward(
    x: &NdArrayTensor,
    w: &NdArrayTensor,
    b: &NdArrayTensor,
    prepared: Option<&Prepared>,
) -> NdArrayTensor {
    let (xv, wv) = (view2(x), view2(w));
    let (rows, d_out) = (xv.nrows(), wv.ncols());
    let bias = contiguous(b);
    assert_eq!(bias.len(), d_out, "bias of the output width");
    if let Some(prepared) = prepared.filter(|_| packed::takes(&xv, d_out)) {
        let mut values = vec![0.0; rows * d_out];
        packed::product(&xv, &packed::packed(w, prepared), &bias, &mut values);
        return wrap_shaped(values, &[rows, d_out]);
    }
    let mut values = Vec::with_capacity(rows * d_out);
    for _ in 0..rows {
        values.extend_from_slice(&bias);
    }
    let mut out = Array2::from_shape_vec((rows, d_out), values).expect("sizes agree");
    product(1.0, &xv, &wv, 1.0, &mut out);
    wrap2(out)
}

/// The kernel when `B` is burn-ndarray, the tensors are `f32` and there is a bias; the inputs
/// back otherwise.
pub(crate) fn linear<B: Backend>(inputs: LinearInputs<B>) -> Result<Tensor<B, 2>, LinearInputs<B>> {
    let (x, weight, Some(bias), prepared) = inputs else {
        return Err(inputs);
    };
    match Bridge::of::<B>(&[x.dtype(), weight.dtype(), bias.dtype()]) {
        Some(Bridge::Inner) => {
            let x = primitive::<B, Inner, 2>(x);
            let w = primitive::<B, Inner, 2>(weight);
            let b = primitive::<B, Inner, 1>(bias);
            Ok(tensor::<B, Inner, 2>(forward(&x, &w, &b, Some(prepared))))
        }
        Some(Bridge::Autodiff) => {
            let x = primitive::<B, Ad, 2>(x);
            let w = primitive::<B, Ad, 2>(weight);
            let b = primitive::<B, Ad, 1>(bias);
            Ok(tensor::<B, Ad, 2>(tracked(x, w, b)))
        }
        None => Err((x, weight, Some(bias), prepared)),
    }
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
        let g = view2(&grad);
        let (x, w) = ops.state;
        if let (Some(node), Some(w)) = (node_x, &w) {
            grads.register::<Inner>(node.id, wrap2(matmul(&g, &view2(w).t())));
        }
        if let (Some(node), Some(x)) = (node_w, &x) {
            grads.register::<Inner>(node.id, wrap2(matmul(&view2(x).t(), &g)));
        }
        if let Some(node) = node_b {
            grads.register::<Inner>(node.id, wrap(g.sum_axis(Axis(0)).into_dyn()));
        }
    }
}

fn tracked(x: AdPrimitive, w: AdPrimitive, b: AdPrimitive) -> AdPrimitive {
    let y = forward(&x.primitive, &w.primitive, &b.primitive, None);
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

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;

    use crate::ops::{reference, Prepared};
    use burn::tensor::backend::Backend;
    use burn::tensor::Tensor;

    use crate::ops::testing::{assert_close, normal, test_linear, values, AB};

    /// Through the kernel, which must take the inputs.
    fn linear<B: Backend>((w, b): &(Tensor<B, 2>, Tensor<B, 1>), x: Tensor<B, 2>) -> Tensor<B, 2> {
        linear_with(&Prepared::default(), (w, b), x)
    }

    fn linear_with<B: Backend>(
        prepared: &Prepared,
        (w, b): (&Tensor<B, 2>, &Tensor<B, 1>),
        x: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let Ok(y) = super::linear((x, w.clone(), Some(b.clone()), prepared)) else {
            panic!("the kernel takes f32 burn-ndarray tensors")
        };
        y
    }

    fn by_burn<B: Backend>((w, b): &(Tensor<B, 2>, Tensor<B, 1>), x: Tensor<B, 2>) -> Tensor<B, 2> {
        reference::linear((x, w.clone(), Some(b.clone()), &Prepared::default()))
    }

    /// Few rows (the packed weight, where the CPU has it) and many rows equal burn's; one slot
    /// handed a changed weight uses the new one.
    #[test]
    fn few_and_many_rows_equal_burns_as_the_weight_changes() {
        let prepared = Prepared::default();
        let (w, b) = test_linear::<NdArray>(40, 64);
        for scale in [1.0, -0.5] {
            let layer = (w.clone() * scale, b.clone());
            for rows in [1, 3, 21, 200] {
                let x = normal::<NdArray, 2>([rows, 40], 0.0, 1.0, rows as u64);
                assert_close(
                    &values(linear_with(&prepared, (&layer.0, &layer.1), x.clone())),
                    &values(by_burn(&layer, x)),
                    1e-5,
                    &format!("y of {rows} rows, weight scaled by {scale}"),
                );
            }
        }
    }

    #[test]
    fn linear_at_inference_equals_burns() {
        let device = Default::default();
        let layer = test_linear::<NdArray>(37, 23);
        let x = normal::<NdArray, 2>([11, 37], 0.0, 1.0, 2);
        assert_close(
            &values(linear(&layer, x.clone())),
            &values(by_burn(&layer, x.clone())),
            1e-5,
            "y",
        );
        // A transposed input is read through its strides.
        let xt = x.clone().transpose().into_data();
        let xt = Tensor::<NdArray, 2>::from_data(xt, &device).transpose();
        assert_close(
            &values(linear(&layer, xt)),
            &values(by_burn(&layer, x)),
            1e-5,
            "y of a transposed x",
        );
    }

    /// Values and the gradients of input, weight and bias against burn's own `linear`, for a
    /// loss that weighs each output differently.
    #[test]
    fn linear_gradients_equal_burns() {
        let (w, b) = test_linear::<AB>(29, 17);
        let layer = (w.require_grad(), b.require_grad());
        let x = normal::<AB, 2>([13, 29], 0.0, 1.0, 3);
        let weights = normal::<AB, 2>([13, 17], 0.0, 1.0, 4);
        let run = |ours: bool| {
            let x = x.clone().detach().require_grad();
            let y = if ours {
                linear(&layer, x.clone())
            } else {
                by_burn(&layer, x.clone())
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            (
                values(y),
                values(x.grad(&grads).unwrap()),
                values(layer.0.grad(&grads).unwrap()),
                values(layer.1.grad(&grads).unwrap()),
            )
        };
        let (ours, burns) = (run(true), run(false));
        assert_close(&ours.0, &burns.0, 1e-5, "y");
        assert_close(&ours.1, &burns.1, 1e-5, "dx");
        assert_close(&ours.2, &burns.2, 1e-5, "dW");
        assert_close(&ours.3, &burns.3, 1e-5, "db");
    }

    /// A frozen layer passes the gradient through to its input and builds none for itself; an
    /// input that needs no gradient gets none.
    #[test]
    fn linear_gradients_follow_what_is_tracked() {
        let frozen = test_linear::<AB>(8, 5);
        let x = normal::<AB, 2>([4, 8], 0.0, 1.0, 5).require_grad();
        let grads = linear(&frozen, x.clone()).sum().backward();
        assert!(frozen.0.grad(&grads).is_none());
        assert!(frozen.1.grad(&grads).is_none());
        let dx = values(x.grad(&grads).unwrap());
        let w = values(frozen.0.clone());
        // d(sum y)/dx[r][i] = sum_j W[i][j].
        for (k, g) in dx.iter().enumerate() {
            let i = k % 8;
            let want: f32 = w[i * 5..(i + 1) * 5].iter().sum();
            assert!((g - want).abs() < 1e-5, "dx[{k}]: {g} vs {want}");
        }

        let (w, b) = test_linear::<AB>(8, 5);
        let trained = (w.require_grad(), b.require_grad());
        let x = normal::<AB, 2>([4, 8], 0.0, 1.0, 6);
        let grads = linear(&trained, x.clone()).sum().backward();
        assert!(x.grad(&grads).is_none());
        let db = values(trained.1.grad(&grads).unwrap());
        assert_eq!(db, vec![4.0; 5]);
    }
}
