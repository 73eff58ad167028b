//! A BERT sentence encoder that reproduces sentence-transformers, generic over burn backends.
//!
//! The layers, each using only the ones listed before it:
//! - [`runtime`]: where code runs (CPU or not, worker threads, BLAS threads, the allocator) and
//!   the seeded generators;
//! - [`ops`]: linear, attention, LayerNorm, GELU and dropout, each routed once to a burn-ndarray
//!   kernel or to burn's tensor operations;
//! - [`nn`]: `Linear`, `LayerNorm`, `Dropout` and the activations, with burn's parameter names;
//! - [`bert`]: Hugging Face's BERT modules, reading like the architecture;
//! - [`io`]: the checkpoint key table and safetensors load/save by parameter path;
//! - [`SentenceEncoder`]: tokenizer, BERT and pooling from a sentence-transformers folder.

pub mod bert;
mod config;
mod error;
pub mod io;
pub mod nn;
pub mod ops;
pub mod runtime;
mod sentence;

pub use bert::BertModel;
pub use config::{BertConfig, HiddenAct};
pub use error::{EncoderError, Result};
pub use io::{Checkpoint, KeyRule, Layout};
pub use nn::{Dropout, LayerNorm, Linear, LinearConfig};
pub use runtime::{blas_threads, seed_dropout, tune_allocator, Rng, SingleThreadedBlas};
pub use sentence::{
    l2_normalize, length_sorted_batches, token_budget_batches, Encoded, EncoderSettings,
    PackedTokens, Pooling, PoolingConfig, SentenceEncoder, SentenceTokenizer, TokenBatch,
    DEFAULT_BATCH_SIZE, DEFAULT_CPU_BATCH_TOKENS,
};
