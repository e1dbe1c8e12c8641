//! Reading a committed backup: the manifest first, then parts chunk by chunk, each verified
//! before any of its bytes are handed out.

use std::io::{self, Read};

use crate::error::{Error, Result};
use crate::manifest::{Chunk, FileEntry, MAX_MANIFEST_LEN, Manifest};
use crate::name::MANIFEST_NAME;
use crate::target::Target;

/// An open, committed backup.
#[derive(Clone, Debug)]
pub struct BackupReader {
    target: Target,
    manifest: Manifest,
}

impl BackupReader {
    /// Opens the backup at `target`: reads and checks its manifest. [`Error::NoBackup`] (kind
    /// `NotFound`) when there is no manifest; [`Error::Corrupt`] (`DataLoss`) when it is
    /// damaged; [`Error::UnsupportedVersion`] for another format version.
    pub fn open(target: &Target) -> Result<BackupReader> {
        let bytes = match target.get(MANIFEST_NAME, MAX_MANIFEST_LEN as u64) {
            Ok(bytes) => bytes,
            Err(Error::NotFound { .. }) => {
                return Err(Error::NoBackup {
                    location: target.url(),
                });
            }
            Err(e) => return Err(e),
        };
        let manifest = Manifest::decode(&bytes, &target.url())?;
        Ok(BackupReader {
            target: target.clone(),
            manifest,
        })
    }

    /// The backup's location.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The backup's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The caller's `meta` given to [`crate::BackupWriter::finish`].
    pub fn meta(&self) -> &serde_json::Value {
        &self.manifest.meta
    }

    /// The file `name` of the manifest; [`Error::NotFound`] if the backup has none.
    pub fn file(&self, name: &str) -> Result<&FileEntry> {
        self.manifest.file(name).ok_or_else(|| Error::NotFound {
            location: self.target.url(),
            file: name.to_owned(),
        })
    }

    /// Streams the file `name` (a part, or a blob) chunk by chunk. Each chunk is read whole
    /// (at most the max part size it was written with) and its size and CRC-32 checked before
    /// any of its bytes are returned.
    pub fn read_part(&self, name: &str) -> Result<PartReader> {
        let file = self.file(name)?;
        Ok(PartReader {
            target: self.target.clone(),
            chunks: file.chunks.clone(),
            next: 0,
            buf: Vec::new(),
            pos: 0,
        })
    }

    /// Reads the file `name` whole, verified. Meant for blobs and other small files: a part is
    /// read into memory entirely.
    pub fn read_blob(&self, name: &str) -> Result<Vec<u8>> {
        let file = self.file(name)?;
        let mut out = Vec::with_capacity(usize::try_from(file.size()).unwrap_or(0).min(1 << 30));
        for chunk in &file.chunks {
            out.extend_from_slice(&fetch_chunk(&self.target, chunk)?);
        }
        Ok(out)
    }
}

/// Reads one chunk and checks it against the manifest: present, of the recorded size, with the
/// recorded CRC-32. Any failure is [`Error::Corrupt`] naming the chunk file.
pub(crate) fn fetch_chunk(target: &Target, chunk: &Chunk) -> Result<Vec<u8>> {
    let bytes = match target.get(&chunk.file, chunk.size) {
        Ok(bytes) => bytes,
        Err(Error::NotFound { .. }) => {
            return Err(Error::corrupt(target.url(), &chunk.file, "missing"));
        }
        Err(e) => return Err(e),
    };
    if bytes.len() as u64 != chunk.size {
        return Err(Error::corrupt(
            target.url(),
            &chunk.file,
            format!("{} bytes, the manifest says {}", bytes.len(), chunk.size),
        ));
    }
    let crc = crc32fast::hash(&bytes);
    if crc != chunk.crc32 {
        return Err(Error::corrupt(
            target.url(),
            &chunk.file,
            format!(
                "crc32 mismatch (manifest {:08x}, read {crc:08x})",
                chunk.crc32
            ),
        ));
    }
    Ok(bytes)
}

/// A verified stream of one file of a backup, from [`BackupReader::read_part`].
///
/// Read errors carry the crate's [`Error`] inside the `io::Error` (see [`Error::from_io`]).
#[derive(Debug)]
pub struct PartReader {
    target: Target,
    chunks: Vec<Chunk>,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
}

impl PartReader {
    /// The file's size in bytes, from the manifest.
    pub fn size(&self) -> u64 {
        self.chunks.iter().map(|c| c.size).sum()
    }

    /// The next whole chunk, verified, or `None` at the end. Bytes of a chunk already partly
    /// consumed through `Read` are not returned again.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.pos < self.buf.len() {
            let rest = self.buf.split_off(self.pos);
            self.buf.clear();
            self.pos = 0;
            return Ok(Some(rest));
        }
        let Some(chunk) = self.chunks.get(self.next) else {
            return Ok(None);
        };
        let bytes = fetch_chunk(&self.target, chunk)?;
        self.next += 1;
        Ok(Some(bytes))
    }
}

impl Read for PartReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.next_chunk().map_err(io::Error::other)? {
                Some(bytes) => {
                    self.buf = bytes;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
