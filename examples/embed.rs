//! Sentence embeddings from a Hugging Face / sentence-transformers BERT directory.
//!
//! cargo run --release --example embed -- --model models/all-MiniLM-L6-v2 "A sentence." "Another one."

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use mtl::backend::{device, Backend, NAME};
use mtl::encoder::{Pooling, SentenceEncoder};

#[derive(Parser)]
#[command(about = "Embed sentences with a BERT sentence encoder")]
struct Args {
    /// Model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// A file with one sentence per line (taken verbatim; an empty line is an empty sentence).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Write JSON Lines {"text", "embedding"} here, in input order.
    #[arg(long)]
    output: Option<PathBuf>,
    /// mean, cls or max (default: the model's pooling configuration).
    #[arg(long)]
    pooling: Option<Pooling>,
    /// Do not L2-normalise the embeddings.
    #[arg(long)]
    no_normalize: bool,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Sentences to embed (after those of --input).
    sentences: Vec<String>,
}

/// One line of `--output`.
#[derive(serde::Serialize)]
struct Line<'a> {
    text: &'a str,
    embedding: &'a [f32],
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mtl::encoder::tune_allocator(); // reuse large tensors' memory (glibc)
    let args = Args::parse();
    let texts = mtl::cli::read_sentences(args.input.as_deref(), &args.sentences)?;

    let start = Instant::now();
    let mut encoder =
        SentenceEncoder::<Backend>::load(&args.model, &device())?.with_batch_size(args.batch_size);
    if let Some(pooling) = args.pooling {
        encoder = encoder.with_pooling(pooling);
    }
    if args.no_normalize {
        encoder = encoder.with_normalize(false);
    }
    let loaded = start.elapsed();

    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let start = Instant::now();
    let embeddings = encoder.encode_vec(&refs)?;
    let took = start.elapsed().as_secs_f64();
    eprintln!(
        "[{NAME}] loaded in {:.3} s; embedded {} sentences in {took:.2} s ({:.1} sentences/s, batch {})",
        loaded.as_secs_f64(),
        texts.len(),
        texts.len() as f64 / took,
        args.batch_size
    );

    match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            for (text, embedding) in texts.iter().zip(&embeddings) {
                serde_json::to_writer(&mut out, &Line { text, embedding })?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            eprintln!(
                "wrote {} embeddings to {}",
                embeddings.len(),
                path.display()
            );
        }
        None => {
            for (text, embedding) in texts.iter().zip(&embeddings) {
                let head: Vec<String> = embedding
                    .iter()
                    .take(5)
                    .map(|v| format!("{v:.4}"))
                    .collect();
                println!("[{}] {text:?}: [{}, ...]", embedding.len(), head.join(", "));
            }
        }
    }
    Ok(())
}
