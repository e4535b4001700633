//! The thread language inside `code = """…"""` strings.
//!
//! Line-oriented: one statement per line (or several separated by `;`),
//! `#` starts a comment, `{ … }` blocks (hook bodies, loop bodies) may span
//! lines. The lexer (winnow) works on the *decoded* TOML string; every
//! position is mapped back through a [`TextMap`] to the byte offset in the
//! file, so a diagnostic for the third line of a code block names the file's
//! line and column, not the string's.

use crate::ast::{HookBlock, Operand, Stmt};
use crate::diag::{Diagnostic, SourceFile, MAX_DIAGNOSTICS};
use abi::limits::MAX_RECORDS;
use abi::litmus::{Advice, Hook, Op, Perm, ThreadKind, WaitCmp, MAX_DEPTH, MAX_REGS, RESERVED_MIN};
use winnow::combinator::{alt, peek, repeat};
use winnow::prelude::*;
use winnow::stream::{LocatingSlice, Location};
use winnow::token::{any, one_of, take_till, take_while};

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

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `#N` right after an identifier (`at after_pte_clear#2`); a `#`
    /// anywhere else starts a comment.
    Nth(Option<u64>),
    Num(Option<u64>),
    Arrow,
    EqEq,
    LBrace,
    RBrace,
    Semi,
    Newline,
    /// A character no token starts with.
    Bad(char),
    Eof,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

type In<'a> = LocatingSlice<&'a str>;

fn ident<'a>(i: &mut In<'a>) -> ModalResult<&'a str> {
    (
        one_of(|c: char| c.is_ascii_alphabetic() || c == '_'),
        repeat::<_, _, (), _, _>(
            0..,
            alt((
                take_while(1.., |c: char| c.is_ascii_alphanumeric() || c == '_').void(),
                // `my-page` is a name, `x->r0` is `x` `->` `r0`.
                ('-', peek(one_of(|c: char| c.is_ascii_alphanumeric()))).void(),
            )),
        ),
    )
        .take()
        .parse_next(i)
}

/// `123`, `1_000`, `0x1f`.
pub(crate) fn parse_number(s: &str) -> Option<u64> {
    let s = s.replace('_', "");
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

fn number(i: &mut In<'_>) -> ModalResult<Option<u64>> {
    alt((
        (alt(("0x", "0X")), take_while(1.., |c: char| c.is_ascii_hexdigit() || c == '_')).take(),
        take_while(1.., |c: char| c.is_ascii_digit() || c == '_'),
    ))
    .map(parse_number)
    .parse_next(i)
}

fn token(i: &mut In<'_>) -> ModalResult<Tok> {
    alt((
        "->".value(Tok::Arrow),
        "==".value(Tok::EqEq),
        '{'.value(Tok::LBrace),
        '}'.value(Tok::RBrace),
        ';'.value(Tok::Semi),
        '\n'.value(Tok::Newline),
        number.map(Tok::Num),
        ident.map(|s: &str| Tok::Ident(s.to_string())),
    ))
    .parse_next(i)
}

/// Skip blanks and a `#` comment.
fn blanks(i: &mut In<'_>) -> ModalResult<()> {
    take_while(0.., [' ', '\t', '\r']).void().parse_next(i)?;
    if i.starts_with('#') {
        take_till(0.., '\n').void().parse_next(i)?;
    }
    Ok(())
}

/// The next token (lexed on demand, so a huge code string is never held
/// as a token list); a character no token starts with becomes
/// [`Tok::Bad`], so the parser reports it once, as "expected …, found `$`".
fn next_token(input: &mut In<'_>, src_len: usize) -> Token {
    let _ = blanks(input);
    if input.is_empty() {
        return Token { tok: Tok::Eof, start: src_len, end: src_len };
    }
    let start = input.current_token_start();
    match token(input) {
        Ok(tok) => Token { tok, start, end: input.current_token_start() },
        Err(_) => {
            let c: char = any::<_, winnow::error::ContextError>(input).unwrap_or('?');
            Token { tok: Tok::Bad(c), start, end: start + c.len_utf8() }
        }
    }
}

/// `#N` right after a hook name (`at after_flush#2`, no blank between):
/// the N-th firing. Lexed here because a `#` after a blank starts a comment.
fn nth_suffix(input: &mut In<'_>) -> Option<Token> {
    let mut digits = input.chars().skip(1);
    if !(input.starts_with('#') && digits.next().is_some_and(|c| c.is_ascii_digit())) {
        return None;
    }
    let start = input.current_token_start();
    let n: Result<&str, winnow::error::ContextError> =
        ('#', take_while(1.., |c: char| c.is_ascii_digit())).take().parse_next(input);
    let n = n.ok().and_then(|t| t[1..].parse().ok());
    Some(Token { tok: Tok::Nth(n), start, end: input.current_token_start() })
}

/// Instruction records left for the test's threads (`abi::limits::MAX_RECORDS`
/// over all of them): a statement takes one, each of its hook groups one
/// more; a loop body counts once. Parsing stops where the budget runs out,
/// so memory stays bounded whatever the file's size.
#[derive(Clone, Copy, Debug)]
pub struct RecordBudget {
    left: usize,
    exceeded: bool,
}

impl Default for RecordBudget {
    fn default() -> Self {
        RecordBudget { left: MAX_RECORDS, exceeded: false }
    }
}

impl RecordBudget {
    /// The budget ran out (already reported).
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }
}

/// Where a block sits, which decides the operations allowed in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    Thread(ThreadKind),
    Hook,
}

impl Ctx {
    fn allows(self, op: Op) -> bool {
        match self {
            Ctx::Thread(ThreadKind::Vcpu) => op.is_vcpu_op(),
            Ctx::Thread(ThreadKind::Device) => op.is_device_op(),
            Ctx::Hook => op.is_sync_op(),
        }
    }
    fn valid_ops(self) -> String {
        Op::ALL.iter().filter(|o| self.allows(**o)).map(|o| o.name()).collect::<Vec<_>>().join(", ")
    }
    fn describe(self) -> &'static str {
        match self {
            Ctx::Thread(ThreadKind::Vcpu) => "vCPU thread",
            Ctx::Thread(ThreadKind::Device) => "device thread",
            Ctx::Hook => "hook block",
        }
    }
}

/// `rN` with N < 32.
pub(crate) fn register_index(s: &str) -> Option<u8> {
    let d = s.strip_prefix('r')?;
    if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) || (d.len() > 1 && d.starts_with('0')) {
        return None;
    }
    d.parse::<u8>().ok().filter(|r| *r < MAX_REGS)
}

/// Looks like a register (`r` + digits) even if out of range.
pub(crate) fn looks_like_register(s: &str) -> bool {
    s.len() > 1 && s.starts_with('r') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

struct CodeParser<'a, 's> {
    input: In<'s>,
    src_len: usize,
    /// The current token (one token of lookahead is all the grammar needs).
    cur: Token,
    /// A `#N` lexed together with the identifier before it, next in line.
    pending: Option<Token>,
    /// Parsing was cut short (too many errors or records): everything
    /// after reads as the end of the code, and nothing more is reported.
    stopped: bool,
    file: &'a SourceFile,
    map: &'a TextMap,
    diags: Vec<Diagnostic>,
    budget: &'a mut RecordBudget,
}

/// Error already reported; the statement is skipped.
struct Skip;

impl<'a, 's> CodeParser<'a, 's> {
    fn peek(&self) -> &Token {
        &self.cur
    }
    fn bump(&mut self) -> Token {
        let next = if self.stopped {
            Token { tok: Tok::Eof, start: self.src_len, end: self.src_len }
        } else if let Some(t) = self.pending.take() {
            t
        } else {
            let t = next_token(&mut self.input, self.src_len);
            if matches!(t.tok, Tok::Ident(_)) {
                self.pending = nth_suffix(&mut self.input);
            }
            t
        };
        std::mem::replace(&mut self.cur, next)
    }
    /// Stop parsing: the rest of the code reads as its end.
    fn stop(&mut self) {
        self.stopped = true;
        self.cur = Token { tok: Tok::Eof, start: self.src_len, end: self.src_len };
    }
    /// Keep a diagnostic; past [`MAX_DIAGNOSTICS`] the rest of this code is
    /// not parsed (the report would only grow).
    fn push(&mut self, d: Diagnostic) {
        if self.stopped {
            return;
        }
        self.diags.push(d);
        if self.diags.len() >= MAX_DIAGNOSTICS {
            self.stop();
        }
    }
    /// Takes `n` records from the budget, or reports the limit at `t` and stops.
    fn take_records(&mut self, n: usize, t: &Token) -> Result<(), Skip> {
        if self.budget.left >= n {
            self.budget.left -= n;
            return Ok(());
        }
        let msg = format!(
            "more than {MAX_RECORDS} instruction records in this test (a statement is one, a hook block one more, a loop body counts once)"
        );
        let skip = self.error_at(t, msg);
        self.budget.exceeded = true;
        self.stop();
        Err(skip)
    }
    fn fspan(&self, t: &Token) -> (usize, usize) {
        (self.map.file_offset(t.start), self.map.file_offset(t.end))
    }
    fn describe(t: &Token) -> String {
        match &t.tok {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Num(_) => "a number".into(),
            Tok::Nth(_) => "`#N`".into(),
            Tok::Arrow => "`->`".into(),
            Tok::EqEq => "`==`".into(),
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::Semi => "`;`".into(),
            Tok::Newline => "end of line".into(),
            Tok::Bad(c) => format!("`{}`", c.escape_default()),
            Tok::Eof => "end of code".into(),
        }
    }
    fn error_at(&mut self, t: &Token, msg: String) -> Skip {
        let (s, e) = self.fspan(t);
        self.push(self.file.error(s, e, msg));
        Skip
    }
    fn expected(&mut self, what: &str) -> Skip {
        let t = self.peek().clone();
        let msg = format!("expected {what}, found {}", Self::describe(&t));
        self.error_at(&t, msg)
    }
    fn expected_with_note(&mut self, what: &str, note: String) -> Skip {
        let t = self.peek().clone();
        let msg = format!("expected {what}, found {}", Self::describe(&t));
        let (s, e) = self.fspan(&t);
        self.push(self.file.error(s, e, msg).with_note(note));
        Skip
    }

    /// Skip to the end of the current statement after an error.
    fn recover(&mut self) {
        let mut depth = 0usize;
        loop {
            match self.peek().tok {
                Tok::Eof => return,
                Tok::Newline | Tok::Semi if depth == 0 => return,
                Tok::RBrace if depth == 0 => return,
                Tok::LBrace => depth += 1,
                Tok::RBrace => depth -= 1,
                _ => {}
            }
            self.bump();
        }
    }

    fn block(&mut self, ctx: Ctx, closing: Option<&Token>, depth: usize) -> Vec<Stmt> {
        let mut out = Vec::new();
        loop {
            match self.peek().tok {
                Tok::Newline | Tok::Semi => {
                    self.bump();
                }
                Tok::Eof => {
                    if let Some(open) = closing.filter(|_| !self.stopped) {
                        let open = open.clone();
                        self.error_at(&open, "unclosed `{`: expected `}` before the end of the code".into());
                    }
                    return out;
                }
                Tok::RBrace => {
                    if closing.is_some() {
                        self.bump();
                        return out;
                    }
                    let t = self.bump();
                    self.error_at(&t, "unexpected `}` with no open block".into());
                }
                _ => match self.stmt(ctx, depth) {
                    Ok(s) => {
                        out.push(s);
                        match self.peek().tok {
                            Tok::Newline | Tok::Semi | Tok::Eof => {}
                            Tok::RBrace if closing.is_some() => {}
                            _ => {
                                let what = "end of statement (a new line, `;` or `}`)";
                                let _ = self.expected(what);
                                self.recover();
                            }
                        }
                    }
                    Err(Skip) => self.recover(),
                },
            }
        }
    }

    fn ident(&mut self, what: &str) -> Result<(String, Token), Skip> {
        match self.peek().tok.clone() {
            Tok::Ident(s) => Ok((s, self.bump())),
            _ => Err(self.expected(what)),
        }
    }

    fn location(&mut self) -> Result<(String, (usize, usize)), Skip> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Ident(s) if looks_like_register(s) => {
                Err(self.error_at(&t, format!("expected a location name, found register `{s}`")))
            }
            Tok::Ident(s) => {
                self.bump();
                Ok((s.clone(), self.fspan(&t)))
            }
            _ => Err(self.expected("a location name")),
        }
    }

    fn register(&mut self) -> Result<u8, Skip> {
        let t = self.peek().clone();
        match &t.tok {
            Tok::Ident(s) if looks_like_register(s) => match register_index(s) {
                Some(r) => {
                    self.bump();
                    Ok(r)
                }
                None => Err(self.error_at(&t, format!("invalid register `{s}`: registers are r0 … r{}", MAX_REGS - 1))),
            },
            _ => Err(self.expected("a register (r0 … r31)")),
        }
    }

    fn number(&mut self, what: &str) -> Result<u64, Skip> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Num(Some(v)) if v < RESERVED_MIN => {
                self.bump();
                Ok(v)
            }
            Tok::Num(_) => Err(self.error_at(
                &t,
                format!("number out of range: values must be below {RESERVED_MIN:#x} (the top 16 are reserved for fault, stale-walk, timeout)"),
            )),
            _ => Err(self.expected(what)),
        }
    }

    fn value(&mut self) -> Result<Operand, Skip> {
        match &self.peek().tok {
            Tok::Num(_) => Ok(Operand::Imm(self.number("a value")?)),
            Tok::Ident(s) if looks_like_register(s) => Ok(Operand::Reg(self.register()?)),
            _ => Err(self.expected("a value (a number or a register)")),
        }
    }

    fn arrow(&mut self) -> Result<(), Skip> {
        if self.peek().tok == Tok::Arrow {
            self.bump();
            Ok(())
        } else {
            Err(self.expected("`->`"))
        }
    }

    fn word(&mut self, choices: &[&str], what: &str) -> Result<usize, Skip> {
        if let Tok::Ident(s) = &self.peek().tok {
            if let Some(i) = choices.iter().position(|c| c == s) {
                self.bump();
                return Ok(i);
            }
        }
        Err(self.expected_with_note(what, format!("expected one of: {}", choices.join(", "))))
    }

    fn at_line_end(&self) -> bool {
        matches!(self.peek().tok, Tok::Newline | Tok::Semi | Tok::Eof | Tok::RBrace)
    }

    fn stmt(&mut self, ctx: Ctx, depth: usize) -> Result<Stmt, Skip> {
        let t = self.peek().clone();
        let name = match &t.tok {
            Tok::Ident(s) => s.clone(),
            _ => {
                return Err(self.expected_with_note(
                    "an operation",
                    format!("valid operations in a {}: {}", ctx.describe(), ctx.valid_ops()),
                ))
            }
        };
        let Some(op) = Op::from_name(&name).filter(|o| !matches!(o, Op::Nop | Op::At)) else {
            let (s, e) = self.fspan(&t);
            self.push(self.file.error(s, e, format!("unknown operation `{name}`")).with_note(format!(
                "valid operations in a {}: {}",
                ctx.describe(),
                ctx.valid_ops()
            )));
            return Err(Skip);
        };
        if !ctx.allows(op) {
            let (s, e) = self.fspan(&t);
            let why = match (ctx, op.is_device_op()) {
                (Ctx::Thread(ThreadKind::Vcpu), true) => {
                    format!("`{name}` is a device operation; use it in a [device.NAME] thread")
                }
                (Ctx::Thread(ThreadKind::Device), _) => format!("`{name}` is not a device operation"),
                _ => format!("`{name}` is not allowed in a {}", ctx.describe()),
            };
            self.push(self.file.error(s, e, why).with_note(format!(
                "valid operations in a {}: {}",
                ctx.describe(),
                ctx.valid_ops()
            )));
            return Err(Skip);
        }
        self.take_records(1, &t)?;
        self.bump();
        let (s0, e0) = self.fspan(&t);
        let (line, col) = self.file.line_col(s0);
        let mut st = Stmt::new(op, line, col, (s0, e0));
        macro_rules! loc {
            () => {{
                let (l, sp) = self.location()?;
                st.loc = Some(l);
                st.loc_span = sp;
            }};
        }
        macro_rules! loc2 {
            () => {{
                let (l, sp) = self.location()?;
                st.loc2 = Some(l);
                st.loc2_span = sp;
            }};
        }
        match op {
            Op::Load | Op::DmaLoad | Op::Mkclean => {
                loc!();
                self.arrow()?;
                st.dst = Some(self.register()?);
            }
            Op::Store | Op::DmaStore => {
                loc!();
                st.val = Some(self.value()?);
            }
            Op::Xchg | Op::FetchAdd | Op::DmaXchg | Op::DmaFetchAdd => {
                loc!();
                st.val = Some(self.value()?);
                self.arrow()?;
                st.dst = Some(self.register()?);
            }
            Op::Cmpxchg => {
                loc!();
                st.val = Some(self.value()?);
                st.val2 = Some(self.value()?);
                self.arrow()?;
                st.dst = Some(self.register()?);
            }
            Op::Mfence | Op::Barrier => {}
            Op::Wait => {
                loc!();
                if self.peek().tok == Tok::EqEq {
                    self.bump();
                    st.arg = WaitCmp::Eq as u8;
                    st.val = Some(Operand::Imm(self.number("a number after `==`")?));
                } else {
                    st.arg = WaitCmp::NonZero as u8;
                }
            }
            Op::Signal => {
                loc!();
                let v = if self.at_line_end() || matches!(&self.peek().tok, Tok::Ident(s) if s == "at") {
                    1
                } else {
                    self.number("a value or the end of the statement")?
                };
                st.val = Some(Operand::Imm(v));
            }
            Op::Delay => st.val = Some(Operand::Imm(self.number("an iteration count")?)),
            Op::Touch => {
                loc!();
                if matches!(&self.peek().tok, Tok::Ident(s) if s == "write") {
                    self.bump();
                    st.arg = 1;
                } else if matches!(&self.peek().tok, Tok::Ident(s) if s == "read") {
                    self.bump();
                }
            }
            Op::Mmap => {
                loc!();
                let i = self.word(&["rw", "ro"], "a permission")?;
                st.arg = [Perm::Rw, Perm::Ro][i] as u8;
            }
            Op::Mprotect => {
                loc!();
                let i = self.word(&["rw", "ro", "none"], "a permission")?;
                st.arg = [Perm::Rw, Perm::Ro, Perm::None][i] as u8;
            }
            Op::Madvise => {
                loc!();
                let i = self.word(&["dontneed", "free"], "an advice")?;
                st.arg = [Advice::DontNeed, Advice::Free][i] as u8;
            }
            Op::Munmap | Op::Cow | Op::Migrate | Op::Reclaim | Op::Alloc | Op::Prefetch | Op::Truncate => loc!(),
            Op::UffdWp => {
                loc!();
                let i = self.word(&["on", "off"], "`on` (write-protect) or `off` (resolve)")?;
                st.arg = (i == 0) as u8;
            }
            Op::Ksm => {
                loc!();
                loc2!();
            }
            Op::Mremap => {
                loc!();
                self.arrow()?;
                loc2!();
            }
            Op::Loop => {
                st.val = Some(Operand::Imm(self.number("an iteration count")?));
                if self.peek().tok != Tok::LBrace {
                    return Err(self.expected("`{` to open the loop body"));
                }
                if depth + 1 >= MAX_DEPTH {
                    let t = self.peek().clone();
                    return Err(self.error_at(&t, format!("blocks nested too deeply (at most {})", MAX_DEPTH - 1)));
                }
                let open = self.bump();
                st.body = self.block(ctx, Some(&open), depth + 1);
            }
            Op::Nop | Op::At => unreachable!("filtered above"),
        }
        // Hook modifiers: `at HOOK { … }`, possibly several.
        while matches!(&self.peek().tok, Tok::Ident(s) if s == "at") {
            let at = self.peek().clone();
            if !op.takes_hooks() {
                return Err(self.error_at(
                    &at,
                    format!("`{name}` takes no hook modifiers: hooks belong to memory and mm operations"),
                ));
            }
            self.bump();
            let hooks = Hook::ALL.iter().map(|h| h.name()).collect::<Vec<_>>().join(", ");
            let (hname, ht) = match self.ident("a hook name") {
                Ok(x) => x,
                Err(_) => {
                    if let Some(d) = self.diags.last_mut() {
                        d.notes.push(format!("valid hooks: {hooks}"));
                    }
                    return Err(Skip);
                }
            };
            let Some(hook) = Hook::from_name(&hname) else {
                let (s, e) = self.fspan(&ht);
                self.push(
                    self.file.error(s, e, format!("unknown hook `{hname}`")).with_note(format!("valid hooks: {hooks}")),
                );
                return Err(Skip);
            };
            let mut nth = 0;
            if let Tok::Nth(n) = self.peek().tok.clone() {
                let nt = self.bump();
                match n.filter(|n| (1..=u32::MAX as u64).contains(n)) {
                    Some(n) => nth = n as u32,
                    None => {
                        return Err(
                            self.error_at(&nt, format!("`{hname}#N`: N counts firings from 1 (at most {})", u32::MAX))
                        )
                    }
                }
            }
            if st.hooks.iter().any(|h| h.hook == hook && h.nth == nth) {
                let which = if nth == 0 { format!("`{hname}`") } else { format!("`{hname}#{nth}`") };
                return Err(self.error_at(&ht, format!("hook {which} given twice for one operation")));
            }
            if self.peek().tok != Tok::LBrace {
                return Err(self.expected("`{` to open the hook body"));
            }
            self.take_records(1, &at)?;
            let open = self.bump();
            let body = self.block(Ctx::Hook, Some(&open), depth + 1);
            st.hooks.push(HookBlock { hook, nth, body });
        }
        Ok(st)
    }
}

/// Parse one thread's code. `map` maps `src` offsets to file offsets;
/// `budget` is what is left of the test's instruction records (nothing is
/// parsed once it ran out: that was reported where it did).
pub fn parse_code(
    file: &SourceFile,
    map: &TextMap,
    src: &str,
    kind: ThreadKind,
    budget: &mut RecordBudget,
) -> (Vec<Stmt>, Vec<Diagnostic>) {
    if budget.exceeded {
        return (Vec::new(), Vec::new());
    }
    let mut input = LocatingSlice::new(src);
    let cur = next_token(&mut input, src.len());
    let pending = if matches!(cur.tok, Tok::Ident(_)) { nth_suffix(&mut input) } else { None };
    let mut p =
        CodeParser { input, src_len: src.len(), cur, pending, stopped: false, file, map, diags: Vec::new(), budget };
    let code = p.block(Ctx::Thread(kind), None, 1);
    (code, p.diags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str, kind: ThreadKind) -> (Vec<Stmt>, Vec<Diagnostic>) {
        let f = SourceFile::new("t", src);
        let map = TextMap::identity(0, src.len());
        parse_code(&f, &map, src, kind, &mut RecordBudget::default())
    }

    #[test]
    fn all_vcpu_ops_round_trip() {
        let src = "load x -> r0\nstore x 1; store x r0\nxchg x 2 -> r1\ncmpxchg x 1 r1 -> r2\nfetch_add x 1 -> r3\nmfence\n\
                   wait f\nwait f == 2\nsignal f\nsignal f 3\nbarrier\ndelay 100\ntouch x write\ntouch x\nmmap u rw\nmunmap x\n\
                   mprotect x none\nmadvise x free\ncow x\nksm x y\nmigrate x\nmkclean x -> r4\nreclaim x\nmremap x -> u\nalloc u # c\n\
                   truncate x\nuffd_wp x on\nuffd_wp x off\n\
                   madvise x dontneed at after_ptl_release { signal s1; wait s2 } at before_free {\n delay 5\n}\n\
                   munmap x at after_pte_clear#2 { signal a } # a comment\n";
        let (code, d) = parse(src, ThreadKind::Vcpu);
        assert!(d.is_empty(), "{d:?}");
        let printed: Vec<String> = code.iter().map(|s| s.to_string()).collect();
        assert_eq!(printed[0], "load x -> r0");
        assert_eq!(printed[2], "store x r0");
        assert_eq!(printed[4], "cmpxchg x 1 r1 -> r2");
        assert_eq!(printed[9], "signal f 1");
        assert_eq!(
            printed[printed.len() - 2],
            "madvise x dontneed at after_ptl_release { signal s1 1; wait s2 } at before_free { delay 5 }"
        );
        assert_eq!(printed[26], "truncate x");
        assert_eq!(printed[27], "uffd_wp x on");
        assert_eq!(printed[28], "uffd_wp x off");
        assert_eq!(printed.last().unwrap(), "munmap x at after_pte_clear#2 { signal a 1 }");
        assert_eq!(code.last().unwrap().hooks[0].nth, 2);
        assert_eq!(code.len(), 31);
    }

    #[test]
    fn device_loop_spans_lines() {
        let src = "prefetch x\nloop 3 {\n  dma_store x 1\n  loop 2 { dma_load x -> r0 }\n}\ndma_fetch_add x 1 -> r1\n";
        let (code, d) = parse(src, ThreadKind::Device);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(code.len(), 3);
        assert_eq!(code[1].to_string(), "loop 3 { dma_store x 1; loop 2 { dma_load x -> r0 } }");
    }

    #[test]
    fn errors_have_positions_and_lists() {
        let (_, d) = parse("load x -> r0\nstore x 1\nlod x -> r0\n", ThreadKind::Vcpu);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].line, d[0].col), (3, 1));
        assert_eq!(d[0].message, "unknown operation `lod`");
        assert!(d[0].notes[0].contains("load, store, xchg"));
        let (_, d) = parse("madvise x dontneed at after_ptl_relase { signal a }\n", ThreadKind::Vcpu);
        assert_eq!(d[0].message, "unknown hook `after_ptl_relase`");
        assert_eq!((d[0].line, d[0].col), (1, 23));
        assert!(d[0].notes[0].contains("after_ptl_release"));
        let (_, d) = parse("load x r0\n", ThreadKind::Vcpu);
        assert_eq!(d[0].message, "expected `->`, found `r0`");
        assert_eq!(d[0].col, 8);
        let (_, d) = parse("dma_load x -> r0\n", ThreadKind::Vcpu);
        assert!(d[0].message.contains("device operation"));
        let (_, d) = parse("load x -> r0\n", ThreadKind::Device);
        assert!(d[0].notes[0].contains("dma_load"));
        let (_, d) = parse("loop 2 {\n dma_store x 1\n", ThreadKind::Device);
        assert!(d[0].message.starts_with("unclosed `{`"), "{d:?}");
        let (_, d) = parse("mfence at after_flush { signal a }", ThreadKind::Vcpu);
        assert!(d[0].message.contains("takes no hook"));
        let (_, d) = parse("store x 1 at after_fault { load x -> r0 }", ThreadKind::Vcpu);
        assert!(d[0].message.contains("not allowed in a hook block"), "{d:?}");
        let (_, d) = parse("load x -> r0 r1\nstore x $\n", ThreadKind::Vcpu);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[1].message, "expected a value (a number or a register), found `$`");
        let (_, d) = parse("store x 18446744073709551615", ThreadKind::Vcpu);
        assert!(d[0].message.contains("reserved"));
        let (_, d) = parse("load x -> r32", ThreadKind::Vcpu);
        assert!(d[0].message.contains("invalid register"));
        let (_, d) = parse("munmap x at after_pte_clear#0 { signal a }", ThreadKind::Vcpu);
        assert!(d[0].message.contains("counts firings from 1"), "{d:?}");
        let (_, d) = parse("munmap x at before_free#2 { signal a } at before_free#2 { signal b }", ThreadKind::Vcpu);
        assert!(d[0].message.contains("`before_free#2` given twice"), "{d:?}");
        let (c, d) = parse("munmap x at before_free { signal a } at before_free#2 { signal b }", ThreadKind::Vcpu);
        assert!(d.is_empty() && c[0].hooks.len() == 2, "{d:?}");
        let (_, d) = parse("uffd_wp x maybe", ThreadKind::Vcpu);
        assert!(d[0].notes[0].contains("on, off"), "{d:?}");
    }

    #[test]
    fn literal_map_handles_multiline_and_escapes() {
        let file = "a = 1\ncode = \"\"\"\nload x -> r0\n  lod y\n\"\"\"\ns = \"a\\tb c\"\n";
        let start = file.find("\"\"\"").unwrap();
        let end = file.rfind("\"\"\"").unwrap() + 3;
        let value = "load x -> r0\n  lod y\n";
        let m = TextMap::for_literal(file, start, end, value);
        let f = SourceFile::new("f", file);
        let i = value.find("lod").unwrap();
        assert_eq!(f.line_col(m.file_offset(i)), (4, 3));
        let s2 = file.find("\"a").unwrap();
        let e2 = file.rfind('"').unwrap() + 1;
        let m = TextMap::for_literal(file, s2, e2, "a\tb c");
        assert_eq!(f.line_col(m.file_offset(4)), (6, 11));
    }
}
