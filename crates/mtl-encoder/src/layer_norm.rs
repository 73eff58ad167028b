//! LayerNorm with burn's parameters and arithmetic, as one kernel on burn-ndarray.

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor, TensorPrimitive};

use crate::kernels;

/// Layer normalisation over the last axis: `(x − mean)/√(var + ε)·γ + β` (Hugging Face's
/// `LayerNorm`; `gamma` and `beta` are its `weight` and `bias`). burn's `LayerNorm` under autodiff
/// is a chain of about ten operations, each a pass over memory forward and back; on
/// burn-ndarray this is one (see [`kernels::layer_norm`]), elsewhere burn's `layer_norm`.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale, `[d_model]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// Shift, `[d_model]`.
    pub beta: Param<Tensor<B, 1>>,
    /// Added to the variance before the square root.
    pub epsilon: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Scale 1 and shift 0.
    pub fn new(d_model: usize, epsilon: f64, device: &B::Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([d_model], device)),
            beta: Param::from_tensor(Tensor::zeros([d_model], device)),
            epsilon,
        }
    }

    /// # Shapes
    /// - x: `[..., d_model]` -> same
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let (gamma, beta) = (self.gamma.val(), self.beta.val());
        if kernels::applies::<B>(&[x.dtype(), gamma.dtype(), beta.dtype()]) {
            return kernels::layer_norm(x, gamma, beta, self.epsilon);
        }
        self.by_burn(x)
    }

    /// burn's `layer_norm` (any backend).
    fn by_burn<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let (gamma, beta) = (self.gamma.val(), self.beta.val());
        Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
            x.into_primitive().tensor(),
            gamma.into_primitive().tensor(),
            Some(beta.into_primitive().tensor()),
            self.epsilon,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::normal;
    use burn::backend::{Autodiff, NdArray};

    type AB = Autodiff<NdArray>;

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec::<f32>().unwrap()
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 2e-5 * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs burn's {y}"
            );
        }
    }

    fn layer<B: Backend>() -> LayerNorm<B> {
        let device = Default::default();
        let mut norm = LayerNorm::new(16, 1e-12, &device);
        norm.gamma = Param::from_tensor(normal([16], 1.0, 0.5, 101));
        norm.beta = Param::from_tensor(normal([16], 0.0, 0.5, 102));
        norm
    }

    #[test]
    fn equals_burns_layer_norm_at_inference() {
        let norm = layer::<NdArray>();
        let x = normal::<NdArray, 3>([2, 5, 16], 3.0, 2.0, 103);
        assert_close(
            &values(norm.forward(x.clone())),
            &values(norm.by_burn(x.clone())),
            "y",
        );
        // A layout that is not row-major is read element by element.
        let swapped = x.clone().swap_dims(0, 1);
        assert_close(
            &values(norm.forward(swapped.clone())),
            &values(norm.by_burn(swapped)),
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
                norm.forward(x.clone())
            } else {
                norm.by_burn(x.clone())
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            [
                values(y),
                values(x.grad(&grads).unwrap()),
                values(norm.gamma.val().grad(&grads).unwrap()),
                values(norm.beta.val().grad(&grads).unwrap()),
            ]
        };
        let (ours, burns) = (run(true), run(false));
        for (i, what) in ["y", "dx", "dgamma", "dbeta"].iter().enumerate() {
            assert_close(&ours[i], &burns[i], what);
        }
    }
}
