//! [`Evaluator`]: ingest a BEIR corpus into a collection with an embedder (when the collection
//! is empty), run every query of a split and score the results.

use std::collections::HashMap;
use std::time::Instant;

use latentdb_storage::{Document, Durability};
use serde::{Deserialize, Serialize};

use super::beir::BeirDataset;
use super::metrics::Qrels;
use super::metrics::{self, Hits, Metrics};
use crate::database::Database;
use crate::error::{Error, Result, bounded};
use crate::fusion::FusionMethod;
use crate::search::{SearchMode, SearchRequest};

/// Documents per upsert while loading a corpus.
const LOAD_BATCH: usize = 256;

/// Queries per batched search.
const QUERY_BATCH: usize = 256;

/// Options of [`Evaluator::evaluate_beir`].
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// The qrels split (`test`, `dev`, `train`).
    pub split: String,
    /// A task naming the query instruction (instruction models only).
    pub task: Option<String>,
    /// A query instruction sentence (instruction models only).
    pub instruction: Option<String>,
    /// Hits retrieved per query (at least 100, for recall@100); also the cutoff of the
    /// extra `@k` metrics.
    pub k: usize,
    /// Brute-force search instead of the graph.
    pub exact: bool,
    /// The graph's candidate list size (`None`: the collection's default).
    pub ef: Option<usize>,
    /// Dense, lexical or hybrid retrieval (`None`: the search default, hybrid when the
    /// collection has an embedder and a lexical index, dense without a lexical index; see
    /// [`Evaluator::default_mode`]).
    pub mode: Option<SearchMode>,
    /// Hybrid: the fusion method (`None`: the collection's default).
    pub fusion: Option<FusionMethod>,
    /// Hybrid with RRF: the rank constant (`None`: the collection's default).
    pub rrf_k: Option<f32>,
    /// Hybrid: the dense and lexical weights (`None`: the collection's default).
    pub weights: Option<[f32; 2]>,
    /// Hybrid: candidates per leg before fusion, at least the hits retrieved (`max(k, 100)`)
    /// (`None`: the collection's default).
    pub depth: Option<usize>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            split: "test".into(),
            task: None,
            instruction: None,
            k: 10,
            exact: false,
            ef: None,
            mode: None,
            fusion: None,
            rrf_k: None,
            weights: None,
            depth: None,
        }
    }
}

/// The result of an evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// nDCG@10, MRR@10, recall@10, recall@100 and the number of queries.
    #[serde(flatten)]
    pub metrics: Metrics,
    /// nDCG at the requested `k`.
    pub ndcg_at_k: f64,
    /// Recall at the requested `k`.
    pub recall_at_k: f64,
    /// The requested `k`.
    pub k: usize,
    /// Queries per second, query embedding included.
    pub qps: f64,
    /// Seconds spent embedding and searching the queries.
    pub search_seconds: f64,
    /// Corpus documents loaded by this run (0 when the collection was not empty).
    pub ingested: u64,
    /// Seconds spent loading the corpus.
    pub ingest_seconds: f64,
    /// Whether the search was exact.
    pub exact: bool,
    /// The split.
    pub split: String,
    /// The retrieval mode that ran: `dense`, `lexical` or `hybrid` (with no mode asked for,
    /// the one the search default resolved to).
    pub mode: String,
}

/// The evaluation service of a [`Database`]:
///
/// ```no_run
/// # fn main() -> latentdb::Result<()> {
/// use latentdb::Database;
/// use latentdb::eval::{BeirDataset, EvalOptions, Evaluator};
/// let db = Database::open("data")?;
/// let ds = BeirDataset::open("scifact")?;
/// let report = Evaluator::new(&db).evaluate_beir("scifact", &ds, &EvalOptions::default(), &|_| {})?;
/// println!("nDCG@10 {:.4}", report.metrics.ndcg_at_10);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy)]
pub struct Evaluator<'a> {
    db: &'a Database,
    cancel: Option<&'a (dyn Fn() -> bool + Sync)>,
}

impl std::fmt::Debug for Evaluator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("cancellable", &self.cancel.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> Evaluator<'a> {
    /// The evaluation service of `db`.
    pub fn new(db: &'a Database) -> Evaluator<'a> {
        Evaluator { db, cancel: None }
    }

    /// The same service, asking `cancel` between batches (of corpus documents loaded, of
    /// queries searched) whether to stop: when it says so, the call fails with
    /// [`Error::Cancelled`] (the documents loaded so far stay stored).
    pub fn cancel_when(self, cancel: &'a (dyn Fn() -> bool + Sync)) -> Evaluator<'a> {
        Evaluator {
            cancel: Some(cancel),
            ..self
        }
    }

    /// [`Error::Cancelled`] when the cancel hook says so.
    fn check_cancel(&self) -> Result<()> {
        match self.cancel {
            Some(cancel) if cancel() => {
                Err(Error::Cancelled("the evaluation was cancelled".into()))
            }
            _ => Ok(()),
        }
    }

    /// Loads a BEIR corpus into `collection` (document id = corpus id, text = BEIR's
    /// `title + " " + text`), embedding it with the collection's model. Returns the number of
    /// documents loaded; `progress` is called with the running count.
    pub fn load_beir_corpus(
        &self,
        collection: &str,
        dataset: &BeirDataset,
        progress: &dyn Fn(u64),
    ) -> Result<u64> {
        let db = self.db;
        if db.embedder_settings(collection)?.is_none() {
            return Err(Error::FailedPrecondition(format!(
                "collection {:?} has no model; create it with a model to evaluate",
                bounded(collection)
            )));
        }
        let mut batch = Vec::with_capacity(LOAD_BATCH);
        let mut n = 0u64;
        for doc in dataset.corpus()? {
            let doc = doc?;
            batch.push(Document {
                id: Some(doc.id),
                text: Some(doc.text),
                ..Document::default()
            });
            if batch.len() == LOAD_BATCH {
                n += batch.len() as u64;
                db.upsert_with(collection, std::mem::take(&mut batch), Durability::Buffered)?;
                progress(n);
                self.check_cancel()?;
            }
        }
        if !batch.is_empty() {
            n += batch.len() as u64;
            db.upsert_with(collection, batch, Durability::Buffered)?;
            progress(n);
        }
        db.flush()?;
        Ok(n)
    }

    /// Evaluates retrieval on a BEIR dataset: loads the corpus if the collection is empty,
    /// runs every judged query of `opts.split` (embedded with the collection's query template
    /// and the task or instruction for the dense leg) in `opts.mode` with the fusion overrides
    /// of `opts`, and scores the top `max(k, 100)` hits with [`metrics::evaluate`].
    pub fn evaluate_beir(
        &self,
        collection: &str,
        dataset: &BeirDataset,
        opts: &EvalOptions,
        progress: &dyn Fn(u64),
    ) -> Result<EvalReport> {
        if opts.k == 0 {
            return Err(Error::InvalidArgument("k must be at least 1".into()));
        }
        let (qrels, qids) = split_queries(dataset, &opts.split)?;
        let (mut ingested, mut ingest_seconds) = (0, 0.0);
        if self.db.count(collection)? == 0 {
            let t = Instant::now();
            ingested = self.load_beir_corpus(collection, dataset, progress)?;
            ingest_seconds = t.elapsed().as_secs_f64();
        }
        let mode = match opts.mode {
            Some(m) => m,
            None => self.default_mode(collection)?,
        };
        let depth = opts.k.max(100);
        let t = Instant::now();
        let mut run: HashMap<String, Hits> = HashMap::with_capacity(qids.len());
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
            let results = self.db.search_batch(collection, &reqs)?;
            for ((q, _), hits) in part.iter().zip(results) {
                run.insert(
                    q.clone(),
                    hits.into_iter()
                        .map(|h| (h.id.into_string(), h.score))
                        .collect(),
                );
            }
            self.check_cancel()?;
        }
        let search_seconds = t.elapsed().as_secs_f64();
        let m = metrics::evaluate(&qrels, &run);
        let (mut ndcg_k, mut recall_k) = (0.0, 0.0);
        for (q, judged) in &qrels {
            let hits: Hits = run
                .get(q)
                .map(|h| h.iter().filter(|(d, _)| d != q).cloned().collect())
                .unwrap_or_default();
            let ranked = metrics::trec_order(&hits);
            ndcg_k += metrics::ndcg_at(judged, &ranked, opts.k);
            recall_k += metrics::recall_at(judged, &ranked, opts.k);
        }
        let n = qrels.len().max(1) as f64;
        Ok(EvalReport {
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
        })
    }

    /// The mode a text search without one runs on `collection` (as the search resolves it):
    /// hybrid when the collection has an embedder and a lexical index holding documents,
    /// lexical with such an index and no embedder, dense otherwise.
    pub fn default_mode(&self, collection: &str) -> Result<SearchMode> {
        let embedder = self.db.embedder_settings(collection)?.is_some();
        let lexical = self
            .db
            .lexical_stats(collection)?
            .is_some_and(|s| s.docs > 0);
        Ok(match (lexical, embedder) {
            (true, true) => SearchMode::Hybrid,
            (true, false) => SearchMode::Lexical,
            (false, _) => SearchMode::Dense,
        })
    }
}

/// The judgments of `split` and its judged queries as (id, text), sorted by id; an error when
/// the qrels name a query missing from `queries.jsonl`.
pub(crate) fn split_queries(
    dataset: &BeirDataset,
    split: &str,
) -> Result<(Qrels, Vec<(String, String)>)> {
    let qrels = dataset.qrels(split)?;
    let mut queries = dataset.queries()?;
    let mut qids: Vec<&String> = qrels.keys().collect();
    qids.sort();
    let missing: Vec<&str> = qids
        .iter()
        .filter(|q| !queries.contains_key(q.as_str()))
        .map(|q| q.as_str())
        .take(5)
        .collect();
    if !missing.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "the qrels name queries missing from queries.jsonl: {}",
            missing.join(", ")
        )));
    }
    let judged = qids
        .into_iter()
        .filter_map(|q| queries.remove(q.as_str()).map(|t| (q.clone(), t)))
        .collect();
    Ok((qrels, judged))
}
