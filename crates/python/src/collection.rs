//! `latentdb.Collection`: documents in, search out.

use std::str::FromStr;
use std::sync::Arc;

use latentdb::{Database, Document, FusionMethod, SearchMode, SearchRequest};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use serde_json::Value;

use crate::convert::{
    self, filter_from, optional_strings_from, strings_from, vector_from, vectors_from,
};
use crate::errors::{from_latentdb, invalid};
use crate::hits::{PyHit, PyRecord};
use crate::work;

/// Documents per atomic write when the vectors are given.
const UPSERT_BATCH: usize = 1024;

/// Documents per atomic write when the collection's model embeds them (smaller, so that
/// Ctrl-C is answered within seconds).
const UPSERT_EMBED_BATCH: usize = 256;

/// Queries per call of a batched search.
const SEARCH_BATCH: usize = 1024;

/// A collection of a database.
#[pyclass(frozen, name = "Collection", module = "latentdb")]
pub(crate) struct PyCollection {
    pub(crate) db: Arc<Database>,
    pub(crate) name: String,
}

impl PyCollection {
    pub(crate) fn new(db: Arc<Database>, name: String) -> Self {
        PyCollection { db, name }
    }
}

/// The options of a search shared by `search` and `search_batch`.
struct Options {
    k: usize,
    ef: Option<usize>,
    filter: Option<Value>,
    mode: Option<SearchMode>,
    explain: bool,
    exact: bool,
    with_text: bool,
    with_metadata: bool,
    with_vectors: bool,
    task: Option<String>,
    instruction: Option<String>,
    fusion: Option<FusionMethod>,
    rrf_k: Option<f32>,
    weights: Option<[f32; 2]>,
    depth: Option<usize>,
}

impl Options {
    fn request(&self, vector: Option<Vec<f32>>, text: Option<String>) -> SearchRequest {
        SearchRequest {
            vector,
            text,
            task: self.task.clone(),
            instruction: self.instruction.clone(),
            k: self.k,
            ef: self.ef,
            filter: self.filter.clone(),
            exact: self.exact,
            with_vectors: self.with_vectors,
            with_text: self.with_text,
            with_metadata: self.with_metadata,
            mode: self.mode,
            fusion: self.fusion,
            rrf_k: self.rrf_k,
            weights: self.weights,
            depth: self.depth,
            bm25: None,
            explain: self.explain,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn options(
    py: Python<'_>,
    k: usize,
    filter: Option<&Bound<'_, PyAny>>,
    ef: Option<usize>,
    mode: Option<&str>,
    explain: bool,
    exact: bool,
    include_text: bool,
    include_metadata: bool,
    include_vectors: bool,
    task: Option<String>,
    instruction: Option<String>,
    fusion: Option<&str>,
    rrf_k: Option<f32>,
    weights: Option<(f32, f32)>,
    depth: Option<usize>,
) -> PyResult<Options> {
    let mode = mode
        .map(SearchMode::from_str)
        .transpose()
        .map_err(|e| from_latentdb(py, &e))?;
    let fusion = fusion
        .map(FusionMethod::from_str)
        .transpose()
        .map_err(|e| from_latentdb(py, &e))?;
    Ok(Options {
        k,
        ef,
        filter: filter_from(filter)?,
        mode,
        explain,
        exact,
        with_text: include_text,
        with_metadata: include_metadata,
        with_vectors: include_vectors,
        task,
        instruction,
        fusion,
        rrf_k,
        weights: weights.map(|(d, l)| [d, l]),
        depth,
    })
}

fn hits_to_list<'py>(
    py: Python<'py>,
    hits: Vec<latentdb::SearchHit>,
) -> PyResult<Bound<'py, PyList>> {
    let items = hits
        .into_iter()
        .map(|h| Bound::new(py, PyHit::from(h)))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

#[pymethods]
impl PyCollection {
    /// The collection name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The vector dimension.
    #[getter]
    fn dim(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.info_raw(py)?.dimension)
    }

    /// The metric: `"cosine"`, `"dot"` or `"l2"`.
    #[getter]
    fn metric(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(self.info_raw(py)?.metric.as_str())
    }

    /// The model's name as given at creation (`"default"`, a directory), or `None` for a
    /// vectors-only collection.
    #[getter]
    fn model(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let db = self.db.clone();
        let name = self.name.clone();
        Ok(work(py, move || db.embedder_settings(&name))?.map(|s| s.model))
    }

    /// The collection's settings and counts as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let info = self.info_raw(py)?;
        let v = serde_json::to_value(&info)
            .map_err(|e| crate::errors::new(py, latentdb::ErrorKind::Internal, e.to_string()))?;
        convert::to_py(py, &v)
    }

    /// Inserts or replaces documents. `ids` (generated when `None`), and per document a
    /// vector (`vectors`: a float32 array of shape `(n, dim)` or a list of lists), a text
    /// (`texts`; embedded by the collection's model when no vector is given) and a metadata
    /// dict (`metadata`). Written in atomic batches of `batch_size` (default 1024, or 256
    /// when the model embeds them), each durable when the next starts; Ctrl-C between
    /// batches stops with the earlier batches written. Returns the ids.
    #[pyo3(signature = (ids = None, vectors = None, texts = None, metadata = None, *, batch_size = None))]
    fn upsert(
        &self,
        py: Python<'_>,
        ids: Option<&Bound<'_, PyAny>>,
        vectors: Option<&Bound<'_, PyAny>>,
        texts: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
        batch_size: Option<usize>,
    ) -> PyResult<Vec<String>> {
        let ids = ids
            .filter(|o| !o.is_none())
            .map(|o| strings_from(o, "ids"))
            .transpose()?;
        let vectors = vectors
            .filter(|o| !o.is_none())
            .map(|o| vectors_from(o, "vectors"))
            .transpose()?;
        let texts = texts
            .filter(|o| !o.is_none())
            .map(|o| optional_strings_from(o, "texts"))
            .transpose()?;
        let metadata = match metadata.filter(|o| !o.is_none()) {
            None => None,
            Some(m) => {
                if m.is_instance_of::<PyDict>() {
                    return Err(invalid(
                        py,
                        "metadata must be a list of dicts (one per document), not a dict",
                    ));
                }
                let mut out = Vec::new();
                for (i, item) in m
                    .try_iter()
                    .map_err(|_| {
                        invalid(py, "metadata must be a list of dicts (one per document)")
                    })?
                    .enumerate()
                {
                    out.push(convert::metadata_from(&item?, &format!("metadata[{i}]"))?);
                }
                Some(out)
            }
        };
        let lens = [
            ("ids", ids.as_ref().map(Vec::len)),
            ("vectors", vectors.as_ref().map(Vec::len)),
            ("texts", texts.as_ref().map(Vec::len)),
            ("metadata", metadata.as_ref().map(Vec::len)),
        ];
        let given: Vec<(&str, usize)> = lens
            .iter()
            .filter_map(|(n, l)| l.map(|l| (*n, l)))
            .collect();
        let Some(&(_, n)) = given.first() else {
            return Err(invalid(
                py,
                "upsert needs ids, vectors or texts (one entry per document)",
            ));
        };
        if vectors.is_none() && texts.is_none() {
            return Err(invalid(py, "upsert needs vectors or texts"));
        }
        if let Some((name, l)) = given.iter().find(|(_, l)| *l != n) {
            let described: Vec<String> = given.iter().map(|(n, l)| format!("{n} {l}")).collect();
            return Err(invalid(
                py,
                format!(
                    "{name} has {l} entries but the others have {n}: every list needs one entry per document ({})",
                    described.join(", ")
                ),
            ));
        }
        if batch_size == Some(0) {
            return Err(invalid(py, "batch_size must be at least 1"));
        }
        let batch = batch_size.unwrap_or(if vectors.is_some() {
            UPSERT_BATCH
        } else {
            UPSERT_EMBED_BATCH
        });
        let mut ids = ids.map(Vec::into_iter);
        let mut vectors = vectors.map(Vec::into_iter);
        let mut texts = texts.map(Vec::into_iter);
        let mut metadata = metadata.map(Vec::into_iter);
        let mut docs: Vec<Document> = (0..n)
            .map(|_| Document {
                id: ids.as_mut().and_then(Iterator::next),
                text: texts.as_mut().and_then(Iterator::next).flatten(),
                metadata: metadata
                    .as_mut()
                    .and_then(Iterator::next)
                    .unwrap_or(Value::Null),
                vector: vectors.as_mut().and_then(Iterator::next),
            })
            .collect();
        let mut written = Vec::with_capacity(n);
        while !docs.is_empty() {
            let rest = docs.split_off(docs.len().min(batch));
            let part = std::mem::replace(&mut docs, rest);
            let db = self.db.clone();
            let name = self.name.clone();
            let r = work(py, move || db.upsert(&name, part))?;
            written.extend(r.ids);
            if !docs.is_empty() {
                py.check_signals()?;
            }
        }
        Ok(written)
    }

    /// The documents `ids` (a str or a list), in order, `None` for each one missing.
    fn get<'py>(&self, py: Python<'py>, ids: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let ids = strings_from(ids, "ids")?;
        let db = self.db.clone();
        let name = self.name.clone();
        let records = work(py, move || db.get(&name, &ids))?;
        let items = records
            .into_iter()
            .map(|r| match r {
                Some(r) => Ok(Bound::new(py, PyRecord::from(r))?.into_any()),
                None => Ok(py.None().into_bound(py)),
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// Deletes the documents `ids`, or those matching the filter `where`. Returns the ids
    /// deleted.
    #[pyo3(signature = (ids = None, *, r#where = None))]
    fn delete(
        &self,
        py: Python<'_>,
        ids: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<String>> {
        let ids = ids.filter(|o| !o.is_none());
        let filter = filter_from(r#where)?;
        let db = self.db.clone();
        let name = self.name.clone();
        match (ids, filter) {
            (Some(ids), None) => {
                let ids = strings_from(ids, "ids")?;
                work(py, move || db.delete(&name, &ids))
            }
            (None, Some(filter)) => work(py, move || db.delete_by_filter(&name, &filter)),
            (Some(_), Some(_)) => Err(invalid(py, "delete takes ids or where=..., not both")),
            (None, None) => Err(invalid(py, "delete needs ids or where=... (a filter)")),
        }
    }

    /// Deletes every document; returns how many there were.
    fn clear(&self, py: Python<'_>) -> PyResult<u64> {
        let db = self.db.clone();
        let name = self.name.clone();
        work(py, move || db.delete_all(&name))
    }

    /// The number of documents.
    fn count(&self, py: Python<'_>) -> PyResult<u64> {
        let db = self.db.clone();
        let name = self.name.clone();
        work(py, move || db.count(&name))
    }

    /// The `k` documents nearest to `vector` (float32 array or list), or best for the query
    /// `text` (hybrid by default on a collection with a model; `mode` = `"dense"`,
    /// `"lexical"` or `"hybrid"`), optionally only those matching `filter`. Best first.
    #[pyo3(signature = (
        vector = None, text = None, k = 10, filter = None, ef = None, *, mode = None,
        explain = false, exact = false, include_text = true, include_metadata = true,
        include_vectors = false, task = None, instruction = None, fusion = None, rrf_k = None,
        weights = None, depth = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn search<'py>(
        &self,
        py: Python<'py>,
        vector: Option<&Bound<'py, PyAny>>,
        text: Option<String>,
        k: usize,
        filter: Option<&Bound<'py, PyAny>>,
        ef: Option<usize>,
        mode: Option<&str>,
        explain: bool,
        exact: bool,
        include_text: bool,
        include_metadata: bool,
        include_vectors: bool,
        task: Option<String>,
        instruction: Option<String>,
        fusion: Option<&str>,
        rrf_k: Option<f32>,
        weights: Option<(f32, f32)>,
        depth: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let opts = options(
            py,
            k,
            filter,
            ef,
            mode,
            explain,
            exact,
            include_text,
            include_metadata,
            include_vectors,
            task,
            instruction,
            fusion,
            rrf_k,
            weights,
            depth,
        )?;
        let (vector, text) = match (vector.filter(|v| !v.is_none()), text) {
            // `col.search("question")`: a str in the first place is a text query.
            (Some(v), None) if v.is_instance_of::<PyString>() => {
                (None, Some(v.cast::<PyString>()?.to_str()?.to_string()))
            }
            (Some(v), t) => (Some(vector_from(v, "vector")?), t),
            (None, t) => (None, t),
        };
        if vector.is_none() && text.is_none() {
            return Err(invalid(py, "search needs vector=... or text=..."));
        }
        let req = opts.request(vector, text);
        let db = self.db.clone();
        let name = self.name.clone();
        let hits = work(py, move || db.search(&name, &req))?;
        hits_to_list(py, hits)
    }

    /// Many searches in one call: `vectors` (a float32 array of shape `(n, dim)` or a list)
    /// or `texts` (a list of str), with the options of `search`. Returns one list of hits per
    /// query, in order.
    #[pyo3(signature = (
        vectors = None, texts = None, k = 10, filter = None, ef = None, *, mode = None,
        explain = false, exact = false, include_text = true, include_metadata = true,
        include_vectors = false, task = None, instruction = None, fusion = None, rrf_k = None,
        weights = None, depth = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn search_batch<'py>(
        &self,
        py: Python<'py>,
        vectors: Option<&Bound<'py, PyAny>>,
        texts: Option<&Bound<'py, PyAny>>,
        k: usize,
        filter: Option<&Bound<'py, PyAny>>,
        ef: Option<usize>,
        mode: Option<&str>,
        explain: bool,
        exact: bool,
        include_text: bool,
        include_metadata: bool,
        include_vectors: bool,
        task: Option<String>,
        instruction: Option<String>,
        fusion: Option<&str>,
        rrf_k: Option<f32>,
        weights: Option<(f32, f32)>,
        depth: Option<usize>,
    ) -> PyResult<Bound<'py, PyList>> {
        let opts = options(
            py,
            k,
            filter,
            ef,
            mode,
            explain,
            exact,
            include_text,
            include_metadata,
            include_vectors,
            task,
            instruction,
            fusion,
            rrf_k,
            weights,
            depth,
        )?;
        let vectors = vectors
            .filter(|o| !o.is_none())
            .map(|o| vectors_from(o, "vectors"))
            .transpose()?;
        let texts = texts
            .filter(|o| !o.is_none())
            .map(|o| strings_from(o, "texts"))
            .transpose()?;
        let reqs: Vec<SearchRequest> = match (vectors, texts) {
            (Some(v), None) => v.into_iter().map(|v| opts.request(Some(v), None)).collect(),
            (None, Some(t)) => t.into_iter().map(|t| opts.request(None, Some(t))).collect(),
            (Some(v), Some(t)) => {
                if v.len() != t.len() {
                    return Err(invalid(
                        py,
                        format!(
                            "vectors has {} rows but texts has {} entries",
                            v.len(),
                            t.len()
                        ),
                    ));
                }
                v.into_iter()
                    .zip(t)
                    .map(|(v, t)| opts.request(Some(v), Some(t)))
                    .collect()
            }
            (None, None) => return Err(invalid(py, "search_batch needs vectors=... or texts=...")),
        };
        let out = PyList::empty(py);
        for part in reqs.chunks(SEARCH_BATCH) {
            let db = self.db.clone();
            let name = self.name.clone();
            let results = work(py, move || db.search_batch(&name, part))?;
            for hits in results {
                out.append(hits_to_list(py, hits)?)?;
            }
            py.check_signals()?;
        }
        Ok(out)
    }

    /// Ingests files and directories (text, Markdown, HTML, JSONL) as token-bounded chunks
    /// embedded by the collection's model; see `latentdb ingest`. Returns the counters.
    #[pyo3(signature = (paths, chunk_tokens = 256, chunk_overlap = 32, *, glob = None, batch_size = 64, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn ingest<'py>(
        &self,
        py: Python<'py>,
        paths: &Bound<'py, PyAny>,
        chunk_tokens: usize,
        chunk_overlap: usize,
        glob: Option<String>,
        batch_size: usize,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        crate::ingest::run(
            self,
            py,
            paths,
            chunk_tokens,
            chunk_overlap,
            glob,
            batch_size,
            progress,
        )
    }

    /// Evaluates retrieval on a BEIR dataset directory (`corpus.jsonl`, `queries.jsonl`,
    /// `qrels/SPLIT.tsv`): loads the corpus when the collection is empty, runs the judged
    /// queries of `split` and returns nDCG@10, MRR@10, recall@10/100 and more as a dict.
    #[pyo3(signature = (dir, split = "test", *, k = 10, exact = false, ef = None, mode = None, task = None, instruction = None, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn eval_beir<'py>(
        &self,
        py: Python<'py>,
        dir: std::path::PathBuf,
        split: &str,
        k: usize,
        exact: bool,
        ef: Option<usize>,
        mode: Option<&str>,
        task: Option<String>,
        instruction: Option<String>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mode = mode
            .map(SearchMode::from_str)
            .transpose()
            .map_err(|e| from_latentdb(py, &e))?;
        let opts = latentdb::eval::EvalOptions {
            split: split.to_string(),
            task,
            instruction,
            k,
            exact,
            ef,
            mode,
            ..latentdb::eval::EvalOptions::default()
        };
        crate::eval::run(self, py, dir, opts, progress)
    }

    /// Rebuilds the index without deleted points; returns the report as a dict.
    fn compact<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let db = self.db.clone();
        let name = self.name.clone();
        let r = work(py, move || db.compact(&name))?;
        let d = PyDict::new(py);
        d.set_item("before_total", r.before_total)?;
        d.set_item("dropped", r.dropped)?;
        d.set_item("after_total", r.after_total)?;
        d.set_item("seconds", r.seconds)?;
        Ok(d.into_any())
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.count(py)? as usize)
    }

    fn __repr__(&self) -> String {
        format!("latentdb.Collection({:?})", self.name)
    }
}

impl PyCollection {
    fn info_raw(&self, py: Python<'_>) -> PyResult<latentdb::CollectionInfo> {
        let db = self.db.clone();
        let name = self.name.clone();
        work(py, move || db.collection_info(&name))
    }
}
