//! Multi-task fine-tuning with the library: read the UCI files, build a two-task model on the
//! encoder, train it with the `Trainer`, and use the trained model in memory.
//!
//! cargo run --release --example train -- models/all-MiniLM-L6-v2 ../shared/data/uci-mtl runs/example
//! (The `mtl train` command exposes every setting as a flag.)

use std::path::Path;

use mtl::backend::{device, TrainBackend};
use mtl::encoder::SentenceEncoder;
use mtl::model::{HeadOptions, MultiTaskModel};
use mtl::train::{read_table, Dataset, ReadOptions, RunOptions, TrainConfig, TrainData, Trainer};

fn main() -> Result<(), mtl::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let (model_dir, data_dir) = (
        arg(0, "models/all-MiniLM-L6-v2"),
        arg(1, "../shared/data/uci-mtl"),
    );
    let out = arg(2, "runs/example");
    let read = |f: &str| read_table(&Path::new(&data_dir).join(f), &ReadOptions::default());

    // Tasks and labels come from the training file's columns (`domain`, `sentiment`).
    let train = Dataset::from_train(&[read("train.tsv")?], &[])?;
    let dev = Dataset::with_tasks(&train.tasks, &[read("dev.tsv")?], false)?;
    let test = Dataset::with_tasks(&train.tasks, &[read("test.tsv")?], false)?;

    let encoder = SentenceEncoder::<TrainBackend>::load(&model_dir, &device())?;
    let model = MultiTaskModel::new(
        encoder.with_normalize(false),
        train.tasks.clone(),
        HeadOptions::default(),
    )?;
    let config = TrainConfig {
        epochs: 1,
        ..TrainConfig::default()
    };
    let options = RunOptions {
        progress: true,
        ..RunOptions::default()
    };
    let data = TrainData {
        train: &train,
        dev: Some(&dev),
        test: Some(&test),
    };
    let (model, report) = Trainer::new(config, &out, options).fit(model, data)?;
    if let Some(test) = &report.test {
        for (task, m) in &test.tasks {
            println!(
                "test {task}: accuracy {:.3}, macro-F1 {:.3}",
                m.accuracy, m.macro_f1
            );
        }
    }
    for p in &model.predict(&["Great phone, terrible battery."])?[0] {
        println!("{}: {} ({:.2})", p.task, p.label, p.probability);
    }
    println!("saved to {}", report.model_dir.display());
    Ok(())
}
