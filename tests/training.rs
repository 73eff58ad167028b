//! Training on a tiny model and a slice of the real UCI multi-task data: the loss falls, frozen
//! parameters stay bit-identical, a resumed run ends exactly where an uninterrupted one does,
//! and the outputs (model directory, metrics.jsonl, results.json) are written.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use common::{jsonl, model_dir, shared};
use mtl::encoder::io::module_tensors;
use mtl::encoder::{Layout, SentenceEncoder, SentenceTokenizer};
use mtl::model::{HeadOptions, MultiTaskModel, TaskSpec};
use mtl::train::{
    read_table, train, Dataset, Keep, OptimConfig, ReadOptions, RunOptions, TrainConfig, TrainData,
    TrainError, Trainable, Trainer,
};

/// The backend compiled in (NdArray by default; flex or CUDA by feature), with autodiff.
type AB = mtl::backend::TrainBackend;
type B = mtl::backend::Backend;

/// Weight initialisation draws from the backend's process-wide RNG, so runs that must be
/// reproducible take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn uci(split: &str, rows: usize, tasks: Option<&[TaskSpec]>) -> Dataset {
    let path = shared().join(format!("data/uci-mtl/{split}.tsv"));
    let table = read_table(&path, &ReadOptions::default()).unwrap();
    let mut data = match tasks {
        None => Dataset::from_train(&[table], &[]).unwrap(),
        Some(t) => Dataset::with_tasks(t, &[table], false).unwrap(),
    };
    data.examples.truncate(rows);
    data
}

fn tiny_model(tasks: &Dataset) -> MultiTaskModel<AB> {
    let config = common::tiny_config(2);
    let device = Default::default();
    AB::seed(&device, 3);
    let bert = config.init::<AB>(&device);
    let tokenizer =
        SentenceTokenizer::from_file(&model_dir().join("tokenizer.json"), 64, 0).unwrap();
    let encoder = SentenceEncoder::from_parts(bert, config, tokenizer);
    MultiTaskModel::new(encoder, tasks.tasks.clone(), HeadOptions::default()).unwrap()
}

fn config(epochs: usize) -> TrainConfig {
    let mut config = TrainConfig {
        epochs,
        batch_size: 16,
        seed: 9,
        ..TrainConfig::default()
    };
    config.optim.lr = 2e-3;
    config
}

fn params_of(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    tensors_of(&MultiTaskModel::<B>::load(dir, &Default::default()).unwrap())
}

/// A model's parameters by path.
fn tensors_of<Bk: Backend>(model: &MultiTaskModel<Bk>) -> BTreeMap<String, Vec<f32>> {
    module_tensors(model, |p| Some((p.to_string(), Layout::AsIs)))
        .unwrap()
        .into_iter()
        .map(|(k, (_, v))| (k, v))
        .collect()
}

#[test]
fn loss_falls_and_outputs_are_written() {
    let _turn = serial();
    let train_set = uci("train", 96, None);
    let dev = uci("dev", 48, Some(&train_set.tasks));
    let test = uci("test", 48, Some(&train_set.tasks));
    let out = tempfile::tempdir().unwrap();
    let data = TrainData {
        train: &train_set,
        dev: Some(&dev),
        test: Some(&test),
    };
    let report = train(
        tiny_model(&train_set),
        data,
        &config(6),
        out.path(),
        &RunOptions::default(),
    )
    .unwrap();
    assert!(report.finished);
    assert_eq!(report.steps, 6 * 6);
    let records = jsonl(&out.path().join("metrics.jsonl"));
    assert_eq!(records.len(), 7, "6 dev evaluations and 1 test");
    for task in ["domain", "sentiment"] {
        let first = records[0]["train_loss"][task].as_f64().unwrap();
        let last = records[5]["train_loss"][task].as_f64().unwrap();
        assert!(
            last < first - 0.01,
            "{task}: training loss went from {first} to {last}"
        );
    }
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    assert_eq!(results["split"], "test");
    for task in ["domain", "sentiment"] {
        let acc = results["tasks"][task]["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert_eq!(acc, report.test.as_ref().unwrap().tasks[task].accuracy);
    }
    // The resulting model is the best dev epoch's and loads as a model directory.
    let best = report.dev.unwrap();
    let model = MultiTaskModel::<B>::load(out.path().join("model"), &Default::default()).unwrap();
    let texts: Vec<&str> = dev.examples.iter().map(|e| e.text.as_str()).collect();
    let encoded = model.encoder.tokenize(&texts).unwrap();
    let metrics = mtl::train::evaluate(&model, &dev, &encoded, None, 64).unwrap();
    assert_eq!(metrics[0], best.tasks["domain"]);
    assert_eq!(metrics[1], best.tasks["sentiment"]);
}

#[test]
fn frozen_parameters_stay_bit_identical() {
    let _turn = serial();
    let train_set = uci("train", 48, None);
    for policy in ["encoder", "layers:1,head:sentiment"] {
        let out = tempfile::tempdir().unwrap();
        let model = tiny_model(&train_set);
        model.save(out.path().join("initial")).unwrap();
        let mut cfg = config(2);
        cfg.freeze = policy.parse().unwrap();
        let data = TrainData {
            train: &train_set,
            dev: None,
            test: None,
        };
        train(model, data, &cfg, out.path(), &RunOptions::default()).unwrap();
        let before = params_of(&out.path().join("initial"));
        let after = params_of(&out.path().join("model"));
        let frozen = |p: &str| match policy {
            "encoder" => p.starts_with("encoder."),
            _ => {
                p.starts_with("encoder.bert.embeddings.")
                    || p.starts_with("encoder.bert.encoder.layer.0.")
                    || p.starts_with("heads.1.")
            }
        };
        let mut changed = 0;
        for (path, old) in &before {
            if frozen(path) {
                assert!(old == &after[path], "{policy}: frozen {path} changed");
            } else if old != &after[path] {
                changed += 1;
            }
        }
        assert!(changed > 0, "{policy}: nothing trained");
    }
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    resume_matches_uninterrupted(config(3));
}

/// The same with an exponential moving average of the weights: the average is part of the
/// checkpoint, and the best model is the average.
#[test]
fn resumed_run_with_a_weight_average_matches_uninterrupted_run() {
    let mut averaged = config(3);
    averaged.optim.ema_decay = Some(0.8);
    resume_matches_uninterrupted(averaged);
}

fn resume_matches_uninterrupted(config: TrainConfig) {
    let _turn = serial();
    let train_set = uci("train", 80, None);
    let dev = uci("dev", 32, Some(&train_set.tasks));
    let run = |out: &Path, options: &RunOptions| {
        let data = TrainData {
            train: &train_set,
            dev: Some(&dev),
            test: None,
        };
        train(tiny_model(&train_set), data, &config, out, options).unwrap()
    };
    let whole = tempfile::tempdir().unwrap();
    let full = run(whole.path(), &RunOptions::default());
    assert!(full.finished);

    let parts = tempfile::tempdir().unwrap();
    // Killed inside epoch 2 (5 batches per epoch), then resumed.
    let first = run(
        parts.path(),
        &RunOptions {
            stop_after_steps: Some(7),
            ..RunOptions::default()
        },
    );
    assert!(!first.finished);
    assert_eq!(first.steps, 7);
    let resumed = run(
        parts.path(),
        &RunOptions {
            resume: true,
            ..RunOptions::default()
        },
    );
    assert!(resumed.finished);
    assert_eq!(resumed.steps, full.steps);
    for dir in ["checkpoint/model", "model"] {
        let (a, b) = (
            params_of(&whole.path().join(dir)),
            params_of(&parts.path().join(dir)),
        );
        assert_eq!(a.len(), b.len());
        for (path, values) in &a {
            assert!(values == &b[path], "{dir}: {path} differs after resuming");
        }
    }
    let strip = |records: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        records
            .into_iter()
            .map(|r| serde_json::json!({"step": r["step"], "tasks": r["tasks"]}))
            .collect()
    };
    assert_eq!(
        strip(jsonl(&whole.path().join("metrics.jsonl"))),
        strip(jsonl(&parts.path().join("metrics.jsonl")))
    );

    // Resuming with other settings is refused.
    let mut other = config.clone();
    other.optim.lr = 1e-4;
    let data = TrainData {
        train: &train_set,
        dev: Some(&dev),
        test: None,
    };
    let resume = RunOptions {
        resume: true,
        ..RunOptions::default()
    };
    let err = train(tiny_model(&train_set), data, &other, parts.path(), &resume).unwrap_err();
    assert!(matches!(err, TrainError::Config(_)), "{err}");
}

#[test]
fn data_tasks_must_match_the_model() {
    let _turn = serial();
    let train_set = uci("train", 16, None);
    let mut model_tasks = train_set.clone();
    model_tasks.tasks[1].labels.reverse();
    let data = TrainData {
        train: &train_set,
        dev: None,
        test: None,
    };
    let out = tempfile::tempdir().unwrap();
    let err = train(
        tiny_model(&model_tasks),
        data,
        &config(1),
        out.path(),
        &RunOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("sentiment"), "{err}");
    assert!(matches!(err, TrainError::TaskMismatch { .. }), "{err}");
}

/// `Trainer::fit` hands back the resulting model, the one it wrote to `<out>/model`.
#[test]
fn fit_returns_the_resulting_model() {
    let _turn = serial();
    let train_set = uci("train", 32, None);
    let dev = uci("dev", 16, Some(&train_set.tasks));
    let data = TrainData {
        train: &train_set,
        dev: Some(&dev),
        test: None,
    };
    let out = tempfile::tempdir().unwrap();
    let trainer = Trainer::new(config(2), out.path(), RunOptions::default());
    let (model, report) = trainer.fit(tiny_model(&train_set), data).unwrap();
    assert!(report.finished);
    assert_eq!(tensors_of(&model), params_of(&out.path().join("model")));
}

/// With a moving average of the weights and no dev set, the model written is the average of
/// the checkpoint's weights as the checkpoint's optimizer holds it, not the last weights.
#[test]
fn the_saved_model_is_the_weight_average() {
    let _turn = serial();
    let train_set = uci("train", 48, None);
    let data = TrainData {
        train: &train_set,
        dev: None,
        test: None,
    };
    let mut config = config(2);
    config.optim.ema_decay = Some(0.7);
    let out = tempfile::tempdir().unwrap();
    train(
        tiny_model(&train_set),
        data,
        &config,
        out.path(),
        &RunOptions::default(),
    )
    .unwrap();
    let device = Default::default();
    let ckpt = out.path().join("checkpoint");
    let last = MultiTaskModel::<B>::load(ckpt.join("model"), &device).unwrap();
    let optim = mtl::train::AdamW::<B>::load(config.optim.clone(), &ckpt, &device).unwrap();
    let trained = Trainable {
        model: last,
        loss_weights: None,
    };
    let averaged = optim.averaged(trained).model;
    let expected = tensors_of(&averaged);
    let saved = params_of(&out.path().join("model"));
    assert_eq!(saved, expected);
    let last = params_of(&ckpt.join("model"));
    let moved = last.iter().filter(|(k, v)| &saved[*k] != *v).count();
    assert!(
        moved > last.len() / 2,
        "{moved} of {} tensors averaged",
        last.len()
    );
}

/// `Keep::Last`: the model written is the last one (the checkpoint's), whatever dev scored,
/// and the report's dev evaluation is the last one.
#[test]
fn keeping_the_last_model() {
    let _turn = serial();
    let train_set = uci("train", 48, None);
    let dev = uci("dev", 16, Some(&train_set.tasks));
    let data = TrainData {
        train: &train_set,
        dev: Some(&dev),
        test: None,
    };
    let mut config = config(3);
    config.keep = Keep::Last;
    let out = tempfile::tempdir().unwrap();
    let report = train(
        tiny_model(&train_set),
        data,
        &config,
        out.path(),
        &RunOptions::default(),
    );
    let report = report.unwrap();
    let saved = params_of(&out.path().join("model"));
    assert_eq!(saved, params_of(&out.path().join("checkpoint/model")));
    let records = jsonl(&out.path().join("metrics.jsonl"));
    assert_eq!(records.len(), 3, "one dev evaluation per epoch");
    // The run is one whose last epoch is not its best, so that keeping the best would differ.
    let score = |r: &serde_json::Value| r["mean_macro_f1"].as_f64().unwrap();
    assert!(
        records[..2].iter().any(|r| score(r) >= score(&records[2])),
        "{records:?}"
    );
    let dev_record = report.dev.unwrap();
    assert_eq!(dev_record.step, report.steps);
    assert_eq!(records[2]["step"], dev_record.step);
    for (task, metrics) in &dev_record.tasks {
        let confusion = serde_json::to_value(&metrics.confusion).unwrap();
        assert_eq!(records[2]["tasks"][task]["confusion"], confusion);
    }
}

/// The learning-rate groups reach the parameters by the paths the trainer's module really has:
/// heads at `head_lr`, the top encoder layer at `lr`, lower layers and embeddings decayed.
#[test]
fn every_parameter_path_gets_its_learning_rate_group() {
    let _serial = serial();
    let data = uci("dev", 8, None);
    let trainable = Trainable {
        model: tiny_model(&data),
        loss_weights: None,
    };
    let paths = module_tensors(&trainable, |p| Some((p.to_string(), Layout::AsIs))).unwrap();
    let c = OptimConfig {
        lr: 1.0,
        head_lr: Some(7.0),
        layer_decay: 0.5,
        ..OptimConfig::default()
    };
    let (mut heads, mut top, mut bottom, mut embeddings) = (0, 0, 0, 0);
    for path in paths.keys() {
        let lr = c.param_lr(path, 2);
        if path.contains("heads.") {
            assert_eq!(lr, 7.0, "{path}");
            heads += 1;
        } else if path.contains("encoder.layer.1.") {
            assert_eq!(lr, 1.0, "{path}");
            top += 1;
        } else if path.contains("encoder.layer.0.") {
            assert_eq!(lr, 0.5, "{path}");
            bottom += 1;
        } else if path.contains("embeddings.") {
            assert_eq!(lr, 0.25, "{path}");
            embeddings += 1;
        }
    }
    let names: Vec<&String> = paths.keys().collect();
    assert!(
        heads >= 8 && top > 0 && bottom > 0 && embeddings > 0,
        "{names:?}"
    );
}

/// The peers' tests' data: 96 UCI training rows and 32 dev rows.
fn peer_data() -> (Dataset, Dataset) {
    let train_set = uci("train", 96, None);
    let dev = uci("dev", 32, Some(&train_set.tasks));
    (train_set, dev)
}

/// The peers' tests' recipe: batch 32 in 2 shards.
fn peer_config(epochs: usize) -> TrainConfig {
    TrainConfig {
        batch_size: 32,
        shards: Some(2),
        ..config(epochs)
    }
}

/// Two peers in one process (burn-collective all-reduce) train the model one peer trains with
/// the same shard count: the same parameters after each of 3 steps at batch 32 and the same
/// loss curve; only the leader writes files, the same files.
#[test]
fn two_peers_train_what_one_peer_trains() {
    let _turn = serial();
    let (train_set, dev) = peer_data();
    let data = TrainData {
        train: &train_set,
        dev: Some(&dev),
        test: None,
    };
    let config = TrainConfig {
        eval_every: Some(1),
        ..peer_config(1)
    };
    let run = |steps: usize, peers: usize| {
        let out = tempfile::tempdir().unwrap();
        let options = RunOptions {
            stop_after_steps: Some(steps),
            ..RunOptions::default()
        };
        let trainer = Trainer::new(config.clone(), out.path(), options);
        let model = tiny_model(&train_set);
        let report = if peers == 1 {
            trainer.fit(model, data).unwrap().1
        } else {
            let devices = vec![Default::default(); peers];
            let group = mtl::train::PeerGroup::new(peers);
            trainer.fit_peers(model, data, &devices, &group).unwrap().1
        };
        assert_eq!(report.steps, steps);
        out
    };
    for steps in 1..=3 {
        let (one, two) = (run(steps, 1), run(steps, 2));
        let (a, b) = (
            params_of(&one.path().join("checkpoint/model")),
            params_of(&two.path().join("checkpoint/model")),
        );
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (path, x) in &a {
            for (u, v) in x.iter().zip(&b[path]) {
                let tolerance = 1e-5 * u.abs().max(v.abs()) + 1e-12;
                assert!(
                    (u - v).abs() <= tolerance,
                    "step {steps}, {path}: {u} vs {v}"
                );
            }
        }
        let losses = |dir: &Path| -> Vec<f64> {
            jsonl(&dir.join("metrics.jsonl"))
                .iter()
                .flat_map(|r| ["domain", "sentiment"].map(|t| r["train_loss"][t].as_f64().unwrap()))
                .collect()
        };
        let (la, lb) = (losses(one.path()), losses(two.path()));
        assert_eq!(la.len(), 2 * steps);
        for (u, v) in la.iter().zip(&lb) {
            assert!(
                (u - v).abs() <= 1e-6 * u.abs(),
                "step {steps}: loss {u} vs {v}"
            );
        }
        let files = |dir: &Path| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(files(one.path()), files(two.path()));
    }
}

/// Two peers stopped mid-run (a checkpoint by the leader) and resumed, every peer from the
/// leader's checkpoint, end where an uninterrupted two-peer run ends.
#[test]
fn two_peers_resume_from_the_leaders_checkpoint() {
    let _turn = serial();
    let (train_set, dev) = peer_data();
    let data = TrainData {
        train: &train_set,
        dev: Some(&dev),
        test: None,
    };
    let config = peer_config(2);
    let group = mtl::train::PeerGroup::new(2);
    let devices = vec![Default::default(); 2];
    let run = |out: &Path, options: RunOptions| {
        let trainer = Trainer::new(config.clone(), out, options);
        trainer
            .fit_peers(tiny_model(&train_set), data, &devices, &group)
            .unwrap()
            .1
    };
    let whole = tempfile::tempdir().unwrap();
    let full = run(whole.path(), RunOptions::default());
    assert!(full.finished);
    let parts = tempfile::tempdir().unwrap();
    let stop = RunOptions {
        stop_after_steps: Some(4),
        ..RunOptions::default()
    };
    assert!(!run(parts.path(), stop).finished);
    let resume = RunOptions {
        resume: true,
        ..RunOptions::default()
    };
    let resumed = run(parts.path(), resume);
    assert!(resumed.finished);
    assert_eq!(resumed.steps, full.steps);
    assert_eq!(
        params_of(&whole.path().join("model")),
        params_of(&parts.path().join("model"))
    );
    let dev_lines = |dir: &Path| -> Vec<serde_json::Value> {
        jsonl(&dir.join("metrics.jsonl"))
            .into_iter()
            .filter(|r| r["split"] == "dev")
            .map(|r| r["tasks"].clone())
            .collect()
    };
    assert_eq!(dev_lines(whole.path()), dev_lines(parts.path()));
}
