//! The multi-task model on a real encoder: shared embeddings and per-task logits.
//!
//! cargo run --release --example multitask -- --model models/all-MiniLM-L6-v2

use std::path::PathBuf;

use clap::Parser;
use mtl::backend::{device, Backend};
use mtl::encoder::SentenceEncoder;
use mtl::model::{seed_tasks, HeadOptions, MultiTaskModel, TaskSpec};

#[derive(Parser)]
#[command(about = "Run a shared encoder with one classification head per task")]
struct Args {
    /// Encoder directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// A task as NAME=LABEL,LABEL,... (repeatable; default: classification (3) and sentiment (2)).
    #[arg(long = "task")]
    tasks: Vec<String>,
    /// Seed of the heads' initial weights.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Sentences (default: the two seed sentences).
    sentences: Vec<String>,
}

fn row(values: &[f32]) -> String {
    let shown: Vec<String> = values.iter().map(|v| format!("{v:+.4}")).collect();
    format!("[{}]", shown.join(", "))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mtl::encoder::tune_allocator(); // reuse large tensors' memory (glibc)
    let args = Args::parse();
    let tasks = if args.tasks.is_empty() {
        seed_tasks()
    } else {
        args.tasks
            .iter()
            .map(|t| TaskSpec::parse(t))
            .collect::<Result<_, _>>()?
    };
    let sentences = if args.sentences.is_empty() {
        vec![
            "The quick brown fox jumps over the lazy dog.".to_string(),
            "Transformers have revolutionized natural language processing.".to_string(),
        ]
    } else {
        args.sentences
    };
    let encoder = SentenceEncoder::<Backend>::load(&args.model, &device())?;
    let options = HeadOptions {
        seed: args.seed,
        ..HeadOptions::default()
    };
    let model = MultiTaskModel::new(encoder, tasks, options)?;
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let out = model.forward_sentences(&refs)?;

    let [n, dim] = out.embeddings.dims();
    let embeddings = out
        .embeddings
        .clone()
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()?;
    println!("embeddings: shape [{n}, {dim}]");
    for (text, e) in sentences.iter().zip(embeddings.chunks(dim)) {
        println!("  {text:?}: {} ...", row(&e[..5.min(dim)]));
    }
    for (task, logits) in model.tasks().iter().zip(&out.logits) {
        let [rows, classes] = logits.dims();
        let values = logits
            .clone()
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()?;
        println!(
            "{} logits: shape [{rows}, {classes}] (labels: {})",
            task.name,
            task.labels.join(", ")
        );
        for (text, l) in sentences.iter().zip(values.chunks(classes)) {
            println!("  {text:?}: {}", row(l));
        }
    }
    Ok(())
}
