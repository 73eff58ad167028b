//! A load test against a running server: concurrent clients, each sending requests of 1 to
//! `max_sentences` sentences drawn from a corpus, over loopback; every exchange is kept so that
//! answers can be checked.

use std::time::{Duration, Instant};

use mtl_encoder::Rng;
use serde_json::{json, Value};

use super::error::CliError;

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// The route, `/embed`, `/predict` or `/v1/embeddings`.
    pub route: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests per client.
    pub requests: usize,
    /// Sentences per request, 1 to this.
    pub max_sentences: usize,
    /// Seed of the sentence choice.
    pub seed: u64,
}

/// One request and its answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub sentences: Vec<String>,
    pub status: u16,
    pub body: Value,
    pub seconds: f64,
}

/// Throughput and latency of a load test.
#[derive(Debug, Clone)]
pub struct LoadSummary {
    pub requests_per_second: f64,
    pub sentences_per_second: f64,
    /// Latency percentiles (50, 90, 99), seconds.
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// Runs `plan` against `base` (`http://127.0.0.1:PORT`); the exchanges of every client in
/// order, and the wall time.
pub fn run(
    base: &str,
    corpus: &[String],
    plan: &LoadPlan,
) -> Result<(Vec<Exchange>, f64), CliError> {
    if corpus.is_empty() {
        return Err(CliError::LoadTest("the corpus is empty".into()));
    }
    let started = Instant::now();
    let results: Vec<Result<Vec<Exchange>, CliError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..plan.clients)
            .map(|c| scope.spawn(move || client(base, corpus, plan, c)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(CliError::LoadTest("a client panicked".into())))
            })
            .collect()
    });
    let wall = started.elapsed().as_secs_f64();
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok((all, wall))
}

fn client(
    base: &str,
    corpus: &[String],
    plan: &LoadPlan,
    index: usize,
) -> Result<Vec<Exchange>, CliError> {
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| CliError::LoadTest(format!("cannot build the HTTP client: {e}")))?;
    let mut rng = Rng::new(plan.seed.wrapping_add(index as u64));
    let url = format!("{base}{}", plan.route);
    let mut out = Vec::with_capacity(plan.requests);
    for _ in 0..plan.requests {
        let n = 1 + rng.below(plan.max_sentences.max(1));
        let start = rng.below(corpus.len());
        let sentences: Vec<String> = (0..n)
            .map(|i| corpus[(start + i) % corpus.len()].clone())
            .collect();
        let body = if plan.route == "/v1/embeddings" {
            json!({"input": sentences, "model": "mtl"})
        } else {
            json!({"inputs": sentences, "truncate": true})
        };
        let sent = Instant::now();
        let response = http
            .post(&url)
            .json(&body)
            .send()
            .map_err(|e| CliError::LoadTest(format!("{url}: {e}")))?;
        let status = response.status().as_u16();
        let body: Value = response
            .json()
            .map_err(|e| CliError::LoadTest(format!("{url}: the answer is not JSON: {e}")))?;
        out.push(Exchange {
            sentences,
            status,
            body,
            seconds: sent.elapsed().as_secs_f64(),
        });
    }
    Ok(out)
}

/// Requests/s, sentences/s and latency percentiles.
pub fn summarize(exchanges: &[Exchange], wall: f64) -> LoadSummary {
    let mut latencies: Vec<f64> = exchanges.iter().map(|e| e.seconds).collect();
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i]
    };
    let sentences: usize = exchanges.iter().map(|e| e.sentences.len()).sum();
    LoadSummary {
        requests_per_second: exchanges.len() as f64 / wall,
        sentences_per_second: sentences as f64 / wall,
        p50: pick(0.50),
        p90: pick(0.90),
        p99: pick(0.99),
    }
}

/// The value of the unlabelled series `name` in a Prometheus text exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let line = text.lines().find(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(' '))
    })?;
    line.split_whitespace().nth(1)?.parse().ok()
}
