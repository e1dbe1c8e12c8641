//! latentdb's backup container: named byte files in checksummed chunks under a location (a
//! local directory or an S3 prefix), committed by a manifest written last.
//!
//! The crate knows nothing of latentdb's records: a caller streams *parts* (cut into chunk
//! files of at most a maximum size, 64 MiB by default) and puts small *blobs*, then
//! [`BackupWriter::finish`] writes the `MANIFEST` with a create-only put. The manifest lists
//! each file's chunks with their sizes and CRC-32s, the caller's opaque JSON `meta`, and is
//! itself checksummed. A location without a manifest is not a backup: a writer that dies
//! midway leaves nothing a reader, [`verify`] or [`list`] accepts. The format is described in
//! `docs/FORMAT.md`, "Backup container".
//!
//! ```
//! use std::io::{Read, Write};
//! use latentdb_backup::{BackupReader, BackupWriter, Target, WriterOptions, verify};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let target = Target::open(dir.path().join("b1").to_str().unwrap()).unwrap();
//! let mut writer = BackupWriter::create(&target, WriterOptions::default()).unwrap();
//! let mut part = writer.part("c/docs/records").unwrap();
//! part.write_all(b"some records").unwrap();
//! part.finish().unwrap();
//! writer.put_blob("config.json", b"{}").unwrap();
//! writer.finish(serde_json::json!({"sequence": 7})).unwrap();
//!
//! let reader = BackupReader::open(&target).unwrap();
//! assert_eq!(reader.meta()["sequence"], 7);
//! let mut records = String::new();
//! reader.read_part("c/docs/records").unwrap().read_to_string(&mut records).unwrap();
//! assert_eq!(records, "some records");
//! assert_eq!(verify(&target).unwrap().files, 2);
//! ```
//!
//! The API is synchronous. The S3 target runs its requests on a private current-thread tokio
//! runtime (on a helper thread when called from inside another runtime); prefer calling it
//! from a blocking context (`spawn_blocking`) there.

mod error;
mod list;
mod manifest;
mod name;
mod reader;
mod target;
mod verify;
mod writer;

pub use error::{Error, Result};
pub use list::{BackupSummary, list, list_url};
pub use manifest::{
    Chunk, FORMAT_NAME, FORMAT_VERSION, FileEntry, FileKind, MAX_MANIFEST_LEN, Manifest,
};
pub use name::{MANIFEST_NAME, MAX_NAME_LEN, validate_name};
pub use reader::{BackupReader, PartReader};
pub use target::{S3Config, Target};
pub use verify::{VerifyReport, verify};
pub use writer::{
    BackupWriter, DEFAULT_MAX_PART_SIZE, MAX_PART_SIZE_LIMIT, PartWriter, WriterOptions,
};
