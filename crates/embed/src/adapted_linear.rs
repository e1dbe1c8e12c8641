//! A frozen projection with LoRA adapters, as one op of the LoRA training forward:
//! `y = x·W + bias + Σ_t s · drop_t(x)·A_tᵀ·B_tᵀ`, each adapter's update added to its own range
//! of output columns (the stacked query/key/value projection carries three), differentiable in
//! `x` and in every `A_t` and `B_t`, not in the frozen `W`.
//!
//! Built from candle's ops, an adapter is a dropout mask drawn into a fresh tensor, two rank-`r`
//! products split among threads that meet at a barrier, a scale, the zeros and concatenation
//! that stack three updates and the sum with the projection, each allocating its result, and
//! its backward pass as many again. Here each block of rows goes through every adapter on one
//! thread with the inference kernels' small products ([`crate::kernels::small_matmul`]). The
//! dropout masks are recomputed from the generator's state rather than stored (SplitMix64's
//! draws can be taken in any order, so they are the very masks the elementary path in
//! [`crate::lora`] draws), and so is the rank-`r` intermediate `h_t = drop_t(x)·A_tᵀ` in the
//! backward pass.
//!
//! Backward, with `g` the output's gradient and `g_t` its columns of adapter `t`:
//! `dh_t = s·g_t·B_t`, `dx = g·Wᵀ + Σ_t mask_t ⊙ (dh_t·A_t)`, `dA_t = dh_tᵀ·drop_t(x)` and
//! `dB_t = s·g_tᵀ·h_t`.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor, bail};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::frozen::FrozenLinear;
use crate::fused_ops::values;
use crate::head::SplitMix64;
use crate::kernels::small_matmul;
use crate::packed_gemm::{self, Mat, arch, panel_width};

/// Rows of one parallel task (a multiple of the micro-kernel's 4).
const BLOCK_ROWS: usize = 32;

/// Dropout on the adapters' input during training.
#[derive(Debug, Clone)]
pub(crate) struct Dropout {
    /// Probability of dropping a value, in `(0, 1)`.
    pub(crate) p: f64,
    /// Per adapter, the state of the generator its mask is drawn from: one draw per input
    /// value, row by row ([`SplitMix64::bits_at`]).
    pub(crate) states: Vec<u64>,
    /// The mask row of each input row (`None`: its own). A batch packed without its padding
    /// rows so draws the masks of the padded batch.
    pub(crate) rows: Option<Arc<Vec<usize>>>,
}

/// The adapters of one projection.
#[derive(Debug, Clone)]
pub(crate) struct Adapters {
    /// First output column of each adapter's update.
    pub(crate) offsets: Vec<usize>,
    /// Each adapter's `A` `[rank, in]`.
    pub(crate) a: Vec<Tensor>,
    /// Each adapter's `B` `[out, rank]`.
    pub(crate) b: Vec<Tensor>,
    /// The updates' scale `alpha / rank`.
    pub(crate) scale: f64,
    /// `None` in evaluation.
    pub(crate) dropout: Option<Dropout>,
}

/// `x · W + bias` of the frozen `linear` plus the `adapters`' updates, for `x` `[m, in]` (f32
/// on the CPU): differentiable in `x` and in the adapters' `A` and `B`.
pub(crate) fn adapted_linear(
    x: &Tensor,
    linear: &Arc<FrozenLinear>,
    adapters: Adapters,
) -> Result<Tensor> {
    let bad = |m: String| Err(Error::InvalidArgument(format!("adapted projection: {m}")));
    let count = adapters.a.len();
    if count == 0 || adapters.b.len() != count || adapters.offsets.len() != count {
        return bad(format!(
            "{count} A, {} B and {} offsets",
            adapters.b.len(),
            adapters.offsets.len()
        ));
    }
    let (k, width) = (linear.forward.k(), linear.forward.n());
    let (rank, _) = adapters.a[0].dims2()?;
    let (out, _) = adapters.b[0].dims2()?;
    for (t, (a, b)) in adapters.a.iter().zip(&adapters.b).enumerate() {
        if rank == 0 || a.dims2()? != (rank, k) || b.dims2()? != (out, rank) {
            return bad(format!(
                "adapter {t}: A {:?} and B {:?} for an input of width {k}",
                a.dims(),
                b.dims()
            ));
        }
        if adapters.offsets[t] + out > width {
            return bad(format!(
                "adapter {t} writes columns {}..{} of {width}",
                adapters.offsets[t],
                adapters.offsets[t] + out
            ));
        }
    }
    if let Some(d) = &adapters.dropout
        && (d.states.len() != count || !(d.p > 0.0 && d.p < 1.0))
    {
        return bad(format!(
            "dropout {} with {} generator states for {count} adapters",
            d.p,
            d.states.len()
        ));
    }
    let a = Tensor::cat(&adapters.a, 0)?.contiguous()?;
    let b = Tensor::cat(&adapters.b, 0)?.contiguous()?;
    let op = AdaptedLinear {
        linear: linear.clone(),
        offsets: adapters.offsets,
        rank,
        out,
        scale: adapters.scale as f32,
        dropout: adapters.dropout,
    };
    Ok(x.contiguous()?.apply_op3(&a, &b, op)?)
}

struct AdaptedLinear {
    linear: Arc<FrozenLinear>,
    offsets: Vec<usize>,
    rank: usize,
    out: usize,
    scale: f32,
    dropout: Option<Dropout>,
}

/// One adapter's dropout mask: draw `i` drops its value when its bits fall below `threshold`
/// (`uniform() < p` exactly), and a kept value is multiplied by `keep`; input row `r` takes
/// the draws of mask row `rows[r]` (row `r` without `rows`).
#[derive(Clone, Copy)]
struct Mask<'a> {
    state: u64,
    threshold: u64,
    keep: f32,
    rows: Option<&'a [usize]>,
}

/// The adapters' matrices laid out for the small products, zero-padded to whole panels.
struct Layouts {
    /// Padded rank, input and output widths.
    rp: usize,
    kp: usize,
    op: usize,
    /// Per adapter `A_tᵀ` `[in, rp]`.
    at: Vec<Vec<f32>>,
    /// Per adapter `s·B_tᵀ` `[rank, op]` (forward).
    bt: Vec<Vec<f32>>,
    /// Per adapter `s·B_t` `[out, rp]` (backward).
    b: Vec<Vec<f32>>,
    /// Per adapter `A_t` `[rank, kp]` (backward).
    a: Vec<Vec<f32>>,
}

impl AdaptedLinear {
    fn count(&self) -> usize {
        self.offsets.len()
    }

    fn k(&self) -> usize {
        self.linear.forward.k()
    }

    fn n(&self) -> usize {
        self.linear.forward.n()
    }

    fn mask(&self, t: usize) -> Option<Mask<'_>> {
        self.dropout.as_ref().map(|d| Mask {
            state: d.states[t],
            threshold: (d.p * (1u64 << 53) as f64).ceil() as u64,
            keep: (1.0 / (1.0 - d.p)) as f32,
            rows: d.rows.as_deref().map(Vec::as_slice),
        })
    }

    /// Checks the three inputs' shapes; returns the rows of `x`.
    fn check(&self, x: &Layout, a: &Layout, b: &Layout) -> candle_core::Result<usize> {
        let (m, k) = x.shape().dims2()?;
        let t = self.count();
        if k != self.k()
            || a.shape().dims2()? != (t * self.rank, k)
            || b.shape().dims2()? != (t * self.out, self.rank)
        {
            bail!(
                "adapted-linear: x {:?}, A {:?} and B {:?} for {t} adapters of rank {} on a {} x {} \
                 projection",
                x.shape(),
                a.shape(),
                b.shape(),
                self.rank,
                k,
                self.n()
            )
        }
        Ok(m)
    }

    /// Checks that a row map, if any, covers the `m` input rows.
    fn check_rows(&self, m: usize) -> candle_core::Result<()> {
        match self.dropout.as_ref().and_then(|d| d.rows.as_ref()) {
            Some(rows) if rows.len() != m => {
                bail!("adapted-linear: a row map of {} for {m} rows", rows.len())
            }
            _ => Ok(()),
        }
    }

    /// The stacked `a` `[T·rank, in]` and `b` `[T·out, rank]` laid out for the products.
    fn layouts(&self, a: &[f32], b: &[f32], backward: bool) -> Layouts {
        let wide = panel_width();
        let (r, k, o, s) = (self.rank, self.k(), self.out, self.scale);
        let pad = |n: usize| n.div_ceil(wide) * wide;
        let (rp, kp, op) = (pad(r), pad(k), pad(o));
        let mut lay = Layouts {
            rp,
            kp,
            op,
            at: Vec::new(),
            bt: Vec::new(),
            b: Vec::new(),
            a: Vec::new(),
        };
        for t in 0..self.count() {
            let a_t = &a[t * r * k..(t + 1) * r * k];
            let b_t = &b[t * o * r..(t + 1) * o * r];
            let mut at = vec![0f32; k * rp];
            for j in 0..r {
                for c in 0..k {
                    at[c * rp + j] = a_t[j * k + c];
                }
            }
            lay.at.push(at);
            if backward {
                let mut bp = vec![0f32; o * rp];
                for c in 0..o {
                    for j in 0..r {
                        bp[c * rp + j] = s * b_t[c * r + j];
                    }
                }
                lay.b.push(bp);
                let mut ap = vec![0f32; r * kp];
                for j in 0..r {
                    ap[j * kp..j * kp + k].copy_from_slice(&a_t[j * k..(j + 1) * k]);
                }
                lay.a.push(ap);
            } else {
                let mut bt = vec![0f32; r * op];
                for c in 0..o {
                    for j in 0..r {
                        bt[j * op + c] = s * b_t[c * r + j];
                    }
                }
                lay.bt.push(bt);
            }
        }
        lay
    }
}

/// One task's working buffers (padding columns stay zero).
struct Scratch {
    /// `drop_t(x)` `[rows, kp]`.
    xd: Vec<f32>,
    /// The mask's factors `[rows, in]` (backward).
    factor: Vec<f32>,
    /// `h_t` `[rows, rp]`.
    h: Vec<f32>,
    /// `dh_t` `[rows, rp]` (backward).
    dh: Vec<f32>,
    /// A product `[rows, max(op, kp)]`.
    prod: Vec<f32>,
    /// `g_tᵀ` `[out, rows]` and `dh_tᵀ` `[rank, rows]` (backward).
    gt: Vec<f32>,
    dht: Vec<f32>,
    /// A weight gradient's block product `[max(out·rp, rank·kp)]` (backward).
    wprod: Vec<f32>,
    /// The sums of `dA_t` `[T, rank, kp]` and `dB_t / s` `[T, out, rp]` (backward).
    da: Vec<f32>,
    db: Vec<f32>,
}

impl Scratch {
    fn new(op: &AdaptedLinear, lay: &Layouts, backward: bool) -> Self {
        let (r, o, t) = (op.rank, op.out, op.count());
        let sized = |n: usize, on: bool| vec![0f32; if on { n } else { 0 }];
        Self {
            xd: sized(BLOCK_ROWS * lay.kp, true),
            factor: sized(BLOCK_ROWS * op.k(), backward),
            h: sized(BLOCK_ROWS * lay.rp, true),
            dh: sized(BLOCK_ROWS * lay.rp, backward),
            prod: sized(BLOCK_ROWS * lay.op.max(lay.kp), true),
            gt: sized(o * BLOCK_ROWS, backward),
            dht: sized(r * BLOCK_ROWS, backward),
            wprod: sized((o * lay.rp).max(r * lay.kp), backward),
            da: sized(t * r * lay.kp, backward),
            db: sized(t * o * lay.rp, backward),
        }
    }
}

/// Writes `drop(x)` for the `m` rows of `x` (each `k` wide; the first is row `row0` of the
/// whole input) into `xd` (rows of `kp`) and, when `factor` is not empty, each value's factor
/// (0 or `keep`) into it.
fn drop_rows(
    x: &[f32],
    (row0, k, kp): (usize, usize, usize),
    mask: Option<Mask<'_>>,
    xd: &mut [f32],
    factor: &mut [f32],
) {
    for (i, row) in x.chunks_exact(k).enumerate() {
        let dst = &mut xd[i * kp..i * kp + k];
        match mask {
            None => {
                dst.copy_from_slice(row);
                if !factor.is_empty() {
                    factor[i * k..(i + 1) * k].fill(1.0);
                }
            }
            Some(mask) => {
                let mask_row = mask.rows.map_or(row0 + i, |rows| rows[row0 + i]);
                let base = (mask_row * k) as u64;
                for (c, (d, &v)) in dst.iter_mut().zip(row).enumerate() {
                    let bits = SplitMix64::bits_at(mask.state, base + c as u64);
                    let f = if bits < mask.threshold {
                        0.0
                    } else {
                        mask.keep
                    };
                    *d = v * f;
                    if !factor.is_empty() {
                        factor[i * k + c] = f;
                    }
                }
            }
        }
    }
}

/// One block of rows forward: adds every adapter's update to `y` (which holds `x·W + bias`).
struct Forward<'a> {
    op: &'a AdaptedLinear,
    lay: &'a Layouts,
    row0: usize,
    x: &'a [f32],
    y: &'a mut [f32],
    s: &'a mut Scratch,
}

impl WithSimd for Forward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Forward {
            op,
            lay,
            row0,
            x,
            y,
            s,
        } = self;
        let (k, n, r, o) = (op.k(), op.n(), op.rank, op.out);
        let m = x.len() / k;
        for (t, &off) in op.offsets.iter().enumerate() {
            let mask = op.mask(t);
            let xd = match mask {
                // Without dropout the rows of `x` serve as they are.
                None => Mat::new(x, k),
                Some(_) => {
                    drop_rows(x, (row0, k, lay.kp), mask, &mut s.xd, &mut []);
                    Mat::new(&s.xd, lay.kp)
                }
            };
            small_matmul(
                simd,
                xd,
                Mat::new(&lay.at[t], lay.rp),
                (m, k, lay.rp),
                &mut s.h,
                lay.rp,
            );
            small_matmul(
                simd,
                Mat::new(&s.h, lay.rp),
                Mat::new(&lay.bt[t], lay.op),
                (m, r, lay.op),
                &mut s.prod,
                lay.op,
            );
            for i in 0..m {
                let dst = &mut y[i * n + off..i * n + off + o];
                for (d, &u) in dst.iter_mut().zip(&s.prod[i * lay.op..i * lay.op + o]) {
                    *d += u;
                }
            }
        }
    }
}

/// One block of rows backward: adds the adapters' share to `dx` (which holds `g·Wᵀ`) and their
/// weights' gradients to the scratch's sums.
struct Backward<'a> {
    op: &'a AdaptedLinear,
    lay: &'a Layouts,
    row0: usize,
    x: &'a [f32],
    g: &'a [f32],
    dx: &'a mut [f32],
    s: &'a mut Scratch,
}

impl WithSimd for Backward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let Backward {
            op,
            lay,
            row0,
            x,
            g,
            dx,
            s,
        } = self;
        let (k, n, r, o) = (op.k(), op.n(), op.rank, op.out);
        let (rp, kp) = (lay.rp, lay.kp);
        let m = x.len() / k;
        for (t, &off) in op.offsets.iter().enumerate() {
            drop_rows(x, (row0, k, kp), op.mask(t), &mut s.xd, &mut s.factor);
            // h = drop(x)·Aᵀ, dh = s·g_t·B, and drop(x)'s gradient dh·A.
            let xd = Mat::new(&s.xd, kp);
            small_matmul(simd, xd, Mat::new(&lay.at[t], rp), (m, k, rp), &mut s.h, rp);
            let g_t = Mat::new(&g[off..], n);
            small_matmul(
                simd,
                g_t,
                Mat::new(&lay.b[t], rp),
                (m, o, rp),
                &mut s.dh,
                rp,
            );
            let dh = Mat::new(&s.dh, rp);
            small_matmul(
                simd,
                dh,
                Mat::new(&lay.a[t], kp),
                (m, r, kp),
                &mut s.prod,
                kp,
            );
            for i in 0..m {
                let f = &s.factor[i * k..(i + 1) * k];
                let p = &s.prod[i * kp..i * kp + k];
                for ((d, &f), &p) in dx[i * k..(i + 1) * k].iter_mut().zip(f).zip(p) {
                    *d += f * p;
                }
            }
            // dB_t / s += g_tᵀ·h and dA_t += dhᵀ·drop(x), over this block's rows.
            for i in 0..m {
                for c in 0..o {
                    s.gt[c * m + i] = g[i * n + off + c];
                }
                for j in 0..r {
                    s.dht[j * m + i] = s.dh[i * rp + j];
                }
            }
            small_matmul(
                simd,
                Mat::new(&s.gt, m),
                Mat::new(&s.h, rp),
                (o, m, rp),
                &mut s.wprod,
                rp,
            );
            let db = &mut s.db[t * o * rp..(t + 1) * o * rp];
            for (d, &v) in db.iter_mut().zip(&s.wprod[..o * rp]) {
                *d += v;
            }
            small_matmul(
                simd,
                Mat::new(&s.dht, m),
                Mat::new(&s.xd, kp),
                (r, m, kp),
                &mut s.wprod,
                kp,
            );
            let da = &mut s.da[t * r * kp..(t + 1) * r * kp];
            for (d, &v) in da.iter_mut().zip(&s.wprod[..r * kp]) {
                *d += v;
            }
        }
    }
}

/// The contiguous f32 values of a tensor's CPU storage, handed to `f`.
fn with_values<T>(
    t: &Tensor,
    op: &str,
    f: impl FnOnce(&[f32]) -> candle_core::Result<T>,
) -> candle_core::Result<T> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        bail!("{op}: CPU tensors only")
    };
    f(values(cpu, layout, op)?)
}

impl CustomOp3 for AdaptedLinear {
    fn name(&self) -> &'static str {
        "adapted-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let m = self.check(l1, l2, l3)?;
        self.check_rows(m)?;
        let x = values(s1, l1, self.name())?;
        let lay = self.layouts(
            values(s2, l2, self.name())?,
            values(s3, l3, self.name())?,
            false,
        );
        let (k, n) = (self.k(), self.n());
        let mut y = packed_gemm::matmul(x, m, &self.linear.forward);
        let arch = arch();
        y.par_chunks_mut(BLOCK_ROWS * n)
            .zip(x.par_chunks(BLOCK_ROWS * k))
            .enumerate()
            .for_each_init(
                || Scratch::new(self, &lay, false),
                |s, (block, (y, x))| {
                    arch.dispatch(Forward {
                        op: self,
                        lay: &lay,
                        row0: block * BLOCK_ROWS,
                        x,
                        y,
                        s,
                    })
                },
            );
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let name = self.name();
        let grad = grad.contiguous()?;
        let (k, n, r, o, t) = (self.k(), self.n(), self.rank, self.out, self.count());
        let lay = with_values(a, name, |a| {
            with_values(b, name, |b| Ok(self.layouts(a, b, true)))
        })?;
        let (m, _) = x.dims2()?;
        self.check_rows(m)?;
        if grad.dims2()? != (m, n) {
            bail!("{name}: gradient {:?} for {m} x {n}", grad.dims())
        }
        let (dx, (da, db)) = with_values(x, name, |x| {
            with_values(&grad, name, |g| {
                let mut dx = packed_gemm::matmul(g, m, &self.linear.backward);
                let arch = arch();
                let sums = dx
                    .par_chunks_mut(BLOCK_ROWS * k)
                    .zip(x.par_chunks(BLOCK_ROWS * k))
                    .zip(g.par_chunks(BLOCK_ROWS * n))
                    .enumerate()
                    .fold(
                        || Scratch::new(self, &lay, true),
                        |mut s, (block, ((dx, x), g))| {
                            arch.dispatch(Backward {
                                op: self,
                                lay: &lay,
                                row0: block * BLOCK_ROWS,
                                x,
                                g,
                                dx,
                                s: &mut s,
                            });
                            s
                        },
                    )
                    .map(|s| (s.da, s.db))
                    .reduce(
                        || (vec![0f32; t * r * lay.kp], vec![0f32; t * o * lay.rp]),
                        |(mut da, mut db), (da2, db2)| {
                            da.iter_mut().zip(&da2).for_each(|(d, v)| *d += v);
                            db.iter_mut().zip(&db2).for_each(|(d, v)| *d += v);
                            (da, db)
                        },
                    );
                Ok((dx, sums))
            })
        })?;
        // Drop the padding; `dB` gains its scale here.
        let da: Vec<f32> = da
            .chunks_exact(lay.kp)
            .flat_map(|row| row[..k].iter().copied())
            .collect();
        let db: Vec<f32> = db
            .chunks_exact(lay.rp)
            .flat_map(|row| row[..r].iter().map(|v| v * self.scale))
            .collect();
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (m, k), dev)?),
            Some(Tensor::from_vec(da, (t * r, k), dev)?),
            Some(Tensor::from_vec(db, (t * o, r), dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::tests::max_diff;
    use candle_core::{DType, Device, Var};

    fn values(n: usize, f: impl Fn(usize) -> f32) -> Vec<f32> {
        (0..n).map(f).collect()
    }

    /// The elementary version: a mask drawn value by value, candle's products, the updates
    /// placed in their columns with zeros between.
    fn elementary(
        x: &Tensor,
        (w, bias): (&Tensor, &Tensor),
        adapters: &Adapters,
    ) -> candle_core::Result<Tensor> {
        let (m, k) = x.dims2()?;
        let n = w.dim(1)?;
        let mut y = x.matmul(w)?.broadcast_add(bias)?;
        for (t, (a, b)) in adapters.a.iter().zip(&adapters.b).enumerate() {
            let xd = match &adapters.dropout {
                None => x.clone(),
                Some(d) => {
                    let mut rng = SplitMix64(d.states[t]);
                    let keep = 1.0 / (1.0 - d.p);
                    let mask: Vec<f32> = (0..m * k)
                        .map(|_| {
                            if rng.uniform() < d.p {
                                0.0
                            } else {
                                keep as f32
                            }
                        })
                        .collect();
                    (x * Tensor::from_vec(mask, (m, k), x.device())?)?
                }
            };
            let h = (xd.matmul(&a.t()?)?.matmul(&b.t()?)? * adapters.scale)?;
            let (off, o) = (adapters.offsets[t], h.dim(1)?);
            let mut parts = Vec::new();
            if off > 0 {
                parts.push(Tensor::zeros((m, off), DType::F32, x.device())?);
            }
            parts.push(h);
            if off + o < n {
                parts.push(Tensor::zeros((m, n - off - o), DType::F32, x.device())?);
            }
            y = (y + Tensor::cat(&parts, 1)?)?;
        }
        Ok(y)
    }

    #[test]
    fn the_fused_op_matches_the_elementary_one_forward_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        // Widths that leave partial panels, a partial block of rows, and a gap between the
        // adapters' column ranges (as query and value without key).
        let (m, k, r, o) = (70, 29, 3, 13);
        let n = 3 * o;
        let x = Var::from_vec(
            values(m * k, |i| ((i * 7) % 17) as f32 * 0.1 - 0.8),
            (m, k),
            &dev,
        )?;
        let w = Tensor::from_vec(values(k * n, |i| (i as f32 * 0.37).sin()), (k, n), &dev)?;
        let bias = Tensor::from_vec(values(n, |i| i as f32 * 0.01), n, &dev)?;
        let linear = Arc::new(FrozenLinear::new(&w, &bias)?);
        let vars: Vec<(Var, Var)> = (0..2)
            .map(|t| {
                let a = values(r * k, |i| ((i + 3 * t) as f32 * 0.71).cos() * 0.3);
                let b = values(o * r, |i| ((i + 5 * t) as f32 * 0.53).sin() * 0.3);
                Ok((
                    Var::from_vec(a, (r, k), &dev)?,
                    Var::from_vec(b, (o, r), &dev)?,
                ))
            })
            .collect::<Result<_>>()?;
        let target = Tensor::from_vec(values(m * n, |i| (i as f32).cos()), (m, n), &dev)?;
        for dropout in [
            None,
            Some(Dropout {
                p: 0.3,
                states: vec![17, 0xdead_beef],
                rows: None,
            }),
        ] {
            let adapters = Adapters {
                offsets: vec![0, 2 * o],
                a: vars.iter().map(|(a, _)| a.as_tensor().clone()).collect(),
                b: vars.iter().map(|(_, b)| b.as_tensor().clone()).collect(),
                scale: 2.5,
                dropout: dropout.clone(),
            };
            let plain = elementary(x.as_tensor(), (&w, &bias), &adapters)?;
            let got = adapted_linear(x.as_tensor(), &linear, adapters)?;
            let diff = max_diff(&plain, &got);
            assert!(diff < 1e-4, "forward {diff} (dropout {dropout:?})");
            let g_plain = (plain * &target)?.sum_all()?.backward()?;
            let g_got = (got * &target)?.sum_all()?.backward()?;
            let mut checked = vec![x.as_tensor().clone()];
            for (a, b) in &vars {
                checked.push(a.as_tensor().clone());
                checked.push(b.as_tensor().clone());
            }
            for (i, t) in checked.iter().enumerate() {
                let want = g_plain.get(t).expect("elementary gradient");
                let have = g_got.get(t).expect("fused gradient");
                let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(scale > 0.1, "gradient {i} is {scale}");
                let diff = max_diff(want, have);
                assert!(
                    diff < 1e-4 * scale.max(1.0),
                    "gradient {i}: {diff} of {scale}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::zeros((8, 12), DType::F32, &dev)?;
        let bias = Tensor::zeros(12, DType::F32, &dev)?;
        let linear = Arc::new(FrozenLinear::new(&w, &bias)?);
        let x = Tensor::zeros((5, 8), DType::F32, &dev)?;
        let adapters = |a: (usize, usize), b: (usize, usize), offset: usize| -> Result<Adapters> {
            Ok(Adapters {
                offsets: vec![offset],
                a: vec![Tensor::zeros(a, DType::F32, &dev)?],
                b: vec![Tensor::zeros(b, DType::F32, &dev)?],
                scale: 1.0,
                dropout: None,
            })
        };
        assert!(adapted_linear(&x, &linear, adapters((2, 8), (4, 2), 8)?).is_ok());
        // A wrong input width, a rank mismatch, columns past the output, no adapter.
        assert!(adapted_linear(&x, &linear, adapters((2, 7), (4, 2), 0)?).is_err());
        assert!(adapted_linear(&x, &linear, adapters((2, 8), (4, 3), 0)?).is_err());
        assert!(adapted_linear(&x, &linear, adapters((2, 8), (4, 2), 9)?).is_err());
        let mut none = adapters((2, 8), (4, 2), 0)?;
        none.a.clear();
        assert!(adapted_linear(&x, &linear, none).is_err());
        let bad_x = Tensor::zeros((5, 9), DType::F32, &dev)?;
        assert!(adapted_linear(&bad_x, &linear, adapters((2, 8), (4, 2), 0)?).is_err());
        // Dropout needs one generator state per adapter and p in (0, 1).
        let mut drop = adapters((2, 8), (4, 2), 0)?;
        drop.dropout = Some(Dropout {
            p: 1.0,
            states: vec![1],
            rows: None,
        });
        assert!(adapted_linear(&x, &linear, drop).is_err());
        // A row map must cover the input's rows.
        let mut short = adapters((2, 8), (4, 2), 0)?;
        short.dropout = Some(Dropout {
            p: 0.5,
            states: vec![1],
            rows: Some(Arc::new(vec![0, 1, 2])),
        });
        assert!(adapted_linear(&x, &linear, short).is_err());
        Ok(())
    }
}
