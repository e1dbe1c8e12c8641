//! Which shard holds a document, and the names a shard goes by.

/// The shard of document `id` in a collection of `shards` shards: a fixed hash (FNV-1a, 64
/// bits) of the id up to its first `#`, so that a document's chunks (`{id}#{n}`) live on
/// their parent's shard. Fixed forever: changing it would move every document.
pub fn shard_of(id: &str, shards: u32) -> u32 {
    let key = id.split('#').next().unwrap_or(id);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(shards.max(1))) as u32
}

/// The local collection that holds shard `shard` of `collection` on a data node.
pub fn shard_collection(collection: &str, shard: u32) -> String {
    format!("{collection}.s{shard}")
}

/// The JetStream stream of the collection whose cluster id is `uid`.
pub fn stream_name(uid: u64) -> String {
    format!("LATENTDB_{uid}")
}

/// The subject of shard `shard` in the stream of the collection whose cluster id is `uid`.
pub fn shard_subject(uid: u64, shard: u32) -> String {
    format!("latentdb.{uid}.{shard}")
}

/// The shard named by a subject built by [`shard_subject`].
pub fn parse_shard_subject(subject: &str) -> Option<(u64, u32)> {
    let mut parts = subject.split('.');
    if parts.next()? != "latentdb" {
        return None;
    }
    let uid = parts.next()?.parse().ok()?;
    let shard = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((uid, shard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_their_parent() {
        for n in [1, 2, 4, 7] {
            for id in ["a", "doc-17", "ünïcode", ""] {
                let s = shard_of(id, n);
                assert!(s < n);
                assert_eq!(shard_of(&format!("{id}#0"), n), s);
                assert_eq!(shard_of(&format!("{id}#12#x"), n), s);
            }
        }
    }

    #[test]
    fn the_hash_is_fixed_and_spreads() {
        // Fixed values: a change of the hash would move stored documents.
        assert_eq!(shard_of("a", 4), (0xaf63_dc4c_8601_ec8c_u64 % 4) as u32);
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[shard_of(&format!("doc-{i}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn subjects_round_trip() {
        assert_eq!(parse_shard_subject(&shard_subject(42, 3)), Some((42, 3)));
        assert_eq!(parse_shard_subject("latentdb.x.3"), None);
        assert_eq!(parse_shard_subject("latentdb.1.2.3"), None);
        assert_eq!(parse_shard_subject("other.1.2"), None);
    }
}
