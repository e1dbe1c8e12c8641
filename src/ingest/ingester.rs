//! [`Ingester`]: files and directories into a collection with an embedder, as token-bounded
//! chunks.
//!
//! Three stages run at once, joined by bounded channels (so memory stays bounded however
//! large the corpus): a reader walks the sources, reads each document, decides whether its
//! stored copy is current and chunks it with the model's tokenizer; the calling thread embeds
//! the chunks in batches; a writer upserts them. A document `D` becomes chunks `D#0`, `D#1`,
//! ... (deterministic ids, so an interrupted ingest resumes without duplicates) whose metadata
//! records `parent` (`D`), `source` (the file), `chunk_index`, `chunk_count`, `char_start`,
//! `char_end` (character offsets into the document's text), `content_sha256` and `chunking`.
//! A document whose chunks are all stored with the same content hash and chunking is skipped;
//! a changed one has its old chunks deleted and is chunked again.
//!
//! [`IngestStats`] reports how long each stage worked (`read_s`, `embed_s`, `write_s`: busy
//! time, not time blocked on a channel), which says where an ingest's time goes: the stage
//! whose busy time is close to the wall time (`seconds`) is the one that bounds the rate.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use latentdb_embed::tokenize::TextTokenizer;
use latentdb_embed::{EmbedOptions, Embedder, ModelIdentity};
use latentdb_storage::{Document, Durability, MAX_ID_BYTES};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::chunk::{ChunkOptions, chunk_text};
use super::glob::Glob;
use super::source::{DEFAULT_MAX_FILE_BYTES, SourceDoc, read_documents, walk};
use crate::database::Database;
use crate::embedding::EMBED_BATCH;
use crate::error::{Error, Result, bounded};

/// Options of [`Ingester::run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestOptions {
    /// Chunk size and overlap in tokens (the size is capped at the model's token limit).
    pub chunk: ChunkOptions,
    /// Only files matching this pattern, under directories (see [`Glob`]).
    pub glob: Option<String>,
    /// Chunks per embedding and write batch.
    pub batch_size: usize,
    /// The largest text, Markdown or HTML file read.
    pub max_file_bytes: u64,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            chunk: ChunkOptions::default(),
            glob: None,
            batch_size: 64,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// Counters of an ingest, reported as it goes and at the end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestStats {
    /// Files read to the end.
    pub files: u64,
    /// Documents chunked and written.
    pub documents: u64,
    /// Chunks written.
    pub chunks: u64,
    /// Documents skipped because their stored chunks are current.
    pub skipped: u64,
    /// Files, lines or documents that could not be ingested (each reported as a problem).
    pub errors: u64,
    /// Bytes of text of the documents written.
    pub bytes: u64,
    /// Bytes of the files read to the end (for progress against [`IngestEvent::Started`]).
    pub file_bytes: u64,
    /// Seconds since the start.
    pub seconds: f64,
    /// Seconds the reading stage worked (listing the sources, reading and parsing files,
    /// checking what is stored, chunking with the tokenizer), not counting time it waited
    /// for the embedding stage to take its output. The stages run at once, so the three
    /// stage times may add up to more than `seconds`.
    #[serde(default)]
    pub read_s: f64,
    /// Seconds the embedding stage (the calling thread) spent embedding, not waiting for
    /// chunks or for the writer.
    #[serde(default)]
    pub embed_s: f64,
    /// Seconds the writing stage spent upserting (and the final flush), not waiting for
    /// embedded batches.
    #[serde(default)]
    pub write_s: f64,
}

/// What [`Ingester::run_with`] reports while it runs.
#[derive(Debug, Clone, Copy)]
pub enum IngestEvent<'a> {
    /// The sources were listed: this many files of this many bytes.
    Started {
        /// Files to read.
        files: u64,
        /// Their total size.
        bytes: u64,
    },
    /// A batch was written (or documents skipped); the counters so far.
    Progress(&'a IngestStats),
    /// A file, line or document could not be ingested; the ingest goes on.
    Problem(&'a str),
}

/// Reader -> embedder messages, in source order.
enum Item {
    /// A document's chunks to embed and write.
    Chunks(Vec<Document>, u64),
    /// Something to count once what came before is written.
    Mark(Mark),
}

enum Mark {
    FileDone(u64),
    Skipped,
    Problem(String),
}

/// Embedder -> writer messages.
struct Batch {
    docs: Vec<Document>,
    documents: u64,
    bytes: u64,
    marks: Vec<Mark>,
}

/// The ingestion service of a [`Database`]:
///
/// ```no_run
/// # fn main() -> latentdb::Result<()> {
/// use latentdb::Database;
/// use latentdb::ingest::{Ingester, IngestOptions};
/// let db = Database::open("data")?;
/// let stats = Ingester::new(&db).run("docs", &["notes/".into()], &IngestOptions::default())?;
/// println!("{} chunks", stats.chunks);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Ingester<'a> {
    db: &'a Database,
}

impl<'a> Ingester<'a> {
    /// The ingestion service of `db`.
    pub fn new(db: &'a Database) -> Ingester<'a> {
        Ingester { db }
    }

    /// Ingests files and directories into `collection` (which needs an embedder); see the
    /// module documentation. Problems with single files or lines are counted and skipped.
    ///
    /// Fails with [`Error::FailedPrecondition`] (what was written stays, and a rerun skips it)
    /// if the collection switches to another model meanwhile (a tuning run or a rollback).
    pub fn run(
        &self,
        collection: &str,
        paths: &[PathBuf],
        opts: &IngestOptions,
    ) -> Result<IngestStats> {
        self.run_with(collection, paths, opts, &|_| {})
    }

    /// [`Ingester::run`], reporting progress and problems to `on_event` (called from a worker
    /// thread).
    pub fn run_with(
        &self,
        collection: &str,
        paths: &[PathBuf],
        opts: &IngestOptions,
        on_event: &(dyn Fn(IngestEvent<'_>) + Sync),
    ) -> Result<IngestStats> {
        let start = Instant::now();
        let db = self.db;
        let embedder = db.embedder(collection)?.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "collection {:?} has no model; create it with a model to ingest text",
                bounded(collection)
            ))
        })?;
        if opts.batch_size == 0 {
            return Err(Error::InvalidArgument(
                "batch size must be at least 1".into(),
            ));
        }
        if opts.chunk.max_tokens == 0 {
            return Err(Error::InvalidArgument(
                "chunk size must be at least 1 token".into(),
            ));
        }
        if opts.chunk.overlap >= opts.chunk.max_tokens {
            return Err(Error::InvalidArgument(format!(
                "the overlap ({}) must be less than the chunk size ({})",
                opts.chunk.overlap, opts.chunk.max_tokens
            )));
        }
        let glob = opts
            .glob
            .as_deref()
            .map(Glob::new)
            .transpose()
            .map_err(|e| Error::Source(e.into()))?;
        let tokenizer = TextTokenizer::from_dir(&embedder.identity().path)?;
        // Special tokens (BERT's [CLS]/[SEP], Mistral's <s>/</s>) count against the limit.
        let chunk = ChunkOptions {
            max_tokens: opts
                .chunk
                .max_tokens
                .min(embedder.identity().max_length.saturating_sub(2).max(1)),
            overlap: opts.chunk.overlap,
        };
        let chunking = format!("{}/{}", chunk.max_tokens, chunk.overlap);

        // List first (paths and sizes only) for progress totals.
        let listing = Instant::now();
        let (mut files, mut bytes) = (0u64, 0u64);
        for f in walk(paths, glob.as_ref()).flatten() {
            files += 1;
            bytes += f.len;
        }
        let listed = listing.elapsed();
        on_event(IngestEvent::Started { files, bytes });

        let (item_tx, item_rx) = sync_channel::<Item>(64);
        let (batch_tx, batch_rx) = sync_channel::<Batch>(2);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let ctx = ReadCtx {
                    db,
                    collection,
                    tokenizer: &tokenizer,
                    chunk,
                    chunking: &chunking,
                };
                ctx.read_all(paths, glob.as_ref(), opts.max_file_bytes, item_tx)
            });
            let model = embedder.identity();
            let writer = s.spawn(|| write_all(db, collection, model, batch_rx, start, on_event));
            let embedded = embed_all(&embedder, opts.batch_size, item_rx, batch_tx);
            let read = reader
                .join()
                .unwrap_or_else(|_| Err(Error::panicked("reading the sources")));
            let written = writer
                .join()
                .unwrap_or_else(|_| Err(Error::panicked("writing the chunks")));
            // The first failure in pipeline order explains the others (closed channels).
            let mut stats = written?;
            let embed_busy = embedded?;
            let read_busy = read?;
            let flushing = Instant::now();
            db.flush()?;
            stats.write_s += flushing.elapsed().as_secs_f64();
            stats.read_s = (listed + read_busy).as_secs_f64();
            stats.embed_s = embed_busy.as_secs_f64();
            stats.seconds = start.elapsed().as_secs_f64();
            Ok(stats)
        })
    }
}

struct ReadCtx<'a> {
    db: &'a Database,
    collection: &'a str,
    tokenizer: &'a TextTokenizer,
    chunk: ChunkOptions,
    chunking: &'a str,
}

/// The stored state of a document's chunks.
enum Stored {
    /// Nothing stored.
    Absent,
    /// All chunks stored with this content and chunking.
    Current,
    /// Something stored but stale or incomplete: delete before writing.
    Stale,
}

impl ReadCtx<'_> {
    /// Reads, chunks and sends everything; the time it worked (not blocked sending).
    fn read_all(
        &self,
        paths: &[PathBuf],
        glob: Option<&Glob>,
        max_file_bytes: u64,
        tx: SyncSender<Item>,
    ) -> Result<Duration> {
        let start = Instant::now();
        let mut waited = Duration::ZERO;
        self.read_into(paths, glob, max_file_bytes, &mut |item| {
            let t = Instant::now();
            let sent = tx.send(item).is_ok();
            waited += t.elapsed();
            sent
        })?;
        Ok(start.elapsed().saturating_sub(waited))
    }

    /// [`ReadCtx::read_all`] through `send`, which says whether the receiver is still there.
    fn read_into(
        &self,
        paths: &[PathBuf],
        glob: Option<&Glob>,
        max_file_bytes: u64,
        send: &mut dyn FnMut(Item) -> bool,
    ) -> Result<()> {
        for file in walk(paths, glob) {
            let file = match file {
                Ok(f) => f,
                Err(e) => {
                    if !send(Item::Mark(Mark::Problem(e.to_string()))) {
                        return Ok(());
                    }
                    continue;
                }
            };
            let docs = match read_documents(&file, max_file_bytes) {
                Ok(d) => d,
                Err(e) => {
                    if !send(Item::Mark(Mark::Problem(e.to_string()))) {
                        return Ok(());
                    }
                    continue;
                }
            };
            for doc in docs {
                let item = match doc {
                    Err(e) => Item::Mark(Mark::Problem(e.to_string())),
                    Ok(doc) => match self.prepare(doc)? {
                        Ok(item) => item,
                        Err(problem) => Item::Mark(Mark::Problem(problem)),
                    },
                };
                if !send(item) {
                    return Ok(());
                }
            }
            if !send(Item::Mark(Mark::FileDone(file.len))) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The chunks of a document to write, or a skip mark; `Err` inside for a problem with
    /// this document only.
    fn prepare(&self, doc: SourceDoc) -> Result<std::result::Result<Item, String>> {
        let longest = format!("{}#{}", doc.id, doc.text.len());
        if longest.len() > MAX_ID_BYTES {
            return Ok(Err(format!(
                "{}: the document id is too long for chunk ids ({} bytes; at most {} with the \
                 `#n` suffix)",
                doc.source,
                doc.id.len(),
                MAX_ID_BYTES
            )));
        }
        match self.stored(&doc)? {
            Stored::Current => return Ok(Ok(Item::Mark(Mark::Skipped))),
            Stored::Stale => {
                self.db.delete(self.collection, &[doc.id.as_str()])?;
            }
            Stored::Absent => {}
        }
        let chunks = match chunk_text(&doc.text, &self.chunk, |s| self.tokenizer.count(s)) {
            Ok(c) => c,
            Err(e) => return Ok(Err(format!("{}: {e}", doc.source))),
        };
        let count = chunks.len();
        let docs = chunks
            .into_iter()
            .map(|c| {
                let mut meta: Map<String, Value> = doc.metadata.clone();
                meta.insert("parent".into(), Value::from(doc.id.as_str()));
                meta.insert("source".into(), Value::from(doc.source.as_str()));
                meta.insert("chunk_index".into(), Value::from(c.index));
                meta.insert("chunk_count".into(), Value::from(count));
                meta.insert("char_start".into(), Value::from(c.char_start));
                meta.insert("char_end".into(), Value::from(c.char_end));
                meta.insert("content_sha256".into(), Value::from(doc.sha256.as_str()));
                meta.insert("chunking".into(), Value::from(self.chunking));
                Document {
                    id: Some(format!("{}#{}", doc.id, c.index)),
                    text: Some(c.text),
                    metadata: Value::Object(meta),
                    vector: None,
                }
            })
            .collect();
        Ok(Ok(Item::Chunks(docs, doc.text.len() as u64)))
    }

    fn stored(&self, doc: &SourceDoc) -> Result<Stored> {
        let first = self.db.get(self.collection, &[format!("{}#0", doc.id)])?;
        let Some(Some(first)) = first.into_iter().next() else {
            // Chunks can remain without `#0` only from an interrupted delete; look.
            return Ok(
                if self
                    .db
                    .chunk_ids_of(self.collection, &[doc.id.as_str()])?
                    .is_empty()
                {
                    Stored::Absent
                } else {
                    Stored::Stale
                },
            );
        };
        let m = &first.metadata;
        let current = m.get("content_sha256").and_then(Value::as_str) == Some(doc.sha256.as_str())
            && m.get("chunking").and_then(Value::as_str) == Some(self.chunking);
        let Some(count) = m.get("chunk_count").and_then(Value::as_u64) else {
            return Ok(Stored::Stale);
        };
        if !current {
            return Ok(Stored::Stale);
        }
        let ids: Vec<String> = (0..count).map(|i| format!("{}#{i}", doc.id)).collect();
        let all = self.db.get(self.collection, &ids)?;
        let complete = all.iter().all(|r| {
            r.as_ref().is_some_and(|r| {
                r.metadata.get("content_sha256").and_then(Value::as_str)
                    == Some(doc.sha256.as_str())
            })
        });
        // A longer stale tail (`#count` and on) is possible only after an interrupted
        // replacement; the chunk scan settles it.
        let tail = self
            .db
            .get(self.collection, &[format!("{}#{count}", doc.id)])?;
        let tail_free = matches!(tail.first(), Some(None));
        Ok(if complete && tail_free {
            Stored::Current
        } else {
            Stored::Stale
        })
    }
}

/// Embeds chunks in batches of `batch_size` and passes them on with the marks that followed;
/// the time it worked (not waiting for chunks or for the writer).
fn embed_all(
    embedder: &Embedder,
    batch_size: usize,
    rx: Receiver<Item>,
    tx: SyncSender<Batch>,
) -> Result<Duration> {
    let start = Instant::now();
    let waited = Cell::new(Duration::ZERO);
    let busy = || start.elapsed().saturating_sub(waited.get());
    let opts = EmbedOptions {
        batch_size: EMBED_BATCH,
        ..EmbedOptions::default()
    };
    let mut pending = Batch {
        docs: Vec::new(),
        documents: 0,
        bytes: 0,
        marks: Vec::new(),
    };
    let flush = |pending: &mut Batch| -> Result<bool> {
        let texts: Vec<&str> = pending
            .docs
            .iter()
            .map(|d| d.text.as_deref().unwrap_or(""))
            .collect();
        let vectors = embedder.embed(&texts, &opts)?;
        for (d, v) in pending.docs.iter_mut().zip(vectors) {
            d.vector = Some(v);
        }
        let batch = std::mem::replace(
            pending,
            Batch {
                docs: Vec::new(),
                documents: 0,
                bytes: 0,
                marks: Vec::new(),
            },
        );
        let t = Instant::now();
        let sent = tx.send(batch).is_ok();
        waited.set(waited.get() + t.elapsed());
        Ok(sent)
    };
    loop {
        let t = Instant::now();
        let Ok(item) = rx.recv() else { break };
        waited.set(waited.get() + t.elapsed());
        match item {
            Item::Chunks(docs, bytes) => {
                pending.docs.extend(docs);
                pending.documents += 1;
                pending.bytes += bytes;
            }
            Item::Mark(m) => pending.marks.push(m),
        }
        let marks_waiting = pending.docs.is_empty() && !pending.marks.is_empty();
        if (pending.docs.len() >= batch_size || marks_waiting) && !flush(&mut pending)? {
            return Ok(busy());
        }
    }
    if !pending.docs.is_empty() || !pending.marks.is_empty() {
        flush(&mut pending)?;
    }
    Ok(busy())
}

/// Writes batches and keeps the counters; `write_s` is the time it worked (not waiting for
/// batches nor in `on_event`).
fn write_all(
    db: &Database,
    collection: &str,
    model: &ModelIdentity,
    rx: Receiver<Batch>,
    start: Instant,
    on_event: &(dyn Fn(IngestEvent<'_>) + Sync),
) -> Result<IngestStats> {
    let mut stats = IngestStats::default();
    let begun = Instant::now();
    let mut waited = Duration::ZERO;
    loop {
        let t = Instant::now();
        let Ok(batch) = rx.recv() else { break };
        waited += t.elapsed();
        if !batch.docs.is_empty() {
            let n = batch.docs.len() as u64;
            // Refused if the collection switched models since `model` embedded the batch.
            db.upsert_embedded(collection, batch.docs, Durability::Buffered, model)?;
            stats.chunks += n;
        }
        stats.documents += batch.documents;
        stats.bytes += batch.bytes;
        for m in batch.marks {
            match m {
                Mark::FileDone(len) => {
                    stats.files += 1;
                    stats.file_bytes += len;
                }
                Mark::Skipped => stats.skipped += 1,
                Mark::Problem(p) => {
                    stats.errors += 1;
                    let t = Instant::now();
                    on_event(IngestEvent::Problem(&p));
                    waited += t.elapsed();
                }
            }
        }
        stats.seconds = start.elapsed().as_secs_f64();
        stats.write_s = begun.elapsed().saturating_sub(waited).as_secs_f64();
        let t = Instant::now();
        on_event(IngestEvent::Progress(&stats));
        waited += t.elapsed();
    }
    stats.write_s = begun.elapsed().saturating_sub(waited).as_secs_f64();
    Ok(stats)
}
