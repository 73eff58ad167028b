//! `BertConfig`: a Hugging Face BERT `config.json`, with Hugging Face's field names.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{read_json, EncoderError, Result};

/// The activation of the feed-forward block (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HiddenAct {
    /// Exact GELU (erf), Hugging Face's `gelu`.
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation of GELU, `gelu_new` (also read from `gelu_pytorch_tanh`).
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    /// ReLU.
    #[serde(rename = "relu")]
    Relu,
}

/// The configuration of a BERT encoder, read from (and written to) Hugging Face's `config.json`.
///
/// `Default` gives bert-base-uncased.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: HiddenAct,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub pad_token_id: usize,
    pub initializer_range: f64,
    pub position_embedding_type: String,
    pub model_type: String,
    /// Fields this crate does not interpret, kept so that a saved `config.json` keeps them.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for BertConfig {
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: HiddenAct::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            initializer_range: 0.02,
            position_embedding_type: "absolute".to_string(),
            model_type: "bert".to_string(),
            extra: serde_json::Map::new(),
        }
    }
}

impl BertConfig {
    /// Reads and validates a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = read_json(path)?;
        config
            .validate()
            .map_err(|message| EncoderError::InvalidConfig {
                path: path.to_path_buf(),
                message,
            })?;
        Ok(config)
    }

    /// Checks that the sizes describe a model this crate can build.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "`hidden_size` ({}) is not a multiple of `num_attention_heads` ({})",
                self.hidden_size, self.num_attention_heads
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("`{name}` must be in [0, 1), found {p}"));
            }
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err("`layer_norm_eps` must be positive".to_string());
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "`position_embedding_type` {:?} is not supported (only \"absolute\")",
                self.position_embedding_type
            ));
        }
        if self.pad_token_id >= self.vocab_size {
            return Err(format!(
                "`pad_token_id` ({}) is outside the vocabulary ({})",
                self.pad_token_id, self.vocab_size
            ));
        }
        Ok(())
    }

    /// The size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// A JSON value in Hugging Face's layout, ready to be written as `config.json`.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("BertConfig serialises to JSON");
        if let Some(map) = value.as_object_mut() {
            map.entry("architectures")
                .or_insert_with(|| serde_json::json!(["BertModel"]));
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hf_names_and_keeps_unknown_fields() {
        let json = r#"{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "intermediate_size": 64, "hidden_act": "gelu_new", "vocab_size": 100,
            "transformers_version": "4.8.2"}"#;
        let config: BertConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.hidden_size, 32);
        assert_eq!(config.hidden_act, HiddenAct::GeluNew);
        assert_eq!(config.layer_norm_eps, 1e-12);
        assert_eq!(config.head_dim(), 8);
        assert_eq!(config.extra["transformers_version"], "4.8.2");
        let mut back: BertConfig = serde_json::from_value(config.to_hf_json()).unwrap();
        // Writing adds the architecture transformers needs to pick the model class.
        assert_eq!(
            back.extra.remove("architectures"),
            Some(serde_json::json!(["BertModel"]))
        );
        assert_eq!(back, config);
    }

    #[test]
    fn rejects_heads_not_dividing_hidden() {
        let config = BertConfig {
            num_attention_heads: 5,
            ..BertConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .contains("num_attention_heads"));
    }

    #[test]
    fn rejects_unknown_activation() {
        let err = serde_json::from_str::<BertConfig>(r#"{"hidden_act": "swish"}"#).unwrap_err();
        assert!(err.to_string().contains("swish"));
    }
}
