//! Model versions of a collection: tuned heads stored under the database directory, and the
//! history of which one is live.
//!
//! Layout: `DIR/tune/NAME/history.json` and one head directory per tuned version,
//! `DIR/tune/NAME/vN/` (`head.json` with the backbone's reference, `head.safetensors`, and for
//! head+lora versions `lora.json` and `lora.safetensors`, merged into the backbone on load).
//! Version 0 is the model the collection had before it was first tuned.
//!
//! Durability: a version directory is written complete under a temporary name, every file
//! fsynced, then renamed into place and its parent fsynced ([`stage_version`]); the history is
//! replaced atomically and durably ([`save`]). A switch saves the history that names the new
//! live version first and switches the collection last; a crash between the two leaves a
//! history ahead of the collection, which [`ModelHistory::reconcile`] corrects when it is read
//! (the collection's stored settings say which version is live), so the rollback history is
//! never lost.

use std::path::{Path, PathBuf};

use latentdb_embed::ModelIdentity;
use serde::{Deserialize, Serialize};

use crate::database::Database;
use crate::embedding::EmbedderSettings;
use crate::error::{Error, Result, bounded};

/// Directory under the database directory that holds tuned model versions.
pub const TUNE_DIR: &str = "tune";
const HISTORY_FILE: &str = "history.json";

/// One model version of a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// 0 for the original model, then 1, 2, ...
    pub version: u32,
    /// The collection's embedder settings with this version live.
    pub settings: EmbedderSettings,
    /// Held-out nDCG@10 before and after tuning (tuned versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ndcg_at_10: Option<(f64, f64)>,
    /// Seconds since the Unix epoch when the version was made.
    pub created_unix: u64,
}

/// The model versions of one collection and which is live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelHistory {
    /// The collection.
    pub collection: String,
    /// Every version, in creation order.
    pub versions: Vec<ModelVersion>,
    /// Versions made live, oldest first; the last one is live. Rollback pops it.
    pub live: Vec<u32>,
}

impl ModelHistory {
    /// A history holding only the collection's current model, as version 0.
    fn fresh(collection: &str, settings: EmbedderSettings) -> ModelHistory {
        ModelHistory {
            collection: collection.to_string(),
            versions: vec![ModelVersion {
                version: 0,
                settings,
                ndcg_at_10: None,
                created_unix: now_unix(),
            }],
            live: vec![0],
        }
    }

    /// The live version number.
    pub fn live_version(&self) -> u32 {
        self.live.last().copied().unwrap_or(0)
    }

    /// A version by number.
    pub fn get(&self, version: u32) -> Option<&ModelVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// Brings `live` in line with the collection's model `current` (its stored identity, the
    /// truth about which version is live): a switch recorded but never made (a crash or a
    /// failure after the history was saved) is undone, a rollback recorded but never made is
    /// undone. Returns false when no version of this history is the collection's model (the
    /// collection was dropped and re-created with another one).
    pub fn reconcile(&mut self, current: &ModelIdentity) -> bool {
        let is_current = |h: &ModelHistory, v: u32| {
            h.get(v)
                .is_some_and(|version| version.settings.identity == *current)
        };
        if is_current(self, self.live_version()) {
            return true;
        }
        // A switch forward recorded, not made: the collection is on an earlier live version.
        if let Some(at) = self.live.iter().rposition(|&v| is_current(self, v)) {
            self.live.truncate(at + 1);
            return true;
        }
        // A rollback recorded, not made: the collection is on the version popped from `live`.
        if let Some(v) = self
            .versions
            .iter()
            .rev()
            .map(|v| v.version)
            .find(|&v| is_current(self, v))
        {
            self.live.push(v);
            return true;
        }
        false
    }
}

/// `DIR/tune/NAME`.
pub(crate) fn collection_dir(db: &Database, collection: &str) -> PathBuf {
    db.path().join(TUNE_DIR).join(collection)
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A file-system failure: the system's, not the caller's.
pub(crate) fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{}: {e}", path.display()))
}

/// The number the next tuned version of `collection` gets: above every version of `history`
/// and every version directory on disk (a run that failed before recording its version leaves
/// one; its number is never reused, so a loaded model is never confused with a newer one).
pub(crate) fn next_version(db: &Database, collection: &str, history: &ModelHistory) -> u32 {
    let recorded = history
        .versions
        .iter()
        .map(|v| v.version)
        .max()
        .unwrap_or(0);
    let on_disk = std::fs::read_dir(collection_dir(db, collection))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let name = name.strip_prefix('.').unwrap_or(&name).to_string();
            let digits = name.strip_prefix('v')?;
            digits.split('.').next()?.parse::<u32>().ok()
        })
        .max()
        .unwrap_or(0);
    recorded.max(on_disk) + 1
}

/// The model history of a collection with an embedder (see [`ModelHistory::reconcile`]). A
/// collection never tuned, or one whose model no version of the stored history is, has a
/// fresh history holding its current model as version 0.
pub(crate) fn load(db: &Database, collection: &str) -> Result<ModelHistory> {
    let Some(settings) = db.embedder_settings(collection)? else {
        return Err(Error::FailedPrecondition(format!(
            "collection {:?} has no model",
            bounded(collection)
        )));
    };
    let path = collection_dir(db, collection).join(HISTORY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let mut h: ModelHistory =
                serde_json::from_slice(&bytes).map_err(|e| io_err(&path, e))?;
            if h.reconcile(&settings.identity) {
                return Ok(h);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path, e)),
    }
    Ok(ModelHistory::fresh(collection, settings))
}

#[cfg(test)]
thread_local! {
    /// Test hook: every [`save`] on this thread fails.
    pub(crate) static FAIL_SAVES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Replaces the history file atomically and durably: a crash leaves the old history or the
/// new one, never a partial file and never none.
pub(crate) fn save(db: &Database, h: &ModelHistory) -> Result<()> {
    #[cfg(test)]
    if FAIL_SAVES.with(std::cell::Cell::get) {
        return Err(Error::Internal(
            "saving the history failed (test hook)".into(),
        ));
    }
    let dir = collection_dir(db, &h.collection);
    latentdb_embed::create_dir_all_durably(&dir).map_err(|e| io_err(&dir, e))?;
    let path = dir.join(HISTORY_FILE);
    let bytes = serde_json::to_vec_pretty(h).map_err(|e| io_err(&path, e))?;
    latentdb_embed::write_file_atomically(&path, &bytes).map_err(|e| io_err(&path, e))
}

/// Writes version `version`'s directory: `write` fills a fresh temporary directory beside it;
/// then every file is fsynced, the directory renamed to `vN` (which must not exist, see
/// [`next_version`]) and the parent fsynced. Returns `vN` and what `write` returned.
pub(crate) fn stage_version<T>(
    db: &Database,
    collection: &str,
    version: u32,
    write: impl FnOnce(&Path) -> Result<T>,
) -> Result<(PathBuf, T)> {
    let parent = collection_dir(db, collection);
    latentdb_embed::create_dir_all_durably(&parent).map_err(|e| io_err(&parent, e))?;
    let vdir = parent.join(format!("v{version}"));
    let staging = parent.join(format!(".v{version}.partial"));
    let remove = |dir: &Path| match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(dir, e)),
        _ => Ok(()),
    };
    remove(&staging)?;
    std::fs::create_dir(&staging).map_err(|e| io_err(&staging, e))?;
    let written = write(&staging).and_then(|out| {
        sync_tree(&staging)?;
        if vdir.exists() {
            return Err(Error::Internal(format!(
                "{} exists already; a version directory is never replaced",
                vdir.display()
            )));
        }
        std::fs::rename(&staging, &vdir).map_err(|e| io_err(&vdir, e))?;
        latentdb_embed::sync_dir(&parent).map_err(|e| io_err(&parent, e))?;
        Ok(out)
    });
    match written {
        Ok(out) => Ok((vdir, out)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Fsyncs every file directly in `dir`, then `dir` itself.
fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let path = entry.map_err(|e| io_err(dir, e))?.path();
        if path.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_err(&path, e))?;
        }
    }
    latentdb_embed::sync_dir(dir).map_err(|e| io_err(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(head: Option<&str>) -> ModelIdentity {
        serde_json::from_value(serde_json::json!({
            "name": "m",
            "path": "/m",
            "model_type": "bert",
            "weights_sha256": "w",
            "head_sha256": head,
            "pooling": "mean",
            "dimension": 4,
            "max_length": 8,
        }))
        .expect("an identity")
    }

    fn history(live: &[u32]) -> ModelHistory {
        let versions = (0..3u32)
            .map(|v| ModelVersion {
                version: v,
                settings: EmbedderSettings {
                    model: format!("/v{v}"),
                    identity: identity((v > 0).then(|| ["", "h1", "h2"][v as usize])),
                    query_instruction: None,
                    tasks: Default::default(),
                },
                ndcg_at_10: None,
                created_unix: 0,
            })
            .collect();
        ModelHistory {
            collection: "c".into(),
            versions,
            live: live.to_vec(),
        }
    }

    #[test]
    fn a_recorded_switch_the_collection_never_made_is_undone() {
        // Saved with version 2 live, then the process died before the switch: still on 1.
        let mut h = history(&[0, 1, 2]);
        assert!(h.reconcile(&identity(Some("h1"))));
        assert_eq!(h.live, vec![0, 1]);
        assert_eq!(h.versions.len(), 3, "the trained version stays recorded");
    }

    #[test]
    fn a_recorded_rollback_the_collection_never_made_is_undone() {
        // Saved with version 1 popped, then the process died before the switch back.
        let mut h = history(&[0]);
        assert!(h.reconcile(&identity(Some("h1"))));
        assert_eq!(h.live, vec![0, 1]);
    }

    #[test]
    fn a_history_in_step_is_kept_and_a_foreign_model_is_refused() {
        let mut h = history(&[0, 2]);
        assert!(h.reconcile(&identity(Some("h2"))));
        assert_eq!(h.live, vec![0, 2]);
        assert!(!h.reconcile(&identity(Some("other"))));
    }
}
