//! The multi-task model on the real encoder: shapes, determinism, predictions, freezing,
//! save/load round trips and errors.

mod common;

use std::collections::BTreeMap;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use common::model_dir;
use mtl::encoder::io::module_tensors;
use mtl::encoder::{Layout, SentenceEncoder, SentenceTokenizer};
use mtl::model::{FreezePolicy, HeadOptions, ModelError, MultiTaskModel, TaskSpec};

/// The backend compiled in (NdArray by default; flex or CUDA by feature).
type B = mtl::backend::Backend;
type AB = mtl::backend::TrainBackend;

const SENTENCES: [&str; 2] = [
    "The quick brown fox jumps over the lazy dog.",
    "Transformers have revolutionized natural language processing.",
];

fn encoder<Bk: Backend>() -> SentenceEncoder<Bk> {
    SentenceEncoder::load(model_dir(), &Default::default()).unwrap()
}

fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

fn three_tasks() -> Vec<TaskSpec> {
    vec![
        TaskSpec::new("classification", ["a", "b", "c"]),
        TaskSpec::new("sentiment", ["negative", "positive"]),
        TaskSpec::new("topic", ["sports", "politics", "tech", "food"]),
    ]
}

fn seeded(tasks: Vec<TaskSpec>, seed: u64) -> MultiTaskModel<B> {
    let options = HeadOptions {
        seed,
        ..HeadOptions::default()
    };
    MultiTaskModel::new(encoder(), tasks, options).unwrap()
}

#[test]
fn seed_model_shapes_and_determinism() {
    let model = seeded(mtl::model::seed_tasks(), 7);
    let out = model.forward_sentences(&SENTENCES).unwrap();
    assert_eq!(out.embeddings.dims(), [2, 384]);
    assert_eq!(out.logits("classification").unwrap().dims(), [2, 3]);
    assert_eq!(out.logits("sentiment").unwrap().dims(), [2, 2]);
    let again = seeded(mtl::model::seed_tasks(), 7)
        .forward_sentences(&SENTENCES)
        .unwrap();
    assert_eq!(
        values(out.logits[0].clone()),
        values(again.logits[0].clone())
    );
    assert_eq!(
        values(out.logits[1].clone()),
        values(again.logits[1].clone())
    );
    let other = seeded(mtl::model::seed_tasks(), 8)
        .forward_sentences(&SENTENCES)
        .unwrap();
    assert_ne!(
        values(out.logits[0].clone()),
        values(other.logits[0].clone())
    );
    // The shared embeddings are the encoder's sentence embeddings (mean-pooled, and normalised
    // as the encoder's modules.json says: the one setting the heads' input follows).
    let pooled = encoder::<B>().encode_vec(&SENTENCES).unwrap();
    let emb = values(out.embeddings);
    assert!(common::max_abs_diff(&emb[..384], &pooled[0]) < 1e-5);
}

#[test]
fn three_tasks_shapes_and_determinism() {
    let model = seeded(three_tasks(), 3);
    let out = model.forward_sentences(&SENTENCES).unwrap();
    let dims: Vec<[usize; 2]> = out.logits.iter().map(|l| l.dims()).collect();
    assert_eq!(dims, vec![[2, 3], [2, 2], [2, 4]]);
    assert_eq!(out.logits("topic").unwrap().dims(), [2, 4]);
    let again = seeded(three_tasks(), 3)
        .forward_sentences(&SENTENCES)
        .unwrap();
    for (a, b) in out.logits.into_iter().zip(again.logits) {
        assert_eq!(values(a), values(b));
    }
    let err = model
        .forward_sentences(&SENTENCES)
        .unwrap()
        .logits("nope")
        .unwrap_err();
    assert!(matches!(err, ModelError::UnknownTask { .. }), "{err}");
    assert!(err.to_string().contains("nope") && err.to_string().contains("topic"));
}

#[test]
fn predict_gives_distributions_and_argmax_labels() {
    let model = seeded(three_tasks(), 1);
    let texts = [
        "short",
        "",
        "A much longer sentence about the weather in the mountains today.",
    ];
    let predictions = model.predict(&texts).unwrap();
    assert_eq!(predictions.len(), 3);
    let batched = model.forward_sentences(&texts[2..]).unwrap();
    for (row, per_task) in predictions.iter().enumerate() {
        assert_eq!(per_task.len(), 3);
        for (task, p) in three_tasks().iter().zip(per_task) {
            assert_eq!(p.task, task.name);
            assert_eq!(p.probabilities.len(), task.num_classes());
            let sum: f32 = p.probabilities.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "probabilities sum to {sum}");
            let argmax = p
                .probabilities
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            assert_eq!(p.index, argmax);
            assert_eq!(p.label, task.labels[argmax]);
            assert_eq!(p.probability, p.probabilities[argmax]);
        }
        if row == 2 {
            // Input order is kept: row 2 matches the same sentence run alone.
            let logits = values(batched.logits[2].clone());
            let best = logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            assert_eq!(per_task[2].index, best);
        }
    }
}

fn tiny_model() -> MultiTaskModel<AB> {
    let config = common::tiny_config(3);
    AB::seed(&Default::default(), 11);
    let tokenizer =
        SentenceTokenizer::from_file(&model_dir().join("tokenizer.json"), 64, 0).unwrap();
    let encoder =
        SentenceEncoder::from_parts(config.init::<AB>(&Default::default()), config, tokenizer);
    let options = HeadOptions {
        dropout: 0.0,
        ..HeadOptions::default()
    };
    MultiTaskModel::new(encoder, mtl::model::seed_tasks(), options).unwrap()
}

fn params(model: &MultiTaskModel<AB>) -> BTreeMap<String, Vec<f32>> {
    module_tensors(model, |p| Some((p.to_string(), Layout::AsIs)))
        .unwrap()
        .into_iter()
        .map(|(k, (_, v))| (k, v))
        .collect()
}

#[test]
fn frozen_parameters_do_not_move_under_adamw() {
    type Selects = fn(&str) -> bool;
    let cases: Vec<(&str, Selects)> = vec![
        ("none", |_| false),
        ("encoder", |p| p.starts_with("encoder.")),
        ("embeddings", |p| p.starts_with("encoder.bert.embeddings.")),
        ("layers:2", |p| {
            p.starts_with("encoder.bert.embeddings.")
                || p.starts_with("encoder.bert.encoder.layer.0.")
                || p.starts_with("encoder.bert.encoder.layer.1.")
        }),
        ("head:sentiment", |p| p.starts_with("heads.1.")),
        ("embeddings,head:classification", |p| {
            p.starts_with("encoder.bert.embeddings.") || p.starts_with("heads.0.")
        }),
    ];
    for (policy, frozen) in cases {
        let model = tiny_model()
            .freeze(&policy.parse::<FreezePolicy>().unwrap())
            .unwrap();
        let before = params(&model);
        let out = model.forward_sentences(&SENTENCES).unwrap();
        let loss = out.logits[0].clone().sum() + out.logits[1].clone().powi_scalar(2).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut optim = AdamWConfig::new().init::<AB, MultiTaskModel<AB>>();
        let model = optim.step(1e-2, model, grads);
        let after = params(&model);
        let mut moved = 0;
        for (path, old) in &before {
            let new = &after[path];
            if frozen(path) {
                assert!(old == new, "{policy}: frozen {path} changed");
            } else {
                assert!(old != new, "{policy}: trainable {path} did not change");
                moved += 1;
            }
        }
        assert!(moved > 0, "{policy}: nothing trained");
    }
    let err = tiny_model()
        .freeze(&"head:nope".parse().unwrap())
        .unwrap_err();
    assert!(matches!(err, ModelError::UnknownTask { .. }), "{err}");
    assert!(tiny_model().freeze(&"layers:4".parse().unwrap()).is_err());
}

#[test]
fn save_load_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let model = seeded(three_tasks(), 5);
    let dir_a = tmp.path().join("a");
    model.save(&dir_a).unwrap();
    let loaded = MultiTaskModel::<B>::load(&dir_a, &Default::default()).unwrap();
    assert_eq!(loaded.tasks(), model.tasks());
    let (x, y) = (
        model.forward_sentences(&SENTENCES).unwrap(),
        loaded.forward_sentences(&SENTENCES).unwrap(),
    );
    for (a, b) in x.logits.into_iter().zip(y.logits) {
        assert_eq!(values(a), values(b));
    }
    // The encoder directory loads through mtl-encoder alone, with identical embeddings.
    let alone = SentenceEncoder::<B>::load(&dir_a, &Default::default()).unwrap();
    assert_eq!(
        alone.encode_vec(&SENTENCES).unwrap(),
        encoder::<B>().encode_vec(&SENTENCES).unwrap()
    );
    // Saving the loaded model again gives byte-identical files (over an existing directory too).
    let dir_b = tmp.path().join("b");
    loaded.save(&dir_b).unwrap();
    loaded.save(&dir_b).unwrap();
    let mut files = 0;
    for entry in walk(&dir_a) {
        let rel = entry.strip_prefix(&dir_a).unwrap();
        let a = std::fs::read(&entry).unwrap();
        let b = std::fs::read(dir_b.join(rel)).unwrap();
        assert!(a == b, "{} differs", rel.display());
        files += 1;
    }
    assert!(files >= 8, "only {files} files saved");
    assert!(!tmp.path().join("b.partial").exists() && !tmp.path().join("b.old").exists());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn task_and_directory_errors() {
    let dup = vec![
        TaskSpec::new("a", ["x", "y"]),
        TaskSpec::new("a", ["p", "q"]),
    ];
    let err = MultiTaskModel::new(encoder::<B>(), dup, HeadOptions::default()).unwrap_err();
    assert!(matches!(err, ModelError::DuplicateTask(_)), "{err}");
    let few = vec![TaskSpec::new("a", ["x"])];
    let err = MultiTaskModel::new(encoder::<B>(), few, HeadOptions::default()).unwrap_err();
    assert!(matches!(err, ModelError::TooFewLabels { .. }), "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    seeded(three_tasks(), 2).save(&dir).unwrap();
    let load = || MultiTaskModel::<B>::load(&dir, &Default::default());
    let json = std::fs::read_to_string(dir.join("mtl.json")).unwrap();

    std::fs::remove_file(dir.join("mtl.json")).unwrap();
    let err = load().unwrap_err();
    assert!(
        matches!(err, ModelError::ModelFile { .. }) && err.to_string().contains("mtl.json"),
        "{err}"
    );

    std::fs::write(dir.join("mtl.json"), &json[..json.len() / 2]).unwrap();
    let err = load().unwrap_err();
    assert!(
        err.to_string().contains("mtl.json") && err.to_string().contains("malformed"),
        "{err}"
    );

    // Heads whose shapes do not match mtl.json.
    std::fs::write(
        dir.join("mtl.json"),
        json.replace("\"hidden_size\": null", "\"hidden_size\": 100"),
    )
    .unwrap();
    let err = load().unwrap_err();
    assert!(err.to_string().contains("heads.safetensors"), "{err}");
    assert!(
        err.to_string().contains("classification.dense.weight"),
        "{err}"
    );

    std::fs::write(dir.join("mtl.json"), &json).unwrap();
    assert!(load().is_ok());
}

#[test]
fn valid_model_of_a_training_model_predicts_the_same() {
    let model: MultiTaskModel<AB> = {
        AB::seed(&Default::default(), 4);
        MultiTaskModel::new(encoder(), mtl::model::seed_tasks(), HeadOptions::default()).unwrap()
    };
    let inner = model.valid();
    let a = inner.predict(&SENTENCES).unwrap();
    let b = inner.predict(&SENTENCES).unwrap();
    assert_eq!(a, b);
    // On the training model itself (dropout 0.1 in the encoder and the heads) predict runs
    // without dropout too: the same labels, probabilities within float noise (on backends
    // without kernels of their own, inference and autodiff compute GELU differently).
    let trained = model.predict(&SENTENCES).unwrap();
    for (x, y) in trained.iter().flatten().zip(a.iter().flatten()) {
        assert_eq!((&x.task, x.index), (&y.task, y.index));
        assert!(common::max_abs_diff(&x.probabilities, &y.probabilities) < 1e-5);
    }
    assert_ne!(
        values(model.forward_sentences(&SENTENCES).unwrap().logits[0].clone()),
        values(inner.forward_sentences(&SENTENCES).unwrap().logits[0].clone()),
        "forward on the training model applies dropout"
    );
}

/// Normalisation of the heads' input is the encoder's setting, saved in `mtl.json` and as the
/// `Normalize` module; a file from before kept it as `head.normalize`, which still loads.
#[test]
fn normalisation_is_the_encoders_setting_and_old_files_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let model = MultiTaskModel::new(
        encoder::<B>().with_normalize(false),
        mtl::model::seed_tasks(),
        HeadOptions::default(),
    )
    .unwrap();
    model.save(&dir).unwrap();
    assert!(!std::fs::read_to_string(dir.join("modules.json"))
        .unwrap()
        .contains("Normalize"));
    let loaded = MultiTaskModel::<B>::load(&dir, &Default::default()).unwrap();
    assert!(!loaded.encoder.settings.normalize);
    let json = std::fs::read_to_string(dir.join("mtl.json")).unwrap();
    let old = json
        .replace("  \"normalize\": false,\n", "")
        .replace("\"seed\": 42", "\"normalize\": true,\n    \"seed\": 42");
    assert_ne!(old, json);
    std::fs::write(dir.join("mtl.json"), old).unwrap();
    let legacy = MultiTaskModel::<B>::load(&dir, &Default::default()).unwrap();
    assert!(legacy.encoder.settings.normalize);
    let emb = values(legacy.forward_sentences(&SENTENCES).unwrap().embeddings);
    let norm: f32 = emb[..384].iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
}
