//! Throughput benchmark: encode sentences/s at several batch sizes, multi-task training steps/s,
//! model load time and peak RSS, on the backend compiled in.
//!
//! cargo run --release --example bench -- --model models/all-MiniLM-L6-v2 --corpus ../shared/bench/corpus.txt
//! The PyTorch side: ../shared/bench/pytorch_baseline.py (see its docstring), run in the same sitting.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use clap::Parser;
use mtl::backend::{device, Backend, TrainBackend, NAME};
use mtl::encoder::{Encoded, SentenceEncoder};
use mtl::model::{seed_tasks, HeadOptions, MultiTaskModel};
use mtl::train::{Batch, OptimConfig, Rng, TrainConfig, TrainRows, TrainStep, Trainable};

#[derive(Parser)]
#[command(about = "Benchmark encoding and training throughput")]
struct Args {
    #[arg(long, default_value = "models/all-MiniLM-L6-v2")]
    model: PathBuf,
    #[arg(long, default_value = "../shared/bench/corpus.txt")]
    corpus: PathBuf,
    /// Encode batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,32,128")]
    batch_sizes: Vec<usize>,
    /// Sentences encoded at batch size 1 (the slowest case; 0 = all).
    #[arg(long, default_value_t = 500)]
    batch1_sentences: usize,
    /// Timed training steps (after 3 warm-up steps).
    #[arg(long, default_value_t = 20)]
    train_steps: usize,
    /// Training batch size.
    #[arg(long, default_value_t = 32)]
    train_batch: usize,
    /// Encoder worker threads (default: one per core on CPU backends).
    #[arg(long)]
    workers: Option<usize>,
    /// Pieces each training batch is cut into, trained on parallel threads (default: one per
    /// core on CPU backends).
    #[arg(long)]
    shards: Option<usize>,
    /// Leave glibc's allocator settings as they are (for comparison; see `tune_allocator`).
    #[arg(long)]
    default_malloc: bool,
    /// Print each training step's time split: shards' forward and backward, summing their
    /// gradients, optimizer step (seconds).
    #[arg(long)]
    phases: bool,
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if !args.default_malloc {
        mtl::encoder::tune_allocator(); // reuse large tensors' memory (glibc)
    }
    let corpus = std::fs::read_to_string(&args.corpus)
        .map_err(|e| format!("{}: {e}", args.corpus.display()))?;
    let sentences: Vec<&str> = corpus.lines().collect();
    let device = device();

    println!("CPU: {}", mtl::encoder::runtime::cpu_description());
    println!("| backend | case | batch | sentences/s | peak RSS (MiB) |");
    println!("|---|---|---|---|---|");

    reset_peak_rss();
    let start = Instant::now();
    let mut encoder = SentenceEncoder::<Backend>::load(&args.model, &device)?;
    let load_s = start.elapsed().as_secs_f64();
    if let Some(w) = args.workers {
        encoder = encoder.with_workers(w);
    }
    println!(
        "| {NAME} | load model | - | {load_s:.3} s | {:.0} |",
        peak_rss_mib().unwrap_or(0.0)
    );
    encoder.encode(&sentences[..8])?; // warm-up

    for &batch in &args.batch_sizes {
        let n = if batch == 1 && args.batch1_sentences > 0 {
            args.batch1_sentences.min(sentences.len())
        } else {
            sentences.len()
        };
        let enc = encoder.clone().with_batch_size(batch);
        reset_peak_rss();
        let start = Instant::now();
        let out = enc.encode(&sentences[..n])?;
        let _ = out.into_data(); // wait for the backend
        let s = start.elapsed().as_secs_f64();
        row(
            &format!("encode ({n} sentences)"),
            batch,
            n as f64 / s,
            peak_rss_mib(),
        );
    }

    // Training: the trainer's step (encoder + mean pooling + heads with 3 and 2 classes, summed
    // cross-entropy, the batch cut into shards, each a thread's forward and backward, AdamW),
    // batches from a seeded shuffle of the corpus, pre-tokenized.
    let train_encoder = SentenceEncoder::<TrainBackend>::load(&args.model, &device)?;
    let options = HeadOptions {
        dropout: 0.0,
        ..HeadOptions::default()
    };
    let model = MultiTaskModel::new(train_encoder, seed_tasks(), options)?;
    let encoded: Vec<Encoded> = model.encoder.tokenize(&sentences)?;
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
        let (next, out) = step.step(trainable, &data, batch, k, 1.0);
        trainable = next;
        let _ = trainable.model.heads[0].out_proj.weight.val().into_data(); // wait for the backend
        let total = start.elapsed().as_secs_f64();
        if args.phases {
            let t = out.times;
            eprintln!(
                "fwd+bwd {:.3} add {:.3} optim {:.3}",
                t.forward_backward,
                t.add,
                total - t.forward_backward - t.add
            );
        }
        if k >= 3 {
            timed += total;
        }
    }
    row(
        &format!("multi-task training step (2 heads, AdamW, {shards} shards)"),
        b,
        (args.train_steps * b) as f64 / timed,
        peak_rss_mib(),
    );
    let _ = trainable.model.valid();
    Ok(())
}
