//! Fitting a collection's default fusion ([`crate::Tuner::fit_fusion`]): every judged query of a
//! split is searched once by the dense leg and once by the lexical leg (`depth` candidates
//! each); the fusion parameters are then chosen offline, by grid search with
//! [`crate::fusion::fuse`] over those two result lists, for the best nDCG@10 on the split's
//! judgments. No model is trained and no other split is read: fit on `train` (or `dev`) and
//! evaluate on `test`.

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::database::Database;
use crate::error::{Error, Result, bounded};
use crate::eval::metrics::{self, Hits, Metrics, Qrels};
use crate::eval::run::split_queries;
use crate::eval::{BeirDataset, Evaluator};
use crate::fusion::{self, FusionMethod, FusionParams};
use crate::search::{MAX_K, SearchMode, SearchRequest};

/// Hits retrieved per query when scoring, as [`Evaluator::evaluate_beir`] does (recall@100).
const EVAL_HITS: usize = 100;

/// Queries per batched search.
const QUERY_BATCH: usize = 256;

/// Options of [`crate::Tuner::fit_fusion`]: the candidates per leg and the grid searched.
#[derive(Debug, Clone, PartialEq)]
pub struct FusionFitOptions {
    /// Candidates taken from each leg (the hybrid `depth` the parameters are fitted for, and
    /// stored with them), 10..=10000.
    pub depth: usize,
    /// A task naming the query instruction of the dense leg (instruction models only).
    pub task: Option<String>,
    /// A query instruction sentence for the dense leg (instruction models only).
    pub instruction: Option<String>,
    /// Brute-force dense search instead of the graph.
    pub exact: bool,
    /// The graph's candidate list size for the dense leg (`None`: the collection's default).
    pub ef: Option<usize>,
    /// The methods tried.
    pub methods: Vec<FusionMethod>,
    /// RRF's rank constants tried.
    pub rrf_ks: Vec<f32>,
    /// The lexical leg's share `w` of the weight, tried as weights `[1 - w, w]` (`1 - w`
    /// rounded to 4 decimals); each in `(0, 1]`.
    pub lexical_shares: Vec<f32>,
    /// Runner-up parameter sets listed in the report.
    pub alternatives: usize,
    /// Store the best parameters as the collection's default fusion when they beat both legs.
    pub store: bool,
}

impl Default for FusionFitOptions {
    fn default() -> Self {
        FusionFitOptions {
            depth: 100,
            task: None,
            instruction: None,
            exact: false,
            ef: None,
            methods: FusionMethod::ALL.to_vec(),
            rrf_ks: vec![1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0],
            lexical_shares: vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
            alternatives: 5,
            store: true,
        }
    }
}

impl FusionFitOptions {
    /// Every parameter set of the grid, in a fixed order (methods, then RRF's `k`, then the
    /// weights); an error when the grid is empty or a value is out of range.
    pub fn grid(&self) -> Result<Vec<FusionParams>> {
        if !(10..=fusion::MAX_DEPTH.min(MAX_K)).contains(&self.depth) {
            return Err(Error::InvalidArgument(format!(
                "the fusion depth must be between 10 and {}, got {}",
                fusion::MAX_DEPTH.min(MAX_K),
                self.depth
            )));
        }
        if let Some(w) = self
            .lexical_shares
            .iter()
            .find(|w| !(w.is_finite() && **w > 0.0 && **w <= 1.0))
        {
            return Err(Error::InvalidArgument(format!(
                "a lexical weight share must be in (0, 1], got {w}"
            )));
        }
        let mut grid = Vec::new();
        for &method in &self.methods {
            // RRF's k only matters to RRF; the others take one (unused) value.
            let ks: &[f32] = match method {
                FusionMethod::Rrf => &self.rrf_ks,
                _ => &[60.0],
            };
            for &rrf_k in ks {
                for &w in &self.lexical_shares {
                    // 1 - w to 4 decimals: 1 - 0.6 is 0.4, not 0.39999998.
                    let dense = ((1.0 - w) * 1e4).round() / 1e4;
                    let p = FusionParams {
                        method,
                        rrf_k,
                        weights: [dense, w],
                    };
                    p.validate()?;
                    if !grid.contains(&p) {
                        grid.push(p);
                    }
                }
            }
        }
        if grid.is_empty() {
            return Err(Error::InvalidArgument(
                "the fusion grid is empty: give at least one method, RRF k and weight".into(),
            ));
        }
        Ok(grid)
    }
}

/// A parameter set and its scores on the fitting split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FusionCandidate {
    /// The fusion parameters.
    pub params: FusionParams,
    /// nDCG@10, MRR@10, recall@10 and recall@100 of the fused top 100.
    pub metrics: Metrics,
}

/// What [`crate::Tuner::fit_fusion`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusionFitReport {
    /// The collection.
    pub collection: String,
    /// The split fitted on (its judgments are the objective).
    pub split: String,
    /// Judged queries of the split.
    pub queries: usize,
    /// Candidates per leg.
    pub depth: usize,
    /// The dense leg alone.
    pub dense: Metrics,
    /// The lexical leg alone.
    pub lexical: Metrics,
    /// The collection's default fusion before the fit, scored the same way (at `depth`).
    pub previous: FusionCandidate,
    /// The best parameter set (highest nDCG@10; ties: higher recall@100, then grid order).
    pub best: FusionCandidate,
    /// The next best parameter sets, best first.
    pub alternatives: Vec<FusionCandidate>,
    /// Parameter sets tried.
    pub configurations: usize,
    /// Whether the best set's nDCG@10 is above both legs'.
    pub beats_both_legs: bool,
    /// Whether the best set (and `depth`) became the collection's default fusion.
    pub stored: bool,
    /// Why it was or was not stored.
    pub decision: String,
    /// Corpus documents loaded first (the collection was empty).
    pub ingested: u64,
    /// Seconds spent embedding and searching (both legs).
    pub search_seconds: f64,
    /// Seconds spent on the grid search.
    pub fit_seconds: f64,
}

/// One query's id and its dense and lexical hits (interned ids, best first).
type QueryLegs = (String, Vec<(u32, f32)>, Vec<(u32, f32)>);

/// Both legs' results for the judged queries, with document ids interned.
#[derive(Debug, Default)]
pub(crate) struct LegRuns {
    /// Document ids by interned number.
    ids: Vec<String>,
    by_id: HashMap<String, u32>,
    /// Query id, dense hits, lexical hits (best first).
    queries: Vec<QueryLegs>,
}

impl LegRuns {
    fn intern(&mut self, id: String) -> u32 {
        if let Some(&n) = self.by_id.get(&id) {
            return n;
        }
        let n = self.ids.len() as u32;
        self.ids.push(id.clone());
        self.by_id.insert(id, n);
        n
    }

    /// Adds one query's two result lists.
    pub(crate) fn push(&mut self, qid: String, dense: Hits, lexical: Hits) {
        let dense = dense
            .into_iter()
            .map(|(d, s)| (self.intern(d), s))
            .collect();
        let lexical = lexical
            .into_iter()
            .map(|(d, s)| (self.intern(d), s))
            .collect();
        self.queries.push((qid, dense, lexical));
    }

    fn hits(&self, list: &[(u32, f32)]) -> Hits {
        list.iter()
            .take(EVAL_HITS)
            .map(|&(d, s)| (self.ids[d as usize].clone(), s))
            .collect()
    }

    /// One leg alone (`dense` or lexical), scored.
    pub(crate) fn score_leg(&self, qrels: &Qrels, dense: bool) -> Metrics {
        let run: HashMap<String, Hits> = self
            .queries
            .iter()
            .map(|(q, d, l)| (q.clone(), self.hits(if dense { d } else { l })))
            .collect();
        metrics::evaluate(qrels, &run)
    }

    /// The fused top 100 of every query under `params`, scored.
    pub(crate) fn score(&self, qrels: &Qrels, params: &FusionParams) -> Metrics {
        let run: HashMap<String, Hits> = self
            .queries
            .iter()
            .map(|(q, d, l)| {
                let fused = fusion::fuse(d, l, params, EVAL_HITS);
                let hits = fused
                    .into_iter()
                    .map(|f| (self.ids[f.id as usize].clone(), f.score))
                    .collect();
                (q.clone(), hits)
            })
            .collect();
        metrics::evaluate(qrels, &run)
    }
}

/// Scores every parameter set of `grid`; returns them best first (nDCG@10, then recall@100,
/// then grid order).
pub(crate) fn rank_grid(
    runs: &LegRuns,
    qrels: &Qrels,
    grid: &[FusionParams],
) -> Vec<FusionCandidate> {
    let mut scored: Vec<(usize, FusionCandidate)> = grid
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                i,
                FusionCandidate {
                    params: *p,
                    metrics: runs.score(qrels, p),
                },
            )
        })
        .collect();
    scored.sort_by(|(ia, a), (ib, b)| {
        b.metrics
            .ndcg_at_10
            .total_cmp(&a.metrics.ndcg_at_10)
            .then_with(|| b.metrics.recall_at_100.total_cmp(&a.metrics.recall_at_100))
            .then_with(|| ia.cmp(ib))
    });
    scored.into_iter().map(|(_, c)| c).collect()
}

/// [`crate::Tuner::fit_fusion`].
pub(crate) fn fit(
    db: &Database,
    collection: &str,
    dataset: &BeirDataset,
    split: &str,
    opts: &FusionFitOptions,
) -> Result<FusionFitReport> {
    let grid = opts.grid()?;
    if db.embedder_settings(collection)?.is_none() {
        return Err(Error::FailedPrecondition(format!(
            "collection {:?} has no model: fusion fitting needs the dense leg of text queries",
            bounded(collection)
        )));
    }
    let settings = db.lexical_settings(collection)?;
    if !settings.enabled {
        return Err(Error::FailedPrecondition(format!(
            "collection {:?} has no lexical index: fusion fitting needs the lexical leg",
            bounded(collection)
        )));
    }
    let (qrels, queries) = split_queries(dataset, split)?;
    let mut ingested = 0;
    if db.count(collection)? == 0 {
        ingested = Evaluator::new(db).load_beir_corpus(collection, dataset, &|_| {})?;
    }

    let started = Instant::now();
    let mut runs = LegRuns::default();
    for part in queries.chunks(QUERY_BATCH) {
        let base = |text: &str, mode: SearchMode| SearchRequest {
            text: Some(text.to_string()),
            k: opts.depth,
            mode: Some(mode),
            with_text: false,
            with_metadata: false,
            ..SearchRequest::default()
        };
        let dense: Vec<SearchRequest> = part
            .iter()
            .map(|(_, text)| SearchRequest {
                task: opts.task.clone(),
                instruction: opts.instruction.clone(),
                ef: opts.ef,
                exact: opts.exact,
                ..base(text, SearchMode::Dense)
            })
            .collect();
        let lexical: Vec<SearchRequest> = part
            .iter()
            .map(|(_, text)| base(text, SearchMode::Lexical))
            .collect();
        let dense = db.search_batch(collection, &dense)?;
        let lexical = db.search_batch(collection, &lexical)?;
        for (((qid, _), d), l) in part.iter().zip(dense).zip(lexical) {
            let hits = |hs: Vec<crate::search::SearchHit>| -> Hits {
                hs.into_iter()
                    .map(|h| (h.id.into_string(), h.score))
                    .collect()
            };
            runs.push(qid.clone(), hits(d), hits(l));
        }
    }
    let search_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let dense = runs.score_leg(&qrels, true);
    let lexical = runs.score_leg(&qrels, false);
    let previous = FusionCandidate {
        params: settings.fusion,
        metrics: runs.score(&qrels, &settings.fusion),
    };
    let ranked = rank_grid(&runs, &qrels, &grid);
    let fit_seconds = started.elapsed().as_secs_f64();
    let best = ranked[0];
    let alternatives: Vec<FusionCandidate> = ranked
        .iter()
        .skip(1)
        .take(opts.alternatives)
        .copied()
        .collect();

    let b = best.metrics.ndcg_at_10;
    let beats_both_legs = b > dense.ndcg_at_10 && b > lexical.ndcg_at_10;
    let describe = |p: &FusionParams| {
        format!(
            "{} (rrf_k {}, weights {}/{})",
            p.method, p.rrf_k, p.weights[0], p.weights[1]
        )
    };
    let (stored, decision) = if !beats_both_legs {
        (
            false,
            format!(
                "not stored: the best fusion {} scores nDCG@10 {b:.4} on {split}, not above both \
                 the dense leg ({:.4}) and the lexical leg ({:.4})",
                describe(&best.params),
                dense.ndcg_at_10,
                lexical.ndcg_at_10
            ),
        )
    } else if !opts.store {
        (
            false,
            format!(
                "not stored (asked not to): the best fusion {} scores nDCG@10 {b:.4} on {split}, \
                 above dense {:.4} and lexical {:.4}",
                describe(&best.params),
                dense.ndcg_at_10,
                lexical.ndcg_at_10
            ),
        )
    } else {
        let mut next = db.lexical_settings(collection)?;
        next.fusion = best.params;
        next.depth = opts.depth;
        db.set_lexical_settings(collection, next)?;
        (
            true,
            format!(
                "stored as the collection's default: {} at depth {} scores nDCG@10 {b:.4} on \
                 {split}, above dense {:.4}, lexical {:.4} and the previous default {:.4}",
                describe(&best.params),
                opts.depth,
                dense.ndcg_at_10,
                lexical.ndcg_at_10,
                previous.metrics.ndcg_at_10
            ),
        )
    };
    Ok(FusionFitReport {
        collection: collection.to_string(),
        split: split.to_string(),
        queries: qrels.len(),
        depth: opts.depth,
        dense,
        lexical,
        previous,
        best,
        alternatives,
        configurations: grid.len(),
        beats_both_legs,
        stored,
        decision,
        ingested,
        search_seconds,
        fit_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qrels(pairs: &[(&str, &str)]) -> Qrels {
        let mut q = Qrels::new();
        for (qid, doc) in pairs {
            q.entry(qid.to_string())
                .or_default()
                .insert(doc.to_string(), 1);
        }
        q
    }

    fn hits(docs: &[&str]) -> Hits {
        docs.iter()
            .enumerate()
            .map(|(i, d)| (d.to_string(), 10.0 - i as f32))
            .collect()
    }

    /// Dense finds q1's document first and q2's late; lexical the other way round. Any
    /// balanced fusion puts both near the top.
    fn complementary() -> (LegRuns, Qrels) {
        let mut runs = LegRuns::default();
        runs.push(
            "q1".into(),
            hits(&[
                "a", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "b",
            ]),
            hits(&[
                "y1", "y2", "a", "y3", "y4", "y5", "y6", "y7", "y8", "y9", "y10", "y11",
            ]),
        );
        runs.push(
            "q2".into(),
            hits(&[
                "z1", "z2", "b", "z3", "z4", "z5", "z6", "z7", "z8", "z9", "z10", "z11",
            ]),
            hits(&[
                "b", "w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9", "w10", "a",
            ]),
        );
        (runs, qrels(&[("q1", "a"), ("q2", "b")]))
    }

    #[test]
    fn legs_are_scored_alone() {
        let (runs, qrels) = complementary();
        let dense = runs.score_leg(&qrels, true);
        let lexical = runs.score_leg(&qrels, false);
        // Each leg: rank 1 for one query, rank 3 for the other.
        let want = (1.0 + 1.0 / 4f64.log2()) / 2.0;
        assert!((dense.ndcg_at_10 - want).abs() < 1e-12, "{dense:?}");
        assert!((lexical.ndcg_at_10 - want).abs() < 1e-12, "{lexical:?}");
        assert_eq!(dense.queries, 2);
    }

    #[test]
    fn the_grid_search_finds_a_fusion_above_both_legs() {
        let (runs, qrels) = complementary();
        let opts = FusionFitOptions::default();
        let grid = opts.grid().unwrap();
        assert_eq!(grid.len(), 8 * 9 + 9 + 9);
        // Weights are [1 - w, w] with 1 - w as written: 1 - 0.6 is 0.4.
        assert!(grid.iter().any(|p| p.weights == [0.4, 0.6]));
        assert!(
            grid.iter()
                .all(|p| (p.weights[0] + p.weights[1] - 1.0).abs() < 1e-6)
        );
        let ranked = rank_grid(&runs, &qrels, &grid);
        assert_eq!(ranked.len(), grid.len());
        let dense = runs.score_leg(&qrels, true).ndcg_at_10;
        assert!(
            ranked[0].metrics.ndcg_at_10 > dense + 0.05,
            "{:?}",
            ranked[0]
        );
        for w in ranked.windows(2) {
            assert!(w[0].metrics.ndcg_at_10 >= w[1].metrics.ndcg_at_10);
        }
        // A fusion that ignores the lexical leg scores like the dense leg.
        let dense_only = FusionParams {
            method: FusionMethod::Rrf,
            rrf_k: 60.0,
            weights: [1.0, 0.0],
        };
        assert!((runs.score(&qrels, &dense_only).ndcg_at_10 - dense).abs() < 1e-12);
    }

    #[test]
    fn ties_keep_grid_order() {
        let (runs, qrels) = complementary();
        // At equal weights every RRF k ranks the relevant documents first here (each is the
        // only candidate in both legs of its query): equal scores, so grid order decides.
        let grid: Vec<FusionParams> = [5.0, 1.0, 60.0]
            .iter()
            .map(|&rrf_k| FusionParams {
                method: FusionMethod::Rrf,
                rrf_k,
                weights: [0.5, 0.5],
            })
            .collect();
        let ranked = rank_grid(&runs, &qrels, &grid);
        assert!((ranked[0].metrics.ndcg_at_10 - 1.0).abs() < 1e-12);
        assert_eq!(ranked[0].metrics, ranked[2].metrics);
        let ks: Vec<f32> = ranked.iter().map(|c| c.params.rrf_k).collect();
        assert_eq!(ks, [5.0, 1.0, 60.0]);
    }

    #[test]
    fn bad_grids_are_refused() {
        let bad = |o: FusionFitOptions| o.grid().unwrap_err().kind();
        use latentdb_types::ErrorKind::InvalidArgument;
        assert_eq!(
            bad(FusionFitOptions {
                depth: 5,
                ..FusionFitOptions::default()
            }),
            InvalidArgument
        );
        assert_eq!(
            bad(FusionFitOptions {
                methods: vec![],
                ..FusionFitOptions::default()
            }),
            InvalidArgument
        );
        for w in [0.0, -0.5, 1.5, f32::NAN] {
            assert_eq!(
                bad(FusionFitOptions {
                    lexical_shares: vec![0.5, w],
                    ..FusionFitOptions::default()
                }),
                InvalidArgument
            );
        }
        assert_eq!(
            bad(FusionFitOptions {
                rrf_ks: vec![0.0],
                methods: vec![FusionMethod::Rrf],
                ..FusionFitOptions::default()
            }),
            InvalidArgument
        );
    }
}
