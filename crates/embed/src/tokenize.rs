//! Tokenization: a `tokenizer.json` with its built-in padding and truncation removed; this
//! crate truncates (keeping the post-processor's special tokens) and pads itself.

use std::path::Path;

use tokenizers::{Encoding, Tokenizer, TruncationDirection};

use crate::error::{Error, Result};

/// A loaded tokenizer.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Special tokens the post-processor adds to a single sequence.
    added: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("added", &self.added)
            .finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::MissingFile(path));
        }
        let mut inner = Tokenizer::from_file(&path)
            .map_err(|e| Error::InvalidConfig(format!("{}: {e}", crate::error::shown(&path))))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let added = inner
            .get_post_processor()
            .map(|p| tokenizers::PostProcessor::added_tokens(p, false))
            .unwrap_or(0);
        Ok(Self { inner, added })
    }

    /// The id of a token, if in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of tokens of `text` alone, without special tokens.
    pub fn count(&self, text: &str) -> Result<usize> {
        Ok(self.raw(text)?.len())
    }

    fn raw(&self, text: &str) -> Result<Encoding> {
        self.inner
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Token ids of `text` with the special tokens, truncated on the right to `max_len` tokens
    /// in all (special tokens kept, as Hugging Face's truncation does).
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Vec<u32>> {
        let mut enc = self.raw(text)?;
        enc.truncate(
            max_len.saturating_sub(self.added),
            0,
            TruncationDirection::Right,
        );
        let enc = self
            .inner
            .post_process(enc, None, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        ids.truncate(max_len.max(1));
        Ok(ids)
    }

    /// [`TextTokenizer::encode`] for many texts, in parallel.
    pub fn encode_all<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        max_len: usize,
    ) -> Result<Vec<Vec<u32>>> {
        use rayon::prelude::*;
        texts
            .par_iter()
            .map(|t| self.encode(t.as_ref(), max_len))
            .collect()
    }
}
