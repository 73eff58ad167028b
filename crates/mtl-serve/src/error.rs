//! The server's errors: [`ServeError`] when it cannot start, [`ApiError`] for an answer.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// A setting is out of range.
    #[error("invalid server setting: {0}")]
    Config(String),
    /// The async runtime could not start.
    #[error("cannot start the server's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The model failed to load.
    #[error(transparent)]
    Model(#[from] mtl_model::ModelError),
    /// The encoder failed to load.
    #[error(transparent)]
    Encoder(#[from] mtl_encoder::EncoderError),
}

/// An error answer: a status and a JSON body `{"error": message, "error_type": kind}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for people.
    pub message: String,
    /// A stable machine-readable kind (`validation`, `invalid_json`, `too_large`, ...).
    pub kind: &'static str,
}

impl ApiError {
    /// An error with a status and kind.
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
        }
    }

    /// 422: the request is well-formed JSON but its values are not acceptable.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.message, "error_type": self.kind});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
