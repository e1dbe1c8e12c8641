//! Matrix products against constant weights packed once (the sentence encoder's inference path
//! on the CPU), with the bias, and for the feed-forward block the GELU and the second product,
//! fused in while the rows are still in cache.
//!
//! A weight matrix `[k, n]` is stored as panels of `nr` columns (two SIMD registers wide), each
//! panel `k` rows of `nr` contiguous values, zero beyond `n`: the micro-kernel reads a panel
//! front to back. Each parallel task takes a block of rows of the input; within it, every panel
//! is multiplied with the block four rows at a time, eight accumulators in registers (one FMA
//! per loaded value pair and broadcast row; six rows spilled accumulators to the stack). The
//! rows are never packed: a block of at most [`BLOCK_ROWS`] rows stays in the core's L2 cache
//! while the panels pass over it.
//!
//! Forward-only and f32 only; [`crate::bert::Bert::forward_packed`] is the caller.

use std::cell::RefCell;
use std::sync::OnceLock;

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

/// Rows of the micro-kernel.
const MR: usize = 4;
/// Most rows one parallel task takes (a multiple of [`MR`]).
const BLOCK_ROWS: usize = 48;

pub(crate) fn arch() -> Arch {
    static ARCH: OnceLock<Arch> = OnceLock::new();
    *ARCH.get_or_init(Arch::new)
}

struct Lanes;

impl WithSimd for Lanes {
    type Output = usize;

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) -> usize {
        S::F32_LANES
    }
}

/// Width of a panel on this CPU: two SIMD registers of f32.
pub(crate) fn panel_width() -> usize {
    2 * arch().dispatch(Lanes)
}

/// A constant weight matrix `[k, n]` and its bias `[n]`, packed in panels for [`matmul`] and
/// [`feed_forward`].
#[derive(Debug, Clone)]
pub(crate) struct PackedWeights {
    k: usize,
    n: usize,
    nr: usize,
    /// Panel `p`, row `t`, column `c` at `(p * k + t) * nr + c`.
    data: Vec<f32>,
    /// The bias, zero-padded to whole panels.
    bias: Vec<f32>,
}

impl PackedWeights {
    /// Rows of the matrix (the input width).
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Columns of the matrix (the output width).
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// Packs `w` (row-major `[k, n]`) and `bias` (`[n]`).
    ///
    /// # Panics
    /// If the lengths do not match `k` and `n` (the caller's tensors have checked shapes).
    pub(crate) fn new(w: &[f32], bias: &[f32], k: usize, n: usize) -> Self {
        Self::with_panel_width(w, bias, k, n, panel_width())
    }

    /// [`PackedWeights::new`] for the instruction set whose registers hold `nr / 2` values.
    fn with_panel_width(w: &[f32], bias: &[f32], k: usize, n: usize, nr: usize) -> Self {
        assert_eq!(w.len(), k * n, "weights of {k} x {n}");
        assert_eq!(bias.len(), n, "bias of {n}");
        let panels = n.div_ceil(nr);
        let mut data = vec![0f32; panels * k * nr];
        for p in 0..panels {
            let cols = nr.min(n - p * nr);
            for t in 0..k {
                data[(p * k + t) * nr..][..cols].copy_from_slice(&w[t * n + p * nr..][..cols]);
            }
        }
        let mut padded = vec![0f32; panels * nr];
        padded[..n].copy_from_slice(bias);
        Self {
            k,
            n,
            nr,
            data,
            bias: padded,
        }
    }
}

/// One SIMD register's worth of `s` (which holds at least `S::F32_LANES` values).
#[inline(always)]
pub(crate) fn load<S: Simd>(s: &[f32]) -> S::f32s {
    S::as_simd_f32s(&s[..S::F32_LANES]).0[0]
}

/// Stores one SIMD register into the first `S::F32_LANES` values of `s`.
#[inline(always)]
pub(crate) fn store<S: Simd>(s: &mut [f32], v: S::f32s) {
    S::as_mut_simd_f32s(&mut s[..S::F32_LANES]).0[0] = v;
}

/// A row-major matrix: element `(i, j)` at `data[i * stride + j]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) stride: usize,
}

impl<'a> Mat<'a> {
    pub(crate) fn new(data: &'a [f32], stride: usize) -> Self {
        Self { data, stride }
    }

    /// Rows `i..i + 4`, their first `k` values; rows past `m` repeat row `m - 1` (`m > i`), so
    /// a partial block computes on real data and its caller stores only the real rows.
    #[inline(always)]
    pub(crate) fn four_rows(self, i: usize, m: usize, k: usize) -> [&'a [f32]; 4] {
        let row = |r: usize| &self.data[(i + r).min(m - 1) * self.stride..][..k];
        [row(0), row(1), row(2), row(3)]
    }
}

/// Four rows of `a` times `b`'s rows (one per step, each starting at the two registers of
/// columns wanted): eight independent FMA chains (enough to hide the FMA latency), each `b`
/// register loaded once for four rows. Returns the four rows' two registers.
#[inline(always)]
pub(crate) fn micro_kernel<'b, S: Simd>(
    simd: S,
    a: [&[f32]; 4],
    b_rows: impl Iterator<Item = &'b [f32]>,
) -> [[S::f32s; 2]; 4] {
    let [a0, a1, a2, a3] = a;
    let mut acc = [[simd.splat_f32s(0.0); 2]; 4];
    for (t, bt) in b_rows.enumerate() {
        // Two registers (a compile-time length per instruction set): one bounds check.
        let (v, _) = S::as_simd_f32s(&bt[..2 * S::F32_LANES]);
        let (v0, v1) = (v[0], v[1]);
        let x = simd.splat_f32s(a0[t]);
        acc[0][0] = simd.mul_add_e_f32s(x, v0, acc[0][0]);
        acc[0][1] = simd.mul_add_e_f32s(x, v1, acc[0][1]);
        let x = simd.splat_f32s(a1[t]);
        acc[1][0] = simd.mul_add_e_f32s(x, v0, acc[1][0]);
        acc[1][1] = simd.mul_add_e_f32s(x, v1, acc[1][1]);
        let x = simd.splat_f32s(a2[t]);
        acc[2][0] = simd.mul_add_e_f32s(x, v0, acc[2][0]);
        acc[2][1] = simd.mul_add_e_f32s(x, v1, acc[2][1]);
        let x = simd.splat_f32s(a3[t]);
        acc[3][0] = simd.mul_add_e_f32s(x, v0, acc[3][0]);
        acc[3][1] = simd.mul_add_e_f32s(x, v1, acc[3][1]);
    }
    acc
}

/// `c = a × w + bias` for `m` rows of `a` (each at least `w.k` long); `c` row `i` at
/// `c[i * ldc..][..w.n]`.
#[inline(always)]
fn block_product<S: Simd>(
    simd: S,
    a: Mat<'_>,
    m: usize,
    w: &PackedWeights,
    c: &mut [f32],
    ldc: usize,
) {
    let lanes = S::F32_LANES;
    let (k, nr) = (w.k, w.nr);
    debug_assert_eq!(nr, 2 * lanes);
    for (p, panel) in w.data.chunks_exact(k * nr).enumerate() {
        let col = p * nr;
        let cols = nr.min(w.n - col);
        let b0 = load::<S>(&w.bias[col..]);
        let b1 = load::<S>(&w.bias[col + lanes..]);
        for i in (0..m).step_by(MR) {
            let acc = micro_kernel(simd, a.four_rows(i, m, k), panel.chunks_exact(nr));
            for (r, acc) in acc.iter().enumerate().take(m - i) {
                let out = &mut c[(i + r) * ldc + col..];
                let (s0, s1) = (simd.add_f32s(acc[0], b0), simd.add_f32s(acc[1], b1));
                if cols == nr {
                    store::<S>(out, s0);
                    store::<S>(&mut out[lanes..], s1);
                } else {
                    let mut tmp = [0f32; 64];
                    store::<S>(&mut tmp, s0);
                    store::<S>(&mut tmp[lanes..], s1);
                    out[..cols].copy_from_slice(&tmp[..cols]);
                }
            }
        }
    }
}

struct Product<'a> {
    a: &'a [f32],
    m: usize,
    w: &'a PackedWeights,
    c: &'a mut [f32],
}

impl WithSimd for Product<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let a = Mat::new(self.a, self.w.k);
        block_product(simd, a, self.m, self.w, self.c, self.w.n);
    }
}

/// Runs `block(a, rows, c, rows_per_task)` in parallel over blocks of the `m` rows of `x`
/// (each `k` wide) and of the output (each `n` wide): whole blocks of at most [`BLOCK_ROWS`],
/// but at least one task per thread when `m` is small (a short query still uses every core).
fn by_row_blocks(
    x: &[f32],
    m: usize,
    (k, n): (usize, usize),
    block: impl Fn(&[f32], usize, &mut [f32], usize) + Sync,
) -> Vec<f32> {
    debug_assert_eq!(x.len(), m * k);
    let mut out = vec![0f32; m * n];
    if m == 0 {
        return out;
    }
    let threads = rayon::current_num_threads().max(1);
    let rows = m.div_ceil(threads).div_ceil(MR).clamp(1, BLOCK_ROWS / MR) * MR;
    out.par_chunks_mut(rows * n)
        .zip(x.par_chunks(rows * k))
        .for_each(|(c, a)| block(a, a.len() / k, c, rows));
    out
}

/// `x × w + bias` for `x` row-major `[m, w.k]`; returns `[m, w.n]`.
pub(crate) fn matmul(x: &[f32], m: usize, w: &PackedWeights) -> Vec<f32> {
    let arch = arch();
    by_row_blocks(x, m, (w.k, w.n), |a, m, c, _| {
        arch.dispatch(Product { a, m, w, c })
    })
}

thread_local! {
    /// The feed-forward block's intermediate rows, reused by every task on this thread.
    static HIDDEN: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

struct FeedForward<'a> {
    a: &'a [f32],
    m: usize,
    up: &'a PackedWeights,
    down: &'a PackedWeights,
    hidden: &'a mut [f32],
    c: &'a mut [f32],
}

impl WithSimd for FeedForward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let f = self.up.n;
        let a = Mat::new(self.a, self.up.k);
        block_product(simd, a, self.m, self.up, self.hidden, f);
        for row in self.hidden.chunks_exact_mut(f) {
            crate::kernels::gelu_in_place(row);
        }
        let h = Mat::new(self.hidden, f);
        block_product(simd, h, self.m, self.down, self.c, self.down.n);
    }
}

/// `gelu_erf(x × up + up bias) × down + down bias` for `x` `[m, up.k]`, a block of rows at a
/// time so that the intermediate `[rows, up.n]` never leaves the core's cache. Returns
/// `[m, down.n]`.
///
/// # Panics
/// If `down` does not take `up`'s output width.
pub(crate) fn feed_forward(
    x: &[f32],
    m: usize,
    up: &PackedWeights,
    down: &PackedWeights,
) -> Vec<f32> {
    assert_eq!(up.n, down.k, "feed-forward widths");
    let arch = arch();
    by_row_blocks(x, m, (up.k, down.n), |a, m, c, rows| {
        HIDDEN.with(|cell| {
            let mut hidden = cell.borrow_mut();
            hidden.resize(rows * up.n, 0.0);
            arch.dispatch(FeedForward {
                a,
                m,
                up,
                down,
                hidden: &mut hidden[..m * up.n],
                c,
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::SplitMix64;

    fn random(n: usize, rng: &mut SplitMix64) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    /// The plain triple loop: the oracle.
    fn reference(x: &[f32], m: usize, w: &[f32], b: &[f32], k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = f64::from(b[j]);
                for t in 0..k {
                    s += f64::from(x[i * k + t]) * f64::from(w[t * n + j]);
                }
                out[i * n + j] = s as f32;
            }
        }
        out
    }

    fn assert_close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{i}: {g} vs {w}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any shape, on this CPU's instruction set and on the scalar fallback (what a CPU
        /// without AVX2 runs), against the triple loop.
        #[test]
        fn any_shape_matches_the_triple_loop(
            m in 1usize..30,
            k in 1usize..40,
            n in 1usize..40,
            seed in 0u64..1000,
        ) {
            let mut rng = SplitMix64(seed);
            let x = random(m * k, &mut rng);
            let w = random(k * n, &mut rng);
            let b = random(n, &mut rng);
            let want = reference(&x, m, &w, &b, k, n);
            assert_close(&matmul(&x, m, &PackedWeights::new(&w, &b, k, n)), &want, 1e-4);
            let scalar = PackedWeights::with_panel_width(&w, &b, k, n, 2);
            let mut got = vec![0f32; m * n];
            Product { a: &x, m, w: &scalar, c: &mut got }.with_simd(pulp::Scalar::new());
            assert_close(&got, &want, 1e-4);
        }
    }

    #[test]
    fn products_match_the_triple_loop_for_ragged_shapes() {
        let mut rng = SplitMix64(7);
        // Rows not a multiple of four or of a task, columns not a multiple of a panel.
        for &(m, k, n) in &[
            (1, 3, 1),
            (5, 7, 9),
            (6, 16, 16),
            (13, 33, 40),
            (50, 64, 17),
            (97, 40, 72),
            (200, 24, 33),
        ] {
            let x = random(m * k, &mut rng);
            let w = random(k * n, &mut rng);
            let b = random(n, &mut rng);
            let packed = PackedWeights::new(&w, &b, k, n);
            assert_eq!((packed.k, packed.n), (k, n));
            let got = matmul(&x, m, &packed);
            assert_close(&got, &reference(&x, m, &w, &b, k, n), 1e-4);
        }
    }

    #[test]
    fn the_fused_feed_forward_matches_its_parts() {
        let mut rng = SplitMix64(11);
        let (m, d, f) = (59, 24, 56);
        let x = random(m * d, &mut rng);
        let (w1, b1) = (random(d * f, &mut rng), random(f, &mut rng));
        let (w2, b2) = (random(f * d, &mut rng), random(d, &mut rng));
        let up = PackedWeights::new(&w1, &b1, d, f);
        let down = PackedWeights::new(&w2, &b2, f, d);
        let mut h = reference(&x, m, &w1, &b1, d, f);
        for row in h.chunks_exact_mut(f) {
            crate::kernels::gelu_in_place(row);
        }
        let want = reference(&h, m, &w2, &b2, f, d);
        assert_close(&feed_forward(&x, m, &up, &down), &want, 1e-4);
    }
}
