//! The S3 target: `object_store`'s Amazon S3 client driven by a private current-thread runtime.

use std::future::Future;
use std::sync::Arc;

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};

/// An explicit S3 configuration for [`crate::Target::s3_with`]. Nothing is read from the
/// environment on that path; `None` fields keep `object_store`'s defaults (region
/// `us-east-1`, the AWS endpoint, credentials from the instance metadata service).
#[derive(Clone, Debug, Default)]
pub struct S3Config {
    /// The endpoint URL of an S3-compatible service, e.g. `http://127.0.0.1:9000`; requests
    /// are then path-style (`endpoint/bucket/key`).
    pub endpoint: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// Permits a plain-HTTP endpoint (no TLS), e.g. a test server on loopback.
    pub allow_http: bool,
}

/// A bucket and a key prefix.
#[derive(Clone, Debug)]
pub(super) struct S3Target {
    shared: Arc<Shared>,
    bucket: String,
    /// The key prefix, without leading or trailing `/`; empty for the bucket's root.
    prefix: String,
}

#[derive(Debug)]
struct Shared {
    store: AmazonS3,
    runtime: tokio::runtime::Runtime,
}

/// `bucket/prefix` split and checked.
fn parse(rest: &str) -> Result<(String, String)> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "invalid S3 URL s3://{}: {why}",
            latentdb_types::truncate_echo(rest, 80)
        )))
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return bad("no bucket");
    }
    let prefix = prefix.trim_end_matches('/');
    let odd_segment = prefix
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if !prefix.is_empty() && (odd_segment || Path::parse(prefix).is_err()) {
        return bad("the prefix has an empty, '.' or '..' segment, or a control character");
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

impl S3Target {
    pub(super) fn from_env(rest: &str) -> Result<Self> {
        let (bucket, prefix) = parse(rest)?;
        Self::build(AmazonS3Builder::from_env(), bucket, prefix)
    }

    pub(super) fn with_config(rest: &str, config: S3Config) -> Result<Self> {
        let (bucket, prefix) = parse(rest)?;
        let mut builder = AmazonS3Builder::new().with_allow_http(config.allow_http);
        if let Some(endpoint) = config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = config.region {
            builder = builder.with_region(region);
        }
        if let Some(key) = config.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        Self::build(builder, bucket, prefix)
    }

    fn build(builder: AmazonS3Builder, bucket: String, prefix: String) -> Result<Self> {
        let store = builder
            .with_bucket_name(&bucket)
            .build()
            .map_err(|e| Error::InvalidArgument(format!("S3 configuration for {bucket}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime for the S3 target", e))?;
        Ok(S3Target {
            shared: Arc::new(Shared { store, runtime }),
            bucket,
            prefix,
        })
    }

    pub(super) fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    pub(super) fn child(&self, name: &str) -> Self {
        S3Target {
            shared: self.shared.clone(),
            bucket: self.bucket.clone(),
            prefix: self.key(name),
        }
    }

    /// The object key of `name` (validated) under the prefix.
    fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    fn path(&self, name: &str) -> Result<Path> {
        let key = self.key(name);
        Path::parse(&key)
            .map_err(|e| Error::InvalidArgument(format!("invalid object key {key:?}: {e}")))
    }

    /// Runs `future` to completion on the target's runtime. From inside another tokio runtime
    /// (where `block_on` would panic) it runs on a scoped helper thread instead.
    fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.shared.runtime.block_on(future);
        }
        std::thread::scope(|scope| {
            match scope.spawn(|| self.shared.runtime.block_on(future)).join() {
                Ok(output) => output,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    fn store_error(&self, name: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound {
                location: self.url(),
                file: name.to_owned(),
            },
            object_store::Error::AlreadyExists { .. } => Error::AlreadyExists {
                location: self.url(),
                file: name.to_owned(),
            },
            other => Error::Store {
                location: format!("s3://{}/{}", self.bucket, self.key(name)),
                source: Box::new(other),
            },
        }
    }

    pub(super) fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(name)?;
        let payload = PutPayload::from(bytes.to_vec());
        self.block_on(self.shared.store.put(&path, payload))
            .map(drop)
            .map_err(|e| self.store_error(name, e))
    }

    /// A conditional put (`If-None-Match: *`); the service refuses it when the key exists.
    pub(super) fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(name)?;
        let payload = PutPayload::from(bytes.to_vec());
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        self.block_on(self.shared.store.put_opts(&path, payload, options))
            .map(drop)
            .map_err(|e| self.store_error(name, e))
    }

    pub(super) fn get(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let path = self.path(name)?;
        let store = &self.shared.store;
        let fetched = self.block_on(async {
            let result = store.get(&path).await?;
            if result.meta.size > limit {
                return Ok(Err(result.meta.size));
            }
            result.bytes().await.map(Ok)
        });
        match fetched.map_err(|e| self.store_error(name, e))? {
            Ok(bytes) if bytes.len() as u64 <= limit => Ok(bytes.to_vec()),
            Ok(bytes) => Err(self.too_long(name, bytes.len() as u64, limit)),
            Err(size) => Err(self.too_long(name, size, limit)),
        }
    }

    fn too_long(&self, name: &str, size: u64, limit: u64) -> Error {
        Error::corrupt(
            self.url(),
            name,
            format!("{size} bytes, longer than the expected {limit}"),
        )
    }

    pub(super) fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match self.block_on(self.shared.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_error(name, e)),
        }
    }

    pub(super) fn head(&self, name: &str) -> Result<Option<u64>> {
        let path = self.path(name)?;
        match self.block_on(self.shared.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error(name, e)),
        }
    }

    /// The `object_store` path of a directory below the location ("" for the location).
    fn dir_path(&self, dir: &str) -> Result<Option<Path>> {
        let key = match (self.prefix.is_empty(), dir.is_empty()) {
            (true, true) => return Ok(None),
            (false, true) => self.prefix.clone(),
            _ => self.key(dir),
        };
        Path::parse(&key)
            .map(Some)
            .map_err(|e| Error::InvalidArgument(format!("invalid object key {key:?}: {e}")))
    }

    pub(super) fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let base_path = self.dir_path(prefix)?;
        let objects: Vec<_> = self
            .block_on(self.shared.store.list(base_path.as_ref()).try_collect())
            .map_err(|e| self.store_error(prefix, e))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        Ok(objects
            .into_iter()
            .filter_map(|o| o.location.as_ref().strip_prefix(&strip).map(str::to_owned))
            .collect())
    }

    pub(super) fn list_children(&self) -> Result<Vec<String>> {
        let base = self.dir_path("")?;
        let listed = self
            .block_on(self.shared.store.list_with_delimiter(base.as_ref()))
            .map_err(|e| self.store_error("", e))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        assert_eq!(parse("b").unwrap(), ("b".into(), "".into()));
        assert_eq!(parse("b/").unwrap(), ("b".into(), "".into()));
        assert_eq!(parse("b/x/y/").unwrap(), ("b".into(), "x/y".into()));
        assert!(parse("").is_err());
        assert!(parse("/x").is_err());
        assert!(parse("b/x/../y").is_err());
        assert!(parse("b//y").is_err());
    }
}
