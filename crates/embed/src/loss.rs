//! Contrastive losses for tuning an embedder: InfoNCE with a temperature.
//!
//! For query `i` with embedding `q_i`, a candidate set of document embeddings `d_n` (its
//! positive, its hard negatives and, in NV-Embed's first stage, the other queries' documents as
//! in-batch negatives) and a temperature `τ`:
//!
//! `loss_i = -log( exp(q_i·d_pos / τ) / Σ_{n allowed for i} exp(q_i·d_n / τ) )`,
//!
//! averaged over the queries. Which documents a query sees is a 0/1 mask, so one loss serves
//! both stages. [`info_nce_symmetric`] adds the reverse direction (each positive document
//! scored against the batch's queries, as GTE and E5 train). Written with differentiable
//! elementary ops only (no fused kernels).

use candle_core::{D, DType, Tensor};

use crate::error::{Error, Result};

/// Added to the logits of masked-out candidates (exp of it is exactly 0 in f32).
const MASKED: f64 = -1e9;

/// InfoNCE over `queries` `[B, d]` and `docs` `[N, d]` (both usually L2-normalised).
///
/// `positive[i]` is the row of `docs` holding query `i`'s positive; `allowed` `[B, N]` (f32,
/// 1 = a candidate for that query, 0 = not) selects the negatives; the positive is always a
/// candidate. Returns the mean loss, a scalar tensor carrying gradients to both inputs.
pub fn info_nce(
    queries: &Tensor,
    docs: &Tensor,
    positive: &[usize],
    allowed: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    masked_info_nce(queries, docs, positive, allowed, temperature, false)
}

/// [`info_nce`] averaged with its reverse direction: for query `i`'s positive document `p`,
///
/// `rev_i = -log( exp(q_i·d_p / τ) / Σ_{j : d_p allowed for j} exp(q_j·d_p / τ) )`,
///
/// so a document also learns which of the batch's queries it answers. Queries for which `d_p`
/// is masked out (another known positive of theirs) are left out of its sum; where the mask
/// lets a query see only hard negatives (stage 2) the reverse term is 0.
pub fn info_nce_symmetric(
    queries: &Tensor,
    docs: &Tensor,
    positive: &[usize],
    allowed: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    masked_info_nce(queries, docs, positive, allowed, temperature, true)
}

/// [`info_nce`], or [`info_nce_symmetric`] when `symmetric`.
pub(crate) fn masked_info_nce(
    queries: &Tensor,
    docs: &Tensor,
    positive: &[usize],
    allowed: &Tensor,
    temperature: f64,
    symmetric: bool,
) -> Result<Tensor> {
    let (b, _) = queries.dims2()?;
    let (n, _) = docs.dims2()?;
    if positive.len() != b {
        return Err(Error::InvalidArgument(format!(
            "{} positives for {b} queries",
            positive.len()
        )));
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "the temperature must be positive, not {temperature}"
        )));
    }
    if let Some(&bad) = positive.iter().find(|&&p| p >= n) {
        return Err(Error::InvalidArgument(format!(
            "positive row {bad} is outside the {n} documents"
        )));
    }
    if allowed.dims2()? != (b, n) {
        return Err(Error::InvalidArgument(format!(
            "the candidate mask is {:?}, not [{b}, {n}]",
            allowed.dims()
        )));
    }
    // The positive is always a candidate.
    let mut pos_mask = vec![0f32; b * n];
    for (i, &p) in positive.iter().enumerate() {
        pos_mask[i * n + p] = 1.0;
    }
    let pos_mask = Tensor::from_vec(pos_mask, (b, n), queries.device())?;
    let allowed = allowed.to_dtype(DType::F32)?.maximum(&pos_mask)?;
    let logits = (queries.matmul(&docs.t()?)? / temperature)?;
    let penalty = ((allowed - 1.0)? * -MASKED)?; // 0 where allowed, MASKED elsewhere
    let logits = (logits + penalty)?;
    let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = (log_probs * &pos_mask)?.sum(D::Minus1)?; // [B]
    let forward = picked.mean_all()?.neg()?;
    if !symmetric {
        return Ok(forward);
    }
    // Column `positive[i]` of the masked logits holds every query's score for query i's
    // positive; transposed, row i is that document's distribution over the queries, whose
    // target is query i (diagonal).
    let cols = Tensor::from_vec(
        positive.iter().map(|&p| p as u32).collect::<Vec<u32>>(),
        b,
        queries.device(),
    )?;
    let by_doc = logits.index_select(&cols, 1)?.t()?.contiguous()?; // [B docs, B queries]
    let log_probs = candle_nn::ops::log_softmax(&by_doc, D::Minus1)?;
    let eye = Tensor::eye(b, DType::F32, queries.device())?;
    let reverse = (log_probs * eye)?.sum(D::Minus1)?.mean_all()?.neg()?;
    Ok(((forward + reverse)? * 0.5)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn loss_and_gradient_match_a_hand_computation() -> Result<()> {
        let dev = Device::Cpu;
        // q = [1, 0]; positive [1, 0], negative [0, 1]; τ = 1: logits [1, 0].
        let q = Var::from_vec(vec![1f32, 0.0], (1, 2), &dev)?;
        let docs = Tensor::from_vec(vec![1f32, 0.0, 0.0, 1.0], (2, 2), &dev)?;
        let allowed = Tensor::ones((1, 2), DType::F32, &dev)?;
        let loss = info_nce(q.as_tensor(), &docs, &[0], &allowed, 1.0)?;
        let expected = (1.0f64 + (-1.0f64).exp()).ln(); // log(1 + e^-1) = 0.31326
        let got = loss.to_scalar::<f32>()? as f64;
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
        // d loss / d q = Σ_n (p_n - 1[n = pos]) d_n / τ, p = softmax([1, 0]).
        let grads = loss.backward()?;
        let g = grads
            .get(q.as_tensor())
            .expect("gradient")
            .to_vec2::<f32>()?;
        let p_neg = 1.0 / (1.0 + 1f64.exp());
        assert!((g[0][0] as f64 + p_neg).abs() < 1e-6, "{g:?}");
        assert!((g[0][1] as f64 - p_neg).abs() < 1e-6, "{g:?}");
        Ok(())
    }

    #[test]
    fn temperature_and_mask_are_applied() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::from_vec(vec![1f32, 0.0, 0.0, 1.0], (2, 2), &dev)?;
        let docs = Tensor::from_vec(vec![1f32, 0.0, 0.0, 1.0, 0.6, 0.8], (3, 2), &dev)?;
        // Query 0 sees its positive (row 0) and row 2; query 1 sees only its positive (row 1).
        let allowed = Tensor::from_vec(vec![1f32, 0.0, 1.0, 0.0, 0.0, 0.0], (2, 3), &dev)?;
        let t = 0.5;
        let loss = info_nce(&q, &docs, &[0, 1], &allowed, t)?.to_scalar::<f32>()? as f64;
        let l0 = -((1.0f64 / t).exp() / ((1.0f64 / t).exp() + (0.6f64 / t).exp())).ln();
        let expected = (l0 + 0.0) / 2.0;
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
        Ok(())
    }

    #[test]
    fn the_symmetric_loss_adds_the_reverse_direction() -> Result<()> {
        let dev = Device::Cpu;
        // Two queries, two positives (rows 0, 1) and a hard negative (row 2), τ = 0.5.
        let q = Tensor::from_vec(vec![1f32, 0.0, 0.6, 0.8], (2, 2), &dev)?;
        let docs = Tensor::from_vec(vec![0.8f32, 0.6, 0.0, 1.0, 1.0, 0.0], (3, 2), &dev)?;
        let t = 0.5;
        let s = |qi: usize, dj: usize| {
            let q = [[1.0f64, 0.0], [0.6, 0.8]][qi];
            let d = [[0.8f64, 0.6], [0.0, 1.0], [1.0, 0.0]][dj];
            ((q[0] * d[0] + q[1] * d[1]) / t).exp()
        };
        let all = Tensor::ones((2, 3), DType::F32, &dev)?;
        let fwd = -(s(0, 0) / (s(0, 0) + s(0, 1) + s(0, 2))).ln()
            - (s(1, 1) / (s(1, 0) + s(1, 1) + s(1, 2))).ln();
        let rev = -(s(0, 0) / (s(0, 0) + s(1, 0))).ln() - (s(1, 1) / (s(0, 1) + s(1, 1))).ln();
        let got = info_nce_symmetric(&q, &docs, &[0, 1], &all, t)?.to_scalar::<f32>()? as f64;
        let expected = (fwd / 2.0 + rev / 2.0) / 2.0;
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
        let plain = info_nce(&q, &docs, &[0, 1], &all, t)?.to_scalar::<f32>()? as f64;
        assert!((plain - fwd / 2.0).abs() < 1e-5, "{plain} vs {}", fwd / 2.0);
        // Query 1 may not see document 0 (another positive of its): document 0's reverse
        // term has query 0 alone, so it is 0.
        let mask = Tensor::from_vec(vec![1f32, 1.0, 1.0, 0.0, 1.0, 1.0], (2, 3), &dev)?;
        let fwd =
            -(s(0, 0) / (s(0, 0) + s(0, 1) + s(0, 2))).ln() - (s(1, 1) / (s(1, 1) + s(1, 2))).ln();
        let rev = -(s(1, 1) / (s(0, 1) + s(1, 1))).ln();
        let got = info_nce_symmetric(&q, &docs, &[0, 1], &mask, t)?.to_scalar::<f32>()? as f64;
        let expected = (fwd / 2.0 + rev / 2.0) / 2.0;
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
        Ok(())
    }

    #[test]
    fn bad_arguments_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 2), DType::F32, &dev)?;
        let docs = Tensor::zeros((2, 2), DType::F32, &dev)?;
        let allowed = Tensor::ones((1, 2), DType::F32, &dev)?;
        for (positive, temperature) in [(&[2][..], 1.0), (&[0][..], 0.0), (&[0, 1][..], 1.0)] {
            let err =
                info_nce(&q, &docs, positive, &allowed, temperature).expect_err("a bad argument");
            assert_eq!(
                err.kind(),
                latentdb_types::ErrorKind::InvalidArgument,
                "{err}"
            );
        }
        Ok(())
    }
}
