//! The model behind the server: a plain sentence encoder or a multi-task model, run on batches
//! of tokenized sentences.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{activation::softmax, backend::Backend, Tensor};
use mtl_encoder::{
    l2_normalize, length_sorted_batches, Encoded, SentenceEncoder, SentenceTokenizer,
};
use mtl_model::{MultiTaskModel, TaskSpec};
use serde::Serialize;

use crate::error::ServeError;

/// What the server runs.
#[derive(Debug, Clone)]
pub enum ServedModel<B: Backend> {
    /// Embeddings only.
    Encoder(SentenceEncoder<B>),
    /// Embeddings from the shared encoder and every head's predictions.
    MultiTask(MultiTaskModel<B>),
}

/// One task as `/info` describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskInfo {
    /// The task's name.
    pub name: String,
    /// Its label names, in class order.
    pub labels: Vec<String>,
    /// Where its distribution starts in a batch's output row (after the embedding and the
    /// tasks before it).
    #[serde(skip)]
    pub offset: usize,
}

/// What the server's routes need to know about the model (no backend type).
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The embedding width.
    pub dimension: usize,
    /// The truncation length, special tokens included.
    pub max_seq_length: usize,
    /// `mean`, `cls` or `max`.
    pub pooling: String,
    /// Whether the heads read L2-normalised embeddings.
    pub normalize: bool,
    /// The tasks (none for a plain encoder).
    pub tasks: Vec<TaskInfo>,
    /// The tokenizer, shared with the routes.
    pub tokenizer: Arc<SentenceTokenizer>,
}

impl ModelInfo {
    /// Values per sentence in a batch's output: the embedding, then each task's distribution.
    pub fn width(&self) -> usize {
        self.dimension + self.tasks.iter().map(|t| t.labels.len()).sum::<usize>()
    }
}

impl<B: Backend> ServedModel<B> {
    /// Loads a trained multi-task model directory (one with `mtl.json`) or a plain encoder
    /// directory.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, ServeError> {
        if dir.join("mtl.json").is_file() {
            Ok(Self::MultiTask(MultiTaskModel::load(dir, device)?))
        } else {
            Ok(Self::Encoder(SentenceEncoder::load(dir, device)?))
        }
    }

    /// The shared encoder.
    pub fn encoder(&self) -> &SentenceEncoder<B> {
        match self {
            Self::Encoder(encoder) => encoder,
            Self::MultiTask(model) => &model.encoder,
        }
    }

    /// The tasks (none for a plain encoder).
    pub fn tasks(&self) -> &[TaskSpec] {
        match self {
            Self::Encoder(_) => &[],
            Self::MultiTask(model) => model.tasks(),
        }
    }

    /// Runs each batch on `workers` threads of the encoder (at least 1).
    pub fn with_workers(self, workers: usize) -> Self {
        match self {
            Self::Encoder(encoder) => Self::Encoder(encoder.with_workers(workers)),
            Self::MultiTask(mut model) => {
                model.encoder = model.encoder.with_workers(workers);
                Self::MultiTask(model)
            }
        }
    }

    /// Truncates inputs at `max_input_tokens` (at most the model's `max_position_embeddings`).
    pub fn with_max_input_tokens(self, tokens: usize) -> Result<Self, ServeError> {
        Ok(match self {
            Self::Encoder(encoder) => Self::Encoder(encoder.with_max_seq_length(tokens)?),
            Self::MultiTask(mut model) => {
                model.encoder = model.encoder.with_max_seq_length(tokens)?;
                Self::MultiTask(model)
            }
        })
    }

    /// The description the routes use.
    pub fn info(&self) -> ModelInfo {
        let encoder = self.encoder();
        ModelInfo {
            dimension: encoder.dim(),
            max_seq_length: encoder.tokenizer().max_seq_length(),
            pooling: encoder.settings.pooling.to_string(),
            normalize: encoder.settings.normalize,
            tasks: self
                .tasks()
                .iter()
                .scan(encoder.dim(), |offset, t| {
                    let info = TaskInfo {
                        name: t.name.clone(),
                        labels: t.labels.clone(),
                        offset: *offset,
                    };
                    *offset += t.num_classes();
                    Some(info)
                })
                .collect(),
            tokenizer: encoder.settings.tokenizer.clone(),
        }
    }

    /// Per sentence, in input order: the pooled embedding before any normalisation, then each
    /// task's softmax distribution; row-major, [`ModelInfo::width`] values per sentence. The
    /// sentences are cut into the encoder's length-sorted batches, spread over its workers.
    ///
    /// # Shapes
    /// - encoded: `n` sentences -> `n * width` values
    pub fn run(&self, encoded: &[Encoded]) -> Vec<f32> {
        let encoder = self.encoder();
        let batches = serving_batches(encoded, encoder);
        let width = encoder.dim()
            + self
                .tasks()
                .iter()
                .map(TaskSpec::num_classes)
                .sum::<usize>();
        let rows = encoder.map_batches(encoded, &batches, width, |batch| {
            let settings = &encoder.settings;
            let pooled = encoder.pooled(batch);
            let Self::MultiTask(model) = self else {
                return pooled;
            };
            let heads_input = if settings.normalize {
                l2_normalize(pooled.clone())
            } else {
                pooled.clone()
            };
            let mut parts = vec![pooled];
            parts.extend(
                model
                    .heads_forward(heads_input)
                    .into_iter()
                    .map(|logits| softmax(logits, 1)),
            );
            Tensor::cat(parts, 1)
        });
        rows.into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("outputs convert to f32")
    }
}

/// The batches one served batch is cut into: the encoder's own ([`SentenceEncoder::sorted_batches`]:
/// longest rows first, at most its batch size and, on CPU backends, 1024 tokens each); when
/// that gives fewer batches than workers, equal numbers of rows per worker. (The server runs
/// one batcher per worker, each on one worker. With MiniLM on 2 cores under `bench --serve`,
/// packed batches, pieces of at most 256, 384, 640 and 1024 tokens served 483-508, 513-518,
/// 525-527 and 533-539 sentences/s: no padding to save, and larger products.)
fn serving_batches<B: Backend>(
    encoded: &[Encoded],
    encoder: &SentenceEncoder<B>,
) -> Vec<Vec<usize>> {
    let (workers, per_batch) = (
        encoder.settings.workers.max(1),
        encoder.settings.batch_size.max(1),
    );
    let batches = encoder.sorted_batches(encoded, per_batch);
    if batches.len() >= workers {
        return batches;
    }
    length_sorted_batches(encoded, encoded.len().div_ceil(workers).max(1))
}
