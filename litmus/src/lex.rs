//! Lexing shared by the thread language (`code`) and conditions (`cond`):
//! identifiers and numbers, on winnow's located input.

use winnow::combinator::{alt, peek, repeat};
use winnow::prelude::*;
use winnow::stream::LocatingSlice;
use winnow::token::{one_of, take_while};

pub(crate) type In<'a> = LocatingSlice<&'a str>;

/// A name: a letter or `_`, then letters, digits, `_`, and `-` before a
/// letter or digit.
pub(crate) fn ident<'a>(i: &mut In<'a>) -> ModalResult<&'a str> {
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

/// A decimal or `0x` number (`_` separators); `None` if it overflows.
pub(crate) fn number(i: &mut In<'_>) -> ModalResult<Option<u64>> {
    alt((
        (alt(("0x", "0X")), take_while(1.., |c: char| c.is_ascii_hexdigit() || c == '_')).take(),
        take_while(1.., |c: char| c.is_ascii_digit() || c == '_'),
    ))
    .map(parse_number)
    .parse_next(i)
}
