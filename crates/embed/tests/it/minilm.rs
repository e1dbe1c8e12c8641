//! Parity with sentence-transformers' all-MiniLM-L6-v2 on the real weights (fetched into the
//! model cache on first use), and the default model's latent-attention head.

use std::path::PathBuf;

use crate::common::{cosine, fixture, max_abs_diff, minilm_dir, read_npy_f32};
use latentdb_embed::fetch::{DEFAULT_WEIGHTS_SHA256, models_dir};
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

/// The real model, fetched into the model cache once per test binary.
fn model_dir() -> &'static PathBuf {
    minilm_dir()
}

fn reference() -> (Vec<Sentence>, Vec<Vec<f32>>) {
    let dir = fixture("minilm-reference");
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
    let _ = model_dir(); // fetched first
    let e = Embedder::load_with(
        &ModelSpec::Default,
        &LoadOptions {
            models_dir: Some(models_dir()),
            ..LoadOptions::default()
        },
    )
    .expect("load default");
    let id = e.identity();
    assert_eq!(id.name, "all-MiniLM-L6-v2");
    assert_eq!(id.model_type, "bert");
    assert_eq!(id.weights_sha256, DEFAULT_WEIGHTS_SHA256);
    assert_eq!(id.dimension, 384);
    assert_eq!(id.max_length, 256);
    assert_eq!(id.pooling, Pooling::LatentAttention);
    assert!(id.head_sha256.is_some());
    assert!(e.head().expect("default has a head").is_identity());
    // The identity is stable across loads (the fresh head is seeded).
    let again = Embedder::load(&ModelSpec::Default).expect("load default again");
    assert_eq!(again.identity(), e.identity());
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
    assert_eq!(ids.len(), sentences.len());
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
    assert_eq!((a.len(), b.len()), (texts.len(), texts.len()));
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
    assert_eq!(full.len(), a.len());
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
    let missing = Embedder::load(&ModelSpec::parse("/definitely/not/a/model/dir"))
        .expect_err("no such directory");
    assert_eq!(
        missing.kind(),
        latentdb_embed::ErrorKind::NotFound,
        "{missing}"
    );
}

#[test]
fn trained_head_embeds_the_same_from_text_and_from_cached_states() {
    use candle_nn::Optimizer;
    let base = plain();
    let texts = [
        "a trained head changes the vectors",
        "short",
        "and it runs on cached states too",
    ];
    let opts = EmbedOptions::default();
    let states = base.token_states(&texts, &opts).expect("states");
    let (padded, mask) = pad_token_states(&states).expect("pad");
    // One optimiser step away from mean pooling.
    let head = LatentHead::new_mean_pooling(HeadConfig::default_for(384, base.backbone_ref()), 11)
        .expect("head");
    let (varmap, trainable) = head
        .trainable(&candle_core::Device::Cpu)
        .expect("trainable");
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: 1e-2,
            ..Default::default()
        },
    )
    .expect("adamw");
    let out = trainable.forward(&padded, &mask).expect("forward");
    let loss = out.sum_all().expect("sum");
    opt.backward_step(&loss).expect("step");
    let dir = tempfile::tempdir().expect("tempdir");
    trainable.save(dir.path()).expect("save");
    let reloaded = LatentHead::load(dir.path()).expect("load");
    assert!(!reloaded.is_identity());
    let from_states = reloaded
        .forward(&padded, &mask)
        .expect("forward")
        .to_vec2::<f32>()
        .expect("vec");
    let headed = plain().with_head(reloaded).expect("attach");
    let from_text = headed.embed(&texts, &opts).expect("embed");
    let mean = base.embed(&texts, &opts).expect("embed");
    // A head directory is a model spec of its own (its backbone found in the model cache).
    let by_spec = Embedder::load(&ModelSpec::Dir(dir.path().to_path_buf())).expect("load head dir");
    assert_eq!(by_spec.identity().pooling, Pooling::LatentAttention);
    assert_eq!(
        by_spec.identity().head_sha256,
        headed.identity().head_sha256
    );
    let from_spec = by_spec.embed(&texts, &opts).expect("embed");
    for i in 0..texts.len() {
        assert!(
            max_abs_diff(&from_text[i], &from_spec[i]) <= 1e-6,
            "row {i}"
        );
        assert!(
            max_abs_diff(&from_text[i], &from_states[i]) <= 1e-5,
            "row {i}"
        );
        assert!(
            max_abs_diff(&from_text[i], &mean[i]) > 1e-4,
            "row {i}: head had no effect"
        );
    }
}

#[test]
fn generic_padded_path_agrees_with_the_packed_kernels() {
    // f64 weights take the generic candle path (padded batches, stock ops) instead of the fused
    // f32 CPU kernels; both must match the reference.
    let f64_model = Embedder::from_dir(
        model_dir(),
        &LoadOptions {
            dtype: candle_core::DType::F64,
            ..LoadOptions::default()
        },
    )
    .expect("load f64");
    let (sentences, want) = reference();
    let texts: Vec<&str> = sentences.iter().take(40).map(|s| s.text.as_str()).collect();
    let opts = EmbedOptions {
        batch_size: 8,
        ..EmbedOptions::default()
    };
    let generic = f64_model.embed(&texts, &opts).expect("embed");
    let packed = plain().embed(&texts, &opts).expect("embed");
    for i in 0..texts.len() {
        let c = cosine(&generic[i], &want[i]);
        assert!(c >= 0.9999, "row {i}: generic path cosine {c}");
        assert!(
            max_abs_diff(&generic[i], &packed[i]) <= 1e-4,
            "row {i}: paths differ"
        );
    }
}

#[test]
fn one_embedder_serves_many_threads() {
    let e = plain();
    let texts = [
        "shared across threads",
        "same vectors from every thread",
        "x",
    ];
    let want = e.embed(&texts, &EmbedOptions::default()).expect("embed");
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| e.embed(&texts, &EmbedOptions::default()).expect("embed")))
            .collect();
        for h in handles {
            let got = h.join().expect("thread");
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!(max_abs_diff(g, w) <= 1e-6);
            }
        }
    });
}
