//! An HTTP server for a sentence encoder or a multi-task model, speaking the protocols clients
//! already use: text-embeddings-inference's `POST /embed`, OpenAI's `POST /v1/embeddings`, and
//! `POST /predict` for the heads; `GET /health`, `/info`, `/metrics` (Prometheus).
//!
//! Requests are tokenized on the server's async threads, queued, and formed into batches across
//! concurrent requests by batcher threads, one per encoder worker, each running its batches
//! on one worker. Only the batcher is generic over the backend.

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
