//! Host passes for CPU backends that have no kernel of their own (flex): GELU at inference as
//! one loop over the tensor's memory instead of the backend's per-element `f64` `erf`.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::math::gelu_slice;
use crate::runtime::is_cpu;

/// Whether [`gelu`] serves `x`: a CPU backend at inference (under autodiff the tensor
/// operations give the exact gradient).
pub(super) fn takes_gelu<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    let device = x.device();
    is_cpu::<B>(&device) && !B::ad_enabled(&device)
}

/// GELU as one pass over the tensor's host memory (moved out of and back into the tensor
/// without copies where the backend allows).
pub(super) fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let device = x.device();
    let shape = x.shape();
    let mut values = x
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32");
    gelu_slice(&mut values);
    Tensor::from_data(TensorData::new(values, shape), &device)
}
