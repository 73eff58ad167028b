//! `mtl embed`: sentence embeddings on the terminal or as JSON Lines.

use std::time::Instant;

use crate::backend::{device, Backend, NAME};
use mtl_encoder::{Pooling, SentenceEncoder};

use super::args::{write_jsonl, SentenceArgs};
use super::error::CliError;

/// Embed sentences with a BERT sentence encoder.
#[derive(clap::Args)]
pub struct Args {
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

pub fn run(args: Args) -> Result<(), CliError> {
    let texts = args.io.texts()?;
    let (dir, _) = args.io.model.resolve()?;
    let start = Instant::now();
    let mut encoder =
        SentenceEncoder::<Backend>::load(&dir, &device())?.with_batch_size(args.io.batch_size);
    if let Some(pooling) = args.pooling {
        encoder = encoder.with_pooling(pooling);
    }
    if args.no_normalize {
        encoder = encoder.with_normalize(false);
    }
    let loaded = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let embeddings = args
        .io
        .map_chunks(&texts, |chunk| encoder.encode_vec(chunk))?;
    let took = start.elapsed().as_secs_f64();
    eprintln!(
        "[{NAME}] loaded in {loaded:.3} s; embedded {} sentences in {took:.2} s ({:.1} sentences/s, batch {})",
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
