//! Checking a whole backup without restoring it.

use crate::error::Result;
use crate::reader::{BackupReader, fetch_chunk};
use crate::target::Target;

/// What [`verify`] checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Logical files (parts and blobs) checked.
    pub files: usize,
    /// Chunk files read and checked.
    pub chunks: usize,
    /// Bytes read and checked (the manifest excluded).
    pub bytes: u64,
}

/// Reads every chunk of the backup at `target` and checks its size and CRC-32 against the
/// manifest, one chunk in memory at a time. Fails on the first problem: no manifest
/// ([`crate::Error::NoBackup`], kind `NotFound`), a damaged manifest or a missing, truncated or
/// damaged chunk ([`crate::Error::Corrupt`], kind `DataLoss`, naming the file).
pub fn verify(target: &Target) -> Result<VerifyReport> {
    BackupReader::open(target)?.verify()
}

impl BackupReader {
    /// [`verify`] for an open backup.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport {
            files: 0,
            chunks: 0,
            bytes: 0,
        };
        for file in &self.manifest().files {
            for chunk in &file.chunks {
                fetch_chunk(self.target(), chunk)?;
                report.chunks += 1;
                report.bytes += chunk.size;
            }
            report.files += 1;
        }
        Ok(report)
    }
}
