//! Conditions of `[final]`: `forbidden = "P2:r1 == 1 && x != 0"`.
//!
//! Atoms compare a register (`THREAD:rN`) or a location (`x`) with a number
//! or one of the outcome names `fault`, `stale-walk`, `timeout`. Connectives:
//! `&&` / `/\`, `||` / `\/`, `!` / `~`, parentheses; `=` and `<>` are accepted
//! as herdtools spellings of `==` and `!=`. `!` binds tighter than `&&`,
//! which binds tighter than `||`.
//!
//! A chain `a && b && c` is one n-ary node, so its length costs no depth;
//! `(` and `!` nest at most [`MAX_CONDITION_DEPTH`] deep, which bounds the
//! parser's recursion and every later walk of the tree.

use crate::diag::{Diagnostic, SourceFile};
use crate::lex::{ident, number, In};
use crate::text_map::TextMap;
use abi::limits::MAX_CONDITION_DEPTH;
use abi::litmus::{special_value_from_name, RESERVED_MIN};
use winnow::combinator::{alt, dispatch, peek};
use winnow::prelude::*;
use winnow::stream::{LocatingSlice, Location};
use winnow::token::{any, take_while};

/// A condition before its names are resolved. Spans are file byte offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawExpr {
    True,
    False,
    Cmp {
        /// `P2:r1` or `x`.
        lhs: String,
        span: (usize, usize),
        eq: bool,
        value: u64,
    },
    Not(Box<RawExpr>),
    /// Two or more terms.
    And(Vec<RawExpr>),
    /// Two or more terms.
    Or(Vec<RawExpr>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Num(Option<u64>),
    Colon,
    Eq,
    Ne,
    And,
    Or,
    Not,
    LParen,
    RParen,
    Bad(char),
    Eof,
}

/// One token, chosen by its first character (no failed alternatives to
/// build errors for: a condition may have a hundred thousand tokens).
fn token(i: &mut In<'_>) -> ModalResult<Tok> {
    dispatch! {peek(any);
        '=' => alt(("==", "=")).value(Tok::Eq),
        '!' => alt(("!=".value(Tok::Ne), "!".value(Tok::Not))),
        '<' => "<>".value(Tok::Ne),
        '&' => "&&".value(Tok::And),
        '/' => "/\\".value(Tok::And),
        '|' => "||".value(Tok::Or),
        '\\' => "\\/".value(Tok::Or),
        '~' => '~'.value(Tok::Not),
        ':' => ':'.value(Tok::Colon),
        '(' => '('.value(Tok::LParen),
        ')' => ')'.value(Tok::RParen),
        '0'..='9' => number.map(Tok::Num),
        _ => ident.map(|s: &str| Tok::Ident(s.to_string())),
    }
    .parse_next(i)
}

fn lex(src: &str) -> Vec<(Tok, usize, usize)> {
    let mut input = LocatingSlice::new(src);
    let mut out = Vec::new();
    loop {
        let _ = take_while::<_, _, winnow::error::ContextError>(0.., char::is_whitespace).parse_next(&mut input);
        if input.is_empty() {
            break;
        }
        let start = input.current_token_start();
        match token(&mut input) {
            Ok(t) => out.push((t, start, input.current_token_start())),
            Err(_) => {
                let c: char = any::<_, winnow::error::ContextError>(&mut input).unwrap_or('?');
                out.push((Tok::Bad(c), start, start + c.len_utf8()));
            }
        }
    }
    out.push((Tok::Eof, src.len(), src.len()));
    out
}

struct P<'a> {
    toks: Vec<(Tok, usize, usize)>,
    pos: usize,
    file: &'a SourceFile,
    map: &'a TextMap,
}

impl P<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }
    fn bump(&mut self) -> (Tok, usize, usize) {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn span(&self) -> (usize, usize) {
        let (_, s, e) = &self.toks[self.pos];
        (self.map.file_offset(*s), self.map.file_offset(*e))
    }
    fn expected(&self, what: &str) -> Diagnostic {
        let found = match self.peek() {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Num(_) => "a number".into(),
            Tok::Colon => "`:`".into(),
            Tok::Eq => "`==`".into(),
            Tok::Ne => "`!=`".into(),
            Tok::And => "`&&`".into(),
            Tok::Or => "`||`".into(),
            Tok::Not => "`!`".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Bad(c) => format!("`{}`", c.escape_default()),
            Tok::Eof => "end of condition".into(),
        };
        let (s, e) = self.span();
        self.file.error(s, e, format!("expected {what}, found {found}"))
    }

    /// `depth`: the `(` and `!` this term sits inside.
    fn or(&mut self, depth: usize) -> Result<RawExpr, Diagnostic> {
        let mut terms = vec![self.and(depth)?];
        while *self.peek() == Tok::Or {
            self.bump();
            terms.push(self.and(depth)?);
        }
        Ok(if terms.len() == 1 { terms.swap_remove(0) } else { RawExpr::Or(terms) })
    }
    fn and(&mut self, depth: usize) -> Result<RawExpr, Diagnostic> {
        let mut terms = vec![self.unary(depth)?];
        while *self.peek() == Tok::And {
            self.bump();
            terms.push(self.unary(depth)?);
        }
        Ok(if terms.len() == 1 { terms.swap_remove(0) } else { RawExpr::And(terms) })
    }
    fn unary(&mut self, depth: usize) -> Result<RawExpr, Diagnostic> {
        if matches!(self.peek(), Tok::Not | Tok::LParen) && depth >= MAX_CONDITION_DEPTH {
            let (s, e) = self.span();
            return Err(self.file.error(
                s,
                e,
                format!("condition nested too deeply: more than {MAX_CONDITION_DEPTH} levels of `(` and `!`"),
            ));
        }
        match self.peek() {
            Tok::Not => {
                self.bump();
                Ok(RawExpr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Tok::LParen => {
                self.bump();
                let e = self.or(depth + 1)?;
                if *self.peek() != Tok::RParen {
                    return Err(self.expected("`)`"));
                }
                self.bump();
                Ok(e)
            }
            Tok::Ident(s) if s == "true" => {
                self.bump();
                Ok(RawExpr::True)
            }
            Tok::Ident(s) if s == "false" => {
                self.bump();
                Ok(RawExpr::False)
            }
            Tok::Ident(_) => self.atom(),
            _ => Err(self.expected("a comparison such as `P0:r0 == 1` or `x != 0`, `!` or `(`")),
        }
    }
    fn atom(&mut self) -> Result<RawExpr, Diagnostic> {
        let (t, s, mut e) = self.bump();
        let Tok::Ident(mut lhs) = t else { unreachable!("atom starts with an identifier") };
        if *self.peek() == Tok::Colon {
            self.bump();
            match self.bump() {
                (Tok::Ident(r), _, e2) => {
                    lhs = format!("{lhs}:{r}");
                    e = e2;
                }
                _ => {
                    self.pos -= 1;
                    return Err(self.expected("a register after `:`"));
                }
            }
        }
        let span = (self.map.file_offset(s), self.map.file_offset(e));
        let eq = match self.peek() {
            Tok::Eq => true,
            Tok::Ne => false,
            _ => return Err(self.expected("`==` or `!=`")),
        };
        self.bump();
        let value = match self.peek().clone() {
            Tok::Num(Some(v)) if v < RESERVED_MIN => v,
            Tok::Num(_) => {
                let (s, e) = self.span();
                return Err(self.file.error(s, e, "number out of range (the top 16 values are reserved)"));
            }
            Tok::Ident(n) => match special_value_from_name(&n) {
                Some(v) => v,
                None => {
                    return Err(self
                        .expected("a number or an outcome name")
                        .with_note("outcome names: fault, stale-walk, timeout"))
                }
            },
            _ => return Err(self.expected("a number or one of fault, stale-walk, timeout")),
        };
        self.bump();
        Ok(RawExpr::Cmp { lhs, span, eq, value })
    }
}

/// Parse a condition string; `map` maps its offsets to file offsets.
pub fn parse_condition(file: &SourceFile, map: &TextMap, src: &str) -> Result<RawExpr, Diagnostic> {
    let mut p = P { toks: lex(src), pos: 0, file, map };
    let e = p.or(0)?;
    if *p.peek() != Tok::Eof {
        return Err(p.expected("`&&`, `||` or the end of the condition"));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::litmus::VALUE_STALE_WALK;

    fn parse(s: &str) -> Result<RawExpr, Diagnostic> {
        let f = SourceFile::new("c", s);
        parse_condition(&f, &TextMap::identity(0, s.len()), s)
    }

    #[test]
    fn precedence_and_spellings() {
        let e = parse("P0:r0 == 1 || !x != 0 && (D0:r1 = stale-walk)").unwrap();
        let RawExpr::Or(or) = e else { panic!() };
        assert!(matches!(&or[0], RawExpr::Cmp { lhs, eq: true, value: 1, .. } if lhs == "P0:r0"));
        let RawExpr::And(and) = &or[1] else { panic!() };
        assert!(matches!(and[0], RawExpr::Not(_)));
        assert!(matches!(and[1], RawExpr::Cmp { value: VALUE_STALE_WALK, .. }));
        assert!(parse("P0:r0=1 /\\ ~(x<>0x10) \\/ true").is_ok());
        // A chain is one node, however long.
        let RawExpr::And(terms) = parse("x == 1 && x == 2 && (x == 3 && x == 4) && x == 5").unwrap() else { panic!() };
        assert_eq!(terms.len(), 4);
    }

    /// Nesting is bounded with an error at the first token too deep; long
    /// chains are not nesting.
    #[test]
    fn depth_limit() {
        let ok = format!("{}x == 0{}", "(".repeat(MAX_CONDITION_DEPTH), ")".repeat(MAX_CONDITION_DEPTH));
        assert!(parse(&ok).is_ok());
        for deep in [
            format!("{}x == 0{}", "(".repeat(10_000), ")".repeat(10_000)),
            format!("{}x == 0", "!".repeat(20_000)),
            format!("{}x == 0", "!(".repeat(10_000)),
        ] {
            let d = parse(&deep).unwrap_err();
            assert_eq!(d.col as usize, MAX_CONDITION_DEPTH + 1, "{d}");
            assert!(d.message.starts_with("condition nested too deeply"), "{d}");
        }
        let chain = vec!["x == 0"; 100_000].join(" && ");
        let RawExpr::And(terms) = parse(&chain).unwrap() else { panic!() };
        assert_eq!(terms.len(), 100_000);
        let chain = vec!["x == 0"; 100_000].join(" || ");
        assert!(matches!(parse(&chain).unwrap(), RawExpr::Or(t) if t.len() == 100_000));
    }

    #[test]
    fn errors_point_at_the_problem() {
        let d = parse("P0:r0 == 1 &&").unwrap_err();
        assert_eq!(d.col, 14);
        assert!(d.message.starts_with("expected a comparison"));
        let d = parse("P0:r0 == flt").unwrap_err();
        assert_eq!(d.col, 10);
        assert_eq!(d.notes, vec!["outcome names: fault, stale-walk, timeout"]);
        let d = parse("(x == 1").unwrap_err();
        assert_eq!(d.message, "expected `)`, found end of condition");
        let d = parse("x 1").unwrap_err();
        assert_eq!(d.message, "expected `==` or `!=`, found a number");
    }
}
