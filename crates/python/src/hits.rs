//! `latentdb.Hit` (a search result) and `latentdb.Record` (a stored document): immutable,
//! holding the Rust values and converting a field to Python when it is read (so that a
//! search pays only for the fields the caller looks at).

use latentdb::{HitExplain, Record, SearchHit};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::{Map, Value};

use crate::convert::{map_to_py, vector_to_numpy};

/// One search result.
#[pyclass(frozen, name = "Hit", module = "latentdb")]
pub(crate) struct PyHit {
    id: String,
    score: f32,
    text: Option<String>,
    metadata: Map<String, Value>,
    vector: Option<Vec<f32>>,
    explain: Option<HitExplain>,
}

impl From<SearchHit> for PyHit {
    fn from(h: SearchHit) -> Self {
        PyHit {
            id: h.id.into_string(),
            score: h.score,
            text: h.text,
            metadata: h.metadata,
            vector: h.vector,
            explain: h.explain,
        }
    }
}

#[pymethods]
impl PyHit {
    /// The document id.
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    /// Larger is better.
    #[getter]
    fn score(&self) -> f32 {
        self.score
    }

    /// The text, when stored and asked for.
    #[getter]
    fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }

    /// The metadata (a new dict on each access).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        map_to_py(py, &self.metadata)
    }

    /// The vector (float32 array), when asked for with `include_vectors=True`.
    #[getter]
    fn vector<'py>(&self, py: Python<'py>) -> Option<Bound<'py, numpy::PyArray1<f32>>> {
        self.vector.as_deref().map(|v| vector_to_numpy(py, v))
    }

    /// With `explain=True`: a dict of `dense_rank`, `dense_score`, `lexical_rank`,
    /// `lexical_score`, `fused_score` (each `None` when it does not apply).
    #[getter]
    fn explain<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(e) = self.explain else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("dense_rank", e.dense_rank)?;
        d.set_item("dense_score", e.dense_score)?;
        d.set_item("lexical_rank", e.lexical_rank)?;
        d.set_item("lexical_score", e.lexical_score)?;
        d.set_item("fused_score", e.fused_score)?;
        Ok(Some(d))
    }

    /// The hit as a dict (`id`, `score`, `text`, `metadata`, and `vector`/`explain` when
    /// present).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", &self.id)?;
        d.set_item("score", self.score)?;
        d.set_item("text", self.text.as_deref())?;
        d.set_item("metadata", self.metadata(py)?)?;
        if let Some(v) = self.vector(py) {
            d.set_item("vector", v)?;
        }
        if let Some(e) = self.explain(py)? {
            d.set_item("explain", e)?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("Hit(id={:?}, score={:.6})", self.id, self.score)
    }
}

/// A stored document.
#[pyclass(frozen, name = "Record", module = "latentdb")]
pub(crate) struct PyRecord {
    id: String,
    text: Option<String>,
    metadata: Map<String, Value>,
    vector: Vec<f32>,
}

impl From<Record> for PyRecord {
    fn from(r: Record) -> Self {
        PyRecord {
            id: r.id,
            text: r.text,
            metadata: r.metadata,
            vector: r.vector,
        }
    }
}

#[pymethods]
impl PyRecord {
    /// The document id.
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    /// The text, if one was stored.
    #[getter]
    fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }

    /// The metadata (a new dict on each access).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        map_to_py(py, &self.metadata)
    }

    /// The vector as written (float32 array).
    #[getter]
    fn vector<'py>(&self, py: Python<'py>) -> Bound<'py, numpy::PyArray1<f32>> {
        vector_to_numpy(py, &self.vector)
    }

    /// The record as a dict (`id`, `text`, `metadata`, `vector`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", &self.id)?;
        d.set_item("text", self.text.as_deref())?;
        d.set_item("metadata", self.metadata(py)?)?;
        d.set_item("vector", self.vector(py))?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("Record(id={:?})", self.id)
    }
}
