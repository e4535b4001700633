//! A tiny regular-expression engine over bytes that finds every end
//! position (ocamllex's longest match, first rule on a tie), and the
//! character classes of `lexLog_tools.mll`.

use std::collections::BTreeSet;

#[derive(Clone, Debug)]
pub(super) enum Re {
    Lit(&'static [u8]),
    Class(fn(u8) -> bool),
    Seq(Vec<Re>),
    Alt(Vec<Re>),
    Star(Box<Re>),
}

pub(super) fn lit(s: &'static str) -> Re {
    Re::Lit(s.as_bytes())
}
pub(super) fn class(f: fn(u8) -> bool) -> Re {
    Re::Class(f)
}
pub(super) fn seq(v: Vec<Re>) -> Re {
    Re::Seq(v)
}
pub(super) fn alt(v: Vec<Re>) -> Re {
    Re::Alt(v)
}
pub(super) fn star(r: Re) -> Re {
    Re::Star(Box::new(r))
}
pub(super) fn plus(r: Re) -> Re {
    seq(vec![r.clone(), star(r)])
}
pub(super) fn opt(r: Re) -> Re {
    alt(vec![r, lit("")])
}

impl Re {
    /// Every position where a match starting at `i` can end.
    pub(super) fn ends(&self, s: &[u8], i: usize) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        match self {
            Re::Lit(l) => {
                if s[i..].starts_with(l) {
                    out.insert(i + l.len());
                }
            }
            Re::Class(f) => {
                if i < s.len() && f(s[i]) {
                    out.insert(i + 1);
                }
            }
            Re::Seq(v) => {
                let mut cur: BTreeSet<usize> = [i].into();
                for r in v {
                    let mut next = BTreeSet::new();
                    for &p in &cur {
                        next.extend(r.ends(s, p));
                    }
                    cur = next;
                    if cur.is_empty() {
                        break;
                    }
                }
                out = cur;
            }
            Re::Alt(v) => {
                for r in v {
                    out.extend(r.ends(s, i));
                }
            }
            Re::Star(r) => {
                out.insert(i);
                let mut frontier = vec![i];
                while let Some(p) = frontier.pop() {
                    for e in r.ends(s, p) {
                        if e > p && out.insert(e) {
                            frontier.push(e);
                        }
                    }
                }
            }
        }
        out
    }

    /// The longest match at `i`, if any.
    pub(super) fn longest(&self, s: &[u8], i: usize) -> Option<usize> {
        self.ends(s, i).into_iter().next_back()
    }
}

pub(super) fn is_digit(c: u8) -> bool {
    c.is_ascii_digit()
}
pub(super) fn is_alpha(c: u8) -> bool {
    c.is_ascii_alphabetic()
}
pub(super) fn is_hexa(c: u8) -> bool {
    c.is_ascii_hexdigit()
}
pub(super) fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}
pub(super) fn not_nl(c: u8) -> bool {
    c != b'\r' && c != b'\n'
}
