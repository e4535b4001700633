//! Diagnostics: every problem found in a litmus file, with `file:line:col`.
//!
//! Positions are byte offsets into the *file* (not into a decoded TOML
//! string); [`SourceFile`] turns them into 1-based line and column (columns
//! count characters, as editors do). The rendering's first line is always
//! `file:line:col: error: message` so editors and CI logs can jump to it; a
//! caret excerpt and notes follow.

use std::fmt;

/// Diagnostics kept per file; past this the rest are counted, not stored
/// (a file with a million bad lines gives a readable report, quickly).
pub const MAX_DIAGNOSTICS: usize = 100;
/// Characters of a source line shown in an excerpt; a longer line is shown
/// as a window around the column.
const EXCERPT_MAX: usize = 160;
/// Characters of a message or note kept (they may quote user text).
const MESSAGE_MAX: usize = 400;

/// How bad a diagnostic is. Any error stops the run; warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One litmus file's text, with a line index.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
    line_starts: Vec<usize>,
    /// Byte offset of every multi-byte character, with the extra bytes
    /// (beyond one per character) of the text up to and including it: a
    /// column is then a subtraction and a binary search, not a scan of the
    /// line (a one-line, megabyte-long code string has many statements).
    wide: Vec<(usize, usize)>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let mut extra = 0;
        let wide = text
            .char_indices()
            .filter(|(_, c)| c.len_utf8() > 1)
            .map(|(i, c)| {
                extra += c.len_utf8() - 1;
                (i, extra)
            })
            .collect();
        SourceFile { name: name.into(), text, line_starts, wide }
    }

    /// Extra bytes of the multi-byte characters that start before `offset`.
    fn extra_before(&self, offset: usize) -> usize {
        match self.wide.partition_point(|&(i, _)| i < offset) {
            0 => 0,
            n => self.wide[n - 1].1,
        }
    }

    /// Characters in `text[a..b]` (`a <= b`, both character boundaries).
    fn chars_between(&self, a: usize, b: usize) -> usize {
        (b - a) - (self.extra_before(b) - self.extra_before(a))
    }

    /// 1-based (line, column) of byte `offset` (clamped to the text).
    pub fn line_col(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(l) => l,
            Err(l) => l - 1,
        };
        let start = self.line_starts[line];
        let mut off = offset;
        while !self.text.is_char_boundary(off) {
            off -= 1;
        }
        let col = self.chars_between(start, off);
        (saturate(line + 1), saturate(col + 1))
    }

    /// The text of 1-based line `line`, without its newline.
    pub fn line_text(&self, line: u32) -> &str {
        let i = (line as usize).saturating_sub(1);
        let Some(&start) = self.line_starts.get(i) else {
            return "";
        };
        let end = self.line_starts.get(i + 1).map(|e| e - 1).unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches('\r')
    }

    /// A diagnostic at the byte range `start..end` of this file.
    pub fn diag(&self, severity: Severity, start: usize, end: usize, msg: impl Into<String>) -> Diagnostic {
        let (line, col) = self.line_col(start);
        let (end_line, end_col) = self.line_col(end.max(start));
        let width = if end_line == line && end_col > col { end_col - col } else { 1 };
        let (source_line, source_col) = excerpt(self.line_text(line), col);
        Diagnostic {
            severity,
            file: self.name.clone(),
            line,
            col,
            width: width.min(saturate(EXCERPT_MAX)),
            message: clip(msg.into()),
            source_line,
            source_col,
            notes: Vec::new(),
        }
    }

    pub fn error(&self, start: usize, end: usize, msg: impl Into<String>) -> Diagnostic {
        self.diag(Severity::Error, start, end, msg)
    }

    pub fn warning(&self, start: usize, end: usize, msg: impl Into<String>) -> Diagnostic {
        self.diag(Severity::Warning, start, end, msg)
    }
}

/// A located message about a litmus file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: String,
    /// 1-based line in the file.
    pub line: u32,
    /// 1-based column (characters) in the file.
    pub col: u32,
    /// Width of the underlined span in characters (at least 1).
    pub width: u32,
    /// "what was found, what was expected".
    pub message: String,
    /// The file line the diagnostic points into, for the caret display (a
    /// window of it around the column if the line is long).
    pub source_line: String,
    /// 1-based column of the caret in `source_line`.
    pub source_col: u32,
    /// Extra lines, e.g. the list of valid names.
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(clip(note.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The first line only: `file:line:col: error: message`.
    pub fn headline(&self) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        format!("{}:{}:{}: {}: {}", self.file, self.line, self.col, sev, self.message)
    }
}

impl fmt::Display for Diagnostic {
    /// ```text
    /// tests/litmus/a.toml:7:1: error: unknown operation `lod`
    ///    |
    ///  7 | lod x -> r0
    ///    | ^^^
    ///    = expected one of: load, store, …
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.headline())?;
        let num = self.line.to_string();
        let pad = " ".repeat(num.len());
        writeln!(f, "{pad} |")?;
        writeln!(f, "{num} | {}", self.source_line)?;
        // Keep tabs so the caret lines up under tab-indented code.
        let lead: String = self
            .source_line
            .chars()
            .take(self.source_col.saturating_sub(1) as usize)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(f, "{pad} | {lead}{}", "^".repeat(self.width.max(1) as usize))?;
        for n in &self.notes {
            write!(f, "\n{pad} = {n}")?;
        }
        Ok(())
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `msg`, cut to [`MESSAGE_MAX`] characters.
fn clip(mut msg: String) -> String {
    if let Some((i, _)) = msg.char_indices().nth(MESSAGE_MAX) {
        msg.truncate(i);
        msg.push('…');
    }
    msg
}

/// The part of `line` shown under a diagnostic at 1-based column `col`, and
/// the caret's column in it: the whole line if short, else a window of
/// [`EXCERPT_MAX`] characters around the column, `…` marking the cuts.
fn excerpt(line: &str, col: u32) -> (String, u32) {
    let n = line.chars().count();
    if n <= EXCERPT_MAX {
        return (line.to_string(), col);
    }
    let at = (col as usize).saturating_sub(1).min(n);
    let first = at.saturating_sub(EXCERPT_MAX / 3).min(n - EXCERPT_MAX);
    let mut s: String = line.chars().skip(first).take(EXCERPT_MAX).collect();
    let mut caret = at - first + 1;
    if first > 0 {
        s.insert(0, '…');
        caret += 1;
    }
    if first + EXCERPT_MAX < n {
        s.push('…');
    }
    (s, saturate(caret))
}

/// A litmus file's bytes as text. Litmus files are UTF-8: anything else is
/// an error at the first bad byte's line and column.
pub fn decode_source(name: &str, bytes: Vec<u8>) -> Result<String, Diagnostic> {
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let bad_len = e.utf8_error().error_len().unwrap_or(bytes.len() - at);
        let shown: Vec<String> = bytes[at..at + bad_len].iter().map(|b| format!("0x{b:02x}")).collect();
        // The replacement characters come after `at`: offsets up to it agree.
        let file = SourceFile::new(name, String::from_utf8_lossy(bytes));
        let what = if e.utf8_error().error_len().is_some() { "invalid" } else { "truncated" };
        file.error(at, at, format!("not UTF-8: {what} byte sequence {}", shown.join(" ")))
            .with_note("litmus files are UTF-8 text")
    })
}

/// Render a list of diagnostics, errors and warnings in file order, with a
/// closing count line.
pub fn render_all(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.to_string());
        out.push_str("\n\n");
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    out.push_str(&format!("{errors} error(s), {warnings} warning(s)\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_and_render() {
        let f = SourceFile::new("t.toml", "a = 1\nbé = 2\n");
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(6), (2, 1));
        // 'é' is two bytes; the '=' after it is column 4.
        assert_eq!(f.line_col(f.text.find("= 2").unwrap()), (2, 4));
        let d = f.error(6, 9, "bad key").with_note("expected one of: a");
        let s = d.to_string();
        assert!(s.starts_with("t.toml:2:1: error: bad key\n"), "{s}");
        assert!(s.contains("2 | bé = 2\n  | ^^\n  = expected one of: a"), "{s}");
    }

    /// Columns come from an index, not a scan; they match counting chars.
    #[test]
    fn columns_with_wide_characters() {
        let text = "aé€😀b\nxé\n\nz😀😀y";
        let f = SourceFile::new("t", text);
        for (off, _) in text.char_indices().chain([(text.len(), ' ')]) {
            let line_start = text[..off].rfind('\n').map_or(0, |i| i + 1);
            let line = text[..off].matches('\n').count() as u32 + 1;
            let col = text[line_start..off].chars().count() as u32 + 1;
            assert_eq!(f.line_col(off), (line, col), "offset {off}");
        }
        // Inside a multi-byte character: its column.
        assert_eq!(f.line_col(2), (1, 2));
    }

    /// A long line is shown as a window around the caret; long messages are cut.
    #[test]
    fn long_lines_and_messages() {
        let line = format!("{}HERE{}", "a".repeat(5000), "b".repeat(5000));
        let f = SourceFile::new("t", line.clone());
        let d = f.error(5000, 5004, "x".repeat(1000));
        assert_eq!((d.line, d.col, d.width), (1, 5001, 4));
        assert!(d.source_line.starts_with('…') && d.source_line.ends_with('…'));
        assert_eq!(d.source_line.chars().nth(d.source_col as usize - 1), Some('H'));
        assert!(d.message.chars().count() <= MESSAGE_MAX + 1 && d.message.ends_with('…'));
        let shown = d.to_string();
        let caret = shown.lines().nth(3).unwrap();
        assert_eq!(caret.find('^').unwrap() - caret.find('|').unwrap() - 2, d.source_col as usize - 1);
        // Near the start or the end the window does not run off the line.
        let (s, c) = excerpt(&line, 3);
        assert!(!s.starts_with('…') && s.ends_with('…') && c == 3);
        let (s, c) = excerpt(&line, 10_004);
        assert!(s.starts_with('…') && !s.ends_with('…'));
        assert_eq!(s.chars().nth(c as usize - 1), Some('b'));
    }
}
