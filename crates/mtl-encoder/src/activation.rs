//! The exact GELU with its exact gradient.
//!
//! burn's fused `gelu` computes `x·Φ(x)` with `erf`, but its backward pass is the derivative of the
//! tanh approximation, so fine-tuning follows a slightly different gradient from PyTorch's, and pays
//! for a cube and an f64 `tanh` per element. Written with differentiable primitives, autodiff gives
//! the exact derivative `Φ(x) + x·φ(x)` through `erf`'s own backward pass.

use core::f64::consts::SQRT_2;

use burn::tensor::{backend::Backend, Tensor};

/// `x·Φ(x) = x·(1 + erf(x/√2))/2`, as Hugging Face's `gelu` (PyTorch's default `nn.GELU`).
///
/// # Shapes
/// - x: any -> same
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    // Multiplying by 0.5 is exact, so the forward values equal burn's `x·(erf + 1) / 2`.
    let cdf = x
        .clone()
        .div_scalar(SQRT_2)
        .erf()
        .add_scalar(1.0)
        .mul_scalar(0.5);
    x * cdf
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
    fn forward_equals_burns_gelu() {
        let device = Default::default();
        let x = Tensor::<NdArray, 1>::from_data(TensorData::from(XS), &device);
        let ours = gelu(x.clone()).into_data().to_vec::<f32>().unwrap();
        let burns = activation::gelu(x).into_data().to_vec::<f32>().unwrap();
        assert_eq!(ours, burns);
    }

    #[test]
    fn gradient_is_the_exact_derivative() {
        let device = Default::default();
        let x = Tensor::<B, 1>::from_data(TensorData::from(XS), &device).require_grad();
        let grads = gelu(x.clone()).sum().backward();
        let grad = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
        for (&xi, &g) in XS.iter().zip(&grad) {
            let want = exact_derivative(xi as f64);
            assert!((g as f64 - want).abs() < 2e-6, "x={xi}: {g} vs {want}");
        }
        // burn's fused gelu backward (the tanh approximation's derivative) is off by 8.7e-4 at 2.
        let x = Tensor::<B, 1>::from_data(TensorData::from([2.0f32]), &device).require_grad();
        let grads = activation::gelu(x.clone()).sum().backward();
        let approx = x.grad(&grads).unwrap().into_scalar() as f64;
        assert!((approx - exact_derivative(2.0)).abs() > 5e-4);
    }
}
