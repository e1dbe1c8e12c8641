//! A trainable latent-attention head on a sentence encoder's token states.
//!
//! Stored as a directory with `head.json` (configuration and a reference to the backbone) and
//! `head.safetensors` (the layer's tensors). A fresh head computes exactly the backbone's mean
//! pooling: the output projections of both residual branches are zero, so the layer is the
//! identity on token states until it is trained.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::config::LatentAttentionConfig;
use crate::error::{Error, Result, read_json};
use crate::latent_attention::{LatentAttention, tensor_plan};
use crate::pooling::{l2_normalize, masked_mean, packed_mean};
use crate::weights::{load_f32_file, save_with_config, to_varmap};

/// File name of a head's configuration.
pub const HEAD_CONFIG_FILE: &str = "head.json";
/// File name of a head's tensors.
pub const HEAD_WEIGHTS_FILE: &str = "head.safetensors";
const PREFIX: &str = "latent_attention_model";
const FORMAT_VERSION: u32 = 1;

/// The backbone a head was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackboneRef {
    /// The backbone's name (e.g. `all-MiniLM-L6-v2`).
    pub name: String,
    /// sha256 (hex) of the backbone's weights.
    pub weights_sha256: String,
}

/// A head's `head.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// File format version.
    pub format_version: u32,
    /// The backbone whose token states the head reads.
    pub backbone: BackboneRef,
    /// The backbone's directory, absolute or relative to the head's directory; absent for the
    /// default model (found in the model cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone_path: Option<String>,
    /// The latent-attention layer's shape.
    pub latent_attention: LatentAttentionConfig,
}

impl HeadConfig {
    /// The default head shape for token states of width `d`: 128 latents, 4 heads of `d / 4`
    /// (at least 16), normalised output.
    pub fn default_for(d: usize, backbone: BackboneRef) -> Self {
        let heads = 4;
        Self {
            format_version: FORMAT_VERSION,
            backbone,
            backbone_path: None,
            latent_attention: LatentAttentionConfig {
                num_latents_value: 128,
                num_cross_heads: heads,
                cross_dim_head: (d / heads).max(16),
                latent_dim: d,
                hidden_dim: d,
                output_normalize: true,
            },
        }
    }
}

/// A latent-attention head with its pooling (masked mean, then L2 norm).
#[derive(Debug, Clone)]
pub struct LatentHead {
    config: HeadConfig,
    layer: LatentAttention,
    identity: bool,
}

impl LatentHead {
    /// A fresh head that computes exactly mean pooling; `seed` makes the (not yet effective)
    /// random parameters reproducible.
    pub fn new_mean_pooling(config: HeadConfig, seed: u64) -> Result<Self> {
        let la = &config.latent_attention;
        la.validate(la.latent_dim)?;
        let mut rng = SplitMix64(seed);
        let d = la.latent_dim;
        let device = Device::Cpu;
        let mut tensors = HashMap::new();
        for (name, shape) in tensor_plan(la, PREFIX) {
            let n: usize = shape.iter().product();
            let fan_in = *shape.last().unwrap_or(&1) as f64;
            let data: Vec<f32> = if name.ends_with(".latents") {
                (0..n).map(|_| rng.normal() as f32).collect()
            } else if name.ends_with("norm.weight") || name.ends_with("norm_context.weight") {
                vec![1.0; n]
            } else if name.contains("to_out")
                || name.contains("net.2")
                || name.ends_with("norm.bias")
                || name.ends_with("norm_context.bias")
            {
                vec![0.0; n]
            } else {
                // PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
                let fan_in = if name.ends_with("net.0.bias") {
                    d as f64
                } else {
                    fan_in
                };
                let bound = 1.0 / fan_in.sqrt();
                (0..n)
                    .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                    .collect()
            };
            tensors.insert(name, Tensor::from_vec(data, shape, &device)?);
        }
        Self::from_tensors(config, tensors)
    }

    fn from_tensors(config: HeadConfig, mut tensors: HashMap<String, Tensor>) -> Result<Self> {
        let la = &config.latent_attention;
        la.validate(la.latent_dim)?;
        crate::weights::check_plan(&tensors, &tensor_plan(la, PREFIX), |_| false)?;
        let layer = LatentAttention::from_tensors(la, PREFIX, &mut tensors)?;
        let identity = layer.is_identity()?;
        Ok(Self {
            config,
            layer,
            identity,
        })
    }

    /// Loads a head from a directory holding `head.json` and `head.safetensors`.
    pub fn load(dir: &Path) -> Result<Self> {
        let config: HeadConfig = read_json(&dir.join(HEAD_CONFIG_FILE))?;
        if config.format_version != FORMAT_VERSION {
            return Err(Error::InvalidConfig(format!(
                "{}: unsupported head format_version {}",
                crate::error::shown(&dir.join(HEAD_CONFIG_FILE)),
                config.format_version
            )));
        }
        let tensors = load_f32_file(&dir.join(HEAD_WEIGHTS_FILE))?;
        Self::from_tensors(config, tensors)
    }

    /// Writes `head.json` and `head.safetensors` into `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_with_config(
            dir,
            HEAD_WEIGHTS_FILE,
            self.layer.named_tensors(PREFIX),
            HEAD_CONFIG_FILE,
            &self.config,
        )
    }

    /// sha256 (hex) over the head's tensors: each name, then its f32 values little-endian, in
    /// name order.
    pub fn tensors_sha256(&self) -> Result<String> {
        named_tensors_sha256(self.layer.named_tensors(PREFIX))
    }

    /// The head's configuration.
    pub fn config(&self) -> &HeadConfig {
        &self.config
    }

    /// The backbone the head belongs to.
    pub fn backbone(&self) -> &BackboneRef {
        &self.config.backbone
    }

    /// True while the head is untrained (exactly mean pooling).
    pub fn is_identity(&self) -> bool {
        self.identity
    }

    /// The latent-attention layer applied to token states `[batch, len, d]`, unpooled.
    pub fn transform(&self, states: &Tensor) -> Result<Tensor> {
        self.layer.forward(states)
    }

    /// Pooled embeddings `[batch, d]` for token states `[batch, len, d]` and the pool mask
    /// `[batch, len]`: latent attention, masked mean, then L2 norm if configured. Differentiable
    /// when the head is [`LatentHead::trainable`].
    pub fn forward(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let x = self.layer.forward(states)?;
        let pooled = masked_mean(&x, mask)?;
        if self.config.latent_attention.output_normalize {
            l2_normalize(&pooled)
        } else {
            Ok(pooled)
        }
    }

    /// [`LatentHead::forward`] on packed token states `[rows, d]`: `lens[i]` rows of text `i`,
    /// each text's after the previous one's, every row pooled. The layer works row by row, so
    /// this equals the padded forward without computing the padding rows.
    pub(crate) fn forward_packed(&self, states: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let x = self.layer.forward(&states.unsqueeze(0)?)?.squeeze(0)?;
        let spans: Vec<(usize, usize)> = lens
            .iter()
            .scan(0, |start, &n| {
                let span = (*start, n);
                *start += n;
                Some(span)
            })
            .collect();
        let pooled = packed_mean(&x, &spans, 0)?;
        if self.config.latent_attention.output_normalize {
            l2_normalize(&pooled)
        } else {
            Ok(pooled)
        }
    }

    /// Forward for inference: skips the layer while it is the identity (bit-identical to
    /// running it, since both residual branches add exact zeros).
    pub(crate) fn forward_inference(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        if self.identity {
            let pooled = masked_mean(states, mask)?;
            if self.config.latent_attention.output_normalize {
                return l2_normalize(&pooled);
            }
            return Ok(pooled);
        }
        self.forward(states, mask)
    }

    /// A copy of this head whose tensors are trainable variables held by the returned
    /// [`VarMap`] (names as in `head.safetensors`), for `candle_nn::AdamW` and friends. After
    /// training, [`LatentHead::save`] on the returned head writes the trained weights.
    pub fn trainable(&self, device: &Device) -> Result<(VarMap, LatentHead)> {
        let (varmap, mut tensors) = to_varmap(self.layer.named_tensors(PREFIX), device)?;
        let layer =
            LatentAttention::from_tensors(&self.config.latent_attention, PREFIX, &mut tensors)?;
        Ok((
            varmap,
            LatentHead {
                config: self.config.clone(),
                layer,
                identity: false,
            },
        ))
    }
}

/// sha256 (hex) over named tensors: each name, then its f32 values little-endian, in name
/// order.
pub(crate) fn named_tensors_sha256(mut named: Vec<(String, Tensor)>) -> Result<String> {
    use sha2::{Digest, Sha256};
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Sha256::new();
    for (name, t) in named {
        hasher.update(name.as_bytes());
        for v in t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()? {
            hasher.update(v.to_le_bytes());
        }
    }
    Ok(crate::fetch::hex(&hasher.finalize()))
}

/// A small deterministic generator (SplitMix64) for reproducible initialisation and dropout.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    /// The state's increment per draw.
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(Self::GAMMA);
        Self::mix(self.0)
    }

    /// Moves the generator `n` draws ahead, as `n` calls of [`SplitMix64::uniform`] would.
    pub(crate) fn skip(&mut self, n: u64) {
        self.0 = self.0.wrapping_add(n.wrapping_mul(Self::GAMMA));
    }

    /// The 53 bits behind draw `i` (0 first) of a generator now in `state`:
    /// [`SplitMix64::uniform`] returns them divided by 2^53. Draws can so be made in any order,
    /// or in parallel.
    #[inline(always)]
    pub(crate) fn bits_at(state: u64, i: u64) -> u64 {
        Self::mix(state.wrapping_add(i.wrapping_add(1).wrapping_mul(Self::GAMMA))) >> 11
    }

    /// Uniform in [0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}
