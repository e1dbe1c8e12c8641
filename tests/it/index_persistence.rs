//! Index persistence: reopen without a rebuild, catch up after SIGKILL from the change log,
//! rebuild (never fail) on a damaged dump.
//!
//! The SIGKILL child is this same test binary, re-executed with `LATENTDB_INDEX_CHILD` set.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use latentdb::{CollectionSpec, Database, Metric, SearchRequest};

const DIM: usize = 24;
const BATCH: u64 = 50;

fn dump_dir(db: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(db.join(latentdb::INDEX_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "one dump directory per collection");
    dirs.pop().unwrap()
}

fn results(db: &Database, queries: u64, exact: bool) -> Vec<Vec<(String, f32)>> {
    (0..queries)
        .map(|n| {
            let req = SearchRequest {
                k: 10,
                exact,
                ..SearchRequest::vector(crate::common::vector(1_000_000 + n, DIM))
            };
            db.search("c", &req)
                .unwrap()
                .into_iter()
                .map(|h| (h.id.into_string(), h.score))
                .collect()
        })
        .collect()
}

fn fill(db: &Database, n: u64) {
    db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
        .unwrap();
    for start in (0..n).step_by(500) {
        let docs = (start..(start + 500).min(n))
            .map(|i| crate::common::doc(i, DIM))
            .collect();
        db.upsert("c", docs).unwrap();
    }
}

#[test]
fn reopen_after_close_loads_the_dump_and_gives_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let db = Database::open(dir.path()).unwrap();
        fill(&db, 3_000);
        db.delete("c", &["doc-00000005", "doc-00000006"]).unwrap();
        assert!(!db.index_stats("c").unwrap().rebuilt_on_open);
        results(&db, 50, false)
    }; // dropped: the index is persisted
    let db = Database::open(dir.path()).unwrap();
    let stats = db.index_stats("c").unwrap();
    assert!(
        stats.loaded_from_dump && !stats.rebuilt_on_open,
        "{stats:?}"
    );
    assert_eq!(stats.replayed, 0);
    assert_eq!(stats.live, 2_998);
    assert_eq!(results(&db, 50, false), before);
    // flush persists too; a change after it is replayed from the log on the next open
    db.flush().unwrap();
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    assert!(db.index_stats("c").unwrap().loaded_from_dump);
    db.drop_collection("c").unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join(latentdb::INDEX_DIR))
            .unwrap()
            .count(),
        0,
        "dropping a collection removes its dump"
    );
}

#[test]
fn a_damaged_dump_leads_to_a_rebuild_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let db = Database::open(dir.path()).unwrap();
        fill(&db, 1_500);
        results(&db, 20, true)
    };
    let dump = dump_dir(dir.path());
    // 1. flip a byte in the graph file
    let graph = std::fs::read_dir(&dump)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("graph-")
        })
        .unwrap();
    let mut bytes = std::fs::read(&graph).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&graph, &bytes).unwrap();
    {
        let db = Database::open(dir.path()).unwrap();
        let stats = db.index_stats("c").unwrap();
        assert!(
            stats.rebuilt_on_open && !stats.loaded_from_dump,
            "{stats:?}"
        );
        assert_eq!(stats.live, 1_500);
        // The rebuilt index holds the same points: exact search agrees exactly.
        assert_eq!(results(&db, 20, true), before);
    }
    // the close wrote a good dump again
    assert!(
        Database::open(dir.path())
            .unwrap()
            .index_stats("c")
            .unwrap()
            .loaded_from_dump
    );
    // 2. garbage manifest; 3. missing dump directory
    std::fs::write(dump_dir(dir.path()).join("manifest.json"), b"{not json").unwrap();
    let db = Database::open(dir.path()).unwrap();
    assert!(db.index_stats("c").unwrap().rebuilt_on_open);
    drop(db);
    std::fs::remove_dir_all(dump_dir(dir.path())).unwrap();
    let db = Database::open(dir.path()).unwrap();
    assert!(db.index_stats("c").unwrap().rebuilt_on_open);
    assert_eq!(db.index_stats("c").unwrap().live, 1_500);
}

/// The child: upserts batches forever (every batch also deletes a fifth of the previous
/// batch), flushing (persisting the index) every 4 batches; prints `@ack R B` after batch B
/// of round R returned.
#[test]
#[ignore = "child process of another test; spawned with --ignored --exact"]
fn index_child() {
    let Ok(dir) = std::env::var("LATENTDB_INDEX_CHILD") else {
        panic!("run only as a child process of another test");
    };
    let round: u64 = std::env::var("LATENTDB_INDEX_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let db = Database::open(&dir).unwrap();
    if db.collection_info("c").is_err() {
        db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
            .unwrap();
    }
    for batch in 0.. {
        let base = (round * 1_000 + batch) * BATCH;
        let docs = (base..base + BATCH)
            .map(|n| crate::common::doc(n, DIM))
            .collect();
        db.upsert("c", docs).unwrap();
        if batch > 0 {
            db.delete("c", &deleted_by(round, batch)).unwrap();
        }
        if batch % 4 == 3 {
            db.flush().unwrap();
        }
        println!("@ack {round} {batch}");
    }
}

/// The ids that batch `batch` of `round` deletes (a fifth of the previous batch).
fn deleted_by(round: u64, batch: u64) -> Vec<String> {
    let prev = (round * 1_000 + batch - 1) * BATCH;
    (prev..prev + BATCH)
        .filter(|n| n % 5 == 0)
        .map(|n| format!("doc-{n:08}"))
        .collect()
}

fn parse_ack(line: &str) -> Option<(u64, u64)> {
    // libtest may print "test index_child ... " on the same line before the first ack.
    let at = line.find("@ack ")?;
    let mut it = line[at + 5..].split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

#[test]
fn after_sigkill_no_acknowledged_write_is_lost_and_the_index_agrees_with_storage() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(u64, u64)> = Vec::new();
    for round in 0..4u64 {
        let mut child = Command::new(&exe)
            .args([
                "index_persistence::index_child",
                "--ignored",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LATENTDB_INDEX_CHILD", dir.path())
            .env("LATENTDB_INDEX_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = 5 + round * 3; // past at least one flush
        let mut this_round = 0;
        let started = Instant::now();
        while this_round < kill_after {
            let line = lines.next().expect("child exited early").unwrap();
            if let Some(ack) = parse_ack(&line) {
                acked.push(ack);
                this_round += 1;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "child too slow"
            );
        }
        child.kill().unwrap(); // SIGKILL
        for line in lines.map_while(Result::ok) {
            if let Some(ack) = parse_ack(&line) {
                acked.push(ack);
            }
        }
        let _ = child.wait();

        let db = Database::open(dir.path()).unwrap();
        let stats = db.index_stats("c").unwrap();
        assert!(
            stats.loaded_from_dump,
            "round {round}: the dump of the last flush is used: {stats:?}"
        );
        let acked_set: HashSet<(u64, u64)> = acked.iter().copied().collect();
        let mut must_be_gone = HashSet::new();
        for &(r, b) in &acked {
            if b > 0 {
                must_be_gone.extend(deleted_by(r, b));
            }
        }
        // Every acknowledged, not deleted document is stored and findable by its own vector.
        let (mut checked, mut graph_found) = (0usize, 0usize);
        for &(r, b) in &acked_set {
            let base = (r * 1_000 + b) * BATCH;
            for n in base..base + BATCH {
                let id = format!("doc-{n:08}");
                if must_be_gone.contains(&id) {
                    continue;
                }
                let rec = db.get("c", &[&id]).unwrap().pop().unwrap();
                let rec = rec.unwrap_or_else(|| panic!("acknowledged {id} lost"));
                crate::common::assert_intact(&rec, n, DIM);
                // In the index and live: exact search over the index's own vectors finds it.
                let exact = SearchRequest {
                    exact: true,
                    k: 1,
                    ..SearchRequest::vector(crate::common::vector(n, DIM))
                };
                let hits = db.search("c", &exact).unwrap();
                assert_eq!(hits[0].id, id, "round {round}: {id} missing from the index");
                // Reachable through the graph (HNSW may leave a rare node unreachable).
                let hits = db
                    .search("c", &SearchRequest::vector(crate::common::vector(n, DIM)))
                    .unwrap();
                graph_found += usize::from(hits.first().is_some_and(|h| h.id == id));
                checked += 1;
            }
        }
        assert!(
            graph_found as f64 >= 0.99 * checked as f64,
            "round {round}: only {graph_found} of {checked} found through the graph"
        );
        // No deleted document is returned, and the index holds exactly the stored documents.
        for id in &must_be_gone {
            assert!(db.get("c", &[id]).unwrap()[0].is_none());
            let n: u64 = id[4..].parse().unwrap();
            for exact in [false, true] {
                let req = SearchRequest {
                    exact,
                    ..SearchRequest::vector(crate::common::vector(n, DIM))
                };
                let hits = db.search("c", &req).unwrap();
                assert!(hits.iter().all(|h| h.id != id), "deleted {id} returned");
            }
        }
        let stats = db.index_stats("c").unwrap();
        assert_eq!(stats.live as u64, db.count("c").unwrap(), "round {round}");
    }
}
