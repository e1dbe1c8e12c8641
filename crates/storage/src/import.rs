//! Restoring a collection from a backup: its configuration, counters and records, written
//! into an empty database as they were captured (point ids and sequence preserved).

use std::sync::atomic::Ordering;

use crate::collection::{CollectionConfig, CollectionInfo};
use crate::error::{Error, Result};
use crate::key;
use crate::record::{self, Change};
use crate::store::{FORMAT_VERSION, Storage, readable_format};

/// Records written per atomic batch while importing.
const IMPORT_BATCH: usize = 2_000;

/// What a collection looked like at its capture: restored as is by [`Storage::import_collection`].
#[derive(Debug, Clone)]
pub struct ImportSpec {
    /// The configuration (its `cid` is replaced by a fresh one of this database).
    pub config: CollectionConfig,
    /// The sequence of the last change at the capture.
    pub seq: u64,
    /// The next point id at the capture.
    pub next_point: u32,
    /// The number of documents the capture held.
    pub count: u64,
    /// Change-log entries to keep (those after the included index dump, up to `seq`), so that
    /// opening replays them onto that dump.
    pub changes: Vec<Change>,
}

impl Storage {
    /// Creates the collection `spec.config` and fills it with `records` (point id, encoded
    /// record), keeping point ids, the sequence and the next point id. The collection must not
    /// exist. Fails (leaving the collection dropped) when a record does not decode, has a point
    /// id at or past `next_point`, repeats an id, or when the number of records is not
    /// `spec.count`. Durable when it returns.
    pub fn import_collection(
        &self,
        spec: ImportSpec,
        records: impl IntoIterator<Item = Result<(u32, Vec<u8>)>>,
    ) -> Result<CollectionInfo> {
        let name = spec.config.spec.name.clone();
        if !readable_format(spec.config.format_version) {
            return Err(Error::UnsupportedFormat {
                found: spec.config.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let info = self.create_collection(spec.config.spec.clone())?;
        let result = self.fill(&name, &spec, records);
        if let Err(e) = result {
            let _ = self.drop_collection(&name);
            return Err(e);
        }
        self.flush()?;
        Ok(CollectionInfo {
            count: spec.count,
            ..info
        })
    }

    fn fill(
        &self,
        name: &str,
        spec: &ImportSpec,
        records: impl IntoIterator<Item = Result<(u32, Vec<u8>)>>,
    ) -> Result<()> {
        let state = self.state(name)?;
        let mut counters = state.writer.lock();
        // Keep the original creation time; the cid stays the fresh one.
        let mut config = state.config.read().clone();
        config.created_ms = spec.config.created_ms;
        let settings = serde_json::to_vec(&config)
            .map_err(|e| Error::Internal(format!("collection config does not serialise: {e}")))?;
        self.registry.insert(name.as_bytes(), settings)?;
        *state.config.write() = config;
        let mut batch = sled::Batch::default();
        let mut n = 0u64;
        let mut pending = 0usize;
        for item in records {
            let (point, bytes) = item?;
            if point >= spec.next_point {
                return Err(Error::Corrupt(format!(
                    "record of point {point} at or past the next point {}",
                    spec.next_point
                )));
            }
            let rec = record::decode_record(&bytes)?;
            if rec.vector.len() != state.dim {
                return Err(Error::Corrupt(format!(
                    "record of point {point} has {} components, the collection {}",
                    rec.vector.len(),
                    state.dim
                )));
            }
            let id_key = key::id_key(&rec.id);
            if state.tree.contains_key(&id_key)? {
                return Err(Error::Corrupt(format!("document id {:?} twice", rec.id)));
            }
            batch.insert(id_key, &point.to_be_bytes());
            batch.insert(&key::point_key(point), bytes);
            n += 1;
            pending += 1;
            if pending == IMPORT_BATCH {
                state.tree.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        if n != spec.count {
            return Err(Error::Corrupt(format!(
                "{n} records, the capture counted {}",
                spec.count
            )));
        }
        for c in &spec.changes {
            if c.seq() > spec.seq {
                return Err(Error::Corrupt(format!(
                    "change {} after the captured sequence {}",
                    c.seq(),
                    spec.seq
                )));
            }
            batch.insert(&key::log_key(c.seq()), &c.encode_value());
        }
        batch.insert(key::META_NEXT_POINT, &spec.next_point.to_be_bytes());
        batch.insert(key::META_SEQ, &spec.seq.to_be_bytes());
        batch.insert(key::META_COUNT, &n.to_be_bytes());
        state.tree.apply_batch(batch)?;
        counters.next_point = spec.next_point;
        counters.seq = spec.seq;
        state.count.store(n, Ordering::Release);
        state.seq.store(spec.seq, Ordering::Release);
        Ok(())
    }
}
