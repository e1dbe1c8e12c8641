//! `latentdb collection ...`

use std::process::ExitCode;

use serde_json::json;

use anyhow::Context;
use latentdb::embed::{ModelSpec, fetch_default, models_dir};
use latentdb::{CollectionSpec, Database, LexicalSettings, Metric, Stopwords};

use crate::cli::{CollectionCommand, CreateArgs, MetricArg};
use crate::output::{Out, collection_json, collection_text};

/// `collection create --router ADDR`: the collection is created in a cluster by its router.
pub fn create_on_router(a: CreateArgs, out: &mut Out) -> anyhow::Result<ExitCode> {
    use latentdb_server::convert::json_to_struct;
    use latentdb_server::pb;
    let as_struct = |v: serde_json::Value| match v {
        serde_json::Value::Object(m) => Some(json_to_struct(m)),
        _ => None,
    };
    let metric = match a.metric {
        MetricArg::Cosine => pb::Metric::Cosine,
        MetricArg::Dot => pb::Metric::Dot,
        MetricArg::L2 => pb::Metric::L2,
    };
    let request = pb::CreateCollectionRequest {
        name: a.name.clone(),
        dimension: u32::try_from(a.dim.unwrap_or(0)).context("--dim is too large")?,
        metric: metric as i32,
        index: as_struct(index_settings(&a)),
        model: a.model.clone().unwrap_or_default(),
        lexical: as_struct(lexical_settings(&a)?),
        shards: a.shards.unwrap_or(1),
        replicas: a.replicas.unwrap_or(1),
    };
    let router = a.router.clone().unwrap_or_default();
    let url = if router.contains("://") {
        router.clone()
    } else {
        format!("http://{router}")
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let info = runtime.block_on(async {
        let mut client = pb::latent_db_client::LatentDbClient::connect(url)
            .await
            .with_context(|| format!("cannot reach the router at {router}"))?;
        client
            .create_collection(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| anyhow::anyhow!("the router refused: {:?}: {}", s.code(), s.message()))
    })?;
    out.either(
        &json!({
            "name": info.name,
            "dimension": info.dimension,
            "shards": info.shards,
            "replicas": info.replicas,
            "router": router,
        }),
        || {
            format!(
                "created {} (dimension {}, {} shards x {} replicas) through the router at {router}",
                info.name, info.dimension, info.shards, info.replicas
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn run(cmd: CollectionCommand, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    match cmd {
        CollectionCommand::Create(a) => {
            let metric = match a.metric {
                MetricArg::Cosine => Metric::Cosine,
                MetricArg::Dot => Metric::Dot,
                MetricArg::L2 => Metric::L2,
            };
            let lexical = lexical_settings(&a)?;
            let index = index_settings(&a);
            let mut spec = CollectionSpec::new(a.name, a.dim.unwrap_or(0), metric);
            spec.lexical = lexical;
            spec.index = index;
            let info = match a.model.as_deref() {
                Some(model) => {
                    let spec_model = ModelSpec::parse(model);
                    if spec_model == ModelSpec::Default && spec_model.resolve().is_err() {
                        fetch_default(&models_dir()).context("cannot fetch the default model")?;
                    }
                    db.create_collection_with_model(spec, &spec_model)
                        .with_context(|| {
                            format!("cannot create a collection with model {model:?}")
                        })?
                }
                None => db.create_collection(spec)?,
            };
            out.either(&collection_json(&info), || {
                format!("created {}", collection_text(&info))
            })?;
        }
        CollectionCommand::List => {
            let all = db.list_collections();
            // A collection whose stored state could not be opened is listed with its error
            // (the rest of the database works).
            let quarantined: std::collections::BTreeMap<String, String> =
                db.quarantined().into_iter().collect();
            let listed: std::collections::BTreeSet<&str> =
                all.iter().map(|i| i.name.as_str()).collect();
            if out.is_json() {
                for info in &all {
                    let mut v = collection_json(info);
                    if let Some(reason) = quarantined.get(&info.name) {
                        v["quarantined"] = json!(reason);
                    }
                    out.json(&v)?;
                }
                for (name, reason) in &quarantined {
                    if !listed.contains(name.as_str()) {
                        out.json(&json!({"name": name, "quarantined": reason}))?;
                    }
                }
            } else if all.is_empty() && quarantined.is_empty() {
                out.either(&json!({}), || "no collections".into())?;
            } else {
                for info in &all {
                    let line = match quarantined.get(&info.name) {
                        Some(reason) => format!("{}\tquarantined: {reason}", collection_text(info)),
                        None => collection_text(info),
                    };
                    out.either(&json!({}), || line)?;
                }
                for (name, reason) in &quarantined {
                    if !listed.contains(name.as_str()) {
                        out.either(&json!({}), || format!("{name}\tquarantined: {reason}"))?;
                    }
                }
            }
        }
        CollectionCommand::Info(a) => {
            let info = db.collection_info(&a.name)?;
            let mut v = collection_json(&info);
            let mut text = collection_text(&info);
            // The index's state, when it is open (a quarantined collection has none).
            if let Ok(stats) = db.index_stats(&a.name) {
                v["quantized"] = json!(stats.quantized);
                v["vector_bytes"] = json!(stats.vector_bytes);
                v["index_bytes"] = json!(stats.index_bytes);
                v["payload_bytes"] = json!(stats.payload_bytes);
                v["rescore_file_bytes"] = json!(stats.rescore_file_bytes);
                text.push_str(&format!(
                    "\tquantized={}\tvector_bytes={}\tindex_bytes={}\tpayload_bytes={}\trescore_file_bytes={}",
                    stats.quantized,
                    stats.vector_bytes,
                    stats.index_bytes,
                    stats.payload_bytes,
                    stats.rescore_file_bytes
                ));
            }
            out.either(&v, || text)?;
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

/// The index settings `collection create` asks for, as the index JSON (`null`, the defaults,
/// without any index flag); their values are checked by the database when it creates the
/// collection.
fn index_settings(a: &CreateArgs) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    if let Some(q) = a.quantization {
        m.insert("quantization".into(), json!(q.as_str()));
    }
    let numbers = [
        ("oversampling", a.oversampling),
        ("m", a.m),
        ("ef_construction", a.ef_construction),
        ("ef_search", a.ef_search),
    ];
    for (key, value) in numbers {
        if let Some(v) = value {
            m.insert(key.into(), json!(v));
        }
    }
    if m.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::Value::Object(m)
    }
}

/// The lexical settings `collection create` asks for (`null`, the defaults, without
/// --stemmer, --stopwords or --no-lexical).
fn lexical_settings(a: &CreateArgs) -> anyhow::Result<serde_json::Value> {
    if a.stemmer.is_none() && a.stopwords.is_none() && !a.no_lexical {
        return Ok(serde_json::Value::Null);
    }
    let mut s = LexicalSettings::default();
    if a.no_lexical {
        s.enabled = false;
    }
    if let Some(stemmer) = &a.stemmer {
        s.analyzer.stemmer = match stemmer.to_ascii_lowercase().as_str() {
            "none" => None,
            lang => Some(lang.to_string()),
        };
    }
    match a.stopwords.as_deref() {
        None => {}
        Some("english") => s.analyzer.stopwords = Stopwords::English,
        Some("none") => s.analyzer.stopwords = Stopwords::None,
        Some(other) => anyhow::bail!("--stopwords must be english or none, got {other:?}"),
    }
    // The stemmer's name is checked here, before anything is created.
    LexicalSettings::from_json(&s.to_json())?;
    Ok(s.to_json())
}
