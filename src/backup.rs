//! Online point-in-time backups: [`Backups::create`], [`verify`], [`restore`] and [`list`].
//!
//! A backup holds exactly the writes acknowledged at or before its capture point, for all
//! chosen collections at the same instant, and none after. The capture holds the writer locks
//! of the chosen collections together for as long as it takes to read their counters and
//! hard-link their index dumps (milliseconds); from then on writers go on, and the copy reads
//! a storage [`Snapshot`](latentdb_storage::Snapshot) that keeps the records removed after the
//! capture aside until it ends. The container (parts with CRCs, a manifest written last with a
//! create-only put, on a local path or S3) is [`latentdb_backup`]'s. The layout is in
//! `docs/FORMAT.md`, "Backups".

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use latentdb_backup::{BackupReader, BackupWriter, Target, WriterOptions};
use latentdb_storage::{CollectionConfig, ImportSpec, Storage, StorageOptions};
use serde::{Deserialize, Serialize};

use crate::{Database, Error, Result};

pub use latentdb_backup::{BackupSummary, VerifyReport};

/// The version of the `meta` this build writes into a backup manifest and reads back.
pub const BACKUP_META_VERSION: u32 = 1;

/// What to back up.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// The collections (all open ones when empty).
    pub collections: Vec<String>,
    /// The largest chunk file (default: the container's, 64 MiB).
    pub max_part_size: Option<u64>,
}

/// Progress of a running backup, reported after each collection's records and at the end.
#[derive(Debug, Clone, Serialize)]
pub struct BackupProgress {
    /// The collection being copied (empty once done).
    pub collection: String,
    /// Records copied so far, over all collections.
    pub records: u64,
    /// Records to copy, over all collections.
    pub total: u64,
    /// Bytes written so far.
    pub bytes: u64,
}

/// One collection of a backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionBackup {
    /// The collection's name.
    pub name: String,
    /// The captured sequence: the backup holds every change up to it and none after.
    pub seq: u64,
    /// The number of documents.
    pub count: u64,
    /// An order-independent digest of the records (see [`record_digest`]).
    pub digest: u64,
    /// Whether the index dump (graph and lexical) is included, with the change log from its
    /// sequence up to the captured one (a restore loads it and replays that log instead of
    /// building the indexes).
    pub index_included: bool,
}

/// The outcome of [`Backups::create`].
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// Where the backup is.
    pub target: String,
    /// The collections it holds.
    pub collections: Vec<CollectionBackup>,
    /// Bytes written (parts and manifest).
    pub bytes: u64,
    /// How long the capture held the writers of the chosen collections, in milliseconds (the
    /// longest a writer waits because of the backup).
    pub capture_ms: f64,
    /// The whole backup, in milliseconds.
    pub elapsed_ms: f64,
}

/// The outcome of [`restore`].
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The new database directory.
    pub data: PathBuf,
    /// The collections restored.
    pub collections: Vec<CollectionBackup>,
    /// The whole restore (records, index dumps, opening and indexing), in milliseconds.
    pub elapsed_ms: f64,
}

/// The `meta` of a backup manifest.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    latentdb_backup: u32,
    captured_unix_ms: u64,
    /// The source database directory (canonical): model paths under its `tune/` are rewritten
    /// to the restored directory's.
    #[serde(default)]
    source_dir: String,
    collections: Vec<MetaCollection>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MetaCollection {
    #[serde(flatten)]
    summary: CollectionBackup,
    next_point: u32,
    config: CollectionConfig,
    /// The part holding the records: frames of point (u32 BE), length (u32 BE), record.
    records: String,
    /// The index dump files (relative to the dump directory), stored as parts under `index/`.
    index_files: Vec<String>,
    /// The sequence the included dump reflects (at most `seq`).
    #[serde(default)]
    index_seq: u64,
    /// The change-log entries in `(index_seq, seq]` (a part of 13-byte frames: sequence u64 BE,
    /// then the change's 5-byte log value), replayed onto the dump at open.
    #[serde(default)]
    changes: Option<String>,
    /// The tuned model versions (`DIR/tune/<name>/`, relative to it), stored under `tune/`.
    #[serde(default)]
    tune_files: Vec<String>,
}

/// An order-independent digest of a collection's records: the wrapping sum over records of a
/// 64-bit mix of each encoded record's CRC-32 and length. Equal collections have equal digests.
pub fn record_digest(digest: u64, record: &[u8]) -> u64 {
    let x = (u64::from(crc32fast::hash(record)) | ((record.len() as u64) << 32))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    digest.wrapping_add(z ^ (z >> 31))
}

/// The backup service of a [`Database`].
#[derive(Debug)]
pub struct Backups<'a> {
    db: &'a Database,
}

impl<'a> Backups<'a> {
    /// The backup service of `db`.
    pub fn new(db: &'a Database) -> Self {
        Backups { db }
    }

    /// Backs up the collections of `options` to `target` (a local path, `file://…` or
    /// `s3://bucket/prefix`), which must not hold a backup already. `progress` is called as
    /// the copy goes on. Writers wait only for the capture.
    pub fn create(
        &self,
        target: &str,
        options: &BackupOptions,
        progress: &mut dyn FnMut(&BackupProgress),
    ) -> Result<BackupReport> {
        metrics::gauge!("latentdb_backups_running").increment(1.0);
        let out = self.create_inner(target, options, progress);
        metrics::gauge!("latentdb_backups_running").decrement(1.0);
        let result = if out.is_ok() { "ok" } else { "error" };
        metrics::counter!("latentdb_backups_completed_total", "result" => result).increment(1);
        out
    }

    fn create_inner(
        &self,
        target: &str,
        options: &BackupOptions,
        progress: &mut dyn FnMut(&BackupProgress),
    ) -> Result<BackupReport> {
        let started = Instant::now();
        let target = Target::open(target)?;
        let mut wopts = WriterOptions::default();
        if let Some(size) = options.max_part_size {
            wopts = wopts.with_max_part_size(size);
        }
        let mut writer = BackupWriter::create(&target, wopts)?;
        let staging = Staging::new(self.db.path())?;

        // The capture: every chosen collection's writer, in cid order, then the storage
        // snapshot (which takes the storage writer locks for a moment), then the dump links.
        let colls = self.db.runtimes(&options.collections)?;
        let names: Vec<String> = colls.iter().map(|c| c.name.clone()).collect();
        let guards: Vec<_> = colls.iter().map(|c| c.writer.lock()).collect();
        // From here until the guards go, writers of these collections wait for the capture.
        let capture = Instant::now();
        if let Some((c, _)) = colls.iter().zip(&guards).find(|(_, w)| w.dropped) {
            return Err(Error::collection_not_found(&c.name));
        }
        let snapshot = self.db.storage().snapshot(&names)?;
        let mut dumps = Vec::with_capacity(colls.len());
        for (i, (c, w)) in colls.iter().zip(&guards).enumerate() {
            let seq = snapshot.collections()[i].seq;
            dumps.push(c.link_dump(w, seq, &staging.dir.join(i.to_string())));
        }
        drop(guards);
        let capture_ms = capture.elapsed().as_secs_f64() * 1e3;

        let total: u64 = snapshot.collections().iter().map(|c| c.count).sum();
        let mut copied = 0u64;
        let mut metas = Vec::with_capacity(colls.len());
        for (i, sc) in snapshot.collections().iter().enumerate() {
            let part_name = format!("collections/{i}/records");
            let mut part = writer.part(&part_name)?;
            let mut digest = 0u64;
            let mut io_error = None;
            let n = snapshot.for_each_record(i, |point, bytes| {
                digest = record_digest(digest, bytes);
                let len = u32::try_from(bytes.len())
                    .map_err(|_| latentdb_storage::Error::Internal("record over 4 GiB".into()))?;
                let res = part
                    .write_all(&point.to_be_bytes())
                    .and_then(|()| part.write_all(&len.to_be_bytes()))
                    .and_then(|()| part.write_all(bytes));
                if let Err(e) = res {
                    io_error = Some(e);
                    return Err(latentdb_storage::Error::Internal(
                        "backup write failed".into(),
                    ));
                }
                Ok(())
            });
            if let Some(e) = io_error {
                return Err(latentdb_backup::Error::from_io(e, &part_name).into());
            }
            let n = n?;
            part.finish()?;
            if n != sc.count {
                return Err(Error::Internal(format!(
                    "collection {:?}: the snapshot holds {n} records, its count is {}",
                    sc.name, sc.count
                )));
            }
            copied += n;
            progress(&BackupProgress {
                collection: sc.name.clone(),
                records: copied,
                total,
                bytes: writer.bytes_written(),
            });
            let mut index_files = Vec::new();
            let mut index_seq = 0;
            let mut changes_part = None;
            // The dump is worth carrying only with the log that brings it to the capture.
            let log = match &dumps[i] {
                Some((dseq, _)) => snapshot.changes(i, *dseq)?,
                None => None,
            };
            if let (Some((dseq, files)), Some(log)) = (&dumps[i], log) {
                let name = format!("collections/{i}/changes");
                let mut part = writer.part(&name)?;
                for c in &log {
                    part.write_all(&c.seq().to_be_bytes())
                        .and_then(|()| part.write_all(&c.encode_value()))
                        .map_err(|e| latentdb_backup::Error::from_io(e, &name))?;
                }
                part.finish()?;
                changes_part = Some(name);
                index_seq = *dseq;
                for rel in files {
                    let src = staging.dir.join(i.to_string()).join(rel);
                    let mut f = std::fs::File::open(&src).map_err(|e| io_internal(&src, e))?;
                    let name = format!("collections/{i}/index/{rel}");
                    let mut part = writer.part(&name)?;
                    std::io::copy(&mut f, &mut part)
                        .map_err(|e| latentdb_backup::Error::from_io(e, &name))?;
                    part.finish()?;
                }
                index_files = files.clone();
            }
            let tune_dir = crate::tune::versions::collection_dir(self.db, &sc.name);
            let tune_files = list_files(&tune_dir)?;
            for rel in &tune_files {
                let src = tune_dir.join(rel);
                let mut f = std::fs::File::open(&src).map_err(|e| io_internal(&src, e))?;
                let name = format!("collections/{i}/tune/{rel}");
                let mut part = writer.part(&name)?;
                std::io::copy(&mut f, &mut part)
                    .map_err(|e| latentdb_backup::Error::from_io(e, &name))?;
                part.finish()?;
            }
            metas.push(MetaCollection {
                summary: CollectionBackup {
                    name: sc.name.clone(),
                    seq: sc.seq,
                    count: n,
                    digest,
                    index_included: changes_part.is_some(),
                },
                next_point: sc.next_point,
                config: sc.config.clone(),
                records: part_name,
                index_files,
                index_seq,
                changes: changes_part,
                tune_files,
            });
        }
        drop(snapshot);
        let meta = Meta {
            latentdb_backup: BACKUP_META_VERSION,
            captured_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            source_dir: std::fs::canonicalize(self.db.path())
                .unwrap_or_else(|_| self.db.path().to_path_buf())
                .to_string_lossy()
                .into_owned(),
            collections: metas,
        };
        let meta = serde_json::to_value(&meta)
            .map_err(|e| Error::Internal(format!("backup meta does not serialise: {e}")))?;
        let url = writer.target().url();
        let manifest = writer.finish(meta.clone())?;
        let collections = parse_meta(&meta)?
            .collections
            .into_iter()
            .map(|m| m.summary)
            .collect();
        progress(&BackupProgress {
            collection: String::new(),
            records: copied,
            total,
            bytes: manifest.total_bytes(),
        });
        Ok(BackupReport {
            target: url,
            collections,
            bytes: manifest.total_bytes(),
            capture_ms,
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// Checks every part of the backup at `target` (sizes and CRCs) without restoring it.
pub fn verify(target: &str) -> Result<VerifyReport> {
    let reader = BackupReader::open(&Target::open(target)?)?;
    parse_meta(reader.meta())?;
    Ok(reader.verify()?)
}

/// The collections of the backup at `target`, as captured.
pub fn collections(target: &str) -> Result<Vec<CollectionBackup>> {
    let reader = BackupReader::open(&Target::open(target)?)?;
    Ok(parse_meta(reader.meta())?
        .collections
        .into_iter()
        .map(|m| m.summary)
        .collect())
}

/// Calls `f` with every document of collection `name` in the backup at `target`, without
/// restoring it (to inspect or export a backup). Every chunk is checked against its CRC as it
/// is read; the record digest is checked at the end (an error then means `f` saw damaged
/// records).
pub fn read_collection(
    target: &str,
    name: &str,
    mut f: impl FnMut(latentdb_storage::Record),
) -> Result<CollectionBackup> {
    let reader = BackupReader::open(&Target::open(target)?)?;
    let meta = parse_meta(reader.meta())?;
    let m = meta
        .collections
        .into_iter()
        .find(|m| m.summary.name == name)
        .ok_or_else(|| Error::NotFound(format!("the backup holds no collection {name:?}")))?;
    let mut part = reader.read_part(&m.records)?;
    let mut digest = 0u64;
    let mut n = 0u64;
    while let Some((_, bytes)) = next_frame(&mut part, &m.records)? {
        digest = record_digest(digest, &bytes);
        f(latentdb_storage::record::decode_record(&bytes)?);
        n += 1;
    }
    if digest != m.summary.digest || n != m.summary.count {
        return Err(Error::Internal(format!(
            "backup of {name:?}: {n} records with digest {digest:016x}, its manifest says {} \
             with {:016x}",
            m.summary.count, m.summary.digest
        )));
    }
    Ok(m.summary)
}

/// The backups directly under `root` (a local directory or an S3 prefix); an upload that never
/// committed its manifest is not one.
pub fn list(root: &str) -> Result<Vec<BackupSummary>> {
    Ok(latentdb_backup::list_url(root)?)
}

/// Restores the backup at `target` into the new database directory `data`, which must not
/// exist or be empty. The backup is verified first (a damaged or incomplete one is refused
/// before anything is written); then the records, the index dumps that match, and the
/// database is opened once (indexes without a dump are built then) and closed. On failure
/// nothing is left in `data`.
pub fn restore(target: &str, data: &Path) -> Result<RestoreReport> {
    let started = Instant::now();
    let reader = BackupReader::open(&Target::open(target)?)?;
    let meta = parse_meta(reader.meta())?;
    if data.exists() {
        let mut entries = std::fs::read_dir(data).map_err(|e| io_internal(data, e))?;
        if entries.next().is_some() {
            return Err(Error::FailedPrecondition(format!(
                "restore refuses to write into {}: it is not empty",
                data.display()
            )));
        }
    }
    reader.verify()?;
    let created = !data.exists();
    let out = restore_into(&reader, &meta, data);
    if out.is_err() {
        if created {
            let _ = std::fs::remove_dir_all(data);
        } else if let Ok(entries) = std::fs::read_dir(data) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
    out?;
    Ok(RestoreReport {
        data: data.to_path_buf(),
        collections: meta.collections.into_iter().map(|m| m.summary).collect(),
        elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

fn restore_into(reader: &BackupReader, meta: &Meta, data: &Path) -> Result<()> {
    {
        let storage = Storage::open(data, StorageOptions::default())?;
        for m in &meta.collections {
            restore_collection(reader, &storage, m, data, &meta.source_dir)?;
        }
        storage.flush()?;
    }
    // Opening builds what no dump covers and checks what one does; closing persists.
    let db = Database::open(data)?;
    if let Some((name, why)) = db.quarantined().into_iter().next() {
        return Err(Error::Internal(format!(
            "restored collection {name:?} does not open: {why}"
        )));
    }
    for m in &meta.collections {
        let count = db.count(&m.summary.name)?;
        if count != m.summary.count {
            return Err(Error::Internal(format!(
                "restored collection {:?} holds {count} documents, the backup {}",
                m.summary.name, m.summary.count
            )));
        }
    }
    db.flush()?;
    Ok(())
}

fn restore_collection(
    reader: &BackupReader,
    storage: &Storage,
    m: &MetaCollection,
    data: &Path,
    source_dir: &str,
) -> Result<()> {
    let data_canonical = std::fs::canonicalize(data).map_err(|e| io_internal(data, e))?;
    let mut part = reader.read_part(&m.records)?;
    let mut digest = 0u64;
    let mut failure: Option<Error> = None;
    let records = std::iter::from_fn(|| match next_frame(&mut part, &m.records) {
        Ok(Some((point, bytes))) => {
            digest = record_digest(digest, &bytes);
            Some(Ok((point, bytes)))
        }
        Ok(None) => None,
        Err(e) => {
            failure = Some(e);
            Some(Err(latentdb_storage::Error::Corrupt(
                "backup records unreadable".into(),
            )))
        }
    });
    let mut config = m.config.clone();
    if !source_dir.is_empty() {
        let from = format!("{source_dir}/{}/", crate::tune::versions::TUNE_DIR);
        let to = format!(
            "{}/{}/",
            data_canonical.display(),
            crate::tune::versions::TUNE_DIR
        );
        rewrite_prefix(&mut config.spec.embedder, &from, &to);
    }
    let changes = match (&m.changes, m.summary.index_included) {
        (Some(name), true) => read_changes(reader, name)?,
        _ => Vec::new(),
    };
    let spec = ImportSpec {
        config,
        seq: m.summary.seq,
        next_point: m.next_point,
        count: m.summary.count,
        changes,
    };
    let imported = storage.import_collection(spec, records);
    if let Some(e) = failure {
        return Err(e);
    }
    imported?;
    if digest != m.summary.digest {
        return Err(Error::Internal(format!(
            "restored collection {:?}: record digest {digest:016x}, the backup's {:016x}",
            m.summary.name, m.summary.digest
        )));
    }
    let i = m.records.trim_end_matches("/records");
    let tune_dir = data
        .join(crate::tune::versions::TUNE_DIR)
        .join(&m.summary.name);
    for rel in &m.tune_files {
        copy_part_to(reader, &format!("{i}/tune/{rel}"), &tune_dir.join(rel))?;
    }
    if m.summary.index_included {
        let cid = storage.collection_config(&m.summary.name)?.cid;
        let dir = crate::collection::dump_dir(data, cid);
        for rel in &m.index_files {
            copy_part_to(reader, &format!("{i}/index/{rel}"), &dir.join(rel))?;
        }
    }
    Ok(())
}

/// Writes the part `name` of a backup to the file `dest` (parents created), fsynced.
fn copy_part_to(reader: &BackupReader, name: &str, dest: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_internal(parent, e))?;
    }
    let mut src = reader.read_part(name)?;
    let mut f = std::fs::File::create(dest).map_err(|e| io_internal(dest, e))?;
    std::io::copy(&mut src, &mut f).map_err(|e| latentdb_backup::Error::from_io(e, name))?;
    f.sync_all().map_err(|e| io_internal(dest, e))
}

/// Every file under `dir` (relative paths with `/`), skipping hidden and temporary entries
/// (names starting with `.`, such as a tuned version still being written, and names with
/// `.tmp`, the index dumps' files being written); empty when `dir` does not exist.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<String>> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // The rescoring file is a cache of what storage holds (see `RescoreFile`).
            if name.starts_with('.')
                || name.contains(".tmp")
                || name == crate::rescore_file::RESCORE_FILE
            {
                continue;
            }
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry.file_type()?.is_dir() {
                walk(&entry.path(), &rel, out)?;
            } else {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    if dir.is_dir() {
        walk(dir, "", &mut out).map_err(|e| io_internal(dir, e))?;
    }
    out.sort();
    Ok(out)
}

/// Replaces the prefix `from` by `to` in every string of `v` that starts with it.
fn rewrite_prefix(v: &mut serde_json::Value, from: &str, to: &str) {
    match v {
        serde_json::Value::String(s) => {
            if let Some(rest) = s.strip_prefix(from) {
                *s = format!("{to}{rest}");
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| rewrite_prefix(x, from, to)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| rewrite_prefix(x, from, to)),
        _ => {}
    }
}

/// The change-log entries of a backup's `changes` part.
fn read_changes(reader: &BackupReader, name: &str) -> Result<Vec<latentdb_storage::Change>> {
    let mut part = reader.read_part(name)?;
    let mut bytes = Vec::new();
    part.read_to_end(&mut bytes)
        .map_err(|e| latentdb_backup::Error::from_io(e, name))?;
    if bytes.len() % 13 != 0 {
        return Err(corrupt_part(name, "is not a whole number of changes"));
    }
    bytes
        .chunks_exact(13)
        .map(|c| {
            let (seq, value) = c.split_at(8);
            let seq = u64::from_be_bytes(seq.try_into().unwrap_or_default());
            Ok(latentdb_storage::Change::decode(seq, value)?)
        })
        .collect()
}

/// The next record frame of a records part, `None` at its end.
fn next_frame(part: &mut impl Read, name: &str) -> Result<Option<(u32, Vec<u8>)>> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        let n = part
            .read(&mut head[got..])
            .map_err(|e| latentdb_backup::Error::from_io(e, name))?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(corrupt_part(name, "ends inside a record header"));
        }
        got += n;
    }
    let point = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if len > 1 << 30 {
        return Err(corrupt_part(name, "a record longer than 1 GiB"));
    }
    // Grown as bytes arrive: a damaged length never allocates more than what is there.
    let mut bytes = Vec::with_capacity(len.min(1 << 20));
    part.take(len as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| latentdb_backup::Error::from_io(e, name))?;
    if bytes.len() != len {
        return Err(corrupt_part(name, "ends inside a record"));
    }
    Ok(Some((point, bytes)))
}

fn corrupt_part(name: &str, why: &str) -> Error {
    Error::Internal(format!("backup part {name:?} {why}"))
}

fn parse_meta(meta: &serde_json::Value) -> Result<Meta> {
    let m: Meta = serde_json::from_value(meta.clone())
        .map_err(|e| Error::FailedPrecondition(format!("not a latentdb backup (its meta: {e})")))?;
    if m.latentdb_backup != BACKUP_META_VERSION {
        return Err(Error::FailedPrecondition(format!(
            "backup meta version {} (this build reads {BACKUP_META_VERSION})",
            m.latentdb_backup
        )));
    }
    Ok(m)
}

fn io_internal(path: &Path, e: std::io::Error) -> Error {
    Error::Internal(format!("{}: {e}", path.display()))
}

/// A directory inside the database for the hard links of a backup's index dumps, removed
/// when the backup ends.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn new(db: &Path) -> Result<Staging> {
        let dir = db.join(format!("backup-staging-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).map_err(|e| io_internal(&dir, e))?;
        Ok(Staging { dir })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_ignores_order_and_sees_every_byte() {
        let recs: [&[u8]; 3] = [b"alpha", b"beta", b"gamma"];
        let fwd = recs.iter().fold(0, |d, r| record_digest(d, r));
        let rev = recs.iter().rev().fold(0, |d, r| record_digest(d, r));
        assert_eq!(fwd, rev);
        let changed = [&b"alpha"[..], b"betb", b"gamma"]
            .iter()
            .fold(0, |d, r| record_digest(d, r));
        assert_ne!(fwd, changed);
        assert_ne!(
            record_digest(0, b"x"),
            record_digest(record_digest(0, b"x"), b"x")
        );
    }

    #[test]
    fn frames_round_trip_and_truncation_is_an_error() {
        let mut buf = Vec::new();
        for (p, r) in [(3u32, &b"abc"[..]), (9, b"")] {
            buf.extend_from_slice(&p.to_be_bytes());
            buf.extend_from_slice(&(r.len() as u32).to_be_bytes());
            buf.extend_from_slice(r);
        }
        let mut rd = &buf[..];
        assert_eq!(
            next_frame(&mut rd, "x").unwrap(),
            Some((3, b"abc".to_vec()))
        );
        assert_eq!(next_frame(&mut rd, "x").unwrap(), Some((9, Vec::new())));
        assert_eq!(next_frame(&mut rd, "x").unwrap(), None);
        for cut in 1..buf.len() - 8 {
            let mut rd = &buf[..cut];
            let all: Result<Vec<_>> =
                std::iter::from_fn(|| next_frame(&mut rd, "x").transpose()).collect();
            assert!(all.is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn model_paths_under_the_old_tune_dir_are_rewritten() {
        let mut v = serde_json::json!({
            "path": "/old/db/tune/c/v2",
            "nested": ["/old/db/tune/c/v1/head.json", "/models/minilm"],
            "n": 3
        });
        rewrite_prefix(&mut v, "/old/db/tune/", "/new/tune/");
        assert_eq!(v["path"], "/new/tune/c/v2");
        assert_eq!(v["nested"][0], "/new/tune/c/v1/head.json");
        assert_eq!(v["nested"][1], "/models/minilm");
    }

    proptest::proptest! {
        #[test]
        fn frames_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut rd = &bytes[..];
            for _ in 0..64 {
                match next_frame(&mut rd, "x") {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
