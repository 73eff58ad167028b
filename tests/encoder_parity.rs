//! Parity with sentence-transformers' own outputs for all-MiniLM-L6-v2
//! (`../shared/fixtures/minilm_reference.json`), and batch invariance.

mod common;

use common::{json_floats, max_abs_diff, model_dir, shared};
use mtl::encoder::SentenceEncoder;
use serde_json::Value;

/// The backend compiled in (NdArray by default; CUDA with `--features cuda`).
type B = mtl::backend::Backend;

struct Reference {
    text: String,
    input_ids: Vec<u32>,
    embedding: Vec<f32>,
    mean_pooled: Vec<f32>,
    last_hidden_state: Option<Vec<f32>>,
}

fn reference() -> Vec<Reference> {
    let path = shared().join("fixtures/minilm_reference.json");
    let json: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("fixture JSON");
    json["sentences"]
        .as_array()
        .expect("sentences")
        .iter()
        .map(|s| Reference {
            text: s["text"].as_str().expect("text").to_string(),
            input_ids: s["input_ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect(),
            embedding: json_floats(&s["embedding"]),
            mean_pooled: json_floats(&s["mean_pooled"]),
            last_hidden_state: s.get("last_hidden_state").map(json_floats),
        })
        .collect()
}

fn encoder() -> SentenceEncoder<B> {
    SentenceEncoder::load(model_dir(), &mtl::backend::device()).expect("load all-MiniLM-L6-v2")
}

#[test]
fn input_ids_match_for_all_sentences() {
    let refs = reference();
    assert_eq!(refs.len(), 40);
    let enc = encoder();
    assert_eq!(enc.tokenizer().max_seq_length(), 256);
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let encoded = enc.tokenize(&texts).unwrap();
    let mut truncated = 0;
    for (r, e) in refs.iter().zip(&encoded) {
        assert_eq!(e.ids, r.input_ids, "ids of {:?}", r.text);
        truncated += usize::from(e.ids.len() == 256);
    }
    assert_eq!(truncated, 1, "one sentence is truncated at 256 tokens");
}

#[test]
fn normalized_embeddings_and_mean_pooled_match() {
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let enc = encoder();
    assert!(enc.settings.normalize, "modules.json lists Normalize");
    let embeddings = enc.encode_vec(&texts).unwrap();
    let mut worst = 0.0f32;
    for (r, e) in refs.iter().zip(&embeddings) {
        assert_eq!(e.len(), 384);
        let d = max_abs_diff(e, &r.embedding);
        assert!(d <= 1e-5, "embedding of {:?} differs by {d}", r.text);
        worst = worst.max(d);
    }
    eprintln!("largest |embedding - reference| = {worst:e}");

    let pooled = enc.with_normalize(false).encode_vec(&texts).unwrap();
    let mut worst = 0.0f32;
    for (r, p) in refs.iter().zip(&pooled) {
        let d = max_abs_diff(p, &r.mean_pooled);
        assert!(d <= 1e-4, "mean_pooled of {:?} differs by {d}", r.text);
        worst = worst.max(d);
    }
    eprintln!("largest |mean_pooled - reference| = {worst:e}");
}

#[test]
fn last_hidden_state_matches() {
    let refs = reference();
    let enc = encoder();
    let mut checked = 0;
    let mut worst = 0.0f32;
    for r in refs.iter().filter(|r| r.last_hidden_state.is_some()) {
        let encoded = enc.tokenize(&[r.text.as_str()]).unwrap();
        let batch = enc.batch(&[&encoded[0]]);
        let hidden = enc
            .hidden_states(&batch)
            .into_data()
            .into_vec::<f32>()
            .unwrap();
        let expected = r.last_hidden_state.as_ref().unwrap();
        assert_eq!(hidden.len(), expected.len());
        let d = max_abs_diff(&hidden, expected);
        assert!(
            d <= 1e-4,
            "last_hidden_state of {:?} differs by {d}",
            r.text
        );
        worst = worst.max(d);
        checked += 1;
    }
    assert_eq!(checked, 3);
    eprintln!("largest |last_hidden_state - reference| = {worst:e}");
}

#[test]
fn batch_sizes_agree() {
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let enc = encoder();
    let one = enc.clone().with_batch_size(1).encode_vec(&texts).unwrap();
    // The CPU default caps a forward pass at 1024 padded tokens; a cap of 16 tokens puts the
    // longer sentences alone and the shorter ones in pairs and threes.
    assert_eq!(
        enc.settings.max_batch_tokens,
        mtl::encoder::DEFAULT_CPU_BATCH_TOKENS
    );
    let encoded = enc.tokenize(&texts).unwrap();
    let capped = enc.clone().with_max_batch_tokens(16);
    let batches = capped.sorted_batches(&encoded, 40);
    assert!(batches.len() > 1 && batches.len() < texts.len());
    for rows in &batches {
        let longest = rows.iter().map(|&r| encoded[r].len()).max().unwrap();
        assert!(rows.len() == 1 || rows.len() * longest <= 16, "{rows:?}");
    }
    for (size, cap) in [(7, 1024), (40, 1024), (40, 0), (40, 16)] {
        let other = enc
            .clone()
            .with_batch_size(size)
            .with_max_batch_tokens(cap)
            .encode_vec(&texts)
            .unwrap();
        for (a, b) in one.iter().zip(&other) {
            let d = max_abs_diff(a, b);
            assert!(
                d <= 1e-5,
                "batch size {size} (cap {cap} tokens) differs from batch size 1 by {d}"
            );
        }
    }
}

/// Packed batches (the CPU default) give the padded batches' embeddings, in every pooling mode,
/// with sentences of mixed lengths in one batch.
#[test]
fn packed_batches_equal_padded_batches() {
    use mtl::encoder::Pooling;
    let refs = reference();
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();
    let enc = encoder();
    assert!(enc.settings.packed, "CPU backends pack by default");
    let encoded = enc.tokenize(&texts).unwrap();
    let lengths: Vec<usize> = encoded.iter().map(|e| e.len()).collect();
    assert!(lengths.iter().min() < lengths.iter().max(), "{lengths:?}");
    let refs: Vec<&mtl::encoder::Encoded> = encoded.iter().collect();
    let batch = enc.batch(&refs);
    let packed = batch
        .packed
        .as_ref()
        .expect("an inference batch on ndarray is packed");
    assert_eq!(&*packed.lengths, &lengths[..]);
    assert_eq!(packed.input_ids.dims(), [1, lengths.iter().sum::<usize>()]);
    for pooling in [Pooling::Mean, Pooling::Cls, Pooling::Max] {
        let embed = |packed: bool| {
            let enc = enc.clone().with_pooling(pooling).with_packed(packed);
            let rows = enc.pooled(&enc.batch(&refs));
            assert_eq!(rows.dims(), [texts.len(), 384]);
            rows.into_data().to_vec::<f32>().unwrap()
        };
        let (ours, padded) = (embed(true), embed(false));
        let d = max_abs_diff(&ours, &padded);
        assert!(d <= 1e-5, "{pooling}: packed differs from padded by {d}");
    }
    assert!(enc.clone().with_packed(false).batch(&refs).packed.is_none());
}

#[test]
fn pooling_modes_differ_and_empty_input_is_fine() {
    use mtl::encoder::Pooling;
    let enc = encoder();
    let texts = ["", "A sentence.", "   "];
    let mean = enc.clone().encode_vec(&texts).unwrap();
    let cls = enc
        .clone()
        .with_pooling(Pooling::Cls)
        .encode_vec(&texts)
        .unwrap();
    let max = enc
        .clone()
        .with_pooling(Pooling::Max)
        .encode_vec(&texts)
        .unwrap();
    for v in [&mean, &cls, &max] {
        assert_eq!(v.len(), 3);
        assert!(v.iter().flatten().all(|x| x.is_finite()));
        let norm: f32 = v[1].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    assert!(max_abs_diff(&mean[1], &cls[1]) > 1e-3);
    assert!(max_abs_diff(&mean[1], &max[1]) > 1e-3);
    assert_eq!(enc.encode(&[]).unwrap().dims(), [0, 384]);
}
