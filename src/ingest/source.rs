//! Ingestion sources: walking files and directories, and reading each file into documents.
//!
//! [`walk`] yields files lazily (one directory listing at a time, sorted by name, hidden
//! entries skipped, symlinked directories not followed). [`read_documents`] turns one file into
//! [`SourceDoc`]s: `.txt` and `.md`/`.markdown` as they are, `.html`/`.htm` with tags stripped
//! ([`super::html`]), and `.jsonl` one document per line (`{"id", "text", "metadata"}`),
//! streamed line by line; a bad line is an error item carrying its line number, and reading
//! goes on with the next line.
//!
//! Each document carries a sha256 of its content (text and metadata), so a later ingest can
//! skip documents that did not change and replace those that did.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::glob::{Glob, GlobError};
use super::html::html_to_text;

/// The largest file read whole (text, Markdown, HTML); JSONL files are streamed and have no
/// limit but their lines do.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;

/// What can go wrong reading sources. Every variant concerns one file (or one line), so an
/// ingest reports it and goes on.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A path cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A path given on the command line is not a supported file type.
    #[error("{}: unsupported file type (expected .txt, .md, .html, .htm or .jsonl)", path.display())]
    Unsupported {
        /// The path.
        path: PathBuf,
    },
    /// A file is larger than the limit for files read whole.
    #[error("{}: {len} bytes is over the {limit}-byte limit for one file", path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A JSONL line is not a valid document.
    #[error("{}:{line}: {reason}", path.display())]
    BadLine {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The `--glob` pattern is invalid.
    #[error(transparent)]
    Glob(#[from] GlobError),
}

impl SourceError {
    /// True when the input was wrong (bad file, bad line, bad pattern); false when the system
    /// failed to read it.
    pub fn is_caller_fault(&self) -> bool {
        match self {
            SourceError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidData
            ),
            _ => true,
        }
    }
}

/// A file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Plain text (`.txt`).
    Text,
    /// Markdown (`.md`, `.markdown`), kept as written.
    Markdown,
    /// HTML (`.html`, `.htm`), converted to text.
    Html,
    /// One JSON document per line (`.jsonl`).
    Jsonl,
}

impl FileKind {
    /// The kind of a path by its extension (case-insensitive), if supported.
    pub fn of(path: &Path) -> Option<FileKind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "txt" | "text" => FileKind::Text,
            "md" | "markdown" => FileKind::Markdown,
            "html" | "htm" | "xhtml" => FileKind::Html,
            "jsonl" | "ndjson" => FileKind::Jsonl,
            _ => return None,
        })
    }
}

/// A file found by [`walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The path to open.
    pub path: PathBuf,
    /// The path as recorded in documents: the argument as given joined with the path below
    /// it, `/`-separated.
    pub source: String,
    /// The format.
    pub kind: FileKind,
    /// Length in bytes.
    pub len: u64,
}

/// Walks `roots` (files and directories) lazily, yielding supported files in a stable order.
///
/// A file named directly is yielded if its type is supported (else an
/// [`SourceError::Unsupported`] item) and regardless of `glob`. Under a directory, files of
/// unsupported types and hidden entries (names starting with `.`) are skipped, and `glob`
/// (matched against the path relative to that directory) filters the rest.
pub fn walk(roots: &[PathBuf], glob: Option<&Glob>) -> Walk {
    Walk {
        roots: roots.iter().rev().cloned().collect(),
        stack: Vec::new(),
        glob: glob.cloned(),
    }
}

/// A directory being listed: the root as given, the directory relative to it, and the
/// entries (name, path) left, in reverse order.
type Listing = (PathBuf, String, Vec<(String, PathBuf)>);

/// The iterator of [`walk`].
#[derive(Debug)]
pub struct Walk {
    /// Roots not started yet, in reverse order.
    roots: Vec<PathBuf>,
    /// Directories being listed.
    stack: Vec<Listing>,
    glob: Option<Glob>,
}

impl Iterator for Walk {
    type Item = Result<SourceFile, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((root, rel_dir, entries)) = self.stack.last_mut() {
                let Some((name, path)) = entries.pop() else {
                    self.stack.pop();
                    continue;
                };
                let rel = if rel_dir.is_empty() {
                    name.clone()
                } else {
                    format!("{rel_dir}/{name}")
                };
                let root = root.clone();
                let meta = match std::fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(source) => return Some(Err(SourceError::Io { path, source })),
                };
                if meta.is_dir() {
                    match list_dir(&path) {
                        Ok(entries) => self.stack.push((root, rel, entries)),
                        Err(source) => return Some(Err(SourceError::Io { path, source })),
                    }
                    continue;
                }
                // Follow symlinks to files (not to directories: no cycles).
                let meta = if meta.file_type().is_symlink() {
                    match std::fs::metadata(&path) {
                        Ok(m) if m.is_file() => m,
                        _ => continue,
                    }
                } else {
                    meta
                };
                if !meta.is_file() {
                    continue;
                }
                let Some(kind) = FileKind::of(&path) else {
                    continue;
                };
                if let Some(g) = &self.glob
                    && !g.matches(&rel)
                {
                    continue;
                }
                return Some(Ok(SourceFile {
                    source: join_source(&root, &rel),
                    path,
                    kind,
                    len: meta.len(),
                }));
            }
            let root = self.roots.pop()?;
            let meta = match std::fs::metadata(&root) {
                Ok(m) => m,
                Err(source) => return Some(Err(SourceError::Io { path: root, source })),
            };
            if meta.is_dir() {
                match list_dir(&root) {
                    Ok(entries) => self.stack.push((root, String::new(), entries)),
                    Err(source) => return Some(Err(SourceError::Io { path: root, source })),
                }
                continue;
            }
            return Some(match FileKind::of(&root) {
                Some(kind) => Ok(SourceFile {
                    source: normalize(&root.to_string_lossy()),
                    path: root,
                    kind,
                    len: meta.len(),
                }),
                None => Err(SourceError::Unsupported { path: root }),
            });
        }
    }
}

/// A directory's visible entries as (name, path), sorted by name, in reverse (popped from the
/// end).
fn list_dir(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        entries.push((name, entry.path()));
    }
    entries.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(entries)
}

fn join_source(root: &Path, rel: &str) -> String {
    let root = normalize(&root.to_string_lossy());
    if root.is_empty() || root == "." {
        rel.to_string()
    } else if root.ends_with('/') {
        format!("{root}{rel}")
    } else {
        format!("{root}/{rel}")
    }
}

/// `/` separators, no leading `./`.
fn normalize(p: &str) -> String {
    let p = p.replace('\\', "/");
    let mut s = p.as_str();
    while let Some(rest) = s.strip_prefix("./") {
        s = rest;
    }
    s.to_string()
}

/// One document read from a source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDoc {
    /// The document id: the file's `source` for a whole file, the line's `id` for JSONL
    /// (`{source}:{line}` when the line has none).
    pub id: String,
    /// The file it came from ([`SourceFile::source`]).
    pub source: String,
    /// The text.
    pub text: String,
    /// Metadata from the JSONL line (empty for other files).
    pub metadata: Map<String, Value>,
    /// sha256 (hex) of the text and metadata: what decides whether a stored copy is current.
    pub sha256: String,
    /// The JSONL line number, from 1.
    pub line: Option<usize>,
}

/// The sha256 (hex) identifying a document's content.
pub fn content_sha256(text: &str, metadata: &Map<String, Value>) -> String {
    let mut h = Sha256::new();
    h.update((text.len() as u64).to_le_bytes());
    h.update(text.as_bytes());
    if !metadata.is_empty() {
        // serde_json's map keeps keys sorted (no preserve_order), so this is canonical.
        h.update(Value::Object(metadata.clone()).to_string().as_bytes());
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Reads one file into documents, lazily: whole-file formats give one document (none if the
/// text is blank), JSONL one per non-blank line.
pub fn read_documents(file: &SourceFile, max_file_bytes: u64) -> Result<Documents, SourceError> {
    let io = |source| SourceError::Io {
        path: file.path.clone(),
        source,
    };
    if file.kind == FileKind::Jsonl {
        let f = File::open(&file.path).map_err(io)?;
        return Ok(Documents::Lines(JsonlReader {
            path: file.path.clone(),
            source: file.source.clone(),
            reader: BufReader::with_capacity(1 << 16, f),
            line: 0,
            buf: Vec::new(),
        }));
    }
    let f = File::open(&file.path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len > max_file_bytes {
        return Err(SourceError::TooLarge {
            path: file.path.clone(),
            len,
            limit: max_file_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(max_file_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let raw = decode_utf8(bytes);
    let text = match file.kind {
        FileKind::Html => html_to_text(&raw),
        _ => raw,
    };
    if text.trim().is_empty() {
        return Ok(Documents::Single(None));
    }
    let metadata = Map::new();
    Ok(Documents::Single(Some(SourceDoc {
        id: file.source.clone(),
        source: file.source.clone(),
        sha256: content_sha256(&text, &metadata),
        text,
        metadata,
        line: None,
    })))
}

/// UTF-8 text without a byte-order mark; invalid sequences become U+FFFD.
fn decode_utf8(bytes: Vec<u8>) -> String {
    let s = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    match s.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => s,
    }
}

/// The documents of one file (see [`read_documents`]).
#[derive(Debug)]
pub enum Documents {
    /// A whole-file document, or none for a blank file.
    Single(Option<SourceDoc>),
    /// JSONL lines.
    Lines(JsonlReader),
}

impl Iterator for Documents {
    type Item = Result<SourceDoc, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Documents::Single(doc) => doc.take().map(Ok),
            Documents::Lines(r) => r.next(),
        }
    }
}

/// Streams a JSONL file's documents.
#[derive(Debug)]
pub struct JsonlReader {
    path: PathBuf,
    source: String,
    reader: BufReader<File>,
    line: usize,
    buf: Vec<u8>,
}

impl Iterator for JsonlReader {
    type Item = Result<SourceDoc, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => {
                    return Some(Err(SourceError::Io {
                        path: self.path.clone(),
                        source,
                    }));
                }
            }
            self.line += 1;
            let line = match std::str::from_utf8(&self.buf) {
                Ok(l) => l.trim(),
                Err(_) => return Some(Err(self.bad("the line is not valid UTF-8".into()))),
            };
            let line = if self.line == 1 {
                line.trim_start_matches('\u{feff}')
            } else {
                line
            };
            if line.is_empty() {
                continue;
            }
            return Some(parse_line(line, self.line, &self.source).map_err(|r| self.bad(r)));
        }
    }
}

impl JsonlReader {
    fn bad(&self, reason: String) -> SourceError {
        SourceError::BadLine {
            path: self.path.clone(),
            line: self.line,
            reason,
        }
    }
}

/// Parses one JSONL document: `text` (a string) is required; `id` (a string or a number) and
/// `metadata` (an object or null) are optional.
fn parse_line(line: &str, number: usize, source: &str) -> Result<SourceDoc, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err("expected a JSON object".into());
    };
    let text = match obj.remove("text") {
        Some(Value::String(s)) => s,
        Some(_) => return Err("`text` must be a string".into()),
        None => return Err("missing `text`".into()),
    };
    let id = match obj.remove("id") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::Number(n)) => n.to_string(),
        None | Some(Value::Null) => format!("{source}:{number}"),
        Some(_) => return Err("`id` must be a non-empty string or a number".into()),
    };
    let metadata = match obj.remove("metadata") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err("`metadata` must be an object".into()),
    };
    Ok(SourceDoc {
        sha256: content_sha256(&text, &metadata),
        id,
        source: source.to_string(),
        text,
        metadata,
        line: Some(number),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn files(roots: &[PathBuf], glob: Option<&str>) -> Vec<String> {
        let g = glob.map(|g| Glob::new(g).unwrap());
        walk(roots, g.as_ref())
            .map(|r| r.map(|f| f.source).unwrap_or_else(|e| format!("ERR {e}")))
            .collect()
    }

    #[test]
    fn walks_sorted_skipping_hidden_and_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("b/sub")).unwrap();
        fs::create_dir_all(d.join(".git")).unwrap();
        for f in [
            "a.txt",
            "b/sub/c.md",
            "b/d.html",
            "b/e.jsonl",
            "x.png",
            ".hidden.txt",
        ] {
            fs::write(d.join(f), "x").unwrap();
        }
        fs::write(d.join(".git/f.txt"), "x").unwrap();
        let root = d.to_path_buf();
        let base = root.to_string_lossy().replace('\\', "/");
        let got = files(std::slice::from_ref(&root), None);
        let want: Vec<String> = ["a.txt", "b/d.html", "b/e.jsonl", "b/sub/c.md"]
            .iter()
            .map(|f| format!("{base}/{f}"))
            .collect();
        assert_eq!(got, want);
        let got = files(std::slice::from_ref(&root), Some("*.{md,html}"));
        assert_eq!(
            got,
            [format!("{base}/b/d.html"), format!("{base}/b/sub/c.md")]
        );
        let got = files(std::slice::from_ref(&root), Some("b/*"));
        assert_eq!(got.len(), 2);
        // Files named directly bypass the glob; unsupported ones and missing ones are errors.
        let got = files(
            &[d.join("x.png"), d.join("a.txt"), d.join("nope")],
            Some("*.md"),
        );
        assert!(
            got[0].starts_with("ERR") && got[0].contains("unsupported"),
            "{got:?}"
        );
        assert_eq!(got[1], format!("{base}/a.txt"));
        assert!(got[2].starts_with("ERR"));
    }

    #[test]
    fn reads_each_format() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("a.md"), "\u{feff}# Title\n\nSome *markdown*.").unwrap();
        fs::write(d.join("b.html"), "<p>Hi &amp; <script>x</script>bye</p>").unwrap();
        fs::write(d.join("blank.txt"), " \n").unwrap();
        fs::write(d.join("bad.txt"), b"ok \xff end").unwrap();
        let lines = concat!(
            "{\"id\":\"d1\",\"text\":\"one\",\"metadata\":{\"k\":1}}\n",
            "\n",
            "not json\n",
            "{\"id\":7,\"text\":\"seven\"}\n",
            "{\"text\":\"anon\"}\n",
            "{\"id\":\"x\"}\n",
            "{\"id\":\"y\",\"text\":\"t\",\"metadata\":[1]}\n",
        );
        fs::write(d.join("c.jsonl"), lines).unwrap();
        let docs = |name: &str| -> Vec<Result<SourceDoc, SourceError>> {
            let path = d.join(name);
            let file = SourceFile {
                source: name.to_string(),
                kind: FileKind::of(&path).unwrap(),
                len: fs::metadata(&path).unwrap().len(),
                path,
            };
            read_documents(&file, DEFAULT_MAX_FILE_BYTES)
                .unwrap()
                .collect()
        };
        let md = docs("a.md");
        let md = md[0].as_ref().unwrap();
        assert_eq!(md.text, "# Title\n\nSome *markdown*.");
        assert_eq!((md.id.as_str(), md.line), ("a.md", None));
        assert_eq!(docs("b.html")[0].as_ref().unwrap().text, "Hi & bye");
        assert!(docs("blank.txt").is_empty());
        assert_eq!(docs("bad.txt")[0].as_ref().unwrap().text, "ok \u{FFFD} end");

        let j = docs("c.jsonl");
        assert_eq!(j.len(), 6);
        let d1 = j[0].as_ref().unwrap();
        assert_eq!(
            (d1.id.as_str(), d1.text.as_str(), d1.line),
            ("d1", "one", Some(1))
        );
        assert_eq!(d1.metadata["k"], 1);
        let bad_lines: Vec<usize> = j
            .iter()
            .filter_map(|r| match r {
                Err(SourceError::BadLine { line, .. }) => Some(*line),
                _ => None,
            })
            .collect();
        assert_eq!(bad_lines, [3, 6, 7]);
        assert_eq!(j[2].as_ref().unwrap().id, "7");
        assert_eq!(j[3].as_ref().unwrap().id, "c.jsonl:5");
        let msg = j[1].as_ref().unwrap_err().to_string();
        assert!(msg.contains("c.jsonl:3: invalid JSON"), "{msg}");
    }

    #[test]
    fn too_large_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.txt");
        fs::write(&path, "0123456789").unwrap();
        let file = SourceFile {
            source: "big.txt".into(),
            kind: FileKind::Text,
            len: 10,
            path,
        };
        assert!(matches!(
            read_documents(&file, 9),
            Err(SourceError::TooLarge { len: 10, .. })
        ));
    }

    #[test]
    fn content_hash_covers_text_and_metadata() {
        let mut m = Map::new();
        let a = content_sha256("t", &m);
        assert_eq!(a, content_sha256("t", &m));
        assert_ne!(a, content_sha256("u", &m));
        m.insert("k".into(), Value::from(1));
        assert_ne!(a, content_sha256("t", &m));
        assert_eq!(a.len(), 64);
    }
}
