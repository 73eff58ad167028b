//! The exact GELU with its exact gradient.
//!
//! burn's fused `gelu` computes `x·Φ(x)` with `erf`, but its backward pass is the derivative of the
//! tanh approximation, so fine-tuning follows a slightly different gradient from PyTorch's, and pays
//! for a cube and an f64 `tanh` per element. Written with differentiable primitives, autodiff gives
//! the exact derivative `Φ(x) + x·φ(x)` through `erf`'s own backward pass. At inference on CPU
//! backends it runs as one vectorised loop over the tensor's memory instead (see [`gelu`]).

use core::f64::consts::SQRT_2;

use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::sentence_encoder::runs_on_cpu;

/// `x·Φ(x) = x·(1 + erf(x/√2))/2`, as Hugging Face's `gelu` (PyTorch's default `nn.GELU`).
///
/// # Shapes
/// - x: any -> same
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let x = match crate::kernels::gelu(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let device = x.device();
    if runs_on_cpu::<B>(&device) && !B::ad_enabled(&device) {
        gelu_on_host(x)
    } else {
        gelu_by_tensor_ops(x)
    }
}

/// Differentiable tensor operations, so autodiff's gradient is exact: training, and inference
/// on accelerators. (A host pass computing value and slope, handed to autodiff as
/// `v + (x − detach(x))·slope`, measured 10-15% slower per training step on CPU.)
fn gelu_by_tensor_ops<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    // Multiplying by 0.5 is exact, so the forward values equal burn's `x·(erf + 1) / 2`.
    let cdf = x
        .clone()
        .div_scalar(SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5);
    x * cdf
}

/// Inference on CPU backends: one pass over the tensor's host memory (moved out of and back
/// into the tensor without copies where the backend allows, as burn-ndarray does for a tensor it
/// holds alone). burn-ndarray's `erf` runs libm's `f64` erf per element, the largest cost of
/// encoding after the matrix products; this loop vectorises.
fn gelu_on_host<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
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

/// GELU in place over `values`, eight lanes at a time where the CPU has AVX2 (the same
/// arithmetic as [`gelu_f32`] per element whatever the lanes).
pub(crate) fn gelu_slice(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { gelu_slice_avx2(values) };
    }
    gelu_slice_portable(values)
}

#[inline(always)]
fn gelu_slice_portable(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = gelu_f32(*v));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_slice_avx2(values: &mut [f32]) {
    gelu_slice_portable(values)
}

/// `grad ← grad·gelu'(x)` element by element, eight lanes at a time where the CPU has AVX2.
#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
pub(crate) fn gelu_backward_slice(grad: &mut [f32], x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { gelu_backward_slice_avx2(grad, x) };
    }
    gelu_backward_slice_portable(grad, x)
}

#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
#[inline(always)]
fn gelu_backward_slice_portable(grad: &mut [f32], x: &[f32]) {
    grad.iter_mut()
        .zip(x)
        .for_each(|(g, &x)| *g *= gelu_derivative_f32(x));
}

#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_backward_slice_avx2(grad: &mut [f32], x: &[f32]) {
    gelu_backward_slice_portable(grad, x)
}

/// `x·Φ(x)` in `f32`, with `Φ(x) = erfc(-x/√2)/2` from the Chebyshev fit of Numerical Recipes
/// (`erfc` to a relative 1.2e-7 everywhere) and [`exp_f32`]; branch-free so that it vectorises.
#[inline(always)]
pub(crate) fn gelu_f32(x: f32) -> f32 {
    x * cdf_f32(x)
}

/// GELU's exact derivative `Φ(x) + x·φ(x)` in `f32`, with [`cdf_f32`] and [`exp_f32`].
#[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
#[inline(always)]
pub(crate) fn gelu_derivative_f32(x: f32) -> f32 {
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_28;
    cdf_f32(x) + x * FRAC_1_SQRT_2PI * exp_f32(-0.5 * x * x)
}

/// `Φ(x) = erfc(-x/√2)/2` (the Chebyshev fit of Numerical Recipes); branch-free.
#[inline(always)]
fn cdf_f32(x: f32) -> f32 {
    let z = x.abs() * core::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    // erfc(|x|/√2)/2 = Φ(-|x|).
    let tail = 0.5 * t * exp_f32(poly - z * z);
    if x >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// `e^x` in `f32` (Cephes' `expf`: range reduction by ln 2 and a degree-6 polynomial, within
/// 2 ulp), clamped to the normal range; branch-free.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round x·log2(e) to the nearest integer n by adding 1.5·2^23: y's low mantissa bits then
    // hold n itself.
    let y = x * core::f32::consts::LOG2_E + 12_582_912.0;
    let n = y - 12_582_912.0;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 5.000_000_1e-1)
        * (r * r)
        + r
        + 1.0;
    // 2^n from y's bits (1.5·2^23 + n is 0x4B40_0000 + n), n + 127 moved into the exponent
    // field; the clamp keeps n within [-126, 127]. No float-to-int conversion: NaN stays NaN.
    p * f32::from_bits(y.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{activation, TensorData};

    type B = Autodiff<NdArray>;

    const XS: [f32; 9] = [-6.0, -3.0, -1.5, -0.5, 0.0, 0.3, 1.0, 2.5, 5.0];

    /// Φ(x) + x·φ(x) in f64.
    fn exact_derivative(x: f64) -> f64 {
        let cdf = 0.5 * (1.0 + series_erf(x / SQRT_2));
        let pdf = (-0.5 * x * x).exp() / (2.0 * core::f64::consts::PI).sqrt();
        cdf + x * pdf
    }

    /// erf by its Maclaurin series (converges for the |x| < 5 used here, in f64).
    fn series_erf(x: f64) -> f64 {
        let (mut term, mut sum, mut n) = (x, x, 0.0f64);
        while term.abs() > 1e-17 * sum.abs().max(1e-300) {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        2.0 / core::f64::consts::PI.sqrt() * sum
    }

    #[test]
    fn tensor_ops_forward_equals_burns_gelu() {
        let device = Default::default();
        let x = Tensor::<B, 1>::from_data(TensorData::from(XS), &device);
        let ours = gelu_by_tensor_ops(x.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let burns = activation::gelu(x).into_data().to_vec::<f32>().unwrap();
        assert_eq!(ours, burns);
    }

    /// The inference path on CPU (the vectorised loop): against burn's gelu from -10 to 10
    /// (which rounds `1 + erf` to f32, so in the negative tail it is off by up to half an ulp of
    /// 1 times |x| itself), and against an f64 reference from -4.2 to 4.2, relatively.
    #[test]
    fn host_forward_is_within_float_precision_of_the_exact_gelu() {
        let device = Default::default();
        let xs: Vec<f32> = (-10_000..=10_000).map(|i| i as f32 * 1e-3).collect();
        let x = Tensor::<NdArray, 1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &device);
        let fast = gelu(x.clone()).into_data().to_vec::<f32>().unwrap();
        let burns = activation::gelu(x).into_data().to_vec::<f32>().unwrap();
        for ((&x, &f), &b) in xs.iter().zip(&fast).zip(&burns) {
            let allowed = 5e-7 * b.abs() + 6e-8 * x.abs() + 1e-30;
            assert!((f - b).abs() <= allowed, "x = {x}: {f} vs burn's {b}");
        }
        // Relative error: float rounding of x/√2 alone (6e-8) is amplified by Φ's condition
        // number, about x², in the negative tail.
        for (&x, &f) in xs.iter().zip(&fast) {
            let x64 = x as f64;
            if x64 == 0.0 || x64.abs() > 4.2 {
                continue;
            }
            let exact = x64 * 0.5 * (1.0 + series_erf(x64 / SQRT_2));
            let rel = (f as f64 - exact).abs() / exact.abs();
            assert!(rel < 5e-7 * (1.0 + x64 * x64), "x = {x}: {f} vs {exact}");
        }
        assert_eq!(gelu_f32(30.0), 30.0);
        assert!(gelu_f32(-30.0).abs() < 1e-30);
        assert_eq!(gelu_f32(0.0), 0.0);
        assert!(gelu_f32(f32::NAN).is_nan());
    }

    #[test]
    fn gradient_is_the_exact_derivative() {
        let device = Default::default();
        let paths: [(&str, fn(Tensor<B, 1>) -> Tensor<B, 1>); 2] =
            [("gelu", gelu), ("tensor ops", gelu_by_tensor_ops)];
        for (name, f) in paths {
            let x = Tensor::<B, 1>::from_data(TensorData::from(XS), &device).require_grad();
            let grads = f(x.clone()).sum().backward();
            let grad = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
            for (&xi, &g) in XS.iter().zip(&grad) {
                let want = exact_derivative(xi as f64);
                assert!(
                    (g as f64 - want).abs() < 2e-6,
                    "{name}, x={xi}: {g} vs {want}"
                );
            }
        }
        // burn's fused gelu backward (the tanh approximation's derivative) is off by 8.7e-4 at 2.
        let x = Tensor::<B, 1>::from_data(TensorData::from([2.0f32]), &device).require_grad();
        let grads = activation::gelu(x.clone()).sum().backward();
        let approx = x.grad(&grads).unwrap().into_scalar() as f64;
        assert!((approx - exact_derivative(2.0)).abs() > 5e-4);
    }
}
