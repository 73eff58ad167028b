//! Pooling token states into one sentence vector, and L2 normalisation.

use serde::{Deserialize, Serialize};

use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::ops::packed_sentences;

/// How token states become one sentence embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Mean over the non-padding tokens.
    Mean,
    /// The `[CLS]` token's state.
    Cls,
    /// Element-wise maximum over the non-padding tokens.
    Max,
}

impl std::str::FromStr for Pooling {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mean" => Ok(Self::Mean),
            "cls" => Ok(Self::Cls),
            "max" => Ok(Self::Max),
            other => Err(format!(
                "unknown pooling {other:?} (expected mean, cls or max)"
            )),
        }
    }
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
            Self::Max => "max",
        })
    }
}

/// sentence-transformers' `1_Pooling/config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolingConfig {
    pub word_embedding_dimension: usize,
    #[serde(default)]
    pub pooling_mode_cls_token: bool,
    #[serde(default)]
    pub pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pub pooling_mode_max_tokens: bool,
    #[serde(default)]
    pub pooling_mode_mean_sqrt_len_tokens: bool,
}

impl PoolingConfig {
    /// The configuration sentence-transformers writes for `pooling`.
    pub fn new(pooling: Pooling, dimension: usize) -> Self {
        Self {
            word_embedding_dimension: dimension,
            pooling_mode_cls_token: pooling == Pooling::Cls,
            pooling_mode_mean_tokens: pooling == Pooling::Mean,
            pooling_mode_max_tokens: pooling == Pooling::Max,
            pooling_mode_mean_sqrt_len_tokens: false,
        }
    }

    /// The single pooling mode this configuration selects.
    pub fn pooling(&self) -> Result<Pooling, String> {
        if self.pooling_mode_mean_sqrt_len_tokens {
            return Err("pooling_mode_mean_sqrt_len_tokens is not supported".to_string());
        }
        match (
            self.pooling_mode_mean_tokens,
            self.pooling_mode_cls_token,
            self.pooling_mode_max_tokens,
        ) {
            (true, false, false) => Ok(Pooling::Mean),
            (false, true, false) => Ok(Pooling::Cls),
            (false, false, true) => Ok(Pooling::Max),
            _ => Err("exactly one of the mean, cls and max pooling modes must be set".to_string()),
        }
    }
}

impl Pooling {
    /// # Shapes
    /// - hidden: `[batch, seq, hidden]`, attention_mask: `[batch, seq]` -> `[batch, hidden]`
    pub fn forward<B: Backend>(
        &self,
        hidden: Tensor<B, 3>,
        attention_mask: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let [batch, seq, width] = hidden.dims();
        match self {
            Self::Cls => hidden
                .slice([0..batch, 0..1, 0..width])
                .reshape([batch, width]),
            Self::Mean => {
                let counts = attention_mask.clone().sum_dim(1).clamp_min(1e-9);
                let mask = attention_mask.reshape([batch, seq, 1]);
                (hidden * mask).sum_dim(1).reshape([batch, width]) / counts
            }
            Self::Max => {
                let mask = attention_mask.reshape([batch, seq, 1]);
                // Padded positions become -1e9 (as sentence-transformers does) before the max.
                let masked = hidden * mask.clone() + (mask - 1.0) * 1.0e9;
                masked.max_dim(1).reshape([batch, width])
            }
        }
    }

    /// The same pooling over packed sentences: rows `0..lengths[0]` are the first sentence's
    /// tokens, the next `lengths[1]` the second's, and so on, every length at least 1.
    ///
    /// # Shapes
    /// - rows: `[sum of lengths, hidden]` -> `[lengths.len(), hidden]`
    pub fn forward_packed<B: Backend>(
        &self,
        rows: Tensor<B, 2>,
        lengths: &[usize],
    ) -> Tensor<B, 2> {
        let (device, n, total) = (rows.device(), lengths.len(), rows.dims()[0]);
        let sentences = packed_sentences(lengths);
        match self {
            Self::Cls => {
                let starts = sentences.iter().map(|&(start, _)| start as i64).collect();
                rows.select(0, Tensor::from_data(TensorData::new(starts, [n]), &device))
            }
            Self::Mean => {
                // One product with the sentences' 0/1 membership, then the division by counts.
                let mut members = vec![0.0f32; n * total];
                for (i, &(start, len)) in sentences.iter().enumerate() {
                    members[i * total + start..i * total + start + len].fill(1.0);
                }
                let counts: Vec<f32> = lengths.iter().map(|&len| len as f32).collect();
                let members =
                    Tensor::<B, 2>::from_data(TensorData::new(members, [n, total]), &device);
                let counts = Tensor::<B, 2>::from_data(TensorData::new(counts, [n, 1]), &device);
                members.matmul(rows) / counts
            }
            Self::Max => {
                let width = rows.dims()[1];
                let maxima = sentences.iter().map(|&(start, len)| {
                    rows.clone()
                        .slice([start..start + len, 0..width])
                        .max_dim(0)
                });
                Tensor::cat(maxima.collect(), 0)
            }
        }
    }
}

/// Divides each row by its L2 norm (at least 1e-12).
///
/// # Shapes
/// - x: `[batch, hidden]` -> `[batch, hidden]`
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray;

    fn inputs() -> (Tensor<B, 3>, Tensor<B, 2>) {
        let device = Default::default();
        // batch 2, seq 3, hidden 2; the second row has one padded position.
        let hidden = Tensor::from_data(
            TensorData::new(
                vec![
                    1.0f32, 2.0, 3.0, -4.0, 5.0, 6.0, 7.0, 8.0, -1.0, 0.5, 100.0, 100.0,
                ],
                [2, 3, 2],
            ),
            &device,
        );
        let mask = Tensor::from_data(
            TensorData::new(vec![1.0f32, 1.0, 1.0, 1.0, 1.0, 0.0], [2, 3]),
            &device,
        );
        (hidden, mask)
    }

    fn values(x: Tensor<B, 2>) -> Vec<f32> {
        x.into_data().into_vec::<f32>().unwrap()
    }

    #[test]
    fn mean_ignores_padding() {
        let (h, m) = inputs();
        assert_eq!(
            values(Pooling::Mean.forward(h, m)),
            vec![3.0, 4.0 / 3.0, 3.0, 4.25]
        );
    }

    #[test]
    fn max_ignores_padding_and_cls_takes_first() {
        let (h, m) = inputs();
        assert_eq!(
            values(Pooling::Max.forward(h.clone(), m.clone())),
            vec![5.0, 6.0, 7.0, 8.0]
        );
        assert_eq!(values(Pooling::Cls.forward(h, m)), vec![1.0, 2.0, 7.0, 8.0]);
    }

    #[test]
    fn normalize_gives_unit_rows() {
        let device = Default::default();
        let x = Tensor::<B, 2>::from_data(
            TensorData::new(vec![3.0f32, 4.0, 0.0, 0.0], [2, 2]),
            &device,
        );
        assert_eq!(values(l2_normalize(x)), vec![0.6, 0.8, 0.0, 0.0]);
    }

    #[test]
    fn config_selects_exactly_one_mode() {
        let cfg = PoolingConfig::new(Pooling::Max, 8);
        assert_eq!(cfg.pooling(), Ok(Pooling::Max));
        let both = PoolingConfig {
            pooling_mode_cls_token: true,
            ..cfg
        };
        assert!(both.pooling().is_err());
    }
}
