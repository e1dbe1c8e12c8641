//! Differentiable GELU, LayerNorm and softmax for the LoRA training forward, each one fused
//! pass forward and one backward, over rows in parallel.
//!
//! Built from candle's elementary ops, a LayerNorm is about ten tensor operations forward and
//! twenty backward (each a pass over memory, most single-threaded), and `gelu_erf`'s backward
//! another eight; in a LoRA step they cost about as much as the matrix products. Here the
//! LayerNorm's weight and bias are frozen (the backbone's), so only the input gets a gradient:
//!
//! - LayerNorm: `y = x̂ · w + b` with `x̂ = (x − μ) / σ` per row, `σ = sqrt(var + ε)`;
//!   `dx = (g' − mean(g') − x̂ · mean(g' · x̂)) / σ` with `g' = g · w`.
//! - GELU: `y = x · Φ(x)`; `dx = g · (Φ(x) + x · φ(x))`, `Φ` the normal CDF (through erf),
//!   `φ` its density.
//! - Softmax over the last dimension: `dx = y · (g − Σ g · y)` per row.
//!
//! Both fall back to the elementary versions off the CPU or outside f32. Tested against
//! them ([`tests`]).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor, bail};
use rayon::prelude::*;

use crate::error::Result;
use crate::kernels::{erf, fast_exp};

/// Rows per parallel task.
const ROWS_PER_TASK: usize = 16;
/// Elements per "row" of the elementwise GELU (a task takes [`ROWS_PER_TASK`] of them).
const GELU_ROW: usize = 1024;

/// The contiguous f32 values of a storage, or an error naming `op`.
pub(crate) fn values<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// `f(out_row, x_row)` over rows of `width` values (the last may be shorter), in parallel.
fn par_rows(x: &[f32], width: usize, f: impl Fn(&mut [f32], &[f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let task = width * ROWS_PER_TASK;
    out.par_chunks_mut(task)
        .zip(x.par_chunks(task))
        .for_each(|(out, x)| {
            for (o, x) in out.chunks_mut(width).zip(x.chunks(width)) {
                f(o, x);
            }
        });
    out
}

/// A backward pass's `f(dx_row, a_row, g_row)` over the rows of two equally long inputs (the
/// forward's input or output, and the output's gradient), checked and in parallel.
fn backward_rows(
    op: &str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    width: usize,
    f: impl Fn(&mut [f32], &[f32], &[f32]) + Sync,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let a = values(s1, l1, op)?;
    let g = values(s2, l2, op)?;
    if width == 0 || a.len() != g.len() {
        bail!("{op}: shape mismatch");
    }
    let mut dx = vec![0f32; a.len()];
    let task = width * ROWS_PER_TASK;
    dx.par_chunks_mut(task)
        .zip(a.par_chunks(task).zip(g.par_chunks(task)))
        .for_each(|(dx, (a, g))| {
            for ((dx, a), g) in dx
                .chunks_mut(width)
                .zip(a.chunks(width))
                .zip(g.chunks(width))
            {
                f(dx, a, g);
            }
        });
    Ok((CpuStorage::F32(dx), l1.shape().clone()))
}

/// The gradient of a fused op's input: `op` over `a` (the op's input or output) and the
/// output's gradient.
pub(crate) fn gradient(
    a: &Tensor,
    grad: &Tensor,
    op: &impl CustomOp2,
) -> candle_core::Result<Option<Tensor>> {
    Ok(Some(a.apply_op2_no_bwd(&grad.contiguous()?, op)?))
}

/// Whether the fused ops run on `x`.
fn fits(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// `gelu_erf(x)` whose backward pass is one fused, parallel pass.
pub(crate) fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !fits(x) {
        return Ok(x.gelu_erf()?);
    }
    Ok(x.contiguous()?.apply_op1(Gelu)?)
}

/// `LayerNorm(x)` over the last dimension of `x` `[n, d]` with the frozen weight `w` and bias
/// `b` (`[d]`): only `x` gets a gradient.
pub(crate) fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if !(fits(x) && fits(w) && fits(b) && x.rank() == 2) {
        return crate::latent_attention::layer_norm_eps(x, w, b, eps);
    }
    let to_vec = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
    let op = LayerNorm {
        w: to_vec(w)?,
        b: to_vec(b)?,
        eps: eps as f32,
    };
    if op.w.len() != x.dim(1)? || op.b.len() != op.w.len() {
        return crate::latent_attention::layer_norm_eps(x, w, b, eps);
    }
    Ok(x.contiguous()?.apply_op1(op)?)
}

/// Softmax over the last dimension of `x` (any rank).
pub(crate) fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !fits(x) || x.rank() == 0 {
        return Ok(candle_nn::ops::softmax(x, candle_core::D::Minus1)?);
    }
    Ok(x.contiguous()?.apply_op1(Softmax)?)
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `d gelu(x) / dx = Φ(x) + x · φ(x)`.
#[inline(always)]
fn gelu_slope(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    cdf + x * INV_SQRT_2PI * fast_exp(-0.5 * x * x)
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fused-gelu-erf"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = par_rows(values(s, l, self.name())?, GELU_ROW, |y, x| {
            for (y, &x) in y.iter_mut().zip(x) {
                *y = gelu(x);
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        gradient(arg, grad, &GeluBackward)
    }
}

/// `g · gelu'(x)` for the input `x` and the output's gradient `g`.
struct GeluBackward;

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "fused-gelu-erf-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        backward_rows(self.name(), (s1, l1), (s2, l2), GELU_ROW, |dx, x, g| {
            for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(g) {
                *dx = g * gelu_slope(x);
            }
        })
    }
}

/// The width of the last dimension of a layout (0 for a scalar).
fn last_dim(l: &Layout) -> usize {
    l.shape().dims().last().copied().unwrap_or(0)
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = last_dim(l);
        if d == 0 {
            bail!("{}: empty rows", self.name());
        }
        let y = par_rows(values(s, l, self.name())?, d, |y, x| {
            let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut sum = 0f32;
            for (y, &x) in y.iter_mut().zip(x) {
                *y = fast_exp(x - max);
                sum += *y;
            }
            let inv = 1.0 / sum;
            for y in y.iter_mut() {
                *y *= inv;
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        gradient(res, grad, &SoftmaxBackward)
    }
}

/// The input's gradient of [`Softmax`] from its output `y` and the output's gradient `g`.
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "fused-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        backward_rows(self.name(), (s1, l1), (s2, l2), last_dim(l1), |dx, y, g| {
            let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
            for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                *dx = y * (g - dot);
            }
        })
    }
}

/// LayerNorm with a frozen weight and bias.
struct LayerNorm {
    w: Vec<f32>,
    b: Vec<f32>,
    eps: f32,
}

/// A row's mean and `1 / σ`.
#[inline(always)]
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let d = x.len() as f32;
    let mean = x.iter().sum::<f32>() / d;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp1 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(s, l, self.name())?;
        let d = self.w.len();
        if d == 0 || !x.len().is_multiple_of(d) {
            bail!("{}: shape mismatch", self.name());
        }
        let y = par_rows(x, d, |y, x| {
            let (mean, inv) = moments(x, self.eps);
            for k in 0..d {
                y[k] = (x[k] - mean) * inv * self.w[k] + self.b[k];
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let op = LayerNormBackward {
            w: self.w.clone(),
            eps: self.eps,
        };
        gradient(arg, grad, &op)
    }
}

/// The input's gradient of [`LayerNorm`].
struct LayerNormBackward {
    w: Vec<f32>,
    eps: f32,
}

impl CustomOp2 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "fused-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.w.len();
        if d == 0 || !l1.shape().elem_count().is_multiple_of(d) {
            bail!("{}: shape mismatch", self.name());
        }
        backward_rows(self.name(), (s1, l1), (s2, l2), d, |dx, x, g| {
            let (mean, inv) = moments(x, self.eps);
            // dx holds g' = g · w first; then the formula in the module docs.
            let (mut sum_g, mut sum_gx) = (0f32, 0f32);
            for k in 0..d {
                let gw = g[k] * self.w[k];
                dx[k] = gw;
                sum_g += gw;
                sum_gx += gw * (x[k] - mean) * inv;
            }
            let (mean_g, mean_gx) = (sum_g / d as f32, sum_gx / d as f32);
            for k in 0..d {
                let xhat = (x[k] - mean) * inv;
                dx[k] = (dx[k] - mean_g - xhat * mean_gx) * inv;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::tests::max_diff;
    use candle_core::{Device, Var};

    /// Values and weights in a wide range (GELU's tails, rows of very different scales).
    fn inputs(n: usize, d: usize) -> Result<(Var, Tensor, Tensor, Tensor)> {
        let dev = Device::Cpu;
        let x: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 12.0 * (1 + i / d % 3) as f32)
            .collect();
        let w: Vec<f32> = (0..d).map(|i| 0.5 + (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..d).map(|i| (i as f32 * 0.11).cos() * 0.2).collect();
        let target: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.013).sin()).collect();
        Ok((
            Var::from_vec(x, (n, d), &dev)?,
            Tensor::from_vec(w, d, &dev)?,
            Tensor::from_vec(b, d, &dev)?,
            Tensor::from_vec(target, (n, d), &dev)?,
        ))
    }

    #[test]
    fn fused_gelu_matches_candles_forward_and_gradient() -> Result<()> {
        let (x, _, _, target) = inputs(37, 40)?;
        let plain = x.as_tensor().gelu_erf()?;
        let fused = gelu_erf(x.as_tensor())?;
        assert!(max_diff(&plain, &fused) < 1e-5);
        let gp = (plain * &target)?.sum_all()?.backward()?;
        let gf = (fused * &target)?.sum_all()?.backward()?;
        let (a, b) = (
            gp.get(x.as_tensor()).expect("plain gradient"),
            gf.get(x.as_tensor()).expect("fused gradient"),
        );
        assert!(max_diff(a, b) < 1e-5, "{}", max_diff(a, b));
        assert!(a.abs()?.max_all()?.to_scalar::<f32>()? > 0.1);
        Ok(())
    }

    #[test]
    fn fused_softmax_matches_candles_forward_and_gradient() -> Result<()> {
        let (x, _, _, target) = inputs(24, 40)?;
        // Rank 4 as in attention, with a masked (very negative) column as padding gives.
        let x4 = x.as_tensor().reshape((2, 3, 4, 40))?;
        let mask: Vec<f32> = (0..40)
            .map(|k| if k == 39 { -3.4e38 } else { 0.0 })
            .collect();
        let x4 = x4.broadcast_add(&Tensor::from_vec(mask, 40, &Device::Cpu)?)?;
        let target = target.reshape((2, 3, 4, 40))?;
        let plain = candle_nn::ops::softmax(&x4, candle_core::D::Minus1)?;
        let fused = softmax_last_dim(&x4)?;
        assert!(
            max_diff(&plain, &fused) < 1e-6,
            "{}",
            max_diff(&plain, &fused)
        );
        let gp = (plain * &target)?.sum_all()?.backward()?;
        let gf = (fused * &target)?.sum_all()?.backward()?;
        let (a, b) = (
            gp.get(x.as_tensor()).expect("plain gradient"),
            gf.get(x.as_tensor()).expect("fused gradient"),
        );
        assert!(max_diff(a, b) < 1e-5, "{}", max_diff(a, b));
        assert!(a.abs()?.max_all()?.to_scalar::<f32>()? > 1e-3);
        Ok(())
    }

    #[test]
    fn fused_layer_norm_matches_the_elementary_one_forward_and_gradient() -> Result<()> {
        let (x, w, b, target) = inputs(37, 40)?;
        let plain = crate::latent_attention::layer_norm_eps(x.as_tensor(), &w, &b, 1e-12)?;
        let fused = layer_norm(x.as_tensor(), &w, &b, 1e-12)?;
        assert!(
            max_diff(&plain, &fused) < 1e-5,
            "{}",
            max_diff(&plain, &fused)
        );
        let gp = (plain * &target)?.sum_all()?.backward()?;
        let gf = (fused * &target)?.sum_all()?.backward()?;
        let (a, b) = (
            gp.get(x.as_tensor()).expect("plain gradient"),
            gf.get(x.as_tensor()).expect("fused gradient"),
        );
        assert!(max_diff(a, b) < 1e-5, "{}", max_diff(a, b));
        assert!(a.abs()?.max_all()?.to_scalar::<f32>()? > 1e-3);
        Ok(())
    }
}
