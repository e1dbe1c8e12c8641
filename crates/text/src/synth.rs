//! Synthetic texts for benchmarks and tests: words drawn from a Zipf distribution over a
//! made-up vocabulary (no stopwords), from a seeded generator, so runs are repeatable.

/// A deterministic generator of Zipf-distributed texts.
#[derive(Debug, Clone)]
pub struct ZipfText {
    words: Vec<String>,
    cdf: Vec<f64>,
    state: u64,
}

/// The `rank`-th made-up word: `q` followed by `rank` in base 26 (letters), so every word is
/// distinct, lower-case and no English stopword.
pub fn word(rank: usize) -> String {
    let mut s = String::from("q");
    let mut r = rank;
    loop {
        s.push(char::from(b'a' + (r % 26) as u8));
        r /= 26;
        if r == 0 {
            return s;
        }
    }
}

impl ZipfText {
    /// A generator over `vocab` words (at least 1) where the word of rank `r` (from 1) has
    /// probability proportional to `r^-exponent`.
    pub fn new(vocab: usize, exponent: f64, seed: u64) -> Self {
        let vocab = vocab.max(1);
        let mut cdf = Vec::with_capacity(vocab);
        let mut total = 0.0;
        for r in 1..=vocab {
            total += (r as f64).powf(-exponent);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self {
            words: (0..vocab).map(word).collect(),
            cdf,
            state: seed,
        }
    }

    /// The next pseudo-random number (SplitMix64).
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// One word drawn from the distribution.
    pub fn sample(&mut self) -> &str {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let i = self
            .cdf
            .partition_point(|&c| c < u)
            .min(self.words.len() - 1);
        &self.words[i]
    }

    /// A text of `n` words separated by spaces.
    pub fn text(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n * 6);
        for i in 0..n {
            if i > 0 {
                s.push(' ');
            }
            let w = self.sample().to_owned();
            s.push_str(&w);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_distinct_and_texts_repeatable() {
        let words: std::collections::HashSet<String> = (0..10_000).map(word).collect();
        assert_eq!(words.len(), 10_000);
        let a = ZipfText::new(1000, 1.0, 7).text(50);
        let b = ZipfText::new(1000, 1.0, 7).text(50);
        assert_eq!(a, b);
        assert_eq!(a.split(' ').count(), 50);
        // Rank 1 is the most frequent word.
        let mut z = ZipfText::new(1000, 1.0, 1);
        let text = z.text(10_000);
        let top = text.split(' ').filter(|w| *w == word(0)).count();
        let tenth = text.split(' ').filter(|w| *w == word(9)).count();
        assert!(top > 3 * tenth, "{top} {tenth}");
    }
}
