//! Positions inside TOML strings: a decoded string's byte offsets mapped
//! back to the file's, so a diagnostic names the file's line and column.

/// Maps byte offsets of a decoded TOML string to byte offsets in the file.
/// `offsets[i]` is the file offset of decoded byte `i`; one extra entry
/// points just past the last character.
#[derive(Clone, Debug)]
pub struct TextMap {
    pub offsets: Vec<usize>,
}

impl TextMap {
    pub fn file_offset(&self, i: usize) -> usize {
        match self.offsets.get(i) {
            Some(o) => *o,
            None => self.offsets.last().copied().unwrap_or(0),
        }
    }

    /// Build the map for the TOML string literal at `file[start..end]` (quotes
    /// included) whose decoded value is `value`. Handles basic and literal
    /// strings, single- and multi-line, escapes and line-ending backslashes.
    /// If the re-decoding disagrees with `value` (it should not), every
    /// position maps to the literal's start, which is still the right line.
    pub fn for_literal(file: &str, start: usize, end: usize, value: &str) -> TextMap {
        let fallback = || TextMap { offsets: vec![start; value.len() + 1] };
        let Some(raw) = file.get(start..end) else {
            return fallback();
        };
        let (delim, basic) = if raw.starts_with("\"\"\"") {
            (3, true)
        } else if raw.starts_with("'''") {
            (3, false)
        } else if raw.starts_with('"') {
            (1, true)
        } else if raw.starts_with('\'') {
            (1, false)
        } else {
            return fallback();
        };
        if raw.len() < 2 * delim {
            return fallback();
        }
        let body_start = start + delim;
        let body = &raw[delim..raw.len() - delim];
        let mut out = String::new();
        let mut offsets = Vec::new();
        let mut it = body.char_indices().peekable();
        // A newline right after the opening delimiter of a multi-line string is trimmed.
        if delim == 3 {
            if body.starts_with("\r\n") {
                it.next();
                it.next();
            } else if body.starts_with('\n') {
                it.next();
            }
        }
        let push = |out: &mut String, offsets: &mut Vec<usize>, c: char, at: usize| {
            out.push(c);
            for _ in 0..c.len_utf8() {
                offsets.push(at);
            }
        };
        while let Some((i, c)) = it.next() {
            let at = body_start + i;
            if basic && c == '\\' {
                let Some(&(_, e)) = it.peek() else { break };
                let simple = match e {
                    'b' => Some('\u{8}'),
                    't' => Some('\t'),
                    'n' => Some('\n'),
                    'f' => Some('\u{c}'),
                    'r' => Some('\r'),
                    'e' => Some('\u{1b}'),
                    '"' => Some('"'),
                    '\\' => Some('\\'),
                    _ => None,
                };
                if let Some(s) = simple {
                    it.next();
                    push(&mut out, &mut offsets, s, at);
                } else if e == 'u' || e == 'U' || e == 'x' {
                    it.next();
                    let n = match e {
                        'u' => 4,
                        'U' => 8,
                        _ => 2,
                    };
                    let mut hex = String::new();
                    for _ in 0..n {
                        if let Some((_, h)) = it.next() {
                            hex.push(h);
                        }
                    }
                    match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                        Some(ch) => push(&mut out, &mut offsets, ch, at),
                        None => return fallback(),
                    }
                } else if e.is_whitespace() {
                    // Line-ending backslash: drop whitespace and newlines up to the next non-space.
                    while let Some(&(_, w)) = it.peek() {
                        if w.is_whitespace() {
                            it.next();
                        } else {
                            break;
                        }
                    }
                } else {
                    return fallback();
                }
            } else if c == '\r' && matches!(it.peek(), Some((_, '\n'))) && delim == 3 {
                // CRLF in a multi-line string decodes to LF.
                it.next();
                push(&mut out, &mut offsets, '\n', at + 1);
            } else {
                push(&mut out, &mut offsets, c, at);
            }
        }
        if out != value {
            return fallback();
        }
        offsets.push(end - delim);
        TextMap { offsets }
    }

    /// Identity map for text that is not inside a TOML string (tests, CLI).
    pub fn identity(base: usize, len: usize) -> TextMap {
        TextMap { offsets: (0..=len).map(|i| base + i).collect() }
    }
}
