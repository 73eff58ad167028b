//! `mtl train --seeds`: per-seed metrics and their mean and standard deviation.

use std::collections::BTreeMap;

use mtl_train::EvalRecord;
use serde_json::{json, Value};

/// The metrics summarised.
const METRICS: [&str; 3] = ["accuracy", "macro_f1", "mcc"];

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

fn metric(record: &EvalRecord, task: &str, name: &str) -> f64 {
    let m = &record.tasks[task];
    match name {
        "accuracy" => m.accuracy,
        "macro_f1" => m.macro_f1,
        _ => m.mcc,
    }
}

/// `{"split", "seeds", "runs": [{"seed", "tasks"}], "tasks": {task: {metric: {"mean", "std",
/// "values"}}}}` over the runs (seed, its test or else kept dev record).
pub fn summarize(runs: &[(u64, EvalRecord)]) -> Value {
    let first = &runs[0].1;
    let mut tasks = BTreeMap::new();
    for task in first.tasks.keys() {
        let mut per_metric = serde_json::Map::new();
        for name in METRICS {
            let values: Vec<f64> = runs.iter().map(|(_, r)| metric(r, task, name)).collect();
            let (mean, std) = mean_std(&values);
            per_metric.insert(
                name.into(),
                json!({"mean": mean, "std": std, "values": values}),
            );
        }
        tasks.insert(task.clone(), Value::Object(per_metric));
    }
    let per_run: Vec<Value> = runs
        .iter()
        .map(|(seed, r)| {
            let t: BTreeMap<&String, Value> = r
                .tasks
                .iter()
                .map(|(k, m)| {
                    (
                        k,
                        json!({"accuracy": m.accuracy, "macro_f1": m.macro_f1, "mcc": m.mcc}),
                    )
                })
                .collect();
            json!({"seed": seed, "tasks": t})
        })
        .collect();
    let seeds: Vec<u64> = runs.iter().map(|(s, _)| *s).collect();
    json!({"split": first.split, "seeds": seeds, "runs": per_run, "tasks": tasks})
}

/// The summary as a table: per task and metric, each seed's value, then mean ± std.
pub fn print(summary: &Value) {
    let seeds: Vec<String> = summary["seeds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| format!("seed {s}"))
        .collect();
    println!(
        "{} ({})",
        summary["split"].as_str().unwrap_or("?"),
        seeds.join(", ")
    );
    for (task, metrics) in summary["tasks"].as_object().into_iter().flatten() {
        for name in METRICS {
            let m = &metrics[name];
            let values: Vec<String> = m["values"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| format!("{:.4}", v.as_f64().unwrap_or(f64::NAN)))
                .collect();
            println!(
                "{task:<12} {name:<9} {}   mean {:.4} ± {:.4}",
                values.join(" "),
                m["mean"].as_f64().unwrap_or(f64::NAN),
                m["std"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_standard_deviation() {
        let (mean, std) = mean_std(&[0.9, 0.92, 0.94]);
        assert!((mean - 0.92).abs() < 1e-12);
        assert!((std - 0.02).abs() < 1e-12);
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
    }
}
