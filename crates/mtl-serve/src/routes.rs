//! The HTTP routes and the layers around them (metrics, API key, concurrency limit).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use mtl_encoder::Encoded;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::batcher::Job;
use crate::config::ServeConfig;
use crate::engine::ModelInfo;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::schema;

/// What every route shares.
pub struct AppState {
    pub info: ModelInfo,
    pub config: ServeConfig,
    pub queue: mpsc::Sender<Job>,
    pub metrics: Arc<Metrics>,
    pub permits: Arc<Semaphore>,
}

type Shared = Arc<AppState>;

/// The router: model routes behind the concurrency limit; all but `/health` behind the key.
pub fn router(state: Shared) -> Router {
    let model_routes = Router::new()
        .route("/embed", post(embed))
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/predict", post(predict))
        .route_layer(middleware::from_fn_with_state(state.clone(), limit));
    Router::new()
        .merge(model_routes)
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

/// Counts every answer by route and status, with its latency.
async fn record(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let route = match request.uri().path() {
        p @ ("/embed" | "/v1/embeddings" | "/predict" | "/health" | "/info" | "/metrics") => {
            p.to_string()
        }
        _ => "other".to_string(),
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    state
        .metrics
        .request(&route, response.status().as_u16(), seconds);
    response
}

/// 401 without `Authorization: Bearer <key>` when a key is set (`/health` stays open).
async fn authorize(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let Some(key) = &state.config.api_key else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if same(given.as_bytes(), key.as_bytes()) => next.run(request).await,
        _ => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key: send `Authorization: Bearer <key>`",
        )
        .into_response(),
    }
}

/// Byte equality that takes the same time wherever the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 429 with `Retry-After` beyond `max_concurrent_requests` requests in progress.
async fn limit(State(state): State<Shared>, request: Request, next: Next) -> Response {
    match state.permits.clone().try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "overloaded",
            format!(
                "more than {} requests in progress; retry later",
                state.config.max_concurrent_requests
            ),
        )
        .into_response(),
    }
}

/// Tokenized inputs of one request, checked against the limits.
struct Inputs {
    encoded: Vec<Encoded>,
    tokens: usize,
}

/// Checks the number of inputs, tokenizes them off the async threads and applies the
/// truncation rule (413 for a longer input unless `truncate`).
async fn tokenize(
    state: &AppState,
    texts: Vec<String>,
    truncate: bool,
) -> Result<Inputs, ApiError> {
    let limit = state.config.max_client_batch_size;
    if texts.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "{} inputs in one request; at most {limit} (--max-client-batch-size)",
                texts.len()
            ),
        ));
    }
    let tokenizer = state.info.tokenizer.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        tokenizer.encode_checked(&refs)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "tokenizer",
            e.to_string(),
        )
    })?
    .map_err(|e| ApiError::validation(e.to_string()))?;
    if !truncate {
        if let Some(i) = checked.iter().position(|(_, truncated)| *truncated) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "input {i} has more than {} tokens (--max-input-tokens); send \"truncate\": true to cut it",
                    state.info.max_seq_length
                ),
            ));
        }
    }
    let encoded: Vec<Encoded> = checked.into_iter().map(|(e, _)| e).collect();
    let tokens = encoded.iter().map(Encoded::len).sum();
    Ok(Inputs { encoded, tokens })
}

/// Queues the inputs for the batcher; per input, [`ModelInfo::width`] values.
async fn run(state: &AppState, encoded: Vec<Encoded>) -> Result<Vec<Vec<f32>>, ApiError> {
    let n = encoded.len();
    let (reply, answer) = oneshot::channel();
    let unavailable =
        |message: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
    state.metrics.queue(1);
    if state.queue.send(Job { encoded, reply }).await.is_err() {
        state.metrics.queue(-1);
        return Err(unavailable("the server is shutting down".into()));
    }
    let values = answer
        .await
        .map_err(|_| unavailable("the model stopped".into()))?
        .map_err(|message| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "backend",
                format!("the batch failed: {message}"),
            )
        })?;
    debug_assert_eq!(values.len(), n * state.info.width());
    Ok(values
        .chunks(state.info.width())
        .map(<[f32]>::to_vec)
        .collect())
}

/// The embedding part of an output row, L2-normalised when asked.
fn embedding(row: &[f32], dimension: usize, normalize: bool) -> Vec<f32> {
    let mut v = row[..dimension].to_vec();
    if normalize {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// TEI's `POST /embed`: `{"inputs", "normalize" (true), "truncate"}` -> `[[f32]]`.
async fn embed(State(state): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let answer = async {
        let body = schema::object(body)?;
        let texts = schema::texts(&body, "inputs")?;
        let normalize = schema::flag(&body, "normalize", true)?;
        let truncate = schema::flag(&body, "truncate", state.config.auto_truncate)?;
        let inputs = tokenize(&state, texts, truncate).await?;
        let rows = run(&state, inputs.encoded).await?;
        let dim = state.info.dimension;
        let embeddings: Vec<Vec<f32>> = rows.iter().map(|r| embedding(r, dim, normalize)).collect();
        Ok::<_, ApiError>(Json(embeddings))
    };
    answer.await.into_response()
}

/// OpenAI's `POST /v1/embeddings`: `{"input", "model", "encoding_format"}` -> a list of
/// normalised embeddings with usage.
async fn openai_embeddings(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        let body = schema::object(body)?;
        let texts = schema::texts(&body, "input")?;
        let base64 = match schema::string(&body, "encoding_format")? {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::validation(format!(
                    "`encoding_format` {other:?} is not supported (expected float or base64)"
                )))
            }
        };
        let model = schema::string(&body, "model")?
            .unwrap_or(&state.config.model_name)
            .to_string();
        let inputs = tokenize(&state, texts, state.config.auto_truncate).await?;
        let tokens = inputs.tokens;
        let rows = run(&state, inputs.encoded).await?;
        let dim = state.info.dimension;
        let data: Vec<Value> = rows
            .iter()
            .enumerate()
            .map(|(index, row)| {
                let v = embedding(row, dim, true);
                let embedding = if base64 {
                    let bytes = mtl_encoder::io::f32_le_bytes(&v);
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "index": index, "embedding": embedding})
            })
            .collect();
        Ok::<_, ApiError>(Json(json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })))
    };
    answer.await.into_response()
}

/// `POST /predict`: `{"inputs", "tasks" (all), "truncate"}` -> per input, per task: label,
/// probability and the distribution over the labels.
async fn predict(State(state): State<Shared>, body: Result<Bytes, BytesRejection>) -> Response {
    let answer = async {
        let tasks = &state.info.tasks;
        if tasks.is_empty() {
            return Err(ApiError::validation(
                "this model has no task heads: serve a directory written by `mtl train` to predict",
            ));
        }
        let body = schema::object(body)?;
        let texts = schema::texts(&body, "inputs")?;
        let truncate = schema::flag(&body, "truncate", state.config.auto_truncate)?;
        let chosen: Vec<usize> = match schema::names(&body, "tasks")? {
            None => (0..tasks.len()).collect(),
            Some(names) => names
                .iter()
                .map(|name| {
                    tasks.iter().position(|t| &t.name == name).ok_or_else(|| {
                        let known: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
                        ApiError::validation(format!(
                            "unknown task `{name}` (the model has: {})",
                            known.join(", ")
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let inputs = tokenize(&state, texts, truncate).await?;
        let rows = run(&state, inputs.encoded).await?;
        let answers: Vec<Value> = rows
            .iter()
            .map(|row| predictions(&state.info, row, &chosen))
            .collect();
        Ok::<_, ApiError>(Json(answers))
    };
    answer.await.into_response()
}

/// One input's answer: `{task: {"label", "probability", "probabilities": {label: p}}}`.
fn predictions(info: &ModelInfo, row: &[f32], chosen: &[usize]) -> Value {
    let mut out = Map::new();
    for &t in chosen {
        let task = &info.tasks[t];
        let p = &row[task.offset..task.offset + task.labels.len()];
        let best = (0..p.len())
            .max_by(|&a, &b| p[a].total_cmp(&p[b]))
            .unwrap_or(0);
        let distribution: Map<String, Value> = task
            .labels
            .iter()
            .zip(p)
            .map(|(label, &prob)| (label.clone(), json!(prob)))
            .collect();
        out.insert(
            task.name.clone(),
            json!({"label": task.labels[best], "probability": p[best], "probabilities": distribution}),
        );
    }
    Value::Object(out)
}

/// `GET /info`: the model and the server's limits.
async fn info(State(state): State<Shared>) -> Json<Value> {
    let (info, config) = (&state.info, &state.config);
    Json(json!({
        "model": config.model_name,
        "dimension": info.dimension,
        "max_seq_length": info.max_seq_length,
        "max_input_tokens": info.max_seq_length,
        "pooling": info.pooling,
        "normalize": info.normalize,
        "tasks": info.tasks,
        "backend": config.backend,
        "version": env!("CARGO_PKG_VERSION"),
        "max_batch_tokens": config.max_batch_tokens,
        "max_batch_requests": config.max_batch_requests,
        "max_client_batch_size": config.max_client_batch_size,
        "max_concurrent_requests": config.max_concurrent_requests,
    }))
}

/// `GET /metrics`: Prometheus' text format.
async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
