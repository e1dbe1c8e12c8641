//! [`ValueSet`]: the operand list of `$in` / `$nin`, hashed so that a membership test costs
//! one lookup instead of one comparison per operand.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use serde_json::Value;

/// JSON equality where numbers compare by value (`1 == 1.0`); objects compare by key.
pub(crate) fn value_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| value_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| value_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Feeds `v` to `h` so that `value_eq(a, b)` implies equal hashes: numbers hash by their
/// `f64` value (the coarsest equality [`value_eq`] uses; `-0` as `0`), object members in an
/// order-independent way. Unequal values may collide; lookups confirm with [`value_eq`].
fn hash_value(v: &Value, state: &RandomState, h: &mut impl Hasher) {
    match v {
        Value::Null => h.write_u8(0),
        Value::Bool(b) => {
            h.write_u8(1);
            b.hash(h);
        }
        Value::Number(n) => {
            h.write_u8(2);
            let x = n.as_f64().unwrap_or(0.0);
            let x = if x == 0.0 { 0.0 } else { x };
            h.write_u64(x.to_bits());
        }
        Value::String(s) => {
            h.write_u8(3);
            s.hash(h);
        }
        Value::Array(items) => {
            h.write_u8(4);
            h.write_usize(items.len());
            for i in items {
                hash_value(i, state, h);
            }
        }
        Value::Object(map) => {
            h.write_u8(5);
            h.write_usize(map.len());
            let mut sum = 0u64;
            for (k, v) in map {
                let mut e = state.build_hasher();
                k.hash(&mut e);
                hash_value(v, state, &mut e);
                sum = sum.wrapping_add(e.finish());
            }
            h.write_u64(sum);
        }
    }
}

/// The operands of `$in` / `$nin`: the values as written (in order, for iteration) and a
/// hash index over them. Membership agrees exactly with a linear scan using JSON equality
/// where numbers compare by value.
#[derive(Clone)]
pub struct ValueSet {
    values: Vec<Value>,
    /// Hash of a value -> indices into `values` with that hash.
    index: HashMap<u64, Vec<u32>>,
    state: RandomState,
}

impl ValueSet {
    /// Hashes `values` (at most `u32::MAX` of them; the filter parser allows far fewer).
    pub fn new(values: Vec<Value>) -> Self {
        let state = RandomState::new();
        let mut index: HashMap<u64, Vec<u32>> = HashMap::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let key = Self::key(&state, v);
            index.entry(key).or_default().push(i as u32);
        }
        Self {
            values,
            index,
            state,
        }
    }

    fn key(state: &RandomState, v: &Value) -> u64 {
        let mut h = state.build_hasher();
        hash_value(v, state, &mut h);
        h.finish()
    }

    /// True when some operand equals `v` (numbers by value).
    pub fn contains(&self, v: &Value) -> bool {
        self.index
            .get(&Self::key(&self.state, v))
            .is_some_and(|ix| ix.iter().any(|&i| value_eq(&self.values[i as usize], v)))
    }

    /// The operands, as written.
    pub fn iter(&self) -> std::slice::Iter<'_, Value> {
        self.values.iter()
    }

    /// The number of operands.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when there are no operands.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl std::fmt::Debug for ValueSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.values).finish()
    }
}

impl PartialEq for ValueSet {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl<'a> IntoIterator for &'a ValueSet {
    type Item = &'a Value;
    type IntoIter = std::slice::Iter<'a, Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.values.iter()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn membership_follows_value_equality() {
        let s = ValueSet::new(vec![
            json!(1),
            json!("a"),
            json!(null),
            json!([1, 2]),
            json!({"x": 1, "y": [true]}),
            json!(-0.0),
            json!(9_007_199_254_740_993u64),
        ]);
        assert!(s.contains(&json!(1.0)));
        assert!(s.contains(&json!("a")));
        assert!(!s.contains(&json!("b")));
        assert!(s.contains(&json!(null)));
        assert!(s.contains(&json!([1.0, 2])));
        assert!(!s.contains(&json!([2, 1])));
        assert!(s.contains(&json!({"y": [true], "x": 1.0})));
        assert!(s.contains(&json!(0)));
        assert!(!s.contains(&json!(false)));
        // Integers compare exactly, even where their f64 values coincide.
        assert!(s.contains(&json!(9_007_199_254_740_993u64)));
        assert!(!s.contains(&json!(9_007_199_254_740_992u64)));
        assert_eq!(s.len(), 7);
    }
}
