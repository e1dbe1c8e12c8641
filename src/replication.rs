//! Exactly-once apply of a replicated write log: [`Database::apply_replicated`] and
//! [`Database::applied_seq`].
//!
//! The replicas of a shard consume one ordered log (a stream whose entries carry strictly
//! increasing sequence numbers, with gaps: other shards share it). Each collection stores the
//! sequence of the last entry it applied (storage's `mapplied` counter) in the same atomic
//! storage batch as that entry's writes, so that a crash never applies an entry twice or skips
//! one: after a restart, the consumer resumes after [`Database::applied_seq`], and entries at
//! or before it are answered [`ReplicatedOutcome::AlreadyApplied`].
//!
//! An entry the collection refuses (a caller-fault error: a wrong dimension, a bad id, ...)
//! is refused identically by every replica holding the same data: its sequence is recorded
//! alone and it is answered [`ReplicatedOutcome::Rejected`], so that no replica gets stuck on
//! it or diverges. A system failure (I/O, ...) records nothing: the entry is to be retried.

use latentdb_storage::{Document, Durability, WriteOptions};

use crate::Database;
use crate::collection::{Collection, WriterState};
use crate::database::{Alongside, check_indexable};
use crate::error::{Error, Result, bounded};

/// One replicated write, as the cluster's write log carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicatedOp {
    /// Insert or replace these documents; every one has its id and its vector (replicas never
    /// embed).
    Upsert(Vec<Document>),
    /// Delete these ids (a parent's chunks `{id}#{n}` too, as [`Database::delete`] does).
    Delete(Vec<String>),
}

/// What [`Database::apply_replicated`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicatedOutcome {
    /// The entry was applied, with its sequence, atomically.
    Applied,
    /// The entry's sequence is at or before the collection's applied sequence: nothing was
    /// written.
    AlreadyApplied,
    /// The collection refuses the entry (the message says why): nothing of it was written but
    /// its sequence, which now counts as applied.
    Rejected(String),
}

impl Database {
    /// Applies `op`, the log entry with sequence `seq`, to `collection` exactly once: the
    /// collection's applied sequence becomes `seq` in the same atomic storage write as the
    /// entry's documents or deletions, so a crash never leaves one without the other.
    ///
    /// - `seq` at or before [`Database::applied_seq`]: [`ReplicatedOutcome::AlreadyApplied`],
    ///   nothing written.
    /// - An upsert goes through the checks and the write path of [`Database::upsert`]
    ///   (storage, vector and lexical indexes); every document must have an id and a vector.
    ///   A delete is [`Database::delete`]'s (chunks of a parent included).
    /// - An entry the collection refuses (an error of a caller-fault
    ///   [`kind`](crate::Error::kind): a wrong dimension, a bad id, a non-finite vector, ...):
    ///   its sequence alone is recorded, and [`ReplicatedOutcome::Rejected`] says why. Every
    ///   replica refuses it alike, given the same data and options.
    /// - An empty upsert or delete is applied (its sequence is recorded).
    ///
    /// Fails, recording nothing, when `seq` is 0, when the collection does not exist or is
    /// quarantined, and on a system failure (I/O, ...): the entry is then to be applied again.
    /// The check of `seq` and the write happen under the collection's writer lock, so that
    /// concurrent callers apply an entry once. Every outcome is durable when this returns,
    /// unless the database was opened with [`Durability::Buffered`].
    pub fn apply_replicated(
        &self,
        collection: &str,
        seq: u64,
        op: ReplicatedOp,
    ) -> Result<ReplicatedOutcome> {
        let _span = tracing::debug_span!("apply_replicated", collection, seq).entered();
        if seq == 0 {
            return Err(Error::InvalidArgument(
                "replicated log sequences start at 1".into(),
            ));
        }
        let coll = self.coll(collection)?;
        let storage = self.storage();
        let outcome = {
            let mut w = coll.writer.lock();
            if w.dropped {
                return Err(Error::collection_not_found(collection));
            }
            if seq <= storage.applied_seq(collection)? {
                ReplicatedOutcome::AlreadyApplied
            } else {
                match apply_locked(self, &coll, &mut w, seq, op) {
                    Ok(()) => ReplicatedOutcome::Applied,
                    Err(e) if e.is_caller_fault() => {
                        storage.mark_applied(collection, seq, Some(Durability::Buffered))?;
                        tracing::debug!(error = %e, "replicated entry rejected");
                        ReplicatedOutcome::Rejected(e.to_string())
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        // Outside the lock, as upserts flush (group commit). An entry already applied is
        // flushed too: it may be one a concurrent caller wrote and has not flushed yet.
        if storage.options().durability == Durability::Sync {
            storage.flush()?;
        }
        Ok(outcome)
    }

    /// The sequence of the last log entry applied to `collection` by
    /// [`Database::apply_replicated`] (0: none).
    pub fn applied_seq(&self, collection: &str) -> Result<u64> {
        self.coll(collection)?;
        Ok(self.storage().applied_seq(collection)?)
    }
}

/// Applies `op` with its sequence `seq` (buffered: the flush is the caller's), with the
/// collection's writer lock `w` held. An error leaves nothing of it written.
fn apply_locked(
    db: &Database,
    coll: &Collection,
    w: &mut WriterState,
    seq: u64,
    op: ReplicatedOp,
) -> Result<()> {
    match op {
        ReplicatedOp::Upsert(docs) => {
            complete(&docs)?;
            check_indexable(coll, &docs)?;
            db.write_locked(coll, w, &coll.name, docs, Alongside::Applied(seq))?;
        }
        ReplicatedOp::Delete(mut ids) => {
            // Under the lock, so that the chunks found are the ones the delete removes.
            let parents: Vec<&str> = ids.iter().map(String::as_str).collect();
            let chunks = db.chunk_ids_of(&coll.name, &parents)?;
            ids.extend(chunks);
            let options = WriteOptions {
                durability: Some(Durability::Buffered),
                applied: Some(seq),
            };
            db.delete_locked(coll, w, &ids, options)?;
        }
    }
    Ok(())
}

/// Fails unless every document has an id and a vector: a replica neither generates ids nor
/// embeds (each would do it differently).
fn complete(docs: &[Document]) -> Result<()> {
    for (i, d) in docs.iter().enumerate() {
        let Some(id) = d.id.as_deref() else {
            return Err(Error::InvalidArgument(format!(
                "replicated document {i} has no id"
            )));
        };
        if d.vector.is_none() {
            return Err(Error::InvalidArgument(format!(
                "replicated document {:?} has no vector",
                bounded(id)
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicated_documents_need_an_id_and_a_vector() {
        assert!(complete(&[Document::new("a", vec![1.0])]).is_ok());
        assert!(complete(&[]).is_ok());
        let no_id = Document {
            vector: Some(vec![1.0]),
            ..Default::default()
        };
        let no_vector = Document {
            id: Some("b".into()),
            text: Some("text".into()),
            ..Default::default()
        };
        for bad in [no_id, no_vector] {
            let e = complete(&[Document::new("a", vec![1.0]), bad]).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        }
    }
}
