//! The English stopword list: Lucene's classic `EnglishAnalyzer.ENGLISH_STOP_WORDS_SET`
//! (33 words, the list Lucene's `StandardAnalyzer` and `EnglishAnalyzer` use by default, and
//! so Pyserini's BM25 baselines on BEIR).

/// Lucene's English stopwords, sorted (for binary search), lower-case.
pub const ENGLISH: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// True when `word` (already lower-case) is an English stopword.
pub fn is_english(word: &str) -> bool {
    // Every stopword is short and ASCII: skip the search for anything else.
    word.len() <= 5 && ENGLISH.binary_search(&word).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_unique_and_lower_case() {
        assert!(ENGLISH.windows(2).all(|w| w[0] < w[1]));
        assert!(
            ENGLISH
                .iter()
                .all(|w| w.len() <= 5 && *w == w.to_lowercase())
        );
        assert_eq!(ENGLISH.len(), 33);
    }

    #[test]
    fn lookup() {
        for w in ["the", "a", "with", "into"] {
            assert!(is_english(w), "{w}");
        }
        for w in ["The", "cat", "", "thesis", "withhold"] {
            assert!(!is_english(w), "{w}");
        }
    }
}
