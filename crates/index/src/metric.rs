//! The similarity metrics and the score convention.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::distance;
use crate::error::Error;

/// How two vectors are compared.
///
/// Internally every metric is turned into a *distance* (lower is closer) that the graph
/// orders by; search results carry a *score* in the unit users expect:
///
/// | metric | stored vector | internal distance | reported score | best |
/// |---|---|---|---|---|
/// | `cosine` | normalised to unit length | `1 - a·b` | cosine similarity `a·b` in [-1, 1] | highest |
/// | `dot` | as given | `-a·b` | inner product `a·b` | highest |
/// | `l2` | as given | `‖a-b‖²` | Euclidean distance `‖a-b‖` | lowest |
///
/// The graph is this crate's own, so the internal distance may be negative (`dot`): no
/// clamping or shifting is needed to keep the order exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine similarity: vectors are normalised on insert and on query.
    Cosine,
    /// Inner product of the vectors as given (maximum inner product search).
    Dot,
    /// Euclidean distance.
    L2,
}

impl Metric {
    /// The name used in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    /// Internal distance (lower is closer) between two prepared vectors.
    #[inline]
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Cosine => 1.0 - distance::dot(a, b),
            Metric::Dot => -distance::dot(a, b),
            Metric::L2 => distance::l2_sq(a, b),
        }
    }

    /// Turns an internal distance into the reported score (see the table above).
    #[inline]
    pub fn score(self, distance: f32) -> f32 {
        match self {
            Metric::Cosine => 1.0 - distance,
            Metric::Dot => -distance,
            Metric::L2 => distance.max(0.0).sqrt(),
        }
    }

    /// True when a higher score is better (cosine, dot); false for L2.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::L2)
    }

    /// Whether vectors are normalised before use.
    pub fn normalizes(self) -> bool {
        matches!(self, Metric::Cosine)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Metric {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cosine" => Ok(Metric::Cosine),
            "dot" | "ip" => Ok(Metric::Dot),
            "l2" | "euclidean" => Ok(Metric::L2),
            _ => Err(Error::UnknownMetric(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for m in [Metric::Cosine, Metric::Dot, Metric::L2] {
            assert_eq!(m.to_string().parse::<Metric>().unwrap(), m);
        }
        assert_eq!("COSINE".parse::<Metric>().unwrap(), Metric::Cosine);
        assert!(matches!(
            "hamming".parse::<Metric>(),
            Err(Error::UnknownMetric(_))
        ));
    }

    #[test]
    fn scores_follow_the_convention() {
        let a = [1.0, 0.0];
        let b = [0.0, 2.0];
        assert_eq!(Metric::L2.score(Metric::L2.distance(&a, &b)), 5f32.sqrt());
        assert_eq!(
            Metric::Dot.score(Metric::Dot.distance(&a, &[3.0, 1.0])),
            3.0
        );
        assert_eq!(Metric::Cosine.score(Metric::Cosine.distance(&a, &a)), 1.0);
    }
}
