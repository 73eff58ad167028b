//! `MultiTaskModel`: one shared sentence encoder, one classification head per named task.

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{activation::softmax, backend::Backend, Tensor};
use mtl_encoder::{Encoded, SentenceEncoder, TokenBatch};
use mtl_heads::{ClassificationHead, ClassificationHeadConfig, HeadActivation};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::task::{seed_tasks, validate_tasks, TaskSpec};

/// How the heads are built, shared by all tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadOptions {
    /// Hidden width of each head (default: half the embedding width).
    pub hidden_size: Option<usize>,
    /// Dropout inside each head (training only).
    pub dropout: f64,
    /// The activation between the two layers.
    pub activation: HeadActivation,
    /// Seed of the heads' initial weights (task `i` uses `seed + i`).
    pub seed: u64,
}

impl Default for HeadOptions {
    fn default() -> Self {
        Self {
            hidden_size: None,
            dropout: 0.1,
            activation: HeadActivation::Relu,
            seed: 42,
        }
    }
}

/// The model's tasks and head options (not trainable).
#[derive(Debug, Clone)]
pub struct ModelMeta {
    /// The tasks, in head order.
    pub tasks: Arc<Vec<TaskSpec>>,
    /// How heads were built.
    pub head: HeadOptions,
}

/// A shared sentence encoder with one classification head per task.
#[derive(Module, Debug)]
pub struct MultiTaskModel<B: Backend> {
    /// The shared encoder.
    pub encoder: SentenceEncoder<B>,
    /// One head per task, in task order.
    pub heads: Vec<ClassificationHead<B>>,
    /// Tasks and head options.
    pub meta: ModelMeta,
}

/// The output of a forward pass.
#[derive(Debug, Clone)]
pub struct MultiTaskOutput<B: Backend> {
    /// The shared sentence embeddings fed to the heads, `[batch, hidden]`.
    pub embeddings: Tensor<B, 2>,
    /// Raw logits per task, in task order, `[batch, n_classes]`.
    pub logits: Vec<Tensor<B, 2>>,
    tasks: Arc<Vec<TaskSpec>>,
}

impl<B: Backend> MultiTaskOutput<B> {
    /// The logits of the task called `name`.
    pub fn logits(&self, name: &str) -> Result<&Tensor<B, 2>> {
        let index = task_index(&self.tasks, name)?;
        Ok(&self.logits[index])
    }

    /// The tasks, in the order of `logits`.
    pub fn tasks(&self) -> &[TaskSpec] {
        &self.tasks
    }
}

/// One task's prediction for one sentence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskPrediction {
    /// The task.
    pub task: String,
    /// The predicted label name (the argmax).
    pub label: String,
    /// The predicted class index.
    pub index: usize,
    /// The predicted label's probability.
    pub probability: f32,
    /// The softmax distribution over the task's labels.
    pub probabilities: Vec<f32>,
}

fn task_index(tasks: &[TaskSpec], name: &str) -> Result<usize> {
    tasks
        .iter()
        .position(|t| t.name == name)
        .ok_or_else(|| ModelError::UnknownTask {
            name: name.to_string(),
            known: tasks
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The head configuration of one task.
pub fn head_config(
    options: &HeadOptions,
    input_size: usize,
    index: usize,
    task: &TaskSpec,
) -> ClassificationHeadConfig {
    ClassificationHeadConfig::new(input_size, task.num_classes())
        .with_seed(options.seed.wrapping_add(index as u64))
        .with_hidden_size(options.hidden_size)
        .with_dropout(options.dropout)
        .with_activation(options.activation)
}

impl<B: Backend> MultiTaskModel<B> {
    /// Adds a randomly initialised head per task to `encoder` (drawn from `options.seed`).
    pub fn new(
        encoder: SentenceEncoder<B>,
        tasks: Vec<TaskSpec>,
        options: HeadOptions,
    ) -> Result<Self> {
        validate_tasks(&tasks)?;
        let device = encoder.device();
        let heads = tasks
            .iter()
            .enumerate()
            .map(|(i, task)| {
                let config = head_config(&options, encoder.dim(), i, task);
                config.validate().map_err(ModelError::InvalidHead)?;
                Ok(config.init(&device))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            encoder,
            heads,
            meta: ModelMeta {
                tasks: Arc::new(tasks),
                head: options,
            },
        })
    }

    /// The seed configuration: tasks `classification` (3 classes) and `sentiment` (2 classes).
    pub fn seed(encoder: SentenceEncoder<B>) -> Result<Self> {
        Self::new(encoder, seed_tasks(), HeadOptions::default())
    }

    /// The tasks, in head order.
    pub fn tasks(&self) -> &[TaskSpec] {
        &self.meta.tasks
    }

    /// The index of the task called `name`.
    pub fn task_index(&self, name: &str) -> Result<usize> {
        task_index(&self.meta.tasks, name)
    }

    /// The embeddings the heads read: the encoder's sentence embeddings (its pooling, and its
    /// L2 normalisation when the encoder has it on: the one setting, saved as
    /// sentence-transformers' `Normalize` module).
    ///
    /// # Shapes
    /// - batch: `[batch, seq]` ids -> `[batch, hidden]`
    pub fn embed(&self, batch: &TokenBatch<B>) -> Tensor<B, 2> {
        self.encoder.forward(batch)
    }

    /// Logits of every head for given embeddings.
    ///
    /// # Shapes
    /// - embeddings: `[batch, hidden]` -> per task `[batch, n_classes]`
    pub fn heads_forward(&self, embeddings: Tensor<B, 2>) -> Vec<Tensor<B, 2>> {
        self.heads
            .iter()
            .map(|h| h.forward(embeddings.clone()))
            .collect()
    }

    /// Shared embeddings and per-task logits for a tokenized batch.
    ///
    /// # Shapes
    /// - batch: `[batch, seq]` ids -> embeddings `[batch, hidden]`, logits per task `[batch, n_classes]`
    pub fn forward(&self, batch: &TokenBatch<B>) -> MultiTaskOutput<B> {
        let embeddings = self.embed(batch);
        let logits = self.heads_forward(embeddings.clone());
        MultiTaskOutput {
            embeddings,
            logits,
            tasks: self.meta.tasks.clone(),
        }
    }

    /// Tokenizes and runs [`forward`](Self::forward) on sentences, as one batch.
    pub fn forward_sentences(&self, texts: &[&str]) -> Result<MultiTaskOutput<B>> {
        if texts.is_empty() {
            return Err(ModelError::NoSentences);
        }
        let encoded = self.encoder.tokenize(texts)?;
        let refs: Vec<&Encoded> = encoded.iter().collect();
        Ok(self.forward(&self.encoder.batch(&refs)))
    }

    /// A copy for inference: every dropout of the encoder and the heads off, whatever the
    /// backend (on an autodiff backend dropout would otherwise act).
    pub fn without_dropout(&self) -> Self {
        let mut model = self.clone();
        model.encoder.bert.set_dropout(0.0);
        for head in &mut model.heads {
            head.dropout.prob = 0.0;
        }
        model
    }

    /// Per sentence (in input order) and task (in task order): label, probability and the
    /// softmax distribution. Sentences are run in length-sorted batches of the encoder's batch
    /// size on its workers. Dropout is off even on an autodiff model ([`Self::without_dropout`]).
    pub fn predict(&self, texts: &[&str]) -> Result<Vec<Vec<TaskPrediction>>> {
        let copy;
        let model = if B::ad_enabled(&self.encoder.device()) {
            copy = self.without_dropout();
            &copy
        } else {
            self
        };
        let encoded = model.encoder.tokenize(texts)?;
        let classes: Vec<usize> = model.tasks().iter().map(TaskSpec::num_classes).collect();
        let width: usize = classes.iter().sum();
        let batch_size = model.encoder.settings.batch_size;
        let probabilities = model
            .encoder
            .map_sorted(&encoded, batch_size, width, |batch| {
                let logits = model.forward(batch).logits;
                Tensor::cat(logits.into_iter().map(|l| softmax(l, 1)).collect(), 1)
            });
        let values = probabilities
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("probabilities convert to f32");
        let rows = values.chunks(width.max(1)).map(|row| {
            let mut start = 0;
            model
                .tasks()
                .iter()
                .zip(&classes)
                .map(|(task, &n)| {
                    let p = &row[start..start + n];
                    start += n;
                    prediction(task, p)
                })
                .collect()
        });
        Ok(rows.collect())
    }
}

/// The argmax of one task's distribution, with its label.
fn prediction(task: &TaskSpec, p: &[f32]) -> TaskPrediction {
    let (index, &probability) = p
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .expect("at least 2 classes");
    TaskPrediction {
        task: task.name.clone(),
        label: task.labels[index].clone(),
        index,
        probability,
        probabilities: p.to_vec(),
    }
}
