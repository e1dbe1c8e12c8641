//! The BM25 inverted index: a term dictionary, per-term postings sorted by slot, per-slot
//! document lengths, and exact collection statistics under inserts, replaces and removes.
//!
//! Layout and costs:
//!
//! - slots: each live document has a dense internal slot; `slot_of` maps its point to it and
//!   the per-slot tables (point, length, term list) are dense `Vec`s. A new document always
//!   takes the next slot, so postings stay sorted by appending. Once more than half of the
//!   slots (and more than [`COMPACT_MIN_SLOTS`]) belong to removed documents, the slots are
//!   renumbered densely in order (postings stay sorted), so memory and the per-thread score
//!   buffer follow the live documents, not the largest point ever inserted.
//! - postings: per term a `Vec<Posting>` sorted by slot. Removing a document marks its
//!   postings dead in place (`tf = 0`, found by binary search) and decrements the exact
//!   document frequency; a term's postings are also compacted on their own once more than
//!   half of them are dead. Removal is amortised O(terms of the document × log df); searches
//!   skip dead entries.
//! - scores accumulate in a dense per-thread buffer reused across queries; top-k by a
//!   bounded heap; the filter is asked only about points that would enter the top k.
//!
//! Term ids are internal: a term whose last document goes away is swept from the dictionary
//! (in batches) and its id reused. Scores never depend on term ids or slots: query terms are
//! summed in the order of their first occurrence in the query and ties broken by point, so a
//! reloaded index (whose ids and slots are renumbered) scores bit for bit as the one
//! persisted.

use std::collections::HashMap;

use crate::analyzer::{Analyzer, AnalyzerConfig};
use crate::error::Result;
use crate::term_key::TermKey;

/// The statistics BM25 uses, exact for the live documents.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LexicalStats {
    /// Live documents (points inserted with a text and not removed since).
    pub docs: usize,
    /// Distinct terms in the live documents.
    pub terms: usize,
    /// Terms (tokens) in the live documents, repeats included.
    pub tokens: u64,
    /// Average document length in tokens (`tokens / docs`; 0 when empty).
    pub avg_len: f64,
}

/// One entry of a term's postings. `tf == 0` marks an entry dead (its document was removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Posting {
    pub(crate) slot: u32,
    pub(crate) tf: u32,
}

/// A term: its exact document frequency and its postings (sorted by slot, some dead).
#[derive(Debug, Default)]
pub(crate) struct Term {
    pub(crate) df: u32,
    pub(crate) dead: u32,
    pub(crate) postings: Vec<Posting>,
}

/// A document's terms: (term id, tf), sorted by term id.
pub(crate) type TermList = Box<[(u32, u32)]>;

/// A term's postings are compacted once more than this many and more than half are dead.
const COMPACT_MIN_DEAD: u32 = 8;
/// The slots are renumbered once more than this many and more than half are dead.
pub const COMPACT_MIN_SLOTS: usize = 1024;
/// The dictionary is swept of terms with no documents once more than this many and more
/// than half of its terms have none.
const SWEEP_MIN_UNUSED: usize = 1024;

/// A BM25 index over the texts of points. Mutations take `&mut self`, searches `&self`
/// (wrap it in a lock to share it).
#[derive(Debug)]
pub struct LexicalIndex {
    pub(crate) analyzer: Analyzer,
    /// Term text -> term id (index into `terms`); includes unused terms (df 0) until swept.
    pub(crate) dict: HashMap<TermKey, u32>,
    pub(crate) terms: Vec<Term>,
    /// Ids of swept terms, for reuse.
    pub(crate) free_terms: Vec<u32>,
    /// Terms in `dict` with df 0.
    pub(crate) unused_terms: usize,
    /// Point -> slot of its live document.
    pub(crate) slot_of: HashMap<u32, u32>,
    /// Slot -> point (stale for dead slots).
    pub(crate) points: Vec<u32>,
    /// Slot -> document length in tokens (0 for dead slots).
    pub(crate) lens: Vec<u32>,
    /// Slot -> the document's terms; `None` for dead slots.
    pub(crate) doc_terms: Vec<Option<TermList>>,
    /// Sum of the live documents' lengths.
    pub(crate) tokens: u64,
    /// Reused buffer of the term ids of the text being inserted.
    scratch: Vec<u32>,
}

impl LexicalIndex {
    /// An empty index analysing texts with `config`; an unknown stemmer language is an
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    pub fn new(config: AnalyzerConfig) -> Result<Self> {
        Ok(Self::with_analyzer(Analyzer::new(&config)?))
    }

    pub(crate) fn with_analyzer(analyzer: Analyzer) -> Self {
        Self {
            analyzer,
            dict: HashMap::new(),
            terms: Vec::new(),
            free_terms: Vec::new(),
            unused_terms: 0,
            slot_of: HashMap::new(),
            points: Vec::new(),
            lens: Vec::new(),
            doc_terms: Vec::new(),
            tokens: 0,
            scratch: Vec::new(),
        }
    }

    /// The analyzer configuration (documents and queries alike).
    pub fn config(&self) -> &AnalyzerConfig {
        self.analyzer.config()
    }

    /// The analyzer.
    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    /// Indexes `text` as the document of `point`, replacing the point's document if it has
    /// one. A text without terms is still a document (of length 0).
    pub fn insert(&mut self, point: u32, text: &str) {
        self.remove(point);
        let Self {
            analyzer,
            dict,
            terms,
            free_terms,
            unused_terms,
            scratch,
            ..
        } = self;
        scratch.clear();
        analyzer.for_each_token(text, |token| {
            let id = match dict.get(token) {
                Some(&id) => id,
                None => {
                    let id = match free_terms.pop() {
                        Some(id) => id,
                        None => {
                            let Ok(id) = u32::try_from(terms.len()) else {
                                return; // 4 billion distinct terms: drop the rest
                            };
                            terms.push(Term::default());
                            id
                        }
                    };
                    dict.insert(token.into(), id);
                    *unused_terms += 1;
                    id
                }
            };
            scratch.push(id);
        });
        let len = u32::try_from(scratch.len()).unwrap_or(u32::MAX);
        scratch.sort_unstable();
        let distinct = 1 + scratch.windows(2).filter(|w| w[0] != w[1]).count();
        let mut list: Vec<(u32, u32)> = Vec::with_capacity(distinct);
        for run in scratch.chunk_by(|a, b| a == b) {
            list.push((run[0], u32::try_from(run.len()).unwrap_or(u32::MAX)));
        }
        let slot = self.points.len() as u32;
        for &(t, tf) in &list {
            let term = &mut terms[t as usize];
            if term.df == 0 {
                *unused_terms -= 1;
            }
            term.df += 1;
            // The new slot is past every other: appending keeps the postings sorted.
            term.postings.push(Posting { slot, tf });
        }
        self.points.push(point);
        self.lens.push(len);
        self.doc_terms.push(Some(list.into_boxed_slice()));
        self.slot_of.insert(point, slot);
        self.tokens += u64::from(len);
    }

    /// Removes the document of `point`; false if it has none.
    pub fn remove(&mut self, point: u32) -> bool {
        let Some(slot) = self.slot_of.remove(&point) else {
            return false;
        };
        let list = self.doc_terms[slot as usize].take().unwrap_or_default();
        for &(t, _) in list.iter() {
            let term = &mut self.terms[t as usize];
            if let Ok(i) = term.postings.binary_search_by_key(&slot, |p| p.slot) {
                term.postings[i].tf = 0;
                term.dead += 1;
            }
            term.df -= 1;
            if term.df == 0 {
                term.postings = Vec::new();
                term.dead = 0;
                self.unused_terms += 1;
            } else if term.dead > COMPACT_MIN_DEAD && term.dead > term.df {
                term.postings.retain(|p| p.tf > 0);
                term.dead = 0;
            }
        }
        self.tokens -= u64::from(self.lens[slot as usize]);
        self.lens[slot as usize] = 0;
        if self.unused_terms > SWEEP_MIN_UNUSED && self.unused_terms * 2 > self.dict.len() {
            self.sweep();
        }
        let dead_slots = self.points.len() - self.slot_of.len();
        if dead_slots > COMPACT_MIN_SLOTS && dead_slots > self.slot_of.len() {
            self.compact_slots();
        }
        true
    }

    /// Renumbers the slots of the live documents densely, in order, dropping dead postings.
    fn compact_slots(&mut self) {
        let mut new_slot = vec![u32::MAX; self.points.len()];
        let mut next = 0u32;
        let mut points = Vec::with_capacity(self.slot_of.len());
        let mut lens = Vec::with_capacity(self.slot_of.len());
        let mut doc_terms = Vec::with_capacity(self.slot_of.len());
        for (old, list) in self.doc_terms.iter_mut().enumerate() {
            if let Some(list) = list.take() {
                new_slot[old] = next;
                next += 1;
                points.push(self.points[old]);
                lens.push(self.lens[old]);
                doc_terms.push(Some(list));
            }
        }
        for term in &mut self.terms {
            term.postings.retain_mut(|p| {
                p.slot = new_slot[p.slot as usize];
                p.tf > 0
            });
            term.dead = 0;
        }
        for slot in self.slot_of.values_mut() {
            *slot = new_slot[*slot as usize];
        }
        self.points = points;
        self.lens = lens;
        self.doc_terms = doc_terms;
    }

    /// Drops terms without documents from the dictionary, freeing their ids.
    fn sweep(&mut self) {
        let Self {
            dict,
            terms,
            free_terms,
            ..
        } = self;
        dict.retain(|_, &mut id| {
            let keep = terms[id as usize].df > 0;
            if !keep {
                free_terms.push(id);
            }
            keep
        });
        self.unused_terms = 0;
    }

    /// True when `point` has a document.
    pub fn contains(&self, point: u32) -> bool {
        self.slot_of.contains_key(&point)
    }

    /// The number of documents.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    /// True when the index holds no document.
    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// The points with a document, ascending.
    pub fn points(&self) -> Vec<u32> {
        let mut points: Vec<u32> = self.slot_of.keys().copied().collect();
        points.sort_unstable();
        points
    }

    /// The collection statistics BM25 uses.
    pub fn stats(&self) -> LexicalStats {
        let docs = self.slot_of.len();
        LexicalStats {
            docs,
            terms: self.dict.len() - self.unused_terms,
            tokens: self.tokens,
            avg_len: if docs == 0 {
                0.0
            } else {
                self.tokens as f64 / docs as f64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyzer::Stopwords;
    use crate::params::Bm25Params;

    fn index(docs: &[(u32, &str)]) -> LexicalIndex {
        let mut ix = LexicalIndex::new(AnalyzerConfig::default()).unwrap();
        for &(p, t) in docs {
            ix.insert(p, t);
        }
        ix
    }

    #[test]
    fn the_index_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<LexicalIndex>();
    }

    #[test]
    fn statistics_are_exact_under_replace_and_remove() {
        let mut ix = index(&[(0, "a b c"), (1, "b c d e"), (2, "")]);
        // "a" is a stopword: doc 0 has 2 tokens.
        assert_eq!(
            ix.stats(),
            LexicalStats {
                docs: 3,
                terms: 4,
                tokens: 6,
                avg_len: 2.0
            }
        );
        ix.insert(1, "zebra");
        assert_eq!(ix.stats().tokens, 3);
        assert_eq!(ix.stats().terms, 3); // b, c, zebra
        assert!(ix.remove(0));
        assert!(!ix.remove(0));
        assert!(!ix.remove(77));
        let s = ix.stats();
        assert_eq!((s.docs, s.terms, s.tokens), (2, 1, 1));
        assert_eq!(ix.points(), [1, 2]);
        assert!(ix.contains(2) && !ix.contains(0));
        assert!(ix.search("b", 10, Bm25Params::default(), None).is_empty());
        assert!(ix.remove(1) && ix.remove(2));
        assert!(ix.is_empty());
        assert_eq!(ix.stats().avg_len, 0.0);
        assert!(
            ix.search("zebra", 10, Bm25Params::default(), None)
                .is_empty()
        );
    }

    #[test]
    fn removal_compacts_and_ids_are_reused() {
        let mut ix = LexicalIndex::new(AnalyzerConfig {
            stopwords: Stopwords::None,
            ..AnalyzerConfig::default()
        })
        .unwrap();
        for p in 0..100u32 {
            ix.insert(p, &format!("common unique{p}"));
        }
        for p in (0..100u32).filter(|p| p % 4 != 0) {
            assert!(ix.remove(p));
        }
        let id = ix.dict["common"] as usize;
        assert_eq!(ix.terms[id].df, 25);
        assert!(ix.terms[id].postings.len() <= 2 * 25 + 1, "compacted");
        let hits = ix.search("common", 100, Bm25Params::default(), None);
        assert_eq!(hits.len(), 25);
        assert!(hits.iter().all(|h| h.point % 4 == 0));
        // Churn through many unique terms: the dictionary stays bounded.
        for round in 0..50u32 {
            for p in 0..100u32 {
                ix.insert(p, &format!("w{round}x{p} v{round}y{p}"));
            }
        }
        assert_eq!(ix.stats().terms, 200);
        assert!(
            ix.dict.len() <= 200 + 2 * SWEEP_MIN_UNUSED + 200,
            "{}",
            ix.dict.len()
        );
        assert!(
            ix.terms.len() <= 200 + 2 * SWEEP_MIN_UNUSED + 400,
            "{}",
            ix.terms.len()
        );
    }

    #[test]
    fn any_point_order_keeps_postings_sorted_and_memory_follows_live_docs() {
        let mut ix = index(&[
            (10, "x y"),
            (2, "x"),
            (u32::MAX, "x z"),
            (2, "x x"),
            (0, "x"),
        ]);
        let id = ix.dict["x"] as usize;
        let slots: Vec<u32> = ix.terms[id].postings.iter().map(|p| p.slot).collect();
        assert!(slots.windows(2).all(|w| w[0] < w[1]), "{slots:?}");
        assert_eq!(ix.terms[id].df, 4);
        let hits = ix.search("x", 10, Bm25Params::default(), None);
        let mut points: Vec<u32> = hits.iter().map(|h| h.point).collect();
        points.sort_unstable();
        assert_eq!(points, [0, 2, 10, u32::MAX]);
        assert!(ix.lens.len() <= 5, "no table sized by the largest point");
        ix.remove(u32::MAX);
        assert!(!ix.contains(u32::MAX));
        assert_eq!(ix.points(), [0, 2, 10]);
    }

    #[test]
    fn slot_compaction_keeps_scores_exact() {
        let mut ix = LexicalIndex::new(AnalyzerConfig::default()).unwrap();
        let text = |p: u32| format!("alpha{} beta{} gamma common", p % 7, p % 13);
        for p in 0..5000u32 {
            ix.insert(p, &text(p));
        }
        // Replace and remove until most slots are dead: compaction must have run.
        for p in 0..5000u32 {
            match p % 5 {
                0 => ix.insert(p, &text(p + 1)),
                1 => {}
                _ => {
                    ix.remove(p);
                }
            }
        }
        assert!(
            ix.points.len() < 2 * ix.len() + COMPACT_MIN_SLOTS + 2,
            "{}",
            ix.points.len()
        );
        let mut fresh = LexicalIndex::new(AnalyzerConfig::default()).unwrap();
        for p in ix.points() {
            fresh.insert(p, &text(if p % 5 == 0 { p + 1 } else { p }));
        }
        assert_eq!(ix.stats(), fresh.stats());
        for q in ["alpha3 beta4", "common", "gamma alpha0 beta12 nothing"] {
            assert_eq!(
                ix.search(q, 50, Bm25Params::default(), None),
                fresh.search(q, 50, Bm25Params::default(), None),
                "{q}"
            );
        }
        for term in &ix.terms {
            assert!(term.postings.windows(2).all(|w| w[0].slot < w[1].slot));
        }
    }
}
