//! Build and search parameters of an index.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Parameters of one HNSW index, chosen per collection.
///
/// The defaults (M = 16, ef_construction = 200, ef_search = 128) reach recall@10 >= 0.95
/// for cosine and L2 on the crate's 64-d embedding-like test data (`synth::embedding_like`,
/// 20k points: 0.97-0.99). Data of higher intrinsic dimension needs a larger per-query `ef`
/// (100k x 384 `power_law_clusters` at alpha 0.5: ef ~600 for 0.95), and inner product
/// (`dot`) needs about 1.5x the ef of cosine for the same recall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IndexParams {
    /// Neighbours kept per node on the upper layers; layer 0 keeps `2 * m`. 2..=128.
    pub m: usize,
    /// Candidate list size while building. Higher builds slower and gives better graphs.
    pub ef_construction: usize,
    /// Default candidate list size at search time (a query may override it; it is raised
    /// to `k` when smaller).
    pub ef_search: usize,
    /// Initial capacity in points: storage grows by doubling beyond it.
    pub initial_capacity: usize,
    /// Seed of the level generator (fixed seed: reproducible layer assignment).
    pub seed: u64,
}

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
            ef_search: 128,
            initial_capacity: 1024,
            seed: 0x5eed,
        }
    }
}

impl IndexParams {
    /// Checks that every parameter is in range.
    pub fn validate(&self) -> Result<()> {
        if !(2..=128).contains(&self.m) {
            return Err(Error::InvalidArgument(format!(
                "m must be in 2..=128, got {}",
                self.m
            )));
        }
        if self.ef_construction == 0 || self.ef_construction > 10_000 {
            return Err(Error::InvalidArgument(format!(
                "ef_construction must be in 1..=10000, got {}",
                self.ef_construction
            )));
        }
        if self.ef_search == 0 || self.ef_search > 100_000 {
            return Err(Error::InvalidArgument(format!(
                "ef_search must be in 1..=100000, got {}",
                self.ef_search
            )));
        }
        Ok(())
    }

    /// Neighbours kept per node on layer 0.
    pub(crate) fn m0(&self) -> usize {
        self.m * 2
    }
}
