//! Products with a frozen weight matrix whose backward pass computes only the input's
//! gradient. candle's matmul backward also computes the weight's gradient even when the weight
//! is a plain tensor nobody asked about; in a LoRA step that is as much work again as the
//! input's gradient, for every projection of the backbone.
//!
//! [`FrozenLinear`] goes further for the backbone's projections: the weight is packed once
//! for the inference kernels ([`crate::packed_gemm`]), with its bias fused into the forward
//! product, and its transpose packed once for the backward one. candle's general matmul
//! splits each product among threads that meet at a barrier; the packed kernel hands each
//! thread whole blocks of rows and needs no packing of the input.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, bail};

use crate::error::Result;
use crate::packed_gemm::{self, PackedWeights};

/// `x · w` for `x` `[n, in]` and a frozen `w` `[in, out]`.
struct FrozenMatmul {
    w: Tensor,
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let data = s.as_slice::<f32>()?;
        let Some((a, b)) = l.contiguous_offsets() else {
            bail!("frozen-matmul: input must be contiguous")
        };
        let x = Tensor::from_slice(&data[a..b], l.shape(), self.w.device())?;
        let y = x.matmul(&self.w)?;
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.w.t()?)?))
    }
}

/// `x · w` (`[n, in]` by `[in, out]`) whose backward pass gives `x` its gradient and leaves
/// the frozen `w` alone. Falls back to a plain matmul off the CPU or outside f32.
pub(crate) fn frozen_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let fits = x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.rank() == 2
        && w.rank() == 2;
    if !fits {
        return Ok(x.matmul(w)?);
    }
    Ok(x.contiguous()?.apply_op1(FrozenMatmul { w: w.clone() })?)
}

/// A frozen projection `x · w + b` (`w` `[in, out]`) packed for training: the forward product
/// with the bias, and the transposed weight for the input's gradient.
#[derive(Debug)]
pub(crate) struct FrozenLinear {
    pub(crate) forward: PackedWeights,
    pub(crate) backward: PackedWeights,
}

impl FrozenLinear {
    /// Packs `w` (`[in, out]`, f32) and `bias` (`[out]`).
    pub(crate) fn new(w: &Tensor, bias: &Tensor) -> Result<Self> {
        let (k, n) = w.dims2()?;
        let b = bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        if b.len() != n {
            return Err(crate::error::Error::InvalidArgument(format!(
                "a bias of {} for a projection of width {n}",
                b.len()
            )));
        }
        let w = w.to_dtype(DType::F32)?;
        let data = w.flatten_all()?.to_vec1::<f32>()?;
        let t = w.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self {
            forward: PackedWeights::new(&data, &b, k, n),
            backward: PackedWeights::new(&t, &vec![0.0; k], n, k),
        })
    }

    /// `x · w + b` for `x` `[n, in]` (f32 on the CPU, else an error): differentiable in `x`
    /// only.
    pub(crate) fn apply(self: &Arc<Self>, x: &Tensor) -> Result<Tensor> {
        Ok(x.contiguous()?.apply_op1(FrozenLinearOp(self.clone()))?)
    }
}

/// The forward product of a [`FrozenLinear`].
struct FrozenLinearOp(Arc<FrozenLinear>);

/// The backward product of a [`FrozenLinear`]: `g · wᵀ`.
struct FrozenLinearBackward(Arc<FrozenLinear>);

/// `x` (contiguous `[m, w.k]` f32) times the packed `w`.
fn packed_product(
    op: &str,
    s: &CpuStorage,
    l: &Layout,
    w: &PackedWeights,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let data = s.as_slice::<f32>()?;
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{op}: input must be contiguous")
    };
    let (m, k) = l.shape().dims2()?;
    if k != w.k() {
        bail!("{op}: input of width {k} for a projection of {}", w.k())
    }
    let y = packed_gemm::matmul(&data[a..b], m, w);
    Ok((CpuStorage::F32(y), Shape::from((m, w.n()))))
}

impl CustomOp1 for FrozenLinearOp {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        packed_product(self.name(), s, l, &self.0.forward)
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            grad.contiguous()?
                .apply_op1_no_bwd(&FrozenLinearBackward(self.0.clone()))?,
        ))
    }
}

impl CustomOp1 for FrozenLinearBackward {
    fn name(&self) -> &'static str {
        "frozen-linear-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        packed_product(self.name(), s, l, &self.0.backward)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Checks `got` against `plain` (both functions of `x`), forward and `x`'s gradient.
    fn assert_same(x: &Var, plain: Tensor, got: Tensor, tolerance: f32) -> Result<()> {
        let diff = (&plain - &got)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < tolerance, "forward {diff}");
        let (m, n) = plain.dims2()?;
        let target = Tensor::from_vec(
            (0..m * n).map(|i| (i as f32).cos()).collect(),
            (m, n),
            plain.device(),
        )?;
        let g_plain = (plain * &target)?.sum_all()?.backward()?;
        let g_got = (got * &target)?.sum_all()?.backward()?;
        let a = g_plain.get(x.as_tensor()).expect("plain gradient");
        let b = g_got.get(x.as_tensor()).expect("frozen gradient");
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 10.0 * tolerance, "gradient {diff}");
        assert!(a.abs()?.max_all()?.to_scalar::<f32>()? > 0.1);
        Ok(())
    }

    #[test]
    fn forward_and_input_gradient_match_a_plain_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_vec((0..6).map(|i| i as f32 * 0.5 - 1.0).collect(), (2, 3), &dev)?;
        let w = Tensor::from_vec((0..12).map(|i| (i as f32).sin()).collect(), (3, 4), &dev)?;
        let plain = x.as_tensor().matmul(&w)?;
        let frozen = frozen_matmul(x.as_tensor(), &w)?;
        assert_same(&x, plain, frozen, 1e-6)
    }

    #[test]
    fn the_packed_linear_matches_candles_forward_and_input_gradient() -> Result<()> {
        let dev = Device::Cpu;
        // Widths that leave partial panels and row blocks.
        let (m, k, n) = (37, 29, 45);
        let x = Var::from_vec(
            (0..m * k)
                .map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6)
                .collect(),
            (m, k),
            &dev,
        )?;
        let w = Tensor::from_vec(
            (0..k * n).map(|i| (i as f32 * 0.37).sin()).collect(),
            (k, n),
            &dev,
        )?;
        let b = Tensor::from_vec((0..n).map(|i| i as f32 * 0.01).collect(), n, &dev)?;
        let plain = x.as_tensor().matmul(&w)?.broadcast_add(&b)?;
        let linear = Arc::new(FrozenLinear::new(&w, &b)?);
        assert_same(&x, plain, linear.apply(x.as_tensor())?, 1e-5)?;
        // A wrong width is an error, not a panic.
        let bad = Tensor::zeros((3, k + 1), DType::F32, &dev)?;
        assert!(linear.apply(&bad).is_err());
        Ok(())
    }
}
