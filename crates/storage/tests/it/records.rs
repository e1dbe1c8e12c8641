//! Property tests of the value codecs: any bytes decode to `Ok` or `Err`, never a panic, and
//! whatever is encoded decodes back unchanged.

use latentdb_storage::key;
use latentdb_storage::record::{
    Change, decode_record, decode_record_id, decode_record_meta, decode_record_vector,
    encode_record,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(n)
}

fn metadata() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(
        "[a-z]{1,6}",
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            Just(Value::Null),
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(|v| json!(v)),
        ],
        0..5,
    )
    .prop_map(|m| m.into_iter().collect())
}

/// Bytes that are mostly a valid record with some damage, so decoding gets past the header.
fn damaged_record() -> impl Strategy<Value = Vec<u8>> {
    (
        ".{0,20}",
        proptest::collection::vec(any::<f32>(), 0..8),
        proptest::option::of(".{0,20}"),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(id, v, text, edits, cut)| {
            let mut b = encode_record(&id, &v, text.as_deref(), &Map::new()).unwrap();
            for (at, byte) in edits {
                let i = at.index(b.len());
                b[i] = byte;
            }
            let keep = cut.index(b.len() + 1);
            b.truncate(keep.max(1));
            b
        })
}

proptest! {
    #![proptest_config(cases(5_000))]

    #[test]
    fn any_bytes_decode_without_panicking(
        bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..256), damaged_record()]
    ) {
        let full = decode_record(&bytes);
        // The vector-less decoder fails exactly when the full one does, with the same error,
        // and otherwise returns the same id, text flag and metadata.
        match (&full, decode_record_meta(&bytes)) {
            (Ok(r), Ok(m)) => {
                prop_assert_eq!(m.id, r.id.as_str());
                prop_assert_eq!(m.has_text, r.text.is_some());
                prop_assert_eq!(&m.metadata, &r.metadata);
            }
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (a, b) => prop_assert!(false, "decode_record {:?}, decode_record_meta {:?}", a, b),
        }
        let _ = decode_record_id(&bytes);
        let mut out = Vec::new();
        let _ = decode_record_vector(&bytes, &mut out);
        let _ = Change::decode(7, &bytes);
        let mut changes = Vec::new();
        let _ = Change::decode_entry(7, &bytes, &mut changes);
        let _ = key::parse_id_key(&bytes);
        let _ = key::parse_point_key(&bytes);
        let _ = key::parse_log_key(&bytes);
        let _ = key::be_u32(&bytes);
        let _ = key::be_u64(&bytes);
        let _ = key::parse_collection_tree(&bytes);
    }

    #[test]
    fn records_round_trip(
        id in ".{1,40}",
        vector in proptest::collection::vec(any::<f32>(), 0..64),
        text in proptest::option::of(".{0,64}"),
        meta in metadata(),
    ) {
        let bytes = encode_record(&id, &vector, text.as_deref(), &meta).unwrap();
        let r = decode_record(&bytes).unwrap();
        prop_assert_eq!(&r.id, &id);
        prop_assert_eq!(&r.text, &text);
        prop_assert_eq!(&r.metadata, &meta);
        // Bit-exact, NaNs included.
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&r.vector), bits(&vector));
        prop_assert_eq!(decode_record_id(&bytes).unwrap(), id.as_str());
        let m = decode_record_meta(&bytes).unwrap();
        prop_assert_eq!((m.id, m.has_text, &m.metadata), (id.as_str(), text.is_some(), &meta));
        let mut out = vec![1.5];
        decode_record_vector(&bytes, &mut out).unwrap();
        prop_assert_eq!(bits(&out[1..]), bits(&vector));
    }

    /// Any 9-byte value with op 3 under any sequence decodes to a run or fails, without
    /// panicking or expanding past `MAX_INSERT_RUN`; a run is consecutive sequences ending at
    /// the key and consecutive points from the first.
    #[test]
    fn insert_runs_decode_or_fail(
        seq in prop_oneof![0u64..200_000, any::<u64>()],
        first in prop_oneof![0u32..1_000, any::<u32>()],
        count in prop_oneof![0u32..70_000, any::<u32>()],
    ) {
        let mut bytes = vec![3u8];
        bytes.extend(first.to_be_bytes());
        bytes.extend(count.to_be_bytes());
        let mut out = vec![Change::Remove { seq: 0, point: 0 }];
        match Change::decode_entry(seq, &bytes, &mut out) {
            Ok(()) => {
                prop_assert!((1..=latentdb_storage::MAX_INSERT_RUN).contains(&count));
                prop_assert_eq!(out.len() as u64, 1 + u64::from(count));
                prop_assert_eq!(out.last().map(Change::seq), Some(seq));
                for (i, c) in out[1..].iter().enumerate() {
                    let want = Change::Insert {
                        seq: seq - u64::from(count) + 1 + i as u64,
                        point: first + i as u32,
                    };
                    prop_assert_eq!(*c, want);
                }
            }
            Err(_) => prop_assert_eq!(out.len(), 1),
        }
    }

    #[test]
    fn changes_and_keys_round_trip(seq in any::<u64>(), point in any::<u32>(), insert in any::<bool>()) {
        let c = if insert { Change::Insert { seq, point } } else { Change::Remove { seq, point } };
        prop_assert_eq!(Change::decode(seq, &c.encode_value()).unwrap(), c);
        let mut out = Vec::new();
        Change::decode_entry(seq, &c.encode_value(), &mut out).unwrap();
        prop_assert_eq!(out, vec![c]);
        prop_assert_eq!(key::parse_log_key(&key::log_key(seq)).unwrap(), seq);
        prop_assert_eq!(key::parse_point_key(&key::point_key(point)).unwrap(), point);
    }
}

/// `Storage::scan_point_meta` sees the points `scan_points` sees, with the same ids, text
/// flags and metadata, and fails on a corrupt record with the error `scan_points` reports.
#[test]
fn scan_point_meta_matches_scan_points() {
    use latentdb_storage::{CollectionSpec, Document, Metric, Storage, StorageOptions};

    type Seen = Vec<(u32, String, bool, Map<String, Value>)>;
    fn both(s: &Storage) -> (Result<Seen, String>, Result<Seen, String>) {
        let mut full = Vec::new();
        let full_res = s.scan_points("c", |p, r| {
            full.push((p, r.id, r.text.is_some(), r.metadata));
            Ok(())
        });
        let mut meta = Vec::new();
        let meta_res = s.scan_point_meta("c", |p, r| {
            meta.push((p, r.id.to_owned(), r.has_text, r.metadata));
            Ok(())
        });
        (
            full_res.map(|()| full).map_err(|e| e.to_string()),
            meta_res.map(|()| meta).map_err(|e| e.to_string()),
        )
    }

    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    s.create_collection(CollectionSpec::new("c", 3, Metric::L2))
        .unwrap();
    let docs = (0..40)
        .map(|i| {
            let d = Document::new(format!("d{i}"), vec![i as f32, 1.0, -2.0]);
            let d = if i % 3 == 0 {
                d.with_text(format!("text {i}"))
            } else {
                d
            };
            if i % 2 == 0 {
                d.with_metadata(json!({"n": i, "tag": format!("t{}", i % 5)}))
            } else {
                d
            }
        })
        .collect();
    s.upsert("c", docs, None).unwrap();
    s.delete("c", &["d5", "d6"], None).unwrap();
    let (full, meta) = both(&s);
    let full = full.unwrap();
    assert_eq!(full.len(), 38);
    assert_eq!(meta.unwrap(), full);
    assert!(s.scan_point_meta("missing", |_, _| Ok(())).is_err());

    // A damaged record (its text no longer UTF-8) fails both scans alike.
    let cid = s.collection_config("c").unwrap().cid;
    let point = s.point_of("c", "d9").unwrap().unwrap();
    drop(s);
    {
        // The storage's sled threads may still be letting go of the file.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match sled::open(dir.path().join(latentdb_storage::SLED_DIR)) {
                Ok(db) => break db,
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        };
        let tree = db.open_tree(key::collection_tree(cid)).unwrap();
        let k = key::point_key(point);
        let mut v = tree.get(k).unwrap().unwrap().to_vec();
        // The text's first byte: the text is followed by the metadata, `{}`.
        let text_at = v.len() - "text 9{}".len();
        assert_eq!(&v[text_at..], b"text 9{}");
        v[text_at] = 0xff;
        tree.insert(k, v).unwrap();
        db.flush().unwrap();
    }
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    let (full, meta) = both(&s);
    let err = full.unwrap_err();
    assert!(err.contains("invalid UTF-8"), "{err}");
    assert_eq!(meta.unwrap_err(), err);
}
