//! The server on 127.0.0.1 (port 0): served answers equal the library's under concurrent load,
//! every bad request gets its status and a JSON error while the server keeps serving, the API
//! key, the OpenAI schema, metrics and graceful shutdown. Every request is bounded in time.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{json_floats, max_abs_diff, model_dir, shared};
use mtl::cli::load_test::{self, LoadPlan};
use mtl::encoder::SentenceEncoder;
use mtl::model::MultiTaskModel;
use mtl::serve::{ServeConfig, ServedModel, Server};
use serde_json::{json, Value};

type B = mtl::backend::Backend;

fn corpus() -> Vec<String> {
    let text = std::fs::read_to_string(shared().join("bench/corpus.txt")).unwrap();
    text.lines().map(str::to_string).collect()
}

fn encoder() -> SentenceEncoder<B> {
    SentenceEncoder::load(model_dir(), &Default::default()).unwrap()
}

fn start(model: ServedModel<B>, config: ServeConfig) -> (Server, String) {
    let server = Server::start(model, ServeConfig { port: 0, ..config }).unwrap();
    let base = format!("http://{}", server.addr());
    (server, base)
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// POSTs `body` (raw bytes); status, JSON answer, headers.
fn post(base: &str, route: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, Value) {
    let response = client()
        .post(format!("{base}{route}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// An `/embed` answer's rows.
fn rows(value: &Value) -> Vec<Vec<f32>> {
    value.as_array().unwrap().iter().map(json_floats).collect()
}

#[test]
fn embed_answers_under_load_equal_the_library() {
    let corpus = corpus();
    let encoder = encoder();
    let refs: Vec<&str> = corpus.iter().map(String::as_str).collect();
    let expected = encoder.encode_vec(&refs).unwrap();
    let index: std::collections::HashMap<&str, usize> =
        refs.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let (server, base) = start(ServedModel::Encoder(encoder), ServeConfig::default());
    let plan = LoadPlan {
        route: "/embed".into(),
        clients: 8,
        requests: 50,
        max_sentences: 16,
        seed: 3,
    };
    let (exchanges, wall) = load_test::run(&base, &corpus, &plan).unwrap();
    assert_eq!(exchanges.len(), 400);
    let mut worst = 0.0f32;
    for e in &exchanges {
        assert_eq!(e.status, 200, "{}", e.body);
        let got = rows(&e.body);
        assert_eq!(got.len(), e.sentences.len());
        for (s, row) in e.sentences.iter().zip(&got) {
            worst = worst.max(max_abs_diff(row, &expected[index[s.as_str()]]));
        }
    }
    assert!(
        worst <= 1e-6,
        "served embeddings differ from encode by {worst}"
    );
    let summary = load_test::summarize(&exchanges, wall);
    eprintln!("{summary:?}; largest difference {worst:.2e}");
    // The batcher formed batches across requests.
    let metrics = client()
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let batches: f64 = load_test::metric(&metrics, "mtl_batches_total").unwrap();
    assert!(
        batches < 400.0,
        "{batches} batches for 400 concurrent requests"
    );
    assert_eq!(load_test::metric(&metrics, "mtl_queue_depth").unwrap(), 0.0);
    server.shutdown().unwrap();
}

#[test]
fn predict_and_embed_of_a_multitask_model_equal_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let model = MultiTaskModel::seed(encoder()).unwrap();
    model.save(dir.path()).unwrap();
    let model = MultiTaskModel::<B>::load(dir.path(), &Default::default()).unwrap();
    let served = ServedModel::<B>::load(dir.path(), &Default::default()).unwrap();
    let (server, base) = start(served, ServeConfig::default());
    let corpus = corpus();
    let plan = LoadPlan {
        route: "/predict".into(),
        clients: 4,
        requests: 10,
        max_sentences: 16,
        seed: 5,
    };
    let (exchanges, _) = load_test::run(&base, &corpus[..300], &plan).unwrap();
    for e in &exchanges {
        assert_eq!(e.status, 200, "{}", e.body);
        let texts: Vec<&str> = e.sentences.iter().map(String::as_str).collect();
        let expected = model.predict(&texts).unwrap();
        for (answer, per_task) in e.body.as_array().unwrap().iter().zip(&expected) {
            for p in per_task {
                let got = &answer[&p.task];
                assert_eq!(got["label"], json!(p.label));
                let dist: Vec<f32> = got["probabilities"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                assert!(
                    max_abs_diff(&dist, &p.probabilities) <= 1e-6,
                    "{got} vs {p:?}"
                );
            }
        }
    }
    // One task only, in the order asked; embeddings of the shared encoder.
    let (status, body) = post(
        &base,
        "/predict",
        r#"{"inputs": "Fine.", "tasks": ["sentiment"]}"#,
    );
    assert_eq!(status, 200);
    assert_eq!(
        body[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["sentiment"]
    );
    let (status, body) = post(
        &base,
        "/embed",
        r#"{"inputs": ["Fine.", "Not fine at all."]}"#,
    );
    assert_eq!(status, 200);
    let expected = model
        .encoder
        .encode_vec(&["Fine.", "Not fine at all."])
        .unwrap();
    for (got, want) in rows(&body).iter().zip(&expected) {
        assert!(max_abs_diff(got, want) <= 1e-6);
    }
    let info: Value = client()
        .get(format!("{base}/info"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(info["tasks"][1]["name"], "sentiment");
    assert_eq!(info["dimension"], 384);
    server.shutdown().unwrap();
}

#[test]
fn openai_embeddings_in_float_and_base64() {
    let encoder = encoder();
    let texts = ["A first sentence.", "And a second, somewhat longer one."];
    let expected = encoder.encode_vec(&texts).unwrap();
    let tokens: usize = encoder
        .tokenize(&texts)
        .unwrap()
        .iter()
        .map(|e| e.len())
        .sum();
    let (server, base) = start(ServedModel::Encoder(encoder), ServeConfig::default());
    let body = json!({"input": texts, "model": "minilm"}).to_string();
    let (status, answer) = post(&base, "/v1/embeddings", body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["model"], "minilm");
    assert_eq!(answer["usage"]["prompt_tokens"], tokens);
    assert_eq!(answer["usage"]["total_tokens"], tokens);
    let body = json!({"input": texts, "model": "minilm", "encoding_format": "base64"}).to_string();
    let (_, encoded) = post(&base, "/v1/embeddings", body);
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(answer["data"][i]["index"], i);
        assert_eq!(answer["data"][i]["object"], "embedding");
        let floats: Vec<f32> = answer["data"][i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert!(max_abs_diff(&floats, want) <= 1e-6);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded["data"][i]["embedding"].as_str().unwrap())
            .unwrap();
        let decoded: Vec<f32> = bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(decoded, floats);
    }
    server.shutdown().unwrap();
}

#[test]
fn bad_requests_get_their_status_and_a_json_error() {
    let config = ServeConfig {
        max_client_batch_size: 4,
        max_body_bytes: 4096,
        ..ServeConfig::default()
    };
    let (server, base) = start(ServedModel::Encoder(encoder()), config);
    let long = "word ".repeat(400);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/embed", "{\"inputs\": [".into(), 400, "invalid_json"),
        ("/embed", "[\"a\"]".into(), 422, "validation"),
        ("/embed", "{\"inputs\": []}".into(), 422, "validation"),
        ("/embed", "{\"inputs\": 3}".into(), 422, "validation"),
        (
            "/embed",
            "{\"inputs\": [[101, 102]]}".into(),
            422,
            "validation",
        ),
        (
            "/embed",
            "{\"inputs\": \"a\", \"normalize\": \"yes\"}".into(),
            422,
            "validation",
        ),
        ("/embed", "{}".into(), 422, "validation"),
        (
            "/embed",
            json!({"inputs": ["a", "b", "c", "d", "e"]}).to_string(),
            413,
            "too_large",
        ),
        (
            "/embed",
            json!({"inputs": long}).to_string(),
            413,
            "too_large",
        ),
        (
            "/embed",
            json!({"inputs": "x".repeat(5000)}).to_string(),
            413,
            "too_large",
        ),
        (
            "/predict",
            json!({"inputs": "a"}).to_string(),
            422,
            "validation",
        ),
        (
            "/v1/embeddings",
            json!({"input": "a", "encoding_format": "hex"}).to_string(),
            422,
            "validation",
        ),
        ("/nowhere", "{}".into(), 404, "not_found"),
    ];
    for (route, body, status, kind) in cases {
        let (got, answer) = post(&base, route, body.clone());
        assert_eq!(got, status, "{route} {body:.60}: {answer}");
        assert_eq!(answer["error_type"], kind, "{route} {body:.60}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let response = client().get(format!("{base}/embed")).send().unwrap();
    assert_eq!(response.status().as_u16(), 405);
    // Truncation when asked; the server still answers.
    let (status, body) = post(
        &base,
        "/embed",
        json!({"inputs": long, "truncate": true}).to_string(),
    );
    assert_eq!(status, 200);
    assert_eq!(rows(&body)[0].len(), 384);
    server.shutdown().unwrap();
}

#[test]
fn the_api_key_guards_every_route_but_health() {
    let config = ServeConfig {
        api_key: Some("s3cret".into()),
        ..ServeConfig::default()
    };
    let (server, base) = start(ServedModel::Encoder(encoder()), config);
    let http = client();
    assert_eq!(
        http.get(format!("{base}/health"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    for route in ["/info", "/metrics"] {
        let response = http.get(format!("{base}{route}")).send().unwrap();
        assert_eq!(response.status().as_u16(), 401, "{route}");
    }
    let embed_with = |key: &str| {
        http.post(format!("{base}/embed"))
            .bearer_auth(key)
            .body(r#"{"inputs": "a"}"#)
            .send()
            .unwrap()
    };
    let wrong = embed_with("guess");
    assert_eq!(wrong.status().as_u16(), 401);
    let body: Value = wrong.json().unwrap();
    assert_eq!(body["error_type"], "unauthorized");
    assert_eq!(embed_with("s3cret").status().as_u16(), 200);
    server.shutdown().unwrap();
}

#[test]
fn beyond_the_concurrency_limit_requests_get_429_and_the_rest_succeed() {
    let config = ServeConfig {
        max_concurrent_requests: 1,
        ..ServeConfig::default()
    };
    let (server, base) = start(ServedModel::Encoder(encoder()), config);
    let corpus = corpus();
    let body = json!({"inputs": corpus[..32].to_vec()}).to_string();
    let statuses: Vec<(u16, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let response = client()
                        .post(format!("{base}/embed"))
                        .body(body.clone())
                        .send()
                        .unwrap();
                    let retry = response
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    (response.status().as_u16(), retry)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().any(|(s, _)| *s == 200), "{statuses:?}");
    assert!(statuses.iter().any(|(s, _)| *s == 429), "{statuses:?}");
    for (status, retry) in &statuses {
        assert!(
            *status == 200 || (*status == 429 && retry.as_deref() == Some("1")),
            "{statuses:?}"
        );
    }
    server.shutdown().unwrap();
}

#[test]
fn shutdown_finishes_requests_in_flight_then_stops_listening() {
    let (server, base) = start(ServedModel::Encoder(encoder()), ServeConfig::default());
    let corpus = corpus();
    let body = json!({"inputs": corpus[..32].to_vec()}).to_string();
    let in_flight = std::thread::spawn({
        let base = base.clone();
        move || post(&base, "/embed", body)
    });
    std::thread::sleep(Duration::from_millis(200));
    server.shutdown().unwrap();
    let (status, answer) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(rows(&answer).len(), 32);
    assert!(client().get(format!("{base}/health")).send().is_err());
}
