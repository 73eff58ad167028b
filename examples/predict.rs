//! Predictions of a trained multi-task model directory.
//!
//! cargo run --release --example predict -- --model runs/uci/model "Great phone, terrible battery."

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use mtl::backend::{device, Backend};
use mtl::model::MultiTaskModel;

#[derive(Parser)]
#[command(about = "Predict every task's label for each sentence with a trained model directory")]
struct Args {
    /// A directory written by `train` (or `MultiTaskModel::save`).
    #[arg(long)]
    model: PathBuf,
    /// A file with one sentence per line.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Write JSON Lines here: {"text": ..., "<task>": {"label": ..., "probability": ...}, ...}.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Sentences to classify (after those of --input).
    sentences: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mtl::encoder::tune_allocator(); // reuse large tensors' memory (glibc)
    let args = Args::parse();
    let texts = mtl::cli::read_sentences(args.input.as_deref(), &args.sentences)?;
    let mut model = MultiTaskModel::<Backend>::load(&args.model, &device())?;
    model.encoder = model.encoder.with_batch_size(args.batch_size);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let predictions = model.predict(&refs)?;
    match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            for (text, per_task) in texts.iter().zip(&predictions) {
                let mut line = serde_json::Map::new();
                line.insert("text".into(), serde_json::json!(text));
                for p in per_task {
                    line.insert(
                        p.task.clone(),
                        serde_json::json!({"label": p.label, "probability": p.probability}),
                    );
                }
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            eprintln!(
                "wrote {} predictions to {}",
                predictions.len(),
                path.display()
            );
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
