//! Persisting and loading: identical scores after a round trip, and every kind of damage an
//! error (of a system kind), never a panic.

use std::fs;
use std::path::{Path, PathBuf};

use latentdb_text::{AnalyzerConfig, Bm25Params, Error, LexicalIndex, Stopwords};
use latentdb_types::ErrorKind;
use proptest::prelude::*;

use crate::common::{Rng, build, dataset};

fn dataset_index(config: &AnalyzerConfig) -> (LexicalIndex, Vec<String>) {
    let data = dataset();
    let docs: Vec<(u32, &str)> = data
        .docs
        .iter()
        .enumerate()
        .map(|(i, t)| (i as u32, t.as_str()))
        .collect();
    let ix = build(config, &docs);
    let queries = data.queries.into_iter().take(200).map(|q| q.1).collect();
    (ix, queries)
}

/// Asserts that `a` and `b` answer every query identically (bit for bit).
fn assert_same(a: &LexicalIndex, b: &LexicalIndex, queries: &[String]) {
    assert_eq!(a.stats(), b.stats());
    assert_eq!(a.points(), b.points());
    assert_eq!(a.config(), b.config());
    let points = a.points();
    for params in [Bm25Params::default(), Bm25Params { k1: 2.0, b: 0.3 }] {
        for q in queries {
            assert_eq!(
                a.search(q, 20, params, None),
                b.search(q, 20, params, None),
                "{q}"
            );
            assert_eq!(
                a.score_points(q, params, &points[..50.min(points.len())]),
                b.score_points(q, params, &points[..50.min(points.len())]),
                "{q}"
            );
        }
    }
}

fn loaded(dir: &Path) -> (LexicalIndex, u64) {
    LexicalIndex::load(dir).unwrap().expect("a dump")
}

#[test]
fn round_trip_scores_identically() {
    let config = AnalyzerConfig {
        stemmer: Some("english".into()),
        ..AnalyzerConfig::default()
    };
    let (mut ix, queries) = dataset_index(&config);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lexical");
    assert!(LexicalIndex::load(&dir).unwrap().is_none());
    ix.persist(&dir, 17).unwrap();
    let (back, seq) = loaded(&dir);
    assert_eq!(seq, 17);
    assert_same(&ix, &back, &queries);

    // With removals and replacements behind it (dead postings, unused terms): still the same.
    let mut rng = Rng(9);
    for _ in 0..400 {
        let p = rng.below(1903) as u32;
        if rng.next().is_multiple_of(2) {
            ix.remove(p);
        } else {
            ix.insert(p, &queries[rng.below(queries.len())]);
        }
    }
    ix.insert(5000, "");
    ix.persist(&dir, 18).unwrap();
    let (mut back, seq) = loaded(&dir);
    assert_eq!(seq, 18);
    assert_same(&ix, &back, &queries);
    // Only the newest generation's files remain.
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["docs-2.bin", "manifest.json", "terms-2.bin"]);
    // A loaded index keeps working under mutations.
    back.insert(7, "hello world");
    ix.insert(7, "hello world");
    back.remove(8);
    ix.remove(8);
    assert_same(&ix, &back, &queries);

    LexicalIndex::remove_dump(&dir);
    assert!(LexicalIndex::load(&dir).unwrap().is_none());
    assert!(!dir.exists());
}

#[test]
fn empty_index_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let config = AnalyzerConfig {
        stopwords: Stopwords::None,
        stemmer: None,
        lowercase: false,
    };
    let ix = LexicalIndex::new(config.clone()).unwrap();
    ix.persist(tmp.path(), 0).unwrap();
    let (back, seq) = loaded(tmp.path());
    assert_eq!(seq, 0);
    assert!(back.is_empty());
    assert_eq!(back.config(), &config);
    let mut only_empty = LexicalIndex::new(config).unwrap();
    only_empty.insert(3, "");
    only_empty.insert(u32::MAX, "The largest point");
    only_empty.persist(tmp.path(), 1).unwrap();
    let (back, _) = loaded(tmp.path());
    assert_eq!(back.points(), [3, u32::MAX]);
    assert_eq!(
        back.search("largest", 1, Bm25Params::default(), None),
        only_empty.search("largest", 1, Bm25Params::default(), None)
    );
    assert_eq!(back.stats(), only_empty.stats());
}

/// A small real dump in a fresh directory.
fn small_dump() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let mut ix = LexicalIndex::new(AnalyzerConfig::default()).unwrap();
    for (p, t) in [
        (0, "free money now"),
        (2, "meeting notes for monday"),
        (5, "money money money"),
        (9, ""),
        (11, "notes on free software"),
    ] {
        ix.insert(p, t);
    }
    ix.persist(&dir, 3).unwrap();
    (tmp, dir)
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn write_manifest(dir: &Path, m: &serde_json::Value) {
    fs::write(dir.join("manifest.json"), serde_json::to_vec(m).unwrap()).unwrap();
}

/// Replaces a data file (`terms_file` or `docs_file`) and fixes its length and CRC in the
/// manifest, so that only the parser's own checks can find the damage.
fn replace_data(dir: &Path, which: &str, bytes: &[u8]) {
    let mut m = manifest(dir);
    let name = m[which]["name"].as_str().unwrap().to_string();
    fs::write(dir.join(&name), bytes).unwrap();
    m[which]["bytes"] = bytes.len().into();
    m[which]["crc32"] = crc32fast::hash(bytes).into();
    write_manifest(dir, &m);
}

fn data(dir: &Path, which: &str) -> Vec<u8> {
    let m = manifest(dir);
    fs::read(dir.join(m[which]["name"].as_str().unwrap())).unwrap()
}

fn assert_corrupt(dir: &Path, what: &str) {
    match LexicalIndex::load(dir) {
        Err(e @ Error::CorruptDump { .. }) => assert_eq!(e.kind(), ErrorKind::Internal),
        Err(e) => panic!("{what}: expected CorruptDump, got {e}"),
        Ok(_) => panic!("{what}: loaded"),
    }
}

#[test]
fn damaged_files_are_reported_corrupt() {
    for which in ["terms_file", "docs_file"] {
        // A flipped byte (checksum).
        let (_t, dir) = small_dump();
        let name = manifest(&dir)[which]["name"].as_str().unwrap().to_string();
        let mut bytes = fs::read(dir.join(&name)).unwrap();
        bytes[12] ^= 0x40;
        fs::write(dir.join(&name), &bytes).unwrap();
        assert_corrupt(&dir, "flipped byte");
        // Truncated.
        let (_t, dir) = small_dump();
        let bytes = fs::read(dir.join(&name)).unwrap();
        fs::write(dir.join(&name), &bytes[..bytes.len() - 3]).unwrap();
        assert_corrupt(&dir, "truncated");
        // Truncated, with the manifest fixed to match.
        let (_t, dir) = small_dump();
        let bytes = data(&dir, which);
        replace_data(&dir, which, &bytes[..bytes.len() - 3]);
        assert_corrupt(&dir, "truncated, checksum fixed");
        // Missing.
        let (_t, dir) = small_dump();
        fs::remove_file(dir.join(&name)).unwrap();
        assert_corrupt(&dir, "missing");
    }
}

/// A change to a manifest.
type ManifestEdit = Box<dyn Fn(&mut serde_json::Value)>;
/// A change to a data file.
type BytesEdit = Box<dyn Fn(&mut Vec<u8>)>;

#[test]
fn bad_manifests_are_reported_corrupt() {
    let edits: Vec<(&str, ManifestEdit)> = vec![
        ("version", Box::new(|m| m["format_version"] = 2.into())),
        ("kind", Box::new(|m| m["kind"] = "graph".into())),
        (
            "analyzer",
            Box::new(|m| m["analyzer"]["stemmer"] = "klingon".into()),
        ),
        ("unknown key", Box::new(|m| m["extra"] = 1.into())),
        ("docs", Box::new(|m| m["docs"] = 4.into())),
        ("terms", Box::new(|m| m["terms"] = 1.into())),
        ("tokens", Box::new(|m| m["tokens"] = 99.into())),
        (
            "path",
            Box::new(|m| m["docs_file"]["name"] = "../docs-1.bin".into()),
        ),
        (
            "prefix",
            Box::new(|m| m["docs_file"]["name"] = m["terms_file"]["name"].clone()),
        ),
        ("crc", Box::new(|m| m["terms_file"]["crc32"] = 1.into())),
        ("bytes", Box::new(|m| m["terms_file"]["bytes"] = 1.into())),
        (
            "missing field",
            Box::new(|m| {
                m.as_object_mut().unwrap().remove("seq");
            }),
        ),
    ];
    for (what, edit) in edits {
        let (_t, dir) = small_dump();
        let mut m = manifest(&dir);
        edit(&mut m);
        write_manifest(&dir, &m);
        assert_corrupt(&dir, what);
    }
    let (_t, dir) = small_dump();
    fs::write(dir.join("manifest.json"), b"{ not json").unwrap();
    assert_corrupt(&dir, "garbage");
}

/// Little-endian words of a docs file, to edit fields in place.
fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn inconsistent_files_with_valid_checksums_are_reported_corrupt() {
    // Docs file: header 16 bytes; first doc (point 0, "free money now"): point, len 3,
    // count 3, then (term, tf) x 3.
    let doc0 = 16;
    let docs_edits: Vec<(&str, BytesEdit)> = vec![
        ("magic", Box::new(|b| b[0] = b'X')),
        ("version", Box::new(|b| put_u32(b, 8, 9))),
        ("length", Box::new(move |b| put_u32(b, doc0 + 4, 4))),
        (
            "term count",
            Box::new(move |b| put_u32(b, doc0 + 8, 1_000_000)),
        ),
        ("term id", Box::new(move |b| put_u32(b, doc0 + 12, 1_000))),
        (
            "term order",
            Box::new(move |b| {
                let t = b[doc0 + 20..doc0 + 24].to_vec();
                b.copy_within(doc0 + 12..doc0 + 16, doc0 + 20);
                b[doc0 + 12..doc0 + 16].copy_from_slice(&t);
            }),
        ),
        ("tf 0", Box::new(move |b| put_u32(b, doc0 + 16, 0))),
        ("point order", Box::new(move |b| put_u32(b, doc0, 2))),
        ("huge point", Box::new(move |b| put_u32(b, doc0, u32::MAX))),
        ("trailing", Box::new(|b| b.extend_from_slice(&[0, 0, 0, 0]))),
    ];
    for (what, edit) in docs_edits {
        let (_t, dir) = small_dump();
        let mut bytes = data(&dir, "docs_file");
        edit(&mut bytes);
        replace_data(&dir, "docs_file", &bytes);
        assert_corrupt(&dir, what);
    }
    let terms_edits: Vec<(&str, BytesEdit)> = vec![
        ("magic", Box::new(|b| b[7] = b'X')),
        ("zero length", Box::new(|b| b[16] = 0)),
        ("long length", Box::new(|b| b[16] = 200)),
        ("utf-8", Box::new(|b| b[17] = 0xff)),
        ("order", Box::new(|b| b[17] = b'z')),
        ("count", Box::new(|b| put_u32(b, 12, u32::MAX))),
        ("trailing", Box::new(|b| b.push(1))),
    ];
    for (what, edit) in terms_edits {
        let (_t, dir) = small_dump();
        let mut bytes = data(&dir, "terms_file");
        edit(&mut bytes);
        replace_data(&dir, "terms_file", &bytes);
        assert_corrupt(&dir, what);
    }
    // An unused term: append one to the dictionary (and count it in the manifest).
    let (_t, dir) = small_dump();
    let mut bytes = data(&dir, "terms_file");
    bytes.extend_from_slice(&[3, b'z', b'z', b'z']);
    let count = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) + 1;
    put_u32(&mut bytes, 12, count);
    replace_data(&dir, "terms_file", &bytes);
    let mut m = manifest(&dir);
    m["terms"] = count.into();
    write_manifest(&dir, &m);
    assert_corrupt(&dir, "unused term");
}

/// Loads `dir`, which must not panic; a loaded index must answer queries without panicking.
fn load_never_panics(dir: &Path) {
    if let Ok(Some((ix, _))) = LexicalIndex::load(dir) {
        for q in ["free money", "notes monday", "software", ""] {
            let hits = ix.search(q, 10, Bm25Params::default(), None);
            assert!(hits.iter().all(|h| h.score > 0.0 && h.score.is_finite()));
            let _ = ix.score_points(q, Bm25Params::default(), &ix.points());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_data_files_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        docs in any::<bool>(),
        with_magic in any::<bool>(),
    ) {
        let (_t, dir) = small_dump();
        let which = if docs { "docs_file" } else { "terms_file" };
        let mut bytes = bytes;
        if with_magic {
            let magic: &[u8] = if docs { b"LDBLXDOC\x01\0\0\0" } else { b"LDBTERMS\x01\0\0\0" };
            bytes.splice(0..0, magic.iter().copied());
        }
        replace_data(&dir, which, &bytes);
        load_never_panics(&dir);
    }

    #[test]
    fn mutated_real_dumps_never_panic(
        docs in any::<bool>(),
        edits in proptest::collection::vec((any::<u16>(), any::<u8>(), 0u8..4), 1..6),
    ) {
        let (_t, dir) = small_dump();
        let which = if docs { "docs_file" } else { "terms_file" };
        let mut bytes = data(&dir, which);
        for (at, value, op) in edits {
            let at = at as usize % (bytes.len() + 1);
            match op {
                0 if at < bytes.len() => bytes[at] = value,
                1 if at < bytes.len() => bytes[at] ^= 1 << (value % 8),
                2 => bytes.truncate(at),
                _ => bytes.insert(at, value),
            }
        }
        replace_data(&dir, which, &bytes);
        load_never_panics(&dir);
    }
}
