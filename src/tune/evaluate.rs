//! The evaluate phase of a tuning run: the trained version is written to its directory
//! (durably, see [`versions::stage_version`]), loaded, and used to re-embed every document into
//! a shadow copy; held-out nDCG@10 and recall@10 are measured by exact search over the shadow
//! copy, as they were for the live model before training.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use latentdb_embed::head_train::embed_cached;
use latentdb_embed::{Embedder, LatentHead, ModelSpec, TokenStates};

use super::HeldOutMetrics;
use super::encode::{Base, embed_texts};
use super::pairs::Plan;
use super::train::Training;
use super::versions::{self, io_err};
use crate::database::Database;
use crate::error::{Error, Result};
use crate::eval::metrics::{self, Hits, Qrels};

/// Hits retrieved per held-out query.
const EVAL_DEPTH: usize = 100;

pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Exact top-`EVAL_DEPTH` search of `queries` over `docs` (inner product of unit vectors).
fn exact_run(queries: &[Vec<f32>], docs: &[Vec<f32>], ids: &[String]) -> Vec<Hits> {
    queries
        .iter()
        .map(|q| {
            let mut scored: Vec<(usize, f32)> = docs
                .iter()
                .enumerate()
                .map(|(i, d)| (i, dot(q, d)))
                .collect();
            let k = EVAL_DEPTH.min(scored.len());
            if k < scored.len() {
                scored.select_nth_unstable_by(k, |a, b| b.1.total_cmp(&a.1));
                scored.truncate(k);
            }
            scored.sort_by(|a, b| b.1.total_cmp(&a.1));
            scored
                .into_iter()
                .map(|(i, s)| (ids[i].clone(), s))
                .collect()
        })
        .collect()
}

/// Held-out metrics of the plan's held-out queries (vectors `eval_vecs`, in
/// `plan.eval_queries` order) searched exactly over the documents `docs` (ids `ids`).
pub(super) fn held_out(
    plan: &Plan,
    eval_vecs: &[Vec<f32>],
    docs: &[Vec<f32>],
    ids: &[String],
) -> HeldOutMetrics {
    let runs = exact_run(eval_vecs, docs, ids);
    let run: HashMap<String, Hits> = plan.eval_keys.iter().cloned().zip(runs).collect();
    let qrels: &Qrels = &plan.qrels;
    let m = metrics::evaluate(qrels, &run);
    HeldOutMetrics {
        ndcg_at_10: m.ndcg_at_10,
        recall_at_10: m.recall_at_10,
        mrr_at_10: m.mrr_at_10,
        queries: m.queries,
    }
}

/// A trained version, stored and measured, not yet live.
pub(super) struct Candidate {
    pub version: u32,
    /// Its head directory.
    pub dir: PathBuf,
    /// The version loaded as an embedder.
    pub embedder: Arc<Embedder>,
    /// Every document's vector under it (by document index).
    pub doc_vecs: Vec<Vec<f32>>,
    /// Held-out quality with it.
    pub after: HeldOutMetrics,
}

/// Stores the trained model as version `version` of `collection`, re-embeds the documents
/// `texts` (ids `ids`) and the held-out queries with it, and measures it.
#[allow(clippy::too_many_arguments)]
pub(super) fn candidate(
    db: &Database,
    collection: &str,
    version: u32,
    base: &Base,
    training: &Training,
    texts: &[&str],
    ids: &[String],
    plan: &Plan,
    phase: &dyn Fn(&str),
) -> Result<Candidate> {
    let backbone = &base.identity.path;
    let (dir, doc_vecs, eval_vecs, embedder) = match training {
        Training::Head { trainer, inputs } => {
            let (dir, head) = versions::stage_version(db, collection, version, |staging| {
                let head = trainer.finish(staging)?;
                // Adapters of the live version stay: the head was trained on their states.
                if let Some(adapters) = base.embedder.lora() {
                    adapters.save(staging)?;
                }
                set_backbone_path(staging, &head, backbone)?;
                Ok(head)
            })?;
            phase("re-embedding into the shadow copy");
            let doc_vecs = embed_cached(&head, &inputs.docs.iter().collect::<Vec<_>>())?;
            let eval_refs: Vec<&TokenStates> = plan
                .eval_queries
                .iter()
                .map(|&q| &inputs.queries[q])
                .collect();
            let eval_vecs = embed_cached(&head, &eval_refs)?;
            let embedder = db.embedders().load(&ModelSpec::Dir(dir.clone()))?;
            (dir, doc_vecs, eval_vecs, embedder)
        }
        Training::Lora { trainer, .. } => {
            let (dir, ()) = versions::stage_version(db, collection, version, |staging| {
                let (head, _) = trainer.finish(staging)?;
                set_backbone_path(staging, &head, backbone)
            })?;
            // The saved version itself (adapters merged) re-embeds everything.
            let tuned = db.embedders().load(&ModelSpec::Dir(dir.clone()))?;
            phase("re-embedding into the shadow copy");
            let eval_texts: Vec<&str> = plan
                .eval_queries
                .iter()
                .map(|&q| plan.query_texts[q].as_str())
                .collect();
            let doc_vecs = embed_texts(&tuned, texts, &base.options(false, None), phase)?;
            let eval_vecs = embed_texts(&tuned, &eval_texts, &base.options(true, None), phase)?;
            (dir, doc_vecs, eval_vecs, tuned)
        }
    };
    let after = held_out(plan, &eval_vecs, &doc_vecs, ids);
    Ok(Candidate {
        version,
        dir,
        embedder,
        doc_vecs,
        after,
    })
}

/// Records where the head's backbone lives, unless it is the default model (found in the
/// model cache by name).
fn set_backbone_path(dir: &Path, head: &LatentHead, backbone: &Path) -> Result<()> {
    if head.backbone().name == latentdb_embed::fetch::DEFAULT_MODEL
        && head.config().backbone_path.is_none()
    {
        return Ok(());
    }
    let mut config = head.config().clone();
    let abs = std::fs::canonicalize(backbone).unwrap_or_else(|_| backbone.to_path_buf());
    config.backbone_path = Some(abs.to_string_lossy().into_owned());
    let path = dir.join(latentdb_embed::head::HEAD_CONFIG_FILE);
    let json = serde_json::to_vec_pretty(&config)
        .map_err(|e| Error::Internal(format!("head config: {e}")))?;
    latentdb_embed::write_file_atomically(&path, &json).map_err(|e| io_err(&path, e))
}
