//! The dataset and a straightforward reference BM25 to check the index against.

use std::collections::HashMap;
use std::path::PathBuf;

use latentdb_text::{Analyzer, AnalyzerConfig, LexicalIndex};

/// The dataset directory.
pub fn dataset_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/datasets/spamassassin-subjects")
}

/// The spamassassin-subjects dataset: documents (point = position in corpus.jsonl) and
/// queries, with their BEIR ids.
pub struct Dataset {
    pub doc_ids: Vec<String>,
    pub docs: Vec<String>,
    pub queries: Vec<(String, String)>,
}

fn jsonl(name: &str) -> Vec<serde_json::Value> {
    let path = dataset_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Loads the corpus (title and text joined as "title\ntext" when the title is not empty)
/// and the queries.
pub fn dataset() -> Dataset {
    let mut doc_ids = Vec::new();
    let mut docs = Vec::new();
    for v in jsonl("corpus.jsonl") {
        let title = v["title"].as_str().unwrap_or("");
        let text = v["text"].as_str().unwrap();
        doc_ids.push(v["_id"].as_str().unwrap().to_string());
        docs.push(if title.is_empty() {
            text.to_string()
        } else {
            format!("{title}\n{text}")
        });
    }
    let queries = jsonl("queries.jsonl")
        .into_iter()
        .map(|v| {
            (
                v["_id"].as_str().unwrap().to_string(),
                v["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    Dataset {
        doc_ids,
        docs,
        queries,
    }
}

/// A BEIR qrels file: query id -> relevant corpus ids.
pub fn qrels(name: &str) -> HashMap<String, Vec<String>> {
    let path = dataset_dir().join("qrels").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        if f[2].trim() != "0" {
            out.entry(f[0].to_string())
                .or_default()
                .push(f[1].to_string());
        }
    }
    out
}

/// An index of `docs` (point = position) under `config`.
pub fn build(config: &AnalyzerConfig, docs: &[(u32, &str)]) -> LexicalIndex {
    let mut ix = LexicalIndex::new(config.clone()).unwrap();
    for &(p, t) in docs {
        ix.insert(p, t);
    }
    ix
}

/// BM25 written the plain way: term-frequency maps per document, f64 throughout.
pub struct Reference {
    analyzer: Analyzer,
    tf: HashMap<u32, HashMap<String, u32>>,
    len: HashMap<u32, usize>,
    df: HashMap<String, u32>,
    avgdl: f64,
}

impl Reference {
    pub fn new(config: &AnalyzerConfig, docs: &[(u32, &str)]) -> Self {
        let analyzer = Analyzer::new(config).unwrap();
        let mut tf: HashMap<u32, HashMap<String, u32>> = HashMap::new();
        let mut len = HashMap::new();
        let mut df: HashMap<String, u32> = HashMap::new();
        for &(p, text) in docs {
            let terms = analyzer.analyze(text);
            len.insert(p, terms.len());
            let mut m: HashMap<String, u32> = HashMap::new();
            for t in terms {
                *m.entry(t).or_default() += 1;
            }
            for t in m.keys() {
                *df.entry(t.clone()).or_default() += 1;
            }
            tf.insert(p, m);
        }
        let avgdl = len.values().sum::<usize>() as f64 / tf.len() as f64;
        Self {
            analyzer,
            tf,
            len,
            df,
            avgdl,
        }
    }

    pub fn score(&self, query: &str, point: u32, k1: f64, b: f64) -> f64 {
        self.score_terms(&self.analyzer.analyze(query), point, k1, b)
    }

    fn score_terms(&self, query: &[String], point: u32, k1: f64, b: f64) -> f64 {
        let n = self.tf.len() as f64;
        let avgdl = self.avgdl;
        let Some(doc) = self.tf.get(&point) else {
            return 0.0;
        };
        let dl = self.len[&point] as f64;
        let mut score = 0.0;
        for term in query {
            let (Some(&tf), Some(&df)) = (doc.get(term), self.df.get(term)) else {
                continue;
            };
            let (tf, df) = (tf as f64, df as f64);
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            score += idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * dl / avgdl));
        }
        score
    }

    /// The top `k` (point, score) with score > 0, best first, ties by point.
    pub fn top(&self, query: &str, k: usize, k1: f64, b: f64) -> Vec<(u32, f64)> {
        let query = self.analyzer.analyze(query);
        let mut all: Vec<(u32, f64)> = self
            .tf
            .keys()
            .map(|&p| (p, self.score_terms(&query, p, k1, b)))
            .filter(|&(_, s)| s > 0.0)
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }
}

/// `a` and `b` equal within 1e-5, relative once they exceed 1.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(1.0)
}

/// A seeded SplitMix64.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
