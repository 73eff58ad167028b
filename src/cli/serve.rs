//! `mtl serve`: the HTTP server (crate `mtl-serve`) on a model directory or cached id.

use crate::backend::{device, Backend, NAME};
use mtl_serve::{ServeConfig, ServedModel, Server};

use super::error::CliError;
use super::model_ref;

/// Serve embeddings (TEI /embed, OpenAI /v1/embeddings) and, for a trained multi-task model,
/// /predict, with dynamic batching. Stops gracefully on SIGINT / SIGTERM.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: model_ref::ModelArg,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one and prints it).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Tokens per batch formed across requests.
    #[arg(long, default_value_t = 16_384)]
    max_batch_tokens: usize,
    /// Requests per batch.
    #[arg(long, default_value_t = 64)]
    max_batch_requests: usize,
    /// Inputs per request (more: 413).
    #[arg(long, default_value_t = 32)]
    max_client_batch_size: usize,
    /// Tokens per input, special tokens included (default: the model's max_seq_length); longer
    /// inputs are truncated when the request says `"truncate": true`, else answered 413.
    #[arg(long)]
    max_input_tokens: Option<usize>,
    /// Truncate long inputs unless a request says otherwise (and on /v1/embeddings).
    #[arg(long)]
    auto_truncate: bool,
    /// Largest request body, bytes (more: 413).
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    payload_limit: usize,
    /// Requests in progress at once (more: 429 with Retry-After).
    #[arg(long, default_value_t = 512)]
    max_concurrent_requests: usize,
    /// Require `Authorization: Bearer <key>` on every route but /health.
    #[arg(long, env = "MTL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Sentences per forward pass inside a batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// The model's name in /info and OpenAI answers (default: --model).
    #[arg(long)]
    model_name: Option<String>,
}

impl Args {
    /// The server's settings.
    pub fn config(&self, name: String) -> ServeConfig {
        ServeConfig {
            host: self.host.clone(),
            port: self.port,
            max_batch_tokens: self.max_batch_tokens,
            max_batch_requests: self.max_batch_requests,
            max_client_batch_size: self.max_client_batch_size,
            max_input_tokens: self.max_input_tokens,
            auto_truncate: self.auto_truncate,
            max_body_bytes: self.payload_limit,
            max_concurrent_requests: self.max_concurrent_requests,
            api_key: self.api_key.clone(),
            model_name: self.model_name.clone().unwrap_or(name),
            backend: NAME.to_string(),
            handle_signals: true,
        }
    }
}

pub fn run(args: Args) -> Result<(), CliError> {
    let (dir, name) = args.model.resolve()?;
    let model = match ServedModel::<Backend>::load(&dir, &device())? {
        ServedModel::Encoder(e) => ServedModel::Encoder(e.with_batch_size(args.batch_size)),
        ServedModel::MultiTask(mut m) => {
            m.encoder = m.encoder.with_batch_size(args.batch_size);
            ServedModel::MultiTask(m)
        }
    };
    let tasks: Vec<String> = model.tasks().iter().map(|t| t.name.clone()).collect();
    let server = Server::start(model, args.config(name.clone()))?;
    let tasks = if tasks.is_empty() {
        "embeddings only".to_string()
    } else {
        format!("tasks {}", tasks.join(", "))
    };
    eprintln!("[{NAME}] serving {name} ({tasks})");
    println!("listening on http://{}", server.addr());
    server.wait().map_err(CliError::Server)?;
    eprintln!("stopped");
    Ok(())
}
