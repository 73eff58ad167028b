//! Kernels of our own for burn-ndarray, at inference (`NdArray`) and under autodiff
//! (`Autodiff<NdArray>`), one file per operation with its backward pass beside its forward pass.
//!
//! burn-ndarray copies both operands of every matrix product into fresh arrays before
//! multiplying (its reshape to three dimensions copies even contiguous data, and the transposed
//! operands of the backward pass are gathered element by element); under autodiff, softmax and
//! LayerNorm are chains of about ten operations, each a pass over memory forward and back; GELU's
//! `erf` runs in `f64` per element. Here:
//!
//! - matrix products read the arrays where they lie (ndarray's `general_mat_mul`, which hands
//!   matrixmultiply, or BLAS with the `openblas` feature, the strides of transposed views);
//! - attention runs one sentence and head at a time on strided views of the Q, K and V
//!   projections (no head split or merge copies), softmax and dropout in place;
//! - LayerNorm and GELU are one loop each (GELU in AVX2 where the CPU has it);
//! - under autodiff each is one step of the graph, whose backward pass is written out (the same
//!   products; softmax's, LayerNorm's and GELU's exact derivatives).
//!
//! Each kernel takes its inputs when the backend is one of those two types and every tensor is
//! `f32`, and hands them back otherwise ([`super`] then runs burn's operations). A `Tensor<B, D>`
//! is moved into a `Tensor<NdArray, D>` (or `Tensor<Autodiff<NdArray>, D>`) when `B` is that
//! type, and back ([`Bridge`]).

mod attention;
mod gelu;
mod layer_norm;
mod linear;
mod packed;
mod product;

use std::any::{Any, TypeId};
use std::borrow::Cow;

use burn::backend::ndarray::NdArrayTensor;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::{Backend, BackendTypes};
use burn::tensor::{DType, Tensor, TensorPrimitive};
use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD, Ix2};

pub(crate) use attention::attention;
pub(crate) use gelu::gelu;
pub(crate) use layer_norm::layer_norm;
pub(crate) use linear::linear;
use product::product;
pub(crate) use product::product_name;

type Inner = NdArray;
type Ad = Autodiff<Inner>;
type AdPrimitive = <Ad as BackendTypes>::FloatTensorPrimitive;

/// Which of the two kernel backends `B` is, if either, for tensors of these element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bridge {
    /// `NdArray`: inference.
    Inner,
    /// `Autodiff<NdArray>`: the kernel is one step of the autodiff graph.
    Autodiff,
}

impl Bridge {
    /// `Some` when `B` is `NdArray` or `Autodiff<NdArray>` and every tensor is `f32`.
    fn of<B: Backend>(dtypes: &[DType]) -> Option<Self> {
        if !dtypes.iter().all(|d| *d == DType::F32) {
            return None;
        }
        if TypeId::of::<B>() == TypeId::of::<Inner>() {
            Some(Self::Inner)
        } else if TypeId::of::<B>() == TypeId::of::<Ad>() {
            Some(Self::Autodiff)
        } else {
            None
        }
    }
}

/// `value` as a `U`; called only when `T` is `U`.
fn cast<T: 'static, U: 'static>(value: T) -> U {
    let mut slot = Some(value);
    let target = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .expect("called only when T is U");
    target.take().expect("filled above")
}

/// The tensor's float primitive; called only when `B` is `To`.
fn primitive<B: Backend, To: Backend, const D: usize>(
    tensor: Tensor<B, D>,
) -> <To as BackendTypes>::FloatTensorPrimitive {
    cast::<Tensor<B, D>, Tensor<To, D>>(tensor)
        .into_primitive()
        .tensor()
}

/// A float primitive of `From` as a tensor of `B`; called only when `B` is `From`.
fn tensor<B: Backend, From: Backend, const D: usize>(
    primitive: <From as BackendTypes>::FloatTensorPrimitive,
) -> Tensor<B, D> {
    let tensor = Tensor::<From, D>::from_primitive(TensorPrimitive::Float(primitive));
    cast::<Tensor<From, D>, Tensor<B, D>>(tensor)
}

fn view(tensor: &NdArrayTensor) -> ArrayViewD<'_, f32> {
    match tensor {
        NdArrayTensor::F32(storage) => storage.view(),
        _ => unreachable!("the kernels take f32 tensors only (checked by `Bridge::of`)"),
    }
}

fn view2(tensor: &NdArrayTensor) -> ArrayView2<'_, f32> {
    view(tensor)
        .into_dimensionality::<Ix2>()
        .expect("a rank-2 tensor")
}

fn wrap(array: ArrayD<f32>) -> NdArrayTensor {
    NdArrayTensor::from(array.into_shared())
}

fn wrap2(array: Array2<f32>) -> NdArrayTensor {
    wrap(array.into_dyn())
}

fn wrap_shaped(values: Vec<f32>, shape: &[usize]) -> NdArrayTensor {
    wrap(ArrayD::from_shape_vec(shape, values).expect("sizes agree"))
}

/// An `f32` tensor's values in row-major order, borrowed where its memory already is.
fn contiguous(tensor: &NdArrayTensor) -> Cow<'_, [f32]> {
    let view = view(tensor);
    match view.to_slice() {
        Some(values) => Cow::Borrowed(values),
        None => Cow::Owned(view.iter().copied().collect()),
    }
}

/// The values of a burn-ndarray `f32` tensor (inference or autodiff) in row-major order; the
/// tensor back otherwise. A tensor holding its buffer alone gives it up without a copy; a shared
/// one is copied in one pass (burn-ndarray's `into_data` copies it element by element, which
/// was two thirds of the checkpoint writer's time in a profile of a UCI epoch on 2 cores).
pub(crate) fn host_values<B: Backend, const D: usize>(
    t: Tensor<B, D>,
) -> Result<Vec<f32>, Tensor<B, D>> {
    let primitive = match Bridge::of::<B>(&[t.dtype()]) {
        Some(Bridge::Inner) => primitive::<B, Inner, D>(t),
        Some(Bridge::Autodiff) => primitive::<B, Ad, D>(t).primitive,
        None => return Err(t),
    };
    if matches!(&primitive, NdArrayTensor::F32(storage) if storage.is_unique()) {
        let tensor = Tensor::<Inner, D>::from_primitive(TensorPrimitive::Float(primitive));
        return Ok(tensor.into_data().into_vec::<f32>().expect("an f32 tensor"));
    }
    Ok(contiguous(&primitive).into_owned())
}

/// `a·b`, one matrix product on the views' strides.
fn matmul(a: &ArrayView2<f32>, b: &ArrayView2<f32>) -> Array2<f32> {
    let mut out = Array2::zeros((a.nrows(), b.ncols()));
    product(1.0, a, b, 0.0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Tensor, TensorData};

    use super::{host_values, Ad, Inner};

    /// Held alone, shared, transposed and under autodiff: the values burn's `into_data` gives.
    #[test]
    fn host_values_are_the_tensors_values() {
        let device = Default::default();
        let data = TensorData::new((0..12).map(|i| i as f32 * 0.5).collect::<Vec<_>>(), [3, 4]);
        let want = |t: Tensor<Inner, 2>| t.into_data().into_vec::<f32>().unwrap();
        let t = Tensor::<Inner, 2>::from_data(data.clone(), &device);
        let shared = t.clone();
        assert_eq!(host_values(t.clone()).ok().unwrap(), want(t.clone()));
        assert_eq!(host_values(shared.clone()).ok().unwrap(), want(shared));
        let transposed = t.clone().transpose();
        assert_eq!(
            host_values(transposed.clone()).ok().unwrap(),
            want(transposed)
        );
        let alone = Tensor::<Inner, 2>::from_data(data.clone(), &device) * 2.0;
        assert_eq!(host_values(alone).ok().unwrap(), want(t.clone() * 2.0));
        let tracked = Tensor::<Ad, 2>::from_data(data, &device).require_grad();
        assert_eq!(host_values(tracked).ok().unwrap(), want(t));
    }
}
