//! [`Metric`]: how two vectors are compared, as named in configuration and on disk.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How two vectors are compared. The index crate gives each metric its distance and score
/// (see `latentdb_index::MetricExt`); search scores are always "larger is closer".
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
    /// Every metric, in a fixed order.
    pub const ALL: [Metric; 3] = [Metric::Cosine, Metric::Dot, Metric::L2];

    /// The lower-case name used in configuration, on the command line and on disk.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    /// Whether vectors are normalised to unit length before use (and so must have one).
    pub fn normalizes(self) -> bool {
        matches!(self, Metric::Cosine)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A metric name that is not `cosine`, `dot` (`ip`) or `l2` (`euclidean`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMetric(pub String);

impl fmt::Display for UnknownMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.0.chars().take(64).collect();
        let more = if shown.len() < self.0.len() {
            "…"
        } else {
            ""
        };
        write!(
            f,
            "unknown metric {shown:?}{more} (expected cosine, dot or l2)"
        )
    }
}

impl std::error::Error for UnknownMetric {}

impl FromStr for Metric {
    type Err = UnknownMetric;

    /// Parses a metric name, ignoring case and surrounding white space; `ip` and `euclidean`
    /// are accepted as aliases.
    fn from_str(s: &str) -> Result<Self, UnknownMetric> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cosine" => Ok(Metric::Cosine),
            "dot" | "ip" => Ok(Metric::Dot),
            "l2" | "euclidean" => Ok(Metric::L2),
            _ => Err(UnknownMetric(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for m in Metric::ALL {
            assert_eq!(m.to_string().parse::<Metric>(), Ok(m));
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.as_str()));
            assert_eq!(serde_json::from_str::<Metric>(&json).unwrap(), m);
        }
        assert_eq!(" COSINE ".parse::<Metric>(), Ok(Metric::Cosine));
        assert_eq!("ip".parse::<Metric>(), Ok(Metric::Dot));
        assert_eq!("Euclidean".parse::<Metric>(), Ok(Metric::L2));
        let err = "x".repeat(10_000).parse::<Metric>().unwrap_err();
        assert!(err.to_string().len() < 200, "the echo is bounded");
    }
}
