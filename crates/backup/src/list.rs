//! Listing the backups under a root location.

use crate::error::{Error, Result};
use crate::name::MANIFEST_NAME;
use crate::reader::BackupReader;
use crate::target::Target;

/// One backup found by [`list`].
#[derive(Clone, Debug, PartialEq)]
pub struct BackupSummary {
    /// Its location's name below the root.
    pub name: String,
    /// Its location as a URL-ish string (pass it to [`Target::open`]).
    pub url: String,
    /// When it was committed, milliseconds since the Unix epoch (0 when `problem` is set).
    pub created_unix_ms: u64,
    /// The sum of its files' sizes (0 when `problem` is set).
    pub total_bytes: u64,
    /// How many logical files it holds (0 when `problem` is set).
    pub files: usize,
    /// The caller's `meta` (null when `problem` is set).
    pub meta: serde_json::Value,
    /// Set when a manifest is present but cannot be read: damaged, or of another format
    /// version. Such a backup cannot be restored.
    pub problem: Option<String>,
}

/// The backups directly below `root`: each child location holding a manifest, sorted by name.
/// Locations without a manifest (an upload killed midway, anything else) are left out; a
/// location whose manifest cannot be read is listed with [`BackupSummary::problem`] set. The
/// chunks are not checked: that is [`crate::verify`].
pub fn list(root: &Target) -> Result<Vec<BackupSummary>> {
    let mut out = Vec::new();
    for name in root.list_children()? {
        let target = root.child(&name)?;
        if !target.exists(MANIFEST_NAME)? {
            continue;
        }
        let mut summary = BackupSummary {
            name,
            url: target.url(),
            created_unix_ms: 0,
            total_bytes: 0,
            files: 0,
            meta: serde_json::Value::Null,
            problem: None,
        };
        match BackupReader::open(&target) {
            Ok(reader) => {
                let m = reader.manifest();
                summary.created_unix_ms = m.created_unix_ms;
                summary.total_bytes = m.total_bytes();
                summary.files = m.files.len();
                summary.meta = m.meta.clone();
            }
            Err(Error::NoBackup { .. }) => continue, // deleted meanwhile
            Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. })) => {
                summary.problem = Some(e.to_string());
            }
            Err(e) => return Err(e),
        }
        out.push(summary);
    }
    Ok(out)
}

/// [`list`] for a root given as a URL (see [`Target::open`]).
pub fn list_url(root: &str) -> Result<Vec<BackupSummary>> {
    list(&Target::open(root)?)
}
