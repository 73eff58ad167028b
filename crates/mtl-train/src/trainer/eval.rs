//! Evaluation: per-task metrics of a model on a dataset, the records of `metrics.jsonl` and
//! `results.json`, and the dev evaluation of a run (selection and early stopping).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use mtl_encoder::{length_sorted_batches, Encoded};
use mtl_model::{MultiTaskModel, TaskSpec};
use serde::{Deserialize, Serialize};

use super::checkpoint::io_error;
use super::config::Keep;
use super::run::Run;
use super::Trainable;
use crate::data::Dataset;
use crate::error::{Result, TrainError};
use crate::metrics::{ConfusionMatrix, TaskMetrics};

/// One evaluation, as written to `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// The epoch (1-based) that was run when evaluated.
    pub epoch: usize,
    /// Optimizer steps done.
    pub step: usize,
    /// `dev` or `test`.
    pub split: String,
    /// Per task metrics.
    pub tasks: BTreeMap<String, TaskMetrics>,
    /// The mean macro-F1 over tasks (the selection score).
    pub mean_macro_f1: f64,
    /// Mean training loss per task since the previous evaluation.
    pub train_loss: BTreeMap<String, f64>,
}

/// Tokenized data, and (with a frozen encoder) cached embeddings.
pub(super) struct Split<B: Backend> {
    pub(super) encoded: Vec<Encoded>,
    pub(super) cache: Option<Tensor<B, 2>>,
}

impl<B: Backend> Split<B> {
    /// `data` tokenized; with `cache`, embedded once by the model without dropout.
    pub(super) fn prepare<AB: AutodiffBackend<InnerBackend = B>>(
        model: &MultiTaskModel<AB>,
        data: &Dataset,
        cache: bool,
        batch: usize,
    ) -> Result<Self> {
        let encoded = tokenize(model, data)?;
        let cache = cache.then(|| embed_all(&model.valid(), &encoded, batch));
        Ok(Split { encoded, cache })
    }
}

/// The texts of `data` tokenized by the model's encoder.
pub(super) fn tokenize<B: Backend>(
    model: &MultiTaskModel<B>,
    data: &Dataset,
) -> Result<Vec<Encoded>> {
    let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
    Ok(model.encoder.tokenize(&texts)?)
}

/// Row indices as an index tensor.
pub(super) fn index_tensor<B: Backend>(rows: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let ids: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    Tensor::from_data(TensorData::new(ids, [rows.len()]), device)
}

/// The heads' input for every row, in row order.
fn embed_all<B: Backend>(
    model: &MultiTaskModel<B>,
    encoded: &[Encoded],
    batch: usize,
) -> Tensor<B, 2> {
    let encoder = &model.encoder;
    encoder.map_sorted(encoded, batch, encoder.dim(), |b| model.embed(b))
}

/// Per task metrics of `model` on `data` (rows without a label for a task are not counted).
///
/// Pass a model without autodiff (`model.valid()` of a model being trained), so that no dropout
/// applies.
pub fn evaluate<B: Backend>(
    model: &MultiTaskModel<B>,
    data: &Dataset,
    encoded: &[Encoded],
    cache: Option<&Tensor<B, 2>>,
    batch: usize,
) -> Result<Vec<TaskMetrics>> {
    let device = model.encoder.device();
    let mut matrices: Vec<ConfusionMatrix> = model
        .tasks()
        .iter()
        .map(|t| ConfusionMatrix::new(t.num_classes()))
        .collect();
    // Without a cache, embed everything first: the batches run on the encoder's workers.
    let computed;
    let cache = match cache {
        Some(c) => c,
        None => {
            computed = embed_all(model, encoded, batch);
            &computed
        }
    };
    for rows in length_sorted_batches(encoded, batch) {
        let embeddings = cache.clone().select(0, index_tensor(&rows, &device));
        for (task, logits) in model.heads_forward(embeddings).into_iter().enumerate() {
            let predicted = logits
                .argmax(1)
                .into_data()
                .convert::<i64>()
                .into_vec::<i64>()
                .expect("argmax indices convert to i64");
            for (&row, &p) in rows.iter().zip(&predicted) {
                if let Some(truth) = data.examples[row].labels[task] {
                    matrices[task].add(truth, p as usize);
                }
            }
        }
    }
    Ok(matrices.iter().map(TaskMetrics::from).collect())
}

/// The record of one evaluation, scored by the mean macro-F1 of the tasks with support.
pub(super) fn record(
    model_tasks: &[TaskSpec],
    metrics: Vec<TaskMetrics>,
    split: &str,
    epoch: usize,
    step: usize,
    train_loss: BTreeMap<String, f64>,
) -> EvalRecord {
    let tasks: BTreeMap<String, TaskMetrics> = model_tasks
        .iter()
        .map(|t| t.name.clone())
        .zip(metrics)
        .collect();
    let scored: Vec<f64> = tasks
        .values()
        .filter(|m| m.support > 0)
        .map(|m| m.macro_f1)
        .collect();
    let mean_macro_f1 = if scored.is_empty() {
        0.0
    } else {
        scored.iter().sum::<f64>() / scored.len() as f64
    };
    EvalRecord {
        epoch,
        step,
        split: split.to_string(),
        tasks,
        mean_macro_f1,
        train_loss,
    }
}

/// Appends one record to `metrics.jsonl`.
pub(super) fn append_jsonl(path: &Path, record: &EvalRecord) -> Result<()> {
    let io = io_error(path);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(&io)?;
    let mut line = serde_json::to_vec(record).expect("record serialises");
    line.push(b'\n');
    file.write_all(&line).map_err(io)
}

/// The dev record of a run's `metrics.jsonl` that `keep` picks: the best or the last (for a
/// run resumed after that evaluation).
pub(super) fn read_kept(path: &Path, keep: Keep) -> Result<Option<EvalRecord>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let mut best: Option<EvalRecord> = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rec: EvalRecord =
            serde_json::from_str(line).map_err(|e| TrainError::MalformedState {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let better = |b: &EvalRecord| keep == Keep::Last || rec.mean_macro_f1 > b.mean_macro_f1;
        if rec.split == "dev" && best.as_ref().is_none_or(better) {
            best = Some(rec);
        }
    }
    Ok(best)
}

/// Writes `<out>/results.json`: the split and each task's accuracy, macro-F1 and MCC.
pub(super) fn write_results(out: &Path, rec: &EvalRecord) -> Result<()> {
    let tasks: BTreeMap<&String, serde_json::Value> = rec
        .tasks
        .iter()
        .map(|(t, m)| {
            (
                t,
                serde_json::json!({"accuracy": m.accuracy, "macro_f1": m.macro_f1, "mcc": m.mcc}),
            )
        })
        .collect();
    let json = serde_json::json!({"split": rec.split, "tasks": tasks});
    let path = out.join("results.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&json).expect("JSON")).map_err(io_error(&path))
}

/// The line printed after a dev evaluation.
fn dev_summary(rec: &EvalRecord, improved: bool) -> String {
    let summary: Vec<String> = rec
        .tasks
        .iter()
        .map(|(t, m)| format!("{t}: acc {:.4} F1 {:.4}", m.accuracy, m.macro_f1))
        .collect();
    format!(
        "dev @ epoch {} step {}: {} (mean F1 {:.4}){}",
        rec.epoch,
        rec.step,
        summary.join(", "),
        rec.mean_macro_f1,
        if improved { " *" } else { "" }
    )
}

impl<AB: AutodiffBackend> Run<'_, AB> {
    /// One evaluation on dev (if any), of the model without dropout: recorded in
    /// `metrics.jsonl` with the training losses since the last one, and the model saved to
    /// `<out>/model` when it is the best so far (unless the last is kept). True when patience
    /// has run out.
    pub(super) fn evaluate_dev(&mut self, trainable: &Trainable<AB>, epoch: usize) -> Result<bool> {
        let (Some(dev), Some(split)) = (self.data.dev, self.dev_split.as_ref()) else {
            return Ok(false);
        };
        let valid = self.selected(trainable);
        let metrics = evaluate(
            &valid,
            dev,
            &split.encoded,
            split.cache.as_ref(),
            self.config.eval_batch_size,
        )?;
        let train_loss = self.losses.take_means(&self.task_names);
        let tasks = trainable.model.tasks();
        let rec = record(tasks, metrics, "dev", epoch, self.state.step, train_loss);
        append_jsonl(&self.paths.metrics, &rec)?;
        let state = &mut self.state;
        let improved = state.best_score.is_none_or(|b| rec.mean_macro_f1 > b);
        self.progress.println(dev_summary(&rec, improved));
        let keep_best = self.config.keep == Keep::Best;
        if improved {
            state.best_score = Some(rec.mean_macro_f1);
            state.best_step = Some(state.step);
            state.evals_since_best = 0;
            if keep_best {
                let dir = self.paths.model.clone();
                self.writer.submit(move || Ok(valid.save(&dir)?))?;
            }
        } else {
            state.evals_since_best += 1;
        }
        if improved || !keep_best {
            self.kept = Some(rec);
        }
        Ok(self
            .config
            .patience
            .is_some_and(|p| self.state.evals_since_best >= p))
    }

    /// The test evaluation of the resulting model, appended to `metrics.jsonl`.
    pub(super) fn evaluate_test(
        &self,
        result: &MultiTaskModel<AB::InnerBackend>,
    ) -> Result<Option<EvalRecord>> {
        let Some(test) = self.data.test else {
            return Ok(None);
        };
        let encoded = tokenize(result, test)?;
        let metrics = evaluate(result, test, &encoded, None, self.config.eval_batch_size)?;
        let rec = record(
            result.tasks(),
            metrics,
            "test",
            self.state.epoch,
            match self.config.keep {
                Keep::Best => self.state.best_step.unwrap_or(self.state.step),
                Keep::Last => self.state.step,
            },
            BTreeMap::new(),
        );
        append_jsonl(&self.paths.metrics, &rec)?;
        Ok(Some(rec))
    }
}
