//! The on-disk format of an index: a JSON manifest plus two checksummed little-endian files.
//!
//! ```text
//! DIR/manifest.json        format version, metric, dim, params, counts, storage seq, entry
//!                          point, and name + byte length + CRC-32 of each data file
//! DIR/vectors-GEN.bin      n * dim f32 (prepared vectors), little endian; in a quantized
//!                          dump (format version 2, the manifest's `quantizer` = [lo, hi]):
//!                          n * dim codes, one byte each, at most 127
//! DIR/graph-GEN.bin        "LDBGRAPH", version, n, m, m0, then ids [u32; n], levels [u8; n],
//!                          tombstone bitmap [u8; ceil(n/8)], layer-0 links [u32; n * (m0+1)],
//!                          then for each node with level L > 0: [u32; L * (m+1)]
//! ```
//!
//! A persist writes new-generation data files, each to a temporary name, fsynced and renamed;
//! then the manifest the same way (its rename is the commit point); then deletes older
//! generations. A crash at any point leaves either the old or the new dump complete.
//!
//! Loading reads the manifest, checks each file's length and CRC-32, then parses every field
//! and checks every structural invariant of the graph (see `parse.rs`) before building it: a
//! damaged dump, even one whose checksums match, is an [`Error::CorruptDump`], never a panic
//! and never an index whose searches could panic. The graph is restored as it was: no
//! rebuild.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::{Graph, MAX_POINTS};
use crate::index::Index;
use crate::index::MAX_DIMENSION;
use crate::params::IndexParams;
use crate::parse;
use latentdb_types::Metric;
use latentdb_types::dump::{self, FileRecord, HashingWriter, ReadError};

/// Version of the dump format of an index holding `f32` vectors; a dump with a version other
/// than this or [`QUANTIZED_FORMAT_VERSION`] is reported corrupt (rebuild).
pub const FORMAT_VERSION: u32 = 1;

/// Version of the dump format of a quantized index: the vectors file holds codes and the
/// manifest the calibrated range.
pub const QUANTIZED_FORMAT_VERSION: u32 = 2;
const MANIFEST: &str = "manifest.json";
pub(crate) const MAGIC: &[u8; 8] = b"LDBGRAPH";

#[derive(Debug, Serialize, Deserialize)]
struct FileEntry {
    name: String,
    bytes: u64,
    crc32: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EntryPoint {
    pub(crate) slot: u32,
    pub(crate) level: u8,
}

/// The manifest of a dump.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) format_version: u32,
    pub(crate) generation: u64,
    pub(crate) metric: Metric,
    pub(crate) dim: usize,
    pub(crate) params: IndexParams,
    pub(crate) points: usize,
    pub(crate) deleted: usize,
    pub(crate) seq: u64,
    pub(crate) entry: Option<EntryPoint>,
    /// The calibrated range `[lo, hi]` of a quantized dump (format version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) quantizer: Option<[f32; 2]>,
    vectors: FileEntry,
    graph: FileEntry,
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
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| corrupt(dir, format!("manifest does not parse: {e}")))
}

pub(crate) fn corrupt(dir: &Path, reason: impl Into<String>) -> Error {
    Error::CorruptDump {
        dir: dir.to_path_buf(),
        reason: reason.into(),
    }
}

impl Index {
    /// Writes the index to `dir` (created if missing), recording `seq`, the storage sequence
    /// number the index reflects. Inserts and rebuilds wait meanwhile; searches and deletes do
    /// not. A delete racing the persist may or may not be in the dump: replaying deletes after
    /// `seq` is idempotent.
    pub fn persist(&self, dir: &Path, seq: u64) -> Result<()> {
        let _w = self.writer_lock();
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let generation = match read_manifest(dir) {
            Ok(Some(m)) => m.generation + 1,
            _ => 1,
        };
        let graph = self.graph();
        let nodes = graph.nodes.read();
        let entry = *graph.entry.read();
        let n = nodes.len();
        let quantizer = nodes.quant.map(|q| {
            let (lo, hi) = q.range();
            [lo, hi]
        });
        let version = if quantizer.is_some() {
            QUANTIZED_FORMAT_VERSION
        } else {
            FORMAT_VERSION
        };
        let vectors = write_file(dir, &format!("vectors-{generation}.bin"), |w| {
            if quantizer.is_some() {
                w.write_all(&nodes.codes)?;
            }
            for x in &nodes.vectors {
                w.write_all(&x.to_le_bytes())?;
            }
            Ok(())
        })?;
        let mut deleted = 0usize;
        let graph_file = write_file(dir, &format!("graph-{generation}.bin"), |w| {
            w.write_all(MAGIC)?;
            for v in [version, n as u32, nodes.m as u32, nodes.m0 as u32] {
                w.write_all(&v.to_le_bytes())?;
            }
            for id in &nodes.ids {
                w.write_all(&id.to_le_bytes())?;
            }
            w.write_all(&nodes.levels)?;
            let mut bitmap = vec![0u8; n.div_ceil(8)];
            for (slot, d) in nodes.deleted.iter().enumerate() {
                if d.load(Relaxed) {
                    bitmap[slot / 8] |= 1 << (slot % 8);
                    deleted += 1;
                }
            }
            w.write_all(&bitmap)?;
            for a in &nodes.links0 {
                w.write_all(&a.load(Relaxed).to_le_bytes())?;
            }
            for up in &nodes.upper {
                for a in up.iter() {
                    w.write_all(&a.load(Relaxed).to_le_bytes())?;
                }
            }
            Ok(())
        })?;
        drop(nodes);
        let manifest = Manifest {
            format_version: version,
            generation,
            metric: self.metric(),
            dim: self.dim(),
            params: self.params(),
            points: n,
            deleted,
            seq,
            entry: entry.map(|e| EntryPoint {
                slot: e.slot,
                level: e.level,
            }),
            quantizer,
            vectors,
            graph: graph_file,
        };
        let keep = [manifest.vectors.name.clone(), manifest.graph.name.clone()];
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::io(dir.join(MANIFEST), std::io::Error::other(e)))?;
        write_file(dir, MANIFEST, |w| w.write_all(&json))?;
        // Best effort: makes the renames durable on Unix.
        let _ = dump::sync_dir(dir);
        // Drop older generations (best effort: leftovers are ignored by load).
        dump::remove_files_where(dir, |name| {
            let ours = (name.starts_with("vectors-") || name.starts_with("graph-"))
                && (name.ends_with(".bin") || name.ends_with(".tmp"));
            ours && !keep.iter().any(|k| k == name)
        });
        tracing::debug!(dir = %dir.display(), points = n, seq, "index persisted");
        Ok(())
    }

    /// Loads an index persisted with [`persist`](Index::persist), returning it with the storage
    /// sequence it reflects. `Ok(None)`: no dump in `dir`. [`Error::CorruptDump`]: the dump is
    /// damaged, of another format version, or inconsistent; [`Error::Io`]: it could not be read.
    /// On any error the caller rebuilds from storage. Nothing here panics or exits on bad files.
    pub fn load(dir: &Path) -> Result<Option<(Index, u64)>> {
        let Some(m) = read_manifest(dir)? else {
            return Ok(None);
        };
        let version_ok = match m.format_version {
            FORMAT_VERSION => m.quantizer.is_none(),
            QUANTIZED_FORMAT_VERSION => m.quantizer.is_some(),
            _ => false,
        };
        if !version_ok {
            return Err(corrupt(
                dir,
                format!(
                    "format version {} is not {FORMAT_VERSION} (f32 vectors) or \
                     {QUANTIZED_FORMAT_VERSION} (quantized, with a range), or does not match \
                     the manifest's quantizer",
                    m.format_version
                ),
            ));
        }
        m.params
            .validate()
            .map_err(|e| corrupt(dir, format!("manifest params: {e}")))?;
        if m.dim == 0 || m.dim > MAX_DIMENSION || m.points > MAX_POINTS || m.deleted > m.points {
            return Err(corrupt(
                dir,
                "manifest dimension, point or tombstone count out of range",
            ));
        }
        let vectors = read_checked(dir, &m.vectors)?;
        let graph = read_checked(dir, &m.graph)?;
        let loaded = parse::parse_dump(dir, &m, &graph, &vectors)?;
        drop((graph, vectors));
        let graph = Graph::from_parts(
            m.metric,
            m.dim,
            m.params,
            loaded.nodes,
            loaded.entry,
            loaded.deleted,
        );
        tracing::debug!(dir = %dir.display(), points = m.points, seq = m.seq, "index loaded");
        Ok(Some((Index::from_graph(graph), m.seq)))
    }
}

fn read_checked(dir: &Path, f: &FileEntry) -> Result<Vec<u8>> {
    let ok_name = !f.name.is_empty()
        && !f.name.contains(['/', '\\'])
        && f.name != ".."
        && (f.name.starts_with("vectors-") || f.name.starts_with("graph-"));
    if !ok_name {
        return Err(corrupt(
            dir,
            format!(
                "bad file name {} in manifest",
                crate::echo::bounded(&f.name)
            ),
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
