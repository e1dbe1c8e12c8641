//! Texts embedded once, by the router (issue 14's test 3, "Embedded once"): data nodes start
//! with no model; 2,000 texts go through the router of a 4-shard, 2-replica collection on the
//! default model; every replica stores, bit for bit, the vector the router's `Embed` gives for
//! the same text; and text search through the router returns what a single node fed the same
//! documents returns.
//!
//! The model is the real all-MiniLM-L6-v2: fetched into the model cache when absent, as the
//! root crate's tests do (`tests/it/common.rs`, `ensure_default_model`); a fetch failure fails
//! the test, it is never skipped. CI installs it first (`latentdb model fetch`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use latentdb::embed::{ModelSpec, fetch_default, models_dir};
use latentdb_cluster::shard::{shard_collection, shard_of};
use latentdb_server::pb;

use crate::harness::Cluster;

/// Texts upserted (the number).
const TEXTS: usize = 2_000;
/// Documents per Upsert (and texts per Embed: the same batches).
const BATCH: usize = 200;
/// Text queries compared with the single node.
const QUERIES: usize = 50;
/// Each text is cut to this many characters, so that embedding stays quick on a small
/// machine (the bodies run to several kilobytes).
const MAX_CHARS: usize = 300;
const SHARDS: u32 = 4;
/// all-MiniLM-L6-v2's dimension.
const DIM: usize = 384;

fn ensure_default_model() {
    if ModelSpec::Default.resolve().is_err() {
        fetch_default(&models_dir()).expect("fetching the default model");
    }
}

/// The root crate's `spamassassin-subjects` fixture (e-mail bodies and their subjects).
fn dataset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/datasets/spamassassin-subjects")
}

/// The `text` of every line of a BEIR JSONL file.
fn jsonl_texts(path: &Path) -> Vec<String> {
    let data =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    data.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["text"].as_str().expect("a text field").to_string()
        })
        .collect()
}

/// `s` cut to `MAX_CHARS` characters (at a character boundary) and trimmed.
fn cut(s: &str) -> String {
    let end = s.char_indices().nth(MAX_CHARS).map_or(s.len(), |(i, _)| i);
    s[..end].trim().to_string()
}

/// 2,000 distinct texts (the e-mail bodies, cut, then subjects) and 50 queries (further
/// subjects, none of them a text). Texts that only differ in case or spacing count as one: the
/// model (uncased) would give them the same vector, and the tie would make the order of the
/// top 10 a matter of tie-breaking rather than of the embeddings.
fn texts_and_queries() -> (Vec<String>, Vec<String>) {
    let dir = dataset_dir();
    let bodies = jsonl_texts(&dir.join("corpus.jsonl"));
    let subjects = jsonl_texts(&dir.join("queries.jsonl"));
    let key = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let mut seen = HashSet::new();
    let mut fresh = bodies
        .iter()
        .chain(&subjects)
        .map(|s| cut(s))
        .filter(|s| !s.is_empty() && seen.insert(key(s)));
    let texts: Vec<String> = fresh.by_ref().take(TEXTS).collect();
    let queries: Vec<String> = fresh.take(QUERIES).collect();
    assert_eq!(texts.len(), TEXTS, "the fixture has too few distinct texts");
    assert_eq!(queries.len(), QUERIES, "the fixture has too few queries");
    (texts, queries)
}

fn id(i: usize) -> String {
    format!("e{i:04}")
}

/// The largest absolute difference between two vectors, and whether they are bit-identical.
fn compare(a: &[f32], b: &[f32]) -> (f32, bool) {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    (diff, same)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn texts_are_embedded_once_by_the_router() {
    ensure_default_model();
    let (texts, queries) = texts_and_queries();
    let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
    eprintln!(
        "{} texts ({} characters on average), {} queries",
        texts.len(),
        chars / texts.len(),
        queries.len()
    );
    let Some(cluster) = Cluster::start(3, Some("default")).await else {
        return;
    };
    let mut router = cluster.router().await;
    let info = router
        .create_collection(pb::CreateCollectionRequest {
            name: "emb".into(),
            dimension: 0,
            metric: pb::Metric::Cosine as i32,
            model: "default".into(),
            shards: SHARDS,
            replicas: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.dimension as usize, DIM,
        "the dimension comes from the model"
    );

    // Documents with an id and a text, no vector: the router embeds them.
    let started = Instant::now();
    for (b, chunk) in texts.chunks(BATCH).enumerate() {
        let documents = chunk
            .iter()
            .enumerate()
            .map(|(j, t)| pb::Document {
                id: id(b * BATCH + j),
                text: Some(t.clone()),
                ..Default::default()
            })
            .collect();
        let ids = router
            .upsert(pb::UpsertRequest {
                collection: "emb".into(),
                documents,
            })
            .await
            .unwrap()
            .into_inner()
            .ids;
        assert_eq!(ids.len(), chunk.len());
    }
    let upsert_time = started.elapsed();

    // The router's Embed of the same texts, in the same batches: the embedder sorts a call's
    // texts by length and runs them 32 at a time, and a text's vector depends on its batch in
    // the last bit (measured: embedded alone, 26 of the first 200 texts differ from their
    // vectors in these batches, by up to 6e-8), so bit for bit holds for the same batch only.
    let started = Instant::now();
    let mut embedded: Vec<Vec<f32>> = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(BATCH) {
        let resp = router
            .embed(pb::EmbedRequest {
                texts: chunk.to_vec(),
                task: None,
                instruction: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.dimension as usize, DIM);
        assert_eq!(resp.vectors.len(), chunk.len());
        embedded.extend(resp.vectors.into_iter().map(|v| v.values));
    }
    let embed_time = started.elapsed();

    // Every replica applies its shard's log, then holds exactly the Embed vectors.
    let log = latentdb_cluster::JetStreamLog::connect(&cluster.nats_urls, None)
        .await
        .unwrap();
    let c = cluster.record("emb").await;
    assert_eq!(c.model.as_deref(), Some("default"));
    assert_eq!(c.spec.dimension, DIM);
    let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); SHARDS as usize];
    for i in 0..texts.len() {
        by_shard[shard_of(&id(i), SHARDS) as usize].push(i);
    }
    let started = Instant::now();
    let (mut compared, mut differing, mut max_diff) = (0usize, 0usize, 0.0f32);
    for shard in 0..SHARDS {
        let last = latentdb_cluster::ShardLog::last_seq(&log, c.uid, shard)
            .await
            .unwrap();
        let name = shard_collection("emb", shard);
        let members = &by_shard[shard as usize];
        let ids: Vec<String> = members.iter().map(|&i| id(i)).collect();
        let mut replicas = 0;
        for node in &cluster.nodes {
            if !c.assignment[shard as usize].contains(&node.id) {
                continue;
            }
            replicas += 1;
            node.wait_applied(&name, last, Duration::from_secs(60))
                .await;
            // The data node has no model: its shard stores vectors only.
            assert!(
                node.db.embedder(&name).unwrap().is_none(),
                "{}'s {name} has an embedder",
                node.id
            );
            assert_eq!(node.db.count(&name).unwrap(), members.len() as u64);
            let records = node.db.get(&name, &ids).unwrap();
            for (&i, r) in members.iter().zip(records) {
                let r = r.unwrap_or_else(|| panic!("{} lacks {} on shard {shard}", node.id, id(i)));
                assert_eq!(r.text.as_deref(), Some(texts[i].as_str()));
                let (diff, same) = compare(&r.vector, &embedded[i]);
                compared += 1;
                differing += usize::from(!same);
                max_diff = max_diff.max(diff);
            }
        }
        assert_eq!(replicas, 2, "shard {shard} has two replicas");
    }
    eprintln!(
        "replicas: {compared} stored vectors against Embed, {differing} not bit-identical, \
         largest difference {max_diff:e} (checked in {:?})",
        started.elapsed()
    );
    assert_eq!(compared, 2 * texts.len());
    assert_eq!(
        differing, 0,
        "stored vectors differ from Embed's (largest difference {max_diff:e})"
    );

    // A single node with the model, fed the same documents in the same batches (it embeds
    // them itself).
    let ref_dir = tempfile::tempdir().unwrap();
    let reference = latentdb::Database::open(ref_dir.path()).unwrap();
    reference
        .create_collection_with_model(
            latentdb::CollectionSpec::new("emb", DIM, latentdb::Metric::Cosine),
            &ModelSpec::parse("default"),
        )
        .unwrap();
    let started = Instant::now();
    tokio::task::block_in_place(|| {
        for (b, chunk) in texts.chunks(BATCH).enumerate() {
            let docs = chunk
                .iter()
                .enumerate()
                .map(|(j, t)| latentdb::Document {
                    id: Some(id(b * BATCH + j)),
                    text: Some(t.clone()),
                    ..Default::default()
                })
                .collect();
            reference.upsert("emb", docs).unwrap();
        }
    });
    let single_time = started.elapsed();
    assert_eq!(reference.count("emb").unwrap(), texts.len() as u64);
    // The single node embeds a batch as the router does (the same embedder, 32 texts per
    // pass): its vectors are the router's too.
    let all_ids: Vec<String> = (0..texts.len()).map(id).collect();
    let (mut single_differing, mut single_max) = (0usize, 0.0f32);
    for (i, r) in reference
        .get("emb", &all_ids)
        .unwrap()
        .into_iter()
        .enumerate()
    {
        let (diff, same) = compare(&r.unwrap().vector, &embedded[i]);
        single_differing += usize::from(!same);
        single_max = single_max.max(diff);
    }
    eprintln!(
        "single node: {single_differing} of {} vectors not bit-identical to Embed's, largest \
         difference {single_max:e}",
        texts.len()
    );
    assert_eq!(single_differing, 0);

    // Text search, exact and dense: the router embeds the query, the shards search, the
    // merge keeps the top 10; the single node embeds the same query (a batch of one both
    // ways) and searches everything.
    let started = Instant::now();
    let mut max_score_diff = 0.0f32;
    for (q, text) in queries.iter().enumerate() {
        let got = router
            .search(pb::SearchRequest {
                collection: "emb".into(),
                text: Some(text.clone()),
                k: 10,
                exact: true,
                mode: pb::SearchMode::Dense as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .hits;
        let want = tokio::task::block_in_place(|| {
            reference.search(
                "emb",
                &latentdb::SearchRequest {
                    text: Some(text.clone()),
                    k: 10,
                    exact: true,
                    mode: Some(latentdb::SearchMode::Dense),
                    ..Default::default()
                },
            )
        })
        .unwrap();
        assert_eq!(want.len(), 10);
        assert_eq!(
            got.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            want.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            "query {q} ({text:?})"
        );
        for (a, b) in got.iter().zip(&want) {
            max_score_diff = max_score_diff.max((a.score - b.score).abs());
        }
    }
    let search_time = started.elapsed();
    eprintln!("{QUERIES} text queries: same top 10, largest score difference {max_score_diff:e}");
    // The same stored vectors and the same query vector (a batch of one both ways), scored by
    // the same code: the scores agree exactly (measured: largest difference 0). The bound is
    // 1e-6, tighter than the 1e-5, with room only for a different summation order.
    assert!(
        max_score_diff <= 1e-6,
        "scores differ by {max_score_diff:e}"
    );

    eprintln!(
        "timings: router upserts (embedding {} texts) {upsert_time:?}, Embed of the same \
         texts {embed_time:?}, single-node upserts {single_time:?}, {QUERIES} searches through \
         the router and on the single node {search_time:?}",
        texts.len()
    );
    cluster.shutdown().await;
}
