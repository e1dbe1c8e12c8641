//! Scenarios shared by the local and the S3 tests: each takes a root location and writes its
//! backups below it.

use std::io::{Read, Write};

use latentdb_backup::{
    BackupReader, BackupWriter, Error, MANIFEST_NAME, Target, WriterOptions, list, verify,
};
use latentdb_types::ErrorKind;

/// Deterministic pseudo-random bytes.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes a backup with a 3-chunk part (max part size 1,000), an empty part and a blob.
pub fn write_sample(target: &Target) -> Vec<u8> {
    let options = WriterOptions::default().with_max_part_size(1_000);
    let mut writer = BackupWriter::create(target, options).unwrap();
    let data = bytes(2_345, 1);
    let mut part = writer.part("c/docs/records").unwrap();
    // Odd-sized writes straddle the chunk boundaries.
    for piece in data.chunks(333) {
        part.write_all(piece).unwrap();
    }
    let entry = part.finish().unwrap();
    assert_eq!(entry.chunks.len(), 3);
    writer.part("c/docs/empty").unwrap().finish().unwrap();
    writer.put_blob("config.json", br#"{"dim":384}"#).unwrap();
    let manifest = writer
        .finish(serde_json::json!({"sequence": 42, "collections": ["docs"]}))
        .unwrap();
    assert_eq!(manifest.total_bytes(), 2_345 + 11);
    data
}

/// Round trip: what was written reads back, streamed and whole; verify counts it all.
pub fn round_trip(root: &Target) {
    let target = root.child("b1").unwrap();
    let data = write_sample(&target);
    let reader = BackupReader::open(&target).unwrap();
    assert_eq!(reader.meta()["sequence"], 42);
    let mut back = Vec::new();
    let mut stream = reader.read_part("c/docs/records").unwrap();
    assert_eq!(stream.size(), 2_345);
    stream.read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
    assert!(reader.read_blob("c/docs/empty").unwrap().is_empty());
    assert_eq!(reader.read_blob("config.json").unwrap(), br#"{"dim":384}"#);
    let missing = reader.read_part("nope").unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    let report = verify(&target).unwrap();
    assert_eq!((report.files, report.chunks, report.bytes), (3, 5, 2_356));
    // A second backup into the same location is refused, before and at the commit.
    let again = BackupWriter::create(&target, WriterOptions::default()).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists, "{again}");
    let fresh = root.child("b2").unwrap();
    let early = BackupWriter::create(&fresh, WriterOptions::default()).unwrap();
    let late = BackupWriter::create(&fresh, WriterOptions::default()).unwrap();
    early.finish(serde_json::json!(1)).unwrap();
    let lost = late.finish(serde_json::json!(2)).unwrap_err();
    assert_eq!(lost.kind(), ErrorKind::AlreadyExists, "{lost}");
    assert_eq!(
        BackupReader::open(&fresh).unwrap().meta(),
        &serde_json::json!(1)
    );
}

/// A writer killed midway (dropped before `finish`) leaves parts but no backup: not listed,
/// not openable, not verifiable; a complete backup beside it is listed.
pub fn killed_mid_upload(root: &Target) {
    let done = root.child("done").unwrap();
    write_sample(&done);
    let killed = root.child("killed").unwrap();
    {
        let options = WriterOptions::default().with_max_part_size(100);
        let mut writer = BackupWriter::create(&killed, options).unwrap();
        let mut part = writer.part("records").unwrap();
        part.write_all(&bytes(1_000, 2)).unwrap();
        part.finish().unwrap();
        writer.put_blob("config.json", b"{}").unwrap();
        // Dropped here, as if the process died before the manifest.
    }
    assert!(
        !killed.list("").unwrap().is_empty(),
        "the parts were uploaded"
    );
    assert!(!killed.exists(MANIFEST_NAME).unwrap());
    let listed = list(root).unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["done"]);
    assert_eq!(listed[0].meta["sequence"], 42);
    assert_eq!(listed[0].total_bytes, 2_356);
    assert_eq!(listed[0].files, 3);
    assert!(listed[0].created_unix_ms > 1_700_000_000_000);
    assert_eq!(listed[0].url, done.url());
    assert!(listed[0].problem.is_none());
    for err in [
        BackupReader::open(&killed).unwrap_err(),
        verify(&killed).unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(matches!(err, Error::NoBackup { .. }), "{err}");
        assert!(err.to_string().contains("no manifest"), "{err}");
    }
}

/// Rewrites one file of a backup with the given bytes, or deletes it (`None`).
pub type Damage<'a> = &'a dyn Fn(&Target, &str, Option<Vec<u8>>);

/// Verify names the damaged file: a flipped byte in a chunk, a missing chunk, a flipped byte
/// in the manifest. `damage` rewrites one file of the backup (`None` deletes it).
pub fn verify_catches_damage(root: &Target, damage: Damage<'_>) {
    let flip = |bytes: &mut Vec<u8>, at: usize| bytes[at] ^= 0x10;
    // One flipped byte in the middle chunk.
    let t = root.child("flip-chunk").unwrap();
    write_sample(&t);
    let mut chunk = t.get("c/docs/records.00001", 1_000).unwrap();
    flip(&mut chunk, 500);
    damage(&t, "c/docs/records.00001", Some(chunk));
    let err = verify(&t).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    assert!(err.to_string().contains("records.00001"), "{err}");
    assert!(err.to_string().contains("crc32 mismatch"), "{err}");
    // Reading never hands out the damaged chunk's bytes: the first chunk comes, then an error.
    let reader = BackupReader::open(&t).unwrap();
    let mut stream = reader.read_part("c/docs/records").unwrap();
    let mut back = Vec::new();
    let read_err = stream.read_to_end(&mut back).unwrap_err();
    assert_eq!(back.len(), 1_000);
    let read_err = Error::from_io(read_err, "stream");
    assert_eq!(read_err.kind(), ErrorKind::DataLoss, "{read_err}");

    // A chunk cut short.
    let t = root.child("short-chunk").unwrap();
    write_sample(&t);
    let chunk = t.get("c/docs/records.00002", 1_000).unwrap();
    damage(
        &t,
        "c/docs/records.00002",
        Some(chunk[..chunk.len() - 1].to_vec()),
    );
    let err = verify(&t).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    assert!(err.to_string().contains("records.00002"), "{err}");

    // A missing chunk.
    let t = root.child("missing-chunk").unwrap();
    write_sample(&t);
    damage(&t, "c/docs/records.00000", None);
    let err = verify(&t).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    assert!(err.to_string().contains("records.00000: missing"), "{err}");

    // One flipped byte in the manifest: refused by open, verify and listed as damaged.
    let t = root.child("flip-manifest").unwrap();
    write_sample(&t);
    let mut manifest = t.get(MANIFEST_NAME, 1 << 20).unwrap();
    let middle = manifest.len() / 2;
    flip(&mut manifest, middle);
    damage(&t, MANIFEST_NAME, Some(manifest));
    let err = verify(&t).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    assert!(err.to_string().contains(MANIFEST_NAME), "{err}");
    assert_eq!(
        BackupReader::open(&t).unwrap_err().kind(),
        ErrorKind::DataLoss
    );
    let listed = list(root).unwrap();
    let damaged = listed.iter().find(|s| s.name == "flip-manifest").unwrap();
    assert!(
        damaged
            .problem
            .as_deref()
            .unwrap()
            .contains("checksum mismatch")
    );

    // No manifest at all.
    let t = root.child("no-manifest").unwrap();
    write_sample(&t);
    damage(&t, MANIFEST_NAME, None);
    let err = verify(&t).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}
