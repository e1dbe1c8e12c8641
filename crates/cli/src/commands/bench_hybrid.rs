//! `latentdb bench hybrid`: what the lexical index costs. Loads the same seeded synthetic
//! chunks (Zipf-distributed words, random unit vectors given by the caller, so no model is
//! needed) into two scratch databases, one without and one with the lexical index, batch by
//! batch in turn, and compares the ingest rates; then measures one-thread query latency of
//! dense, lexical and hybrid searches on the second. Prints one JSON object.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use serde_json::{Value, json};

use latentdb::{CollectionSpec, Database, DatabaseOptions, Document, Durability, SearchRequest};
use latentdb::{Metric, SearchMode};

use crate::commands::scratch::{ScratchDir, peak_rss};
use crate::output::Out;

/// Arguments of `bench hybrid`.
#[derive(Debug, Args)]
pub struct BenchHybridArgs {
    /// Chunks in the collection.
    #[arg(long, default_value_t = 100_000)]
    pub docs: usize,
    /// Queries timed per mode (after 50 untimed warm-up queries).
    #[arg(long, default_value_t = 1_000)]
    pub queries: usize,
    /// Vector dimension.
    #[arg(long, default_value_t = 384)]
    pub dim: usize,
    /// Random seed of the text, the vectors and the queries.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Distinct words of the synthetic vocabulary (Zipf-distributed, exponent 1).
    #[arg(long, default_value_t = 30_000)]
    pub vocab: usize,
    /// Chunks per upsert batch.
    #[arg(long, default_value_t = 1_000)]
    pub batch_size: usize,
    /// Results per query.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
}

/// Untimed queries run first.
const WARMUP: usize = 50;

/// SplitMix64: seeded and reproducible across platforms.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// A standard normal deviate (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit(); // (0, 1]
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// A random unit vector.
    fn unit_vector(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f64> = (0..dim).map(|_| self.normal()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
        v.into_iter().map(|x| x as f32).collect()
    }
}

/// A vocabulary of pronounceable made-up words, sampled by a Zipf law (rank `r` with
/// probability proportional to `1 / r`).
struct Vocabulary {
    words: Vec<String>,
    cdf: Vec<f64>,
}

impl Vocabulary {
    fn new(size: usize) -> Self {
        const C: &[u8] = b"bdfgklmnprstvz";
        const V: &[u8] = b"aeiou";
        let syllables = C.len() * V.len();
        // Word n: n written in base `syllables` (at least two digits), each digit a
        // consonant-vowel syllable, then an `x` (so that no word is an English stopword).
        let words = (0..size)
            .map(|n| {
                let mut digits = Vec::new();
                let mut m = n + syllables; // at least two syllables, distinct for every n
                while m > 0 {
                    digits.push(m % syllables);
                    m /= syllables;
                }
                let mut w = String::with_capacity(2 * digits.len() + 1);
                for d in digits.into_iter().rev() {
                    w.push(C[d / V.len()] as char);
                    w.push(V[d % V.len()] as char);
                }
                w.push('x');
                w
            })
            .collect();
        let mut cdf = Vec::with_capacity(size);
        let mut total = 0.0;
        for r in 1..=size {
            total += 1.0 / r as f64;
            cdf.push(total);
        }
        cdf.iter_mut().for_each(|c| *c /= total);
        Vocabulary { words, cdf }
    }

    /// A word's rank (from 0), drawn.
    fn rank(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|&c| c < u)
            .min(self.words.len() - 1)
    }

    fn word(&self, rng: &mut Rng) -> &str {
        &self.words[self.rank(rng)]
    }

    /// `lo..=hi` words joined by spaces.
    fn text(&self, rng: &mut Rng, lo: usize, hi: usize) -> String {
        let n = rng.range(lo, hi);
        let mut s = String::with_capacity(n * 8);
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(self.word(rng));
        }
        s
    }
}

/// Opens a new database under `dir` with collection `bench`, with or without the lexical
/// index.
fn open(dir: &std::path::Path, dim: usize, lexical: bool) -> anyhow::Result<Database> {
    let db = Database::open_with(dir, DatabaseOptions::new().durability(Durability::Buffered))?;
    let mut spec = CollectionSpec::new("bench", dim, Metric::Cosine);
    if !lexical {
        spec.lexical = json!({"enabled": false});
    }
    db.create_collection(spec)?;
    Ok(db)
}

/// Loads the same chunks into `plain` (no lexical index) and `lexical`, batch by batch, each
/// batch into both in turn (alternating which goes first), so that load from other processes
/// and drift hit both alike. Returns the seconds each spent in upserts and the final flush.
fn load(
    a: &BenchHybridArgs,
    vocab: &Vocabulary,
    plain: &Database,
    lexical: &Database,
) -> anyhow::Result<(f64, f64)> {
    let mut rng = Rng(a.seed);
    let (mut plain_s, mut lexical_s) = (0.0, 0.0);
    let mut next = 0usize;
    let mut turn = 0usize;
    while next < a.docs {
        let end = (next + a.batch_size).min(a.docs);
        let batch: Vec<Document> = (next..end)
            .map(|i| {
                let text = vocab.text(&mut rng, 20, 80);
                Document::new(format!("c{i:08}"), rng.unit_vector(a.dim)).with_text(text)
            })
            .collect();
        let timed = |db: &Database, docs: Vec<Document>| -> anyhow::Result<f64> {
            let t = Instant::now();
            db.upsert("bench", docs)?;
            Ok(t.elapsed().as_secs_f64())
        };
        if turn.is_multiple_of(2) {
            plain_s += timed(plain, batch.clone())?;
            lexical_s += timed(lexical, batch)?;
        } else {
            lexical_s += timed(lexical, batch.clone())?;
            plain_s += timed(plain, batch)?;
        }
        turn += 1;
        next = end;
    }
    for (db, secs) in [(plain, &mut plain_s), (lexical, &mut lexical_s)] {
        let t = Instant::now();
        db.flush()?;
        *secs += t.elapsed().as_secs_f64();
    }
    Ok((plain_s, lexical_s))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50, p95 and mean of latencies in seconds, as milliseconds.
fn summary(mut lat: Vec<f64>) -> Value {
    lat.sort_by(f64::total_cmp);
    let mean = lat.iter().sum::<f64>() / lat.len().max(1) as f64;
    json!({
        "p50_ms": percentile(&lat, 0.5) * 1e3,
        "p95_ms": percentile(&lat, 0.95) * 1e3,
        "mean_ms": mean * 1e3,
    })
}

pub fn hybrid(a: BenchHybridArgs, out: &mut Out) -> anyhow::Result<ExitCode> {
    if a.docs == 0 || a.queries == 0 || a.dim == 0 || a.vocab == 0 || a.batch_size == 0 || a.k == 0
    {
        bail!("--docs, --queries, --dim, --vocab, --batch-size and -k must be positive");
    }
    let vocab = Vocabulary::new(a.vocab);
    let tmp = ScratchDir::new("bench-hybrid")?;

    let plain = open(&tmp.path().join("plain"), a.dim, false)?;
    let db = open(&tmp.path().join("lexical"), a.dim, true)?;
    let (plain_s, lexical_s) = load(&a, &vocab, &plain, &db)?;
    drop(plain);
    let plain_rate = a.docs as f64 / plain_s;
    let lexical_rate = a.docs as f64 / lexical_s;
    let ratio = lexical_rate / plain_rate;

    // Queries: 2-4 words of the same vocabulary and a random vector, from another stream.
    let mut rng = Rng(a.seed ^ 0x5151_5151_5151_5151);
    let queries: Vec<(String, Vec<f32>)> = (0..a.queries + WARMUP)
        .map(|_| (vocab.text(&mut rng, 2, 4), rng.unit_vector(a.dim)))
        .collect();
    let request = |mode: SearchMode, text: &str, vector: &[f32]| SearchRequest {
        vector: (mode != SearchMode::Lexical).then(|| vector.to_vec()),
        text: (mode != SearchMode::Dense).then(|| text.to_string()),
        mode: Some(mode),
        k: a.k,
        with_text: false,
        with_metadata: false,
        ..SearchRequest::default()
    };
    let modes = [SearchMode::Dense, SearchMode::Lexical, SearchMode::Hybrid];
    let mut lat: [Vec<f64>; 3] = Default::default();
    let mut empty = [0usize; 3];
    for (i, (text, vector)) in queries.iter().enumerate() {
        // The modes take turns on each query, so that drift affects them alike.
        for (m, &mode) in modes.iter().enumerate() {
            let req = request(mode, text, vector);
            let t = Instant::now();
            let hits = db.search("bench", &req)?;
            let secs = t.elapsed().as_secs_f64();
            if i >= WARMUP {
                lat[m].push(secs);
                empty[m] += usize::from(hits.is_empty());
            }
        }
    }
    let [dense, lexical, hybrid] = lat.map(summary);
    let gap = hybrid["p50_ms"].as_f64().unwrap_or(f64::NAN)
        - dense["p50_ms"].as_f64().unwrap_or(f64::NAN);
    let lexical_stats = db.lexical_stats("bench")?.map_or(Value::Null, |s| {
        serde_json::to_value(s).unwrap_or(Value::Null)
    });
    drop(db);

    let report = json!({
        "bench": "hybrid",
        "docs": a.docs,
        "dim": a.dim,
        "vocab": a.vocab,
        "words_per_doc": [20, 80],
        "seed": a.seed,
        "batch_size": a.batch_size,
        "ingest": {
            "without_lexical": {"seconds": plain_s, "docs_per_s": plain_rate},
            "with_lexical": {"seconds": lexical_s, "docs_per_s": lexical_rate},
            "ratio": ratio,
        },
        "queries": a.queries,
        "k": a.k,
        "threads": 1,
        "latency": {"dense": dense, "lexical": lexical, "hybrid": hybrid},
        "empty_results": {"dense": empty[0], "lexical": empty[1], "hybrid": empty[2]},
        "hybrid_p50_minus_dense_p50_ms": gap,
        "targets": {
            "hybrid_p50_within_2ms_of_dense": gap <= 2.0,
            "ingest_ratio_at_least_0.9": ratio >= 0.9,
        },
        "lexical_stats": lexical_stats,
        "peak_rss_bytes": peak_rss(),
    });
    out.either(&report, || {
        serde_json::to_string_pretty(&report).unwrap_or_else(|_| report.to_string())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_distinct_and_zipf_distributed() {
        let v = Vocabulary::new(5_000);
        let distinct: std::collections::HashSet<&str> =
            v.words.iter().map(|w| w.as_str()).collect();
        assert_eq!(distinct.len(), 5_000);
        assert!(v.words.iter().all(|w| w.ends_with('x') && w.len() >= 5));
        let mut rng = Rng(7);
        let mut counts = vec![0usize; 5_000];
        for _ in 0..200_000 {
            counts[v.rank(&mut rng)] += 1;
        }
        // Zipf with exponent 1: rank 1 about twice as frequent as rank 2, ten times rank 10.
        let r12 = counts[0] as f64 / counts[1] as f64;
        let r1_10 = counts[0] as f64 / counts[9] as f64;
        assert!((r12 - 2.0).abs() < 0.2, "{r12}");
        assert!((r1_10 - 10.0).abs() < 1.5, "{r1_10}");
    }

    #[test]
    fn the_stream_is_seeded() {
        let v = Vocabulary::new(100);
        let (mut a, mut b) = (Rng(3), Rng(3));
        assert_eq!(v.text(&mut a, 20, 80), v.text(&mut b, 20, 80));
        let n = v.text(&mut a, 20, 80).split(' ').count();
        assert!((20..=80).contains(&n));
        let u = a.unit_vector(384);
        let norm: f32 = u.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
