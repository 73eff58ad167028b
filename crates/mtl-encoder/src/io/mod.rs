//! Checkpoint I/O: the BERT key table (data), safetensors load and save of any module by
//! parameter path, atomic file and directory writes.

mod fs;
mod key_table;
mod paths;
mod safetensors;

pub use fs::{fresh_partial, sibling, swap_dir, write_atomic};
pub use key_table::{
    bert_hf_key, bert_key_rule, KeyRule, Layout, BERT_KEY_PREFIXES, BERT_KEY_TABLE,
    LAYER_NORM_ALIASES,
};
pub use paths::{map_paths, param_paths, visit_paths, PathMapper, PathVisitor};
pub use safetensors::{
    f32_le_bytes, load_module, module_tensors, serialize_tensors, Checkpoint, NamedTensors,
};
