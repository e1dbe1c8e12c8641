//! Recall of the graph search against brute force on seeded clustered data.

mod common;

use common::{build, data, recall};
use latentdb_index::Metric;

const N: usize = 20_000;
const DIM: usize = 64;
const QUERIES: usize = 200;

fn check_metric(metric: Metric) {
    let flat = data(N, DIM, 42);
    let idx = build(metric, DIM, &flat);
    let queries = data(QUERIES, DIM, 4242);
    let mut got = Vec::new();
    let mut truth = Vec::new();
    for q in queries.chunks_exact(DIM) {
        got.push(idx.search(q, 10, None).unwrap());
        truth.push(idx.exact_search_filtered(q, 10, &|_| true).unwrap());
    }
    let r = recall(&got, &truth);
    eprintln!("{metric}: recall@10 at default ef = {r:.4}");
    assert!(r >= 0.95, "{metric}: recall@10 {r} < 0.95");
    // Scores are best first in the metric's own direction.
    for hits in &got {
        for w in hits.windows(2) {
            if metric.higher_is_better() {
                assert!(w[0].score >= w[1].score);
            } else {
                assert!(w[0].score <= w[1].score);
            }
        }
    }
}

#[test]
fn recall_cosine() {
    check_metric(Metric::Cosine);
}

#[test]
fn recall_l2() {
    check_metric(Metric::L2);
}

#[test]
fn recall_dot() {
    check_metric(Metric::Dot);
}
