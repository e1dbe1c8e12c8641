//! Log entries: a shard's part of a write, encoded as [`ShardOp`] (protobuf, so that vectors
//! travel bit for bit) and decoded into the facade's [`ReplicatedOp`].

use latentdb::{Document, ReplicatedOp};
use prost::Message;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::pb::cluster::{DeleteOp, ReplicaDocument, ShardOp, UpsertOp, shard_op::Op};

/// The entry that upserts `docs` (each with its id and vector).
pub fn encode_upsert(docs: &[Document]) -> Vec<u8> {
    let documents = docs
        .iter()
        .map(|d| ReplicaDocument {
            id: d.id.clone().unwrap_or_default(),
            text: d.text.clone(),
            metadata_json: match &d.metadata {
                Value::Null => String::new(),
                m => m.to_string(),
            },
            vector: d.vector.clone().unwrap_or_default(),
        })
        .collect();
    ShardOp {
        op: Some(Op::Upsert(UpsertOp { documents })),
    }
    .encode_to_vec()
}

/// The entry that deletes `ids`.
pub fn encode_delete(ids: &[String]) -> Vec<u8> {
    ShardOp {
        op: Some(Op::Delete(DeleteOp { ids: ids.to_vec() })),
    }
    .encode_to_vec()
}

/// Decodes a log entry; an entry that does not decode is corrupt.
pub fn decode(bytes: &[u8]) -> Result<ReplicatedOp> {
    let op = ShardOp::decode(bytes).map_err(|e| Error::Corrupt(format!("log entry: {e}")))?;
    match op.op {
        Some(Op::Upsert(u)) => {
            let mut docs = Vec::with_capacity(u.documents.len());
            for d in u.documents {
                let metadata = if d.metadata_json.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&d.metadata_json)
                        .map_err(|e| Error::Corrupt(format!("log entry metadata: {e}")))?
                };
                docs.push(Document {
                    id: Some(d.id),
                    text: d.text,
                    metadata,
                    vector: Some(d.vector),
                });
            }
            Ok(ReplicatedOp::Upsert(docs))
        }
        Some(Op::Delete(d)) => Ok(ReplicatedOp::Delete(d.ids)),
        None => Err(Error::Corrupt("log entry without an operation".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_round_trip_bit_for_bit() {
        let docs = vec![
            Document::new("a", vec![0.1, -0.0, f32::MIN_POSITIVE, 1e-45])
                .with_text("t")
                .with_metadata(json!({"year": 2024, "x": 1.5})),
            Document::new("b#1", vec![3.0; 4]),
        ];
        let ReplicatedOp::Upsert(back) = decode(&encode_upsert(&docs)).unwrap() else {
            panic!("not an upsert");
        };
        assert_eq!(back.len(), 2);
        for (a, b) in docs.iter().zip(&back) {
            assert_eq!(a.id, b.id);
            assert_eq!(a.text, b.text);
            assert_eq!(a.metadata, b.metadata);
            let bits = |d: &Document| -> Vec<u32> {
                d.vector.iter().flatten().map(|x| x.to_bits()).collect()
            };
            assert_eq!(bits(a), bits(b));
        }
        assert!(back[1].metadata.is_null());
        let ReplicatedOp::Delete(ids) = decode(&encode_delete(&["x".into()])).unwrap() else {
            panic!("not a delete");
        };
        assert_eq!(ids, vec!["x".to_string()]);
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for bytes in [
            &b""[..],
            b"\x0a\x05\x0a\x03\xff\xff\xff",
            b"\xff\xff\xff\xff",
        ] {
            assert!(decode(bytes).is_err());
        }
    }
}
