//! The in-memory payload index of a collection: every live point's document id and metadata,
//! plus postings (top-level field → scalar value → points) that the filter planner uses to
//! find candidates and estimate selectivity without reading storage.
//!
//! Postings are a *superset* device: a candidate list is always checked against the full
//! filter before a point is returned, so an approximate key (e.g. two large integers that
//! round to the same `f64`) can only cost time, never correctness.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use foldhash::quality::RandomState;

use compact_str::CompactString;
use latentdb_index::{Condition, Filter};
use serde_json::{Map, Value};

use crate::value_pool::ValuePool;

/// Longest string value that gets a posting list (longer ones are matched by scanning).
const MAX_KEY_BYTES: usize = 256;

/// A posting key: one scalar JSON value, normalised so that values the filter language
/// considers equal map to the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Null,
    Bool(bool),
    /// The bits of the value as `f64` (`-0.0` folded into `0.0`).
    Num(u64),
    Str(Box<str>),
}

impl Key {
    fn of(v: &Value) -> Option<Key> {
        Some(match v {
            Value::Null => Key::Null,
            Value::Bool(b) => Key::Bool(*b),
            Value::Number(n) => {
                let f = n.as_f64()?;
                Key::Num(if f == 0.0 { 0 } else { f.to_bits() })
            }
            Value::String(s) if s.len() <= MAX_KEY_BYTES => Key::Str(s.as_str().into()),
            _ => return None,
        })
    }

    /// Heap bytes below the key.
    fn heap_bytes(&self) -> usize {
        match self {
            Key::Str(s) => malloc_bytes(s.len()),
            _ => 0,
        }
    }

    /// The keys a stored field value is listed under (an array: each scalar element).
    fn of_stored(v: &Value, out: &mut Vec<Key>) {
        match v {
            Value::Array(items) => out.extend(items.iter().filter_map(Key::of)),
            v => out.extend(Key::of(v)),
        }
    }
}

/// The postings of one field: value → sorted points.
type PostingMap = HashMap<Key, Vec<u32>, RandomState>;

/// One live point.
#[derive(Debug)]
pub(crate) struct PointEntry {
    /// The document id: inline up to 24 bytes (no allocation of its own, and a search
    /// copies it into its hit without allocating), on the heap beyond.
    pub id: CompactString,
    /// The metadata object's top-level members: (field number in [`Payload`]'s names, value
    /// slot in its pool), sorted by field number. Eight bytes per member instead of a `Map`
    /// per point (a `BTreeMap` allocates a node of 11 members, over 600 bytes, for even one,
    /// and every member its own key string and value): a name is stored once per
    /// collection, a value once per distinct value.
    fields: Box<[(u32, u32)]>,
}

impl PointEntry {
    /// Heap bytes below this entry: the id and the fields (the values live in the pool).
    fn heap_bytes(&self) -> usize {
        let id = if self.id.is_heap_allocated() {
            malloc_bytes(self.id.capacity())
        } else {
            0
        };
        id + malloc_bytes(self.fields.len() * size_of::<(u32, u32)>())
    }
}

/// Points, their metadata and postings of one collection.
#[derive(Debug, Default)]
pub(crate) struct Payload {
    // foldhash instead of SipHash: the open of a collection inserts every point, several
    // hashes per metadata field (still seeded at random per map).
    points: HashMap<u32, PointEntry, RandomState>,
    /// Field number → postings of that field.
    postings: HashMap<u32, PostingMap, RandomState>,
    /// Every top-level metadata field name seen, by field number (never forgotten: a
    /// collection's names are few, and a number stays valid while points use it).
    names: Vec<Box<str>>,
    /// Field name → field number.
    name_ids: HashMap<Box<str>, u32, RandomState>,
    /// The distinct field values.
    values: ValuePool,
    /// [`Payload::heap_bytes`] below the tables, kept up to date by every insert and remove
    /// (a walk over a million points' metadata is too slow for a metrics scrape).
    bytes: usize,
}

impl Payload {
    /// The number of live points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// A live point's entry.
    pub fn get(&self, point: u32) -> Option<&PointEntry> {
        self.points.get(&point)
    }

    /// True when `point` is live and its metadata satisfies `filter`.
    pub fn matches(&self, point: u32, filter: &Filter) -> bool {
        self.points
            .get(&point)
            .is_some_and(|e| self.entry_matches(e, filter))
    }

    /// True when an entry's metadata satisfies `filter`.
    fn entry_matches(&self, e: &PointEntry, filter: &Filter) -> bool {
        filter.matches_fields(&|name: &str| self.field(e, name))
    }

    /// The value of an entry's top-level metadata field `name`.
    fn field<'a>(&'a self, e: &PointEntry, name: &str) -> Option<&'a Value> {
        let id = *self.name_ids.get(name)?;
        let at = e.fields.binary_search_by_key(&id, |f| f.0).ok()?;
        Some(self.values.get(e.fields[at].1))
    }

    /// An entry's metadata object.
    pub fn metadata(&self, e: &PointEntry) -> Map<String, Value> {
        e.fields
            .iter()
            .filter_map(|&(id, slot)| {
                let name = self.names.get(id as usize)?;
                Some((name.to_string(), self.values.get(slot).clone()))
            })
            .collect()
    }

    /// The number of field `name`, given one when new.
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        // More names than u32 numbers cannot be held in memory anyway.
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.into());
        self.name_ids.insert(name.into(), id);
        self.bytes += 2 * malloc_bytes(name.len());
        id
    }

    /// Adds a point. Points arrive in increasing order on the write path, so postings stay
    /// sorted by a push; an out-of-order point is inserted in place.
    pub fn insert(&mut self, point: u32, id: &str, metadata: Map<String, Value>) {
        // A point already present is replaced whole (its postings go first).
        self.remove(point);
        let mut keys = Vec::new();
        let mut fields = Vec::with_capacity(metadata.len());
        for (field, value) in metadata {
            let fid = self.intern(&field);
            keys.clear();
            Key::of_stored(&value, &mut keys);
            if !keys.is_empty() {
                let by_value = self.postings.entry(fid).or_default();
                for key in keys.drain(..) {
                    let list = match by_value.entry(key) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(v) => {
                            self.bytes += v.key().heap_bytes();
                            v.insert(Vec::new())
                        }
                    };
                    let before = malloc_bytes(list.capacity() * size_of::<u32>());
                    match list.last() {
                        Some(&last) if last >= point => {
                            if let Err(at) = list.binary_search(&point) {
                                list.insert(at, point);
                            }
                        }
                        _ => list.push(point),
                    }
                    self.bytes += malloc_bytes(list.capacity() * size_of::<u32>()) - before;
                }
            }
            fields.push((fid, self.values.acquire(value)));
        }
        fields.sort_unstable_by_key(|f| f.0);
        let entry = PointEntry {
            id: id.into(),
            fields: fields.into_boxed_slice(),
        };
        self.bytes += entry.heap_bytes();
        self.points.insert(point, entry);
    }

    /// Removes a point (no-op when unknown).
    pub fn remove(&mut self, point: u32) {
        let Some(entry) = self.points.remove(&point) else {
            return;
        };
        self.bytes -= entry.heap_bytes();
        let mut keys = Vec::new();
        for &(fid, slot) in &entry.fields {
            keys.clear();
            Key::of_stored(self.values.get(slot), &mut keys);
            self.values.release(slot);
            let Some(by_value) = self.postings.get_mut(&fid) else {
                continue;
            };
            for key in keys.drain(..) {
                if let Some(list) = by_value.get_mut(&key) {
                    if let Ok(at) = list.binary_search(&point) {
                        list.remove(at);
                    }
                    if list.is_empty() {
                        self.bytes -= malloc_bytes(list.capacity() * size_of::<u32>());
                        self.bytes -= key.heap_bytes();
                        by_value.remove(&key);
                    }
                }
            }
            if by_value.is_empty() {
                self.postings.remove(&fid);
            }
        }
    }

    fn posting(&self, path: &str, value: &Value) -> Option<&[u32]> {
        // Dotted paths may reach into nested objects, which postings do not cover.
        if path.contains('.') {
            return None;
        }
        let key = Key::of(value)?;
        Some(
            self.name_ids
                .get(path)
                .and_then(|id| self.postings.get(id))
                .and_then(|m| m.get(&key))
                .map_or(&[][..], Vec::as_slice),
        )
    }

    /// A sorted superset of the points matching `filter`, when postings can bound it
    /// (`None`: any point may match).
    pub fn candidates(&self, filter: &Filter) -> Option<Vec<u32>> {
        match filter {
            Filter::Field {
                path,
                cond: Condition::Eq(v),
            } => self.posting(path, v).map(<[u32]>::to_vec),
            Filter::Field {
                path,
                cond: Condition::In(vs),
            } => {
                let lists = vs
                    .iter()
                    .map(|v| self.posting(path, v))
                    .collect::<Option<Vec<_>>>()?;
                Some(union(lists.into_iter().map(<[u32]>::to_vec)))
            }
            // Any one bounded conjunct bounds the conjunction: take the smallest.
            Filter::And(fs) => fs
                .iter()
                .filter_map(|f| self.candidates(f))
                .min_by_key(Vec::len),
            Filter::Or(fs) => {
                let lists = fs
                    .iter()
                    .map(|f| self.candidates(f))
                    .collect::<Option<Vec<_>>>()?;
                Some(union(lists.into_iter()))
            }
            _ => None,
        }
    }

    /// The fraction of up to `n` sampled points of `universe` (all live points when `None`)
    /// that match `filter`, and whether the sample was the whole universe.
    pub fn sample_fraction(
        &self,
        filter: &Filter,
        universe: Option<&[u32]>,
        n: usize,
    ) -> (f64, bool) {
        let n = n.max(1);
        let (hits, seen, whole) = match universe {
            Some(u) => {
                let step = u.len().div_ceil(n).max(1);
                let mut hits = 0usize;
                let mut seen = 0usize;
                for &p in u.iter().step_by(step) {
                    seen += 1;
                    hits += usize::from(self.matches(p, filter));
                }
                (hits, seen, step == 1)
            }
            None => {
                // HashMap iteration order is randomised per map: a fair sample.
                let mut hits = 0usize;
                let mut seen = 0usize;
                for e in self.points.values().take(n) {
                    seen += 1;
                    hits += usize::from(self.entry_matches(e, filter));
                }
                (hits, seen, seen == self.points.len())
            }
        };
        if seen == 0 {
            (0.0, whole)
        } else {
            (hits as f64 / seen as f64, whole)
        }
    }

    /// Every point of `universe` (all live points when `None`) matching `filter`, sorted.
    pub fn matching(&self, filter: &Filter, universe: Option<&[u32]>) -> Vec<u32> {
        let mut out: Vec<u32> = match universe {
            Some(u) => u
                .iter()
                .copied()
                .filter(|&p| self.matches(p, filter))
                .collect(),
            None => self
                .points
                .iter()
                .filter(|(_, e)| self.entry_matches(e, filter))
                .map(|(&p, _)| p)
                .collect(),
        };
        out.sort_unstable();
        out
    }

    /// Bytes of heap this payload index holds: the point table, ids, metadata values and
    /// postings. An estimate modelled on the layouts it uses (hashbrown tables, `BTreeMap`
    /// nodes of 11 entries, glibc malloc chunks of at least 32 bytes in 16-byte steps); what
    /// lies below the tables' entries is counted by every write, so this costs one step per
    /// metadata field, not per point. Checked against the process's resident memory by
    /// `latentdb bench ann --metadata --reopen`.
    pub fn heap_bytes(&self) -> usize {
        self.bytes + self.table_bytes() + self.values.heap_bytes()
    }

    /// The hash tables' own allocations, from their capacities.
    fn table_bytes(&self) -> usize {
        table_bytes(self.points.capacity(), size_of::<(u32, PointEntry)>())
            + table_bytes(self.postings.capacity(), size_of::<(u32, PostingMap)>())
            + table_bytes(self.name_ids.capacity(), size_of::<(Box<str>, u32)>())
            + malloc_bytes(self.names.capacity() * size_of::<Box<str>>())
            + self
                .postings
                .values()
                .map(|m| table_bytes(m.capacity(), size_of::<(Key, Vec<u32>)>()))
                .sum::<usize>()
    }

    /// What the writes counted in `bytes`, computed by walking everything (the tests' oracle).
    #[cfg(test)]
    fn walked_entry_bytes(&self) -> usize {
        let mut total = self
            .points
            .values()
            .map(PointEntry::heap_bytes)
            .sum::<usize>();
        total += 2 * self
            .names
            .iter()
            .map(|n| malloc_bytes(n.len()))
            .sum::<usize>();
        for by_value in self.postings.values() {
            for (key, list) in by_value {
                total += key.heap_bytes() + malloc_bytes(list.capacity() * size_of::<u32>());
            }
        }
        total
    }

    /// Every live point, sorted.
    pub fn all_points(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.points.keys().copied().collect();
        out.sort_unstable();
        out
    }
}

/// What glibc malloc takes for a request of `n` bytes (none for `n == 0`, as Rust does not
/// allocate then).
pub(crate) fn malloc_bytes(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

/// What a hashbrown table of `capacity` entries of `entry` bytes allocates.
pub(crate) fn table_bytes(capacity: usize, entry: usize) -> usize {
    // hashbrown's buckets: 4 up to 3 entries, 8 up to 7, then a power of two 8/7 of them.
    // A removal may leave a tombstone that lowers `capacity` by one until the next rehash;
    // rounding up to the power of two absorbs that.
    let buckets = match capacity {
        0 => return 0,
        1..=3 => 4,
        4..=7 => 8,
        c => (c * 8 / 7).next_power_of_two(),
    };
    malloc_bytes(buckets * entry + buckets + 16)
}

/// Heap bytes below a JSON value (its own inline bytes not counted).
pub(crate) fn value_heap_bytes(v: &Value) -> usize {
    /// Entries per `BTreeMap` node (std's `B = 6`: `2B - 1`).
    const NODE: usize = 11;
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => malloc_bytes(s.capacity()),
        Value::Array(items) => {
            malloc_bytes(items.capacity() * size_of::<Value>())
                + items.iter().map(value_heap_bytes).sum::<usize>()
        }
        Value::Object(map) => {
            let leaf = NODE * (size_of::<String>() + size_of::<Value>()) + 16;
            // One leaf up to 11 entries; beyond, nodes are between half and fully used.
            let leaves = match map.len() {
                0 => 0,
                n if n <= NODE => 1,
                n => n.div_ceil(8),
            };
            let internal = if leaves > 1 { leaves.div_ceil(6) } else { 0 };
            leaves * malloc_bytes(leaf)
                + internal * malloc_bytes(leaf + (NODE + 1) * size_of::<usize>())
                + map
                    .iter()
                    .map(|(k, v)| malloc_bytes(k.capacity()) + value_heap_bytes(v))
                    .sum::<usize>()
        }
    }
}

fn union(lists: impl Iterator<Item = Vec<u32>>) -> Vec<u32> {
    let mut out: Vec<u32> = lists.flatten().collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn postings_bound_and_follow_writes() {
        let mut p = Payload::default();
        p.insert(
            1,
            "a",
            meta(json!({"tag": "x", "n": 1, "tags": ["u", "v"]})),
        );
        p.insert(2, "b", meta(json!({"tag": "y", "n": 1.0})));
        p.insert(3, "c", meta(json!({"tag": "x", "n": 2})));
        let f = |v: Value| Filter::parse(&v).unwrap();
        assert_eq!(p.candidates(&f(json!({"tag": "x"}))), Some(vec![1, 3]));
        assert_eq!(p.candidates(&f(json!({"n": 1}))), Some(vec![1, 2]));
        assert_eq!(p.candidates(&f(json!({"tags": "v"}))), Some(vec![1]));
        assert_eq!(
            p.candidates(&f(json!({"tag": {"$in": ["y", "z"]}}))),
            Some(vec![2])
        );
        assert_eq!(
            p.candidates(&f(json!({"tag": "x", "n": {"$gt": 1}}))),
            Some(vec![1, 3])
        );
        assert_eq!(p.candidates(&f(json!({"n": {"$gt": 1}}))), None);
        assert_eq!(
            p.candidates(&f(json!({"$or": [{"tag": "y"}, {"n": 2}]}))),
            Some(vec![2, 3])
        );
        assert_eq!(
            p.matching(&f(json!({"tag": "x", "n": {"$gt": 1}})), None),
            vec![3]
        );
        p.remove(3);
        assert_eq!(p.candidates(&f(json!({"tag": "x"}))), Some(vec![1]));
        assert!(!p.matches(3, &f(json!({}))));
        assert_eq!(p.len(), 2);
        let (frac, whole) = p.sample_fraction(&f(json!({"tag": "y"})), None, 100);
        assert!(whole && (frac - 0.5).abs() < 1e-9);
    }
    /// Metadata of one of a few shapes, built from `seed`: shared and unique strings, numbers,
    /// arrays, nested objects, long strings without postings, empty objects.
    fn sample_meta(seed: u32) -> Map<String, Value> {
        let v = match seed % 5 {
            0 => json!({}),
            1 => json!({"tag": format!("t{}", seed % 7), "n": seed % 3}),
            2 => json!({"parent": format!("doc-{seed}"), "char_start": seed * 13,
                        "tags": ["a", format!("b{}", seed % 4)], "deep": {"x": seed}}),
            3 => {
                json!({"long": "x".repeat(300 + seed as usize % 50), "flag": seed.is_multiple_of(2),
                        "nothing": null})
            }
            _ => {
                json!({"tag": "shared", "f": f64::from(seed) / 8.0, "s": "y".repeat(seed as usize % 40)})
            }
        };
        meta(v)
    }

    proptest::proptest! {
        /// The byte count kept by inserts and removes equals a walk over everything below the
        /// tables, whatever
        /// the order of writes (out-of-order points, re-inserts, removes of unknown points).
        #[test]
        fn tracked_bytes_equal_a_walk(ops in proptest::collection::vec((0u32..300, 0u32..1000, proptest::bool::ANY), 0..400)) {
            let mut p = Payload::default();
            for (point, seed, insert) in ops {
                if insert {
                    p.insert(point, &format!("id-{seed}"), sample_meta(seed));
                } else {
                    p.remove(point);
                }
                proptest::prop_assert_eq!(p.bytes, p.walked_entry_bytes());
                proptest::prop_assert!(p.values.value_bytes_agree());
            }
            let all = p.all_points();
            for point in all {
                p.remove(point);
            }
            proptest::prop_assert_eq!(p.bytes, p.walked_entry_bytes());
            proptest::prop_assert!(p.postings.is_empty());
            proptest::prop_assert_eq!(p.values.len(), 0);
        }
    }

    #[test]
    fn metadata_comes_back_exactly_as_written_and_shared_values_are_stored_once() {
        let mut p = Payload::default();
        let written: Vec<Map<String, Value>> = (0..50).map(sample_meta).collect();
        for (i, m) in written.iter().enumerate() {
            p.insert(i as u32, &format!("d{i}"), m.clone());
        }
        // 1 and 1.0 are distinct values: both come back as written.
        p.insert(50, "one", meta(json!({"n": 1, "f": 1.0, "z": -0.0})));
        for (i, m) in written.iter().enumerate() {
            let e = p.get(i as u32).unwrap();
            assert_eq!(&p.metadata(e), m, "point {i}");
            assert_eq!(&*e.id, format!("d{i}"));
        }
        let e = p.get(50).unwrap();
        assert_eq!(
            Value::Object(p.metadata(e)).to_string(),
            r#"{"f":1.0,"n":1,"z":-0.0}"#
        );
        // "shared" is one value for the ten points of shape 4.
        let shared = p.values.acquire(Value::String("shared".into()));
        assert_eq!(p.values.get(shared), "shared");
        let before = p.values.len();
        p.values.release(shared);
        assert_eq!(p.values.len(), before);
    }

    #[test]
    fn heap_bytes_grow_with_metadata() {
        let mut bare = Payload::default();
        let mut rich = Payload::default();
        for i in 0..1000 {
            bare.insert(i, &format!("doc-{i}"), Map::new());
            rich.insert(i, &format!("doc-{i}"), sample_meta(i * 5 + 2));
        }
        // 1,000 ids of 8-9 bytes: at least one 32-byte chunk each.
        assert!(bare.heap_bytes() >= 32_000, "{}", bare.heap_bytes());
        // Each point's distinct nested object (a BTreeMap node of over 600 bytes), plus
        // the other values and postings.
        assert!(
            rich.heap_bytes() > bare.heap_bytes() + 600_000,
            "{}",
            rich.heap_bytes()
        );
    }
}
