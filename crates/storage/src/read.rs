//! Reads: by id, by point, scans, scrolls and the change log. Readers never wait for writers;
//! every read goes through [`Storage::read`], so one that races a drop of its collection
//! reports `CollectionNotFound`.

use std::ops::Bound;
use std::sync::atomic::Ordering;

use crate::document::{Record, validate_id};
use crate::error::{Error, Result};
use crate::key;
use crate::record::{self, Change, LogEntry, RecordMeta};
use crate::store::{CollectionState, MAX_SCROLL_PAGE, ScrollPage, Storage};

impl Storage {
    /// Fetches documents by id, in the order asked; `None` for ids that do not exist.
    pub fn get(&self, collection: &str, ids: &[impl AsRef<str>]) -> Result<Vec<Option<Record>>> {
        self.read(collection, |state| {
            ids.iter().map(|id| get_one(state, id.as_ref())).collect()
        })
    }

    /// The point a document id currently maps to.
    pub fn point_of(&self, collection: &str, id: &str) -> Result<Option<u32>> {
        self.read(collection, |state| {
            state
                .tree
                .get(key::id_key(id))?
                .map(|v| key::be_u32(&v))
                .transpose()
        })
    }

    /// Fetches documents by point id (as the index returns them); `None` for points that no
    /// longer exist.
    pub fn get_points(&self, collection: &str, points: &[u32]) -> Result<Vec<Option<Record>>> {
        self.read(collection, |state| {
            points
                .iter()
                .map(|p| {
                    state
                        .tree
                        .get(key::point_key(*p))?
                        .map(|b| record::decode_record(&b))
                        .transpose()
                })
                .collect()
        })
    }

    /// Appends the vector of `point` to `out`; false if the point does not exist.
    pub fn point_vector(&self, collection: &str, point: u32, out: &mut Vec<f32>) -> Result<bool> {
        self.read(collection, |state| {
            match state.tree.get(key::point_key(point))? {
                Some(bytes) => {
                    record::decode_record_vector(&bytes, out)?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    /// Calls `f` with every live point and its record, in point order (for index rebuilds and
    /// payload indexes).
    pub fn scan_points(
        &self,
        collection: &str,
        mut f: impl FnMut(u32, Record) -> Result<()>,
    ) -> Result<()> {
        self.read(collection, |state| {
            for item in state.tree.scan_prefix([key::POINT_PREFIX]) {
                let (k, v) = item?;
                f(key::parse_point_key(&k)?, record::decode_record(&v)?)?;
            }
            Ok(())
        })
    }

    /// Calls `f` with every live point and its record without the vector and text (see
    /// [`RecordMeta`]), in point order: what a payload index needs, at a fraction of the cost
    /// of [`scan_points`](Storage::scan_points) (no vector or text is converted or copied). A
    /// record is reported corrupt exactly when `scan_points` would report it, with the same
    /// error.
    pub fn scan_point_meta(
        &self,
        collection: &str,
        mut f: impl FnMut(u32, RecordMeta<'_>) -> Result<()>,
    ) -> Result<()> {
        self.read(collection, |state| {
            for item in state.tree.scan_prefix([key::POINT_PREFIX]) {
                let (k, v) = item?;
                f(key::parse_point_key(&k)?, record::decode_record_meta(&v)?)?;
            }
            Ok(())
        })
    }

    /// The ids of the chunks of the parent document `parent`: documents whose id is
    /// `{parent}#…` (something after the `#`) and whose metadata `parent` is `parent`, in id
    /// order.
    ///
    /// A key-only prefix scan of the id map: only ids that start with `{parent}#` have their
    /// record read, so a document without chunks costs one index seek.
    pub fn chunk_ids(&self, collection: &str, parent: &str) -> Result<Vec<String>> {
        self.read(collection, |state| {
            let prefix = key::id_key(&format!("{parent}#"));
            let mut out = Vec::new();
            for item in state.tree.scan_prefix(&prefix) {
                let (k, _) = item?;
                if k.len() == prefix.len() {
                    continue; // `{parent}#` itself is not a chunk
                }
                let id = key::parse_id_key(&k)?;
                if let Some(r) = get_one(state, id)?
                    && r.metadata.get("parent").and_then(serde_json::Value::as_str) == Some(parent)
                {
                    out.push(r.id);
                }
            }
            Ok(out)
        })
    }

    /// The number of live documents.
    pub fn count(&self, collection: &str) -> Result<u64> {
        self.read(collection, |state| Ok(state.count.load(Ordering::Acquire)))
    }

    /// The sequence number of the last change written to the collection.
    pub fn last_seq(&self, collection: &str) -> Result<u64> {
        self.read(collection, |state| Ok(state.seq.load(Ordering::Acquire)))
    }

    /// The changes with sequence greater than `after`, oldest first, and whether the log still
    /// reaches back that far (false when it was trimmed past `after`).
    pub fn changes_since(&self, collection: &str, after: u64) -> Result<(Vec<Change>, bool)> {
        self.read(collection, |state| {
            let complete = match state.tree.scan_prefix([key::LOG_PREFIX]).next() {
                // The oldest entry ends at its key; an insert run there may begin earlier.
                Some(first) => {
                    let (k, v) = first?;
                    let last = key::parse_log_key(&k)?;
                    last <= after.saturating_add(1)
                        || LogEntry::parse(last, &v)
                            .is_ok_and(|e| e.first_seq() <= after.saturating_add(1))
                }
                // Empty log: complete only if nothing happened after `after`.
                None => state.seq.load(Ordering::Acquire) <= after,
            };
            // An entry is keyed by the sequence of its last change (an insert run stands for
            // several): the first entry at or after `after + 1` may begin before it.
            let out = read_log(&state.tree, after, u64::MAX)?;
            Ok((out, complete))
        })
    }

    /// Removes change-log entries up to and including `upto` (after the index persisted them).
    /// Does nothing while a snapshot holds the collection (a backup copies the log after its
    /// index dump); the next trim after the hold removes them.
    pub fn trim_changes(&self, collection: &str, upto: u64) -> Result<()> {
        self.read(collection, |state| {
            if state.writer.lock().holds > 0 {
                return Ok(());
            }
            let start = key::log_key(0);
            let end = key::log_key(upto.saturating_add(1));
            let mut batch = sled::Batch::default();
            let mut n = 0usize;
            for item in state.tree.range(start.as_slice()..end.as_slice()) {
                batch.remove(item?.0);
                n += 1;
                if n.is_multiple_of(10_000) {
                    state.tree.apply_batch(std::mem::take(&mut batch))?;
                }
            }
            state.tree.apply_batch(batch)?;
            Ok(())
        })
    }

    /// A page of documents in id order, starting after the id `after` (exclusive).
    pub fn scroll(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScrollPage> {
        self.read(collection, |state| {
            if limit == 0 || limit > MAX_SCROLL_PAGE {
                return Err(Error::InvalidArgument(format!(
                    "page size must be between 1 and {MAX_SCROLL_PAGE}, got {limit}"
                )));
            }
            let start = match after {
                Some(a) => Bound::Excluded(key::id_key(a)),
                None => Bound::Included(vec![key::ID_PREFIX]),
            };
            let end = Bound::Excluded(vec![key::ID_PREFIX + 1]);
            let mut page = ScrollPage::default();
            let mut iter = state.tree.range::<Vec<u8>, _>((start, end));
            let mut last_id = None;
            for item in iter.by_ref() {
                let (k, v) = item?;
                let point = key::be_u32(&v)?;
                let id = key::parse_id_key(&k)?.to_owned();
                if let Some(bytes) = state.tree.get(key::point_key(point))? {
                    page.records.push(record::decode_record(&bytes)?);
                } else if let Some(r) = get_one(state, &id)? {
                    page.records.push(r);
                }
                last_id = Some(id);
                if page.records.len() == limit {
                    break;
                }
            }
            if page.records.len() == limit && iter.next().is_some() {
                page.next_cursor = last_id;
            }
            Ok(page)
        })
    }
}

/// One document by id, or `None`.
fn get_one(state: &CollectionState, id: &str) -> Result<Option<Record>> {
    if validate_id(id).is_err() {
        return Ok(None);
    }
    let id_key = key::id_key(id);
    // A concurrent replace can remove the point between the two reads: re-read the id.
    for _ in 0..8 {
        let Some(point) = state.tree.get(&id_key)? else {
            return Ok(None);
        };
        let point = key::be_u32(&point)?;
        if let Some(bytes) = state.tree.get(key::point_key(point))? {
            return record::decode_record(&bytes).map(Some);
        }
    }
    Ok(None)
}

/// The changes of a collection's log with sequences in `(after, upto]`, oldest first (insert
/// runs expanded). An entry is keyed by the sequence of its last change, so the scan starts
/// at the first key after `after` (an insert run there may begin at or before `after`: its
/// earlier changes are left out) and stops at the first entry that begins past `upto`.
pub(crate) fn read_log(tree: &sled::Tree, after: u64, upto: u64) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    if after >= upto {
        return Ok(out);
    }
    let start = key::log_key(after.saturating_add(1));
    let end = [key::LOG_PREFIX + 1];
    for item in tree.range(start.as_slice()..end.as_slice()) {
        let (k, v) = item?;
        let entry = LogEntry::parse(key::parse_log_key(&k)?, &v)?;
        if entry.first_seq() > upto {
            break;
        }
        out.extend(
            entry
                .changes()
                .filter(|c| c.seq() > after && c.seq() <= upto),
        );
    }
    Ok(out)
}
