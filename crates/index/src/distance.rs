//! The f32 distance kernels: inner product and squared L2 for any dimension.
//!
//! The kernels run on the widest SIMD the CPU offers, chosen once at run time through `pulp`
//! (AVX2 + FMA on x86-64 v3, AVX-512 when enabled, NEON on aarch64, a scalar fallback
//! elsewhere), with four independent accumulators so that the loop is bound by loads, not by
//! the latency of one add chain. The plain scalar versions ([`dot_scalar`], [`l2_sq_scalar`])
//! are the reference the tests compare against.

use std::sync::OnceLock;

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

/// Plain one-accumulator inner product: the reference for tests and benchmarks.
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Plain one-accumulator squared L2 distance: the reference for tests and benchmarks.
pub fn l2_sq_scalar(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// True when `v` can be normalised: its norm is finite and not zero. Allocates nothing.
pub fn has_direction(v: &[f32]) -> bool {
    usable_norm(dot(v, v).sqrt())
}

fn usable_norm(norm: f32) -> bool {
    norm != 0.0 && norm.is_finite()
}

/// Scales `v` to unit length in place; returns false (and leaves `v` as is) when its norm is
/// zero or not finite.
pub fn normalize(v: &mut [f32]) -> bool {
    let norm = dot(v, v).sqrt();
    if !usable_norm(norm) {
        return false;
    }
    let inv = 1.0 / norm;
    v.iter_mut().for_each(|x| *x *= inv);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::SplitMix64;

    fn close(fast: f32, slow: f64, scale: f64) -> bool {
        ((fast as f64) - slow).abs() <= 1e-5 * scale + 1e-6
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
}
