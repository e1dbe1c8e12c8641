//! HTML to text: tags stripped, `script`/`style` (and similar) contents dropped, character
//! references decoded, block elements turned into line breaks and whitespace collapsed as a
//! browser would. Tolerant of malformed markup; never fails.

/// Elements whose content is not text.
const DROPPED: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "math", "iframe", "object", "head",
];

/// Elements that start a paragraph (a blank line).
const PARAGRAPH: &[&str] = &[
    "p",
    "div",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "section",
    "article",
    "header",
    "footer",
    "main",
    "nav",
    "aside",
    "blockquote",
    "pre",
    "table",
    "ul",
    "ol",
    "dl",
    "figure",
    "hr",
    "body",
    "title",
];

/// Elements that start a line.
const LINE: &[&str] = &["br", "li", "tr", "dt", "dd", "caption", "figcaption"];

/// Elements whose cells are separated by a space.
const CELL: &[&str] = &["td", "th"];

/// Converts an HTML document or fragment to plain text. The `<title>` is kept as the first
/// paragraph; the rest of `<head>` is dropped.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut title = String::new();
    let bytes = html.as_bytes();
    let mut i = 0;
    let mut pre = 0usize;
    let mut in_title = false;
    let mut text_start = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        // Flush text before the tag.
        let target = if in_title { &mut title } else { &mut out };
        push_text(target, &html[text_start..i], pre > 0);
        if html[i..].starts_with("<!--") {
            i = html[i + 4..]
                .find("-->")
                .map_or(bytes.len(), |p| i + 4 + p + 3);
            text_start = i;
            continue;
        }
        let Some(tag) = parse_tag(html, i) else {
            // A lone `<`: text.
            text_start = i;
            i += 1;
            // Make sure the `<` is emitted with the following text.
            continue;
        };
        i = tag.end;
        text_start = i;
        let name = tag.name.as_str();
        if tag.closing {
            if name == "pre" {
                pre = pre.saturating_sub(1);
            }
            if name == "title" {
                in_title = false;
            }
        } else if name == "title" && !tag.self_closing {
            in_title = true;
            continue;
        } else if DROPPED.contains(&name) && !tag.self_closing {
            // Skip to the matching close tag (for `head`, the title inside is still wanted).
            if name == "head" {
                continue;
            }
            let close = format!("</{name}");
            i = find_ci(html, i, &close).map_or(bytes.len(), |p| {
                html[p..].find('>').map_or(bytes.len(), |q| p + q + 1)
            });
            text_start = i;
            continue;
        } else if name == "pre" {
            pre += 1;
        }
        if PARAGRAPH.contains(&name) {
            break_line(&mut out, 2);
        } else if LINE.contains(&name) {
            break_line(&mut out, 1);
        } else if CELL.contains(&name) && !tag.closing {
            push_space(&mut out);
        }
    }
    let target = if in_title { &mut title } else { &mut out };
    push_text(target, &html[text_start..], pre > 0);
    let body = tidy(&out);
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    match (title.is_empty(), body.is_empty()) {
        (true, _) => body,
        (false, true) => title,
        (false, false) if body.starts_with(&title) => body,
        (false, false) => format!("{title}\n\n{body}"),
    }
}

struct Tag {
    name: String,
    closing: bool,
    self_closing: bool,
    /// One past the closing `>`.
    end: usize,
}

/// Parses the tag starting at `<` at `at`; `None` if this `<` does not start a tag.
fn parse_tag(html: &str, at: usize) -> Option<Tag> {
    let bytes = html.as_bytes();
    let mut i = at + 1;
    let closing = bytes.get(i) == Some(&b'/');
    if closing {
        i += 1;
    }
    let first = *bytes.get(i)?;
    if !(first.is_ascii_alphabetic() || first == b'!' || first == b'?') {
        return None;
    }
    let name_start = i;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'-' | b':')) {
        i += 1;
    }
    if first == b'!' || first == b'?' {
        i += 1;
    }
    let name = html[name_start..i].to_ascii_lowercase();
    // Attributes: skip to `>` outside quotes.
    let mut quote = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => {
                let self_closing = i > at && bytes[i - 1] == b'/';
                return Some(Tag {
                    name,
                    closing,
                    self_closing,
                    end: i + 1,
                });
            }
            None => {}
        }
        i += 1;
    }
    Some(Tag {
        name,
        closing,
        self_closing: false,
        end: bytes.len(),
    })
}

/// Case-insensitive search of ASCII `needle` in `hay[from..]`.
fn find_ci(hay: &str, from: usize, needle: &str) -> Option<usize> {
    let h = hay.as_bytes();
    let n = needle.as_bytes();
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    (from..=h.len() - n.len()).find(|&p| h[p..p + n.len()].eq_ignore_ascii_case(n))
}

fn push_text(out: &mut String, raw: &str, pre: bool) {
    if raw.is_empty() {
        return;
    }
    let decoded = decode_entities(raw);
    if pre {
        out.push_str(&decoded);
        return;
    }
    for (k, piece) in decoded.split(|c: char| c.is_ascii_whitespace()).enumerate() {
        if k > 0 {
            push_space(out);
        }
        out.push_str(piece);
    }
}

fn push_space(out: &mut String) {
    if !out.is_empty() && !out.ends_with(char::is_whitespace) {
        out.push(' ');
    }
}

fn break_line(out: &mut String, lines: usize) {
    while out.ends_with(' ') {
        out.pop();
    }
    if out.is_empty() {
        return;
    }
    let have = out.chars().rev().take_while(|&c| c == '\n').count();
    for _ in have..lines {
        out.push('\n');
    }
}

/// Trims each line's trailing whitespace and keeps at most one blank line in a row.
fn tidy(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank = 0;
    for line in s.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out
}

/// Decodes character references: numeric (`&#233;`, `&#xE9;`) and the common named ones.
/// Unknown references are kept as written.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[1..]
            .char_indices()
            .take(32)
            .find(|&(_, c)| c == ';' || !(c.is_ascii_alphanumeric() || c == '#'))
            .map(|(i, c)| (i + 1, c));
        let decoded = match end {
            Some((semi, ';')) => decode_one(&rest[1..semi]).map(|c| (c, semi + 1)),
            _ => None,
        };
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_one(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return Some(match code {
            0 => '\u{FFFD}',
            _ => char::from_u32(code).unwrap_or('\u{FFFD}'),
        });
    }
    Some(match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "deg" => '°',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "sect" => '§',
        "para" => '¶',
        "times" => '×',
        "divide" => '÷',
        "plusmn" => '±',
        "micro" => 'µ',
        "shy" => '\u{ad}',
        "zwj" => '\u{200d}',
        "zwnj" => '\u{200c}',
        "auml" => 'ä',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "Auml" => 'Ä',
        "Ouml" => 'Ö',
        "Uuml" => 'Ü',
        "szlig" => 'ß',
        "eacute" => 'é',
        "egrave" => 'è',
        "ecirc" => 'ê',
        "Eacute" => 'É',
        "aacute" => 'á',
        "agrave" => 'à',
        "acirc" => 'â',
        "iacute" => 'í',
        "oacute" => 'ó',
        "uacute" => 'ú',
        "ntilde" => 'ñ',
        "ccedil" => 'ç',
        "aring" => 'å',
        "oslash" => 'ø',
        "aelig" => 'æ',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tags_and_drops_scripts() {
        let html = r#"<!DOCTYPE html><html><head><title>My  page</title>
            <style>p { color: red }</style><script>var x = "<p>no</p>";</script></head>
            <body><h1>Hello&nbsp;world</h1><p>First <b>bold</b> &amp; <a href="x>y">link</a>.</p>
            <!-- a comment <p>hidden</p> -->
            <ul><li>one</li><li>two</li></ul><SCRIPT type="x">alert(1)</SCRIPT>
            <p>caf&eacute; &#233; &#xE9; &unknown; a < b</p></body></html>"#;
        let text = html_to_text(html);
        assert_eq!(
            text,
            "My page\n\nHello\u{a0}world\n\nFirst bold & link.\n\none\ntwo\n\ncafé é é &unknown; a < b"
        );
    }

    #[test]
    fn pre_keeps_whitespace_and_tables_get_spaces() {
        let text = html_to_text("<pre>a\n  b</pre><table><tr><td>1</td><td>2</td></tr></table>");
        assert_eq!(text, "a\n  b\n\n1 2");
    }

    #[test]
    fn malformed_markup_does_not_panic() {
        for s in [
            "<",
            "<<>>",
            "<p",
            "<script>never closed",
            "&#xFFFFFFFF;",
            "&",
            "<!--",
            "é<b>é",
        ] {
            let _ = html_to_text(s);
        }
        assert_eq!(html_to_text("é<b>é</b>"), "éé");
        assert_eq!(decode_entities("&#0;&#x110000;"), "\u{FFFD}\u{FFFD}");
    }
}
