//! Lexical index timings on 100k synthetic documents of 50 Zipf-distributed words (50k-word
//! vocabulary, exponent 1): building (µs per insert, printed), search for 2- and 3-word
//! queries drawn from the same distribution (so often very common words), replacing a
//! document (remove + insert), and a persist + load round trip (printed).
//!
//! ```text
//! cargo bench -p latentdb-text --bench lexical
//! ```

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use latentdb_text::synth::ZipfText;
use latentdb_text::{Analyzer, AnalyzerConfig, Bm25Params, LexicalIndex};

const DOCS: usize = 100_000;
const WORDS: usize = 50;
const VOCAB: usize = 50_000;

fn bench(c: &mut Criterion) {
    let mut zipf = ZipfText::new(VOCAB, 1.0, 1);
    let texts: Vec<String> = (0..DOCS).map(|_| zipf.text(WORDS)).collect();
    let config = AnalyzerConfig::default();

    let analyzer = Analyzer::new(&config).unwrap();
    let start = Instant::now();
    let mut tokens = 0usize;
    for t in &texts {
        analyzer.for_each_token(t, |_| tokens += 1);
    }
    let analyze = start.elapsed();
    let mut ix = LexicalIndex::new(config).unwrap();
    let start = Instant::now();
    for (p, t) in texts.iter().enumerate() {
        ix.insert(p as u32, t);
    }
    let build = start.elapsed();
    eprintln!(
        "build {DOCS} docs x {WORDS} words: {:.2} µs/doc ({:.2} µs/doc of it analysis), {:?}",
        build.as_secs_f64() * 1e6 / DOCS as f64,
        analyze.as_secs_f64() * 1e6 / DOCS as f64,
        ix.stats()
    );
    real_texts();
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    ix.persist(dir.path(), 1).unwrap();
    let persist = start.elapsed();
    let start = Instant::now();
    let (loaded, _) = LexicalIndex::load(dir.path()).unwrap().unwrap();
    eprintln!(
        "persist {:.1} ms, load {:.1} ms",
        persist.as_secs_f64() * 1e3,
        start.elapsed().as_secs_f64() * 1e3
    );
    drop(loaded);

    let params = Bm25Params::default();
    for words in [2, 3] {
        let queries: Vec<String> = (0..1000).map(|_| zipf.text(words)).collect();
        let mut i = 0;
        c.bench_function(&format!("search {words} words k=10, {DOCS} docs"), |b| {
            b.iter(|| {
                i += 1;
                black_box(ix.search(&queries[i % queries.len()], 10, params, None))
            })
        });
    }
    // Queries of mid-frequency words (ranks 100..10000), more like real keyword queries.
    let queries: Vec<String> = (0..1000)
        .map(|_| {
            (0..2)
                .map(|_| latentdb_text::synth::word(100 + (zipf.next_u64() % 9900) as usize))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let mut i = 0;
    c.bench_function(
        &format!("search 2 mid-frequency words k=10, {DOCS} docs"),
        |b| {
            b.iter(|| {
                i += 1;
                black_box(ix.search(&queries[i % queries.len()], 10, params, None))
            })
        },
    );
    let fresh: Vec<String> = (0..1000).map(|_| zipf.text(WORDS)).collect();
    let mut i = 0;
    c.bench_function(&format!("replace a {WORDS}-word doc, {DOCS} docs"), |b| {
        b.iter(|| {
            i += 1;
            ix.insert((i * 7919 % DOCS) as u32, &fresh[i % fresh.len()]);
        })
    });
}

/// Prints the insert rate on the real e-mail bodies of the spamassassin-subjects fixture.
fn real_texts() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/datasets/spamassassin-subjects/corpus.jsonl");
    let Ok(corpus) = std::fs::read_to_string(&path) else {
        eprintln!(
            "{} not found; skipping the real-text timing",
            path.display()
        );
        return;
    };
    let texts: Vec<String> = corpus
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_owned))
        .collect();
    let words: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let mut ix = LexicalIndex::new(AnalyzerConfig::default()).unwrap();
        let start = Instant::now();
        for (p, t) in texts.iter().enumerate() {
            ix.insert(p as u32, t);
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    eprintln!(
        "real e-mail bodies: {} docs, {:.0} words/doc: {:.1} µs/doc, {:.0} ns/word",
        texts.len(),
        words as f64 / texts.len() as f64,
        best * 1e6 / texts.len() as f64,
        best * 1e9 / words as f64
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
