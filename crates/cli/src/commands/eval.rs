//! `latentdb eval NAME --beir DIR`: retrieval quality on a BEIR-format dataset.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use latentdb::eval::{BeirDataset, EvalOptions, EvalReport, Evaluator};
use latentdb::fusion::FusionMethod;
use latentdb::{Database, SearchMode};

use crate::commands::search::FusionArgs;
use crate::output::Out;

/// The retrieval `eval` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalModeArg {
    /// Nearest vectors of the embedded queries.
    Dense,
    /// BM25 over the stored texts.
    Lexical,
    /// Dense and lexical, fused.
    Hybrid,
    /// Each of dense, lexical and hybrid in turn: one report per mode.
    All,
}

impl EvalModeArg {
    /// The modes to run, in order.
    fn modes(self) -> Vec<SearchMode> {
        match self {
            EvalModeArg::Dense => vec![SearchMode::Dense],
            EvalModeArg::Lexical => vec![SearchMode::Lexical],
            EvalModeArg::Hybrid => vec![SearchMode::Hybrid],
            EvalModeArg::All => SearchMode::ALL.to_vec(),
        }
    }
}

/// Arguments of `eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The collection (created with a model; the corpus is loaded into it when it is empty).
    pub name: String,
    /// The dataset directory: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv.
    #[arg(long, value_name = "DIR")]
    pub beir: PathBuf,
    /// The qrels split.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// A task naming the query instruction (NQ, MSMARCO, ... or one stored with the collection).
    #[arg(long, conflicts_with = "instruction")]
    pub task: Option<String>,
    /// A query instruction sentence.
    #[arg(long)]
    pub instruction: Option<String>,
    /// The extra cutoff reported as nDCG@k and recall@k (at least 100 hits are retrieved).
    #[arg(short, default_value_t = 10)]
    pub k: usize,
    /// Brute-force search (the difference to the default is the ANN loss).
    #[arg(long)]
    pub exact: bool,
    /// The graph's candidate list size.
    #[arg(long)]
    pub ef: Option<usize>,
    /// dense, lexical, hybrid, or all (one report each) [default: hybrid for a collection
    /// with a lexical index, dense otherwise].
    #[arg(long, value_enum)]
    pub mode: Option<EvalModeArg>,
    #[command(flatten)]
    pub fusion: FusionArgs,
}

/// The evaluation options of the arguments, for one mode (`None`: the search default).
fn eval_options(a: &EvalArgs, mode: Option<SearchMode>) -> EvalOptions {
    EvalOptions {
        split: a.split.clone(),
        task: a.task.clone(),
        instruction: a.instruction.clone(),
        k: a.k,
        exact: a.exact,
        ef: a.ef,
        mode,
        fusion: a.fusion.fusion.map(FusionMethod::from),
        rrf_k: a.fusion.rrf_k,
        weights: a.fusion.weights,
        depth: a.fusion.depth,
    }
}

pub fn run(a: EvalArgs, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    let ds = BeirDataset::open(&a.beir)?;
    let modes: Vec<Option<SearchMode>> = match a.mode {
        None => vec![None],
        Some(m) => m.modes().into_iter().map(Some).collect(),
    };
    let quiet = out.is_json();
    for (i, mode) in modes.iter().enumerate() {
        // The corpus is loaded by the first run (the collection is empty only then).
        let opts = eval_options(&a, *mode);
        let report = Evaluator::new(db).evaluate_beir(&a.name, &ds, &opts, &|n| {
            if !quiet && n % 1024 == 0 {
                eprintln!("loaded {n} documents");
            }
        })?;
        if i > 0 && !quiet {
            // A blank line between the reports of --mode all.
            out.either(&serde_json::Value::Null, String::new)?;
        }
        print_report(&report, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints one report: a JSON object with `--json`, a few readable lines otherwise.
fn print_report(report: &EvalReport, out: &mut Out) -> anyhow::Result<()> {
    let value = serde_json::to_value(report)?;
    out.either(&value, || {
        let m = &report.metrics;
        let mut s = String::new();
        if report.ingested > 0 {
            s.push_str(&format!(
                "loaded {} documents in {:.1}s\n",
                report.ingested, report.ingest_seconds
            ));
        }
        s.push_str(&format!(
            "{} queries ({} split, {} search{})\nnDCG@10    {:.4}\nMRR@10     {:.4}\nrecall@10  {:.4}\nrecall@100 {:.4}\n",
            m.queries,
            report.split,
            report.mode,
            match (report.mode.as_str(), report.exact) {
                ("lexical", _) => "",
                (_, true) => ", exact",
                (_, false) => ", ANN",
            },
            m.ndcg_at_10,
            m.mrr_at_10,
            m.recall_at_10,
            m.recall_at_100,
        ));
        if report.k != 10 && report.k != 100 {
            s.push_str(&format!(
                "nDCG@{k:<5}{:.4}\nrecall@{k:<3}{:.4}\n",
                report.ndcg_at_k,
                report.recall_at_k,
                k = report.k
            ));
        }
        s.push_str(&format!("QPS        {:.1}", report.qps));
        s
    })
}
