//! `latentdb eval NAME --beir DIR`: retrieval quality on a BEIR-format dataset.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use latentdb::Database;
use latentdb::eval::{BeirDataset, EvalOptions, Evaluator};

use crate::output::Out;

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
}

pub fn run(a: EvalArgs, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    let ds = BeirDataset::open(&a.beir)?;
    let opts = EvalOptions {
        split: a.split,
        task: a.task,
        instruction: a.instruction,
        k: a.k,
        exact: a.exact,
        ef: a.ef,
    };
    let quiet = out.is_json();
    let report = Evaluator::new(db).evaluate_beir(&a.name, &ds, &opts, &|n| {
        if !quiet && n % 1024 == 0 {
            eprintln!("loaded {n} documents");
        }
    })?;
    let value = serde_json::to_value(&report)?;
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
            "{} queries ({} split, {} search)\nnDCG@10    {:.4}\nMRR@10     {:.4}\nrecall@10  {:.4}\nrecall@100 {:.4}\n",
            m.queries,
            report.split,
            if report.exact { "exact" } else { "ANN" },
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
    })?;
    Ok(ExitCode::SUCCESS)
}
