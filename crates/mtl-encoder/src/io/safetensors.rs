//! Safetensors load and save of any module's float parameters by path, through a key rule.
//!
//! This stays our own code rather than burn-store's `SafetensorsStore`: burn-store 0.21 keeps
//! f16/bf16 tensors in their dtype (burn-ndarray cannot hold them) unless a custom adapter
//! converts them, rewrites keys with one regex remapper instead of trying them in order (so it
//! cannot report the keys tried, and silently resolves a file holding both `X` and `bert.X`),
//! picks transposes and LayerNorm aliases by module type names rather than by this crate's
//! table, and copies each tensor three to five times (here: one decode, plus the transpose of
//! linear weights). Its errors name neither the file nor the keys tried, and saving would still
//! need this serializer for optimizer state and would lose the check that every parameter has
//! a key.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use super::key_table::{KeyRule, Layout};
use super::paths::{map_paths, visit_paths, PathMapper, PathVisitor};
use crate::error::{read_file, EncoderError, Result};

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
    error: Option<EncoderError>,
}

impl<B: Backend, F: Fn(&str) -> Option<KeyRule>> PathMapper<B> for LoadMapper<'_, F> {
    fn map<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<B, D>>,
    ) -> Param<Tensor<B, D>> {
        if self.error.is_some() {
            return param;
        }
        let Some(rule) = (self.rule)(path) else {
            self.error = Some(EncoderError::NoCheckpointKey {
                path: path.to_string(),
            });
            return param;
        };
        let shape = param.lazy_shape().to_vec();
        match self.checkpoint.read(&self.tensors, path, &rule, &shape) {
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
        error: None,
    };
    let module = map_paths(module, &mut mapper);
    match mapper.error {
        Some(e) => Err(e),
        None => Ok(module),
    }
}

/// Tensors by checkpoint key: shape and row-major `f32` values.
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

struct CollectVisitor<F> {
    name: F,
    out: NamedTensors,
    error: Option<EncoderError>,
}

impl<B: Backend, F: Fn(&str) -> Option<(String, Layout)>> PathVisitor<B> for CollectVisitor<F> {
    fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
        let Some((key, layout)) = (self.name)(path) else {
            self.error.get_or_insert(EncoderError::NoCheckpointKey {
                path: path.to_string(),
            });
            return;
        };
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let values = crate::ops::host_values(tensor);
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
) -> Result<NamedTensors> {
    let mut visitor = CollectVisitor {
        name,
        out: BTreeMap::new(),
        error: None,
    };
    visit_paths(module, &mut visitor);
    match visitor.error {
        Some(e) => Err(e),
        None => Ok(visitor.out),
    }
}

/// `values` as little-endian bytes, safetensors' layout: the values' own memory on
/// little-endian CPUs, a converted copy elsewhere.
pub fn f32_le_bytes(values: &[f32]) -> Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        Cow::Borrowed(bytemuck::cast_slice(values))
    } else {
        Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// Serialises named f32 tensors to safetensors bytes (deterministic: sorted by name).
pub fn serialize_tensors(tensors: &NamedTensors) -> Vec<u8> {
    let bytes: Vec<Cow<'_, [u8]>> = tensors.values().map(|(_, v)| f32_le_bytes(v)).collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, (shape, _)), data)| {
            let view =
                TensorView::new(Dtype::F32, shape.clone(), data).expect("shape matches data");
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize(views, None).expect("in-memory serialisation")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_swaps_rows_and_columns() {
        assert_eq!(
            transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}
