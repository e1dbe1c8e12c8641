//! Damaged storage never passes silently: a database whose storage comes back behind the writes
//! it acknowledged refuses to open with a data-loss error (and changes none of the evidence),
//! unless the caller accepts the loss, in which case it opens with what is left, reports what
//! was lost and keeps the evidence. And an index dump that passes its checksums but breaks the
//! graph's structure is rebuilt, never served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use latentdb::{
    CollectionSpec, Database, DatabaseOptions, ErrorKind, Metric, SearchRequest, storage,
};

const DIM: usize = 16;

/// Every file under `dir` (recursively) with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    for (rel, bytes) in files(from) {
        let p = to.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
}

/// Upserts documents `range` into `name`, each batch acknowledged (durable) on return.
fn write(db: &Database, name: &str, range: std::ops::Range<u64>) {
    let docs: Vec<_> = range.map(|n| crate::common::doc(n, DIM)).collect();
    for chunk in docs.chunks(50) {
        db.upsert(name, chunk.to_vec()).unwrap();
    }
}

fn nearest(db: &Database, name: &str, n: u64) -> String {
    let req = SearchRequest {
        k: 1,
        ..SearchRequest::vector(crate::common::vector(n, DIM))
    };
    db.search(name, &req).unwrap()[0].id.to_string()
}

/// The dump directories under `DIR/index`, by name.
fn dump_dirs(db_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(db_dir.join(latentdb::INDEX_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A database with collections `c` (300 documents) and `other` (10), whose storage (and,
/// unless `keep_watermark`, its watermark) is then put back to the state it had after the
/// first 100 documents of `c`: storage came back behind what was acknowledged, as after a
/// damaged or truncated log. The index dump of `c` (written on close) still reflects all 300.
fn storage_behind(dir: &Path, restore_watermark: bool) {
    let snap = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir).unwrap();
        db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
            .unwrap();
        db.create_collection(CollectionSpec::new("other", DIM, Metric::L2))
            .unwrap();
        write(&db, "c", 0..100);
        write(&db, "other", 0..10);
    }
    copy_dir(&dir.join(storage::SLED_DIR), snap.path());
    let watermark = std::fs::read(dir.join(storage::WATERMARK_FILE)).unwrap();
    {
        let db = Database::open(dir).unwrap();
        write(&db, "c", 100..300);
    }
    std::fs::remove_dir_all(dir.join(storage::SLED_DIR)).unwrap();
    copy_dir(snap.path(), &dir.join(storage::SLED_DIR));
    if restore_watermark {
        std::fs::write(dir.join(storage::WATERMARK_FILE), watermark).unwrap();
    }
}

/// The database opens with what is left, and works.
fn assert_opens_with_what_is_left(db: &Database) {
    assert_eq!(db.count("c").unwrap(), 100);
    assert_eq!(db.count("other").unwrap(), 10);
    for n in [0, 42, 99] {
        let r = db.get("c", &[format!("doc-{n:08}")]).unwrap().remove(0);
        crate::common::assert_intact(&r.unwrap(), n, DIM);
        assert_eq!(nearest(db, "c", n), format!("doc-{n:08}"));
    }
    assert!(db.get("c", &["doc-00000150"]).unwrap()[0].is_none());
    assert_eq!(nearest(db, "other", 7), "doc-00000007");
    // Writable again.
    write(db, "c", 1_000..1_010);
    assert_eq!(db.count("c").unwrap(), 110);
}

#[test]
fn an_index_dump_ahead_of_storage_refuses_the_open_and_keeps_the_evidence() {
    let dir = tempfile::tempdir().unwrap();
    // Only the index dump remembers the lost writes (the watermark was put back too, as for a
    // database written before the watermark existed).
    storage_behind(dir.path(), true);
    let index_before = files(&dir.path().join(latentdb::INDEX_DIR));

    for _ in 0..2 {
        let err = Database::open(dir.path()).expect_err("opened with acknowledged writes lost");
        assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
        let msg = err.to_string();
        for part in ["\"c\"", "300", "100", "--accept-data-loss"] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
        assert_eq!(
            files(&dir.path().join(latentdb::INDEX_DIR)),
            index_before,
            "a refused open changed the index dumps"
        );
    }

    let db = Database::open_with(dir.path(), DatabaseOptions::new().accept_data_loss(true))
        .expect("accepting the loss opens the database");
    let lost = db.data_loss();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(
        (lost[0].collection.as_str(), lost[0].expected, lost[0].found),
        ("c", 300, 100)
    );
    assert!(db.quarantined().is_empty());
    assert_opens_with_what_is_left(&db);
    drop(db);

    // The dump of `c` was moved aside, byte for byte, and survives the next open and close.
    let db = Database::open(dir.path()).expect("the next open is an ordinary one");
    assert!(db.data_loss().is_empty());
    assert_eq!(db.count("c").unwrap(), 110);
    drop(db);
    let kept: Vec<String> = dump_dirs(dir.path())
        .into_iter()
        .filter(|n| n.contains(".lost-"))
        .collect();
    assert_eq!(kept.len(), 1, "{:?}", dump_dirs(dir.path()));
    let cid = kept[0].split('.').next().unwrap();
    let evidence = files(&dir.path().join(latentdb::INDEX_DIR).join(&kept[0]));
    let original: BTreeMap<PathBuf, Vec<u8>> = index_before
        .into_iter()
        .filter_map(|(p, b)| {
            let rel = p.strip_prefix(cid).ok()?.to_path_buf();
            Some((rel, b))
        })
        .collect();
    assert!(!original.is_empty());
    assert_eq!(evidence, original, "the evidence is not the dump as it was");
}

#[test]
fn storage_behind_its_watermark_refuses_the_open_and_keeps_the_evidence() {
    let dir = tempfile::tempdir().unwrap();
    storage_behind(dir.path(), false);
    let watermark = std::fs::read(dir.path().join(storage::WATERMARK_FILE)).unwrap();
    let index_before = files(&dir.path().join(latentdb::INDEX_DIR));

    let err = Database::open(dir.path()).expect_err("opened with acknowledged writes lost");
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    let msg = err.to_string();
    for part in ["\"c\"", "300", "100", "--accept-data-loss"] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    assert_eq!(
        std::fs::read(dir.path().join(storage::WATERMARK_FILE)).unwrap(),
        watermark,
        "a refused open changed the watermark"
    );
    assert_eq!(
        files(&dir.path().join(latentdb::INDEX_DIR)),
        index_before,
        "a refused open changed the index dumps"
    );

    let db =
        Database::open_with(dir.path(), DatabaseOptions::new().accept_data_loss(true)).unwrap();
    let lost: Vec<_> = db
        .data_loss()
        .into_iter()
        .map(|l| (l.collection, l.expected, l.found))
        .collect();
    assert_eq!(lost, [("c".to_owned(), 300, 100)]);
    assert_opens_with_what_is_left(&db);
    drop(db);
    // Both records of what was acknowledged are kept.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let old_marks: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(&format!("{}.lost-", storage::WATERMARK_FILE)))
        .collect();
    assert_eq!(old_marks.len(), 1, "{names:?}");
    assert_eq!(
        std::fs::read(dir.path().join(old_marks[0])).unwrap(),
        watermark
    );
    assert_eq!(
        dump_dirs(dir.path())
            .iter()
            .filter(|n| n.contains(".lost-"))
            .count(),
        1
    );
    let db = Database::open(dir.path()).unwrap();
    assert!(db.data_loss().is_empty());
    assert_eq!(db.count("c").unwrap(), 110);
}

/// CRC-32 (IEEE), as the dump manifest records it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Rewrites the dump in `dump` so that every upper-layer link of the entry point leads to
/// `target`'s slot, a node without upper layers (checksums and lengths updated, so the dump
/// passes every byte-level check). Returns the point id of that node.
fn break_upper_links(dump: &Path) -> u32 {
    let manifest_path = dump.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let graph_name = manifest["graph"]["name"].as_str().unwrap().to_owned();
    let graph_path = dump.join(&graph_name);
    let mut g = std::fs::read(&graph_path).unwrap();
    let (n, m, m0) = (
        le_u32(&g, 12) as usize,
        le_u32(&g, 16) as usize,
        le_u32(&g, 20) as usize,
    );
    let ids_at = 24;
    let levels_at = ids_at + 4 * n;
    let links0_at = levels_at + n + n.div_ceil(8);
    let upper_at = links0_at + 4 * n * (m0 + 1);
    let levels = g[levels_at..levels_at + n].to_vec();
    let entry = manifest["entry"]["slot"].as_u64().unwrap() as usize;
    assert!(levels[entry] > 0, "the entry point has upper layers");
    let target = (0..n).find(|&s| levels[s] == 0 && s != entry).unwrap();
    // Upper lists come in slot order, `level * (m + 1)` u32 per node.
    let mut at = upper_at;
    for (slot, &level) in levels.iter().enumerate() {
        let len = level as usize * (m + 1);
        if slot == entry {
            for layer in 0..level as usize {
                let list = at + 4 * layer * (m + 1);
                g[list..list + 4].copy_from_slice(&1u32.to_le_bytes());
                g[list + 4..list + 8].copy_from_slice(&(target as u32).to_le_bytes());
            }
        }
        at += 4 * len;
    }
    assert_eq!(at, g.len());
    std::fs::write(&graph_path, &g).unwrap();
    manifest["graph"]["crc32"] = crc32(&g).into();
    manifest["graph"]["bytes"] = (g.len() as u64).into();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    le_u32(&g, ids_at + 4 * target)
}

#[test]
fn a_dump_with_valid_checksums_and_a_broken_graph_is_rebuilt_not_served() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir.path()).unwrap();
        db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
            .unwrap();
        write(&db, "c", 0..500);
    }
    let dumps = dump_dirs(dir.path());
    assert_eq!(dumps.len(), 1);
    let dump = dir.path().join(latentdb::INDEX_DIR).join(&dumps[0]);
    // Points are handed out in write order, so point p holds document p.
    let target = u64::from(break_upper_links(&dump));

    let db = Database::open(dir.path()).unwrap();
    let stats = db.index_stats("c").unwrap();
    assert!(
        stats.rebuilt_on_open && !stats.loaded_from_dump,
        "a structurally broken dump was loaded: {stats:?}"
    );
    // The query the broken links would lead astray (its nearest point is the link target).
    assert_eq!(nearest(&db, "c", target), format!("doc-{target:08}"));
    for n in [0, 250, 499] {
        assert_eq!(nearest(&db, "c", n), format!("doc-{n:08}"));
    }
    write(&db, "c", 500..520);
    assert_eq!(nearest(&db, "c", 510), "doc-00000510");
}

/// How a test damages `DIR/sled/db`.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// One bit flipped at this offset (what the review did).
    Flip(usize),
    /// The file cut to this length.
    Truncate(usize),
}

/// The outcome of opening a damaged copy of a database of 300 acknowledged documents in `c`:
/// either it opens with every document intact, or it is refused as data loss with the
/// evidence untouched, and then opens with `accept_data_loss`, reporting the loss and keeping
/// the evidence. Returns whether it was refused.
fn open_damaged(base: &Path, damage: Damage, without_watermark: bool) -> bool {
    let d = tempfile::tempdir().unwrap();
    copy_dir(base, d.path());
    let db_file = d.path().join(storage::SLED_DIR).join("db");
    let mut bytes = std::fs::read(&db_file).unwrap();
    match damage {
        Damage::Flip(at) => bytes[at] ^= 0x10,
        Damage::Truncate(len) => bytes.truncate(len),
    }
    std::fs::write(&db_file, &bytes).unwrap();
    let watermark_path = d.path().join(storage::WATERMARK_FILE);
    if without_watermark {
        // As for a database written before the watermark existed: only the index dump
        // remembers what was acknowledged.
        std::fs::remove_file(&watermark_path).unwrap();
    }
    let watermark = std::fs::read(&watermark_path).ok();
    let index_dir = d.path().join(latentdb::INDEX_DIR);
    let dumps = files(&index_dir);
    let case = format!("{damage:?}, without watermark: {without_watermark}");

    let err = match Database::open(d.path()) {
        Ok(db) => {
            assert_eq!(
                db.count("c").unwrap(),
                300,
                "{case}: opened with documents lost"
            );
            for n in [0, 150, 299] {
                let r = db.get("c", &[format!("doc-{n:08}")]).unwrap().remove(0);
                crate::common::assert_intact(&r.unwrap(), n, DIM);
            }
            return false;
        }
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{case}: {err}");
    assert!(
        err.to_string().contains("--accept-data-loss"),
        "{case}: {err}"
    );
    assert_eq!(
        files(&index_dir),
        dumps,
        "{case}: the refused open changed the dumps"
    );
    if watermark.is_some() {
        // (Without one, storage starts a new one: there was no evidence in it to keep.)
        assert_eq!(
            std::fs::read(&watermark_path).ok(),
            watermark,
            "{case}: the refused open changed the watermark"
        );
    }

    let db = Database::open_with(d.path(), DatabaseOptions::new().accept_data_loss(true))
        .unwrap_or_else(|e| panic!("{case}: accepting the loss does not open: {e}"));
    let lost = db.data_loss();
    let report = lost
        .iter()
        .find(|l| l.expected == 300)
        .unwrap_or_else(|| panic!("{case}: the loss of c is not reported: {lost:?}"));
    assert!(report.found < 300, "{case}: {lost:?}");
    if report.found > 0 {
        // Only inserts were written: what is left is the first `found` of them.
        assert_eq!(db.count("c").unwrap(), report.found, "{case}");
    }
    drop(db);
    // The evidence is kept: the old dump, byte for byte, and the old watermark.
    let kept: Vec<String> = dump_dirs(d.path())
        .into_iter()
        .filter(|n| n.contains(".lost-"))
        .collect();
    assert_eq!(kept.len(), 1, "{case}: {:?}", dump_dirs(d.path()));
    let cid = kept[0].split('.').next().unwrap();
    let old_dump: BTreeMap<PathBuf, Vec<u8>> = dumps
        .into_iter()
        .filter_map(|(p, b)| Some((p.strip_prefix(cid).ok()?.to_path_buf(), b)))
        .collect();
    assert_eq!(files(&index_dir.join(&kept[0])), old_dump, "{case}");
    if let Some(watermark) = watermark {
        let kept_marks: Vec<Vec<u8>> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(&format!("{}.lost-", storage::WATERMARK_FILE))
            })
            .map(|e| std::fs::read(e.path()).unwrap())
            .collect();
        assert_eq!(kept_marks, [watermark], "{case}");
    }
    true
}

#[test]
fn damage_to_the_sled_file_is_refused_or_harmless_never_silent() {
    let base = tempfile::tempdir().unwrap();
    {
        let db = Database::open(base.path()).unwrap();
        db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
            .unwrap();
        write(&db, "c", 0..300);
    }
    let len = std::fs::metadata(base.path().join(storage::SLED_DIR).join("db"))
        .unwrap()
        .len() as usize;
    // The review's damage first: one bit near the start of the file lost every document.
    let mut damages = vec![Damage::Flip(7)];
    damages.extend((1..10).map(|i| Damage::Flip(len * i / 10 + 3)));
    damages.extend([len / 3, 2 * len / 3].map(Damage::Truncate));
    let mut refused = 0;
    for damage in damages {
        for without_watermark in [false, true] {
            refused += usize::from(open_damaged(base.path(), damage, without_watermark));
        }
    }
    // Most of this file is the log of those writes: cutting into it must be noticed.
    assert!(refused >= 10, "only {refused} damages were noticed");
}
