//! Corpus ingestion for retrieval-augmented generation: finding and reading source files
//! ([`source`]), converting HTML ([`html`]), filtering paths ([`glob`]) and splitting texts into
//! overlapping token-bounded chunks ([`chunk`]), and the [`Ingester`] service, which runs them
//! into a collection ([`ingester`]).

pub mod chunk;
pub mod glob;
pub mod html;
pub mod ingester;
pub mod source;

pub use chunk::{Chunk, ChunkOptions, chunk_text};
pub use glob::{Glob, GlobError};
pub use ingester::{IngestEvent, IngestOptions, IngestStats, Ingester};
pub use source::{FileKind, SourceDoc, SourceError, SourceFile, read_documents, walk};
