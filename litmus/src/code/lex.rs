//! The thread language's tokens, lexed on demand from the decoded string
//! (identifiers and numbers are the ones conditions use: `crate::lex`).

use crate::lex::{ident, number, In};
use winnow::combinator::alt;
use winnow::prelude::*;
use winnow::stream::Location;
use winnow::token::{any, take_till, take_while};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Tok {
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
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) start: usize,
    pub(super) end: usize,
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
pub(super) fn next_token(input: &mut In<'_>, src_len: usize) -> Token {
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
pub(super) fn nth_suffix(input: &mut In<'_>) -> Option<Token> {
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
