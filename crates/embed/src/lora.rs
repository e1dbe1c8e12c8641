//! LoRA adapters on a BERT encoder's attention projections, as NV-Embed tunes its backbone
//! (rank 16, alpha 32, dropout 0.1 by default).
//!
//! Each adapted projection `W` (`[out, in]`) gains `scale · B · A` with `A` `[rank, in]`
//! (small seeded random values), `B` `[out, rank]` (zeros, so a fresh adapter changes nothing)
//! and `scale = alpha / rank`; during training, dropout is applied to the adapter's input only.
//! Stored beside a head as `lora.json` (configuration, backbone reference) and
//! `lora.safetensors` (names as PEFT writes them, without its `base_model.model.` prefix). For
//! inference the adapters are merged into the base weights ([`LoraAdapters::merge_into`]), so
//! the fast packed path runs unchanged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::adapted_linear::{Adapters, Dropout, adapted_linear};
use crate::bert::Bert;
use crate::error::{Error, Result, read_json};
use crate::frozen::FrozenLinear;
use crate::head::{BackboneRef, SplitMix64};
use crate::weights::{check_plan, load_f32_file, save_with_config, take, to_varmap};

/// File name of the adapters' configuration.
pub const LORA_CONFIG_FILE: &str = "lora.json";
/// File name of the adapters' tensors.
pub const LORA_WEIGHTS_FILE: &str = "lora.safetensors";
const FORMAT_VERSION: u32 = 1;

/// An attention projection of a BERT layer that can carry an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraTarget {
    /// The query projection.
    Query,
    /// The key projection.
    Key,
    /// The value projection.
    Value,
    /// The attention output projection.
    Output,
}

impl LoraTarget {
    /// Every target, in storage order.
    pub const ALL: [LoraTarget; 4] = [
        LoraTarget::Query,
        LoraTarget::Key,
        LoraTarget::Value,
        LoraTarget::Output,
    ];

    fn index(self) -> usize {
        match self {
            LoraTarget::Query => 0,
            LoraTarget::Key => 1,
            LoraTarget::Value => 2,
            LoraTarget::Output => 3,
        }
    }

    /// The projection's checkpoint name within layer `layer`.
    fn module(self, layer: usize) -> String {
        let p = format!("encoder.layer.{layer}.attention");
        match self {
            LoraTarget::Query => format!("{p}.self.query"),
            LoraTarget::Key => format!("{p}.self.key"),
            LoraTarget::Value => format!("{p}.self.value"),
            LoraTarget::Output => format!("{p}.output.dense"),
        }
    }
}

/// A set of adapters' `lora.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// File format version.
    pub format_version: u32,
    /// The backbone the adapters belong to.
    pub backbone: BackboneRef,
    /// Rank of each adapter.
    pub rank: usize,
    /// Scaling numerator: the update is `alpha / rank · B · A`.
    pub alpha: f64,
    /// Dropout probability on the adapters' input during training.
    pub dropout: f64,
    /// The adapted projections of every adapted layer.
    pub targets: Vec<LoraTarget>,
    /// The first adapted layer: layers `first_layer..num_layers` carry adapters, the ones
    /// below none (0, the default of files without the field: every layer). Training caches
    /// the output of the unadapted layers instead of running them forward and backward in
    /// every step.
    #[serde(default)]
    pub first_layer: usize,
    /// The backbone's layer count.
    pub num_layers: usize,
    /// The backbone's width.
    pub hidden_size: usize,
}

impl LoraConfig {
    /// NV-Embed's settings (rank 16, alpha 32, dropout 0.1) on the query, key, value and output
    /// projections of every layer of `bert`.
    pub fn new(bert: &Bert, backbone: BackboneRef) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            backbone,
            rank: 16,
            alpha: 32.0,
            dropout: 0.1,
            targets: LoraTarget::ALL.to_vec(),
            first_layer: 0,
            num_layers: bert.num_layers(),
            hidden_size: bert.hidden_size(),
        }
    }

    /// The factor `alpha / rank` applied to `B · A`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.format_version != FORMAT_VERSION {
            return bad(format!(
                "unsupported LoRA format_version {}",
                self.format_version
            ));
        }
        if self.rank > self.hidden_size {
            return bad(format!(
                "the LoRA rank must be at most the width {}, not {}",
                self.hidden_size, self.rank
            ));
        }
        if self.first_layer >= self.num_layers {
            return bad(format!(
                "the first adapted layer must be below the layer count {}, not {}",
                self.num_layers, self.first_layer
            ));
        }
        Self::check_hyperparameters(self.rank, self.alpha, self.dropout)?;
        let mut seen = std::collections::HashSet::new();
        if self.targets.is_empty() || !self.targets.iter().all(|t| seen.insert(*t)) {
            return bad("LoRA targets must be non-empty and distinct".into());
        }
        Ok(())
    }

    /// Checks a rank, alpha and dropout without a backbone at hand (the rank's upper bound,
    /// the backbone's width, is checked by [`LoraConfig::validate`]).
    pub fn check_hyperparameters(rank: usize, alpha: f64, dropout: f64) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if rank == 0 {
            return bad("the LoRA rank must be at least 1".into());
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return bad(format!("the LoRA alpha must be positive, not {alpha}"));
        }
        if !(0.0..1.0).contains(&dropout) {
            return bad(format!("the LoRA dropout must be in [0, 1), not {dropout}"));
        }
        Ok(())
    }

    /// The tensors of the adapters (names and shapes).
    pub fn tensor_plan(&self) -> Vec<(String, Vec<usize>)> {
        let (d, r) = (self.hidden_size, self.rank);
        let mut plan = Vec::new();
        for layer in self.first_layer..self.num_layers {
            for t in &self.targets {
                let m = t.module(layer);
                plan.push((format!("{m}.lora_A.weight"), vec![r, d]));
                plan.push((format!("{m}.lora_B.weight"), vec![d, r]));
            }
        }
        plan
    }
}

/// One adapter: `A` `[rank, in]` and `B` `[out, rank]`.
#[derive(Debug, Clone)]
struct Adapter {
    a: Tensor,
    b: Tensor,
}

/// LoRA adapters for every layer of a BERT encoder.
#[derive(Debug, Clone)]
pub struct LoraAdapters {
    config: LoraConfig,
    /// Per layer, per [`LoraTarget::index`].
    layers: Vec<[Option<Adapter>; 4]>,
}

impl LoraAdapters {
    /// Fresh adapters: `A` uniform in ±1/sqrt(in) (PEFT's Kaiming init), seeded; `B` zero, so
    /// the backbone computes exactly what it did without them.
    pub fn new(config: LoraConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = SplitMix64(seed);
        let bound = 1.0 / (config.hidden_size as f64).sqrt();
        let mut tensors = HashMap::new();
        for (name, shape) in config.tensor_plan() {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with("lora_A.weight") {
                (0..n)
                    .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                    .collect()
            } else {
                vec![0.0; n]
            };
            tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
        }
        Self::from_tensors(config, tensors)
    }

    fn from_tensors(config: LoraConfig, mut tensors: HashMap<String, Tensor>) -> Result<Self> {
        config.validate()?;
        check_plan(&tensors, &config.tensor_plan(), |_| false)?;
        let mut layers = Vec::with_capacity(config.num_layers);
        for layer in 0..config.num_layers {
            let mut slots: [Option<Adapter>; 4] = Default::default();
            if layer < config.first_layer {
                layers.push(slots);
                continue;
            }
            for t in &config.targets {
                let m = t.module(layer);
                slots[t.index()] = Some(Adapter {
                    a: take(&mut tensors, &format!("{m}.lora_A.weight"))?,
                    b: take(&mut tensors, &format!("{m}.lora_B.weight"))?,
                });
            }
            layers.push(slots);
        }
        Ok(Self { config, layers })
    }

    pub(crate) fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (layer, slots) in self.layers.iter().enumerate() {
            for t in LoraTarget::ALL {
                if let Some(ad) = &slots[t.index()] {
                    let m = t.module(layer);
                    out.push((format!("{m}.lora_A.weight"), ad.a.clone()));
                    out.push((format!("{m}.lora_B.weight"), ad.b.clone()));
                }
            }
        }
        out
    }

    /// Loads adapters from a directory holding `lora.json` and `lora.safetensors`.
    pub fn load(dir: &Path) -> Result<Self> {
        let config: LoraConfig = read_json(&dir.join(LORA_CONFIG_FILE))?;
        let tensors = load_f32_file(&dir.join(LORA_WEIGHTS_FILE))?;
        Self::from_tensors(config, tensors)
    }

    /// Writes `lora.json` and `lora.safetensors` into `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_with_config(
            dir,
            LORA_WEIGHTS_FILE,
            self.named_tensors(),
            LORA_CONFIG_FILE,
            &self.config,
        )
    }

    /// sha256 (hex) over the adapters' tensors: each name, then its f32 values little-endian,
    /// in name order.
    pub fn tensors_sha256(&self) -> Result<String> {
        crate::head::named_tensors_sha256(self.named_tensors())
    }

    /// The adapters' configuration.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// A copy whose tensors are trainable variables held by the returned [`VarMap`] (names as
    /// in `lora.safetensors`).
    pub fn trainable(&self, device: &Device) -> Result<(VarMap, LoraAdapters)> {
        let (varmap, tensors) = to_varmap(self.named_tensors(), device)?;
        Ok((varmap, Self::from_tensors(self.config.clone(), tensors)?))
    }

    /// The merged update `scale · B · A` of one projection, `[out, in]`.
    fn delta(&self, layer: usize, target: LoraTarget) -> Result<Option<Tensor>> {
        match self
            .layers
            .get(layer)
            .and_then(|s| s[target.index()].as_ref())
        {
            Some(ad) => Ok(Some((ad.b.matmul(&ad.a)? * self.config.scale())?)),
            None => Ok(None),
        }
    }

    /// The backbone `bert` with every adapter merged into its weights (`W + scale · B · A`),
    /// for the fast inference path.
    pub fn merge_into(&self, bert: &Bert) -> Result<Bert> {
        self.check_shape(bert)?;
        bert.with_attention_deltas(|layer| {
            let mut qkv = Vec::with_capacity(3);
            let mut any = false;
            for t in [LoraTarget::Query, LoraTarget::Key, LoraTarget::Value] {
                let d = match self.delta(layer, t)? {
                    Some(d) => {
                        any = true;
                        d
                    }
                    None => Tensor::zeros(
                        (self.config.hidden_size, self.config.hidden_size),
                        DType::F32,
                        &Device::Cpu,
                    )?,
                };
                qkv.push(d);
            }
            // Stored layout is `[in, out]`: transpose each `[out, in]` update.
            let qkv = if any {
                Some(Tensor::cat(&qkv, 0)?.t()?.detach())
            } else {
                None
            };
            let out = self
                .delta(layer, LoraTarget::Output)?
                .map(|d| Ok::<_, Error>(d.t()?.detach()))
                .transpose()?;
            Ok((qkv, out))
        })
    }

    /// Errors unless the adapters fit `bert`'s shape.
    pub fn check_shape(&self, bert: &Bert) -> Result<()> {
        if self.config.num_layers != bert.num_layers()
            || self.config.hidden_size != bert.hidden_size()
        {
            return Err(Error::InvalidConfig(format!(
                "LoRA adapters for {} layers of width {} do not fit a backbone of {} layers of \
                 width {}",
                self.config.num_layers,
                self.config.hidden_size,
                bert.num_layers(),
                bert.hidden_size()
            )));
        }
        Ok(())
    }

    /// The adapter's contribution `scale · dropout(x) · Aᵀ · Bᵀ` for inputs `x` `[n, in]` of
    /// one projection, or `None` where it has no adapter. `dropout` (training) draws the
    /// dropout mask from the generator; `None` is evaluation.
    pub(crate) fn apply(
        &self,
        x: &Tensor,
        layer: usize,
        target: LoraTarget,
        dropout: Option<&mut SplitMix64>,
    ) -> Result<Option<Tensor>> {
        let Some(ad) = self
            .layers
            .get(layer)
            .and_then(|s| s[target.index()].as_ref())
        else {
            return Ok(None);
        };
        let p = self.config.dropout;
        let x = match dropout {
            Some(rng) if p > 0.0 => {
                let keep = 1.0 / (1.0 - p);
                let mask: Vec<f32> = (0..x.elem_count())
                    .map(|_| if rng.uniform() < p { 0.0 } else { keep as f32 })
                    .collect();
                (x * Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?)?
            }
            _ => x.clone(),
        };
        let h = x.matmul(&ad.a.t()?)?.matmul(&ad.b.t()?)?;
        Ok(Some((h * self.config.scale())?))
    }

    /// The frozen projection `linear` of layer `layer` (packed for training) with the adapters
    /// of `targets`, whose updates go to consecutive column ranges of the hidden width, in
    /// order: one op computing what `linear` plus [`LoraAdapters::apply`] of each target
    /// computes, with the same dropout masks drawn from `dropout`. `packed`, for a batch
    /// packed without its padding rows: each row's row in the padded batch, and the padded
    /// batch's row count (the masks are the padded batch's).
    pub(crate) fn adapted(
        &self,
        x: &Tensor,
        layer: usize,
        targets: &[LoraTarget],
        linear: &Arc<FrozenLinear>,
        dropout: Option<&mut SplitMix64>,
        packed: Option<(&Arc<Vec<usize>>, usize)>,
    ) -> Result<Tensor> {
        let d = self.config.hidden_size;
        let p = self.config.dropout;
        let mut rng = dropout.filter(|_| p > 0.0);
        let mut parts = Adapters {
            offsets: Vec::new(),
            a: Vec::new(),
            b: Vec::new(),
            scale: self.config.scale(),
            dropout: None,
        };
        let mut states = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let Some(ad) = self.layers.get(layer).and_then(|s| s[t.index()].as_ref()) else {
                continue;
            };
            parts.offsets.push(i * d);
            parts.a.push(ad.a.clone());
            parts.b.push(ad.b.clone());
            if let Some(rng) = rng.as_deref_mut() {
                states.push(rng.0);
                let draws = match packed {
                    Some((_, rows)) => rows * x.dim(1)?,
                    None => x.elem_count(),
                };
                rng.skip(draws as u64);
            }
        }
        if parts.a.is_empty() {
            return linear.apply(x);
        }
        if rng.is_some() {
            parts.dropout = Some(Dropout {
                p,
                states,
                rows: packed.map(|(rows, _)| rows.clone()),
            });
        }
        adapted_linear(x, linear, parts)
    }

    /// The sum of the adapters' contributions to the stacked query/key/value projection
    /// (`[n, 3d]`), or `None` where none of the three is adapted.
    pub(crate) fn apply_qkv(
        &self,
        x: &Tensor,
        layer: usize,
        mut dropout: Option<&mut SplitMix64>,
    ) -> Result<Option<Tensor>> {
        let mut parts = Vec::with_capacity(3);
        let mut any = false;
        for t in [LoraTarget::Query, LoraTarget::Key, LoraTarget::Value] {
            match self.apply(x, layer, t, dropout.as_deref_mut())? {
                Some(h) => {
                    any = true;
                    parts.push(h);
                }
                None => parts.push(Tensor::zeros(
                    (x.dim(0)?, self.config.hidden_size),
                    x.dtype(),
                    x.device(),
                )?),
            }
        }
        Ok(if any {
            Some(Tensor::cat(&parts, 1)?)
        } else {
            None
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bert::tiny_random;
    use crate::lora_train::pad_ids;
    use latentdb_types::ErrorKind;

    fn backbone() -> BackboneRef {
        BackboneRef {
            name: "tiny".into(),
            weights_sha256: "00".into(),
        }
    }

    /// Adapters whose `B` is random too, so they change the backbone.
    pub(crate) fn random_adapters(bert: &Bert, seed: u64) -> LoraAdapters {
        let mut config = LoraConfig::new(bert, backbone());
        config.rank = 4;
        let fresh = LoraAdapters::new(config.clone(), seed).expect("adapters");
        let mut rng = SplitMix64(seed ^ 0xb);
        let tensors = fresh
            .named_tensors()
            .into_iter()
            .map(|(name, t)| {
                let n = t.elem_count();
                let data: Vec<f32> = (0..n).map(|_| 0.3 * rng.normal() as f32).collect();
                let t = Tensor::from_vec(data, t.shape(), &Device::Cpu).expect("tensor");
                (name, t)
            })
            .collect();
        LoraAdapters::from_tensors(config, tensors).expect("adapters")
    }

    fn inputs() -> (Tensor, Tensor, Vec<Vec<u32>>) {
        let rows = vec![vec![1, 4, 9, 16, 25, 2], vec![3, 8, 2], vec![7, 7, 11, 40]];
        let (ids, mask) = pad_ids(&rows, &Device::Cpu).expect("pad");
        (ids, mask, rows)
    }

    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar::<f32>())
            .expect("difference")
    }

    /// Token states of the real positions only (padding rows differ by construction).
    fn masked(states: &Tensor, mask: &Tensor) -> Tensor {
        states
            .broadcast_mul(&mask.unsqueeze(2).expect("mask"))
            .expect("masked states")
    }

    #[test]
    fn zero_b_leaves_the_backbone_output_unchanged() -> Result<()> {
        let bert = tiny_random(1);
        let adapters = LoraAdapters::new(LoraConfig::new(&bert, backbone()), 5)?;
        let (ids, mask, _) = inputs();
        let base = masked(&bert.forward(&ids, &mask)?, &mask);
        for dropout in [None, Some(9)] {
            let with = masked(&bert.forward_lora(&ids, &mask, &adapters, dropout)?, &mask);
            let diff = max_diff(&base, &with);
            assert!(diff < 1e-5, "dropout {dropout:?}: {diff}");
        }
        let merged = adapters.merge_into(&bert)?;
        let diff = max_diff(&base, &masked(&merged.forward(&ids, &mask)?, &mask));
        assert!(diff < 1e-6, "merged: {diff}");
        Ok(())
    }

    #[test]
    fn the_fused_adapted_projection_draws_the_elementary_paths_masks() -> Result<()> {
        let bert = tiny_random(4);
        let (_vars, adapters) = random_adapters(&bert, 6).trainable(&Device::Cpu)?;
        let d = bert.hidden_size();
        let m = 45;
        let x = candle_core::Var::from_vec(
            (0..m * d)
                .map(|i| ((i * 5) % 19) as f32 * 0.1 - 0.9)
                .collect(),
            (m, d),
            &Device::Cpu,
        )?;
        let w = Tensor::from_vec(
            (0..d * 3 * d)
                .map(|i| (i as f32 * 0.13).sin() * 0.2)
                .collect(),
            (d, 3 * d),
            &Device::Cpu,
        )?;
        let bias = Tensor::from_vec(
            (0..3 * d).map(|i| i as f32 * 0.01).collect(),
            3 * d,
            &Device::Cpu,
        )?;
        let linear = Arc::new(FrozenLinear::new(&w, &bias)?);
        let qkv = [LoraTarget::Query, LoraTarget::Key, LoraTarget::Value];
        for seed in [None, Some(21)] {
            let (mut r1, mut r2) = (seed.map(SplitMix64), seed.map(SplitMix64));
            let got = adapters.adapted(x.as_tensor(), 1, &qkv, &linear, r1.as_mut(), None)?;
            let delta = adapters
                .apply_qkv(x.as_tensor(), 1, r2.as_mut())?
                .expect("adapted");
            let plain = (x.as_tensor().matmul(&w)?.broadcast_add(&bias)? + delta)?;
            let diff = max_diff(&plain, &got);
            assert!(diff < 1e-4, "seed {seed:?}: {diff}");
            // The generator ends where the elementary path leaves it.
            assert_eq!(r1.map(|r| r.0), r2.map(|r| r.0));
            let gp = plain.sqr()?.sum_all()?.backward()?;
            let gg = got.sqr()?.sum_all()?.backward()?;
            let mut checked = vec![x.as_tensor().clone()];
            checked.extend(
                adapters
                    .named_tensors()
                    .into_iter()
                    .filter(|(name, _)| name.starts_with("encoder.layer.1.attention.self"))
                    .map(|(_, t)| t),
            );
            assert_eq!(checked.len(), 7);
            assert_same_gradients(&gp, &gg, &checked, 1e-4)?;
        }
        Ok(())
    }

    /// Asserts that `want` and `got` give each of `tensors` the same gradient, within
    /// `tolerance` relative to the largest value (at least 1).
    pub(crate) fn assert_same_gradients(
        want: &candle_core::backprop::GradStore,
        got: &candle_core::backprop::GradStore,
        tensors: &[Tensor],
        tolerance: f32,
    ) -> Result<()> {
        for (i, t) in tensors.iter().enumerate() {
            let (a, b) = (
                want.get(t).expect("reference"),
                got.get(t).expect("gradient"),
            );
            let scale = a.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
            let diff = max_diff(a, b);
            assert!(
                diff < tolerance * scale,
                "tensor {i}: gradient {diff} of {scale}"
            );
        }
        Ok(())
    }

    #[test]
    fn merged_inference_equals_the_unmerged_forward_in_eval_mode() -> Result<()> {
        let bert = tiny_random(2);
        let adapters = random_adapters(&bert, 3);
        let (ids, mask, rows) = inputs();
        let base = masked(&bert.forward(&ids, &mask)?, &mask);
        let unmerged = bert.forward_lora(&ids, &mask, &adapters, None)?;
        assert!(
            max_diff(&base, &masked(&unmerged, &mask)) > 1e-2,
            "the adapters must change the output"
        );
        let merged = adapters.merge_into(&bert)?;
        let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let (packed, spans) = merged.forward_packed(&refs)?;
        for (row, &(start, len)) in spans.iter().enumerate() {
            let a = unmerged.get(row)?.narrow(0, 0, len)?;
            let b = packed.narrow(0, start, len)?;
            let diff = max_diff(&a, &b);
            assert!(diff < 1e-4, "row {row}: {diff}");
        }
        // Training mode draws dropout: the output moves, reproducibly per seed.
        let t1 = bert.forward_lora(&ids, &mask, &adapters, Some(1))?;
        let t1b = bert.forward_lora(&ids, &mask, &adapters, Some(1))?;
        assert!(max_diff(&masked(&t1, &mask), &masked(&unmerged, &mask)) > 1e-4);
        assert!(max_diff(&t1, &t1b) < 1e-7);
        Ok(())
    }

    #[test]
    fn adapters_save_and_load_identically() -> Result<()> {
        let bert = tiny_random(4);
        let adapters = random_adapters(&bert, 6);
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        adapters.save(dir.path())?;
        let back = LoraAdapters::load(dir.path())?;
        assert_eq!(back.config(), adapters.config());
        assert_eq!(back.tensors_sha256()?, adapters.tensors_sha256()?);
        let (ids, mask, _) = inputs();
        let a = adapters.merge_into(&bert)?.forward(&ids, &mask)?;
        let b = back.merge_into(&bert)?.forward(&ids, &mask)?;
        assert!(max_diff(&a, &b) == 0.0);
        Ok(())
    }

    #[test]
    fn adapters_on_the_top_layers_only_leave_the_lower_ones_alone() -> Result<()> {
        let bert = tiny_random(7);
        let mut config = LoraConfig::new(&bert, backbone());
        config.first_layer = 1;
        config.rank = 4;
        let top = LoraAdapters::new(config, 8)?;
        let names: Vec<String> = top.named_tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 8);
        assert!(
            names.iter().all(|n| n.starts_with("encoder.layer.1.")),
            "{names:?}"
        );
        // A file written before the field existed reads as adapters on every layer.
        let mut json = serde_json::to_value(LoraConfig::new(&bert, backbone()))
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        json.as_object_mut().map(|o| o.remove("first_layer"));
        let old: LoraConfig =
            serde_json::from_value(json).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        assert_eq!(old.first_layer, 0);
        assert_eq!(old.tensor_plan().len(), 16);
        // Saved, loaded and merged: the packed inference path equals the unmerged forward.
        let random = random_adapters(&bert, 9);
        let tensors = random
            .named_tensors()
            .into_iter()
            .filter(|(n, _)| n.starts_with("encoder.layer.1."))
            .collect();
        let top = LoraAdapters::from_tensors(top.config().clone(), tensors)?;
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        top.save(dir.path())?;
        let back = LoraAdapters::load(dir.path())?;
        assert_eq!(back.config().first_layer, 1);
        let (ids, mask, rows) = inputs();
        let unmerged = bert.forward_lora(&ids, &mask, &back, None)?;
        let base = bert.forward(&ids, &mask)?;
        assert!(max_diff(&masked(&base, &mask), &masked(&unmerged, &mask)) > 1e-2);
        let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let (packed, spans) = back.merge_into(&bert)?.forward_packed(&refs)?;
        // From the frozen layer's packed output, the adapted layer alone gives the same.
        let (frozen, fspans) = bert.forward_packed_layers(&refs, 1)?;
        let d = bert.hidden_size();
        let flat = frozen.flatten_all()?.to_vec1::<f32>()?;
        let per_text: Vec<&[f32]> = fspans
            .iter()
            .map(|&(start, len)| &flat[start * d..(start + len) * d])
            .collect();
        let padded = crate::lora_train::pad_states(&per_text, d)?;
        let from = bert.forward_lora_from(&padded, &mask, 1, &back, None)?;
        for (row, &(start, len)) in spans.iter().enumerate() {
            let want = unmerged.get(row)?.narrow(0, 0, len)?;
            assert!(
                max_diff(&want, &packed.narrow(0, start, len)?) < 1e-4,
                "row {row}"
            );
            assert!(
                max_diff(&want, &from.get(row)?.narrow(0, 0, len)?) < 1e-4,
                "row {row}"
            );
        }
        // Starting below the adapters' first layer, or past the last, is refused.
        let err = bert
            .forward_lora_from(&padded, &mask, 3, &back, None)
            .expect_err("past the last layer");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        let every = random_adapters(&bert, 10);
        let err = bert
            .forward_lora_from(&padded, &mask, 1, &every, None)
            .expect_err("layer 0 is adapted");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        Ok(())
    }

    #[test]
    fn bad_configurations_and_shapes_are_errors() -> Result<()> {
        let bert = tiny_random(5);
        let good = LoraConfig::new(&bert, backbone());
        assert_eq!(good.scale(), 2.0);
        for bad in [
            LoraConfig {
                rank: 0,
                ..good.clone()
            },
            LoraConfig {
                alpha: -1.0,
                ..good.clone()
            },
            LoraConfig {
                dropout: 1.0,
                ..good.clone()
            },
            LoraConfig {
                targets: vec![LoraTarget::Key, LoraTarget::Key],
                ..good.clone()
            },
            LoraConfig {
                first_layer: 2,
                ..good.clone()
            },
        ] {
            let err = LoraAdapters::new(bad, 0).expect_err("a bad configuration");
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        }
        let wide = LoraAdapters::new(
            LoraConfig {
                num_layers: 3,
                ..good
            },
            0,
        )?;
        let err = wide
            .merge_into(&bert)
            .expect_err("more layers than the backbone");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        let (ids, mask, _) = inputs();
        let err = bert
            .forward_lora(&ids, &mask, &wide, None)
            .expect_err("more layers than the backbone");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        Ok(())
    }
}
