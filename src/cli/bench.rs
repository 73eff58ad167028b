//! `mtl bench`: encode sentences/s at several batch sizes, the trainer's multi-task training
//! step, model load time and peak RSS on the backend compiled in; with `--serve`, the server
//! under 8 concurrent clients.
//!
//! The peers: `../shared/bench/pytorch_baseline.py` and `ort_baseline.py` (see their
//! docstrings), run in the same sitting.

use std::path::PathBuf;
use std::time::Instant;

use crate::backend::{device, Backend, TrainBackend, NAME};
use burn::module::AutodiffModule;
use mtl_encoder::{Encoded, SentenceEncoder};
use mtl_model::{seed_tasks, HeadOptions, MultiTaskModel};
use mtl_serve::{ServeConfig, ServedModel, Server};
use mtl_train::{Batch, OptimConfig, Rng, TrainConfig, TrainRows, TrainStep, Trainable};

use super::baselines::{self, Case, Measured};
use super::error::CliError;
use super::load_test::{self, LoadPlan};
use super::model_ref;

/// Benchmark encoding, training and serving throughput.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    model: String,
    #[arg(long, default_value = "../shared/bench/corpus.txt")]
    corpus: PathBuf,
    /// Encode batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,32,128")]
    batch_sizes: Vec<usize>,
    /// Sentences encoded at batch size 1 (the slowest case; 0 = all).
    #[arg(long, default_value_t = 500)]
    batch1_sentences: usize,
    /// Timed training steps (after 3 warm-up steps; 0 = no training case).
    #[arg(long, default_value_t = 20)]
    train_steps: usize,
    /// Training batch size.
    #[arg(long, default_value_t = 32)]
    train_batch: usize,
    /// Encoder worker threads (default: one per core on CPU backends).
    #[arg(long)]
    workers: Option<usize>,
    /// Padded tokens per encode forward pass at most (0: no cap; default: the encoder's, 1024
    /// on CPU backends).
    #[arg(long)]
    max_batch_tokens: Option<usize>,
    /// Run encode batches padded instead of packed (for comparison; see `EncoderSettings::packed`).
    #[arg(long)]
    padded: bool,
    /// Pieces each training batch is cut into (default: one per core on CPU backends).
    #[arg(long)]
    shards: Option<usize>,
    /// Leave glibc's allocator settings as they are (for comparison; see `tune_allocator`).
    #[arg(long)]
    pub(super) default_malloc: bool,
    /// Print each training step's time split (seconds).
    #[arg(long)]
    phases: bool,
    /// Also load-test the server (POST /embed) on 127.0.0.1 with concurrent clients.
    #[arg(long)]
    serve: bool,
    /// Concurrent clients of --serve.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Requests per client of --serve (1 to 16 sentences each).
    #[arg(long, default_value_t = 50)]
    requests: usize,
    /// Then run the peers beside --corpus (pytorch_baseline.py, ort_baseline.py) with this
    /// Python (one with torch, sentence-transformers, transformers, onnx, onnxruntime) and print
    /// all three side by side.
    #[arg(long)]
    baselines: Option<PathBuf>,
    /// Repetitions of each peer case (the peers report medians).
    #[arg(long, default_value_t = 2)]
    baseline_reps: usize,
    /// Then two training nodes on 127.0.0.1 (`train --nodes 2`, an orchestrator on a thread
    /// of this command): the time of one all-reduce of the model's size, and --train-steps
    /// training steps on 2 nodes beside 1 node, as sentences/s.
    #[arg(long)]
    nodes_loopback: bool,
    /// Training data of --nodes-loopback.
    #[arg(long, default_value = "../shared/data/uci-mtl/train.tsv")]
    nodes_train: PathBuf,
    /// All-reduces timed by --nodes-loopback.
    #[arg(long, default_value_t = 5)]
    all_reduce_rounds: usize,
    /// (--nodes-loopback's own node processes.)
    #[arg(long, hide = true)]
    all_reduce_node: Option<usize>,
    #[arg(long, hide = true, default_value_t = 0)]
    all_reduce_port: u16,
    #[arg(long, hide = true, default_value_t = 0)]
    all_reduce_values: usize,
}

/// Peak resident set size since the last reset, in MiB (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Resets the peak RSS counter (Linux: `5` to clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn row(case: &str, batch: usize, per_s: f64, rss: Option<f64>) {
    let rss = rss.map_or("-".to_string(), |r| format!("{r:.0}"));
    println!("| {NAME} | {case} | {batch} | {per_s:.1} | {rss} |");
}

pub fn run(args: Args) -> Result<(), CliError> {
    if let Some(rank) = args.all_reduce_node {
        return super::nodes_bench::all_reduce_node(
            rank,
            args.all_reduce_port,
            args.all_reduce_values,
            args.all_reduce_rounds,
        );
    }
    let corpus = std::fs::read_to_string(&args.corpus).map_err(|e| CliError::Input {
        path: args.corpus.clone(),
        message: format!("cannot read the corpus: {e}"),
    })?;
    let sentences: Vec<&str> = corpus.lines().collect();
    let (dir, _) = model_ref::resolve(&args.model)?;
    let device = device();

    reset_peak_rss();
    let start = Instant::now();
    let mut encoder = SentenceEncoder::<Backend>::load(&dir, &device)?;
    let load_s = start.elapsed().as_secs_f64();
    let load_rss = peak_rss_mib().unwrap_or(0.0);
    if let Some(w) = args.workers {
        encoder = encoder.with_workers(w);
    }
    if let Some(cap) = args.max_batch_tokens {
        encoder = encoder.with_max_batch_tokens(cap);
    }
    if args.padded {
        encoder = encoder.with_packed(false);
    }
    println!("CPU: {}", mtl_encoder::runtime::cpu_description());
    println!("matrix products: {}", mtl_encoder::ops::matrix_product());
    match encoder.settings.max_batch_tokens {
        0 => println!("encode passes: the batch size alone"),
        cap => println!("encode passes: the batch size, at most {cap} padded tokens"),
    }
    let layout = if encoder.settings.packed {
        "packed (no padding)"
    } else {
        "padded"
    };
    println!("encode batches: {layout}");
    println!("| backend | case | batch | sentences/s | peak RSS (MiB) |");
    println!("|---|---|---|---|---|");
    println!("| {NAME} | load model | - | {load_s:.3} s | {load_rss:.0} |");
    encoder.encode(&sentences[..8.min(sentences.len())])?; // warm-up
    let mut ours = Vec::new();

    for &batch in &args.batch_sizes {
        let n = if batch == 1 && args.batch1_sentences > 0 {
            args.batch1_sentences.min(sentences.len())
        } else {
            sentences.len()
        };
        let enc = encoder.clone().with_batch_size(batch);
        reset_peak_rss();
        let start = Instant::now();
        let _ = enc.encode(&sentences[..n])?.into_data(); // waits for the backend
        let (s, rss_mib) = (start.elapsed().as_secs_f64(), peak_rss_mib());
        row(
            &format!("encode ({n} sentences)"),
            batch,
            n as f64 / s,
            rss_mib,
        );
        ours.push(Measured {
            case: Case::Encode,
            batch,
            per_s: n as f64 / s,
            rss_mib,
        });
    }
    if args.train_steps > 0 {
        let (per_s, rss_mib) = bench_training(&args, &dir, &sentences)?;
        ours.push(Measured {
            case: Case::Train,
            batch: args.train_batch,
            per_s,
            rss_mib,
        });
    }
    if let Some(python) = &args.baselines {
        let plan = baselines::Plan {
            python,
            scripts: &baselines::scripts_beside(&args.corpus),
            model: &dir,
            corpus: &args.corpus,
            batch_sizes: &args.batch_sizes,
            batch1_sentences: args.batch1_sentences,
            reps: args.baseline_reps,
            train: args.train_steps > 0,
        };
        let peers = baselines::run(&plan)?;
        println!("CPU: {}", mtl_encoder::runtime::cpu_description());
        baselines::print_table(&ours, &peers);
    }
    if args.nodes_loopback {
        let values = burn::module::Module::num_params(&encoder);
        drop(encoder);
        super::nodes_bench::run(&super::nodes_bench::Plan {
            model: &dir,
            train: &args.nodes_train,
            values,
            rounds: args.all_reduce_rounds,
            steps: args.train_steps.max(1),
            batch_size: args.train_batch,
        })?;
        return Ok(());
    }
    if args.serve {
        bench_serving(&args, encoder, &sentences)?;
    }
    Ok(())
}

/// The trainer's step (encoder + mean pooling + heads with 3 and 2 classes, summed
/// cross-entropy, shards on the workers, AdamW) on batches from a seeded shuffle of the corpus.
/// Sentences per second in training steps, and the peak RSS (MiB).
fn bench_training(
    args: &Args,
    dir: &std::path::Path,
    sentences: &[&str],
) -> Result<(f64, Option<f64>), CliError> {
    let encoder = SentenceEncoder::<TrainBackend>::load(dir, &device())?;
    let options = HeadOptions {
        dropout: 0.0,
        ..HeadOptions::default()
    };
    let model = MultiTaskModel::new(encoder, seed_tasks(), options)?;
    let encoded: Vec<Encoded> = model.encoder.tokenize(sentences)?;
    let labels: Vec<Vec<Option<usize>>> = (0..encoded.len())
        .map(|r| vec![Some(r % 3), Some(r % 2)])
        .collect();
    let data = TrainRows {
        encoded: &encoded,
        labels: &labels,
        cache: None,
    };
    let mut rng = Rng::new(7);
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    rng.shuffle(&mut order);
    let config = TrainConfig {
        optim: OptimConfig {
            lr: 2e-5,
            weight_decay: 0.01,
            max_grad_norm: None,
            ..OptimConfig::default()
        },
        shards: args.shards,
        ..TrainConfig::default()
    };
    let mut step = TrainStep::new(&config, &model)?;
    let shards = step.shards();
    let mut trainable = Trainable {
        model,
        loss_weights: None,
    };
    let b = args.train_batch;
    reset_peak_rss();
    let mut timed = 0.0;
    for k in 0..(3 + args.train_steps) {
        let rows: Vec<usize> = (0..b).map(|i| order[(k * b + i) % order.len()]).collect();
        let batch = Batch {
            rows: &rows,
            tasks: &[0, 1],
        };
        let start = Instant::now();
        let (next, out) = step.step(trainable, &data, batch, k, 1.0)?;
        trainable = next;
        let _ = trainable.model.heads[0].out_proj.weight.val().into_data(); // waits for the backend
        let total = start.elapsed().as_secs_f64();
        if args.phases {
            let t = out.times;
            let optim = total - t.forward_backward - t.add;
            eprintln!(
                "fwd+bwd {:.3} add {:.3} optim {optim:.3}",
                t.forward_backward, t.add
            );
        }
        if k >= 3 {
            timed += total;
        }
    }
    let case = format!("multi-task training step (2 heads, AdamW, {shards} shards)");
    let per_s = (args.train_steps * b) as f64 / timed;
    let rss_mib = peak_rss_mib();
    row(&case, b, per_s, rss_mib);
    let _ = trainable.model.valid();
    Ok((per_s, rss_mib))
}

/// The server on port 0 under `--clients` concurrent clients sending `--requests` requests of
/// 1-16 sentences each to `/embed`.
fn bench_serving(
    args: &Args,
    encoder: SentenceEncoder<Backend>,
    sentences: &[&str],
) -> Result<(), CliError> {
    let config = ServeConfig {
        port: 0,
        backend: NAME.to_string(),
        ..ServeConfig::default()
    };
    let server = Server::start(ServedModel::Encoder(encoder.with_batch_size(32)), config)?;
    let base = format!("http://{}", server.addr());
    let corpus: Vec<String> = sentences.iter().map(|s| s.to_string()).collect();
    let plan = LoadPlan {
        route: "/embed".into(),
        clients: args.clients,
        requests: args.requests,
        max_sentences: 16,
        seed: 1,
    };
    let (exchanges, wall) = load_test::run(&base, &corpus, &plan)?;
    let batch = mean_batch(&base).unwrap_or(f64::NAN);
    server.shutdown().map_err(CliError::Server)?;
    if let Some(bad) = exchanges.iter().find(|e| e.status != 200) {
        return Err(CliError::LoadTest(format!(
            "an answer had status {}: {}",
            bad.status, bad.body
        )));
    }
    let s = load_test::summarize(&exchanges, wall);
    row(
        &format!(
            "serve /embed ({} clients x {} requests, 1-16 sentences; {:.1} requests/s; latency p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms; {batch:.1} sentences per batch)",
            args.clients, args.requests, s.requests_per_second, s.p50 * 1e3, s.p90 * 1e3, s.p99 * 1e3
        ),
        32,
        s.sentences_per_second,
        peak_rss_mib(),
    );
    Ok(())
}

/// The mean batch size the server formed, from its `/metrics`.
fn mean_batch(base: &str) -> Option<f64> {
    let text = reqwest::blocking::get(format!("{base}/metrics"))
        .ok()?
        .text()
        .ok()?;
    let value = |name| load_test::metric(&text, name);
    Some(value("mtl_batch_size_sum")? / value("mtl_batch_size_count")?)
}
