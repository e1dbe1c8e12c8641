//! Durable, atomic file writes: a reader (or a crash) sees the old file or the new one, never a
//! half-written one, and a write that returned `Ok` survives a power loss.
//!
//! The recipe: write a uniquely named temporary file in the destination's directory, fsync
//! it, rename it over the destination, fsync the directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh name beside `path` (same directory, so a rename is atomic): hidden, and unique per
/// process and call, so concurrent writers never share one.
pub(crate) fn temp_sibling(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{tag}-{}-{n}", std::process::id()))
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

pub use latentdb_types::dump::sync_dir;

/// Creates `dir` and any missing parents, fsyncing the parent of every directory it creates,
/// so the new directories survive a crash.
pub fn create_dir_all_durably(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = parent_dir(dir);
    if parent != dir {
        create_dir_all_durably(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` atomically and durably: to a uniquely named temporary file in the
/// same directory, fsynced, renamed over `path`, then the directory fsynced. A concurrent
/// reader sees the previous content or the new one, never a mix; after a crash `path` holds
/// one of them. The directory must exist. On error the temporary file is removed and `path` is
/// unchanged.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_file_with(
        path,
        |tmp| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(tmp)?;
            f.write_all(bytes)
        },
        |e| e,
    )
}

/// [`write_file_atomically`] with the content written by `write` to the temporary path it is
/// given (for writers that only write to a path, such as candle's safetensors save). `write`
/// need not sync; this does. `io` turns an I/O error of the sync and rename steps into `E`.
pub(crate) fn replace_file_with<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
    io: impl FnOnce(std::io::Error) -> E,
) -> Result<(), E> {
    let tmp = temp_sibling(path, "tmp");
    let result = write(&tmp).and_then(|()| {
        let finish = || -> std::io::Result<()> {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&tmp)?
                .sync_all()?;
            std::fs::rename(&tmp, path)?;
            sync_dir(parent_dir(path))
        };
        finish().map_err(io)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f.json");
        write_file_atomically(&p, b"one").expect("first write");
        write_file_atomically(&p, b"two!").expect("second write");
        assert_eq!(std::fs::read(&p).expect("read"), b"two!");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.json")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        write_file_atomically(&p, b"old").expect("write");
        let err = replace_file_with(
            &p,
            |tmp| {
                std::fs::write(tmp, b"half")?;
                Err(std::io::Error::other("disk full"))
            },
            |e| e,
        )
        .expect_err("the writer failed");
        assert_eq!(err.to_string(), "disk full");
        assert_eq!(std::fs::read(&p).expect("read"), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_partial_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("no/such/dir/f");
        assert!(write_file_atomically(&p, b"x").is_err());
        create_dir_all_durably(p.parent().expect("parent")).expect("mkdir -p");
        write_file_atomically(&p, b"x").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"x");
    }
}
