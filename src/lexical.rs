//! The lexical side of a collection: its settings (analyzer, BM25 and fusion defaults) and its
//! BM25 index, kept in step with storage exactly like the vector index.
//!
//! The index is derived state: every write updates it under the collection's writer lock
//! (after storage, with the vector index), it is dumped with the vector index at the same
//! storage sequence (in the dump directory's `lexical/` folder), loaded on open and caught up
//! from the change log, and rebuilt from the stored text when the dump is missing, damaged,
//! behind the change log, built with another analyzer, or disagrees with storage. A document
//! is indexed when it was stored with a text (chunks are documents of their own).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use latentdb_storage::{Change, Storage};
use latentdb_text::{AnalyzerConfig, Bm25Params, LexicalHit, LexicalIndex, LexicalStats};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::fusion::short::decimal;
use crate::fusion::{FusionMethod, FusionParams, MAX_DEPTH};

/// The folder, inside a collection's index dump directory, that holds the lexical dump.
pub const LEXICAL_DIR: &str = "lexical";

/// The default number of candidates each leg of a hybrid search contributes.
pub const DEFAULT_DEPTH: usize = 100;

/// The default fusion of a hybrid search: min-max normalised scores blended 50/50. Fitted on
/// the train split of spamassassin-subjects with all-MiniLM-L6-v2 (`latentdb tune
/// --fusion-only`, 90 settings): min-max [0.5, 0.5] 0.6272 nDCG@10, RRF k = 2 [1, 1] 0.6186,
/// RRF k = 60 far behind; on the held-out test split 0.6408 against 0.6315. `rrf_k` 2 applies
/// when a search asks for RRF without a `k` (small k won at every weight; k = 60 lost most of
/// the gain).
pub const DEFAULT_FUSION: FusionParams = FusionParams {
    method: FusionMethod::MinMax,
    rrf_k: 2.0,
    weights: [0.5, 0.5],
};

/// A collection's lexical settings, stored with the collection (`CollectionSpec::lexical`).
///
/// ```
/// use latentdb::LexicalSettings;
/// let s = LexicalSettings::from_json(&serde_json::json!({"analyzer": {"stemmer": null}}))?;
/// assert!(s.enabled);
/// assert_eq!(s.analyzer.stemmer, None);
/// assert_eq!(LexicalSettings::default().analyzer.stemmer.as_deref(), Some("english"));
/// assert_eq!(LexicalSettings::from_json(&s.to_json())?, s);
/// assert_eq!(s.to_json()["bm25"]["k1"], 1.2);
/// # Ok::<(), latentdb::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LexicalSettings {
    /// Whether the collection keeps a lexical index (default true). Without one, lexical and
    /// hybrid searches fail with a failed-precondition error.
    pub enabled: bool,
    /// How text is cut into terms (changing it rebuilds the index).
    pub analyzer: AnalyzerConfig,
    /// The default BM25 parameters of a search.
    pub bm25: Bm25Params,
    /// The default fusion of a hybrid search.
    pub fusion: FusionParams,
    /// The default per-leg candidate depth of a hybrid search.
    pub depth: usize,
}

impl Default for LexicalSettings {
    fn default() -> Self {
        LexicalSettings {
            enabled: true,
            analyzer: AnalyzerConfig::default(),
            bm25: Bm25Params::default(),
            fusion: DEFAULT_FUSION,
            depth: DEFAULT_DEPTH,
        }
    }
}

/// The stored form: every field optional, unknown fields refused.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    analyzer: Value,
    #[serde(default)]
    bm25: Option<Bm25Params>,
    #[serde(default)]
    fusion: Option<FusionParams>,
    #[serde(default)]
    depth: Option<usize>,
}

impl LexicalSettings {
    /// Parses settings JSON (`null`: the defaults; missing fields: their defaults). Unknown
    /// fields, wrong types and values out of range are [`Error::InvalidArgument`].
    pub fn from_json(v: &Value) -> Result<Self> {
        if v.is_null() {
            return Ok(Self::default());
        }
        let stored: Stored = serde_json::from_value(v.clone())
            .map_err(|e| Error::InvalidArgument(format!("lexical settings: {e}")))?;
        let d = Self::default();
        let s = LexicalSettings {
            enabled: stored.enabled.unwrap_or(d.enabled),
            analyzer: AnalyzerConfig::from_json(&stored.analyzer)
                .map_err(|e| Error::InvalidArgument(format!("lexical settings: {e}")))?,
            bm25: stored.bm25.unwrap_or(d.bm25),
            fusion: stored.fusion.unwrap_or(d.fusion),
            depth: stored.depth.unwrap_or(d.depth),
        };
        s.validate()?;
        Ok(s)
    }

    /// The settings as stored.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "enabled": self.enabled,
            "analyzer": self.analyzer.to_json(),
            "bm25": {"k1": decimal(self.bm25.k1), "b": decimal(self.bm25.b)},
            "fusion": self.fusion,
            "depth": self.depth,
        })
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<()> {
        self.bm25
            .validate()
            .map_err(|e| Error::InvalidArgument(format!("lexical settings: {e}")))?;
        self.fusion.validate()?;
        check_depth(self.depth)
    }
}

/// Checks a per-leg candidate depth.
pub(crate) fn check_depth(depth: usize) -> Result<()> {
    if depth == 0 || depth > MAX_DEPTH {
        return Err(Error::InvalidArgument(format!(
            "depth must be between 1 and {MAX_DEPTH}, got {depth}"
        )));
    }
    Ok(())
}

/// The search defaults of a collection's lexical settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SearchDefaults {
    pub enabled: bool,
    pub bm25: Bm25Params,
    pub fusion: FusionParams,
    pub depth: usize,
}

/// How the lexical index was obtained at open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LexicalOpen {
    /// Loaded from its dump.
    pub loaded_from_dump: bool,
    /// Change-log entries replayed onto the dump.
    pub replayed: usize,
    /// Rebuilt from the stored text.
    pub rebuilt: bool,
}

/// A collection's lexical runtime: settings and (when enabled) the BM25 index.
#[derive(Debug)]
pub(crate) struct Lexical {
    settings: RwLock<LexicalSettings>,
    /// `None` while disabled.
    index: RwLock<Option<LexicalIndex>>,
    /// Why the index is unusable (an update panicked and no rebuild succeeded yet).
    broken: RwLock<Option<String>>,
    dir: PathBuf,
    opened: LexicalOpen,
}

impl Lexical {
    /// A new, empty runtime for a created collection.
    pub fn create(dump_dir: &Path, settings: LexicalSettings) -> Result<Self> {
        let index = if settings.enabled {
            Some(new_index(&settings)?)
        } else {
            None
        };
        Ok(Lexical {
            settings: RwLock::new(settings),
            index: RwLock::new(index),
            broken: RwLock::new(None),
            dir: dump_dir.join(LEXICAL_DIR),
            opened: LexicalOpen::default(),
        })
    }

    /// Opens the lexical index of an existing collection whose stored points with text are
    /// `text_points` (sorted): loads the dump and replays the change log after it, or rebuilds
    /// from storage when the dump is unusable. Never fails because of the dump.
    pub fn open(
        storage: &Storage,
        name: &str,
        dump_dir: &Path,
        settings: LexicalSettings,
        text_points: &[u32],
    ) -> Result<Self> {
        let dir = dump_dir.join(LEXICAL_DIR);
        if !settings.enabled {
            LexicalIndex::remove_dump(&dir);
            return Ok(Lexical {
                settings: RwLock::new(settings),
                index: RwLock::new(None),
                broken: RwLock::new(None),
                dir,
                opened: LexicalOpen::default(),
            });
        }
        let (index, opened) = match load_and_replay(storage, name, &dir, &settings, text_points) {
            Some((index, replayed)) => (
                index,
                LexicalOpen {
                    loaded_from_dump: true,
                    replayed,
                    rebuilt: false,
                },
            ),
            None => {
                let started = Instant::now();
                let index = build(storage, name, &settings)?;
                if !index.is_empty() {
                    tracing::info!(
                        collection = name,
                        documents = index.len(),
                        seconds = started.elapsed().as_secs_f64(),
                        "lexical index rebuilt from storage"
                    );
                }
                (
                    index,
                    LexicalOpen {
                        rebuilt: true,
                        ..LexicalOpen::default()
                    },
                )
            }
        };
        Ok(Lexical {
            settings: RwLock::new(settings),
            index: RwLock::new(Some(index)),
            broken: RwLock::new(None),
            dir,
            opened,
        })
    }

    /// The current settings.
    pub fn settings(&self) -> LexicalSettings {
        self.settings.read().clone()
    }

    /// What a search needs of the settings, without copying the analyzer.
    pub fn defaults(&self) -> SearchDefaults {
        let s = self.settings.read();
        SearchDefaults {
            enabled: s.enabled,
            bm25: s.bm25,
            fusion: s.fusion,
            depth: s.depth,
        }
    }

    /// How the index was obtained at open.
    pub fn opened(&self) -> LexicalOpen {
        self.opened
    }

    /// True when the collection keeps a lexical index.
    pub fn enabled(&self) -> bool {
        self.settings.read().enabled
    }

    /// True when the index holds at least one document.
    pub fn has_documents(&self) -> bool {
        self.index.read().as_ref().is_some_and(|i| !i.is_empty())
    }

    /// The index's statistics (`None` when disabled).
    pub fn stats(&self) -> Option<LexicalStats> {
        self.index.read().as_ref().map(LexicalIndex::stats)
    }

    /// The best `k` points for `query`, best first, among those `filter` accepts.
    /// [`Error::FailedPrecondition`] when the collection keeps no lexical index;
    /// [`Error::Internal`] while the index is unusable.
    pub fn search(
        &self,
        collection: &str,
        query: &str,
        k: usize,
        params: Bm25Params,
        filter: Option<&dyn Fn(u32) -> bool>,
    ) -> Result<Vec<LexicalHit>> {
        if let Some(why) = &*self.broken.read() {
            return Err(Error::Internal(format!(
                "the lexical index of collection {:?} is unusable ({why}); it is rebuilt from \
                 storage on the next write or open",
                crate::error::bounded(collection)
            )));
        }
        let guard = self.index.read();
        let Some(index) = guard.as_ref() else {
            return Err(disabled(collection));
        };
        Ok(index.search(query, k, params, filter))
    }

    /// Applies a storage write (the caller holds the writer lock): removes `removed`, then
    /// indexes each inserted point that has a text. A panic marks the index unusable until
    /// [`Lexical::repair`] rebuilds it.
    pub fn apply(&self, removed: &[u32], inserted: &[(u32, Option<&str>)]) {
        if self.broken.read().is_some() {
            return;
        }
        let mut guard = self.index.write();
        let Some(index) = guard.as_mut() else { return };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            for &p in removed {
                index.remove(p);
            }
            for &(p, text) in inserted {
                match text {
                    Some(t) => index.insert(p, t),
                    // A replaced document that no longer has a text.
                    None => {
                        index.remove(p);
                    }
                }
            }
        }));
        if let Err(panic) = outcome {
            let why = format!(
                "an update panicked: {}",
                crate::collection::panic_message(panic.as_ref())
            );
            tracing::error!(
                reason = why,
                "the write is stored; rebuilding the lexical index"
            );
            *self.broken.write() = Some(why);
        }
    }

    /// Rebuilds the index from storage when an update could not be applied (the caller holds
    /// the writer lock). Failures are logged; searches fail until a rebuild succeeds.
    pub fn repair(&self, storage: &Storage, name: &str) -> bool {
        if self.broken.read().is_none() {
            return false;
        }
        let _ = self.rebuild(storage, name);
        true
    }

    /// Replaces the index with one built from the stored text (the caller holds the writer
    /// lock).
    pub fn rebuild(&self, storage: &Storage, name: &str) -> Result<()> {
        let settings = self.settings();
        if !settings.enabled {
            *self.index.write() = None;
            *self.broken.write() = None;
            return Ok(());
        }
        let built = catch_unwind(AssertUnwindSafe(|| build(storage, name, &settings)))
            .unwrap_or_else(|panic| {
                Err(Error::Internal(format!(
                    "building the lexical index panicked: {}",
                    crate::collection::panic_message(panic.as_ref())
                )))
            });
        match built {
            Ok(index) => {
                *self.index.write() = Some(index);
                *self.broken.write() = None;
                Ok(())
            }
            Err(e) => {
                tracing::error!(collection = name, error = %e, "rebuilding the lexical index failed");
                *self.broken.write() = Some(format!("rebuilding it from storage failed: {e}"));
                Err(e)
            }
        }
    }

    /// Replaces the settings (the caller holds the writer lock and has stored them): a new
    /// analyzer or enabling rebuilds the index from storage; disabling drops it and its dump.
    pub fn set_settings(&self, storage: &Storage, name: &str, new: LexicalSettings) -> Result<()> {
        let old = std::mem::replace(&mut *self.settings.write(), new.clone());
        if !new.enabled {
            *self.index.write() = None;
            *self.broken.write() = None;
            LexicalIndex::remove_dump(&self.dir);
            return Ok(());
        }
        if !old.enabled || old.analyzer != new.analyzer || self.index.read().is_none() {
            LexicalIndex::remove_dump(&self.dir);
            self.rebuild(storage, name)?;
        }
        Ok(())
    }

    /// Writes the dump at storage sequence `seq` (the caller holds the writer lock and has
    /// flushed storage); removes it when disabled. Never called while the index is unusable.
    pub fn persist(&self, seq: u64) -> Result<()> {
        if self.broken.read().is_some() {
            return Err(Error::Internal(
                "the lexical index is unusable; not persisted".into(),
            ));
        }
        match self.index.read().as_ref() {
            Some(index) => index.persist(&self.dir, seq).map_err(Error::from),
            None => {
                LexicalIndex::remove_dump(&self.dir);
                Ok(())
            }
        }
    }

    /// True while an update failed and no rebuild succeeded.
    pub fn is_broken(&self) -> bool {
        self.broken.read().is_some()
    }
}

/// The error for a lexical search on a collection without a lexical index.
pub(crate) fn disabled(collection: &str) -> Error {
    Error::FailedPrecondition(format!(
        "collection {:?} keeps no lexical index (its lexical settings have \"enabled\": false); \
         search it in dense mode or enable the lexical index",
        crate::error::bounded(collection)
    ))
}

/// A new, empty index with the settings' analyzer.
fn new_index(settings: &LexicalSettings) -> Result<LexicalIndex> {
    LexicalIndex::new(settings.analyzer.clone())
        .map_err(|e| Error::InvalidArgument(format!("lexical settings: {e}")))
}

/// An index of every stored document with a text.
fn build(storage: &Storage, name: &str, settings: &LexicalSettings) -> Result<LexicalIndex> {
    let mut index = new_index(settings)?;
    storage.scan_points(name, |point, record| {
        if let Some(text) = &record.text {
            index.insert(point, text);
        }
        Ok(())
    })?;
    Ok(index)
}

/// Loads the dump and replays the change log after it; `None` (rebuild) when there is no
/// usable dump, it was built with another analyzer, the change log no longer reaches it, the
/// replay fails, or the result disagrees with storage's `text_points`.
fn load_and_replay(
    storage: &Storage,
    name: &str,
    dir: &Path,
    settings: &LexicalSettings,
    text_points: &[u32],
) -> Option<(LexicalIndex, usize)> {
    let last = storage.last_seq(name).ok()?;
    let (mut index, seq) = match LexicalIndex::load(dir) {
        Ok(Some(loaded)) => loaded,
        Ok(None) => {
            if !text_points.is_empty() {
                tracing::warn!(
                    collection = name,
                    "no lexical dump; rebuilding from storage"
                );
            }
            return None;
        }
        Err(e) => {
            tracing::warn!(collection = name, error = %e, "unusable lexical dump; rebuilding from storage");
            return None;
        }
    };
    if seq > last {
        // Storage is behind the dump: the vector index's open check decides about data loss;
        // the lexical index simply follows what storage holds.
        tracing::warn!(
            collection = name,
            dump_seq = seq,
            last,
            "lexical dump is ahead of storage; rebuilding"
        );
        return None;
    }
    if index.config() != &settings.analyzer {
        tracing::info!(
            collection = name,
            "lexical dump was built with another analyzer; rebuilding"
        );
        return None;
    }
    let changes = match storage.changes_since(name, seq) {
        Ok((changes, true)) => changes,
        Ok((_, false)) => {
            tracing::warn!(
                collection = name,
                dump_seq = seq,
                "change log no longer reaches the lexical dump; rebuilding"
            );
            return None;
        }
        Err(e) => {
            tracing::warn!(collection = name, error = %e, "reading the change log failed; rebuilding the lexical index");
            return None;
        }
    };
    let replayed = changes.len();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        replay(storage, name, &mut index, &changes)?;
        Ok::<bool, Error>(index.points() == text_points)
    }));
    match outcome {
        Ok(Ok(true)) => Some((index, replayed)),
        Ok(Ok(false)) => {
            tracing::warn!(
                collection = name,
                indexed = index.len(),
                stored = text_points.len(),
                "lexical dump disagrees with storage after replay; rebuilding"
            );
            None
        }
        Ok(Err(e)) => {
            tracing::warn!(collection = name, error = %e, "replaying the change log onto the lexical dump failed; rebuilding");
            None
        }
        Err(_) => {
            tracing::warn!(
                collection = name,
                "replaying the change log onto the lexical dump panicked; rebuilding"
            );
            None
        }
    }
}

/// Points read from storage per replay batch.
const REPLAY_BATCH: usize = 4_096;

/// Replays change-log entries in order: a remove drops the point, an insert (re)indexes it
/// with the text storage holds now (a point gone since is skipped: its remove follows).
fn replay(
    storage: &Storage,
    name: &str,
    index: &mut LexicalIndex,
    changes: &[Change],
) -> Result<()> {
    // Points are never reused, so the final state does not depend on the order of an
    // insert and a later remove of the same point: removes first, then the inserts that
    // still exist in storage.
    for c in changes {
        if let Change::Remove { point, .. } = *c {
            index.remove(point);
        }
    }
    let inserts: Vec<u32> = changes
        .iter()
        .filter_map(|c| match *c {
            Change::Insert { point, .. } => Some(point),
            Change::Remove { .. } => None,
        })
        .collect();
    for part in inserts.chunks(REPLAY_BATCH) {
        for (point, record) in part.iter().zip(storage.get_points(name, part)?) {
            match record.and_then(|r| r.text) {
                Some(text) => index.insert(*point, &text),
                None => {
                    index.remove(*point);
                }
            }
        }
    }
    Ok(())
}
