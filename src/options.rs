//! [`DatabaseOptions`]: how a [`Database`](crate::Database) is opened.

use std::path::PathBuf;

use latentdb_storage::{Durability, StorageOptions};

/// Options for [`Database::open_with`](crate::Database::open_with), built with chained setters.
///
/// ```
/// use latentdb::{DatabaseOptions, Durability};
/// let opts = DatabaseOptions::new().durability(Durability::Buffered).max_text_bytes(4096);
/// ```
#[derive(Debug, Clone)]
pub struct DatabaseOptions {
    pub(crate) storage: StorageOptions,
    pub(crate) models_dir: Option<PathBuf>,
    pub(crate) allow_model_paths: bool,
    pub(crate) max_loaded_models: usize,
}

/// How many models a database keeps loaded at most, by default.
pub const DEFAULT_MAX_LOADED_MODELS: usize = 4;

impl Default for DatabaseOptions {
    fn default() -> Self {
        DatabaseOptions {
            storage: StorageOptions::default(),
            models_dir: None,
            allow_model_paths: true,
            max_loaded_models: DEFAULT_MAX_LOADED_MODELS,
        }
    }
}

impl DatabaseOptions {
    /// The defaults: synchronous durability, 256 MiB page cache, 1 MiB text limit, model
    /// directories anywhere allowed, at most [`DEFAULT_MAX_LOADED_MODELS`] models loaded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets when writes are acknowledged. [`Durability::Sync`] (the default) never acknowledges
    /// a write that a crash can lose; [`Durability::Buffered`] is for bulk loads.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.storage.durability = durability;
        self
    }

    /// Sets the page cache size in bytes.
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.storage.cache_capacity = bytes;
        self
    }

    /// Sets the background flush interval used by [`Durability::Buffered`].
    pub fn flush_every_ms(mut self, ms: u64) -> Self {
        self.storage.flush_every_ms = ms;
        self
    }

    /// Sets the longest document text accepted, in bytes.
    pub fn max_text_bytes(mut self, bytes: usize) -> Self {
        self.storage.max_text_bytes = bytes;
        self
    }

    /// Opens even when storage holds fewer changes than were acknowledged (a damaged or
    /// truncated file): without it (the default) such an open fails with a data-loss error
    /// and changes nothing. With it, the database opens with what is left, keeps the evidence
    /// (the old watermark and index dumps are moved aside, never overwritten), and
    /// [`Database::data_loss`](crate::Database::data_loss) lists what was lost. The CLI's `--accept-data-loss`.
    pub fn accept_data_loss(mut self, accept: bool) -> Self {
        self.storage.accept_data_loss = accept;
        self
    }

    /// Sets the model cache where `default` is found (default: [`crate::embed::models_dir`]).
    pub fn models_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.models_dir = Some(dir.into());
        self
    }

    /// Whether a model may be named by a directory anywhere on the file system (default:
    /// true, for the library and the CLI). When false (the server's default, unless its
    /// operator passes `--allow-model-paths`), a model spec may only be `default` or a
    /// relative path of plain names under the models root ([`DatabaseOptions::models_dir`]):
    /// no absolute path, no `..`; anything else is refused with
    /// [`FailedPrecondition`](crate::ErrorKind::FailedPrecondition) before any file is read.
    pub fn allow_model_paths(mut self, allow: bool) -> Self {
        self.allow_model_paths = allow;
        self
    }

    /// Sets how many models are kept loaded at most (at least 1; default
    /// [`DEFAULT_MAX_LOADED_MODELS`]). Loading one more evicts the least recently used model
    /// that no caller holds; when every loaded model is in use, the load is refused with
    /// [`ResourceExhausted`](crate::ErrorKind::ResourceExhausted) (retry once a request
    /// finishes). A collection keeps no model loaded by itself: it loads its model again on
    /// the next use after an eviction.
    pub fn max_loaded_models(mut self, n: usize) -> Self {
        self.max_loaded_models = n.max(1);
        self
    }
}
