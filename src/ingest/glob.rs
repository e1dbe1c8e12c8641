//! A small glob matcher for `--glob`: `*` (within one path component), `**` (across
//! components), `?`, character classes `[a-z]` / `[!abc]`, and alternatives `{md,txt}`.
//!
//! A pattern without `/` matches a file's name (`*.md`); one with `/` matches the path
//! relative to the directory being walked (`docs/**/*.md`).

use std::fmt;

/// A compiled glob pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    /// The pattern with `{..}` alternatives expanded.
    alternatives: Vec<Vec<char>>,
    name_only: bool,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.source)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// A pattern that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid glob pattern `{pattern}`: {reason}")]
pub struct GlobError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The most alternatives a pattern may expand to.
const MAX_ALTERNATIVES: usize = 256;

impl Glob {
    /// Compiles a pattern.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let err = |reason| GlobError {
            pattern: pattern.to_string(),
            reason,
        };
        if pattern.is_empty() {
            return Err(err("the pattern is empty"));
        }
        let alternatives = expand(pattern).map_err(err)?;
        for alt in &alternatives {
            check_classes(alt).map_err(err)?;
        }
        Ok(Glob {
            source: pattern.to_string(),
            alternatives,
            name_only: !pattern.contains('/'),
        })
    }

    /// Whether `relative` (a path relative to the walked directory, `/`-separated) matches.
    pub fn matches(&self, relative: &str) -> bool {
        let subject = if self.name_only {
            relative.rsplit('/').next().unwrap_or(relative)
        } else {
            relative.trim_start_matches("./")
        };
        let subject: Vec<char> = subject.chars().collect();
        self.alternatives
            .iter()
            .any(|p| match_here(p, &subject, &mut Default::default()))
    }
}

/// Expands `{a,b}` alternatives (nested allowed) into plain patterns.
fn expand(pattern: &str) -> Result<Vec<Vec<char>>, &'static str> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    expand_into(&chars, Vec::new(), &mut out)?;
    Ok(out)
}

fn expand_into(
    rest: &[char],
    prefix: Vec<char>,
    out: &mut Vec<Vec<char>>,
) -> Result<(), &'static str> {
    let Some(open) = rest.iter().position(|&c| c == '{') else {
        let mut p = prefix;
        p.extend_from_slice(rest);
        if rest.contains(&'}') {
            return Err("unbalanced `}`");
        }
        out.push(p);
        return Ok(());
    };
    if rest[..open].contains(&'}') {
        return Err("unbalanced `}`");
    }
    // Find the matching close brace and the top-level commas.
    let mut depth = 0;
    let mut close = None;
    let mut commas = Vec::new();
    for (i, &c) in rest.iter().enumerate().skip(open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    let close = close.ok_or("unbalanced `{`")?;
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    for w in bounds.windows(2) {
        let mut p = prefix.clone();
        p.extend_from_slice(&rest[..open]);
        // The alternative may itself hold braces: expand it with the remainder appended.
        let mut tail: Vec<char> = rest[w[0] + 1..w[1]].to_vec();
        tail.extend_from_slice(&rest[close + 1..]);
        expand_into(&tail, p, out)?;
        if out.len() > MAX_ALTERNATIVES {
            return Err("too many `{..}` alternatives");
        }
    }
    Ok(())
}

fn check_classes(p: &[char]) -> Result<(), &'static str> {
    let mut i = 0;
    while i < p.len() {
        if p[i] == '[' {
            class_end(p, i).ok_or("unclosed `[`")?;
        }
        i += 1;
    }
    Ok(())
}

/// The index of the `]` closing the class opened at `open`.
fn class_end(p: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if matches!(p.get(i), Some('!' | '^')) {
        i += 1;
    }
    if p.get(i) == Some(&']') {
        i += 1; // a leading `]` is literal
    }
    while i < p.len() {
        if p[i] == ']' {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn class_matches(class: &[char], c: char) -> bool {
    let (negated, body) = match class.first() {
        Some('!' | '^') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut i = 0;
    let mut hit = false;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == '-' {
            if body[i] <= c && c <= body[i + 2] {
                hit = true;
            }
            i += 3;
        } else {
            if body[i] == c {
                hit = true;
            }
            i += 1;
        }
    }
    hit != negated
}

/// Backtracking match with memoisation of failed `(pattern, subject)` positions.
fn match_here(
    p: &[char],
    s: &[char],
    failed: &mut std::collections::HashSet<(usize, usize)>,
) -> bool {
    fn go(
        p: &[char],
        s: &[char],
        pi: usize,
        si: usize,
        failed: &mut std::collections::HashSet<(usize, usize)>,
    ) -> bool {
        if failed.contains(&(pi, si)) {
            return false;
        }
        let ok = step(p, s, pi, si, failed);
        if !ok {
            failed.insert((pi, si));
        }
        ok
    }
    fn step(
        p: &[char],
        s: &[char],
        pi: usize,
        si: usize,
        failed: &mut std::collections::HashSet<(usize, usize)>,
    ) -> bool {
        if pi == p.len() {
            return si == s.len();
        }
        match p[pi] {
            '*' if p.get(pi + 1) == Some(&'*') => {
                // `**/` also matches no directory at all.
                let after = pi + 2;
                if p.get(after) == Some(&'/') && go(p, s, after + 1, si, failed) {
                    return true;
                }
                (si..=s.len()).any(|k| go(p, s, after, k, failed))
            }
            '*' => {
                let mut k = si;
                loop {
                    if go(p, s, pi + 1, k, failed) {
                        return true;
                    }
                    if k == s.len() || s[k] == '/' {
                        return false;
                    }
                    k += 1;
                }
            }
            '?' => si < s.len() && s[si] != '/' && go(p, s, pi + 1, si + 1, failed),
            '[' => match class_end(p, pi) {
                Some(end) => {
                    si < s.len()
                        && s[si] != '/'
                        && class_matches(&p[pi + 1..end], s[si])
                        && go(p, s, end + 1, si + 1, failed)
                }
                None => si < s.len() && s[si] == '[' && go(p, s, pi + 1, si + 1, failed),
            },
            c => si < s.len() && s[si] == c && go(p, s, pi + 1, si + 1, failed),
        }
    }
    go(p, s, 0, 0, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p).unwrap().matches(s)
    }

    #[test]
    fn basics() {
        assert!(m("*.md", "README.md"));
        assert!(m("*.md", "docs/guide/intro.md"), "name-only pattern");
        assert!(!m("*.md", "notes.txt"));
        assert!(m("*.{md,txt}", "a/b.txt"));
        assert!(m("file?.txt", "file1.txt"));
        assert!(!m("file?.txt", "file10.txt"));
        assert!(m("[a-c]*.txt", "beta.txt"));
        assert!(!m("[!a-c]*.txt", "beta.txt"));
        assert!(m("docs/*.md", "docs/a.md"));
        assert!(!m("docs/*.md", "docs/x/a.md"));
        assert!(m("docs/**/*.md", "docs/a.md"));
        assert!(m("docs/**/*.md", "docs/x/y/a.md"));
        assert!(m("**/*.html", "a/b/c.html"));
        assert!(m("{docs,notes}/**", "notes/x/y"));
        assert!(m("a{b,{c,d}}e", "ade"));
    }

    #[test]
    fn errors() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("a{b").is_err());
        assert!(Glob::new("a}b").is_err());
        assert!(Glob::new("[abc").is_err());
        let e = Glob::new("{a,b}{c,d}{e,f}{g,h}{i,j}{k,l}{m,n}{o,p}{q,r}").unwrap_err();
        assert!(e.to_string().contains("too many"));
    }

    #[test]
    fn pathological_patterns_are_fast() {
        let s = "a".repeat(60);
        assert!(!m("*a*a*a*a*a*a*a*a*b", &s));
        assert!(!m("**a**a**a**a**a**b", &s));
    }
}
