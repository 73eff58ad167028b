//! Test helpers shared by the operations' tests: deterministic inputs, host values, tolerances
//! and `f64` references.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::runtime::Rng;

/// The autodiff backend the kernels' gradients are tested on.
pub(crate) type AB = Autodiff<NdArray>;

/// Deterministic, roughly normal values (a sum of four hashed uniforms), so that a failure
/// can be replayed.
pub(crate) fn normal<B: Backend, const D: usize>(
    shape: [usize; D],
    mean: f32,
    std: f32,
    seed: u64,
) -> Tensor<B, D> {
    let n: usize = shape.iter().product();
    let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
    let mut uniform = || (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
    // Four uniforms sum to mean 2, variance 1/3.
    let values: Vec<f32> = (0..n)
        .map(|_| mean + std * (uniform() + uniform() + uniform() + uniform() - 2.0) * 3f32.sqrt())
        .collect();
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

/// A tensor's values as `f32`, in row-major order.
pub(crate) fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// `|a − b| <= tolerance·(1 + |b|)` element by element.
pub(crate) fn assert_close(a: &[f32], b: &[f32], tolerance: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tolerance * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs the reference's {y}"
        );
    }
}

/// A linear layer's weight `[d_in, d_out]` and bias `[d_out]`, deterministic, the bias not
/// zero (so that its broadcast is tested).
pub(crate) fn test_linear<B: Backend>(d_in: usize, d_out: usize) -> (Tensor<B, 2>, Tensor<B, 1>) {
    (
        normal([d_in, d_out], 0.0, 0.3, (d_in * d_out) as u64),
        normal([d_out], 0.0, 1.0, 1),
    )
}

/// erf by its Maclaurin series (converges for |x| < 5, in f64).
pub(crate) fn series_erf(x: f64) -> f64 {
    let (mut term, mut sum, mut n) = (x, x, 0.0f64);
    while term.abs() > 1e-17 * sum.abs().max(1e-300) {
        n += 1.0;
        term *= -x * x / n;
        sum += term / (2.0 * n + 1.0);
    }
    2.0 / core::f64::consts::PI.sqrt() * sum
}

/// erfc in f64 by the continued fraction (|x| > 2) or 1 - [`series_erf`].
pub(crate) fn libm_erfc(x: f64) -> f64 {
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
    1.0 - series_erf(x)
}
