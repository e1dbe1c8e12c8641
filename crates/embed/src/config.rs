//! Model configurations read from a Hugging Face style model directory.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, read_json};

/// The configuration of a model directory, by its `config.json`'s `model_type`.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    /// NV-Embed (`"model_type": "nvembed"`): a bidirectional Mistral plus a latent-attention layer.
    NvEmbed(NvEmbedConfig),
    /// A BERT sentence encoder (`"model_type": "bert"`).
    Bert(BertConfig),
}

impl ModelConfig {
    /// Reads `config.json` in `dir` and dispatches on its `model_type`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let value: serde_json::Value = read_json(&path)?;
        Self::from_value(value)
    }

    /// Parses a `config.json` already read as JSON.
    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let parse_err = |e: serde_json::Error| Error::InvalidConfig(format!("config.json: {e}"));
        match model_type.as_str() {
            "nvembed" => {
                let raw: RawNvEmbed = serde_json::from_value(value).map_err(parse_err)?;
                Ok(ModelConfig::NvEmbed(NvEmbedConfig::from_raw(raw)?))
            }
            "bert" => {
                let cfg: BertConfig = serde_json::from_value(value).map_err(parse_err)?;
                cfg.validate()?;
                Ok(ModelConfig::Bert(cfg))
            }
            other => Err(Error::InvalidConfig(format!(
                "unsupported model_type `{}` (supported: nvembed, bert)",
                crate::error::bounded(other)
            ))),
        }
    }
}

/// The Mistral decoder configuration (`text_config` of NV-Embed), run bidirectionally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MistralConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Width of the SwiGLU feed-forward.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Per-head width; `hidden_size / num_attention_heads` when absent.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Longest supported input.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
}

fn default_rms_eps() -> f64 {
    1e-5
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_max_pos() -> usize {
    32_768
}

impl MistralConfig {
    /// The per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || self.num_key_value_heads == 0
            || !self
                .num_attention_heads
                .is_multiple_of(self.num_key_value_heads)
        {
            return Err(Error::InvalidConfig(format!(
                "text_config: {} attention heads are not a multiple of {} key/value heads",
                self.num_attention_heads, self.num_key_value_heads
            )));
        }
        if self.hidden_size == 0 || self.head_dim() == 0 || !self.head_dim().is_multiple_of(2) {
            return Err(Error::InvalidConfig(format!(
                "text_config: invalid hidden_size {} / head_dim {}",
                self.hidden_size,
                self.head_dim()
            )));
        }
        Ok(())
    }
}

/// The latent-attention layer's configuration (`latent_attention_config`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentAttentionConfig {
    /// Number of trainable latents (rows of the key/value array).
    pub num_latents_value: usize,
    /// Number of attention heads.
    pub num_cross_heads: usize,
    /// Width of each head.
    pub cross_dim_head: usize,
    /// Width of the latents, equal to the token states' width.
    pub latent_dim: usize,
    /// Width of the context (the latents) fed to `to_kv`.
    pub hidden_dim: usize,
    /// Whether the pooled output is L2-normalised.
    pub output_normalize: bool,
}

impl Default for LatentAttentionConfig {
    /// NV-Embed-v2's values: 512 latents, 8 heads of 4096, width 4096, normalised output.
    fn default() -> Self {
        Self {
            num_latents_value: 512,
            num_cross_heads: 8,
            cross_dim_head: 4096,
            latent_dim: 4096,
            hidden_dim: 4096,
            output_normalize: true,
        }
    }
}

impl LatentAttentionConfig {
    /// The attention's inner width (`num_cross_heads * cross_dim_head`).
    pub fn inner_dim(&self) -> usize {
        self.num_cross_heads * self.cross_dim_head
    }

    /// Checks the widths against the token states' width `d`.
    pub fn validate(&self, d: usize) -> Result<()> {
        if self.latent_dim != d || self.hidden_dim != d {
            return Err(Error::InvalidConfig(format!(
                "latent attention: latent_dim {} and hidden_dim {} must both equal the token width {d}",
                self.latent_dim, self.hidden_dim
            )));
        }
        if self.num_latents_value == 0 || self.num_cross_heads == 0 || self.cross_dim_head == 0 {
            return Err(Error::InvalidConfig(
                "latent attention: latents, heads and head width must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize, Default)]
struct RawLatent {
    num_latents_value: Option<usize>,
    num_cross_heads: Option<usize>,
    cross_dim_head: Option<usize>,
    latent_dim: Option<usize>,
    hidden_dim: Option<usize>,
    output_normalize: Option<bool>,
}

#[derive(Deserialize)]
struct RawNvEmbed {
    text_config: MistralConfig,
    #[serde(default)]
    latent_attention_config: Option<RawLatent>,
    #[serde(default = "yes")]
    is_mask_instruction: bool,
    #[serde(default = "right")]
    padding_side: String,
    #[serde(default = "yes")]
    add_eos: bool,
}

fn yes() -> bool {
    true
}
fn right() -> String {
    "right".into()
}

/// NV-Embed's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NvEmbedConfig {
    /// The bidirectional Mistral backbone.
    pub text: MistralConfig,
    /// The latent-attention pooling layer, defaults resolved.
    pub latent: LatentAttentionConfig,
    /// Whether instruction tokens are excluded from pooling.
    pub is_mask_instruction: bool,
    /// Whether `</s>` is appended to every input.
    pub add_eos: bool,
}

impl NvEmbedConfig {
    fn from_raw(raw: RawNvEmbed) -> Result<Self> {
        raw.text_config.validate()?;
        if raw.padding_side != "right" {
            return Err(Error::InvalidConfig(format!(
                "padding_side `{}` is not supported (only right)",
                raw.padding_side
            )));
        }
        let d = LatentAttentionConfig::default();
        let l = raw.latent_attention_config.unwrap_or_default();
        let latent = LatentAttentionConfig {
            num_latents_value: l.num_latents_value.unwrap_or(d.num_latents_value),
            num_cross_heads: l.num_cross_heads.unwrap_or(d.num_cross_heads),
            cross_dim_head: l.cross_dim_head.unwrap_or(d.cross_dim_head),
            latent_dim: l.latent_dim.unwrap_or(d.latent_dim),
            hidden_dim: l.hidden_dim.unwrap_or(d.hidden_dim),
            output_normalize: l.output_normalize.unwrap_or(d.output_normalize),
        };
        latent.validate(raw.text_config.hidden_size)?;
        Ok(Self {
            text: raw.text_config,
            latent,
            is_mask_instruction: raw.is_mask_instruction,
            add_eos: raw.add_eos,
        })
    }

    /// Every tensor the model loads, with its shape, in NV-Embed-v2's naming.
    pub fn tensor_plan(&self) -> Vec<(String, Vec<usize>)> {
        let t = &self.text;
        let (d, hd) = (t.hidden_size, t.head_dim());
        let mut plan = vec![
            (
                "embedding_model.embed_tokens.weight".to_string(),
                vec![t.vocab_size, d],
            ),
            ("embedding_model.norm.weight".to_string(), vec![d]),
        ];
        for i in 0..t.num_hidden_layers {
            let p = format!("embedding_model.layers.{i}");
            let q = t.num_attention_heads * hd;
            let kv = t.num_key_value_heads * hd;
            plan.extend([
                (format!("{p}.input_layernorm.weight"), vec![d]),
                (format!("{p}.post_attention_layernorm.weight"), vec![d]),
                (format!("{p}.self_attn.q_proj.weight"), vec![q, d]),
                (format!("{p}.self_attn.k_proj.weight"), vec![kv, d]),
                (format!("{p}.self_attn.v_proj.weight"), vec![kv, d]),
                (format!("{p}.self_attn.o_proj.weight"), vec![d, q]),
                (
                    format!("{p}.mlp.gate_proj.weight"),
                    vec![t.intermediate_size, d],
                ),
                (
                    format!("{p}.mlp.up_proj.weight"),
                    vec![t.intermediate_size, d],
                ),
                (
                    format!("{p}.mlp.down_proj.weight"),
                    vec![d, t.intermediate_size],
                ),
            ]);
        }
        plan.extend(crate::latent_attention::tensor_plan(
            &self.latent,
            "latent_attention_model",
        ));
        plan
    }
}

/// A BERT encoder's configuration (`config.json` of a BERT checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Number of attention heads.
    pub num_attention_heads: usize,
    /// Width of the feed-forward.
    pub intermediate_size: usize,
    /// Feed-forward activation; `gelu` (exact erf) is supported.
    #[serde(default = "gelu")]
    pub hidden_act: String,
    /// Number of learned positions.
    #[serde(default = "default_bert_pos")]
    pub max_position_embeddings: usize,
    /// Number of token types.
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
}

fn gelu() -> String {
    "gelu".into()
}
fn default_bert_pos() -> usize {
    512
}
fn two() -> usize {
    2
}
fn default_ln_eps() -> f64 {
    1e-12
}

impl BertConfig {
    fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::InvalidConfig(format!(
                "bert: hidden_size {} is not a multiple of {} heads",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.hidden_act != "gelu" {
            return Err(Error::InvalidConfig(format!(
                "bert: hidden_act `{}` is not supported (only gelu)",
                self.hidden_act
            )));
        }
        Ok(())
    }
}

/// How a sentence encoder pools token states into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean over the pool mask.
    Mean,
    /// The first token's state.
    Cls,
    /// NV-Embed's or a head's latent attention, then the mean over the pool mask.
    LatentAttention,
}

impl std::fmt::Display for Pooling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::LatentAttention => "latent_attention",
        })
    }
}

/// The sentence-transformers files of a model directory.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceTransformersConfig {
    /// Pooling from `1_Pooling/config.json` (mean when absent).
    pub pooling: Pooling,
    /// `max_seq_length` from `sentence_bert_config.json` (512 when absent).
    pub max_seq_length: usize,
    /// Whether the pipeline L2-normalises (a `Normalize` module in `modules.json`).
    pub normalize: bool,
}

#[derive(Deserialize)]
struct RawModule {
    #[serde(default)]
    path: String,
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Deserialize)]
struct RawPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct RawSbert {
    max_seq_length: Option<usize>,
}

impl SentenceTransformersConfig {
    /// Reads `modules.json`, the pooling module's `config.json` and `sentence_bert_config.json`
    /// in `dir`; each is optional (mean pooling, 512 tokens, normalised).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let modules_path = dir.join("modules.json");
        let mut pooling_dir = dir.join("1_Pooling");
        let mut normalize = true;
        if modules_path.exists() {
            let modules: Vec<RawModule> = read_json(&modules_path)?;
            normalize = false;
            for m in &modules {
                if m.kind.ends_with(".Pooling") {
                    pooling_dir = dir.join(&m.path);
                }
                if m.kind.ends_with(".Normalize") {
                    normalize = true;
                }
            }
        }
        let pooling_path = pooling_dir.join("config.json");
        let pooling = if pooling_path.exists() {
            let p: RawPooling = read_json(&pooling_path)?;
            if p.pooling_mode_max_tokens || p.pooling_mode_mean_sqrt_len_tokens {
                return Err(Error::InvalidConfig(format!(
                    "{}: only mean or CLS pooling is supported",
                    crate::error::shown(&pooling_path)
                )));
            }
            match (p.pooling_mode_mean_tokens, p.pooling_mode_cls_token) {
                (true, false) => Pooling::Mean,
                (false, true) => Pooling::Cls,
                _ => {
                    return Err(Error::InvalidConfig(format!(
                        "{}: exactly one of mean or CLS pooling must be set",
                        crate::error::shown(&pooling_path)
                    )));
                }
            }
        } else {
            Pooling::Mean
        };
        let sbert_path = dir.join("sentence_bert_config.json");
        let max_seq_length = if sbert_path.exists() {
            let s: RawSbert = read_json(&sbert_path)?;
            s.max_seq_length.unwrap_or(512)
        } else {
            512
        };
        Ok(Self {
            pooling,
            max_seq_length,
            normalize,
        })
    }
}
