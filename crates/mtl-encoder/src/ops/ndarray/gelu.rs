//! The exact GELU `x·Φ(x)` as one loop over memory, and its exact derivative `Φ(x) + x·φ(x)`
//! as one loop in backward.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::ndarray::NdArrayTensor;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use ndarray::Zip;

use super::{primitive, tensor, view, Ad, AdPrimitive, Bridge, Inner};
use crate::ops::math::{gelu_backward_slice, gelu_derivative_f32, gelu_f32, gelu_slice};

/// GELU over an `f32` array, in place where the array is held alone (else on a copy), in one
/// loop over contiguous memory.
fn forward(x: NdArrayTensor) -> NdArrayTensor {
    let NdArrayTensor::F32(storage) = x else {
        unreachable!("the kernels take f32 tensors only")
    };
    let mut values = storage.into_owned();
    match values.as_slice_memory_order_mut() {
        Some(slice) => gelu_slice(slice),
        None => values.mapv_inplace(gelu_f32),
    }
    NdArrayTensor::from(values)
}

/// The kernel when `B` is burn-ndarray and `x` is `f32`; `x` back otherwise.
pub(crate) fn gelu<B: Backend, const D: usize>(
    x: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    match Bridge::of::<B>(&[x.dtype()]) {
        Some(Bridge::Inner) => Ok(tensor::<B, Inner, D>(forward(primitive::<B, Inner, D>(x)))),
        Some(Bridge::Autodiff) => Ok(tensor::<B, Ad, D>(tracked(primitive::<B, Ad, D>(x)))),
        None => Err(x),
    }
}

/// GELU's autodiff step; state: the input.
#[derive(Debug)]
struct GeluStep;

impl Backward<Inner, 1> for GeluStep {
    type State = NdArrayTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Inner, _>(ops.parents, ops.node, grads, |grad| {
            let x = view(&x);
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

fn tracked(x: AdPrimitive) -> AdPrimitive {
    let y = forward(x.primitive.clone());
    match GeluStep
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(x.primitive, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Tensor, TensorData};

    use crate::ops::testing::{libm_erfc, values, AB};

    /// GELU's gradient under autodiff, through the kernel, on a grid from -8 to 8: the exact
    /// derivative computed in f64.
    #[test]
    fn gelu_gradient_matches_the_derivative_on_a_grid() {
        let device = Default::default();
        let xs: Vec<f32> = (-800..=800).map(|i| i as f32 * 0.01).collect();
        let x = Tensor::<AB, 1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &device)
            .require_grad();
        let Ok(y) = super::gelu(x.clone()) else {
            panic!("Autodiff<NdArray> has the kernel")
        };
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
}
