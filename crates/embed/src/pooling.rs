//! Pooling token states into one vector per input, and L2 normalisation.

use candle_core::{D, DType, Tensor};

use crate::error::Result;

/// Mean of `states` `[batch, len, d]` over the positions where `mask` `[batch, len]` is 1.
/// A row whose mask is all zero pools to zeros.
pub fn masked_mean(states: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(states.dtype())?;
    let summed = states.broadcast_mul(&mask.unsqueeze(D::Minus1)?)?.sum(1)?;
    let count = mask.sum_keepdim(1)?.clamp(1e-9f64, f64::MAX)?;
    Ok(summed.broadcast_div(&count)?)
}

/// The first position's state of each row: `[batch, len, d]` to `[batch, d]`.
pub fn first_token(states: &Tensor) -> Result<Tensor> {
    Ok(states.narrow(1, 0, 1)?.squeeze(1)?)
}

/// L2-normalises the rows of `x` `[batch, d]` (a zero row stays zero).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let x = x.to_dtype(DType::F32)?;
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f64, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

/// Mean of packed token states `[rows, d]` over each span `(start, len)`, skipping the first
/// `skip` positions of each span (instruction tokens): `[spans, d]`. A span with nothing left
/// pools to zeros.
pub fn packed_mean(states: &Tensor, spans: &[(usize, usize)], skip: usize) -> Result<Tensor> {
    let rows = states.dim(0)?;
    let mut weights = vec![0f32; spans.len() * rows];
    for (i, &(start, len)) in spans.iter().enumerate() {
        if len > skip {
            let w = 1.0 / (len - skip) as f32;
            weights[i * rows + start + skip..i * rows + start + len].fill(w);
        }
    }
    let weights = Tensor::from_vec(weights, (spans.len(), rows), states.device())?;
    Ok(weights.to_dtype(states.dtype())?.matmul(states)?)
}
