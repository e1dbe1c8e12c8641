//! Parity with NVIDIA's own NV-Embed code on a tiny random-weight checkpoint.

use crate::common::{cosine, fixture, max_abs_diff};
use latentdb_embed::{EmbedOptions, Embedder, ErrorKind, Instruction, LoadOptions};
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    dim: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    instruction: String,
    max_length: usize,
    texts: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    instruction_tokens_masked: usize,
    embeddings: Vec<Vec<f32>>,
}

fn load() -> (Embedder, Expected) {
    let dir = fixture("nvembed-tiny");
    let embedder = Embedder::from_dir(&dir, &LoadOptions::default()).expect("load nvembed-tiny");
    let bytes = std::fs::read(dir.join("expected.json")).expect("expected.json");
    let expected: Expected = serde_json::from_slice(&bytes).expect("parse expected.json");
    (embedder, expected)
}

fn options(case: &Case, batch_size: usize) -> EmbedOptions {
    EmbedOptions {
        instruction: (!case.instruction.is_empty())
            .then(|| Instruction::Raw(case.instruction.clone())),
        max_length: Some(case.max_length),
        batch_size,
    }
}

fn assert_close(case: &str, got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len(), "{case}: row count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let cos = cosine(g, w);
        let diff = max_abs_diff(g, w);
        assert!(cos >= 0.99999, "{case} row {i}: cosine {cos}");
        assert!(diff <= 1e-4, "{case} row {i}: max abs diff {diff}");
    }
}

#[test]
fn token_ids_and_pool_mask_match_reference() {
    let (embedder, expected) = load();
    assert_eq!(embedder.dimension(), expected.dim);
    assert!(expected.cases.len() >= 5);
    for case in &expected.cases {
        let (ids, skip) = embedder
            .tokenize(&case.texts, &options(case, 8))
            .expect("tokenize");
        assert_eq!(ids, case.input_ids, "{}: token ids", case.name);
        assert_eq!(
            skip, case.instruction_tokens_masked,
            "{}: instruction tokens",
            case.name
        );
    }
}

#[test]
fn embeddings_match_reference_batched_and_one_by_one() {
    let (embedder, expected) = load();
    for case in &expected.cases {
        let batched = embedder
            .embed(&case.texts, &options(case, 32))
            .expect("embed");
        assert_close(&case.name, &batched, &case.embeddings);
        let single = embedder
            .embed(&case.texts, &options(case, 1))
            .expect("embed");
        assert_close(
            &format!("{} (one by one)", case.name),
            &single,
            &case.embeddings,
        );
        assert_eq!(batched.len(), single.len());
        for (a, b) in batched.iter().zip(&single) {
            assert!(
                max_abs_diff(a, b) <= 1e-5,
                "{}: batch differs from single",
                case.name
            );
        }
    }
}

#[test]
fn padding_never_changes_a_vector() {
    let (embedder, _) = load();
    let opts = EmbedOptions::default();
    let short = "Rust";
    let alone = embedder.embed(&[short], &opts).expect("embed");
    let long = "a much longer text that forces plenty of padding onto the short one in its batch "
        .repeat(4);
    let ids_short = embedder.tokenize(&[short], &opts).expect("tok").0;
    let ids_long = embedder.tokenize(&[long.as_str()], &opts).expect("tok").0;
    let rows = embedder
        .forward_batch(&[&ids_short[0], &ids_long[0]], 0)
        .expect("forward");
    assert!(ids_long[0].len() > ids_short[0].len() + 20);
    assert!(max_abs_diff(&rows[0], &alone[0]) <= 1e-5);
}

#[test]
fn instruction_forms_agree() {
    let (embedder, _) = load();
    let text = ["what is a vector database?"];
    let raw = EmbedOptions {
        instruction: Some(Instruction::Raw(
            "Instruct: Given a question, retrieve passages that answer the question\nQuery: "
                .into(),
        )),
        ..EmbedOptions::default()
    };
    let sentence = EmbedOptions {
        instruction: Some(Instruction::Text(
            "Given a question, retrieve passages that answer the question".into(),
        )),
        ..EmbedOptions::default()
    };
    let task = EmbedOptions {
        instruction: Some(Instruction::parse("NQ")),
        ..EmbedOptions::default()
    };
    let a = embedder.embed(&text, &raw).expect("embed");
    let b = embedder.embed(&text, &sentence).expect("embed");
    let c = embedder.embed(&text, &task).expect("embed");
    let none = embedder
        .embed(&text, &EmbedOptions::default())
        .expect("embed");
    assert!(max_abs_diff(&a[0], &b[0]) <= 1e-6);
    assert!(max_abs_diff(&a[0], &c[0]) <= 1e-6);
    assert!(
        max_abs_diff(&a[0], &none[0]) > 1e-3,
        "the instruction must matter"
    );
}

#[test]
fn bad_options_are_errors() {
    let (embedder, _) = load();
    let zero = EmbedOptions {
        batch_size: 0,
        ..EmbedOptions::default()
    };
    let err = embedder.embed(&["x"], &zero).expect_err("batch size 0");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let too_long = EmbedOptions {
        max_length: Some(10_000_000),
        ..EmbedOptions::default()
    };
    let err = embedder
        .embed(&["x"], &too_long)
        .expect_err("longer than the model allows");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let empty: Vec<Vec<f32>> = embedder
        .embed(&[] as &[&str], &EmbedOptions::default())
        .expect("empty");
    assert!(empty.is_empty());
}
