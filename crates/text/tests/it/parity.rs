//! LexicalIndex against the reference BM25 on the real dataset: top-10 scores, exact scores
//! of given points, after removing 10% of the documents and after replacing some.

use latentdb_text::{AnalyzerConfig, Bm25Params, LexicalIndex};

use crate::common::{Reference, Rng, build, close, dataset};

const QUERIES: usize = 100;

/// Checks the index's top 10 against the reference's for the first 100 queries, and that
/// `score_points` gives the reference score of every document in the reference's top 10.
fn check(
    ix: &LexicalIndex,
    reference: &Reference,
    queries: &[(String, String)],
    params: Bm25Params,
) {
    let (k1, b) = (f64::from(params.k1), f64::from(params.b));
    let mut nonempty = 0;
    for (qid, query) in queries.iter().take(QUERIES) {
        let want = reference.top(query, 10, k1, b);
        let got = ix.search(query, 10, params, None);
        assert_eq!(got.len(), want.len(), "{qid} {query:?}");
        nonempty += usize::from(!want.is_empty());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                close(f64::from(g.score), w.1),
                "{qid} rank {i}: index {} {}, reference {} {}",
                g.point,
                g.score,
                w.0,
                w.1
            );
            // The index's point at this rank has the reference score too (ties may reorder
            // points whose scores agree within the tolerance).
            let r = reference.score(query, g.point, k1, b);
            assert!(close(f64::from(g.score), r), "{qid} point {}", g.point);
        }
        let points: Vec<u32> = want.iter().map(|w| w.0).chain([u32::MAX - 1]).collect();
        let scores = ix.score_points(query, params, &points);
        for (s, w) in scores.iter().zip(&want) {
            assert!(
                close(f64::from(*s), w.1),
                "{qid} score_points {} {s} {}",
                w.0,
                w.1
            );
        }
        assert_eq!(*scores.last().unwrap(), 0.0);
    }
    assert!(
        nonempty > QUERIES * 9 / 10,
        "only {nonempty} queries match anything"
    );
}

fn corpus(docs: &[String]) -> Vec<(u32, &str)> {
    docs.iter()
        .enumerate()
        .map(|(i, t)| (i as u32, t.as_str()))
        .collect()
}

#[test]
fn matches_the_reference_on_the_dataset() {
    let data = dataset();
    assert_eq!(data.docs.len(), 1903);
    let config = AnalyzerConfig::default();
    let docs = corpus(&data.docs);
    let ix = build(&config, &docs);
    let reference = Reference::new(&config, &docs);
    check(&ix, &reference, &data.queries, Bm25Params::default());
    check(
        &ix,
        &reference,
        &data.queries,
        Bm25Params { k1: 0.9, b: 0.4 },
    );
    let stemmed = AnalyzerConfig {
        stemmer: Some("english".into()),
        ..AnalyzerConfig::default()
    };
    check(
        &build(&stemmed, &docs),
        &Reference::new(&stemmed, &docs),
        &data.queries,
        Bm25Params::default(),
    );
}

#[test]
fn removals_keep_statistics_exact() {
    let data = dataset();
    let config = AnalyzerConfig::default();
    let docs = corpus(&data.docs);
    let mut ix = build(&config, &docs);
    let mut rng = Rng(42);
    let mut removed = vec![false; docs.len()];
    let mut count = 0;
    while count < docs.len() / 10 {
        let i = rng.below(docs.len());
        if !removed[i] {
            removed[i] = true;
            count += 1;
            assert!(ix.remove(i as u32));
        }
    }
    let kept: Vec<(u32, &str)> = docs
        .iter()
        .copied()
        .filter(|&(p, _)| !removed[p as usize])
        .collect();
    let fresh = build(&config, &kept);
    assert_eq!(ix.stats(), fresh.stats());
    assert_eq!(ix.points(), fresh.points());
    let reference = Reference::new(&config, &kept);
    check(&ix, &reference, &data.queries, Bm25Params::default());
    let params = Bm25Params::default();
    for (qid, query) in data.queries.iter().take(QUERIES) {
        let a = ix.search(query, 10, params, None);
        let b = fresh.search(query, 10, params, None);
        assert_eq!(a.len(), b.len(), "{qid}");
        for (x, y) in a.iter().zip(&b) {
            assert!(
                close(f64::from(x.score), f64::from(y.score)),
                "{qid}: {x:?} {y:?}"
            );
        }
        // No removed document is ever returned.
        assert!(a.iter().all(|h| !removed[h.point as usize]));
    }
}

#[test]
fn replacing_a_document_updates_its_terms_and_the_statistics() {
    let data = dataset();
    let config = AnalyzerConfig::default();
    let mut docs = corpus(&data.docs);
    let mut ix = build(&config, &docs);
    // Replace every 7th document by the text of another one, and one by an empty text.
    let replacement: Vec<(u32, &str)> = docs
        .iter()
        .step_by(7)
        .map(|&(p, _)| {
            (
                p,
                data.docs[(p as usize * 31 + 5) % data.docs.len()].as_str(),
            )
        })
        .collect();
    for &(p, t) in &replacement {
        ix.insert(p, t);
        docs[p as usize].1 = t;
    }
    ix.insert(3, "");
    docs[3].1 = "";
    let fresh = build(&config, &docs);
    assert_eq!(ix.stats(), fresh.stats());
    assert_eq!(ix.len(), data.docs.len());
    let reference = Reference::new(&config, &docs);
    check(&ix, &reference, &data.queries, Bm25Params::default());
}

#[test]
fn filtered_search_is_the_top_k_of_the_accepted_points() {
    let data = dataset();
    let config = AnalyzerConfig::default();
    let docs = corpus(&data.docs);
    let ix = build(&config, &docs);
    let params = Bm25Params::default();
    let even = |p: u32| p.is_multiple_of(2);
    for (qid, query) in data.queries.iter().take(QUERIES) {
        let all = ix.search(query, usize::MAX, params, None);
        let want: Vec<_> = all.into_iter().filter(|h| even(h.point)).take(5).collect();
        assert_eq!(ix.search(query, 5, params, Some(&even)), want, "{qid}");
    }
}
