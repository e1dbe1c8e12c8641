//! The on-disk format of a lexical index: a JSON manifest plus two checksummed little-endian
//! files, in a directory of its own.
//!
//! ```text
//! DIR/manifest.json     {"format_version": 1, "kind": "lexical", "generation": G, "seq": S,
//!                        "analyzer": {"stopwords": .., "stemmer": .., "lowercase": ..},
//!                        "docs": D, "terms": T, "tokens": N,
//!                        "terms_file": {"name", "bytes", "crc32"},
//!                        "docs_file":  {"name", "bytes", "crc32"}}
//! DIR/terms-G.bin       "LDBTERMS", version u32, T u32, then T times: byte length u8
//!                       (1..=64), UTF-8 bytes. A term's id is its position; terms are
//!                       sorted and unique.
//! DIR/docs-G.bin        "LDBLXDOC", version u32, D u32, then per document, points
//!                       ascending: point u32, length in tokens u32, term count u32, then
//!                       that many (term id u32, tf u32), term ids ascending.
//! ```
//!
//! All integers are little-endian. `seq` is the storage sequence number the dump reflects;
//! `analyzer` is [`AnalyzerConfig::to_json`]. `crc32` is the CRC-32 (IEEE) of the whole file.
//! Only live documents and the terms they use are written, so the dump holds no deleted
//! document and the statistics it implies (document count, lengths, document frequencies)
//! are exact.
//!
//! A persist writes new-generation data files, each to a temporary name, fsynced and renamed;
//! then the manifest the same way (its rename is the commit point); then deletes older
//! generations. A crash at any point leaves either the old or the new dump complete.
//!
//! Loading reads the manifest, checks its format version, kind and analyzer, each file's
//! length and CRC-32, then parses every field and checks every invariant (see `parse.rs`)
//! before building the index: a damaged dump, even one whose checksums match, is an
//! [`Error::CorruptDump`], never a panic, and no allocation is sized by an unchecked length.
//! A loaded index scores exactly as the one persisted.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use latentdb_types::dump::{self, FileRecord, HashingWriter, ReadError};
use latentdb_types::truncate_echo;
use serde::{Deserialize, Serialize};

use crate::analyzer::{Analyzer, AnalyzerConfig};
use crate::error::{Error, Result};
use crate::index::LexicalIndex;
use crate::parse;

/// Version of the dump format; a dump with another version is reported corrupt (rebuild).
pub const FORMAT_VERSION: u32 = 1;
pub(crate) const MANIFEST: &str = "manifest.json";
pub(crate) const KIND: &str = "lexical";
pub(crate) const TERMS_MAGIC: &[u8; 8] = b"LDBTERMS";
pub(crate) const DOCS_MAGIC: &[u8; 8] = b"LDBLXDOC";
const TERMS_PREFIX: &str = "terms-";
const DOCS_PREFIX: &str = "docs-";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileEntry {
    pub(crate) name: String,
    pub(crate) bytes: u64,
    pub(crate) crc32: u32,
}

/// The manifest of a dump.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    pub(crate) format_version: u32,
    pub(crate) kind: String,
    pub(crate) generation: u64,
    pub(crate) seq: u64,
    pub(crate) analyzer: serde_json::Value,
    pub(crate) docs: u64,
    pub(crate) terms: u64,
    pub(crate) tokens: u64,
    pub(crate) terms_file: FileEntry,
    pub(crate) docs_file: FileEntry,
}

/// Writes `name` in `dir` through a temporary file, fsynced and renamed into place.
fn write_file(
    dir: &Path,
    name: &str,
    body: impl FnOnce(&mut HashingWriter<BufWriter<File>>) -> std::io::Result<()>,
) -> Result<FileEntry> {
    let rec = dump::write_file(dir, name, body).map_err(|e| Error::io(e.path, e.source))?;
    Ok(FileEntry {
        name: name.to_string(),
        bytes: rec.bytes,
        crc32: rec.crc32,
    })
}

fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST);
    let Some(bytes) = dump::read_if_exists(&path).map_err(|e| Error::io(&path, e))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        corrupt(
            dir,
            format!(
                "manifest does not parse: {}",
                truncate_echo(&e.to_string(), 200)
            ),
        )
    })
}

pub(crate) fn corrupt(dir: &Path, reason: impl Into<String>) -> Error {
    Error::CorruptDump {
        dir: dir.to_path_buf(),
        reason: reason.into(),
    }
}

/// True for the names of our data files (and their temporaries).
fn is_data_file(name: &str) -> bool {
    (name.starts_with(TERMS_PREFIX) || name.starts_with(DOCS_PREFIX))
        && (name.ends_with(".bin") || name.ends_with(".tmp"))
}

impl LexicalIndex {
    /// Writes the index to `dir` (created if missing, and used for this dump alone: the
    /// vector index's dump, which also has a `manifest.json`, needs a directory of its own),
    /// recording `seq`, the storage sequence number the index reflects.
    pub fn persist(&self, dir: &Path, seq: u64) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let generation = match read_manifest(dir) {
            Ok(Some(m)) => m.generation.saturating_add(1),
            _ => 1,
        };
        // Live terms, sorted, renumbered densely.
        let mut live: Vec<(&str, u32)> = self
            .dict
            .iter()
            .filter(|&(_, &id)| self.terms[id as usize].df > 0)
            .map(|(t, &id)| (t.as_str(), id))
            .collect();
        live.sort_unstable();
        let mut new_id = vec![u32::MAX; self.terms.len()];
        for (i, &(_, old)) in live.iter().enumerate() {
            new_id[old as usize] = i as u32;
        }
        let terms_file = write_file(dir, &format!("{TERMS_PREFIX}{generation}.bin"), |w| {
            w.write_all(TERMS_MAGIC)?;
            w.write_all(&FORMAT_VERSION.to_le_bytes())?;
            w.write_all(&(live.len() as u32).to_le_bytes())?;
            for &(text, _) in &live {
                w.write_all(&[text.len() as u8])?;
                w.write_all(text.as_bytes())?;
            }
            Ok(())
        })?;
        let points = self.points();
        let mut list: Vec<(u32, u32)> = Vec::new();
        let docs_file = write_file(dir, &format!("{DOCS_PREFIX}{generation}.bin"), |w| {
            w.write_all(DOCS_MAGIC)?;
            w.write_all(&FORMAT_VERSION.to_le_bytes())?;
            w.write_all(&(points.len() as u32).to_le_bytes())?;
            for &point in &points {
                let slot = self.slot_of[&point] as usize;
                list.clear();
                if let Some(terms) = &self.doc_terms[slot] {
                    list.extend(terms.iter().map(|&(t, tf)| (new_id[t as usize], tf)));
                }
                list.sort_unstable();
                for v in [point, self.lens[slot], list.len() as u32] {
                    w.write_all(&v.to_le_bytes())?;
                }
                for &(t, tf) in &list {
                    w.write_all(&t.to_le_bytes())?;
                    w.write_all(&tf.to_le_bytes())?;
                }
            }
            Ok(())
        })?;
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            kind: KIND.to_string(),
            generation,
            seq,
            analyzer: self.config().to_json(),
            docs: points.len() as u64,
            terms: live.len() as u64,
            tokens: self.tokens,
            terms_file,
            docs_file,
        };
        let keep = [
            manifest.terms_file.name.clone(),
            manifest.docs_file.name.clone(),
        ];
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::io(dir.join(MANIFEST), std::io::Error::other(e)))?;
        write_file(dir, MANIFEST, |w| w.write_all(&json))?;
        // Best effort: makes the renames durable on Unix.
        let _ = dump::sync_dir(dir);
        // Drop older generations (best effort: leftovers are ignored by load).
        dump::remove_files_where(dir, |name| {
            is_data_file(name) && !keep.iter().any(|k| k == name)
        });
        tracing::debug!(dir = %dir.display(), docs = points.len(), seq, "lexical index persisted");
        Ok(())
    }

    /// Loads an index persisted with [`persist`](LexicalIndex::persist), returning it with the
    /// storage sequence it reflects. `Ok(None)`: no dump in `dir`. [`Error::CorruptDump`]: the
    /// dump is damaged, of another format version, or inconsistent; [`Error::Io`]: it could
    /// not be read. On any error the caller rebuilds from the stored texts. The caller should
    /// also rebuild when the loaded [`config`](LexicalIndex::config) is not the one it wants.
    pub fn load(dir: &Path) -> Result<Option<(LexicalIndex, u64)>> {
        let Some(m) = read_manifest(dir)? else {
            return Ok(None);
        };
        if m.format_version != FORMAT_VERSION {
            return Err(corrupt(
                dir,
                format!(
                    "format version {} is not {FORMAT_VERSION}",
                    m.format_version
                ),
            ));
        }
        if m.kind != KIND {
            return Err(corrupt(
                dir,
                format!(
                    "manifest kind {:?} is not {KIND:?}",
                    truncate_echo(&m.kind, 64)
                ),
            ));
        }
        let analyzer = AnalyzerConfig::from_json(&m.analyzer)
            .and_then(|c| Analyzer::new(&c))
            .map_err(|e| corrupt(dir, format!("manifest analyzer: {e}")))?;
        let terms = read_checked(dir, &m.terms_file, TERMS_PREFIX)?;
        let docs = read_checked(dir, &m.docs_file, DOCS_PREFIX)?;
        let index = parse::parse_dump(dir, &m, analyzer, &terms, &docs)?;
        tracing::debug!(dir = %dir.display(), docs = m.docs, seq = m.seq, "lexical index loaded");
        Ok(Some((index, m.seq)))
    }

    /// Removes the dump in `dir`, if any (best effort): the manifest first, so that a partial
    /// removal leaves no dump, then the data files, then `dir` itself if it is left empty.
    pub fn remove_dump(dir: &Path) {
        let _ = fs::remove_file(dir.join(MANIFEST));
        let _ = fs::remove_file(dir.join(format!("{MANIFEST}.tmp")));
        dump::remove_files_where(dir, is_data_file);
        let _ = dump::sync_dir(dir);
        let _ = fs::remove_dir(dir);
    }
}

fn read_checked(dir: &Path, f: &FileEntry, prefix: &str) -> Result<Vec<u8>> {
    let ok_name = f.name.starts_with(prefix)
        && f.name.ends_with(".bin")
        && !f.name.contains(['/', '\\'])
        && !f.name.contains("..");
    if !ok_name {
        return Err(corrupt(
            dir,
            format!("bad file name {:?} in manifest", truncate_echo(&f.name, 64)),
        ));
    }
    let path = dir.join(&f.name);
    let expected = FileRecord {
        bytes: f.bytes,
        crc32: f.crc32,
    };
    dump::read_checked(&path, &f.name, expected).map_err(|e| match e {
        ReadError::Corrupt(reason) => corrupt(dir, reason),
        ReadError::Exhausted(message) => Error::ResourceExhausted(message),
        ReadError::Io(e) => Error::io(&path, e),
    })
}
