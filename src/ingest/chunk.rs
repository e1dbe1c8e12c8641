//! Splitting long texts into overlapping chunks of at most N tokens of the model's own
//! tokenizer, cut at paragraph boundaries where possible, else at sentence boundaries, else
//! between words.
//!
//! The chunker is generic over a token counter (`&str -> token count`, special tokens not
//! included), so it can be driven by any model's tokenizer and tested with a word counter.
//! Each chunk carries its index and its offsets into the source, both in bytes (for slicing
//! in Rust) and in characters (Unicode scalar values, for metadata readers in any language).

/// How to chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// The most tokens in one chunk (special tokens not counted). At least 1.
    pub max_tokens: usize,
    /// Tokens of the previous chunk repeated at the start of the next one (whole sentences
    /// where possible). Must be less than `max_tokens`.
    pub overlap: usize,
}

impl Default for ChunkOptions {
    /// 256 tokens with 32 tokens of overlap.
    fn default() -> Self {
        ChunkOptions {
            max_tokens: 256,
            overlap: 32,
        }
    }
}

/// One chunk of a source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The chunk's position among the source's chunks, from 0.
    pub index: usize,
    /// The chunk's text: `source[byte_start..byte_end]`.
    pub text: String,
    /// Byte offset of the first byte in the source.
    pub byte_start: usize,
    /// Byte offset one past the last byte in the source.
    pub byte_end: usize,
    /// Character offset of the first character in the source.
    pub char_start: usize,
    /// Character offset one past the last character in the source.
    pub char_end: usize,
    /// Tokens in the chunk, as counted by the counter.
    pub tokens: usize,
}

/// Boundary strength at the start of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Boundary {
    Word,
    Sentence,
    Paragraph,
}

/// A piece of text that is never split further: a sentence, or a word (or a slice of a word)
/// of a sentence too long for one chunk. `start..end` covers the text and its trailing
/// whitespace.
#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
    tokens: usize,
    boundary: Boundary,
}

/// Splits `text` into chunks of at most `opts.max_tokens` tokens as counted by `count`.
///
/// Text that fits in one chunk gives one chunk (trimmed). Empty or blank text gives none.
/// Chunks are cut at the last paragraph boundary that keeps them at least half full, else at
/// the last sentence boundary that fits, else between words; a single word longer than a chunk
/// is cut between characters. The next chunk starts with the previous chunk's last sentences
/// (or words) totalling at most `opts.overlap` tokens. Chunk texts are trimmed of surrounding
/// whitespace and their offsets point at the trimmed text.
///
/// Token counts of pieces are summed; each final chunk is counted once more and shrunk if the
/// tokenizer merges across a boundary, so `tokens <= max_tokens` holds as the counter sees the
/// chunk (a unit counted above `max_tokens` on its own is cut further first).
pub fn chunk_text<E>(
    text: &str,
    opts: &ChunkOptions,
    mut count: impl FnMut(&str) -> Result<usize, E>,
) -> Result<Vec<Chunk>, E> {
    let max = opts.max_tokens.max(1);
    let overlap = opts.overlap.min(max.saturating_sub(1));
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let whole = count(text)?;
    if whole <= max {
        return Ok(vec![make_chunk(text, 0, text.len(), 0, whole)]);
    }
    let mut units = Vec::new();
    for (start, end, boundary) in sentences(text) {
        push_unit(text, start, end, boundary, max, &mut count, &mut units)?;
    }
    let mut chunks = Vec::new();
    let mut first = 0; // first unit of the current chunk
    while first < units.len() {
        // Greedy fill.
        let mut total = 0;
        let mut last = first; // one past the last unit
        while last < units.len() && total + units[last].tokens <= max {
            total += units[last].tokens;
            last += 1;
        }
        if last == first {
            // Cannot happen (units fit on their own), but guarantee progress.
            last = first + 1;
        }
        if last < units.len() {
            last = best_cut(&units, first, last, max);
        }
        // Verify with the real tokenizer; shrink while the chunk over-counts.
        let (mut start, mut end) = span(text, &units, first, last);
        let mut tokens = count(&text[start..end])?;
        while tokens > max && last > first + 1 {
            last -= 1;
            (start, end) = span(text, &units, first, last);
            tokens = count(&text[start..end])?;
        }
        if start < end {
            chunks.push(make_chunk(text, start, end, chunks.len(), tokens));
        }
        if last >= units.len() {
            break;
        }
        // Overlap: the trailing units of this chunk totalling at most `overlap` tokens, and
        // leaving room for at least the next unit.
        let room = max.saturating_sub(units[last].tokens).min(overlap);
        let mut next = last;
        let mut carried = 0;
        while next > first + 1 && carried + units[next - 1].tokens <= room {
            carried += units[next - 1].tokens;
            next -= 1;
        }
        first = next;
    }
    Ok(chunks)
}

/// Where to end a chunk whose greedy fill ended before unit `last`: the last paragraph start
/// that keeps the chunk at least half full, else the last sentence start, else `last`.
fn best_cut(units: &[Unit], first: usize, last: usize, max: usize) -> usize {
    let half = max / 2;
    let mut tokens_before = vec![0; last - first + 1];
    for i in first..last {
        tokens_before[i - first + 1] = tokens_before[i - first] + units[i].tokens;
    }
    for level in [Boundary::Paragraph, Boundary::Sentence] {
        // Cutting before unit `last` itself is a cut at its boundary.
        for cut in (first + 1..=last).rev() {
            if tokens_before[cut - first] < half {
                break;
            }
            if units[cut].boundary >= level {
                return cut;
            }
        }
    }
    last
}

/// The trimmed byte span of units `first..last`.
fn span(text: &str, units: &[Unit], first: usize, last: usize) -> (usize, usize) {
    let start = units[first].start;
    let end = units[last - 1].end;
    let slice = &text[start..end];
    let lead = slice.len() - slice.trim_start().len();
    let trail = slice.len() - slice.trim_end().len();
    if lead >= slice.len() {
        return (start, start);
    }
    (start + lead, end - trail)
}

fn make_chunk(text: &str, start: usize, end: usize, index: usize, tokens: usize) -> Chunk {
    let slice = &text[start..end];
    let lead = slice.len() - slice.trim_start().len();
    let trimmed = slice.trim();
    let byte_start = start + lead;
    let byte_end = byte_start + trimmed.len();
    let char_start = text[..byte_start].chars().count();
    let char_end = char_start + trimmed.chars().count();
    Chunk {
        index,
        text: trimmed.to_string(),
        byte_start,
        byte_end,
        char_start,
        char_end,
        tokens,
    }
}

/// Adds the sentence `start..end` as a unit, or as word units (or character slices of a word)
/// when it does not fit in one chunk.
fn push_unit<E>(
    text: &str,
    start: usize,
    end: usize,
    boundary: Boundary,
    max: usize,
    count: &mut impl FnMut(&str) -> Result<usize, E>,
    units: &mut Vec<Unit>,
) -> Result<(), E> {
    let tokens = count(&text[start..end])?;
    if tokens <= max {
        units.push(Unit {
            start,
            end,
            tokens,
            boundary,
        });
        return Ok(());
    }
    let mut first_word = true;
    for (ws, we) in words(text, start, end) {
        let b = if first_word { boundary } else { Boundary::Word };
        first_word = false;
        let tokens = count(&text[ws..we])?;
        if tokens <= max {
            units.push(Unit {
                start: ws,
                end: we,
                tokens,
                boundary: b,
            });
            continue;
        }
        // A word longer than a chunk: cut it into the longest character prefixes that fit.
        let mut s = ws;
        let mut b = b;
        while s < we {
            let bounds: Vec<usize> = text[s..we]
                .char_indices()
                .map(|(i, _)| s + i)
                .skip(1)
                .chain(std::iter::once(we))
                .collect();
            // Binary search the longest prefix with at most `max` tokens (at least one char).
            let (mut lo, mut hi) = (0usize, bounds.len() - 1);
            while lo < hi {
                let mid = (lo + hi).div_ceil(2);
                if count(&text[s..bounds[mid]])? <= max {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            let e = bounds[lo];
            let tokens = count(&text[s..e])?;
            units.push(Unit {
                start: s,
                end: e,
                tokens,
                boundary: b,
            });
            b = Boundary::Word;
            s = e;
        }
    }
    Ok(())
}

/// Whitespace-separated words of `start..end`, each with its trailing whitespace.
fn words(text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let slice = &text[start..end];
    let mut word_start = None;
    let mut in_space = false;
    for (i, c) in slice.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else {
            if in_space && let Some(ws) = word_start {
                out.push((start + ws, start + i));
                word_start = Some(i);
            }
            if word_start.is_none() {
                word_start = Some(0);
            }
            in_space = false;
        }
    }
    if let Some(ws) = word_start {
        out.push((start + ws, end));
    } else {
        out.push((start, end));
    }
    out
}

/// Sentences of `text` as `(start, end, boundary)`, covering the whole text: a sentence ends
/// after `.`, `!`, `?` (or their CJK forms), possibly followed by closing quotes or brackets,
/// and whitespace; or at a line break. A blank line starts a paragraph.
fn sentences(text: &str) -> Vec<(usize, usize, Boundary)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut boundary = Boundary::Paragraph;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let terminal = matches!(c, '.' | '!' | '?' | '。' | '！' | '？' | '\n');
        if !terminal {
            continue;
        }
        // Absorb closing punctuation after a terminal (not after a line break).
        let mut end = i + c.len_utf8();
        if c != '\n' {
            while let Some(&(j, d)) = chars.peek() {
                if matches!(d, '"' | '\'' | ')' | ']' | '»' | '”' | '’' | '」') {
                    end = j + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            // A sentence ends only before whitespace (or at the end), except for CJK marks.
            let cjk = matches!(c, '。' | '！' | '？');
            let next_ws = chars.peek().is_none_or(|&(_, d)| d.is_whitespace());
            if !cjk && !next_ws {
                continue;
            }
        }
        // Absorb trailing whitespace and count line breaks.
        let mut newlines = usize::from(c == '\n');
        while let Some(&(j, d)) = chars.peek() {
            if d.is_whitespace() {
                if d == '\n' {
                    newlines += 1;
                }
                end = j + d.len_utf8();
                chars.next();
            } else {
                break;
            }
        }
        if end > start {
            out.push((start, end, boundary));
        }
        boundary = if newlines >= 2 {
            Boundary::Paragraph
        } else {
            Boundary::Sentence
        };
        start = end;
    }
    if start < bytes.len() {
        out.push((start, bytes.len(), boundary));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    fn words_count(s: &str) -> Result<usize, Infallible> {
        Ok(s.split_whitespace().count())
    }

    fn chunk(text: &str, max: usize, overlap: usize) -> Vec<Chunk> {
        let opts = ChunkOptions {
            max_tokens: max,
            overlap,
        };
        match chunk_text(text, &opts, words_count) {
            Ok(c) => c,
            Err(e) => match e {},
        }
    }

    fn check_invariants(text: &str, chunks: &[Chunk], max: usize) {
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.index, i);
            assert_eq!(&text[c.byte_start..c.byte_end], c.text);
            let by_chars: String = text
                .chars()
                .skip(c.char_start)
                .take(c.char_end - c.char_start)
                .collect();
            assert_eq!(by_chars, c.text);
            assert!(c.tokens <= max, "{c:?}");
            assert_eq!(c.tokens, c.text.split_whitespace().count());
            assert!(!c.text.is_empty());
        }
        // Chunks advance and together cover every word.
        for w in chunks.windows(2) {
            assert!(w[1].byte_start > w[0].byte_start);
            if w[1].byte_start > w[0].byte_end {
                assert!(
                    text[w[0].byte_end..w[1].byte_start].trim().is_empty(),
                    "gap between chunks"
                );
            }
        }
        if let (Some(f), Some(l)) = (chunks.first(), chunks.last()) {
            assert_eq!(f.byte_start, text.len() - text.trim_start().len());
            assert_eq!(l.byte_end, text.trim_end().len());
        }
    }

    #[test]
    fn short_and_empty() {
        assert!(chunk("", 10, 2).is_empty());
        assert!(chunk(" \n\t ", 10, 2).is_empty());
        let c = chunk("  Hello world.  ", 10, 2);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].text, "Hello world.");
        assert_eq!((c[0].byte_start, c[0].byte_end), (2, 14));
        assert_eq!((c[0].char_start, c[0].char_end), (2, 14));
        assert_eq!(c[0].tokens, 2);
    }

    #[test]
    fn prefers_paragraph_then_sentence_boundaries() {
        let text = "One two three. Four five six.\n\nSeven eight. Nine ten eleven. Twelve.";
        let c = chunk(text, 8, 0);
        check_invariants(text, &c, 8);
        // The first paragraph (6 words) fits; the cut is at the paragraph, not at `Seven eight.`
        assert_eq!(c[0].text, "One two three. Four five six.");
        assert_eq!(c[1].text, "Seven eight. Nine ten eleven. Twelve.");

        let text = "A b c. D e f. G h i. J k l.";
        let c = chunk(text, 7, 0);
        check_invariants(text, &c, 7);
        assert_eq!(c[0].text, "A b c. D e f.");
        assert_eq!(c[1].text, "G h i. J k l.");
    }

    #[test]
    fn overlap_repeats_whole_sentences() {
        let text = "A b. C d. E f. G h. I j. K l.";
        let c = chunk(text, 6, 2);
        check_invariants(text, &c, 6);
        assert_eq!(c[0].text, "A b. C d. E f.");
        assert_eq!(c[1].text, "E f. G h. I j.");
        assert_eq!(c[2].text, "I j. K l.");
    }

    #[test]
    fn long_sentences_split_between_words_and_long_words_between_chars() {
        let text = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11";
        let c = chunk(text, 4, 1);
        check_invariants(text, &c, 4);
        assert_eq!(c[0].text, "w1 w2 w3 w4");
        assert_eq!(c[1].text, "w4 w5 w6 w7");

        // A counter of characters: a 10-letter word in chunks of 4.
        let opts = ChunkOptions {
            max_tokens: 4,
            overlap: 0,
        };
        let c = chunk_text("abcdéfghij", &opts, |s: &str| {
            Ok::<_, Infallible>(s.chars().count())
        })
        .unwrap();
        let texts: Vec<&str> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(texts, ["abcd", "éfgh", "ij"]);
        assert_eq!((c[1].char_start, c[1].char_end), (4, 8));
        assert_eq!((c[1].byte_start, c[1].byte_end), (4, 9));
    }

    #[test]
    fn unicode_offsets_and_cjk_sentences() {
        let text = "Ünïcode ist schön. 日本語の文。次の文。 Ende hier.";
        let c = chunk(text, 3, 0);
        check_invariants(text, &c, 3);
        assert!(c.iter().any(|c| c.text == "Ünïcode ist schön."));
    }

    #[test]
    fn abbreviations_inside_words_are_not_sentence_ends() {
        let s = sentences("Version 1.2 is out. See e.g.this");
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].0, "Version 1.2 is out. ".len());
    }

    #[test]
    fn counter_errors_propagate() {
        let opts = ChunkOptions::default();
        let r = chunk_text("text", &opts, |_| Err::<usize, _>("boom"));
        assert_eq!(r, Err("boom"));
    }

    #[test]
    fn many_random_texts_keep_invariants() {
        // A small deterministic generator of words, sentence ends and paragraph breaks.
        let mut seed = 0x2545_f491_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let mut text = String::new();
            let n = (next() % 300) as usize;
            for _ in 0..n {
                let w = next() % 20;
                text.push_str(["alpha", "b", "çé", "longerword", "x1"][(w % 5) as usize]);
                text.push_str(match w {
                    0..=11 => " ",
                    12..=15 => ". ",
                    16 => "\n",
                    17 => "\n\n",
                    18 => "? ",
                    _ => "  ",
                });
            }
            for (max, overlap) in [(1, 0), (5, 2), (17, 4), (64, 63)] {
                let c = chunk(&text, max, overlap);
                check_invariants(&text, &c, max);
                let words: usize = text.split_whitespace().count();
                if words > 0 {
                    assert!(!c.is_empty());
                }
            }
        }
    }
}
