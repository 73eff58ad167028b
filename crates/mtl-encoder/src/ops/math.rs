//! Shared `f32` math of the CPU paths: the exact GELU, its derivative and `exp`, branch-free so
//! that they vectorise, with slice loops compiled for AVX2 where the CPU has it (runtime
//! detection; the same arithmetic per element on every path).

/// GELU in place over `values`, eight lanes at a time where the CPU has AVX2 (the same
/// arithmetic as [`gelu_f32`] per element whatever the lanes). An AVX-512 build of the loop
/// measured no faster: at large batches the loop waits on memory.
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
#[allow(clippy::excessive_precision)] // 1/√(2π) as published, rounded by the compiler
#[inline(always)]
pub(crate) fn gelu_derivative_f32(x: f32) -> f32 {
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_28;
    cdf_f32(x) + x * FRAC_1_SQRT_2PI * exp_f32(-0.5 * x * x)
}

/// `Φ(x) = erfc(-x/√2)/2` (the Chebyshev fit of Numerical Recipes); branch-free.
#[allow(clippy::excessive_precision)] // the coefficients as published, rounded by the compiler
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
/// 2 ulp), clamped to the normal range above and exactly 0 below `e^-87`; branch-free.
///
/// The 0 matters: softmax over a padded key (a score near -1e9) would otherwise give
/// probabilities of about 1e-38 that turn into subnormal numbers once normalised, and every
/// matrix product touching them then runs through the CPU's slow subnormal path (measured on an
/// Intel Xeon: a training step of padded batches 50 times slower). PyTorch's masked softmax
/// gives exactly 0 there too.
#[allow(clippy::excessive_precision)] // Cephes' coefficients as published
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    let underflows = x < -87.0;
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
    let e = p * f32::from_bits(y.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    if underflows {
        0.0
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// exp is within 2 ulp on its range, 0 below e^-87 (never subnormal), NaN for NaN.
    #[test]
    fn exp_is_accurate_and_never_subnormal() {
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let (ours, exact) = (exp_f32(x) as f64, (x as f64).exp());
            assert!(
                (ours - exact).abs() <= 3.0 * f32::EPSILON as f64 * exact,
                "exp({x})"
            );
        }
        for x in [-87.01f32, -100.0, -1.0e9, f32::NEG_INFINITY] {
            assert_eq!(exp_f32(x), 0.0, "exp({x})");
        }
        assert!(exp_f32(-87.0).is_normal());
        assert!(exp_f32(f32::NAN).is_nan());
    }

    /// The AVX2 and portable loops give the same values, bit for bit.
    #[test]
    fn simd_and_portable_loops_agree() {
        let xs: Vec<f32> = (-3000..=3000).map(|i| i as f32 * 3e-3).collect();
        let (mut fast, mut portable) = (xs.clone(), xs.clone());
        gelu_slice(&mut fast);
        gelu_slice_portable(&mut portable);
        assert_eq!(fast, portable);
        let (mut fast, mut portable) = (vec![0.7f32; xs.len()], vec![0.7f32; xs.len()]);
        gelu_backward_slice(&mut fast, &xs);
        gelu_backward_slice_portable(&mut portable, &xs);
        assert_eq!(fast, portable);
    }
}
