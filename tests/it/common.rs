//! Helpers shared by the integration tests.
#![allow(dead_code)]

use latentdb::Document;
use serde_json::json;

/// A deterministic vector for `(seed, dim)`.
pub fn vector(seed: u64, dim: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A document whose whole content is a function of its id number, so that a reader can check
/// it is intact.
pub fn doc(n: u64, dim: usize) -> Document {
    Document::new(format!("doc-{n:08}"), vector(n, dim))
        .with_text(format!("text of document {n}"))
        .with_metadata(json!({"n": n, "even": n.is_multiple_of(2), "tag": format!("t{}", n % 7)}))
}

/// Checks that a stored record is exactly what [`doc`] wrote.
pub fn assert_intact(r: &latentdb::Record, n: u64, dim: usize) {
    assert_eq!(r.id, format!("doc-{n:08}"));
    assert_eq!(
        r.text.as_deref(),
        Some(format!("text of document {n}").as_str())
    );
    assert_eq!(r.metadata["n"], json!(n));
    assert_eq!(r.metadata["tag"], json!(format!("t{}", n % 7)));
    let want = vector(n, dim);
    assert_eq!(r.vector.len(), dim);
    for (a, b) in r.vector.iter().zip(&want) {
        assert!(
            (a - b).abs() <= 1e-6 * b.abs().max(1.0),
            "vector of {} differs",
            r.id
        );
    }
}
