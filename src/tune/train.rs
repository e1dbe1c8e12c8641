//! The two training stages of a tuning run: batches of examples with distinct queries, each
//! stage's candidate mask, a learning-rate schedule and one AdamW step per batch, either for the
//! head alone (on cached token states) or for the head with LoRA adapters (token ids through
//! the backbone, which runs inside the loop).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use latentdb_embed::head_train::{
    ContrastiveBatch, HeadTrainer, TrainConfig, select_tokens, token_count,
};
use latentdb_embed::lora_train::LoraTrainer;
use latentdb_embed::{LoraAdapters, LoraConfig, TokenStates};

use super::encode::{Base, Prepared};
use super::rng::SplitMix64;
use super::{StageReport, TuneOptions, TuneProgress};
use crate::error::{Error, Result};

/// Where a training document comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum DocKey {
    /// A stored document (index into the documents).
    Doc(usize),
    /// A pair's own positive text (inverse cloze), by pair index.
    Override(usize),
}

/// A training pair resolved to indices.
pub(super) struct Example {
    pub(super) query: usize,
    pub(super) positive: DocKey,
    pub(super) positive_doc: usize,
    pub(super) negatives: Vec<usize>,
}

/// The examples of a run and what their batches need to know.
pub(super) struct Examples<'a> {
    pub(super) examples: &'a [Example],
    /// Document ids, by document index.
    pub(super) ids: &'a [String],
    /// The known positives of each query (by query index).
    pub(super) positives_of: &'a HashMap<usize, HashSet<&'a str>>,
}

/// The model's inputs for every text of a run, in one representation.
pub(super) struct Inputs<T> {
    /// By document index.
    pub(super) docs: Vec<T>,
    /// By query index.
    pub(super) queries: Vec<T>,
    /// Positive texts of inverse-cloze pairs, by pair index.
    pub(super) overrides: HashMap<usize, T>,
}

/// What is trained, with its inputs.
pub(super) enum Training {
    /// The head on cached token states (documents subsampled to `train_tokens` tokens).
    Head {
        trainer: Box<HeadTrainer>,
        inputs: Inputs<TokenStates>,
    },
    /// The head and LoRA adapters on token ids (documents already cut to `train_tokens`).
    Lora {
        trainer: Box<LoraTrainer>,
        inputs: Inputs<Vec<u32>>,
    },
}

fn sample_tokens(t: &TokenStates, n: usize, rng: &mut SplitMix64) -> Result<TokenStates> {
    let len = token_count(t)?;
    let avail = len.saturating_sub(t.pool_start);
    if n == 0 || avail <= n {
        return Ok(t.clone());
    }
    let positions: Vec<usize> = rng
        .sample_sorted(avail, n)
        .into_iter()
        .map(|i| i + t.pool_start)
        .collect();
    Ok(select_tokens(t, &positions)?)
}

fn mean(s: &[f64]) -> f64 {
    if s.is_empty() {
        0.0
    } else {
        s.iter().sum::<f64>() / s.len() as f64
    }
}

impl Training {
    /// The trainer for `prepared` inputs, starting from the live model `base`: the head alone,
    /// or the head with the live version's LoRA adapters (new ones, at zero, if it has none).
    pub(super) fn build(prepared: Prepared, base: &Base, opts: &TuneOptions) -> Result<Training> {
        let config = TrainConfig {
            lr: opts.lr,
            weight_decay: 0.01,
        };
        Ok(match prepared {
            Prepared::States(inputs) => Training::Head {
                trainer: Box::new(HeadTrainer::new(&base.head0, config)?),
                inputs,
            },
            Prepared::Ids(inputs) => {
                let bert = base.embedder.base_bert().ok_or_else(|| {
                    Error::FailedPrecondition("head+lora needs a BERT backbone".into())
                })?;
                let adapters = match base.embedder.lora() {
                    Some(a) => a.clone(),
                    None => {
                        let mut c = LoraConfig::new(bert, base.embedder.backbone_ref());
                        c.rank = opts.lora_rank;
                        c.alpha = opts.lora_alpha;
                        c.dropout = opts.lora_dropout;
                        if opts.lora_layers > 0 {
                            c.first_layer = c.num_layers.saturating_sub(opts.lora_layers);
                        }
                        LoraAdapters::new(c, opts.seed)?
                    }
                };
                let trainer = LoraTrainer::new(bert, &base.head0, &adapters, config, opts.seed)?;
                Training::Lora {
                    trainer: Box::new(trainer),
                    inputs,
                }
            }
        })
    }

    /// Runs stage 1 (in-batch and hard negatives) and stage 2 (hard negatives only).
    pub(super) fn run_stages(
        &mut self,
        ex: &Examples<'_>,
        opts: &TuneOptions,
        progress: &dyn Fn(TuneProgress),
    ) -> Result<(StageReport, StageReport)> {
        let mut rng = SplitMix64::new(opts.seed ^ 0x5eed);
        let mut order: Vec<usize> = Vec::new();
        let mut stages = Vec::new();
        for (stage, steps) in [(1u8, opts.stage1_steps), (2u8, opts.stage2_steps)] {
            let t = Instant::now();
            let mut losses = Vec::with_capacity(steps);
            let mut pairs_done = 0usize;
            for step in 0..steps {
                let warm = (steps / 10).max(1);
                let lr = if step < warm {
                    opts.lr * (step + 1) as f64 / warm as f64
                } else {
                    opts.lr * (0.1 + 0.9 * (steps - step) as f64 / (steps - warm + 1) as f64)
                };
                self.set_lr(lr);
                // A batch of examples with distinct queries.
                let mut batch: Vec<usize> = Vec::with_capacity(opts.batch_size);
                let mut seen = HashSet::new();
                let mut tries = 0;
                while batch.len() < opts.batch_size && tries < 4 * opts.batch_size {
                    if order.is_empty() {
                        order = (0..ex.examples.len()).collect();
                        rng.shuffle(&mut order);
                    }
                    if let Some(e) = order.pop()
                        && seen.insert(ex.examples[e].query)
                    {
                        batch.push(e);
                    }
                    tries += 1;
                }
                let loss = self.step(ex, &batch, stage, opts, &mut rng)?;
                losses.push(f64::from(loss));
                pairs_done += batch.len();
                progress(TuneProgress::Step {
                    stage,
                    step: step + 1,
                    of: steps,
                    loss,
                    pairs_per_second: pairs_done as f64 / t.elapsed().as_secs_f64().max(1e-9),
                });
            }
            let seconds = t.elapsed().as_secs_f64();
            let tenth = (losses.len() / 10).max(1).min(losses.len().max(1));
            stages.push(StageReport {
                steps,
                seconds,
                pairs_per_second: pairs_done as f64 / seconds.max(1e-9),
                first_loss: mean(&losses[..tenth.min(losses.len())]),
                last_loss: mean(&losses[losses.len().saturating_sub(tenth)..]),
            });
        }
        let stage2 = stages.pop();
        let stage1 = stages.pop();
        match (stage1, stage2) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err(Error::InvalidArgument("internal: missing stage".into())),
        }
    }

    fn set_lr(&mut self, lr: f64) {
        match self {
            Training::Head { trainer, .. } => trainer.set_lr(lr),
            Training::Lora { trainer, .. } => trainer.set_lr(lr),
        }
    }

    /// One step on the examples `batch`; returns the loss.
    fn step(
        &mut self,
        ex: &Examples<'_>,
        batch: &[usize],
        stage: u8,
        opts: &TuneOptions,
        rng: &mut SplitMix64,
    ) -> Result<f32> {
        // Stage 2 scores hard negatives only: no reverse direction there.
        let symmetric = opts.symmetric && stage == 1;
        let report = match self {
            Training::Head { trainer, inputs } => {
                let b = contrastive_batch(ex, batch, stage, symmetric, inputs, |t| {
                    sample_tokens(t, opts.train_tokens, rng)
                })?;
                trainer.step(&b, opts.temperature)?
            }
            Training::Lora { trainer, inputs } => {
                let b = contrastive_batch(ex, batch, stage, symmetric, inputs, |t| Ok(t.clone()))?;
                trainer.step(&b, opts.temperature)?
            }
        };
        Ok(report.loss)
    }
}

/// One step's batch: the queries, the documents they are scored against (positives, hard
/// negatives; each passed through `doc_input`) and the candidate mask of the stage (1:
/// in-batch + hard negatives, minus any known positive of the query; 2: hard negatives only),
/// `symmetric` when the reverse direction is trained too.
fn contrastive_batch<T: Clone>(
    ex: &Examples<'_>,
    batch: &[usize],
    stage: u8,
    symmetric: bool,
    inputs: &Inputs<T>,
    mut doc_input: impl FnMut(&T) -> Result<T>,
) -> Result<ContrastiveBatch<T>> {
    let examples = ex.examples;
    let mut keys: Vec<DocKey> = Vec::new();
    let mut slot: HashMap<DocKey, usize> = HashMap::new();
    let mut add = |k: DocKey| -> usize {
        *slot.entry(k).or_insert_with(|| {
            keys.push(k);
            keys.len() - 1
        })
    };
    let mut positive = Vec::with_capacity(batch.len());
    let mut negs = Vec::with_capacity(batch.len());
    for &e in batch {
        let example = &examples[e];
        positive.push(add(example.positive));
        negs.push(
            example
                .negatives
                .iter()
                .map(|&d| add(DocKey::Doc(d)))
                .collect::<HashSet<usize>>(),
        );
    }
    let doc_id = |k: &DocKey| -> &str {
        match k {
            DocKey::Doc(d) => &ex.ids[*d],
            DocKey::Override(p) => examples
                .get(*p)
                .map_or("", |e| ex.ids[e.positive_doc].as_str()),
        }
    };
    let n = keys.len();
    let empty = HashSet::new();
    let mut allowed = vec![0f32; batch.len() * n];
    for (i, &e) in batch.iter().enumerate() {
        let pos = ex.positives_of.get(&examples[e].query).unwrap_or(&empty);
        for (j, k) in keys.iter().enumerate() {
            let ok = match stage {
                1 => !pos.contains(doc_id(k)),
                _ => negs[i].contains(&j),
            };
            allowed[i * n + j] = if ok { 1.0 } else { 0.0 };
        }
    }
    let docs = keys
        .iter()
        .map(|k| {
            let t = match k {
                DocKey::Doc(d) => inputs.docs.get(*d),
                DocKey::Override(p) => inputs.overrides.get(p),
            }
            .ok_or_else(|| Error::InvalidArgument("internal: missing training input".into()))?;
            doc_input(t)
        })
        .collect::<Result<Vec<_>>>()?;
    let queries = batch
        .iter()
        .map(|&e| {
            inputs
                .queries
                .get(examples[e].query)
                .cloned()
                .ok_or_else(|| Error::InvalidArgument("internal: missing query input".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ContrastiveBatch::new(queries, docs, positive, allowed)?.with_symmetric(symmetric))
}
