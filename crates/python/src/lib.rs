//! The `latentdb` Python package's native module, `latentdb._latentdb` (PyO3, abi3).
//!
//! A thin layer over the facade crate `latentdb`: [`database::PyDatabase`] wraps an
//! `Arc<latentdb::Database>`, [`collection::PyCollection`] a collection of it. Every call that
//! does real work releases the GIL ([`work`]), so Python threads search in parallel; long calls
//! (large upserts, ingest, evaluation) run in batches and check for signals (Ctrl-C) between
//! them. Nothing a caller passes can crash the interpreter: inputs are checked, facade errors
//! become one Python exception class per [`latentdb::ErrorKind`] ([`errors`]), and a panic
//! becomes `latentdb.InternalError`.
//!
//! The Python-facing API, its type hints and docs are in `python/latentdb/`.

mod collection;
mod convert;
mod database;
mod errors;
mod eval;
mod hits;
mod ingest;

use std::panic::AssertUnwindSafe;

use pyo3::prelude::*;

/// Runs `f` with the GIL released, turning its error into the exception of its kind and a
/// panic into `latentdb.InternalError` (never an abort, never a `PanicException`).
pub(crate) fn work<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> latentdb::Result<T> + Send,
{
    match py.detach(|| std::panic::catch_unwind(AssertUnwindSafe(f))) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(errors::from_latentdb(py, &e)),
        Err(panic) => Err(errors::panicked(py, &panic)),
    }
}

/// The native module.
#[pymodule]
fn _latentdb(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<database::PyDatabase>()?;
    m.add_class::<collection::PyCollection>()?;
    m.add_class::<hits::PyHit>()?;
    m.add_class::<hits::PyRecord>()?;
    m.add_function(wrap_pyfunction!(database::open, m)?)?;
    m.add_function(wrap_pyfunction!(database::fetch_default_model, m)?)?;
    m.add_function(wrap_pyfunction!(database::default_model_path, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("MAX_K", latentdb::MAX_K)?;
    m.add("MAX_EF", latentdb::MAX_EF)?;
    Ok(())
}
