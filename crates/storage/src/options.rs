//! Storage options.

/// When an upsert is acknowledged relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every write is flushed (fsync) before it returns: a crash never loses an acknowledged
    /// write. The default.
    #[default]
    Sync,
    /// Writes return once in the page cache and are flushed by a background thread every
    /// `flush_every_ms`: much faster for bulk loads, but a crash can lose the writes of the last
    /// interval. Call `flush` at the end of a bulk load.
    Buffered,
}

/// Options of one write ([`Storage::upsert_overlapped_with`], [`Storage::delete_with`]).
///
/// [`Storage::upsert_overlapped_with`]: crate::Storage::upsert_overlapped_with
/// [`Storage::delete_with`]: crate::Storage::delete_with
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOptions {
    /// The durability of this write (`None`: the storage's default).
    pub durability: Option<Durability>,
    /// The sequence of the replicated log entry this write applies: stored as the
    /// collection's applied sequence (see [`Storage::applied_seq`]) in the same atomic batch
    /// as the write, even when the write changes nothing else. It must be past the stored one
    /// (an invalid-argument error otherwise, with nothing written).
    ///
    /// [`Storage::applied_seq`]: crate::Storage::applied_seq
    pub applied: Option<u64>,
}

impl From<Option<Durability>> for WriteOptions {
    /// The options of a write with this durability (and nothing else).
    fn from(durability: Option<Durability>) -> Self {
        WriteOptions {
            durability,
            ..Default::default()
        }
    }
}

/// Options for opening a storage directory.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Default durability of writes.
    pub durability: Durability,
    /// Size of sled's page cache in bytes.
    pub cache_capacity: u64,
    /// Background flush interval for [`Durability::Buffered`], in milliseconds.
    pub flush_every_ms: u64,
    /// The longest document text accepted, in bytes.
    pub max_text_bytes: usize,
    /// Open even when storage is behind the watermark of acknowledged writes (the database's
    /// files were damaged): what is left is kept, each loss is reported by
    /// `Storage::data_loss`, and the old watermark is kept beside the new one as evidence.
    /// Off by default: such a database refuses to open with `Error::DataLoss`.
    pub accept_data_loss: bool,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            durability: Durability::Sync,
            cache_capacity: 256 * 1024 * 1024,
            flush_every_ms: 500,
            max_text_bytes: 1024 * 1024,
            accept_data_loss: false,
        }
    }
}
