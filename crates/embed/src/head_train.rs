//! Training a [`LatentHead`] with AdamW on cached backbone token states.
//!
//! The backbone is frozen, so its token states are computed once per text (see
//! [`crate::Embedder::token_states`]) and kept; each step runs only the head's forward and
//! backward, which is cheap next to the backbone. A step embeds the batch's queries and
//! candidate documents with the head and minimises [`crate::loss::info_nce`].

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};

use crate::embedder::{TokenStates, pad_token_states};
use crate::error::{Error, Result};
use crate::head::LatentHead;
use crate::loss::masked_info_nce;
use crate::pooling::{l2_normalize, packed_mean};

/// Optimiser settings of a [`HeadTrainer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            weight_decay: 0.01,
        }
    }
}

/// One contrastive step's inputs: the queries and documents (token states for a
/// [`HeadTrainer`], token ids for a [`crate::lora_train::LoraTrainer`]), each query's positive
/// (a row of `docs`) and the `[queries, docs]` 0/1 candidate mask (see
/// [`crate::loss::info_nce`]).
#[derive(Debug, Clone)]
pub struct ContrastiveBatch<T = TokenStates> {
    /// The queries.
    pub queries: Vec<T>,
    /// The candidate documents.
    pub docs: Vec<T>,
    /// For each query, its positive's row in `docs`.
    pub positive: Vec<usize>,
    /// `[queries, docs]` f32 mask of the candidates each query is scored against.
    pub allowed: Tensor,
    /// Also train the reverse direction, each positive document against the batch's queries
    /// ([`crate::loss::info_nce_symmetric`]); false by default.
    pub symmetric: bool,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The loss before the update.
    pub loss: f32,
    /// L2 norm of each trainable tensor's gradient, by name.
    pub grad_norms: Vec<(String, f32)>,
}

/// Trains a latent-attention head: owns the trainable copy and its AdamW state.
pub struct HeadTrainer {
    varmap: VarMap,
    head: LatentHead,
    opt: AdamW,
    steps: usize,
}

impl std::fmt::Debug for HeadTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadTrainer")
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

/// AdamW over `vars` with the trainer settings.
pub(crate) fn adamw(vars: Vec<Var>, config: TrainConfig) -> Result<AdamW> {
    let params = ParamsAdamW {
        lr: config.lr,
        weight_decay: config.weight_decay,
        ..ParamsAdamW::default()
    };
    Ok(AdamW::new(vars, params)?)
}

/// InfoNCE of a batch whose inputs `embed` turns into pooled embeddings.
pub(crate) fn batch_loss<T>(
    batch: &ContrastiveBatch<T>,
    temperature: f64,
    mut embed: impl FnMut(&[T]) -> Result<Tensor>,
) -> Result<Tensor> {
    if batch.queries.is_empty() || batch.docs.is_empty() {
        return Err(Error::InvalidArgument(
            "a contrastive batch needs queries and documents".into(),
        ));
    }
    let q = embed(&batch.queries)?;
    let d = embed(&batch.docs)?;
    masked_info_nce(
        &q,
        &d,
        &batch.positive,
        &batch.allowed,
        temperature,
        batch.symmetric,
    )
}

/// Backpropagates `loss`, records the gradient norm of every variable of `maps` and takes one
/// optimiser step.
pub(crate) fn optimise(maps: &[&VarMap], opt: &mut AdamW, loss: &Tensor) -> Result<StepReport> {
    let grads = loss.backward()?;
    let mut grad_norms = Vec::new();
    for map in maps {
        let data = map
            .data()
            .lock()
            .map_err(|_| Error::Internal("the variable map's lock is poisoned".into()))?;
        for (name, var) in data.iter() {
            let norm = match grads.get(var.as_tensor()) {
                Some(g) => g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?,
                None => 0.0,
            };
            grad_norms.push((name.clone(), norm));
        }
    }
    grad_norms.sort_by(|a, b| a.0.cmp(&b.0));
    opt.step(&grads)?;
    Ok(StepReport {
        loss: loss.to_scalar::<f32>()?,
        grad_norms,
    })
}

impl HeadTrainer {
    /// A trainer starting from `head` (which is not modified).
    pub fn new(head: &LatentHead, config: TrainConfig) -> Result<Self> {
        let (varmap, head) = head.trainable(&Device::Cpu)?;
        let opt = adamw(varmap.all_vars(), config)?;
        Ok(Self {
            varmap,
            head,
            opt,
            steps: 0,
        })
    }

    /// Sets the learning rate (for a schedule).
    pub fn set_lr(&mut self, lr: f64) {
        self.opt.set_learning_rate(lr);
    }

    /// The head being trained (its tensors are the current trained values).
    pub fn head(&self) -> &LatentHead {
        &self.head
    }

    /// Steps taken.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Pooled embeddings `[n, d]` of token states with the current head (differentiable).
    pub fn embed_states(&self, items: &[TokenStates]) -> Result<Tensor> {
        let (states, mask) = pad_token_states(items)?;
        self.head.forward(&states, &mask)
    }

    /// The loss of a batch with the current head, without updating it.
    pub fn loss(&self, batch: &ContrastiveBatch, temperature: f64) -> Result<Tensor> {
        batch_loss(batch, temperature, |items| self.embed_states(items))
    }

    /// One AdamW step on a batch; returns the loss and the gradient norms.
    pub fn step(&mut self, batch: &ContrastiveBatch, temperature: f64) -> Result<StepReport> {
        let loss = self.loss(batch, temperature)?;
        let report = optimise(&[&self.varmap], &mut self.opt, &loss)?;
        self.steps += 1;
        Ok(report)
    }

    /// Saves the trained head into `dir` (see [`LatentHead::save`]) and returns it loaded
    /// back from there, detached from the optimiser.
    pub fn finish(&self, dir: &std::path::Path) -> Result<LatentHead> {
        self.head.save(dir)?;
        LatentHead::load(dir)
    }
}

impl<T> ContrastiveBatch<T> {
    /// A batch from inputs, positives and a row-major `[queries, docs]` 0/1 mask.
    pub fn new(
        queries: Vec<T>,
        docs: Vec<T>,
        positive: Vec<usize>,
        allowed: Vec<f32>,
    ) -> Result<Self> {
        let shape = (queries.len(), docs.len());
        if allowed.len() != shape.0 * shape.1 {
            return Err(Error::InvalidArgument(format!(
                "a candidate mask of {} values for {} queries and {} documents",
                allowed.len(),
                shape.0,
                shape.1
            )));
        }
        let allowed = Tensor::from_vec(allowed, shape, &Device::Cpu)?;
        Ok(Self {
            queries,
            docs,
            positive,
            allowed,
            symmetric: false,
        })
    }

    /// The batch with [`ContrastiveBatch::symmetric`] set to `on`.
    pub fn with_symmetric(mut self, on: bool) -> Self {
        self.symmetric = on;
        self
    }
}

/// Positions of an input's token states (padding excluded).
pub fn token_count(t: &TokenStates) -> Result<usize> {
    Ok(t.states.dim(0)?)
}

/// The token states at `positions` (sorted, all pooled): a token sample of one input. The
/// head works per token, so pooling a sample estimates pooling all of them at a fraction of
/// the cost. The result pools every position it has.
pub fn select_tokens(t: &TokenStates, positions: &[usize]) -> Result<TokenStates> {
    let idx: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
    let idx = Tensor::from_vec(idx, positions.len(), t.states.device())?;
    Ok(TokenStates {
        states: t.states.index_select(&idx, 0)?,
        pool_start: 0,
    })
}

/// Pooled vectors of cached token states with `head`, as the embedder's packed path computes
/// them: the head on every token (skipped while it is the identity), then the mean over each
/// input's pooled positions and the L2 norm if the head normalises. Inputs of one call must
/// share `pool_start`.
pub fn embed_cached(head: &LatentHead, items: &[&TokenStates]) -> Result<Vec<Vec<f32>>> {
    const BATCH: usize = 64;
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(BATCH) {
        let mut spans = Vec::with_capacity(chunk.len());
        let mut parts = Vec::with_capacity(chunk.len());
        let mut start = 0;
        let skip = chunk.first().map_or(0, |t| t.pool_start);
        for t in chunk {
            if t.pool_start != skip {
                return Err(Error::InvalidArgument(
                    "inputs embedded together must share pool_start".into(),
                ));
            }
            let len = t.states.dim(0)?;
            spans.push((start, len));
            start += len;
            parts.push(t.states.clone());
        }
        let states = Tensor::cat(&parts, 0)?;
        let x = if head.is_identity() {
            states
        } else {
            head.transform(&states.unsqueeze(0)?)?.squeeze(0)?
        };
        let mut pooled = packed_mean(&x, &spans, skip)?;
        if head.config().latent_attention.output_normalize {
            pooled = l2_normalize(&pooled)?;
        }
        out.extend(pooled.to_vec2::<f32>()?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::{BackboneRef, HeadConfig};
    use crate::pooling::masked_mean;
    use candle_core::DType;

    fn small_head() -> LatentHead {
        let mut cfg = HeadConfig::default_for(
            16,
            BackboneRef {
                name: "test".into(),
                weights_sha256: "00".into(),
            },
        );
        cfg.latent_attention.num_latents_value = 8;
        LatentHead::new_mean_pooling(cfg, 7).expect("head")
    }

    fn states(seed: u64, len: usize) -> TokenStates {
        let data: Vec<f32> = (0..len * 16)
            .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0)
            .collect();
        TokenStates {
            states: Tensor::from_vec(data, (len, 16), &Device::Cpu).expect("tensor"),
            pool_start: 0,
        }
    }

    fn batch() -> ContrastiveBatch {
        let queries = vec![states(1, 3), states(2, 5)];
        let docs = vec![states(3, 6), states(4, 4), states(5, 7)];
        ContrastiveBatch {
            queries,
            docs,
            positive: vec![0, 1],
            allowed: Tensor::ones((2, 3), DType::F32, &Device::Cpu).expect("mask"),
            symmetric: false,
        }
    }

    #[test]
    fn step_zero_is_mean_pooling() -> Result<()> {
        let head = small_head();
        let trainer = HeadTrainer::new(&head, TrainConfig::default())?;
        let items = vec![states(1, 3), states(2, 5)];
        let got = trainer.embed_states(&items)?.to_vec2::<f32>()?;
        let (s, m) = pad_token_states(&items)?;
        let want = l2_normalize(&masked_mean(&s, &m)?)?.to_vec2::<f32>()?;
        assert_eq!((got.len(), got[0].len()), (want.len(), want[0].len()));
        for (a, b) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn cached_embedding_matches_the_padded_forward() -> Result<()> {
        let mut trainer = HeadTrainer::new(&small_head(), TrainConfig::default())?;
        let b = batch();
        trainer.step(&b, 0.05)?;
        trainer.step(&b, 0.05)?;
        let refs: Vec<&TokenStates> = b.docs.iter().collect();
        let packed = embed_cached(trainer.head(), &refs)?;
        let padded = trainer.embed_states(&b.docs)?.to_vec2::<f32>()?;
        assert_eq!(packed.len(), padded.len());
        assert!(packed.iter().zip(&padded).all(|(a, c)| a.len() == c.len()));
        for (a, c) in packed.iter().flatten().zip(padded.iter().flatten()) {
            assert!((a - c).abs() < 1e-5, "{a} vs {c}");
        }
        let sample = select_tokens(&b.docs[0], &[1, 3])?;
        assert_eq!(token_count(&sample)?, 2);
        Ok(())
    }

    #[test]
    fn every_trainable_tensor_gets_a_gradient() -> Result<()> {
        let head = small_head();
        let mut trainer = HeadTrainer::new(
            &head,
            TrainConfig {
                lr: 1e-2,
                weight_decay: 0.0,
            },
        )?;
        let b = batch();
        // At step 0 the zero output projections block the gradient to the layers before
        // them (as LoRA's zero B does); after one update every tensor must get one.
        let first = trainer.step(&b, 0.05)?;
        assert!(
            first
                .grad_norms
                .iter()
                .any(|(n, g)| n.contains("to_out") && *g > 0.0)
        );
        let second = trainer.step(&b, 0.05)?;
        assert_eq!(second.grad_norms.len(), 14);
        for (name, g) in &second.grad_norms {
            assert!(*g > 0.0 && g.is_finite(), "{name}: gradient norm {g}");
        }
        Ok(())
    }

    #[test]
    fn training_lowers_the_loss() -> Result<()> {
        let mut trainer = HeadTrainer::new(
            &small_head(),
            TrainConfig {
                lr: 1e-2,
                weight_decay: 0.0,
            },
        )?;
        let b = batch();
        let start = trainer.loss(&b, 0.05)?.to_scalar::<f32>()?;
        for _ in 0..30 {
            trainer.step(&b, 0.05)?;
        }
        let end = trainer.loss(&b, 0.05)?.to_scalar::<f32>()?;
        assert!(end < start, "loss {start} -> {end}");
        Ok(())
    }

    #[test]
    fn a_saved_head_reloads_and_embeds_identically() -> Result<()> {
        let mut trainer = HeadTrainer::new(&small_head(), TrainConfig::default())?;
        let b = batch();
        for _ in 0..3 {
            trainer.step(&b, 0.05)?;
        }
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let head = trainer.finish(dir.path())?;
        assert!(!head.is_identity());
        let reloaded = LatentHead::load(dir.path())?;
        let (s, m) = pad_token_states(&b.docs)?;
        let a = trainer.head().forward(&s, &m)?.to_vec2::<f32>()?;
        let c = reloaded.forward(&s, &m)?.to_vec2::<f32>()?;
        assert_eq!(a, c);
        assert_eq!(head.tensors_sha256()?, reloaded.tensors_sha256()?);
        Ok(())
    }
}
