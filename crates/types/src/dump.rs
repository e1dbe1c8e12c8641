//! Checksummed dump files, shared by the crates that persist a derived index (vector, lexical):
//! an atomic write that records each file's length and CRC-32, a read that checks both, and a
//! bounds-checked little-endian [`Reader`] for parsing what was read.
//!
//! Everything here reports plain I/O errors (with the path they concern) or [`ReadError`];
//! each crate maps them to its own error type.
//!
//! ```
//! use std::io::Write;
//! use latentdb_types::dump::{Reader, read_checked, write_file};
//! let dir = tempfile::tempdir().unwrap();
//! let rec = write_file(dir.path(), "a.bin", |w| w.write_all(&7u32.to_le_bytes())).unwrap();
//! assert_eq!(rec.bytes, 4);
//! let bytes = read_checked(&dir.path().join("a.bin"), "a.bin", rec).unwrap();
//! let mut r = Reader::new(&bytes);
//! assert_eq!(r.u32(), Some(7));
//! assert_eq!(r.u32(), None);
//! ```

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The length and CRC-32 (IEEE) of a file as written (the default: an empty file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileRecord {
    /// Its length in bytes.
    pub bytes: u64,
    /// The CRC-32 of its whole content.
    pub crc32: u32,
}

/// A writer that counts bytes and computes the CRC-32 of what passes through to `W`.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`, with nothing counted yet.
    pub fn new(inner: W) -> Self {
        Self::resume(inner, FileRecord::default())
    }

    /// Wraps `inner`, which continues a file whose first `from.bytes` bytes have the CRC-32
    /// `from.crc32`: the length and checksum then cover that content and what is written
    /// through.
    pub fn resume(inner: W, from: FileRecord) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new_with_initial_len(from.crc32, from.bytes),
            bytes: from.bytes,
        }
    }

    /// The inner writer and the length and CRC-32 of everything written through.
    pub fn into_parts(self) -> (W, FileRecord) {
        let record = FileRecord {
            bytes: self.bytes,
            crc32: self.hasher.finalize(),
        };
        (self.inner, record)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// An I/O error and the path it concerns.
#[derive(Debug)]
pub struct IoAt {
    /// The file or directory.
    pub path: PathBuf,
    /// The underlying error.
    pub source: std::io::Error,
}

impl IoAt {
    fn new(path: &Path, source: std::io::Error) -> Self {
        Self {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl fmt::Display for IoAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i/o error on {}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for IoAt {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Writes `name` in `dir` through a temporary file (`name.tmp`), buffered, fsynced and renamed
/// into place, returning its length and CRC-32. `body` writes the content. An error names the
/// temporary file, or `dir/name` when the rename failed. The directory is not synced: call
/// [`sync_dir`] after the last rename.
pub fn write_file(
    dir: &Path,
    name: &str,
    body: impl FnOnce(&mut HashingWriter<BufWriter<File>>) -> std::io::Result<()>,
) -> Result<FileRecord, IoAt> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let file = File::create(&tmp).map_err(|e| IoAt::new(&tmp, e))?;
    let record = write_synced(file, FileRecord::default(), body).map_err(|e| IoAt::new(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| IoAt::new(&path, e))?;
    Ok(record)
}

/// Writes what `body` writes to `file` (at its position, which follows the `from.bytes` bytes
/// whose CRC-32 is `from.crc32`), buffered, then fsyncs it; returns the length and CRC-32 of
/// the whole content.
fn write_synced(
    file: File,
    from: FileRecord,
    body: impl FnOnce(&mut HashingWriter<BufWriter<File>>) -> std::io::Result<()>,
) -> std::io::Result<FileRecord> {
    let mut w = HashingWriter::resume(BufWriter::with_capacity(1 << 20, file), from);
    body(&mut w)?;
    let (inner, record) = w.into_parts();
    inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(record)
}

/// Extends `name` in `dir` in place: keeps its first `from.bytes` bytes (whose CRC-32 the
/// caller recorded as `from.crc32`), drops anything after them (what an append that crashed
/// before it was committed left), appends what `body` writes, and fsyncs, returning the new
/// length and the CRC-32 of the whole content. The checksum of the kept bytes is not read
/// back: if they were damaged since, the new checksum fails when the file is read.
///
/// Readers of a file appended this way must read only the length they recorded
/// ([`read_prefix_checked`]): a crash between this append and the caller's commit of the new
/// length leaves bytes past the old one. A file shorter than `from.bytes` is an error
/// ([`std::io::ErrorKind::InvalidData`]), with nothing changed.
pub fn append_file(
    dir: &Path,
    name: &str,
    from: FileRecord,
    body: impl FnOnce(&mut HashingWriter<BufWriter<File>>) -> std::io::Result<()>,
) -> Result<FileRecord, IoAt> {
    let path = dir.join(name);
    let at = |e| IoAt::new(&path, e);
    let mut file = OpenOptions::new().write(true).open(&path).map_err(at)?;
    let len = file.metadata().map_err(at)?.len();
    if len < from.bytes {
        return Err(at(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{name} has {len} bytes, fewer than the {} to keep",
                from.bytes
            ),
        )));
    }
    file.set_len(from.bytes).map_err(at)?;
    file.seek(SeekFrom::Start(from.bytes)).map_err(at)?;
    write_synced(file, from, body).map_err(at)
}

/// True when `path` is a file with no other hard link to it, so that changing it in place
/// ([`append_file`]) cannot change a copy someone linked (a backup in progress). False when
/// it cannot be told (an error, or a platform without link counts).
pub fn is_sole_link(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).is_ok_and(|m| m.is_file() && m.nlink() == 1)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// Flushes a directory's entries (creations, renames, removals in it) to stable storage.
///
/// On platforms where a directory cannot be opened for syncing (Windows), this is a no-op.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The content of `path`, or `None` when it does not exist.
pub fn read_if_exists(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes every file in `dir` whose name `doomed` accepts (best effort: errors are ignored).
pub fn remove_files_where(dir: &Path, doomed: impl Fn(&str) -> bool) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if doomed(&e.file_name().to_string_lossy()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Why [`read_checked`] failed.
#[derive(Debug)]
pub enum ReadError {
    /// The file is missing, or its length or checksum is not the one recorded: the reason,
    /// naming the file (e.g. "graph-3.bin fails its checksum").
    Corrupt(String),
    /// Memory for the file could not be reserved: the message.
    Exhausted(String),
    /// Reading the file failed.
    Io(std::io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Corrupt(m) | ReadError::Exhausted(m) => f.write_str(m),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Reads `path` (called `name` in messages) and checks that its length and CRC-32 are
/// `expected`'s. Memory is reserved fallibly, and only after the file's length matched: a file
/// too large for memory is [`ReadError::Exhausted`], not an abort.
pub fn read_checked(path: &Path, name: &str, expected: FileRecord) -> Result<Vec<u8>, ReadError> {
    read_recorded(path, name, expected, true)
}

/// Like [`read_checked`] for a file that may be longer than recorded (one extended with
/// [`append_file`], whose append was not committed): reads its first `expected.bytes` bytes and
/// checks their CRC-32; bytes past them are ignored. Shorter than recorded is corrupt.
pub fn read_prefix_checked(
    path: &Path,
    name: &str,
    expected: FileRecord,
) -> Result<Vec<u8>, ReadError> {
    read_recorded(path, name, expected, false)
}

/// The first `expected.bytes` bytes of `path`, checked; with `exact`, the file must have no
/// more.
fn read_recorded(
    path: &Path,
    name: &str,
    expected: FileRecord,
    exact: bool,
) -> Result<Vec<u8>, ReadError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::Corrupt(format!("{name} is missing")),
        _ => ReadError::Io(e),
    })?;
    if meta.len() < expected.bytes || (exact && meta.len() != expected.bytes) {
        return Err(ReadError::Corrupt(format!(
            "{name} has {} bytes, manifest says {}",
            meta.len(),
            expected.bytes
        )));
    }
    let bytes = read_sized(path, expected.bytes)?;
    if bytes.len() as u64 != expected.bytes || crc32fast::hash(&bytes) != expected.crc32 {
        return Err(ReadError::Corrupt(format!("{name} fails its checksum")));
    }
    Ok(bytes)
}

/// Reads a file of `len` bytes (as its metadata said) into memory reserved fallibly.
fn read_sized(path: &Path, len: u64) -> Result<Vec<u8>, ReadError> {
    let exhausted = || {
        ReadError::Exhausted(format!(
            "cannot reserve {len} bytes to read {}",
            path.display()
        ))
    };
    let len = usize::try_from(len).map_err(|_| exhausted())?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(len).map_err(|_| exhausted())?;
    File::open(path)
        .and_then(|f| f.take(len as u64).read_to_end(&mut bytes))
        .map_err(ReadError::Io)?;
    Ok(bytes)
}

/// A bounds-checked little-endian reader over a byte slice: every read past the end is `None`,
/// never a panic.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// The next `n` bytes, or `None` (and nothing consumed) if fewer are left.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// The next byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// The next little-endian `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The next `n` little-endian `u32`s, as raw bytes (`n * 4` of them).
    pub fn u32_bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        self.take(n.checked_mul(4)?)
    }

    /// How many bytes have been read.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// How many bytes are left.
    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// The little-endian `u32`s in `bytes` (a trailing partial word is ignored).
pub fn le_u32s(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn write_then_read_round_trips_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body: Vec<u8> = (0..3000u32).flat_map(|i| i.to_le_bytes()).collect();
        let rec = write_file(dir.path(), "f.bin", |w| w.write_all(&body)).expect("write");
        assert_eq!(
            rec,
            FileRecord {
                bytes: body.len() as u64,
                crc32: crc32fast::hash(&body)
            }
        );
        sync_dir(dir.path()).expect("sync");
        let path = dir.path().join("f.bin");
        assert_eq!(read_checked(&path, "f.bin", rec).expect("read"), body);
        assert!(!dir.path().join("f.bin.tmp").exists());
        assert_eq!(read_if_exists(&path).expect("read"), Some(body));
        assert_eq!(
            read_if_exists(&dir.path().join("none")).expect("read"),
            None
        );
    }

    #[test]
    fn a_failed_body_names_the_temporary_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_file(dir.path(), "f", |w| w.write_all(b"old")).expect("write");
        let err = write_file(dir.path(), "f", |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .expect_err("the body failed");
        assert_eq!(err.path, dir.path().join("f.tmp"));
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(fs::read(dir.path().join("f")).expect("read"), b"old");
        let missing = write_file(&dir.path().join("no"), "f", |_| Ok(())).expect_err("no dir");
        assert_eq!(missing.path, dir.path().join("no/f.tmp"));
    }

    #[test]
    fn read_checked_reports_missing_short_and_damaged_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = write_file(dir.path(), "f", |w| w.write_all(b"abcdef")).expect("write");
        let path = dir.path().join("f");
        let reason = |r: Result<Vec<u8>, ReadError>| match r {
            Err(ReadError::Corrupt(m)) => m,
            other => panic!("expected corrupt, got {other:?}"),
        };
        let gone = dir.path().join("g");
        assert_eq!(reason(read_checked(&gone, "g", rec)), "g is missing");
        fs::write(&path, b"abc").expect("truncate");
        assert_eq!(
            reason(read_checked(&path, "f", rec)),
            "f has 3 bytes, manifest says 6"
        );
        fs::write(&path, b"abcdeF").expect("flip");
        assert_eq!(
            reason(read_checked(&path, "f", rec)),
            "f fails its checksum"
        );
        fs::write(&path, b"abcdef").expect("restore");
        assert_eq!(read_checked(&path, "f", rec).expect("read"), b"abcdef");
    }

    #[test]
    fn an_append_checksums_the_whole_file_and_drops_an_uncommitted_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.bin");
        let first = write_file(dir.path(), "v.bin", |w| w.write_all(b"abcd")).expect("write");
        // An append that crashed before its new length was committed left a tail: readers of
        // the recorded length still read the file, and the next append drops the tail.
        fs::write(&path, b"abcdGARBAGE").expect("tail");
        match read_checked(&path, "v.bin", first) {
            Err(ReadError::Corrupt(m)) => assert_eq!(m, "v.bin has 11 bytes, manifest says 4"),
            other => panic!("an exact read of a longer file: {other:?}"),
        }
        assert_eq!(
            read_prefix_checked(&path, "v.bin", first).expect("read"),
            b"abcd"
        );
        let second =
            append_file(dir.path(), "v.bin", first, |w| w.write_all(b"efgh")).expect("append");
        assert_eq!(
            second,
            FileRecord {
                bytes: 8,
                crc32: crc32fast::hash(b"abcdefgh")
            }
        );
        assert_eq!(fs::read(&path).expect("read"), b"abcdefgh");
        assert_eq!(
            read_checked(&path, "v.bin", second).expect("read"),
            b"abcdefgh"
        );
        assert_eq!(
            read_prefix_checked(&path, "v.bin", first).expect("read"),
            b"abcd"
        );
        // A damaged kept byte is not read back by the append, and fails the next read.
        fs::write(&path, b"Xbcdefgh").expect("flip");
        let third =
            append_file(dir.path(), "v.bin", second, |w| w.write_all(b"ij")).expect("append");
        let reason = match read_prefix_checked(&path, "v.bin", third) {
            Err(ReadError::Corrupt(m)) => m,
            other => panic!("expected corrupt, got {other:?}"),
        };
        assert_eq!(reason, "v.bin fails its checksum");
        // Shorter than the length to keep: refused, the file unchanged.
        let err = append_file(
            dir.path(),
            "v.bin",
            FileRecord {
                bytes: 99,
                crc32: 0,
            },
            |w| w.write_all(b"zz"),
        )
        .expect_err("too short");
        assert_eq!(err.source.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(fs::read(&path).expect("read"), b"Xbcdefghij");
        let short = FileRecord {
            bytes: 11,
            crc32: 0,
        };
        let reason = match read_prefix_checked(&path, "v.bin", short) {
            Err(ReadError::Corrupt(m)) => m,
            other => panic!("expected corrupt, got {other:?}"),
        };
        assert_eq!(reason, "v.bin has 10 bytes, manifest says 11");
    }

    #[cfg(unix)]
    #[test]
    fn a_hard_linked_file_is_not_a_sole_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        assert!(!is_sole_link(&path), "missing");
        fs::write(&path, b"x").expect("write");
        assert!(is_sole_link(&path));
        fs::hard_link(&path, dir.path().join("g")).expect("link");
        assert!(!is_sole_link(&path));
        fs::remove_file(dir.path().join("g")).expect("unlink");
        assert!(is_sole_link(&path));
        assert!(!is_sole_link(dir.path()), "a directory");
    }

    #[test]
    fn remove_files_where_removes_only_the_doomed() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in ["a-1.bin", "a-2.bin", "b.bin"] {
            fs::write(dir.path().join(n), b"x").expect("write");
        }
        remove_files_where(dir.path(), |n| n.starts_with("a-") && n != "a-2.bin");
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a-2.bin", "b.bin"]);
    }

    #[test]
    fn a_truncated_read_is_none_and_consumes_nothing() {
        let bytes = [1, 0, 0, 0, 9, 2, 0];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u32(), Some(1));
        assert_eq!(r.u8(), Some(9));
        assert_eq!(r.pos(), 5);
        assert_eq!(r.u32(), None);
        assert_eq!(r.u32_bytes(1), None);
        assert_eq!(r.u32_bytes(usize::MAX), None);
        assert_eq!(r.take(usize::MAX), None);
        assert_eq!(r.left(), 2);
        assert_eq!(r.take(2), Some(&[2, 0][..]));
        assert_eq!(r.u8(), None);
        assert_eq!(r.left(), 0);
        assert_eq!(
            le_u32s(&[1, 0, 0, 0, 2, 0, 0, 0, 3]).collect::<Vec<_>>(),
            [1, 2]
        );
    }

    proptest! {
        #[test]
        fn a_reader_over_any_bytes_never_panics_and_stays_in_bounds(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            ops in proptest::collection::vec((0u8..4, any::<usize>()), 0..32),
        ) {
            let mut r = Reader::new(&bytes);
            for (op, n) in ops {
                let before = r.pos();
                let n = if n % 2 == 0 { n % 40 } else { n };
                let got = match op {
                    0 => r.take(n).map(<[u8]>::len),
                    1 => r.u8().map(|_| 1),
                    2 => r.u32().map(|_| 4),
                    _ => r.u32_bytes(n).map(<[u8]>::len),
                };
                match got {
                    Some(len) => prop_assert_eq!(r.pos(), before + len),
                    None => prop_assert_eq!(r.pos(), before),
                }
                prop_assert!(r.pos() <= bytes.len());
                prop_assert_eq!(r.left(), bytes.len() - r.pos());
            }
        }
    }
}
