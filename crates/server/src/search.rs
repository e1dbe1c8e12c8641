//! Search, search batches, delete by filter and compaction: the calls backed by the index.

use std::sync::Arc;

use latentdb::fusion::FusionMethod;
use latentdb::{Bm25Params, Database, SearchMode};
use serde_json::Value;

use crate::call::CallToken;
use crate::convert;
use crate::error::echo;
use crate::error::{ServiceError, limit};
use crate::pb;
use crate::service::{LatentDbService, blocking, check_text};

/// The k used when a request leaves it 0 (proto3's default): the contract in the proto.
pub(crate) const DEFAULT_K: usize = 10;

/// A search request converted for the library, and the BM25 parameters it sets alone: a
/// request may set `bm25_k1` or `bm25_b` without the other, which then comes from the
/// collection's lexical settings (see [`Bm25Override::resolve`]).
struct Converted {
    req: latentdb::SearchRequest,
    bm25: Bm25Override,
}

/// BM25 parameters of a request that sets only one of them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bm25Override {
    k1: Option<f32>,
    b: Option<f32>,
}

impl Bm25Override {
    /// True when the request set one parameter but not the other.
    fn is_partial(self) -> bool {
        self.k1.is_some() != self.b.is_some()
    }

    /// Completes `req.bm25` with `stored`'s value (the collection's) of the parameter the
    /// request left unset.
    fn apply(self, stored: Bm25Params, req: &mut latentdb::SearchRequest) {
        req.bm25 = Some(Bm25Params {
            k1: self.k1.unwrap_or(stored.k1),
            b: self.b.unwrap_or(stored.b),
        });
    }
}

/// The library's search mode for a protobuf one (`None`: unspecified, the library default).
pub(crate) fn search_mode(m: i32) -> Result<Option<SearchMode>, ServiceError> {
    match pb::SearchMode::try_from(m) {
        Ok(pb::SearchMode::Unspecified) => Ok(None),
        Ok(pb::SearchMode::Dense) => Ok(Some(SearchMode::Dense)),
        Ok(pb::SearchMode::Lexical) => Ok(Some(SearchMode::Lexical)),
        Ok(pb::SearchMode::Hybrid) => Ok(Some(SearchMode::Hybrid)),
        Err(_) => Err(ServiceError::InvalidArgument(format!(
            "unknown search mode {m}"
        ))),
    }
}

/// The library's fusion method for a protobuf one (`None`: unspecified, the collection's).
pub(crate) fn fusion(f: i32) -> Result<Option<FusionMethod>, ServiceError> {
    match pb::Fusion::try_from(f) {
        Ok(pb::Fusion::Unspecified) => Ok(None),
        Ok(pb::Fusion::Rrf) => Ok(Some(FusionMethod::Rrf)),
        Ok(pb::Fusion::Dbsf) => Ok(Some(FusionMethod::Dbsf)),
        Ok(pb::Fusion::MinMax) => Ok(Some(FusionMethod::MinMax)),
        Err(_) => Err(ServiceError::InvalidArgument(format!("unknown fusion {f}"))),
    }
}

/// An optional number that must be finite when set. (The library checks the ranges; a NaN is
/// refused here so that the message names the field as the proto spells it.)
fn finite(what: &str, x: Option<f32>) -> Result<Option<f32>, ServiceError> {
    match x {
        Some(v) if !v.is_finite() => Err(ServiceError::InvalidArgument(format!(
            "{what} must be a finite number, got {v}"
        ))),
        other => Ok(other),
    }
}

/// The fusion weights: none, or exactly two finite numbers (dense, lexical).
pub(crate) fn weights(w: &[f32]) -> Result<Option<[f32; 2]>, ServiceError> {
    match *w {
        [] => Ok(None),
        [d, l] if d.is_finite() && l.is_finite() => Ok(Some([d, l])),
        [d, l] => Err(ServiceError::InvalidArgument(format!(
            "weights must be finite numbers, got {d}, {l}"
        ))),
        _ => Err(ServiceError::InvalidArgument(format!(
            "weights must be exactly 2 numbers (dense, lexical) or none, got {}",
            w.len()
        ))),
    }
}

/// A protobuf search request as the library's, checked against the limits.
fn request(svc: &LatentDbService, q: pb::SearchRequest) -> Result<Converted, ServiceError> {
    let defaults = latentdb::SearchRequest::default();
    let k = if q.k == 0 { DEFAULT_K } else { q.k as usize };
    if k > svc.limits.max_k {
        return Err(limit("k", k, svc.limits.max_k));
    }
    let mode = search_mode(q.mode)?;
    let vector = (!q.vector.is_empty()).then_some(q.vector);
    match (&vector, &q.text) {
        // Lexical and hybrid searches may take both: the text for the lexical leg, the vector
        // for the dense one; the library decides for an unspecified mode.
        (Some(_), Some(_)) if mode == Some(SearchMode::Dense) => {
            return Err(ServiceError::InvalidArgument(
                "give a query vector or a query text, not both".into(),
            ));
        }
        (None, None) => {
            return Err(ServiceError::InvalidArgument(
                "a search needs a query vector or a query text".into(),
            ));
        }
        (_, Some(text)) => check_text("query text", text, &svc.limits)?,
        (Some(_), None) => {}
    }
    if q.task.is_some() && q.instruction.is_some() {
        return Err(ServiceError::InvalidArgument(
            "give task or instruction, not both".into(),
        ));
    }
    let bm25 = Bm25Override {
        k1: finite("bm25_k1", q.bm25_k1)?,
        b: finite("bm25_b", q.bm25_b)?,
    };
    let req = latentdb::SearchRequest {
        vector,
        text: q.text,
        task: q.task,
        instruction: q.instruction,
        k,
        ef: q.ef.map(|ef| ef as usize),
        filter: convert::filter(q.filter)?,
        exact: q.exact,
        with_vectors: q.with_vectors.unwrap_or(defaults.with_vectors),
        with_text: q.with_text.unwrap_or(defaults.with_text),
        with_metadata: q.with_metadata.unwrap_or(defaults.with_metadata),
        mode,
        fusion: fusion(q.fusion)?,
        rrf_k: finite("rrf_k", q.rrf_k)?,
        weights: weights(&q.weights)?,
        depth: q.depth.map(|d| d as usize),
        bm25: match (bm25.k1, bm25.b) {
            (Some(k1), Some(b)) => Some(Bm25Params { k1, b }),
            _ => None,
        },
        explain: q.explain,
    };
    Ok(Converted { req, bm25 })
}

/// True when the search may run the embedder: a text query without a vector, in a mode that
/// may embed it (every mode but lexical; the library's default may be dense or hybrid).
fn embeds(req: &latentdb::SearchRequest) -> bool {
    req.text.is_some() && req.vector.is_none() && req.mode != Some(SearchMode::Lexical)
}

/// A rank as a message field (ranks are bounded by the search depth).
fn rank(r: usize) -> u32 {
    u32::try_from(r).unwrap_or(u32::MAX)
}

/// A hit's explanation as a message.
fn explain(e: latentdb::HitExplain) -> pb::HitExplain {
    pb::HitExplain {
        dense_rank: e.dense_rank.map(rank),
        dense_score: e.dense_score,
        lexical_rank: e.lexical_rank.map(rank),
        lexical_score: e.lexical_score,
        fused_score: e.fused_score,
    }
}

/// Hits as a response message.
fn response(hits: Vec<latentdb::SearchHit>) -> pb::SearchResponse {
    pb::SearchResponse {
        hits: hits
            .into_iter()
            .map(|h| pb::SearchHit {
                id: h.id.into_string(),
                score: h.score,
                text: h.text,
                metadata: Some(convert::json_to_struct(h.metadata)),
                vector: h.vector.unwrap_or_default(),
                explain: h.explain.map(explain),
            })
            .collect(),
    }
}

/// `Search`.
pub(crate) async fn search(
    svc: &LatentDbService,
    call: CallToken,
    q: pb::SearchRequest,
) -> Result<pb::SearchResponse, ServiceError> {
    let collection = q.collection.clone();
    let Converted { mut req, bm25 } = request(svc, q)?;
    // Text queries that may be embedded run the embedder: they take an embedding permit.
    let _permit = if embeds(&req) {
        Some(svc.embed_permit().await?)
    } else {
        None
    };
    let hits = blocking(&call, &svc.db, move |db| {
        if bm25.is_partial() {
            bm25.apply(db.lexical_settings(&collection)?.bm25, &mut req);
        }
        Ok(db.search(&collection, &req)?)
    })
    .await?;
    Ok(response(hits))
}

/// `SearchBatch`.
pub(crate) async fn search_batch(
    svc: &LatentDbService,
    call: CallToken,
    batch: pb::SearchBatchRequest,
) -> Result<pb::SearchBatchResponse, ServiceError> {
    let n = batch.queries.len();
    if n > svc.limits.max_batch_queries {
        return Err(limit("queries per batch", n, svc.limits.max_batch_queries));
    }
    let collection = batch.collection;
    let mut reqs = Vec::with_capacity(n);
    let mut overrides = Vec::new();
    for (i, q) in batch.queries.into_iter().enumerate() {
        if !q.collection.is_empty() && q.collection != collection {
            return Err(ServiceError::InvalidArgument(format!(
                "query {i} names collection {}, the batch searches {}",
                echo(&q.collection),
                echo(&collection)
            )));
        }
        let Converted { req, bm25 } = request(svc, q).map_err(|e| at_query(i, e))?;
        if bm25.is_partial() {
            overrides.push((i, bm25));
        }
        reqs.push(req);
    }
    let _permit = if reqs.iter().any(embeds) {
        Some(svc.embed_permit().await?)
    } else {
        None
    };
    let results = blocking(&call, &svc.db, move |db| {
        if !overrides.is_empty() {
            let stored = db.lexical_settings(&collection)?.bm25;
            for (i, bm25) in overrides {
                if let Some(req) = reqs.get_mut(i) {
                    bm25.apply(stored, req);
                }
            }
        }
        Ok(db.search_batch(&collection, &reqs)?)
    })
    .await?;
    Ok(pb::SearchBatchResponse {
        results: results.into_iter().map(response).collect(),
    })
}

/// Prefixes a request error with the query's index.
fn at_query(i: usize, e: ServiceError) -> ServiceError {
    match e {
        ServiceError::InvalidArgument(m) => {
            ServiceError::InvalidArgument(format!("query {i}: {m}"))
        }
        ServiceError::Limit(m) => ServiceError::Limit(format!("query {i}: {m}")),
        other => other,
    }
}

/// `Delete` with a filter.
pub(crate) async fn delete_by_filter(
    call: &CallToken,
    db: &Arc<Database>,
    collection: String,
    filter: Value,
) -> Result<Vec<String>, ServiceError> {
    blocking(call, db, move |db| {
        Ok(db.delete_by_filter(&collection, &filter)?)
    })
    .await
}

/// `Compact`.
pub(crate) async fn compact(
    call: CallToken,
    db: &Arc<Database>,
    collection: String,
) -> Result<pb::CompactResponse, ServiceError> {
    let report = blocking(&call, db, move |db| Ok(db.compact(&collection)?)).await?;
    Ok(pb::CompactResponse {
        points: report.after_total as u64,
        removed: report.dropped as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use latentdb_types::ErrorKind;

    #[test]
    fn enum_numbers_map_or_are_refused() {
        assert_eq!(search_mode(0).ok(), Some(None));
        assert_eq!(search_mode(1).ok(), Some(Some(SearchMode::Dense)));
        assert_eq!(search_mode(2).ok(), Some(Some(SearchMode::Lexical)));
        assert_eq!(search_mode(3).ok(), Some(Some(SearchMode::Hybrid)));
        assert_eq!(fusion(0).ok(), Some(None));
        assert_eq!(fusion(1).ok(), Some(Some(FusionMethod::Rrf)));
        assert_eq!(fusion(2).ok(), Some(Some(FusionMethod::Dbsf)));
        assert_eq!(fusion(3).ok(), Some(Some(FusionMethod::MinMax)));
        for n in [-1, 4, 5, 99, i32::MIN, i32::MAX] {
            let e = search_mode(n).expect_err("unknown mode");
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.to_string().contains(&n.to_string()), "{e}");
            assert_eq!(
                fusion(n).expect_err("unknown fusion").kind(),
                ErrorKind::InvalidArgument
            );
        }
    }

    #[test]
    fn weights_are_none_or_exactly_two_finite_numbers() {
        assert_eq!(weights(&[]).ok(), Some(None));
        // Every pair of finite numbers passes through unchanged (ranges are the library's).
        let samples = [
            0.0,
            -0.0,
            1e-30,
            0.5,
            1.0,
            3.25,
            1e6,
            1e30,
            -1.0,
            f32::MAX,
            f32::MIN,
        ];
        for &d in &samples {
            for &l in &samples {
                assert_eq!(weights(&[d, l]).ok(), Some(Some([d, l])), "{d} {l}");
            }
        }
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for w in [[bad, 1.0], [1.0, bad]] {
                let e = weights(&w).expect_err("non-finite");
                assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            }
        }
        for n in [1, 3, 4, 17] {
            let e = weights(&vec![1.0; n]).expect_err("wrong length");
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.to_string().contains(&format!("got {n}")), "{e}");
        }
    }

    #[test]
    fn one_bm25_parameter_takes_the_other_from_the_collection() {
        let stored = Bm25Params { k1: 0.9, b: 0.4 };
        let mut req = latentdb::SearchRequest::default();
        let only_b = Bm25Override {
            k1: None,
            b: Some(0.0),
        };
        assert!(only_b.is_partial());
        only_b.apply(stored, &mut req);
        assert_eq!(req.bm25, Some(Bm25Params { k1: 0.9, b: 0.0 }));
        let only_k1 = Bm25Override {
            k1: Some(2.0),
            b: None,
        };
        only_k1.apply(stored, &mut req);
        assert_eq!(req.bm25, Some(Bm25Params { k1: 2.0, b: 0.4 }));
        assert!(!Bm25Override::default().is_partial());
        assert!(
            !Bm25Override {
                k1: Some(1.0),
                b: Some(0.5)
            }
            .is_partial()
        );
        assert!(finite("rrf_k", Some(f32::NAN)).is_err());
        assert_eq!(finite("rrf_k", Some(2.0)).ok(), Some(Some(2.0)));
        assert_eq!(finite("rrf_k", None).ok(), Some(None));
    }
}
