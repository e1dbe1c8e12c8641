//! `Collection.eval_beir`: [`Evaluator::evaluate_beir`]'s steps, run batch by batch so that
//! Ctrl-C is checked between batches (the evaluator itself has no cancellation): the corpus
//! loaded as [`Evaluator::load_beir_corpus`] does (same ids, texts and batch size), the
//! queries searched in batches with the same requests, scored with the same metrics.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use latentdb::eval::metrics::{self, Hits};
use latentdb::eval::{BeirDataset, EvalOptions, EvalReport, Evaluator};
use latentdb::{Document, Durability, ErrorKind, SearchRequest};
use pyo3::prelude::*;

use crate::collection::PyCollection;
use crate::errors::{invalid, new};
use crate::work;

/// Documents per upsert while loading a corpus (as the evaluator).
const LOAD_BATCH: usize = 256;

/// Queries per batched search (as the evaluator).
const QUERY_BATCH: usize = 256;

pub(crate) fn run<'py>(
    coll: &PyCollection,
    py: Python<'py>,
    dir: PathBuf,
    opts: EvalOptions,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    if opts.k == 0 {
        return Err(invalid(py, "k must be at least 1"));
    }
    let progress = progress.filter(|p| !p.is_none() && p.is_callable());
    let db = coll.db.clone();
    let name = coll.name.clone();
    let (dataset, qrels, qids, count, embedded) = {
        let db = db.clone();
        let name = name.clone();
        let split = opts.split.clone();
        work(py, move || {
            let ds = BeirDataset::open(&dir)?;
            let qrels = ds.qrels(&split)?;
            let mut queries = ds.queries()?;
            let mut ids: Vec<&String> = qrels.keys().collect();
            ids.sort();
            if let Some(missing) = ids.iter().find(|q| !queries.contains_key(q.as_str())) {
                return Err(latentdb::Error::InvalidArgument(format!(
                    "the qrels name queries missing from queries.jsonl: {missing}"
                )));
            }
            let qids: Vec<(String, String)> = ids
                .into_iter()
                .filter_map(|q| queries.remove(q.as_str()).map(|t| (q.clone(), t)))
                .collect();
            let count = db.count(&name)?;
            let embedded = db.embedder_settings(&name)?.is_some();
            Ok((ds, qrels, qids, count, embedded))
        })?
    };
    if !embedded {
        return Err(new(
            py,
            ErrorKind::FailedPrecondition,
            format!(
                "collection {:?} has no model; create it with a model to evaluate",
                name
            ),
        ));
    }
    // The corpus, when the collection is empty.
    let (mut ingested, mut ingest_seconds) = (0u64, 0.0);
    if count == 0 {
        let t = Instant::now();
        let corpus = {
            let ds = &dataset;
            work(py, move || Ok(ds.corpus()?))?
        };
        let mut corpus = corpus;
        loop {
            let db = db.clone();
            let name = name.clone();
            let it = &mut corpus;
            let (n, done) = work(py, move || {
                let mut batch = Vec::with_capacity(LOAD_BATCH);
                for doc in it.by_ref() {
                    let doc = doc?;
                    batch.push(Document {
                        id: Some(doc.id),
                        text: Some(doc.text),
                        ..Document::default()
                    });
                    if batch.len() == LOAD_BATCH {
                        break;
                    }
                }
                let n = batch.len() as u64;
                if n > 0 {
                    db.upsert_with(&name, batch, Durability::Buffered)?;
                }
                Ok((n, n < LOAD_BATCH as u64))
            })?;
            ingested += n;
            if let Some(p) = progress {
                p.call1((ingested,))?;
            }
            if done {
                break;
            }
            py.check_signals()?;
        }
        {
            let db = db.clone();
            work(py, move || db.flush())?;
        }
        ingest_seconds = t.elapsed().as_secs_f64();
    }
    let mode = match opts.mode {
        Some(m) => m,
        None => {
            let db = db.clone();
            let name = name.clone();
            work(py, move || Evaluator::new(&db).default_mode(&name))?
        }
    };
    let depth = opts.k.max(100);
    let t = Instant::now();
    let mut results: HashMap<String, Hits> = HashMap::with_capacity(qids.len());
    for part in qids.chunks(QUERY_BATCH) {
        let reqs: Vec<SearchRequest> = part
            .iter()
            .map(|(_, text)| SearchRequest {
                text: Some(text.clone()),
                task: opts.task.clone(),
                instruction: opts.instruction.clone(),
                k: depth,
                ef: opts.ef,
                exact: opts.exact,
                with_text: false,
                with_metadata: false,
                mode: opts.mode,
                fusion: opts.fusion,
                rrf_k: opts.rrf_k,
                weights: opts.weights,
                depth: opts.depth,
                ..SearchRequest::default()
            })
            .collect();
        let db = db.clone();
        let name = name.clone();
        let found = work(py, move || db.search_batch(&name, &reqs))?;
        for ((q, _), hits) in part.iter().zip(found) {
            results.insert(
                q.clone(),
                hits.into_iter().map(|h| (h.id, h.score)).collect(),
            );
        }
        py.check_signals()?;
    }
    let search_seconds = t.elapsed().as_secs_f64();
    let m = metrics::evaluate(&qrels, &results);
    let (mut ndcg_k, mut recall_k) = (0.0, 0.0);
    for (q, judged) in &qrels {
        let hits: Hits = results
            .get(q)
            .map(|h| h.iter().filter(|(d, _)| d != q).cloned().collect())
            .unwrap_or_default();
        let ranked = metrics::trec_order(&hits);
        ndcg_k += metrics::ndcg_at(judged, &ranked, opts.k);
        recall_k += metrics::recall_at(judged, &ranked, opts.k);
    }
    let n = qrels.len().max(1) as f64;
    let report = EvalReport {
        metrics: m,
        ndcg_at_k: ndcg_k / n,
        recall_at_k: recall_k / n,
        k: opts.k,
        qps: qids.len() as f64 / search_seconds.max(1e-9),
        search_seconds,
        ingested,
        ingest_seconds,
        exact: opts.exact,
        split: opts.split.clone(),
        mode: mode.as_str().to_string(),
    };
    let v =
        serde_json::to_value(&report).map_err(|e| new(py, ErrorKind::Internal, e.to_string()))?;
    crate::convert::to_py(py, &v)
}
