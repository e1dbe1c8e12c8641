//! Search, search batches, delete by filter and compaction: the calls backed by the index.

use std::sync::Arc;

use latentdb::Database;
use serde_json::Value;

use crate::call::CallToken;
use crate::convert;
use crate::error::echo;
use crate::error::{ServiceError, limit};
use crate::pb;
use crate::service::{LatentDbService, blocking, check_text};

/// The k used when a request leaves it 0 (proto3's default): the contract in the proto.
pub(crate) const DEFAULT_K: usize = 10;

/// A protobuf search request as the library's, checked against the limits.
fn request(
    svc: &LatentDbService,
    q: pb::SearchRequest,
) -> Result<latentdb::SearchRequest, ServiceError> {
    let defaults = latentdb::SearchRequest::default();
    let k = if q.k == 0 { DEFAULT_K } else { q.k as usize };
    if k > svc.limits.max_k {
        return Err(limit("k", k, svc.limits.max_k));
    }
    let vector = (!q.vector.is_empty()).then_some(q.vector);
    match (&vector, &q.text) {
        (Some(_), Some(_)) => {
            return Err(ServiceError::InvalidArgument(
                "give a query vector or a query text, not both".into(),
            ));
        }
        (None, None) => {
            return Err(ServiceError::InvalidArgument(
                "a search needs a query vector or a query text".into(),
            ));
        }
        (None, Some(text)) => check_text("query text", text, &svc.limits)?,
        (Some(_), None) => {}
    }
    if q.task.is_some() && q.instruction.is_some() {
        return Err(ServiceError::InvalidArgument(
            "give task or instruction, not both".into(),
        ));
    }
    Ok(latentdb::SearchRequest {
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
    })
}

/// Hits as a response message.
fn response(hits: Vec<latentdb::SearchHit>) -> pb::SearchResponse {
    pb::SearchResponse {
        hits: hits
            .into_iter()
            .map(|h| pb::SearchHit {
                id: h.id,
                score: h.score,
                text: h.text,
                metadata: Some(convert::json_to_struct(h.metadata)),
                vector: h.vector.unwrap_or_default(),
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
    let req = request(svc, q)?;
    // Text queries run the embedder: they take an embedding permit.
    let _permit = if req.text.is_some() {
        Some(svc.embed_permit().await?)
    } else {
        None
    };
    let hits = blocking(&call, &svc.db, move |db| Ok(db.search(&collection, &req)?)).await?;
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
    for (i, q) in batch.queries.into_iter().enumerate() {
        if !q.collection.is_empty() && q.collection != collection {
            return Err(ServiceError::InvalidArgument(format!(
                "query {i} names collection {}, the batch searches {}",
                echo(&q.collection),
                echo(&collection)
            )));
        }
        reqs.push(request(svc, q).map_err(|e| at_query(i, e))?);
    }
    let _permit = if reqs.iter().any(|r| r.text.is_some()) {
        Some(svc.embed_permit().await?)
    } else {
        None
    };
    let results = blocking(&call, &svc.db, move |db| {
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
