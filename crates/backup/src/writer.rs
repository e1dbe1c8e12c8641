//! Writing a backup: parts streamed in bounded chunks, blobs whole, the manifest last.

use std::collections::HashSet;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::manifest::{Chunk, FORMAT_NAME, FORMAT_VERSION, FileEntry, FileKind, Manifest};
use crate::name::{MANIFEST_NAME, chunk_file, validate_name};
use crate::target::Target;

/// The default largest chunk file: 64 MiB.
pub const DEFAULT_MAX_PART_SIZE: u64 = 64 << 20;

/// The largest chunk file allowed (a single S3 `PUT` takes at most 5 GiB; a chunk is held in
/// memory while it is written and read).
pub const MAX_PART_SIZE_LIMIT: u64 = 4 << 30;

/// How a [`BackupWriter`] writes.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// The largest chunk file, in bytes: a part is cut into files of this size (the last one
    /// shorter), and a blob may be at most this large. Between 1 and [`MAX_PART_SIZE_LIMIT`];
    /// default [`DEFAULT_MAX_PART_SIZE`]. The writer and the reader each hold one chunk in
    /// memory at a time.
    pub max_part_size: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_part_size: DEFAULT_MAX_PART_SIZE,
        }
    }
}

impl WriterOptions {
    /// These options with `max_part_size` set.
    pub fn with_max_part_size(mut self, bytes: u64) -> Self {
        self.max_part_size = bytes;
        self
    }
}

/// Writes one backup into one location. Nothing makes it a backup until [`finish`] writes the
/// manifest (conditionally: it fails if a manifest appeared meanwhile); a writer dropped before
/// that leaves only files that no reader or listing accepts.
///
/// [`finish`]: BackupWriter::finish
#[derive(Debug)]
pub struct BackupWriter {
    target: Target,
    max_part_size: u64,
    files: Vec<FileEntry>,
    names: HashSet<String>,
    stored: HashSet<String>,
    dirs: HashSet<String>,
    bytes_written: u64,
    /// Set when a part was dropped unfinished or failed: the backup must not be committed.
    broken: Option<String>,
}

impl BackupWriter {
    /// Starts a backup at `target`. Fails with [`Error::AlreadyExists`] when a backup (a
    /// manifest) is there already, and with `InvalidArgument` on bad options.
    pub fn create(target: &Target, options: WriterOptions) -> Result<BackupWriter> {
        if !(1..=MAX_PART_SIZE_LIMIT).contains(&options.max_part_size) {
            return Err(Error::InvalidArgument(format!(
                "max part size {} is outside 1..={MAX_PART_SIZE_LIMIT}",
                options.max_part_size
            )));
        }
        target.prepare()?;
        if target.exists(MANIFEST_NAME)? {
            return Err(Error::AlreadyExists {
                location: target.url(),
                file: MANIFEST_NAME.into(),
            });
        }
        Ok(BackupWriter {
            target: target.clone(),
            max_part_size: options.max_part_size,
            files: Vec::new(),
            names: HashSet::new(),
            stored: HashSet::new(),
            dirs: HashSet::new(),
            bytes_written: 0,
            broken: None,
        })
    }

    /// The location written to.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Bytes of chunk and blob files written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Starts the part `name` (a relative `/` path, see [`crate::validate_name`]): write its
    /// bytes, then call [`PartWriter::finish`]. A part dropped unfinished makes
    /// [`BackupWriter::finish`] fail.
    pub fn part(&mut self, name: &str) -> Result<PartWriter<'_>> {
        self.claim_name(name)?;
        let cap = self.max_part_size.min(1 << 20) as usize;
        Ok(PartWriter {
            name: name.to_owned(),
            buf: Vec::with_capacity(cap),
            chunks: Vec::new(),
            finished: false,
            writer: self,
        })
    }

    /// Writes the small file `name` whole (at most the max part size).
    pub fn put_blob(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        if bytes.len() as u64 > self.max_part_size {
            return Err(Error::InvalidArgument(format!(
                "blob {name:?} has {} bytes, more than the max part size {}; write it as a part",
                bytes.len(),
                self.max_part_size
            )));
        }
        self.claim_name(name)?;
        let chunk = self.store(name, bytes)?;
        self.files.push(FileEntry {
            name: name.to_owned(),
            kind: FileKind::Blob,
            chunks: vec![chunk],
        });
        Ok(())
    }

    /// Commits the backup: writes the manifest, holding `meta` and every finished file, with a
    /// create-only put. Fails if a part was left unfinished, or with
    /// [`Error::AlreadyExists`] if another backup committed to the location meanwhile.
    pub fn finish(self, meta: serde_json::Value) -> Result<Manifest> {
        if let Some(why) = self.broken {
            return Err(Error::InvalidArgument(format!(
                "backup at {} not committed: {why}",
                self.target
            )));
        }
        let created_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let manifest = Manifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            created_unix_ms,
            producer: concat!("latentdb-backup ", env!("CARGO_PKG_VERSION")).into(),
            meta,
            files: self.files,
        };
        self.target
            .put_if_absent(MANIFEST_NAME, &manifest.encode())?;
        Ok(manifest)
    }

    fn claim_name(&mut self, name: &str) -> Result<()> {
        validate_name(name)?;
        if name == MANIFEST_NAME {
            return Err(Error::InvalidArgument(format!(
                "{MANIFEST_NAME:?} is reserved for the manifest"
            )));
        }
        if !self.names.insert(name.to_owned()) {
            return Err(Error::AlreadyExists {
                location: self.target.url(),
                file: name.to_owned(),
            });
        }
        Ok(())
    }

    /// Writes one chunk file, after checking that its path collides with no other file's (the
    /// same path, or a path that is another's directory).
    fn store(&mut self, file: &str, bytes: &[u8]) -> Result<Chunk> {
        let collides = self.stored.contains(file)
            || self.dirs.contains(file)
            || ancestors(file).any(|d| self.stored.contains(d));
        if collides {
            return Err(Error::AlreadyExists {
                location: self.target.url(),
                file: file.to_owned(),
            });
        }
        self.stored.insert(file.to_owned());
        self.dirs.extend(ancestors(file).map(str::to_owned));
        let crc32 = crc32fast::hash(bytes);
        self.target.put(file, bytes)?;
        self.bytes_written += bytes.len() as u64;
        Ok(Chunk {
            file: file.to_owned(),
            size: bytes.len() as u64,
            crc32,
        })
    }
}

/// The directories above `file`: `a/b/c` gives `a/b`, then `a`.
fn ancestors(file: &str) -> impl Iterator<Item = &str> {
    let mut rest = file;
    std::iter::from_fn(move || {
        let cut = rest.rfind('/')?;
        rest = &rest[..cut];
        Some(rest)
    })
}

/// Streams one part of a backup into chunk files `name.00000`, `name.00001`, … of at most the
/// max part size each, recording each one's size and CRC-32. Write errors carry the crate's
/// [`Error`] inside the `io::Error` (see [`Error::from_io`]).
#[derive(Debug)]
pub struct PartWriter<'a> {
    writer: &'a mut BackupWriter,
    name: String,
    buf: Vec<u8>,
    chunks: Vec<Chunk>,
    finished: bool,
}

impl PartWriter<'_> {
    /// The part's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes written to this part so far (stored or buffered).
    pub fn len(&self) -> u64 {
        self.chunks.iter().map(|c| c.size).sum::<u64>() + self.buf.len() as u64
    }

    /// True while nothing was written to the part.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the last chunk and records the part in the backup; returns its entry. An empty
    /// part is stored as one empty chunk.
    pub fn finish(mut self) -> Result<FileEntry> {
        if !self.buf.is_empty() || self.chunks.is_empty() {
            self.cut()?;
        }
        self.finished = true;
        let entry = FileEntry {
            name: std::mem::take(&mut self.name),
            kind: FileKind::Part,
            chunks: std::mem::take(&mut self.chunks),
        };
        self.writer.files.push(entry.clone());
        Ok(entry)
    }

    fn cut(&mut self) -> Result<()> {
        let file = chunk_file(&self.name, self.chunks.len());
        let stored = self.writer.store(&file, &self.buf);
        match stored {
            Ok(chunk) => {
                self.chunks.push(chunk);
                self.buf.clear();
                Ok(())
            }
            Err(e) => {
                self.writer.broken = Some(format!("writing part {:?} failed: {e}", self.name));
                Err(e)
            }
        }
    }
}

impl io::Write for PartWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(why) = &self.writer.broken {
            return Err(io::Error::other(Error::InvalidArgument(why.clone())));
        }
        let room = (self.writer.max_part_size - self.buf.len() as u64) as usize;
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() as u64 == self.writer.max_part_size {
            self.cut().map_err(io::Error::other)?;
        }
        Ok(n)
    }

    /// Does nothing: chunks are cut at the max part size, and the last one by
    /// [`PartWriter::finish`].
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for PartWriter<'_> {
    fn drop(&mut self) {
        if !self.finished && self.writer.broken.is_none() {
            self.writer.broken = Some(format!("part {:?} was dropped unfinished", self.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latentdb_types::ErrorKind;
    use std::io::Write;

    #[test]
    fn ancestors_walk_up() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a/b", "a"]);
        assert_eq!(ancestors("a").count(), 0);
    }

    #[test]
    fn parts_cut_at_the_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::local(dir.path());
        let options = WriterOptions::default().with_max_part_size(4);
        let mut w = BackupWriter::create(&target, options).unwrap();
        let mut p = w.part("p").unwrap();
        p.write_all(b"0123456789").unwrap();
        assert_eq!(p.len(), 10);
        let entry = p.finish().unwrap();
        let sizes: Vec<u64> = entry.chunks.iter().map(|c| c.size).collect();
        assert_eq!(sizes, [4, 4, 2]);
        assert_eq!(entry.chunks[2].file, "p.00002");
        assert_eq!(entry.chunks[1].crc32, crc32fast::hash(b"4567"));
        // Exactly full: no trailing empty chunk; empty: one empty chunk.
        let mut q = w.part("q").unwrap();
        q.write_all(b"abcd").unwrap();
        assert_eq!(q.finish().unwrap().chunks.len(), 1);
        let e = w.part("e").unwrap().finish().unwrap();
        assert_eq!(e.chunks.len(), 1);
        assert_eq!(e.chunks[0].size, 0);
        assert_eq!(w.bytes_written(), 14);
        let m = w.finish(serde_json::json!(null)).unwrap();
        assert_eq!(m.files.len(), 3);
    }

    #[test]
    fn names_are_claimed_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::local(dir.path());
        let mut w = BackupWriter::create(&target, WriterOptions::default()).unwrap();
        w.put_blob("a", b"x").unwrap();
        assert_eq!(
            w.put_blob("a", b"y").unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            w.put_blob("a/b", b"y").unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        w.put_blob("p.00000", b"z").unwrap();
        let mut p = w.part("p").unwrap();
        p.write_all(b"1").unwrap();
        assert_eq!(p.finish().unwrap_err().kind(), ErrorKind::AlreadyExists);
        for bad in ["MANIFEST", "../x", "/x", ""] {
            assert_eq!(
                w.put_blob(bad, b"").unwrap_err().kind(),
                ErrorKind::InvalidArgument
            );
        }
        let err = w.finish(serde_json::json!({})).unwrap_err();
        assert!(err.to_string().contains("not committed"), "{err}");
        let small = WriterOptions::default().with_max_part_size(2);
        let mut w = BackupWriter::create(&Target::local(dir.path().join("s")), small).unwrap();
        assert_eq!(
            w.put_blob("big", b"abc").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        for bad in [0, MAX_PART_SIZE_LIMIT + 1] {
            let o = WriterOptions::default().with_max_part_size(bad);
            assert!(BackupWriter::create(&target, o).is_err());
        }
    }

    #[test]
    fn a_dropped_part_blocks_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::local(dir.path());
        let mut w = BackupWriter::create(&target, WriterOptions::default()).unwrap();
        let mut p = w.part("p").unwrap();
        p.write_all(b"data").unwrap();
        drop(p);
        let err = w.finish(serde_json::json!({})).unwrap_err();
        assert!(err.to_string().contains("dropped unfinished"), "{err}");
        assert!(!target.exists(MANIFEST_NAME).unwrap());
    }
}
