//! Checkpoint I/O: the Hugging Face key table for BERT and generic safetensors load/save of any
//! module's parameters by path.
//!
//! A parameter's *path* is its field path in our modules (`encoder.layer.3.attention.
//! self_attention.query.weight`). [`BERT_KEY_TABLE`] maps each BERT path to the Hugging Face key and
//! says whether the stored matrix is transposed (HF `Linear` weights are `[out, in]`, ours
//! `[in, out]`). Loading also accepts the `bert.` prefix and LayerNorm's old `gamma`/`beta` names;
//! keys nobody asks for (`pooler.*`, `cls.*`, `embeddings.position_ids`) are ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use crate::error::{read_file, EncoderError, Result};

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

/// A safetensors file read into memory.
pub struct Checkpoint {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Checkpoint {
    /// Reads the file; it is parsed when tensors are requested.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = read_file(path)?;
        let checkpoint = Self {
            path: path.to_path_buf(),
            bytes,
        };
        checkpoint.parse()?;
        Ok(checkpoint)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn parse(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| EncoderError::Safetensors {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// The names of all tensors in the file.
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self
            .parse()?
            .names()
            .into_iter()
            .map(String::from)
            .collect())
    }

    /// Reads the tensor called `name` as f32, with its shape.
    pub fn tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let tensors = self.parse()?;
        let view = tensors
            .tensor(name)
            .map_err(|_| EncoderError::MissingTensor {
                path: self.path.clone(),
                name: name.to_string(),
                tried: name.to_string(),
            })?;
        let values = to_f32(&view).ok_or_else(|| EncoderError::TensorDtype {
            path: self.path.clone(),
            name: name.to_string(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        Ok((view.shape().to_vec(), values))
    }

    /// Reads one tensor as f32 in our layout, checking it against `expected` (our shape).
    fn read(
        &self,
        tensors: &SafeTensors<'_>,
        path: &str,
        rule: &KeyRule,
        expected: &[usize],
    ) -> Result<Vec<f32>> {
        let Some((key, view)) = rule
            .keys
            .iter()
            .find_map(|k| tensors.tensor(k).ok().map(|v| (k.clone(), v)))
        else {
            return Err(EncoderError::MissingTensor {
                path: self.path.clone(),
                name: rule
                    .keys
                    .first()
                    .cloned()
                    .unwrap_or_else(|| path.to_string()),
                tried: rule.keys.join(", "),
            });
        };
        let stored: Vec<usize> = match rule.layout {
            Layout::AsIs => expected.to_vec(),
            Layout::Transpose => expected.iter().rev().copied().collect(),
        };
        if view.shape() != stored.as_slice() {
            return Err(EncoderError::TensorShape {
                path: self.path.clone(),
                name: key,
                expected: stored,
                found: view.shape().to_vec(),
            });
        }
        let values = to_f32(&view).ok_or_else(|| EncoderError::TensorDtype {
            path: self.path.clone(),
            name: key.clone(),
            dtype: format!("{:?}", view.dtype()),
        })?;
        Ok(match rule.layout {
            Layout::AsIs => values,
            Layout::Transpose => transpose(&values, stored[0], stored[1]),
        })
    }
}

fn to_f32(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let data = view.data();
    Some(match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        _ => return None,
    })
}

/// Transposes a row-major `[rows, cols]` matrix.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

struct LoadMapper<'a, F> {
    checkpoint: &'a Checkpoint,
    tensors: SafeTensors<'a>,
    rule: F,
    path: Vec<String>,
    error: Option<EncoderError>,
}

impl<B: Backend, F: Fn(&str) -> Option<KeyRule>> ModuleMapper<B> for LoadMapper<'_, F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() {
            return param;
        }
        let path = self.path.join(".");
        let Some(rule) = (self.rule)(&path) else {
            self.error = Some(EncoderError::InvalidArgument(format!(
                "parameter `{path}` has no checkpoint key"
            )));
            return param;
        };
        let shape = param.lazy_shape().to_vec();
        match self.checkpoint.read(&self.tensors, &path, &rule, &shape) {
            Ok(values) => {
                let device = param.lazy_device();
                let tensor = Tensor::<B, D>::from_data(TensorData::new(values, shape), &device);
                Param::initialized(param.id, tensor.require_grad())
            }
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

/// Replaces every float parameter of `module` by the checkpoint tensor `rule` names for its path.
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    checkpoint: &Checkpoint,
    rule: impl Fn(&str) -> Option<KeyRule>,
) -> Result<M> {
    let mut mapper = LoadMapper {
        checkpoint,
        tensors: checkpoint.parse()?,
        rule,
        path: Vec::new(),
        error: None,
    };
    let module = module.map(&mut mapper);
    match mapper.error {
        Some(e) => Err(e),
        None => Ok(module),
    }
}

struct CollectVisitor<F> {
    name: F,
    path: Vec<String>,
    out: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    error: Option<String>,
}

impl<B: Backend, F: Fn(&str) -> Option<(String, Layout)>> ModuleVisitor<B> for CollectVisitor<F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let path = self.path.join(".");
        let Some((key, layout)) = (self.name)(&path) else {
            self.error
                .get_or_insert(format!("parameter `{path}` has no checkpoint key"));
            return;
        };
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let values = tensor
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("converted to f32");
        let entry = match layout {
            Layout::AsIs => (shape, values),
            Layout::Transpose => (
                vec![shape[1], shape[0]],
                transpose(&values, shape[0], shape[1]),
            ),
        };
        self.out.insert(key, entry);
    }
}

/// Collects every float parameter of `module` under the checkpoint key `name` gives its path,
/// in checkpoint layout.
pub fn module_tensors<B: Backend, M: Module<B>>(
    module: &M,
    name: impl Fn(&str) -> Option<(String, Layout)>,
) -> Result<BTreeMap<String, (Vec<usize>, Vec<f32>)>> {
    let mut visitor = CollectVisitor {
        name,
        path: Vec::new(),
        out: BTreeMap::new(),
        error: None,
    };
    module.visit(&mut visitor);
    match visitor.error {
        Some(message) => Err(EncoderError::InvalidArgument(message)),
        None => Ok(visitor.out),
    }
}

/// Serialises named f32 tensors to safetensors bytes (deterministic: sorted by name).
pub fn serialize_tensors(tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, (shape, values))| {
            let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), shape.clone(), data)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, data)| {
            let view =
                TensorView::new(Dtype::F32, shape.clone(), data).expect("shape matches data");
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize(views, None).expect("in-memory serialisation")
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let io = |source| EncoderError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// The parameter ids of a module, with their paths (for freezing and per-group learning rates).
pub fn param_paths<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, ParamId)> {
    struct Paths {
        path: Vec<String>,
        out: Vec<(String, ParamId)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Paths {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.out.push((self.path.join("."), param.id));
        }
    }
    let mut visitor = Paths {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.out
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

    #[test]
    fn transpose_swaps_rows_and_columns() {
        assert_eq!(
            transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
