//! Online point-in-time backups: a writer keeps going while backups are taken; each backup
//! holds exactly the state at its captured sequence; restore rebuilds a database that equals it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use latentdb::backup::{self, BackupOptions};
use latentdb::{CollectionSpec, Database, Document, Metric, SearchRequest};

const DIM: usize = 384;

/// A deterministic vector for document `n` at `version`: component 0 carries the version.
fn vector(n: u64, version: u32) -> Vec<f32> {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(version);
    let mut v = Vec::with_capacity(DIM);
    v.push(version as f32);
    for _ in 1..DIM {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push((x % 2000) as f32 / 1000.0 - 1.0);
    }
    v
}

fn doc(n: u64, version: u32) -> Document {
    Document::new(format!("d{n}"), vector(n, version)).with_text(format!("doc {n} v{version}"))
}

/// The documents a backup holds: id → version.
fn backed_up(target: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    backup::read_collection(target, "c", |r| {
        assert!(out.insert(r.id.clone(), r.vector[0] as u32).is_none());
        assert_eq!(
            r.vector,
            vector(r.id[1..].parse().unwrap(), r.vector[0] as u32)
        );
    })
    .unwrap();
    out
}

/// Documents in the source at start, overridable for a quick local run.
fn docs_at_start() -> u64 {
    std::env::var("LATENTDB_BACKUP_TEST_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

#[test]
fn backups_under_a_writer_hold_exactly_the_captured_state() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(dir.path().join("db")).unwrap());
    db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
        .unwrap();
    let start = docs_at_start();
    let mut seq0 = 0;
    for chunk in (0..start).collect::<Vec<_>>().chunks(2_000) {
        seq0 = db
            .upsert("c", chunk.iter().map(|&n| doc(n, 0)).collect())
            .unwrap()
            .seq;
    }
    // An index dump at the start: every backup carries it with the log after it.
    db.flush().unwrap();
    // The writer: batches of 10 at about 1,000 documents/s, new ids, replacements, deletes.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            // (sequence after the write, document, Some(version) / None for a delete)
            let mut log: Vec<(u64, u64, Option<u32>)> = Vec::new();
            let mut round = 0u64;
            let mut seq = seq0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                round += 1;
                let version = round as u32;
                let ids: Vec<u64> = (0..10)
                    .map(|k| (round * 7_919 + k * 104_729) % (start + round))
                    .collect();
                let mut ids = ids;
                ids.sort_unstable();
                ids.dedup();
                if round.is_multiple_of(4) {
                    let names: Vec<String> = ids.iter().map(|n| format!("d{n}")).collect();
                    // One change per document that existed.
                    seq += db.delete("c", &names).unwrap().len() as u64;
                    log.extend(ids.iter().map(|&n| (seq, n, None)));
                } else {
                    let res = db
                        .upsert("c", ids.iter().map(|&n| doc(n, version)).collect())
                        .unwrap();
                    seq = res.seq;
                    log.extend(ids.iter().map(|&n| (seq, n, Some(version))));
                }
                if let Some(rest) = Duration::from_millis(10).checked_sub(t.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            log
        })
    };
    let mut taken = Vec::new();
    for run in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        let target = out.path().join(format!("b{run}"));
        let target = target.to_str().unwrap().to_owned();
        let report = db.backup(&target, &BackupOptions::default()).unwrap();
        assert_eq!(report.collections.len(), 1);
        taken.push((target, report));
    }
    stop.store(true, Ordering::Relaxed);
    let log = writer.join().unwrap();
    let mut mismatches = 0;
    let mut captures = Vec::new();
    for (target, report) in &taken {
        let seq = report.collections[0].seq;
        let mut model: BTreeMap<String, u32> = (0..start).map(|n| (format!("d{n}"), 0)).collect();
        for (at, n, v) in log.iter().filter(|(at, _, _)| *at <= seq) {
            let _ = at;
            match v {
                Some(v) => model.insert(format!("d{n}"), *v),
                None => model.remove(&format!("d{n}")),
            };
        }
        let got = backed_up(target);
        if got != model {
            mismatches += 1;
        }
        assert_eq!(report.collections[0].count as usize, model.len());
        captures.push(report.capture_ms);
    }
    eprintln!("10 backups under a writer: capture ms {captures:?}, {mismatches} mismatches");
    assert_eq!(mismatches, 0);
    assert!(log.len() > 100, "the writer wrote during the backups");

    // The last one restored: the database equals the backup (ids, versions, texts), and a
    // search works on the index built at open.
    let (target, report) = taken.last().unwrap();
    let new = out.path().join("restored");
    let restored = backup::restore(target, &new).unwrap();
    assert_eq!(restored.collections, report.collections);
    let want = backed_up(target);
    let rdb = Database::open(&new).unwrap();
    assert_eq!(rdb.count("c").unwrap() as usize, want.len());
    assert!(report.collections[0].index_included);
    let stats = rdb.index_stats("c").unwrap();
    assert!(
        stats.loaded_from_dump && !stats.rebuilt_on_open,
        "{stats:?}"
    );
    assert_eq!(stats.live, want.len());
    let mut after: Option<String> = None;
    let mut seen = 0;
    loop {
        let page = rdb.scroll("c", after.as_deref(), 5_000).unwrap();
        for r in &page.records {
            assert_eq!(want.get(&r.id), Some(&(r.vector[0] as u32)), "{}", r.id);
            assert_eq!(
                r.text.as_deref(),
                Some(format!("doc {} v{}", &r.id[1..], r.vector[0] as u32).as_str())
            );
            seen += 1;
        }
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, want.len());
    let (id, v) = want.iter().next().unwrap();
    let hits = rdb
        .search(
            "c",
            &SearchRequest::vector(vector(id[1..].parse().unwrap(), *v)),
        )
        .unwrap();
    assert_eq!(&hits[0].id, id);
}

#[test]
fn restore_refuses_damage_and_non_empty_directories_and_loads_matching_dumps() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("db")).unwrap();
    db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
        .unwrap();
    db.create_collection(CollectionSpec::new("other", DIM, Metric::L2))
        .unwrap();
    db.upsert("c", (0..300).map(|n| doc(n, 1)).collect())
        .unwrap();
    db.upsert("other", (0..5).map(|n| doc(n, 2)).collect())
        .unwrap();
    db.flush().unwrap(); // the dumps now reflect storage: the backup carries them
    let target = out.path().join("b").to_str().unwrap().to_owned();
    let opts = BackupOptions {
        collections: vec!["c".into()],
        ..Default::default()
    };
    let report = db.backup(&target, &opts).unwrap();
    assert_eq!(report.collections.len(), 1, "only the chosen collection");
    assert!(report.collections[0].index_included);
    // A second backup into the same place is refused.
    let again = db.backup(&target, &opts).unwrap_err();
    assert_eq!(again.kind(), latentdb::ErrorKind::AlreadyExists, "{again}");

    // Restore into a non-empty directory: refused, and the directory untouched.
    let busy = out.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("keep"), b"x").unwrap();
    let e = backup::restore(&target, &busy).unwrap_err();
    assert_eq!(e.kind(), latentdb::ErrorKind::FailedPrecondition, "{e}");
    assert_eq!(std::fs::read(busy.join("keep")).unwrap(), b"x");

    // A good restore loads the graph from the included dump.
    let good = out.path().join("good");
    backup::restore(&target, &good).unwrap();
    let rdb = Database::open(&good).unwrap();
    assert_eq!(rdb.count("c").unwrap(), 300);
    assert!(rdb.collection_info("other").is_err());
    let stats = rdb.index_stats("c").unwrap();
    assert!(stats.loaded_from_dump, "{stats:?}");
    let q = SearchRequest::vector(vector(7, 1));
    let ids = |d: &Database| -> Vec<String> {
        d.search("c", &q)
            .unwrap()
            .into_iter()
            .map(|h| h.id.into_string())
            .collect()
    };
    assert_eq!(ids(&rdb), ids(&db));
    drop(rdb);

    // One flipped byte in a records chunk: verify and restore refuse it, nothing is left.
    let chunk = std::fs::read_dir(out.path().join("b/collections/0"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("records.")
        })
        .unwrap();
    let mut bytes = std::fs::read(&chunk).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&chunk, bytes).unwrap();
    assert!(backup::verify(&target).is_err());
    let bad = out.path().join("bad");
    let e = backup::restore(&target, &bad).unwrap_err();
    assert_eq!(e.kind(), latentdb::ErrorKind::DataLoss, "{e}");
    assert!(!bad.exists() || std::fs::read_dir(&bad).unwrap().next().is_none());

    // No manifest (an upload killed before its commit): not a backup.
    std::fs::remove_file(out.path().join("b/MANIFEST")).unwrap();
    let e = backup::verify(&target).unwrap_err();
    assert_eq!(e.kind(), latentdb::ErrorKind::NotFound, "{e}");
    assert!(
        backup::list(out.path().to_str().unwrap())
            .unwrap()
            .is_empty()
    );
}
