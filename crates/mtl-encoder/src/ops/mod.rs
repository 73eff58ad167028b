//! The operations the model's modules call: linear, attention, LayerNorm, GELU and dropout, each
//! defined once, with one routing rule.
//!
//! Every operation first offers its inputs to the burn-ndarray kernel of the same name
//! (`ndarray/` with the `ndarray` feature): the kernel takes them when the backend is
//! `NdArray` or `Autodiff<NdArray>` and every tensor is `f32`, and hands them back otherwise.
//! What it hands back runs on burn's own tensor operations (`reference.rs`): what CUDA, flex and
//! every other backend run, and the oracle the kernels are tested against. (GELU at inference
//! on another CPU backend is one host loop instead, see [`gelu`].) Model files never ask which
//! backend they run on.

mod host;
pub(crate) mod inputs;
mod math;
mod reference;
#[cfg(test)]
pub(crate) mod testing;

#[cfg(feature = "ndarray")]
mod ndarray;
#[cfg(feature = "ndarray")]
use self::ndarray as kernel;

/// Without the `ndarray` feature there is no kernel: every operation runs burn's.
#[cfg(not(feature = "ndarray"))]
mod kernel {
    pub(crate) fn declined<I, O>(inputs: I) -> Result<O, I> {
        Err(inputs)
    }
    pub(crate) use declined as attention;
    pub(crate) use declined as host_values;
    pub(crate) use declined as gelu;
    pub(crate) use declined as layer_norm;
    pub(crate) use declined as linear;
    pub(crate) fn product_name() -> &'static str {
        "the backend's own"
    }
}

/// A tensor's values on the host, in row-major order, as `f32` (for writing files and
/// exchanging buffers). burn-ndarray tensors give up their buffer without a copy where they
/// hold it alone and are copied in one pass where shared; other backends go through
/// `into_data`.
pub fn host_values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    kernel::host_values(t).unwrap_or_else(|t| {
        t.into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("converted to f32")
    })
}

/// Which matrix product the burn-ndarray kernels use on this CPU (chosen at run time), for
/// benchmark reports.
pub fn matrix_product() -> &'static str {
    kernel::product_name()
}

use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard};

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// A layer's slot for a form of its weight that a kernel prepares once and reuses (the
/// burn-ndarray kernel keeps the weight packed for products of few rows there). The kernel
/// checks that what the slot holds was made from the weight it is given, and prepares it again
/// when the weight has changed; clones share the slot.
#[derive(Clone, Default)]
pub struct Prepared(Arc<Mutex<Option<Arc<dyn Any + Send + Sync>>>>);

impl Prepared {
    #[cfg_attr(not(feature = "ndarray"), allow(dead_code))]
    pub(crate) fn lock(&self) -> MutexGuard<'_, Option<Arc<dyn Any + Send + Sync>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepared")
    }
}

/// The routing rule: the kernel takes the inputs, or hands them back to `fallback`.
fn route<I, O>(
    inputs: I,
    kernel: impl FnOnce(I) -> Result<O, I>,
    fallback: impl FnOnce(I) -> O,
) -> O {
    kernel(inputs).unwrap_or_else(fallback)
}

/// `x·W + b` (`W` stored `[d_input, d_output]`, as burn's `Linear`), with the layer's
/// [`Prepared`] slot (a fresh `Prepared::default()` works, and prepares nothing ahead).
///
/// # Shapes
/// - x: `[rows, d_input]`, weight: `[d_input, d_output]`, bias: `[d_output]` -> `[rows, d_output]`
pub fn linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    prepared: &Prepared,
) -> Tensor<B, 2> {
    route(
        (x, weight, bias, prepared),
        kernel::linear,
        reference::linear,
    )
}

/// Which sentence each row of an attention call belongs to.
#[derive(Debug, Clone)]
pub enum AttentionMask<B: Backend> {
    /// `batch` sentences of `seq` rows each, padded to the longest: a `[batch, 1, 1, seq]`
    /// bias, 0 to attend and a large negative number on padding.
    Padded(Tensor<B, 4>),
    /// Sentences of these lengths, one after another, without padding (the rows are their
    /// sum); every row attends to the rows of its own sentence.
    Packed(Arc<[usize]>),
}

/// (first row, length) of packed sentences of these lengths, laid one after another.
pub(crate) fn packed_sentences(lengths: &[usize]) -> Vec<(usize, usize)> {
    let starts = lengths.iter().scan(0, |start, &len| {
        *start += len;
        Some(*start - len)
    });
    starts.zip(lengths.iter().copied()).collect()
}

/// Multi-head scaled dot-product attention over tokens flattened to rows:
/// `softmax(Q·Kᵀ/√d + mask)·V` per sentence and head, with dropout on the probabilities in
/// training (autodiff backends) when `dropout_prob > 0`.
///
/// # Shapes
/// - q, k, v: `[rows, heads * head_dim]` (`rows` = `batch * seq` padded, or the sum of the
///   lengths packed) -> `[rows, heads * head_dim]`
pub fn attention<B: Backend>(
    q: Tensor<B, 2>,
    k: Tensor<B, 2>,
    v: Tensor<B, 2>,
    mask: AttentionMask<B>,
    heads: usize,
    dropout_prob: f64,
) -> Tensor<B, 2> {
    let inputs = (q, k, v, mask, heads, dropout_prob);
    route(inputs, kernel::attention, reference::attention)
}

/// Layer normalisation over the last axis: `(x − mean)/√(var + ε)·γ + β`.
///
/// # Shapes
/// - x: `[..., d]`, gamma, beta: `[d]` -> `[..., d]`
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    route(
        (x, gamma, beta, epsilon),
        kernel::layer_norm,
        reference::layer_norm,
    )
}

/// The exact GELU `x·Φ(x) = x·(1 + erf(x/√2))/2` (Hugging Face's `gelu`, PyTorch's default
/// `nn.GELU`) with its exact gradient `Φ(x) + x·φ(x)`. burn's fused `gelu` backward is the tanh
/// approximation's derivative instead (off by up to ~1e-3).
///
/// # Shapes
/// - x: any -> same
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    route(x, kernel::gelu, |x| {
        if host::takes_gelu(&x) {
            host::gelu(x)
        } else {
            reference::gelu(x)
        }
    })
}

/// Zeroes each element with probability `prob` and scales the rest by `1/(1-prob)`, in training
/// (autodiff backends) only; the identity at inference. Masks come from this thread's dropout
/// generator ([`crate::runtime::seed_dropout`]).
///
/// # Shapes
/// - x: any -> same
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, prob: f64) -> Tensor<B, D> {
    reference::dropout(x, prob)
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{activation, Tensor, TensorData};

    use super::testing::{series_erf, AB};

    const XS: [f32; 9] = [-6.0, -3.0, -1.5, -0.5, 0.0, 0.3, 1.0, 2.5, 5.0];

    /// Φ(x) + x·φ(x) in f64.
    fn exact_derivative(x: f64) -> f64 {
        let cdf = 0.5 * (1.0 + series_erf(x / core::f64::consts::SQRT_2));
        let pdf = (-0.5 * x * x).exp() / (2.0 * core::f64::consts::PI).sqrt();
        cdf + x * pdf
    }

    #[test]
    fn gelu_gradient_is_the_exact_derivative() {
        let device = Default::default();
        type Gelu = fn(Tensor<AB, 1>) -> Tensor<AB, 1>;
        let paths: [(&str, Gelu); 2] = [
            ("gelu", super::gelu),
            ("tensor ops", super::reference::gelu),
        ];
        for (name, f) in paths {
            let x = Tensor::<AB, 1>::from_data(TensorData::from(XS), &device).require_grad();
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
        let x = Tensor::<AB, 1>::from_data(TensorData::from([2.0f32]), &device).require_grad();
        let grads = activation::gelu(x.clone()).sum().backward();
        let approx = x.grad(&grads).unwrap().into_scalar() as f64;
        assert!((approx - exact_derivative(2.0)).abs() > 5e-4);
    }

    /// The CPU inference path (the vectorised loop): against burn's gelu from -10 to 10
    /// (which rounds `1 + erf` to f32, so in the negative tail it is off by up to half an ulp of
    /// 1 times |x| itself), and against an f64 reference from -4.2 to 4.2, relatively.
    #[test]
    fn host_forward_is_within_float_precision_of_the_exact_gelu() {
        let device = Default::default();
        let xs: Vec<f32> = (-10_000..=10_000).map(|i| i as f32 * 1e-3).collect();
        let x = Tensor::<NdArray, 1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &device);
        let fast = super::gelu(x.clone()).into_data().to_vec::<f32>().unwrap();
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
            let exact = x64 * 0.5 * (1.0 + series_erf(x64 / core::f64::consts::SQRT_2));
            let rel = (f as f64 - exact).abs() / exact.abs();
            assert!(rel < 5e-7 * (1.0 + x64 * x64), "x = {x}: {f} vs {exact}");
        }
        assert_eq!(super::math::gelu_f32(30.0), 30.0);
        assert!(super::math::gelu_f32(-30.0).abs() < 1e-30);
        assert_eq!(super::math::gelu_f32(0.0), 0.0);
        assert!(super::math::gelu_f32(f32::NAN).is_nan());
    }
}
