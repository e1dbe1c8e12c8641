//! The exception classes: `latentdb.LatentDbError` and one subclass per
//! [`latentdb::ErrorKind`], created at import (with `type(...)`, so that a class can have two
//! bases: `InvalidArgumentError` is also a `ValueError`, `NotFoundError` a `LookupError`).

use std::any::Any;

use latentdb::ErrorKind;
use pyo3::exceptions::{PyException, PyLookupError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

/// The classes, in the order of [`KINDS`], then the base class last.
static CLASSES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

/// An extra builtin base of a class.
#[derive(Clone, Copy)]
enum Extra {
    None,
    Value,
    Lookup,
}

/// Each kind's class name, extra base and docstring.
const KINDS: [(ErrorKind, &str, Extra, &str); 10] = [
    (
        ErrorKind::InvalidArgument,
        "InvalidArgumentError",
        Extra::Value,
        "The request is malformed or out of range (also a ValueError): a bad dimension, \
         shape or dtype, a malformed filter, k out of range.",
    ),
    (
        ErrorKind::NotFound,
        "NotFoundError",
        Extra::Lookup,
        "What the request names does not exist (also a LookupError): a collection, a model, \
         a dataset file.",
    ),
    (
        ErrorKind::AlreadyExists,
        "AlreadyExistsError",
        Extra::None,
        "What the request creates exists already (a collection of that name).",
    ),
    (
        ErrorKind::FailedPrecondition,
        "FailedPreconditionError",
        Extra::None,
        "The request is valid but the state it needs does not hold: a text query on a \
         collection without a model, a quarantined collection, a model mismatch.",
    ),
    (
        ErrorKind::ResourceExhausted,
        "ResourceExhaustedError",
        Extra::None,
        "A limit was reached (too many loaded models, a text too large).",
    ),
    (
        ErrorKind::Unavailable,
        "UnavailableError",
        Extra::None,
        "The database cannot take the request now (e.g. the directory is locked by another \
         process); retrying later may succeed.",
    ),
    (
        ErrorKind::Cancelled,
        "CancelledError",
        Extra::None,
        "The operation was cancelled.",
    ),
    (
        ErrorKind::DeadlineExceeded,
        "DeadlineExceededError",
        Extra::None,
        "The operation's deadline passed before it finished.",
    ),
    (
        ErrorKind::DataLoss,
        "DataLossError",
        Extra::None,
        "Stored data is damaged or lost (acknowledged writes missing, a record that does not \
         decode).",
    ),
    (
        ErrorKind::Internal,
        "InternalError",
        Extra::None,
        "The system failed: I/O, a broken invariant, a panic inside the library. Never the \
         caller's fault.",
    ),
];

/// Creates the classes and adds them to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let type_ = py.import("builtins")?.getattr("type")?;
    let class = |name: &str, bases: Bound<'_, PyTuple>, doc: &str| -> PyResult<Py<PyType>> {
        let ns = PyDict::new(py);
        ns.set_item("__module__", "latentdb")?;
        ns.set_item("__doc__", doc)?;
        let ty = type_.call1((name, bases, ns))?.cast_into::<PyType>()?;
        m.add(name, &ty)?;
        Ok(ty.unbind())
    };
    let base = class(
        "LatentDbError",
        PyTuple::new(py, [py.get_type::<PyException>()])?,
        "The base class of every latentdb error.",
    )?;
    let mut classes = Vec::with_capacity(KINDS.len() + 1);
    for (_, name, extra, doc) in KINDS {
        let mut bases = vec![base.bind(py).clone()];
        match extra {
            Extra::None => {}
            Extra::Value => bases.push(py.get_type::<PyValueError>()),
            Extra::Lookup => bases.push(py.get_type::<PyLookupError>()),
        }
        classes.push(class(name, PyTuple::new(py, bases)?, doc)?);
    }
    classes.push(base);
    // A second import of the module (a sub-interpreter, a reload) keeps the first classes.
    let _ = CLASSES.set(py, classes);
    Ok(())
}

/// The class of `kind`.
fn class(py: Python<'_>, kind: ErrorKind) -> Option<Bound<'_, PyType>> {
    let classes = CLASSES.get(py)?;
    let i = KINDS.iter().position(|(k, ..)| *k == kind)?;
    classes.get(i).map(|c| c.bind(py).clone())
}

/// An exception of `kind` with `message`.
pub(crate) fn new(py: Python<'_>, kind: ErrorKind, message: impl Into<String>) -> PyErr {
    let message = message.into();
    match class(py, kind) {
        Some(ty) => PyErr::from_type(ty, message),
        None => PyException::new_err(message),
    }
}

/// An `InvalidArgumentError` (a caller's bad input found by the binding).
pub(crate) fn invalid(py: Python<'_>, message: impl Into<String>) -> PyErr {
    new(py, ErrorKind::InvalidArgument, message)
}

/// The exception of a facade error.
pub(crate) fn from_latentdb(py: Python<'_>, e: &latentdb::Error) -> PyErr {
    new(py, e.kind(), e.to_string())
}

/// An `InternalError` for a panic caught at the boundary.
pub(crate) fn panicked(py: Python<'_>, panic: &Box<dyn Any + Send>) -> PyErr {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    new(
        py,
        ErrorKind::Internal,
        format!("internal error: the library panicked: {what}"),
    )
}
