//! Dynamic batching: requests wait in a bounded queue; batcher threads (one per worker, each
//! with its own handle on the model) take the first waiting request as soon as they are idle
//! (no timer), add every request already waiting up to the token and request limits, run them
//! as one batch and answer each request with its own rows, in order.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use burn::tensor::backend::Backend;
use mtl_encoder::Encoded;
use tokio::sync::{mpsc, oneshot};

use crate::engine::ServedModel;
use crate::metrics::Metrics;

/// One request's sentences and where its rows go.
pub struct Job {
    /// Tokenized sentences.
    pub encoded: Vec<Encoded>,
    /// `width` values per sentence, or why the batch failed.
    pub reply: oneshot::Sender<Result<Vec<f32>, String>>,
}

impl Job {
    fn tokens(&self) -> usize {
        self.encoded.iter().map(Encoded::len).sum()
    }
}

/// Batch limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Tokens per batch.
    pub max_tokens: usize,
    /// Requests per batch.
    pub max_requests: usize,
}

/// Runs batches taken from `queue` (shared with the other batchers) until every sender of it
/// is gone.
pub fn run<B: Backend>(
    model: ServedModel<B>,
    queue: &Mutex<mpsc::Receiver<Job>>,
    limits: Limits,
    metrics: Arc<Metrics>,
) {
    let mut waiting: Option<Job> = None;
    loop {
        let Some((jobs, tokens)) = take_batch(queue, &mut waiting, limits, &metrics) else {
            return;
        };
        run_batch(&model, jobs, tokens, &metrics);
    }
}

/// The next batch and its tokens: `waiting` (a request that did not fit the last batch) or the
/// first request to arrive, and every request already queued that fits; `None` once the
/// queue is closed and empty.
fn take_batch(
    queue: &Mutex<mpsc::Receiver<Job>>,
    waiting: &mut Option<Job>,
    limits: Limits,
    metrics: &Metrics,
) -> Option<(Vec<Job>, usize)> {
    let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
    let first = waiting.take().or_else(|| queue.blocking_recv())?;
    metrics.queue(-1);
    let mut tokens = first.tokens();
    let mut jobs = vec![first];
    while jobs.len() < limits.max_requests {
        let Ok(next) = queue.try_recv() else { break };
        if tokens + next.tokens() > limits.max_tokens {
            *waiting = Some(next);
            break;
        }
        metrics.queue(-1);
        tokens += next.tokens();
        jobs.push(next);
    }
    Some((jobs, tokens))
}

/// Runs one batch and answers its jobs; a panic inside the model fails this batch only.
fn run_batch<B: Backend>(model: &ServedModel<B>, jobs: Vec<Job>, tokens: usize, metrics: &Metrics) {
    let mut encoded = Vec::with_capacity(jobs.iter().map(|j| j.encoded.len()).sum());
    for job in &jobs {
        encoded.extend(job.encoded.iter().cloned());
    }
    metrics.batch(encoded.len(), tokens);
    let outcome = catch_unwind(AssertUnwindSafe(|| model.run(&encoded)));
    match outcome {
        Ok(values) => {
            let width = values.len() / encoded.len().max(1);
            let mut start = 0;
            for job in jobs {
                let end = start + job.encoded.len() * width;
                // A client that went away no longer waits for its answer.
                let _ = job.reply.send(Ok(values[start..end].to_vec()));
                start = end;
            }
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the model failed".into());
            for job in jobs {
                let _ = job.reply.send(Err(message.clone()));
            }
        }
    }
}
