//! Encode throughput at a few batch sizes, with the library (the full benchmark, with training
//! and serving, is `mtl bench`).
//!
//! cargo run --release --example bench -- models/all-MiniLM-L6-v2 ../shared/bench/corpus.txt

use std::time::Instant;

use mtl::backend::{device, Backend, NAME};
use mtl::encoder::SentenceEncoder;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    mtl::encoder::tune_allocator(); // reuse large tensors' memory (glibc)
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args
        .first()
        .map_or("models/all-MiniLM-L6-v2", String::as_str);
    let corpus_path = args
        .get(1)
        .map_or("../shared/bench/corpus.txt", String::as_str);
    let corpus = std::fs::read_to_string(corpus_path)?;
    let sentences: Vec<&str> = corpus.lines().collect();
    let encoder = SentenceEncoder::<Backend>::load(model, &device())?;
    encoder.encode(&sentences[..8.min(sentences.len())])?; // warm-up
    println!("CPU: {}", mtl::encoder::runtime::cpu_description());
    for batch in [1, 32, 128] {
        let n = if batch == 1 {
            200.min(sentences.len())
        } else {
            sentences.len()
        };
        let encoder = encoder.clone().with_batch_size(batch);
        let start = Instant::now();
        let _ = encoder.encode(&sentences[..n])?.into_data(); // waits for the backend
        let per_s = n as f64 / start.elapsed().as_secs_f64();
        println!("[{NAME}] batch {batch:>3}: {per_s:.1} sentences/s ({n} sentences)");
    }
    Ok(())
}
