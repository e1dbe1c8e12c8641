//! `latentdb collection ...`

use std::process::ExitCode;

use serde_json::json;

use latentdb::{CollectionSpec, Database, Metric};

use crate::cli::{CollectionCommand, MetricArg};
use crate::output::{Out, collection_json, collection_text};

pub fn run(cmd: CollectionCommand, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    match cmd {
        CollectionCommand::Create(a) => {
            let metric = match a.metric {
                MetricArg::Cosine => Metric::Cosine,
                MetricArg::Dot => Metric::Dot,
                MetricArg::L2 => Metric::L2,
            };
            let info = db.create_collection(CollectionSpec::new(a.name, a.dim, metric))?;
            out.either(&collection_json(&info), || {
                format!("created {}", collection_text(&info))
            })?;
        }
        CollectionCommand::List => {
            let all = db.list_collections();
            if out.is_json() {
                for info in &all {
                    out.json(&collection_json(info))?;
                }
            } else if all.is_empty() {
                out.either(&json!({}), || "no collections".into())?;
            } else {
                for info in &all {
                    out.either(&json!({}), || collection_text(info))?;
                }
            }
        }
        CollectionCommand::Info(a) => {
            let info = db.collection_info(&a.name)?;
            out.either(&collection_json(&info), || collection_text(&info))?;
        }
        CollectionCommand::Drop(a) => {
            db.drop_collection(&a.name)?;
            out.either(&json!({"dropped": a.name}), || {
                format!("dropped {}", a.name)
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
