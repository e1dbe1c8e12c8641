//! Property tests of the value codecs: any bytes decode to `Ok` or `Err`, never a panic, and
//! whatever is encoded decodes back unchanged.

use latentdb_storage::key;
use latentdb_storage::record::{
    Change, decode_record, decode_record_id, decode_record_vector, encode_record,
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
        let _ = decode_record(&bytes);
        let _ = decode_record_id(&bytes);
        let mut out = Vec::new();
        let _ = decode_record_vector(&bytes, &mut out);
        let _ = Change::decode(7, &bytes);
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
        let mut out = vec![1.5];
        decode_record_vector(&bytes, &mut out).unwrap();
        prop_assert_eq!(bits(&out[1..]), bits(&vector));
    }

    #[test]
    fn changes_and_keys_round_trip(seq in any::<u64>(), point in any::<u32>(), insert in any::<bool>()) {
        let c = if insert { Change::Insert { seq, point } } else { Change::Remove { seq, point } };
        prop_assert_eq!(Change::decode(seq, &c.encode_value()).unwrap(), c);
        prop_assert_eq!(key::parse_log_key(&key::log_key(seq)).unwrap(), seq);
        prop_assert_eq!(key::parse_point_key(&key::point_key(point)).unwrap(), point);
    }
}
