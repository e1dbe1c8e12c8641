//! `Collection.ingest`: the facade's [`Ingester`] run over groups of files, so that Ctrl-C is
//! checked between groups (the ingester itself has no cancellation). Document ids are the
//! same as one `latentdb ingest` run over the same paths: a file's `source` is the same
//! whether it is named directly or found under its directory.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use latentdb::ingest::{
    ChunkOptions, Glob, IngestEvent, IngestOptions, IngestStats, Ingester, walk,
};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString};

use crate::collection::PyCollection;
use crate::errors::invalid;
use crate::work;

/// A group ends once its files reach this many bytes...
const GROUP_BYTES: u64 = 64 * 1024;
/// ... or this many files.
const GROUP_FILES: usize = 256;
/// Problems listed in the result (all are counted).
const MAX_PROBLEMS: usize = 100;

/// Where progress goes.
enum Progress {
    None,
    /// A line on `sys.stderr`, rewritten in place.
    Stderr,
    /// A callable, given a dict of the counters.
    Callback(Py<PyAny>),
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn run<'py>(
    coll: &PyCollection,
    py: Python<'py>,
    paths: &Bound<'py, PyAny>,
    chunk_tokens: usize,
    chunk_overlap: usize,
    glob: Option<String>,
    batch_size: usize,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let roots: Vec<PathBuf> =
        if paths.is_instance_of::<PyString>() || paths.hasattr("__fspath__")? {
            vec![paths.extract()?]
        } else {
            let mut v = Vec::new();
            for p in paths.try_iter()? {
                v.push(p?.extract::<PathBuf>()?);
            }
            v
        };
    if roots.is_empty() {
        return Err(invalid(py, "ingest needs at least one path"));
    }
    let progress = match progress {
        None => Progress::Stderr,
        Some(p) if p.is_none() => Progress::None,
        Some(p) if p.is_instance_of::<PyBool>() => {
            if p.is_truthy()? {
                Progress::Stderr
            } else {
                Progress::None
            }
        }
        Some(p) if p.is_callable() => Progress::Callback(p.clone().unbind()),
        Some(p) => {
            return Err(invalid(
                py,
                format!(
                    "progress must be a bool or a callable, got {}",
                    crate::convert::type_name(p)
                ),
            ));
        }
    };
    let glob_checked = glob
        .as_deref()
        .map(Glob::new)
        .transpose()
        .map_err(|e| invalid(py, e.to_string()))?;
    let opts = IngestOptions {
        chunk: ChunkOptions {
            max_tokens: chunk_tokens,
            overlap: chunk_overlap,
        },
        glob: None,
        batch_size,
        ..IngestOptions::default()
    };
    let start = Instant::now();
    // List the files (as the ingester would), in groups.
    let (groups, listing_problems, total_files, total_bytes) = py.detach(|| {
        let mut groups: Vec<Vec<PathBuf>> = Vec::new();
        let mut problems = Vec::new();
        let (mut files, mut bytes, mut group_bytes) = (0u64, 0u64, 0u64);
        let mut current = Vec::new();
        for f in walk(&roots, glob_checked.as_ref()) {
            match f {
                Ok(f) => {
                    files += 1;
                    bytes += f.len;
                    group_bytes += f.len;
                    current.push(f.path);
                    if group_bytes >= GROUP_BYTES || current.len() >= GROUP_FILES {
                        groups.push(std::mem::take(&mut current));
                        group_bytes = 0;
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        if !current.is_empty() {
            groups.push(current);
        }
        (groups, problems, files, bytes)
    });
    let problems: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut total = IngestStats {
        errors: listing_problems.len() as u64,
        ..IngestStats::default()
    };
    for p in &listing_problems {
        report_problem(&progress, p);
    }
    problems
        .lock()
        .map(|mut v| v.extend(listing_problems.into_iter().take(MAX_PROBLEMS)))
        .ok();
    if groups.is_empty() {
        // Still check the collection and the options (a vectors-only collection is an
        // error, as with the CLI).
        let db = coll.db.clone();
        let name = coll.name.clone();
        let o = opts.clone();
        work(py, move || Ingester::new(&db).run(&name, &[], &o))?;
    }
    for group in groups {
        let db = coll.db.clone();
        let name = coll.name.clone();
        let o = opts.clone();
        let before = total.clone();
        let progress_ref = &progress;
        let problems_ref = &problems;
        let stats = work(py, move || {
            let on_event = |ev: IngestEvent<'_>| match ev {
                IngestEvent::Started { .. } => {}
                IngestEvent::Progress(s) => {
                    let sum = add(&before, s, start);
                    show(progress_ref, &sum, total_files, total_bytes, false);
                }
                IngestEvent::Problem(p) => {
                    if let Ok(mut v) = problems_ref.lock()
                        && v.len() < MAX_PROBLEMS
                    {
                        v.push(p.to_string());
                    }
                    report_problem(progress_ref, p);
                }
            };
            Ingester::new(&db).run_with(&name, &group, &o, &on_event)
        })?;
        total = add(&total, &stats, start);
        py.check_signals()?;
    }
    total.seconds = start.elapsed().as_secs_f64();
    show(&progress, &total, total_files, total_bytes, true);
    let d = PyDict::new(py);
    d.set_item("files", total.files)?;
    d.set_item("documents", total.documents)?;
    d.set_item("chunks", total.chunks)?;
    d.set_item("skipped", total.skipped)?;
    d.set_item("errors", total.errors)?;
    d.set_item("bytes", total.bytes)?;
    d.set_item("seconds", total.seconds)?;
    d.set_item(
        "problems",
        problems.lock().map(|v| v.clone()).unwrap_or_default(),
    )?;
    Ok(d)
}

/// `a + b`, with the elapsed time since `start`.
fn add(a: &IngestStats, b: &IngestStats, start: Instant) -> IngestStats {
    IngestStats {
        files: a.files + b.files,
        documents: a.documents + b.documents,
        chunks: a.chunks + b.chunks,
        skipped: a.skipped + b.skipped,
        errors: a.errors + b.errors,
        bytes: a.bytes + b.bytes,
        file_bytes: a.file_bytes + b.file_bytes,
        seconds: start.elapsed().as_secs_f64(),
        read_s: a.read_s + b.read_s,
        embed_s: a.embed_s + b.embed_s,
        write_s: a.write_s + b.write_s,
    }
}

/// Reports progress (from any thread: takes the GIL).
fn show(progress: &Progress, s: &IngestStats, files: u64, bytes: u64, done: bool) {
    match progress {
        Progress::None => {}
        Progress::Stderr => {
            let line = format!(
                "\ringest: {}/{} files, {:.1}/{:.1} MB, {} chunks, {} skipped, {} errors, {:.1} s{}",
                s.files,
                files,
                s.file_bytes as f64 / 1e6,
                bytes as f64 / 1e6,
                s.chunks,
                s.skipped,
                s.errors,
                s.seconds,
                if done { "\n" } else { "" }
            );
            Python::attach(|py| {
                let _ = py
                    .import("sys")
                    .and_then(|sys| sys.getattr("stderr"))
                    .and_then(|e| e.call_method1("write", (line,)));
            });
        }
        Progress::Callback(f) => Python::attach(|py| {
            let d = PyDict::new(py);
            let _ = d.set_item("files", s.files);
            let _ = d.set_item("total_files", files);
            let _ = d.set_item("file_bytes", s.file_bytes);
            let _ = d.set_item("total_bytes", bytes);
            let _ = d.set_item("chunks", s.chunks);
            let _ = d.set_item("skipped", s.skipped);
            let _ = d.set_item("errors", s.errors);
            let _ = d.set_item("seconds", s.seconds);
            let _ = d.set_item("done", done);
            if let Err(e) = f.call1(py, (d,)) {
                // A failing callback must not stop the ingest; Python shows it as unraisable.
                e.write_unraisable(py, None);
            }
        }),
    }
}

fn report_problem(progress: &Progress, p: &str) {
    if let Progress::Stderr = progress {
        let line = format!("\ningest: skipped: {p}\n");
        Python::attach(|py| {
            let _ = py
                .import("sys")
                .and_then(|sys| sys.getattr("stderr"))
                .and_then(|e| e.call_method1("write", (line,)));
        });
    }
}
