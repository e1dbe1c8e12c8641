//! The manifest: what a backup holds, written last to commit it.
//!
//! On disk it is two lines of text:
//!
//! ```text
//! {"format":"latentdb-backup","version":1,...}\n
//! crc32 1a2b3c4d\n
//! ```
//!
//! The first line is the manifest as compact JSON; the second is `crc32 ` and the CRC-32
//! (IEEE, as eight lowercase hex digits) of the first line's bytes without its newline. A
//! flipped byte anywhere fails either the checksum or the syntax of the checksum line.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::name::{MANIFEST_NAME, chunk_file, validate_name};

/// The `format` field of every manifest.
pub const FORMAT_NAME: &str = "latentdb-backup";

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// The largest manifest accepted when decoding, in bytes.
pub const MAX_MANIFEST_LEN: usize = 256 << 20;

/// How a file was written: streamed in chunks or put whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Written with [`crate::PartWriter`]: chunk files `name.00000`, `name.00001`, …
    Part,
    /// Written with [`crate::BackupWriter::put_blob`]: one file named `name`.
    Blob,
}

/// One stored file of a logical file: its path relative to the backup location, size and CRC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The chunk's path relative to the backup location.
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// The CRC-32 (IEEE) of its bytes.
    pub crc32: u32,
}

/// A logical file of a backup: a part (the chunks in order) or a blob (one chunk).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The name the caller gave it.
    pub name: String,
    /// Part or blob.
    pub kind: FileKind,
    /// Its chunks, in order; concatenated they are the file's bytes.
    pub chunks: Vec<Chunk>,
}

impl FileEntry {
    /// The file's size: the sum of its chunks' sizes.
    pub fn size(&self) -> u64 {
        self.chunks.iter().map(|c| c.size).sum()
    }
}

/// What a backup holds: the caller's `meta` and every file with the size and CRC of each chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Always [`FORMAT_VERSION`] for manifests this build reads.
    pub version: u64,
    /// When the backup was committed, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The writer, e.g. `latentdb-backup 0.1.0`.
    pub producer: String,
    /// The caller's own description of the backup (opaque to this crate).
    pub meta: serde_json::Value,
    /// The files, in the order they were finished.
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// The sum of all files' sizes (the manifest excluded).
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(FileEntry::size).sum()
    }

    /// The file named `name`, if the backup has it.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// The manifest as stored: the JSON line and the checksum line.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data with string keys cannot fail.
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(format!("\ncrc32 {crc:08x}\n").as_bytes());
        out
    }

    /// Decodes and checks a stored manifest: the checksum, the format name and version, every
    /// name, and that each file's chunks are named as its kind dictates. `location` is only for
    /// error messages. Never panics on any input.
    pub fn decode(bytes: &[u8], location: &str) -> Result<Manifest> {
        let corrupt = |reason: String| Error::corrupt(location, MANIFEST_NAME, reason);
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(corrupt(format!("{} bytes is too large", bytes.len())));
        }
        let text = bytes
            .strip_suffix(b"\n")
            .ok_or_else(|| corrupt("does not end with a newline (truncated?)".into()))?;
        let split = text
            .iter()
            .rposition(|&b| b == b'\n')
            .ok_or_else(|| corrupt("no checksum line (truncated?)".into()))?;
        let (body, tail) = (&text[..split], &text[split + 1..]);
        let stored = tail
            .strip_prefix(b"crc32 ")
            .filter(|hex| hex.len() == 8)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .filter(|hex| hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .and_then(|hex| u32::from_str_radix(hex, 16).ok())
            .ok_or_else(|| corrupt("malformed checksum line".into()))?;
        let actual = crc32fast::hash(body);
        if actual != stored {
            return Err(corrupt(format!(
                "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
            )));
        }
        // Format and version first, so that a newer layout is reported as such rather than as
        // a field that fails to parse.
        #[derive(Deserialize)]
        struct Head {
            format: String,
            version: u64,
        }
        let head: Head = serde_json::from_slice(body)
            .map_err(|e| corrupt(format!("not a backup manifest: {e}")))?;
        if head.format != FORMAT_NAME {
            return Err(corrupt(format!(
                "format is {:?}, not {FORMAT_NAME:?}",
                latentdb_types::truncate_echo(&head.format, 40)
            )));
        }
        if head.version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                location: location.to_owned(),
                found: head.version,
                supported: FORMAT_VERSION,
            });
        }
        let manifest: Manifest =
            serde_json::from_slice(body).map_err(|e| corrupt(format!("malformed: {e}")))?;
        manifest.check().map_err(corrupt)?;
        Ok(manifest)
    }

    /// The structural rules `decode` enforces beyond the syntax.
    fn check(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        let mut stored = HashSet::new();
        for file in &self.files {
            validate_name(&file.name).map_err(|e| e.to_string())?;
            if !names.insert(file.name.as_str()) {
                return Err(format!("file {:?} is listed twice", file.name));
            }
            match file.kind {
                FileKind::Blob => {
                    if file.chunks.len() != 1 || file.chunks[0].file != file.name {
                        return Err(format!(
                            "blob {:?} must be one chunk of its name",
                            file.name
                        ));
                    }
                }
                FileKind::Part => {
                    if file.chunks.is_empty() {
                        return Err(format!("part {:?} has no chunks", file.name));
                    }
                    for (i, chunk) in file.chunks.iter().enumerate() {
                        if chunk.file != chunk_file(&file.name, i) {
                            return Err(format!(
                                "chunk {i} of part {:?} is named {:?}",
                                file.name,
                                latentdb_types::truncate_echo(&chunk.file, 80)
                            ));
                        }
                    }
                }
            }
            for chunk in &file.chunks {
                if chunk.file == MANIFEST_NAME || !stored.insert(chunk.file.as_str()) {
                    return Err(format!("file {:?} is stored twice", chunk.file));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latentdb_types::ErrorKind;

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            created_unix_ms: 1_700_000_000_000,
            producer: "test".into(),
            meta: serde_json::json!({"collections": ["a"], "seq": 42}),
            files: vec![
                FileEntry {
                    name: "c/a/records".into(),
                    kind: FileKind::Part,
                    chunks: vec![
                        Chunk {
                            file: "c/a/records.00000".into(),
                            size: 10,
                            crc32: 7,
                        },
                        Chunk {
                            file: "c/a/records.00001".into(),
                            size: 3,
                            crc32: 9,
                        },
                    ],
                },
                FileEntry {
                    name: "config.json".into(),
                    kind: FileKind::Blob,
                    chunks: vec![Chunk {
                        file: "config.json".into(),
                        size: 5,
                        crc32: 1,
                    }],
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_sums() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes, "loc").unwrap(), m);
        assert_eq!(m.total_bytes(), 18);
        assert_eq!(m.file("config.json").unwrap().size(), 5);
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().nth(1).unwrap().starts_with("crc32 "));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let err = Manifest::decode(&bad, "loc").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::DataLoss, "byte {i}: {err}");
        }
    }

    fn with_body(body: &serde_json::Value) -> Vec<u8> {
        let body = serde_json::to_vec(body).unwrap();
        let crc = crc32fast::hash(&body);
        let mut out = body;
        out.extend_from_slice(format!("\ncrc32 {crc:08x}\n").as_bytes());
        out
    }

    #[test]
    fn other_versions_are_refused_clearly() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["version"] = 2.into();
        v["files"] = "a new layout".into();
        let err = Manifest::decode(&with_body(&v), "loc").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert!(err.to_string().contains("format version 2"), "{err}");
        let mut v = serde_json::to_value(sample()).unwrap();
        v["format"] = "something-else".into();
        let err = Manifest::decode(&with_body(&v), "loc").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DataLoss);
    }

    #[test]
    fn structural_rules_are_enforced() {
        let bad_chunk_name =
            |m: &mut Manifest| m.files[0].chunks[1].file = "c/a/records.00005".into();
        let escape = |m: &mut Manifest| m.files[1].name = "../etc".into();
        let twice = |m: &mut Manifest| {
            let f = m.files[0].clone();
            m.files.push(f);
        };
        let empty_part = |m: &mut Manifest| m.files[0].chunks.clear();
        let blob_elsewhere = |m: &mut Manifest| m.files[1].chunks[0].file = "other".into();
        let fns: [&dyn Fn(&mut Manifest); 5] = [
            &bad_chunk_name,
            &escape,
            &twice,
            &empty_part,
            &blob_elsewhere,
        ];
        for (i, f) in fns.iter().enumerate() {
            let mut m = sample();
            f(&mut m);
            let bytes = with_body(&serde_json::to_value(&m).unwrap());
            let err = Manifest::decode(&bytes, "loc").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::DataLoss, "case {i}: {err}");
        }
    }

    #[test]
    fn truncations_are_caught() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..len], "loc").is_err(), "len {len}");
        }
    }
}
