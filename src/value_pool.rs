//! A pool of distinct metadata values, shared by the points that hold them: the payload index
//! keeps one copy of each value (a source path shared by a document's chunks, a constant
//! setting, a small number) and a 4-byte slot number per point and field.
//!
//! Values are equal when `serde_json::Value`'s `==` says so (numbers by representation: `1`
//! and `1.0` are two values, so a point's metadata comes back exactly as it was written).
//! Each slot counts its holders; the last release frees the slot for reuse.

use std::hash::{BuildHasher, Hash, Hasher};

use foldhash::quality::RandomState;

use hashbrown::HashTable;
use serde_json::Value;

use crate::payload::{malloc_bytes, table_bytes, value_heap_bytes};

/// Distinct values with holder counts.
#[derive(Debug, Default)]
pub(crate) struct ValuePool {
    /// Slot → value (`Null` in a free slot).
    values: Vec<Value>,
    /// Slot → holders (0: free).
    holders: Vec<u32>,
    /// Free slots, reused first.
    free: Vec<u32>,
    /// Hash of a value → its slot.
    table: HashTable<u32>,
    state: RandomState,
    /// Heap bytes below the live values (strings, arrays, objects).
    value_bytes: usize,
}

/// Feeds `v` to `h` so that `a == b` implies equal hashes.
fn hash_value(v: &Value, h: &mut impl Hasher) {
    match v {
        Value::Null => h.write_u8(0),
        Value::Bool(b) => {
            h.write_u8(1);
            b.hash(h);
        }
        Value::Number(n) => {
            // `Number`'s `==` compares the representation: unsigned, negative, float.
            if let Some(u) = n.as_u64() {
                h.write_u8(2);
                h.write_u64(u);
            } else if let Some(i) = n.as_i64() {
                h.write_u8(3);
                h.write_i64(i);
            } else {
                h.write_u8(4);
                let x = n.as_f64().unwrap_or(0.0);
                // -0.0 == 0.0 as floats.
                h.write_u64(if x == 0.0 { 0 } else { x.to_bits() });
            }
        }
        Value::String(s) => {
            h.write_u8(5);
            s.hash(h);
        }
        Value::Array(items) => {
            h.write_u8(6);
            h.write_usize(items.len());
            for i in items {
                hash_value(i, h);
            }
        }
        Value::Object(map) => {
            // `Map` iterates in key order, so equal maps feed the same sequence.
            h.write_u8(7);
            h.write_usize(map.len());
            for (k, v) in map {
                k.hash(h);
                hash_value(v, h);
            }
        }
    }
}

impl ValuePool {
    fn hash(&self, v: &Value) -> u64 {
        let mut h = self.state.build_hasher();
        hash_value(v, &mut h);
        h.finish()
    }

    /// The slot of `v`, with one more holder (a new slot when no equal value is pooled).
    pub fn acquire(&mut self, v: Value) -> u32 {
        let hash = self.hash(&v);
        let values = &self.values;
        if let Some(&slot) = self.table.find(hash, |&s| values[s as usize] == v) {
            self.holders[slot as usize] += 1;
            return slot;
        }
        self.value_bytes += value_heap_bytes(&v);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.values[slot as usize] = v;
                self.holders[slot as usize] = 1;
                slot
            }
            None => {
                // More distinct values than u32 slots cannot be held in memory anyway.
                let slot = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
                self.values.push(v);
                self.holders.push(1);
                slot
            }
        };
        let (state, values) = (&self.state, &self.values);
        self.table.insert_unique(hash, slot, |&s| {
            let mut h = state.build_hasher();
            hash_value(&values[s as usize], &mut h);
            h.finish()
        });
        slot
    }

    /// Drops one holder of `slot`; the last one frees it.
    pub fn release(&mut self, slot: u32) {
        let Some(holders) = self.holders.get_mut(slot as usize) else {
            return;
        };
        if *holders == 0 {
            return;
        }
        *holders -= 1;
        if *holders > 0 {
            return;
        }
        let hash = self.hash(&self.values[slot as usize]);
        if let Ok(entry) = self.table.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        let old = std::mem::take(&mut self.values[slot as usize]);
        self.value_bytes -= value_heap_bytes(&old);
        self.free.push(slot);
    }

    /// The value in `slot` (`Null` for a free or unknown slot).
    pub fn get(&self, slot: u32) -> &Value {
        const NULL: &Value = &Value::Null;
        self.values.get(slot as usize).unwrap_or(NULL)
    }

    /// Distinct values held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Heap bytes the pool holds: its arrays and table from their capacities, and what lies
    /// below the live values.
    pub fn heap_bytes(&self) -> usize {
        malloc_bytes(self.values.capacity() * size_of::<Value>())
            + malloc_bytes(self.holders.capacity() * size_of::<u32>())
            + malloc_bytes(self.free.capacity() * size_of::<u32>())
            + table_bytes(self.table.capacity(), size_of::<u32>())
            + self.value_bytes
    }

    /// True when the running count of the live values' heap bytes equals a walk over them.
    #[cfg(test)]
    pub fn value_bytes_agree(&self) -> bool {
        self.value_bytes == self.walked_value_bytes()
    }

    /// What `value_bytes` counts, computed by walking the live values (the tests' oracle).
    #[cfg(test)]
    fn walked_value_bytes(&self) -> usize {
        self.values
            .iter()
            .zip(&self.holders)
            .filter(|(_, h)| **h > 0)
            .map(|(v, _)| value_heap_bytes(v))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_values_share_a_slot_until_the_last_holder_leaves() {
        let mut p = ValuePool::default();
        let a = p.acquire(json!("docs/a.md"));
        let b = p.acquire(json!("docs/a.md"));
        assert_eq!(a, b);
        let one = p.acquire(json!(1));
        let one_f = p.acquire(json!(1.0));
        assert_ne!(
            one, one_f,
            "1 and 1.0 stay distinct, so metadata round-trips"
        );
        assert_eq!(p.get(one_f), &json!(1.0));
        let neg = p.acquire(json!(-1));
        let obj = p.acquire(json!({"x": [1, "y"], "z": null}));
        assert_eq!(p.acquire(json!({"z": null, "x": [1, "y"]})), obj);
        assert_eq!(p.len(), 5);
        p.release(a);
        assert_eq!(p.get(a), &json!("docs/a.md"), "one holder left");
        p.release(b);
        assert_eq!(p.len(), 4);
        // The freed slot is reused.
        let c = p.acquire(json!("other"));
        assert_eq!(c, a);
        for s in [one, one_f, neg, obj, obj, c] {
            p.release(s);
        }
        assert_eq!(p.len(), 0);
        assert_eq!(p.walked_value_bytes(), 0);
        assert_eq!(p.value_bytes, 0);
        // Releasing more than acquired, or an unknown slot, changes nothing.
        p.release(c);
        p.release(1_000);
        assert_eq!(p.len(), 0);
    }
}
