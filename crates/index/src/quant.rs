//! Scalar quantization: 7-bit codes for [`Quantization::Int8`](crate::Quantization::Int8).
//!
//! One range `[lo, hi]` for the whole index, calibrated from a two-sided quantile of the
//! prepared vectors' values ([`QUANTILE`]), maps each value to a code in `0..=127`:
//! `x ≈ lo + step * c`, `step = (hi - lo) / 127`; values outside the range are clamped.
//! Codes are 7-bit (not 8) so that the AVX2 `maddubs` kernel, which multiplies unsigned by
//! signed bytes and adds adjacent pairs into saturating `i16`s, cannot saturate:
//! `2 * 127 * 127 = 32,258 < 32,767`.
//!
//! Distances need one integer inner product per pair plus a per-vector correction, stored
//! beside the codes:
//!
//! | metric | correction of `x` | internal distance |
//! |---|---|---|
//! | cosine | `lo·step·Σcx + d·lo²/2` | `1 - (corr_a + corr_b + step²·Σ ca·cb)` |
//! | dot | same | `-(corr_a + corr_b + step²·Σ ca·cb)` |
//! | l2 | `step²·Σcx²` | `corr_a + corr_b - 2·step²·Σ ca·cb` |
//!
//! The kernel runs on AVX2 when the CPU has it (through `pulp`'s safe wrappers), else as
//! plain scalar code; [`dot_u8_scalar`] is the oracle the tests compare it with.

#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

use latentdb_types::Metric;

/// The largest code.
pub(crate) const CODE_MAX: u8 = 127;

/// Points an `int8` index keeps as `f32` before it calibrates its range and switches to
/// codes (a range from fewer points would clamp much of the data that follows).
pub(crate) const CALIBRATION_POINTS: usize = 1024;

/// The range covers values from the `1 - QUANTILE` to the `QUANTILE` quantile: only the
/// extreme 0.001% on each side are clamped, so that a rare outlier does not coarsen every
/// code. Clamping more costs far more than it gains: on clustered 64-d data (the index
/// tests' `embedding_like`, cosine, 20k points) exact search on codes found 0.716 of the true
/// top 10 with the 1%/99% range, 0.888 with 0.1%/99.9% and 0.907 with this one, since a
/// clamped coordinate loses exactly the small differences between neighbours.
pub(crate) const QUANTILE: f64 = 0.99999;

/// At most this many values (evenly strided) are sorted to find the quantiles.
const SAMPLE_VALUES: usize = 1 << 20;

/// The calibrated range of an index's codes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Quantizer {
    lo: f32,
    hi: f32,
    step: f32,
    step2: f32,
}

impl Quantizer {
    /// A quantizer for `[lo, hi]`. `None` unless both are finite and `lo < hi`.
    pub(crate) fn from_range(lo: f32, hi: f32) -> Option<Self> {
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return None;
        }
        let step = (hi - lo) / CODE_MAX as f32;
        if !(step.is_finite() && step > 0.0) {
            return None;
        }
        Some(Self {
            lo,
            hi,
            step,
            step2: step * step,
        })
    }

    /// The range: `(lo, hi)`.
    pub(crate) fn range(&self) -> (f32, f32) {
        (self.lo, self.hi)
    }

    /// Calibrates from prepared (finite) values: the [`QUANTILE`] range of a strided sample.
    /// Constant or empty data gets a unit-wide range around its value. The values are the
    /// concatenation of `parts`, sampled in place (no copy).
    pub(crate) fn calibrate(parts: &[&[f32]]) -> Self {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let stride = total.div_ceil(SAMPLE_VALUES).max(1);
        let mut sample: Vec<f32> = parts
            .iter()
            .flat_map(|p| p.iter())
            .step_by(stride)
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        let fallback = |c: f32| {
            let c = if c.is_finite() { c } else { 0.0 };
            Self::from_range(c - 0.5, c + 0.5).unwrap_or(Self {
                lo: -0.5,
                hi: 0.5,
                step: 1.0 / CODE_MAX as f32,
                step2: 1.0 / (CODE_MAX as f32 * CODE_MAX as f32),
            })
        };
        if sample.is_empty() {
            return fallback(0.0);
        }
        let n = sample.len();
        let hi_at = (((n - 1) as f64) * QUANTILE).round() as usize;
        let lo_at = (((n - 1) as f64) * (1.0 - QUANTILE)).round() as usize;
        let (_, hi, _) = sample.select_nth_unstable_by(hi_at, f32::total_cmp);
        let hi = *hi;
        let (_, lo, _) = sample.select_nth_unstable_by(lo_at, f32::total_cmp);
        let lo = *lo;
        Self::from_range(lo, hi).unwrap_or_else(|| fallback(lo))
    }

    /// The code of one value (clamped to the range).
    #[inline]
    fn code(&self, x: f32) -> u8 {
        let c = ((x - self.lo) / self.step).round();
        // `as` saturates (and maps NaN to 0), so no value can escape 0..=127.
        (c.clamp(0.0, CODE_MAX as f32)) as u8
    }

    /// Appends the codes of `v` to `out`.
    pub(crate) fn encode(&self, v: &[f32], out: &mut Vec<u8>) {
        out.extend(v.iter().map(|&x| self.code(x)));
    }

    /// Appends the values that `codes` stand for to `out`.
    pub(crate) fn decode(&self, codes: &[u8], out: &mut Vec<f32>) {
        out.extend(codes.iter().map(|&c| self.lo + self.step * c as f32));
    }

    /// The per-vector correction term of `codes` under `metric` (see the module table).
    pub(crate) fn correction(&self, metric: Metric, codes: &[u8]) -> f32 {
        match metric {
            Metric::Cosine | Metric::Dot => {
                let sum: u64 = codes.iter().map(|&c| c as u64).sum();
                (self.lo as f64 * self.step as f64 * sum as f64
                    + codes.len() as f64 * (self.lo as f64) * (self.lo as f64) / 2.0)
                    as f32
            }
            Metric::L2 => {
                let sum: u64 = codes.iter().map(|&c| (c as u64) * (c as u64)).sum();
                (self.step2 as f64 * sum as f64) as f32
            }
        }
    }

    /// The internal distance (as [`MetricExt::distance`](crate::MetricExt::distance) would
    /// give for the decoded vectors) between two coded vectors with their corrections.
    #[inline]
    pub(crate) fn distance(&self, metric: Metric, a: &[u8], ca: f32, b: &[u8], cb: f32) -> f32 {
        let ip = dot_u8(a, b) as f32;
        match metric {
            Metric::Cosine => 1.0 - (ca + cb + self.step2 * ip),
            Metric::Dot => -(ca + cb + self.step2 * ip),
            Metric::L2 => ca + cb - 2.0 * self.step2 * ip,
        }
    }
}

/// `Σ a[i] * b[i]` over codes (each at most [`CODE_MAX`]; the slices have equal length): the
/// plain loop, the reference for the SIMD kernel.
pub(crate) fn dot_u8_scalar(a: &[u8], b: &[u8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| x as i32 * y as i32)
        .sum::<i32>()
}

/// `Σ a[i] * b[i]` over codes of equal length (each at most [`CODE_MAX`], so no `i16` pair
/// sum saturates and the total fits `i32` for any allowed dimension: 65,536 × 127² < 2³¹).
#[inline]
pub(crate) fn dot_u8(a: &[u8], b: &[u8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = v3() {
        return avx2::dot_u8(simd, a, b);
    }
    dot_u8_scalar(a, b)
}

#[cfg(target_arch = "x86_64")]
fn v3() -> Option<pulp::x86::V3> {
    static V3: OnceLock<Option<pulp::x86::V3>> = OnceLock::new();
    *V3.get_or_init(pulp::x86::V3::try_new)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use pulp::x86::V3;
    use pulp::{Simd, i8x32, i16x16, u32x8};

    /// 32 codes at a time: `maddubs` (unsigned × signed bytes, adjacent pairs summed into
    /// `i16`: at most 2 × 127 × 127, no saturation), then `madd` with ones into `i32` lanes;
    /// two accumulators, the tail in scalar code.
    #[inline]
    pub(super) fn dot_u8(simd: V3, a: &[u8], b: &[u8]) -> i32 {
        struct Kernel<'a> {
            simd: V3,
            a: &'a [u8],
            b: &'a [u8],
        }
        impl pulp::NullaryFnOnce for Kernel<'_> {
            type Output = i32;

            #[inline(always)]
            fn call(self) -> i32 {
                let Kernel { simd, a, b } = self;
                let n = a.len().min(b.len());
                let (ac, _) = a[..n].as_chunks::<32>();
                let (bc, _) = b[..n].as_chunks::<32>();
                let ones: i16x16 = simd.splat_i16x16(1);
                let zero: u32x8 = pulp::cast([0u32; 8]);
                let (mut s0, mut s1) = (zero, zero);
                let mut pairs = ac.chunks_exact(2).zip(bc.chunks_exact(2));
                for (x, y) in &mut pairs {
                    s0 = lane(simd, &x[0], &y[0], ones, s0);
                    s1 = lane(simd, &x[1], &y[1], ones, s1);
                }
                if ac.len() % 2 == 1 {
                    let last = ac.len() - 1;
                    s0 = lane(simd, &ac[last], &bc[last], ones, s0);
                }
                let s = simd.add_u32s(s0, s1);
                let lanes: [u32; 8] = pulp::cast(s);
                let mut sum = lanes.iter().fold(0u32, |acc, &x| acc.wrapping_add(x)) as i32;
                let done = ac.len() * 32;
                sum += super::dot_u8_scalar(&a[done..n], &b[done..n]);
                sum
            }
        }
        simd.vectorize(Kernel { simd, a, b })
    }

    #[inline(always)]
    fn lane(simd: V3, x: &[u8; 32], y: &[u8; 32], ones: i16x16, acc: u32x8) -> u32x8 {
        let x: i8x32 = pulp::cast(*x);
        let y: i8x32 = pulp::cast(*y);
        let pairs = simd.multiply_saturating_add_adjacent_i8x32(x, y);
        let quads = simd.multiply_wrapping_add_adjacent_i16x16(pairs, ones);
        simd.add_u32s(acc, pulp::cast(quads))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::MetricExt;
    use proptest::prelude::*;

    fn lcg(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 33
        }
    }

    #[test]
    fn the_kernel_equals_the_scalar_oracle_at_every_length_and_the_extremes() {
        let mut r = lcg(7);
        for n in (0..=130).chain([383, 384, 385, 1024, 65_536]) {
            let a: Vec<u8> = (0..n).map(|_| (r() % 128) as u8).collect();
            let b: Vec<u8> = (0..n).map(|_| (r() % 128) as u8).collect();
            assert_eq!(dot_u8(&a, &b), dot_u8_scalar(&a, &b), "n = {n}");
            // All codes at the maximum: the largest pair sums (no saturation) and totals.
            let m = vec![CODE_MAX; n];
            assert_eq!(dot_u8(&m, &m), n as i32 * 127 * 127, "n = {n}");
        }
    }

    proptest! {
        #[test]
        fn the_kernel_matches_the_oracle(codes in proptest::collection::vec((0u8..=127, 0u8..=127), 0..600)) {
            let (a, b): (Vec<u8>, Vec<u8>) = codes.into_iter().unzip();
            prop_assert_eq!(dot_u8(&a, &b), dot_u8_scalar(&a, &b));
        }

        #[test]
        fn calibration_never_panics_and_codes_stay_7_bit(
            values in proptest::collection::vec(proptest::num::f32::ANY, 0..300)
        ) {
            let q = Quantizer::calibrate(&[&values]);
            let (lo, hi) = q.range();
            prop_assert!(lo.is_finite() && hi.is_finite() && lo < hi);
            let mut codes = Vec::new();
            q.encode(&values, &mut codes);
            prop_assert!(codes.iter().all(|&c| c <= CODE_MAX));
        }
    }

    #[test]
    fn decoded_values_are_within_half_a_step_inside_the_range() {
        let values: Vec<f32> = (0..10_000).map(|i| (i as f32 / 5_000.0) - 1.0).collect();
        let q = Quantizer::calibrate(&[&values]);
        let (lo, hi) = q.range();
        assert!(lo < -0.99 && hi > 0.99, "{lo} {hi}");
        let (mut codes, mut back) = (Vec::new(), Vec::new());
        q.encode(&values, &mut codes);
        q.decode(&codes, &mut back);
        for (x, y) in values.iter().zip(&back) {
            if (lo..=hi).contains(x) {
                assert!((x - y).abs() <= q.step / 2.0 + 1e-6, "{x} -> {y}");
            }
        }
        // Re-encoding decoded values gives the same codes (a rebuild keeps them).
        let mut again = Vec::new();
        q.encode(&back, &mut again);
        assert_eq!(codes, again);
    }

    #[test]
    fn quantized_distances_match_the_decoded_vectors_under_every_metric() {
        let mut r = lcg(11);
        let dim = 96;
        let data: Vec<f32> = (0..64 * dim)
            .map(|_| (r() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let q = Quantizer::calibrate(&[&data]);
        for metric in Metric::ALL {
            let vecs: Vec<&[f32]> = data.chunks(dim).collect();
            for pair in vecs.windows(2) {
                let (mut ca, mut cb) = (Vec::new(), Vec::new());
                q.encode(pair[0], &mut ca);
                q.encode(pair[1], &mut cb);
                let (mut da, mut db) = (Vec::new(), Vec::new());
                q.decode(&ca, &mut da);
                q.decode(&cb, &mut db);
                let want = metric.distance(&da, &db);
                let got = q.distance(
                    metric,
                    &ca,
                    q.correction(metric, &ca),
                    &cb,
                    q.correction(metric, &cb),
                );
                assert!(
                    (want - got).abs() <= 1e-3 * (1.0 + want.abs()),
                    "{metric}: {want} vs {got}"
                );
                // And within the worst-case error of the codes from the exact distance of the
                // original vectors (every value here is inside the range, so each coordinate
                // is off by at most half a step): for inner products
                // |a·b - â·b̂| <= step/2 (|a|_1 + |b̂|_1); for squared L2, with u = a - b,
                // |(|u|² - |û|²)| <= step * Σ|u_i + û_i|.
                let exact = metric.distance(pair[0], pair[1]);
                let l1 = |v: &[f32]| v.iter().map(|x| x.abs()).sum::<f32>();
                let bound = match metric {
                    Metric::Cosine | Metric::Dot => q.step / 2.0 * (l1(pair[0]) + l1(&db)),
                    Metric::L2 => {
                        q.step
                            * pair[0]
                                .iter()
                                .zip(pair[1])
                                .zip(da.iter().zip(&db))
                                .map(|((a, b), (x, y))| (a - b + x - y).abs())
                                .sum::<f32>()
                    }
                };
                assert!(
                    (exact - got).abs() <= bound * 1.01 + 1e-3,
                    "{metric}: {exact} vs {got} (bound {bound})"
                );
            }
        }
    }

    #[test]
    fn ranges_must_be_finite_and_ordered() {
        assert!(Quantizer::from_range(0.0, 0.0).is_none());
        assert!(Quantizer::from_range(1.0, 0.0).is_none());
        assert!(Quantizer::from_range(f32::NAN, 1.0).is_none());
        assert!(Quantizer::from_range(-f32::MAX, f32::MAX).is_none());
        assert!(Quantizer::from_range(-1.0, 1.0).is_some());
        let q = Quantizer::calibrate(&[&[3.0; 100]]);
        let (lo, hi) = q.range();
        assert!(lo < 3.0 && 3.0 < hi);
    }
}
