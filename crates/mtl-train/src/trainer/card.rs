//! The model card written beside a trained model: `README.md` with front matter (base model,
//! tasks, labels, metrics) for model hubs, the recipe, and how to load the model.

use std::fmt::Write;
use std::path::Path;

use mtl_model::TaskSpec;

use super::config::TrainConfig;
use super::eval::EvalRecord;
use crate::error::Result;
use mtl_encoder::io::write_atomic;

/// Writes `<dir>/README.md`.
pub(super) fn write_model_card(
    dir: &Path,
    base_model: Option<&str>,
    tasks: &[TaskSpec],
    config: &TrainConfig,
    metrics: Option<&EvalRecord>,
) -> Result<()> {
    let mut s = String::from("---\n");
    if let Some(base) = base_model {
        let _ = writeln!(s, "base_model: {}", yaml_string(base));
    }
    s.push_str("library_name: sentence-transformers\ntags:\n- mtl\n- sentence-transformers\n");
    s.push_str("- text-classification\n- multi-task\npipeline_tag: text-classification\n");
    s.push_str("mtl:\n  tasks:\n");
    for task in tasks {
        let _ = writeln!(s, "  - name: {}", yaml_string(&task.name));
        let labels: Vec<String> = task.labels.iter().map(|l| yaml_string(l)).collect();
        let _ = writeln!(s, "    labels: [{}]", labels.join(", "));
        if let Some(m) = metrics.and_then(|r| r.tasks.get(&task.name)) {
            let split = &metrics.expect("metrics").split;
            let _ = writeln!(
                s,
                "    {split}: {{accuracy: {:.4}, macro_f1: {:.4}, mcc: {:.4}, support: {}}}",
                m.accuracy, m.macro_f1, m.mcc, m.support
            );
        }
    }
    s.push_str("---\n\n");
    let title = base_model.map_or("a BERT encoder".to_string(), |b| format!("`{b}`"));
    let _ = writeln!(
        s,
        "# Multi-task model\n\nA sentence encoder fine-tuned from {title} with one classification \
         head per task, trained with mtl.\n"
    );
    s.push_str("| task | labels |");
    if let Some(rec) = metrics {
        let _ = write!(s, " {0} accuracy | {0} macro-F1 | {0} MCC |", rec.split);
    }
    s.push('\n');
    s.push_str(if metrics.is_some() {
        "|---|---|---|---|---|\n"
    } else {
        "|---|---|\n"
    });
    for task in tasks {
        let _ = write!(s, "| {} | {} |", task.name, task.labels.join(", "));
        if let Some(m) = metrics.and_then(|r| r.tasks.get(&task.name)) {
            let _ = write!(s, " {:.4} | {:.4} | {:.4} |", m.accuracy, m.macro_f1, m.mcc);
        }
        s.push('\n');
    }
    let recipe = serde_json::to_string_pretty(config).expect("the configuration serialises");
    let _ = write!(
        s,
        "\n## Training recipe\n\n```json\n{recipe}\n```\n\n## Use\n\n\
         With mtl (every head, and the embeddings):\n\n```sh\n\
         mtl predict --model <this folder> \"A sentence.\"\n\
         mtl serve --model <this folder>\n```\n\n\
         With sentence-transformers (the fine-tuned encoder; the heads are in \
         `heads.safetensors`, described by `mtl.json`):\n\n```python\n\
         from sentence_transformers import SentenceTransformer\n\
         model = SentenceTransformer(\"<this folder>\")\n\
         embeddings = model.encode([\"A sentence.\"])\n```\n"
    );
    Ok(write_atomic(&dir.join("README.md"), s.as_bytes())?)
}

/// A YAML double-quoted string.
fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}
