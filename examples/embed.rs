//! Sentence embeddings with the library: load a sentence-transformers folder, encode, compare.
//!
//! cargo run --release --example embed -- models/all-MiniLM-L6-v2 "A sentence." "Another one."
//! (The `mtl embed` command does the same with files, pooling choices and JSON Lines output.)

use mtl::backend::{device, Backend};
use mtl::encoder::SentenceEncoder;

fn main() -> Result<(), mtl::Error> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "models/all-MiniLM-L6-v2".into());
    let mut sentences: Vec<String> = args.collect();
    if sentences.is_empty() {
        sentences = vec![
            "The cat sits on the mat.".into(),
            "A cat is sitting on a rug.".into(),
        ];
    }
    let encoder = SentenceEncoder::<Backend>::load(&dir, &device())?;
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    // Rows in input order; L2-normalised when the folder has sentence-transformers' Normalize.
    let embeddings = encoder.encode_vec(&texts)?;
    for (text, e) in texts.iter().zip(&embeddings) {
        println!(
            "{text:?}: [{:+.4}, {:+.4}, {:+.4}, ...] ({} values)",
            e[0],
            e[1],
            e[2],
            e.len()
        );
    }
    if let [a, b, ..] = embeddings.as_slice() {
        let cosine: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        println!("cosine similarity of the first two: {cosine:.4}");
    }
    Ok(())
}
