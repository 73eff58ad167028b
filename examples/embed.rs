//! Sentence embeddings from a Hugging Face / sentence-transformers BERT directory.
//!
//! cargo run --release --example embed -- --model models/all-MiniLM-L6-v2 "A sentence." "Another one."

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use mtl::backend::{device, Backend, NAME};
use mtl::cli::{write_jsonl, SentenceArgs};
use mtl::encoder::{Pooling, SentenceEncoder};

#[derive(Parser)]
#[command(about = "Embed sentences with a BERT sentence encoder")]
struct Args {
    /// Model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Sentences in, JSON Lines {"text", "embedding"} out.
    #[command(flatten)]
    io: SentenceArgs,
    /// mean, cls or max (default: the model's pooling configuration).
    #[arg(long)]
    pooling: Option<Pooling>,
    /// Do not L2-normalise the embeddings.
    #[arg(long)]
    no_normalize: bool,
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
    let texts = args.io.texts()?;

    let start = Instant::now();
    let mut encoder = SentenceEncoder::<Backend>::load(&args.model, &device())?
        .with_batch_size(args.io.batch_size);
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
        args.io.batch_size
    );

    match &args.io.output {
        Some(path) => {
            let lines = texts
                .iter()
                .zip(&embeddings)
                .map(|(text, embedding)| Line { text, embedding });
            let written = write_jsonl(path, lines)?;
            eprintln!("wrote {written} embeddings to {}", path.display());
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
