//! Text that came from outside (the config, argv, a server, a file) on its way into a message:
//! [`quoted`] escapes it so it can neither forge a log line nor hide in one, and
//! [`redact_userinfo`] removes the `user:password@` of every URL in it.

/// `s` in double quotes with every control character (NUL, ESC, newline, DEL, C1, ...), every
/// bidi override, and every quote or backslash escaped, Rust-style (`"a\nb"`, `"\u{1b}[31m"`).
/// The one way a message quotes user input: what it prints is always one line, and shows what
/// was there.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => push_escaped(&mut out, c),
        }
    }
    out.push('"');
    out
}

/// `s` with its control characters and bidi overrides escaped (and nothing else), for input a
/// message shows between backticks (a config key) or text that already quotes its values.
pub fn escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    if c.is_control() || is_invisible_format(c) {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

/// Characters that are not `is_control` but change how a terminal shows a line: the bidi
/// overrides and isolates, and the line/paragraph separators.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// Whether a URL (`scheme://authority/...`) carries a `user[:password]@` part.
pub fn has_userinfo(url: &str) -> bool {
    authority_bounds(url, 0).is_some_and(|(start, end)| url[start..end].contains('@'))
}

/// `text` with the userinfo of every `scheme://user:password@host` in it replaced by `***`,
/// so a URL with inline credentials is never displayed with them, wherever it was found (a
/// probe URL, a git or HTTP error quoting one).
pub fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    let mut from = 0;
    while let Some((start, end)) = authority_bounds(text, from) {
        if let Some(at) = text[start..end].rfind('@') {
            out.push_str(&text[done..start]);
            out.push_str("***");
            done = start + at;
        }
        from = end;
    }
    out.push_str(&text[done..]);
    out
}

/// The byte range of the authority (`user:pw@host:port`) of the first `://` at or after `from`.
fn authority_bounds(text: &str, from: usize) -> Option<(usize, usize)> {
    let sep = from + text.get(from..)?.find("://")?;
    let start = sep + 3;
    let len = text[start..]
        .find(|c: char| {
            matches!(c, '/' | '?' | '#')
                || c.is_whitespace()
                || c == '"'
                || c == '\''
                || c == '>'
                || c == ')'
        })
        .unwrap_or(text.len() - start);
    Some((start, start + len))
}

/// At most `max` characters of `s`, marked with `...` when cut.
pub fn bounded(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if s.chars().nth(max).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_escapes_every_control_character() {
        let q = quoted("a\nb\0c\u{1b}[31md\r\t\"\\`\u{7f}\u{202e}");
        assert_eq!(q, r#""a\nb\u{0}c\u{1b}[31md\r\t\"\\`\u{7f}\u{202e}""#);
        assert_eq!(escaped("k\ney`\\"), r"k\ney`\");
        assert!(!q.chars().any(char::is_control));
        assert_eq!(quoted("plain-name.example"), "\"plain-name.example\"");
        assert_eq!(quoted("é"), "\"é\"");
    }

    #[test]
    fn userinfo_is_redacted_anywhere_in_a_text() {
        assert_eq!(
            redact_userinfo("probe https://bob:hunter2@app.example.org/x: status 500"),
            "probe https://***@app.example.org/x: status 500"
        );
        assert_eq!(
            redact_userinfo("a http://u@h b https://h2/p@q c git+ssh://x:y@z:22/r"),
            "a http://***@h b https://h2/p@q c git+ssh://***@z:22/r"
        );
        assert_eq!(redact_userinfo("no urls here"), "no urls here");
        assert_eq!(redact_userinfo("https://a:b@c"), "https://***@c");
        assert_eq!(redact_userinfo("https://a:p@ss@c/"), "https://***@c/");
        assert!(has_userinfo("https://a:b@c/"));
        assert!(has_userinfo("http://a@c"));
        assert!(!has_userinfo("https://c/a@b"));
        assert!(!has_userinfo("/srv/git/recipe"));
    }

    #[test]
    fn bounded_marks_a_cut() {
        assert_eq!(bounded("abcdef", 3), "abc...");
        assert_eq!(bounded("abc", 3), "abc");
    }
}
