//! Training a [`LatentHead`] and [`LoraAdapters`] on the backbone's attention jointly, with
//! AdamW and the same InfoNCE batches as [`crate::head_train::HeadTrainer`].
//!
//! Each step runs the BERT forward (with the adapters unmerged, differentiable ops only) on the
//! batch's token ids, the head on its token states, and the backward pass through both. The
//! base weights stay plain tensors; only the head's tensors and the adapters are variables.
//!
//! Layers below the adapters' first layer ([`crate::LoraConfig::first_layer`]) are frozen and
//! unadapted, so their output depends on the text alone: it is computed once per text with the
//! fast packed kernels ([`Bert::forward_packed_layers`]) and kept in a [`FrozenCache`] of
//! bounded size, and each step runs forward and backward through the adapted layers only.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, VarMap};

use crate::bert::{Bert, TrainStates};
use crate::error::{Error, Result};
use crate::head::LatentHead;
use crate::head_train::{ContrastiveBatch, StepReport, TrainConfig, adamw, batch_loss, optimise};
use crate::lora::LoraAdapters;

/// Bytes of frozen-layer states a [`LoraTrainer`] keeps at most (f32 token states of the
/// texts it trained on; texts past the budget are recomputed in each step that uses them).
pub const FROZEN_CACHE_BYTES: usize = 1 << 30;

/// The output of the frozen lower layers per text (token ids), up to a byte budget.
#[derive(Debug, Default)]
pub struct FrozenCache {
    states: HashMap<Vec<u32>, Vec<f32>>,
    bytes: usize,
    budget: usize,
    hits: u64,
    misses: u64,
}

impl FrozenCache {
    /// An empty cache that keeps at most `budget` bytes of states.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            ..Self::default()
        }
    }

    /// Texts looked up and found, and not found.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Bytes of states held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Trains a head and LoRA adapters jointly: owns the trainable copies and the AdamW state.
pub struct LoraTrainer {
    bert: Bert,
    /// The adapters' first layer: the layers below it run once per text (see the module
    /// docs), 0 when every layer is adapted or the packed kernels cannot run.
    frozen_layers: usize,
    cache: Mutex<FrozenCache>,
    head_vars: VarMap,
    head: LatentHead,
    lora_vars: VarMap,
    adapters: LoraAdapters,
    opt: AdamW,
    steps: usize,
    seed: u64,
}

impl std::fmt::Debug for LoraTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraTrainer")
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

/// Pads token ids to `[n, max_len]` (pad id 0; padding is masked out) with the mask `[n,
/// max_len]` (f32, 1 = real token).
pub fn pad_ids(items: &[Vec<u32>], device: &Device) -> Result<(Tensor, Tensor)> {
    let l = items.iter().map(Vec::len).max().unwrap_or(0);
    if l == 0 {
        return Err(Error::InvalidArgument(
            "no token ids to embed (every input is empty)".into(),
        ));
    }
    let mut ids = Vec::with_capacity(items.len() * l);
    let mut mask = Vec::with_capacity(items.len() * l);
    for row in items {
        for j in 0..l {
            ids.push(row.get(j).copied().unwrap_or(0));
            mask.push(if j < row.len() { 1f32 } else { 0.0 });
        }
    }
    Ok((
        Tensor::from_vec(ids, (items.len(), l), device)?,
        Tensor::from_vec(mask, (items.len(), l), device)?,
    ))
}

/// Token states of several texts (`rows[i]`: `len_i × d` values) padded with zeros to `[n,
/// max len, d]`, as [`Bert::forward_lora_from`] takes them.
pub(crate) fn pad_states(rows: &[&[f32]], d: usize) -> Result<Tensor> {
    let l = rows.iter().map(|r| r.len() / d.max(1)).max().unwrap_or(0);
    let mut padded = vec![0f32; rows.len() * l * d];
    if l > 0 {
        for (row, out) in rows.iter().zip(padded.chunks_exact_mut(l * d)) {
            out[..row.len()].copy_from_slice(row);
        }
    }
    Ok(Tensor::from_vec(padded, (rows.len(), l, d), &Device::Cpu)?)
}

impl LoraTrainer {
    /// A trainer of `head` and `adapters` (neither is modified) on the frozen base weights of
    /// `bert` (unmerged: without any adapters); `seed` drives the adapters' dropout.
    pub fn new(
        bert: &Bert,
        head: &LatentHead,
        adapters: &LoraAdapters,
        config: TrainConfig,
        seed: u64,
    ) -> Result<Self> {
        adapters.check_shape(bert)?;
        if head.config().latent_attention.latent_dim != bert.hidden_size() {
            return Err(Error::InvalidConfig(format!(
                "the head's width {} differs from the backbone's {}",
                head.config().latent_attention.latent_dim,
                bert.hidden_size()
            )));
        }
        let device = Device::Cpu;
        let (head_vars, head) = head.trainable(&device)?;
        let (lora_vars, adapters) = adapters.trainable(&device)?;
        let mut vars = head_vars.all_vars();
        vars.extend(lora_vars.all_vars());
        let opt = adamw(vars, config)?;
        let frozen_layers = if bert.supports_packed() {
            adapters.config().first_layer
        } else {
            0
        };
        Ok(Self {
            bert: bert.clone(),
            frozen_layers,
            cache: Mutex::new(FrozenCache::new(FROZEN_CACHE_BYTES)),
            head_vars,
            head,
            lora_vars,
            adapters,
            opt,
            steps: 0,
            seed,
        })
    }

    /// Sets the learning rate (for a schedule).
    pub fn set_lr(&mut self, lr: f64) {
        self.opt.set_learning_rate(lr);
    }

    /// Steps taken.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The head being trained.
    pub fn head(&self) -> &LatentHead {
        &self.head
    }

    /// The adapters being trained.
    pub fn adapters(&self) -> &LoraAdapters {
        &self.adapters
    }

    /// Pooled embeddings `[n, d]` of token ids (every position pooled) through the backbone
    /// with the adapters and the head (differentiable). `dropout_seed`: `Some` in training.
    fn embed_with(&self, items: &[Vec<u32>], dropout_seed: Option<u64>) -> Result<Tensor> {
        let (ids, mask) = pad_ids(items, &Device::Cpu)?;
        let states = if self.frozen_layers == 0 {
            self.bert
                .forward_lora_states(&ids, &mask, &self.adapters, dropout_seed)?
        } else {
            let frozen = self.frozen_states(items)?;
            self.bert.forward_lora_from_states(
                &frozen,
                &mask,
                self.frozen_layers,
                &self.adapters,
                dropout_seed,
            )?
        };
        match states {
            // Packed batches keep the head off the padding rows too.
            TrainStates::Packed { states, lens } => self.head.forward_packed(&states, &lens),
            TrainStates::Padded(states) => self.head.forward(&states, &mask),
        }
    }

    /// The frozen layers' output for `items`, padded to `[n, max_len, d]` (zeros past each
    /// text's end): from the cache, the missing texts computed in one packed call.
    fn frozen_states(&self, items: &[Vec<u32>]) -> Result<Tensor> {
        let d = self.bert.hidden_size();
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| Error::Internal("the frozen-state cache's lock is poisoned".into()))?;
        let mut missing: Vec<&[u32]> = Vec::new();
        for item in items {
            if cache.states.contains_key(item) {
                cache.hits += 1;
            } else if !missing.contains(&item.as_slice()) {
                cache.misses += 1;
                missing.push(item);
            }
        }
        let mut fresh: HashMap<&[u32], Vec<f32>> = HashMap::new();
        if !missing.is_empty() {
            let (states, spans) = self
                .bert
                .forward_packed_layers(&missing, self.frozen_layers)?;
            let states = states.flatten_all()?.to_vec1::<f32>()?;
            for (item, (start, len)) in missing.iter().zip(spans) {
                let rows = states[start * d..(start + len) * d].to_vec();
                if cache.bytes + rows.len() * 4 <= cache.budget {
                    cache.bytes += rows.len() * 4;
                    cache.states.insert(item.to_vec(), rows);
                } else {
                    fresh.insert(item, rows);
                }
            }
        }
        let rows = items
            .iter()
            .map(|item| match cache.states.get(item) {
                Some(rows) => Ok(rows.as_slice()),
                None => fresh
                    .get(item.as_slice())
                    .map(Vec::as_slice)
                    .ok_or_else(|| {
                        Error::Internal(
                            "a text's frozen states were neither cached nor made".into(),
                        )
                    }),
            })
            .collect::<Result<Vec<_>>>()?;
        pad_states(&rows, d)
    }

    /// The frozen-state cache's hits and misses so far (both 0 when every layer is adapted).
    pub fn frozen_cache_stats(&self) -> (u64, u64) {
        self.cache
            .lock()
            .map(|c| c.hits_and_misses())
            .unwrap_or((0, 0))
    }

    /// Pooled embeddings `[n, d]` of token ids in evaluation mode (no dropout).
    pub fn embed_ids(&self, items: &[Vec<u32>]) -> Result<Tensor> {
        self.embed_with(items, None)
    }

    /// The loss of a batch in evaluation mode, without updating anything.
    pub fn loss(&self, batch: &ContrastiveBatch<Vec<u32>>, temperature: f64) -> Result<Tensor> {
        batch_loss(batch, temperature, |items| self.embed_ids(items))
    }

    /// One AdamW step on a batch (adapter dropout on); returns the loss and the gradient norms
    /// of the head's tensors and the adapters.
    pub fn step(
        &mut self,
        batch: &ContrastiveBatch<Vec<u32>>,
        temperature: f64,
    ) -> Result<StepReport> {
        let mut calls = 0u64;
        let base = self
            .seed
            .wrapping_add((self.steps as u64).wrapping_mul(0x9E37_79B9));
        let loss = batch_loss(batch, temperature, |items| {
            calls += 1;
            self.embed_with(items, Some(base.wrapping_add(calls)))
        })?;
        let report = optimise(&[&self.head_vars, &self.lora_vars], &mut self.opt, &loss)?;
        self.steps += 1;
        Ok(report)
    }

    /// Saves the head and the adapters into `dir` and returns both loaded back from there.
    pub fn finish(&self, dir: &Path) -> Result<(LatentHead, LoraAdapters)> {
        self.head.save(dir)?;
        self.adapters.save(dir)?;
        Ok((LatentHead::load(dir)?, LoraAdapters::load(dir)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bert::tiny_random;
    use crate::embedder::TokenStates;
    use crate::head::{BackboneRef, HeadConfig};
    use crate::head_train::embed_cached;
    use crate::lora::LoraConfig;

    fn parts(seed: u64) -> (Bert, LatentHead, LoraAdapters) {
        let bert = tiny_random(seed);
        let backbone = BackboneRef {
            name: "tiny".into(),
            weights_sha256: "00".into(),
        };
        let mut cfg = HeadConfig::default_for(bert.hidden_size(), backbone.clone());
        cfg.latent_attention.num_latents_value = 8;
        let head = LatentHead::new_mean_pooling(cfg, seed).expect("head");
        let adapters = LoraAdapters::new(LoraConfig::new(&bert, backbone), seed).expect("lora");
        (bert, head, adapters)
    }

    fn batch() -> ContrastiveBatch<Vec<u32>> {
        let queries = vec![vec![1, 5, 2], vec![1, 9, 12, 2], vec![1, 30, 2]];
        let docs = vec![
            vec![1, 5, 6, 7, 8, 2],
            vec![1, 9, 12, 13, 2],
            vec![1, 30, 31, 32, 33, 34, 2],
            vec![1, 40, 41, 2],
        ];
        ContrastiveBatch::new(queries, docs, vec![0, 1, 2], vec![1.0; 12]).expect("batch")
    }

    fn config() -> TrainConfig {
        TrainConfig {
            lr: 1e-2,
            weight_decay: 0.0,
        }
    }

    #[test]
    fn packed_training_steps_match_the_elementary_ones() -> Result<()> {
        // Nonzero adapters, and documents of unequal lengths: the packed path leaves padding
        // rows out of the layers and of the head.
        let (bert, head, _) = parts(15);
        let adapters = crate::lora::tests::random_adapters(&bert, 16);
        let b = batch();
        // A gentle rate: AdamW's first steps magnify rounding differences at 1e-2.
        let gentle = TrainConfig {
            lr: 1e-3,
            ..config()
        };
        let mut packed = LoraTrainer::new(&bert, &head, &adapters, gentle, 5)?;
        let mut elementary = LoraTrainer::new(&bert, &head, &adapters, gentle, 5)?;
        for step in 0..3 {
            let p = packed.step(&b, 0.05)?;
            let e = crate::bert::tests::elementary(|| elementary.step(&b, 0.05))?;
            assert!(
                (p.loss - e.loss).abs() < 1e-4,
                "step {step}: loss {} vs {}",
                p.loss,
                e.loss
            );
            assert_eq!(p.grad_norms.len(), e.grad_norms.len());
            for ((name, gp), (_, ge)) in p.grad_norms.iter().zip(&e.grad_norms) {
                assert!(
                    (gp - ge).abs() <= 1e-3 * ge.max(1.0),
                    "step {step}, {name}: gradient norm {gp} vs {ge}"
                );
            }
        }
        // The head moved (off the identity), and both still embed alike.
        assert_ne!(packed.head().tensors_sha256()?, head.tensors_sha256()?);
        let docs = &b.docs;
        let got = packed.embed_ids(docs)?;
        let want = crate::bert::tests::elementary(|| elementary.embed_ids(docs))?;
        let diff = crate::lora::tests::max_diff(&got, &want);
        assert!(diff < 1e-4, "embeddings differ by {diff}");
        Ok(())
    }

    #[test]
    fn gradients_reach_the_adapters_and_the_loss_falls() -> Result<()> {
        let (bert, head, adapters) = parts(11);
        let mut trainer = LoraTrainer::new(&bert, &head, &adapters, config(), 1)?;
        let b = batch();
        let start = trainer.loss(&b, 0.05)?.to_scalar::<f32>()?;
        // With B = 0 only B receives a gradient at first (as the head's zero output
        // projections block the layers before them); after one update every tensor must.
        let first = trainer.step(&b, 0.05)?;
        let lora_b: Vec<_> = first
            .grad_norms
            .iter()
            .filter(|(n, _)| n.contains("lora_B"))
            .collect();
        assert_eq!(lora_b.len(), 8);
        assert!(lora_b.iter().all(|(_, g)| *g > 0.0), "{lora_b:?}");
        let second = trainer.step(&b, 0.05)?;
        assert_eq!(second.grad_norms.len(), 14 + 16);
        for (name, g) in &second.grad_norms {
            assert!(*g > 0.0 && g.is_finite(), "{name}: gradient norm {g}");
        }
        for _ in 0..20 {
            trainer.step(&b, 0.05)?;
        }
        let end = trainer.loss(&b, 0.05)?.to_scalar::<f32>()?;
        assert!(end < start, "loss {start} -> {end}");
        assert_eq!(trainer.steps(), 22);
        Ok(())
    }

    #[test]
    fn cached_frozen_layers_train_as_the_full_forward_does() -> Result<()> {
        let (bert, head, _) = parts(14);
        let backbone = BackboneRef {
            name: "tiny".into(),
            weights_sha256: "00".into(),
        };
        let mut c = LoraConfig::new(&bert, backbone);
        c.first_layer = 1;
        let adapters = LoraAdapters::new(c, 14)?;
        assert_eq!(adapters.config().tensor_plan().len(), 8);
        let mut cached = LoraTrainer::new(&bert, &head, &adapters, config(), 4)?;
        assert_eq!(cached.frozen_layers, 1);
        let mut full = LoraTrainer::new(&bert, &head, &adapters, config(), 4)?;
        full.frozen_layers = 0;
        let b = batch();
        for _ in 0..4 {
            let (x, y) = (cached.step(&b, 0.05)?, full.step(&b, 0.05)?);
            assert!((x.loss - y.loss).abs() < 1e-4, "{} vs {}", x.loss, y.loss);
        }
        let a = cached.embed_ids(&b.docs)?.to_vec2::<f32>()?;
        let f = full.embed_ids(&b.docs)?.to_vec2::<f32>()?;
        for (x, y) in a.iter().flatten().zip(f.iter().flatten()) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
        // Every text was computed once, in the first step, then found: in 3 more steps and
        // one embedding of the documents.
        let (hits, misses) = cached.frozen_cache_stats();
        assert_eq!(misses, 7);
        assert_eq!(hits, 3 * 7 + 4);
        assert_eq!(full.frozen_cache_stats(), (0, 0));
        // Past the budget, texts are recomputed each time, with the same result.
        cached.cache = Mutex::new(FrozenCache::new(0));
        let again = cached.embed_ids(&b.docs)?.to_vec2::<f32>()?;
        assert_eq!(again, a);
        assert_eq!(cached.cache.lock().map(|c| c.bytes()).unwrap_or(1), 0);
        Ok(())
    }

    #[test]
    fn training_moves_the_backbone_states() -> Result<()> {
        let (bert, head, adapters) = parts(12);
        let mut trainer = LoraTrainer::new(&bert, &head, &adapters, config(), 2)?;
        let b = batch();
        let before = trainer.adapters().tensors_sha256()?;
        trainer.step(&b, 0.05)?;
        trainer.step(&b, 0.05)?;
        assert_ne!(trainer.adapters().tensors_sha256()?, before);
        let (ids, mask) = pad_ids(&b.docs, &Device::Cpu)?;
        let base = bert.forward(&ids, &mask)?;
        let tuned = bert.forward_lora(&ids, &mask, trainer.adapters(), None)?;
        let moved = (base - tuned)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(moved > 1e-4, "the backbone's states did not move: {moved}");
        Ok(())
    }

    #[test]
    fn a_saved_and_reloaded_version_embeds_identically() -> Result<()> {
        let (bert, head, adapters) = parts(13);
        let mut trainer = LoraTrainer::new(&bert, &head, &adapters, config(), 3)?;
        let b = batch();
        for _ in 0..3 {
            trainer.step(&b, 0.05)?;
        }
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let (head, adapters) = trainer.finish(dir.path())?;
        let want = trainer.embed_ids(&b.docs)?.to_vec2::<f32>()?;
        // The inference path: adapters merged, packed kernels, head on the packed states.
        let merged = adapters.merge_into(&bert)?;
        let refs: Vec<&[u32]> = b.docs.iter().map(Vec::as_slice).collect();
        let (states, spans) = merged.forward_packed(&refs)?;
        let items = spans
            .iter()
            .map(|&(start, len)| {
                Ok(TokenStates {
                    states: states.narrow(0, start, len)?,
                    pool_start: 0,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let got = embed_cached(&head, &items.iter().collect::<Vec<_>>())?;
        assert_eq!(want.len(), got.len());
        assert!(want.iter().zip(&got).all(|(a, c)| a.len() == c.len()));
        for (a, c) in want.iter().flatten().zip(got.iter().flatten()) {
            assert!((a - c).abs() < 1e-4, "{a} vs {c}");
        }
        Ok(())
    }
}
