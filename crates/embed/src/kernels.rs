//! Fused CPU kernels (f32, contiguous) for the sentence encoder's inference path, written as
//! candle custom ops: bias + exact-erf GELU, bias + residual + LayerNorm, and attention over
//! packed variable-length sequences (no padding anywhere). Forward-only: never use these in a
//! trainable path.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("fused kernel: input must be contiguous"),
    }
}

/// `exp(x)` for f32 by range reduction and a degree-6 polynomial (relative error < 2e-7);
/// only adds, multiplies and bit operations, so loops over it vectorize on the baseline target.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
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
fn erf(x: f32) -> f32 {
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

/// `o = gelu(x + b)`; inlined into pulp's per-instruction-set dispatch so it vectorizes with
/// the best SIMD the CPU has.
#[inline(always)]
fn gelu_row(o: &mut [f32], x: &[f32], b: &[f32]) {
    for ((o, x), b) in o.iter_mut().zip(x).zip(b) {
        *o = gelu(x + b);
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

struct BiasGelu;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias-gelu-erf"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s1, l1)?;
        let b = contiguous(s2, l2)?;
        let f = b.len();
        if f == 0 || x.len() % f != 0 {
            bail!("bias-gelu: bias of {f} does not divide {}", x.len());
        }
        let arch = pulp::Arch::new();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(f)
            .zip(x.par_chunks(f))
            .with_min_len(8)
            .for_each(|(o, x)| arch.dispatch(|| gelu_row(o, x, b)));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `gelu_erf(x + bias)` for `x` `[n, f]` and `bias` `[f]`.
pub(crate) fn bias_gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.apply_op2_no_bwd(bias, &BiasGelu)
}

struct AddLayerNorm {
    eps: f32,
}

impl CustomOp3 for AddLayerNorm {
    fn name(&self) -> &'static str {
        "add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s1, l1)?;
        let r = contiguous(s2, l2)?;
        let p = contiguous(s3, l3)?;
        let d = p.len() / 3;
        if d == 0 || p.len() != 3 * d || x.len() != r.len() || x.len() % d != 0 {
            bail!("add-layer-norm: shape mismatch");
        }
        let (bias, rest) = p.split_at(d);
        let (w, b) = rest.split_at(d);
        let eps = self.eps;
        let arch = pulp::Arch::new();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d).zip(r.par_chunks(d)))
            .with_min_len(8)
            .for_each(|(o, (x, r))| arch.dispatch(|| add_ln_row(o, x, r, bias, w, b, eps)));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `LayerNorm(x + bias + residual)` for `x`, `residual` `[n, d]`; `params` `[3, d]` holds the
/// bias, the LayerNorm weight and the LayerNorm bias.
pub(crate) fn add_layer_norm(
    x: &Tensor,
    residual: &Tensor,
    params: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    x.apply_op3_no_bwd(residual, params, &AddLayerNorm { eps })
}

/// One head of one sequence: rows `start..start + len` of `qkv` (`[rows, 3d]`, before
/// `bias`), the head's columns from `col`; returns its context `[len, hd]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attention_head(
    qkv: &[f32],
    bias: &[f32],
    start: usize,
    len: usize,
    col: usize,
    d: usize,
    hd: usize,
    scale: f32,
) -> Vec<f32> {
    let h_off = col;
    let gather = |part: usize, mul: f32| -> Vec<f32> {
        let mut m = Vec::with_capacity(len * hd);
        let off = part * d + h_off;
        for i in 0..len {
            let row = &qkv[(start + i) * 3 * d + off..][..hd];
            m.extend(
                row.iter()
                    .zip(&bias[off..off + hd])
                    .map(|(x, b)| (x + b) * mul),
            );
        }
        m
    };
    let v = gather(2, 1.0);
    // Queries padded to a multiple of 4 rows, keys transposed ([hd, len8], padded to a multiple
    // of 8 columns with zeros): scores are computed in 4 x 8 register blocks, each key vector
    // loaded once for four queries.
    let len4 = len.div_ceil(4) * 4;
    let len8 = len.div_ceil(8) * 8;
    let mut q = gather(0, scale);
    q.resize(len4 * hd, 0.0);
    let mut kt = vec![0f32; hd * len8];
    let koff = d + h_off;
    for j in 0..len {
        let row = &qkv[(start + j) * 3 * d + koff..][..hd];
        for (c, (x, b)) in row.iter().zip(&bias[koff..koff + hd]).enumerate() {
            kt[c * len8 + j] = x + b;
        }
    }
    let mut scores = vec![0f32; len4 * len8];
    for ib in (0..len4).step_by(4) {
        for jb in (0..len8).step_by(8) {
            let mut acc = [[0f32; 8]; 4];
            for c in 0..hd {
                let k = &kt[c * len8 + jb..][..8];
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let qv = q[(ib + r) * hd + c];
                    for t in 0..8 {
                        acc_r[t] += qv * k[t];
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                scores[(ib + r) * len8 + jb..][..8].copy_from_slice(acc_r);
            }
        }
    }
    let mut out = vec![0f32; len * hd];
    for i in 0..len {
        let p = &mut scores[i * len8..i * len8 + len];
        let max = max8(p);
        for pj in p.iter_mut() {
            *pj = fast_exp(*pj - max);
        }
        let inv = 1.0 / sum8(p);
        let oi = &mut out[i * hd..(i + 1) * hd];
        for (j, pj) in p.iter().enumerate() {
            let w = pj * inv;
            for (o, vv) in oi.iter_mut().zip(&v[j * hd..(j + 1) * hd]) {
                *o += w * vv;
            }
        }
    }
    out
}

struct PackedAttention {
    /// (start row, length) of each sequence in the packed rows.
    spans: Vec<(usize, usize)>,
    heads: usize,
    head_dim: usize,
}

impl CustomOp2 for PackedAttention {
    fn name(&self) -> &'static str {
        "packed-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous(s1, l1)?;
        let bias = contiguous(s2, l2)?;
        let (hn, hd) = (self.heads, self.head_dim);
        let d = hn * hd;
        if bias.len() != 3 * d || qkv.len() % (3 * d) != 0 {
            bail!("packed-attention: shape mismatch");
        }
        let rows = qkv.len() / (3 * d);
        if self.spans.iter().any(|&(s, l)| s + l > rows) {
            bail!("packed-attention: spans exceed the rows");
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let arch = pulp::Arch::new();
        let jobs: Vec<(usize, usize)> = (0..self.spans.len())
            .flat_map(|s| (0..hn).map(move |h| (s, h)))
            .collect();
        let results: Vec<Vec<f32>> = jobs
            .par_iter()
            .map(|&(s, h)| {
                let (start, len) = self.spans[s];
                arch.dispatch(|| attention_head(qkv, bias, start, len, h * hd, d, hd, scale))
            })
            .collect();
        let mut out = vec![0f32; rows * d];
        for (&(s, h), r) in jobs.iter().zip(results) {
            let (start, len) = self.spans[s];
            for i in 0..len {
                out[(start + i) * d + h * hd..][..hd].copy_from_slice(&r[i * hd..(i + 1) * hd]);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, d))))
    }
}

/// Multi-head self-attention over packed sequences: `qkv` `[rows, 3d]` (query, key, value
/// projections before their bias, heads concatenated in each), `bias` `[3d]`; each sequence
/// `(start, len)` attends only to itself. Returns `[rows, d]`; rows outside every span are zero.
pub(crate) fn packed_attention(
    qkv: &Tensor,
    bias: &Tensor,
    spans: Vec<(usize, usize)>,
    heads: usize,
    head_dim: usize,
) -> Result<Tensor> {
    qkv.apply_op2_no_bwd(
        bias,
        &PackedAttention {
            spans,
            heads,
            head_dim,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_attention_matches_per_sequence_softmax_attention() {
        let dev = candle_core::Device::Cpu;
        let (heads, hd) = (3, 8);
        let d = heads * hd;
        // Odd lengths (not multiples of the 4 x 8 blocks) and a row outside every span.
        let spans = vec![(0, 5), (5, 13), (18, 1), (20, 9)];
        let rows = 29;
        let qkv = Tensor::randn(0f32, 1.0, (rows, 3 * d), &dev).expect("randn");
        let bias = Tensor::randn(0f32, 1.0, 3 * d, &dev).expect("randn");
        let got = packed_attention(&qkv, &bias, spans.clone(), heads, hd).expect("kernel");
        let x = qkv.broadcast_add(&bias).expect("bias");
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
