//! The documents a model switch starts from, and bringing them up to date.
//!
//! Tuning and rollback read every document ([`Snapshot::read`]), then spend minutes computing
//! new vectors while writers go on. Before the switch, a [`Shadow`] (the snapshot with its new
//! vectors) catches up with what changed since: documents deleted or replaced since leave it,
//! documents written since are embedded with the new model. The last catch-up runs under the
//! collection's writer lock, immediately before the switch, so nothing is lost or left on the
//! old model's vectors.
//!
//! Changes are tracked by point: every stored version of a document is a point whose content
//! never changes (a replaced document gets a new point). The change log gives the points
//! inserted and removed since the snapshot's sequence; when an index persist has trimmed the
//! log past it, the live points are compared with the shadow's instead.

use std::collections::{HashMap, HashSet};

use latentdb_embed::{EmbedOptions, Embedder};
use latentdb_storage::{Change, Document, Record, Storage};
use serde_json::{Map, Value};

use crate::database::Database;
use crate::embedding::EMBED_BATCH;
use crate::error::{Error, Result, bounded};

/// One document as the snapshot read it.
#[derive(Debug)]
pub(crate) struct SnapDoc {
    /// The point holding this version of the document.
    pub point: u32,
    pub id: String,
    pub text: String,
    pub metadata: Map<String, Value>,
}

/// Every document of a collection with text, in id order, and the change sequence read
/// before them.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The collection's internal id (a dropped and re-created collection has another).
    pub cid: u64,
    /// Every change up to this sequence is reflected in `docs`.
    pub seq: u64,
    pub docs: Vec<SnapDoc>,
}

fn without_text(id: &str, when: &str) -> Error {
    Error::FailedPrecondition(format!(
        "document {:?} has no text{when}; a new model must re-embed every document from its \
         text, so nothing was switched",
        bounded(id)
    ))
}

impl Snapshot {
    /// Reads every document of `collection`. Fails if one has no text.
    pub(crate) fn read(db: &Database, collection: &str) -> Result<Snapshot> {
        let storage = db.storage();
        let cid = storage.collection_config(collection)?.cid;
        // Read before the scan: every change after it is in the log (or the live points).
        let seq = storage.last_seq(collection)?;
        let mut by_id: HashMap<String, SnapDoc> = HashMap::new();
        let mut missing_text: Option<String> = None;
        storage.scan_points(collection, |point, r| {
            let Some(text) = r.text else {
                missing_text.get_or_insert(r.id);
                return Ok(());
            };
            // A replacement racing the scan can show both points of one id: keep the newer.
            if by_id.get(&r.id).is_none_or(|d| d.point < point) {
                by_id.insert(
                    r.id.clone(),
                    SnapDoc {
                        point,
                        id: r.id,
                        text,
                        metadata: r.metadata,
                    },
                );
            }
            Ok(())
        })?;
        if let Some(id) = missing_text {
            return Err(without_text(&id, ""));
        }
        let mut docs: Vec<SnapDoc> = by_id.into_values().collect();
        docs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Snapshot { cid, seq, docs })
    }
}

/// A document with its vector under the new model.
struct ShadowDoc {
    doc: SnapDoc,
    vector: Vec<f32>,
}

/// A snapshot with every document's vector under the new model, kept up to date by
/// [`Shadow::catch_up`].
pub(crate) struct Shadow {
    cid: u64,
    seq: u64,
    docs: HashMap<u32, ShadowDoc>,
}

impl Shadow {
    /// The snapshot's documents with their new vectors (`vectors[i]` is `snapshot.docs[i]`'s).
    pub(crate) fn new(snapshot: Snapshot, vectors: Vec<Vec<f32>>) -> Result<Shadow> {
        if vectors.len() != snapshot.docs.len() {
            return Err(Error::Internal(format!(
                "{} vectors for {} documents",
                vectors.len(),
                snapshot.docs.len()
            )));
        }
        let docs = snapshot
            .docs
            .into_iter()
            .zip(vectors)
            .map(|(doc, vector)| (doc.point, ShadowDoc { doc, vector }))
            .collect();
        Ok(Shadow {
            cid: snapshot.cid,
            seq: snapshot.seq,
            docs,
        })
    }

    /// Applies the changes since the last catch-up: documents removed or replaced leave, the
    /// documents written are embedded with `embedder` (the new model). Returns how many were
    /// embedded. Fails, changing nothing stored, if the collection was dropped (and perhaps
    /// re-created) meanwhile or a document written meanwhile has no text.
    pub(crate) fn catch_up(
        &mut self,
        storage: &Storage,
        collection: &str,
        embedder: &Embedder,
    ) -> Result<usize> {
        if storage.collection_config(collection)?.cid != self.cid {
            return Err(Error::FailedPrecondition(format!(
                "collection {:?} was dropped while its new model was prepared; nothing was \
                 switched",
                bounded(collection)
            )));
        }
        // Read before the changes: the next catch-up starts here (re-reading a change is
        // harmless, missing one is not).
        let seq = storage.last_seq(collection)?;
        let (changes, complete) = storage.changes_since(collection, self.seq)?;
        let added: Vec<(u32, Record)> = if complete {
            let mut removed = HashSet::new();
            let mut inserted = Vec::new();
            for c in changes {
                match c {
                    Change::Insert { point, .. } => inserted.push(point),
                    Change::Remove { point, .. } => {
                        removed.insert(point);
                        self.docs.remove(&point);
                    }
                }
            }
            inserted.retain(|p| !removed.contains(p) && !self.docs.contains_key(p));
            let records = storage.get_points(collection, &inserted)?;
            inserted
                .into_iter()
                .zip(records)
                .filter_map(|(p, r)| r.map(|r| (p, r)))
                .collect()
        } else {
            // An index persist trimmed the log past our sequence: compare live points.
            let mut live = HashSet::new();
            let mut added = Vec::new();
            storage.scan_points(collection, |p, r| {
                live.insert(p);
                if !self.docs.contains_key(&p) {
                    added.push((p, r));
                }
                Ok(())
            })?;
            self.docs.retain(|p, _| live.contains(p));
            added
        };
        let mut docs = Vec::with_capacity(added.len());
        for (point, r) in added {
            let Some(text) = r.text else {
                return Err(without_text(
                    &r.id,
                    " (it was written while the new model was prepared)",
                ));
            };
            docs.push(SnapDoc {
                point,
                id: r.id,
                text,
                metadata: r.metadata,
            });
        }
        let n = docs.len();
        if n > 0 {
            let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
            let opts = EmbedOptions {
                batch_size: EMBED_BATCH,
                ..EmbedOptions::default()
            };
            let vectors = embedder.embed(&texts, &opts)?;
            for (doc, vector) in docs.into_iter().zip(vectors) {
                self.docs.insert(doc.point, ShadowDoc { doc, vector });
            }
        }
        self.seq = seq;
        Ok(n)
    }

    /// The documents to write, in id order.
    pub(crate) fn into_documents(self) -> Vec<Document> {
        let mut docs: Vec<ShadowDoc> = self.docs.into_values().collect();
        docs.sort_by(|a, b| a.doc.id.cmp(&b.doc.id));
        docs.into_iter()
            .map(|d| Document {
                id: Some(d.doc.id),
                text: Some(d.doc.text),
                metadata: Value::Object(d.doc.metadata),
                vector: Some(d.vector),
            })
            .collect()
    }
}
