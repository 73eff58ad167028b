//! `mtl train`: multi-task fine-tuning of a shared encoder and its heads.

use std::path::PathBuf;

use crate::backend::{device, devices, TrainBackend, NAME};
use mtl_encoder::{Pooling, SentenceEncoder};
use mtl_heads::HeadActivation;
use mtl_model::{FreezePolicy, HeadOptions, MultiTaskModel};
use mtl_train::{
    Dataset, Keep, LossWeighting, NodeSetup, OptimConfig, PeerGroup, RunOptions, SamplerKind,
    TrainConfig, TrainData, TrainReport, Trainer,
};

use super::args::{pair, print_metrics, write_json, DataArgs};
use super::error::CliError;
use super::model_ref;
use super::seeds;

/// Train a multi-task model (shared encoder + one head per task).
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: model_ref::ModelArg,
    /// Training file(s): TSV, CSV, JSON Lines or TREC .label (repeatable: a task may have its own file).
    #[arg(long, required = true)]
    train: Vec<PathBuf>,
    /// Dev file(s), evaluated after every epoch (or --eval-every steps).
    #[arg(long)]
    dev: Vec<PathBuf>,
    /// Test file(s), evaluated with the resulting model.
    #[arg(long)]
    test: Vec<PathBuf>,
    /// Output folder: model/, checkpoint/, metrics.jsonl, results.json.
    #[arg(long)]
    out: PathBuf,
    /// Passes over the training data. The defaults are the recipe measured best on UCI: 5
    /// epochs, --lr 1e-4 with --layer-decay 0.85, --head-lr 5e-4, --label-smoothing 0.1,
    /// length grouping, the last model kept.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Batches summed into one optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Base learning rate (top encoder layer).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// Heads' learning rate.
    #[arg(long, default_value_t = 5e-4)]
    head_lr: f64,
    /// Layer-wise learning-rate decay factor: each encoder layer below the top trains at this
    /// times the rate of the one above, the embeddings once more (1 = none).
    #[arg(long, default_value_t = 0.85)]
    layer_decay: f64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    #[arg(long, default_value_t = 0.1)]
    warmup_ratio: f64,
    /// Global gradient-norm clipping (0: off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Evaluate and keep an exponential moving average of the weights, with this decay per
    /// optimizer step (e.g. 0.99; warmed up over the first steps as min(D, (1+t)/(10+t))).
    #[arg(long, value_name = "D")]
    ema: Option<f64>,
    /// proportional, round-robin, temperature or temperature:T.
    #[arg(long, default_value = "proportional")]
    sampler: SamplerKind,
    /// Draw batches at random instead of grouping sentences of similar length (grouping, the
    /// default, pads less).
    #[arg(long)]
    no_group_by_length: bool,
    /// Cut each batch into N pieces trained in parallel threads (default: one per core on CPU).
    /// Results depend on N, not on the cores.
    #[arg(long)]
    shards: Option<usize>,
    /// Label smoothing of every task's cross-entropy (0: none).
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f64,
    /// static, static:TASK=W,... or uncertainty.
    #[arg(long, default_value = "static")]
    loss_weighting: LossWeighting,
    /// none, encoder, embeddings, layers:K, head:NAME (comma-separated).
    #[arg(long, default_value = "none")]
    freeze: FreezePolicy,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Run the recipe once per seed (comma-separated), each into <out>/seed-<S>/; per-seed
    /// metrics and their mean and standard deviation go to the terminal and <out>/results.json.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["seed", "resume"])]
    seeds: Option<Vec<u64>>,
    /// Evaluate every N steps instead of every epoch.
    #[arg(long)]
    eval_every: Option<usize>,
    /// The model the run ends with: `last` (measured better on UCI than picking by a small dev
    /// set) or `best` (the best dev evaluation by mean macro-F1).
    #[arg(long, default_value = "last")]
    keep: Keep,
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
    #[command(flatten)]
    data: DataArgs,
    /// A task's label set: TASK=L1,L2,... (repeatable; default: from the training data).
    #[arg(long)]
    labels: Vec<String>,
    /// Stop after N optimizer steps, leaving a checkpoint to --resume from.
    #[arg(long, hide = true)]
    stop_after_steps: Option<usize>,
    #[command(flatten)]
    peers: PeerArgs,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Data-parallel training over several devices and machines (burn-collective).
#[derive(clap::Args)]
struct PeerArgs {
    /// Peers on this node, each training a copy of the model on its slice of every batch:
    /// CUDA devices 0..N, or on a CPU backend N peers sharing the cores. Results do not depend
    /// on N (beyond float summation order) for a given --shards.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Nodes (machines) in the run; start every node with the same flags and its own
    /// --node-rank, and the orchestrator with `mtl orchestrator`.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// This node's rank, 0..N; rank 0 evaluates and writes the files.
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// The orchestrator the nodes meet at, HOST:PORT.
    #[arg(long)]
    orchestrator: Option<String>,
    /// This node's address as the other nodes reach it.
    #[arg(long, default_value = "127.0.0.1")]
    node_host: String,
    /// Port of this node's tensor data service (default: the orchestrator's port + 1 + the
    /// node's rank).
    #[arg(long)]
    data_port: Option<u16>,
    /// Seconds a peer waits for the others at each collective call before stopping with an
    /// error naming whom it waited for.
    #[arg(long, default_value_t = 60.0)]
    collective_timeout: f64,
}

impl PeerArgs {
    /// The peer group, unless the run is one peer on one node.
    fn group(&self) -> Result<Option<PeerGroup>, CliError> {
        if self.devices == 0 {
            return Err(CliError::usage("--devices", "must be at least 1"));
        }
        if self.collective_timeout.is_nan() || self.collective_timeout <= 0.0 {
            return Err(CliError::usage("--collective-timeout", "must be positive"));
        }
        let timeout = std::time::Duration::from_secs_f64(self.collective_timeout);
        let group = PeerGroup::new(self.devices).with_timeout(timeout);
        if self.nodes <= 1 {
            return Ok((self.devices > 1).then_some(group));
        }
        let orchestrator = self
            .orchestrator
            .clone()
            .ok_or_else(|| CliError::usage("--orchestrator", "is needed with --nodes"))?;
        let port = orchestrator
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .ok_or_else(|| CliError::usage("--orchestrator", "expected HOST:PORT"))?;
        let data_port = match self.data_port {
            Some(p) => p,
            None => u16::try_from(usize::from(port) + 1 + self.node_rank).map_err(|_| {
                CliError::usage("--data-port", "the default is past 65535; give one")
            })?,
        };
        let node = NodeSetup {
            nodes: self.nodes,
            rank: self.node_rank,
            orchestrator,
            host: self.node_host.clone(),
            data_port,
        };
        Ok(Some(group.with_nodes(node)?))
    }
}

impl Args {
    fn config(&self, seed: u64) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            optim: OptimConfig {
                lr: self.lr,
                head_lr: Some(self.head_lr),
                layer_decay: self.layer_decay,
                weight_decay: self.weight_decay,
                max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
                ema_decay: self.ema,
                ..OptimConfig::default()
            },
            warmup_ratio: self.warmup_ratio,
            sampler: self.sampler,
            group_by_length: !self.no_group_by_length,
            loss_weighting: self.loss_weighting.clone(),
            label_smoothing: self.label_smoothing,
            freeze: self.freeze.clone(),
            seed,
            eval_every: self.eval_every,
            patience: self.patience,
            keep: self.keep,
            checkpoint_every: self.checkpoint_every,
            shards: self.shards,
            ..TrainConfig::default()
        }
    }
}

/// The datasets: train (tasks and labels from it and `--labels`), dev and test.
fn datasets(args: &Args) -> Result<(Dataset, Option<Dataset>, Option<Dataset>), CliError> {
    let given = args
        .labels
        .iter()
        .map(|l| {
            pair(l, "--labels")
                .map(|(t, ls)| (t, ls.split(',').map(|x| x.trim().to_string()).collect()))
        })
        .collect::<Result<Vec<(String, Vec<String>)>, _>>()?;
    let train = Dataset::from_train(&args.data.read(&args.train)?, &given)?;
    let with_tasks = |paths: &[PathBuf]| -> Result<Option<Dataset>, CliError> {
        if paths.is_empty() {
            return Ok(None);
        }
        let tables = args.data.read(paths)?;
        Ok(Some(Dataset::with_tasks(
            &train.tasks,
            &tables,
            args.data.skip_bad_rows,
        )?))
    };
    let (dev, test) = (with_tasks(&args.dev)?, with_tasks(&args.test)?);
    for (name, set) in [
        ("train", Some(&train)),
        ("dev", dev.as_ref()),
        ("test", test.as_ref()),
    ] {
        if let Some(set) = set {
            let skipped = match set.skipped {
                0 => String::new(),
                n => format!(", {n} rows skipped"),
            };
            eprintln!("{name}: {} rows{skipped}", set.examples.len());
        }
    }
    for (i, task) in train.tasks.iter().enumerate() {
        let counts = train.label_counts(i);
        eprintln!(
            "task {}: {:?} (train counts {counts:?})",
            task.name, task.labels
        );
    }
    Ok((train, dev, test))
}

pub fn run(args: Args) -> Result<(), CliError> {
    let group = args.peers.group()?;
    let (train, dev, test) = datasets(&args)?;
    let data = TrainData {
        train: &train,
        dev: dev.as_ref(),
        test: test.as_ref(),
    };
    let (dir, name) = args.model.resolve()?;
    let base = Base { dir, name };
    if args.seeds.is_some() && args.peers.nodes > 1 {
        return Err(CliError::usage("--seeds", "runs on one node only"));
    }
    let Some(seeds) = args.seeds.clone() else {
        let report = fit(&args, &base, args.seed, &args.out, data, group.as_ref())?;
        if args.peers.node_rank > 0 {
            println!(
                "rank {}: done; node 0 wrote the results",
                args.peers.node_rank * args.peers.devices
            );
            return Ok(());
        }
        if let Some(dev) = &report.dev {
            println!(
                "dev ({} model): epoch {} step {} (mean macro-F1 {:.4})",
                match args.keep {
                    Keep::Best => "best",
                    Keep::Last => "last",
                },
                dev.epoch,
                dev.step,
                dev.mean_macro_f1
            );
            print_metrics(&format!("{} task", dev.split), &dev.tasks);
        }
        if let Some(test) = &report.test {
            print_metrics(&format!("{} task", test.split), &test.tasks);
        }
        println!("model: {}", report.model_dir.display());
        return Ok(());
    };
    let mut runs = Vec::with_capacity(seeds.len());
    for &seed in &seeds {
        eprintln!("seed {seed}:");
        let report = fit(
            &args,
            &base,
            seed,
            &args.out.join(format!("seed-{seed}")),
            data,
            group.as_ref(),
        )?;
        let record = report.test.or(report.dev).ok_or_else(|| {
            CliError::usage("--seeds", "needs --dev or --test data to score the runs")
        })?;
        runs.push((seed, record));
    }
    let summary = seeds::summarize(&runs);
    seeds::print(&summary);
    write_json(&args.out.join("results.json"), &summary)?;
    println!("results: {}", args.out.join("results.json").display());
    Ok(())
}

/// The model to start from, as `--model` resolved: its directory and the name to record.
struct Base {
    dir: PathBuf,
    name: String,
}

/// One run of the recipe with `seed` (heads' initial weights, sampling, dropout) into `out`.
fn fit(
    args: &Args,
    base: &Base,
    seed: u64,
    out: &std::path::Path,
    data: TrainData<'_>,
    group: Option<&PeerGroup>,
) -> Result<TrainReport, CliError> {
    let (dir, name) = (&base.dir, base.name.clone());
    let mut encoder = SentenceEncoder::<TrainBackend>::load(dir, &device())?;
    if let Some(n) = args.max_seq_length {
        encoder = encoder.with_max_seq_length(n)?;
    }
    if let Some(p) = args.pooling {
        encoder = encoder.with_pooling(p);
    }
    // The heads read the encoder's embeddings: normalised only with --normalize.
    encoder = encoder.with_normalize(args.normalize);
    let head = HeadOptions {
        hidden_size: args.head_hidden,
        dropout: args.head_dropout,
        activation: args.head_activation,
        seed,
    };
    let model = MultiTaskModel::new(encoder, data.train.tasks.clone(), head)?;
    let options = RunOptions {
        resume: args.resume,
        progress: !args.quiet,
        stop_after_steps: args.stop_after_steps,
        base_model: Some(name),
    };
    let started = std::time::Instant::now();
    let trainer = Trainer::new(args.config(seed), out, options);
    let (_, report) = match group {
        Some(group) => trainer.fit_peers(model, data, &devices(group.devices()), group)?,
        None => trainer.fit(model, data)?,
    };
    let stopped = if report.finished {
        ""
    } else {
        "; stopped early, --resume continues"
    };
    let reduce = match group {
        Some(_) => format!(
            ", {:.1} s of them in all-reduces",
            report.all_reduce_seconds
        ),
        None => String::new(),
    };
    eprintln!(
        "[{NAME}] {} steps in {:.1} s wall ({:.1} s in training steps{reduce}, {:.1} sentences/s){stopped}",
        report.steps,
        started.elapsed().as_secs_f64(),
        report.train_seconds,
        report.sentences_per_second,
    );
    Ok(report)
}
