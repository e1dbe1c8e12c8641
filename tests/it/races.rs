//! Races between dropping a collection and everything else: creates of the same name, reads,
//! searches and writers bound to the collection's identity. Each test runs many rounds of the
//! race and checks an invariant after (or during) every round; none asserts on timing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use latentdb::{CollectionSpec, Database, Document, ErrorKind, Metric, SearchRequest};
use serde_json::json;

use crate::common::{doc, vector};

const DIM: usize = 4;

fn spec() -> CollectionSpec {
    CollectionSpec::new("c", DIM, Metric::L2)
}

/// A collection that is listed must be usable: writes, reads and searches find it.
fn assert_consistent(db: &Database, round: usize) {
    let listed = db.list_collections().iter().any(|c| c.name == "c");
    let writable = db.upsert("c", vec![doc(round as u64, DIM)]);
    let searchable = db.search("c", &SearchRequest::vector(vector(1, DIM)));
    if listed {
        writable.unwrap_or_else(|e| panic!("round {round}: listed but upsert fails: {e}"));
        searchable.unwrap_or_else(|e| panic!("round {round}: listed but search fails: {e}"));
        db.count("c")
            .unwrap_or_else(|e| panic!("round {round}: listed but count fails: {e}"));
    } else {
        let e = writable.expect_err("an unlisted collection took a write");
        assert_eq!(e.kind(), ErrorKind::NotFound, "round {round}: {e}");
        // And the name is free again.
        db.create_collection(spec())
            .unwrap_or_else(|e| panic!("round {round}: unlisted but create fails: {e}"));
    }
}

/// A drop and a create of the same name, racing: the create succeeds as soon as storage has
/// freed the name, so the drop must not then remove the new collection from the database's
/// map (which left a collection that was listed, yet not found by writes and searches, and
/// "already exists" to creates, until a restart).
#[test]
fn drop_racing_a_create_of_the_same_name_leaves_one_usable_collection() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(dir.path()).unwrap());
    for round in 0..60 {
        if db.collection_info("c").is_err() {
            db.create_collection(spec()).unwrap();
        }
        let start = Arc::new(Barrier::new(2));
        let creator = {
            let db = db.clone();
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                // Until the drop frees the name, the create finds it taken.
                for _ in 0..1_000_000 {
                    match db.create_collection(spec()) {
                        Ok(_) => return,
                        Err(e) => assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}"),
                    }
                    std::thread::yield_now();
                }
                panic!("the name was never freed");
            })
        };
        start.wait();
        db.drop_collection("c").unwrap();
        creator.join().unwrap();
        assert_consistent(&db, round);
    }
}

/// Reads of a collection being dropped (and re-created) answer either with data or with
/// NOT_FOUND, never an internal error; a search's hits never carry another document's text.
#[test]
fn reads_racing_a_drop_answer_data_or_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(dir.path()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let db = db.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let ids = ["doc-00000001", "doc-00000002"];
                let mut answered = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let results: Vec<(&str, latentdb::Result<()>)> = vec![
                        ("get", db.get("c", &ids).map(drop)),
                        ("count", db.count("c").map(drop)),
                        ("scroll", db.scroll("c", None, 50).map(drop)),
                        ("info", db.collection_info("c").map(drop)),
                        ("index_stats", db.index_stats("c").map(drop)),
                        (
                            "search",
                            db.search("c", &SearchRequest::vector(vector(t, DIM)))
                                .map(|hits| {
                                    for h in hits {
                                        // Every generation writes doc n with "text of document n".
                                        let n: u64 = h.id["doc-".len()..].parse().unwrap();
                                        assert_eq!(
                                            h.text.as_deref(),
                                            Some(format!("text of document {n}").as_str()),
                                            "hit {} carries another document's text",
                                            h.id
                                        );
                                    }
                                }),
                        ),
                    ];
                    for (what, r) in results {
                        match r {
                            Ok(()) => answered += 1,
                            Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{what}: {e}"),
                        }
                    }
                }
                answered
            })
        })
        .collect();
    for generation in 0..40u64 {
        db.create_collection(spec()).unwrap();
        // Each generation holds other documents at the same internal points.
        let base = generation * 1000;
        db.upsert("c", (base..base + 200).map(|n| doc(n, DIM)).collect())
            .unwrap();
        db.drop_collection("c").unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
}

/// A writer bound to a collection's identity never writes into a collection re-created under
/// the same name: once the one it bound to is dropped, every write is NOT_FOUND.
#[test]
fn a_bound_writer_never_writes_into_a_recreated_collection() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.create_collection(spec()).unwrap();
    let uid = db.collection_uid("c").unwrap();
    db.upsert_bound("c", uid, vec![doc(1, DIM)], None).unwrap();
    assert_eq!(db.count("c").unwrap(), 1);
    db.drop_collection("c").unwrap();
    db.create_collection(spec()).unwrap();
    assert_ne!(db.collection_uid("c").unwrap(), uid);
    let e = db
        .upsert_bound("c", uid, vec![doc(2, DIM)], None)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert_eq!(db.count("c").unwrap(), 0);
}

/// The same, with the drop and re-create racing the bound writers: every document in a
/// collection was written by a writer bound to that very collection.
#[test]
fn bound_writers_racing_drop_and_create_write_only_into_their_collection() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(dir.path()).unwrap());
    db.create_collection(spec()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3u64)
        .map(|t| {
            let db = db.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Bind to whatever collection "c" is now, then write until it is gone.
                    let Ok(uid) = db.collection_uid("c") else {
                        std::thread::yield_now();
                        continue;
                    };
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let d = Document::new(format!("w{t}-{n}"), vector(n, DIM))
                            .with_metadata(json!({"uid": uid}));
                        match db.upsert_bound("c", uid, vec![d], None) {
                            Ok(_) => {}
                            Err(e) => {
                                assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for _ in 0..30 {
        std::thread::sleep(std::time::Duration::from_millis(5));
        // While writers append, only a few pages: a scroll would never catch up with them.
        check_bound_to_current(&db, Some(4));
        db.drop_collection("c").unwrap();
        db.create_collection(spec()).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    check_bound_to_current(&db, None);
}

/// Checks that the documents of "c" (the first `pages` pages, or all) were written by writers
/// bound to the current collection "c".
fn check_bound_to_current(db: &Database, pages: Option<usize>) {
    let uid = db.collection_uid("c").unwrap();
    let mut after: Option<String> = None;
    for _ in 0..pages.unwrap_or(usize::MAX) {
        let page = db.scroll("c", after.as_deref(), 500).unwrap();
        for r in &page.records {
            assert_eq!(
                r.metadata["uid"],
                json!(uid),
                "{} was written by a writer bound elsewhere",
                r.id
            );
        }
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
}
