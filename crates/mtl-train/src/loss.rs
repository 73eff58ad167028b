//! Per-task cross-entropy and how task losses are combined: static weights or learned
//! uncertainty weighting (Kendall, Gal and Cipolla, 2018).

use std::str::FromStr;

use burn::tensor::{activation::log_softmax, backend::Backend, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// Mean cross-entropy of logits against class indices.
///
/// # Shapes
/// - logits: `[batch, classes]`, targets: `[batch]` -> `[1]`
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    smoothed_cross_entropy(logits, targets, 0.0)
}

/// Mean cross-entropy against targets smoothed by `smoothing` (Szegedy et al., 2016, as
/// PyTorch's `label_smoothing`): `(1 - s)·NLL + s·mean over classes of -log p`. At 0 it is
/// the plain cross-entropy, computed as such.
///
/// # Shapes
/// - logits: `[batch, classes]`, targets: `[batch]` -> `[1]`
pub fn smoothed_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    smoothing: f64,
) -> Tensor<B, 1> {
    let [batch, _] = logits.dims();
    let log_p = log_softmax(logits, 1);
    let nll = log_p
        .clone()
        .gather(1, targets.reshape([batch, 1]))
        .mean()
        .neg();
    if smoothing == 0.0 {
        return nll;
    }
    let uniform = log_p.mean().neg();
    nll * (1.0 - smoothing) + uniform * smoothing
}

/// How per-task losses are combined into one objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LossWeighting {
    /// `sum_t w_t * L_t`; tasks not listed weigh 1.
    Static(Vec<(String, f64)>),
    /// `sum_t exp(-s_t) * L_t + s_t / 2` with learned `s_t = log sigma_t^2` (Kendall et al.'s
    /// classification form: L_t / sigma_t^2 + log sigma_t).
    Uncertainty,
}

impl Default for LossWeighting {
    fn default() -> Self {
        Self::Static(Vec::new())
    }
}

impl FromStr for LossWeighting {
    type Err = TrainError;

    /// `static`, `static:task=w,task=w` or `uncertainty`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "uncertainty" {
            return Ok(Self::Uncertainty);
        }
        let Some(rest) = s.strip_prefix("static") else {
            return Err(TrainError::Config(format!(
                "loss weighting {s:?} (expected static, static:TASK=W,... or uncertainty)"
            )));
        };
        let mut weights = Vec::new();
        for part in rest
            .strip_prefix(':')
            .unwrap_or(rest)
            .split(',')
            .filter(|p| !p.is_empty())
        {
            let parsed = part
                .split_once('=')
                .and_then(|(task, w)| {
                    Some((task.trim().to_string(), w.trim().parse::<f64>().ok()?))
                })
                .filter(|(_, w)| w.is_finite() && *w >= 0.0);
            match parsed {
                Some(pair) => weights.push(pair),
                None => {
                    return Err(TrainError::Config(format!(
                        "loss weight {part:?} is not TASK=W with W >= 0"
                    )))
                }
            }
        }
        Ok(Self::Static(weights))
    }
}

impl LossWeighting {
    /// The static weight of `task` (1 unless given).
    pub fn weight(&self, task: &str) -> f64 {
        match self {
            Self::Static(weights) => weights
                .iter()
                .find(|(t, _)| t == task)
                .map_or(1.0, |(_, w)| *w),
            Self::Uncertainty => 1.0,
        }
    }
}

/// Combines task losses with learned log-variances `log_vars` (one per task of the model;
/// `tasks` are the indices of the losses given).
///
/// # Shapes
/// - losses: each `[1]`; log_vars: `[num_tasks]` -> `[1]`
pub fn uncertainty_combine<B: Backend>(
    losses: Vec<(usize, Tensor<B, 1>)>,
    log_vars: Tensor<B, 1>,
) -> Tensor<B, 1> {
    losses
        .into_iter()
        .map(|(task, loss)| {
            #[allow(clippy::single_range_in_vec_init)] // burn's slice takes one range per dim
            let s = log_vars.clone().slice([task..task + 1]);
            loss * s.clone().neg().exp() + s * 0.5
        })
        .reduce(|a, b| a + b)
        .expect("at least one task loss")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::TensorData;

    type B = NdArray;

    fn scalar<Bk: Backend>(t: Tensor<Bk, 1>) -> f32 {
        t.into_data().into_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let device = Default::default();
        let logits = Tensor::<B, 2>::from_data(
            TensorData::new(vec![0.0f32, 0.0, 2.0, 0.0], [2, 2]),
            &device,
        );
        let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![1i64, 0], [2]), &device);
        // Row 1: -ln(1/2); row 2: -ln(e^2 / (e^2 + 1)).
        let expected = (2f64.ln() + (1.0 + (-2f64).exp()).ln()) / 2.0;
        assert!((scalar(cross_entropy(logits, targets)) as f64 - expected).abs() < 1e-6);
    }

    #[test]
    fn smoothing_mixes_in_the_uniform_target() {
        let device = Default::default();
        let logits = Tensor::<B, 2>::from_data(
            TensorData::new(vec![0.0f32, 1.0, 3.0, 2.0, 0.0, 0.0], [2, 3]),
            &device,
        );
        let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![2i64, 0], [2]), &device);
        let log_p = |row: [f64; 3], c: usize| {
            let z: f64 = row.iter().map(|x| x.exp()).sum();
            row[c] - z.ln()
        };
        let rows = [([0.0, 1.0, 3.0], 2), ([2.0, 0.0, 0.0], 0)];
        let s = 0.2;
        let expected: f64 = rows
            .iter()
            .map(|&(row, t)| {
                let uniform: f64 = (0..3).map(|c| -log_p(row, c)).sum::<f64>() / 3.0;
                (1.0 - s) * -log_p(row, t) + s * uniform
            })
            .sum::<f64>()
            / 2.0;
        let got = scalar(smoothed_cross_entropy(logits.clone(), targets.clone(), s)) as f64;
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
        assert_eq!(
            scalar(smoothed_cross_entropy(logits.clone(), targets.clone(), 0.0)),
            scalar(cross_entropy(logits, targets))
        );
    }

    #[test]
    fn uncertainty_weighting_arithmetic_and_gradient() {
        type AB = Autodiff<B>;
        let device = Default::default();
        let log_vars =
            Tensor::<AB, 1>::from_data(TensorData::new(vec![0.0f32, 2f32.ln()], [2]), &device)
                .require_grad();
        let l0 = Tensor::<AB, 1>::from_data(TensorData::new(vec![3.0f32], [1]), &device);
        let l1 = Tensor::<AB, 1>::from_data(TensorData::new(vec![4.0f32], [1]), &device);
        let total = uncertainty_combine(vec![(0, l0), (1, l1)], log_vars.clone());
        // 3 * e^0 + 0 + 4 * e^{-ln 2} + ln(2) / 2 = 3 + 2 + 0.34657
        assert!((scalar(total.clone()) - (5.0 + 2f32.ln() / 2.0)).abs() < 1e-5);
        // d/ds_t = -L_t e^{-s_t} + 1/2: [-2.5, -1.5]
        let grads = total.backward();
        let g = log_vars
            .grad(&grads)
            .unwrap()
            .into_data()
            .into_vec::<f32>()
            .unwrap();
        assert!(
            (g[0] + 2.5).abs() < 1e-5 && (g[1] + 1.5).abs() < 1e-5,
            "{g:?}"
        );
    }

    #[test]
    fn parses_weightings() {
        assert_eq!(
            "uncertainty".parse::<LossWeighting>().unwrap(),
            LossWeighting::Uncertainty
        );
        let w: LossWeighting = "static:domain=0.5,sentiment=2".parse().unwrap();
        assert_eq!(w.weight("domain"), 0.5);
        assert_eq!(w.weight("other"), 1.0);
        assert_eq!(
            "static".parse::<LossWeighting>().unwrap(),
            LossWeighting::Static(vec![])
        );
        assert!("static:domain=-1".parse::<LossWeighting>().is_err());
        assert!("focal".parse::<LossWeighting>().is_err());
    }
}
