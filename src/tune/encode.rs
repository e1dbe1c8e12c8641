//! The encode phase of a tuning run: the live model's vectors of every document and query
//! (for the "before" evaluation and for mining), and the training inputs: the backbone's token
//! states once per text (head), or token ids (head+lora: the backbone runs in the loop).
//! Also the live model the run starts from ([`Base`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use latentdb_embed::head_train::embed_cached;
use latentdb_embed::{
    EmbedOptions, Embedder, HeadConfig, Instruction, LatentHead, ModelIdentity, Pooling,
    TokenStates,
};
use latentdb_storage::Metric;

use super::pairs::Plan;
use super::train::Inputs;
use super::{TrainTarget, TuneOptions};
use crate::database::Database;
use crate::embedding::{EMBED_BATCH, EmbedderSettings};
use crate::error::{Error, Result, bounded};

/// Texts per backbone call while caching token states (progress granularity).
const ENCODE_CHUNK: usize = 256;

/// The live model a tuning run starts from.
pub(super) struct Base {
    /// The collection's embedder settings.
    pub settings: EmbedderSettings,
    pub embedder: Arc<Embedder>,
    pub identity: ModelIdentity,
    /// The live head, or exact mean pooling as a head.
    pub head0: LatentHead,
    /// The query instruction of the collection.
    pub instruction: Option<Instruction>,
}

impl Base {
    /// The collection's live model, checked to be tunable.
    pub(super) fn load(db: &Database, collection: &str, opts: &TuneOptions) -> Result<Base> {
        let name = bounded(collection);
        if db.collection_info(collection)?.metric == Metric::L2 {
            return Err(Error::FailedPrecondition(format!(
                "collection {name:?} uses the euclidean metric; tuning needs cosine or dot"
            )));
        }
        let Some(settings) = db.embedder_settings(collection)? else {
            return Err(Error::FailedPrecondition(format!(
                "collection {name:?} has no model to tune"
            )));
        };
        let embedder = db.embedder(collection)?.ok_or_else(|| {
            Error::FailedPrecondition(format!("collection {name:?} has no model"))
        })?;
        let identity = embedder.identity().clone();
        if identity.model_type != "bert" {
            return Err(Error::FailedPrecondition(format!(
                "tuning trains a head on a sentence encoder; {} is {}",
                identity.name, identity.model_type
            )));
        }
        let head0 = match embedder.head() {
            Some(h) => h.clone(),
            None if identity.pooling == Pooling::Mean => LatentHead::new_mean_pooling(
                HeadConfig::default_for(identity.dimension, embedder.backbone_ref()),
                opts.seed,
            )?,
            None => {
                return Err(Error::FailedPrecondition(format!(
                    "model {} pools with {}; a head can only start from mean pooling",
                    identity.name, identity.pooling
                )));
            }
        };
        let instruction = settings.query_instruction(None, None)?;
        Ok(Base {
            settings,
            embedder,
            identity,
            head0,
            instruction,
        })
    }

    /// Embedding options: the query instruction when `query`, texts cut to `max_length`.
    pub(super) fn options(&self, query: bool, max_length: Option<usize>) -> EmbedOptions {
        EmbedOptions {
            instruction: if query {
                self.instruction.clone()
            } else {
                None
            },
            max_length,
            batch_size: EMBED_BATCH,
        }
    }
}

/// The training inputs, before a trainer is built for them.
pub(super) enum Prepared {
    /// Cached token states (head).
    States(Inputs<TokenStates>),
    /// Token ids (head+lora).
    Ids(Inputs<Vec<u32>>),
}

/// What the encode phase produced.
pub(super) struct Encoded {
    pub prepared: Prepared,
    /// The live model's vector of each document (by document index).
    pub doc_vecs: Vec<Vec<f32>>,
    /// The live model's vector of each query (by query index, instruction on).
    pub query_vecs: Vec<Vec<f32>>,
    pub seconds: f64,
}

/// Inputs of the inverse-cloze positives (`overrides`, in order) keyed by pair index.
fn by_pair<T>(overrides: &[(usize, &str)], inputs: Vec<T>) -> HashMap<usize, T> {
    overrides.iter().map(|(i, _)| *i).zip(inputs).collect()
}

/// Vectors of `texts` with `embedder`, in chunks with progress.
pub(super) fn embed_texts(
    embedder: &Embedder,
    texts: &[&str],
    opts: &EmbedOptions,
    phase: &dyn Fn(&str),
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(ENCODE_CHUNK) {
        out.extend(embedder.embed(chunk, opts)?);
        phase(&format!("embedded {}/{} texts", out.len(), texts.len()));
    }
    Ok(out)
}

/// Encodes the documents `texts`, the plan's queries and its inverse-cloze positives.
pub(super) fn encode(
    base: &Base,
    texts: &[&str],
    plan: &Plan,
    opts: &TuneOptions,
    phase: &dyn Fn(&str),
) -> Result<Encoded> {
    let started = Instant::now();
    let embedder = &base.embedder;
    let queries: Vec<&str> = plan.query_texts.iter().map(String::as_str).collect();
    let overrides = plan.overrides();
    let override_texts: Vec<&str> = overrides.iter().map(|(_, t)| *t).collect();
    let (prepared, doc_vecs, query_vecs) = match opts.train {
        TrainTarget::Head => {
            let encode = |texts: &[&str], query: bool, what: &str| {
                let o = base.options(query, None);
                let mut out = Vec::with_capacity(texts.len());
                for chunk in texts.chunks(ENCODE_CHUNK) {
                    out.extend(embedder.token_states(chunk, &o)?);
                    phase(&format!("encoded {}/{} {what}", out.len(), texts.len()));
                }
                Ok::<_, Error>(out)
            };
            let docs = encode(texts, false, "documents")?;
            let query_states = encode(&queries, true, "queries")?;
            let overrides = by_pair(&overrides, encode(&override_texts, false, "positives")?);
            phase("evaluating the live model on the held-out queries");
            let doc_vecs = embed_cached(&base.head0, &docs.iter().collect::<Vec<_>>())?;
            let query_vecs = embed_cached(&base.head0, &query_states.iter().collect::<Vec<_>>())?;
            let inputs = Inputs {
                docs,
                queries: query_states,
                overrides,
            };
            (Prepared::States(inputs), doc_vecs, query_vecs)
        }
        TrainTarget::HeadLora => {
            let doc_vecs = embed_texts(embedder, texts, &base.options(false, None), phase)?;
            let query_vecs = embed_texts(embedder, &queries, &base.options(true, None), phase)?;
            // Documents are cut to their first `train_tokens` tokens for training.
            let cut = (opts.train_tokens > 0)
                .then(|| opts.train_tokens.clamp(2, base.identity.max_length.max(2)));
            let ids_of = |t: &[&str], query: bool, max_length: Option<usize>| {
                Ok::<_, Error>(embedder.tokenize(t, &base.options(query, max_length))?.0)
            };
            let inputs = Inputs {
                docs: ids_of(texts, false, cut)?,
                queries: ids_of(&queries, true, None)?,
                overrides: by_pair(&overrides, ids_of(&override_texts, false, cut)?),
            };
            (Prepared::Ids(inputs), doc_vecs, query_vecs)
        }
    };
    Ok(Encoded {
        prepared,
        doc_vecs,
        query_vecs,
        seconds: started.elapsed().as_secs_f64(),
    })
}
