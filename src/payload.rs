//! The in-memory payload index of a collection: every live point's document id and metadata,
//! plus postings (top-level field → scalar value → points) that the filter planner uses to
//! find candidates and estimate selectivity without reading storage.
//!
//! Postings are a *superset* device: a candidate list is always checked against the full
//! filter before a point is returned, so an approximate key (e.g. two large integers that
//! round to the same `f64`) can only cost time, never correctness.

use std::collections::HashMap;

use latentdb_index::{Condition, Filter};
use serde_json::{Map, Value};

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

    /// The keys a stored field value is listed under (an array: each scalar element).
    fn of_stored(v: &Value, out: &mut Vec<Key>) {
        match v {
            Value::Array(items) => out.extend(items.iter().filter_map(Key::of)),
            v => out.extend(Key::of(v)),
        }
    }
}

/// One live point.
#[derive(Debug)]
pub(crate) struct PointEntry {
    /// The document id.
    pub id: Box<str>,
    /// The metadata object (a `Value::Object`).
    pub metadata: Value,
}

/// Points, their metadata and postings of one collection.
#[derive(Debug, Default)]
pub(crate) struct Payload {
    points: HashMap<u32, PointEntry>,
    postings: HashMap<Box<str>, HashMap<Key, Vec<u32>>>,
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
            .is_some_and(|e| filter.matches(&e.metadata))
    }

    /// Adds a point. Points arrive in increasing order on the write path, so postings stay
    /// sorted by a push; an out-of-order point is inserted in place.
    pub fn insert(&mut self, point: u32, id: &str, metadata: Map<String, Value>) {
        let mut keys = Vec::new();
        for (field, value) in &metadata {
            keys.clear();
            Key::of_stored(value, &mut keys);
            if keys.is_empty() {
                continue;
            }
            let by_value = self.postings.entry(field.as_str().into()).or_default();
            for key in keys.drain(..) {
                let list = by_value.entry(key).or_default();
                match list.last() {
                    Some(&last) if last >= point => {
                        if let Err(at) = list.binary_search(&point) {
                            list.insert(at, point);
                        }
                    }
                    _ => list.push(point),
                }
            }
        }
        self.points.insert(
            point,
            PointEntry {
                id: id.into(),
                metadata: Value::Object(metadata),
            },
        );
    }

    /// Removes a point (no-op when unknown).
    pub fn remove(&mut self, point: u32) {
        let Some(entry) = self.points.remove(&point) else {
            return;
        };
        let Value::Object(metadata) = &entry.metadata else {
            return;
        };
        let mut keys = Vec::new();
        for (field, value) in metadata {
            keys.clear();
            Key::of_stored(value, &mut keys);
            let Some(by_value) = self.postings.get_mut(field.as_str()) else {
                continue;
            };
            for key in keys.drain(..) {
                if let Some(list) = by_value.get_mut(&key) {
                    if let Ok(at) = list.binary_search(&point) {
                        list.remove(at);
                    }
                    if list.is_empty() {
                        by_value.remove(&key);
                    }
                }
            }
            if by_value.is_empty() {
                self.postings.remove(field.as_str());
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
            self.postings
                .get(path)
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
                    hits += usize::from(filter.matches(&e.metadata));
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
                .filter(|(_, e)| filter.matches(&e.metadata))
                .map(|(&p, _)| p)
                .collect(),
        };
        out.sort_unstable();
        out
    }

    /// Every live point, sorted.
    pub fn all_points(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.points.keys().copied().collect();
        out.sort_unstable();
        out
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
}
