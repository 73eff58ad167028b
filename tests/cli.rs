//! The `mtl` binary: readable errors and exit codes, models by Hugging Face id from a cache
//! folder built from the fetched model (offline), and train -> eval -> predict agreeing with
//! the library and with each other.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{head, json_floats, jsonl, max_abs_diff, model_dir, read_json};
use mtl::encoder::{Checkpoint, SentenceEncoder};
use mtl::model::MultiTaskModel;
use serde_json::Value;

type B = mtl::backend::Backend;

fn mtl(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mtl"));
    command.args(args).env("HF_HUB_OFFLINE", "1");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("the mtl binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn errors_are_one_readable_message_with_exit_codes() {
    let out = mtl(&["embed", "--model", "models/not-here", "x"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: --model models/not-here: no such directory"),
        "{err}"
    );
    assert!(err.contains("scripts/fetch-model.sh"), "{err}");
    assert!(!err.contains("{ ") && !err.contains("panicked"), "{err}");

    let model = model_dir();
    let model = model.to_str().unwrap();
    let out = mtl(
        &["embed", "--model", model, "--pooling", "average", "x"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected mean, cls or max"),
        "{}",
        stderr(&out)
    );

    let out = mtl(
        &["embed", "--model", model, "--input", "/no/such/file.txt"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: /no/such/file.txt: cannot read"),
        "{}",
        stderr(&out)
    );

    // A directory that is not a trained model: the message names the missing file.
    let out = mtl(&["predict", "--model", model, "x"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("mtl.json"), "{}", stderr(&out));

    let out = mtl(
        &[
            "train",
            "--model",
            model,
            "--train",
            "/no/data.tsv",
            "--out",
            "/tmp/x",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: cannot access /no/data.tsv"),
        "{}",
        stderr(&out)
    );
}

/// A Hugging Face cache holding the fetched model as `sentence-transformers/all-MiniLM-L6-v2`
/// at commit `commit`, `refs/main` pointing at it (files linked, as the hub's cache does).
fn hub_cache(root: &Path, commit: &str) {
    let repo = root.join("models--sentence-transformers--all-MiniLM-L6-v2");
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    for entry in std::fs::read_dir(model_dir()).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), snapshot.join(entry.file_name())).unwrap();
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
}

#[test]
fn models_load_by_hub_id_from_the_cache_offline() {
    let cache = tempfile::tempdir().unwrap();
    let commit = "c9745ed1d9f207416be6d2e6f8de32d1f16199bf";
    hub_cache(cache.path(), commit);
    let out_dir = tempfile::tempdir().unwrap();
    let texts = ["A sentence loaded by id.", "Another one."];
    let encoder = SentenceEncoder::<B>::load(model_dir(), &Default::default()).unwrap();
    let expected = encoder.encode_vec(&texts).unwrap();
    let env = [("HF_HUB_CACHE", cache.path())];
    for spec in [
        "sentence-transformers/all-MiniLM-L6-v2".to_string(),
        format!("sentence-transformers/all-MiniLM-L6-v2@{commit}"),
    ] {
        let output = out_dir.path().join("e.jsonl");
        let out = mtl(
            &[
                "embed",
                "--model",
                &spec,
                "--output",
                output.to_str().unwrap(),
                texts[0],
                texts[1],
            ],
            &env,
        );
        assert!(out.status.success(), "{spec}: {}", stderr(&out));
        let lines = jsonl(&output);
        for (line, want) in lines.iter().zip(&expected) {
            assert!(max_abs_diff(&json_floats(&line["embedding"]), want) <= 1e-6);
        }
    }
    // HF_HOME/hub is the cache when HF_HUB_CACHE is not set.
    let home = tempfile::tempdir().unwrap();
    hub_cache(&home.path().join("hub"), commit);
    let out = mtl(
        &[
            "embed",
            "--model",
            "sentence-transformers/all-MiniLM-L6-v2",
            "x",
        ],
        &[("HF_HOME", home.path())],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    for missing in [
        "sentence-transformers/all-mpnet-base-v2",
        "sentence-transformers/all-MiniLM-L6-v2@v9",
    ] {
        let out = mtl(&["embed", "--model", missing, "x"], &env);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        let id = missing.split('@').next().unwrap();
        assert!(err.contains(&format!("`{id}`")), "{err}");
        assert!(err.contains(cache.path().to_str().unwrap()), "{err}");
    }
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `mtl train` for 1 epoch at batch 16 on the first `rows` (train, test) of the UCI files,
/// written into `work`, with `extra` flags; the output folder, the test file and what the
/// command printed.
fn train_small(work: &Path, rows: (usize, usize), extra: &[&str]) -> (PathBuf, PathBuf, Output) {
    let (train, test, out) = (
        work.join("train.tsv"),
        work.join("test.tsv"),
        work.join("run"),
    );
    head("train.tsv", rows.0, &train);
    head("test.tsv", rows.1, &test);
    let model = model_dir();
    let mut args = vec![
        "train",
        "--model",
        arg(&model),
        "--train",
        arg(&train),
        "--test",
        arg(&test),
        "--out",
        arg(&out),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let run = mtl(&args, &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    (out, test, run)
}

#[test]
fn train_eval_and_predict_agree_with_each_other_and_the_library() {
    let work = tempfile::tempdir().unwrap();
    let (out, test, _) = train_small(work.path(), (96, 64), &[]);
    let model = model_dir();
    let s = |p: &Path| arg(p).to_string();
    let results = read_json(&out.join("results.json"));

    let eval_json = work.path().join("eval.json");
    let eval = mtl(
        &[
            "eval",
            "--model",
            &s(&out.join("model")),
            "--data",
            &s(&test),
            "--output",
            &s(&eval_json),
            "--quiet",
        ],
        &[],
    );
    assert!(eval.status.success(), "{}", stderr(&eval));
    let table = String::from_utf8_lossy(&eval.stdout);
    assert!(
        table.contains("accuracy") && table.contains("domain confusion"),
        "{table}"
    );
    let scored = read_json(&eval_json);
    for task in ["domain", "sentiment"] {
        for metric in ["accuracy", "macro_f1", "mcc"] {
            assert_eq!(
                scored["tasks"][task][metric], results["tasks"][task][metric],
                "{task} {metric}"
            );
        }
        let confusion = scored["tasks"][task]["confusion"].as_array().unwrap();
        let total: u64 = confusion
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .map(|c| c.as_u64().unwrap())
            .sum();
        assert_eq!(total, 64);
    }

    let sentences = [
        "Great phone, terrible battery.",
        "The service was slow but the food was lovely.",
    ];
    let predictions = work.path().join("p.jsonl");
    let predict = mtl(
        &[
            "predict",
            "--model",
            &s(&out.join("model")),
            "--output",
            &s(&predictions),
            sentences[0],
            sentences[1],
        ],
        &[],
    );
    assert!(predict.status.success(), "{}", stderr(&predict));
    let trained = MultiTaskModel::<B>::load(out.join("model"), &Default::default()).unwrap();
    let expected = trained.predict(&sentences).unwrap();
    for (line, per_task) in jsonl(&predictions).iter().zip(&expected) {
        for p in per_task {
            assert_eq!(line[&p.task]["label"], Value::from(p.label.clone()));
            let got: Vec<f32> = line[&p.task]["probabilities"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert!(max_abs_diff(&got, &p.probabilities) <= 1e-6);
        }
    }

    // The folder is complete for the ecosystem: pooler kept, sentence-transformers' config,
    // a model card naming the base model, tasks and test metrics.
    let saved = out.join("model");
    let pooler = |dir: &Path| {
        Checkpoint::open(&dir.join("model.safetensors"))
            .unwrap()
            .tensor("pooler.dense.weight")
            .unwrap()
    };
    assert_eq!(pooler(&saved), pooler(&model));
    assert!(saved.join("config_sentence_transformers.json").is_file());
    let card = std::fs::read_to_string(saved.join("README.md")).unwrap();
    assert!(card.starts_with("---\n"), "{card}");
    assert!(
        card.contains(&format!("base_model: \"{}\"", s(&model))),
        "{card}"
    );
    assert!(card.contains("name: \"sentiment\""), "{card}");
    let accuracy = results["tasks"]["domain"]["accuracy"].as_f64().unwrap();
    assert!(
        card.contains(&format!("test: {{accuracy: {accuracy:.4}")),
        "{card}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["embed", "train", "eval", "predict", "serve", "bench"] {
        let out = mtl(&[sub, "--help"], &[]);
        assert!(out.status.success(), "{sub}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("--model"),
            "{sub}"
        );
    }
}

#[test]
fn seeds_run_the_recipe_once_each_and_report_mean_and_std() {
    let work = tempfile::tempdir().unwrap();
    let (out, _, run) = train_small(work.path(), (64, 48), &["--seeds", "1,2"]);
    let summary = read_json(&out.join("results.json"));
    assert_eq!(summary["seeds"], serde_json::json!([1, 2]));
    for task in ["domain", "sentiment"] {
        let values: Vec<f64> = (1..=2)
            .map(|seed| {
                let one = read_json(&out.join(format!("seed-{seed}/results.json")));
                one["tasks"][task]["accuracy"].as_f64().unwrap()
            })
            .collect();
        let m = &summary["tasks"][task]["accuracy"];
        assert_eq!(m["values"], serde_json::json!(values));
        let mean = (values[0] + values[1]) / 2.0;
        let std = ((values[0] - mean).powi(2) + (values[1] - mean).powi(2)).sqrt();
        assert!((m["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
        assert!((m["std"].as_f64().unwrap() - std).abs() < 1e-12);
    }
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(table.contains("mean") && table.contains("±"), "{table}");
    // --seeds and --seed together are a usage error.
    let both = mtl(
        &[
            "train", "--model", "m", "--train", "t", "--out", "o", "--seed", "3", "--seeds", "1,2",
        ],
        &[],
    );
    assert_eq!(both.status.code(), Some(2));
}

/// `train --devices 2` (two peers, burn-collective all-reduce) writes the model that
/// `--shards 2` on one peer writes, byte for byte (several nodes: `tests/nodes.rs`).
#[test]
fn train_on_two_devices_equals_one_device() {
    let work = tempfile::tempdir().unwrap();
    let one = work.path().join("one");
    let two = work.path().join("two");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    let (a, _, _) = train_small(&one, (64, 32), &["--shards", "2"]);
    let (b, _, run) = train_small(&two, (64, 32), &["--shards", "2", "--devices", "2"]);
    assert!(stderr(&run).contains("in all-reduces"), "{}", stderr(&run));
    let weights = |dir: &Path| std::fs::read(dir.join("model/model.safetensors")).unwrap();
    assert!(weights(&a) == weights(&b), "the two models differ");
    assert_eq!(
        read_json(&a.join("results.json")),
        read_json(&b.join("results.json"))
    );
}
