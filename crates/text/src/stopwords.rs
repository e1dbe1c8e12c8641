//! The English stopword list: Lucene's classic `EnglishAnalyzer.ENGLISH_STOP_WORDS_SET`
//! (33 words, the list Lucene's `StandardAnalyzer` and `EnglishAnalyzer` use by default, and
//! so Pyserini's BM25 baselines on BEIR).

/// Lucene's English stopwords, sorted (for binary search), lower-case.
pub const ENGLISH: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// Longest stopword, in bytes.
const MAX_LEN: usize = 5;

/// A word of at most [`MAX_LEN`] ASCII bytes packed into an integer, lower-cased: its bytes
/// little-endian, its length in the top byte (so the packing is one to one).
const fn key(word: &[u8]) -> u64 {
    let mut k = (word.len() as u64) << 56;
    let mut i = 0;
    while i < word.len() {
        k |= (word[i].to_ascii_lowercase() as u64) << (8 * i);
        i += 1;
    }
    k
}

/// [`ENGLISH`] as sorted keys, for a binary search without string comparisons.
const KEYS: [u64; ENGLISH.len()] = {
    let mut keys = [0u64; ENGLISH.len()];
    let mut i = 0;
    while i < ENGLISH.len() {
        keys[i] = key(ENGLISH[i].as_bytes());
        i += 1;
    }
    // Insertion sort (const context).
    let mut i = 1;
    while i < keys.len() {
        let mut j = i;
        while j > 0 && keys[j - 1] > keys[j] {
            let t = keys[j];
            keys[j] = keys[j - 1];
            keys[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    keys
};

/// True when `word` is an English stopword, ignoring ASCII case.
pub fn is_english(word: &str) -> bool {
    let bytes = word.as_bytes();
    // Every stopword is short and ASCII: skip the search for anything else.
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && word.is_ascii()
        && KEYS.binary_search(&key(bytes)).is_ok()
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
        for w in ["The", "WITH", "iNTo"] {
            assert!(is_english(w), "{w}");
        }
        for w in ["cat", "", "thesis", "withhold", "th", "é", "a\0"] {
            assert!(!is_english(w), "{w}");
        }
    }
}
