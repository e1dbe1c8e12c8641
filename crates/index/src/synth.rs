//! Seeded synthetic data: a small PRNG and clustered, embedding-like vectors for tests and
//! benchmarks.

/// SplitMix64: a tiny, fast, seedable pseudo-random generator (not for cryptography).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// A uniform float in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A uniform float in (0, 1].
    pub fn next_f64_open(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// A standard normal sample (Box-Muller).
    pub fn next_gaussian(&mut self) -> f32 {
        let u1 = self.next_f64_open();
        let u2 = self.next_f64_open();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// A uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// The SplitMix64 finaliser: a good 64-bit mixing function.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` row-major vectors of dimension `dim` drawn around `clusters` random centres (standard
/// normal centres, gaussian noise of standard deviation `noise` per coordinate): a stand-in for
/// sentence embeddings, which form clusters by topic. Deterministic in `seed`.
pub fn clustered_vectors(n: usize, dim: usize, clusters: usize, noise: f32, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let clusters = clusters.max(1);
    let centres: Vec<f32> = (0..clusters * dim).map(|_| rng.next_gaussian()).collect();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = rng.below(clusters as u64) as usize;
        let centre = &centres[c * dim..(c + 1) * dim];
        out.extend(centre.iter().map(|x| x + noise * rng.next_gaussian()));
    }
    out
}

/// `n` embedding-like row-major vectors: 100 cluster centres (standard normal) and per-point
/// gaussian noise whose variance decays along the coordinates as `1 / (j + 1)` (a power-law
/// spectrum like the PCA spectrum of sentence embeddings, whose intrinsic dimension is far
/// below their width; distances are rotation-invariant, so axis-aligned decay loses nothing).
/// Same as [`power_law_clusters`]`(n, dim, 100, 0.5, seed)`. Deterministic in `seed`.
/// Isotropic noise ([`clustered_vectors`]) is a harder, less realistic case.
pub fn embedding_like(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    power_law_clusters(n, dim, 100, 0.5, seed)
}

/// Noise-to-centre variance ratio of [`power_law_clusters`]: within a cluster, two points
/// have a cosine similarity of about 0.75, as related sentences do.
const NOISE_RATIO: f64 = 0.1668;

/// `n` row-major vectors around `clusters` standard-normal centres, with gaussian noise whose
/// standard deviation on coordinate `j` is proportional to `(j + 1)^-alpha`, scaled so that
/// the noise variance is about a sixth of the centres' (at dim 64, alpha 0.5: 1.5 / sqrt(j+1)).
/// Larger `alpha`: lower intrinsic dimension, easier search. Deterministic in `seed`.
pub fn power_law_clusters(
    n: usize,
    dim: usize,
    clusters: usize,
    alpha: f32,
    seed: u64,
) -> Vec<f32> {
    let clusters = clusters.max(1);
    let mut rng = SplitMix64::new(seed);
    let centres: Vec<f32> = (0..clusters * dim).map(|_| rng.next_gaussian()).collect();
    // Noise variance sums to NOISE_RATIO * dim (centres have norm^2 ~ dim), so the angular
    // spread of a cluster does not shrink as the dimension grows.
    let shape: Vec<f64> = (0..dim)
        .map(|j| ((j + 1) as f64).powf(-alpha as f64))
        .collect();
    let total: f64 = shape.iter().map(|s| s * s).sum();
    let k = (NOISE_RATIO * dim as f64 / total).sqrt();
    let scale: Vec<f32> = shape.iter().map(|s| (k * s) as f32).collect();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = rng.below(clusters as u64) as usize;
        let centre = &centres[c * dim..(c + 1) * dim];
        out.extend(
            centre
                .iter()
                .zip(&scale)
                .map(|(x, s)| x + s * rng.next_gaussian()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let a = clustered_vectors(10, 4, 3, 0.1, 1);
        let b = clustered_vectors(10, 4, 3, 0.1, 1);
        assert_eq!(a, b);
        let mut r = SplitMix64::new(3);
        for _ in 0..1000 {
            let f = r.next_f32();
            assert!((0.0..1.0).contains(&f));
            assert!(r.below(7) < 7);
        }
    }
}
