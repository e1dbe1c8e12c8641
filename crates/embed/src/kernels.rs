//! Fused CPU kernels (f32, contiguous slices) for the sentence encoder's inference path:
//! bias + residual + LayerNorm, exact-erf GELU, and attention over packed variable-length
//! sequences (no padding anywhere). Forward-only: never use these in a trainable path. The
//! matrix products beside them are in [`crate::packed_gemm`].

use candle_core::{Result, bail};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use crate::packed_gemm::{Mat, arch, micro_kernel, store};

/// `exp(x)` for f32 by range reduction and a degree-6 polynomial (relative error < 2e-7);
/// only adds, multiplies and bit operations, so loops over it vectorize on the baseline target.
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    // Round to nearest by the 1.5 * 2^23 trick; the integer then sits in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    let scale = t.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23;
    p * f32::from_bits(scale)
}

/// `erf(x)` (Abramowitz-Stegun 7.1.26, absolute error < 1.5e-7).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let y = 1.0
        - t * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))))
            * fast_exp(-a * a);
    y.copysign(x)
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Sum with eight independent accumulators (a serial `+=` chain neither vectorizes nor
/// pipelines).
#[inline(always)]
fn sum8(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// Maximum with eight independent lanes.
#[inline(always)]
fn max8(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// `row = gelu(row)` (the packed feed-forward block's epilogue).
#[inline(always)]
pub(crate) fn gelu_in_place(row: &mut [f32]) {
    for v in row {
        *v = gelu(*v);
    }
}

/// `o = LayerNorm(x + bias + r)` with weight `w` and bias `b`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn add_ln_row(o: &mut [f32], x: &[f32], r: &[f32], bias: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let d = o.len();
    for k in 0..d {
        o[k] = x[k] + bias[k] + r[k];
    }
    let mean = sum8(o) / d as f32;
    for v in o.iter_mut() {
        *v -= mean;
    }
    let mut acc = [0f32; 8];
    let chunks = o.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k] * c[k];
        }
    }
    let var = (acc.iter().sum::<f32>() + rest) / d as f32;
    let inv = 1.0 / (var + eps).sqrt();
    for k in 0..d {
        o[k] = o[k] * inv * w[k] + b[k];
    }
}

/// Rows handed to one parallel task of the LayerNorm kernel.
const ROWS_PER_TASK: usize = 16;

/// Rows of `LayerNorm(x + bias + r)` (see [`add_ln_row`]). A `WithSimd` type rather than a
/// closure: pulp inlines `with_simd` into its `#[target_feature]` entry point, so the loops
/// compile for AVX2 + FMA (a closure body is a separate function that stays on the baseline
/// SSE2).
struct AddLnRows<'a> {
    out: &'a mut [f32],
    x: &'a [f32],
    r: &'a [f32],
    /// `[3, d]`: bias, LayerNorm weight, LayerNorm bias.
    params: &'a [f32],
    eps: f32,
}

impl WithSimd for AddLnRows<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let d = self.params.len() / 3;
        let (bias, rest) = self.params.split_at(d);
        let (w, b) = rest.split_at(d);
        let rows = self
            .out
            .chunks_exact_mut(d)
            .zip(self.x.chunks_exact(d).zip(self.r.chunks_exact(d)));
        for (o, (x, r)) in rows {
            add_ln_row(o, x, r, bias, w, b, self.eps);
        }
    }
}

/// `LayerNorm(x + bias + residual)` for `x`, `residual` `[n, d]`; `params` `[3, d]` holds the
/// bias, the LayerNorm weight and the LayerNorm bias.
pub(crate) fn add_layer_norm(
    x: &[f32],
    residual: &[f32],
    params: &[f32],
    eps: f32,
) -> Result<Vec<f32>> {
    let d = params.len() / 3;
    if d == 0 || params.len() != 3 * d || x.len() != residual.len() || !x.len().is_multiple_of(d) {
        bail!("add-layer-norm: shape mismatch");
    }
    let arch = arch();
    let mut out = vec![0f32; x.len()];
    let chunk = d * ROWS_PER_TASK;
    out.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk).zip(residual.par_chunks(chunk)))
        .for_each(|(out, (x, r))| {
            arch.dispatch(AddLnRows {
                out,
                x,
                r,
                params,
                eps,
            })
        });
    Ok(out)
}

/// `c = a × b` for `a` `[m, k]` and `b` `[k, n]` (exactly `k` rows of `b.stride` values) with
/// `n` a multiple of two SIMD registers (callers pad `b` and `c` rows with zeros), by the
/// matrix kernels' 4-row × 2-register micro-kernel.
#[inline(always)]
pub(crate) fn small_matmul<S: Simd>(
    simd: S,
    a: Mat<'_>,
    b: Mat<'_>,
    (m, k, n): (usize, usize, usize),
    c: &mut [f32],
    c_stride: usize,
) {
    let lanes = S::F32_LANES;
    for i in (0..m).step_by(4) {
        let rows = a.four_rows(i, m, k);
        for j in (0..n).step_by(2 * lanes) {
            let b_rows = b.data.chunks_exact(b.stride).take(k).map(|row| &row[j..]);
            let acc = micro_kernel(simd, rows, b_rows);
            for (r, acc) in acc.iter().enumerate().take(m - i) {
                let out = &mut c[(i + r) * c_stride + j..];
                store::<S>(out, acc[0]);
                store::<S>(&mut out[lanes..], acc[1]);
            }
        }
    }
}

/// Softmax of each row's first `len` values in place (rows of `stride` values).
#[inline(always)]
pub(crate) fn softmax_rows(scores: &mut [f32], rows: usize, len: usize, stride: usize) {
    for i in 0..rows {
        let p = &mut scores[i * stride..i * stride + len];
        let max = max8(p);
        for pj in p.iter_mut() {
            *pj = fast_exp(*pj - max);
        }
        let inv = 1.0 / sum8(p);
        for pj in p.iter_mut() {
            *pj *= inv;
        }
    }
}

/// Working buffers of one sequence's attention, reused across its heads.
#[derive(Default)]
struct AttentionScratch {
    /// Queries `[len, hd]`, scaled.
    q: Vec<f32>,
    /// Keys transposed `[hd, lp]`, zero in the padding columns.
    kt: Vec<f32>,
    /// Values `[len, vp]`, zero in the padding columns.
    v: Vec<f32>,
    /// Scores, then probabilities, `[len, lp]`.
    p: Vec<f32>,
    /// The head's context `[len, vp]`.
    ctx: Vec<f32>,
}

/// All heads of one packed sequence (a `WithSimd` type for the reason given on [`AddLnRows`]).
struct SequenceAttention<'a> {
    /// The sequence's rows of the projections `[len, 3d]`, biases included.
    qkv: &'a [f32],
    /// The sequence's rows of the output `[len, d]`.
    out: &'a mut [f32],
    heads: usize,
    head_dim: usize,
}

impl WithSimd for SequenceAttention<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (nh, hd) = (self.heads, self.head_dim);
        let d = nh * hd;
        let len = self.qkv.len() / (3 * d);
        let wide = 2 * S::F32_LANES;
        let lp = len.div_ceil(wide) * wide;
        let vp = hd.div_ceil(wide) * wide;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut s = AttentionScratch::default();
        s.q.resize(len * hd, 0.0);
        s.kt.resize(hd * lp, 0.0);
        s.v.resize(len * vp, 0.0);
        s.p.resize(len * lp, 0.0);
        s.ctx.resize(len * vp, 0.0);
        for h in 0..nh {
            let (qo, ko, vo) = (h * hd, d + h * hd, 2 * d + h * hd);
            for i in 0..len {
                let row = &self.qkv[i * 3 * d..(i + 1) * 3 * d];
                for c in 0..hd {
                    s.q[i * hd + c] = row[qo + c] * scale;
                    s.kt[c * lp + i] = row[ko + c];
                    s.v[i * vp + c] = row[vo + c];
                }
            }
            let (q, kt) = (Mat::new(&s.q, hd), Mat::new(&s.kt, lp));
            small_matmul(simd, q, kt, (len, hd, lp), &mut s.p, lp);
            softmax_rows(&mut s.p, len, len, lp);
            let (p, v) = (Mat::new(&s.p, lp), Mat::new(&s.v, vp));
            small_matmul(simd, p, v, (len, len, vp), &mut s.ctx, vp);
            for i in 0..len {
                self.out[i * d + h * hd..][..hd].copy_from_slice(&s.ctx[i * vp..i * vp + hd]);
            }
        }
    }
}

/// Multi-head self-attention over packed sequences: `qkv` `[rows, 3d]` (query, key, value
/// projections with their biases, heads concatenated in each); each sequence `(start, len)`
/// attends only to itself. Spans must be in order and disjoint. Returns `[rows, d]`; rows
/// outside every span are zero.
pub(crate) fn packed_attention(
    qkv: &[f32],
    spans: &[(usize, usize)],
    heads: usize,
    head_dim: usize,
) -> Result<Vec<f32>> {
    let d = heads * head_dim;
    if d == 0 || !qkv.len().is_multiple_of(3 * d) {
        bail!("packed-attention: shape mismatch");
    }
    let rows = qkv.len() / (3 * d);
    // Each sequence writes its own rows of the output: the spans must be in order and must not
    // overlap.
    let mut end = 0;
    for &(start, len) in spans {
        if start < end || start + len > rows {
            bail!("packed-attention: spans must be ordered, disjoint and within the rows");
        }
        end = start + len;
    }
    let mut out = vec![0f32; rows * d];
    let mut jobs = Vec::with_capacity(spans.len());
    let mut rest = out.as_mut_slice();
    let mut at = 0;
    for &(start, len) in spans {
        let (_, tail) = rest.split_at_mut((start - at) * d);
        let (rows_out, tail) = tail.split_at_mut(len * d);
        jobs.push((&qkv[start * 3 * d..(start + len) * 3 * d], rows_out));
        rest = tail;
        at = start + len;
    }
    let arch = arch();
    jobs.into_par_iter().for_each(|(qkv, out)| {
        arch.dispatch(SequenceAttention {
            qkv,
            out,
            heads,
            head_dim,
        })
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    #[test]
    fn packed_attention_matches_per_sequence_softmax_attention() {
        let dev = candle_core::Device::Cpu;
        let (heads, hd) = (3, 8);
        let d = heads * hd;
        // Odd lengths (not multiples of the 4 x 8 blocks) and a row outside every span.
        let spans = vec![(0, 5), (5, 13), (18, 1), (20, 9)];
        let rows = 29;
        let x = Tensor::randn(0f32, 1.0, (rows, 3 * d), &dev).expect("randn");
        let flat = x
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("data");
        let got = packed_attention(&flat, &spans, heads, hd).expect("kernel");
        let got = Tensor::from_vec(got, (rows, d), &dev).expect("tensor");
        for &(start, len) in &spans {
            let part = |k: usize| {
                x.narrow(0, start, len)
                    .and_then(|t| t.narrow(1, k * d, d))
                    .and_then(|t| t.reshape((len, heads, hd)))
                    .and_then(|t| t.transpose(0, 1))
                    .and_then(|t| t.contiguous())
                    .expect("split")
            };
            let (q, k, v) = (part(0), part(1), part(2));
            let s =
                (q.matmul(&k.t().expect("t")).expect("qk") / (hd as f64).sqrt()).expect("scale");
            let p = candle_nn::ops::softmax_last_dim(&s).expect("softmax");
            let want = p
                .matmul(&v)
                .and_then(|o| o.transpose(0, 1))
                .and_then(|o| o.reshape((len, d)))
                .expect("out");
            let diff = (got.narrow(0, start, len).expect("rows") - want)
                .and_then(|t| t.abs())
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.max(0))
                .and_then(|t| t.to_scalar::<f32>())
                .expect("diff");
            assert!(diff < 1e-5, "span ({start}, {len}): {diff}");
        }
        let gap = got.get(19).and_then(|r| r.abs()).and_then(|r| r.sum_all());
        assert_eq!(gap.and_then(|g| g.to_scalar::<f32>()).expect("gap"), 0.0);
    }

    #[test]
    fn attention_on_the_scalar_fallback_matches_the_simd_one() {
        let (heads, hd, len) = (2, 12, 23);
        let d = heads * hd;
        let qkv: Vec<f32> = (0..len * 3 * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let simd = packed_attention(&qkv, &[(0, len)], heads, hd).expect("kernel");
        let mut scalar = vec![0f32; len * d];
        SequenceAttention {
            qkv: &qkv,
            out: &mut scalar,
            heads,
            head_dim: hd,
        }
        .with_simd(pulp::Scalar::new());
        for (i, (a, b)) in simd.iter().zip(&scalar).enumerate() {
            assert!((a - b).abs() < 1e-5, "{i}: {a} vs {b}");
        }
    }

    #[test]
    fn fast_exp_and_erf_are_accurate() {
        for i in -2000..2000 {
            let x = i as f32 * 0.01;
            let e = fast_exp(x);
            assert!(((e - x.exp()) / x.exp()).abs() < 1e-6, "exp({x})");
        }
        let dev = candle_core::Device::Cpu;
        let xs: Vec<f32> = (-800..800).map(|i| i as f32 * 0.01).collect();
        let t = Tensor::new(xs.as_slice(), &dev).expect("tensor");
        let want = t.gelu_erf().and_then(|g| g.to_vec1::<f32>()).expect("gelu");
        assert_eq!(want.len(), xs.len());
        for (x, w) in xs.iter().zip(&want) {
            assert!(
                (gelu(*x) - w).abs() < 2e-6,
                "gelu({x}): {} vs {w}",
                gelu(*x)
            );
        }
    }
}
