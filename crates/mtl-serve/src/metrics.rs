//! The server's counters and histograms, rendered in Prometheus' text format at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the latency buckets, seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the batch-size buckets, sentences.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A cumulative histogram with fixed buckets.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Tables {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    batch_size: Option<Histogram>,
}

/// Requests by route and status, request latency and batch sizes, queue depth, tokens.
#[derive(Debug, Default)]
pub struct Metrics {
    tables: Mutex<Tables>,
    queue_depth: AtomicI64,
    tokens: AtomicU64,
    batches: AtomicU64,
}

impl Metrics {
    /// Counts one answered request.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        *tables
            .requests
            .entry((route.to_string(), status))
            .or_insert(0) += 1;
        tables
            .latency
            .entry(route.to_string())
            .or_insert_with(|| Histogram::new(LATENCY_BUCKETS))
            .observe(seconds);
    }

    /// Counts one batch run by the model.
    pub fn batch(&self, sentences: usize, tokens: usize) {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables
            .batch_size
            .get_or_insert_with(|| Histogram::new(BATCH_BUCKETS))
            .observe(sentences as f64);
        self.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// A request entered (`+1`) or left (`-1`) the queue.
    pub fn queue(&self, delta: i64) {
        self.queue_depth.fetch_add(delta, Ordering::Relaxed);
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        out.push_str("# HELP mtl_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE mtl_requests_total counter\n");
        for ((route, status), count) in &tables.requests {
            let _ = writeln!(
                out,
                "mtl_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str("# HELP mtl_request_duration_seconds Request latency, by route.\n");
        out.push_str("# TYPE mtl_request_duration_seconds histogram\n");
        for (route, histogram) in &tables.latency {
            let labels = format!("route=\"{route}\"");
            histogram.render(&mut out, "mtl_request_duration_seconds", &labels);
        }
        out.push_str("# HELP mtl_batch_size Sentences per batch run by the model.\n");
        out.push_str("# TYPE mtl_batch_size histogram\n");
        tables
            .batch_size
            .clone()
            .unwrap_or_else(|| Histogram::new(BATCH_BUCKETS))
            .render(&mut out, "mtl_batch_size", "");
        let gauges = [
            (
                "mtl_queue_depth",
                "gauge",
                "Requests waiting for the model.",
                self.queue_depth.load(Ordering::Relaxed).to_string(),
            ),
            (
                "mtl_tokens_total",
                "counter",
                "Tokens run through the model.",
                self.tokens.load(Ordering::Relaxed).to_string(),
            ),
            (
                "mtl_batches_total",
                "counter",
                "Batches run by the model.",
                self.batches.load(Ordering::Relaxed).to_string(),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let metrics = Metrics::default();
        metrics.request("/embed", 200, 0.02);
        metrics.request("/embed", 200, 0.3);
        metrics.request("/embed", 422, 0.001);
        metrics.batch(3, 40);
        metrics.queue(2);
        metrics.queue(-1);
        let text = metrics.render();
        assert!(text.contains("mtl_requests_total{route=\"/embed\",status=\"200\"} 2\n"));
        assert!(text.contains("mtl_requests_total{route=\"/embed\",status=\"422\"} 1\n"));
        assert!(
            text.contains("mtl_request_duration_seconds_bucket{route=\"/embed\",le=\"0.025\"} 2\n")
        );
        assert!(
            text.contains("mtl_request_duration_seconds_bucket{route=\"/embed\",le=\"+Inf\"} 3\n")
        );
        assert!(text.contains("mtl_batch_size_bucket{le=\"2\"} 0\n"));
        assert!(text.contains("mtl_batch_size_bucket{le=\"4\"} 1\n"));
        assert!(text.contains("mtl_queue_depth 1\n"));
        assert!(text.contains("mtl_tokens_total 40\n"));
    }
}
