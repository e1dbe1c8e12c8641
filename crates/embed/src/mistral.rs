//! A Mistral decoder run bidirectionally (NV-Embed's backbone): padding-only attention mask,
//! no causal triangle, no sliding window, positions `0..L-1`.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::config::MistralConfig;
use crate::error::Result;
use crate::weights::take;

#[derive(Debug, Clone)]
struct Layer {
    input_norm: Tensor,
    post_norm: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// The bidirectional Mistral backbone.
#[derive(Debug, Clone)]
pub struct BidirectionalMistral {
    cfg: MistralConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    dtype: DType,
}

/// RMSNorm: candle's fused kernel where it supports the dtype.
fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    if x.dtype() == DType::F64 {
        candle_nn::ops::rms_norm_slow(x, w, eps)
    } else {
        candle_nn::ops::rms_norm(x, w, eps)
    }
}

impl BidirectionalMistral {
    /// Builds the model from tensors under `prefix` (e.g. `embedding_model`).
    pub(crate) fn from_tensors(
        cfg: &MistralConfig,
        prefix: &str,
        tensors: &mut HashMap<String, Tensor>,
        dtype: DType,
    ) -> Result<Self> {
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("{prefix}.layers.{i}");
            let mut t = |n: &str| take(tensors, &format!("{p}.{n}"));
            layers.push(Layer {
                input_norm: t("input_layernorm.weight")?,
                post_norm: t("post_attention_layernorm.weight")?,
                q: t("self_attn.q_proj.weight")?,
                k: t("self_attn.k_proj.weight")?,
                v: t("self_attn.v_proj.weight")?,
                o: t("self_attn.o_proj.weight")?,
                gate: t("mlp.gate_proj.weight")?,
                up: t("mlp.up_proj.weight")?,
                down: t("mlp.down_proj.weight")?,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            embed: take(tensors, &format!("{prefix}.embed_tokens.weight"))?,
            norm: take(tensors, &format!("{prefix}.norm.weight"))?,
            layers,
            dtype,
        })
    }

    fn rope(&self, len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let hd = self.cfg.head_dim();
        let theta = self.cfg.rope_theta;
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| (1.0 / theta.powf(2.0 * i as f64 / hd as f64)) as f32)
            .collect();
        let inv = Tensor::from_vec(inv, (1, hd / 2), device)?;
        let pos = Tensor::arange(0u32, len as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((len, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok((
            freqs.cos()?.to_dtype(self.dtype)?,
            freqs.sin()?.to_dtype(self.dtype)?,
        ))
    }

    /// Final hidden states `[batch, len, d]` for `ids` `[batch, len]` with the padding mask
    /// `mask` `[batch, len]` (1 = real token).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, l) = ids.dims2()?;
        let device = ids.device();
        let cfg = &self.cfg;
        let (nh, nkv, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim(),
        );
        let d = cfg.hidden_size;
        let eps = cfg.rms_norm_eps as f32;
        let (cos, sin) = self.rope(l, device)?;
        // Additive mask [b, 1, 1, l]: 0 for real keys, -inf for padding.
        let bias = mask
            .to_dtype(DType::F32)?
            .affine(1.0, -1.0)?
            .affine(f64::from(f32::MAX), 0.0)?
            .to_dtype(self.dtype)?
            .reshape((b, 1, 1, l))?;
        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?;
        let scale = 1.0 / (hd as f64).sqrt();
        for layer in &self.layers {
            let h = rms_norm(&x, &layer.input_norm, eps)?;
            let q = h
                .matmul(&layer.q.t()?)?
                .reshape((b, l, nh, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let k = h
                .matmul(&layer.k.t()?)?
                .reshape((b, l, nkv, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let v = h
                .matmul(&layer.v.t()?)?
                .reshape((b, l, nkv, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?;
            let (k, v) = if nh != nkv {
                let rep = nh / nkv;
                let k = k
                    .unsqueeze(2)?
                    .expand((b, nkv, rep, l, hd))?
                    .reshape((b, nh, l, hd))?;
                let v = v
                    .unsqueeze(2)?
                    .expand((b, nkv, rep, l, hd))?
                    .reshape((b, nh, l, hd))?;
                (k, v)
            } else {
                (k, v)
            };
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
            let p = candle_nn::ops::softmax_last_dim(&scores)?;
            let a = p.matmul(&v)?.transpose(1, 2)?.reshape((b * l, nh * hd))?;
            let a = a.matmul(&layer.o.t()?)?;
            x = (x + a)?;
            let h = rms_norm(&x, &layer.post_norm, eps)?;
            let g = candle_nn::ops::silu(&h.matmul(&layer.gate.t()?)?)?;
            let u = h.matmul(&layer.up.t()?)?;
            let m = (g * u)?.matmul(&layer.down.t()?)?;
            x = (x + m)?;
        }
        let x = rms_norm(&x, &self.norm, eps)?;
        Ok(x.reshape((b, l, d))?.to_dtype(DType::F32)?)
    }
}
