//! LayerNorm over the last axis in one pass per row, `(x − mean)/√(var + ε)·γ + β` in burn's
//! arithmetic, and its backward pass (`dx`, `dγ`, `dβ`) in one pass.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::{contiguous, primitive, tensor, wrap_shaped, Ad, AdPrimitive, Bridge, Inner};
use crate::ops::inputs::LayerNormInputs;

/// LayerNorm over the last axis of a contiguous `f32` array: the output, the normalised
/// values `x̂` and each row's `1/σ`.
fn forward(x: &[f32], gamma: &[f32], beta: &[f32], epsilon: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    let mut out = vec![0.0f32; x.len()];
    let mut normalised = vec![0.0f32; x.len()];
    let mut inv_std = Vec::with_capacity(x.len() / d.max(1));
    for ((row, y), xhat) in x
        .chunks_exact(d)
        .zip(out.chunks_exact_mut(d))
        .zip(normalised.chunks_exact_mut(d))
    {
        let mean = row.iter().sum::<f32>() / d as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let inv = 1.0 / (var + epsilon).sqrt();
        inv_std.push(inv);
        for (((xh, y), &v), (&g, &b)) in xhat
            .iter_mut()
            .zip(y.iter_mut())
            .zip(row)
            .zip(gamma.iter().zip(beta))
        {
            *xh = (v - mean) * inv;
            *y = *xh * g + b;
        }
    }
    (out, normalised, inv_std)
}

/// The kernel when `B` is burn-ndarray and every tensor is `f32`; the inputs back otherwise.
pub(crate) fn layer_norm<B: Backend, const D: usize>(
    inputs: LayerNormInputs<B, D>,
) -> Result<Tensor<B, D>, LayerNormInputs<B, D>> {
    let (x, gamma, beta, epsilon) = inputs;
    let shape = x.dims();
    match Bridge::of::<B>(&[x.dtype(), gamma.dtype(), beta.dtype()]) {
        None => Err((x, gamma, beta, epsilon)),
        Some(Bridge::Inner) => {
            let x = primitive::<B, Inner, D>(x);
            let [gamma, beta] = [gamma, beta].map(primitive::<B, Inner, 1>);
            let (gamma, beta) = (contiguous(&gamma), contiguous(&beta));
            let (out, _, _) = forward(&contiguous(&x), &gamma, &beta, epsilon as f32);
            Ok(tensor::<B, Inner, D>(wrap_shaped(out, &shape)))
        }
        Some(Bridge::Autodiff) => {
            let x = primitive::<B, Ad, D>(x);
            let [gamma, beta] = [gamma, beta].map(primitive::<B, Ad, 1>);
            Ok(tensor::<B, Ad, D>(tracked(x, gamma, beta, epsilon, &shape)))
        }
    }
}

fn tracked(
    x: AdPrimitive,
    gamma: AdPrimitive,
    beta: AdPrimitive,
    epsilon: f64,
    shape: &[usize],
) -> AdPrimitive {
    let gamma_values = contiguous(&gamma.primitive).into_owned();
    let (out, normalised, inv_std) = forward(
        &contiguous(&x.primitive),
        &gamma_values,
        &contiguous(&beta.primitive),
        epsilon as f32,
    );
    let out = wrap_shaped(out, shape);
    match LayerNormStep
        .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            LayerNormState {
                normalised,
                inv_std,
                gamma: gamma_values,
                shape: shape.to_vec(),
            },
            out,
        ),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

#[derive(Debug)]
struct LayerNormStep;

#[derive(Clone, Debug)]
struct LayerNormState {
    normalised: Vec<f32>,
    inv_std: Vec<f32>,
    gamma: Vec<f32>,
    shape: Vec<usize>,
}

impl Backward<Inner, 3> for LayerNormStep {
    type State = LayerNormState;

    /// With `x̂` the normalised input and `g` the output's gradient: `dβ = Σ g`,
    /// `dγ = Σ g⊙x̂` over rows; per row, `dx̂ = g⊙γ` and
    /// `dx = (dx̂ − mean(dx̂) − x̂·mean(dx̂⊙x̂))/σ`.
    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<Inner>(&ops.node);
        let grad = contiguous(&grad);
        let LayerNormState {
            normalised,
            inv_std,
            gamma,
            shape,
        } = ops.state;
        let d = gamma.len();
        if node_gamma.is_some() || node_beta.is_some() {
            let (mut dgamma, mut dbeta) = (vec![0.0f32; d], vec![0.0f32; d]);
            for (g, xhat) in grad.chunks_exact(d).zip(normalised.chunks_exact(d)) {
                for (((dg, db), &g), &xh) in
                    dgamma.iter_mut().zip(dbeta.iter_mut()).zip(g).zip(xhat)
                {
                    *dg += g * xh;
                    *db += g;
                }
            }
            if let Some(node) = node_gamma {
                grads.register::<Inner>(node.id, wrap_shaped(dgamma, &[d]));
            }
            if let Some(node) = node_beta {
                grads.register::<Inner>(node.id, wrap_shaped(dbeta, &[d]));
            }
        }
        if let Some(node) = node_x {
            let mut dx = vec![0.0f32; grad.len()];
            for (((dx, g), xhat), &inv) in dx
                .chunks_exact_mut(d)
                .zip(grad.chunks_exact(d))
                .zip(normalised.chunks_exact(d))
                .zip(&inv_std)
            {
                let (mut mean_dxhat, mut mean_dxhat_xhat) = (0.0f32, 0.0f32);
                for ((&g, &gm), &xh) in g.iter().zip(&gamma).zip(xhat) {
                    mean_dxhat += g * gm;
                    mean_dxhat_xhat += g * gm * xh;
                }
                mean_dxhat /= d as f32;
                mean_dxhat_xhat /= d as f32;
                for (((dx, &g), &gm), &xh) in dx.iter_mut().zip(g).zip(&gamma).zip(xhat) {
                    *dx = inv * (g * gm - mean_dxhat - xh * mean_dxhat_xhat);
                }
            }
            grads.register::<Inner>(node.id, wrap_shaped(dx, &shape));
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::backend::Backend;
    use burn::tensor::Tensor;

    use crate::ops::reference;
    use crate::ops::testing::{normal, values, AB};

    /// Scale and shift, `[16]`, with epsilon 1e-12.
    struct Norm<B: Backend> {
        gamma: Tensor<B, 1>,
        beta: Tensor<B, 1>,
    }

    /// Through the kernel, which must take the inputs.
    fn kernel<B: Backend, const D: usize>(norm: &Norm<B>, x: Tensor<B, D>) -> Tensor<B, D> {
        let Ok(y) = super::layer_norm((x, norm.gamma.clone(), norm.beta.clone(), 1e-12)) else {
            panic!("the kernel takes f32 burn-ndarray tensors")
        };
        y
    }

    /// burn's `layer_norm`.
    fn by_burn<B: Backend, const D: usize>(norm: &Norm<B>, x: Tensor<B, D>) -> Tensor<B, D> {
        reference::layer_norm((x, norm.gamma.clone(), norm.beta.clone(), 1e-12))
    }

    /// The tolerance of these comparisons.
    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        crate::ops::testing::assert_close(a, b, 2e-5, what)
    }

    fn layer<B: Backend>() -> Norm<B> {
        Norm {
            gamma: normal([16], 1.0, 0.5, 101).require_grad(),
            beta: normal([16], 0.0, 0.5, 102).require_grad(),
        }
    }

    #[test]
    fn equals_burns_layer_norm_at_inference() {
        let norm = layer::<NdArray>();
        let x = normal::<NdArray, 3>([2, 5, 16], 3.0, 2.0, 103);
        assert_close(
            &values(kernel(&norm, x.clone())),
            &values(by_burn(&norm, x.clone())),
            "y",
        );
        // A layout that is not row-major is read element by element.
        let swapped = x.clone().swap_dims(0, 1);
        assert_close(
            &values(kernel(&norm, swapped.clone())),
            &values(by_burn(&norm, swapped)),
            "y of a permuted x",
        );
    }

    /// Values and the gradients of x, gamma and beta against autodiff through burn's
    /// `layer_norm`, for a loss weighing each output differently.
    #[test]
    fn gradients_equal_burns() {
        let norm = layer::<AB>();
        let x = normal::<AB, 2>([7, 16], -1.0, 3.0, 104);
        let weights = normal::<AB, 2>([7, 16], 0.0, 1.0, 105);
        let run = |ours: bool| {
            let x = x.clone().detach().require_grad();
            let y = if ours {
                kernel(&norm, x.clone())
            } else {
                by_burn(&norm, x.clone())
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            [
                values(y),
                values(x.grad(&grads).unwrap()),
                values(norm.gamma.grad(&grads).unwrap()),
                values(norm.beta.grad(&grads).unwrap()),
            ]
        };
        let (ours, burns) = (run(true), run(false));
        for (i, what) in ["y", "dx", "dgamma", "dbeta"].iter().enumerate() {
            assert_close(&ours[i], &burns[i], what);
        }
    }
}
