//! File and part names inside a backup: relative `/`-separated paths of a safe ASCII set.

use crate::error::{Error, Result};

/// The longest name accepted, in bytes (object stores allow 1,024 bytes per key, prefix
/// included).
pub const MAX_NAME_LEN: usize = 512;

/// The name of the manifest file at the root of every backup location. Reserved: no part or
/// blob may use it.
pub const MANIFEST_NAME: &str = "MANIFEST";

/// Checks that `name` is a valid file name inside a backup: a relative path of segments
/// separated by `/`, each non-empty, made of ASCII letters, digits, `.`, `_` and `-`, not
/// starting with `.` (which also rules out `.` and `..`, and keeps clear of the local target's
/// temporary files), at most [`MAX_NAME_LEN`] bytes in all.
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "invalid backup file name {:?}: {why}",
            latentdb_types::truncate_echo(name, 80)
        )))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("too long");
    }
    for segment in name.split('/') {
        if segment.is_empty() {
            return bad("empty path segment (leading, trailing or doubled '/')");
        }
        if segment.starts_with('.') {
            return bad("a path segment starts with '.'");
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return bad(&format!(
                "character {c:?} is outside [A-Za-z0-9._-] and '/'"
            ));
        }
    }
    Ok(())
}

/// The file holding chunk `index` of part `name`: `name.00000`, `name.00001`, … (five digits,
/// more once past 99,999).
pub fn chunk_file(name: &str, index: usize) -> String {
    format!("{name}.{index:05}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_relative_safe_paths() {
        for ok in [
            "records",
            "c/docs/records.bin",
            "a-b_c.1",
            "MANIFEST2",
            "x/y/z",
        ] {
            validate_name(ok).unwrap();
        }
    }

    #[test]
    fn refuses_escapes_and_odd_characters() {
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/",
            "..",
            "a/../b",
            ".hidden",
            "a/.tmp",
            "sp ace",
            "uni\u{e9}",
            "back\\slash",
            "colon:x",
        ] {
            let err = validate_name(bad).unwrap_err();
            assert_eq!(
                err.kind(),
                latentdb_types::ErrorKind::InvalidArgument,
                "{bad:?}"
            );
        }
        assert!(validate_name(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
        validate_name(&"a".repeat(MAX_NAME_LEN)).unwrap();
    }

    #[test]
    fn chunk_files_are_numbered() {
        assert_eq!(chunk_file("p", 0), "p.00000");
        assert_eq!(chunk_file("c/p", 12), "c/p.00012");
        assert_eq!(chunk_file("p", 123_456), "p.123456");
    }
}
