//! The manifest decoder never panics, whatever it is fed.

use latentdb_backup::{Chunk, FORMAT_NAME, FORMAT_VERSION, FileEntry, FileKind, Manifest};
use proptest::prelude::*;

fn sample(files: usize, chunks: usize) -> Manifest {
    Manifest {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        created_unix_ms: 1,
        producer: "fuzz".into(),
        meta: serde_json::json!({"k": [1, 2, {"x": null}]}),
        files: (0..files)
            .map(|f| FileEntry {
                name: format!("d/f{f}"),
                kind: FileKind::Part,
                chunks: (0..chunks.max(1))
                    .map(|c| Chunk {
                        file: format!("d/f{f}.{c:05}"),
                        size: c as u64,
                        crc32: c as u32,
                    })
                    .collect(),
            })
            .collect(),
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Manifest::decode(&bytes, "fuzz");
    }

    #[test]
    fn mutated_manifests_never_panic_and_never_pass(
        files in 0usize..4,
        chunks in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let good = sample(files, chunks).encode();
        prop_assert!(Manifest::decode(&good, "fuzz").is_ok());
        let mut bad = good.clone();
        for (at, value) in edits {
            let i = at.index(bad.len());
            bad[i] = value;
        }
        let decoded = Manifest::decode(&bad, "fuzz");
        if bad != good {
            // CRC-32 catches every change of up to 32 consecutive bits, and almost all others.
            prop_assert!(decoded.is_err() || decoded.unwrap() != sample(files, chunks));
        }
    }

    #[test]
    fn any_json_body_with_a_valid_checksum_never_panics(
        body in "[ -~]{0,200}",
        version in 0u64..4,
    ) {
        let json = format!(
            r#"{{"format":"{FORMAT_NAME}","version":{version},"created_unix_ms":0,"producer":"p","meta":null,"files":{body}}}"#
        );
        let mut bytes = json.clone().into_bytes();
        bytes.extend_from_slice(format!("\ncrc32 {:08x}\n", crc32fast::hash(json.as_bytes())).as_bytes());
        let _ = Manifest::decode(&bytes, "fuzz");
    }
}
