//! Writes: upserts and deletes. Each batch is one atomic sled batch under the collection's
//! writer lock, which hands out point ids and change sequences.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use crate::document::{Document, validate, validate_id};
use crate::error::{Error, Result};
use crate::key;
use crate::options::Durability;
use crate::record::{self, Change};
use crate::store::{DeleteOutcome, Storage, UpsertOutcome, not_found};

impl Storage {
    /// Inserts or replaces a batch of documents, atomically: either every document is stored or
    /// none is. With [`Durability::Sync`] the batch is on disk when this returns.
    pub fn upsert(
        &self,
        collection: &str,
        docs: Vec<Document>,
        durability: Option<Durability>,
    ) -> Result<UpsertOutcome> {
        let state = self.state(collection)?;
        let dim = state.dim;
        let mut seen = HashSet::with_capacity(docs.len());
        let mut encoded = Vec::with_capacity(docs.len());
        for doc in docs {
            let doc = validate(doc, dim, self.options.max_text_bytes)?;
            if !seen.insert(doc.id.clone()) {
                return Err(Error::DuplicateId { id: doc.id });
            }
            let bytes =
                record::encode_record(&doc.id, &doc.vector, doc.text.as_deref(), &doc.metadata)?;
            encoded.push((doc.id, doc.vector, bytes));
        }
        drop(seen);
        if encoded.is_empty() {
            return Ok(UpsertOutcome {
                seq: state.seq.load(Ordering::Acquire),
                ..Default::default()
            });
        }

        let mut counters = state.writer.lock();
        if counters.dropped {
            return Err(not_found(collection));
        }
        let mut batch = sled::Batch::default();
        let mut next_point = counters.next_point;
        let mut seq = counters.seq;
        let mut count = state.count.load(Ordering::Acquire);
        let mut out = UpsertOutcome {
            ids: Vec::with_capacity(encoded.len()),
            inserted: Vec::with_capacity(encoded.len()),
            removed: Vec::new(),
            seq: 0,
        };
        for (id, vector, bytes) in encoded {
            let id_key = key::id_key(&id);
            let point = next_point;
            next_point = next_point
                .checked_add(1)
                .ok_or_else(|| Error::IdSpaceExhausted(state.name.clone()))?;
            match state.tree.get(&id_key)? {
                Some(old) => {
                    let old = key::be_u32(&old)?;
                    batch.remove(&key::point_key(old));
                    seq += 1;
                    let change = Change::Remove { seq, point: old };
                    batch.insert(&key::log_key(seq), &change.encode_value());
                    out.removed.push(old);
                }
                None => count += 1,
            }
            batch.insert(id_key, &point.to_be_bytes());
            batch.insert(&key::point_key(point), bytes);
            seq += 1;
            let change = Change::Insert { seq, point };
            batch.insert(&key::log_key(seq), &change.encode_value());
            out.ids.push(id);
            out.inserted.push((point, vector));
        }
        batch.insert(key::META_NEXT_POINT, &next_point.to_be_bytes());
        batch.insert(key::META_SEQ, &seq.to_be_bytes());
        batch.insert(key::META_COUNT, &count.to_be_bytes());
        state.tree.apply_batch(batch)?;
        counters.next_point = next_point;
        counters.seq = seq;
        state.count.store(count, Ordering::Release);
        state.seq.store(seq, Ordering::Release);
        drop(counters);
        out.seq = seq;
        self.sync(durability)?;
        Ok(out)
    }

    fn sync(&self, durability: Option<Durability>) -> Result<()> {
        if durability.unwrap_or(self.options.durability) == Durability::Sync {
            self.flush()?;
        }
        Ok(())
    }

    /// Deletes documents by id, atomically. Unknown ids are ignored (they are not in the
    /// outcome's `deleted`).
    pub fn delete(
        &self,
        collection: &str,
        ids: &[impl AsRef<str>],
        durability: Option<Durability>,
    ) -> Result<DeleteOutcome> {
        let state = self.state(collection)?;
        for id in ids {
            validate_id(id.as_ref())?;
        }
        let mut counters = state.writer.lock();
        if counters.dropped {
            return Err(not_found(collection));
        }
        let mut batch = sled::Batch::default();
        let mut seq = counters.seq;
        let mut count = state.count.load(Ordering::Acquire);
        let mut out = DeleteOutcome::default();
        let mut seen = HashSet::new();
        for id in ids {
            let id = id.as_ref();
            if !seen.insert(id) {
                continue;
            }
            let id_key = key::id_key(id);
            if let Some(old) = state.tree.get(&id_key)? {
                let old = key::be_u32(&old)?;
                batch.remove(id_key);
                batch.remove(&key::point_key(old));
                seq += 1;
                let change = Change::Remove { seq, point: old };
                batch.insert(&key::log_key(seq), &change.encode_value());
                count = count.saturating_sub(1);
                out.deleted.push(id.to_owned());
                out.removed.push(old);
            }
        }
        if out.deleted.is_empty() {
            out.seq = seq;
            return Ok(out);
        }
        batch.insert(key::META_SEQ, &seq.to_be_bytes());
        batch.insert(key::META_COUNT, &count.to_be_bytes());
        state.tree.apply_batch(batch)?;
        counters.seq = seq;
        state.count.store(count, Ordering::Release);
        state.seq.store(seq, Ordering::Release);
        drop(counters);
        out.seq = seq;
        self.sync(durability)?;
        Ok(out)
    }
}
