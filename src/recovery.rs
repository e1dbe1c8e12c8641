//! What the facade checks when it opens a database, so that one collection's bad state never
//! bricks the database and lost acknowledged writes never pass silently:
//!
//! - a collection that cannot be opened (bad stored index settings, unreadable records, a
//!   panic while building its index) is *quarantined* with the reason: the database opens,
//!   every operation on that collection fails with [`Error::Quarantined`], and
//!   `drop_collection` removes it;
//! - an index dump whose change sequence is ahead of storage means storage lost writes that
//!   were acknowledged (the dump is written only after storage is flushed): the open fails
//!   with [`Error::DataLoss`] and nothing on disk is changed, unless the caller accepts the
//!   loss, in which case the dump is moved aside as evidence (`index/<cid>.lost-<unix
//!   seconds>`) before the index is rebuilt from what storage holds, and the loss is
//!   reported by `Database::data_loss`;
//! - a loadable index dump of a collection storage does not have (with writes in it) is the
//!   trace of a collection storage lost entirely (a drop removes the dump before the
//!   collection): data loss too, refused or, when accepted, moved aside and reported.
//!
//! The storage engine's own check (its watermark of acknowledged sequences) runs first, in
//! `Storage::open`; see `docs/FORMAT.md`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use latentdb_index::Index;
use latentdb_storage::{DataLossReport, Storage};
use parking_lot::RwLock;

use crate::collection::{Collection, INDEX_DIR, dump_dir, panic_message};
use crate::error::{Error, Result, bounded};

/// The most characters of a quarantine reason kept (it may quote stored settings).
const MAX_REASON_CHARS: usize = 400;

/// Collections that could not be opened, by name, with the reason.
#[derive(Debug, Default)]
pub(crate) struct Quarantine {
    map: RwLock<BTreeMap<String, String>>,
}

impl Quarantine {
    fn insert(&self, name: &str, reason: &str) {
        let reason = latentdb_storage::truncate_echo(reason, MAX_REASON_CHARS);
        tracing::error!(
            collection = name,
            reason,
            "collection quarantined: it cannot be opened; drop it to recover its name"
        );
        self.map.write().insert(name.to_owned(), reason);
    }

    /// The error for an operation on `name` when it is quarantined.
    pub fn error(&self, name: &str) -> Option<Error> {
        self.map.read().get(name).map(|reason| Error::Quarantined {
            collection: bounded(name),
            reason: reason.clone(),
        })
    }

    /// Fails with [`Error::Quarantined`] when `name` is quarantined.
    pub fn check(&self, name: &str) -> Result<()> {
        match self.error(name) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every quarantined collection with its reason, sorted by name.
    pub fn list(&self) -> Vec<(String, String)> {
        self.map
            .read()
            .iter()
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect()
    }

    /// Drops a quarantined collection: its storage, then its dump. `Ok(false)` when `name` is
    /// not quarantined (the caller drops it the ordinary way).
    pub fn drop_collection(&self, storage: &Storage, root: &Path, name: &str) -> Result<bool> {
        let mut map = self.map.write();
        if !map.contains_key(name) {
            return Ok(false);
        }
        let cid = storage.collection_config(name)?.cid;
        // The dump first, as for any drop (see `Database::drop_collection`).
        remove_dump_dir(&dump_dir(root, cid));
        storage.drop_collection(name)?;
        map.remove(name);
        drop(map);
        tracing::info!(collection = name, "quarantined collection dropped");
        Ok(true)
    }
}

/// The collections of a database as opened.
pub(crate) struct Opened {
    /// The collections that opened.
    pub collections: HashMap<String, Arc<Collection>>,
    /// Those that did not.
    pub quarantine: Quarantine,
    /// Acknowledged writes found lost (by storage's watermark or by an index dump), when the
    /// caller accepted the loss.
    pub lost: Vec<DataLossReport>,
}

/// Opens every collection of `storage`: quarantines those that fail, refuses the open on
/// data loss unless `accept_data_loss`, then tidies the dump directory.
pub(crate) fn open_collections(
    storage: &Storage,
    root: &Path,
    accept_data_loss: bool,
) -> Result<Opened> {
    let mut lost: Vec<DataLossReport> = storage.data_loss().to_vec();
    let mut configs = Vec::new();
    let mut live_dirs = HashSet::new();
    let quarantine = Quarantine::default();
    for info in storage.list_collections() {
        match storage.collection_config(&info.name) {
            Ok(c) => {
                live_dirs.insert(c.cid.to_string());
                configs.push(c);
            }
            Err(e) => quarantine.insert(&info.name, &e.to_string()),
        }
    }
    // Dumps of collections storage does not have: checked before anything is changed.
    let orphans = orphan_dumps(root, &live_dirs);
    for (dir, seq) in &orphans {
        if *seq > 0 {
            let cid = dir.file_name().unwrap_or_default().to_string_lossy();
            let name = format!("(unknown: storage lost the collection of index dump {cid})");
            let report = dump_ahead(dir, &name, *seq, 0, accept_data_loss)?;
            // Storage's watermark may have reported the same collection by name.
            let known = lost.iter().any(|l| l.found == 0 && l.expected == *seq);
            if !known {
                lost.push(report);
            }
        }
    }
    for (dir, seq) in orphans {
        if seq == 0 {
            remove_dump_dir(&dir);
        }
    }
    let mut collections = HashMap::new();
    for config in configs {
        let name = config.spec.name.clone();
        let mut found = Vec::new();
        let opened = catch_unwind(AssertUnwindSafe(|| {
            Collection::open(storage, root, &config, accept_data_loss, &mut found)
        }));
        for r in found {
            if !lost.contains(&r) {
                lost.push(r);
            }
        }
        match opened {
            Ok(Ok(coll)) => {
                collections.insert(name, Arc::new(coll));
            }
            Ok(Err(e @ Error::DataLoss { .. })) => return Err(e),
            Ok(Err(e)) => quarantine.insert(&name, &e.to_string()),
            Err(panic) => quarantine.insert(
                &name,
                &format!(
                    "internal error: opening it panicked: {}",
                    panic_message(panic.as_ref())
                ),
            ),
        }
    }
    Ok(Opened {
        collections,
        quarantine,
        lost,
    })
}

/// A dump at sequence `expected` for a collection whose storage holds only up to `found`:
/// [`Error::DataLoss`] (nothing changed), or with `accept`, the dump moved aside as evidence
/// and the loss reported.
pub(crate) fn dump_ahead(
    dir: &Path,
    name: &str,
    expected: u64,
    found: u64,
    accept: bool,
) -> Result<DataLossReport> {
    if !accept {
        return Err(Error::DataLoss {
            collection: bounded(name),
            expected,
            found,
        });
    }
    let kept = move_aside(dir)?;
    tracing::error!(
        collection = name,
        expected,
        found,
        evidence = %kept.display(),
        "acknowledged writes are lost (accepted): the index dump ahead of storage was kept as \
         evidence; rebuilding the index from what storage holds"
    );
    Ok(DataLossReport {
        collection: name.to_owned(),
        expected,
        found,
    })
}

/// Renames `dir` to `<dir>.lost-<unix seconds>` (with a `.N` suffix if that exists), never
/// replacing anything, and makes the rename durable.
fn move_aside(dir: &Path) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = dir.as_os_str().to_string_lossy().into_owned();
    let internal = |what: &str, e: std::io::Error| {
        Error::Internal(format!(
            "cannot keep the index dump {} as evidence ({what}): {e}",
            dir.display()
        ))
    };
    for n in 0u32..1000 {
        let to = PathBuf::from(if n == 0 {
            format!("{base}.lost-{secs}")
        } else {
            format!("{base}.lost-{secs}.{n}")
        });
        // The database lock keeps other processes out: nothing can appear in between.
        if to.symlink_metadata().is_ok() {
            continue;
        }
        std::fs::rename(dir, &to).map_err(|e| internal("rename", e))?;
        if let Some(parent) = dir.parent()
            && let Ok(d) = std::fs::File::open(parent)
        {
            d.sync_all().map_err(|e| internal("fsync", e))?;
        }
        return Ok(to);
    }
    Err(Error::Internal(format!(
        "cannot keep the index dump {} as evidence: no free name",
        dir.display()
    )))
}

/// The dump directories of collections storage does not have, each with the change sequence
/// it reflects (0: none, or no loadable dump: nothing to lose). Directories kept as evidence
/// (`*.lost-*`) and anything else not named by a collection id are left alone.
fn orphan_dumps(root: &Path, live: &HashSet<String>) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(root.join(INDEX_DIR)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u64>().is_err() || live.contains(&name) {
            continue;
        }
        let dir = e.path();
        let seq = match catch_unwind(|| Index::load(&dir)) {
            Ok(Ok(Some((_, seq)))) => seq,
            _ => 0,
        };
        out.push((dir, seq));
    }
    out
}

/// Removes a dump directory, logging any failure but a missing directory.
pub(crate) fn remove_dump_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove index dump");
    }
}
