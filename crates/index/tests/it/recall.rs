//! Recall of the graph search against brute force on seeded clustered data.

use crate::common::{build, data, recall};
use latentdb_index::{Index, Metric};

const N: usize = 20_000;
const DIM: usize = 64;
const QUERIES: usize = 200;

/// Checks recall@10 >= 0.95 at `ef` (None: the default) against brute force.
pub fn check_recall(idx: &Index, metric: Metric, ef: Option<usize>) {
    let queries = data(QUERIES, DIM, 4242);
    let mut got = Vec::new();
    let mut truth = Vec::new();
    for q in queries.chunks_exact(DIM) {
        got.push(idx.search(q, 10, ef).unwrap());
        truth.push(idx.exact_search_filtered(q, 10, &|_| true).unwrap());
    }
    let r = recall(&got, &truth);
    eprintln!("{metric}: recall@10 at ef {ef:?} = {r:.4}");
    assert!(r >= 0.95, "{metric}: recall@10 {r} < 0.95");
    // Scores are best first, and a larger score is closer under every metric.
    for hits in &got {
        for w in hits.windows(2) {
            assert!(w[0].score >= w[1].score, "{metric}: scores not descending");
        }
    }
}

// Cosine is checked in search.rs, on the index the filter tests share.

#[test]
fn recall_l2_at_default_ef() {
    let idx = build(Metric::L2, DIM, &data(N, DIM, 42));
    check_recall(&idx, Metric::L2, None);
}

/// Inner-product search is harder for a proximity graph (no triangle inequality): on this
/// data it needs ef ~ 200-256 for 0.95, where cosine and L2 need the default 160.
#[test]
fn recall_dot_at_ef_256() {
    let idx = build(Metric::Dot, DIM, &data(N, DIM, 42));
    check_recall(&idx, Metric::Dot, Some(256));
}
