//! Freezing policies: which parameters receive no gradient.

use std::str::FromStr;

use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor};
use mtl_encoder::io::{map_paths, PathMapper};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::model::MultiTaskModel;
use crate::params::ParamRole;

/// What of the encoder is frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EncoderFreeze {
    /// Everything trains.
    #[default]
    Nothing,
    /// The whole encoder is frozen.
    All,
    /// The embeddings are frozen.
    Embeddings,
    /// The embeddings and the bottom `k` encoder layers are frozen.
    EmbeddingsAndLayers(usize),
}

/// A freezing policy: a part of the encoder and any named heads.
///
/// Parsed from a comma-separated list of `none`, `encoder`, `embeddings`, `layers:K`
/// (embeddings plus the bottom K layers) and `head:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FreezePolicy {
    /// The encoder part.
    pub encoder: EncoderFreeze,
    /// Heads (task names) to freeze.
    pub heads: Vec<String>,
}

impl FromStr for FreezePolicy {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        let mut policy = Self::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let encoder = match part {
                "none" => Some(EncoderFreeze::Nothing),
                "encoder" => Some(EncoderFreeze::All),
                "embeddings" => Some(EncoderFreeze::Embeddings),
                _ => None,
            };
            if let Some(e) = encoder {
                policy.encoder = e;
            } else if let Some(k) = part.strip_prefix("layers:") {
                let k = k.parse().map_err(|_| {
                    ModelError::InvalidFreeze(format!("{part:?}: K must be a number"))
                })?;
                policy.encoder = EncoderFreeze::EmbeddingsAndLayers(k);
            } else if let Some(name) = part.strip_prefix("head:") {
                policy.heads.push(name.to_string());
            } else {
                return Err(ModelError::InvalidFreeze(format!(
                    "{part:?} (expected none, encoder, embeddings, layers:K or head:NAME)"
                )));
            }
        }
        Ok(policy)
    }
}

impl FreezePolicy {
    /// Freezes nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether the parameter at `path` (a path in [`MultiTaskModel`]) is frozen; `heads` are
    /// the frozen heads' indices.
    fn freezes(&self, path: &str, heads: &[usize]) -> bool {
        let role = ParamRole::of(path);
        if let ParamRole::Head(i) = role {
            return heads.contains(&i);
        }
        match self.encoder {
            EncoderFreeze::Nothing => false,
            EncoderFreeze::All => role.is_encoder(),
            EncoderFreeze::Embeddings => role == ParamRole::Embeddings,
            EncoderFreeze::EmbeddingsAndLayers(k) => match role {
                ParamRole::Embeddings => true,
                ParamRole::Layer(i) => i < k,
                _ => false,
            },
        }
    }

    /// True when the whole encoder is frozen (its outputs can be cached).
    pub fn freezes_encoder(&self) -> bool {
        self.encoder == EncoderFreeze::All
    }
}

struct FreezeMapper<'a> {
    policy: &'a FreezePolicy,
    heads: Vec<usize>,
}

impl<B: Backend> PathMapper<B> for FreezeMapper<'_> {
    fn map<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        param.set_require_grad(!self.policy.freezes(path, &self.heads))
    }
}

impl<B: Backend> MultiTaskModel<B> {
    /// Applies a freezing policy: frozen parameters stop requiring gradients, all others
    /// require them.
    pub fn freeze(self, policy: &FreezePolicy) -> Result<Self> {
        let heads = policy
            .heads
            .iter()
            .map(|name| self.task_index(name))
            .collect::<Result<Vec<_>>>()?;
        if let EncoderFreeze::EmbeddingsAndLayers(k) = policy.encoder {
            let layers = self.encoder.bert.num_layers();
            if k > layers {
                return Err(ModelError::InvalidFreeze(format!(
                    "layers:{k} but the encoder has {layers} layers"
                )));
            }
        }
        let mut mapper = FreezeMapper { policy, heads };
        Ok(map_paths(self, &mut mapper))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_policies() {
        let p: FreezePolicy = "layers:2,head:sentiment".parse().unwrap();
        assert_eq!(p.encoder, EncoderFreeze::EmbeddingsAndLayers(2));
        assert_eq!(p.heads, vec!["sentiment"]);
        assert_eq!(
            "encoder".parse::<FreezePolicy>().unwrap().encoder,
            EncoderFreeze::All
        );
        assert!("layers:x".parse::<FreezePolicy>().is_err());
        assert!("everything".parse::<FreezePolicy>().is_err());
    }

    #[test]
    fn selects_paths() {
        let p = FreezePolicy {
            encoder: EncoderFreeze::EmbeddingsAndLayers(2),
            heads: vec![],
        };
        assert!(p.freezes("encoder.bert.embeddings.word_embeddings.weight", &[]));
        assert!(p.freezes("encoder.bert.encoder.layer.1.output.dense.bias", &[]));
        assert!(!p.freezes("encoder.bert.encoder.layer.2.output.dense.bias", &[]));
        assert!(!p.freezes("heads.0.dense.weight", &[]));
        assert!(p.freezes("heads.1.dense.weight", &[1]));
    }
}
