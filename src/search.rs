//! Vector search requests and results, and the filter planner.
//!
//! The planner: a filter is first bounded by the payload index's postings (equality and `$in`
//! on top-level fields, combined through `$and`/`$or`); the fraction of that candidate set (or
//! of all points) that matches is estimated on a sample. When few points match, they are
//! listed exactly and searched by brute force (exact results, one distance per match); when
//! many match, the HNSW graph is walked with the filter applied during traversal and a
//! candidate list widened in proportion to the filter's selectivity, which keeps recall.

use std::borrow::Cow;

use compact_str::CompactString;
use latentdb_index::distance::VectorDefect;
use latentdb_index::{EXACT_SEARCH_FRACTION, EXACT_SEARCH_MIN, Filter, Hit, Index, Quantization};
use latentdb_storage::Storage;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::collection::Collection;
use crate::error::{Error, Result};
use crate::fusion::{FusionMethod, FusionParams, fuse};
use crate::payload::Payload;
use latentdb_text::{Bm25Params, LexicalHit};

/// The largest `k` a search accepts.
pub const MAX_K: usize = 10_000;

/// The largest `ef` a search accepts.
pub const MAX_EF: usize = 100_000;

/// Points sampled to estimate a filter's selectivity.
const SAMPLE: usize = 2_048;

/// A k-nearest-neighbour query.
///
/// ```
/// use latentdb::SearchRequest;
/// let req = SearchRequest { k: 5, ..SearchRequest::vector(vec![0.1, 0.2, 0.3]) };
/// assert!(req.with_text && req.with_metadata && !req.with_vectors);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SearchRequest {
    /// The query vector; or give `text` instead, in a collection with an embedder.
    pub vector: Option<Vec<f32>>,
    /// A text query, embedded with the collection's model and query template (collections
    /// with an embedder only; exclusive with `vector`).
    pub text: Option<String>,
    /// A task naming the query instruction: one stored with the collection or a built-in one
    /// such as `NQ` or `MSMARCO` (instruction models only; others ignore it).
    pub task: Option<String>,
    /// An instruction sentence for the query, e.g. "Given a question, retrieve passages that
    /// answer the question" (exclusive with `task`; models without instructions ignore it).
    pub instruction: Option<String>,
    /// How many results, 1..=10000 ([`MAX_K`]). `0` is an invalid argument ("k must be at
    /// least 1"), never a default: the default of 10 comes from [`SearchRequest::default`]
    /// (the gRPC server maps a request's unset `k = 0` to 10 itself).
    pub k: usize,
    /// The candidate list size (>= k); `None`: the collection's default `ef_search`.
    pub ef: Option<usize>,
    /// A metadata filter (see [`latentdb_index::filter`] for the syntax).
    pub filter: Option<Value>,
    /// Brute-force search instead of the graph (exact, slower).
    pub exact: bool,
    /// Return each hit's vector.
    pub with_vectors: bool,
    /// Return each hit's text (default true).
    pub with_text: bool,
    /// Return each hit's metadata (default true).
    pub with_metadata: bool,
    /// Which retrieval runs: dense (vectors), lexical (BM25 over the stored text) or hybrid
    /// (both, fused). `None`: hybrid for a text query on a collection with an embedder and a
    /// lexical index, dense otherwise.
    pub mode: Option<SearchMode>,
    /// Hybrid: how the legs are fused (`None`: the collection's default).
    pub fusion: Option<FusionMethod>,
    /// Hybrid with RRF: the rank constant `k` (`None`: the collection's default).
    pub rrf_k: Option<f32>,
    /// Hybrid: the weights of the dense and lexical legs (`None`: the collection's default).
    pub weights: Option<[f32; 2]>,
    /// Hybrid: candidates taken from each leg before fusion, at least `k` (`None`: the
    /// collection's default, 100).
    pub depth: Option<usize>,
    /// Lexical and hybrid: BM25's `k1` and `b` (`None`: the collection's defaults, 1.2 and
    /// 0.75).
    pub bm25: Option<Bm25Params>,
    /// Each hit carries its dense and lexical rank and score and its fused score.
    pub explain: bool,
}

/// Which retrieval a search runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Nearest vectors (the query vector, or the embedded query text).
    Dense,
    /// BM25 over the stored text (needs a query text; no embedder needed).
    Lexical,
    /// Both, fused (see [`crate::fusion`]).
    Hybrid,
}

impl SearchMode {
    /// Every mode.
    pub const ALL: [SearchMode; 3] = [SearchMode::Dense, SearchMode::Lexical, SearchMode::Hybrid];

    /// The name used by the CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Dense => "dense",
            SearchMode::Lexical => "lexical",
            SearchMode::Hybrid => "hybrid",
        }
    }
}

impl std::fmt::Display for SearchMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SearchMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "dense" => Ok(SearchMode::Dense),
            "lexical" => Ok(SearchMode::Lexical),
            "hybrid" => Ok(SearchMode::Hybrid),
            _ => Err(Error::InvalidArgument(format!(
                "unknown search mode {:?}: expected dense, lexical or hybrid",
                crate::error::bounded(s)
            ))),
        }
    }
}

/// Why a hit ranks where it does (with [`SearchRequest::explain`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HitExplain {
    /// Its rank (from 1) in the dense leg, if it was among that leg's candidates.
    pub dense_rank: Option<usize>,
    /// Its dense score (see [`SearchHit::score`]), when ranked there.
    pub dense_score: Option<f32>,
    /// Its rank (from 1) in the lexical leg, if it was among that leg's candidates.
    pub lexical_rank: Option<usize>,
    /// Its BM25 score, when ranked there.
    pub lexical_score: Option<f32>,
    /// The fused score (hybrid searches only).
    pub fused_score: Option<f32>,
}

impl Default for SearchRequest {
    fn default() -> Self {
        SearchRequest {
            vector: None,
            text: None,
            task: None,
            instruction: None,
            k: 10,
            ef: None,
            filter: None,
            exact: false,
            with_vectors: false,
            with_text: true,
            with_metadata: true,
            mode: None,
            fusion: None,
            rrf_k: None,
            weights: None,
            depth: None,
            bm25: None,
            explain: false,
        }
    }
}

impl SearchRequest {
    /// A request for the 10 nearest neighbours of `v`, with text and metadata.
    pub fn vector(v: Vec<f32>) -> Self {
        SearchRequest {
            vector: Some(v),
            ..Default::default()
        }
    }

    /// A request for the 10 documents nearest to the text query `q` (collections with an
    /// embedder), with text and metadata.
    pub fn text(q: impl Into<String>) -> Self {
        SearchRequest {
            text: Some(q.into()),
            ..Default::default()
        }
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The document id (inline up to 24 bytes: see [`CompactString`]).
    pub id: CompactString,
    /// Larger is better; results come best first. Dense: cosine similarity, inner product or
    /// negated Euclidean distance, by the collection's metric. Lexical: the BM25 score. Hybrid:
    /// the fused score (see [`crate::fusion`]).
    pub score: f32,
    /// The text, when asked for and stored.
    pub text: Option<String>,
    /// The metadata, when asked for (empty otherwise).
    pub metadata: Map<String, Value>,
    /// The vector as stored, when asked for.
    pub vector: Option<Vec<f32>>,
    /// The ranks and scores behind the hit, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<HitExplain>,
}

/// A validated search: the mode resolved, the query parts checked, the collection's
/// defaults filled in.
pub(crate) struct Plan<'r> {
    mode: SearchMode,
    vector: Option<&'r [f32]>,
    text: Option<&'r str>,
    filter: Option<Filter>,
    depth: usize,
    bm25: Bm25Params,
    fusion: FusionParams,
}

/// The ranked points of a search, best first, before their documents are resolved, and why
/// each ranks there when asked for (`explains[i]` for `hits[i]`; empty otherwise). A dense
/// search's hits are the index's answer as it is: no per-query copy.
struct Ranked {
    hits: Vec<Hit>,
    explains: Vec<HitExplain>,
}

/// Checks a request against a collection and resolves its mode (see
/// [`SearchRequest::mode`]).
pub(crate) fn validate<'r>(coll: &Collection, req: &'r SearchRequest) -> Result<Plan<'r>> {
    if req.k == 0 {
        return Err(Error::InvalidArgument("k must be at least 1".into()));
    }
    if req.k > MAX_K {
        return Err(Error::InvalidArgument(format!(
            "k must be at most {MAX_K}, got {}",
            req.k
        )));
    }
    if let Some(ef) = req.ef
        && (ef < req.k || ef > MAX_EF)
    {
        return Err(Error::InvalidArgument(format!(
            "ef must be between k ({}) and {MAX_EF}, got {ef}",
            req.k
        )));
    }
    let defaults = coll.lexical.defaults();
    let text = req.text.as_deref();
    let mode = match req.mode {
        Some(mode) => mode,
        None if text.is_some() && defaults.enabled && coll.lexical.has_documents() => {
            if req.vector.is_some() {
                SearchMode::Hybrid
            } else {
                SearchMode::Lexical
            }
        }
        None => SearchMode::Dense,
    };
    let vector = match mode {
        SearchMode::Lexical => None,
        SearchMode::Dense | SearchMode::Hybrid => {
            let Some(v) = req.vector.as_deref() else {
                return Err(Error::InvalidArgument(if mode == SearchMode::Hybrid {
                    "a hybrid search needs a query text and a query vector (given, or embedded \
                     from the text by the collection's model)"
                        .into()
                } else {
                    "a search needs a query vector or a query text".into()
                }));
            };
            check_vector(coll, v)?;
            Some(v)
        }
    };
    if mode != SearchMode::Dense {
        if text.is_none() {
            return Err(Error::InvalidArgument(format!(
                "a {mode} search needs a query text"
            )));
        }
        if !defaults.enabled {
            return Err(crate::lexical::disabled(&coll.name));
        }
    }
    let filter = match &req.filter {
        None | Some(Value::Null) => None,
        Some(doc) => {
            let f = Filter::parse(doc).map_err(|e| Error::InvalidFilter(e.to_string()))?;
            (!f.is_all()).then_some(f)
        }
    };
    let depth = req.depth.unwrap_or(defaults.depth);
    crate::lexical::check_depth(depth)?;
    let bm25 = req.bm25.unwrap_or(defaults.bm25);
    bm25.validate()
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let mut fusion = defaults.fusion;
    if let Some(m) = req.fusion {
        fusion.method = m;
    }
    if let Some(k) = req.rrf_k {
        fusion.rrf_k = k;
    }
    if let Some(w) = req.weights {
        fusion.weights = w;
    }
    fusion.validate()?;
    Ok(Plan {
        mode,
        vector,
        text,
        filter,
        depth: depth.max(req.k),
        bm25,
        fusion,
    })
}

/// Checks a query vector against the collection.
fn check_vector(coll: &Collection, v: &[f32]) -> Result<()> {
    if v.len() != coll.dim {
        return Err(Error::InvalidArgument(format!(
            "query vector has {} components, collection {:?} has dimension {}",
            v.len(),
            coll.name,
            coll.dim
        )));
    }
    match latentdb_index::distance::vector_defect(coll.metric, v) {
        None => Ok(()),
        Some(VectorDefect::NonFinite) => {
            let i = v.iter().position(|x| !x.is_finite()).unwrap_or_default();
            Err(Error::InvalidArgument(format!(
                "query vector component {i} is not a finite number"
            )))
        }
        // Finite but huge components: every score would be inf or NaN.
        Some(VectorDefect::Overflow) => {
            Err(latentdb_index::Error::VectorOverflow { id: u32::MAX }.into())
        }
        Some(defect) => Err(Error::InvalidArgument(format!("query vector: {defect}"))),
    }
}

/// Ranks the points of a planned search, best first (the payload read lock held).
fn rank(
    storage: &Storage,
    coll: &Collection,
    payload: &Payload,
    req: &SearchRequest,
    plan: &Plan<'_>,
) -> Result<Ranked> {
    let filter = plan.filter.as_ref();
    let dense = |k: usize, ef: Option<usize>| -> Result<Vec<Hit>> {
        let q = plan.vector.unwrap_or_default();
        run(storage, coll, payload, q, k, ef, req.exact, filter)
    };
    let lexical = |k: usize| -> Result<Vec<LexicalHit>> {
        let text = plan.text.unwrap_or_default();
        match filter {
            None => coll.lexical.search(&coll.name, text, k, plan.bm25, None),
            Some(f) => {
                let accept = |p: u32| payload.matches(p, f);
                coll.lexical
                    .search(&coll.name, text, k, plan.bm25, Some(&accept))
            }
        }
    };
    Ok(match plan.mode {
        SearchMode::Dense => {
            let hits = dense(req.k, req.ef)?;
            let explains = explanations(req.explain, &hits, |i, h| HitExplain {
                dense_rank: Some(i + 1),
                dense_score: Some(h.score),
                ..HitExplain::default()
            });
            Ranked { hits, explains }
        }
        SearchMode::Lexical => {
            let found = lexical(req.k)?;
            let explains = explanations(req.explain, &found, |i, h| HitExplain {
                lexical_rank: Some(i + 1),
                lexical_score: Some(h.score),
                ..HitExplain::default()
            });
            let hits = found
                .iter()
                .map(|h| Hit {
                    id: h.point,
                    score: h.score,
                })
                .collect();
            Ranked { hits, explains }
        }
        SearchMode::Hybrid => {
            // The asked ef or the collection's ef_search, at least `depth` (as a dense search
            // of `depth` hits would use).
            let ef = req.ef.map(|ef| ef.max(plan.depth).min(MAX_EF));
            let d: Vec<(u32, f32)> = dense(plan.depth, ef)?
                .into_iter()
                .map(|h| (h.id, h.score))
                .collect();
            let l: Vec<(u32, f32)> = lexical(plan.depth)?
                .into_iter()
                .map(|h| (h.point, h.score))
                .collect();
            let fused = fuse(&d, &l, &plan.fusion, req.k);
            let explains = explanations(req.explain, &fused, |_, f| HitExplain {
                dense_rank: f.dense.map(|x| x.0),
                dense_score: f.dense.map(|x| x.1),
                lexical_rank: f.lexical.map(|x| x.0),
                lexical_score: f.lexical.map(|x| x.1),
                fused_score: Some(f.score),
            });
            let hits = fused
                .iter()
                .map(|f| Hit {
                    id: f.id,
                    score: f.score,
                })
                .collect();
            Ranked { hits, explains }
        }
    })
}

/// `explain(i, item)` for each ranked item, `i` from 0, when the request asks why (`asked`);
/// nothing otherwise.
fn explanations<T>(
    asked: bool,
    items: &[T],
    explain: impl Fn(usize, &T) -> HitExplain,
) -> Vec<HitExplain> {
    if !asked {
        return Vec::new();
    }
    items
        .iter()
        .enumerate()
        .map(|(i, t)| explain(i, t))
        .collect()
}

/// One search on an open collection: the indexes and payload in memory give the hits, ids
/// and metadata; storage gives text and vectors when asked for.
pub(crate) fn search_one(
    storage: &Storage,
    coll: &Collection,
    req: &SearchRequest,
) -> Result<Vec<SearchHit>> {
    let plan = validate(coll, req)?;
    let with_records = req.with_text || req.with_vectors;
    let mut points = Vec::new();
    let mut out = {
        let payload = coll.payload.read();
        let Ranked { hits, explains } = rank(storage, coll, &payload, req, &plan)?;
        // Every hit's entry is looked up, and its id's bytes start loading, before any id is
        // copied: the cache misses of the hits overlap instead of following one another (the
        // second lookup below finds the entry cached).
        for h in &hits {
            if let Some(e) = payload.get(h.id) {
                latentdb_index::prefetch(e.id.as_bytes());
            }
        }
        let mut explains = explains.into_iter();
        let mut out = Vec::with_capacity(hits.len());
        if with_records {
            points.reserve_exact(hits.len());
        }
        for h in &hits {
            let explain = explains.next();
            // A point removed meanwhile is skipped.
            let Some(e) = payload.get(h.id) else {
                continue;
            };
            let metadata = if req.with_metadata {
                payload.metadata(e)
            } else {
                Map::new()
            };
            out.push(SearchHit {
                // Inline ids (up to 24 bytes) copy without allocating.
                id: e.id.clone(),
                score: h.score,
                text: None,
                metadata,
                vector: None,
                explain,
            });
            if with_records {
                points.push(h.id);
            }
        }
        out
    };
    if with_records {
        // Text and vectors from storage; a record removed meanwhile drops its hit. Storage
        // finds the collection by name: should this one have been dropped and another created
        // under its name since the index answered, a point may now hold another document, so
        // a record counts only when its id is the hit's.
        let mut records = storage.get_points(&coll.name, &points)?.into_iter();
        out.retain_mut(|hit| match records.next().flatten() {
            Some(r) if r.id == hit.id => {
                if req.with_text {
                    hit.text = r.text;
                }
                if req.with_vectors {
                    hit.vector = Some(r.vector);
                }
                true
            }
            _ => false,
        });
    }
    Ok(out)
}

/// Several searches on one collection, in parallel; results in request order. Every request
/// is validated before any runs, so that an invalid one fails the batch at once.
pub(crate) fn search_many(
    storage: &Storage,
    coll: &Collection,
    reqs: &[Cow<'_, SearchRequest>],
) -> Result<Vec<Vec<SearchHit>>> {
    for r in reqs {
        validate(coll, r)?;
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(reqs.len().max(1));
    if threads <= 1 {
        return reqs.iter().map(|r| search_one(storage, coll, r)).collect();
    }
    let chunk = reqs.len().div_ceil(threads);
    let parts: Vec<Result<Vec<Vec<SearchHit>>>> = std::thread::scope(|s| {
        let handles: Vec<_> = reqs
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || part.iter().map(|r| search_one(storage, coll, r)).collect())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::panicked("search"))))
            .collect()
    });
    let mut out = Vec::with_capacity(reqs.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// Below this many matching points, search them exactly.
fn exact_threshold(live: usize) -> usize {
    EXACT_SEARCH_MIN.max((EXACT_SEARCH_FRACTION * live as f64) as usize)
}

/// Runs a dense search on the index with the planner; returns index hits, best first.
///
/// A quantized index (int8 codes) walks its graph, or scans its codes, for
/// [`Index::candidates_for`]`(k)` candidates (the candidate list at least that long), and
/// their original vectors, read from storage, rescore them: the best `k` come back with exact
/// scores. An `exact` search on a quantized index scores every matching point's stored
/// vector (never the codes), so it stays exact.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    storage: &Storage,
    coll: &Collection,
    payload: &Payload,
    q: &[f32],
    k: usize,
    ef: Option<usize>,
    exact: bool,
    filter: Option<&Filter>,
) -> Result<Vec<Hit>> {
    let index = coll.index()?;
    let index: &Index = &index;
    // Decided by the setting, not by `quantized()`: an index calibrating its codes during
    // this search still gets exact scores (a few reads while it has fewer points).
    if index.params().quantization == Quantization::None {
        return plan_dense(index, payload, q, k, ef, exact, filter);
    }
    // The rescoring file first; storage for a slot it cannot vouch for, which is then
    // repaired (see `RescoreFile`).
    let fetch = |p: u32, buf: &mut Vec<f32>| -> Result<bool> {
        let Some(file) = &coll.rescore else {
            return Ok(storage.point_vector(&coll.name, p, buf)?);
        };
        if file.read(p, buf) {
            return Ok(true);
        }
        let start = buf.len();
        let found = storage.point_vector(&coll.name, p, buf)?;
        if found {
            file.repair(p, &buf[start..]);
        }
        Ok(found)
    };
    if exact {
        // Every matching live point, scored with its stored vector.
        let points = match filter {
            None => payload.all_points(),
            Some(f) => payload.matching(f, payload.candidates(f).as_deref()),
        };
        let all: Vec<Hit> = points
            .into_iter()
            .map(|id| Hit { id, score: 0.0 })
            .collect();
        return index.rescore(q, &all, k, fetch);
    }
    let n = index.candidates_for(k).clamp(k, MAX_EF);
    let ef = ef.map(|ef| ef.max(n).min(MAX_EF));
    let hits = plan_dense(index, payload, q, n, ef, false, filter)?;
    if let Some(file) = &coll.rescore {
        file.warm(hits.iter().map(|h| h.id));
    }
    index.rescore(q, &hits, k, fetch)
}

/// The planner over the index alone: brute force when asked or when few points match, else
/// the graph walk (filtered during the traversal); hits best first, scored by the index.
fn plan_dense(
    index: &Index,
    payload: &Payload,
    q: &[f32],
    k: usize,
    ef: Option<usize>,
    exact: bool,
    filter: Option<&Filter>,
) -> Result<Vec<Hit>> {
    let Some(filter) = filter else {
        return Ok(if exact {
            index.exact_search_filtered(q, k, &|_| true)?
        } else {
            index.search(q, k, ef)?
        });
    };
    let live = payload.len().max(1);
    let universe = payload.candidates(filter);
    let universe_len = universe.as_ref().map_or(live, Vec::len);
    let (fraction, whole) = payload.sample_fraction(filter, universe.as_deref(), SAMPLE);
    let estimate = (fraction * universe_len as f64).ceil() as usize;
    let threshold = exact_threshold(live);
    if exact || whole || estimate < 2 * threshold {
        let matching = payload.matching(filter, universe.as_deref());
        if exact || matching.len() < threshold {
            return Ok(index.exact_search(q, k, &matching)?);
        }
        let ef = widened_ef(index, k, ef, matching.len() as f64 / live as f64);
        return Ok(index.search_filtered(q, k, Some(ef), &|p| matching.binary_search(&p).is_ok())?);
    }
    let ef = widened_ef(index, k, ef, estimate as f64 / live as f64);
    match universe {
        Some(u) => Ok(index.search_filtered(q, k, Some(ef), &|p| {
            u.binary_search(&p).is_ok() && payload.matches(p, filter)
        })?),
        None => Ok(index.search_filtered(q, k, Some(ef), &|p| payload.matches(p, filter))?),
    }
}

/// The candidate list for a filtered graph walk: the asked `ef` grown by `1/sqrt(fraction)`
/// (at most 4x), since only that fraction of the visited points can fill it.
fn widened_ef(index: &Index, k: usize, ef: Option<usize>, fraction: f64) -> usize {
    let base = ef.unwrap_or(index.params().ef_search).max(k);
    let grow = (1.0 / fraction.clamp(1e-6, 1.0).sqrt()).min(4.0);
    ((base as f64 * grow).ceil() as usize).min(MAX_EF)
}
