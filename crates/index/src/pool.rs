//! The candidate pool of a graph search: the best `ef` points found so far that may be
//! returned, kept sorted, each marked once expanded.
//!
//! A best-first layer search (HNSW's `SEARCH-LAYER`) keeps two heaps: the candidates still
//! to expand and the best `ef` results. When every visited point may be returned, a
//! candidate worse than the `ef`-th result is never expanded (the search stops when the best
//! candidate left is), so the candidates that matter are exactly the unexpanded results: one
//! sorted array of at most `ef` entries holds both. An insert is a binary search and a short
//! move (`ef` entries of 12 bytes); an unfiltered layer walk merges each expansion's entering
//! neighbours at once instead ([`Pool::insert_batch`]: on 50-d word vectors the binary searches
//! and moves were a sixth of a search's time, and the graph alone searched 5-8% faster with
//! the merge). Taking the next candidate is a forward scan from a cursor.
//! A filtered search (a filter, or tombstones) traverses points it may not return: those wait
//! in a heap of their own beside the pool (see `Graph::search_layer`).

use crate::graph::Cand;

/// One pool entry: a candidate and whether its neighbours were visited.
#[derive(Debug, Clone, Copy)]
struct Entry {
    cand: Cand,
    expanded: bool,
}

/// The best `cap` candidates seen, ascending (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Pool {
    entries: Vec<Entry>,
    cap: usize,
    /// No unexpanded entry lies before this index.
    cursor: usize,
}

impl Pool {
    /// Empties the pool and sets its capacity (at least 1). Memory grows with what is
    /// inserted, not with `cap` (a search may ask for any `ef`), and is kept for the next
    /// search.
    pub(crate) fn reset(&mut self, cap: usize) {
        self.entries.clear();
        self.cap = cap.max(1);
        self.cursor = 0;
    }

    /// True when a point at distance `d` would enter: the pool is not full, or `d` is below
    /// the worst distance held (a tie with the worst does not enter, as in hnswlib).
    #[inline]
    pub(crate) fn admits(&self, d: f32) -> bool {
        self.entries.len() < self.cap || d < self.bound()
    }

    /// Inserts `cand` in order, after any entry of equal distance, dropping the worst entry
    /// when the pool is full. The caller checks [`admits`](Pool::admits) first. Positions are
    /// found on the distance alone, with a plain compare (distances are finite; a NaN would
    /// only go first, never panic): `Cand`'s total order costs several instructions more per
    /// step of the binary search, which runs for every admitted point.
    #[inline]
    pub(crate) fn insert(&mut self, cand: Cand) {
        let d = cand.d;
        let pos = self.entries.partition_point(|e| e.cand.d <= d);
        let entry = Entry {
            cand,
            expanded: false,
        };
        if self.entries.len() < self.cap {
            self.entries.insert(pos, entry);
        } else if pos < self.entries.len() {
            // Full: the entries from `pos` move down one place over the worst, which falls out.
            let last = self.entries.len() - 1;
            self.entries.copy_within(pos..last, pos + 1);
            self.entries[pos] = entry;
        } else {
            return;
        }
        if pos < self.cursor {
            self.cursor = pos;
        }
    }

    /// The distance a point must be below to enter: the worst held once the pool is full,
    /// infinity before (what [`admits`](Pool::admits) compares with).
    #[inline]
    pub(crate) fn bound(&self) -> f32 {
        match self.entries.last() {
            Some(w) if self.entries.len() >= self.cap => w.cand.d,
            _ => f32::INFINITY,
        }
    }

    /// Inserts a batch of candidates, each below [`bound`](Pool::bound) as it was before the
    /// batch, in arrival order: the pool ends exactly as after [`insert`](Pool::insert)ing
    /// each in turn behind an [`admits`](Pool::admits) check (the best `cap` of the pool and
    /// the batch, ties in arrival order, the pool's entries first). One merge from the back
    /// instead of a binary search and a move per candidate: each entry behind the batch's
    /// best moves once. `batch` is left sorted.
    #[inline]
    pub(crate) fn insert_batch(&mut self, batch: &mut [Cand]) {
        if batch.is_empty() {
            return;
        }
        // Stable insertion sort by distance (arrival order for ties): batches are a few
        // entries.
        for i in 1..batch.len() {
            let c = batch[i];
            let mut j = i;
            while j > 0 && batch[j - 1].d > c.d {
                batch[j] = batch[j - 1];
                j -= 1;
            }
            batch[j] = c;
        }
        let held = self.entries.len();
        let total = held + batch.len();
        let len = total.min(self.cap);
        self.entries.resize(
            len,
            Entry {
                cand: batch[0],
                expanded: true,
            },
        );
        // Merge from the back: `out` is the place, in the merged order of all `total`
        // entries, of the next entry placed; those at `len` or beyond fall out. A pool entry
        // moves back (never forward: `out >= i`), so the merge is in place.
        let (mut i, mut j, mut out) = (held, batch.len(), total);
        while j > 0 {
            out -= 1;
            // At equal distance the batch's entry goes after the pool's.
            let from_pool = i > 0 && self.entries[i - 1].cand.d > batch[j - 1].d;
            let e = if from_pool {
                i -= 1;
                self.entries[i]
            } else {
                j -= 1;
                Entry {
                    cand: batch[j],
                    expanded: false,
                }
            };
            if out < len {
                self.entries[out] = e;
            }
        }
        // `out` is now the batch's best entry's place.
        if out < len && out < self.cursor {
            self.cursor = out;
        }
    }

    /// The best unexpanded candidate, now marked expanded; `None` once every entry is.
    #[inline]
    pub(crate) fn next(&mut self) -> Option<Cand> {
        while let Some(e) = self.entries.get_mut(self.cursor) {
            self.cursor += 1;
            if !e.expanded {
                e.expanded = true;
                return Some(e.cand);
            }
        }
        None
    }

    /// The best unexpanded candidate, without taking it.
    #[inline]
    pub(crate) fn peek(&self) -> Option<Cand> {
        self.entries[self.cursor.min(self.entries.len())..]
            .iter()
            .find(|e| !e.expanded)
            .map(|e| e.cand)
    }

    /// The best `k` candidates, ascending, equal distances by slot (`Cand`'s order), as the
    /// results of a search are listed: the walk inserts ties in the order it meets them, which
    /// depends on the graph, and a caller expects equal scores in insertion order whatever
    /// path found them. Only the first `k` entries are ordered, with the whole run of ties
    /// across the `k`-th place (its smallest slots are the ones returned). The entries are
    /// already sorted by distance, so an insertion sort moves only within runs of ties: one
    /// compare per entry when there are none.
    pub(crate) fn best(&mut self, k: usize) -> impl ExactSizeIterator<Item = Cand> + '_ {
        let k = k.min(self.entries.len());
        let mut end = k;
        if let Some(last) = k.checked_sub(1).map(|i| self.entries[i].cand.d) {
            while self.entries.get(end).is_some_and(|e| e.cand.d == last) {
                end += 1;
            }
        }
        let run = &mut self.entries[..end];
        for i in 1..run.len() {
            let mut j = i;
            while j > 0 && run[j].cand < run[j - 1].cand {
                run.swap(j, j - 1);
                j -= 1;
            }
        }
        self.entries[..k].iter().map(|e| e.cand)
    }

    /// Every candidate held, ascending.
    pub(crate) fn sorted(&self) -> impl ExactSizeIterator<Item = Cand> + '_ {
        self.entries.iter().map(|e| e.cand)
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use super::*;
    use crate::synth::SplitMix64;

    fn cand(d: f32, slot: u32) -> Cand {
        Cand { d, slot }
    }

    #[test]
    fn keeps_the_best_sorted_and_expands_in_order() {
        let mut p = Pool::default();
        p.reset(3);
        for (d, s) in [(5.0, 1), (1.0, 2), (3.0, 3)] {
            assert!(p.admits(d));
            p.insert(cand(d, s));
        }
        assert!(!p.admits(5.0), "a tie with the worst does not enter");
        assert!(p.admits(4.0));
        p.insert(cand(4.0, 4));
        let held: Vec<u32> = p.sorted().map(|c| c.slot).collect();
        assert_eq!(held, [2, 3, 4]);
        assert_eq!(p.peek().map(|c| c.slot), Some(2));
        assert_eq!(p.next().map(|c| c.slot), Some(2));
        assert_eq!(p.next().map(|c| c.slot), Some(3));
        // A better point arriving behind the cursor is expanded next.
        p.insert(cand(0.5, 9));
        assert_eq!(p.peek().map(|c| c.slot), Some(9));
        assert_eq!(p.next().map(|c| c.slot), Some(9));
        assert_eq!(p.next(), None, "4 fell out when 9 entered");
        assert_eq!(p.sorted().len(), 3);
        p.reset(2);
        assert_eq!(p.sorted().len(), 0);
        assert_eq!(p.next(), None);
    }

    #[test]
    fn equal_distances_keep_their_arrival_order() {
        let mut p = Pool::default();
        p.reset(3);
        for s in [7, 3, 5] {
            p.insert(cand(1.0, s));
        }
        assert!(!p.admits(1.0));
        p.insert(cand(0.5, 9));
        let held: Vec<u32> = p.sorted().map(|c| c.slot).collect();
        assert_eq!(held, [9, 7, 3]);
        let taken: Vec<u32> = std::iter::from_fn(|| p.next().map(|c| c.slot)).collect();
        assert_eq!(taken, [9, 7, 3]);
        let held: Vec<u32> = p.best(3).map(|c| c.slot).collect();
        assert_eq!(held, [9, 3, 7], "ties by slot once ordered");
        let held: Vec<u32> = p.best(2).map(|c| c.slot).collect();
        assert_eq!(
            held,
            [9, 3],
            "a run of ties across the k-th place is ordered whole"
        );
    }

    #[test]
    fn best_sorts_runs_of_equal_distance_by_slot() {
        let mut rng = SplitMix64::new(5);
        let mut p = Pool::default();
        for round in 0..100 {
            p.reset(1 + round % 50);
            for slot in 0..(rng.next_u64() % 80) as u32 {
                // Few distinct distances, slots arriving in no particular order.
                let c = cand(
                    (rng.next_u64() % 6) as f32,
                    slot.wrapping_mul(2_654_435_761),
                );
                if p.admits(c.d) {
                    p.insert(c);
                }
            }
            let held: Vec<f32> = p.sorted().map(|c| c.d).collect();
            let mut want: Vec<Cand> = p.sorted().collect();
            want.sort();
            let k = (rng.next_u64() % (held.len() as u64 + 1)) as usize;
            let got: Vec<Cand> = p.best(k).collect();
            assert_eq!(got, want[..k], "round {round}: the best {k}");
            let got: Vec<Cand> = p.best(held.len()).collect();
            assert_eq!(got, want, "round {round}");
            let after: Vec<f32> = got.iter().map(|c| c.d).collect();
            assert_eq!(
                after, held,
                "round {round}: the same distances in the same places"
            );
        }
    }

    /// A batch merged at once leaves the pool as inserting its candidates one by one behind
    /// `admits` does (the same entries, order, expanded marks and next candidate), whatever
    /// the batch sizes, ties and capacity.
    #[test]
    fn a_batch_is_the_same_as_its_inserts_in_turn() {
        let mut rng = SplitMix64::new(17);
        let (mut one, mut many) = (Pool::default(), Pool::default());
        let mut batch = Vec::new();
        for round in 0..500 {
            let cap = 1 + round % 30;
            one.reset(cap);
            many.reset(cap);
            let mut slot = 0u32;
            for _ in 0..(1 + rng.next_u64() % 40) {
                if rng.next_u64().is_multiple_of(3) {
                    assert_eq!(one.next(), many.next(), "round {round}");
                }
                let bound = many.bound();
                batch.clear();
                for _ in 0..rng.next_u64() % 12 {
                    // Few distinct distances: ties with each other and with the pool.
                    let c = cand((rng.next_u64() % 20) as f32, slot);
                    slot += 1;
                    // The bound only tightens within a batch.
                    assert!(!one.admits(c.d) || c.d < bound, "round {round}");
                    if one.admits(c.d) {
                        one.insert(c);
                    }
                    if c.d < bound {
                        batch.push(c);
                    }
                }
                many.insert_batch(&mut batch);
                let a: Vec<(Cand, bool)> =
                    one.entries.iter().map(|e| (e.cand, e.expanded)).collect();
                let b: Vec<(Cand, bool)> =
                    many.entries.iter().map(|e| (e.cand, e.expanded)).collect();
                assert_eq!(a, b, "round {round}");
                assert_eq!(one.peek(), many.peek(), "round {round}");
            }
        }
    }

    /// Against the two-heap formulation on random streams: the same candidates are expanded
    /// in the same order, and the same best `cap` remain.
    #[test]
    fn matches_the_two_heaps() {
        let mut rng = SplitMix64::new(11);
        let mut p = Pool::default();
        for round in 0..300 {
            let cap = 1 + round % 40;
            p.reset(cap);
            let mut cands: BinaryHeap<Reverse<Cand>> = BinaryHeap::new();
            let mut results: BinaryHeap<Cand> = BinaryHeap::new();
            let mut slot = 0u32;
            for _ in 0..(1 + rng.next_u64() % 200) {
                // Either a new point arrives (on both sides) or the next candidate is taken.
                if rng.next_u64().is_multiple_of(3) {
                    let heap_next = loop {
                        match cands.pop() {
                            Some(Reverse(c)) => {
                                if results.len() >= cap && results.peek().is_some_and(|w| c.d > w.d)
                                {
                                    break None;
                                }
                                if results.iter().any(|r| r == &c) {
                                    break Some(c);
                                }
                            }
                            None => break None,
                        }
                    };
                    assert_eq!(p.next(), heap_next, "round {round}");
                    if heap_next.is_none() {
                        break;
                    }
                } else {
                    // Distinct distances: the pool orders ties by arrival, the heaps by slot.
                    let d = (rng.next_u64() % 1000) as f32 / 10.0 + slot as f32 * 1e-4;
                    let bound = results.peek().map_or(f32::INFINITY, |w| w.d);
                    let heap_admits = results.len() < cap || d < bound;
                    assert_eq!(p.admits(d), heap_admits, "round {round}");
                    if heap_admits {
                        let c = cand(d, slot);
                        p.insert(c);
                        cands.push(Reverse(c));
                        results.push(c);
                        if results.len() > cap {
                            results.pop();
                        }
                    }
                    slot += 1;
                }
            }
            let want: Vec<Cand> = results.into_sorted_vec();
            let got: Vec<Cand> = p.sorted().collect();
            assert_eq!(got, want, "round {round}");
        }
    }
}
