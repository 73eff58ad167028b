//! `mtl eval`: per-task accuracy, macro-F1, MCC and confusion matrix of a trained model on a
//! labelled file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::backend::{device, Backend};
use mtl_model::MultiTaskModel;
use mtl_train::{evaluate, ConfusionMatrix, Dataset, TaskMetrics};
use serde_json::json;

use super::args::{print_metrics, progress, write_json, DataArgs};
use super::error::CliError;
use super::model_ref;

/// Score a trained model directory on labelled data.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: model_ref::ModelArg,
    /// Labelled file(s): TSV, CSV, JSON Lines or TREC .label, with the model's task columns.
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    #[command(flatten)]
    read: DataArgs,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Write the metrics (with confusion matrices) as JSON here.
    #[arg(long)]
    output: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Rows per progress update.
const CHUNK: usize = 512;

pub fn run(args: Args) -> Result<(), CliError> {
    let (dir, name) = args.model.resolve()?;
    let model = MultiTaskModel::<Backend>::load(&dir, &device())?;
    let tables = args.read.read(&args.data)?;
    let data = Dataset::with_tasks(model.tasks(), &tables, args.read.skip_bad_rows)?;
    let mut matrices: Vec<ConfusionMatrix> = model
        .tasks()
        .iter()
        .map(|t| ConfusionMatrix::new(t.num_classes()))
        .collect();
    let bar = progress(data.examples.len(), args.quiet, "rows");
    for chunk in data.examples.chunks(CHUNK) {
        let part = Dataset {
            tasks: data.tasks.clone(),
            examples: chunk.to_vec(),
            skipped: 0,
        };
        let texts: Vec<&str> = chunk.iter().map(|e| e.text.as_str()).collect();
        let encoded = model.encoder.tokenize(&texts)?;
        for (total, metrics) in
            matrices
                .iter_mut()
                .zip(evaluate(&model, &part, &encoded, None, args.batch_size)?)
        {
            for (row, counts) in total.counts.iter_mut().zip(&metrics.confusion) {
                row.iter_mut().zip(counts).for_each(|(t, c)| *t += c);
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let tasks: BTreeMap<String, TaskMetrics> = model
        .tasks()
        .iter()
        .zip(&matrices)
        .filter(|(_, m)| m.total() > 0)
        .map(|(t, m)| (t.name.clone(), TaskMetrics::from(m)))
        .collect();
    if tasks.is_empty() {
        return Err(CliError::Input {
            path: args.data[0].clone(),
            message: "no row is labelled for any of the model's tasks".into(),
        });
    }
    let skipped = match data.skipped {
        0 => String::new(),
        n => format!(", {n} rows skipped"),
    };
    eprintln!("{} rows{skipped}", data.examples.len());
    print_metrics("task", &tasks);
    for task in model.tasks() {
        if let Some(m) = tasks.get(&task.name) {
            println!(
                "\n{} confusion (rows: truth, columns: predicted; {})",
                task.name,
                task.labels.join(", ")
            );
            for (label, row) in task.labels.iter().zip(&m.confusion) {
                let cells: Vec<String> = row.iter().map(|c| format!("{c:>6}")).collect();
                println!("{label:>14} {}", cells.join(""));
            }
        }
    }
    if let Some(path) = &args.output {
        let files: Vec<String> = args.data.iter().map(|p| p.display().to_string()).collect();
        let labels: BTreeMap<&str, &[String]> = model
            .tasks()
            .iter()
            .map(|t| (t.name.as_str(), t.labels.as_slice()))
            .collect();
        let value = json!({
            "model": name, "data": files, "rows": data.examples.len(), "skipped": data.skipped,
            "labels": labels, "tasks": tasks,
        });
        write_json(path, &value)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
