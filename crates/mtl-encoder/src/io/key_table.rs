//! The Hugging Face key table for BERT: our parameter paths, the keys they are stored under and
//! their layout, as data.
//!
//! A parameter's *path* is its field path in our modules (`encoder.layer.3.attention.
//! self_attention.query.weight`). [`BERT_KEY_TABLE`] maps each BERT path to the Hugging Face key and
//! says whether the stored matrix is transposed (HF `Linear` weights are `[out, in]`, ours
//! `[in, out]`). Loading also accepts the `bert.` prefix and LayerNorm's old `gamma`/`beta` names;
//! keys nobody asks for (`pooler.*`, `cls.*`, `embeddings.position_ids`) are ignored.

/// How a tensor is stored in the checkpoint relative to our parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Same shape and element order.
    AsIs,
    /// A matrix stored transposed (Hugging Face `Linear.weight`, `[out, in]`).
    Transpose,
}

/// Our BERT parameter paths (`{i}`: layer index), their Hugging Face keys and storage layout.
#[rustfmt::skip]
pub const BERT_KEY_TABLE: &[(&str, &str, Layout)] = &[
    ("embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight", Layout::AsIs),
    ("embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight", Layout::AsIs),
    ("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.weight", Layout::AsIs),
    ("embeddings.layer_norm.gamma", "embeddings.LayerNorm.weight", Layout::AsIs),
    ("embeddings.layer_norm.beta", "embeddings.LayerNorm.bias", Layout::AsIs),
    ("encoder.layer.{i}.attention.self_attention.query.weight", "encoder.layer.{i}.attention.self.query.weight", Layout::Transpose),
    ("encoder.layer.{i}.attention.self_attention.query.bias", "encoder.layer.{i}.attention.self.query.bias", Layout::AsIs),
    ("encoder.layer.{i}.attention.self_attention.key.weight", "encoder.layer.{i}.attention.self.key.weight", Layout::Transpose),
    ("encoder.layer.{i}.attention.self_attention.key.bias", "encoder.layer.{i}.attention.self.key.bias", Layout::AsIs),
    ("encoder.layer.{i}.attention.self_attention.value.weight", "encoder.layer.{i}.attention.self.value.weight", Layout::Transpose),
    ("encoder.layer.{i}.attention.self_attention.value.bias", "encoder.layer.{i}.attention.self.value.bias", Layout::AsIs),
    ("encoder.layer.{i}.attention.output.dense.weight", "encoder.layer.{i}.attention.output.dense.weight", Layout::Transpose),
    ("encoder.layer.{i}.attention.output.dense.bias", "encoder.layer.{i}.attention.output.dense.bias", Layout::AsIs),
    ("encoder.layer.{i}.attention.output.layer_norm.gamma", "encoder.layer.{i}.attention.output.LayerNorm.weight", Layout::AsIs),
    ("encoder.layer.{i}.attention.output.layer_norm.beta", "encoder.layer.{i}.attention.output.LayerNorm.bias", Layout::AsIs),
    ("encoder.layer.{i}.intermediate.dense.weight", "encoder.layer.{i}.intermediate.dense.weight", Layout::Transpose),
    ("encoder.layer.{i}.intermediate.dense.bias", "encoder.layer.{i}.intermediate.dense.bias", Layout::AsIs),
    ("encoder.layer.{i}.output.dense.weight", "encoder.layer.{i}.output.dense.weight", Layout::Transpose),
    ("encoder.layer.{i}.output.dense.bias", "encoder.layer.{i}.output.dense.bias", Layout::AsIs),
    ("encoder.layer.{i}.output.layer_norm.gamma", "encoder.layer.{i}.output.LayerNorm.weight", Layout::AsIs),
    ("encoder.layer.{i}.output.layer_norm.beta", "encoder.layer.{i}.output.LayerNorm.bias", Layout::AsIs),
];

/// Prefixes a BERT checkpoint may put before every key (`BertForPreTraining` and friends).
pub const BERT_KEY_PREFIXES: &[&str] = &["", "bert."];

/// Old LayerNorm names (original TF checkpoints): the canonical suffix, then the alias.
pub const LAYER_NORM_ALIASES: &[(&str, &str)] = &[
    ("LayerNorm.weight", "LayerNorm.gamma"),
    ("LayerNorm.bias", "LayerNorm.beta"),
];

/// Where one parameter lives in a checkpoint: keys to try in order, and the layout.
#[derive(Debug, Clone)]
pub struct KeyRule {
    pub keys: Vec<String>,
    pub layout: Layout,
}

/// The canonical Hugging Face key and layout of one of our BERT parameter paths.
pub fn bert_hf_key(path: &str) -> Option<(String, Layout)> {
    let mut index = None;
    let pattern: Vec<&str> = path
        .split('.')
        .map(|part| {
            if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
                index = Some(part);
                "{i}"
            } else {
                part
            }
        })
        .collect();
    let pattern = pattern.join(".");
    BERT_KEY_TABLE
        .iter()
        .find(|(ours, _, _)| *ours == pattern)
        .map(|(_, hf, layout)| (hf.replace("{i}", index.unwrap_or("")), *layout))
}

/// Every key under which a BERT parameter may be stored, canonical first.
pub fn bert_key_rule(path: &str) -> Option<KeyRule> {
    let (hf, layout) = bert_hf_key(path)?;
    let mut names = vec![hf.clone()];
    for (canonical, alias) in LAYER_NORM_ALIASES {
        if let Some(stem) = hf.strip_suffix(canonical) {
            names.push(format!("{stem}{alias}"));
        }
    }
    let keys = BERT_KEY_PREFIXES
        .iter()
        .flat_map(|prefix| names.iter().map(move |n| format!("{prefix}{n}")))
        .collect();
    Some(KeyRule { keys, layout })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_maps_layer_paths_with_their_index() {
        let (key, layout) =
            bert_hf_key("encoder.layer.11.attention.self_attention.query.weight").unwrap();
        assert_eq!(key, "encoder.layer.11.attention.self.query.weight");
        assert_eq!(layout, Layout::Transpose);
        assert!(bert_hf_key("encoder.layer.1.attention.nothing").is_none());
    }

    #[test]
    fn rule_tries_prefix_and_gamma_beta() {
        let rule = bert_key_rule("embeddings.layer_norm.gamma").unwrap();
        assert_eq!(
            rule.keys,
            vec![
                "embeddings.LayerNorm.weight",
                "embeddings.LayerNorm.gamma",
                "bert.embeddings.LayerNorm.weight",
                "bert.embeddings.LayerNorm.gamma"
            ]
        );
    }
}
