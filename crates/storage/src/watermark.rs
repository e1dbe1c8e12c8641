//! The watermark: an independent record of the change sequence acknowledged per collection,
//! checked on open to detect storage that came back behind what writers were told.
//!
//! sled truncates its log at the first damaged message and reports nothing, so a bit flip can
//! open as a database that silently lost every later write. The watermark is a small sidecar
//! file, `DIR/watermark`, written after each successful sled flush with the sequences that
//! flush made durable (never more): if storage opens with a collection behind it, or missing,
//! acknowledged writes were lost. The format and what is and is not detected are in
//! `docs/FORMAT.md` ("Watermark").
//!
//! Layout, version 1 (integers big-endian):
//!
//! ```text
//! 8 bytes  magic "LDBWMARK"
//! u32      format version (1)
//! u32      number of entries n
//! n ×      u64 cid, u64 last acknowledged sequence, u16 name length, name bytes (UTF-8)
//! u32      CRC-32 (IEEE) of every byte before it
//! ```
//!
//! Bytes after the CRC are ignored. The file is rewritten in place without fsync on the write
//! path (a second fsync per write would halve throughput); it is fsynced by the background
//! flusher, on close, and before a drop. Any older or torn version is safe: an older one claims
//! less, a torn one fails its CRC and only weakens detection (a warning).

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The name of the watermark file inside a database directory.
pub const WATERMARK_FILE: &str = "watermark";

/// The magic bytes a watermark file starts with.
const MAGIC: &[u8; 8] = b"LDBWMARK";

/// The watermark format version this build writes and reads.
pub const WATERMARK_VERSION: u32 = 1;

/// A collection that opened behind the watermark: writes acknowledged up to `expected` were
/// lost down to `found`. Reported by `Storage::data_loss` when the database was opened with
/// `StorageOptions::accept_data_loss`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataLossReport {
    /// The collection's name (as recorded in the watermark when it is missing from storage).
    pub collection: String,
    /// The last change sequence acknowledged to a writer.
    pub expected: u64,
    /// The last change sequence found in storage; 0 when the collection is missing entirely.
    pub found: u64,
}

impl From<&DataLossReport> for Error {
    fn from(r: &DataLossReport) -> Self {
        Error::DataLoss {
            collection: r.collection.clone(),
            expected: r.expected,
            found: r.found,
        }
    }
}

/// One collection's entry: its stable identity, name and last acknowledged sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    pub name: String,
    pub seq: u64,
}

/// Encodes a watermark file.
pub(crate) fn encode(marks: &BTreeMap<u64, Mark>) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + marks.len() * 40);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&WATERMARK_VERSION.to_be_bytes());
    // Names are validated collection names (at most 128 characters), so the casts hold;
    // `min` keeps the file well-formed even if they did not.
    let n = u32::try_from(marks.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    for (cid, mark) in marks.iter().take(n as usize) {
        let name = &mark.name.as_bytes()[..mark.name.len().min(u16::MAX as usize)];
        out.extend_from_slice(&cid.to_be_bytes());
        out.extend_from_slice(&mark.seq.to_be_bytes());
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A cursor over the file's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| "truncated".to_owned())?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

/// Decodes a watermark file: any bytes give `Ok` or an error message, never a panic.
pub(crate) fn decode(bytes: &[u8]) -> Result<BTreeMap<u64, Mark>, String> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(8)? != MAGIC {
        return Err("not a watermark file (bad magic)".into());
    }
    let version = be_u32(r.take(4)?);
    if version != WATERMARK_VERSION {
        return Err(format!(
            "unsupported watermark version {version} (this build reads {WATERMARK_VERSION})"
        ));
    }
    let n = be_u32(r.take(4)?);
    let mut marks = BTreeMap::new();
    for _ in 0..n {
        let cid = be_u64(r.take(8)?);
        let seq = be_u64(r.take(8)?);
        let len = be_u32(r.take(2)?) as usize;
        let name = std::str::from_utf8(r.take(len)?)
            .map_err(|_| "a collection name is not UTF-8".to_owned())?
            .to_owned();
        marks.insert(cid, Mark { name, seq });
    }
    let body_end = r.pos;
    let crc = be_u32(r.take(4)?);
    if crc32fast::hash(&bytes[..body_end]) != crc {
        return Err("checksum mismatch (torn or damaged)".into());
    }
    Ok(marks)
}

fn be_u32(b: &[u8]) -> u32 {
    b.iter().fold(0, |acc, &x| (acc << 8) | u32::from(x))
}

fn be_u64(b: &[u8]) -> u64 {
    b.iter().fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

/// Reads the watermark of `dir`. A missing file is `None`; an unreadable, torn or foreign one is
/// `None` with a warning (it only weakens detection).
pub(crate) fn read(dir: &Path) -> Option<BTreeMap<u64, Mark>> {
    let path = dir.join(WATERMARK_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "cannot read the watermark; data loss cannot be detected on this open");
            return None;
        }
    };
    match decode(&bytes) {
        Ok(marks) => Some(marks),
        Err(why) => {
            tracing::warn!(path = %path.display(), why,
                "ignoring a damaged watermark; data loss cannot be detected on this open");
            None
        }
    }
}

/// Renames the watermark of `dir` aside as `watermark.lost-<unix seconds>` (never replacing an
/// existing file) and returns the new path.
pub(crate) fn keep_as_evidence(dir: &Path) -> Result<PathBuf> {
    let from = dir.join(WATERMARK_FILE);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for n in 0u32.. {
        let name = if n == 0 {
            format!("{WATERMARK_FILE}.lost-{secs}")
        } else {
            format!("{WATERMARK_FILE}.lost-{secs}.{n}")
        };
        let to = dir.join(name);
        if to.exists() {
            continue;
        }
        // A hard link never replaces an existing file; then the original is removed.
        match std::fs::hard_link(&from, &to) {
            Ok(()) => {
                std::fs::remove_file(&from).map_err(|source| Error::Io {
                    path: from.clone(),
                    source,
                })?;
                sync_dir(dir);
                return Ok(to);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            // A filesystem without hard links: a rename to the name just checked to be free.
            Err(_) => {
                std::fs::rename(&from, &to).map_err(|source| Error::Io {
                    path: to.clone(),
                    source,
                })?;
                sync_dir(dir);
                return Ok(to);
            }
        }
    }
    Err(Error::Internal("no free name for the old watermark".into()))
}

/// Fsyncs a directory so that a rename or removal in it is durable (best effort).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The live watermark of an open storage: what was last written, and the file.
pub(crate) struct Watermark {
    path: PathBuf,
    file: Option<File>,
    marks: BTreeMap<u64, Mark>,
    /// Collections dropped in this session: a flush that sampled them before the drop must
    /// not bring them back.
    dropped: HashSet<u64>,
    /// Bytes last written (to shrink the file when it gets shorter).
    written_len: u64,
    /// Written since the last fsync.
    unsynced: bool,
    /// A write failed; warn once, not per write.
    warned: bool,
}

impl Watermark {
    /// A watermark for `dir` holding `marks`, written and fsynced now.
    pub fn create(dir: &Path, marks: BTreeMap<u64, Mark>) -> Watermark {
        let path = dir.join(WATERMARK_FILE);
        let mut wm = Watermark {
            path,
            file: None,
            marks,
            dropped: HashSet::new(),
            written_len: 0,
            unsynced: false,
            warned: false,
        };
        if wm.write().is_ok() {
            let _ = wm.sync_now();
            sync_dir(dir);
        }
        wm
    }

    fn open_file(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&self.path)?;
            self.written_len = f.metadata()?.len();
            self.file = Some(f);
        }
        // Just set when it was `None`.
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("watermark file not open"))
    }

    /// Rewrites the file in place (no fsync).
    fn write(&mut self) -> std::io::Result<()> {
        let bytes = encode(&self.marks);
        let res = (|| {
            self.open_file()?;
            let written_len = self.written_len;
            let f = self.open_file()?;
            f.seek(SeekFrom::Start(0))?;
            f.write_all(&bytes)?;
            if (bytes.len() as u64) < written_len {
                f.set_len(bytes.len() as u64)?;
            }
            Ok(())
        })();
        match &res {
            Ok(()) => {
                self.written_len = bytes.len() as u64;
                self.unsynced = true;
            }
            Err(e) => {
                // The next write starts from a fresh handle.
                self.file = None;
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "cannot write the watermark; data loss may go undetected");
                }
            }
        }
        res
    }

    /// Raises the marks to the sequences of `snapshot`, which a completed sled flush made
    /// durable, and rewrites the file when anything rose.
    pub fn advance(&mut self, snapshot: &[(u64, String, u64)]) {
        let mut changed = false;
        for (cid, name, seq) in snapshot {
            if self.dropped.contains(cid) {
                continue;
            }
            match self.marks.get_mut(cid) {
                Some(m) if m.seq >= *seq => {}
                Some(m) => {
                    m.seq = *seq;
                    changed = true;
                }
                None => {
                    self.marks.insert(
                        *cid,
                        Mark {
                            name: name.clone(),
                            seq: *seq,
                        },
                    );
                    changed = true;
                }
            }
        }
        if changed {
            let _ = self.write();
        }
    }

    /// Forgets a collection that is being dropped, durably, before its data goes: a crash
    /// after the drop must not report it lost. On failure the watermark is unchanged.
    pub fn forget(&mut self, cid: u64) -> Result<()> {
        let old = self.marks.remove(&cid);
        self.dropped.insert(cid);
        let res = self.write().and_then(|()| self.sync_now());
        if let Err(e) = res {
            // Without the file nothing can be reported lost: remove it rather than fail.
            match std::fs::remove_file(&self.path) {
                Ok(()) => {
                    self.file = None;
                    self.written_len = 0;
                    tracing::warn!(path = %self.path.display(), error = %e,
                        "removed the watermark after failing to update it");
                }
                Err(e2) if e2.kind() == std::io::ErrorKind::NotFound => self.file = None,
                Err(_) => {
                    if let Some(m) = old {
                        self.marks.insert(cid, m);
                    }
                    self.dropped.remove(&cid);
                    return Err(Error::Io {
                        path: self.path.clone(),
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }

    fn sync_now(&mut self) -> std::io::Result<()> {
        if let Some(f) = &self.file {
            f.sync_data()?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// A handle to fsync when the file was written since the last fsync (the caller fsyncs
    /// it without holding the watermark's lock); `None` when there is nothing to do.
    pub fn take_unsynced(&mut self) -> Option<File> {
        if !self.unsynced {
            return None;
        }
        let f = self.file.as_ref()?.try_clone().ok()?;
        self.unsynced = false;
        Some(f)
    }

    /// Records that an fsync of a handle from [`Watermark::take_unsynced`] failed.
    pub fn mark_unsynced(&mut self) {
        self.unsynced = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks() -> BTreeMap<u64, Mark> {
        [
            (
                7,
                Mark {
                    name: "notes".into(),
                    seq: 42,
                },
            ),
            (
                1 << 40,
                Mark {
                    name: "b".into(),
                    seq: 0,
                },
            ),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn round_trips_and_rejects_any_damage() {
        let bytes = encode(&marks());
        assert_eq!(decode(&bytes).unwrap(), marks());
        // Every truncation and every single-bit flip is rejected (CRC-32 catches all of them).
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "flip {byte}.{bit}");
            }
        }
        // Trailing bytes (a longer older version) are ignored.
        let mut longer = bytes.clone();
        longer.extend_from_slice(b"old tail");
        assert_eq!(decode(&longer).unwrap(), marks());
    }

    #[test]
    fn file_shrinks_and_forgotten_collections_stay_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let mut wm = Watermark::create(dir.path(), marks());
        assert_eq!(read(dir.path()).unwrap(), marks());
        wm.forget(7).unwrap();
        // A flush that sampled the collection before its drop does not bring it back.
        wm.advance(&[(7, "notes".into(), 50), (1 << 40, "b".into(), 3)]);
        let got = read(dir.path()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[&(1 << 40)].seq, 3);
        // Never lowered.
        wm.advance(&[(1 << 40, "b".into(), 1)]);
        assert_eq!(read(dir.path()).unwrap()[&(1 << 40)].seq, 3);
    }

    #[test]
    fn evidence_is_renamed_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WATERMARK_FILE), b"first").unwrap();
        let a = keep_as_evidence(dir.path()).unwrap();
        std::fs::write(dir.path().join(WATERMARK_FILE), b"second").unwrap();
        let b = keep_as_evidence(dir.path()).unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read(&a).unwrap(), b"first");
        assert_eq!(std::fs::read(&b).unwrap(), b"second");
        assert!(!dir.path().join(WATERMARK_FILE).exists());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        #[test]
        fn any_bytes_decode_without_panicking(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160),
            prefix in proptest::prelude::any::<bool>(),
        ) {
            let mut b = if prefix { encode(&marks())[..16].to_vec() } else { Vec::new() };
            b.extend(bytes);
            let _ = decode(&b);
        }

        #[test]
        fn any_marks_round_trip(
            m in proptest::collection::btree_map(
                proptest::prelude::any::<u64>(),
                ("[A-Za-z0-9_.-]{1,128}", proptest::prelude::any::<u64>()),
                0..8,
            )
        ) {
            let marks: BTreeMap<u64, Mark> =
                m.into_iter().map(|(c, (name, seq))| (c, Mark { name, seq })).collect();
            proptest::prop_assert_eq!(decode(&encode(&marks)).unwrap(), marks);
        }
    }
}
