//! `latentdb search | compact`

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use latentdb::{Database, SearchRequest};

use crate::cli::NameArg;
use crate::output::Out;

/// Arguments of `search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The collection name.
    pub name: String,
    /// The query vector as a JSON array of numbers, e.g. '[0.1, 0.2, 0.3]'.
    #[arg(
        long,
        value_name = "JSON",
        required_unless_present = "text",
        conflicts_with = "text"
    )]
    pub vector: Option<String>,
    /// A text query, embedded with the collection's model (collections created with one).
    #[arg(long)]
    pub text: Option<String>,
    /// A task naming the query instruction (NQ, MSMARCO, ... or one stored with the
    /// collection); instruction models only.
    #[arg(long, requires = "text", conflicts_with = "instruction")]
    pub task: Option<String>,
    /// A query instruction sentence; instruction models only.
    #[arg(long, requires = "text")]
    pub instruction: Option<String>,
    /// How many results.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Candidate list size (>= k); default: the collection's ef_search.
    #[arg(long)]
    pub ef: Option<usize>,
    /// A metadata filter, e.g. '{"year": {"$gte": 2020}, "lang": {"$in": ["en", "fr"]}}'.
    #[arg(long, value_name = "JSON")]
    pub filter: Option<String>,
    /// Brute-force search (exact, slower).
    #[arg(long)]
    pub exact: bool,
    /// Include each hit's vector.
    #[arg(long)]
    pub with_vectors: bool,
}

pub fn search(a: SearchArgs, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    let vector: Option<Vec<f32>> = a
        .vector
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("--vector must be a JSON array of numbers, e.g. '[0.1, 0.2]'")?;
    let filter: Option<Value> = a
        .filter
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("--filter is not valid JSON")?;
    let req = SearchRequest {
        k: a.k,
        ef: a.ef,
        filter,
        exact: a.exact,
        with_vectors: a.with_vectors,
        vector,
        text: a.text,
        task: a.task,
        instruction: a.instruction,
        ..SearchRequest::default()
    };
    for (rank, hit) in db.search(&a.name, &req)?.into_iter().enumerate() {
        let mut v = json!({
            "id": hit.id,
            "score": hit.score,
            "metadata": hit.metadata,
            "text": hit.text,
        });
        if let Some(vec) = &hit.vector {
            v["vector"] = json!(vec);
        }
        out.either(&v, || {
            format!(
                "{}\t{}\t{:.6}\t{}\t{}",
                rank + 1,
                hit.id,
                hit.score,
                Value::Object(hit.metadata.clone()),
                hit.text.as_deref().unwrap_or("")
            )
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn compact(a: NameArg, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    let r = db.compact(&a.name)?;
    out.either(&serde_json::to_value(&r)?, || {
        format!(
            "compacted {}: dropped {} tombstones, {} points, {:.2}s",
            a.name, r.dropped, r.after_total, r.seconds
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
