//! Positive-aware hard-negative selection (NV-Retriever's TopK-PercPos).
//!
//! Candidates come from a search of the collection's own index with the current model. A
//! candidate is a hard negative only if it is not a known positive of the query and its score
//! is below `margin × score(positive)`: candidates scoring about as high as the positive are
//! likely unlabelled positives (false negatives) and would teach the model the wrong thing.
//!
//! [`mine`] is the mining phase of a tuning run: every training pair resolved to an
//! [`Example`] with its hard negatives.

use std::collections::{HashMap, HashSet};

use super::TuneOptions;
use super::evaluate::dot;
use super::pairs::Plan;
use super::train::{DocKey, Example};
use crate::database::Database;
use crate::error::Result;
use crate::search::SearchRequest;

/// Queries per batched search while mining.
const MINE_BATCH: usize = 256;

/// What the mining phase produced.
pub(super) struct Mined<'p> {
    /// One example per training pair.
    pub examples: Vec<Example>,
    /// The known positives of each training query (by query index).
    pub positives_of: HashMap<usize, HashSet<&'p str>>,
    /// Candidates dropped by the positive-aware filter.
    pub dropped_false_negatives: usize,
    /// Hard negatives found, over all examples.
    pub negatives: usize,
}

/// Mines hard negatives for the plan's training pairs from `collection`'s index, searched
/// with the live model's query vectors `query_vecs`; `doc_vecs` are the live model's document
/// vectors (by document index, `by_id` maps ids to it).
pub(super) fn mine<'p>(
    db: &Database,
    collection: &str,
    plan: &'p Plan,
    by_id: &HashMap<&str, usize>,
    doc_vecs: &[Vec<f32>],
    query_vecs: &[Vec<f32>],
    opts: &TuneOptions,
) -> Result<Mined<'p>> {
    let mut positives_of: HashMap<usize, HashSet<&str>> = HashMap::new();
    for (p, &q) in plan.train.iter().zip(&plan.train_q) {
        positives_of
            .entry(q)
            .or_default()
            .insert(p.positive.as_str());
    }
    let depth = match opts.mine_depth {
        0 => opts.hard_negatives * 3 + 10,
        d => d,
    }
    .min(crate::search::MAX_K);
    let mut distinct: Vec<usize> = plan.train_q.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let mut candidates: HashMap<usize, Vec<(String, f32)>> = HashMap::new();
    for part in distinct.chunks(MINE_BATCH) {
        let reqs: Vec<SearchRequest> = part
            .iter()
            .map(|&q| SearchRequest {
                k: depth,
                with_text: false,
                with_metadata: false,
                ..SearchRequest::vector(query_vecs[q].clone())
            })
            .collect();
        for (&q, hits) in part.iter().zip(db.search_batch(collection, &reqs)?) {
            candidates.insert(
                q,
                hits.into_iter()
                    .map(|h| (h.id.into_string(), h.score))
                    .collect(),
            );
        }
    }
    let overrides: HashSet<usize> = plan.overrides().iter().map(|(i, _)| *i).collect();
    let mut examples = Vec::with_capacity(plan.train.len());
    let (mut dropped_false_negatives, mut negatives) = (0, 0);
    let empty = HashSet::new();
    for (i, (p, &q)) in plan.train.iter().zip(&plan.train_q).enumerate() {
        // Plan::build kept only pairs whose positive is a document.
        let Some(&pos_doc) = by_id.get(p.positive.as_str()) else {
            continue;
        };
        let pos_score = dot(&query_vecs[q], &doc_vecs[pos_doc]);
        let positives = positives_of.get(&q).unwrap_or(&empty);
        let cands = candidates.get(&q).map(Vec::as_slice).unwrap_or(&[]);
        let limit = opts.margin * pos_score;
        dropped_false_negatives += cands
            .iter()
            .filter(|(id, s)| !positives.contains(id.as_str()) && *s >= limit)
            .count();
        let negs: Vec<usize> = positive_aware(
            cands,
            positives,
            pos_score,
            opts.margin,
            opts.hard_negatives,
        )
        .into_iter()
        .filter_map(|id| by_id.get(id).copied())
        .collect();
        negatives += negs.len();
        examples.push(Example {
            query: q,
            positive: if overrides.contains(&i) {
                DocKey::Override(i)
            } else {
                DocKey::Doc(pos_doc)
            },
            positive_doc: pos_doc,
            negatives: negs,
        });
    }
    Ok(Mined {
        examples,
        positives_of,
        dropped_false_negatives,
        negatives,
    })
}

/// The hard negatives of one query: the best-scoring `k` candidates (in the order given, best
/// first) that are not in `positives` and score below `margin * positive_score`.
pub fn positive_aware<'a>(
    candidates: &'a [(String, f32)],
    positives: &HashSet<&str>,
    positive_score: f32,
    margin: f32,
    k: usize,
) -> Vec<&'a str> {
    let limit = margin * positive_score;
    candidates
        .iter()
        .filter(|(id, score)| !positives.contains(id.as_str()) && *score < limit)
        .take(k)
        .map(|(id, _)| id.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(list: &[(&str, f32)]) -> Vec<(String, f32)> {
        list.iter().map(|(i, s)| (i.to_string(), *s)).collect()
    }

    #[test]
    fn a_planted_false_negative_is_dropped() {
        // "dup" scores almost as high as the positive: with margin 0.95 it is a likely
        // unlabelled positive and must not be used as a negative.
        let c = cands(&[
            ("pos", 0.90),
            ("dup", 0.89),
            ("n1", 0.80),
            ("n2", 0.70),
            ("n3", 0.60),
        ]);
        let positives: HashSet<&str> = ["pos"].into_iter().collect();
        let got = positive_aware(&c, &positives, 0.90, 0.95, 2);
        assert_eq!(got, vec!["n1", "n2"]);
        // Without the margin (1.0 would keep everything below the positive) it would be kept.
        let naive = positive_aware(&c, &positives, 0.90, 1.0, 2);
        assert_eq!(naive, vec!["dup", "n1"]);
    }

    #[test]
    fn known_positives_are_never_negatives() {
        let c = cands(&[("a", 0.5), ("b", 0.4), ("c", 0.3)]);
        let positives: HashSet<&str> = ["a", "b"].into_iter().collect();
        assert_eq!(positive_aware(&c, &positives, 0.9, 0.95, 7), vec!["c"]);
    }
}
