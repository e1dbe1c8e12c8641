//! A model test: random sequences of upserts, deletes, gets, scrolls, counts, chunk lookups and
//! reopens (drop the storage, open the same directory) agree with a `BTreeMap`.

use std::collections::BTreeMap;

use latentdb_storage::{
    CollectionSpec, Document, Durability, Metric, Record, Storage, StorageOptions,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const DIM: usize = 3;

/// What the model stores per id: the record as it must read back.
type Model = BTreeMap<String, Record>;

#[derive(Debug, Clone)]
enum Op {
    Upsert(Vec<(String, u8, Option<String>)>, bool),
    Delete(Vec<String>),
    Get(Vec<String>),
    Scroll(Option<String>, usize),
    ChunkIds(String),
    Count,
    Reopen,
}

/// Ids from a small pool so that operations collide; some are chunks (`p#n`) of a parent.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u8..12).prop_map(|n| format!("d{n}")),
        (0u8..3, 0u8..4).prop_map(|(p, n)| format!("d{p}#{n}")),
        Just("d1#".to_owned()),
        Just("d10".to_owned()),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (
            proptest::collection::vec((id(), any::<u8>(), proptest::option::of("[a-z ]{0,8}")), 1..6),
            any::<bool>(),
        )
            .prop_map(|(docs, sync)| Op::Upsert(docs, sync)),
        2 => proptest::collection::vec(id(), 1..4).prop_map(Op::Delete),
        2 => proptest::collection::vec(id(), 1..4).prop_map(Op::Get),
        2 => (proptest::option::of(id()), 1usize..6).prop_map(|(a, n)| Op::Scroll(a, n)),
        1 => (0u8..4).prop_map(|p| Op::ChunkIds(format!("d{p}"))),
        1 => Just(Op::Count),
        1 => Just(Op::Reopen),
    ]
}

/// The record a document written with seed `n` must read back as. A chunk `p#k` carries
/// `parent` = `p` in its metadata, except for odd seeds (ids that merely look like chunks).
fn record(id: &str, n: u8, text: Option<String>) -> Record {
    let mut metadata = serde_json::Map::new();
    metadata.insert("n".into(), json!(n));
    if let Some((parent, _)) = id.split_once('#')
        && n.is_multiple_of(2)
    {
        metadata.insert("parent".into(), json!(parent));
    }
    Record {
        id: id.to_owned(),
        text,
        metadata,
        vector: vec![f32::from(n), 1.0, -0.5],
    }
}

fn open(dir: &std::path::Path) -> Storage {
    Storage::open(dir, StorageOptions::default()).unwrap()
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    s.create_collection(CollectionSpec::new("c", DIM, Metric::L2))
        .unwrap();
    let mut model = Model::new();
    for op in ops {
        match op {
            Op::Upsert(docs, sync) => {
                // Duplicate ids in one batch are rejected and change nothing.
                let mut seen = std::collections::HashSet::new();
                let dup = docs.iter().any(|(id, _, _)| !seen.insert(id.clone()));
                let batch: Vec<Document> = docs
                    .iter()
                    .map(|(id, n, text)| {
                        let r = record(id, *n, text.clone());
                        let mut d = Document::new(id.clone(), r.vector.clone())
                            .with_metadata(Value::Object(r.metadata));
                        d.text = r.text;
                        d
                    })
                    .collect();
                let durability = if sync {
                    Durability::Sync
                } else {
                    Durability::Buffered
                };
                let res = s.upsert("c", batch, Some(durability));
                if dup {
                    prop_assert!(res.is_err());
                } else {
                    let out = res.unwrap();
                    prop_assert_eq!(
                        out.ids,
                        docs.iter().map(|d| d.0.clone()).collect::<Vec<_>>()
                    );
                    for (id, n, text) in docs {
                        model.insert(id.clone(), record(&id, n, text));
                    }
                }
            }
            Op::Delete(ids) => {
                let out = s.delete("c", &ids, None).unwrap();
                let mut expected = Vec::new();
                for id in &ids {
                    if model.remove(id).is_some() {
                        expected.push(id.clone());
                    }
                }
                prop_assert_eq!(out.deleted, expected);
            }
            Op::Get(ids) => {
                let got = s.get("c", &ids).unwrap();
                let want: Vec<Option<Record>> = ids.iter().map(|i| model.get(i).cloned()).collect();
                prop_assert_eq!(got, want);
            }
            Op::Scroll(after, limit) => {
                // Page through everything after `after`, comparing each page.
                let mut cursor = after.clone();
                let rest: Vec<&Record> = model
                    .range::<String, _>((
                        after
                            .as_ref()
                            .map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
                        std::ops::Bound::Unbounded,
                    ))
                    .map(|(_, r)| r)
                    .collect();
                let mut got = Vec::new();
                loop {
                    let page = s.scroll("c", cursor.as_deref(), limit).unwrap();
                    prop_assert!(page.records.len() <= limit);
                    got.extend(page.records);
                    match page.next_cursor {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
                prop_assert_eq!(got.iter().collect::<Vec<_>>(), rest);
            }
            Op::ChunkIds(parent) => {
                let prefix = format!("{parent}#");
                let want: Vec<String> = model
                    .values()
                    .filter(|r| {
                        r.id.starts_with(&prefix)
                            && r.id.len() > prefix.len()
                            && r.metadata.get("parent").and_then(Value::as_str)
                                == Some(parent.as_str())
                    })
                    .map(|r| r.id.clone())
                    .collect();
                prop_assert_eq!(s.chunk_ids("c", &parent).unwrap(), want);
            }
            Op::Count => {
                prop_assert_eq!(s.count("c").unwrap(), model.len() as u64);
            }
            Op::Reopen => {
                drop(s);
                s = open(dir.path());
                prop_assert!(s.data_loss().is_empty());
                prop_assert_eq!(s.count("c").unwrap(), model.len() as u64);
            }
        }
    }
    // Finally everything, after one more reopen.
    drop(s);
    let s = open(dir.path());
    let all = s.scroll("c", None, 10_000).unwrap().records;
    prop_assert_eq!(all, model.values().cloned().collect::<Vec<_>>());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn storage_agrees_with_a_btreemap(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}
