//! A BERT sentence encoder that reproduces sentence-transformers, generic over burn backends.

pub mod activation;
pub mod attention;
pub mod bert;
pub mod config;
pub mod dropout;
pub mod embeddings;
pub mod error;
pub mod kernels;
pub mod layer;
pub mod layer_norm;
pub mod loader;
pub mod memory;
pub mod pooling;
pub mod sentence_encoder;
pub mod threads;
pub mod tokenize;

pub use bert::BertModel;
pub use config::{BertConfig, HiddenAct};
pub use dropout::{seed_dropout, Dropout};
pub use error::{EncoderError, Result};
pub use loader::{Checkpoint, KeyRule, Layout};
pub use memory::tune_allocator;
pub use pooling::{l2_normalize, Pooling, PoolingConfig};
pub use sentence_encoder::{EncoderSettings, SentenceEncoder, DEFAULT_BATCH_SIZE};
pub use threads::{blas_threads, SingleThreadedBlas};
pub use tokenize::{length_sorted_batches, unsort_rows, Encoded, SentenceTokenizer, TokenBatch};
