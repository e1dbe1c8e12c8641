//! `Storage::snapshot`: a point-in-time view that writers keep going around.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use latentdb_storage::record::decode_record;
use latentdb_storage::{CollectionSpec, Document, Metric, Snapshot, Storage, StorageOptions};

fn doc(id: &str, v: f32) -> Document {
    Document::new(id, vec![v, 1.0]).with_text(format!("text {id} {v}"))
}

/// The documents of snapshot collection `i`: id → first vector component.
fn contents(snap: &Snapshot, i: usize) -> BTreeMap<String, f32> {
    let mut out = BTreeMap::new();
    let n = snap
        .for_each_record(i, |_, bytes| {
            let r = decode_record(bytes)?;
            assert!(
                out.insert(r.id.clone(), r.vector[0]).is_none(),
                "{} twice",
                r.id
            );
            Ok(())
        })
        .unwrap();
    assert_eq!(n as usize, out.len());
    out
}

fn open(dir: &std::path::Path) -> Storage {
    Storage::open(dir, StorageOptions::default()).unwrap()
}

#[test]
fn snapshot_keeps_the_captured_state_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.create_collection(CollectionSpec::new("c", 2, Metric::L2))
        .unwrap();
    s.upsert(
        "c",
        (0..10).map(|i| doc(&format!("d{i}"), i as f32)).collect(),
        None,
    )
    .unwrap();
    let snap = s.snapshot(&["c".to_owned()]).unwrap();
    let c = &snap.collections()[0];
    assert_eq!((c.name.as_str(), c.count, c.seq), ("c", 10, 10));
    // Writes after the capture: a delete, a replace, an insert.
    s.delete("c", &["d1"], None).unwrap();
    s.upsert("c", vec![doc("d2", 200.0), doc("new", 9.0)], None)
        .unwrap();
    assert_eq!(
        s.deferred_records("c").unwrap(),
        2,
        "d1 and d2's old version"
    );
    // The log is not trimmed while held: the snapshot still reads changes (4, 10].
    s.trim_changes("c", 13).unwrap();
    let log = snap.changes(0, 4).unwrap().expect("complete");
    assert_eq!(
        log.iter().map(|c| c.seq()).collect::<Vec<_>>(),
        [5, 6, 7, 8, 9, 10]
    );
    assert_eq!(snap.changes(0, 10).unwrap(), Some(Vec::new()));
    let got = contents(&snap, 0);
    let want: BTreeMap<String, f32> = (0..10).map(|i| (format!("d{i}"), i as f32)).collect();
    assert_eq!(got, want);
    // Reads other than the snapshot's never see deferred records.
    assert!(s.get("c", &["d1"]).unwrap()[0].is_none());
    assert_eq!(s.count("c").unwrap(), 10);
    let mut live = 0;
    s.scan_points("c", |_, _| {
        live += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(live, 10);
    drop(snap);
    assert_eq!(
        s.deferred_records("c").unwrap(),
        0,
        "purged after the last hold"
    );
    // Without a hold, trims happen; a snapshot then reports the log incomplete below them.
    s.trim_changes("c", 13).unwrap();
    let later = s.snapshot(&[]).unwrap();
    assert_eq!(later.changes(0, 4).unwrap(), None);
    drop(later);
    // With no hold, removals delete at once.
    s.delete("c", &["d3"], None).unwrap();
    assert_eq!(s.deferred_records("c").unwrap(), 0);
}

#[test]
fn overlapping_snapshots_each_see_their_own_instant() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.create_collection(CollectionSpec::new("a", 2, Metric::L2))
        .unwrap();
    s.create_collection(CollectionSpec::new("b", 2, Metric::L2))
        .unwrap();
    s.upsert("a", vec![doc("x", 1.0), doc("y", 2.0)], None)
        .unwrap();
    s.upsert("b", vec![doc("z", 3.0)], None).unwrap();
    let first = s.snapshot(&[]).unwrap();
    assert_eq!(first.collections().len(), 2);
    s.delete("a", &["x"], None).unwrap();
    let second = s.snapshot(&["a".to_owned()]).unwrap();
    s.delete("a", &["y"], None).unwrap();
    s.delete("b", &["z"], None).unwrap();
    let ai = first
        .collections()
        .iter()
        .position(|c| c.name == "a")
        .unwrap();
    let bi = 1 - ai;
    assert_eq!(contents(&first, ai).len(), 2);
    assert_eq!(contents(&first, bi).len(), 1);
    let second_a = contents(&second, 0);
    assert_eq!(second_a.keys().collect::<Vec<_>>(), ["y"]);
    drop(first);
    // `second` still holds "a": y stays deferred for it; x (removed before it) may go.
    assert_eq!(contents(&second, 0).keys().collect::<Vec<_>>(), ["y"]);
    drop(second);
    assert_eq!(s.deferred_records("a").unwrap(), 0);
    assert_eq!(s.deferred_records("b").unwrap(), 0);
    assert!(s.snapshot(&["nope".to_owned()]).is_err());
}

/// The child: holds a snapshot, deletes "a" (deferred), prints `@held`, then waits to be
/// killed.
#[test]
#[ignore = "child process of another test; spawned with --ignored --exact"]
fn held_snapshot_child() {
    let Ok(dir) = std::env::var("LATENTDB_SNAPSHOT_CHILD") else {
        panic!("run only as a child process of another test");
    };
    let s = open(std::path::Path::new(&dir));
    s.create_collection(CollectionSpec::new("c", 2, Metric::L2))
        .unwrap();
    s.upsert("c", vec![doc("a", 1.0), doc("b", 2.0)], None)
        .unwrap();
    let _snap = s.snapshot(&[]).unwrap();
    s.delete("c", &["a"], None).unwrap();
    assert_eq!(s.deferred_records("c").unwrap(), 1);
    println!("@held");
    std::thread::sleep(std::time::Duration::from_secs(600));
}

#[test]
fn deferred_records_left_by_a_crash_are_purged_on_open() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "snapshot::held_snapshot_child",
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LATENTDB_SNAPSHOT_CHILD", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let held = lines.map_while(Result::ok).any(|l| l.contains("@held"));
    child.kill().unwrap(); // SIGKILL while the snapshot holds the collection
    child.wait().unwrap();
    assert!(held, "the child did not reach its snapshot");
    let s = open(dir.path());
    assert_eq!(s.deferred_records("c").unwrap(), 0);
    assert_eq!(s.count("c").unwrap(), 1);
    assert!(s.get("c", &["a"]).unwrap()[0].is_none());
    assert!(s.get("c", &["b"]).unwrap()[0].is_some());
}

/// A writer upserts, replaces and deletes continuously while snapshots are taken; each
/// snapshot's contents equal the writer's model replayed up to the captured sequence.
#[test]
fn snapshots_under_a_concurrent_writer_match_the_model_at_their_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(open(dir.path()));
    s.create_collection(CollectionSpec::new("c", 2, Metric::L2))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            // (sequence after the write, id, Some(value) for an upsert / None for a delete)
            let mut log: Vec<(u64, String, Option<f32>)> = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) || i < 300 {
                let id = format!("d{}", (i * 7919) % 97);
                if i % 5 == 4 {
                    let out = s.delete("c", &[id.as_str()], None).unwrap();
                    if !out.deleted.is_empty() {
                        log.push((out.seq, id, None));
                    }
                } else {
                    let out = s.upsert("c", vec![doc(&id, i as f32)], None).unwrap();
                    log.push((out.seq, id, Some(i as f32)));
                }
                i += 1;
            }
            log
        })
    };
    let mut snaps = Vec::new();
    for _ in 0..8 {
        std::thread::sleep(std::time::Duration::from_millis(15));
        let snap = s.snapshot(&[]).unwrap();
        let got = contents(&snap, 0);
        snaps.push((snap.collections()[0].seq, snap.collections()[0].count, got));
    }
    stop.store(true, Ordering::Relaxed);
    let log = writer.join().unwrap();
    for (seq, count, got) in snaps {
        let mut model = BTreeMap::new();
        for (at, id, v) in log.iter().filter(|(at, _, _)| *at <= seq) {
            let _ = at;
            match v {
                Some(v) => model.insert(id.clone(), *v),
                None => model.remove(id),
            };
        }
        assert_eq!(got, model, "snapshot at sequence {seq}");
        assert_eq!(count as usize, model.len());
    }
    assert_eq!(s.deferred_records("c").unwrap(), 0);
}
