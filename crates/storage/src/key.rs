//! The key codec: every key latentdb writes to sled is built and parsed here.
//!
//! Integers in keys are big-endian so that sled's byte order is numeric order. The layout is
//! described in `docs/FORMAT.md`; change both together.

use crate::error::{Error, Result};

/// Key in the default tree holding the storage format version (u32 big-endian).
pub const FORMAT_VERSION_KEY: &[u8] = b"format_version";

/// Name of the tree that maps collection names to their JSON configuration.
pub const REGISTRY_TREE: &[u8] = b"collections";

/// Prefix of every collection's data tree; the collection's numeric id follows in hex.
pub const COLLECTION_TREE_PREFIX: &str = "col.";

/// Prefix byte of the id map inside a collection tree: `i` + document id → point id.
pub const ID_PREFIX: u8 = b'i';
/// Prefix byte of document records: `p` + point id (u32 BE) → record.
pub const POINT_PREFIX: u8 = b'p';
/// Prefix byte of the change log: `l` + sequence (u64 BE) → change.
pub const LOG_PREFIX: u8 = b'l';
/// Prefix byte of deferred records: `d` + point id (u32 BE) → removal sequence (u64 BE) +
/// record, kept while a snapshot holds the collection (see `snapshot.rs`).
pub const DEFERRED_PREFIX: u8 = b'd';
/// Prefix byte of per-collection counters: `m` + name → big-endian integer.
pub const META_PREFIX: u8 = b'm';

/// Counter key: the next point id to assign (u32 BE).
pub const META_NEXT_POINT: &[u8] = b"mnext_point";
/// Counter key: the last change sequence written (u64 BE).
pub const META_SEQ: &[u8] = b"mseq";
/// Counter key: the number of live documents (u64 BE).
pub const META_COUNT: &[u8] = b"mcount";
/// Counter key: the sequence of the last entry of a replicated write log applied to the
/// collection (u64 BE; absent: none), written in the same batch as that entry's writes.
pub const META_APPLIED: &[u8] = b"mapplied";

/// The sled tree name of the collection with numeric id `cid`.
pub fn collection_tree(cid: u64) -> String {
    format!("{COLLECTION_TREE_PREFIX}{cid:016x}")
}

/// The numeric id encoded in a collection tree name, if `name` is one.
pub fn parse_collection_tree(name: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(name).ok()?;
    let hex = s.strip_prefix(COLLECTION_TREE_PREFIX)?;
    u64::from_str_radix(hex, 16).ok()
}

/// `i` + document id.
pub fn id_key(doc_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + doc_id.len());
    k.push(ID_PREFIX);
    k.extend_from_slice(doc_id.as_bytes());
    k
}

/// The document id of an `i` key.
pub fn parse_id_key(key: &[u8]) -> Result<&str> {
    match key.split_first() {
        Some((&ID_PREFIX, rest)) => std::str::from_utf8(rest)
            .map_err(|_| Error::Corrupt("document id key is not UTF-8".into())),
        _ => Err(Error::Corrupt("not a document id key".into())),
    }
}

/// `p` + point id (big-endian).
pub fn point_key(point: u32) -> [u8; 5] {
    let mut k = [POINT_PREFIX, 0, 0, 0, 0];
    k[1..].copy_from_slice(&point.to_be_bytes());
    k
}

/// The point id of a `p` key.
pub fn parse_point_key(key: &[u8]) -> Result<u32> {
    match key {
        [POINT_PREFIX, a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(Error::Corrupt("not a point key".into())),
    }
}

/// `d` + point id (big-endian).
pub fn deferred_key(point: u32) -> [u8; 5] {
    let mut k = [DEFERRED_PREFIX, 0, 0, 0, 0];
    k[1..].copy_from_slice(&point.to_be_bytes());
    k
}

/// The point id of a `d` key.
pub fn parse_deferred_key(key: &[u8]) -> Result<u32> {
    match key {
        [DEFERRED_PREFIX, a, b, c, d] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(Error::Corrupt("not a deferred record key".into())),
    }
}

/// The value of a `d` key: the removal sequence (u64 BE), then the record.
pub fn deferred_value(seq: u64, record: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + record.len());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(record);
    v
}

/// The removal sequence and the record of a `d` value.
pub fn split_deferred_value(v: &[u8]) -> Result<(u64, &[u8])> {
    match v.split_first_chunk::<8>() {
        Some((seq, record)) => Ok((u64::from_be_bytes(*seq), record)),
        None => Err(Error::Corrupt(
            "deferred record shorter than its sequence".into(),
        )),
    }
}

/// `l` + sequence (big-endian).
pub fn log_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = LOG_PREFIX;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The sequence of an `l` key.
pub fn parse_log_key(key: &[u8]) -> Result<u64> {
    if key.len() == 9 && key[0] == LOG_PREFIX {
        let mut b = [0u8; 8];
        b.copy_from_slice(&key[1..]);
        Ok(u64::from_be_bytes(b))
    } else {
        Err(Error::Corrupt("not a log key".into()))
    }
}

/// Decodes a big-endian u32 value.
pub fn be_u32(v: &[u8]) -> Result<u32> {
    <[u8; 4]>::try_from(v)
        .map(u32::from_be_bytes)
        .map_err(|_| Error::Corrupt(format!("expected 4 bytes, found {}", v.len())))
}

/// Decodes a big-endian u64 value.
pub fn be_u64(v: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Corrupt(format!("expected 8 bytes, found {}", v.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_numerically() {
        assert_eq!(parse_point_key(&point_key(7)).unwrap(), 7);
        assert_eq!(parse_log_key(&log_key(1 << 40)).unwrap(), 1 << 40);
        assert_eq!(parse_id_key(&id_key("a/b")).unwrap(), "a/b");
        assert!(point_key(255) < point_key(256));
        assert!(log_key(255) < log_key(256));
        assert_eq!(
            parse_collection_tree(collection_tree(42).as_bytes()),
            Some(42)
        );
        assert_eq!(parse_collection_tree(b"collections"), None);
        assert!(parse_point_key(b"px").is_err());
        assert!(be_u32(&[1, 2]).is_err());
        assert_eq!(parse_deferred_key(&deferred_key(9)).unwrap(), 9);
        assert!(parse_deferred_key(&point_key(9)).is_err());
        let v = deferred_value(5, b"rec");
        assert_eq!(split_deferred_value(&v).unwrap(), (5, &b"rec"[..]));
        assert!(split_deferred_value(b"short").is_err());
    }
}
