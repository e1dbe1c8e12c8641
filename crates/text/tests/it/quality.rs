//! Retrieval quality of the lexical leg on the dataset: nDCG@10 on the train and test qrels
//! for a few analyzer settings. A measurement, printed, not asserted:
//!
//! ```text
//! cargo test --release -p latentdb-text --test it quality -- --ignored --nocapture
//! ```

use std::collections::HashMap;

use latentdb_text::{AnalyzerConfig, Bm25Params, LexicalIndex, Stopwords};

use crate::common::{build, dataset, qrels};

/// Mean nDCG@10 over the queries of `qrels` (binary relevance).
fn ndcg_at_10(
    ix: &LexicalIndex,
    queries: &HashMap<&str, &str>,
    doc_ids: &[String],
    qrels: &HashMap<String, Vec<String>>,
) -> f64 {
    let mut total = 0.0;
    for (qid, relevant) in qrels {
        let hits = ix.search(queries[qid.as_str()], 10, Bm25Params::default(), None);
        let dcg: f64 = hits
            .iter()
            .enumerate()
            .filter(|(_, h)| relevant.contains(&doc_ids[h.point as usize]))
            .map(|(rank, _)| 1.0 / (rank as f64 + 2.0).log2())
            .sum();
        let ideal: f64 = (0..relevant.len().min(10))
            .map(|rank| 1.0 / (rank as f64 + 2.0).log2())
            .sum();
        total += dcg / ideal;
    }
    total / qrels.len() as f64
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn ndcg_on_the_dataset() {
    let data = dataset();
    let docs: Vec<(u32, &str)> = data
        .docs
        .iter()
        .enumerate()
        .map(|(i, t)| (i as u32, t.as_str()))
        .collect();
    let queries: HashMap<&str, &str> = data
        .queries
        .iter()
        .map(|(id, t)| (id.as_str(), t.as_str()))
        .collect();
    let train = qrels("train.tsv");
    let test = qrels("test.tsv");
    assert_eq!((train.len(), test.len()), (1332, 571));
    let configs = [
        (
            "default (stopwords, english stemmer)",
            AnalyzerConfig::default(),
        ),
        (
            "stopwords, no stemmer",
            AnalyzerConfig {
                stemmer: None,
                ..AnalyzerConfig::default()
            },
        ),
        (
            "no stopwords, no stemmer",
            AnalyzerConfig {
                stopwords: Stopwords::None,
                stemmer: None,
                ..AnalyzerConfig::default()
            },
        ),
        (
            "no stopwords, english stemmer",
            AnalyzerConfig {
                stopwords: Stopwords::None,
                ..AnalyzerConfig::default()
            },
        ),
    ];
    for (name, config) in configs {
        let ix = build(&config, &docs);
        let a = ndcg_at_10(&ix, &queries, &data.doc_ids, &train);
        let b = ndcg_at_10(&ix, &queries, &data.doc_ids, &test);
        println!("nDCG@10 {name:32} train {a:.4}  test {b:.4}");
        assert!(a > 0.0 && b > 0.0);
    }
}
