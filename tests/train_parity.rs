//! The trainer's training step against PyTorch (`../shared/fixtures/minilm_train_reference.json`,
//! written by `make_train_fixture.py` beside it): 4 AdamW steps of the two-head model on
//! all-MiniLM-L6-v2 with dropout off, on fixed UCI batches, from given head weights. Losses and
//! the gradient norm within 1e-5 relative; gradients after clipping within 1e-5 of the tensor's
//! largest value; parameters after each step within 1e-6 wherever the gradient is clearly above
//! float noise, the rest counted and bounded by Adam's step size.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{json_floats, max_abs, max_abs_diff, model_dir, read_json, shared};
use mtl::encoder::io::{bert_hf_key, module_tensors, serialize_tensors, NamedTensors};
use mtl::encoder::{Layout, Pooling, SentenceEncoder};
use mtl::heads::HeadActivation;
use mtl::model::{HeadOptions, MultiTaskModel, TaskSpec};
use mtl::train::{Batch, OptimConfig, TrainConfig, TrainRows, TrainStep, Trainable};
use serde_json::Value;

type AB = mtl::backend::TrainBackend;

const LR: f64 = 1e-4;

/// The fixture's heads as `heads.safetensors` keys (`<task>.dense.*`, `<task>.out_proj.*`).
fn fixture_heads(fixture: &Value) -> NamedTensors {
    let mut out = NamedTensors::new();
    for (key, t) in fixture["initial_heads"].as_object().unwrap() {
        let (task, rest) = key.split_once('.').unwrap();
        let rest = rest.replace("0.", "dense.").replace("2.", "out_proj.");
        let shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        out.insert(format!("{task}.{rest}"), (shape, json_floats(&t["values"])));
    }
    out
}

/// The fixture's model: the checkpoint with truncation at 128, mean pooling, no normalisation,
/// heads Linear(384,192)-ReLU-Linear with the fixture's weights, every dropout off.
fn model(dir: &Path, fixture: &Value) -> MultiTaskModel<AB> {
    let encoder = SentenceEncoder::<AB>::load(model_dir(), &Default::default())
        .unwrap()
        .with_max_seq_length(128)
        .unwrap()
        .with_pooling(Pooling::Mean)
        .with_normalize(false);
    let labels = &fixture["meta"]["labels"];
    let tasks: Vec<TaskSpec> = ["domain", "sentiment"]
        .iter()
        .map(|t| {
            let names = labels[t]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l.as_str().unwrap().to_string());
            TaskSpec::new(*t, names)
        })
        .collect();
    let head = HeadOptions {
        hidden_size: Some(192),
        dropout: 0.0,
        activation: HeadActivation::Relu,
        seed: 0,
    };
    MultiTaskModel::new(encoder, tasks, head)
        .unwrap()
        .save(dir)
        .unwrap();
    std::fs::write(
        dir.join("heads.safetensors"),
        serialize_tensors(&fixture_heads(fixture)),
    )
    .unwrap();
    MultiTaskModel::<AB>::load(dir, &Default::default())
        .unwrap()
        .without_dropout()
}

/// The fixture's name (`embeddings.*`, `encoder.*`, `heads.<task>.<0|2>.*`) and layout of one
/// of our parameter paths on `Trainable`.
fn fixture_key(tasks: &[TaskSpec], path: &str) -> Option<(String, Layout)> {
    if let Some(rest) = path.strip_prefix("model.encoder.bert.") {
        return bert_hf_key(rest);
    }
    let (index, p) = path.strip_prefix("model.heads.")?.split_once('.')?;
    let task = &tasks[index.parse::<usize>().ok()?].name;
    let layout = if p.ends_with("weight") {
        Layout::Transpose
    } else {
        Layout::AsIs
    };
    let p = p.replace("dense.", "0.").replace("out_proj.", "2.");
    Some((format!("heads.{task}.{p}"), layout))
}

/// Every parameter by the fixture's name, in PyTorch layout.
fn fixture_params(trainable: &Trainable<AB>) -> NamedTensors {
    let tasks = trainable.model.tasks().to_vec();
    module_tensors(trainable, |p| fixture_key(&tasks, p)).unwrap()
}

/// Gradients by parameter path (in our layout) by the fixture's name, in PyTorch layout (the
/// shapes those of `params`).
fn fixture_grads(
    tasks: &[TaskSpec],
    grads: &BTreeMap<String, Vec<f32>>,
    params: &NamedTensors,
) -> NamedTensors {
    let mut out = NamedTensors::new();
    for (path, v) in grads {
        let (name, layout) = fixture_key(tasks, path).expect("a parameter of the model");
        let shape = params[&name].0.clone();
        let values = match layout {
            Layout::AsIs => v.clone(),
            // Ours is [in, out]; PyTorch's [out, in].
            Layout::Transpose => {
                let (rows, cols) = (shape[0], shape[1]);
                let mut t = vec![0.0; v.len()];
                for o in 0..rows {
                    for i in 0..cols {
                        t[o * cols + i] = v[i * rows + o];
                    }
                }
                t
            }
        };
        out.insert(name, (shape, values));
    }
    out
}

/// The values of a watched name (`NAME` or `NAME:a:b`, rows a..b).
fn watched(named: &NamedTensors, watch: &str) -> Vec<f32> {
    let mut parts = watch.split(':');
    let (shape, values) = &named[parts.next().unwrap()];
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => {
            let row: usize = shape[1..].iter().product();
            values[a.parse::<usize>().unwrap() * row..b.parse::<usize>().unwrap() * row].to_vec()
        }
        _ => values.clone(),
    }
}

/// The largest difference of a gradient from PyTorch's relative to its largest value,
/// asserted to be at most 1e-5.
fn gradient_error(got: &[f32], want: &[f32], what: &str) -> f32 {
    let (scale, diff) = (max_abs(want), max_abs_diff(got, want));
    assert!(
        diff <= 1e-5 * scale,
        "gradient of {what} off by {diff} (largest {scale})"
    );
    diff / scale
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn run(shards: usize) {
    let fixture = read_json(&shared().join("fixtures/minilm_train_reference.json"));
    let dir = tempfile::tempdir().unwrap();
    let model = model(dir.path(), &fixture);
    let text = std::fs::read_to_string(shared().join("data/uci-mtl/train.tsv")).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .take(24)
        .map(|l| l.split('\t').collect())
        .collect();
    let texts: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    let labels: Vec<Vec<Option<usize>>> = rows
        .iter()
        .map(|r| {
            let t = model.tasks();
            vec![t[0].label_index(r[1]), t[1].label_index(r[2])]
        })
        .collect();
    let encoded = model.encoder.tokenize(&texts).unwrap();
    let data = TrainRows {
        encoded: &encoded,
        labels: &labels,
        cache: None,
    };
    let config = TrainConfig {
        optim: OptimConfig {
            lr: LR,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
            ..OptimConfig::default()
        },
        shards: Some(shards),
        ..TrainConfig::default()
    };
    let mut step = TrainStep::new(&config, &model).unwrap();
    let mut trainable = Trainable {
        model,
        loss_weights: None,
    };
    let (mut worst_loss, mut worst_norm, mut worst_grad, mut worst_param) =
        (0.0f64, 0.0f64, 0.0f32, 0.0f32);
    let (mut noisy, mut compared) = (0usize, 0usize);
    for (k, reference) in fixture["steps"].as_array().unwrap().iter().enumerate() {
        let batch_rows: Vec<usize> = (8 * (k % 3)..8 * (k % 3) + 8).collect();
        let out = step
            .backward(
                &trainable,
                &data,
                Batch {
                    rows: &batch_rows,
                    tasks: &[0, 1],
                },
                k,
            )
            .unwrap();
        for (t, task) in ["domain", "sentiment"].iter().enumerate() {
            let want = reference["loss"][task].as_f64().unwrap();
            worst_loss = worst_loss.max(rel(out.losses[t], want));
        }
        let norm = reference["grad_norm_before_clip"].as_f64().unwrap();
        worst_norm = worst_norm.max(rel(step.grad_norm(), norm));
        let pending = step.pending_gradients();
        let (next, _) = step.apply(trainable, 1.0);
        trainable = next;
        let params = fixture_params(&trainable);
        let grads = fixture_grads(trainable.model.tasks(), &pending, &params);
        if let Some(reference_grads) = reference.get("grads_after_clip") {
            for (name, want) in reference_grads.as_object().unwrap() {
                let off = gradient_error(&watched(&grads, name), &json_floats(want), name);
                worst_grad = worst_grad.max(off);
            }
            let (_, word) = &grads["embeddings.word_embeddings.weight"];
            for (id, want) in reference["word_embedding_grad_rows"].as_object().unwrap() {
                let row: usize = id.parse().unwrap();
                let got = &word[row * 384..(row + 1) * 384];
                gradient_error(got, &json_floats(want), &format!("word-embedding row {id}"));
            }
        }
        for (name, want) in reference["params_after_step"].as_object().unwrap() {
            let (got, want, g) = (
                watched(&params, name),
                json_floats(want),
                watched(&grads, name),
            );
            let gmax = max_abs(&g);
            for ((a, b), g) in got.iter().zip(&want).zip(&g) {
                let diff = (a - b).abs();
                if g.abs() > 1e-4 * gmax && g.abs() > 1e-9 {
                    compared += 1;
                    assert!(
                        diff <= 1e-6,
                        "step {k}: {name} off by {diff} (gradient {g}, largest {gmax})"
                    );
                    worst_param = worst_param.max(diff);
                } else {
                    noisy += 1;
                    // Adam turns a noise-level gradient into a step of up to about lr.
                    assert!(
                        diff <= 2.0 * LR as f32 * (k + 1) as f32,
                        "step {k}: {name} off by {diff} at a noise-level gradient {g}"
                    );
                }
            }
        }
    }
    eprintln!(
        "shards {shards}: losses {worst_loss:.1e} rel, gradient norm {worst_norm:.1e} rel, gradients {worst_grad:.1e} of the largest, \
         parameters {worst_param:.1e} abs over {compared} elements ({noisy} at noise-level gradients)"
    );
    assert!(worst_loss <= 1e-5, "loss off by {worst_loss} relative");
    assert!(
        worst_norm <= 1e-5,
        "gradient norm off by {worst_norm} relative"
    );
    assert!(
        noisy * 100 <= compared,
        "{noisy} elements at noise-level gradients against {compared}"
    );
}

#[test]
fn four_adamw_steps_match_pytorch_on_one_shard() {
    run(1);
}

#[test]
fn four_adamw_steps_match_pytorch_on_two_shards() {
    run(2);
}
