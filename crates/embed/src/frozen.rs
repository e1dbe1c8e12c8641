//! A product with a frozen weight matrix whose backward pass computes only the input's
//! gradient. candle's matmul backward also computes the weight's gradient even when the weight
//! is a plain tensor nobody asked about; in a LoRA step that is as much work again as the
//! input's gradient, for every projection of the backbone.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, bail};

use crate::error::Result;

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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_input_gradient_match_a_plain_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_vec((0..6).map(|i| i as f32 * 0.5 - 1.0).collect(), (2, 3), &dev)?;
        let w = Tensor::from_vec((0..12).map(|i| (i as f32).sin()).collect(), (3, 4), &dev)?;
        let target = Tensor::from_vec((0..8).map(|i| i as f32 * 0.1).collect(), (2, 4), &dev)?;
        let plain = x.as_tensor().matmul(&w)?;
        let frozen = frozen_matmul(x.as_tensor(), &w)?;
        let diff = (&plain - &frozen)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        let g_plain = (plain * &target)?.sum_all()?.backward()?;
        let g_frozen = (frozen * &target)?.sum_all()?.backward()?;
        let a = g_plain.get(x.as_tensor()).expect("plain gradient");
        let b = g_frozen.get(x.as_tensor()).expect("frozen gradient");
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        assert!(a.abs()?.max_all()?.to_scalar::<f32>()? > 0.1);
        Ok(())
    }
}
