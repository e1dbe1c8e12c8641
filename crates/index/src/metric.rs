//! The score convention of the shared [`Metric`]: what the graph orders by and what searches
//! report.

use latentdb_types::Metric;
use pulp::Simd;

use crate::distance;

/// The distance and score of each [`Metric`] (the metric itself is `latentdb_types::Metric`,
/// re-exported as `latentdb_index::Metric`).
///
/// Internally every metric is turned into a *distance* (lower is closer) that the graph
/// orders by; search results carry a *score*, and a larger score is always closer:
///
/// | metric | stored vector | internal distance | reported score | range |
/// |---|---|---|---|---|
/// | `cosine` | normalised to unit length | `1 - a·b` | cosine similarity `a·b` | [-1, 1] |
/// | `dot` | as given | `-a·b` | inner product `a·b` | any finite value |
/// | `l2` | as given | `‖a-b‖²` | negated Euclidean distance `-‖a-b‖` | (-∞, 0] |
///
/// The graph is this crate's own, so the internal distance may be negative (`dot`): no
/// clamping or shifting is needed to keep the order exact.
pub trait MetricExt {
    /// Internal distance (lower is closer) between two prepared vectors.
    fn distance(self, a: &[f32], b: &[f32]) -> f32;

    /// Turns an internal distance into the reported score: larger is always closer.
    fn score(self, distance: f32) -> f32;
}

impl MetricExt for Metric {
    #[inline]
    fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Cosine => 1.0 - distance::dot(a, b),
            Metric::Dot => -distance::dot(a, b),
            Metric::L2 => distance::l2_sq(a, b),
        }
    }

    #[inline]
    fn score(self, distance: f32) -> f32 {
        match self {
            Metric::Cosine => 1.0 - distance,
            Metric::Dot => -distance,
            Metric::L2 => -distance.max(0.0).sqrt(),
        }
    }
}

/// [`MetricExt::distance`] with the SIMD token of an enclosing [`distance::dispatch`].
#[inline(always)]
pub(crate) fn distance_in<S: Simd>(metric: Metric, simd: S, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::Cosine => 1.0 - distance::dot_in(simd, a, b),
        Metric::Dot => -distance::dot_in(simd, a, b),
        Metric::L2 => distance::l2_sq_in(simd, a, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_the_convention() {
        let a = [1.0, 0.0];
        let b = [0.0, 2.0];
        assert_eq!(
            Metric::L2.score(Metric::L2.distance(&a, &b)),
            -(5f32.sqrt())
        );
        assert_eq!(
            Metric::Dot.score(Metric::Dot.distance(&a, &[3.0, 1.0])),
            3.0
        );
        assert_eq!(Metric::Cosine.score(Metric::Cosine.distance(&a, &a)), 1.0);
    }

    #[test]
    fn a_closer_point_scores_higher_under_every_metric() {
        let q = [1.0, 0.5];
        let near = [1.0, 0.6];
        let far = [-1.0, 2.0];
        for m in Metric::ALL {
            let (dn, df) = (m.distance(&q, &near), m.distance(&q, &far));
            assert!(dn < df, "{m}: distances");
            assert!(
                m.score(dn) > m.score(df),
                "{m}: a closer point must score higher"
            );
        }
    }
}
