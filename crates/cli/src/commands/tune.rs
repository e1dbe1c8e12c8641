//! `latentdb tune NAME`: adapt a collection's embedder to its corpus (NV-Embed's two-stage
//! contrastive tuning with positive-aware hard negatives), and `latentdb model rollback NAME`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::json;

use latentdb::Database;
use latentdb::eval::BeirDataset;
use latentdb::tune::{
    FusionFitOptions, FusionFitReport, PairSource, TrainPair, TuneOptions, TuneProgress, Tuner,
    beir_pairs, read_pairs_jsonl,
};

use crate::output::Out;

/// What `tune` trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TrainArg {
    /// The latent-attention head on the frozen backbone.
    Head,
    /// The head and LoRA adapters on the backbone's attention projections (the backbone runs
    /// in every step: slower).
    #[value(name = "head+lora")]
    HeadLora,
}

/// Arguments of `tune`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(true).args(["pairs", "beir", "self_supervised"])))]
pub struct TuneArgs {
    /// The collection (created with a model).
    pub name: String,
    /// Training pairs: JSONL lines `{"query": TEXT, "positive": DOC_ID}`.
    #[arg(long, value_name = "PAIRS.jsonl", conflicts_with_all = ["beir", "self_supervised"])]
    pub pairs: Option<PathBuf>,
    /// A BEIR-format dataset whose qrels split gives the pairs (with --self-supervised: only
    /// the --eval-split to evaluate on).
    #[arg(long, value_name = "DIR")]
    pub beir: Option<PathBuf>,
    /// The BEIR qrels split to train on.
    #[arg(long, default_value = "train", requires = "beir")]
    pub split: String,
    /// A BEIR qrels split held out for evaluation instead of `--holdout` (e.g. `test`).
    #[arg(long, requires = "beir")]
    pub eval_split: Option<String>,
    /// Pairs from the collection's own text (keyword queries: a few of each document's most
    /// distinctive words, with the document as the positive); with --beir DIR --eval-split S,
    /// evaluated on the dataset's labelled split S instead of a holdout of the synthetic pairs.
    #[arg(long)]
    pub self_supervised: bool,
    /// Fraction of the queries held out for evaluation (never trained on).
    #[arg(long, default_value_t = 0.2)]
    pub holdout: f64,
    /// What is trained: head+lora gains most per minute (see the README's tuning figures).
    #[arg(long, value_enum, default_value_t = TrainArg::HeadLora)]
    pub train: TrainArg,
    /// Steps of stage 1 (in-batch and hard negatives) [default: 200; head+lora: 60].
    #[arg(long)]
    pub stage1_steps: Option<usize>,
    /// Steps of stage 2 (hard negatives only, task instruction on queries) [default: 100;
    /// head+lora: 30].
    #[arg(long)]
    pub stage2_steps: Option<usize>,
    /// Hard negatives per query, mined from the collection's index [default: 7; head+lora: 3].
    #[arg(long)]
    pub hard_negatives: Option<usize>,
    /// Positive-aware margin: a candidate is a negative only below margin x positive score.
    #[arg(long, default_value_t = 0.95)]
    pub margin: f32,
    /// Candidates searched per training query when mining hard negatives (0: 3 x
    /// hard-negatives + 10).
    #[arg(long, value_name = "N")]
    pub mine_depth: Option<usize>,
    /// InfoNCE temperature.
    #[arg(long, default_value_t = 0.05)]
    pub temperature: f64,
    /// Stage 1 also trains the reverse direction (each positive document against the
    /// batch's queries: a symmetric InfoNCE).
    #[arg(long)]
    pub symmetric: bool,
    /// With labelled pairs, also train on keyword queries made from every document (a few
    /// of its most distinctive words, as --self-supervised makes them).
    #[arg(long, conflicts_with = "self_supervised")]
    pub keyword_pairs: bool,
    /// Queries per step [default: 16; head+lora: 8].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak AdamW learning rate [default: 2e-4; head+lora: 5e-4, 2e-4 with --self-supervised].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Tokens of each document sampled per step (0: all); with head+lora, documents are cut
    /// to their first N tokens [default: 48; head+lora: 256].
    #[arg(long)]
    pub train_tokens: Option<usize>,
    /// LoRA rank (head+lora).
    #[arg(long, default_value_t = 16)]
    pub lora_rank: usize,
    /// LoRA alpha: updates are scaled by alpha / rank (head+lora).
    #[arg(long, default_value_t = 32.0)]
    pub lora_alpha: f64,
    /// Dropout on the LoRA adapters' input during training (head+lora).
    #[arg(long, default_value_t = 0.1)]
    pub lora_dropout: f64,
    /// Adapt only the backbone's top N layers (0: all); the frozen layers below run once per
    /// text instead of in every step: faster steps, smaller gains (head+lora).
    #[arg(long, value_name = "N")]
    pub lora_layers: Option<usize>,
    /// Seed of the holdout split, sampling and initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Make the new version live even if it is not better on the held-out queries.
    #[arg(long)]
    pub force: bool,
    /// Train nothing: fit the collection's hybrid fusion (method, RRF k, weights) on the
    /// --beir dataset's --split by grid search over one dense and one lexical search per
    /// query, and make the best the collection's default if it beats both legs.
    #[arg(long, requires = "beir", conflicts_with_all = [
        "eval_split", "force", "holdout", "train", "stage1_steps", "stage2_steps",
        "hard_negatives", "margin", "mine_depth", "temperature", "symmetric", "keyword_pairs", "batch_size", "lr", "train_tokens",
        "lora_rank", "lora_alpha", "lora_dropout", "lora_layers", "seed", "pairs", "self_supervised",
    ])]
    pub fusion_only: bool,
    /// With --fusion-only: candidates per leg, fitted for and stored with the fusion.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        requires = "fusion_only"
    )]
    pub fusion_depth: usize,
    /// With --fusion-only: report the best fusion without storing it.
    #[arg(long, requires = "fusion_only")]
    pub dry_run: bool,
}

/// Arguments of `model rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The collection.
    pub name: String,
}

/// The tuning options the arguments ask for: flags left unset take the defaults of the
/// training target ([`TuneOptions::default`] or [`TuneOptions::head_lora`]), made
/// [`TuneOptions::self_supervised`] for --self-supervised.
fn tune_options(a: &TuneArgs, eval_pairs: Option<Vec<TrainPair>>) -> TuneOptions {
    let mut defaults = match a.train {
        TrainArg::Head => TuneOptions::default(),
        TrainArg::HeadLora => TuneOptions::head_lora(),
    };
    if a.self_supervised {
        defaults = defaults.self_supervised();
    }
    TuneOptions {
        holdout: a.holdout,
        eval_pairs,
        train: defaults.train,
        stage1_steps: a.stage1_steps.unwrap_or(defaults.stage1_steps),
        stage2_steps: a.stage2_steps.unwrap_or(defaults.stage2_steps),
        hard_negatives: a.hard_negatives.unwrap_or(defaults.hard_negatives),
        margin: a.margin,
        mine_depth: a.mine_depth.unwrap_or(defaults.mine_depth),
        temperature: a.temperature,
        symmetric: a.symmetric || defaults.symmetric,
        keyword_pairs: a.keyword_pairs || defaults.keyword_pairs,
        batch_size: a.batch_size.unwrap_or(defaults.batch_size),
        lr: a.lr.unwrap_or(defaults.lr),
        seed: a.seed,
        train_tokens: a.train_tokens.unwrap_or(defaults.train_tokens),
        lora_rank: a.lora_rank,
        lora_alpha: a.lora_alpha,
        lora_dropout: a.lora_dropout,
        lora_layers: a.lora_layers.unwrap_or(defaults.lora_layers),
        force: a.force,
    }
}

/// `tune --fusion-only`: fits the fusion; no model is trained or changed.
fn fit_fusion(
    a: &TuneArgs,
    dir: &std::path::Path,
    db: &Database,
    out: &mut Out,
) -> anyhow::Result<ExitCode> {
    let ds = BeirDataset::open(dir)?;
    let opts = FusionFitOptions {
        depth: a.fusion_depth,
        store: !a.dry_run,
        ..FusionFitOptions::default()
    };
    if !out.is_json() {
        eprintln!(
            "fitting the fusion of {} on the {} split (dense and lexical searches, then a grid \
             search)",
            a.name, a.split
        );
    }
    let report = Tuner::new(db).fit_fusion(&a.name, &ds, &a.split, &opts)?;
    out.either(&serde_json::to_value(&report)?, || fusion_text(&report))?;
    Ok(ExitCode::SUCCESS)
}

/// A fusion fit as readable lines.
fn fusion_text(r: &FusionFitReport) -> String {
    let params = |p: &latentdb::fusion::FusionParams| {
        format!(
            "{} rrf_k={} weights={},{}",
            p.method, p.rrf_k, p.weights[0], p.weights[1]
        )
    };
    let mut s = format!(
        "{} queries ({} split), depth {}, {} configurations\n\
         dense    nDCG@10 {:.4}  recall@100 {:.4}\n\
         lexical  nDCG@10 {:.4}  recall@100 {:.4}\n\
         previous nDCG@10 {:.4}  recall@100 {:.4}  {}\n\
         best     nDCG@10 {:.4}  recall@100 {:.4}  {}\n",
        r.queries,
        r.split,
        r.depth,
        r.configurations,
        r.dense.ndcg_at_10,
        r.dense.recall_at_100,
        r.lexical.ndcg_at_10,
        r.lexical.recall_at_100,
        r.previous.metrics.ndcg_at_10,
        r.previous.metrics.recall_at_100,
        params(&r.previous.params),
        r.best.metrics.ndcg_at_10,
        r.best.metrics.recall_at_100,
        params(&r.best.params),
    );
    for c in &r.alternatives {
        s.push_str(&format!(
            "         nDCG@10 {:.4}  recall@100 {:.4}  {}\n",
            c.metrics.ndcg_at_10,
            c.metrics.recall_at_100,
            params(&c.params)
        ));
    }
    s.push_str(&r.decision);
    s
}

pub fn run(a: TuneArgs, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    if a.fusion_only {
        if let Some(dir) = &a.beir {
            return fit_fusion(&a, dir, db, out);
        }
        anyhow::bail!("--fusion-only needs --beir DIR");
    }
    let mut eval_pairs = None;
    let source = if a.self_supervised {
        if let Some(dir) = &a.beir {
            let Some(split) = &a.eval_split else {
                anyhow::bail!(
                    "--self-supervised trains on the collection's own text: --beir DIR only \
                     names the labelled --eval-split to evaluate on, and needs it"
                );
            };
            eval_pairs = Some(beir_pairs(&BeirDataset::open(dir)?, split)?);
        }
        PairSource::SelfSupervised
    } else if let Some(p) = &a.pairs {
        PairSource::Pairs(read_pairs_jsonl(p)?)
    } else if let Some(dir) = &a.beir {
        let ds = BeirDataset::open(dir)?;
        if let Some(split) = &a.eval_split {
            eval_pairs = Some(beir_pairs(&ds, split)?);
        }
        PairSource::Pairs(beir_pairs(&ds, &a.split)?)
    } else {
        PairSource::SelfSupervised
    };
    let opts = tune_options(&a, eval_pairs);
    let quiet = out.is_json();
    let progress = |p: TuneProgress| {
        if quiet {
            return;
        }
        match p {
            TuneProgress::Phase(s) => eprintln!("{s}"),
            TuneProgress::Step {
                stage,
                step,
                of,
                loss,
                pairs_per_second,
            } => {
                if step == 1 || step == of || step % 10 == 0 {
                    eprint!(
                        "\rstage {stage}: step {step}/{of}  loss {loss:.4}  {pairs_per_second:.1} pairs/s   "
                    );
                    if step == of {
                        eprintln!();
                    }
                    let _ = std::io::stderr().flush();
                }
            }
        }
    };
    let report = Tuner::new(db).tune(&a.name, source, &opts, &progress)?;
    let value = serde_json::to_value(&report)?;
    out.either(&value, || {
        format!(
            "{} training pairs, {} held out; {:.1} hard negatives per pair ({} likely false \
             negatives dropped)\nheld-out nDCG@10 {:.4} -> {:.4}, recall@10 {:.4} -> {:.4}\n\
             stage 1: {} steps in {:.1}s ({:.1} pairs/s), loss {:.3} -> {:.3}\n\
             stage 2: {} steps in {:.1}s ({:.1} pairs/s), loss {:.3} -> {:.3}\n\
             version {} at {}\n{} ({:.1}s in total)",
            report.train_pairs,
            report.eval_pairs,
            report.hard_negatives_per_pair,
            report.dropped_false_negatives,
            report.before.ndcg_at_10,
            report.after.ndcg_at_10,
            report.before.recall_at_10,
            report.after.recall_at_10,
            report.stage1.steps,
            report.stage1.seconds,
            report.stage1.pairs_per_second,
            report.stage1.first_loss,
            report.stage1.last_loss,
            report.stage2.steps,
            report.stage2.seconds,
            report.stage2.pairs_per_second,
            report.stage2.first_loss,
            report.stage2.last_loss,
            report.version,
            report.path.display(),
            report.decision,
            report.seconds,
        )
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn rollback(a: RollbackArgs, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    let quiet = out.is_json();
    let version = Tuner::new(db).rollback(&a.name, &|s| {
        if !quiet {
            eprintln!("{s}");
        }
    })?;
    out.either(&json!({"collection": a.name, "version": version}), || {
        format!("collection {} is back on model version {version}", a.name)
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use latentdb::tune::TrainTarget;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: TuneArgs,
    }

    fn options(argv: &[&str]) -> TuneOptions {
        let mut full = vec!["tune", "docs", "--pairs", "p.jsonl"];
        full.extend_from_slice(argv);
        let cmd = Cmd::try_parse_from(full).expect("arguments parse");
        tune_options(&cmd.args, None)
    }

    #[test]
    fn self_supervised_head_lora_takes_a_lower_learning_rate() {
        let parse = |argv: &[&str]| {
            let mut full = vec!["tune", "docs", "--self-supervised"];
            full.extend_from_slice(argv);
            tune_options(&Cmd::try_parse_from(full).expect("parses").args, None)
        };
        let lora = parse(&[]);
        assert_eq!(lora.train, TrainTarget::HeadLora);
        assert!((lora.lr - latentdb::tune::SELF_SUPERVISED_LORA_LR).abs() < 1e-12);
        assert!(lora.lr < TuneOptions::head_lora().lr);
        assert_eq!(lora.stage1_steps, TuneOptions::head_lora().stage1_steps);
        assert!((parse(&["--lr", "1e-3"]).lr - 1e-3).abs() < 1e-12);
        assert_eq!(parse(&["--train", "head"]), TuneOptions::default());
    }

    #[test]
    fn each_target_takes_its_own_defaults_unless_a_flag_is_given() {
        // head+lora is the default target.
        let lora = options(&[]);
        assert_eq!(lora, TuneOptions::head_lora());
        assert_eq!(lora.train, TrainTarget::HeadLora);
        assert_eq!(options(&["--train", "head+lora"]), lora);
        let head = options(&["--train", "head"]);
        assert_eq!(head, TuneOptions::default());
        assert!(head.lr < lora.lr);
        assert!((options(&["--lr", "1e-3"]).lr - 1e-3).abs() < 1e-12);
        assert_eq!((lora.mine_depth, lora.lora_layers), (0, 0));
        let deep = options(&["--mine-depth", "40", "--lora-layers", "2"]);
        assert_eq!((deep.mine_depth, deep.lora_layers), (40, 2));
        let set = options(&[
            "--train",
            "head+lora",
            "--batch-size",
            "4",
            "--stage1-steps",
            "7",
            "--train-tokens",
            "32",
            "--lora-rank",
            "8",
            "--lora-alpha",
            "16",
            "--lora-dropout",
            "0",
        ]);
        assert_eq!(
            (set.batch_size, set.stage1_steps, set.train_tokens),
            (4, 7, 32)
        );
        assert_eq!(set.stage2_steps, TuneOptions::head_lora().stage2_steps);
        assert_eq!(set.lora_rank, 8);
        assert!((set.lora_alpha - 16.0).abs() < 1e-12 && set.lora_dropout.abs() < 1e-12);
        assert!(
            Cmd::try_parse_from(["tune", "docs", "--self-supervised", "--train", "lora"]).is_err()
        );
    }

    #[test]
    fn pair_sources_combine_only_as_documented() {
        let parse = |argv: &[&str]| {
            let mut full = vec!["tune", "docs"];
            full.extend_from_slice(argv);
            Cmd::try_parse_from(full)
        };
        assert!(parse(&[]).is_err());
        assert!(parse(&["--pairs", "p.jsonl", "--beir", "d"]).is_err());
        assert!(parse(&["--pairs", "p.jsonl", "--self-supervised"]).is_err());
        // Self-supervised training evaluated on a labelled BEIR split.
        let cmd =
            parse(&["--self-supervised", "--beir", "d", "--eval-split", "test"]).expect("parses");
        assert!(cmd.args.self_supervised);
        assert_eq!(cmd.args.eval_split.as_deref(), Some("test"));
    }

    #[test]
    fn fusion_only_needs_beir_and_takes_no_training_flags() {
        let cmd = Cmd::try_parse_from([
            "tune",
            "docs",
            "--beir",
            "dir",
            "--fusion-only",
            "--fusion-depth",
            "50",
            "--dry-run",
        ])
        .expect("parses");
        assert!(cmd.args.fusion_only && cmd.args.dry_run);
        assert_eq!(cmd.args.fusion_depth, 50);
        assert_eq!(cmd.args.split, "train");
        for extra in [
            &["--lr", "0.1"][..],
            &["--train", "head+lora"][..],
            &["--stage1-steps", "3"][..],
            &["--force"][..],
            &["--eval-split", "test"][..],
        ] {
            let mut argv = vec!["tune", "docs", "--beir", "dir", "--fusion-only"];
            argv.extend_from_slice(extra);
            assert!(Cmd::try_parse_from(&argv).is_err(), "{extra:?}");
        }
        assert!(
            Cmd::try_parse_from(["tune", "docs", "--self-supervised", "--fusion-only"]).is_err()
        );
        assert!(Cmd::try_parse_from(["tune", "docs", "--beir", "d", "--dry-run"]).is_err());
    }
}
