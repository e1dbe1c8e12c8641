//! Persist and load: identical results without a rebuild; damaged dumps are errors, never
//! panics or exits.

use std::fs;
use std::path::Path;

use crate::common::{build, data};
use latentdb_index::{Error, Index, Metric};

const DIM: usize = 32;

fn fixture(metric: Metric) -> Index {
    let idx = build(metric, DIM, &data(3_000, DIM, 11));
    for id in (0..3_000).step_by(13) {
        idx.delete(id);
    }
    idx
}

fn all_results(idx: &Index) -> Vec<Vec<(u32, u32)>> {
    data(100, DIM, 12)
        .chunks_exact(DIM)
        .map(|q| {
            idx.search(q, 10, Some(40))
                .unwrap()
                .iter()
                .map(|h| (h.id, h.score.to_bits()))
                .collect()
        })
        .collect()
}

#[test]
fn persist_then_load_gives_identical_results() {
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        let dir = tempfile::tempdir().unwrap();
        let idx = fixture(metric);
        idx.persist(dir.path(), 77).unwrap();
        let (loaded, seq) = Index::load(dir.path()).unwrap().expect("a dump");
        assert_eq!(seq, 77);
        assert_eq!(loaded.metric(), metric);
        assert_eq!(loaded.dim(), DIM);
        assert_eq!(loaded.params(), idx.params());
        assert_eq!(loaded.stats(), idx.stats());
        assert_eq!(all_results(&loaded), all_results(&idx), "{metric}");
        // The loaded index keeps working: inserts, deletes, a second persist.
        loaded.insert(100_000, &data(1, DIM, 99)).unwrap();
        assert!(loaded.delete(1));
        loaded.persist(dir.path(), 78).unwrap();
        let (again, seq) = Index::load(dir.path()).unwrap().unwrap();
        assert_eq!(seq, 78);
        assert_eq!(all_results(&again), all_results(&loaded));
        // Old generations are cleaned up: one manifest + two data files.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
    }
}

#[test]
fn empty_index_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::new(Metric::L2, 4, Default::default()).unwrap();
    idx.persist(dir.path(), 0).unwrap();
    let (loaded, _) = Index::load(dir.path()).unwrap().unwrap();
    assert!(loaded.is_empty());
    loaded.insert(1, &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(
        loaded.search(&[1.0, 2.0, 3.0, 4.0], 1, None).unwrap()[0].id,
        1
    );
}

#[test]
fn missing_dump_is_none() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Index::load(dir.path()).unwrap().is_none());
    assert!(Index::load(&dir.path().join("nope")).unwrap().is_none());
}

fn data_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    v.sort();
    v
}

fn expect_corrupt(dir: &Path, what: &str) {
    match Index::load(dir) {
        Err(e @ Error::CorruptDump { .. }) => assert!(!e.is_caller_fault()),
        Err(other) => panic!("{what}: unexpected error {other}"),
        Ok(Some(_)) => panic!("{what}: loaded a damaged dump"),
        Ok(None) => panic!("{what}: reported no dump"),
    }
}

#[test]
fn damaged_dumps_are_errors_not_panics() {
    let src = tempfile::tempdir().unwrap();
    let idx = fixture(Metric::Cosine);
    idx.persist(src.path(), 5).unwrap();
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        for e in fs::read_dir(src.path()).unwrap() {
            let p = e.unwrap().path();
            fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
        dir
    };
    for file in 0..2 {
        for pos in [0usize, 9, 20, 1000, usize::MAX] {
            let dir = fresh();
            let f = &data_files(dir.path())[file];
            let mut bytes = fs::read(f).unwrap();
            let at = pos.min(bytes.len() - 1);
            bytes[at] ^= 0x5a;
            fs::write(f, &bytes).unwrap();
            expect_corrupt(dir.path(), &format!("flip {f:?} at {at}"));
        }
        let dir = fresh();
        let f = &data_files(dir.path())[file];
        let bytes = fs::read(f).unwrap();
        fs::write(f, &bytes[..bytes.len() / 2]).unwrap();
        expect_corrupt(dir.path(), "truncated");
        fs::remove_file(f).unwrap();
        expect_corrupt(dir.path(), "missing file");
    }
    let dir = fresh();
    let manifest = dir.path().join("manifest.json");
    fs::write(&manifest, b"{ not json").unwrap();
    expect_corrupt(dir.path(), "garbage manifest");
    let text = fs::read_to_string(src.path().join("manifest.json")).unwrap();
    let dir = fresh();
    fs::write(
        dir.path().join("manifest.json"),
        text.replace("\"format_version\": 1", "\"format_version\": 99"),
    )
    .unwrap();
    expect_corrupt(dir.path(), "other format version");
    let dir = fresh();
    fs::write(
        dir.path().join("manifest.json"),
        text.replace("\"dim\": 32", "\"dim\": 16"),
    )
    .unwrap();
    expect_corrupt(dir.path(), "wrong dim");
    let dir = fresh();
    fs::write(
        dir.path().join("manifest.json"),
        text.replace("\"m\": 16", "\"m\": 300"),
    )
    .unwrap();
    expect_corrupt(dir.path(), "bad params");
    // A damaged graph file whose checksum was "fixed up" is still caught by the parser.
    let dir = fresh();
    let g = data_files(dir.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains("graph-"))
        .unwrap();
    let mut bytes = fs::read(&g).unwrap();
    let links_at = 8 + 16 + 3_000 * 4 + 3_000 + 3_000usize.div_ceil(8);
    bytes[links_at + 4..links_at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(&g, &bytes).unwrap();
    let crc = crc32(&bytes);
    let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
    m["graph"]["crc32"] = crc.into();
    fs::write(dir.path().join("manifest.json"), m.to_string()).unwrap();
    expect_corrupt(dir.path(), "link out of range with a valid checksum");
    // The source dump itself is fine.
    assert!(Index::load(src.path()).unwrap().is_some());
}

/// CRC-32 (IEEE), bit by bit: independent of the crate's implementation.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
