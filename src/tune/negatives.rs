//! Positive-aware hard-negative selection (NV-Retriever's TopK-PercPos).
//!
//! Candidates come from a search of the collection's own index with the current model. A
//! candidate is a hard negative only if it is not a known positive of the query and its score
//! is below `margin × score(positive)`: candidates scoring about as high as the positive are
//! likely unlabelled positives (false negatives) and would teach the model the wrong thing.

use std::collections::HashSet;

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
