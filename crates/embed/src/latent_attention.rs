//! NV-Embed's latent-attention layer.
//!
//! Token states attend (as queries, after a LayerNorm) to a trainable latent array (keys and
//! values, after their own LayerNorm), with a residual; then a pre-norm GEGLU feed-forward with a
//! residual. Pooling (the masked mean and L2 norm) is done by the caller.
//!
//! Every op here carries gradients (no fused forward-only kernels), so the same code serves
//! inference and training of a head.

use std::collections::HashMap;

use candle_core::{D, Tensor};

use crate::config::LatentAttentionConfig;
use crate::error::Result;
use crate::weights::take;

/// LayerNorm epsilon of PyTorch's `nn.LayerNorm` default, as NV-Embed uses.
pub(crate) const LN_EPS: f64 = 1e-5;

/// The names and shapes of the layer's tensors under `prefix` (NV-Embed-v2 naming).
pub fn tensor_plan(cfg: &LatentAttentionConfig, prefix: &str) -> Vec<(String, Vec<usize>)> {
    let d = cfg.latent_dim;
    let inner = cfg.inner_dim();
    let b = format!("{prefix}.cross_attend_blocks");
    vec![
        (format!("{prefix}.latents"), vec![cfg.num_latents_value, d]),
        (format!("{b}.0.norm.weight"), vec![d]),
        (format!("{b}.0.norm.bias"), vec![d]),
        (format!("{b}.0.norm_context.weight"), vec![cfg.hidden_dim]),
        (format!("{b}.0.norm_context.bias"), vec![cfg.hidden_dim]),
        (format!("{b}.0.fn.to_q.weight"), vec![inner, d]),
        (
            format!("{b}.0.fn.to_kv.weight"),
            vec![2 * inner, cfg.hidden_dim],
        ),
        (format!("{b}.0.fn.to_out.weight"), vec![d, inner]),
        (format!("{b}.1.norm.weight"), vec![d]),
        (format!("{b}.1.norm.bias"), vec![d]),
        (format!("{b}.1.fn.net.0.weight"), vec![8 * d, d]),
        (format!("{b}.1.fn.net.0.bias"), vec![8 * d]),
        (format!("{b}.1.fn.net.2.weight"), vec![d, 4 * d]),
        (format!("{b}.1.fn.net.2.bias"), vec![d]),
    ]
}

/// The latent-attention layer (without pooling).
#[derive(Debug, Clone)]
pub struct LatentAttention {
    cfg: LatentAttentionConfig,
    latents: Tensor,
    norm_w: Tensor,
    norm_b: Tensor,
    ctx_norm_w: Tensor,
    ctx_norm_b: Tensor,
    to_q: Tensor,
    to_kv: Tensor,
    to_out: Tensor,
    ff_norm_w: Tensor,
    ff_norm_b: Tensor,
    net0_w: Tensor,
    net0_b: Tensor,
    net2_w: Tensor,
    net2_b: Tensor,
}

impl LatentAttention {
    /// Builds the layer from tensors named as in [`tensor_plan`], removing them from `tensors`.
    pub(crate) fn from_tensors(
        cfg: &LatentAttentionConfig,
        prefix: &str,
        tensors: &mut HashMap<String, Tensor>,
    ) -> Result<Self> {
        let b = format!("{prefix}.cross_attend_blocks");
        let mut t = |n: &str| take(tensors, n);
        Ok(Self {
            cfg: cfg.clone(),
            latents: t(&format!("{prefix}.latents"))?,
            norm_w: t(&format!("{b}.0.norm.weight"))?,
            norm_b: t(&format!("{b}.0.norm.bias"))?,
            ctx_norm_w: t(&format!("{b}.0.norm_context.weight"))?,
            ctx_norm_b: t(&format!("{b}.0.norm_context.bias"))?,
            to_q: t(&format!("{b}.0.fn.to_q.weight"))?,
            to_kv: t(&format!("{b}.0.fn.to_kv.weight"))?,
            to_out: t(&format!("{b}.0.fn.to_out.weight"))?,
            ff_norm_w: t(&format!("{b}.1.norm.weight"))?,
            ff_norm_b: t(&format!("{b}.1.norm.bias"))?,
            net0_w: t(&format!("{b}.1.fn.net.0.weight"))?,
            net0_b: t(&format!("{b}.1.fn.net.0.bias"))?,
            net2_w: t(&format!("{b}.1.fn.net.2.weight"))?,
            net2_b: t(&format!("{b}.1.fn.net.2.bias"))?,
        })
    }

    /// The layer's tensors named as in [`tensor_plan`].
    pub(crate) fn named_tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let b = format!("{prefix}.cross_attend_blocks");
        vec![
            (format!("{prefix}.latents"), self.latents.clone()),
            (format!("{b}.0.norm.weight"), self.norm_w.clone()),
            (format!("{b}.0.norm.bias"), self.norm_b.clone()),
            (
                format!("{b}.0.norm_context.weight"),
                self.ctx_norm_w.clone(),
            ),
            (format!("{b}.0.norm_context.bias"), self.ctx_norm_b.clone()),
            (format!("{b}.0.fn.to_q.weight"), self.to_q.clone()),
            (format!("{b}.0.fn.to_kv.weight"), self.to_kv.clone()),
            (format!("{b}.0.fn.to_out.weight"), self.to_out.clone()),
            (format!("{b}.1.norm.weight"), self.ff_norm_w.clone()),
            (format!("{b}.1.norm.bias"), self.ff_norm_b.clone()),
            (format!("{b}.1.fn.net.0.weight"), self.net0_w.clone()),
            (format!("{b}.1.fn.net.0.bias"), self.net0_b.clone()),
            (format!("{b}.1.fn.net.2.weight"), self.net2_w.clone()),
            (format!("{b}.1.fn.net.2.bias"), self.net2_b.clone()),
        ]
    }

    /// The configuration.
    pub fn config(&self) -> &LatentAttentionConfig {
        &self.cfg
    }

    /// True when both residual branches' output projections are exactly zero, so the layer is
    /// the identity on token states (an untrained head); callers may then skip it.
    pub fn is_identity(&self) -> Result<bool> {
        for t in [&self.to_out, &self.net2_w, &self.net2_b] {
            let m = t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            if m != 0.0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Applies the layer to token states `hiddens` `[batch, len, d]`, returning `[batch, len, d]`.
    pub fn forward(&self, hiddens: &Tensor) -> Result<Tensor> {
        let (b, l, d) = hiddens.dims3()?;
        let h = self.cfg.num_cross_heads;
        let dh = self.cfg.cross_dim_head;
        let inner = h * dh;
        let r = self.cfg.num_latents_value;

        // Cross attention: queries from the normed token states, keys/values from the latents.
        let x = layer_norm(hiddens, &self.norm_w, &self.norm_b)?;
        let ctx = layer_norm(&self.latents, &self.ctx_norm_w, &self.ctx_norm_b)?;
        let q = x.reshape((b * l, d))?.matmul(&self.to_q.t()?)?;
        let q = q.reshape((b, l, h, dh))?.transpose(1, 2)?; // [b, h, l, dh]
        let kv = ctx.matmul(&self.to_kv.t()?)?; // [r, 2*inner]
        let k = kv
            .narrow(1, 0, inner)?
            .reshape((r, h, dh))?
            .transpose(0, 1)?; // [h, r, dh]
        let v = kv
            .narrow(1, inner, inner)?
            .reshape((r, h, dh))?
            .transpose(0, 1)?;
        let scale = 1.0 / (dh as f64).sqrt();
        let kt = k.transpose(1, 2)?.contiguous()?; // [h, dh, r]
        let scores = (q.contiguous()?.broadcast_matmul(&kt)? * scale)?; // [b, h, l, r]
        let p = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let out = p.broadcast_matmul(&v.contiguous()?)?; // [b, h, l, dh]
        let out = out.transpose(1, 2)?.reshape((b * l, inner))?;
        let out = out.matmul(&self.to_out.t()?)?.reshape((b, l, d))?;
        let h1 = (out + hiddens)?;

        // Pre-norm GEGLU feed-forward.
        let y = layer_norm(&h1, &self.ff_norm_w, &self.ff_norm_b)?.reshape((b * l, d))?;
        let y = y.matmul(&self.net0_w.t()?)?.broadcast_add(&self.net0_b)?;
        let half = 4 * d;
        let value = y.narrow(1, 0, half)?;
        let gate = y.narrow(1, half, half)?.gelu_erf()?;
        let z = (value * gate)?;
        let z = z.matmul(&self.net2_w.t()?)?.broadcast_add(&self.net2_b)?;
        Ok((z.reshape((b, l, d))? + h1)?)
    }
}

/// LayerNorm over the last dimension written with differentiable elementary ops.
pub(crate) fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    layer_norm_eps(x, w, b, LN_EPS)
}

/// [`layer_norm`] with a given epsilon.
pub(crate) fn layer_norm_eps(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xn = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(xn.broadcast_mul(w)?.broadcast_add(b)?)
}
