//! The watermark of acknowledged writes: storage damaged behind it refuses to open, or opens
//! and reports with `accept_data_loss`, keeping the old watermark as evidence.

use std::path::{Path, PathBuf};

use latentdb_storage::{
    CollectionSpec, DataLossReport, Document, Durability, Error, Metric, SLED_DIR, Storage,
    StorageOptions, WATERMARK_FILE,
};
use latentdb_types::ErrorKind;

const N: usize = 200;

/// A database with `N` acknowledged (synced) single-document writes to "c" and 3 to "other".
fn acknowledged_db() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    s.create_collection(CollectionSpec::new("c", 4, Metric::L2))
        .unwrap();
    s.create_collection(CollectionSpec::new("other", 2, Metric::Dot))
        .unwrap();
    for i in 0..N {
        let doc = Document::new(format!("d{i:04}"), vec![i as f32; 4]).with_text("t");
        s.upsert("c", vec![doc], None).unwrap();
    }
    for i in 0..3 {
        s.upsert(
            "other",
            vec![Document::new(format!("o{i}"), vec![1.0, 2.0])],
            None,
        )
        .unwrap();
    }
    dir
}

fn accepting() -> StorageOptions {
    StorageOptions {
        accept_data_loss: true,
        ..StorageOptions::default()
    }
}

fn evidence(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("watermark.lost-"))
        })
        .collect();
    out.sort();
    out
}

fn flip_bit(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_bit_flip_in_sleds_log_refuses_to_open_then_opens_reporting_with_the_flag() {
    let dir = acknowledged_db();
    let db_file = dir.path().join(SLED_DIR).join("db");
    let len = std::fs::metadata(&db_file).unwrap().len() as usize;
    flip_bit(&db_file, len / 2);
    let watermark = std::fs::read(dir.path().join(WATERMARK_FILE)).unwrap();

    let err = Storage::open(dir.path(), StorageOptions::default()).unwrap_err();
    let Error::DataLoss {
        collection,
        expected,
        found,
    } = &err
    else {
        panic!("expected DataLoss, got {err}");
    };
    assert_eq!((collection.as_str(), *expected), ("c", N as u64));
    assert!(*found < N as u64, "found {found}");
    assert_eq!(err.kind(), ErrorKind::DataLoss);
    assert!(!err.is_caller_fault());
    let msg = err.to_string();
    for part in [
        "\"c\"",
        &N.to_string(),
        &found.to_string(),
        "--accept-data-loss",
    ] {
        assert!(msg.contains(part), "{part} not in {msg}");
    }
    // A refused open changes nothing of ours: it refuses again, and the watermark is intact.
    assert!(matches!(
        Storage::open(dir.path(), StorageOptions::default()),
        Err(Error::DataLoss { .. })
    ));
    assert_eq!(
        std::fs::read(dir.path().join(WATERMARK_FILE)).unwrap(),
        watermark
    );
    assert!(evidence(dir.path()).is_empty());

    // With the flag it opens, reports, and keeps the old watermark aside.
    let found = *found;
    {
        let s = Storage::open(dir.path(), accepting()).unwrap();
        // "other" was written after "c", so it lost all three of its writes.
        assert_eq!(
            s.data_loss(),
            &[
                DataLossReport {
                    collection: "c".into(),
                    expected: N as u64,
                    found,
                },
                DataLossReport {
                    collection: "other".into(),
                    expected: 3,
                    found: 0,
                }
            ]
        );
        assert_eq!(s.last_seq("c").unwrap(), found);
        // What is left is readable; the untouched prefix of the log survived.
        assert_eq!(s.count("c").unwrap(), found);
        assert!(s.get("c", &["d0000"]).unwrap()[0].is_some());
    }
    let kept = evidence(dir.path());
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(&kept[0]).unwrap(), watermark);

    // The loss is now the baseline: later opens succeed without the flag and report nothing,
    // and the evidence is still there.
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    assert!(s.data_loss().is_empty());
    drop(s);
    assert_eq!(evidence(dir.path()), kept);
}

#[test]
fn a_truncated_log_or_a_lost_database_is_detected_per_collection() {
    // Truncation of sled's log.
    let dir = acknowledged_db();
    let db_file = dir.path().join(SLED_DIR).join("db");
    let len = std::fs::metadata(&db_file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db_file)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    match Storage::open(dir.path(), StorageOptions::default()) {
        Err(Error::DataLoss {
            expected, found, ..
        }) => assert!(found < expected),
        other => panic!("expected DataLoss, got {other:?}"),
    }

    // The whole sled directory gone: every collection is reported, missing ones with 0.
    let dir = acknowledged_db();
    std::fs::remove_dir_all(dir.path().join(SLED_DIR)).unwrap();
    assert!(matches!(
        Storage::open(dir.path(), StorageOptions::default()),
        Err(Error::DataLoss { found: 0, .. })
    ));
    let s = Storage::open(dir.path(), accepting()).unwrap();
    let mut lost = s.data_loss().to_vec();
    lost.sort_by(|a, b| a.collection.cmp(&b.collection));
    assert_eq!(
        lost,
        vec![
            DataLossReport {
                collection: "c".into(),
                expected: N as u64,
                found: 0
            },
            DataLossReport {
                collection: "other".into(),
                expected: 3,
                found: 0
            },
        ]
    );
    assert!(s.list_collections().is_empty());
}

#[test]
fn dropped_collections_and_buffered_writes_are_not_reported_lost() {
    let dir = acknowledged_db();
    {
        let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        s.drop_collection("other").unwrap();
        // Buffered writes count once flushed (or at close).
        for i in 0..10 {
            s.upsert(
                "c",
                vec![Document::new(format!("b{i}"), vec![0.5; 4])],
                Some(Durability::Buffered),
            )
            .unwrap();
        }
        s.flush().unwrap();
        s.create_collection(CollectionSpec::new("other", 2, Metric::Dot))
            .unwrap();
    }
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    assert!(s.data_loss().is_empty());
    assert_eq!(s.last_seq("c").unwrap(), N as u64 + 10);
    assert_eq!(s.count("other").unwrap(), 0);
    drop(s);

    // The re-created "other" is tracked by its own identity: losing it is still detected.
    let dir2 = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), dir2.path());
    {
        let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        s.upsert("other", vec![Document::new("x", vec![1.0, 1.0])], None)
            .unwrap();
    }
    // Storage from before that write, watermark from after it.
    std::fs::remove_dir_all(dir.path().join(SLED_DIR)).unwrap();
    copy_dir(&dir2.path().join(SLED_DIR), &dir.path().join(SLED_DIR));
    match Storage::open(dir.path(), StorageOptions::default()) {
        Err(Error::DataLoss {
            collection,
            expected: 1,
            found: 0,
        }) => assert_eq!(collection, "other"),
        other => panic!("expected DataLoss, got {other:?}"),
    }
}

#[test]
fn a_torn_or_missing_watermark_only_weakens_detection() {
    let dir = acknowledged_db();
    std::fs::write(
        dir.path().join(WATERMARK_FILE),
        b"LDBWMARK\0\0\0\x01garbage",
    )
    .unwrap();
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    assert!(s.data_loss().is_empty());
    assert_eq!(s.count("c").unwrap(), N as u64);
    drop(s);
    // Rewritten: detection works again.
    std::fs::remove_dir_all(dir.path().join(SLED_DIR)).unwrap();
    assert!(matches!(
        Storage::open(dir.path(), StorageOptions::default()),
        Err(Error::DataLoss { .. })
    ));

    let dir = acknowledged_db();
    std::fs::remove_file(dir.path().join(WATERMARK_FILE)).unwrap();
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    assert_eq!(s.count("c").unwrap(), N as u64);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else if p.file_name().unwrap() != "LOCK" {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}
