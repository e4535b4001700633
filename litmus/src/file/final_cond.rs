//! `[final]`: the condition's names resolved against threads, registers
//! and locations; the observed list.

use super::{span, text_map, Checker, RawFile};
use crate::ast::{CondKind, Condition, Expr, Location, Observable, Thread};
use crate::code::register_index;
use crate::cond::{parse_condition, RawExpr};
use abi::limits::MAX_OBSERVED;
use std::collections::HashMap;

/// Threads and locations by name, and the registers each thread writes:
/// what `[final]` resolves against, in constant time per name.
pub(super) struct Scope<'t> {
    threads: &'t [Thread],
    thread_index: HashMap<&'t str, usize>,
    /// Bit r set: thread writes register r.
    written_regs: Vec<u32>,
    loc_index: HashMap<&'t str, usize>,
}

impl<'t> Scope<'t> {
    fn new(threads: &'t [Thread], locations: &'t [Location]) -> Self {
        let mut thread_index = HashMap::new();
        for (i, t) in threads.iter().enumerate() {
            thread_index.entry(t.name.as_str()).or_insert(i);
        }
        let mut loc_index = HashMap::new();
        for (i, l) in locations.iter().enumerate() {
            loc_index.entry(l.name.as_str()).or_insert(i);
        }
        let written_regs = threads
            .iter()
            .map(|t| {
                let mut mask = 0u32;
                for s in &t.code {
                    s.walk(&mut |s| {
                        if let Some(r) = s.dst.filter(|r| u32::from(*r) < u32::BITS) {
                            mask |= 1 << r;
                        }
                    });
                }
                mask
            })
            .collect();
        Scope { threads, thread_index, written_regs, loc_index }
    }
}

/// Resolve `T:rN` or a location name to an observable.
pub(super) fn resolve_observable(
    c: &mut Checker<'_>,
    text: &str,
    sp: (usize, usize),
    scope: &Scope<'_>,
) -> Option<Observable> {
    if let Some((t, r)) = text.split_once(':') {
        let Some(&ti) = scope.thread_index.get(t) else {
            let names: Vec<&str> = scope.threads.iter().take(16).map(|t| t.name.as_str()).collect();
            let more = if scope.threads.len() > names.len() { ", …" } else { "" };
            c.error(sp, format!("unknown thread `{t}` in `{text}`"))
                .notes
                .push(format!("threads: {}{more}", names.join(", ")));
            return None;
        };
        let Some(reg) = register_index(r) else {
            c.error(sp, format!("expected a register r0 … r31 after `{t}:`, found `{r}`"));
            return None;
        };
        if scope.written_regs[ti] & (1 << reg) == 0 {
            c.error(sp, format!("`{text}` is read in [final] but thread {t} never writes r{reg}"));
            return None;
        }
        Some(Observable::Reg { thread: ti, reg })
    } else {
        match scope.loc_index.get(text) {
            Some(&loc) => Some(Observable::Loc { loc }),
            None => {
                c.error(sp, format!("unknown location `{text}` in [final]"))
                    .notes
                    .push("observe registers as THREAD:rN (e.g. P0:r1) or declared locations by name".into());
                None
            }
        }
    }
}

/// What the guest reports per iteration, in order, with where each entry
/// first appears (an `observe` item or a condition atom).
#[derive(Default)]
pub(super) struct Observed {
    list: Vec<Observable>,
    index: HashMap<Observable, usize>,
    spans: Vec<(usize, usize)>,
}

impl Observed {
    /// Index of `o`, added if new.
    fn add(&mut self, o: Observable, sp: (usize, usize)) -> (usize, bool) {
        if let Some(&i) = self.index.get(&o) {
            return (i, false);
        }
        let i = self.list.len();
        self.index.insert(o.clone(), i);
        self.list.push(o);
        self.spans.push(sp);
        (i, true)
    }
}

pub(super) fn resolve_expr(
    c: &mut Checker<'_>,
    e: &RawExpr,
    observed: &mut Observed,
    scope: &Scope<'_>,
) -> Option<Expr> {
    let terms = |c: &mut Checker<'_>, es: &[RawExpr], observed: &mut Observed| -> Option<Vec<Expr>> {
        // Every term is resolved (all errors reported), then any failure fails.
        let resolved: Vec<Option<Expr>> = es.iter().map(|e| resolve_expr(c, e, observed, scope)).collect();
        resolved.into_iter().collect()
    };
    Some(match e {
        RawExpr::True => Expr::True,
        RawExpr::False => Expr::False,
        RawExpr::Cmp { lhs, span, eq, value } => {
            let o = resolve_observable(c, lhs, *span, scope)?;
            let (i, _) = observed.add(o, *span);
            let v = crate::ast::CondValue(*value);
            if *eq {
                Expr::Eq(i, v)
            } else {
                Expr::Ne(i, v)
            }
        }
        RawExpr::Not(x) => Expr::Not(Box::new(resolve_expr(c, x, observed, scope)?)),
        RawExpr::And(es) => Expr::And(terms(c, es, observed)?),
        RawExpr::Or(es) => Expr::Or(terms(c, es, observed)?),
    })
}

pub(super) fn check_final(
    c: &mut Checker<'_>,
    raw: &RawFile,
    threads: &[Thread],
    locations: &[Location],
) -> Option<(Vec<Observable>, Condition)> {
    let Some(fin) = &raw.fin else {
        c.error((0, 0), "missing [final] table: a test needs `forbidden = \"…\"` or `exists = \"…\"`");
        return None;
    };
    let f = fin.get_ref();
    let scope = Scope::new(threads, locations);
    let mut observed = Observed::default();
    for o in &f.observe {
        if let Some(x) = resolve_observable(c, o.get_ref(), span(o), &scope) {
            if !observed.add(x, span(o)).1 {
                c.warning(span(o), format!("`{}` is observed twice", o.get_ref()));
            }
        }
    }
    let (kind, text) = match (&f.forbidden, &f.exists) {
        (Some(_), Some(e)) => {
            c.error(span(e), "give either `forbidden` or `exists`, not both");
            return None;
        }
        (None, None) => {
            c.error(span(fin), "[final] needs a condition: `forbidden = \"…\"` or `exists = \"…\"`");
            return None;
        }
        (Some(x), None) => (CondKind::Forbidden, x),
        (None, Some(x)) => (CondKind::Exists, x),
    };
    let map = text_map(c.file, span(text), text.get_ref());
    let raw_expr = match parse_condition(c.file, &map, text.get_ref()) {
        Ok(e) => e,
        Err(d) => {
            c.push(d);
            return None;
        }
    };
    let expr = resolve_expr(c, &raw_expr, &mut observed, &scope);
    if let Some(&sp) = observed.spans.get(MAX_OBSERVED) {
        c.error(
            sp,
            format!(
                "too many observed values: this is number {}; a test observes at most {MAX_OBSERVED} (`[final] observe` and what the condition reads)",
                MAX_OBSERVED + 1
            ),
        );
        return None;
    }
    Some((observed.list, Condition { kind, expr: expr? }))
}
