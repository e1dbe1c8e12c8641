//! Fusion of the dense and lexical result lists of a hybrid search.
//!
//! Each leg gives its best `depth` candidates, best first, with a score where larger is better
//! (cosine similarity, inner product or negated distance for the dense leg, BM25 for the
//! lexical leg). A candidate missing from a leg contributes nothing from that leg. Three
//! methods:
//!
//! - **RRF** (reciprocal-rank fusion): `Σ w_leg / (k + rank_leg)`, ranks from 1. Only ranks
//!   count, so the legs' score scales do not matter; a small `k` trusts the top ranks more.
//! - **DBSF** (distribution-based score fusion, as in Qdrant): each leg's scores are mapped to
//!   `[0, 1]` by `(s - (μ - 3σ)) / 6σ` (clamped), then blended `Σ w_leg · s'`.
//! - **Min-max**: each leg's scores are mapped to `[0, 1]` by `(s - min) / (max - min)`, then
//!   blended `Σ w_leg · s'`.
//!
//! Ties in the fused score are broken by the better dense rank, then the better lexical rank,
//! so the result order is deterministic.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest per-leg candidate depth a hybrid search accepts.
pub const MAX_DEPTH: usize = 10_000;

/// The largest RRF `k` accepted.
pub const MAX_RRF_K: f32 = 1_000_000.0;

/// How the two legs of a hybrid search are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FusionMethod {
    /// Reciprocal-rank fusion with a constant `k` and per-leg weights.
    Rrf,
    /// Distribution-based score fusion: scores normalised by mean ± 3 standard deviations.
    Dbsf,
    /// Scores normalised by each leg's minimum and maximum, blended with the weights.
    MinMax,
}

impl FusionMethod {
    /// Every method, for listings and fitting.
    pub const ALL: [FusionMethod; 3] =
        [FusionMethod::Rrf, FusionMethod::Dbsf, FusionMethod::MinMax];

    /// The name used in settings, the CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FusionMethod::Rrf => "rrf",
            FusionMethod::Dbsf => "dbsf",
            FusionMethod::MinMax => "minmax",
        }
    }
}

impl fmt::Display for FusionMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FusionMethod {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "rrf" => Ok(FusionMethod::Rrf),
            "dbsf" => Ok(FusionMethod::Dbsf),
            "minmax" | "min-max" | "min_max" => Ok(FusionMethod::MinMax),
            _ => Err(Error::InvalidArgument(format!(
                "unknown fusion {:?}: expected rrf, dbsf or minmax",
                crate::error::bounded(s)
            ))),
        }
    }
}

/// The parameters of a fusion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionParams {
    /// The method.
    pub method: FusionMethod,
    /// RRF's rank constant (RRF only), > 0.
    #[serde(serialize_with = "short::f32")]
    pub rrf_k: f32,
    /// The weights of the dense and the lexical leg, each finite and >= 0, not both 0.
    #[serde(serialize_with = "short::pair")]
    pub weights: [f32; 2],
}

/// `f32`s serialised as the `f64` of their shortest decimal form, so that JSON shows 0.4, not
/// 0.4000000059604645 (they read back as the same `f32`).
pub(crate) mod short {
    use serde::Serializer;

    /// The `f64` whose decimal form is `x`'s shortest.
    pub fn decimal(x: f32) -> f64 {
        x.to_string().parse().unwrap_or(f64::from(x))
    }

    pub fn f32<S: Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(decimal(*x))
    }

    pub fn pair<S: Serializer>(x: &[f32; 2], s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&decimal(x[0]))?;
        t.serialize_element(&decimal(x[1]))?;
        t.end()
    }
}

impl FusionParams {
    /// Checks the parameters: [`Error::InvalidArgument`] when out of range.
    pub fn validate(&self) -> Result<()> {
        if !(self.rrf_k.is_finite() && self.rrf_k > 0.0 && self.rrf_k <= MAX_RRF_K) {
            return Err(Error::InvalidArgument(format!(
                "rrf_k must be a number above 0 and at most {MAX_RRF_K}, got {}",
                self.rrf_k
            )));
        }
        let [d, l] = self.weights;
        if !(d.is_finite() && l.is_finite() && d >= 0.0 && l >= 0.0 && d <= 1e6 && l <= 1e6) {
            return Err(Error::InvalidArgument(format!(
                "fusion weights must be numbers between 0 and 1e6, got {d},{l}"
            )));
        }
        if d == 0.0 && l == 0.0 {
            return Err(Error::InvalidArgument(
                "fusion weights must not both be 0".into(),
            ));
        }
        Ok(())
    }
}

/// One fused candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused<T> {
    /// The candidate.
    pub id: T,
    /// The fused score (larger is better).
    pub score: f32,
    /// Its rank (from 1) and score in the dense leg, if it was there.
    pub dense: Option<(usize, f32)>,
    /// Its rank (from 1) and score in the lexical leg, if it was there.
    pub lexical: Option<(usize, f32)>,
}

/// Fuses two result lists (each best first, larger score better) into the best `k`,
/// best first. `params` must be valid ([`FusionParams::validate`]).
pub fn fuse<T: Copy + Eq + Hash>(
    dense: &[(T, f32)],
    lexical: &[(T, f32)],
    params: &FusionParams,
    k: usize,
) -> Vec<Fused<T>> {
    let mut by_id: HashMap<T, usize> = HashMap::with_capacity(dense.len() + lexical.len());
    let mut out: Vec<Fused<T>> = Vec::with_capacity(dense.len() + lexical.len());
    for (rank, &(id, score)) in dense.iter().enumerate() {
        if by_id.contains_key(&id) {
            continue; // a leg lists each candidate once; keep its best rank
        }
        by_id.insert(id, out.len());
        out.push(Fused {
            id,
            score: 0.0,
            dense: Some((rank + 1, score)),
            lexical: None,
        });
    }
    for (rank, &(id, score)) in lexical.iter().enumerate() {
        match by_id.get(&id) {
            Some(&i) => {
                if out[i].lexical.is_none() {
                    out[i].lexical = Some((rank + 1, score));
                }
            }
            None => {
                by_id.insert(id, out.len());
                out.push(Fused {
                    id,
                    score: 0.0,
                    dense: None,
                    lexical: Some((rank + 1, score)),
                });
            }
        }
    }
    let [wd, wl] = params.weights;
    match params.method {
        FusionMethod::Rrf => {
            let k0 = params.rrf_k;
            for f in &mut out {
                let rrf = |leg: Option<(usize, f32)>, w: f32| {
                    leg.map_or(0.0, |(rank, _)| w / (k0 + rank as f32))
                };
                f.score = rrf(f.dense, wd) + rrf(f.lexical, wl);
            }
        }
        FusionMethod::Dbsf | FusionMethod::MinMax => {
            let nd = Normaliser::of(params.method, dense.iter().map(|h| h.1));
            let nl = Normaliser::of(params.method, lexical.iter().map(|h| h.1));
            for f in &mut out {
                let part = |leg: Option<(usize, f32)>, n: &Normaliser, w: f32| {
                    leg.map_or(0.0, |(_, s)| w * n.apply(s))
                };
                f.score = part(f.dense, &nd, wd) + part(f.lexical, &nl, wl);
            }
        }
    }
    let rank_of = |leg: Option<(usize, f32)>| leg.map_or(usize::MAX, |(r, _)| r);
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| rank_of(a.dense).cmp(&rank_of(b.dense)))
            .then_with(|| rank_of(a.lexical).cmp(&rank_of(b.lexical)))
    });
    out.truncate(k);
    out
}

/// Maps one leg's scores onto `[0, 1]`.
#[derive(Debug, Clone, Copy)]
struct Normaliser {
    low: f64,
    span: f64,
}

impl Normaliser {
    fn of(method: FusionMethod, scores: impl Iterator<Item = f32> + Clone) -> Self {
        let n = scores.clone().count();
        if n == 0 {
            return Normaliser {
                low: 0.0,
                span: 0.0,
            };
        }
        match method {
            FusionMethod::Dbsf => {
                let mean = scores.clone().map(f64::from).sum::<f64>() / n as f64;
                let var = scores.map(|s| (f64::from(s) - mean).powi(2)).sum::<f64>() / n as f64;
                let sd = var.sqrt();
                Normaliser {
                    low: mean - 3.0 * sd,
                    span: 6.0 * sd,
                }
            }
            _ => {
                let (min, max) = scores.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
                    (lo.min(f64::from(s)), hi.max(f64::from(s)))
                });
                Normaliser {
                    low: min,
                    span: max - min,
                }
            }
        }
    }

    /// A leg whose scores are all equal maps every candidate to 1 (all equally good).
    fn apply(&self, s: f32) -> f32 {
        if !(self.span > 0.0 && self.span.is_finite()) {
            return 1.0;
        }
        (((f64::from(s) - self.low) / self.span).clamp(0.0, 1.0)) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(method: FusionMethod, rrf_k: f32, weights: [f32; 2]) -> FusionParams {
        FusionParams {
            method,
            rrf_k,
            weights,
        }
    }

    #[test]
    fn rrf_sums_reciprocal_ranks_with_weights() {
        let dense = [(1u32, 0.9), (2, 0.8), (3, 0.7)];
        let lexical = [(3u32, 12.0), (4, 9.0)];
        let out = fuse(
            &dense,
            &lexical,
            &params(FusionMethod::Rrf, 2.0, [1.0, 1.0]),
            10,
        );
        let score = |id: u32| out.iter().find(|f| f.id == id).map(|f| f.score);
        assert!((score(3).unwrap() - (1.0 / 5.0 + 1.0 / 3.0)).abs() < 1e-6);
        assert!((score(1).unwrap() - 1.0 / 3.0).abs() < 1e-6);
        assert!((score(4).unwrap() - 1.0 / 4.0).abs() < 1e-6);
        // 3 is in both legs: first. 1 ties with nothing: second.
        assert_eq!(out.iter().map(|f| f.id).collect::<Vec<_>>(), [3, 1, 2, 4]);
        assert_eq!(out[0].dense, Some((3, 0.7)));
        assert_eq!(out[0].lexical, Some((1, 12.0)));
        // A zero weight removes a leg's influence.
        let dense_only = fuse(
            &dense,
            &lexical,
            &params(FusionMethod::Rrf, 2.0, [1.0, 0.0]),
            2,
        );
        assert_eq!(dense_only.iter().map(|f| f.id).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn min_max_normalises_each_leg_before_blending() {
        let dense = [(1u32, 0.9), (2, 0.5)];
        let lexical = [(2u32, 30.0), (3, 10.0)];
        let out = fuse(
            &dense,
            &lexical,
            &params(FusionMethod::MinMax, 60.0, [0.5, 0.5]),
            10,
        );
        let score = |id: u32| out.iter().find(|f| f.id == id).unwrap().score;
        assert!((score(1) - 0.5).abs() < 1e-6);
        assert!((score(2) - 0.5).abs() < 1e-6); // 0 (dense min) + 1 (lexical max), halved
        assert!(score(3).abs() < 1e-6);
        // Equal fused scores: the better dense rank first.
        assert_eq!(out[0].id, 1);
    }

    #[test]
    fn dbsf_clamps_to_three_standard_deviations() {
        let dense: Vec<(u32, f32)> = (0..10).map(|i| (i, i as f32)).collect();
        let out = fuse(
            &dense,
            &[],
            &params(FusionMethod::Dbsf, 60.0, [1.0, 1.0]),
            10,
        );
        assert_eq!(out[0].id, 9);
        for f in &out {
            assert!((0.0..=1.0).contains(&f.score), "{f:?}");
        }
        let mean = 4.5f64;
        let sd = (dense
            .iter()
            .map(|&(_, s)| (s as f64 - mean).powi(2))
            .sum::<f64>()
            / 10.0)
            .sqrt();
        let want = ((9.0 - (mean - 3.0 * sd)) / (6.0 * sd)) as f32;
        assert!((out[0].score - want).abs() < 1e-6);
    }

    #[test]
    fn one_empty_leg_or_constant_scores_do_not_break_the_order() {
        let lexical = [(7u32, 3.0), (8, 3.0)];
        for m in FusionMethod::ALL {
            let out = fuse(&[], &lexical, &params(m, 2.0, [1.0, 1.0]), 5);
            assert_eq!(out.iter().map(|f| f.id).collect::<Vec<_>>(), [7, 8], "{m}");
            assert!(out.iter().all(|f| f.score.is_finite() && f.dense.is_none()));
        }
        assert!(fuse::<u32>(&[], &[], &params(FusionMethod::Rrf, 2.0, [1.0, 1.0]), 5).is_empty());
    }

    #[test]
    fn invalid_parameters_are_refused() {
        for bad in [
            params(FusionMethod::Rrf, 0.0, [1.0, 1.0]),
            params(FusionMethod::Rrf, f32::NAN, [1.0, 1.0]),
            params(FusionMethod::Rrf, 2.0, [0.0, 0.0]),
            params(FusionMethod::Rrf, 2.0, [-1.0, 1.0]),
            params(FusionMethod::Rrf, 2.0, [f32::INFINITY, 1.0]),
        ] {
            let err = bad.validate().unwrap_err();
            assert_eq!(
                err.kind(),
                latentdb_types::ErrorKind::InvalidArgument,
                "{bad:?}"
            );
        }
        assert!("RRF".parse::<FusionMethod>().is_ok());
        let p = params(FusionMethod::MinMax, 2.0, [0.6, 0.4]);
        let json = serde_json::to_value(p).unwrap();
        assert_eq!(json["weights"], serde_json::json!([0.6, 0.4]));
        assert_eq!(serde_json::from_value::<FusionParams>(json).unwrap(), p);
        assert!("borda".parse::<FusionMethod>().is_err());
    }
}
