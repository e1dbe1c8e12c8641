//! Parsing a dump's data files and checking every invariant of the index they describe, so
//! that a loaded index holds exactly what [`LexicalIndex`] assumes of one it built itself:
//!
//! - each file has its magic and the format version, holds exactly as many entries as the
//!   manifest says, and has no trailing bytes;
//! - terms are 1..=[`MAX_TOKEN_BYTES`] bytes of UTF-8, strictly ascending (so unique);
//! - documents are in strictly ascending point order (so points are unique); each lists its
//!   term ids strictly ascending, every one below the term count, every tf at least 1, and
//!   the tfs sum to the document's length;
//! - every term is used by some document; the lengths sum to the manifest's token count.
//!
//! Every count is checked against the bytes left in its file before anything is sized by it,
//! so every allocation is bounded by the length of the files read.

use std::collections::HashMap;
use std::path::Path;

use latentdb_types::dump::Reader;

use crate::analyzer::{Analyzer, MAX_TOKEN_BYTES};
use crate::error::Result;
use crate::index::{LexicalIndex, Posting, Term};
use crate::persist::{DOCS_MAGIC, FORMAT_VERSION, Manifest, TERMS_MAGIC, corrupt};
use crate::term_key::TermKey;

/// Magic, version and entry count, the count checked against the manifest's and against the
/// bytes left (`min_entry` bytes each at least).
fn header(
    r: &mut Reader<'_>,
    magic: &[u8; 8],
    expected: u64,
    min_entry: usize,
) -> Result<usize, String> {
    if r.take(8) != Some(&magic[..]) {
        return Err("bad magic".into());
    }
    let (Some(version), Some(count)) = (r.u32(), r.u32()) else {
        return Err("truncated header".into());
    };
    if version != FORMAT_VERSION {
        return Err(format!("format version {version} is not {FORMAT_VERSION}"));
    }
    if u64::from(count) != expected {
        return Err(format!("{count} entries, the manifest says {expected}"));
    }
    let count = count as usize;
    if count
        .checked_mul(min_entry)
        .is_none_or(|need| need > r.left())
    {
        return Err(format!("{count} entries cannot fit in {} bytes", r.left()));
    }
    Ok(count)
}

/// A document as the docs file lists it: point, length, (term id, tf) list.
type ParsedDoc = (u32, u32, Box<[(u32, u32)]>);

/// Parses and checks the data files of a dump whose manifest `m` has been checked already
/// (format version, kind, analyzer), building the index.
pub(crate) fn parse_dump(
    dir: &Path,
    m: &Manifest,
    analyzer: Analyzer,
    terms_file: &[u8],
    docs_file: &[u8],
) -> Result<LexicalIndex> {
    let bad_terms = |what: String| corrupt(dir, format!("terms file: {what}"));
    let bad_docs = |what: String| corrupt(dir, format!("docs file: {what}"));

    let mut r = Reader::new(terms_file);
    let n_terms = header(&mut r, TERMS_MAGIC, m.terms, 2).map_err(bad_terms)?;
    let mut dict: HashMap<TermKey, u32> = HashMap::with_capacity(n_terms);
    let mut prev: Option<&str> = None;
    for id in 0..n_terms {
        let len = r.u8().ok_or_else(|| bad_terms("truncated".into()))? as usize;
        if len == 0 || len > MAX_TOKEN_BYTES {
            return Err(bad_terms(format!("term {id} has length {len}")));
        }
        let bytes = r.take(len).ok_or_else(|| bad_terms("truncated".into()))?;
        let text =
            std::str::from_utf8(bytes).map_err(|_| bad_terms(format!("term {id} is not UTF-8")))?;
        if prev.is_some_and(|p| p >= text) {
            return Err(bad_terms(format!("term {id} is out of order or repeated")));
        }
        prev = Some(text);
        dict.insert(text.into(), id as u32);
    }
    if r.left() != 0 {
        return Err(bad_terms("trailing bytes".into()));
    }

    let mut r = Reader::new(docs_file);
    let n_docs = header(&mut r, DOCS_MAGIC, m.docs, 12).map_err(bad_docs)?;
    let mut df = vec![0u32; n_terms];
    let mut parsed: Vec<ParsedDoc> = Vec::with_capacity(n_docs);
    let mut tokens: u64 = 0;
    let mut prev_point: Option<u32> = None;
    for _ in 0..n_docs {
        let (Some(point), Some(len), Some(count)) = (r.u32(), r.u32(), r.u32()) else {
            return Err(bad_docs("truncated".into()));
        };
        if prev_point.is_some_and(|p| p >= point) {
            return Err(bad_docs(format!(
                "point {point} is out of order or repeated"
            )));
        }
        prev_point = Some(point);
        let pairs = (count as usize)
            .checked_mul(8)
            .and_then(|n| r.take(n))
            .ok_or_else(|| bad_docs(format!("point {point}: truncated term list")))?;
        let mut list = Vec::with_capacity(count as usize);
        let mut sum: u64 = 0;
        for pair in pairs.chunks_exact(8) {
            let t = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]);
            let tf = u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]);
            if t as usize >= n_terms {
                return Err(bad_docs(format!("point {point}: term id {t} out of range")));
            }
            if list.last().is_some_and(|&(p, _)| p >= t) {
                return Err(bad_docs(format!(
                    "point {point}: term ids out of order or repeated"
                )));
            }
            if tf == 0 {
                return Err(bad_docs(format!("point {point}: term {t} has tf 0")));
            }
            sum += u64::from(tf);
            df[t as usize] += 1;
            list.push((t, tf));
        }
        if sum != u64::from(len) {
            return Err(bad_docs(format!(
                "point {point}: length {len}, its term frequencies sum to {sum}"
            )));
        }
        tokens += u64::from(len);
        parsed.push((point, len, list.into_boxed_slice()));
    }
    if r.left() != 0 {
        return Err(bad_docs("trailing bytes".into()));
    }
    if tokens != m.tokens {
        return Err(bad_docs(format!(
            "{tokens} tokens, the manifest says {}",
            m.tokens
        )));
    }
    if let Some(t) = df.iter().position(|&d| d == 0) {
        return Err(bad_docs(format!("term {t} is in no document")));
    }

    let mut terms: Vec<Term> = df
        .iter()
        .map(|&df| Term {
            df,
            dead: 0,
            postings: Vec::with_capacity(df as usize),
        })
        .collect();
    let mut slot_of = HashMap::with_capacity(n_docs);
    let mut points = Vec::with_capacity(n_docs);
    let mut lens = Vec::with_capacity(n_docs);
    let mut doc_terms = Vec::with_capacity(n_docs);
    for (slot, (point, len, list)) in parsed.into_iter().enumerate() {
        let slot = slot as u32;
        for &(t, tf) in list.iter() {
            terms[t as usize].postings.push(Posting { slot, tf });
        }
        slot_of.insert(point, slot);
        points.push(point);
        lens.push(len);
        doc_terms.push(Some(list));
    }
    let mut index = LexicalIndex::with_analyzer(analyzer);
    index.dict = dict;
    index.terms = terms;
    index.slot_of = slot_of;
    index.points = points;
    index.lens = lens;
    index.doc_terms = doc_terms;
    index.tokens = tokens;
    Ok(index)
}
