//! [`Tuner`]: the tuning service. A run goes through its phases in order: pairs
//! ([`Plan::build`]), encode ([`encode::encode`]), mine ([`negatives::mine`]), train
//! ([`Training`]), evaluate ([`evaluate::candidate`]) and publish ([`publish::switch`]).

use std::collections::HashMap;
use std::time::Instant;

use latentdb_embed::LoraConfig;

use super::encode::{self, Base};
use super::evaluate::{self, Candidate};
use super::negatives;
use super::pairs::Plan;
use super::publish;
use super::snapshot::{Shadow, Snapshot};
use super::train::{Examples, Training};
use super::versions::{self, ModelHistory, ModelVersion, now_unix};
use super::{
    FusionFitOptions, FusionFitReport, HeldOutMetrics, PairSource, TrainTarget, TuneOptions,
    TuneProgress, TuneReport,
};
use crate::database::Database;
use crate::embedding::{EmbedderSettings, identity_difference};
use crate::error::{Error, Result, bounded};

/// Tunes collections' embedders, keeps their model versions and rolls them back; a service
/// over a [`Database`]:
///
/// ```no_run
/// # fn main() -> latentdb::Result<()> {
/// use latentdb::Database;
/// use latentdb::tune::{PairSource, Tuner, TuneOptions};
/// let db = Database::open("data")?;
/// let report = Tuner::new(&db).tune("docs", PairSource::SelfSupervised, &TuneOptions::default(), &|_| {})?;
/// println!("{}", report.decision);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Tuner<'a> {
    db: &'a Database,
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

impl<'a> Tuner<'a> {
    /// The tuning service of `db`.
    pub fn new(db: &'a Database) -> Tuner<'a> {
        Tuner { db }
    }

    /// Tunes the embedder of `collection` on its own corpus (see [`crate::tune`]) and returns
    /// what happened. The collection keeps serving reads and writes on its current model
    /// throughout; the new version goes live only if its held-out nDCG@10 is higher (or
    /// `opts.force`), with the documents written meanwhile embedded by it and those deleted
    /// meanwhile left deleted.
    pub fn tune(
        &self,
        collection: &str,
        source: PairSource,
        opts: &TuneOptions,
        progress: &dyn Fn(TuneProgress),
    ) -> Result<TuneReport> {
        let started = Instant::now();
        validate(opts)?;
        let db = self.db;
        let phase = |s: &str| progress(TuneProgress::Phase(s.to_string()));
        let base = Base::load(db, collection, opts)?;

        phase("reading documents");
        let snapshot = Snapshot::read(db, collection)?;
        if snapshot.docs.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "collection {:?} is empty",
                bounded(collection)
            )));
        }
        let ids: Vec<String> = snapshot.docs.iter().map(|d| d.id.clone()).collect();
        let texts: Vec<&str> = snapshot.docs.iter().map(|d| d.text.as_str()).collect();
        let by_id: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();

        let plan = Plan::build(&ids, &texts, &by_id, source, opts)?;
        let encoded = encode::encode(&base, &texts, &plan, opts, &phase)?;
        let before_vecs: Vec<Vec<f32>> = plan
            .eval_queries
            .iter()
            .map(|&q| encoded.query_vecs[q].clone())
            .collect();
        let before = evaluate::held_out(&plan, &before_vecs, &encoded.doc_vecs, &ids);

        phase("mining hard negatives from the index");
        let mined = negatives::mine(
            db,
            collection,
            &plan,
            &by_id,
            &encoded.doc_vecs,
            &encoded.query_vecs,
            opts,
        )?;

        let mut training = Training::build(encoded.prepared, &base, opts)?;
        let batches = Examples {
            examples: &mined.examples,
            ids: &ids,
            positives_of: &mined.positives_of,
        };
        let (stage1, stage2) = training.run_stages(&batches, opts, progress)?;

        let history = versions::load(db, collection)?;
        let version = versions::next_version(db, collection, &history);
        let candidate = evaluate::candidate(
            db, collection, version, &base, &training, &texts, &ids, &plan, &phase,
        )?;
        drop(training);
        drop(texts);

        let after = candidate.after;
        let better = after.ndcg_at_10 > before.ndcg_at_10;
        let switched = better || opts.force;
        let (path, version) = (candidate.dir.clone(), candidate.version);
        self.publish(
            collection, history, &base, snapshot, candidate, &before, switched, &phase,
        )?;
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
            train_pairs: plan.train.len(),
            eval_pairs: plan.eval_pairs,
            unknown_positives: plan.unknown_positives,
            hard_negatives_per_pair: mined.negatives as f64 / mined.examples.len().max(1) as f64,
            dropped_false_negatives: mined.dropped_false_negatives,
            before,
            after,
            stage1,
            stage2,
            encode_seconds: encoded.seconds,
            seconds: started.elapsed().as_secs_f64(),
            version,
            path,
            switched,
            decision,
        })
    }

    /// The publish phase: records the candidate in the history and, when `switch`, makes it
    /// live (history saved first, collection switched last).
    #[allow(clippy::too_many_arguments)]
    fn publish(
        &self,
        collection: &str,
        previous: ModelHistory,
        base: &Base,
        snapshot: Snapshot,
        candidate: Candidate,
        before: &HeldOutMetrics,
        switch: bool,
        phase: &dyn Fn(&str),
    ) -> Result<()> {
        let dir = std::fs::canonicalize(&candidate.dir).unwrap_or_else(|_| candidate.dir.clone());
        let settings = EmbedderSettings {
            model: dir.to_string_lossy().into_owned(),
            identity: candidate.embedder.identity().clone(),
            query_instruction: base.settings.query_instruction.clone(),
            tasks: base.settings.tasks.clone(),
        };
        let mut history = previous.clone();
        history.versions.push(ModelVersion {
            version: candidate.version,
            settings: settings.clone(),
            ndcg_at_10: Some((before.ndcg_at_10, candidate.after.ndcg_at_10)),
            created_unix: now_unix(),
        });
        if !switch {
            return versions::save(self.db, &history);
        }
        history.live.push(candidate.version);
        let shadow = Shadow::new(snapshot, candidate.doc_vecs)?;
        publish::switch(
            self.db,
            collection,
            &history,
            &previous,
            &settings,
            shadow,
            &candidate.embedder,
            phase,
        )
    }

    /// Returns a collection to the model version that was live before the current one,
    /// re-embedding every document with it (documents written meanwhile included, those
    /// deleted meanwhile left deleted). Returns the version now live.
    pub fn rollback(&self, collection: &str, progress: &dyn Fn(&str)) -> Result<u32> {
        let db = self.db;
        let previous = versions::load(db, collection)?;
        if previous.live.len() < 2 {
            return Err(Error::FailedPrecondition(format!(
                "collection {:?} has no earlier model version to return to",
                bounded(collection)
            )));
        }
        let target = previous.live[previous.live.len() - 2];
        let version = previous.get(target).cloned().ok_or_else(|| {
            Error::Internal(format!(
                "the model history of {:?} names version {target} but does not hold it",
                bounded(collection)
            ))
        })?;
        let embedder = db.embedders().load(&version.settings.spec())?;
        if let Some(reason) = identity_difference(&version.settings.identity, embedder.identity()) {
            return Err(Error::ModelMismatch {
                collection: bounded(collection),
                reason,
            });
        }
        let snapshot = Snapshot::read(db, collection)?;
        progress(&format!(
            "re-embedding {} documents with version {target}",
            snapshot.docs.len()
        ));
        let texts: Vec<&str> = snapshot.docs.iter().map(|d| d.text.as_str()).collect();
        let vectors = encode::embed_texts(
            &embedder,
            &texts,
            &latentdb_embed::EmbedOptions {
                batch_size: crate::embedding::EMBED_BATCH,
                ..latentdb_embed::EmbedOptions::default()
            },
            progress,
        )?;
        drop(texts);
        let mut history = previous.clone();
        history.live.pop();
        let shadow = Shadow::new(snapshot, vectors)?;
        publish::switch(
            db,
            collection,
            &history,
            &previous,
            &version.settings,
            shadow,
            &embedder,
            progress,
        )?;
        Ok(target)
    }

    /// The model history of a collection with an embedder: its versions and which is live.
    /// A collection never tuned has one version, 0, its current model.
    pub fn history(&self, collection: &str) -> Result<ModelHistory> {
        versions::load(self.db, collection)
    }

    /// Fits the default fusion of `collection`'s hybrid search on the judged queries of
    /// `split` of `dataset` (see [`FusionFitOptions`]): one dense and one lexical search per
    /// query, then a grid search of the fusion parameters for the best nDCG@10 on that split.
    /// The best set becomes the collection's default (with `opts.depth`) only if it beats both
    /// legs and `opts.store`. Only `split` is read: fit on `train`, evaluate on `test`. Loads
    /// the corpus first if the collection is empty. The model is not changed.
    pub fn fit_fusion(
        &self,
        collection: &str,
        dataset: &crate::eval::BeirDataset,
        split: &str,
        opts: &FusionFitOptions,
    ) -> Result<FusionFitReport> {
        super::fusion_fit::fit(self.db, collection, dataset, split, opts)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use latentdb_embed::ModelSpec;
    use latentdb_storage::{CollectionSpec, Document, Metric};

    use super::*;
    use crate::eval::BeirDataset;
    use crate::tune::beir_pairs;
    use crate::tune::versions::FAIL_SAVES;

    /// A database with a 24-document collection "small" on the default model, and its pairs.
    fn small() -> (tempfile::TempDir, Database, Vec<crate::tune::TrainPair>) {
        if ModelSpec::Default.resolve().is_err() {
            let dir = latentdb_embed::fetch::models_dir();
            latentdb_embed::fetch_default(&dir).expect("fetching the default model");
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/datasets/spamassassin-subjects");
        let ds = BeirDataset::open(&root).expect("the fixture dataset");
        let pairs: Vec<_> = beir_pairs(&ds, "train")
            .expect("pairs")
            .into_iter()
            .take(24)
            .collect();
        let wanted: std::collections::HashSet<&str> =
            pairs.iter().map(|p| p.positive.as_str()).collect();
        let docs: Vec<Document> = ds
            .corpus()
            .expect("corpus")
            .map(|d| d.expect("a document"))
            .filter(|d| wanted.contains(d.id.as_str()))
            .map(|d| Document {
                id: Some(d.id),
                text: Some(d.text.chars().take(200).collect()),
                ..Document::default()
            })
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::open(dir.path()).expect("open");
        db.create_collection_with_model(
            CollectionSpec::new("small", 0, Metric::Cosine),
            &ModelSpec::Default,
        )
        .expect("create");
        db.upsert("small", docs).expect("upsert");
        (dir, db, pairs)
    }

    fn forced() -> TuneOptions {
        TuneOptions {
            holdout: 0.3,
            stage1_steps: 2,
            stage2_steps: 1,
            batch_size: 4,
            hard_negatives: 2,
            force: true,
            ..TuneOptions::default()
        }
    }

    /// The history is saved before the collection switches: when saving it fails, neither a
    /// tuned version nor a rollback goes live, so the history always knows the live version.
    #[test]
    fn the_history_is_saved_before_the_collection_switches() {
        let (_dir, db, pairs) = small();
        let tuner = Tuner::new(&db);
        let original = db.embedder_settings("small").expect("settings");
        FAIL_SAVES.with(|f| f.set(true));
        let failed = tuner.tune(
            "small",
            PairSource::Pairs(pairs.clone()),
            &forced(),
            &|_| {},
        );
        FAIL_SAVES.with(|f| f.set(false));
        assert!(failed.is_err());
        assert_eq!(db.embedder_settings("small").expect("settings"), original);

        let report = tuner
            .tune("small", PairSource::Pairs(pairs), &forced(), &|_| {})
            .expect("tune");
        assert!(report.switched);
        let tuned = db.embedder_settings("small").expect("settings");
        assert_ne!(tuned, original);
        FAIL_SAVES.with(|f| f.set(true));
        let failed = tuner.rollback("small", &|_| {});
        FAIL_SAVES.with(|f| f.set(false));
        assert!(failed.is_err());
        assert_eq!(db.embedder_settings("small").expect("settings"), tuned);
        assert_eq!(tuner.history("small").expect("history").live.len(), 2);
        assert_eq!(tuner.rollback("small", &|_| {}).expect("rollback"), 0);
        assert_eq!(db.embedder_settings("small").expect("settings"), original);
    }
}
