//! The [`Embedder`]: loads a model by spec, tokenizes, batches (sorted by length) and returns
//! L2-normalised vectors in input order.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bert::{self, Bert};
use crate::config::{ModelConfig, Pooling, SentenceTransformersConfig};
use crate::error::{Error, Result};
use crate::fetch::{self, DEFAULT_MODEL, ModelSpec, hex, sha256_file};
use crate::head::{BackboneRef, HEAD_CONFIG_FILE, HeadConfig, LatentHead};
use crate::lora::{LORA_CONFIG_FILE, LoraAdapters};
use crate::nvembed::NvEmbed;
use crate::pooling::{first_token, l2_normalize, masked_mean, packed_mean};
use crate::tasks;
use crate::tokenize::TextTokenizer;
use crate::weights::{check_plan, load_dir, weight_files};

/// An instruction put in front of each input (NV-Embed); models without instructions ignore it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// A built-in task by name (see [`crate::tasks`]), formatted `Instruct: {task}\nQuery: `.
    Task(String),
    /// An instruction sentence, formatted `Instruct: {text}\nQuery: `.
    Text(String),
    /// The exact prefix to put in front of each input.
    Raw(String),
}

impl Instruction {
    /// Interprets user input: a built-in task name, an already formatted prefix (starting with
    /// `Instruct:`), or an instruction sentence.
    pub fn parse(s: &str) -> Self {
        if tasks::task(s).is_ok() {
            Instruction::Task(s.to_string())
        } else if s.starts_with("Instruct:") {
            Instruction::Raw(s.to_string())
        } else {
            Instruction::Text(s.to_string())
        }
    }

    /// The prefix put in front of each input.
    pub fn prefix(&self) -> Result<String> {
        Ok(match self {
            Instruction::Task(name) => tasks::task(name)?.query_prefix(),
            Instruction::Text(text) => tasks::query_prefix(text),
            Instruction::Raw(raw) => raw.clone(),
        })
    }
}

/// Options of [`Embedder::embed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedOptions {
    /// An instruction for every input (NV-Embed queries); ignored by models without one.
    pub instruction: Option<Instruction>,
    /// Token limit per input, special tokens included (default: the model's).
    pub max_length: Option<usize>,
    /// Inputs per forward pass (default 32).
    pub batch_size: usize,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            instruction: None,
            max_length: None,
            batch_size: 32,
        }
    }
}

/// Options of [`Embedder::load_with`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype of the backbone (f32 on CPU; f16/bf16 for GPU builds).
    pub dtype: DType,
    /// The device.
    pub device: Device,
    /// The model cache (default [`fetch::models_dir`]).
    pub models_dir: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DType::F32,
            device: Device::Cpu,
            models_dir: None,
        }
    }
}

/// What a collection stores about the model that embedded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    /// The model's name (`all-MiniLM-L6-v2`, or the directory's name).
    pub name: String,
    /// `bert` or `nvembed`.
    pub model_type: String,
    /// The model directory.
    pub path: PathBuf,
    /// sha256 of the weights (of `model.safetensors`; for shards, of the shards' hashes in
    /// name order, concatenated as hex).
    pub weights_sha256: String,
    /// The pooling.
    pub pooling: Pooling,
    /// Default token limit per input.
    pub max_length: usize,
    /// Vector dimension.
    pub dimension: usize,
    /// sha256 of the head's tensors when a latent-attention head is attached.
    pub head_sha256: Option<String>,
    /// sha256 of the LoRA adapters' tensors when adapters are merged into the backbone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_sha256: Option<String>,
}

/// One input's final backbone token states, for training a head on cached states.
#[derive(Debug, Clone)]
pub struct TokenStates {
    /// `[len, d]` f32, padding excluded.
    pub states: Tensor,
    /// Positions before this one are excluded from pooling (instruction tokens).
    pub pool_start: usize,
}

/// Pads token states to `([batch, max_len, d], pool_mask [batch, max_len])` (mask in f32).
pub fn pad_token_states(items: &[TokenStates]) -> Result<(Tensor, Tensor)> {
    let first = items
        .first()
        .ok_or_else(|| Error::InvalidArgument("no token states to pad".into()))?;
    let (_, d) = first.states.dims2()?;
    let device = first.states.device();
    let max_len = items
        .iter()
        .map(|t| t.states.dim(0).unwrap_or(0))
        .max()
        .unwrap_or(0);
    let mut rows = Vec::with_capacity(items.len());
    let mut mask = Vec::with_capacity(items.len() * max_len);
    for item in items {
        let l = item.states.dim(0)?;
        let row = if l < max_len {
            Tensor::cat(
                &[
                    item.states.clone(),
                    Tensor::zeros((max_len - l, d), DType::F32, device)?,
                ],
                0,
            )?
        } else {
            item.states.clone()
        };
        rows.push(row);
        mask.extend((0..max_len).map(|j| {
            if j >= item.pool_start && j < l {
                1f32
            } else {
                0.0
            }
        }));
    }
    let states = Tensor::stack(&rows, 0)?;
    let mask = Tensor::from_vec(mask, (items.len(), max_len), device)?;
    Ok((states, mask))
}

enum Model {
    NvEmbed {
        model: NvEmbed,
        eos: u32,
    },
    Bert {
        /// The backbone that runs (adapters merged in, if any).
        model: Bert,
        /// The backbone without adapters, and the adapters, when adapters are attached.
        lora: Option<Box<(Bert, LoraAdapters)>>,
        pooling: Pooling,
        normalize: bool,
        pad: u32,
        head: Option<LatentHead>,
    },
}

/// A loaded embedding model. Thread-safe: `embed` takes `&self`.
pub struct Embedder {
    model: Model,
    tokenizer: TextTokenizer,
    identity: ModelIdentity,
    device: Device,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// sha256 identifying the weights of a model directory.
pub fn weights_sha256(dir: &Path) -> Result<String> {
    let files = weight_files(dir)?;
    if let [single] = files.as_slice() {
        return sha256_file(single);
    }
    let mut hasher = Sha256::new();
    for f in &files {
        hasher.update(sha256_file(f)?.as_bytes());
    }
    Ok(hex(&hasher.finalize()))
}

impl Embedder {
    /// Loads a model by spec with default options (f32 on CPU, the default cache).
    ///
    /// `default` is all-MiniLM-L6-v2 from the cache with a fresh latent-attention head (which
    /// computes exactly mean pooling); a directory with `head.json` is a head on its backbone;
    /// any other directory is a model directory.
    pub fn load(spec: &ModelSpec) -> Result<Self> {
        Self::load_with(spec, &LoadOptions::default())
    }

    /// [`Embedder::load`] with options.
    pub fn load_with(spec: &ModelSpec, opts: &LoadOptions) -> Result<Self> {
        let models_dir = opts.models_dir.clone().unwrap_or_else(fetch::models_dir);
        let dir = spec.resolve_in(&models_dir)?;
        match spec {
            ModelSpec::Default => {
                let mut e = Self::from_dir(&dir, opts)?;
                e.identity.name = DEFAULT_MODEL.to_string();
                let head = LatentHead::new_mean_pooling(
                    HeadConfig::default_for(e.identity.dimension, e.backbone_ref()),
                    0,
                )?;
                e.with_head(head)
            }
            ModelSpec::Dir(_) if dir.join(HEAD_CONFIG_FILE).is_file() => {
                let head = LatentHead::load(&dir)?;
                let backbone_dir = match &head.config().backbone_path {
                    Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
                    Some(p) => dir.join(p),
                    None if head.backbone().name == DEFAULT_MODEL => {
                        ModelSpec::Default.resolve_in(&models_dir)?
                    }
                    None => {
                        return Err(Error::InvalidConfig(format!(
                            "{}: backbone `{}` has no path",
                            crate::error::shown(&dir.join(HEAD_CONFIG_FILE)),
                            crate::error::bounded(&head.backbone().name)
                        )));
                    }
                };
                let mut e = Self::from_dir(&backbone_dir, opts)?;
                e.identity.name = head.backbone().name.clone();
                if dir.join(LORA_CONFIG_FILE).is_file() {
                    e = e.with_lora(LoraAdapters::load(&dir)?)?;
                }
                e.with_head(head)
            }
            ModelSpec::Dir(_) => Self::from_dir(&dir, opts),
        }
    }

    /// Loads the model directory `dir` (NV-Embed or a BERT sentence encoder), without a head.
    pub fn from_dir(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let config = ModelConfig::from_dir(dir)?;
        let tokenizer = TextTokenizer::from_dir(dir)?;
        let device = opts.device.clone();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        tracing::debug!("loading model from {}", dir.display());
        let (model, identity) = match config {
            ModelConfig::NvEmbed(cfg) => {
                let eos = tokenizer.token_id("</s>").ok_or_else(|| {
                    Error::InvalidConfig("the NV-Embed tokenizer has no `</s>` token".into())
                })?;
                let model = NvEmbed::load(&cfg, dir, &device, opts.dtype)?;
                let identity = ModelIdentity {
                    name,
                    model_type: "nvembed".into(),
                    path: dir.to_path_buf(),
                    weights_sha256: weights_sha256(dir)?,
                    pooling: Pooling::LatentAttention,
                    max_length: 4096.min(cfg.text.max_position_embeddings),
                    dimension: cfg.text.hidden_size,
                    head_sha256: None,
                    lora_sha256: None,
                };
                (Model::NvEmbed { model, eos }, identity)
            }
            ModelConfig::Bert(cfg) => {
                let st = SentenceTransformersConfig::from_dir(dir)?;
                let mut tensors = load_dir(dir, &device, opts.dtype)?;
                bert::strip_prefix(&mut tensors);
                check_plan(&tensors, &bert::tensor_plan(&cfg), bert::ignorable)?;
                let model = Bert::from_tensors(&cfg, &mut tensors)?;
                let pad = tokenizer.token_id("[PAD]").unwrap_or(0);
                let identity = ModelIdentity {
                    name,
                    model_type: "bert".into(),
                    path: dir.to_path_buf(),
                    weights_sha256: weights_sha256(dir)?,
                    pooling: st.pooling,
                    max_length: st.max_seq_length.min(cfg.max_position_embeddings),
                    dimension: cfg.hidden_size,
                    head_sha256: None,
                    lora_sha256: None,
                };
                let model = Model::Bert {
                    model,
                    lora: None,
                    pooling: st.pooling,
                    normalize: st.normalize,
                    pad,
                    head: None,
                };
                (model, identity)
            }
        };
        Ok(Self {
            model,
            tokenizer,
            identity,
            device,
        })
    }

    /// A reference to this model as a head's backbone.
    pub fn backbone_ref(&self) -> BackboneRef {
        BackboneRef {
            name: self.identity.name.clone(),
            weights_sha256: self.identity.weights_sha256.clone(),
        }
    }

    /// Attaches a latent-attention head (BERT backbones only); the head's backbone hash and
    /// width must match.
    pub fn with_head(mut self, head: LatentHead) -> Result<Self> {
        if head.backbone().weights_sha256 != self.identity.weights_sha256 {
            return Err(Error::InvalidConfig(format!(
                "the head was made for backbone `{}` ({}), not this model ({})",
                head.backbone().name,
                head.backbone().weights_sha256,
                self.identity.weights_sha256
            )));
        }
        if head.config().latent_attention.latent_dim != self.identity.dimension {
            return Err(Error::InvalidConfig(format!(
                "the head's width {} differs from the backbone's {}",
                head.config().latent_attention.latent_dim,
                self.identity.dimension
            )));
        }
        match &mut self.model {
            Model::Bert { head: slot, .. } => {
                self.identity.head_sha256 = Some(head.tensors_sha256()?);
                self.identity.pooling = Pooling::LatentAttention;
                *slot = Some(head);
                Ok(self)
            }
            Model::NvEmbed { .. } => Err(Error::InvalidArgument(
                "NV-Embed has its own latent-attention layer; heads attach to sentence encoders"
                    .into(),
            )),
        }
    }

    /// Merges LoRA adapters into the backbone (BERT only; the adapters' backbone hash and
    /// shape must match). Replaces adapters attached before.
    pub fn with_lora(mut self, adapters: LoraAdapters) -> Result<Self> {
        let backbone = &adapters.config().backbone;
        if backbone.weights_sha256 != self.identity.weights_sha256 {
            return Err(Error::InvalidConfig(format!(
                "the LoRA adapters were made for backbone `{}` ({}), not this model ({})",
                backbone.name, backbone.weights_sha256, self.identity.weights_sha256
            )));
        }
        match &mut self.model {
            Model::Bert { model, lora, .. } => {
                let base = match lora.take() {
                    Some(pair) => pair.0,
                    None => model.clone(),
                };
                *model = adapters.merge_into(&base)?;
                self.identity.lora_sha256 = Some(adapters.tensors_sha256()?);
                *lora = Some(Box::new((base, adapters)));
                Ok(self)
            }
            Model::NvEmbed { .. } => Err(Error::InvalidArgument(
                "LoRA adapters attach to sentence encoders (BERT)".into(),
            )),
        }
    }

    /// The BERT backbone without adapters (for training), if the model is a BERT encoder.
    pub fn base_bert(&self) -> Option<&Bert> {
        match &self.model {
            Model::Bert {
                lora: Some(pair), ..
            } => Some(&pair.0),
            Model::Bert { model, .. } => Some(model),
            Model::NvEmbed { .. } => None,
        }
    }

    /// The attached LoRA adapters, if any.
    pub fn lora(&self) -> Option<&LoraAdapters> {
        match &self.model {
            Model::Bert {
                lora: Some(pair), ..
            } => Some(&pair.1),
            _ => None,
        }
    }

    /// The attached head, if any.
    pub fn head(&self) -> Option<&LatentHead> {
        match &self.model {
            Model::Bert { head, .. } => head.as_ref(),
            Model::NvEmbed { .. } => None,
        }
    }

    /// The model's identity.
    pub fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    /// Vector dimension.
    pub fn dimension(&self) -> usize {
        self.identity.dimension
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn max_len(&self, opts: &EmbedOptions) -> Result<usize> {
        let limit = match &self.model {
            Model::Bert { model, .. } => model.max_positions(),
            Model::NvEmbed { model, .. } => model.config().text.max_position_embeddings,
        };
        let m = opts.max_length.unwrap_or(self.identity.max_length);
        if m < 2 || m > limit {
            return Err(Error::InvalidArgument(format!(
                "max_length {m} is outside 2..={limit}"
            )));
        }
        Ok(m)
    }

    /// Token ids of each input as the model sees it (instruction, special tokens,
    /// truncation applied; no padding), and the number of leading positions excluded from
    /// pooling.
    pub fn tokenize<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        opts: &EmbedOptions,
    ) -> Result<(Vec<Vec<u32>>, usize)> {
        let max_len = self.max_len(opts)?;
        match &self.model {
            Model::NvEmbed { model, .. } => {
                let prefix = match &opts.instruction {
                    Some(i) => i.prefix()?,
                    None => String::new(),
                };
                let skip = if model.config().is_mask_instruction && !prefix.is_empty() {
                    self.tokenizer.count(&prefix)?
                } else {
                    0
                };
                let eos = if model.config().add_eos { "</s>" } else { "" };
                let inputs: Vec<String> = texts
                    .iter()
                    .map(|t| format!("{prefix}{}{eos}", t.as_ref()))
                    .collect();
                Ok((self.tokenizer.encode_all(&inputs, max_len)?, skip))
            }
            Model::Bert { .. } => Ok((self.tokenizer.encode_all(texts, max_len)?, 0)),
        }
    }

    /// Embeds `texts`, returning one vector per text in input order. Inputs are sorted by
    /// length into batches of `opts.batch_size`, so padding is minimal; padding never changes
    /// a vector.
    pub fn embed<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        opts: &EmbedOptions,
    ) -> Result<Vec<Vec<f32>>> {
        if opts.batch_size == 0 {
            return Err(Error::InvalidArgument(
                "batch_size must be at least 1".into(),
            ));
        }
        let (ids, skip) = self.tokenize(texts, opts)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(opts.batch_size) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let vectors = self.forward_batch(&batch, skip)?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Embeds one batch of token ids as given (no sorting), returning one vector per row.
    pub fn forward_batch(&self, batch: &[&[u32]], pool_start: usize) -> Result<Vec<Vec<f32>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        if let Model::Bert {
            model,
            pooling,
            normalize,
            head,
            ..
        } = &self.model
            && model.supports_packed()
        {
            // Fast path: packed sequences, no padded work at all.
            let (states, spans) = model.forward_packed(batch)?;
            let (pooled, norm) = match (head, pooling) {
                (Some(h), _) => {
                    let x = if h.is_identity() {
                        states
                    } else {
                        h.transform(&states.unsqueeze(0)?)?.squeeze(0)?
                    };
                    let norm = h.config().latent_attention.output_normalize;
                    (packed_mean(&x, &spans, pool_start)?, norm)
                }
                (None, Pooling::Cls) => {
                    let starts: Vec<u32> = spans.iter().map(|&(s, _)| s as u32).collect();
                    let idx = Tensor::from_vec(starts, spans.len(), &self.device)?;
                    (states.index_select(&idx, 0)?, *normalize)
                }
                (None, _) => (packed_mean(&states, &spans, pool_start)?, *normalize),
            };
            let pooled = if norm { l2_normalize(&pooled)? } else { pooled };
            return Ok(pooled.to_dtype(DType::F32)?.to_vec2::<f32>()?);
        }
        let (ids, mask, pool_mask) = self.pad(batch, pool_start)?;
        let pooled = match &self.model {
            Model::NvEmbed { model, .. } => model.forward(&ids, &mask, &pool_mask)?,
            Model::Bert {
                model,
                pooling,
                normalize,
                head,
                ..
            } => {
                let states = model.forward(&ids, &mask)?;
                match head {
                    Some(h) => h.forward_inference(&states, &pool_mask)?,
                    None => {
                        let p = match pooling {
                            Pooling::Cls => first_token(&states)?,
                            _ => masked_mean(&states, &pool_mask)?,
                        };
                        if *normalize { l2_normalize(&p)? } else { p }
                    }
                }
            }
        };
        Ok(pooled.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }

    fn pad(&self, batch: &[&[u32]], pool_start: usize) -> Result<(Tensor, Tensor, Tensor)> {
        let pad_id = match &self.model {
            Model::NvEmbed { eos, .. } => *eos,
            Model::Bert { pad, .. } => *pad,
        };
        let l = batch.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let b = batch.len();
        let mut ids = Vec::with_capacity(b * l);
        let mut mask = Vec::with_capacity(b * l);
        let mut pool = Vec::with_capacity(b * l);
        for row in batch {
            for j in 0..l {
                let real = j < row.len();
                ids.push(if real { row[j] } else { pad_id });
                mask.push(if real { 1f32 } else { 0.0 });
                pool.push(if real && j >= pool_start { 1f32 } else { 0.0 });
            }
        }
        let d = &self.device;
        Ok((
            Tensor::from_vec(ids, (b, l), d)?,
            Tensor::from_vec(mask, (b, l), d)?,
            Tensor::from_vec(pool, (b, l), d)?,
        ))
    }

    /// The backbone's final token states of each input (padding removed), e.g. to cache them
    /// for training a head; `pool_start` marks instruction tokens.
    pub fn token_states<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        opts: &EmbedOptions,
    ) -> Result<Vec<TokenStates>> {
        if opts.batch_size == 0 {
            return Err(Error::InvalidArgument(
                "batch_size must be at least 1".into(),
            ));
        }
        let (ids, skip) = self.tokenize(texts, opts)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out: Vec<Option<TokenStates>> = vec![None; ids.len()];
        for chunk in order.chunks(opts.batch_size) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            if let Model::Bert { model, .. } = &self.model
                && model.supports_packed()
            {
                let (states, spans) = model.forward_packed(&batch)?;
                for (&(start, len), &i) in spans.iter().zip(chunk) {
                    out[i] = Some(TokenStates {
                        states: states.narrow(0, start, len)?.contiguous()?,
                        pool_start: skip,
                    });
                }
                continue;
            }
            let (t, mask, _) = self.pad(&batch, skip)?;
            let states = match &self.model {
                Model::NvEmbed { model, .. } => model.token_states(&t, &mask)?,
                Model::Bert { model, .. } => model.forward(&t, &mask)?,
            }
            .to_dtype(DType::F32)?;
            for (row, &i) in chunk.iter().enumerate() {
                let len = ids[i].len();
                out[i] = Some(TokenStates {
                    states: states.get(row)?.narrow(0, 0, len)?.contiguous()?,
                    pool_start: skip,
                });
            }
        }
        out.into_iter()
            .map(|o| o.ok_or_else(|| Error::Internal("a row of the batch was not computed".into())))
            .collect()
    }
}

/// Compile-time check that an embedder can be shared between threads.
#[allow(dead_code)]
fn assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Embedder>();
}
