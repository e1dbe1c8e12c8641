//! The f32 distance kernels: inner product and squared L2 for any dimension.
//!
//! The kernels run on the widest SIMD the CPU offers, chosen once at run time through `pulp`
//! (AVX-512 on x86-64 v4 CPUs, as the workspace enables pulp's `x86-v4`; AVX2 + FMA on v3;
//! NEON on aarch64; a scalar fallback elsewhere), with four independent accumulators so that the loop is bound by loads, not by
//! the latency of one add chain. The plain scalar versions ([`dot_scalar`], [`l2_sq_scalar`])
//! are the reference the tests compare against.

use std::sync::OnceLock;

use latentdb_types::Metric;
use pulp::{Arch, Simd, WithSimd};

fn arch() -> Arch {
    static ARCH: OnceLock<Arch> = OnceLock::new();
    *ARCH.get_or_init(Arch::new)
}

struct Dot<'a>(&'a [f32], &'a [f32]);

impl WithSimd for Dot<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let (a, a_tail) = S::as_simd_f32s(self.0);
        let (b, b_tail) = S::as_simd_f32s(self.1);
        let zero = simd.splat_f32s(0.0);
        let (mut s0, mut s1, mut s2, mut s3) = (zero, zero, zero, zero);
        let mut ca = a.chunks_exact(4);
        let mut cb = b.chunks_exact(4);
        for (x, y) in (&mut ca).zip(&mut cb) {
            s0 = simd.mul_add_e_f32s(x[0], y[0], s0);
            s1 = simd.mul_add_e_f32s(x[1], y[1], s1);
            s2 = simd.mul_add_e_f32s(x[2], y[2], s2);
            s3 = simd.mul_add_e_f32s(x[3], y[3], s3);
        }
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            s0 = simd.mul_add_e_f32s(*x, *y, s0);
        }
        let s = simd.add_f32s(simd.add_f32s(s0, s1), simd.add_f32s(s2, s3));
        let mut sum = simd.reduce_sum_f32s(s);
        for (x, y) in a_tail.iter().zip(b_tail) {
            sum += x * y;
        }
        sum
    }
}

struct L2Sq<'a>(&'a [f32], &'a [f32]);

impl WithSimd for L2Sq<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let (a, a_tail) = S::as_simd_f32s(self.0);
        let (b, b_tail) = S::as_simd_f32s(self.1);
        let zero = simd.splat_f32s(0.0);
        let (mut s0, mut s1, mut s2, mut s3) = (zero, zero, zero, zero);
        let mut ca = a.chunks_exact(4);
        let mut cb = b.chunks_exact(4);
        for (x, y) in (&mut ca).zip(&mut cb) {
            let d0 = simd.sub_f32s(x[0], y[0]);
            let d1 = simd.sub_f32s(x[1], y[1]);
            let d2 = simd.sub_f32s(x[2], y[2]);
            let d3 = simd.sub_f32s(x[3], y[3]);
            s0 = simd.mul_add_e_f32s(d0, d0, s0);
            s1 = simd.mul_add_e_f32s(d1, d1, s1);
            s2 = simd.mul_add_e_f32s(d2, d2, s2);
            s3 = simd.mul_add_e_f32s(d3, d3, s3);
        }
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            let d = simd.sub_f32s(*x, *y);
            s0 = simd.mul_add_e_f32s(d, d, s0);
        }
        let s = simd.add_f32s(simd.add_f32s(s0, s1), simd.add_f32s(s2, s3));
        let mut sum = simd.reduce_sum_f32s(s);
        for (x, y) in a_tail.iter().zip(b_tail) {
            let d = x - y;
            sum += d * d;
        }
        sum
    }
}

/// Inner product of two vectors of equal length (the shorter length is used otherwise).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    arch().dispatch(Dot(&a[..n], &b[..n]))
}

/// Squared Euclidean distance of two vectors of equal length (the shorter length is used
/// otherwise).
#[inline]
pub fn l2_sq(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    arch().dispatch(L2Sq(&a[..n], &b[..n]))
}

/// Runs `op` on the widest SIMD the CPU offers (the choice [`dot`] and [`l2_sq`] make): a
/// loop inside `op` that calls [`dot_in`] or [`l2_sq_in`] with the token it is given gets
/// the kernel inlined instead of a dispatched call per distance.
pub(crate) fn dispatch<W: WithSimd>(op: W) -> W::Output {
    arch().dispatch(op)
}

/// [`dot`] with the SIMD token of an enclosing [`dispatch`].
#[inline(always)]
pub(crate) fn dot_in<S: Simd>(simd: S, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    Dot(&a[..n], &b[..n]).with_simd(simd)
}

/// [`l2_sq`] with the SIMD token of an enclosing [`dispatch`].
#[inline(always)]
pub(crate) fn l2_sq_in<S: Simd>(simd: S, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    L2Sq(&a[..n], &b[..n]).with_simd(simd)
}

/// Plain one-accumulator inner product: the reference for tests and benchmarks.
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Plain one-accumulator squared L2 distance: the reference for tests and benchmarks.
pub fn l2_sq_scalar(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// The largest squared Euclidean norm a vector may have: a quarter of `f32::MAX` (a norm of
/// about 9.2e18), so that every inner product and squared distance between two accepted
/// vectors stays finite (`‖a-b‖² <= (‖a‖+‖b‖)² <= 4 max(‖a‖², ‖b‖²)`).
pub const MAX_SQUARED_NORM: f64 = f32::MAX as f64 / 4.0;

/// Why a vector cannot be used under a metric (see [`vector_defect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VectorDefect {
    /// A component is NaN or infinite.
    NonFinite,
    /// All components are zero under the cosine metric: the vector has no direction.
    Zero,
    /// The squared norm exceeds [`MAX_SQUARED_NORM`]: scores would overflow to inf or NaN.
    Overflow,
}

impl std::fmt::Display for VectorDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VectorDefect::NonFinite => "the vector holds a non-finite value",
            VectorDefect::Zero => {
                "the vector has zero length, so it has no direction for the cosine metric"
            }
            VectorDefect::Overflow => "the vector's norm overflows f32; scale the vector down",
        })
    }
}

/// The squared Euclidean norm of `v`, accumulated in `f64` so that neither huge nor tiny
/// components overflow or underflow.
pub fn squared_norm(v: &[f32]) -> f64 {
    // Eight independent lanes, which the compiler keeps in vector registers: one running sum
    // is bound by the latency of 384 dependent f64 adds per 384-d vector, paid several times
    // per query and per insert.
    let mut acc = [0.0f64; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f64::from(x) * f64::from(x);
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &x in chunks.remainder() {
        sum += f64::from(x) * f64::from(x);
    }
    sum
}

/// What makes `v` unusable under `metric`, or `None` when the index accepts it (the length is
/// not checked here). Every component must be finite, the squared norm at most
/// [`MAX_SQUARED_NORM`], and under cosine the vector must not be zero. The index applies this
/// check on insert and on query; a caller that stores vectors elsewhere first (the database's
/// write path) calls it to reject what the index would reject before anything is stored.
pub fn vector_defect(metric: Metric, v: &[f32]) -> Option<VectorDefect> {
    norm_defect(metric, squared_norm(v))
}

/// [`vector_defect`] of a vector whose [`squared_norm`] is `sq`, for callers that need the
/// norm anyway (to normalise): one pass over the vector instead of two. A squared norm is
/// finite exactly when every component is: the `f64` square of any finite `f32` is below
/// 1.2e77, so no sum of them overflows, while a NaN or infinite component makes it NaN or
/// infinite.
pub fn norm_defect(metric: Metric, sq: f64) -> Option<VectorDefect> {
    if !sq.is_finite() {
        Some(VectorDefect::NonFinite)
    } else if sq > MAX_SQUARED_NORM {
        Some(VectorDefect::Overflow)
    } else if metric.normalizes() && sq == 0.0 {
        Some(VectorDefect::Zero)
    } else {
        None
    }
}

/// True when `v` can be normalised: its components are finite and not all zero. Allocates
/// nothing. Prefer [`vector_defect`], which also reports overflowing norms.
pub fn has_direction(v: &[f32]) -> bool {
    let sq = squared_norm(v);
    sq.is_finite() && sq > 0.0
}

/// Scales `v` to unit length in place; returns false (and leaves `v` as is) when it has no
/// direction (see [`has_direction`]). The norm is computed in `f64`, so vectors with tiny
/// components (whose `f32` squares underflow to zero) normalise exactly too.
pub fn normalize(v: &mut [f32]) -> bool {
    let sq = squared_norm(v);
    if !(sq.is_finite() && sq > 0.0) {
        return false;
    }
    scale_to_unit(v, sq);
    true
}

/// Scales `v`, whose [`squared_norm`] is `sq` (finite and positive: see [`norm_defect`]), to
/// unit length in place.
pub fn scale_to_unit(v: &mut [f32], sq: f64) {
    let inv = 1.0 / sq.sqrt();
    v.iter_mut().for_each(|x| *x = (f64::from(*x) * inv) as f32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::SplitMix64;

    fn close(fast: f32, slow: f64, scale: f64) -> bool {
        ((fast as f64) - slow).abs() <= 1e-5 * scale + 1e-6
    }

    /// Both kernels under one [`dispatch`].
    struct Both<'a>(&'a [f32], &'a [f32]);

    impl WithSimd for Both<'_> {
        type Output = (f32, f32);

        fn with_simd<S: Simd>(self, simd: S) -> (f32, f32) {
            (dot_in(simd, self.0, self.1), l2_sq_in(simd, self.0, self.1))
        }
    }

    #[test]
    fn kernels_match_scalar_for_all_dimensions() {
        let mut rng = SplitMix64::new(7);
        for dim in 1..=1000usize {
            let a: Vec<f32> = (0..dim).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
            let b: Vec<f32> = (0..dim).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
            // Reference in f64: both the kernel and the f32 scalar loop must be near it.
            let dot64: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let l264: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                .sum();
            let scale_dot: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64 * *y as f64).abs())
                .sum();
            assert!(close(dot(&a, &b), dot64, scale_dot), "dot dim {dim}");
            assert!(
                close(dot_scalar(&a, &b), dot64, scale_dot),
                "dot_scalar dim {dim}"
            );
            assert!(close(l2_sq(&a, &b), l264, l264), "l2 dim {dim}");
            // The kernels inlined under a caller's own dispatch (as the graph's walk runs).
            let (d, l) = dispatch(Both(&a, &b));
            assert!(close(d, dot64, scale_dot), "dot_in dim {dim}");
            assert!(close(l, l264, l264), "l2_sq_in dim {dim}");
            assert!(
                close(l2_sq_scalar(&a, &b), l264, l264),
                "l2_scalar dim {dim}"
            );
        }
    }

    #[test]
    fn empty_and_mismatched_lengths() {
        assert_eq!(dot(&[], &[]), 0.0);
        assert_eq!(l2_sq(&[1.0, 2.0], &[1.0]), 0.0);
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[2.0, 2.0]), 6.0);
    }

    #[test]
    fn normalize_unit_and_zero() {
        let mut v = vec![3.0, 4.0];
        assert!(normalize(&mut v));
        assert!((dot(&v, &v) - 1.0).abs() < 1e-6);
        let mut z = vec![0.0; 5];
        assert!(!normalize(&mut z));
    }

    #[test]
    fn tiny_and_huge_vectors_normalise_exactly() {
        for scale in [1e-30f32, 1e-40, 1e20, 3e38] {
            let mut v = vec![3.0 * scale, 4.0 * scale];
            if !v.iter().all(|x| x.is_finite()) {
                continue;
            }
            assert!(normalize(&mut v), "scale {scale}");
            assert!(
                (v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6,
                "{v:?}"
            );
        }
    }

    #[test]
    fn defects_are_named() {
        use VectorDefect::*;
        assert_eq!(vector_defect(Metric::Cosine, &[0.0, 0.0]), Some(Zero));
        assert_eq!(vector_defect(Metric::Dot, &[0.0, 0.0]), None);
        assert_eq!(vector_defect(Metric::L2, &[1.0, f32::NAN]), Some(NonFinite));
        for m in Metric::ALL {
            assert_eq!(vector_defect(m, &[1e20, 0.0]), Some(Overflow), "{m}");
            assert_eq!(vector_defect(m, &[3e38; 4]), Some(Overflow), "{m}");
            assert_eq!(vector_defect(m, &[1e-30, 0.0]), None, "{m}");
            assert_eq!(vector_defect(m, &[1e18; 8]), None, "{m}");
        }
        // At the bound, distances between accepted vectors stay finite.
        let edge = (MAX_SQUARED_NORM.sqrt() * 0.999) as f32;
        let (a, b) = ([edge, 0.0], [-edge, 0.0]);
        assert!(vector_defect(Metric::L2, &a).is_none());
        assert!(l2_sq(&a, &b).is_finite());
        assert!(dot(&a, &b).is_finite());
    }

    /// The lane-wise squared norm against one running sum, and the defects read off the norm
    /// against a per-component check, for every length up to 40 and a non-finite component
    /// at every position (the lanes and the remainder alike).
    #[test]
    fn squared_norm_and_defects_match_the_plain_versions() {
        let mut rng = SplitMix64::new(11);
        for dim in 0..=40usize {
            let v: Vec<f32> = (0..dim).map(|_| rng.next_f32() * 8.0 - 4.0).collect();
            let plain: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            let lanes = squared_norm(&v);
            assert!(
                (lanes - plain).abs() <= 1e-12 * plain.max(1.0),
                "{dim}: {lanes} {plain}"
            );
            for i in 0..dim {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut w = v.clone();
                    w[i] = bad;
                    for m in Metric::ALL {
                        assert_eq!(vector_defect(m, &w), Some(VectorDefect::NonFinite));
                    }
                    assert!(!has_direction(&w));
                    assert!(!normalize(&mut w));
                }
            }
        }
        // The largest finite components cannot overflow the f64 sum into a false NonFinite.
        assert_eq!(
            vector_defect(Metric::L2, &[f32::MAX; 1000]),
            Some(VectorDefect::Overflow)
        );
        assert_eq!(
            vector_defect(Metric::Cosine, &[f32::MIN_POSITIVE / 8.0; 3]),
            None
        );
    }
}
