//! Collections: their names, metrics and stored configuration.

pub use latentdb_types::Metric;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The largest vector dimension a collection may have.
pub const MAX_DIMENSION: usize = 65_536;

/// The longest collection name, in characters.
pub const MAX_NAME_LEN: usize = 128;

/// What a caller asks for when creating a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionSpec {
    /// The name: 1-128 characters of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// The vector dimension.
    pub dimension: usize,
    /// The similarity metric.
    pub metric: Metric,
    /// Embedder settings (model identity, templates), stored as given for the embedding layer.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub embedder: Value,
    /// Index settings (HNSW parameters), stored as given for the index layer.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub index: Value,
    /// Lexical (BM25) index and hybrid search settings, stored as given for the facade
    /// (`null`: the defaults).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub lexical: Value,
}

impl CollectionSpec {
    /// A spec with no embedder or index settings.
    pub fn new(name: impl Into<String>, dimension: usize, metric: Metric) -> Self {
        CollectionSpec {
            name: name.into(),
            dimension,
            metric,
            embedder: Value::Null,
            index: Value::Null,
            lexical: Value::Null,
        }
    }
}

/// A collection's stored configuration (one JSON value in the registry tree).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionConfig {
    /// Internal numeric id; names the collection's sled tree.
    pub cid: u64,
    /// The caller's spec.
    #[serde(flatten)]
    pub spec: CollectionSpec,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The storage format version the collection was written with.
    pub format_version: u32,
}

/// What `info` and `list` report about a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionInfo {
    /// The name.
    pub name: String,
    /// The number of live documents.
    pub count: u64,
    /// The vector dimension.
    pub dimension: usize,
    /// The metric.
    pub metric: Metric,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The storage format version.
    pub format_version: u32,
    /// Embedder settings, if any.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub embedder: Value,
    /// Index settings, if any.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub index: Value,
    /// Lexical index and hybrid search settings, if any.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub lexical: Value,
}

/// Checks a collection name: 1-128 characters of `[A-Za-z0-9_.-]`.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("names must not be empty")
    } else if name.chars().count() > MAX_NAME_LEN {
        Some("names are at most 128 characters")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        Some("names may only use A-Z, a-z, 0-9, '_', '.' and '-'")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are reserved")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidCollectionName {
            name: crate::error::truncate_echo(name, crate::error::MAX_ECHO_CHARS),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a dimension.
pub fn validate_dimension(dim: usize) -> Result<()> {
    if dim == 0 || dim > MAX_DIMENSION {
        Err(Error::InvalidDimension {
            dim,
            max: MAX_DIMENSION,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "docs_v1.2-x", &"a".repeat(128)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "é", "a/b", &"a".repeat(129), "..", "."] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metrics_parse() {
        assert_eq!("cosine".parse::<Metric>().unwrap(), Metric::Cosine);
        assert_eq!("L2".parse::<Metric>().unwrap(), Metric::L2);
        let err: Error = "hamming".parse::<Metric>().unwrap_err().into();
        assert!(err.is_caller_fault(), "{err}");
        assert_eq!(Metric::Dot.to_string(), "dot");
    }
}
