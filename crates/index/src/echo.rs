//! Bounded echoes of caller input in error messages.

/// Most characters of caller input an error message repeats.
pub(crate) const MAX_ECHO_CHARS: usize = 64;

/// `s` quoted (as `{:?}` would), cut to [`MAX_ECHO_CHARS`] characters with `…` after the
/// quote when longer, so that no error message grows with its input.
pub(crate) fn bounded(s: &str) -> String {
    let mut chars = s.chars();
    let shown: String = chars.by_ref().take(MAX_ECHO_CHARS).collect();
    if chars.next().is_some() {
        format!("{shown:?}…")
    } else {
        format!("{shown:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_input_is_cut() {
        assert_eq!(bounded("ab"), "\"ab\"");
        let long = "é".repeat(1000);
        let b = bounded(&long);
        assert!(
            b.ends_with('…') && b.chars().count() == MAX_ECHO_CHARS + 3,
            "{b}"
        );
    }
}
