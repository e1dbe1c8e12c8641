//! Training pairs for tuning: (query text, positive document id), read from a JSONL file, from
//! a BEIR split, or made from the collection's own text (inverse cloze), and the held-out split;
//! and the pairs phase of a tuning run ([`Plan`]): the pairs resolved against the collection.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::eval::BeirDataset;
use crate::eval::metrics::Qrels;

use super::rng::SplitMix64;
use super::{PairSource, TuneOptions};

/// One training example: a query and the id of a document that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainPair {
    /// The query text.
    pub query: String,
    /// The id of a relevant document in the collection.
    pub positive: String,
    /// The positive's text to train on instead of the stored document's (inverse cloze: the
    /// chunk without the sentence taken out as the query).
    pub positive_text: Option<String>,
}

/// Reads pairs from JSONL: one object per line with `query` and `positive` (a document id;
/// `doc_id`, `pos` and `positive_id` are accepted too). Blank lines are skipped.
pub fn read_pairs_jsonl(path: &Path) -> Result<Vec<TrainPair>> {
    #[derive(Deserialize)]
    struct Raw {
        query: String,
        #[serde(alias = "doc_id", alias = "pos", alias = "positive_id")]
        positive: String,
    }
    let file = std::fs::File::open(path).map_err(|e| {
        Error::InvalidArgument(format!("cannot read pairs {}: {e}", path.display()))
    })?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| {
            Error::InvalidArgument(format!("cannot read pairs {}: {e}", path.display()))
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let raw: Raw = serde_json::from_str(&line).map_err(|e| {
            Error::InvalidArgument(format!(
                "{}:{}: expected {{\"query\": ..., \"positive\": DOC_ID}}: {e}",
                path.display(),
                n + 1
            ))
        })?;
        out.push(TrainPair {
            query: raw.query,
            positive: raw.positive,
            positive_text: None,
        });
    }
    Ok(out)
}

/// Pairs from a BEIR split: every judged (query, document) with a positive grade, in query
/// id order.
pub fn beir_pairs(dataset: &BeirDataset, split: &str) -> Result<Vec<TrainPair>> {
    let qrels = dataset.qrels(split)?;
    let queries = dataset.queries()?;
    let sorted: BTreeMap<_, _> = qrels.iter().collect();
    let mut out = Vec::new();
    for (qid, judged) in sorted {
        let Some(text) = queries.get(qid) else {
            return Err(Error::InvalidArgument(format!(
                "the {split} qrels name query {qid:?}, missing from queries.jsonl"
            )));
        };
        let mut docs: Vec<_> = judged.iter().filter(|(_, g)| **g > 0).collect();
        docs.sort();
        for (doc, _) in docs {
            out.push(TrainPair {
                query: text.clone(),
                positive: doc.clone(),
                positive_text: None,
            });
        }
    }
    Ok(out)
}

/// Inverse-cloze pairs from documents `(id, text)`: one sentence of each document with at
/// least two sentences becomes the query, the rest of the document its positive text.
pub fn inverse_cloze(docs: &[(String, String)], seed: u64) -> Vec<TrainPair> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::new();
    for (id, text) in docs {
        let sentences = split_sentences(text);
        if sentences.len() < 2 {
            continue;
        }
        let pick = rng.below(sentences.len());
        let rest: Vec<&str> = sentences
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != pick)
            .map(|(_, s)| *s)
            .collect();
        out.push(TrainPair {
            query: sentences[pick].to_string(),
            positive: id.clone(),
            positive_text: Some(rest.join(" ")),
        });
    }
    out
}

/// Keyword queries from documents `(id, text)`: for each document, 3 to 6 of its most
/// distinctive words (highest `idf · (1 + ln tf)` among words in at least two and at most a
/// tenth, or five, of the documents; stopwords and numbers excluded), in the order they first
/// occur, make a short query whose positive is the whole document. Such queries look like the
/// subject lines, titles and keyword searches users type, and teach the model to weigh a
/// document's rare, topical words.
pub fn keyword_queries(docs: &[(String, String)], seed: u64) -> Vec<TrainPair> {
    let mut rng = SplitMix64::new(seed);
    let words_of = |text: &str| -> Vec<(String, String)> {
        text.split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-')
            .map(|w| w.trim_matches(|c: char| c == '\'' || c == '-'))
            .filter(|w| w.chars().count() >= 3 && w.chars().any(char::is_alphabetic))
            .map(|w| (w.to_lowercase(), w.to_string()))
            .filter(|(k, _)| !latentdb_text::stopwords::is_english(k))
            .collect()
    };
    let tokenized: Vec<Vec<(String, String)>> = docs.iter().map(|(_, t)| words_of(t)).collect();
    let mut df: HashMap<&str, usize> = HashMap::new();
    for words in &tokenized {
        let distinct: HashSet<&str> = words.iter().map(|(k, _)| k.as_str()).collect();
        for w in distinct {
            *df.entry(w).or_default() += 1;
        }
    }
    let n = docs.len().max(1) as f64;
    let max_df = (docs.len() / 10).max(5);
    let mut out = Vec::new();
    for ((id, _), words) in docs.iter().zip(&tokenized) {
        // (first position, surface form, tf) per distinct word.
        let mut seen: HashMap<&str, (usize, &str, usize)> = HashMap::new();
        for (i, (k, w)) in words.iter().enumerate() {
            seen.entry(k.as_str()).or_insert((i, w.as_str(), 0)).2 += 1;
        }
        let mut scored: Vec<(f64, usize, &str)> = seen
            .iter()
            .filter_map(|(k, &(first, surface, tf))| {
                let d = *df.get(k)?;
                (d >= 2 && d <= max_df).then(|| {
                    (
                        (n / d as f64).ln() * (1.0 + (tf as f64).ln()),
                        first,
                        surface,
                    )
                })
            })
            .collect();
        if scored.len() < 3 {
            continue;
        }
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let take = (3 + rng.below(4)).min(scored.len());
        let mut picked: Vec<(usize, &str)> = scored[..take].iter().map(|s| (s.1, s.2)).collect();
        picked.sort_unstable();
        out.push(TrainPair {
            query: picked.iter().map(|p| p.1).collect::<Vec<_>>().join(" "),
            positive: id.clone(),
            positive_text: None,
        });
    }
    out
}

/// Sentences of at least three words, cut after `.`, `!`, `?` or a line break.
fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '!' | '?' | '\n') {
            let end = i + c.len_utf8();
            let s = text[start..end].trim();
            if s.split_whitespace().count() >= 3 {
                out.push(s);
            }
            start = end;
        }
    }
    let s = text[start..].trim();
    if s.split_whitespace().count() >= 3 {
        out.push(s);
    }
    out
}

/// Splits pairs into (train, held out): a fraction `holdout` of the distinct queries, chosen
/// by `seed`, is held out with all its pairs, so no held-out query is ever trained on.
pub fn split_holdout(
    pairs: Vec<TrainPair>,
    holdout: f64,
    seed: u64,
) -> Result<(Vec<TrainPair>, Vec<TrainPair>)> {
    if !(0.0..1.0).contains(&holdout) {
        return Err(Error::InvalidArgument(format!(
            "--holdout must be in [0, 1), not {holdout}"
        )));
    }
    let mut queries: Vec<&str> = pairs.iter().map(|p| p.query.as_str()).collect();
    queries.sort_unstable();
    queries.dedup();
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = (0..queries.len()).collect();
    rng.shuffle(&mut order);
    let n_held = ((queries.len() as f64) * holdout).round() as usize;
    let held: HashSet<String> = order[..n_held]
        .iter()
        .map(|&i| queries[i].to_string())
        .collect();
    let (eval, train) = pairs.into_iter().partition(|p| held.contains(&p.query));
    Ok((train, eval))
}

/// The pairs phase's result: training and held-out pairs resolved against the collection, the
/// distinct query texts, and the held-out judgments.
pub(super) struct Plan {
    /// Training pairs whose positive is a document of the collection.
    pub train: Vec<TrainPair>,
    /// Held-out pairs.
    pub eval_pairs: usize,
    /// Training pairs dropped because their positive is not in the collection.
    pub unknown_positives: usize,
    /// Distinct query texts (training and held out), by query index.
    pub query_texts: Vec<String>,
    /// The query index of each training pair.
    pub train_q: Vec<usize>,
    /// Held-out judgments, keyed by [`Plan::eval_keys`].
    pub qrels: Qrels,
    /// The distinct held-out query indices, ascending.
    pub eval_queries: Vec<usize>,
    /// The qrels key of each of `eval_queries`.
    pub eval_keys: Vec<String>,
}

impl Plan {
    /// Pairs from `source` over the documents `ids` (with `texts`), split into training and
    /// held-out pairs (`opts.eval_pairs` or a holdout of `opts.holdout`).
    pub(super) fn build(
        ids: &[String],
        texts: &[&str],
        by_id: &HashMap<&str, usize>,
        source: PairSource,
        opts: &TuneOptions,
    ) -> Result<Plan> {
        let keywords = || {
            let owned: Vec<(String, String)> = ids
                .iter()
                .zip(texts)
                .map(|(i, t)| (i.clone(), t.to_string()))
                .collect();
            keyword_queries(&owned, opts.seed)
        };
        let (pairs, augment) = match source {
            PairSource::Pairs(p) => (p, opts.keyword_pairs),
            PairSource::SelfSupervised => (keywords(), false),
        };
        let (mut train, eval) = match &opts.eval_pairs {
            Some(e) => {
                let held: HashSet<&str> = e.iter().map(|p| p.query.as_str()).collect();
                let train: Vec<TrainPair> = pairs
                    .into_iter()
                    .filter(|p| !held.contains(p.query.as_str()))
                    .collect();
                (train, e.clone())
            }
            None => split_holdout(pairs, opts.holdout, opts.seed)?,
        };
        if augment {
            // Added after the split: synthetic queries are never held out.
            let held: HashSet<&str> = eval.iter().map(|p| p.query.as_str()).collect();
            train.extend(
                keywords()
                    .into_iter()
                    .filter(|p| !held.contains(p.query.as_str())),
            );
        }
        let before_filter = train.len();
        let train: Vec<TrainPair> = train
            .into_iter()
            .filter(|p| by_id.contains_key(p.positive.as_str()))
            .collect();
        let unknown_positives = before_filter - train.len();
        if train.is_empty() {
            return Err(Error::InvalidArgument(
                "no training pair has a positive that is a document of the collection".into(),
            ));
        }
        if eval.is_empty() {
            return Err(Error::InvalidArgument(
                "nothing is held out for evaluation (raise --holdout)".into(),
            ));
        }
        let mut query_texts: Vec<String> = Vec::new();
        let mut query_index: HashMap<String, usize> = HashMap::new();
        let mut intern = |q: &str| -> usize {
            if let Some(&i) = query_index.get(q) {
                return i;
            }
            query_texts.push(q.to_string());
            query_index.insert(q.to_string(), query_texts.len() - 1);
            query_texts.len() - 1
        };
        let train_q: Vec<usize> = train.iter().map(|p| intern(&p.query)).collect();
        let eval_q: Vec<usize> = eval.iter().map(|p| intern(&p.query)).collect();
        let key = |q: usize| format!("\u{1}q{q}");
        let mut qrels = Qrels::new();
        for (p, &q) in eval.iter().zip(&eval_q) {
            qrels
                .entry(key(q))
                .or_default()
                .insert(p.positive.clone(), 1);
        }
        let mut eval_queries = eval_q;
        eval_queries.sort_unstable();
        eval_queries.dedup();
        let eval_keys = eval_queries.iter().map(|&q| key(q)).collect();
        Ok(Plan {
            train,
            eval_pairs: eval.len(),
            unknown_positives,
            query_texts,
            train_q,
            qrels,
            eval_queries,
            eval_keys,
        })
    }

    /// The training pairs with a positive text of their own (inverse cloze): (pair index,
    /// text), in pair order.
    pub(super) fn overrides(&self) -> Vec<(usize, &str)> {
        self.train
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.positive_text.as_deref().map(|t| (i, t)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(q: &str, d: &str) -> TrainPair {
        TrainPair {
            query: q.into(),
            positive: d.into(),
            positive_text: None,
        }
    }

    #[test]
    fn holdout_keeps_queries_apart() {
        let pairs: Vec<TrainPair> = (0..50)
            .flat_map(|i| vec![pair(&format!("q{i}"), "a"), pair(&format!("q{i}"), "b")])
            .collect();
        let (train, eval) = split_holdout(pairs, 0.2, 3).unwrap();
        assert_eq!(eval.len(), 20);
        assert_eq!(train.len(), 80);
        let held: HashSet<&str> = eval.iter().map(|p| p.query.as_str()).collect();
        assert!(train.iter().all(|p| !held.contains(p.query.as_str())));
        assert!(split_holdout(Vec::new(), 1.5, 0).is_err());
    }

    #[test]
    fn inverse_cloze_takes_a_sentence_out() {
        let docs = vec![(
            "d1".to_string(),
            "The cat sat on the mat. It was a sunny day outside. Birds were singing loudly."
                .to_string(),
        )];
        let pairs = inverse_cloze(&docs, 1);
        assert_eq!(pairs.len(), 1);
        let p = &pairs[0];
        let rest = p.positive_text.as_deref().unwrap();
        assert!(!rest.contains(&p.query));
        assert_eq!(p.positive, "d1");
    }

    #[test]
    fn keyword_queries_pick_a_documents_distinctive_words_in_order() {
        // 30 documents share "common"; "quasar" and "nebula" appear in exactly two, "zebra"
        // and "yak" in exactly three, "unique" in one (too rare to be taken).
        let mut docs: Vec<(String, String)> = (0..30)
            .map(|i| {
                (
                    format!("d{i}"),
                    format!("common filler{} words here", i % 3),
                )
            })
            .collect();
        docs[0].1 = "The quasar and the nebula near a zebra, a yak and a unique common star".into();
        docs[1].1 = "quasar nebula common".into();
        docs[2].1 = "zebra yak common".into();
        docs[3].1 = "zebra yak common".into();
        docs[4].1 = "1234 5678 ab".into();
        let pairs = keyword_queries(&docs, 7);
        let first = pairs
            .iter()
            .find(|p| p.positive == "d0")
            .expect("d0 has a query");
        let words: Vec<&str> = first.query.split(' ').collect();
        assert!((3..=4).contains(&words.len()), "{words:?}");
        // Rarest first, kept in the document's order.
        assert_eq!(&words[..2], ["quasar", "nebula"], "{words:?}");
        assert!(!first.query.contains("unique") && !first.query.contains("common"));
        assert!(first.positive_text.is_none());
        // Too few distinctive words: no query.
        assert!(pairs.iter().all(|p| p.positive != "d4"));
        assert_eq!(pairs, keyword_queries(&docs, 7), "seeded");
    }

    #[test]
    fn keyword_pairs_join_the_training_side_only() {
        let ids: Vec<String> = (0..20).map(|i| format!("d{i}")).collect();
        let texts: Vec<String> = (0..20)
            .map(|i| format!("alpha{} beta{} gamma{} shared words", i / 2, i / 2, i / 2))
            .collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let by_id: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let labelled: Vec<TrainPair> = (0..10)
            .map(|i| pair(&format!("q{i}"), &format!("d{i}")))
            .collect();
        let opts = TuneOptions {
            eval_pairs: Some(vec![pair("held", "d0")]),
            ..TuneOptions::default()
        };
        let plain = Plan::build(
            &ids,
            &texts,
            &by_id,
            PairSource::Pairs(labelled.clone()),
            &opts,
        )
        .unwrap();
        assert_eq!(plain.train.len(), 10);
        let opts = TuneOptions {
            keyword_pairs: true,
            ..opts
        };
        let plan = Plan::build(&ids, &texts, &by_id, PairSource::Pairs(labelled), &opts).unwrap();
        // Every document pairs with its own keywords (each word is in exactly two documents).
        assert_eq!(plan.train.len(), 30);
        assert!(
            plan.train[10..]
                .iter()
                .all(|p| p.query.starts_with("alpha"))
        );
        assert_eq!((plan.eval_pairs, plan.eval_queries.len()), (1, 1));
    }

    #[test]
    fn jsonl_pairs_are_read_and_bad_lines_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pairs.jsonl");
        std::fs::write(&p, "{\"query\": \"q\", \"positive\": \"d\"}\n\n").unwrap();
        assert_eq!(read_pairs_jsonl(&p).unwrap(), vec![pair("q", "d")]);
        std::fs::write(&p, "{\"query\": \"q\"}\n").unwrap();
        assert!(read_pairs_jsonl(&p).is_err());
    }
}
