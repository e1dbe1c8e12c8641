//! Searching the index: BM25 scores accumulated term by term in a dense per-thread buffer,
//! the top k kept in a bounded heap.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::index::LexicalIndex;
use crate::params::Bm25Params;

/// One search result: a point and its BM25 score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LexicalHit {
    /// The point (the facade's dense id).
    pub point: u32,
    /// Its BM25 score, > 0.
    pub score: f32,
}

/// The per-thread buffers of a search.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    touched: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Zeroes the scores a search touched, even if the filter panics.
struct Cleanup<'a> {
    scores: &'a mut [f32],
    touched: &'a mut Vec<u32>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for &p in self.touched.iter() {
            self.scores[p as usize] = 0.0;
        }
        self.touched.clear();
    }
}

/// A top-k candidate ordered so that the greater is the *worse* (lower score, then higher
/// point): a max-heap of these keeps the worst of the best k on top.
#[derive(Clone, Copy, PartialEq)]
struct Candidate {
    score: f32,
    point: u32,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.point.cmp(&other.point))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The per-query constants of BM25.
struct Weights {
    /// `k1 * (1 - b)`.
    c1: f32,
    /// `k1 * b / avgdl`.
    c2: f32,
    /// `k1 + 1`.
    k1p1: f32,
}

impl Weights {
    /// The contribution of one posting: `w * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))`
    /// where `w` is the term's idf times its number of occurrences in the query.
    #[inline]
    fn score(&self, w: f32, tf: u32, dl: u32) -> f32 {
        let tf = tf as f32;
        w * (tf * self.k1p1) / (tf + self.c1 + self.c2 * dl as f32)
    }
}

/// `ln(1 + (N - df + 0.5) / (df + 0.5))`, always > 0.
fn idf(n: usize, df: u32) -> f64 {
    let (n, df) = (n as f64, df as f64);
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

impl LexicalIndex {
    /// The terms of `query` that occur in some document, each with its idf times its number
    /// of occurrences in the query, in the order of first occurrence in the query.
    fn query_terms(&self, query: &str) -> Vec<(u32, f32)> {
        let mut seen: Vec<(u32, usize)> = Vec::new();
        self.analyzer.for_each_token(query, |token| {
            if let Some(&id) = self.dict.get(token)
                && self.terms[id as usize].df > 0
            {
                seen.push((id, seen.len()));
            }
        });
        seen.sort_unstable();
        let n = self.slot_of.len();
        let mut terms: Vec<(usize, u32, f32)> = seen
            .chunk_by(|a, b| a.0 == b.0)
            .map(|run| {
                let id = run[0].0;
                let w = idf(n, self.terms[id as usize].df) * run.len() as f64;
                (run[0].1, id, w as f32)
            })
            .collect();
        terms.sort_unstable_by_key(|t| t.0);
        terms.into_iter().map(|(_, id, w)| (id, w)).collect()
    }

    fn weights(&self, params: Bm25Params) -> Option<Weights> {
        if self.slot_of.is_empty() || self.tokens == 0 {
            return None; // no document has a term: nothing can match
        }
        let avgdl = self.tokens as f64 / self.slot_of.len() as f64;
        let (k1, b) = (f64::from(params.k1), f64::from(params.b));
        Some(Weights {
            c1: (k1 * (1.0 - b)) as f32,
            c2: (k1 * b / avgdl) as f32,
            k1p1: (k1 + 1.0) as f32,
        })
    }

    /// The `k` documents scoring best for `query` under BM25 with `params`, best first (ties
    /// by point ascending), only documents with a score > 0 (at least one query term) and,
    /// with a `filter`, only points it accepts (it is asked only about points that would
    /// enter the top k). Repeated query terms count once per occurrence. `params` should be
    /// [validated](Bm25Params::validate) by the caller.
    pub fn search(
        &self,
        query: &str,
        k: usize,
        params: Bm25Params,
        filter: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<LexicalHit> {
        if k == 0 {
            return Vec::new();
        }
        let Some(weights) = self.weights(params) else {
            return Vec::new();
        };
        let terms = self.query_terms(query);
        if terms.is_empty() {
            return Vec::new();
        }
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.search_in(&mut scratch, &terms, &weights, k, filter),
            // A filter that searches on this thread: use a fresh buffer.
            Err(_) => self.search_in(&mut Scratch::default(), &terms, &weights, k, filter),
        })
    }

    fn search_in(
        &self,
        scratch: &mut Scratch,
        terms: &[(u32, f32)],
        weights: &Weights,
        k: usize,
        filter: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<LexicalHit> {
        if scratch.scores.len() < self.lens.len() {
            scratch.scores.resize(self.lens.len(), 0.0);
        }
        let acc = Cleanup {
            scores: &mut scratch.scores[..self.lens.len()],
            touched: &mut scratch.touched,
        };
        let lens = &self.lens[..];
        for &(t, w) in terms {
            for p in &self.terms[t as usize].postings {
                if p.tf == 0 {
                    continue;
                }
                let s = weights.score(w, p.tf, lens[p.slot as usize]);
                let acc_slot = &mut acc.scores[p.slot as usize];
                if *acc_slot == 0.0 {
                    acc.touched.push(p.slot);
                }
                *acc_slot += s;
            }
        }
        let mut heap: BinaryHeap<Candidate> =
            BinaryHeap::with_capacity(k.min(acc.touched.len()) + 1);
        for &slot in acc.touched.iter() {
            let c = Candidate {
                score: acc.scores[slot as usize],
                point: self.points[slot as usize],
            };
            if c.score <= 0.0 || c.score.is_nan() {
                continue;
            }
            if heap.len() >= k && heap.peek().is_some_and(|worst| c >= *worst) {
                continue;
            }
            if let Some(f) = filter
                && !f(c.point)
            {
                continue;
            }
            heap.push(c);
            if heap.len() > k {
                heap.pop();
            }
        }
        drop(acc);
        heap.into_sorted_vec()
            .into_iter()
            .map(|c| LexicalHit {
                point: c.point,
                score: c.score,
            })
            .collect()
    }

    /// The BM25 score of each of `points` for `query` (0 for a point without a document or
    /// without a query term), exactly as [`search`](Self::search) computes it.
    pub fn score_points(&self, query: &str, params: Bm25Params, points: &[u32]) -> Vec<f32> {
        let mut out = vec![0.0f32; points.len()];
        let Some(weights) = self.weights(params) else {
            return out;
        };
        let terms = self.query_terms(query);
        for (score, point) in out.iter_mut().zip(points) {
            let Some(&slot) = self.slot_of.get(point) else {
                continue;
            };
            let dl = self.lens[slot as usize];
            for &(t, w) in &terms {
                let postings = &self.terms[t as usize].postings;
                if let Ok(i) = postings.binary_search_by_key(&slot, |p| p.slot)
                    && postings[i].tf > 0
                {
                    *score += weights.score(w, postings[i].tf, dl);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyzer::AnalyzerConfig;

    fn index(docs: &[(u32, &str)]) -> LexicalIndex {
        let mut ix = LexicalIndex::new(AnalyzerConfig::default()).unwrap();
        for &(p, t) in docs {
            ix.insert(p, t);
        }
        ix
    }

    /// BM25 by the formula, for small hand-checked cases.
    fn bm25(n: f64, df: f64, tf: f64, dl: f64, avgdl: f64) -> f64 {
        let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
        idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avgdl))
    }

    #[test]
    fn scores_follow_the_formula() {
        let ix = index(&[(0, "cat dog"), (1, "cat cat fish"), (2, "bird")]);
        let p = Bm25Params::default();
        let avgdl = 6.0 / 3.0;
        let hits = ix.search("cat", 10, p, None);
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].point, 1);
        let want1 = bm25(3.0, 2.0, 2.0, 3.0, avgdl);
        let want0 = bm25(3.0, 2.0, 1.0, 2.0, avgdl);
        assert!((f64::from(hits[0].score) - want1).abs() < 1e-6);
        assert!((f64::from(hits[1].score) - want0).abs() < 1e-6);
        // A repeated query term counts twice.
        let twice = ix.score_points("cat cat", p, &[0, 1, 2, 9]);
        assert!((f64::from(twice[0]) - 2.0 * want0).abs() < 1e-5);
        assert!((f64::from(twice[1]) - 2.0 * want1).abs() < 1e-5);
        assert_eq!(&twice[2..], [0.0, 0.0]);
        // Stopwords and unknown words match nothing.
        assert!(ix.search("the unknown", 10, p, None).is_empty());
        assert!(ix.search("cat", 0, p, None).is_empty());
    }

    #[test]
    fn ties_break_by_point_and_filter_applies() {
        let ix = index(&[(5, "apple"), (3, "apple"), (9, "apple"), (1, "pear")]);
        let p = Bm25Params::default();
        let pts: Vec<u32> = ix
            .search("apple", 10, p, None)
            .iter()
            .map(|h| h.point)
            .collect();
        assert_eq!(pts, [3, 5, 9]);
        let pts: Vec<u32> = ix
            .search("apple", 2, p, None)
            .iter()
            .map(|h| h.point)
            .collect();
        assert_eq!(pts, [3, 5]);
        let odd_above_3 = |x: u32| x > 3;
        let pts: Vec<u32> = ix
            .search("apple", 1, p, Some(&odd_above_3))
            .iter()
            .map(|h| h.point)
            .collect();
        assert_eq!(pts, [5]);
    }

    #[test]
    fn a_panicking_filter_leaves_no_stale_scores() {
        let ix = index(&[(0, "apple"), (1, "apple pie")]);
        let p = Bm25Params::default();
        let before = ix.search("apple", 10, p, None);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ix.search("apple", 10, p, Some(&|_| panic!("filter")))
        }));
        assert!(r.is_err());
        assert_eq!(ix.search("apple", 10, p, None), before);
        // A filter that searches again on the same thread works too.
        let nested = |x: u32| !ix.search("pie", 1, p, None).is_empty() && x == 1;
        let hits = ix.search("apple", 10, p, Some(&nested));
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].point, 1);
    }

    #[test]
    fn k1_zero_and_b_extremes_still_score_matches() {
        let ix = index(&[(0, "red"), (1, "red red blue")]);
        for params in [
            Bm25Params { k1: 0.0, b: 0.0 },
            Bm25Params { k1: 0.0, b: 1.0 },
            Bm25Params { k1: 100.0, b: 1.0 },
        ] {
            let hits = ix.search("red", 10, params, None);
            assert_eq!(hits.len(), 2, "{params:?}");
            assert!(hits.iter().all(|h| h.score > 0.0 && h.score.is_finite()));
        }
    }
}
