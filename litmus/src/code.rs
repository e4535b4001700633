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
use crate::lex::In;
use crate::text_map::TextMap;
use abi::limits::MAX_RECORDS;
use abi::litmus::{Advice, Hook, Op, Perm, ThreadKind, WaitCmp, MAX_DEPTH, MAX_REGS, RESERVED_MIN};
use lex::{next_token, nth_suffix, Tok, Token};
use winnow::stream::LocatingSlice;

mod lex;

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
mod tests;
