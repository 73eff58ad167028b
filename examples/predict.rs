//! Predictions of a trained multi-task model directory, with the library.
//!
//! cargo run --release --example predict -- runs/uci/model "Great phone, terrible battery."
//! (The `mtl predict` command does the same with files and JSON Lines output.)

use mtl::backend::{device, Backend};
use mtl::model::MultiTaskModel;

fn main() -> Result<(), mtl::Error> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "runs/uci/model".into());
    let sentences: Vec<String> = args.collect();
    let model = MultiTaskModel::<Backend>::load(&dir, &device())?;
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    // Per sentence, per task: the argmax label, its probability and the whole distribution.
    for (text, per_task) in texts.iter().zip(model.predict(&texts)?) {
        println!("{text:?}");
        // Predictions come in task order.
        for (task, p) in model.tasks().iter().zip(per_task) {
            let labels = &task.labels;
            let dist: Vec<String> = labels
                .iter()
                .zip(&p.probabilities)
                .map(|(l, v)| format!("{l} {v:.3}"))
                .collect();
            println!(
                "  {}: {} ({:.3}) [{}]",
                p.task,
                p.label,
                p.probability,
                dist.join(", ")
            );
        }
    }
    Ok(())
}
