//! [`truncate_echo`]: caller input cut to a bounded length for an error message.

/// `s` cut to at most `max` characters, with "…" when cut: for quoting caller input in an error
/// message without repeating all of it. Every crate's errors use this one rule.
pub fn truncate_echo(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_input_is_cut_at_a_character_boundary() {
        assert_eq!(truncate_echo("abc", 3), "abc");
        assert_eq!(truncate_echo("abcd", 3), "abc…");
        let cut = truncate_echo(&"é".repeat(1000), 10);
        assert_eq!(cut.chars().count(), 11);
        assert!(cut.ends_with('…'));
    }
}
