//! [`Database::tune`]: encode once, mine hard negatives, train the head (and LoRA adapters) in
//! two stages, evaluate before and after on held-out queries, store the version and switch if
//! better.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use latentdb_embed::head_train::{HeadTrainer, TrainConfig, embed_cached};
use latentdb_embed::lora_train::LoraTrainer;
use latentdb_embed::{
    EmbedOptions, Embedder, HeadConfig, LatentHead, LoraAdapters, LoraConfig, ModelSpec, Pooling,
    TokenStates,
};
use latentdb_storage::{Document, Metric};

use super::negatives::positive_aware;
use super::pairs::{TrainPair, inverse_cloze, split_holdout};
use super::train::{DocKey, Example, Examples, Inputs, Training};
use super::versions::{ModelVersion, collection_dir, now_unix};
use super::{HeldOutMetrics, PairSource, TrainTarget, TuneOptions, TuneProgress, TuneReport};
use crate::database::Database;
use crate::embedding::{EMBED_BATCH, EmbedderSettings};
use crate::error::{Error, Result};
use crate::eval::metrics::{self, Hits, Qrels};
use crate::search::SearchRequest;

/// Texts per backbone call while caching token states (progress granularity).
const ENCODE_CHUNK: usize = 256;
/// Hits retrieved per held-out query.
const EVAL_DEPTH: usize = 100;

/// Every document of a collection, in id order (text and metadata, no vector). Fails if one
/// has no text: tuning re-embeds every document.
pub(crate) fn all_documents(db: &Database, collection: &str) -> Result<Vec<Document>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = db.scroll(collection, after.as_deref(), 1024)?;
        for r in page.records {
            if r.text.is_none() {
                return Err(Error::InvalidArgument(format!(
                    "document {:?} has no text; a tuned model must re-embed every document",
                    r.id
                )));
            }
            out.push(Document {
                id: Some(r.id),
                text: r.text,
                metadata: serde_json::Value::Object(r.metadata),
                vector: None,
            });
        }
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    Ok(out)
}

fn validate(opts: &TuneOptions) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidArgument(m));
    if opts.train == TrainTarget::HeadLora {
        LoraConfig::check_hyperparameters(opts.lora_rank, opts.lora_alpha, opts.lora_dropout)?;
    }
    if opts.batch_size < 2 {
        return bad(format!(
            "the batch size must be at least 2, not {}",
            opts.batch_size
        ));
    }
    if !(opts.margin > 0.0 && opts.margin <= 1.0) {
        return bad(format!("the margin must be in (0, 1], not {}", opts.margin));
    }
    if !(opts.temperature.is_finite() && opts.temperature > 0.0) {
        return bad(format!(
            "the temperature must be positive, not {}",
            opts.temperature
        ));
    }
    if !(opts.lr.is_finite() && opts.lr > 0.0) {
        return bad(format!(
            "the learning rate must be positive, not {}",
            opts.lr
        ));
    }
    if opts.stage1_steps + opts.stage2_steps == 0 {
        return bad("at least one training step is needed".into());
    }
    Ok(())
}

/// The training inputs, before a trainer is built for them.
enum Prepared {
    /// Cached token states (head).
    States(Inputs<TokenStates>),
    /// Token ids (head+lora).
    Ids(Inputs<Vec<u32>>),
}

/// Inputs of the inverse-cloze positives (`overrides`, in order) keyed by pair index.
fn by_pair<T>(overrides: &[(usize, &str)], inputs: Vec<T>) -> HashMap<usize, T> {
    overrides.iter().map(|(i, _)| *i).zip(inputs).collect()
}

/// Vectors of `texts` with `embedder`, in chunks with progress.
fn embed_texts(
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

fn dot(a: &[f32], b: &[f32]) -> f32 {
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

/// Held-out metrics: `qids[i]` is query `i`'s key in `qrels`.
fn held_out(qrels: &Qrels, qids: &[String], runs: Vec<Hits>) -> HeldOutMetrics {
    let run: HashMap<String, Hits> = qids.iter().cloned().zip(runs).collect();
    let m = metrics::evaluate(qrels, &run);
    HeldOutMetrics {
        ndcg_at_10: m.ndcg_at_10,
        recall_at_10: m.recall_at_10,
        mrr_at_10: m.mrr_at_10,
        queries: m.queries,
    }
}

impl Database {
    /// Tunes the embedder of `collection` on its own corpus (see [`crate::tune`]) and returns
    /// what happened. The collection keeps serving reads on its current model throughout; the
    /// new version goes live only if its held-out nDCG@10 is higher (or `opts.force`).
    pub fn tune(
        &self,
        collection: &str,
        source: PairSource,
        opts: &TuneOptions,
        progress: &dyn Fn(TuneProgress),
    ) -> Result<TuneReport> {
        let started = Instant::now();
        validate(opts)?;
        let phase = |s: &str| progress(TuneProgress::Phase(s.to_string()));
        let info = self.collection_info(collection)?;
        if info.metric == Metric::L2 {
            return Err(Error::InvalidArgument(format!(
                "collection {collection:?} uses the euclidean metric; tuning needs cosine or dot"
            )));
        }
        let Some(settings) = self.embedder_settings(collection)? else {
            return Err(Error::InvalidArgument(format!(
                "collection {collection:?} has no model to tune"
            )));
        };
        let embedder = self
            .embedder(collection)?
            .ok_or_else(|| Error::InvalidArgument("the collection has no model".into()))?;
        let identity = embedder.identity().clone();
        if identity.model_type != "bert" {
            return Err(Error::InvalidArgument(format!(
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
                return Err(Error::InvalidArgument(format!(
                    "model {} pools with {}; a head can only start from mean pooling",
                    identity.name, identity.pooling
                )));
            }
        };

        // Documents and pairs.
        phase("reading documents");
        let docs = all_documents(self, collection)?;
        if docs.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "collection {collection:?} is empty"
            )));
        }
        let ids: Vec<String> = docs
            .iter()
            .map(|d| d.id.clone().unwrap_or_default())
            .collect();
        let texts: Vec<&str> = docs
            .iter()
            .map(|d| d.text.as_deref().unwrap_or(""))
            .collect();
        let by_id: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let pairs = match source {
            PairSource::Pairs(p) => p,
            PairSource::SelfSupervised => {
                let owned: Vec<(String, String)> = ids
                    .iter()
                    .zip(&texts)
                    .map(|(i, t)| (i.clone(), t.to_string()))
                    .collect();
                inverse_cloze(&owned, opts.seed)
            }
        };
        let (train, eval) = match &opts.eval_pairs {
            Some(e) => {
                let held: HashSet<&str> = e.iter().map(|p| p.query.as_str()).collect();
                let train: Vec<TrainPair> = pairs
                    .into_iter()
                    .filter(|p| !held.contains(p.query.as_str()))
                    .collect();
                (train, e.clone())
            }
            None => split_holdout(pairs, opts.holdout, opts.seed)?,
        };
        let before_filter = train.len();
        let train: Vec<TrainPair> = train
            .into_iter()
            .filter(|p| by_id.contains_key(p.positive.as_str()))
            .collect();
        let unknown_positives = before_filter - train.len();
        if train.is_empty() {
            return Err(Error::InvalidArgument(
                "no training pair has a positive that is a document of the collection".into(),
            ));
        }
        if eval.is_empty() {
            return Err(Error::InvalidArgument(
                "nothing is held out for evaluation (raise --holdout)".into(),
            ));
        }

        // Queries (distinct texts) and the held-out judgments.
        let mut query_texts: Vec<String> = Vec::new();
        let mut query_index: HashMap<String, usize> = HashMap::new();
        let mut intern = |q: &str| -> usize {
            if let Some(&i) = query_index.get(q) {
                return i;
            }
            query_texts.push(q.to_string());
            query_index.insert(q.to_string(), query_texts.len() - 1);
            query_texts.len() - 1
        };
        let train_q: Vec<usize> = train.iter().map(|p| intern(&p.query)).collect();
        let eval_q: Vec<usize> = eval.iter().map(|p| intern(&p.query)).collect();
        let mut qrels = Qrels::new();
        for (p, &q) in eval.iter().zip(&eval_q) {
            qrels
                .entry(format!("\u{1}q{q}"))
                .or_default()
                .insert(p.positive.clone(), 1);
        }
        let mut eval_queries: Vec<usize> = eval_q.clone();
        eval_queries.sort_unstable();
        eval_queries.dedup();
        let eval_keys: Vec<String> = eval_queries.iter().map(|q| format!("\u{1}q{q}")).collect();

        // The live model's vectors (before), and the training inputs: the backbone's token
        // states once per text (head), or token ids (head+lora: the backbone runs in the loop).
        let t_encode = Instant::now();
        let instruction = settings.query_instruction(None, None)?;
        let embed_opts = |instr: bool, max_length: Option<usize>| EmbedOptions {
            instruction: if instr { instruction.clone() } else { None },
            max_length,
            batch_size: EMBED_BATCH,
        };
        let q_refs: Vec<&str> = query_texts.iter().map(String::as_str).collect();
        let overrides: Vec<(usize, &str)> = train
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.positive_text.as_deref().map(|t| (i, t)))
            .collect();
        let override_texts: Vec<&str> = overrides.iter().map(|(_, t)| *t).collect();
        let (prepared, doc_vecs0, q_vecs0) = match opts.train {
            TrainTarget::Head => {
                let encode = |texts: &[&str], instr: bool, what: &str| {
                    let o = embed_opts(instr, None);
                    let mut out = Vec::with_capacity(texts.len());
                    for chunk in texts.chunks(ENCODE_CHUNK) {
                        out.extend(embedder.token_states(chunk, &o)?);
                        phase(&format!("encoded {}/{} {what}", out.len(), texts.len()));
                    }
                    Ok::<_, Error>(out)
                };
                let docs = encode(&texts, false, "documents")?;
                let queries = encode(&q_refs, true, "queries")?;
                let overrides = by_pair(&overrides, encode(&override_texts, false, "positives")?);
                phase("evaluating the live model on the held-out queries");
                let doc_vecs0 = embed_cached(&head0, &docs.iter().collect::<Vec<_>>())?;
                let q_vecs0 = embed_cached(&head0, &queries.iter().collect::<Vec<_>>())?;
                let inputs = Inputs {
                    docs,
                    queries,
                    overrides,
                };
                (Prepared::States(inputs), doc_vecs0, q_vecs0)
            }
            TrainTarget::HeadLora => {
                let doc_vecs0 = embed_texts(&embedder, &texts, &embed_opts(false, None), &phase)?;
                let q_vecs0 = embed_texts(&embedder, &q_refs, &embed_opts(true, None), &phase)?;
                // Documents are cut to their first `train_tokens` tokens for training.
                let cut = (opts.train_tokens > 0)
                    .then(|| opts.train_tokens.clamp(2, identity.max_length.max(2)));
                let ids_of = |t: &[&str], instr: bool, max_length: Option<usize>| {
                    Ok::<_, Error>(embedder.tokenize(t, &embed_opts(instr, max_length))?.0)
                };
                let inputs = Inputs {
                    docs: ids_of(&texts, false, cut)?,
                    queries: ids_of(&q_refs, true, None)?,
                    overrides: by_pair(&overrides, ids_of(&override_texts, false, cut)?),
                };
                (Prepared::Ids(inputs), doc_vecs0, q_vecs0)
            }
        };
        let encode_seconds = t_encode.elapsed().as_secs_f64();
        let eval_vecs: Vec<Vec<f32>> = eval_queries.iter().map(|&q| q_vecs0[q].clone()).collect();
        let before = held_out(&qrels, &eval_keys, exact_run(&eval_vecs, &doc_vecs0, &ids));

        // Hard negatives from the collection's own index, positive-aware.
        phase("mining hard negatives from the index");
        let mut positives_of: HashMap<usize, HashSet<&str>> = HashMap::new();
        for (p, &q) in train.iter().zip(&train_q) {
            positives_of
                .entry(q)
                .or_default()
                .insert(p.positive.as_str());
        }
        let depth = (opts.hard_negatives * 3 + 10).min(crate::search::MAX_K);
        let mut distinct_train: Vec<usize> = train_q.clone();
        distinct_train.sort_unstable();
        distinct_train.dedup();
        let reqs: Vec<SearchRequest> = distinct_train
            .iter()
            .map(|&q| SearchRequest {
                k: depth,
                with_text: false,
                with_metadata: false,
                ..SearchRequest::vector(q_vecs0[q].clone())
            })
            .collect();
        let mut candidates: HashMap<usize, Vec<(String, f32)>> = HashMap::new();
        for (part_q, part_r) in distinct_train.chunks(256).zip(reqs.chunks(256)) {
            for (&q, hits) in part_q.iter().zip(self.search_batch(collection, part_r)?) {
                candidates.insert(q, hits.into_iter().map(|h| (h.id, h.score)).collect());
            }
        }
        let override_pairs: HashSet<usize> = overrides.iter().map(|(i, _)| *i).collect();
        let mut examples = Vec::with_capacity(train.len());
        let mut dropped_false_negatives = 0;
        let mut negatives_total = 0;
        let empty = HashSet::new();
        for (i, (p, &q)) in train.iter().zip(&train_q).enumerate() {
            let pos_doc = by_id[p.positive.as_str()];
            let pos_score = dot(&q_vecs0[q], &doc_vecs0[pos_doc]);
            let positives = positives_of.get(&q).unwrap_or(&empty);
            let cands = candidates.get(&q).map(Vec::as_slice).unwrap_or(&[]);
            let limit = opts.margin * pos_score;
            dropped_false_negatives += cands
                .iter()
                .filter(|(id, s)| !positives.contains(id.as_str()) && *s >= limit)
                .count();
            let negs: Vec<usize> = positive_aware(
                cands,
                positives,
                pos_score,
                opts.margin,
                opts.hard_negatives,
            )
            .into_iter()
            .filter_map(|id| by_id.get(id).copied())
            .collect();
            negatives_total += negs.len();
            examples.push(Example {
                query: q,
                positive: if override_pairs.contains(&i) {
                    DocKey::Override(i)
                } else {
                    DocKey::Doc(pos_doc)
                },
                positive_doc: pos_doc,
                negatives: negs,
            });
        }

        // Two-stage training.
        let config = TrainConfig {
            lr: opts.lr,
            weight_decay: 0.01,
        };
        let mut training = match prepared {
            Prepared::States(inputs) => Training::Head {
                trainer: Box::new(HeadTrainer::new(&head0, config)?),
                inputs,
            },
            Prepared::Ids(inputs) => {
                let bert = embedder.base_bert().ok_or_else(|| {
                    Error::InvalidArgument("head+lora needs a BERT backbone".into())
                })?;
                let adapters = match embedder.lora() {
                    Some(a) => a.clone(),
                    None => {
                        let mut c = LoraConfig::new(bert, embedder.backbone_ref());
                        c.rank = opts.lora_rank;
                        c.alpha = opts.lora_alpha;
                        c.dropout = opts.lora_dropout;
                        LoraAdapters::new(c, opts.seed)?
                    }
                };
                let trainer = LoraTrainer::new(bert, &head0, &adapters, config, opts.seed)?;
                Training::Lora {
                    trainer: Box::new(trainer),
                    inputs,
                }
            }
        };
        let batches = Examples {
            examples: &examples,
            ids: &ids,
            positives_of: &positives_of,
        };
        let (stage1, stage2) = training.run_stages(&batches, opts, progress)?;

        // The new version.
        let mut history = self.model_history(collection)?;
        let version = history
            .versions
            .iter()
            .map(|v| v.version)
            .max()
            .unwrap_or(0)
            + 1;
        let vdir = collection_dir(self, collection).join(format!("v{version}"));
        if vdir.exists() {
            std::fs::remove_dir_all(&vdir).map_err(|e| {
                Error::InvalidArgument(format!("cannot replace {}: {e}", vdir.display()))
            })?;
        }
        let spec = ModelSpec::Dir(vdir.clone());
        let eval_texts: Vec<&str> = eval_queries
            .iter()
            .map(|&q| query_texts[q].as_str())
            .collect();
        let (doc_vecs, eval_vecs, new_embedder) = match &training {
            Training::Head { trainer, inputs } => {
                let head = trainer.finish(&vdir)?;
                // Adapters of the live version stay: the head was trained on their states.
                if let Some(adapters) = embedder.lora() {
                    adapters.save(&vdir)?;
                }
                set_backbone_path(&vdir, &head, &identity.path)?;
                phase("re-embedding into the shadow copy");
                let doc_vecs = embed_cached(&head, &inputs.docs.iter().collect::<Vec<_>>())?;
                let eval_refs: Vec<&TokenStates> =
                    eval_queries.iter().map(|&q| &inputs.queries[q]).collect();
                let eval_vecs = embed_cached(&head, &eval_refs)?;
                (doc_vecs, eval_vecs, self.embedders().load(&spec)?)
            }
            Training::Lora { trainer, .. } => {
                let (head, _) = trainer.finish(&vdir)?;
                set_backbone_path(&vdir, &head, &identity.path)?;
                // The saved version itself (adapters merged) re-embeds everything.
                let tuned = self.embedders().load(&spec)?;
                phase("re-embedding into the shadow copy");
                let doc_vecs = embed_texts(&tuned, &texts, &embed_opts(false, None), &phase)?;
                let eval_vecs = embed_texts(&tuned, &eval_texts, &embed_opts(true, None), &phase)?;
                (doc_vecs, eval_vecs, tuned)
            }
        };
        let after = held_out(&qrels, &eval_keys, exact_run(&eval_vecs, &doc_vecs, &ids));

        let better = after.ndcg_at_10 > before.ndcg_at_10;
        let switched = better || opts.force;
        let new_settings = EmbedderSettings {
            model: std::fs::canonicalize(&vdir)
                .unwrap_or_else(|_| vdir.clone())
                .to_string_lossy()
                .into_owned(),
            identity: new_embedder.identity().clone(),
            query_instruction: settings.query_instruction.clone(),
            tasks: settings.tasks.clone(),
        };
        history.versions.push(ModelVersion {
            version,
            settings: new_settings.clone(),
            ndcg_at_10: Some((before.ndcg_at_10, after.ndcg_at_10)),
            created_unix: now_unix(),
        });
        if switched {
            phase("switching the collection to the new version");
            let docs: Vec<Document> = docs
                .into_iter()
                .zip(doc_vecs)
                .map(|(mut d, v)| {
                    d.vector = Some(v);
                    d
                })
                .collect();
            self.switch_model(collection, &new_settings, docs)?;
            history.live.push(version);
        }
        self.save_model_history(&history)?;
        let decision = match (better, opts.force) {
            (true, _) => format!(
                "live: held-out nDCG@10 {:.4} -> {:.4}",
                before.ndcg_at_10, after.ndcg_at_10
            ),
            (false, true) => format!(
                "live (forced): held-out nDCG@10 {:.4} -> {:.4}",
                before.ndcg_at_10, after.ndcg_at_10
            ),
            (false, false) => format!(
                "kept the live model: held-out nDCG@10 {:.4} -> {:.4} is no gain",
                before.ndcg_at_10, after.ndcg_at_10
            ),
        };
        Ok(TuneReport {
            collection: collection.to_string(),
            train: opts.train,
            train_pairs: train.len(),
            eval_pairs: eval.len(),
            unknown_positives,
            hard_negatives_per_pair: negatives_total as f64 / examples.len().max(1) as f64,
            dropped_false_negatives,
            before,
            after,
            stage1,
            stage2,
            encode_seconds,
            seconds: started.elapsed().as_secs_f64(),
            version,
            path: vdir,
            switched,
            decision,
        })
    }
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
        .map_err(|e| Error::InvalidArgument(format!("head config: {e}")))?;
    std::fs::write(&path, json)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
}
