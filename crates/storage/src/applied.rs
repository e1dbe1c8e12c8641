//! The applied sequence of a replica: the sequence of the last entry of a replicated write log
//! (the cluster's) applied to a collection, kept under the counter key `mapplied`.
//!
//! It is written in the same atomic sled batch as the entry's writes (through
//! [`WriteOptions::applied`](crate::WriteOptions::applied)), or alone by
//! [`Storage::mark_applied`] for an entry that writes nothing, so that a crash never leaves an
//! entry applied without its sequence, or the reverse. It only ever grows.

use crate::error::{Error, Result};
use crate::key;
use crate::options::Durability;
use crate::store::{Storage, not_found};

impl Storage {
    /// The sequence of the last replicated log entry applied to `collection` (0: none).
    pub fn applied_seq(&self, collection: &str) -> Result<u64> {
        self.read(collection, |state| stored(&state.tree))
    }

    /// Records `seq` as the collection's applied sequence, writing nothing else (one atomic
    /// insert, under the collection's writer lock): for a log entry that was refused, so that
    /// it is not applied again. Fails with an invalid-argument error, writing nothing, when
    /// `seq` is not past the stored applied sequence. With [`Durability::Sync`] it is on disk
    /// when this returns.
    pub fn mark_applied(
        &self,
        collection: &str,
        seq: u64,
        durability: Option<Durability>,
    ) -> Result<()> {
        let state = self.state(collection)?;
        let counters = state.writer.lock();
        if counters.dropped {
            return Err(not_found(collection));
        }
        check_past(&state.tree, seq)?;
        state.tree.insert(key::META_APPLIED, &seq.to_be_bytes())?;
        drop(counters);
        self.sync(durability)
    }
}

/// Adds `applied` (when given) to `batch` as the collection's new applied sequence, after
/// checking that it is past the stored one. The collection's writer lock must be held until the
/// batch is applied.
pub(crate) fn put(tree: &sled::Tree, batch: &mut sled::Batch, applied: Option<u64>) -> Result<()> {
    if let Some(seq) = applied {
        check_past(tree, seq)?;
        batch.insert(key::META_APPLIED, &seq.to_be_bytes());
    }
    Ok(())
}

/// The stored applied sequence (0 when absent).
fn stored(tree: &sled::Tree) -> Result<u64> {
    tree.get(key::META_APPLIED)?
        .map(|v| key::be_u64(&v))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Fails unless `seq` is past the stored applied sequence.
fn check_past(tree: &sled::Tree, seq: u64) -> Result<()> {
    let current = stored(tree)?;
    if seq <= current {
        return Err(Error::InvalidArgument(format!(
            "applied sequence {seq} is not past the collection's {current}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::{delete_batch, encode_batch, upsert_batch};
    use crate::{CollectionSpec, Document, Metric, StorageOptions, WriteOptions};

    fn open(dir: &std::path::Path) -> Storage {
        let s = Storage::open(dir, StorageOptions::default()).unwrap();
        if s.collection_info("c").is_err() {
            s.create_collection(CollectionSpec::new("c", 2, Metric::Cosine))
                .unwrap();
        }
        s
    }

    fn applied(seq: u64) -> WriteOptions {
        WriteOptions {
            applied: Some(seq),
            ..Default::default()
        }
    }

    /// The keys and values of a tree, in key order.
    fn entries(tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
        tree.iter()
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    }

    #[test]
    fn absent_reads_as_zero_and_mark_applied_writes_only_the_sequence() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            assert_eq!(s.applied_seq("c").unwrap(), 0);
            s.upsert("c", vec![Document::new("a", vec![1.0, 0.0])], None)
                .unwrap();
            // An upsert that applies no log entry leaves it alone.
            assert_eq!(s.applied_seq("c").unwrap(), 0);
            let before = s.last_seq("c").unwrap();
            s.mark_applied("c", 5, None).unwrap();
            assert_eq!(s.applied_seq("c").unwrap(), 5);
            assert_eq!(s.last_seq("c").unwrap(), before);
            assert_eq!(s.count("c").unwrap(), 1);
            // Never backwards, never the same twice, never 0.
            for stale in [5, 4, 0] {
                let e = s.mark_applied("c", stale, None).unwrap_err();
                assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
            }
            assert_eq!(s.applied_seq("c").unwrap(), 5);
            assert!(s.mark_applied("missing", 6, None).is_err());
        }
        let s = open(dir.path());
        assert_eq!(s.applied_seq("c").unwrap(), 5);
    }

    #[test]
    fn the_upsert_batch_holds_the_applied_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let state = s.state("c").unwrap();
        let docs = vec![
            Document::new("a", vec![1.0, 0.0]),
            Document::new("b", vec![0.0, 1.0]),
        ];
        let encoded = encode_batch(docs, 2, usize::MAX).unwrap();
        let pending = {
            let counters = state.writer.lock();
            upsert_batch(&state, &counters, encoded, Some(7)).unwrap()
        };
        // Applied alone to an empty tree, the one batch is the documents, their change log,
        // the counters and the applied sequence.
        let scratch = s.db.open_tree("scratch").unwrap();
        scratch.apply_batch(pending.batch).unwrap();
        let keys: Vec<Vec<u8>> = entries(&scratch).into_iter().map(|(k, _)| k).collect();
        assert!(keys.contains(&key::id_key("a")));
        assert!(keys.contains(&key::id_key("b")));
        assert!(keys.contains(&key::log_key(2).to_vec()));
        assert!(keys.contains(&key::META_SEQ.to_vec()));
        assert_eq!(stored(&scratch).unwrap(), 7);

        // Through the public write: both or neither.
        let docs = vec![Document::new("a", vec![1.0, 0.0])];
        let (out, _) = s.upsert_overlapped_with("c", docs, applied(7), |_| ());
        assert_eq!(out.unwrap().ids, ["a"]);
        assert_eq!(s.applied_seq("c").unwrap(), 7);
        let bad = vec![
            Document::new("x", vec![1.0, 0.0]),
            Document::new("y", vec![1.0, 0.0, 0.0]),
        ];
        let before = entries(&state.tree);
        let (out, ran) = s.upsert_overlapped_with("c", bad, applied(8), |_| ());
        assert!(matches!(out, Err(Error::DimensionMismatch { .. })));
        assert!(ran.is_none());
        // A stale sequence refuses the whole write.
        let docs = vec![Document::new("z", vec![1.0, 0.0])];
        let (out, _) = s.upsert_overlapped_with("c", docs, applied(7), |_| ());
        assert!(matches!(out, Err(Error::InvalidArgument(_))));
        assert_eq!(entries(&state.tree), before);
        // An empty upsert still records its sequence.
        let (out, _) = s.upsert_overlapped_with("c", Vec::new(), applied(9), |_| ());
        assert!(out.unwrap().ids.is_empty());
        assert_eq!(s.applied_seq("c").unwrap(), 9);
        assert_eq!(s.count("c").unwrap(), 1);
    }

    #[test]
    fn the_delete_batch_holds_the_applied_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let state = s.state("c").unwrap();
        s.upsert("c", vec![Document::new("a", vec![1.0, 0.0])], None)
            .unwrap();
        let pending = {
            let counters = state.writer.lock();
            delete_batch(&state, &counters, &["a"], Some(3)).unwrap()
        };
        assert_eq!(pending.out.deleted, ["a"]);
        let scratch = s.db.open_tree("scratch").unwrap();
        scratch.apply_batch(pending.batch).unwrap();
        let keys: Vec<Vec<u8>> = entries(&scratch).into_iter().map(|(k, _)| k).collect();
        assert!(keys.contains(&key::log_key(2).to_vec()));
        assert!(keys.contains(&key::META_COUNT.to_vec()));
        assert_eq!(stored(&scratch).unwrap(), 3);

        let out = s.delete_with("c", &["a"], applied(3)).unwrap();
        assert_eq!(out.deleted, ["a"]);
        assert_eq!(s.applied_seq("c").unwrap(), 3);
        assert_eq!(s.count("c").unwrap(), 0);
        // Nothing to delete: the sequence is still recorded, and nothing else changes.
        let seq = s.last_seq("c").unwrap();
        let out = s.delete_with("c", &["a", "gone"], applied(10)).unwrap();
        assert!(out.deleted.is_empty());
        assert_eq!(out.seq, seq);
        assert_eq!(s.applied_seq("c").unwrap(), 10);
        assert_eq!(s.last_seq("c").unwrap(), seq);
        // A stale or invalid one writes nothing.
        s.upsert("c", vec![Document::new("b", vec![1.0, 0.0])], None)
            .unwrap();
        assert!(s.delete_with("c", &["b"], applied(10)).is_err());
        assert!(s.delete_with("c", &[""], applied(11)).is_err());
        assert_eq!(s.count("c").unwrap(), 1);
        assert_eq!(s.applied_seq("c").unwrap(), 10);
    }
}
