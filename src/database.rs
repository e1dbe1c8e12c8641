//! [`Database`]: the in-process API that ties storage, index and embedder together.

use std::path::{Path, PathBuf};

use latentdb_storage::{
    CollectionInfo, CollectionSpec, DeleteOutcome, Document, Durability, Record, ScrollPage,
    Storage, StorageOptions,
};

use crate::error::Result;

/// Options for [`Database::open_with`], built with chained setters.
///
/// ```
/// use latentdb::{DatabaseOptions, Durability};
/// let opts = DatabaseOptions::new().durability(Durability::Buffered).max_text_bytes(4096);
/// ```
#[derive(Debug, Clone, Default)]
pub struct DatabaseOptions {
    storage: StorageOptions,
}

impl DatabaseOptions {
    /// The defaults: synchronous durability, 256 MiB page cache, 1 MiB text limit.
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
}

/// The result of an upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertResult {
    /// The ids written, in input order (generated ones included).
    pub ids: Vec<String>,
}

/// An open latentdb database: a directory holding collections of documents.
///
/// Synchronous and thread-safe: share it with `Arc<Database>`. Only one process may open a
/// directory at a time.
#[derive(Debug)]
pub struct Database {
    path: PathBuf,
    storage: Storage,
}

impl Database {
    /// Opens (creating if needed) the database directory at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Database> {
        Self::open_with(path, DatabaseOptions::default())
    }

    /// Opens the database directory at `path` with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: DatabaseOptions) -> Result<Database> {
        let path = path.as_ref().to_path_buf();
        let storage = Storage::open(&path, options.storage)?;
        Ok(Database { path, storage })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a collection.
    pub fn create_collection(&self, spec: CollectionSpec) -> Result<CollectionInfo> {
        Ok(self.storage.create_collection(spec)?)
    }

    /// All collections, sorted by name.
    pub fn list_collections(&self) -> Vec<CollectionInfo> {
        self.storage.list_collections()
    }

    /// One collection's information.
    pub fn collection_info(&self, name: &str) -> Result<CollectionInfo> {
        Ok(self.storage.collection_info(name)?)
    }

    /// Drops a collection and everything in it.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        Ok(self.storage.drop_collection(name)?)
    }

    /// Inserts or replaces documents, atomically; durable on return unless the database was
    /// opened with [`Durability::Buffered`].
    pub fn upsert(&self, collection: &str, docs: Vec<Document>) -> Result<UpsertResult> {
        let out = self.storage.upsert(collection, docs, None)?;
        Ok(UpsertResult { ids: out.ids })
    }

    /// Like [`Database::upsert`] with an explicit durability for this batch.
    pub fn upsert_with(
        &self,
        collection: &str,
        docs: Vec<Document>,
        durability: Durability,
    ) -> Result<UpsertResult> {
        let out = self.storage.upsert(collection, docs, Some(durability))?;
        Ok(UpsertResult { ids: out.ids })
    }

    /// Fetches documents by id, in the order asked; `None` where an id does not exist.
    pub fn get(&self, collection: &str, ids: &[impl AsRef<str>]) -> Result<Vec<Option<Record>>> {
        Ok(self.storage.get(collection, ids)?)
    }

    /// Deletes documents by id; returns the ids that existed.
    pub fn delete(&self, collection: &str, ids: &[impl AsRef<str>]) -> Result<Vec<String>> {
        let DeleteOutcome { deleted, .. } = self.storage.delete(collection, ids, None)?;
        Ok(deleted)
    }

    /// The number of documents in a collection.
    pub fn count(&self, collection: &str) -> Result<u64> {
        Ok(self.storage.count(collection)?)
    }

    /// A page of documents in id order after the cursor `after` (exclusive).
    pub fn scroll(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScrollPage> {
        Ok(self.storage.scroll(collection, after, limit)?)
    }

    /// Flushes every buffered write to disk.
    pub fn flush(&self) -> Result<()> {
        Ok(self.storage.flush()?)
    }

    /// Bytes the storage engine occupies on disk.
    pub fn storage_size(&self) -> Result<u64> {
        Ok(self.storage.size_on_disk()?)
    }
}
