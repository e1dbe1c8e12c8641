//! BM25's two free parameters.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest `k1` accepted (BM25 implementations use 0.5..3; beyond 100 term frequency would no
/// longer saturate in any meaningful way).
pub const MAX_K1: f32 = 100.0;

/// BM25's parameters: `k1` (term-frequency saturation) and `b` (length normalisation).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bm25Params {
    /// Term-frequency saturation, finite, in `[0, 100]`. 0: a term counts once per document.
    pub k1: f32,
    /// Document-length normalisation, in `[0, 1]`. 0: none; 1: full.
    pub b: f32,
}

impl Default for Bm25Params {
    /// `k1 = 1.2`, `b = 0.75` (the usual values, Lucene's defaults).
    fn default() -> Self {
        Self { k1: 1.2, b: 0.75 }
    }
}

impl Bm25Params {
    /// Checks that `k1` is finite and in `[0, 100]` and `b` in `[0, 1]`; otherwise an
    /// [`Error::InvalidArgument`].
    pub fn validate(&self) -> Result<()> {
        if !(self.k1.is_finite() && (0.0..=MAX_K1).contains(&self.k1)) {
            return Err(Error::InvalidArgument(format!(
                "bm25 k1 must be finite and in [0, {MAX_K1}], got {}",
                self.k1
            )));
        }
        if !(0.0..=1.0).contains(&self.b) {
            return Err(Error::InvalidArgument(format!(
                "bm25 b must be in [0, 1], got {}",
                self.b
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latentdb_types::ErrorKind;

    #[test]
    fn ranges() {
        Bm25Params::default().validate().unwrap();
        for (k1, b) in [(0.0, 0.0), (100.0, 1.0), (2.0, 0.5)] {
            Bm25Params { k1, b }.validate().unwrap();
        }
        for (k1, b) in [
            (-0.1, 0.5),
            (100.5, 0.5),
            (f32::NAN, 0.5),
            (f32::INFINITY, 0.5),
            (1.2, -0.01),
            (1.2, 1.01),
            (1.2, f32::NAN),
        ] {
            let e = Bm25Params { k1, b }.validate().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{k1} {b}");
        }
    }

    #[test]
    fn serde_form() {
        let p: Bm25Params = serde_json::from_str(r#"{"k1": 0.9, "b": 0.4}"#).unwrap();
        assert_eq!(p, Bm25Params { k1: 0.9, b: 0.4 });
    }
}
