//! A BERT encoder (the backbone of sentence-transformers models such as all-MiniLM-L6-v2).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use candle_core::{DType, Tensor};

use crate::attention_train;
use crate::config::BertConfig;
use crate::error::{Error, Result};
use crate::frozen::{FrozenLinear, frozen_matmul};
use crate::fused_ops;
use crate::head::SplitMix64;
use crate::kernels;
use crate::lora::{LoraAdapters, LoraTarget};
use crate::packed_gemm::{self, PackedWeights};
use crate::weights::take;

#[derive(Debug, Clone)]
struct Layer {
    /// Query, key and value projections stacked and transposed: `[d, 3d]`, bias `[3d]`.
    qkv_w: Tensor,
    qkv_b: Tensor,
    out_w: Tensor,
    out_b: Tensor,
    ln1_w: Tensor,
    ln1_b: Tensor,
    inter_w: Tensor,
    inter_b: Tensor,
    ffn_out_w: Tensor,
    ffn_out_b: Tensor,
    ln2_w: Tensor,
    ln2_b: Tensor,
    /// The weights packed for [`Bert::forward_packed`], made on its first call (and dropped by
    /// [`Bert::with_attention_deltas`], which changes them).
    packed: OnceLock<Arc<PackedLayer>>,
    /// The projections packed for the training forward and backward ([`FrozenLinear`]),
    /// made on the first training step (and dropped with `packed`).
    frozen: OnceLock<Arc<FrozenLayer>>,
}

/// A layer's four projections packed for training (the base weights are frozen).
#[derive(Debug)]
struct FrozenLayer {
    qkv: Arc<FrozenLinear>,
    out: Arc<FrozenLinear>,
    up: Arc<FrozenLinear>,
    down: Arc<FrozenLinear>,
}

/// A layer's weights packed for the CPU inference path.
#[derive(Debug)]
struct PackedLayer {
    /// Query, key and value projections with their biases.
    qkv: PackedWeights,
    /// Attention output projection (its bias is applied with the LayerNorm).
    out: PackedWeights,
    /// Intermediate projection with its bias (GELU follows).
    up: PackedWeights,
    /// Feed-forward output projection (its bias is applied with the LayerNorm).
    down: PackedWeights,
    /// `[3, d]`: attention output bias, LayerNorm weight, LayerNorm bias.
    post_attn: Vec<f32>,
    /// `[3, d]`: feed-forward output bias, LayerNorm weight, LayerNorm bias.
    post_ffn: Vec<f32>,
}

/// The values of `parts` one after another (the fused LayerNorm kernel's parameters).
fn concat(parts: &[&Tensor]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for t in parts {
        out.extend(t.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Packs `w` (`[k, n]`) with `bias` (`[n]`), or a zero bias.
fn pack(w: &Tensor, bias: Option<&Tensor>) -> Result<PackedWeights> {
    let (k, n) = w.dims2()?;
    let data = w.flatten_all()?.to_vec1::<f32>()?;
    let bias = match bias {
        Some(b) => b.to_vec1::<f32>()?,
        None => vec![0.0; n],
    };
    if bias.len() != n {
        return Err(Error::InvalidArgument(format!(
            "a bias of {} for a projection of width {n}",
            bias.len()
        )));
    }
    Ok(PackedWeights::new(&data, &bias, k, n))
}

impl Layer {
    fn packed(&self) -> Result<Arc<PackedLayer>> {
        if let Some(p) = self.packed.get() {
            return Ok(p.clone());
        }
        let packed = Arc::new(PackedLayer {
            qkv: pack(&self.qkv_w, Some(&self.qkv_b))?,
            out: pack(&self.out_w, None)?,
            up: pack(&self.inter_w, Some(&self.inter_b))?,
            down: pack(&self.ffn_out_w, None)?,
            post_attn: concat(&[&self.out_b, &self.ln1_w, &self.ln1_b])?,
            post_ffn: concat(&[&self.ffn_out_b, &self.ln2_w, &self.ln2_b])?,
        });
        // Two threads may pack at once; either result is the same.
        Ok(self.packed.get_or_init(|| packed).clone())
    }

    fn frozen(&self) -> Result<Arc<FrozenLayer>> {
        if let Some(f) = self.frozen.get() {
            return Ok(f.clone());
        }
        let linear = |w: &Tensor, b: &Tensor| FrozenLinear::new(w, b).map(Arc::new);
        let frozen = Arc::new(FrozenLayer {
            qkv: linear(&self.qkv_w, &self.qkv_b)?,
            out: linear(&self.out_w, &self.out_b)?,
            up: linear(&self.inter_w, &self.inter_b)?,
            down: linear(&self.ffn_out_w, &self.ffn_out_b)?,
        });
        Ok(self.frozen.get_or_init(|| frozen).clone())
    }
}

/// The BERT encoder.
#[derive(Debug, Clone)]
pub struct Bert {
    cfg: BertConfig,
    word: Tensor,
    position: Tensor,
    token_type0: Tensor,
    emb_ln_w: Tensor,
    emb_ln_b: Tensor,
    layers: Vec<Layer>,
}

/// The tensors a BERT checkpoint must hold (names without a `bert.` prefix).
pub(crate) fn tensor_plan(cfg: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let d = cfg.hidden_size;
    let f = cfg.intermediate_size;
    let mut plan = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![cfg.vocab_size, d],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![cfg.max_position_embeddings, d],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![cfg.type_vocab_size, d],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![d]),
        ("embeddings.LayerNorm.bias".into(), vec![d]),
    ];
    for i in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{i}");
        for n in ["query", "key", "value"] {
            plan.push((format!("{p}.attention.self.{n}.weight"), vec![d, d]));
            plan.push((format!("{p}.attention.self.{n}.bias"), vec![d]));
        }
        plan.extend([
            (format!("{p}.attention.output.dense.weight"), vec![d, d]),
            (format!("{p}.attention.output.dense.bias"), vec![d]),
            (format!("{p}.attention.output.LayerNorm.weight"), vec![d]),
            (format!("{p}.attention.output.LayerNorm.bias"), vec![d]),
            (format!("{p}.intermediate.dense.weight"), vec![f, d]),
            (format!("{p}.intermediate.dense.bias"), vec![f]),
            (format!("{p}.output.dense.weight"), vec![d, f]),
            (format!("{p}.output.dense.bias"), vec![d]),
            (format!("{p}.output.LayerNorm.weight"), vec![d]),
            (format!("{p}.output.LayerNorm.bias"), vec![d]),
        ]);
    }
    plan
}

/// Strips a `bert.` prefix from checkpoint names (BertForX checkpoints) in place.
pub(crate) fn strip_prefix(tensors: &mut HashMap<String, Tensor>) {
    if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
        let old = std::mem::take(tensors);
        *tensors = old
            .into_iter()
            .map(|(k, v)| match k.strip_prefix("bert.") {
                Some(s) => (s.to_string(), v),
                None => (k, v),
            })
            .collect();
    }
}

/// Tensors a sentence-transformers BERT checkpoint may carry that the encoder does not use.
pub(crate) fn ignorable(name: &str) -> bool {
    name.starts_with("pooler.") || name.starts_with("cls.") || name == "embeddings.position_ids"
}

/// LayerNorm for the generic path: candle's fused kernel where it supports the dtype.
fn ln(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    if x.dtype() == DType::F64 {
        crate::latent_attention::layer_norm_eps(x, w, b, f64::from(eps))
    } else {
        Ok(candle_nn::ops::layer_norm(x, w, b, eps)?)
    }
}

/// LayerNorm in the generic forward: with a backward pass for the input when `trainable` (the
/// weight and bias are the frozen backbone's), else the fastest forward.
fn norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32, trainable: bool) -> Result<Tensor> {
    if trainable {
        fused_ops::layer_norm(x, w, b, f64::from(eps))
    } else {
        ln(x, w, b, eps)
    }
}

impl Bert {
    /// Builds the encoder from checkpoint tensors (after [`strip_prefix`] and the plan check).
    pub(crate) fn from_tensors(
        cfg: &BertConfig,
        tensors: &mut HashMap<String, Tensor>,
    ) -> Result<Self> {
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let mut t = |n: &str| take(tensors, &format!("{p}.{n}"));
            let qkv_w = Tensor::cat(
                &[
                    t("attention.self.query.weight")?,
                    t("attention.self.key.weight")?,
                    t("attention.self.value.weight")?,
                ],
                0,
            )?;
            let qkv_b = Tensor::cat(
                &[
                    t("attention.self.query.bias")?,
                    t("attention.self.key.bias")?,
                    t("attention.self.value.bias")?,
                ],
                0,
            )?;
            let out_b = t("attention.output.dense.bias")?;
            let ln1_w = t("attention.output.LayerNorm.weight")?;
            let ln1_b = t("attention.output.LayerNorm.bias")?;
            let ffn_out_b = t("output.dense.bias")?;
            let ln2_w = t("output.LayerNorm.weight")?;
            let ln2_b = t("output.LayerNorm.bias")?;
            // Weights are stored transposed (`[in, out]`, contiguous): the matrix kernel runs
            // faster on them than on a transposed view.
            let tr = |w: Tensor| -> Result<Tensor> { Ok(w.t()?.contiguous()?) };
            layers.push(Layer {
                qkv_w: tr(qkv_w)?,
                qkv_b,
                out_w: tr(t("attention.output.dense.weight")?)?,
                out_b,
                ln1_w,
                ln1_b,
                inter_w: tr(t("intermediate.dense.weight")?)?,
                inter_b: t("intermediate.dense.bias")?,
                ffn_out_w: tr(t("output.dense.weight")?)?,
                ffn_out_b,
                ln2_w,
                ln2_b,
                packed: OnceLock::new(),
                frozen: OnceLock::new(),
            });
        }
        let token_types = take(tensors, "embeddings.token_type_embeddings.weight")?;
        let token_type0 = token_types.get(0)?;
        let emb_ln_w = take(tensors, "embeddings.LayerNorm.weight")?;
        let emb_ln_b = take(tensors, "embeddings.LayerNorm.bias")?;
        Ok(Self {
            cfg: cfg.clone(),
            word: take(tensors, "embeddings.word_embeddings.weight")?,
            position: take(tensors, "embeddings.position_embeddings.weight")?,
            token_type0,
            emb_ln_w,
            emb_ln_b,
            layers,
        })
    }

    /// The model's width.
    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    /// Number of encoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The longest input the position table allows.
    pub fn max_positions(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    /// Whether [`Bert::forward_packed`] can run (f32 weights on the CPU).
    pub fn supports_packed(&self) -> bool {
        self.word.device().is_cpu() && self.word.dtype() == DType::F32
    }

    /// Final token states of variable-length inputs packed one after another, with no padding:
    /// returns `[total_tokens, d]` and each input's `(start, len)` rows. CPU and f32 only
    /// (see [`Bert::supports_packed`]); uses fused forward-only kernels.
    pub fn forward_packed(&self, batch: &[&[u32]]) -> Result<(Tensor, Vec<(usize, usize)>)> {
        self.forward_packed_layers(batch, self.layers.len())
    }

    /// [`Bert::forward_packed`] through the first `layers` encoder layers only (0: the
    /// embeddings' output): the input of layer `layers`, as [`Bert::forward_lora_from`] takes
    /// it.
    pub fn forward_packed_layers(
        &self,
        batch: &[&[u32]],
        layers: usize,
    ) -> Result<(Tensor, Vec<(usize, usize)>)> {
        if layers > self.layers.len() {
            return Err(Error::InvalidArgument(format!(
                "the backbone has {} layers, not {layers}",
                self.layers.len()
            )));
        }
        let d = self.cfg.hidden_size;
        let nh = self.cfg.num_attention_heads;
        let eps = self.cfg.layer_norm_eps as f32;
        let mut ids = Vec::new();
        let mut pos = Vec::new();
        let mut spans = Vec::with_capacity(batch.len());
        for row in batch {
            if row.is_empty() || row.len() > self.cfg.max_position_embeddings {
                return Err(Error::InvalidArgument(format!(
                    "input of {} tokens is outside 1..={}",
                    row.len(),
                    self.cfg.max_position_embeddings
                )));
            }
            spans.push((ids.len(), row.len()));
            ids.extend_from_slice(row);
            pos.extend(0..row.len() as u32);
        }
        let n = ids.len();
        let device = self.word.device();
        let ids = Tensor::from_vec(ids, n, device)?;
        let pos = Tensor::from_vec(pos, n, device)?;
        let rows = |t: Tensor| t.flatten_all()?.to_vec1::<f32>();
        let words = rows(self.word.index_select(&ids, 0)?)?;
        let positions = rows(self.position.index_select(&pos, 0)?)?;
        let emb = concat(&[&self.token_type0, &self.emb_ln_w, &self.emb_ln_b])?;
        let mut x = kernels::add_layer_norm(&words, &positions, &emb, eps)?;
        for layer in &self.layers[..layers] {
            let p = layer.packed()?;
            let qkv = packed_gemm::matmul(&x, n, &p.qkv);
            let ctx = kernels::packed_attention(&qkv, &spans, nh, d / nh)?;
            let a = packed_gemm::matmul(&ctx, n, &p.out);
            x = kernels::add_layer_norm(&a, &x, &p.post_attn, eps)?;
            let o = packed_gemm::feed_forward(&x, n, &p.up, &p.down);
            x = kernels::add_layer_norm(&o, &x, &p.post_ffn, eps)?;
        }
        Ok((Tensor::from_vec(x, (n, d), device)?, spans))
    }

    /// Final token states `[batch, len, d]` for `ids` `[batch, len]` with padding mask `mask`
    /// `[batch, len]` (1 = real token).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        self.forward_generic(ids, mask, None)?.padded(mask.dims2()?)
    }

    /// [`Bert::forward`] with LoRA adapters applied unmerged, written with differentiable ops
    /// only (elementary LayerNorm and softmax), so gradients reach the adapters when they are
    /// variables ([`LoraAdapters::trainable`]). `dropout_seed` is `Some` in training (the
    /// adapters' input dropout is drawn from it) and `None` for evaluation.
    pub fn forward_lora(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        adapters: &LoraAdapters,
        dropout_seed: Option<u64>,
    ) -> Result<Tensor> {
        self.forward_lora_states(ids, mask, adapters, dropout_seed)?
            .padded(mask.dims2()?)
    }

    /// [`Bert::forward_lora`] leaving the states packed when the batch was packed (the
    /// trainer pools them as they are, without padding rows).
    pub(crate) fn forward_lora_states(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        adapters: &LoraAdapters,
        dropout_seed: Option<u64>,
    ) -> Result<TrainStates> {
        adapters.check_shape(self)?;
        let mut rng = dropout_seed.map(SplitMix64);
        self.forward_generic(ids, mask, Some((adapters, rng.as_mut())))
    }

    /// [`Bert::forward_lora`] from layer `start` on: `states` `[batch, len, d]` are the input
    /// of layer `start` (as [`Bert::forward_packed_layers`] computes them, padded; padding
    /// rows are masked out by `mask` `[batch, len]`). The layers below `start` must carry no
    /// adapter: their output is then a constant that need not be recomputed, or
    /// differentiated, in every training step.
    pub fn forward_lora_from(
        &self,
        states: &Tensor,
        mask: &Tensor,
        start: usize,
        adapters: &LoraAdapters,
        dropout_seed: Option<u64>,
    ) -> Result<Tensor> {
        self.forward_lora_from_states(states, mask, start, adapters, dropout_seed)?
            .padded(mask.dims2()?)
    }

    /// [`Bert::forward_lora_from`] leaving the states packed when the batch was packed.
    pub(crate) fn forward_lora_from_states(
        &self,
        states: &Tensor,
        mask: &Tensor,
        start: usize,
        adapters: &LoraAdapters,
        dropout_seed: Option<u64>,
    ) -> Result<TrainStates> {
        adapters.check_shape(self)?;
        if start > self.layers.len() || start > adapters.config().first_layer {
            return Err(Error::InvalidArgument(format!(
                "cannot start at layer {start}: the backbone has {} layers and the adapters \
                 begin at layer {}",
                self.layers.len(),
                adapters.config().first_layer
            )));
        }
        let (b, l, d) = states.dims3()?;
        if d != self.cfg.hidden_size || mask.dims2()? != (b, l) {
            return Err(Error::InvalidArgument(format!(
                "states [{b}, {l}, {d}] and mask {:?} do not fit a backbone of width {}",
                mask.dims(),
                self.cfg.hidden_size
            )));
        }
        let mut rng = dropout_seed.map(SplitMix64);
        let x = states.reshape((b * l, d))?;
        self.run_layers(x, mask, (b, l), start, Some((adapters, rng.as_mut())))
    }

    fn forward_generic(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        lora: Option<(&LoraAdapters, Option<&mut SplitMix64>)>,
    ) -> Result<TrainStates> {
        let (b, l) = ids.dims2()?;
        if l > self.cfg.max_position_embeddings {
            return Err(Error::InvalidArgument(format!(
                "input of {l} tokens exceeds the model's {} positions",
                self.cfg.max_position_embeddings
            )));
        }
        let eps = self.cfg.layer_norm_eps as f32;
        let d = self.cfg.hidden_size;
        let x = self
            .word
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, l, d))?;
        let pos = self.position.narrow(0, 0, l)?;
        let x = x.broadcast_add(&pos)?.broadcast_add(&self.token_type0)?;
        let x = norm(
            &x.reshape((b * l, d))?,
            &self.emb_ln_w,
            &self.emb_ln_b,
            eps,
            lora.is_some(),
        )?;
        self.run_layers(x, mask, (b, l), 0, lora)
    }

    /// The encoder layers from `start` on, over `x` `[b * l, d]` (differentiable when `lora`
    /// is given): `[b, l, d]`, or the real tokens' rows when the batch was packed.
    fn run_layers(
        &self,
        mut x: Tensor,
        mask: &Tensor,
        (b, l): (usize, usize),
        start: usize,
        lora: Option<(&LoraAdapters, Option<&mut SplitMix64>)>,
    ) -> Result<TrainStates> {
        let d = self.cfg.hidden_size;
        let nh = self.cfg.num_attention_heads;
        let hd = d / nh;
        let eps = self.cfg.layer_norm_eps as f32;
        let (adapters, mut rng) = match lora {
            Some((a, r)) => (Some(a), r),
            None => (None, None),
        };
        // The trainable path needs ops with a backward pass, and no gradients for the frozen
        // base weights.
        let mm = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
            if adapters.is_some() {
                frozen_matmul(x, w)
            } else {
                Ok(x.matmul(w)?)
            }
        };
        let norm =
            |x: &Tensor, w: &Tensor, bias: &Tensor| norm(x, w, bias, eps, adapters.is_some());
        let scale = 1.0 / (hd as f64).sqrt();
        // With adapters on the CPU, the frozen projections run on packed weights (bias fused).
        let packed = adapters.is_some() && self.supports_packed() && !elementary_training();
        // ... and when every sequence's padding is at its end, only the real tokens' rows go
        // through the layers, packed one after another: everything but attention works row by
        // row, and attention is one fused op over each sequence's rows. `rows`: each packed
        // row's row in the padded batch.
        let lens = if packed { prefix_lengths(mask)? } else { None };
        let rows: Option<Arc<Vec<usize>>> = lens.as_ref().map(|lens| {
            Arc::new(
                lens.iter()
                    .enumerate()
                    .flat_map(|(s, &n)| s * l..s * l + n)
                    .collect(),
            )
        });
        if let Some(rows) = &rows {
            x = x.index_select(&row_index(rows.iter().copied())?, 0)?;
        }
        let packing = rows.as_ref().map(|r| (r, b * l));
        let attend = match lens {
            Some(lens) => Attend::Packed(lens),
            None => Attend::Masked(attention_bias(mask, (b, l), x.dtype())?),
        };
        let linear = |x: &Tensor, f: Option<&Arc<FrozenLinear>>, w: &Tensor, b: &Tensor| match f {
            Some(f) => f.apply(x),
            None => Ok(mm(x, w)?.broadcast_add(b)?),
        };
        for (i, layer) in self.layers.iter().enumerate().skip(start) {
            let frozen = if packed { Some(layer.frozen()?) } else { None };
            let frozen = frozen.as_deref();
            let qkv = match (frozen, adapters) {
                // The packed projection and its adapters as one op.
                (Some(f), Some(ad)) => {
                    ad.adapted(&x, i, &QKV, &f.qkv, rng.as_deref_mut(), packing)?
                }
                _ => {
                    let qkv = linear(&x, None, &layer.qkv_w, &layer.qkv_b)?;
                    match adapters
                        .map(|a| a.apply_qkv(&x, i, rng.as_deref_mut()))
                        .transpose()?
                        .flatten()
                    {
                        Some(delta) => (qkv + delta)?,
                        None => qkv,
                    }
                }
            };
            let ctx = match &attend {
                Attend::Packed(lens) => {
                    attention_train::attention_packed(&qkv, lens.clone(), nh, hd)?
                }
                Attend::Masked(bias) => {
                    let qkv = qkv.reshape((b, l, 3, nh, hd))?.permute((2, 0, 3, 1, 4))?; // [3, b, nh, l, hd]
                    let q = (qkv.get(0)? * scale)?.contiguous()?;
                    let k = qkv.get(1)?.contiguous()?;
                    let v = qkv.get(2)?.contiguous()?;
                    let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
                    let p = if adapters.is_some() {
                        fused_ops::softmax_last_dim(&scores)?
                    } else {
                        candle_nn::ops::softmax_last_dim(&scores)?
                    };
                    p.matmul(&v)?.transpose(1, 2)?.reshape((b * l, d))?
                }
            };
            let a = match (frozen, adapters) {
                (Some(f), Some(ad)) => ad.adapted(
                    &ctx,
                    i,
                    &[LoraTarget::Output],
                    &f.out,
                    rng.as_deref_mut(),
                    packing,
                )?,
                _ => {
                    let a = linear(&ctx, None, &layer.out_w, &layer.out_b)?;
                    match adapters
                        .map(|ad| ad.apply(&ctx, i, LoraTarget::Output, rng.as_deref_mut()))
                        .transpose()?
                        .flatten()
                    {
                        Some(delta) => (a + delta)?,
                        None => a,
                    }
                }
            };
            x = norm(&(a + x)?, &layer.ln1_w, &layer.ln1_b)?;
            let h = linear(&x, frozen.map(|f| &f.up), &layer.inter_w, &layer.inter_b)?;
            let h = if adapters.is_some() {
                fused_ops::gelu_erf(&h)?
            } else {
                h.gelu_erf()?
            };
            let h = linear(
                &h,
                frozen.map(|f| &f.down),
                &layer.ffn_out_w,
                &layer.ffn_out_b,
            )?;
            x = norm(&(h + x)?, &layer.ln2_w, &layer.ln2_b)?;
        }
        Ok(match attend {
            Attend::Packed(lens) => TrainStates::Packed { states: x, lens },
            Attend::Masked(_) => TrainStates::Padded(x.reshape((b, l, d))?),
        })
    }

    /// A copy whose attention projections have updates added, in the stored `[in, out]`
    /// layout: `delta(layer)` gives the stacked query/key/value update `[d, 3d]` and the output
    /// projection's `[d, d]` (either may be absent). The other tensors are shared.
    pub(crate) fn with_attention_deltas(
        &self,
        delta: impl Fn(usize) -> Result<(Option<Tensor>, Option<Tensor>)>,
    ) -> Result<Self> {
        let mut out = self.clone();
        for (i, layer) in out.layers.iter_mut().enumerate() {
            let (qkv, o) = delta(i)?;
            let add = |w: &Tensor, u: Tensor| -> Result<Tensor> {
                let u = u.to_device(w.device())?.to_dtype(w.dtype())?;
                Ok((w + u)?.contiguous()?)
            };
            if let Some(u) = qkv {
                layer.qkv_w = add(&layer.qkv_w, u)?;
            }
            if let Some(u) = o {
                layer.out_w = add(&layer.out_w, u)?;
            }
            layer.packed = OnceLock::new();
            layer.frozen = OnceLock::new();
        }
        Ok(out)
    }
}

#[cfg(test)]
thread_local! {
    /// Set by tests: the training forward on this thread takes candle's elementary ops, the
    /// reference the fused and packed path is checked against.
    static ELEMENTARY_TRAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the training forward must take candle's elementary ops (tests only).
fn elementary_training() -> bool {
    #[cfg(test)]
    {
        ELEMENTARY_TRAINING.with(std::cell::Cell::get)
    }
    #[cfg(not(test))]
    {
        false
    }
}

/// Token states out of the encoder layers.
pub(crate) enum TrainStates {
    /// `[b, l, d]`, padding rows included.
    Padded(Tensor),
    /// Only the real tokens' rows `[rows, d]`, each sequence's after the previous one's.
    Packed {
        /// The rows.
        states: Tensor,
        /// Each sequence's count of rows.
        lens: Arc<Vec<usize>>,
    },
}

impl TrainStates {
    /// The states in the padded layout `[b, l, d]`, zeros in the padding rows (which every
    /// pooling masks out).
    pub(crate) fn padded(self, (b, l): (usize, usize)) -> Result<Tensor> {
        match self {
            Self::Padded(x) => Ok(x),
            Self::Packed { states, lens } => {
                let d = states.dim(1)?;
                let zero = Tensor::zeros((1, d), states.dtype(), states.device())?;
                let x_zero = Tensor::cat(&[&states, &zero], 0)?;
                let rows = states.dim(0)?;
                let mut at = vec![rows; b * l];
                let mut packed = 0;
                for (s, &n) in lens.iter().enumerate() {
                    for j in 0..n {
                        at[s * l + j] = packed;
                        packed += 1;
                    }
                }
                Ok(x_zero
                    .index_select(&row_index(at)?, 0)?
                    .reshape((b, l, d))?)
            }
        }
    }
}

/// How the training forward's attention sees the batch.
enum Attend {
    /// Packed rows: each sequence's real tokens, one after another (their counts).
    Packed(Arc<Vec<usize>>),
    /// Padded rows with candle's elementary ops and this additive mask.
    Masked(Tensor),
}

/// The additive attention mask `[b, 1, 1, l]` of `mask` `[b, l]`: 0 for a token, `-f32::MAX`
/// for padding.
fn attention_bias(mask: &Tensor, (b, l): (usize, usize), dtype: DType) -> Result<Tensor> {
    Ok(mask
        .to_dtype(DType::F32)?
        .affine(f64::from(f32::MAX), -f64::from(f32::MAX))?
        .to_dtype(dtype)?
        .reshape((b, 1, 1, l))?)
}

/// A tensor of row indices for `index_select`.
fn row_index(rows: impl IntoIterator<Item = usize>) -> Result<Tensor> {
    let rows: Vec<u32> = rows
        .into_iter()
        .map(|r| u32::try_from(r).map_err(|_| Error::InvalidArgument(format!("row {r}"))))
        .collect::<Result<_>>()?;
    let n = rows.len();
    Ok(Tensor::from_vec(rows, n, &candle_core::Device::Cpu)?)
}

/// The targets of the stacked query/key/value projection, in its column order.
const QKV: [LoraTarget; 3] = [LoraTarget::Query, LoraTarget::Key, LoraTarget::Value];

/// Each row's count of real tokens when `mask` `[b, l]` marks a prefix of every row (ones, then
/// zeros, at least one one), as padding at the end gives it; `None` otherwise.
fn prefix_lengths(mask: &Tensor) -> Result<Option<Arc<Vec<usize>>>> {
    let rows = mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let mut lens = Vec::with_capacity(rows.len());
    for row in rows {
        let n = row.iter().take_while(|&&m| m != 0.0).count();
        if n == 0 || row[n..].iter().any(|&m| m != 0.0) {
            return Ok(None);
        }
        lens.push(n);
    }
    Ok(Some(Arc::new(lens)))
}

/// A small BERT with random weights for tests (2 layers, width 32, 4 heads, vocabulary 50).
#[cfg(test)]
pub(crate) fn tiny_random(seed: u64) -> Bert {
    let cfg = BertConfig {
        vocab_size: 50,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        hidden_act: "gelu".into(),
        max_position_embeddings: 32,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    };
    let mut rng = SplitMix64(seed);
    let mut tensors = HashMap::new();
    for (name, shape) in tensor_plan(&cfg) {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if name.ends_with("LayerNorm.weight") {
            (0..n).map(|_| 1.0 + 0.1 * rng.normal() as f32).collect()
        } else {
            (0..n).map(|_| 0.2 * rng.normal() as f32).collect()
        };
        let t = Tensor::from_vec(data, shape, &candle_core::Device::Cpu).expect("tensor");
        tensors.insert(name, t);
    }
    Bert::from_tensors(&cfg, &mut tensors).expect("tiny bert")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::lora::tests::{assert_same_gradients, max_diff, random_adapters};

    /// `f` run with the training forward on candle's elementary ops.
    pub(crate) fn elementary<T>(f: impl FnOnce() -> T) -> T {
        ELEMENTARY_TRAINING.with(|e| e.set(true));
        let out = f();
        ELEMENTARY_TRAINING.with(|e| e.set(false));
        out
    }

    #[test]
    fn the_packed_training_forward_matches_the_elementary_one() -> Result<()> {
        let bert = tiny_random(8);
        let (_vars, adapters) = random_adapters(&bert, 9).trainable(&candle_core::Device::Cpu)?;
        // Unequal lengths: padding rows that the packed path leaves out.
        let rows: Vec<Vec<u32>> = vec![vec![1, 5, 9, 2, 7, 7, 3], vec![3, 7], vec![4, 8, 12, 16]];
        let (ids, mask) = crate::lora_train::pad_ids(&rows, &candle_core::Device::Cpu)?;
        let target = Tensor::randn(
            0f32,
            1.0,
            (3, 7, bert.hidden_size()),
            &candle_core::Device::Cpu,
        )?
        .broadcast_mul(&mask.unsqueeze(2)?)?;
        let tensors: Vec<Tensor> = adapters
            .named_tensors()
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        for seed in [None, Some(5)] {
            let fused = bert.forward_lora(&ids, &mask, &adapters, seed)?;
            let plain = elementary(|| bert.forward_lora(&ids, &mask, &adapters, seed))?;
            // Real rows only: the packed path leaves zeros in the padding rows.
            let real = |t: &Tensor| t.broadcast_mul(&mask.unsqueeze(2)?);
            let diff = max_diff(&real(&fused)?, &real(&plain)?);
            assert!(diff < 1e-4, "seed {seed:?}: forward {diff}");
            let gf = (fused * &target)?.sum_all()?.backward()?;
            let gp = (plain * &target)?.sum_all()?.backward()?;
            assert_same_gradients(&gp, &gf, &tensors, 1e-3)?;
        }
        Ok(())
    }

    #[test]
    fn the_differentiable_forward_matches_the_packed_one() -> Result<()> {
        let bert = tiny_random(3);
        let rows: Vec<Vec<u32>> = vec![vec![1, 5, 9, 2], vec![3, 7]];
        let (ids, mask) = crate::lora_train::pad_ids(&rows, &candle_core::Device::Cpu)?;
        let generic = bert.forward(&ids, &mask)?;
        let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let (packed, spans) = bert.forward_packed(&refs)?;
        for (row, &(start, len)) in spans.iter().enumerate() {
            let a = generic.get(row)?.narrow(0, 0, len)?;
            let b = packed.narrow(0, start, len)?;
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "row {row}: {diff}");
        }
        Ok(())
    }
}
