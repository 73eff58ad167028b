//! The peers `mtl bench --baselines PYTHON` runs in the same sitting, right after its own
//! cases: `pytorch_baseline.py` (PyTorch + sentence-transformers) and `ort_baseline.py` (ONNX
//! Runtime, what fastembed and text-embeddings-inference run on CPU), from
//! `../shared/bench/`, with one table of all three side by side.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::CliError;

/// What a case measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// Encoding the corpus.
    Encode,
    /// The multi-task training step.
    Train,
}

/// One measurement: a case at a batch size, in sentences per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub case: Case,
    pub batch: usize,
    pub per_s: f64,
    /// Peak resident set size during the case, where measured.
    pub rss_mib: Option<f64>,
}

/// How to run the peers.
pub struct Plan<'a> {
    /// The Python interpreter with the peers' packages installed.
    pub python: &'a Path,
    /// The folder holding the two scripts.
    pub scripts: &'a Path,
    pub model: &'a Path,
    pub corpus: &'a Path,
    pub batch_sizes: &'a [usize],
    pub batch1_sentences: usize,
    /// Repetitions per case (the scripts report medians).
    pub reps: usize,
    /// Also time PyTorch's training step (batch 32).
    pub train: bool,
}

/// The peers' measurements.
#[derive(Debug, Default)]
pub struct Peers {
    pub pytorch: Vec<Measured>,
    pub ort: Vec<Measured>,
}

/// Runs both scripts (ONNX Runtime first: it exports the model once into its cache).
pub fn run(plan: &Plan<'_>) -> Result<Peers, CliError> {
    let batches: Vec<String> = plan.batch_sizes.iter().map(|b| b.to_string()).collect();
    let ort_script = plan.scripts.join("ort_baseline.py");
    let ort_out = script(
        plan.python,
        &ort_script,
        &[
            "--model",
            &plan.model.display().to_string(),
            "--corpus",
            &plan.corpus.display().to_string(),
            "--batch-sizes",
            &batches.join(","),
            "--batch1-sentences",
            &plan.batch1_sentences.to_string(),
            "--reps",
            &plan.reps.to_string(),
        ],
        &[],
    )?;
    let mut cases: Vec<String> = plan
        .batch_sizes
        .iter()
        .filter(|b| [1, 32, 128].contains(*b))
        .map(|b| format!("st_encode_b{b}"))
        .collect();
    if plan.train {
        cases.push("minilm_train_b32".into());
    }
    let json = std::env::temp_dir().join(format!("mtl-pytorch-{}.json", std::process::id()));
    let torch_script = plan.scripts.join("pytorch_baseline.py");
    script(
        plan.python,
        &torch_script,
        &[
            "--cases",
            &cases.join(","),
            "--reps",
            &plan.reps.to_string(),
            "--out",
            &json.display().to_string(),
        ],
        &[("MTL_MODEL_DIR", plan.model)],
    )?;
    let text = std::fs::read_to_string(&json).map_err(|e| CliError::Input {
        path: json.clone(),
        message: format!("pytorch_baseline.py wrote no results: {e}"),
    })?;
    let _ = std::fs::remove_file(&json);
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| CliError::Input {
        path: json,
        message: format!("not JSON: {e}"),
    })?;
    Ok(Peers {
        pytorch: parse_pytorch(&value),
        ort: parse_ort(&ort_out),
    })
}

/// Runs `python script args` (stderr passed through), its standard output.
fn script(
    python: &Path,
    script: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
) -> Result<String, CliError> {
    let fail = |message: String| CliError::Input {
        path: script.to_path_buf(),
        message,
    };
    eprintln!("running {} ...", script.display());
    let mut command = Command::new(python);
    command.arg(script).args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| fail(format!("cannot run it with {}: {e}", python.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let tail: String = stdout.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(fail(format!("failed ({}): {tail}", out.status)));
    }
    Ok(stdout)
}

/// `onnxruntime fp32 encode batch B: X sentences/s` lines.
pub fn parse_ort(stdout: &str) -> Vec<Measured> {
    stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("onnxruntime fp32 encode batch ")?;
            let (batch, rest) = rest.split_once(": ")?;
            let per_s = rest.split_whitespace().next()?.parse().ok()?;
            Some(Measured {
                case: Case::Encode,
                batch: batch.parse().ok()?,
                per_s,
                rss_mib: None,
            })
        })
        .collect()
}

/// The `summary` rows of `pytorch_baseline.json`: `st_encode_bN` and `minilm_train_b32`.
pub fn parse_pytorch(results: &serde_json::Value) -> Vec<Measured> {
    let Some(rows) = results["summary"].as_array() else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|row| {
            let name = row["case"].as_str()?;
            let case = if name.starts_with("st_encode_b") {
                Case::Encode
            } else if name == "minilm_train_b32" {
                Case::Train
            } else {
                return None;
            };
            Some(Measured {
                case,
                batch: row["batch"].as_u64()? as usize,
                per_s: row["median_sentences_per_s"].as_f64()?,
                rss_mib: row["peak_rss_mib"].as_f64(),
            })
        })
        .collect()
}

/// The side-by-side table: each of `ours` with the peers' figure for the same case and batch,
/// and the ratios (ours / theirs).
pub fn print_table(ours: &[Measured], peers: &Peers) {
    let find = |list: &[Measured], m: &Measured| {
        list.iter()
            .find(|p| p.case == m.case && p.batch == m.batch)
            .cloned()
    };
    let cell = |theirs: Option<f64>, mine: f64| match theirs {
        Some(t) => format!("{t:.1} | {:.2}x", mine / t),
        None => "- | -".to_string(),
    };
    let rss = |mine: Option<f64>, theirs: Option<f64>| match (mine, theirs) {
        (Some(m), Some(t)) => format!("{m:.0} / {t:.0} ({:.2}x)", m / t),
        (Some(m), None) => format!("{m:.0} / -"),
        _ => "-".to_string(),
    };
    println!();
    println!("| case | batch | mtl sentences/s | PyTorch | mtl / PyTorch | ONNX Runtime fp32 | mtl / ONNX Runtime | peak RSS MiB, mtl / PyTorch |");
    println!("|---|---|---|---|---|---|---|---|");
    for m in ours {
        let case = match m.case {
            Case::Encode => "encode",
            Case::Train => "training step",
        };
        let pytorch = find(&peers.pytorch, m);
        println!(
            "| {case} | {} | {:.1} | {} | {} | {} |",
            m.batch,
            m.per_s,
            cell(pytorch.as_ref().map(|p| p.per_s), m.per_s),
            cell(find(&peers.ort, m).map(|p| p.per_s), m.per_s),
            rss(m.rss_mib, pytorch.and_then(|p| p.rss_mib)),
        );
    }
}

/// The folder of the peers' scripts: beside the corpus.
pub fn scripts_beside(corpus: &Path) -> PathBuf {
    corpus
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ort_lines_are_read_and_others_ignored() {
        let out = "onnxruntime fp32 encode batch 1: 93.0 sentences/s\n\
                   onnxruntime int8 encode batch 1: 150.2 sentences/s (cosine ...)\n\
                   onnxruntime fp32 encode batch 32: 123.4 sentences/s\nnoise\n";
        let got = parse_ort(out);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[1].case, got[1].batch, got[1].per_s),
            (Case::Encode, 32, 123.4)
        );
    }

    #[test]
    fn pytorch_summary_rows_are_read() {
        let json = serde_json::json!({"summary": [
            {"case": "st_encode_b32", "batch": 32, "median_sentences_per_s": 94.5,
             "peak_rss_mib": 812.5},
            {"case": "minilm_train_b32", "batch": 32, "median_sentences_per_s": 23.0},
            {"case": "bertbase_fwd_b32", "batch": 32, "median_sentences_per_s": 9.0},
        ]});
        let got = parse_pytorch(&json);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Measured {
                case: Case::Encode,
                batch: 32,
                per_s: 94.5,
                rss_mib: Some(812.5),
            }
        );
        assert_eq!((got[1].case, got[1].rss_mib), (Case::Train, None));
        assert!(parse_pytorch(&serde_json::json!({})).is_empty());
    }
}
