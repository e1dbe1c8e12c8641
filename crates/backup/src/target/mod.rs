//! Where a backup lives: a local directory or an S3 prefix, behind one small synchronous API.

mod local;
mod s3;

use std::path::PathBuf;

pub use s3::S3Config;

use crate::error::{Error, Result};
use crate::name::validate_name;

/// A backup location: a local directory or a prefix in an S3-compatible bucket.
///
/// Paths given to its operations are file names relative to the location, checked with
/// [`crate::validate_name`]. Cloning is cheap (an S3 target shares its client and runtime).
#[derive(Clone, Debug)]
pub struct Target {
    inner: Inner,
}

#[derive(Clone, Debug)]
enum Inner {
    Local(local::LocalTarget),
    S3(s3::S3Target),
}

impl Target {
    /// Opens a location from a URL: `s3://bucket/prefix` (credentials, region and endpoint from
    /// the standard `AWS_*` environment variables: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
    /// `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`), `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint),
    /// `file:///abs/path`, or a plain local path. Nothing is created or contacted yet.
    pub fn open(url: &str) -> Result<Target> {
        if let Some(rest) = url.strip_prefix("s3://") {
            return Ok(Target {
                inner: Inner::S3(s3::S3Target::from_env(rest)?),
            });
        }
        if url.contains("://") && !url.starts_with("file://") {
            return Err(Error::InvalidArgument(format!(
                "unsupported backup target {:?}: use a local path, file:///path or s3://bucket/prefix",
                latentdb_types::truncate_echo(url, 80)
            )));
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() {
            return Err(Error::InvalidArgument("empty backup target path".into()));
        }
        Ok(Target::local(path))
    }

    /// A local directory (created when a backup is written to it).
    pub fn local(path: impl Into<PathBuf>) -> Target {
        Target {
            inner: Inner::Local(local::LocalTarget::new(path.into())),
        }
    }

    /// `s3://bucket/prefix` with an explicit configuration: nothing is read from the
    /// environment (see [`S3Config`]).
    pub fn s3_with(url: &str, config: S3Config) -> Result<Target> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            Error::InvalidArgument(format!(
                "not an s3:// URL: {:?}",
                latentdb_types::truncate_echo(url, 80)
            ))
        })?;
        Ok(Target {
            inner: Inner::S3(s3::S3Target::with_config(rest, config)?),
        })
    }

    /// The location as a URL-ish string: the local path, or `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        match &self.inner {
            Inner::Local(t) => t.url(),
            Inner::S3(t) => t.url(),
        }
    }

    /// The location `name` directly below this one (one path segment, checked like a file
    /// name's segment).
    pub fn child(&self, name: &str) -> Result<Target> {
        validate_name(name)?;
        if name.contains('/') {
            return Err(Error::InvalidArgument(format!(
                "a child location is one path segment, not {name:?}"
            )));
        }
        let inner = match &self.inner {
            Inner::Local(t) => Inner::Local(t.child(name)),
            Inner::S3(t) => Inner::S3(t.child(name)),
        };
        Ok(Target { inner })
    }

    /// Writes `path` whole, replacing any earlier version (atomically for the local target:
    /// a temporary file, fsync, rename, fsync of the directory).
    pub fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        validate_name(path)?;
        match &self.inner {
            Inner::Local(t) => t.put(path, bytes),
            Inner::S3(t) => t.put(path, bytes),
        }
    }

    /// Writes `path` whole only if it does not exist yet; [`Error::AlreadyExists`] otherwise
    /// (the local target links a synced temporary file to the name, which fails if the name
    /// exists; S3 uses a conditional put, `If-None-Match: *`).
    pub fn put_if_absent(&self, path: &str, bytes: &[u8]) -> Result<()> {
        validate_name(path)?;
        match &self.inner {
            Inner::Local(t) => t.put_if_absent(path, bytes),
            Inner::S3(t) => t.put_if_absent(path, bytes),
        }
    }

    /// Reads `path` whole; [`Error::NotFound`] if it does not exist. Reads at most `limit`
    /// bytes: a longer file is an error of kind `DataLoss`, so that a damaged size cannot make
    /// the reader allocate without bound.
    pub fn get(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        validate_name(path)?;
        match &self.inner {
            Inner::Local(t) => t.get(path, limit),
            Inner::S3(t) => t.get(path, limit),
        }
    }

    /// Removes `path`; a missing file is not an error.
    pub fn delete(&self, path: &str) -> Result<()> {
        validate_name(path)?;
        match &self.inner {
            Inner::Local(t) => t.delete(path),
            Inner::S3(t) => t.delete(path),
        }
    }

    /// The size of `path`, or `None` if it does not exist.
    pub fn head(&self, path: &str) -> Result<Option<u64>> {
        validate_name(path)?;
        match &self.inner {
            Inner::Local(t) => t.head(path),
            Inner::S3(t) => t.head(path),
        }
    }

    /// True when `path` exists.
    pub fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.head(path)?.is_some())
    }

    /// The files below the location whose names start with the directory `prefix` (empty for
    /// all), recursively, as names relative to the location, sorted. A missing location lists
    /// as empty.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>> {
        if !prefix.is_empty() {
            validate_name(prefix)?;
        }
        let mut names = match &self.inner {
            Inner::Local(t) => t.list(prefix)?,
            Inner::S3(t) => t.list(prefix)?,
        };
        names.sort();
        Ok(names)
    }

    /// The names of the locations directly below this one (directories, or S3 common
    /// prefixes) whose names are valid path segments, sorted.
    pub fn list_children(&self) -> Result<Vec<String>> {
        let mut names = match &self.inner {
            Inner::Local(t) => t.list_children()?,
            Inner::S3(t) => t.list_children()?,
        };
        names.retain(|n| validate_name(n).is_ok() && !n.contains('/'));
        names.sort();
        Ok(names)
    }

    /// Makes the location ready for writing (creates the local directory). A no-op on S3.
    pub(crate) fn prepare(&self) -> Result<()> {
        match &self.inner {
            Inner::Local(t) => t.prepare(),
            Inner::S3(_) => Ok(()),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latentdb_types::ErrorKind;

    #[test]
    fn urls_pick_the_target() {
        assert_eq!(Target::open("/tmp/b").unwrap().url(), "/tmp/b");
        assert_eq!(Target::open("file:///tmp/b").unwrap().url(), "/tmp/b");
        assert_eq!(Target::open("rel/dir").unwrap().url(), "rel/dir");
        let s3 = Target::s3_with("s3://bucket/a/b", S3Config::default()).unwrap();
        assert_eq!(s3.url(), "s3://bucket/a/b");
        assert_eq!(s3.child("c").unwrap().url(), "s3://bucket/a/b/c");
        let root = Target::s3_with("s3://bucket", S3Config::default()).unwrap();
        assert_eq!(root.url(), "s3://bucket");
        assert_eq!(root.child("x").unwrap().url(), "s3://bucket/x");
        for bad in [
            "",
            "http://x/y",
            "gs://b/p",
            "s3://",
            "s3:///p",
            "s3://b/a//c",
        ] {
            let err = Target::open(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}: {err}");
        }
        let local = Target::local("/tmp/b");
        assert!(local.child("a/b").is_err());
        assert!(local.child("..").is_err());
        assert_eq!(local.child("x").unwrap().url(), "/tmp/b/x");
    }
}
