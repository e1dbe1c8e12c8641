//! The value codec for stored documents and change-log entries.
//!
//! A document record (value of a `p` key), version 1:
//!
//! ```text
//! u8      record version (1)
//! u16 BE  id length, then the id bytes (UTF-8)
//! u32 BE  dimension d, then d × f32 little-endian
//! u8      1 if a text follows, else 0; if 1: u32 BE length, then the text bytes (UTF-8)
//! rest    the metadata, a JSON object (UTF-8)
//! ```

use serde_json::{Map, Value};

use crate::document::Record;
use crate::error::{Error, Result};

const RECORD_VERSION: u8 = 1;

/// Encodes one document. `metadata` must already be a validated object.
pub fn encode_record(
    id: &str,
    vector: &[f32],
    text: Option<&str>,
    metadata: &Map<String, Value>,
) -> Result<Vec<u8>> {
    let meta = serde_json::to_vec(metadata)
        .map_err(|e| Error::Internal(format!("metadata does not serialise: {e}")))?;
    let id_len = u16::try_from(id.len())
        .map_err(|_| Error::Internal("document id longer than 65535 bytes".into()))?;
    let dim = u32::try_from(vector.len())
        .map_err(|_| Error::Internal("vector longer than 2^32".into()))?;
    let text_len = match text {
        Some(t) => Some(
            u32::try_from(t.len()).map_err(|_| Error::Internal("text longer than 4 GiB".into()))?,
        ),
        None => None,
    };
    let mut out = Vec::with_capacity(
        1 + 2 + id.len() + 4 + 4 * vector.len() + 5 + text.map_or(0, str::len) + meta.len(),
    );
    out.push(RECORD_VERSION);
    out.extend_from_slice(&id_len.to_be_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&dim.to_be_bytes());
    for x in vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    match (text, text_len) {
        (Some(t), Some(n)) => {
            out.push(1);
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(t.as_bytes());
        }
        _ => out.push(0),
    }
    out.extend_from_slice(&meta);
    Ok(out)
}

/// A cursor over a byte slice that reports truncation as corruption.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Corrupt("document record is truncated".into()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn str(&mut self, n: usize) -> Result<&'a str> {
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| Error::Corrupt("document record holds invalid UTF-8".into()))
    }
}

/// Only the document id of a record (cheap: no vector or metadata decoding).
pub fn decode_record_id(bytes: &[u8]) -> Result<&str> {
    let mut r = Reader { buf: bytes };
    check_version(r.u8()?)?;
    let n = r.u16()? as usize;
    r.str(n)
}

/// Only the vector of a record, appended to `out` (no allocation when `out` has capacity).
pub fn decode_record_vector(bytes: &[u8], out: &mut Vec<f32>) -> Result<()> {
    let mut r = Reader { buf: bytes };
    check_version(r.u8()?)?;
    let n = r.u16()? as usize;
    r.take(n)?;
    let dim = r.u32()? as usize;
    let raw = r.take(
        dim.checked_mul(4)
            .ok_or_else(|| Error::Corrupt("bad dimension".into()))?,
    )?;
    out.extend(
        raw.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
    Ok(())
}

/// The fields of a record, checked (version, lengths, UTF-8 of id and text, text flag) but
/// not converted: the vector's bytes and the metadata's JSON are left as they are.
struct Parts<'a> {
    id: &'a str,
    vector: &'a [u8],
    text: Option<&'a str>,
    metadata: &'a [u8],
}

/// Splits a record into its fields. Every check [`decode_record`] makes happens here or in
/// [`decode_metadata`], in the same order, so a decoder built on the two reports the same
/// error for the same bytes.
fn split_record(bytes: &[u8]) -> Result<Parts<'_>> {
    let mut r = Reader { buf: bytes };
    check_version(r.u8()?)?;
    let n = r.u16()? as usize;
    let id = r.str(n)?;
    let dim = r.u32()? as usize;
    let vector = r.take(
        dim.checked_mul(4)
            .ok_or_else(|| Error::Corrupt("bad dimension".into()))?,
    )?;
    let text = match r.u8()? {
        0 => None,
        1 => {
            let n = r.u32()? as usize;
            Some(r.str(n)?)
        }
        other => return Err(Error::Corrupt(format!("bad text flag {other}"))),
    };
    Ok(Parts {
        id,
        vector,
        text,
        metadata: r.buf,
    })
}

/// The metadata object of a record (empty bytes: an empty object).
fn decode_metadata(bytes: &[u8]) -> Result<Map<String, Value>> {
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::Corrupt("stored metadata is not an object".into())),
        Err(e) => Err(Error::Corrupt(format!("stored metadata: {e}"))),
    }
}

/// Decodes a whole record.
pub fn decode_record(bytes: &[u8]) -> Result<Record> {
    let parts = split_record(bytes)?;
    let metadata = decode_metadata(parts.metadata)?;
    Ok(Record {
        id: parts.id.to_owned(),
        text: parts.text.map(str::to_owned),
        metadata,
        vector: parts
            .vector
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    })
}

/// A record without its vector and text: what a payload index needs of a document.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordMeta<'a> {
    /// The document id (borrowed from the stored bytes).
    pub id: &'a str,
    /// True if the record holds a text.
    pub has_text: bool,
    /// The metadata object.
    pub metadata: Map<String, Value>,
}

/// Decodes a record's id, whether it has a text, and its metadata, without converting or
/// copying its vector or text. Makes exactly the checks of [`decode_record`] (the text is
/// still checked to be UTF-8), so a record is corrupt for one exactly when it is for the
/// other, with the same error.
pub fn decode_record_meta(bytes: &[u8]) -> Result<RecordMeta<'_>> {
    let parts = split_record(bytes)?;
    Ok(RecordMeta {
        id: parts.id,
        has_text: parts.text.is_some(),
        metadata: decode_metadata(parts.metadata)?,
    })
}

fn check_version(v: u8) -> Result<()> {
    if v == RECORD_VERSION {
        Ok(())
    } else {
        Err(Error::Corrupt(format!(
            "unknown document record version {v}"
        )))
    }
}

/// The most inserts one change-log entry stands for: a longer run of inserts is written as
/// several entries, so that a damaged count can never make a reader expand billions of changes.
pub const MAX_INSERT_RUN: u32 = 1 << 16;

/// One entry of a collection's change log, replayed by the index after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A point was written (a new document, or the new version of a replaced one).
    Insert {
        /// The sequence of this change.
        seq: u64,
        /// The point id.
        point: u32,
    },
    /// A point was removed (a deleted document, or the old version of a replaced one).
    Remove {
        /// The sequence of this change.
        seq: u64,
        /// The point id.
        point: u32,
    },
}

impl Change {
    /// The change's sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            Change::Insert { seq, .. } | Change::Remove { seq, .. } => *seq,
        }
    }

    /// The value bytes of this change in the log: op (1 insert, 2 remove) + point u32 BE.
    pub fn encode_value(&self) -> [u8; 5] {
        let (op, point) = match self {
            Change::Insert { point, .. } => (1u8, *point),
            Change::Remove { point, .. } => (2u8, *point),
        };
        let p = point.to_be_bytes();
        [op, p[0], p[1], p[2], p[3]]
    }

    /// Decodes a change from its log value and sequence (a single change: op 1 or 2; an
    /// insert run, op 3, is refused here: see [`Change::decode_entry`]).
    pub fn decode(seq: u64, value: &[u8]) -> Result<Change> {
        match value {
            [op, a, b, c, d] => {
                let point = u32::from_be_bytes([*a, *b, *c, *d]);
                match op {
                    1 => Ok(Change::Insert { seq, point }),
                    2 => Ok(Change::Remove { seq, point }),
                    _ => Err(Error::Corrupt(format!("unknown change op {op}"))),
                }
            }
            _ => Err(Error::Corrupt("bad change-log entry".into())),
        }
    }

    /// The value bytes of an insert run in the log: op 3 + first point `u32` BE + count
    /// `u32` BE. The entry's key is the sequence of the run's last change; the run stands for
    /// `count` inserts of the points `first_point..first_point + count` at the consecutive
    /// sequences that end there (format version 2).
    pub(crate) fn encode_insert_run(first_point: u32, count: u32) -> [u8; 9] {
        let p = first_point.to_be_bytes();
        let c = count.to_be_bytes();
        [3, p[0], p[1], p[2], p[3], c[0], c[1], c[2], c[3]]
    }

    /// Decodes the change-log entry stored under sequence `seq` and appends the changes it
    /// stands for, oldest first, to `out`: one for a single change (op 1 or 2), `count` for an
    /// insert run (op 3; see [`Change::encode_insert_run`]). Fails, appending nothing, on an
    /// unknown op, a wrong length, an empty run, or a run whose sequences or points would
    /// leave their ranges, or one longer than [`MAX_INSERT_RUN`].
    pub fn decode_entry(seq: u64, value: &[u8], out: &mut Vec<Change>) -> Result<()> {
        out.extend(LogEntry::parse(seq, value)?.changes());
        Ok(())
    }
}

/// One change-log entry as stored: a single change, or an insert run (format version 2),
/// checked but not expanded.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LogEntry {
    /// A single insert or remove (op 1 or 2).
    One(Change),
    /// `count` inserts of the points `first_point..` at the sequences ending at `last_seq`.
    Run {
        last_seq: u64,
        first_point: u32,
        count: u32,
    },
}

impl LogEntry {
    /// Parses the entry stored under sequence `seq` (see [`Change::decode_entry`] for what is
    /// refused).
    pub(crate) fn parse(seq: u64, value: &[u8]) -> Result<LogEntry> {
        let [3, a, b, c, d, e, f, g, h] = *value else {
            return Ok(LogEntry::One(Change::decode(seq, value)?));
        };
        let first_point = u32::from_be_bytes([a, b, c, d]);
        let count = u32::from_be_bytes([e, f, g, h]);
        let last_point = first_point.checked_add(count.wrapping_sub(1));
        if count == 0 || count > MAX_INSERT_RUN || u64::from(count) > seq || last_point.is_none() {
            return Err(Error::Corrupt(format!(
                "bad insert run in the change log: {count} points from {first_point} ending at \
                 sequence {seq}"
            )));
        }
        Ok(LogEntry::Run {
            last_seq: seq,
            first_point,
            count,
        })
    }

    /// The sequence of the entry's first change.
    pub(crate) fn first_seq(&self) -> u64 {
        match *self {
            LogEntry::One(c) => c.seq(),
            LogEntry::Run {
                last_seq, count, ..
            } => last_seq - u64::from(count) + 1,
        }
    }

    /// The changes the entry stands for, oldest first.
    pub(crate) fn changes(self) -> impl Iterator<Item = Change> {
        let first_seq = self.first_seq();
        let (single, first_point, count) = match self {
            LogEntry::One(c) => (Some(c), 0, 0),
            LogEntry::Run {
                first_point, count, ..
            } => (None, first_point, count),
        };
        single
            .into_iter()
            .chain((0..count).map(move |i| Change::Insert {
                seq: first_seq + u64::from(i),
                point: first_point + i,
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn record_round_trips() {
        let meta = json!({"a": 1, "b": [true, null]})
            .as_object()
            .unwrap()
            .clone();
        let v = vec![1.0, -2.5, f32::MIN_POSITIVE];
        let bytes = encode_record("doc-1", &v, Some("héllo"), &meta).unwrap();
        let r = decode_record(&bytes).unwrap();
        assert_eq!(r.id, "doc-1");
        assert_eq!(r.text.as_deref(), Some("héllo"));
        assert_eq!(r.metadata, meta);
        assert_eq!(r.vector.len(), 3);
        for (a, b) in r.vector.iter().zip(&v) {
            assert!((a - b).abs() <= f32::EPSILON * b.abs());
        }
        assert_eq!(decode_record_id(&bytes).unwrap(), "doc-1");
        let mut out = Vec::new();
        decode_record_vector(&bytes, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        let no_text = encode_record("x", &v, None, &Map::new()).unwrap();
        assert!(decode_record(&no_text).unwrap().text.is_none());
    }

    #[test]
    fn truncated_or_foreign_records_are_corrupt_not_panics() {
        let bytes = encode_record("doc", &[1.0; 8], Some("t"), &Map::new()).unwrap();
        for cut in 0..bytes.len() - 1 {
            let _ = decode_record(&bytes[..cut]); // must not panic
        }
        assert!(decode_record(&bytes[..10]).is_err());
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(matches!(decode_record(&bad), Err(Error::Corrupt(_))));
    }

    #[test]
    fn changes_round_trip() {
        for c in [
            Change::Insert { seq: 3, point: 9 },
            Change::Remove {
                seq: 4,
                point: 1 << 31,
            },
        ] {
            assert_eq!(Change::decode(c.seq(), &c.encode_value()).unwrap(), c);
        }
        assert!(Change::decode(1, &[7, 0, 0, 0, 0]).is_err());
        // Insert runs expand to one change per sequence; single entries decode as they did.
        let mut out = Vec::new();
        Change::decode_entry(12, &Change::encode_insert_run(40, 3), &mut out).unwrap();
        Change::decode_entry(
            13,
            &Change::Remove { seq: 13, point: 41 }.encode_value(),
            &mut out,
        )
        .unwrap();
        let expect = [
            Change::Insert { seq: 10, point: 40 },
            Change::Insert { seq: 11, point: 41 },
            Change::Insert { seq: 12, point: 42 },
            Change::Remove { seq: 13, point: 41 },
        ];
        assert_eq!(out, expect);
        assert!(Change::decode(12, &Change::encode_insert_run(40, 3)).is_err());
        // Empty runs, runs reaching before sequence 1 or past the last point id are refused.
        let too_long = MAX_INSERT_RUN + 1;
        for (seq, first, count) in [
            (5, 1, 0),
            (2, 1, 3),
            (9, u32::MAX, 2),
            (1 << 20, 0, too_long),
        ] {
            let mut out = Vec::new();
            let bytes = Change::encode_insert_run(first, count);
            assert!(
                Change::decode_entry(seq, &bytes, &mut out).is_err(),
                "{seq} {first} {count}"
            );
            assert!(out.is_empty());
        }
        let mut out = Vec::new();
        Change::decode_entry(1, &Change::encode_insert_run(u32::MAX, 1), &mut out).unwrap();
        assert_eq!(
            out,
            [Change::Insert {
                seq: 1,
                point: u32::MAX
            }]
        );
    }

    /// `decode_record` as it was before it was split into `split_record` and
    /// `decode_metadata`: the reference the decoders must agree with.
    fn reference_decode(bytes: &[u8]) -> Result<Record> {
        let mut r = Reader { buf: bytes };
        check_version(r.u8()?)?;
        let n = r.u16()? as usize;
        let id = r.str(n)?.to_owned();
        let dim = r.u32()? as usize;
        let raw = r.take(
            dim.checked_mul(4)
                .ok_or_else(|| Error::Corrupt("bad dimension".into()))?,
        )?;
        let vector = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let text = match r.u8()? {
            0 => None,
            1 => {
                let n = r.u32()? as usize;
                Some(r.str(n)?.to_owned())
            }
            other => return Err(Error::Corrupt(format!("bad text flag {other}"))),
        };
        let metadata = if r.buf.is_empty() {
            Map::new()
        } else {
            match serde_json::from_slice(r.buf) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err(Error::Corrupt("stored metadata is not an object".into())),
                Err(e) => return Err(Error::Corrupt(format!("stored metadata: {e}"))),
            }
        };
        Ok(Record {
            id,
            text,
            metadata,
            vector,
        })
    }

    /// Both decoders agree with the reference on `bytes`: the same record (bit for bit in the
    /// vector), or a corruption error with the same message. Never a panic.
    fn check_agrees(bytes: &[u8]) -> std::result::Result<(), proptest::test_runner::TestCaseError> {
        use proptest::{prop_assert, prop_assert_eq};
        let want = reference_decode(bytes);
        let full = decode_record(bytes);
        let meta = decode_record_meta(bytes);
        match want {
            Ok(want) => {
                let full = full.map_err(|e| {
                    proptest::test_runner::TestCaseError::fail(format!("decode_record: {e}"))
                })?;
                let meta = meta.map_err(|e| {
                    proptest::test_runner::TestCaseError::fail(format!("decode_record_meta: {e}"))
                })?;
                prop_assert_eq!(&full.id, &want.id);
                prop_assert_eq!(&full.text, &want.text);
                prop_assert_eq!(&full.metadata, &want.metadata);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&full.vector), bits(&want.vector));
                prop_assert_eq!(meta.id, want.id.as_str());
                prop_assert_eq!(meta.has_text, want.text.is_some());
                prop_assert_eq!(&meta.metadata, &want.metadata);
            }
            Err(want) => {
                let want = want.to_string();
                prop_assert!(matches!(full, Err(Error::Corrupt(_))), "{:?}", full);
                prop_assert!(matches!(meta, Err(Error::Corrupt(_))), "{:?}", meta);
                prop_assert_eq!(full.err().map(|e| e.to_string()), Some(want.clone()));
                prop_assert_eq!(meta.err().map(|e| e.to_string()), Some(want));
            }
        }
        Ok(())
    }

    #[test]
    fn meta_of_a_record_skips_vector_and_text() {
        let meta = json!({"k": "v", "n": 3}).as_object().unwrap().clone();
        let bytes = encode_record("doc-9", &[0.5; 16], Some("some text"), &meta).unwrap();
        let got = decode_record_meta(&bytes).unwrap();
        assert_eq!(
            got,
            RecordMeta {
                id: "doc-9",
                has_text: true,
                metadata: meta,
            }
        );
        let bytes = encode_record("x", &[], None, &Map::new()).unwrap();
        let got = decode_record_meta(&bytes).unwrap();
        assert_eq!((got.id, got.has_text, got.metadata.len()), ("x", false, 0));
        // Invalid UTF-8 in the text is corrupt here too, though the text is not returned.
        let mut bad = encode_record("x", &[1.0], Some("ab"), &Map::new()).unwrap();
        let at = bad.len() - "b{}".len(); // the text's last byte, before the metadata `{}`
        bad[at] = 0xff;
        let err = decode_record_meta(&bad).unwrap_err();
        assert!(err.to_string().contains("invalid UTF-8"), "{err}");
    }

    /// A valid record of arbitrary contents.
    fn record_strategy() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        (
            "[a-z0-9#/-]{0,12}",
            proptest::collection::vec(any::<f32>(), 0..6),
            proptest::option::of("[ -~é]{0,10}"),
            proptest::collection::btree_map("[a-z]{1,4}", any::<i64>(), 0..4),
        )
            .prop_map(|(id, vector, text, meta)| {
                let meta: Map<String, Value> =
                    meta.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
                encode_record(&id, &vector, text.as_deref(), &meta).unwrap()
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3_000))]

        #[test]
        fn decoders_agree_on_arbitrary_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            version_one in proptest::prelude::any::<bool>(),
        ) {
            let mut bytes = bytes;
            if version_one && !bytes.is_empty() {
                bytes[0] = RECORD_VERSION; // get past the version check more often
            }
            check_agrees(&bytes)?;
        }

        #[test]
        fn decoders_agree_on_damaged_records(
            record in record_strategy(),
            edits in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
                0..4,
            ),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            truncate in proptest::prelude::any::<bool>(),
        ) {
            let mut bytes = record;
            check_agrees(&bytes)?;
            for (at, b) in edits {
                let i = at.index(bytes.len());
                bytes[i] = b;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            check_agrees(&bytes)?;
        }
    }
}
