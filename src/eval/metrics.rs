//! Retrieval metrics as BEIR reports them: nDCG@k, recall@k (from `pytrec_eval`, i.e.
//! `trec_eval`'s `ndcg_cut` and `recall`) and MRR@k (BEIR's own `mrr`).
//!
//! Definitions, for one query with graded judgments `rel(d)` (a document is relevant when
//! `rel(d) > 0`):
//!
//! - ranking: `trec_eval` orders a run by score, descending, ties by document id,
//!   descending; BEIR's MRR sorts by score only (stable, so ties keep retrieval order);
//! - `nDCG@k = DCG@k / IDCG@k`, `DCG@k = Σ_{i=1..k} rel(d_i) / log2(i + 1)` (gain is the
//!   relevance grade itself, as in `trec_eval`), `IDCG@k` the same over the judgments sorted
//!   by grade; 0 when there is no relevant document;
//! - `recall@k` = relevant documents in the top k / all relevant documents (0 when none);
//! - `MRR@k` = 1 / rank of the first relevant document in the top k, or 0.
//!
//! Each metric is averaged over the queries that have judgments; a judged query with no
//! results counts as 0. Like BEIR's `EvaluateRetrieval.evaluate` (`ignore_identical_ids`),
//! [`evaluate`] drops a hit whose document id equals the query id.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Relevance judgments: query id -> document id -> grade.
pub type Qrels = HashMap<String, HashMap<String, i32>>;

/// One query's results: (document id, score), in retrieval order.
pub type Hits = Vec<(String, f32)>;

/// Averaged metrics over a query set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// nDCG@10.
    #[serde(rename = "ndcg@10")]
    pub ndcg_at_10: f64,
    /// MRR@10.
    #[serde(rename = "mrr@10")]
    pub mrr_at_10: f64,
    /// Recall@10.
    #[serde(rename = "recall@10")]
    pub recall_at_10: f64,
    /// Recall@100.
    #[serde(rename = "recall@100")]
    pub recall_at_100: f64,
    /// Queries averaged over (those with judgments).
    pub queries: usize,
}

/// Evaluates a run against judgments (see the module docs). Queries of the run without
/// judgments are ignored.
pub fn evaluate(qrels: &Qrels, run: &HashMap<String, Hits>) -> Metrics {
    let mut sums = [0f64; 4];
    let empty = Vec::new();
    for (qid, judged) in qrels {
        let hits: Vec<(String, f32)> = run
            .get(qid)
            .unwrap_or(&empty)
            .iter()
            .filter(|(doc, _)| doc != qid)
            .cloned()
            .collect();
        let ranked = trec_order(&hits);
        sums[0] += ndcg_at(judged, &ranked, 10);
        sums[1] += mrr_at(judged, &beir_order(&hits), 10);
        sums[2] += recall_at(judged, &ranked, 10);
        sums[3] += recall_at(judged, &ranked, 100);
    }
    let n = qrels.len();
    let avg = |s: f64| if n == 0 { 0.0 } else { s / n as f64 };
    Metrics {
        ndcg_at_10: avg(sums[0]),
        mrr_at_10: avg(sums[1]),
        recall_at_10: avg(sums[2]),
        recall_at_100: avg(sums[3]),
        queries: n,
    }
}

/// Document ids by score descending, ties by id descending (`trec_eval`).
pub fn trec_order(hits: &[(String, f32)]) -> Vec<&str> {
    let mut v: Vec<&(String, f32)> = hits.iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    v.into_iter().map(|(d, _)| d.as_str()).collect()
}

/// Document ids by score descending, ties in retrieval order (BEIR's `sorted(..., reverse)`).
pub fn beir_order(hits: &[(String, f32)]) -> Vec<&str> {
    let mut v: Vec<&(String, f32)> = hits.iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.into_iter().map(|(d, _)| d.as_str()).collect()
}

fn grade(judged: &HashMap<String, i32>, doc: &str) -> i32 {
    judged.get(doc).copied().unwrap_or(0)
}

/// nDCG@k of a ranking (`trec_eval` `ndcg_cut.k`).
pub fn ndcg_at(judged: &HashMap<String, i32>, ranked: &[&str], k: usize) -> f64 {
    let discount = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| f64::from(grade(judged, d).max(0)) * discount(i))
        .sum();
    let mut ideal: Vec<i32> = judged.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &g)| f64::from(g) * discount(i))
        .sum();
    if idcg > 0.0 { dcg / idcg } else { 0.0 }
}

/// Recall@k of a ranking (`trec_eval` `recall.k`).
pub fn recall_at(judged: &HashMap<String, i32>, ranked: &[&str], k: usize) -> f64 {
    let relevant = judged.values().filter(|&&g| g > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|d| grade(judged, d) > 0)
        .count();
    found as f64 / relevant as f64
}

/// MRR@k of a ranking (BEIR's `mrr`).
pub fn mrr_at(judged: &HashMap<String, i32>, ranked: &[&str], k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|d| grade(judged, d) > 0)
        .map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, i32)]) -> HashMap<String, i32> {
        pairs.iter().map(|(d, g)| (d.to_string(), *g)).collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn ndcg_by_hand() {
        // Binary: relevant at ranks 1 and 3, two relevant documents.
        let j = judged(&[("a", 1), ("c", 1)]);
        let dcg = 1.0 + 1.0 / 4f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2();
        close(ndcg_at(&j, &["a", "b", "c"], 10), dcg / idcg);
        // Only the top 2 count at k=2.
        close(ndcg_at(&j, &["a", "b", "c"], 2), 1.0 / idcg);
        // Graded (linear gain): grades 2 and 1, ranked in the wrong order.
        let j = judged(&[("x", 2), ("y", 1), ("z", 0)]);
        let dcg = 1.0 + 2.0 / 3f64.log2();
        let idcg = 2.0 + 1.0 / 3f64.log2();
        close(ndcg_at(&j, &["y", "x", "z"], 10), dcg / idcg);
        // Nothing relevant judged.
        close(ndcg_at(&judged(&[("q", 0)]), &["q"], 10), 0.0);
        // Ideal DCG counts relevant documents never retrieved.
        let j = judged(&[("a", 1), ("m", 1)]);
        close(ndcg_at(&j, &["a"], 10), 1.0 / (1.0 + 1.0 / 3f64.log2()));
    }

    #[test]
    fn recall_and_mrr_by_hand() {
        let j = judged(&[("a", 1), ("b", 1), ("c", 1), ("z", 0)]);
        let ranked = ["z", "b", "q", "c"];
        close(recall_at(&j, &ranked, 2), 1.0 / 3.0);
        close(recall_at(&j, &ranked, 10), 2.0 / 3.0);
        close(mrr_at(&j, &ranked, 10), 0.5);
        close(mrr_at(&j, &ranked, 1), 0.0);
        close(mrr_at(&j, &["q"], 10), 0.0);
        close(recall_at(&judged(&[]), &ranked, 10), 0.0);
    }

    #[test]
    fn ties_follow_trec_eval_and_beir() {
        let hits: Hits = vec![("a".into(), 1.0), ("c".into(), 1.0), ("b".into(), 2.0)];
        assert_eq!(trec_order(&hits), ["b", "c", "a"]);
        assert_eq!(beir_order(&hits), ["b", "a", "c"]);
    }

    #[test]
    fn evaluate_averages_over_judged_queries() {
        let mut qrels = Qrels::new();
        qrels.insert("q1".into(), judged(&[("d1", 1)]));
        qrels.insert("q2".into(), judged(&[("d2", 1), ("d3", 1)]));
        qrels.insert("q3".into(), judged(&[("d9", 1)])); // no results: counts as 0
        let mut run = HashMap::new();
        // q1: relevant at rank 2 (after a hit equal to the query id, which is dropped: rank 1).
        run.insert(
            "q1".to_string(),
            vec![("q1".into(), 9.0), ("x".into(), 0.9), ("d1".into(), 0.8)],
        );
        // q2: one of two relevant at rank 1.
        run.insert(
            "q2".to_string(),
            vec![("d2".into(), 0.5), ("y".into(), 0.4)],
        );
        // An unjudged query is ignored.
        run.insert("q4".to_string(), vec![("d1".into(), 1.0)]);
        let m = evaluate(&qrels, &run);
        assert_eq!(m.queries, 3);
        let q1_ndcg = 1.0 / 3f64.log2();
        let q2_ndcg = 1.0 / (1.0 + 1.0 / 3f64.log2());
        close(m.ndcg_at_10, (q1_ndcg + q2_ndcg) / 3.0);
        close(m.mrr_at_10, (0.5 + 1.0) / 3.0);
        close(m.recall_at_10, (1.0 + 0.5) / 3.0);
        close(m.recall_at_100, m.recall_at_10);
    }
}
