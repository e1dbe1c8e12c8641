//! Exactly-once apply of a replicated write log (`Database::apply_replicated`): gapped
//! sequences, entries delivered again, refused entries, reopening, a SIGKILL between entries,
//! and two replicas fed one log.
//!
//! The crash test's child is this same test binary, re-executed with
//! `LATENTDB_REPLICATED_CHILD` set.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use latentdb::{
    CollectionSpec, Database, Document, ErrorKind, Metric, Record, ReplicatedOp, ReplicatedOutcome,
    SearchMode, SearchRequest,
};
use serde_json::json;

use crate::common::{assert_intact, doc, vector};

const DIM: usize = 8;

fn open(dir: &std::path::Path) -> Database {
    let db = Database::open(dir).unwrap();
    if db.collection_info("r").is_err() {
        db.create_collection(CollectionSpec::new("r", DIM, Metric::Cosine))
            .unwrap();
    }
    db
}

fn upsert(ns: impl IntoIterator<Item = u64>) -> ReplicatedOp {
    ReplicatedOp::Upsert(ns.into_iter().map(|n| doc(n, DIM)).collect())
}

fn delete(ids: &[&str]) -> ReplicatedOp {
    ReplicatedOp::Delete(ids.iter().map(|s| s.to_string()).collect())
}

fn id(n: u64) -> String {
    format!("doc-{n:08}")
}

fn apply(db: &Database, seq: u64, op: ReplicatedOp) -> ReplicatedOutcome {
    db.apply_replicated("r", seq, op).unwrap()
}

/// Every document of `ids`, as stored.
fn records(db: &Database, ids: &[String]) -> Vec<Option<Record>> {
    db.get("r", ids).unwrap()
}

#[test]
fn entries_apply_once_in_order_with_gapped_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    assert_eq!(db.applied_seq("r").unwrap(), 0);
    let heron = Document::new(id(3), vector(1_003, DIM))
        .with_text("a replaced passage about herons")
        .with_metadata(json!({"n": 3, "replaced": true}));
    let log = [
        (3, upsert(0..10)),
        (7, ReplicatedOp::Upsert(vec![heron.clone(), doc(10, DIM)])),
        (12, delete(&[&id(1), &id(2), "never-written"])),
        (20, ReplicatedOp::Upsert(Vec::new())),
        (21, ReplicatedOp::Delete(Vec::new())),
    ];
    for (seq, op) in log.iter().cloned() {
        assert_eq!(apply(&db, seq, op), ReplicatedOutcome::Applied, "seq {seq}");
        assert_eq!(db.applied_seq("r").unwrap(), seq);
    }
    let all: Vec<String> = (0..=10).map(id).collect();
    let before = records(&db, &all);
    assert_eq!(db.count("r").unwrap(), 9);

    // Delivered again (as an at-least-once consumer may): nothing changes, not even the
    // deleted documents come back.
    for (seq, op) in log.iter().cloned() {
        assert_eq!(apply(&db, seq, op), ReplicatedOutcome::AlreadyApplied);
    }
    assert_eq!(
        apply(&db, 5, upsert(0..11)),
        ReplicatedOutcome::AlreadyApplied
    );
    assert_eq!(
        apply(&db, 21, delete(&[&id(0)])),
        ReplicatedOutcome::AlreadyApplied
    );
    assert_eq!(records(&db, &all), before);
    assert_eq!(db.applied_seq("r").unwrap(), 21);
    assert!(before[1].is_none() && before[2].is_none());
    assert_eq!(before[3].as_ref().unwrap().text, heron.text);
    for n in (0..=10).filter(|n| ![1, 2, 3].contains(n)) {
        assert_intact(before[n as usize].as_ref().unwrap(), n, DIM);
    }

    // Not an entry of any log, or not a collection: an error, nothing recorded.
    let e = db.apply_replicated("r", 0, upsert(0..1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = db.apply_replicated("nope", 30, upsert(0..1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        db.applied_seq("nope").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(db.applied_seq("r").unwrap(), 21);

    // Searchable like any upsert: the vector index and the lexical index.
    let hits = db
        .search("r", &SearchRequest::vector(vector(5, DIM)))
        .unwrap();
    assert_eq!(hits[0].id, id(5));
    assert!(hits.iter().all(|h| h.id != id(1) && h.id != id(2)));
    let hits = db
        .search(
            "r",
            &SearchRequest {
                mode: Some(SearchMode::Lexical),
                ..SearchRequest::text("herons")
            },
        )
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, id(3));
}

#[test]
fn a_refused_entry_advances_the_sequence_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    assert_eq!(apply(&db, 1, upsert(0..4)), ReplicatedOutcome::Applied);
    let wrong_dimension = Document::new("wide", vec![0.5; DIM + 1]);
    let mut nan = vector(9, DIM);
    nan[2] = f32::NAN;
    let no_id = Document {
        vector: Some(vector(9, DIM)),
        ..Default::default()
    };
    let no_vector = Document {
        id: Some("novec".into()),
        text: Some("replicas never embed".into()),
        ..Default::default()
    };
    let refused = [
        ReplicatedOp::Upsert(vec![doc(5, DIM), wrong_dimension]),
        ReplicatedOp::Upsert(vec![doc(5, DIM), Document::new("nan", nan)]),
        ReplicatedOp::Upsert(vec![doc(5, DIM), Document::new("zero", vec![0.0; DIM])]),
        ReplicatedOp::Upsert(vec![doc(5, DIM), no_id]),
        ReplicatedOp::Upsert(vec![doc(5, DIM), no_vector]),
        ReplicatedOp::Upsert(vec![doc(5, DIM), Document::new("", vector(9, DIM))]),
        ReplicatedOp::Upsert(vec![doc(5, DIM), doc(5, DIM)]),
        ReplicatedOp::Upsert(vec![doc(5, DIM).with_metadata(json!([1, 2]))]),
        ReplicatedOp::Delete(vec![id(0), String::new()]),
    ];
    let mut seq = 10;
    for op in refused {
        seq += 2;
        let out = apply(&db, seq, op.clone());
        assert!(
            matches!(out, ReplicatedOutcome::Rejected(_)),
            "{op:?}: {out:?}"
        );
        assert_eq!(db.applied_seq("r").unwrap(), seq);
        // Refused for good: delivered again, it is already applied.
        assert_eq!(apply(&db, seq, op), ReplicatedOutcome::AlreadyApplied);
    }
    let out = apply(
        &db,
        100,
        ReplicatedOp::Upsert(vec![Document::new("wide", vec![0.5; DIM + 1])]),
    );
    let ReplicatedOutcome::Rejected(message) = out else {
        panic!("{out:?}");
    };
    assert!(message.contains("dimension"), "{message}");

    // The data is as the first entry left it, and the log goes on.
    assert_eq!(db.count("r").unwrap(), 4);
    let got = records(&db, &(0..6).map(id).collect::<Vec<_>>());
    for n in 0..4 {
        assert_intact(got[n as usize].as_ref().unwrap(), n, DIM);
    }
    assert!(got[4].is_none() && got[5].is_none());
    assert_eq!(apply(&db, 101, upsert(5..6)), ReplicatedOutcome::Applied);
    assert_eq!(db.count("r").unwrap(), 5);
    assert_eq!(db.applied_seq("r").unwrap(), 101);
}

#[test]
fn applied_entries_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        assert_eq!(apply(&db, 4, upsert(0..20)), ReplicatedOutcome::Applied);
        assert_eq!(apply(&db, 9, delete(&[&id(7)])), ReplicatedOutcome::Applied);
        assert!(matches!(
            apply(
                &db,
                11,
                ReplicatedOp::Upsert(vec![Document::new("x", vec![1.0])])
            ),
            ReplicatedOutcome::Rejected(_)
        ));
        assert_eq!(apply(&db, 15, upsert(20..25)), ReplicatedOutcome::Applied);
        // Dropped without a flush or a close.
    }
    let db = open(dir.path());
    assert_eq!(db.applied_seq("r").unwrap(), 15);
    assert_eq!(db.count("r").unwrap(), 24);
    let got = records(&db, &(0..25).map(id).collect::<Vec<_>>());
    for (n, r) in (0..).zip(&got) {
        match r {
            None => assert_eq!(n, 7),
            Some(r) => assert_intact(r, n, DIM),
        }
    }
    assert_eq!(
        apply(&db, 15, upsert(20..25)),
        ReplicatedOutcome::AlreadyApplied
    );
    assert_eq!(
        apply(&db, 9, upsert(7..8)),
        ReplicatedOutcome::AlreadyApplied
    );
    assert_eq!(records(&db, &[id(7)]), [None]);
    assert_eq!(apply(&db, 16, upsert(7..8)), ReplicatedOutcome::Applied);
    assert_eq!(db.count("r").unwrap(), 25);
}

#[test]
fn deleting_a_parent_deletes_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let chunk = |id: &str, parent: &str, n: u64| {
        Document::new(id, vector(n, DIM)).with_metadata(json!({"parent": parent}))
    };
    let docs = vec![
        Document::new("p", vector(1, DIM)),
        chunk("p#0", "p", 2),
        chunk("p#1", "p", 3),
        // Not chunks of `p`: another parent's metadata, another parent's id.
        chunk("p#x", "elsewhere", 4),
        chunk("q#0", "q", 5),
        // Chunks whose parent document was never written.
        chunk("orphan#0", "orphan", 6),
    ];
    assert_eq!(
        apply(&db, 1, ReplicatedOp::Upsert(docs)),
        ReplicatedOutcome::Applied
    );
    assert_eq!(
        apply(&db, 2, delete(&["p", "orphan"])),
        ReplicatedOutcome::Applied
    );
    let ids = ["p", "p#0", "p#1", "p#x", "q#0", "orphan#0"];
    let present: Vec<bool> = records(&db, &ids.map(String::from))
        .iter()
        .map(Option::is_some)
        .collect();
    assert_eq!(present, [false, false, false, true, true, false]);
    assert_eq!(db.count("r").unwrap(), 2);
    assert_eq!(db.applied_seq("r").unwrap(), 2);
}

#[test]
fn concurrent_consumers_apply_each_entry_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let applied: Vec<Vec<u64>> = std::thread::scope(|s| {
        let consumers: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    for k in 0..60u64 {
                        let op = upsert([k, 1_000 + k % 7]);
                        match apply(&db, 2 * k + 1, op) {
                            ReplicatedOutcome::Applied => mine.push(k),
                            ReplicatedOutcome::AlreadyApplied => {}
                            other => panic!("entry {k}: {other:?}"),
                        }
                    }
                    mine
                })
            })
            .collect();
        consumers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let mut all: Vec<u64> = applied.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (0..60).collect::<Vec<_>>(), "each entry applied once");
    assert_eq!(db.applied_seq("r").unwrap(), 119);
    assert_eq!(db.count("r").unwrap(), 67);
}

/// A log of upserts, replacements, deletes (of parents with chunks too) and refused entries,
/// with gapped sequences, deterministic in `seed`.
fn mixed_log(seed: u64, entries: u64) -> Vec<(u64, ReplicatedOp)> {
    let mut x = seed | 1;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let mut seq = 0;
    let mut log = Vec::new();
    for e in 0..entries {
        seq += 1 + next(5);
        let op = match next(6) {
            0 | 1 => upsert((0..1 + next(8)).map(|_| next(60))).dedup_ids(),
            2 => {
                // A replacement with other content.
                let n = next(60);
                ReplicatedOp::Upsert(vec![
                    Document::new(id(n), vector(10_000 + e, DIM))
                        .with_text(format!("version {e}"))
                        .with_metadata(json!({"n": n, "entry": e})),
                ])
            }
            3 => {
                let parent = id(next(60));
                ReplicatedOp::Upsert(
                    (0..3)
                        .map(|c| {
                            Document::new(format!("{parent}#{c}"), vector(20_000 + e * 3 + c, DIM))
                                .with_metadata(json!({"parent": parent}))
                        })
                        .collect(),
                )
            }
            4 => ReplicatedOp::Delete((0..1 + next(4)).map(|_| id(next(60))).collect()),
            _ => ReplicatedOp::Upsert(vec![doc(next(60), DIM), Document::new("bad", vec![1.0])]),
        };
        log.push((seq, op));
    }
    log
}

trait DedupIds {
    fn dedup_ids(self) -> Self;
}

impl DedupIds for ReplicatedOp {
    /// The upsert without repeated documents (a repeated id would refuse the entry).
    fn dedup_ids(self) -> Self {
        match self {
            ReplicatedOp::Upsert(mut docs) => {
                let mut seen = std::collections::HashSet::new();
                docs.retain(|d| seen.insert(d.id.clone()));
                ReplicatedOp::Upsert(docs)
            }
            delete => delete,
        }
    }
}

#[test]
fn replicas_fed_one_log_hold_identical_records() {
    let log = mixed_log(42, 120);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(dir_a.path());
    let mut b = Some(open(dir_b.path()));
    let mut rejected = 0;
    for (i, (seq, op)) in log.iter().enumerate() {
        let out = apply(&a, *seq, op.clone());
        rejected += usize::from(matches!(out, ReplicatedOutcome::Rejected(_)));
        // Replica b gets every entry twice, sometimes the previous one again, and restarts
        // now and then: an at-least-once consumer.
        let rb = b.as_ref().unwrap();
        assert_eq!(apply(rb, *seq, op.clone()), out, "entry {i} (seq {seq})");
        assert_eq!(
            apply(rb, *seq, op.clone()),
            ReplicatedOutcome::AlreadyApplied
        );
        if i > 0 && i % 7 == 0 {
            let (prev_seq, prev) = &log[i - 1];
            assert_eq!(
                apply(rb, *prev_seq, prev.clone()),
                ReplicatedOutcome::AlreadyApplied
            );
        }
        if i % 40 == 39 {
            drop(b.take());
            b = Some(open(dir_b.path()));
        }
    }
    let b = b.unwrap();
    assert!(rejected > 0, "the log refuses some entries");
    let ids: Vec<String> = (0..60)
        .flat_map(|n| {
            let parent = id(n);
            [
                parent.clone(),
                format!("{parent}#0"),
                format!("{parent}#1"),
                format!("{parent}#2"),
            ]
        })
        .collect();
    let (ra, rb) = (a.get("r", &ids).unwrap(), b.get("r", &ids).unwrap());
    assert!(ra.iter().flatten().count() > 20, "the log leaves documents");
    assert!(ra.iter().any(Option::is_none), "the log deletes documents");
    assert_eq!(ra, rb);
    assert_eq!(a.count("r").unwrap(), b.count("r").unwrap());
    assert_eq!(a.count("r").unwrap(), ra.iter().flatten().count() as u64);
    let last = log.last().unwrap().0;
    assert_eq!(a.applied_seq("r").unwrap(), last);
    assert_eq!(b.applied_seq("r").unwrap(), last);
}

/// The crash test's child: applies the entries of [`crash_entry`] from the one after the
/// applied sequence on, forever, printing `@ack K` once entry K is applied.
#[test]
#[ignore = "child process of another test; spawned with --ignored --exact"]
fn replicated_crash_child() {
    let Ok(dir) = std::env::var("LATENTDB_REPLICATED_CHILD") else {
        panic!("run only as a child process of another test");
    };
    let db = open(dir.as_ref());
    let applied = db.applied_seq("r").unwrap();
    let mut k = (0..).find(|&k| crash_seq(k) > applied).unwrap();
    loop {
        let out = db
            .apply_replicated("r", crash_seq(k), crash_entry(k))
            .unwrap();
        assert_eq!(out, ReplicatedOutcome::Applied);
        println!("@ack {k}");
        k += 1;
    }
}

/// The sequence of the crash test's entry `k`: gapped.
fn crash_seq(k: u64) -> u64 {
    1 + 3 * k + k % 2
}

/// The crash test's entry `k`: writes `op-k` and rewrites `last` to name `k`; every third
/// entry also deletes the document of the entry before.
fn crash_entry(k: u64) -> ReplicatedOp {
    if k % 3 == 2 {
        return ReplicatedOp::Delete(vec![format!("op-{}", k - 1)]);
    }
    ReplicatedOp::Upsert(vec![
        Document::new(format!("op-{k}"), vector(k, DIM)),
        Document::new("last", vector(k + 1, DIM)).with_metadata(json!({"k": k})),
    ])
}

#[test]
fn a_sigkill_never_applies_an_entry_twice_or_skips_one() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<u64> = Vec::new();
    for round in 0..6u64 {
        let mut child = Command::new(&exe)
            .args([
                "replicated::replicated_crash_child",
                "--ignored",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LATENTDB_REPLICATED_CHILD", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = 2 + round % 4;
        let mut this_round = 0;
        let started = Instant::now();
        while this_round < kill_after {
            let line = lines.next().expect("child exited early").unwrap();
            if let Some(k) = parse_ack(&line) {
                acked.push(k);
                this_round += 1;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "child too slow"
            );
        }
        child.kill().unwrap(); // SIGKILL, anywhere in an entry
        acked.extend(lines.map_while(Result::ok).filter_map(|l| parse_ack(&l)));
        child.wait().unwrap();

        let db = open(dir.path());
        let applied = db.applied_seq("r").unwrap();
        let last_acked = *acked.last().unwrap();
        assert!(
            applied >= crash_seq(last_acked),
            "round {round}: applied {applied}, entry {last_acked} was acknowledged"
        );
        // Entries in order, none skipped: the entry of the applied sequence is the last one
        // whose writes are there, and every one before it is.
        let done = (0..).take_while(|&k| crash_seq(k) <= applied).count() as u64;
        assert_eq!(crash_seq(done - 1), applied, "round {round}");
        let last_upsert = (0..done).rev().find(|k| k % 3 != 2).unwrap();
        let last = records(&db, &["last".to_string()]).remove(0).unwrap();
        assert_eq!(last.metadata["k"], json!(last_upsert), "round {round}");
        let ids: Vec<String> = (0..done + 3).map(|k| format!("op-{k}")).collect();
        for (k, r) in (0..).zip(records(&db, &ids)) {
            let want = match k % 3 {
                2 => false,         // a delete entry writes no document
                1 => k + 1 == done, // deleted by the next entry, once it is applied
                _ => k < done,
            };
            assert_eq!(
                r.is_some(),
                want,
                "round {round}: op-{k} (entries 0..{done} applied)"
            );
        }
        // A replayed entry is recognised as applied.
        assert_eq!(
            apply(&db, applied, crash_entry(done - 1)),
            ReplicatedOutcome::AlreadyApplied
        );
    }
    // Each entry acknowledged once, in order (one applied but not yet acknowledged at a kill
    // is never acknowledged: the next child starts after it).
    assert!(acked.windows(2).all(|w| w[1] > w[0]), "{acked:?}");
}

/// Parses `@ack K` anywhere in a line (libtest may print "test name ... " before it).
fn parse_ack(line: &str) -> Option<u64> {
    line[line.find("@ack ")? + 5..].trim().parse().ok()
}
