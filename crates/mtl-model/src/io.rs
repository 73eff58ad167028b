//! Saving and loading a model directory: the encoder in Hugging Face / sentence-transformers
//! layout, the heads in `heads.safetensors` (PyTorch `Linear` layout, keys `<task>.<param>`),
//! and `mtl.json` describing tasks, heads, pooling and sequence length.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::backend::Backend;
use mtl_encoder::io::{
    fresh_partial, load_module, module_tensors, serialize_tensors, swap_dir, write_atomic,
};
use mtl_encoder::{Checkpoint, KeyRule, Layout, Pooling, SentenceEncoder};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::model::{head_config, HeadOptions, ModelMeta, MultiTaskModel};
use crate::task::{validate_tasks, TaskSpec};

/// The name and version of the `mtl.json` format.
pub const FORMAT: &str = "mtl-multitask/1";

/// The contents of `mtl.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// Tasks, in head order.
    pub tasks: Vec<TaskSpec>,
    /// How heads are built.
    pub head: HeadOptions,
    /// The pooling the heads read.
    pub pooling: Pooling,
    /// Whether the heads read L2-normalised embeddings (the encoder's setting, also written as
    /// sentence-transformers' `Normalize` module). Files written before it was here kept it as
    /// `head.normalize` ([`read_model_file`] reads either).
    #[serde(default)]
    pub normalize: bool,
    /// Truncation length, special tokens included.
    pub max_seq_length: usize,
}

fn head_key(task: &TaskSpec, path: &str) -> (String, Layout) {
    let layout = if path.ends_with("weight") {
        Layout::Transpose
    } else {
        Layout::AsIs
    };
    (format!("{}.{path}", task.name), layout)
}

impl<B: Backend> MultiTaskModel<B> {
    /// The description written to `mtl.json`.
    pub fn model_file(&self) -> ModelFile {
        ModelFile {
            format: FORMAT.to_string(),
            tasks: self.meta.tasks.to_vec(),
            head: self.meta.head.clone(),
            pooling: self.encoder.settings.pooling,
            normalize: self.encoder.settings.normalize,
            max_seq_length: self.encoder.tokenizer().max_seq_length(),
        }
    }

    /// Writes a self-contained model directory. Everything is written into `<dir>.partial`
    /// first and then renamed into place, so a crash never leaves a half-written model.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let partial = fresh_partial(dir)?;
        self.encoder.save(&partial)?;
        let mut tensors = std::collections::BTreeMap::new();
        for (task, head) in self.meta.tasks.iter().zip(&self.heads) {
            tensors.extend(module_tensors(head, |p| Some(head_key(task, p)))?);
        }
        write_atomic(
            &partial.join("heads.safetensors"),
            &serialize_tensors(&tensors),
        )?;
        let mut json =
            serde_json::to_string_pretty(&self.model_file()).expect("mtl.json serialises");
        json.push('\n');
        write_atomic(&partial.join("mtl.json"), json.as_bytes())?;

        Ok(swap_dir(&partial, dir)?)
    }

    /// Loads a directory written by [`save`](Self::save).
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        let file = read_model_file(&dir.join("mtl.json"))?;
        let mut encoder = SentenceEncoder::<B>::load(dir, device)?
            .with_pooling(file.pooling)
            .with_normalize(file.normalize);
        if encoder.tokenizer().max_seq_length() != file.max_seq_length {
            encoder = encoder.with_max_seq_length(file.max_seq_length)?;
        }
        let checkpoint = Checkpoint::open(&dir.join("heads.safetensors"))?;
        let heads = file
            .tasks
            .iter()
            .enumerate()
            .map(|(i, task)| {
                let config = head_config(&file.head, encoder.dim(), i, task);
                config.validate().map_err(ModelError::InvalidHead)?;
                let head = load_module(config.init::<B>(device), &checkpoint, |p| {
                    let (key, layout) = head_key(task, p);
                    Some(KeyRule {
                        keys: vec![key],
                        layout,
                    })
                })?;
                Ok(head)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            encoder,
            heads,
            meta: ModelMeta {
                tasks: Arc::new(file.tasks),
                head: file.head,
            },
        })
    }
}

/// Reads and checks `mtl.json`.
pub fn read_model_file(path: &Path) -> Result<ModelFile> {
    let model_file = |message: String| ModelError::ModelFile {
        path: PathBuf::from(path),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            model_file("missing: not a multi-task model directory (no mtl.json)".to_string())
        } else {
            model_file(format!("cannot read: {e}"))
        }
    })?;
    let mut json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| model_file(format!("malformed: {e}")))?;
    upgrade_legacy_normalize(&mut json);
    let file: ModelFile =
        serde_json::from_value(json).map_err(|e| model_file(format!("malformed: {e}")))?;
    if file.format != FORMAT {
        return Err(model_file(format!(
            "format {:?} is not {FORMAT:?}",
            file.format
        )));
    }
    validate_tasks(&file.tasks).map_err(|e| model_file(e.to_string()))?;
    if file.max_seq_length < 2 {
        return Err(model_file(format!(
            "max_seq_length {} is too small",
            file.max_seq_length
        )));
    }
    Ok(file)
}

/// Moves `head.normalize` of files written before normalisation became the encoder's setting
/// to the top-level `normalize`.
fn upgrade_legacy_normalize(json: &mut serde_json::Value) {
    let legacy = json
        .get_mut("head")
        .and_then(|head| head.as_object_mut())
        .and_then(|head| head.remove("normalize"));
    if let (Some(value), Some(file)) = (legacy, json.as_object_mut()) {
        file.entry("normalize").or_insert(value);
    }
}
