//! Model versions of a collection: tuned heads stored under the database directory, which
//! one is live, switching to one (re-embedding the collection) and rolling back.
//!
//! Layout: `DIR/tune/NAME/history.json` and one head directory per tuned version,
//! `DIR/tune/NAME/vN/` (`head.json` with the backbone's reference, `head.safetensors`, and for
//! head+lora versions `lora.json` and `lora.safetensors`, merged into the backbone on load).
//! Version 0 is the model the collection had before it was first tuned.
//!
//! Switching writes every document's new vector in one atomic upsert (text and metadata kept),
//! then points the collection's stored embedder settings at the new model. Searches run on the
//! old vectors until that upsert commits; a text query racing the two steps can be embedded
//! with the old model against the new vectors (one process owns a database, so within the CLI
//! nothing races it).

use std::path::{Path, PathBuf};

use latentdb_embed::{EmbedOptions, ModelSpec};
use latentdb_storage::Document;
use serde::{Deserialize, Serialize};

use crate::database::Database;
use crate::embedding::{EMBED_BATCH, EmbedderSettings};
use crate::error::{Error, Result};

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
    /// The live version number.
    pub fn live_version(&self) -> u32 {
        self.live.last().copied().unwrap_or(0)
    }

    /// A version by number.
    pub fn get(&self, version: u32) -> Option<&ModelVersion> {
        self.versions.iter().find(|v| v.version == version)
    }
}

pub(crate) fn collection_dir(db: &Database, collection: &str) -> PathBuf {
    db.path().join(TUNE_DIR).join(collection)
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("{}: {e}", path.display()))
}

impl Database {
    /// The model history of a collection with an embedder. A collection never tuned (or one
    /// whose stored model no longer matches the history's live version, e.g. dropped and
    /// re-created) has a fresh history holding its current model as version 0.
    pub fn model_history(&self, collection: &str) -> Result<ModelHistory> {
        let Some(settings) = self.embedder_settings(collection)? else {
            return Err(Error::InvalidArgument(format!(
                "collection {collection:?} has no model"
            )));
        };
        let path = collection_dir(self, collection).join(HISTORY_FILE);
        if let Ok(bytes) = std::fs::read(&path) {
            let h: ModelHistory = serde_json::from_slice(&bytes).map_err(|e| io_err(&path, e))?;
            if h.get(h.live_version())
                .is_some_and(|v| v.settings.identity == settings.identity)
            {
                return Ok(h);
            }
        }
        Ok(ModelHistory {
            collection: collection.to_string(),
            versions: vec![ModelVersion {
                version: 0,
                settings,
                ndcg_at_10: None,
                created_unix: now_unix(),
            }],
            live: vec![0],
        })
    }

    pub(crate) fn save_model_history(&self, h: &ModelHistory) -> Result<()> {
        let dir = collection_dir(self, &h.collection);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let path = dir.join(HISTORY_FILE);
        let tmp = dir.join(format!("{HISTORY_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(h).map_err(|e| io_err(&path, e))?;
        std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))
    }

    /// Makes `settings` the collection's model: writes the given vectors (one per document,
    /// in `docs` order) in one atomic upsert, then stores the settings.
    pub(crate) fn switch_model(
        &self,
        collection: &str,
        settings: &EmbedderSettings,
        docs: Vec<Document>,
    ) -> Result<()> {
        if docs.iter().any(|d| d.vector.is_none()) {
            return Err(Error::InvalidArgument(
                "internal: switching needs every document's new vector".into(),
            ));
        }
        if !docs.is_empty() {
            self.upsert(collection, docs)?;
        }
        let value = serde_json::to_value(settings)
            .map_err(|e| Error::InvalidArgument(format!("embedder settings: {e}")))?;
        self.update_embedder_settings(collection, value)?;
        self.flush()
    }

    /// Returns a collection to the model version that was live before the current one,
    /// re-embedding every document with it. Returns the version now live.
    pub fn rollback_model(&self, collection: &str, progress: &dyn Fn(&str)) -> Result<u32> {
        let mut h = self.model_history(collection)?;
        if h.live.len() < 2 {
            return Err(Error::InvalidArgument(format!(
                "collection {collection:?} has no earlier model version to return to"
            )));
        }
        let target = h.live[h.live.len() - 2];
        let version = h
            .get(target)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("version {target} is missing")))?;
        let spec: ModelSpec = version.settings.spec();
        let embedder = self.embedders().load(&spec)?;
        if let Some(reason) =
            crate::embedding::identity_difference(&version.settings.identity, embedder.identity())
        {
            return Err(Error::ModelMismatch {
                collection: collection.to_string(),
                reason,
            });
        }
        progress(&format!("re-embedding with version {target}"));
        let mut docs = super::run::all_documents(self, collection)?;
        let texts: Vec<&str> = docs
            .iter()
            .map(|d| d.text.as_deref().unwrap_or(""))
            .collect();
        let opts = EmbedOptions {
            batch_size: EMBED_BATCH,
            ..EmbedOptions::default()
        };
        let vectors = embedder.embed(&texts, &opts)?;
        for (d, v) in docs.iter_mut().zip(vectors) {
            d.vector = Some(v);
        }
        self.switch_model(collection, &version.settings, docs)?;
        h.live.pop();
        self.save_model_history(&h)?;
        Ok(target)
    }
}
