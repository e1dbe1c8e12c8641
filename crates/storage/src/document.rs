//! Documents: what callers write ([`Document`]) and what they read back ([`Record`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The longest document id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// A document to upsert.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// The caller's id; a time-ordered UUID is generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Optional text (what the embedder reads, and what search returns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A JSON object of metadata (`null` or absent means empty).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub metadata: Value,
    /// The vector, exactly `dimension` finite f32s. Required by the storage layer; the
    /// facade fills it from the text for collections with an embedder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
}

impl Document {
    /// A document with an id and a vector.
    pub fn new(id: impl Into<String>, vector: Vec<f32>) -> Self {
        Document {
            id: Some(id.into()),
            vector: Some(vector),
            ..Default::default()
        }
    }

    /// Sets the text.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Sets the metadata (should be a JSON object).
    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// A stored document, as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The document id.
    pub id: String,
    /// The text, if one was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The metadata object.
    pub metadata: Map<String, Value>,
    /// The vector as it was written.
    pub vector: Vec<f32>,
}

/// Checks a document id: non-empty, at most [`MAX_ID_BYTES`] bytes.
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::InvalidId {
            id: String::new(),
            reason: "ids must not be empty".into(),
        });
    }
    if id.len() > MAX_ID_BYTES {
        let mut shown: String = id.chars().take(32).collect();
        shown.push('…');
        return Err(Error::InvalidId {
            id: shown,
            reason: format!(
                "ids are at most {MAX_ID_BYTES} bytes, this one is {}",
                id.len()
            ),
        });
    }
    Ok(())
}

/// A validated document, ready to encode.
#[derive(Debug)]
pub(crate) struct ValidDocument {
    pub id: String,
    pub text: Option<String>,
    pub metadata: Map<String, Value>,
    pub vector: Vec<f32>,
}

/// Validates one document against a collection's dimension and the text limit.
pub(crate) fn validate(doc: Document, dim: usize, max_text_bytes: usize) -> Result<ValidDocument> {
    let id = match doc.id {
        Some(id) => {
            validate_id(&id)?;
            id
        }
        None => uuid::Uuid::now_v7().to_string(),
    };
    let metadata = match doc.metadata {
        Value::Null => Map::new(),
        Value::Object(m) => m,
        other => {
            return Err(Error::InvalidMetadata {
                id,
                kind: json_kind(&other),
            });
        }
    };
    if let Some(text) = &doc.text
        && text.len() > max_text_bytes
    {
        return Err(Error::TextTooLong {
            len: text.len(),
            limit: max_text_bytes,
            id,
        });
    }
    let Some(vector) = doc.vector else {
        return Err(Error::MissingVector { id });
    };
    if vector.len() != dim {
        return Err(Error::DimensionMismatch {
            id,
            expected: dim,
            got: vector.len(),
        });
    }
    if let Some(index) = vector.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFiniteVector { id, index });
    }
    Ok(ValidDocument {
        id,
        text: doc.text,
        metadata,
        vector,
    })
}

/// The JSON type name of a value, for error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_catches_each_problem() {
        let ok = Document::new("a", vec![1.0, 2.0]);
        assert!(validate(ok.clone(), 2, 10).is_ok());
        assert!(matches!(
            validate(ok.clone(), 3, 10),
            Err(Error::DimensionMismatch { .. })
        ));
        let nan = Document::new("a", vec![1.0, f32::NAN]);
        assert!(matches!(
            validate(nan, 2, 10),
            Err(Error::NonFiniteVector { index: 1, .. })
        ));
        let inf = Document::new("a", vec![f32::NEG_INFINITY, 0.0]);
        assert!(matches!(
            validate(inf, 2, 10),
            Err(Error::NonFiniteVector { index: 0, .. })
        ));
        let empty = Document::new("", vec![1.0, 2.0]);
        assert!(matches!(
            validate(empty, 2, 10),
            Err(Error::InvalidId { .. })
        ));
        let long = Document::new("x".repeat(513), vec![1.0, 2.0]);
        assert!(matches!(
            validate(long, 2, 10),
            Err(Error::InvalidId { .. })
        ));
        assert!(validate(Document::new("x".repeat(512), vec![1.0, 2.0]), 2, 10).is_ok());
        let meta = ok.clone().with_metadata(json!([1]));
        assert!(matches!(
            validate(meta, 2, 10),
            Err(Error::InvalidMetadata {
                kind: "an array",
                ..
            })
        ));
        let text = ok.clone().with_text("x".repeat(11));
        assert!(matches!(
            validate(text, 2, 10),
            Err(Error::TextTooLong { .. })
        ));
        let novec = Document {
            id: Some("a".into()),
            ..Default::default()
        };
        assert!(matches!(
            validate(novec, 2, 10),
            Err(Error::MissingVector { .. })
        ));
        let generated = Document {
            vector: Some(vec![0.0, 0.0]),
            ..Default::default()
        };
        assert_eq!(validate(generated, 2, 10).unwrap().id.len(), 36);
    }
}
