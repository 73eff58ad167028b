//! `mtl predict`: every task's label and probability for each sentence.

use crate::backend::{device, Backend};
use mtl_model::MultiTaskModel;

use super::args::{write_jsonl, SentenceArgs};
use super::error::CliError;

/// Predict every task's label for each sentence with a trained model directory.
#[derive(clap::Args)]
pub struct Args {
    /// Sentences in, JSON Lines {"text": ..., "<task>": {"label", "probability", "probabilities"}} out.
    #[command(flatten)]
    io: SentenceArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let texts = args.io.texts()?;
    let (dir, _) = args.io.model.resolve()?;
    let mut model = MultiTaskModel::<Backend>::load(&dir, &device())?;
    model.encoder = model.encoder.with_batch_size(args.io.batch_size);
    let predictions = args.io.map_chunks(&texts, |chunk| model.predict(chunk))?;
    match &args.io.output {
        Some(path) => {
            let lines = texts.iter().zip(&predictions).map(|(text, per_task)| {
                let mut line = serde_json::Map::new();
                line.insert("text".into(), serde_json::json!(text));
                // Predictions come in task order.
                for (task, p) in model.tasks().iter().zip(per_task) {
                    let distribution: serde_json::Map<String, serde_json::Value> = task
                        .labels
                        .iter()
                        .zip(&p.probabilities)
                        .map(|(l, &v)| (l.clone(), serde_json::json!(v)))
                        .collect();
                    let value = serde_json::json!({
                        "label": p.label, "probability": p.probability, "probabilities": distribution
                    });
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
