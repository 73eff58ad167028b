//! CPU kernels for burn-ndarray, at inference and under autodiff.
//!
//! burn-ndarray copies both operands of every matrix product into fresh arrays before
//! multiplying (its reshape to three dimensions copies even contiguous data, and the transposed
//! operands of the backward pass are gathered element by element), and computes GELU's `erf` in
//! `f64` per element. On `NdArray` and `Autodiff<NdArray>` the encoder's and the heads' linear
//! layers and GELU run here instead: matrix products read the arrays where they lie (ndarray's
//! `general_mat_mul` hands matrixmultiply, or BLAS, the strides of transposed views), and under
//! autodiff each is one step of the graph whose backward pass is the same products (and GELU's
//! exact derivative, in one loop). Any other backend, or a tensor that is not `f32`, takes burn's
//! own operations, so the model stays generic over `B: Backend`.
//!
//! The dispatch is by type: a `Tensor<B, D>` is moved into a `Tensor<NdArray, D>` (or
//! `Tensor<Autodiff<NdArray>, D>`) when `B` is that type, and back.

use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor};

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
pub(crate) fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<B, D>, Tensor<B, D>> {
    #[cfg(feature = "ndarray")]
    return cpu::gelu(x);
    #[cfg(not(feature = "ndarray"))]
    Err(x)
}

#[cfg(feature = "ndarray")]
mod cpu {
    use std::any::{Any, TypeId};

    use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
    use burn::backend::ndarray::NdArrayTensor;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::backend::{Backend, BackendTypes};
    use burn::tensor::{Tensor, TensorPrimitive};
    use ndarray::linalg::general_mat_mul;
    use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, Axis, Ix1, Ix2, Zip};

    use crate::activation::{gelu_derivative_f32, gelu_f32};

    type Inner = NdArray;
    type Ad = Autodiff<Inner>;
    type AdPrimitive = <Ad as BackendTypes>::FloatTensorPrimitive;

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
    fn linear_forward(x: &NdArrayTensor, w: &NdArrayTensor, b: &NdArrayTensor) -> Option<NdArrayTensor> {
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
            .prepare::<NoCheckpointing>([
                x.node.clone(),
                w.node.clone(),
                b.node.clone(),
            ])
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
                values.mapv_inplace(gelu_f32);
                Ok(NdArrayTensor::from(values))
            }
            other => Err(other),
        }
    }

    pub(super) fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<B, D>, Tensor<B, D>> {
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
                Zip::from(&mut grad)
                    .and(&x)
                    .for_each(|g, &x| *g *= gelu_derivative_f32(x));
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
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::{Module, Param};
    use burn::nn::LinearConfig;
    use burn::tensor::{Distribution, TensorData};

    type AB = Autodiff<NdArray>;

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
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
        // A bias that is not zero, so that its broadcast is tested.
        layer.bias = Some(Param::from_tensor(Tensor::random(
            [d_out],
            Distribution::Normal(0.0, 1.0),
            &device,
        )));
        layer
    }

    #[test]
    fn linear_at_inference_equals_burns() {
        let device = Default::default();
        let layer = layer::<NdArray>(37, 23);
        let x = Tensor::<NdArray, 2>::random([11, 37], Distribution::Normal(0.0, 1.0), &device);
        assert_close(
            &values(linear(&layer, x.clone())),
            &values(layer.forward(x.clone())),
            "y",
        );
        // A transposed input is read through its strides.
        let xt = x.clone().transpose().into_data();
        let xt = Tensor::<NdArray, 2>::from_data(xt, &device).transpose();
        assert_close(&values(linear(&layer, xt)), &values(layer.forward(x)), "y of a transposed x");
    }

    /// Values and the gradients of input, weight and bias against burn's own `linear`, for a
    /// loss that weighs each output differently.
    #[test]
    fn linear_gradients_equal_burns() {
        let device = Default::default();
        let layer = layer::<AB>(29, 17);
        let x = Tensor::<AB, 2>::random([13, 29], Distribution::Normal(0.0, 1.0), &device);
        let weights = Tensor::<AB, 2>::random([13, 17], Distribution::Normal(0.0, 1.0), &device);
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
        let device = Default::default();
        let frozen = layer::<AB>(8, 5).no_grad();
        let x = Tensor::<AB, 2>::random([4, 8], Distribution::Normal(0.0, 1.0), &device)
            .require_grad();
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
        let x = Tensor::<AB, 2>::random([4, 8], Distribution::Normal(0.0, 1.0), &device);
        let grads = linear(&trained, x.clone()).sum().backward();
        assert!(x.grad(&grads).is_none());
        let db = values(trained.bias.as_ref().unwrap().val().grad(&grads).unwrap());
        assert_eq!(db, vec![4.0; 5]);
    }

    /// GELU's gradient under autodiff, through the kernel, on a grid from -8 to 8: the exact
    /// derivative computed by burn's tensor operations in f32 (erf and exp).
    #[test]
    fn gelu_gradient_matches_the_derivative_on_a_grid() {
        let device = Default::default();
        let xs: Vec<f32> = (-800..=800).map(|i| i as f32 * 0.01).collect();
        let x = Tensor::<AB, 1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &device)
            .require_grad();
        let y = gelu(x.clone()).ok().expect("Autodiff<NdArray> has the kernel");
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
