//! A set of slots that empties in O(1): one epoch stamp per slot, and a new epoch per use.
//!
//! A graph search (and the dump's link-list check) asks "seen before?" for slots spread over
//! the whole index; clearing a bitmap per query would cost O(points). Stamps are `u16`, as in
//! hnswlib: half the cache footprint of `u32` stamps on a large index, for one full clear every
//! 65,535 uses.

use std::collections::TryReserveError;

/// Slots marked since the last [`next`](Visited::next) (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Visited {
    stamps: Vec<u16>,
    epoch: u16,
}

impl Visited {
    /// A set for slots below `n`, its memory reserved fallibly.
    pub(crate) fn try_with_len(n: usize) -> Result<Self, TryReserveError> {
        let mut stamps = Vec::new();
        stamps.try_reserve_exact(n)?;
        stamps.resize(n, 0);
        Ok(Self { stamps, epoch: 1 })
    }

    /// Empties the set and makes room for slots below `n` (growing to a power of two, so that
    /// a growing index reallocates rarely).
    pub(crate) fn next(&mut self, n: usize) {
        if self.stamps.len() < n {
            self.stamps.resize(n.next_power_of_two(), 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.stamps.fill(0);
            self.epoch = 1;
        }
    }

    /// Marks `slot`; false when it already was (since the last `next`). Panics on a slot past
    /// the length given to `next` or `try_with_len` (callers check slots against the graph).
    #[inline]
    pub(crate) fn insert(&mut self, slot: usize) -> bool {
        let s = &mut self.stamps[slot];
        if *s == self.epoch {
            false
        } else {
            *s = self.epoch;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_hold_until_next_and_survive_the_epoch_wrapping() {
        let mut v = Visited::try_with_len(10).unwrap();
        assert!(v.insert(3));
        assert!(!v.insert(3));
        // Across every epoch, through the wrap to zero (a full clear) and past it: a mark made
        // in one use never counts in the next, and slot 7, marked once, long ago, is not
        // mistaken for marked when the epoch comes round to its stamp again.
        assert!(v.insert(7));
        for round in 0..(u16::MAX as usize + 5) {
            v.next(10);
            assert!(v.insert(3), "round {round}");
            assert!(!v.insert(3), "round {round}");
            if round == 70_000 - 65_536 {
                assert!(v.insert(7), "round {round}");
            }
        }
        v.next(10);
        assert!(v.insert(7));
    }

    #[test]
    fn next_grows_to_the_requested_length() {
        let mut v = Visited::default();
        v.next(5);
        assert!(v.insert(4));
        v.next(100);
        assert!(v.insert(99));
        assert!(v.insert(4));
    }
}
