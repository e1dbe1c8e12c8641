//! Build and search parameters of an index, and their bounds.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::echo::bounded;
use crate::error::{Error, Result};

/// Smallest allowed [`IndexParams::m`].
pub const MIN_M: usize = 2;
/// Largest allowed [`IndexParams::m`].
pub const MAX_M: usize = 128;
/// Largest allowed [`IndexParams::ef_construction`].
pub const MAX_EF_CONSTRUCTION: usize = 10_000;
/// Largest allowed [`IndexParams::ef_search`] (and per-query `ef`).
pub const MAX_EF_SEARCH: usize = 100_000;
/// Largest allowed [`IndexParams::initial_capacity`], in points (2^26). The index grows on
/// demand beyond its initial capacity, so a larger value would only reserve memory early.
pub const MAX_INITIAL_CAPACITY: usize = 1 << 26;
/// Most bytes an index may reserve up front for its initial capacity (vectors and layer-0
/// links of `initial_capacity` points: 4 GiB). [`Index::new`](crate::Index::new) checks it,
/// since it depends on the dimension.
pub const MAX_INITIAL_BYTES: u64 = 1 << 32;

/// Largest allowed [`IndexParams::oversampling`].
pub const MAX_OVERSAMPLING: usize = 100;

/// The names of the settings, as in JSON.
const KEYS: [&str; 7] = [
    "m",
    "ef_construction",
    "ef_search",
    "initial_capacity",
    "seed",
    "quantization",
    "oversampling",
];

/// How an index keeps its vectors in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// Full `f32` vectors (4 bytes per dimension); distances are exact.
    #[default]
    None,
    /// 7-bit scalar codes (1 byte per dimension), calibrated from a quantile of the data:
    /// the graph is built and walked on codes, and the best `k * oversampling` candidates of
    /// a search are meant to be rescored with the exact vectors the caller keeps (see
    /// [`Index::rescore`](crate::Index::rescore)).
    Int8,
}

impl Quantization {
    /// The setting's name, as in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::None => "none",
            Quantization::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Quantization {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Quantization::None),
            "int8" => Ok(Quantization::Int8),
            other => Err(Error::InvalidArgument(format!(
                "index setting quantization must be \"none\" or \"int8\", got {}",
                bounded(other)
            ))),
        }
    }
}

/// Parameters of one HNSW index, chosen per collection.
///
/// The defaults (M = 16, ef_construction = 200, ef_search = 128) reach recall@10 >= 0.95
/// for cosine and L2 on the crate's 64-d embedding-like test data (`synth::embedding_like`,
/// 20k points: 0.97-0.99). Data of higher intrinsic dimension needs a larger per-query `ef`
/// (100k x 384 `power_law_clusters` at alpha 0.5: ef ~600 for 0.95), and inner product
/// (`dot`) needs about 1.5x the ef of cosine for the same recall.
///
/// Deserialising fills missing fields with their defaults and rejects unknown ones;
/// [`IndexParams::from_json`] does the same with bounded error messages and checks the
/// bounds too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexParams {
    /// Neighbours kept per node on the upper layers; layer 0 keeps `2 * m`.
    /// [`MIN_M`]..=[`MAX_M`].
    pub m: usize,
    /// Candidate list size while building: higher builds slower and gives better graphs.
    /// 1..=[`MAX_EF_CONSTRUCTION`].
    pub ef_construction: usize,
    /// Default candidate list size at search time (a query may override it; it is raised
    /// to `k` when smaller). 1..=[`MAX_EF_SEARCH`].
    pub ef_search: usize,
    /// Initial capacity in points: storage grows by doubling beyond it.
    /// 0..=[`MAX_INITIAL_CAPACITY`], and at most [`MAX_INITIAL_BYTES`] reserved up front.
    pub initial_capacity: usize,
    /// Seed of the level generator (fixed seed: reproducible layer assignment). Any value.
    pub seed: u64,
    /// How vectors are kept in memory: [`Quantization::None`] (default) or
    /// [`Quantization::Int8`]. Fixed when the index is created.
    pub quantization: Quantization,
    /// With [`Quantization::Int8`]: a search walks the graph for `k * oversampling`
    /// candidates, which the caller rescores with exact vectors. 1..=[`MAX_OVERSAMPLING`].
    pub oversampling: usize,
}

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
            ef_search: 128,
            initial_capacity: 1024,
            seed: 0x5eed,
            quantization: Quantization::None,
            oversampling: 3,
        }
    }
}

fn check(name: &str, value: usize, min: usize, max: usize) -> Result<()> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "index setting {name} must be in {min}..={max}, got {value}"
        )))
    }
}

impl IndexParams {
    /// Parses index settings from JSON: `null` gives the defaults, an object may set any of
    /// `m`, `ef_construction`, `ef_search`, `initial_capacity` and `seed` (missing ones take
    /// their defaults). Unknown keys, values of the wrong type and values out of bounds are
    /// [`Error::InvalidArgument`]s whose messages echo at most a bounded part of the input.
    pub fn from_json(value: &Value) -> Result<Self> {
        let obj = match value {
            Value::Null => return Ok(Self::default()),
            Value::Object(obj) => obj,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "index settings must be a JSON object, got {}",
                    bounded(&other.to_string())
                )));
            }
        };
        let mut params = Self::default();
        for (key, v) in obj {
            if !KEYS.contains(&key.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "unknown index setting {} (known: {})",
                    bounded(key),
                    KEYS.join(", ")
                )));
            }
            if key == "quantization" {
                let name = v.as_str().ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "index setting quantization must be a string (\"none\" or \"int8\"), \
                         got {}",
                        bounded(&v.to_string())
                    ))
                })?;
                params.quantization = name.parse()?;
                continue;
            }
            let n = v.as_u64().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "index setting {key} must be a non-negative integer, got {}",
                    bounded(&v.to_string())
                ))
            })?;
            // Out of usize range saturates, and the bounds below reject it.
            let u = usize::try_from(n).unwrap_or(usize::MAX);
            match key.as_str() {
                "m" => params.m = u,
                "ef_construction" => params.ef_construction = u,
                "ef_search" => params.ef_search = u,
                "initial_capacity" => params.initial_capacity = u,
                "oversampling" => params.oversampling = u,
                _ => params.seed = n,
            }
        }
        params.validate()?;
        Ok(params)
    }

    /// Checks that every parameter is within its bounds (see the constants of this module).
    /// The bound on the bytes reserved up front depends on the dimension:
    /// [`IndexParams::validate_for`] checks it too.
    pub fn validate(&self) -> Result<()> {
        check("m", self.m, MIN_M, MAX_M)?;
        check(
            "ef_construction",
            self.ef_construction,
            1,
            MAX_EF_CONSTRUCTION,
        )?;
        check("ef_search", self.ef_search, 1, MAX_EF_SEARCH)?;
        check(
            "initial_capacity",
            self.initial_capacity,
            0,
            MAX_INITIAL_CAPACITY,
        )?;
        check("oversampling", self.oversampling, 1, MAX_OVERSAMPLING)?;
        Ok(())
    }

    /// [`IndexParams::validate`], and that the initial capacity of an index of dimension
    /// `dim` reserves at most [`MAX_INITIAL_BYTES`].
    pub fn validate_for(&self, dim: usize) -> Result<()> {
        self.validate()?;
        let need = self.initial_bytes(dim);
        if need.is_none_or(|b| b > MAX_INITIAL_BYTES) {
            return Err(Error::InvalidArgument(format!(
                "index setting initial_capacity {} at dimension {dim} would reserve {} up \
                 front, more than the {} GiB limit; choose a smaller initial_capacity (the \
                 index grows on demand)",
                self.initial_capacity,
                need.map_or_else(
                    || "more than 2^64 bytes".to_string(),
                    |b| format!("{b} bytes")
                ),
                MAX_INITIAL_BYTES >> 30,
            )));
        }
        Ok(())
    }

    /// Bytes reserved up front for `initial_capacity` points of dimension `dim`: the vectors
    /// and layer-0 links (`None` when that overflows `u64`).
    pub(crate) fn initial_bytes(&self, dim: usize) -> Option<u64> {
        let per_point = (dim as u64)
            .checked_add(self.m0() as u64 + 1)?
            .checked_mul(4)?;
        per_point.checked_mul(self.initial_capacity as u64)
    }

    /// Neighbours kept per node on layer 0.
    pub(crate) fn m0(&self) -> usize {
        self.m * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn invalid(v: Value) -> String {
        match IndexParams::from_json(&v) {
            Err(Error::InvalidArgument(msg)) => msg,
            other => panic!("{v}: expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn huge_capacities_are_rejected_not_allocated() {
        for cap in [1_000_000_000_000u64, 1 << 61, u64::MAX, (1 << 26) + 1] {
            let msg = invalid(json!({ "initial_capacity": cap }));
            assert!(msg.contains("initial_capacity"), "{msg}");
        }
        // 1e12 written as a float is not an integer.
        assert!(invalid(json!({ "initial_capacity": 1e12 })).contains("integer"));
        let p = IndexParams::from_json(&json!({ "initial_capacity": 1 << 26 })).unwrap();
        assert_eq!(p.initial_capacity, 1 << 26);
        // Within the count bound, the byte bound depends on the dimension (and m).
        let err = p.validate_for(4).unwrap_err().to_string();
        assert!(err.contains("GiB"), "{err}");
        let p = IndexParams::from_json(&json!({ "initial_capacity": 1 << 20 })).unwrap();
        assert!(p.validate_for(4).is_ok());
        assert!(p.validate_for(768).is_ok());
        assert!(p.validate_for(65_536).is_err());
    }

    #[test]
    fn every_bound_is_checked() {
        for (key, bad, good) in [
            ("m", 1, 2),
            ("m", 129, 128),
            ("ef_construction", 0, 1),
            ("ef_construction", 10_001, 10_000),
            ("ef_search", 0, 1),
            ("ef_search", 100_001, 100_000),
            ("initial_capacity", 1 << 26 | 1, 0),
            ("oversampling", 0, 1),
            ("oversampling", 101, 100),
        ] {
            let msg = invalid(json!({ key: bad }));
            assert!(msg.contains(key), "{msg}");
            IndexParams::from_json(&json!({ key: good })).unwrap();
        }
        for v in [json!(-1), json!("16"), json!(2.5), json!(null), json!([1])] {
            assert!(invalid(json!({ "m": v })).contains("integer"));
        }
        assert_eq!(
            IndexParams::from_json(&json!({ "seed": u64::MAX }))
                .unwrap()
                .seed,
            u64::MAX
        );
    }

    #[test]
    fn unknown_keys_are_rejected_and_echoed_bounded() {
        let msg = invalid(json!({ "ef_constrction": 100 }));
        assert!(msg.contains("ef_constrction"), "{msg}");
        let long = "k".repeat(10_000);
        let msg = invalid(json!({ long.clone(): 1 }));
        assert!(msg.len() < 400, "{} bytes", msg.len());
        // serde's own path rejects them too.
        let err = serde_json::from_value::<IndexParams>(json!({ "mm": 4 })).unwrap_err();
        assert!(err.to_string().contains("mm"));
        assert!(invalid(json!([1, 2])).contains("object"));
        assert!(invalid(json!("x".repeat(10_000))).len() < 400);
    }

    #[test]
    fn quantization_is_a_named_setting() {
        let p =
            IndexParams::from_json(&json!({ "quantization": "int8", "oversampling": 4 })).unwrap();
        assert_eq!(p.quantization, Quantization::Int8);
        assert_eq!(p.oversampling, 4);
        assert_eq!(IndexParams::default().quantization, Quantization::None);
        assert!(invalid(json!({ "quantization": "int4" })).contains("int4"));
        assert!(invalid(json!({ "quantization": 8 })).contains("string"));
        // Stored settings written before quantization existed read as the defaults.
        let old: IndexParams = serde_json::from_value(json!({ "m": 12 })).unwrap();
        assert_eq!(old.quantization, Quantization::None);
        assert_eq!(old.oversampling, 3);
        let back: IndexParams = serde_json::from_value(serde_json::to_value(p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn defaults_and_partial_objects() {
        assert_eq!(
            IndexParams::from_json(&Value::Null).unwrap(),
            IndexParams::default()
        );
        let p = IndexParams::from_json(&json!({ "m": 8 })).unwrap();
        assert_eq!(
            p,
            IndexParams {
                m: 8,
                ..IndexParams::default()
            }
        );
        let p: IndexParams = serde_json::from_value(json!({ "ef_search": 64 })).unwrap();
        assert_eq!(p.ef_search, 64);
    }
}
