//! Checkpoint conventions (plain, `bert.` prefix, LayerNorm gamma/beta, f16), save/load round
//! trips, the bert-base shape, and one typed error per way a model directory can be broken.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::backend::NdArray;
use common::{max_abs_diff, model_dir};
use mtl::encoder::io::{bert_hf_key, module_tensors};
use mtl::encoder::{BertConfig, EncoderError, SentenceEncoder, SentenceTokenizer};
use safetensors::{tensor::TensorView, Dtype};

type B = NdArray;
type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

const SENTENCES: [&str; 2] = [
    "The quick brown fox jumps over the lazy dog.",
    "Transformers have revolutionized natural language processing.",
];

fn tiny_config() -> BertConfig {
    common::tiny_config(2)
}

fn tokenizer(max_len: usize) -> SentenceTokenizer {
    SentenceTokenizer::from_file(&model_dir().join("tokenizer.json"), max_len, 0).unwrap()
}

/// A random tiny encoder and its tensors under Hugging Face names.
fn tiny() -> (SentenceEncoder<B>, Tensors) {
    let config = tiny_config();
    let bert = config.init::<B>(&Default::default());
    let encoder = SentenceEncoder::from_parts(bert, config, tokenizer(64)).with_normalize(true);
    let tensors = module_tensors(&encoder.bert, bert_hf_key).unwrap();
    (encoder, tensors)
}

fn write_safetensors(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            (
                name.clone(),
                TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes a model directory whose checkpoint holds `tensors` renamed by `rename`, in `dtype`.
fn write_dir(dir: &Path, tensors: &Tensors, rename: impl Fn(&str) -> String, dtype: Dtype) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec(&tiny_config().to_hf_json()).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        model_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let mut out: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, (shape, values))| {
            let data = match dtype {
                Dtype::F16 => values
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
                _ => f32_bytes(values),
            };
            (rename(name), dtype, shape.clone(), data)
        })
        .collect();
    // Keys a loader must ignore.
    out.push((
        rename("pooler.dense.bias"),
        Dtype::F32,
        vec![32],
        f32_bytes(&[0.5; 32]),
    ));
    out.push((
        "cls.predictions.bias".into(),
        Dtype::F32,
        vec![4],
        f32_bytes(&[1.0; 4]),
    ));
    out.push((
        rename("embeddings.position_ids"),
        Dtype::I64,
        vec![1, 64],
        vec![0; 8 * 64],
    ));
    write_safetensors(&dir.join("model.safetensors"), &out);
}

fn embed(encoder: &SentenceEncoder<B>) -> Vec<Vec<f32>> {
    encoder.encode_vec(&SENTENCES).unwrap()
}

fn load(dir: &Path) -> Result<SentenceEncoder<B>, EncoderError> {
    SentenceEncoder::load(dir, &Default::default())
}

#[test]
fn hf_key_conventions_load_to_the_same_model() {
    let (encoder, tensors) = tiny();
    let expected = embed(&encoder);
    let tmp = tempfile::tempdir().unwrap();
    let gamma_beta = |n: &str| {
        n.replace("LayerNorm.weight", "LayerNorm.gamma")
            .replace("LayerNorm.bias", "LayerNorm.beta")
    };
    type Rename = Box<dyn Fn(&str) -> String>;
    let cases: Vec<(&str, Rename, Dtype, f32)> = vec![
        ("plain", Box::new(|n: &str| n.to_string()), Dtype::F32, 0.0),
        (
            "prefixed",
            Box::new(|n: &str| format!("bert.{n}")),
            Dtype::F32,
            0.0,
        ),
        ("gamma_beta", Box::new(gamma_beta), Dtype::F32, 0.0),
        (
            "prefixed_gamma_beta",
            Box::new(move |n: &str| format!("bert.{}", gamma_beta(n))),
            Dtype::F32,
            0.0,
        ),
        ("f16", Box::new(|n: &str| n.to_string()), Dtype::F16, 2e-3),
    ];
    for (name, rename, dtype, tolerance) in cases {
        let dir = tmp.path().join(name);
        write_dir(&dir, &tensors, rename, dtype);
        // No modules.json: mean pooling, no normalisation.
        let loaded = load(&dir)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .with_normalize(true);
        let got = embed(&loaded);
        for (a, b) in got.iter().zip(&expected) {
            assert_eq!(a.len(), 32);
            let d = max_abs_diff(a, b);
            assert!(d <= tolerance, "{name}: outputs differ by {d}");
        }
    }
}

#[test]
fn save_then_load_gives_identical_outputs_and_files() {
    let tmp = tempfile::tempdir().unwrap();
    let encoder: SentenceEncoder<B> =
        SentenceEncoder::load(model_dir(), &Default::default()).unwrap();
    encoder.save(tmp.path().join("a")).unwrap();
    let reloaded = load(&tmp.path().join("a")).unwrap();
    assert_eq!(embed(&encoder), embed(&reloaded));
    assert!(reloaded.settings.normalize);
    assert_eq!(reloaded.tokenizer().max_seq_length(), 256);
    reloaded.save(tmp.path().join("b")).unwrap();
    for file in [
        "model.safetensors",
        "config.json",
        "modules.json",
        "1_Pooling/config.json",
        "tokenizer.json",
    ] {
        let a = std::fs::read(tmp.path().join("a").join(file)).unwrap();
        let b = std::fs::read(tmp.path().join("b").join(file)).unwrap();
        assert!(a == b, "{file} differs after a second save");
    }
    // The saved checkpoint keeps Hugging Face's key names.
    let saved = mtl::encoder::Checkpoint::open(&tmp.path().join("a/model.safetensors")).unwrap();
    let names = saved.names().unwrap();
    assert!(names.contains(&"encoder.layer.5.attention.self.query.weight".to_string()));
    assert!(names.contains(&"embeddings.LayerNorm.weight".to_string()));
}

#[test]
fn bert_base_shapes() {
    let config = BertConfig::default();
    let bert = config.init::<B>(&Default::default());
    let encoder = SentenceEncoder::from_parts(bert, config, tokenizer(512));
    let out = encoder.encode(&SENTENCES).unwrap();
    assert_eq!(out.dims(), [2, 768]);
    assert!(out
        .into_data()
        .into_vec::<f32>()
        .unwrap()
        .iter()
        .all(|x| x.is_finite()));
}

fn broken_dir(tmp: &Path, name: &str) -> std::path::PathBuf {
    let (_, tensors) = tiny();
    let dir = tmp.join(name);
    write_dir(&dir, &tensors, |n| n.to_string(), Dtype::F32);
    dir
}

#[test]
fn missing_directory() {
    let err = load(Path::new("/nonexistent/model")).unwrap_err();
    assert!(
        matches!(err, EncoderError::MissingDirectory { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("/nonexistent/model"));
}

#[test]
fn missing_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = broken_dir(tmp.path(), "m");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, EncoderError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("config.json"));
}

#[test]
fn malformed_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = broken_dir(tmp.path(), "m");
    std::fs::write(dir.join("config.json"), b"{\"hidden_size\": 32,").unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, EncoderError::Json { .. }), "{err}");
    assert!(err.to_string().contains("config.json"));
    std::fs::write(
        dir.join("config.json"),
        b"{\"hidden_size\": 30, \"num_attention_heads\": 4}",
    )
    .unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, EncoderError::InvalidConfig { .. }), "{err}");
}

fn rewrite_without(dir: &Path, drop: &str, reshape: Option<(&str, Vec<usize>)>) {
    let (_, tensors) = tiny();
    let mut out = Vec::new();
    for (name, (shape, values)) in &tensors {
        if name == drop {
            continue;
        }
        match &reshape {
            Some((target, new_shape)) if name == target => {
                let n: usize = new_shape.iter().product();
                out.push((
                    name.clone(),
                    Dtype::F32,
                    new_shape.clone(),
                    f32_bytes(&vec![0.0; n]),
                ));
            }
            _ => out.push((name.clone(), Dtype::F32, shape.clone(), f32_bytes(values))),
        }
    }
    write_safetensors(&dir.join("model.safetensors"), &out);
}

#[test]
fn missing_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = broken_dir(tmp.path(), "m");
    rewrite_without(&dir, "encoder.layer.1.output.dense.weight", None);
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, EncoderError::MissingTensor { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("encoder.layer.1.output.dense.weight"),
        "{err}"
    );
}

#[test]
fn wrong_shaped_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = broken_dir(tmp.path(), "m");
    rewrite_without(
        &dir,
        "",
        Some(("encoder.layer.0.intermediate.dense.weight", vec![32, 64])),
    );
    let err = load(&dir).unwrap_err();
    match &err {
        EncoderError::TensorShape {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "encoder.layer.0.intermediate.dense.weight");
            assert_eq!(expected, &vec![64, 32]);
            assert_eq!(found, &vec![32, 64]);
        }
        other => panic!("expected a shape error, got {other}"),
    }
}

#[test]
fn truncated_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = broken_dir(tmp.path(), "m");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, EncoderError::Safetensors { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"));
}

#[test]
fn missing_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = broken_dir(tmp.path(), "m");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, EncoderError::MissingFile { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"));
}

#[test]
fn malformed_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = broken_dir(tmp.path(), "m");
    std::fs::write(dir.join("tokenizer.json"), b"{not json").unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(err, EncoderError::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"));
}
