//! An HTTP server for a sentence encoder or a multi-task model, speaking the protocols clients
//! already use: text-embeddings-inference's `POST /embed`, OpenAI's `POST /v1/embeddings`, and
//! `POST /predict` for the heads; `GET /health`, `/info`, `/metrics` (Prometheus).
//!
//! Requests are tokenized on the server's async threads, queued, and formed into batches across
//! concurrent requests by one batcher thread that owns the model; the model runs
//! each batch on the encoder's workers. Only the batcher is generic over the backend.

mod batcher;
mod config;
mod engine;
mod error;
mod metrics;
mod routes;
mod schema;
mod server;

pub use config::ServeConfig;
pub use engine::{ModelInfo, ServedModel, TaskInfo};
pub use error::{ApiError, ServeError};
pub use server::Server;
