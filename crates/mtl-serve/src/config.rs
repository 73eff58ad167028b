//! The server's settings: address, batching and request limits.

/// How the server listens, batches and limits requests.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to bind (default `127.0.0.1`).
    pub host: String,
    /// Port (0 picks a free one; [`crate::Server::addr`] tells which).
    pub port: u16,
    /// A batch holds at most this many tokens (a single larger request runs alone).
    pub max_batch_tokens: usize,
    /// A batch holds at most this many requests.
    pub max_batch_requests: usize,
    /// Inputs per request.
    pub max_client_batch_size: usize,
    /// Tokens per input (special tokens included; default: the model's `max_seq_length`).
    pub max_input_tokens: Option<usize>,
    /// Truncate longer inputs when a request does not say (`truncate`); otherwise they are
    /// answered 413.
    pub auto_truncate: bool,
    /// Request bodies larger than this are answered 413.
    pub max_body_bytes: usize,
    /// Requests in progress at once; beyond, 429 with `Retry-After`.
    pub max_concurrent_requests: usize,
    /// When set, every route but `/health` needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// The model's name in `/info` and OpenAI answers.
    pub model_name: String,
    /// The backend's name in `/info`.
    pub backend: String,
    /// Stop gracefully on SIGINT / SIGTERM.
    pub handle_signals: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            max_batch_tokens: 16_384,
            max_batch_requests: 64,
            max_client_batch_size: 32,
            max_input_tokens: None,
            auto_truncate: false,
            max_body_bytes: 2 * 1024 * 1024,
            max_concurrent_requests: 512,
            api_key: None,
            model_name: "mtl".into(),
            backend: "unknown".into(),
            handle_signals: false,
        }
    }
}
