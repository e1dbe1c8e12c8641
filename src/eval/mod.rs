//! Retrieval evaluation: reading BEIR-format datasets ([`beir`]) and computing nDCG@10,
//! MRR@10, recall@10 and recall@100 as BEIR and `pytrec_eval` define them ([`metrics`]), and the
//! [`Evaluator`] service, which runs a dataset's queries against a collection ([`run`]).

pub mod beir;
pub mod metrics;
pub mod run;

pub use beir::{BeirDataset, BeirError, CorpusDoc};
pub use metrics::{Hits, Metrics, Qrels, evaluate};
pub use run::{EvalOptions, EvalReport, Evaluator};
