//! `Collection.eval_beir`: [`Evaluator::evaluate_beir`] with the GIL released, its progress
//! reported to a Python callable and Ctrl-C checked between batches (the evaluator's cancel
//! hook takes the GIL briefly to run Python's signal handlers).

use std::path::PathBuf;
use std::sync::Mutex;

use latentdb::ErrorKind;
use latentdb::eval::{BeirDataset, EvalOptions, Evaluator};
use pyo3::prelude::*;

use crate::collection::PyCollection;
use crate::errors::{invalid, new};
use crate::work;

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
    let progress: Option<Py<PyAny>> = progress
        .filter(|p| !p.is_none() && p.is_callable())
        .map(|p| p.clone().unbind());
    let db = coll.db.clone();
    let name = coll.name.clone();
    let embedded = {
        let (db, name) = (db.clone(), name.clone());
        work(py, move || Ok(db.embedder_settings(&name)?.is_some()))?
    };
    if !embedded {
        return Err(new(
            py,
            ErrorKind::FailedPrecondition,
            format!("collection {name:?} has no model; create it with a model to evaluate"),
        ));
    }
    // The first Python exception raised by the progress callback or a signal handler: it
    // stops the evaluation and is what the caller sees.
    let raised: Mutex<Option<PyErr>> = Mutex::new(None);
    let report = {
        let raised = &raised;
        let progress = progress.as_ref();
        let on_progress = move |n: u64| {
            if let Some(p) = progress {
                Python::attach(|py| {
                    if let Err(e) = p.call1(py, (n,)) {
                        raised
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                    }
                });
            }
        };
        let cancel = move || {
            let mut slot = raised.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none()
                && let Err(e) = Python::attach(|py| py.check_signals())
            {
                *slot = Some(e);
            }
            slot.is_some()
        };
        work(py, move || {
            let ds = BeirDataset::open(&dir)?;
            Evaluator::new(&db)
                .cancel_when(&cancel)
                .evaluate_beir(&name, &ds, &opts, &on_progress)
        })
    };
    if let Some(e) = raised.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let v =
        serde_json::to_value(report?).map_err(|e| new(py, ErrorKind::Internal, e.to_string()))?;
    crate::convert::to_py(py, &v)
}
