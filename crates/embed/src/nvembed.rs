//! NV-Embed: a bidirectional Mistral, the latent-attention layer, the mean over the pool mask
//! (instruction tokens excluded) and an L2 norm.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::config::NvEmbedConfig;
use crate::error::Result;
use crate::latent_attention::LatentAttention;
use crate::mistral::BidirectionalMistral;
use crate::pooling::{l2_normalize, masked_mean};
use crate::weights::{check_plan, load_dir};

/// The NV-Embed model (without its tokenizer).
#[derive(Debug, Clone)]
pub struct NvEmbed {
    cfg: NvEmbedConfig,
    backbone: BidirectionalMistral,
    latent: LatentAttention,
}

impl NvEmbed {
    /// Loads the weights of `dir` (one file or shards), checking they are exactly the planned
    /// tensors; they are converted to `dtype`.
    pub fn load(cfg: &NvEmbedConfig, dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let mut tensors = load_dir(dir, device, dtype)?;
        check_plan(&tensors, &cfg.tensor_plan(), |_| false)?;
        let backbone =
            BidirectionalMistral::from_tensors(&cfg.text, "embedding_model", &mut tensors, dtype)?;
        // The latent layer computes in f32 (it is small next to the backbone).
        for t in tensors.values_mut() {
            *t = t.to_dtype(DType::F32)?;
        }
        let latent =
            LatentAttention::from_tensors(&cfg.latent, "latent_attention_model", &mut tensors)?;
        Ok(Self {
            cfg: cfg.clone(),
            backbone,
            latent,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NvEmbedConfig {
        &self.cfg
    }

    /// The backbone's final token states `[batch, len, d]` (f32).
    pub fn token_states(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.backbone.forward(ids, mask)
    }

    /// Embeddings `[batch, d]` for padded `ids` with attention `mask` and `pool_mask`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, pool_mask: &Tensor) -> Result<Tensor> {
        let h = self.backbone.forward(ids, mask)?;
        let x = self.latent.forward(&h)?;
        let pooled = masked_mean(&x, pool_mask)?;
        if self.cfg.latent.output_normalize {
            l2_normalize(&pooled)
        } else {
            Ok(pooled)
        }
    }
}
