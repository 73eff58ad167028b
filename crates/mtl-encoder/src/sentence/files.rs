//! The files of a Hugging Face / sentence-transformers model folder beyond the weights:
//! `modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json`, `tokenizer_config.json`
//! and the tokenizer files copied verbatim.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::Deserialize;

use super::pooling::{Pooling, PoolingConfig};
use super::SentenceEncoder;
use crate::error::{read_json, EncoderError, Result};
use crate::io::{
    bert_hf_key, module_tensors, serialize_tensors, write_atomic, Checkpoint, NamedTensors,
};

/// Tokenizer files copied verbatim when a model is saved.
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
];

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
}

pub(super) fn missing_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(EncoderError::MissingDirectory {
            path: dir.to_path_buf(),
        })
    }
}

/// Reads the sentence-transformers files of `dir`: (pooling, normalize, max_seq_length), each
/// `None` when the directory does not say.
pub(super) fn read_sentence_transformers(
    dir: &Path,
) -> Result<(Option<Pooling>, Option<bool>, Option<usize>)> {
    let modules_path = dir.join("modules.json");
    let mut pooling_dir = dir.join("1_Pooling");
    let mut normalize = None;
    if modules_path.is_file() {
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        normalize = Some(modules.iter().any(|m| m.kind.ends_with("Normalize")));
        if let Some(p) = modules.iter().find(|m| m.kind.ends_with("Pooling")) {
            pooling_dir = dir.join(&p.path);
        }
    }
    let pooling_path = pooling_dir.join("config.json");
    let pooling = if pooling_path.is_file() {
        let cfg: PoolingConfig = read_json(&pooling_path)?;
        Some(
            cfg.pooling()
                .map_err(|message| EncoderError::InvalidConfig {
                    path: pooling_path.clone(),
                    message,
                })?,
        )
    } else {
        None
    };
    let sbert_path = dir.join("sentence_bert_config.json");
    let max_seq_length = if sbert_path.is_file() {
        read_json::<SentenceBertConfig>(&sbert_path)?.max_seq_length
    } else {
        None
    };
    Ok((pooling, normalize, max_seq_length))
}

/// The truncation length: sentence-transformers' `max_seq_length`, else the tokenizer's
/// `model_max_length` (when plausible), else none; at most `max_position_embeddings`.
pub(super) fn max_seq_length(
    dir: &Path,
    sbert_max: Option<usize>,
    max_position_embeddings: usize,
) -> Result<usize> {
    let length = match sbert_max {
        Some(n) => n,
        None => {
            let tc_path = dir.join("tokenizer_config.json");
            let tokenizer_max = if tc_path.is_file() {
                read_json::<TokenizerConfig>(&tc_path)?
                    .model_max_length
                    .filter(|n| (2.0..1.0e6).contains(n))
                    .map(|n| n as usize)
            } else {
                None
            };
            tokenizer_max.unwrap_or(usize::MAX)
        }
    };
    Ok(length.min(max_position_embeddings))
}

/// The checkpoint's pooler tensors (`pooler.*`, with or without the `bert.` prefix) by Hugging
/// Face key: the model does not use them, but transformers expects them in a saved folder.
pub(super) fn passthrough_tensors(checkpoint: &Checkpoint) -> Result<NamedTensors> {
    let mut out = NamedTensors::new();
    for name in checkpoint.names()? {
        let key = name.strip_prefix("bert.").unwrap_or(&name);
        if key.starts_with("pooler.") {
            out.insert(key.to_string(), checkpoint.tensor(&name)?);
        }
    }
    Ok(out)
}

/// The tokenizer files present in `dir` (name, bytes), to write back on save.
pub(super) fn read_tokenizer_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for name in TOKENIZER_FILES {
        let path = dir.join(name);
        if path.is_file() {
            let bytes = std::fs::read(&path).map_err(|source| EncoderError::Io { path, source })?;
            files.push((name.to_string(), bytes));
        }
    }
    Ok(files)
}

/// Writes a Hugging Face / sentence-transformers directory: `config.json`,
/// `model.safetensors` (Hugging Face keys), the tokenizer files, `modules.json`,
/// `1_Pooling/config.json`, `sentence_bert_config.json` and `config_sentence_transformers.json`.
/// Each file is written atomically.
pub(super) fn write_folder<B: Backend>(encoder: &SentenceEncoder<B>, dir: &Path) -> Result<()> {
    let mkdir = |path: PathBuf| {
        std::fs::create_dir_all(&path).map_err(|source| EncoderError::Io { path, source })
    };
    mkdir(dir.to_path_buf())?;
    mkdir(dir.join("1_Pooling"))?;
    let settings = &encoder.settings;
    let json = |value: serde_json::Value| {
        let mut s = serde_json::to_string_pretty(&value).expect("JSON value");
        s.push('\n');
        s.into_bytes()
    };
    let mut tensors = module_tensors(&encoder.bert, bert_hf_key)?;
    for (key, tensor) in settings.passthrough.iter() {
        tensors.entry(key.clone()).or_insert_with(|| tensor.clone());
    }
    write_atomic(&dir.join("model.safetensors"), &serialize_tensors(&tensors))?;
    write_atomic(
        &dir.join("config.json"),
        &json(settings.config.to_hf_json()),
    )?;
    for (name, bytes) in settings.tokenizer_files.iter() {
        write_atomic(&dir.join(name), bytes)?;
    }
    if !settings
        .tokenizer_files
        .iter()
        .any(|(name, _)| name == "tokenizer.json")
    {
        // Built in memory: serialise the tokenizer itself.
        let json = settings
            .tokenizer
            .inner()
            .to_string(true)
            .map_err(|e| EncoderError::Tokenize(e.to_string()))?;
        write_atomic(&dir.join("tokenizer.json"), json.as_bytes())?;
    }
    let pooling = PoolingConfig::new(settings.pooling, encoder.dim());
    write_atomic(
        &dir.join("1_Pooling/config.json"),
        &json(serde_json::to_value(pooling).expect("pooling")),
    )?;
    write_atomic(
        &dir.join("sentence_bert_config.json"),
        &json(serde_json::json!({
            "max_seq_length": settings.tokenizer.max_seq_length(),
            "do_lower_case": false
        })),
    )?;
    write_atomic(
        &dir.join("config_sentence_transformers.json"),
        &json(serde_json::json!({
            "__version__": {"mtl": env!("CARGO_PKG_VERSION")},
            "prompts": {},
            "default_prompt_name": null,
            "similarity_fn_name": "cosine"
        })),
    )?;
    let mut modules = vec![
        serde_json::json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        serde_json::json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if settings.normalize {
        mkdir(dir.join("2_Normalize"))?;
        modules.push(serde_json::json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
    }
    write_atomic(
        &dir.join("modules.json"),
        &json(serde_json::Value::Array(modules)),
    )?;
    Ok(())
}
