//! Shared helpers of the cross-crate tests: where the model and the shared fixtures are.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// all-MiniLM-L6-v2, fetched by `scripts/fetch-model.sh` (or `MTL_MODEL_DIR`).
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("MTL_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models/all-MiniLM-L6-v2"));
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} has no model: run scripts/fetch-model.sh first",
        dir.display()
    );
    dir
}

/// The read-only shared material (`../shared`, or `MTL_SHARED`).
pub fn shared() -> PathBuf {
    std::env::var_os("MTL_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared"))
}

/// The first `n` lines (after the header) of a shared UCI file, written to `to`.
pub fn head(file: &str, n: usize, to: &Path) {
    let text = std::fs::read_to_string(shared().join("data/uci-mtl").join(file)).unwrap();
    let lines: Vec<&str> = text.lines().take(n + 1).collect();
    std::fs::write(to, lines.join("\n") + "\n").unwrap();
}

/// A small random-initialisable BERT (hidden 32, 4 heads) with `layers` layers and the
/// bert-base vocabulary, so the real tokenizer fits it.
pub fn tiny_config(layers: usize) -> mtl::encoder::BertConfig {
    mtl::encoder::BertConfig {
        hidden_size: 32,
        num_hidden_layers: layers,
        num_attention_heads: 4,
        intermediate_size: 64,
        max_position_embeddings: 64,
        ..mtl::encoder::BertConfig::default()
    }
}

/// The largest absolute difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The numbers of a JSON value (nested arrays flattened, row-major) as `f32`: the fixtures
/// hold exact `f32` values in decimal.
pub fn json_floats(v: &serde_json::Value) -> Vec<f32> {
    match v {
        serde_json::Value::Array(items) => items.iter().flat_map(json_floats).collect(),
        serde_json::Value::Number(n) => vec![n.as_f64().expect("number") as f32],
        other => panic!("unexpected JSON value {other}, expected numbers"),
    }
}

/// A JSON file.
pub fn read_json(path: &std::path::Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON Lines file, one value per line.
pub fn jsonl(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The largest absolute value of a slice.
pub fn max_abs(values: &[f32]) -> f32 {
    values.iter().fold(0.0, |m, v| m.max(v.abs()))
}
