//! Built-in query task instructions (NVIDIA's per-task instructions for NV-Embed-v2).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::error::{Error, Result};

const INSTRUCTIONS_JSON: &str = include_str!("../assets/instructions.json");

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    corpus: Option<String>,
    /// Symmetric tasks (`STS`, `SUMM`) have one instruction for both sides.
    #[serde(default)]
    text: Option<String>,
}

/// A named retrieval task and its instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The task's name, e.g. `NQ` or `MSMARCO`.
    pub name: String,
    /// The instruction for queries, e.g. "Given a question, retrieve passages that answer the question".
    pub query: String,
    /// The instruction for documents (empty for asymmetric tasks; symmetric tasks use the
    /// same instruction on both sides).
    pub corpus: String,
}

impl Task {
    /// The full query prefix for NV-Embed: `Instruct: {query}\nQuery: `.
    pub fn query_prefix(&self) -> String {
        query_prefix(&self.query)
    }
}

/// Formats an instruction the way NV-Embed expects it in front of a query:
/// `Instruct: {instruction}\nQuery: `. An empty instruction gives an empty prefix.
pub fn query_prefix(instruction: &str) -> String {
    if instruction.is_empty() {
        String::new()
    } else {
        format!("Instruct: {instruction}\nQuery: ")
    }
}

fn table() -> &'static BTreeMap<String, Task> {
    static TABLE: OnceLock<BTreeMap<String, Task>> = OnceLock::new();
    TABLE.get_or_init(|| {
        // The asset is part of the crate and checked by a test, so a parse failure here is a
        // build defect; fall back to an empty table rather than panic.
        let raw: BTreeMap<String, Entry> =
            serde_json::from_str(INSTRUCTIONS_JSON).unwrap_or_default();
        raw.into_iter()
            .map(|(name, e)| {
                let task = Task {
                    name: name.clone(),
                    query: e.query.or_else(|| e.text.clone()).unwrap_or_default(),
                    corpus: e.corpus.or(e.text).unwrap_or_default(),
                };
                (name, task)
            })
            .collect()
    })
}

/// All built-in tasks, sorted by name.
pub fn tasks() -> Vec<Task> {
    table().values().cloned().collect()
}

/// Looks up a built-in task by name: exact match first, then case-insensitive.
pub fn task(name: &str) -> Result<Task> {
    let t = table();
    if let Some(task) = t.get(name) {
        return Ok(task.clone());
    }
    t.values()
        .find(|task| task.name.eq_ignore_ascii_case(name))
        .cloned()
        .ok_or_else(|| {
            let names: Vec<&str> = t.keys().map(String::as_str).collect();
            Error::InvalidArgument(format!(
                "unknown task `{}`; known tasks: {}",
                crate::error::bounded(name),
                names.join(", ")
            ))
        })
}
