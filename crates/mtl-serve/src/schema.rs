//! The request bodies, read from JSON with messages that name the field at fault.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A request body as a JSON object (400 for a syntax error, 422 for another type, the
/// extractor's status, such as 413 for a body over the limit, otherwise).
pub fn object(body: Result<Bytes, BytesRejection>) -> Result<Map<String, Value>, ApiError> {
    let bytes = body.map_err(|rejection| {
        let kind = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(rejection.status(), kind, rejection.body_text())
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::validation(format!(
            "the body must be a JSON object, got {}",
            type_name(&other)
        ))),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("malformed JSON: {e}"),
        )),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The texts of `field`: a string or a non-empty list of strings.
pub fn texts(body: &Map<String, Value>, field: &str) -> Result<Vec<String>, ApiError> {
    let wrong = |what: &str| {
        ApiError::validation(format!(
            "`{field}` must be a string or a list of strings, got {what}"
        ))
    };
    match body.get(field) {
        None => Err(ApiError::validation(format!("`{field}` is missing"))),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(ApiError::validation(format!("`{field}` is an empty list")))
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Array(_) => Err(ApiError::validation(format!(
                    "`{field}[{i}]` is {}: token-id inputs are not supported, send text",
                    type_name(item)
                ))),
                other => Err(wrong(&format!("{} at index {i}", type_name(other)))),
            })
            .collect(),
        Some(other) => Err(wrong(type_name(other))),
    }
}

/// The boolean `field`, or `default` when absent or null.
pub fn flag(body: &Map<String, Value>, field: &str, default: bool) -> Result<bool, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::validation(format!(
            "`{field}` must be a boolean, got {}",
            type_name(other)
        ))),
    }
}

/// The string `field`, if present.
pub fn string<'a>(body: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::validation(format!(
            "`{field}` must be a string, got {}",
            type_name(other)
        ))),
    }
}

/// The list of strings `field`, if present.
pub fn names(body: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(_)) => texts(body, field).map(Some),
        Some(other) => Err(ApiError::validation(format!(
            "`{field}` must be a list of strings, got {}",
            type_name(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Result<Map<String, Value>, ApiError> {
        object(Ok(Bytes::from(json.to_string())))
    }

    #[test]
    fn reads_a_string_or_a_list() {
        let b = body(r#"{"inputs": "a", "more": ["b", "c"]}"#).unwrap();
        assert_eq!(texts(&b, "inputs").unwrap(), vec!["a"]);
        assert_eq!(texts(&b, "more").unwrap(), vec!["b", "c"]);
    }

    #[test]
    fn names_the_field_and_status_of_each_mistake() {
        assert_eq!(body("{nope").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body("[1]").unwrap_err().status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let b = body(r#"{"inputs": [], "n": 3, "ids": [[1, 2]], "mixed": ["a", null]}"#).unwrap();
        assert!(texts(&b, "inputs")
            .unwrap_err()
            .message
            .contains("empty list"));
        assert!(texts(&b, "absent")
            .unwrap_err()
            .message
            .contains("`absent` is missing"));
        assert!(texts(&b, "n").unwrap_err().message.contains("got a number"));
        assert!(texts(&b, "ids").unwrap_err().message.contains("token-id"));
        assert!(texts(&b, "mixed")
            .unwrap_err()
            .message
            .contains("null at index 1"));
        assert!(flag(&b, "n", true)
            .unwrap_err()
            .message
            .contains("`n` must be a boolean"));
        assert!(flag(&b, "absent", true).unwrap());
    }
}
