//! Learning-rate schedule, gradient clipping and layer-wise learning-rate decay, as plain numbers.
//!
//! The formulas follow Hugging Face `transformers` and PyTorch exactly, so a run configured like a
//! reference fine-tuning script updates with the same rates.

/// Linear warm-up to the base rate, then linear decay to zero at `total_steps`
/// (Hugging Face `get_linear_schedule_with_warmup`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LinearSchedule {
    /// Optimizer updates spent rising from 0 to the base rate.
    pub warmup_steps: usize,
    /// Optimizer updates of the whole run; the rate reaches 0 here.
    pub total_steps: usize,
}

impl LinearSchedule {
    /// A schedule whose warm-up is `ceil(total_steps * warmup_ratio)` updates, as Hugging Face's
    /// `TrainingArguments.get_warmup_steps` computes it (a negative or NaN ratio gives no warm-up).
    pub fn from_ratio(total_steps: usize, warmup_ratio: f64) -> Self {
        // `as` saturates: negative and NaN become 0, overflow becomes usize::MAX.
        let warmup_steps = (total_steps as f64 * warmup_ratio).ceil() as usize;
        Self {
            warmup_steps,
            total_steps,
        }
    }

    /// The multiplier of the base learning rate for the optimizer update with 0-based index `step`,
    /// exactly Hugging Face's `get_linear_schedule_with_warmup`: `step / max(1, warmup)` while
    /// `step < warmup`, else `max(0, (total - step) / max(1, total - warmup))`.
    pub fn factor(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return step as f64 / self.warmup_steps.max(1) as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        ((self.total_steps as f64 - step as f64) / decay_steps as f64).max(0.0)
    }
}

/// Global-norm gradient clipping: the multiplier to apply to every gradient given their global L2
/// norm, as PyTorch's `clip_grad_norm_`: `min(1, max_norm / (global_norm + 1e-6))`.
pub fn clip_factor(global_norm: f64, max_norm: f64) -> f64 {
    (max_norm / (global_norm + 1e-6)).min(1.0)
}

/// Layer-wise learning-rate decay: the rate of encoder layer `layer` (0 = bottom) of `num_layers`.
/// The top layer gets `base`, each layer below is multiplied by `decay` once more:
/// `base * decay^(num_layers - 1 - layer)` (a layer index past the top gets `base`).
pub fn layer_rate(base: f64, decay: f64, layer: usize, num_layers: usize) -> f64 {
    base * power(decay, num_layers.saturating_sub(layer + 1))
}

/// The rate of the embeddings, one step below the bottom layer: `base * decay^num_layers`.
pub fn embeddings_rate(base: f64, decay: f64, num_layers: usize) -> f64 {
    base * power(decay, num_layers)
}

/// `x^n` for a count `n`, saturating the exponent instead of overflowing.
fn power(x: f64, n: usize) -> f64 {
    x.powi(i32::try_from(n).unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn linear_schedule_matches_hugging_face() {
        let s = LinearSchedule {
            warmup_steps: 10,
            total_steps: 100,
        };
        assert_eq!(s.factor(0), 0.0);
        assert_eq!(s.factor(5), 0.5);
        assert_eq!(s.factor(9), 0.9);
        assert_eq!(s.factor(10), 1.0);
        assert_eq!(s.factor(55), 0.5);
        assert_eq!(s.factor(91), 0.1);
        assert_eq!(s.factor(100), 0.0);
        assert_eq!(s.factor(150), 0.0);
    }

    #[test]
    fn no_warmup_and_degenerate_schedules() {
        let s = LinearSchedule {
            warmup_steps: 0,
            total_steps: 4,
        };
        assert_eq!(
            (0..5).map(|i| s.factor(i)).collect::<Vec<_>>(),
            [1.0, 0.75, 0.5, 0.25, 0.0]
        );
        // Warm-up longer than the run: HF divides by max(1, total - warmup) = 1.
        let s = LinearSchedule {
            warmup_steps: 8,
            total_steps: 4,
        };
        assert_eq!(s.factor(2), 0.25);
        assert_eq!(s.factor(8), 0.0);
        let s = LinearSchedule {
            warmup_steps: 0,
            total_steps: 0,
        };
        assert_eq!(s.factor(0), 0.0);
    }

    #[test]
    fn warmup_from_ratio_rounds_up() {
        assert_eq!(LinearSchedule::from_ratio(100, 0.1).warmup_steps, 10);
        // 1234 * 0.06 = 74.04 -> 75.
        assert_eq!(
            LinearSchedule::from_ratio(1234, 0.06),
            LinearSchedule {
                warmup_steps: 75,
                total_steps: 1234
            }
        );
        assert_eq!(LinearSchedule::from_ratio(7, 0.0).warmup_steps, 0);
        assert_eq!(LinearSchedule::from_ratio(7, -0.5).warmup_steps, 0);
        assert_eq!(LinearSchedule::from_ratio(7, f64::NAN).warmup_steps, 0);
    }

    #[test]
    fn clip_factor_like_pytorch() {
        // 1 / (4 + 1e-6) = 0.2499999375...
        assert!(close(clip_factor(4.0, 1.0), 1.0 / 4.000001));
        assert!(close(clip_factor(4.0, 1.0), 0.249_999_937_500_015_6));
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        assert_eq!(clip_factor(0.0, 1.0), 1.0);
        // Just above the threshold the factor is just below 1.
        assert!(close(clip_factor(1.0, 1.0), 1.0 / 1.000001));
    }

    #[test]
    fn layer_rates_decay_downwards() {
        let base = 1e-4;
        let rates: Vec<f64> = (0..6).map(|l| layer_rate(base, 0.9, l, 6)).collect();
        let expected = [0.590_49e-4, 0.656_1e-4, 0.729e-4, 0.81e-4, 0.9e-4, 1e-4];
        for (r, e) in rates.iter().zip(expected) {
            assert!(close(*r, e), "{r} != {e}");
        }
        assert_eq!(rates[5], base);
        assert!(close(embeddings_rate(base, 0.9, 6), 0.531_441e-4));
        assert_eq!(layer_rate(base, 0.9, 9, 6), base);
        assert_eq!(embeddings_rate(base, 1.0, 6), base);
    }
}
