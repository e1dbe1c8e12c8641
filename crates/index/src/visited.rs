//! A set of slots that empties in time proportional to what was marked: one bit per slot, and
//! the list of words made non-zero since the last clear.
//!
//! A graph search (and the dump's link-list check) asks "seen before?" for slots spread over
//! the whole index. A bit per slot is a sixteenth of hnswlib's `u16` epoch stamps: 12.5 KiB
//! instead of 200 KiB per pooled search scratch on 100k points (125 KiB instead of 2 MiB on
//! a million), small enough to stay cached while a 384-d search streams about 1 MiB of
//! vectors through the caches. Clearing resets only the words listed, so a query never pays
//! for the points it did not touch. Measured on 100k x 384 (one thread, ef 16): the check's
//! share of a search fell from 8% to 1% of the samples, while the loop around it (which
//! issues the vectors' prefetches) took the difference: QPS within the host's noise.

use std::collections::TryReserveError;

/// Slots marked since the last [`next`](Visited::next) (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Visited {
    bits: Vec<u64>,
    /// The index of every word of `bits` that is non-zero: exactly the words to clear.
    touched: Vec<u32>,
}

/// Words of 64 bits for `n` slots.
fn words(n: usize) -> usize {
    n.div_ceil(64)
}

impl Visited {
    /// A set for slots below `n`, its memory reserved fallibly.
    pub(crate) fn try_with_len(n: usize) -> Result<Self, TryReserveError> {
        let mut bits = Vec::new();
        bits.try_reserve_exact(words(n))?;
        bits.resize(words(n), 0);
        Ok(Self {
            bits,
            touched: Vec::new(),
        })
    }

    /// Empties the set and makes room for slots below `n` (growing to a power of two, so that
    /// a growing index reallocates rarely).
    pub(crate) fn next(&mut self, n: usize) {
        for &w in &self.touched {
            self.bits[w as usize] = 0;
        }
        self.touched.clear();
        if self.bits.len() < words(n) {
            self.bits.resize(words(n).next_power_of_two(), 0);
        }
    }

    /// Marks `slot`; false when it already was (since the last `next`). Panics on a slot past
    /// the length given to `next` or `try_with_len` (callers check slots against the graph).
    #[inline]
    pub(crate) fn insert(&mut self, slot: usize) -> bool {
        let word = &mut self.bits[slot / 64];
        let bit = 1u64 << (slot % 64);
        if *word & bit != 0 {
            return false;
        }
        if *word == 0 {
            // Below 2^32 words: slots are `u32`s.
            self.touched.push((slot / 64) as u32);
        }
        *word |= bit;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_hold_until_next() {
        let mut v = Visited::try_with_len(10).unwrap();
        assert!(v.insert(3));
        assert!(!v.insert(3));
        assert!(v.insert(7));
        for round in 0..1000 {
            v.next(10);
            assert!(v.insert(3), "round {round}");
            assert!(!v.insert(3), "round {round}");
            if round == 500 {
                assert!(v.insert(7), "round {round}");
            }
        }
        v.next(10);
        assert!(v.insert(7));
    }

    /// Against a `HashSet` over many rounds of random marks across word boundaries: every
    /// answer agrees, and each `next` leaves no bit set.
    #[test]
    fn agrees_with_a_hash_set_and_clears_completely() {
        let n = 5_000;
        let mut v = Visited::try_with_len(n).unwrap();
        let mut rng = crate::synth::SplitMix64::new(3);
        for round in 0..200 {
            let mut want = std::collections::HashSet::new();
            let marks = 1 + round * 7 % 900;
            for _ in 0..marks {
                let s = (rng.next_u64() % n as u64) as usize;
                assert_eq!(v.insert(s), want.insert(s), "round {round}, slot {s}");
            }
            v.next(n);
            assert!(v.bits.iter().all(|&w| w == 0), "round {round}");
            assert!(v.touched.is_empty());
        }
    }

    #[test]
    fn next_grows_to_the_requested_length() {
        let mut v = Visited::default();
        v.next(5);
        assert!(v.insert(4));
        v.next(100);
        assert!(v.insert(99));
        assert!(v.insert(4));
        v.next(100_000);
        assert!(v.insert(99_999));
        assert!(v.insert(99));
    }
}
