//! Reading a BEIR-format dataset: `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl`
//! (`_id`, `text`) and `qrels/<split>.tsv` (`query-id corpus-id score`, with a header line).
//!
//! The corpus is streamed; a document's text is BEIR's `(title + " " + text).strip()` (the
//! join its dense retrievers embed), or the stripped text when there is no title key.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::metrics::Qrels;

/// What can go wrong reading a dataset.
#[derive(Debug, thiserror::Error)]
pub enum BeirError {
    /// A file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{}:{line}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A BEIR dataset directory.
#[derive(Debug, Clone)]
pub struct BeirDataset {
    dir: PathBuf,
}

/// One corpus document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusDoc {
    /// `_id`.
    pub id: String,
    /// `title + " " + text`, stripped.
    pub text: String,
}

#[derive(Deserialize)]
struct RawDoc {
    #[serde(rename = "_id")]
    id: IdValue,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

/// BEIR ids are strings, but some datasets write numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Str(String),
    Num(serde_json::Number),
}

impl IdValue {
    fn into_string(self) -> String {
        match self {
            IdValue::Str(s) => s,
            IdValue::Num(n) => n.to_string(),
        }
    }
}

impl BeirDataset {
    /// A dataset at `dir`; fails unless `corpus.jsonl` and `queries.jsonl` exist.
    pub fn open(dir: impl AsRef<Path>) -> Result<BeirDataset, BeirError> {
        let dir = dir.as_ref().to_path_buf();
        for f in ["corpus.jsonl", "queries.jsonl"] {
            let p = dir.join(f);
            if !p.is_file() {
                return Err(BeirError::Io {
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "not a BEIR dataset (missing file)",
                    ),
                    path: p,
                });
            }
        }
        Ok(BeirDataset { dir })
    }

    /// The dataset directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Streams the corpus.
    pub fn corpus(&self) -> Result<impl Iterator<Item = Result<CorpusDoc, BeirError>>, BeirError> {
        let path = self.dir.join("corpus.jsonl");
        Ok(jsonl::<RawDoc>(&path)?.map(|r| {
            r.map(|(_, d)| CorpusDoc {
                id: d.id.into_string(),
                text: join_title(d.title.as_deref(), d.text.as_deref().unwrap_or("")),
            })
        }))
    }

    /// All queries: id -> text.
    pub fn queries(&self) -> Result<HashMap<String, String>, BeirError> {
        #[derive(Deserialize)]
        struct RawQuery {
            #[serde(rename = "_id")]
            id: IdValue,
            text: String,
        }
        let path = self.dir.join("queries.jsonl");
        jsonl::<RawQuery>(&path)?
            .map(|r| r.map(|(_, q)| (q.id.into_string(), q.text)))
            .collect()
    }

    /// The judgments of a split (`qrels/{split}.tsv`).
    pub fn qrels(&self, split: &str) -> Result<Qrels, BeirError> {
        let path = self.dir.join("qrels").join(format!("{split}.tsv"));
        read_qrels(&path)
    }
}

/// BEIR's `(title + " " + text).strip()`, or `text.strip()` without a title.
pub fn join_title(title: Option<&str>, text: &str) -> String {
    match title {
        Some(t) => format!("{t} {text}").trim().to_string(),
        None => text.trim().to_string(),
    }
}

/// Reads a qrels TSV: a header line, then `query-id \t corpus-id \t score` (whitespace
/// separated); BEIR's loader keeps the last grade of a repeated pair.
pub fn read_qrels(path: &Path) -> Result<Qrels, BeirError> {
    let io = |source| BeirError::Io {
        path: path.to_path_buf(),
        source,
    };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let mut qrels = Qrels::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if i == 0 || line.trim().is_empty() {
            continue; // header
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parse = |reason: String| BeirError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let [q, d, score] = fields.as_slice() else {
            return Err(parse(format!("expected 3 fields, found {}", fields.len())));
        };
        let score: i32 = score
            .parse()
            .or_else(|_| score.parse::<f64>().map(|f| f as i32))
            .map_err(|_| parse(format!("score `{score}` is not a number")))?;
        qrels
            .entry(q.to_string())
            .or_default()
            .insert(d.to_string(), score);
    }
    Ok(qrels)
}

/// Streams a JSONL file as (line number, value); blank lines are skipped.
fn jsonl<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<impl Iterator<Item = Result<(usize, T), BeirError>> + use<T>, BeirError> {
    let path = path.to_path_buf();
    let f = File::open(&path).map_err(|source| BeirError::Io {
        path: path.clone(),
        source,
    })?;
    let reader = BufReader::with_capacity(1 << 16, f);
    Ok(reader.lines().enumerate().filter_map(move |(i, line)| {
        let line = match line {
            Ok(l) => l,
            Err(source) => {
                return Some(Err(BeirError::Io {
                    path: path.clone(),
                    source,
                }));
            }
        };
        if line.trim().is_empty() {
            return None;
        }
        Some(
            serde_json::from_str(&line)
                .map(|v| (i + 1, v))
                .map_err(|e| BeirError::Parse {
                    path: path.clone(),
                    line: i + 1,
                    reason: e.to_string(),
                }),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn reads_a_small_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(
            d.join("corpus.jsonl"),
            concat!(
                "{\"_id\": \"d1\", \"title\": \"Title\", \"text\": \"Body. \"}\n",
                "{\"_id\": \"d2\", \"title\": \"\", \"text\": \" only text\"}\n",
                "\n",
                "{\"_id\": 3, \"text\": \"no title key\"}\n",
            ),
        )
        .unwrap();
        fs::write(
            d.join("queries.jsonl"),
            "{\"_id\": \"q1\", \"text\": \"what?\"}\n{\"_id\": \"q2\", \"text\": \"who?\"}\n",
        )
        .unwrap();
        fs::create_dir(d.join("qrels")).unwrap();
        fs::write(
            d.join("qrels/test.tsv"),
            "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq2\td1\t0\n",
        )
        .unwrap();
        let ds = BeirDataset::open(d).unwrap();
        let corpus: Vec<CorpusDoc> = ds.corpus().unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(corpus.len(), 3);
        assert_eq!(corpus[0].text, "Title Body.");
        assert_eq!(corpus[1].text, "only text");
        assert_eq!(
            (corpus[2].id.as_str(), corpus[2].text.as_str()),
            ("3", "no title key")
        );
        let q = ds.queries().unwrap();
        assert_eq!(q["q2"], "who?");
        let qrels = ds.qrels("test").unwrap();
        assert_eq!(qrels["q1"]["d2"], 2);
        assert_eq!(qrels["q2"]["d1"], 0);
        assert!(ds.qrels("dev").is_err());

        fs::write(d.join("qrels/bad.tsv"), "h\nq1 d1\n").unwrap();
        let e = ds.qrels("bad").unwrap_err().to_string();
        assert!(e.contains("bad.tsv:2: expected 3 fields"), "{e}");
        assert!(BeirDataset::open(d.join("qrels")).is_err());
    }

    #[test]
    fn reads_the_spamassassin_subjects_fixture() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/datasets/spamassassin-subjects");
        let ds = BeirDataset::open(&dir).expect("the fixture is part of the repository");
        assert_eq!(ds.corpus().unwrap().count(), 1903);
        assert_eq!(ds.queries().unwrap().len(), 1903);
        let test = ds.qrels("test").unwrap();
        assert_eq!(test.len(), 571);
    }
}
