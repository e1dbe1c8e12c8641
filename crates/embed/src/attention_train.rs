//! Multi-head self-attention for the LoRA training forward, differentiable in its input: one
//! fused pass forward and one backward, each sequence of the batch on its own thread.
//!
//! Built from candle's ops, the attention of a layer is a batched product per (sequence, head)
//! for the scores and another for the context, each split among threads that meet at a
//! barrier, and the backward pass twice as many; for sequences of a few hundred tokens and
//! heads of 32 values those products are too small to split well. Here each sequence's heads
//! run on one thread with the inference kernels' small products ([`crate::kernels`]).
//!
//! For one head, with `Q` scaled by `1/√hd`, `S = Q·Kᵀ`, `P = softmax(S)` over the sequence's
//! real keys (padding keys get probability 0, as the additive mask of the elementary version
//! gives them) and `O = P·V`, the backward pass recomputes `P` and takes
//! `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dQ = dS·K / √hd` and
//! `dK = dSᵀ·Q / √hd`.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, bail};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use crate::error::Result;
use crate::fused_ops::{gradient, values};
use crate::kernels::{small_matmul, softmax_rows};
use crate::packed_gemm::{Mat, arch};

/// The shape of an attention call: `lens[b]` real tokens at the front of sequence `b`, each
/// sequence `len` rows long (padded) or, with `len` `None`, `lens[b]` rows long (packed one
/// after another, no padding); `heads` of `head_dim` values.
#[derive(Debug, Clone)]
struct Dims {
    lens: Arc<Vec<usize>>,
    len: Option<usize>,
    heads: usize,
    head_dim: usize,
}

impl Dims {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Rows of sequence `b`.
    fn rows_of(&self, b: usize) -> usize {
        self.len.unwrap_or(self.lens[b])
    }

    /// Rows of all the sequences.
    fn rows(&self) -> usize {
        match self.len {
            Some(len) => self.lens.len() * len,
            None => self.lens.iter().sum(),
        }
    }

    /// Checks a `[rows, cols]` input.
    fn check(&self, op: &str, l: &Layout, cols: usize) -> candle_core::Result<()> {
        let (rows, c) = l.shape().dims2()?;
        if c != cols || rows != self.rows() {
            bail!(
                "{op}: input {rows} x {c} for sequences of {:?} tokens in {} rows",
                self.lens,
                self.rows()
            )
        }
        Ok(())
    }

    /// Each sequence's work: its rows of `qkv` (`3d` wide), of `grad` (`d` wide) and of `out`
    /// (`out_width` wide).
    fn sequences<'a>(
        &'a self,
        mut qkv: &'a [f32],
        mut grad: Option<&'a [f32]>,
        mut out: &'a mut [f32],
        out_width: usize,
    ) -> Vec<Sequence<'a>> {
        let d = self.width();
        let mut work = Vec::with_capacity(self.lens.len());
        for (b, &keys) in self.lens.iter().enumerate() {
            let rows = self.rows_of(b);
            let (q, rest) = qkv.split_at(rows * 3 * d);
            qkv = rest;
            let g = grad.map(|g| {
                let (g, rest) = g.split_at(rows * d);
                grad = Some(rest);
                g
            });
            let (o, rest) = std::mem::take(&mut out).split_at_mut(rows * out_width);
            out = rest;
            work.push(Sequence {
                dims: self,
                rows,
                keys,
                qkv: q,
                grad: g,
                out: o,
            });
        }
        work
    }
}

/// Self-attention of `qkv` `[batch × len, 3d]` (each row the query, key and value projections,
/// heads side by side in each, as the stacked projection gives them): returns the context
/// `[batch × len, d]`, differentiable in `qkv`. `lens[b]` is the number of real tokens of
/// sequence `b`, at its front; every row (padding included) attends to the real keys only.
/// The training forward packs its batches ([`attention_packed`]); the tests check that against
/// this padded layout, which they check against candle's elementary ops.
#[cfg(test)]
pub(crate) fn attention(
    qkv: &Tensor,
    lens: Arc<Vec<usize>>,
    len: usize,
    heads: usize,
    head_dim: usize,
) -> Result<Tensor> {
    if lens.iter().any(|&n| n == 0 || n > len) {
        return Err(crate::error::Error::InvalidArgument(format!(
            "attention: sequence lengths {lens:?} must be within 1..={len}"
        )));
    }
    let dims = Dims {
        lens,
        len: Some(len),
        heads,
        head_dim,
    };
    Ok(qkv.contiguous()?.apply_op1(Attention(dims))?)
}

/// [`attention`] of sequences packed one after another without padding: `qkv` holds
/// `lens[b]` rows of sequence `b`, then the next one's.
pub(crate) fn attention_packed(
    qkv: &Tensor,
    lens: Arc<Vec<usize>>,
    heads: usize,
    head_dim: usize,
) -> Result<Tensor> {
    if lens.contains(&0) {
        return Err(crate::error::Error::InvalidArgument(format!(
            "attention: sequence lengths {lens:?} must be positive"
        )));
    }
    let dims = Dims {
        lens,
        len: None,
        heads,
        head_dim,
    };
    Ok(qkv.contiguous()?.apply_op1(Attention(dims))?)
}

struct Attention(Dims);

struct AttentionBackward(Dims);

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = &self.0;
        let d = dims.width();
        dims.check(self.name(), l, 3 * d)?;
        let qkv = values(s, l, self.name())?;
        let rows = qkv.len() / (3 * d);
        let mut out = vec![0f32; rows * d];
        let arch = arch();
        dims.sequences(qkv, None, &mut out, d)
            .into_par_iter()
            .for_each(|s| arch.dispatch(s));
        Ok((CpuStorage::F32(out), Shape::from((rows, d))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        gradient(arg, grad, &AttentionBackward(self.0.clone()))
    }
}

impl CustomOp2 for AttentionBackward {
    fn name(&self) -> &'static str {
        "attention-backward"
    }

    /// `(s1, l1)`: the forward's input; `(s2, l2)`: the output's gradient `[batch × len, d]`.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = &self.0;
        let d = dims.width();
        dims.check(self.name(), l1, 3 * d)?;
        dims.check(self.name(), l2, d)?;
        let qkv = values(s1, l1, self.name())?;
        let grad = values(s2, l2, self.name())?;
        let mut dqkv = vec![0f32; qkv.len()];
        let arch = arch();
        dims.sequences(qkv, Some(grad), &mut dqkv, 3 * d)
            .into_par_iter()
            .for_each(|s| arch.dispatch(s));
        Ok((CpuStorage::F32(dqkv), l1.shape().clone()))
    }
}

/// Every head of one sequence, forward (`grad` `None`: `out` is the context `[len, d]`) or
/// backward (`out` is the input's gradient `[len, 3d]`).
struct Sequence<'a> {
    dims: &'a Dims,
    /// Rows of the sequence (its tokens, and any padding after them).
    rows: usize,
    /// Real tokens (keys) at the front of the sequence.
    keys: usize,
    /// The sequence's rows of the input `[len, 3d]`.
    qkv: &'a [f32],
    /// The sequence's rows of the output's gradient `[len, d]`.
    grad: Option<&'a [f32]>,
    out: &'a mut [f32],
}

/// One head's working buffers (zero in every padding column).
struct Scratch {
    /// Queries, scaled, `[len, vp]`.
    q: Vec<f32>,
    /// Keys transposed `[hd, lp]`.
    kt: Vec<f32>,
    /// Keys `[keys, vp]` (backward).
    k: Vec<f32>,
    /// Values `[keys, vp]`.
    v: Vec<f32>,
    /// Values transposed `[hd, lp]` (backward).
    vt: Vec<f32>,
    /// Scores, then probabilities, `[len, lp]`.
    p: Vec<f32>,
    /// The output's gradient `[len, vp]` (backward).
    go: Vec<f32>,
    /// `dP`, then `dS`, `[len, lp]` (backward).
    ds: Vec<f32>,
    /// `Pᵀ` and `dSᵀ` `[keys, len]` (backward).
    pt: Vec<f32>,
    dst: Vec<f32>,
    /// A product's result `[len, vp]`.
    prod: Vec<f32>,
}

impl WithSimd for Sequence<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Sequence {
            dims,
            rows: len,
            keys,
            qkv,
            grad,
            out,
        } = self;
        let (nh, hd) = (dims.heads, dims.head_dim);
        let d = nh * hd;
        let wide = 2 * S::F32_LANES;
        let lp = len.div_ceil(wide) * wide;
        let vp = hd.div_ceil(wide) * wide;
        let scale = 1.0 / (hd as f32).sqrt();
        let backward = grad.is_some();
        let sized = |n: usize, on: bool| vec![0f32; if on { n } else { 0 }];
        let mut s = Scratch {
            q: sized(len * vp, true),
            kt: sized(hd * lp, true),
            k: sized(keys * vp, backward),
            v: sized(keys * vp, true),
            vt: sized(hd * lp, backward),
            p: sized(len * lp, true),
            go: sized(len * vp, backward),
            ds: sized(len * lp, backward),
            pt: sized(keys * len, backward),
            dst: sized(keys * len, backward),
            prod: sized(len * vp, true),
        };
        for h in 0..nh {
            let (qo, ko, vo) = (h * hd, d + h * hd, 2 * d + h * hd);
            for i in 0..len {
                let row = &qkv[i * 3 * d..(i + 1) * 3 * d];
                for c in 0..hd {
                    s.q[i * vp + c] = row[qo + c] * scale;
                }
                if i < keys {
                    for c in 0..hd {
                        s.kt[c * lp + i] = row[ko + c];
                        s.v[i * vp + c] = row[vo + c];
                    }
                    if backward {
                        for c in 0..hd {
                            s.k[i * vp + c] = row[ko + c];
                            s.vt[c * lp + i] = row[vo + c];
                        }
                    }
                }
            }
            // P = softmax(Q·Kᵀ) over the real keys; the padding columns stay out of every
            // product below (they are past `keys`).
            small_matmul(
                simd,
                Mat::new(&s.q, vp),
                Mat::new(&s.kt, lp),
                (len, hd, lp),
                &mut s.p,
                lp,
            );
            softmax_rows(&mut s.p, len, keys, lp);
            let Some(grad) = grad else {
                small_matmul(
                    simd,
                    Mat::new(&s.p, lp),
                    Mat::new(&s.v, vp),
                    (len, keys, vp),
                    &mut s.prod,
                    vp,
                );
                for i in 0..len {
                    out[i * d + qo..][..hd].copy_from_slice(&s.prod[i * vp..i * vp + hd]);
                }
                continue;
            };
            for i in 0..len {
                s.go[i * vp..i * vp + hd].copy_from_slice(&grad[i * d + qo..][..hd]);
            }
            // dP = dO·Vᵀ, then dS in place.
            small_matmul(
                simd,
                Mat::new(&s.go, vp),
                Mat::new(&s.vt, lp),
                (len, hd, lp),
                &mut s.ds,
                lp,
            );
            for i in 0..len {
                let p = &s.p[i * lp..i * lp + keys];
                let ds = &mut s.ds[i * lp..i * lp + keys];
                let dot: f32 = p.iter().zip(ds.iter()).map(|(p, g)| p * g).sum();
                for (g, p) in ds.iter_mut().zip(p) {
                    *g = p * (*g - dot);
                }
                for j in 0..keys {
                    s.pt[j * len + i] = p[j];
                    s.dst[j * len + i] = ds[j];
                }
            }
            // dQ = dS·K / √hd.
            small_matmul(
                simd,
                Mat::new(&s.ds, lp),
                Mat::new(&s.k, vp),
                (len, keys, vp),
                &mut s.prod,
                vp,
            );
            for i in 0..len {
                for c in 0..hd {
                    out[i * 3 * d + qo + c] = s.prod[i * vp + c] * scale;
                }
            }
            // dK = dSᵀ·(Q / √hd): `q` holds the scaled queries.
            small_matmul(
                simd,
                Mat::new(&s.dst, len),
                Mat::new(&s.q, vp),
                (keys, len, vp),
                &mut s.prod,
                vp,
            );
            for j in 0..keys {
                out[j * 3 * d + ko..][..hd].copy_from_slice(&s.prod[j * vp..j * vp + hd]);
            }
            // dV = Pᵀ·dO.
            small_matmul(
                simd,
                Mat::new(&s.pt, len),
                Mat::new(&s.go, vp),
                (keys, len, vp),
                &mut s.prod,
                vp,
            );
            for j in 0..keys {
                out[j * 3 * d + vo..][..hd].copy_from_slice(&s.prod[j * vp..j * vp + hd]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The unfused version (as the training forward wrote it before): candle's batched
    /// products, an additive mask and a softmax.
    fn unfused(qkv: &Tensor, lens: &[usize], len: usize, nh: usize, hd: usize) -> Tensor {
        let b = lens.len();
        let d = nh * hd;
        let mask: Vec<f32> = lens
            .iter()
            .flat_map(|&n| (0..len).map(move |j| if j < n { 0.0 } else { -1e30 }))
            .collect();
        let bias = Tensor::from_vec(mask, (b, 1, 1, len), &Device::Cpu).expect("mask");
        let qkv = qkv
            .reshape((b, len, 3, nh, hd))
            .and_then(|t| t.permute((2, 0, 3, 1, 4)))
            .expect("split");
        let q = (qkv.get(0).expect("q") / (hd as f64).sqrt()).expect("scale");
        let k = qkv.get(1).and_then(|t| t.contiguous()).expect("k");
        let v = qkv.get(2).and_then(|t| t.contiguous()).expect("v");
        let scores = q
            .contiguous()
            .and_then(|q| q.matmul(&k.t().expect("t")))
            .and_then(|s| s.broadcast_add(&bias))
            .expect("scores");
        // candle's own `softmax_last_dim` has no backward pass; the fused one is tested
        // against the elementary formula.
        let p = crate::fused_ops::softmax_last_dim(&scores).expect("softmax");
        p.matmul(&v)
            .and_then(|c| c.transpose(1, 2))
            .and_then(|c| c.reshape((b * len, d)))
            .expect("context")
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|t| t.abs())
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.max(0))
            .and_then(|t| t.to_scalar::<f32>())
            .expect("diff")
    }

    #[test]
    fn fused_attention_matches_the_unfused_one_forward_and_gradient() -> Result<()> {
        // Odd widths and lengths (partial SIMD blocks), one sequence without padding.
        for (nh, hd, len, lens) in [(3, 8, 13, vec![13, 5, 1, 9]), (2, 20, 7, vec![4, 7])] {
            let d = nh * hd;
            let rows = lens.len() * len;
            let qkv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (rows, 3 * d), &Device::Cpu)?)?;
            let target = Tensor::randn(0f32, 1.0, (rows, d), &Device::Cpu)?;
            let want = unfused(qkv.as_tensor(), &lens, len, nh, hd);
            let got = attention(qkv.as_tensor(), Arc::new(lens.clone()), len, nh, hd)?;
            assert!(
                max_diff(&want, &got) < 1e-5,
                "forward {}",
                max_diff(&want, &got)
            );
            let g_want = (want * &target)?.sum_all()?.backward()?;
            let g_got = (got * &target)?.sum_all()?.backward()?;
            let a = g_want.get(qkv.as_tensor()).expect("unfused gradient");
            let b = g_got.get(qkv.as_tensor()).expect("fused gradient");
            for part in 0..3 {
                let (x, y) = (a.narrow(1, part * d, d)?, b.narrow(1, part * d, d)?);
                let diff = max_diff(&x, &y);
                assert!(diff < 1e-4, "gradient of part {part} (q, k, v): {diff}");
            }
            assert!(a.abs()?.max_all()?.to_scalar::<f32>()? > 0.1);
        }
        Ok(())
    }

    #[test]
    fn packed_sequences_attend_as_their_padded_rows_do() -> Result<()> {
        let (nh, hd, len, lens) = (3, 8, 13, vec![13, 5, 1, 9]);
        let d = nh * hd;
        let rows = lens.len() * len;
        let qkv = Var::from_tensor(&Tensor::randn(0f32, 1.0, (rows, 3 * d), &Device::Cpu)?)?;
        let real: Vec<u32> = lens
            .iter()
            .enumerate()
            .flat_map(|(b, &n)| (0..n).map(move |p| (b * len + p) as u32))
            .collect();
        let real = Tensor::from_vec(real.clone(), real.len(), &Device::Cpu)?;
        let target = Tensor::randn(0f32, 1.0, (real.dim(0)?, d), &Device::Cpu)?;
        let lens = Arc::new(lens);
        let padded =
            attention(qkv.as_tensor(), lens.clone(), len, nh, hd)?.index_select(&real, 0)?;
        let packed = attention_packed(&qkv.as_tensor().index_select(&real, 0)?, lens, nh, hd)?;
        assert!(max_diff(&padded, &packed) < 1e-6);
        let a = (padded * &target)?.sum_all()?.backward()?;
        let b = (packed * &target)?.sum_all()?.backward()?;
        let (a, b) = (a.get(&qkv).expect("padded"), b.get(&qkv).expect("packed"));
        assert!(max_diff(a, b) < 1e-5, "gradient {}", max_diff(a, b));
        assert!(a.abs()?.max_all()?.to_scalar::<f32>()? > 0.1);
        // A sequence of no tokens, or rows that do not add up, are errors.
        let x = Tensor::zeros((5, 3 * d), DType::F32, &Device::Cpu)?;
        assert!(attention_packed(&x, Arc::new(vec![5, 0]), nh, hd).is_err());
        assert!(attention_packed(&x, Arc::new(vec![3, 3]), nh, hd).is_err());
        assert!(attention_packed(&x, Arc::new(vec![2, 3]), nh, hd).is_ok());
        Ok(())
    }

    #[test]
    fn the_scalar_fallback_matches_the_simd_kernel() {
        let dims = Dims {
            lens: Arc::new(vec![9]),
            len: Some(11),
            heads: 2,
            head_dim: 12,
        };
        let d = 24;
        let qkv: Vec<f32> = (0..11 * 3 * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let grad: Vec<f32> = (0..11 * d)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 10.0)
            .collect();
        for backward in [false, true] {
            let n = if backward { qkv.len() } else { grad.len() };
            let run = |simd: bool| {
                let mut out = vec![0f32; n];
                let seq = Sequence {
                    dims: &dims,
                    rows: 11,
                    keys: 9,
                    qkv: &qkv,
                    grad: backward.then_some(grad.as_slice()),
                    out: &mut out,
                };
                if simd {
                    arch().dispatch(seq);
                } else {
                    seq.with_simd(pulp::Scalar::new());
                }
                out
            };
            let (a, b) = (run(true), run(false));
            for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!((x - y).abs() < 1e-5, "{backward} {i}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn bad_lengths_and_shapes_are_errors() -> Result<()> {
        let x = Tensor::zeros((6, 3 * 8), DType::F32, &Device::Cpu)?;
        assert!(attention(&x, Arc::new(vec![0, 3]), 3, 2, 4).is_err());
        assert!(attention(&x, Arc::new(vec![4, 3]), 3, 2, 4).is_err());
        assert!(attention(&x, Arc::new(vec![3, 3, 3]), 3, 2, 4).is_err());
        assert!(attention(&x, Arc::new(vec![3, 3]), 3, 2, 4).is_ok());
        Ok(())
    }
}
