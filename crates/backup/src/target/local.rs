//! The local directory target: every write through a synced temporary file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// A directory on a local file system.
#[derive(Clone, Debug)]
pub(super) struct LocalTarget {
    root: PathBuf,
}

/// Distinguishes the temporary files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A file is written and synced in slices of this size, so that the page cache never holds more
/// than this much of a backup's dirty data: one fsync of a whole 64 MiB chunk made the
/// database's own fsyncs on the same file system wait for it (writer p99 ×4 during a backup).
const SYNC_SLICE: usize = 4 << 20;

impl LocalTarget {
    pub(super) fn new(root: PathBuf) -> Self {
        LocalTarget { root }
    }

    pub(super) fn url(&self) -> String {
        self.root.display().to_string()
    }

    pub(super) fn child(&self, name: &str) -> Self {
        LocalTarget {
            root: self.root.join(name),
        }
    }

    pub(super) fn prepare(&self) -> Result<()> {
        if self.root.is_dir() {
            return Ok(());
        }
        self.create_dirs(&self.root)
    }

    /// Creates `dir` (the root or below it) and makes the new directory entries durable: each
    /// directory from `dir`'s parent up to the root (the root's parent if `dir` is the root)
    /// is fsynced.
    fn create_dirs(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
        for ancestor in dir.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() {
                break;
            }
            sync_dir(ancestor)?;
            if self.root.starts_with(ancestor) {
                break;
            }
        }
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        // `name` is validated: relative, `/`-separated, no `.` or `..` segments.
        self.root.join(name)
    }

    /// Writes `bytes` to a fresh temporary file beside `dest`, fsynced; returns its path.
    fn write_temp(&self, dest: &Path, bytes: &[u8]) -> Result<PathBuf> {
        let dir = dest.parent().unwrap_or(&self.root);
        if !dir.is_dir() {
            self.create_dirs(dir)?;
        }
        let base = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".{base}.tmp-{}-{n}", std::process::id()));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            let mut slices = bytes.chunks(SYNC_SLICE).peekable();
            while let Some(slice) = slices.next() {
                file.write_all(slice)?;
                // The last slice is synced with the metadata below.
                if slices.peek().is_some() {
                    file.sync_data()?;
                }
            }
            file.sync_all()
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&temp);
            return Err(Error::io(temp.display(), e));
        }
        Ok(temp)
    }

    pub(super) fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let dest = self.path(name);
        let temp = self.write_temp(&dest, bytes)?;
        if let Err(e) = fs::rename(&temp, &dest) {
            let _ = fs::remove_file(&temp);
            return Err(Error::io(dest.display(), e));
        }
        sync_dir(dest.parent().unwrap_or(&self.root))
    }

    pub(super) fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let dest = self.path(name);
        let temp = self.write_temp(&dest, bytes)?;
        // A hard link fails when the name exists, so the complete, synced file appears under
        // its name at once or not at all.
        let linked = fs::hard_link(&temp, &dest);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => sync_dir(dest.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists {
                location: self.url(),
                file: name.to_owned(),
            }),
            Err(e) => Err(Error::io(dest.display(), e)),
        }
    }

    pub(super) fn get(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let path = self.path(name);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    location: self.url(),
                    file: name.to_owned(),
                });
            }
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        let mut bytes = Vec::new();
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path.display(), e))?;
        if bytes.len() as u64 > limit {
            return Err(Error::corrupt(
                self.url(),
                name,
                format!("longer than the expected {limit} bytes"),
            ));
        }
        Ok(bytes)
    }

    pub(super) fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path.display(), e)),
        }
    }

    pub(super) fn head(&self, name: &str) -> Result<Option<u64>> {
        let path = self.path(name);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path.display(), e)),
        }
    }

    pub(super) fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let start = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.path(prefix)
        };
        let mut stack = vec![(start, prefix.to_owned())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(Error::io(dir.display(), e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(dir.display(), e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if name.starts_with('.') {
                    continue; // temporary files, and nothing this crate writes
                }
                let rel_name = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let ty = entry.file_type().map_err(|e| Error::io(dir.display(), e))?;
                if ty.is_dir() {
                    stack.push((entry.path(), rel_name));
                } else if ty.is_file() {
                    out.push(rel_name);
                }
            }
        }
        Ok(out)
    }

    pub(super) fn list_children(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(self.root.display(), e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(self.root.display(), e))?;
            let is_dir = entry
                .file_type()
                .map_err(|e| Error::io(self.root.display(), e))?
                .is_dir();
            if let (true, Some(name)) = (is_dir, entry.file_name().to_str()) {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    }
}

/// Makes a directory's entries (a rename, a new link) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use latentdb_types::ErrorKind;

    #[test]
    fn put_get_list_and_create_once() {
        let dir = tempfile::tempdir().unwrap();
        let t = LocalTarget::new(dir.path().join("b"));
        assert!(t.list("").unwrap().is_empty());
        t.put("a/x", b"one").unwrap();
        t.put("a/x", b"two").unwrap();
        t.put("y", b"").unwrap();
        assert_eq!(t.get("a/x", 3).unwrap(), b"two");
        assert_eq!(t.get("a/x", 2).unwrap_err().kind(), ErrorKind::DataLoss);
        assert_eq!(t.head("a/x").unwrap(), Some(3));
        assert_eq!(t.head("a").unwrap(), None);
        assert_eq!(t.get("nope", 9).unwrap_err().kind(), ErrorKind::NotFound);
        t.put_if_absent("m", b"first").unwrap();
        let err = t.put_if_absent("m", b"second").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert_eq!(t.get("m", 100).unwrap(), b"first");
        let mut all = t.list("").unwrap();
        all.sort();
        assert_eq!(all, ["a/x", "m", "y"], "no temporary files left");
        assert_eq!(t.list("a").unwrap(), ["a/x"]);
        assert_eq!(t.list_children().unwrap(), ["a"]);
        t.delete("m").unwrap();
        t.delete("m").unwrap();
        assert_eq!(t.head("m").unwrap(), None);
    }
}
