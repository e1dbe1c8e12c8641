//! Random sequences of inserts, replaces and removes: the index always equals one built
//! fresh from the surviving documents (statistics and search results, bit for bit), and
//! survives a persist + load unchanged.

use std::collections::BTreeMap;

use latentdb_text::{AnalyzerConfig, Bm25Params, LexicalIndex};
use proptest::prelude::*;

const WORDS: &[&str] = &[
    "apple", "banana", "cherry", "the", "and", "Apple", "date", "elder", "fig", "grape", "x",
];

fn text_strategy() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(WORDS), 0..12).prop_map(|w| w.join(" "))
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u32, String),
    Remove(u32),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u32..40, text_strategy()).prop_map(|(p, t)| Op::Insert(p, t)),
        1 => (0u32..40).prop_map(Op::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn index_equals_a_fresh_build(ops in proptest::collection::vec(op_strategy(), 1..200)) {
        let config = AnalyzerConfig::default();
        let mut ix = LexicalIndex::new(config.clone()).unwrap();
        let mut model: BTreeMap<u32, String> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(p, t) => {
                    ix.insert(p, &t);
                    model.insert(p, t);
                }
                Op::Remove(p) => {
                    prop_assert_eq!(ix.remove(p), model.remove(&p).is_some());
                }
            }
        }
        let mut fresh = LexicalIndex::new(config).unwrap();
        for (&p, t) in &model {
            fresh.insert(p, t);
        }
        prop_assert_eq!(ix.stats(), fresh.stats());
        prop_assert_eq!(ix.points(), model.keys().copied().collect::<Vec<_>>());
        let dir = tempfile::tempdir().unwrap();
        ix.persist(dir.path(), 1).unwrap();
        let (loaded, _) = LexicalIndex::load(dir.path()).unwrap().unwrap();
        let params = Bm25Params::default();
        for q in ["apple", "banana cherry", "fig fig x", "the", "date elder grape apple"] {
            let want = fresh.search(q, 7, params, None);
            prop_assert_eq!(&ix.search(q, 7, params, None), &want);
            prop_assert_eq!(&loaded.search(q, 7, params, None), &want);
            let points: Vec<u32> = (0..40).collect();
            prop_assert_eq!(
                ix.score_points(q, params, &points),
                fresh.score_points(q, params, &points)
            );
        }
    }
}
