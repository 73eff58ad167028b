//! Predictions of a trained multi-task model directory.
//!
//! cargo run --release --example predict -- --model runs/uci/model "Great phone, terrible battery."

use std::path::PathBuf;

use clap::Parser;
use mtl::backend::{device, Backend};
use mtl::cli::{write_jsonl, SentenceArgs};
use mtl::model::MultiTaskModel;

#[derive(Parser)]
#[command(about = "Predict every task's label for each sentence with a trained model directory")]
struct Args {
    /// A directory written by `train` (or `MultiTaskModel::save`).
    #[arg(long)]
    model: PathBuf,
    /// Sentences in, JSON Lines {"text": ..., "<task>": {"label": ..., "probability": ...}} out.
    #[command(flatten)]
    io: SentenceArgs,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mtl::encoder::tune_allocator(); // reuse large tensors' memory (glibc)
    let args = Args::parse();
    let texts = args.io.texts()?;
    let mut model = MultiTaskModel::<Backend>::load(&args.model, &device())?;
    model.encoder = model.encoder.with_batch_size(args.io.batch_size);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let predictions = model.predict(&refs)?;
    match &args.io.output {
        Some(path) => {
            let lines = texts.iter().zip(&predictions).map(|(text, per_task)| {
                let mut line = serde_json::Map::new();
                line.insert("text".into(), serde_json::json!(text));
                for p in per_task {
                    let value = serde_json::json!({"label": p.label, "probability": p.probability});
                    line.insert(p.task.clone(), value);
                }
                serde_json::Value::Object(line)
            });
            let written = write_jsonl(path, lines)?;
            eprintln!("wrote {written} predictions to {}", path.display());
        }
        None => {
            for (text, per_task) in texts.iter().zip(&predictions) {
                let labels: Vec<String> = per_task
                    .iter()
                    .map(|p| format!("{}={} ({:.3})", p.task, p.label, p.probability))
                    .collect();
                println!("{text:?}: {}", labels.join(", "));
            }
        }
    }
    Ok(())
}
