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
//! One exception keeps a bulk load's dumps from rewriting every vector each time: while the
//! index keeps the graph and the representation of its last dump in the same directory, the
//! vectors file of that dump holds a prefix of the vectors now, so the persist appends the new
//! ones to it in place (fsynced before the manifest is written) and the new manifest names the
//! same file with its new length and CRC-32 (see [`DumpedVectors`]). The old manifest still
//! describes the file's first bytes, so a crash before the new manifest's rename leaves the old
//! dump complete; a vectors file is therefore read up to the length its manifest records, and
//! bytes past it are ignored (the next append drops them). A file with another hard link (a
//! backup in progress) is never appended to: it is written anew under the new generation.
//!
//! Loading reads the manifest, checks each file's length and CRC-32, then parses every field
//! and checks every structural invariant of the graph (see `parse.rs`) before building it: a
//! damaged dump, even one whose checksums match, is an [`Error::CorruptDump`], never a panic
//! and never an index whose searches could panic. The graph is restored as it was: no
//! rebuild.

use std::fs::{self, File};
use std::io::Read;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The vectors file of the dump an [`Index`] last wrote or was loaded from. The vectors of a
/// graph's slots never change and new slots are appended, so while the index keeps the same
/// graph (no [`Index::rebuild`]) and the same representation (no calibration to codes since),
/// that file holds a prefix of the vectors now: the next persist into the same directory
/// appends the rest to it in place ([`dump::append_file`]) instead of rewriting every vector.
/// A bulk load's dumps then cost the new vectors and the graph, not every vector each time.
#[derive(Debug)]
pub(crate) struct DumpedVectors {
    dir: PathBuf,
    graph: Weak<Graph>,
    quantized: bool,
    file: FileEntry,
}

impl DumpedVectors {
    /// The file to extend, with what it holds, when `dir`'s dump still names this file and
    /// `graph` (the graph being persisted, quantized or not) still holds its content as a
    /// prefix of its `bytes` bytes of vectors (or codes); `None` when the file must be written
    /// anew. A file someone else links (a backup being taken) is never changed in place.
    fn extendable(
        &self,
        dir: &Path,
        on_disk: Option<&Manifest>,
        graph: &Arc<Graph>,
        quantized: bool,
        bytes: u64,
    ) -> Option<(&str, FileRecord)> {
        let same = self.dir == dir
            && std::ptr::eq(self.graph.as_ptr(), Arc::as_ptr(graph))
            && self.quantized == quantized
            && self.file.bytes <= bytes
            && on_disk.is_some_and(|m| m.vectors == self.file)
            && dump::is_sole_link(&dir.join(&self.file.name));
        let kept = FileRecord {
            bytes: self.file.bytes,
            crc32: self.file.crc32,
        };
        same.then_some((self.file.name.as_str(), kept))
    }
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

/// Bytes gathered by [`write_words`] per write.
const WRITE_CHUNK: usize = 64 * 1024;

/// Writes 4-byte values gathered into chunks: one write (and one checksum update, on the
/// fast path) per [`WRITE_CHUNK`] bytes instead of one per value.
fn write_words(w: &mut impl Write, words: impl Iterator<Item = [u8; 4]>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(WRITE_CHUNK);
    for word in words {
        buf.extend_from_slice(&word);
        if buf.len() >= WRITE_CHUNK {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    w.write_all(&buf)
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
        // Taken: a persist that fails part way writes the next one's vectors anew.
        let dumped = self.dumped().take();
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let on_disk = read_manifest(dir).ok().flatten();
        let generation = on_disk.as_ref().map_or(1, |m| m.generation + 1);
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
        // The file's content: the codes of a quantized index, the f32 vectors of another (the
        // other is empty).
        let content_bytes = (nodes.codes.len() + nodes.vectors.len() * 4) as u64;
        let extend = dumped.as_ref().and_then(|d| {
            d.extendable(
                dir,
                on_disk.as_ref(),
                &graph,
                quantizer.is_some(),
                content_bytes,
            )
        });
        // From byte `from` of the content on (a multiple of 4 when it is f32 vectors: it ends
        // a dump of whole vectors).
        let write_from = |w: &mut HashingWriter<BufWriter<File>>, from: u64| {
            let from = from as usize;
            w.write_all(nodes.codes.get(from..).unwrap_or_default())?;
            let floats = from.saturating_sub(nodes.codes.len()) / 4;
            let rest = nodes.vectors.get(floats..).unwrap_or_default();
            write_words(w, rest.iter().map(|x| x.to_le_bytes()))
        };
        let vectors = match extend {
            Some((name, from)) => {
                let rec = dump::append_file(dir, name, from, |w| write_from(w, from.bytes))
                    .map_err(|e| Error::io(e.path, e.source))?;
                FileEntry {
                    name: name.to_string(),
                    bytes: rec.bytes,
                    crc32: rec.crc32,
                }
            }
            None => write_file(dir, &format!("vectors-{generation}.bin"), |w| {
                write_from(w, 0)
            })?,
        };
        let mut deleted = 0usize;
        let graph_file = write_file(dir, &format!("graph-{generation}.bin"), |w| {
            w.write_all(MAGIC)?;
            for v in [version, n as u32, nodes.m as u32, nodes.m0 as u32] {
                w.write_all(&v.to_le_bytes())?;
            }
            write_words(w, nodes.ids.iter().map(|id| id.to_le_bytes()))?;
            w.write_all(&nodes.levels)?;
            let mut bitmap = vec![0u8; n.div_ceil(8)];
            for (slot, d) in nodes.deleted.iter().enumerate() {
                if d.load(Relaxed) {
                    bitmap[slot / 8] |= 1 << (slot % 8);
                    deleted += 1;
                }
            }
            w.write_all(&bitmap)?;
            let upper = nodes.upper.iter();
            write_words(
                w,
                nodes
                    .links0
                    .iter()
                    .chain(upper)
                    .map(|a| a.load(Relaxed).to_le_bytes()),
            )
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
        *self.dumped() = Some(DumpedVectors {
            dir: dir.to_path_buf(),
            graph: Arc::downgrade(&graph),
            quantized: manifest.quantizer.is_some(),
            file: manifest.vectors,
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
        let vectors = if m.quantizer.is_some() {
            parse::Vectors::Codes(read_vectors_prefix(dir, &m.vectors)?)
        } else {
            read_floats(dir, &m.vectors)?
        };
        let graph = read_checked(dir, &m.graph)?;
        let loaded = parse::parse_dump(dir, &m, &graph, vectors)?;
        drop(graph);
        let graph = Graph::from_parts(
            m.metric,
            m.dim,
            m.params,
            loaded.nodes,
            loaded.entry,
            loaded.deleted,
        );
        let index = Index::from_graph(graph);
        *index.dumped() = Some(DumpedVectors {
            dir: dir.to_path_buf(),
            graph: Arc::downgrade(&index.graph()),
            quantized: m.quantizer.is_some(),
            file: m.vectors,
        });
        tracing::debug!(dir = %dir.display(), points = m.points, seq = m.seq, "index loaded");
        Ok(Some((index, m.seq)))
    }
}

/// The path of a data file the manifest names, refusing a name that is not one of ours.
fn data_path(dir: &Path, f: &FileEntry) -> Result<PathBuf> {
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
    Ok(dir.join(&f.name))
}

fn read_checked(dir: &Path, f: &FileEntry) -> Result<Vec<u8>> {
    read_with(dir, f, dump::read_checked)
}

/// [`read_checked`] for a vectors file, which may be longer than recorded: an append of a
/// persist that failed before its manifest was committed ([`DumpedVectors`]) leaves bytes past
/// the recorded length, which are not part of the dump.
fn read_vectors_prefix(dir: &Path, f: &FileEntry) -> Result<Vec<u8>> {
    read_with(dir, f, dump::read_prefix_checked)
}

fn read_with(
    dir: &Path,
    f: &FileEntry,
    read: impl FnOnce(&Path, &str, FileRecord) -> Result<Vec<u8>, ReadError>,
) -> Result<Vec<u8>> {
    let path = data_path(dir, f)?;
    let expected = FileRecord {
        bytes: f.bytes,
        crc32: f.crc32,
    };
    read(&path, &f.name, expected).map_err(|e| match e {
        ReadError::Corrupt(reason) => corrupt(dir, reason),
        ReadError::Exhausted(message) => Error::ResourceExhausted(message),
        ReadError::Io(e) => Error::io(&path, e),
    })
}

/// Bytes read per system call by [`read_floats`] (a multiple of 4: floats never straddle two
/// reads); small enough to stay in the CPU's cache between the read and the conversion.
const FLOAT_CHUNK: usize = 256 * 1024;

/// Reads the vectors file of an `f32` dump straight into the floats it holds, with the checks
/// and errors of [`read_vectors_prefix`] (a missing file, one shorter than the manifest says or
/// a checksum mismatch is corrupt; bytes past the manifest's length are not read; memory is reserved fallibly, after the length matched), but
/// without holding the file's bytes in memory: each chunk is checksummed and converted as it
/// is read. A length that is not a multiple of 4 leaves its last bytes out of the floats (they
/// count in the checksum); the parser then reports the length.
fn read_floats(dir: &Path, f: &FileEntry) -> Result<parse::Vectors> {
    let path = data_path(dir, f)?;
    let name = &f.name;
    let meta = fs::metadata(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => corrupt(dir, format!("{name} is missing")),
        _ => Error::io(&path, e),
    })?;
    // Longer is fine: see `read_vectors_prefix`.
    if meta.len() < f.bytes {
        return Err(corrupt(
            dir,
            format!("{name} has {} bytes, manifest says {}", meta.len(), f.bytes),
        ));
    }
    let exhausted = || {
        Error::ResourceExhausted(format!(
            "cannot reserve {} bytes to read {}",
            f.bytes,
            path.display()
        ))
    };
    let bytes = usize::try_from(f.bytes).map_err(|_| exhausted())?;
    let mut floats: Vec<f32> = Vec::new();
    floats
        .try_reserve_exact(bytes / 4)
        .map_err(|_| exhausted())?;
    let mut file = File::open(&path).map_err(|e| Error::io(&path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; FLOAT_CHUNK.min(bytes)];
    let mut left = bytes;
    while left > 0 {
        let chunk = &mut buf[..FLOAT_CHUNK.min(left)];
        match file.read_exact(chunk) {
            Ok(()) => {}
            // Shorter than its metadata said a moment ago: as `read_checked` reports it.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(corrupt(dir, format!("{name} fails its checksum")));
            }
            Err(e) => return Err(Error::io(&path, e)),
        }
        hasher.update(chunk);
        floats.extend(
            chunk
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        left -= chunk.len();
    }
    if hasher.finalize() != f.crc32 {
        return Err(corrupt(dir, format!("{name} fails its checksum")));
    }
    Ok(parse::Vectors::Floats { floats, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIM: usize = 24;

    /// An index of `n` points, persisted to a new directory (its vectors file is
    /// `n * DIM * 4` bytes: over [`FLOAT_CHUNK`] for `n` of 3,000, so it is read in chunks).
    fn persisted(n: usize) -> (tempfile::TempDir, Index) {
        let idx = Index::new(Metric::L2, DIM, IndexParams::default()).unwrap();
        let data = crate::synth::embedding_like(n, DIM, 5);
        let points: Vec<(u32, &[f32])> = data
            .chunks_exact(DIM)
            .enumerate()
            .map(|(i, v)| (i as u32 * 2, v))
            .collect();
        idx.insert_batch(&points).unwrap();
        let dir = tempfile::tempdir().unwrap();
        idx.persist(dir.path(), 3).unwrap();
        (dir, idx)
    }

    fn manifest(dir: &Path) -> Manifest {
        read_manifest(dir).unwrap().unwrap()
    }

    /// Rewrites the vectors file with `bytes`, the manifest recording `len` and `crc32`.
    fn replace_vectors(dir: &Path, bytes: &[u8], len: u64, crc32: u32) {
        let mut m = manifest(dir);
        fs::write(dir.join(&m.vectors.name), bytes).unwrap();
        m.vectors.bytes = len;
        m.vectors.crc32 = crc32;
        fs::write(dir.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
    }

    fn load_error(dir: &Path) -> String {
        match Index::load(dir) {
            Err(e @ Error::CorruptDump { .. }) => e.to_string(),
            Err(e) => panic!("unexpected error {e}"),
            Ok(loaded) => panic!("loaded: {}", loaded.is_some()),
        }
    }

    #[test]
    fn floats_read_in_chunks_are_the_vectors_written() {
        let (dir, idx) = persisted(3_000);
        let m = manifest(dir.path());
        assert!(m.vectors.bytes as usize > FLOAT_CHUNK);
        let parse::Vectors::Floats { floats, bytes } = read_floats(dir.path(), &m.vectors).unwrap()
        else {
            panic!("not floats");
        };
        assert_eq!(bytes as u64, m.vectors.bytes);
        let written = idx.graph().nodes.read().vectors.clone();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&floats), bits(&written));
        assert_eq!(floats.capacity(), floats.len());
        let (loaded, seq) = Index::load(dir.path()).unwrap().unwrap();
        assert_eq!(
            (seq, loaded.len(), loaded.vector_bytes()),
            (3, 3_000, idx.vector_bytes())
        );
    }

    /// The float reader reports a file as `read_checked` reports it, word for word.
    #[test]
    fn float_reader_errors_are_read_checkeds() {
        let (dir, _) = persisted(3_000);
        let dir = dir.path();
        let m = manifest(dir);
        let path = dir.join(&m.vectors.name);
        let good = fs::read(&path).unwrap();
        let both = |dir: &Path| {
            let m = manifest(dir);
            let floats = read_floats(dir, &m.vectors)
                .map(|_| ())
                .map_err(|e| e.to_string());
            let bytes = read_checked(dir, &m.vectors)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(floats, bytes);
            floats
        };
        assert_eq!(both(dir), Ok(()));
        // A flipped bit in the second chunk.
        let mut bad = good.clone();
        bad[FLOAT_CHUNK + 7] ^= 1;
        fs::write(&path, &bad).unwrap();
        assert!(both(dir).unwrap_err().contains("fails its checksum"));
        // Shorter than the manifest says.
        fs::write(&path, &good[..good.len() - 4]).unwrap();
        assert!(both(dir).unwrap_err().contains("manifest says"));
        fs::remove_file(&path).unwrap();
        assert!(both(dir).unwrap_err().contains("is missing"));
        // A name that is not one of ours.
        let mut m = manifest(dir);
        m.vectors.name = "../x".into();
        fs::write(dir.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        assert!(both(dir).unwrap_err().contains("bad file name"));
    }

    /// Bytes past the last whole float, with a matching length and checksum: the parser's
    /// length check reports them.
    #[test]
    fn a_vectors_file_of_a_length_not_a_multiple_of_4_is_corrupt() {
        for extra in [1usize, 2, 3, 5] {
            let (dir, _) = persisted(40);
            let path = dir.path().join(manifest(dir.path()).vectors.name);
            let mut bytes = fs::read(&path).unwrap();
            bytes.extend(std::iter::repeat_n(0u8, extra));
            replace_vectors(
                dir.path(),
                &bytes,
                bytes.len() as u64,
                crc32fast::hash(&bytes),
            );
            let err = load_error(dir.path());
            assert!(err.contains("length does not match"), "{extra}: {err}");
        }
        // One float short, consistently recorded.
        let (dir, _) = persisted(40);
        let path = dir.path().join(manifest(dir.path()).vectors.name);
        let bytes = fs::read(&path).unwrap();
        let bytes = &bytes[..bytes.len() - 4];
        replace_vectors(
            dir.path(),
            bytes,
            bytes.len() as u64,
            crc32fast::hash(bytes),
        );
        let err = load_error(dir.path());
        assert!(err.contains("length does not match"), "{err}");
    }

    #[test]
    fn an_empty_index_loads() {
        let (dir, _) = persisted(0);
        let (loaded, seq) = Index::load(dir.path()).unwrap().unwrap();
        assert_eq!((seq, loaded.len()), (3, 0));
    }

    /// Inserts `n` more points (ids after `from`) of `dim`-d embedding-like vectors.
    fn grow(idx: &Index, from: u32, n: usize, seed: u64) {
        let data = crate::synth::embedding_like(n, idx.dim(), seed);
        let points: Vec<(u32, &[f32])> = data
            .chunks_exact(idx.dim())
            .enumerate()
            .map(|(i, v)| (from + i as u32, v))
            .collect();
        idx.insert_batch(&points).unwrap();
    }

    /// The file's bytes as the loaded index's vectors (or codes) say they are.
    fn content(idx: &Index) -> Vec<u8> {
        let graph = idx.graph();
        let nodes = graph.nodes.read();
        let mut bytes = nodes.codes.clone();
        bytes.extend(nodes.vectors.iter().flat_map(|x| x.to_le_bytes()));
        bytes
    }

    fn same_answers(a: &Index, b: &Index) {
        let queries = crate::synth::embedding_like(20, a.dim(), 99);
        for q in queries.chunks_exact(a.dim()) {
            let ids = |i: &Index| -> Vec<u32> {
                i.search(q, 10, Some(64))
                    .unwrap()
                    .iter()
                    .map(|h| h.id)
                    .collect()
            };
            assert_eq!(ids(a), ids(b));
        }
    }

    #[test]
    fn a_persist_appends_the_new_vectors_to_the_dumped_file() {
        let (dir, idx) = persisted(300);
        let first = manifest(dir.path());
        grow(&idx, 10_000, 200, 6);
        idx.persist(dir.path(), 5).unwrap();
        let second = manifest(dir.path());
        // The same file, longer; its checksum covers all of it; a new graph file.
        assert_eq!(second.vectors.name, first.vectors.name);
        assert_eq!(second.vectors.bytes, (500 * DIM * 4) as u64);
        let on_disk = fs::read(dir.path().join(&second.vectors.name)).unwrap();
        assert_eq!(on_disk, content(&idx));
        assert_eq!(crc32fast::hash(&on_disk), second.vectors.crc32);
        assert_ne!(second.graph.name, first.graph.name);
        assert!(!dir.path().join(&first.graph.name).exists());
        let (loaded, seq) = Index::load(dir.path()).unwrap().unwrap();
        assert_eq!((seq, loaded.len()), (5, 500));
        same_answers(&idx, &loaded);
        // A loaded index appends to the file it was loaded from, too.
        grow(&loaded, 20_000, 100, 7);
        loaded.persist(dir.path(), 6).unwrap();
        let third = manifest(dir.path());
        assert_eq!(third.vectors.name, first.vectors.name);
        assert_eq!(third.vectors.bytes, (600 * DIM * 4) as u64);
        let (again, _) = Index::load(dir.path()).unwrap().unwrap();
        assert_eq!(content(&again), content(&loaded));
        same_answers(&loaded, &again);
    }

    #[test]
    fn an_append_whose_manifest_was_not_committed_leaves_the_old_dump_whole() {
        let (dir, idx) = persisted(300);
        let old_manifest = fs::read(dir.path().join(MANIFEST)).unwrap();
        let old_graph = manifest(dir.path()).graph.name;
        let graph_bytes = fs::read(dir.path().join(&old_graph)).unwrap();
        grow(&idx, 10_000, 200, 6);
        idx.persist(dir.path(), 5).unwrap();
        // A crash after the append, before the new manifest's rename: the old manifest and its
        // graph file, with the longer vectors file.
        fs::write(dir.path().join(MANIFEST), &old_manifest).unwrap();
        fs::write(dir.path().join(&old_graph), &graph_bytes).unwrap();
        let m = manifest(dir.path());
        let len = fs::metadata(dir.path().join(&m.vectors.name))
            .unwrap()
            .len();
        assert!(len > m.vectors.bytes, "{len} <= {}", m.vectors.bytes);
        let (loaded, seq) = Index::load(dir.path()).unwrap().unwrap();
        assert_eq!((seq, loaded.len()), (3, 300));
        // The next append drops the uncommitted tail first.
        grow(&loaded, 20_000, 50, 8);
        loaded.persist(dir.path(), 7).unwrap();
        let m = manifest(dir.path());
        let on_disk = fs::read(dir.path().join(&m.vectors.name)).unwrap();
        assert_eq!(on_disk.len() as u64, m.vectors.bytes);
        assert_eq!(on_disk, content(&loaded));
        let (again, seq) = Index::load(dir.path()).unwrap().unwrap();
        assert_eq!((seq, again.len()), (7, 350));
        same_answers(&loaded, &again);
    }

    #[test]
    fn the_vectors_are_written_anew_when_the_file_cannot_be_extended() {
        // A rebuild replaces the graph: its slots (and so the file's order) are new.
        let (dir, idx) = persisted(300);
        let first = manifest(dir.path()).vectors;
        assert!(idx.delete(0));
        idx.rebuild();
        idx.persist(dir.path(), 4).unwrap();
        let rebuilt = manifest(dir.path()).vectors;
        assert_ne!(rebuilt.name, first.name);
        assert!(!dir.path().join(&first.name).exists());
        assert_eq!(rebuilt.bytes, (299 * DIM * 4) as u64);
        // A file another link shares (a backup taking it) is never changed in place.
        let backup = tempfile::tempdir().unwrap();
        let linked = backup.path().join(&rebuilt.name);
        fs::hard_link(dir.path().join(&rebuilt.name), &linked).unwrap();
        grow(&idx, 10_000, 10, 6);
        idx.persist(dir.path(), 5).unwrap();
        let after = manifest(dir.path()).vectors;
        #[cfg(unix)]
        assert_ne!(after.name, rebuilt.name);
        assert_eq!(fs::metadata(&linked).unwrap().len(), rebuilt.bytes);
        assert_eq!(crc32fast::hash(&fs::read(&linked).unwrap()), rebuilt.crc32);
        // A dump into another directory, or a directory whose dump another index wrote.
        let other = tempfile::tempdir().unwrap();
        idx.persist(other.path(), 5).unwrap();
        let (_, stranger) = persisted(50);
        stranger.persist(dir.path(), 9).unwrap();
        grow(&idx, 20_000, 10, 7);
        idx.persist(dir.path(), 10).unwrap();
        assert_eq!(manifest(dir.path()).vectors.bytes, (319 * DIM * 4) as u64);
        let (loaded, seq) = Index::load(dir.path()).unwrap().unwrap();
        assert_eq!((seq, loaded.len()), (10, 319));
        same_answers(&idx, &loaded);
    }

    #[test]
    fn a_quantized_index_appends_codes_once_calibrated() {
        let params = IndexParams {
            quantization: crate::params::Quantization::Int8,
            ..IndexParams::default()
        };
        let idx = Index::new(Metric::Cosine, DIM, params).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Below the calibration size the file holds f32 vectors; calibrating switches to codes
        // (a new file); from then on codes are appended.
        grow(&idx, 0, 500, 1);
        idx.persist(dir.path(), 1).unwrap();
        let floats = manifest(dir.path());
        assert!(floats.quantizer.is_none());
        grow(&idx, 1_000, 1_000, 2);
        idx.persist(dir.path(), 2).unwrap();
        let codes = manifest(dir.path());
        assert!(codes.quantizer.is_some());
        assert_ne!(codes.vectors.name, floats.vectors.name);
        assert_eq!(codes.vectors.bytes, (1_500 * DIM) as u64);
        grow(&idx, 5_000, 300, 3);
        idx.persist(dir.path(), 3).unwrap();
        let more = manifest(dir.path());
        assert_eq!(more.vectors.name, codes.vectors.name);
        assert_eq!(more.vectors.bytes, (1_800 * DIM) as u64);
        let (loaded, seq) = Index::load(dir.path()).unwrap().unwrap();
        assert_eq!((seq, loaded.len()), (3, 1_800));
        assert_eq!(content(&loaded), content(&idx));
        same_answers(&idx, &loaded);
    }
}
