//! Tuning a collection's embedder on its own corpus: NV-Embed's two-stage contrastive
//! instruction tuning with positive-aware hard negatives mined from the collection's index.
//!
//! [`Tuner::tune`] trains the latent-attention head of a sentence encoder on the frozen
//! backbone's cached token states (the head starts as exact mean pooling, so step 0 is the base
//! model) or, with [`TrainTarget::HeadLora`], the head and LoRA adapters on the backbone's
//! attention projections jointly (the backbone then runs inside the training loop; the adapters
//! start at zero, so step 0 is again the base model), stage 1 with in-batch and hard negatives,
//! stage 2 with hard negatives only and the task instruction on queries. The result is a new
//! model version (a head directory of a few MB referring to its backbone, with the adapters
//! beside the head) stored under the database directory ([`versions`]); held-out nDCG@10 and
//! recall@10 are measured before and after on a shadow copy of the collection's vectors, and
//! the new version goes live only if it is better (or when forced). [`Tuner::rollback`]
//! returns to the previous version.
//!
//! A run's phases each have a module: pairs (`pairs.rs`), encode, mine (`negatives.rs`), train,
//! evaluate and publish. Writes to the collection go on during a run; the switch reconciles
//! them (see `snapshot.rs`): documents deleted meanwhile stay deleted, documents written
//! meanwhile are embedded with the new model before it goes live, under the collection's
//! writer lock.

mod encode;
mod evaluate;
mod fusion_fit;
mod negatives;
mod pairs;
mod publish;
mod rng;
mod snapshot;
mod train;
mod tuner;
pub mod versions;

use serde::{Deserialize, Serialize};

pub use fusion_fit::{FusionCandidate, FusionFitOptions, FusionFitReport};
pub use negatives::positive_aware;
pub use pairs::{
    TrainPair, beir_pairs, inverse_cloze, keyword_queries, read_pairs_jsonl, split_holdout,
};
pub use tuner::Tuner;
pub use versions::{ModelHistory, ModelVersion, TUNE_DIR};

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainTarget {
    /// The latent-attention head on the frozen backbone.
    Head,
    /// The head and LoRA adapters on the backbone's query, key, value and output projections
    /// (NV-Embed's recipe). Costlier: the backbone runs forward and backward in every step;
    /// see [`TuneOptions::head_lora`] for affordable settings.
    HeadLora,
}

/// Where the training pairs come from.
#[derive(Debug, Clone, PartialEq)]
pub enum PairSource {
    /// Pairs given by the caller (e.g. read with [`read_pairs_jsonl`]).
    Pairs(Vec<TrainPair>),
    /// Keyword queries made from the collection's own documents ([`keyword_queries`]: a few
    /// of each document's most distinctive words, in order, with the document as the
    /// positive). Measured: they lose less than inverse cloze ([`inverse_cloze`], which can
    /// still be passed as [`PairSource::Pairs`]) on held-out labelled queries; see the README.
    SelfSupervised,
}

/// Options of [`Tuner::tune`].
#[derive(Debug, Clone, PartialEq)]
pub struct TuneOptions {
    /// Fraction of the distinct queries held out for evaluation (ignored with `eval_pairs`).
    pub holdout: f64,
    /// Held-out pairs given explicitly (e.g. a BEIR test split); never trained on.
    pub eval_pairs: Option<Vec<TrainPair>>,
    /// What is trained.
    pub train: TrainTarget,
    /// Steps of stage 1 (in-batch and hard negatives).
    pub stage1_steps: usize,
    /// Steps of stage 2 (hard negatives only, instruction on queries).
    pub stage2_steps: usize,
    /// Hard negatives per query.
    pub hard_negatives: usize,
    /// Positive-aware margin: a candidate is a negative only below `margin × positive score`.
    pub margin: f32,
    /// Candidates searched per training query when mining hard negatives (0: `3 ×
    /// hard_negatives + 10`). Deeper mining finds negatives for queries whose top hits all
    /// score above the margin.
    pub mine_depth: usize,
    /// InfoNCE temperature.
    pub temperature: f64,
    /// With labelled pairs, also train on keyword queries made from every document of the
    /// collection ([`keyword_queries`]; never held out).
    pub keyword_pairs: bool,
    /// Stage 1 also trains the reverse direction: each positive document against the
    /// batch's queries (a symmetric InfoNCE).
    pub symmetric: bool,
    /// Queries per step.
    pub batch_size: usize,
    /// Peak AdamW learning rate (linear warm-up over the first 10% of each stage, then
    /// linear decay).
    pub lr: f64,
    /// Seed of the holdout split, the sampling and the head's initialisation.
    pub seed: u64,
    /// Tokens of each document sampled per training step (the head works per token, so the
    /// mean over a sample estimates the mean over all of them); 0 uses every token. With
    /// [`TrainTarget::HeadLora`] documents are instead cut to their first `train_tokens`
    /// tokens, special tokens included (the backbone must see a contiguous text).
    pub train_tokens: usize,
    /// LoRA rank (head+lora; ignored when the live version already has adapters, which are
    /// trained further).
    pub lora_rank: usize,
    /// LoRA alpha: the adapters' update is scaled by `alpha / rank`.
    pub lora_alpha: f64,
    /// Dropout on the adapters' input during training.
    pub lora_dropout: f64,
    /// Adapt only the backbone's top `lora_layers` layers (0, or the layer count or more:
    /// every layer). The layers below stay frozen and unadapted, so their output is computed
    /// once per text instead of forward and backward in every step (ignored when the live
    /// version already has adapters, which keep their layers).
    pub lora_layers: usize,
    /// Make the new version live even if it is not better on the held-out queries.
    pub force: bool,
}

/// The head alone on cached token states: the cheapest run, and the smallest gain
/// ([`TuneOptions::head_lora`] gains most per minute; `latentdb tune` defaults to it).
impl Default for TuneOptions {
    fn default() -> Self {
        Self {
            holdout: 0.2,
            eval_pairs: None,
            train: TrainTarget::Head,
            stage1_steps: 200,
            stage2_steps: 100,
            hard_negatives: 7,
            margin: 0.95,
            mine_depth: 0,
            temperature: 0.05,
            symmetric: false,
            keyword_pairs: false,
            batch_size: 16,
            lr: 2e-4,
            seed: 0,
            train_tokens: 48,
            lora_rank: 16,
            lora_alpha: 32.0,
            lora_dropout: 0.1,
            lora_layers: 0,
            force: false,
        }
    }
}

impl TuneOptions {
    /// Defaults for [`TrainTarget::HeadLora`] (the CLI's default target), sized for a CPU: the
    /// backbone runs forward and backward in every step, so fewer steps (60 + 30), batches of
    /// 8 queries with 3 hard negatives each, and a higher peak learning rate (5e-4) for the
    /// adapters. Documents are cut to 256 tokens, what the default model embeds at search
    /// time: cut to 64 or 128, the tuned model learned from openings and was evaluated on
    /// whole documents, and gained less on held-out queries (see the README).
    pub fn head_lora() -> Self {
        Self {
            train: TrainTarget::HeadLora,
            lr: 5e-4,
            stage1_steps: 60,
            stage2_steps: 30,
            hard_negatives: 3,
            batch_size: 8,
            train_tokens: 256,
            ..Self::default()
        }
    }
}

impl TuneOptions {
    /// These options for [`PairSource::SelfSupervised`]: synthetic queries are noisier than
    /// labelled ones, so head+lora's peak learning rate drops to 2e-4 (at 5e-4 keyword queries
    /// lost held-out nDCG@10 on spamassassin-subjects; at 2e-4 they gained, see the README).
    pub fn self_supervised(self) -> Self {
        Self {
            lr: if self.train == TrainTarget::HeadLora {
                SELF_SUPERVISED_LORA_LR
            } else {
                self.lr
            },
            ..self
        }
    }
}

/// Peak learning rate of head+lora on self-supervised pairs.
pub const SELF_SUPERVISED_LORA_LR: f64 = 2e-4;

/// Held-out retrieval quality of one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeldOutMetrics {
    /// nDCG@10.
    #[serde(rename = "ndcg@10")]
    pub ndcg_at_10: f64,
    /// Recall@10.
    #[serde(rename = "recall@10")]
    pub recall_at_10: f64,
    /// MRR@10.
    #[serde(rename = "mrr@10")]
    pub mrr_at_10: f64,
    /// Held-out queries.
    pub queries: usize,
}

/// One training stage's numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// Steps taken.
    pub steps: usize,
    /// Seconds spent.
    pub seconds: f64,
    /// Training pairs processed per second.
    pub pairs_per_second: f64,
    /// Mean loss over the first tenth of the steps.
    pub first_loss: f64,
    /// Mean loss over the last tenth of the steps.
    pub last_loss: f64,
}

/// What [`Tuner::tune`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneReport {
    /// The collection.
    pub collection: String,
    /// What was trained.
    pub train: TrainTarget,
    /// Training pairs used (after the holdout).
    pub train_pairs: usize,
    /// Held-out pairs.
    pub eval_pairs: usize,
    /// Training pairs dropped because their positive is not in the collection.
    pub unknown_positives: usize,
    /// Mean hard negatives found per training pair.
    pub hard_negatives_per_pair: f64,
    /// Candidates dropped by the positive-aware filter (likely false negatives).
    pub dropped_false_negatives: usize,
    /// Held-out quality with the live model.
    pub before: HeldOutMetrics,
    /// Held-out quality with the tuned model.
    pub after: HeldOutMetrics,
    /// Stage 1 (in-batch + hard negatives).
    pub stage1: StageReport,
    /// Stage 2 (hard negatives, instruction on queries).
    pub stage2: StageReport,
    /// Seconds computing the backbone's token states once per text (head), or the live
    /// model's vectors and the token ids (head+lora).
    pub encode_seconds: f64,
    /// Seconds in total.
    pub seconds: f64,
    /// The new version's number.
    pub version: u32,
    /// The new version's head directory.
    pub path: std::path::PathBuf,
    /// Whether the new version is now live.
    pub switched: bool,
    /// Why it is or is not live.
    pub decision: String,
}

/// Progress of a tuning run, for a terminal display.
#[derive(Debug, Clone, PartialEq)]
pub enum TuneProgress {
    /// A phase started (encoding, mining, evaluating, switching).
    Phase(String),
    /// A training step finished.
    Step {
        /// 1 or 2.
        stage: u8,
        /// Step number within the stage (1-based).
        step: usize,
        /// Steps in the stage.
        of: usize,
        /// The step's loss.
        loss: f32,
        /// Training pairs per second so far in the stage.
        pairs_per_second: f64,
    },
}
