//! `MultiTaskModel`: one shared sentence encoder, one classification head per named task.

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{activation::softmax, backend::Backend, Tensor};
use mtl_encoder::{l2_normalize, length_sorted_batches, Encoded, SentenceEncoder, TokenBatch};
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
    /// L2-normalise the pooled embedding before the heads.
    pub normalize: bool,
    /// Seed of the heads' initial weights (task `i` uses `seed + i`).
    pub seed: u64,
}

impl Default for HeadOptions {
    fn default() -> Self {
        Self {
            hidden_size: None,
            dropout: 0.1,
            activation: HeadActivation::Relu,
            normalize: false,
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

    /// The embeddings the heads read: pooled (and, if set, normalised) encoder states.
    ///
    /// # Shapes
    /// - batch: `[batch, seq]` ids -> `[batch, hidden]`
    pub fn embed(&self, batch: &TokenBatch<B>) -> Tensor<B, 2> {
        let hidden = self.encoder.hidden_states(batch);
        let pooled = self
            .encoder
            .settings
            .pooling
            .forward(hidden, batch.attention_mask.clone());
        if self.meta.head.normalize {
            l2_normalize(pooled)
        } else {
            pooled
        }
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
            return Err(ModelError::InvalidHead(
                "forward_sentences needs at least one sentence".into(),
            ));
        }
        let encoded = self.encoder.tokenize(texts)?;
        let refs: Vec<&Encoded> = encoded.iter().collect();
        Ok(self.forward(&self.encoder.batch(&refs)))
    }

    /// Per sentence (in input order) and task (in task order): label, probability and the
    /// softmax distribution. Sentences are run in length-sorted batches of the encoder's batch
    /// size. Run it on an inference model (`model.valid()` of a training model) so dropout is off.
    pub fn predict(&self, texts: &[&str]) -> Result<Vec<Vec<TaskPrediction>>> {
        let encoded = self.encoder.tokenize(texts)?;
        let batches = length_sorted_batches(&encoded, self.encoder.settings.batch_size);
        let probabilities = self.encoder.map_batches(&batches, |rows| {
            let rows: Vec<&Encoded> = rows.iter().map(|&i| &encoded[i]).collect();
            let output = self.forward(&self.encoder.batch(&rows));
            output
                .logits
                .into_iter()
                .map(|logits| {
                    softmax(logits, 1)
                        .into_data()
                        .convert::<f32>()
                        .into_vec::<f32>()
                })
                .collect::<std::result::Result<Vec<Vec<f32>>, _>>()
        });
        let mut out: Vec<Vec<TaskPrediction>> = vec![Vec::new(); texts.len()];
        for (rows, per_task) in batches.iter().zip(probabilities) {
            let per_task = per_task.map_err(|e| {
                ModelError::InvalidHead(format!("cannot read probabilities: {e:?}"))
            })?;
            for (task, probs) in self.meta.tasks.iter().zip(per_task) {
                for (&row, p) in rows.iter().zip(probs.chunks(task.num_classes())) {
                    let (index, &probability) = p
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .expect("at least 2 classes");
                    out[row].push(TaskPrediction {
                        task: task.name.clone(),
                        label: task.labels[index].clone(),
                        index,
                        probability,
                        probabilities: p.to_vec(),
                    });
                }
            }
        }
        Ok(out)
    }
}
