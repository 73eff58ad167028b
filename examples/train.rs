//! Multi-task fine-tuning of a shared encoder and its heads on labelled text.
//!
//! cargo run --release --example train -- --model models/all-MiniLM-L6-v2 \
//!     --train ../shared/data/uci-mtl/train.tsv --dev ../shared/data/uci-mtl/dev.tsv \
//!     --test ../shared/data/uci-mtl/test.tsv --out runs/uci

use std::path::PathBuf;

use clap::Parser;
use mtl::backend::{device, TrainBackend, NAME};
use mtl::encoder::{Pooling, SentenceEncoder};
use mtl::heads::HeadActivation;
use mtl::model::{FreezePolicy, HeadOptions, MultiTaskModel};
use mtl::train::{
    read_table, Dataset, EvalRecord, LossWeighting, OptimConfig, ReadOptions, RunOptions,
    SamplerKind, TrainConfig, TrainData, Trainer,
};

#[derive(Parser)]
#[command(about = "Train a multi-task model (shared encoder + one head per task)")]
struct Args {
    /// Encoder directory to start from.
    #[arg(long)]
    model: PathBuf,
    /// Training file(s): TSV, CSV, JSON Lines or TREC .label (repeatable: a task may have its own file).
    #[arg(long, required = true)]
    train: Vec<PathBuf>,
    /// Dev file(s): the best epoch by mean macro-F1 is kept.
    #[arg(long)]
    dev: Vec<PathBuf>,
    /// Test file(s), evaluated with the resulting model.
    #[arg(long)]
    test: Vec<PathBuf>,
    /// Output folder: model/, checkpoint/, metrics.jsonl, results.json.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Batches summed into one optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Base learning rate (top encoder layer).
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// Heads' learning rate (default: --lr).
    #[arg(long)]
    head_lr: Option<f64>,
    /// Layer-wise learning-rate decay factor (1 = none).
    #[arg(long, default_value_t = 1.0)]
    layer_decay: f64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.1)]
    warmup_ratio: f64,
    /// Global gradient-norm clipping (0: off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// proportional, round-robin, temperature or temperature:T.
    #[arg(long, default_value = "proportional")]
    sampler: SamplerKind,
    /// Batch sentences of similar length together (less padding).
    #[arg(long)]
    group_by_length: bool,
    /// Cut each batch into N pieces trained in parallel threads (default: one per core on CPU).
    /// Results depend on N, not on the cores.
    #[arg(long)]
    shards: Option<usize>,
    /// static, static:TASK=W,... or uncertainty.
    #[arg(long, default_value = "static")]
    loss_weighting: LossWeighting,
    /// none, encoder, embeddings, layers:K, head:NAME (comma-separated).
    #[arg(long, default_value = "none")]
    freeze: FreezePolicy,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Evaluate every N steps instead of every epoch.
    #[arg(long)]
    eval_every: Option<usize>,
    /// Early stopping after N evaluations without improvement.
    #[arg(long)]
    patience: Option<usize>,
    /// Also checkpoint every N steps.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Continue from <out>/checkpoint.
    #[arg(long)]
    resume: bool,
    /// Truncation length in tokens (default: the model's).
    #[arg(long)]
    max_seq_length: Option<usize>,
    /// Pooling of the heads' input (default: the model's).
    #[arg(long)]
    pooling: Option<Pooling>,
    /// L2-normalise the heads' input.
    #[arg(long)]
    normalize: bool,
    /// Heads' hidden width (default: half the embedding width).
    #[arg(long)]
    head_hidden: Option<usize>,
    #[arg(long, default_value_t = 0.1)]
    head_dropout: f64,
    /// relu, gelu or tanh.
    #[arg(long, default_value = "relu")]
    head_activation: HeadActivation,
    /// The text column (default: text, else sentence).
    #[arg(long)]
    text_column: Option<String>,
    /// Columns that are tasks (default: all but the text), comma-separated.
    #[arg(long, value_delimiter = ',')]
    tasks: Option<Vec<String>>,
    /// Rename a column: FROM=TO (repeatable).
    #[arg(long)]
    rename: Vec<String>,
    /// Files have no header; their columns are these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    columns: Option<Vec<String>>,
    /// A task's label set: TASK=L1,L2,... (repeatable; default: from the training data).
    #[arg(long)]
    labels: Vec<String>,
    /// Skip malformed rows (they are counted and reported) instead of failing.
    #[arg(long)]
    skip_bad_rows: bool,
    /// Stop after N optimizer steps, leaving a checkpoint to --resume from.
    #[arg(long, hide = true)]
    stop_after_steps: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn pair(s: &str, what: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        .ok_or_else(|| format!("{what} {s:?} is not A=B"))
}

fn print_record(rec: &EvalRecord) {
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>8}",
        format!("{} task", rec.split),
        "accuracy",
        "macro-F1",
        "MCC",
        "support"
    );
    for (task, m) in &rec.tasks {
        println!(
            "{task:<14} {:>9.4} {:>9.4} {:>9.4} {:>8}",
            m.accuracy, m.macro_f1, m.mcc, m.support
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mtl::encoder::tune_allocator(); // reuse large tensors' memory (glibc)
    let args = Args::parse();
    let rename = args
        .rename
        .iter()
        .map(|r| pair(r, "--rename"))
        .collect::<Result<Vec<_>, _>>()?;
    let options = ReadOptions {
        header: args.columns.is_none(),
        columns: args.columns.clone(),
        text_column: args.text_column.clone(),
        tasks: args.tasks.clone(),
        rename,
        skip_bad_rows: args.skip_bad_rows,
        ..ReadOptions::default()
    };
    let read = |paths: &[PathBuf]| -> Result<Vec<_>, mtl::train::TrainError> {
        paths.iter().map(|p| read_table(p, &options)).collect()
    };
    let given = args
        .labels
        .iter()
        .map(|l| {
            pair(l, "--labels")
                .map(|(t, ls)| (t, ls.split(',').map(|x| x.trim().to_string()).collect()))
        })
        .collect::<Result<Vec<(String, Vec<String>)>, _>>()?;
    let train_set = Dataset::from_train(&read(&args.train)?, &given)?;
    let with_tasks = |paths: &[PathBuf]| -> Result<Option<Dataset>, mtl::train::TrainError> {
        if paths.is_empty() {
            return Ok(None);
        }
        Dataset::with_tasks(&train_set.tasks, &read(paths)?, args.skip_bad_rows).map(Some)
    };
    let dev_set = with_tasks(&args.dev)?;
    let test_set = with_tasks(&args.test)?;
    for (name, set) in [
        ("train", Some(&train_set)),
        ("dev", dev_set.as_ref()),
        ("test", test_set.as_ref()),
    ] {
        if let Some(set) = set {
            let skipped = if set.skipped > 0 {
                format!(", {} rows skipped", set.skipped)
            } else {
                String::new()
            };
            eprintln!("{name}: {} rows{skipped}", set.examples.len());
        }
    }
    for (i, task) in train_set.tasks.iter().enumerate() {
        eprintln!(
            "task {}: {:?} (train counts {:?})",
            task.name,
            task.labels,
            train_set.label_counts(i)
        );
    }

    let device = device();
    let mut encoder = SentenceEncoder::<TrainBackend>::load(&args.model, &device)?;
    if let Some(n) = args.max_seq_length {
        encoder = encoder.with_max_seq_length(n)?;
    }
    if let Some(p) = args.pooling {
        encoder = encoder.with_pooling(p);
    }
    // The heads read the encoder's embeddings: normalised only with --normalize.
    encoder = encoder.with_normalize(args.normalize);
    let tasks = train_set.tasks.clone();
    let head = HeadOptions {
        hidden_size: args.head_hidden,
        dropout: args.head_dropout,
        activation: args.head_activation,
        seed: args.seed,
    };
    let model = MultiTaskModel::new(encoder, tasks, head)?;
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        optim: OptimConfig {
            lr: args.lr,
            head_lr: args.head_lr,
            layer_decay: args.layer_decay,
            weight_decay: args.weight_decay,
            max_grad_norm: (args.max_grad_norm > 0.0).then_some(args.max_grad_norm),
            ..OptimConfig::default()
        },
        warmup_ratio: args.warmup_ratio,
        sampler: args.sampler,
        group_by_length: args.group_by_length,
        loss_weighting: args.loss_weighting.clone(),
        freeze: args.freeze.clone(),
        seed: args.seed,
        eval_every: args.eval_every,
        patience: args.patience,
        checkpoint_every: args.checkpoint_every,
        shards: args.shards,
        ..TrainConfig::default()
    };
    let run = RunOptions {
        resume: args.resume,
        progress: !args.quiet,
        stop_after_steps: args.stop_after_steps,
    };
    let data = TrainData {
        train: &train_set,
        dev: dev_set.as_ref(),
        test: test_set.as_ref(),
    };
    let started = std::time::Instant::now();
    let (_, report) = Trainer::new(config, &args.out, run).fit(model, data)?;
    let wall = started.elapsed().as_secs_f64();
    eprintln!(
        "[{NAME}] {} steps in {wall:.1} s wall ({:.1} s in training steps, {:.1} sentences/s){}",
        report.steps,
        report.train_seconds,
        report.sentences_per_second,
        if report.finished {
            ""
        } else {
            "; stopped early, --resume continues"
        }
    );
    if let Some(best) = &report.best {
        println!(
            "best dev: epoch {} step {} (mean macro-F1 {:.4})",
            best.epoch, best.step, best.mean_macro_f1
        );
        print_record(best);
    }
    if let Some(test) = &report.test {
        print_record(test);
    }
    println!("model: {}", report.model_dir.display());
    Ok(())
}
