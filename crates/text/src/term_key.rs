//! The dictionary's key: a term stored inline when short (almost all are), so that a lookup
//! compares bytes in the hash table itself instead of following a pointer to the heap (one
//! cache miss less per token on the insert path).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Longest term stored inline.
const INLINE: usize = 22;

/// A term: inline up to [`INLINE`] bytes, boxed beyond. Hashes, compares and borrows as the
/// `str` it holds, so a `HashMap<TermKey, _>` is looked up by `&str`.
#[derive(Clone)]
pub(crate) enum TermKey {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl TermKey {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            // The bytes were copied from a `str` at a character boundary (the whole string).
            TermKey::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            TermKey::Heap(s) => s,
        }
    }
}

impl From<&str> for TermKey {
    fn from(s: &str) -> Self {
        if s.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            TermKey::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            TermKey::Heap(s.into())
        }
    }
}

impl Borrow<str> for TermKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for TermKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq for TermKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for TermKey {}

impl fmt::Debug for TermKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn short_and_long_terms_look_up_by_str() {
        let long = "é".repeat(20);
        let mut m: HashMap<TermKey, u32> = HashMap::new();
        for (i, t) in ["", "a", "été", "exactly-twenty-two-by", long.as_str()]
            .iter()
            .enumerate()
        {
            m.insert(TermKey::from(*t), i as u32);
        }
        assert!(matches!(TermKey::from("été"), TermKey::Inline { .. }));
        assert!(matches!(TermKey::from(long.as_str()), TermKey::Heap(_)));
        assert_eq!(m["été"], 2);
        assert_eq!(m["exactly-twenty-two-by"], 3);
        assert_eq!(m[long.as_str()], 4);
        assert_eq!(m[""], 0);
        assert!(!m.contains_key("ét"));
        assert_eq!(TermKey::from(long.as_str()).as_str(), long);
        assert_eq!(format!("{:?}", TermKey::from("a")), "\"a\"");
    }
}
