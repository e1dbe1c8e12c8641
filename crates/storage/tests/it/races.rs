//! Races between writers, settings changes, drops and readers.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use latentdb_storage::{CollectionSpec, Document, Error, Metric, Storage, StorageOptions};
use serde_json::json;

fn storage() -> (tempfile::TempDir, Arc<Storage>) {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    (dir, Arc::new(s))
}

#[test]
fn settings_changes_racing_writers_never_hand_out_a_point_twice() {
    const WRITERS: usize = 4;
    const BATCHES: usize = 60;
    let (_dir, s) = storage();
    s.create_collection(CollectionSpec::new("c", 2, Metric::L2))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let settings = {
        let (s, done) = (s.clone(), done.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                s.update_collection_settings("c", json!({"v": n}), json!({"m": 16}))
                    .unwrap();
            }
            n
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut points = Vec::new();
                for b in 0..BATCHES {
                    let docs = (0..3)
                        .map(|i| Document::new(format!("w{w}-{b}-{i}"), vec![w as f32, b as f32]))
                        .collect();
                    let out = s
                        .upsert("c", docs, Some(latentdb_storage::Durability::Buffered))
                        .unwrap();
                    points.extend(out.inserted.into_iter().map(|(p, _)| p));
                }
                points
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in writers {
        all.extend(w.join().unwrap());
    }
    done.store(true, Ordering::Relaxed);
    assert!(settings.join().unwrap() > 0);

    let unique: HashSet<u32> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a point id was handed out twice");
    let total = (WRITERS * BATCHES * 3) as u64;
    assert_eq!(s.count("c").unwrap(), total);
    assert_eq!(s.last_seq("c").unwrap(), total);
    for w in 0..WRITERS {
        for b in 0..BATCHES {
            for i in 0..3 {
                let id = format!("w{w}-{b}-{i}");
                let got = s.get("c", &[&id]).unwrap().remove(0).unwrap();
                assert_eq!(got.id, id, "get returned another document's record");
            }
        }
    }
    let mut scanned = 0u64;
    s.scan_points("c", |_, _| {
        scanned += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(scanned, total);
    assert_eq!(
        s.collection_info("c").unwrap().embedder["v"],
        json!(settings_last(&s))
    );
}

fn settings_last(s: &Storage) -> u64 {
    s.collection_config("c").unwrap().spec.embedder["v"]
        .as_u64()
        .unwrap()
}

#[test]
fn reads_racing_a_drop_report_not_found() {
    for round in 0..20 {
        let (_dir, s) = storage();
        s.create_collection(CollectionSpec::new("c", 2, Metric::L2))
            .unwrap();
        let docs: Vec<_> = (0..300)
            .map(|i| {
                Document::new(format!("d{i:04}"), vec![i as f32, 1.0])
                    .with_metadata(json!({"parent": "d"}))
            })
            .collect();
        s.upsert("c", docs, None).unwrap();
        let readers: Vec<_> = (0..3)
            .map(|r| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for n in 0.. {
                        let res: Result<(), Error> = match (n + r) % 6 {
                            0 => s.get("c", &["d0001", "d0150"]).map(drop),
                            1 => s.scroll("c", None, 200).map(drop),
                            2 => s.scan_points("c", |_, _| Ok(())),
                            3 => s.changes_since("c", 0).map(drop),
                            4 => s.get_points("c", &[1, 2, 3]).map(drop),
                            _ => s.chunk_ids("c", "d").map(drop),
                        };
                        match res {
                            Ok(()) => {}
                            Err(Error::CollectionNotFound(_)) => return n,
                            Err(e) => panic!("round {round}: a read racing a drop: {e}"),
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(2));
        s.drop_collection("c").unwrap();
        for r in readers {
            r.join().unwrap();
        }
    }
}
