//! `[locations]`: each location checked, and the declared set checked
//! against the guest mm model's capacity (`abi::limits`); names' lengths
//! and device threads' operation counts.

use super::{span, valid_name, Checker, RawFile, RawLoc, RESERVED_NAMES};
use crate::ast::{Location, Operand, Stmt, Thread};
use crate::code::looks_like_register;
use abi::limits::{
    page_tables_needed, LinkedLocations, MAX_COW_OPS, MAX_DEVICE_OPS, MAX_NAME_LEN, MAX_PAGE_LOCATIONS,
    MAX_PAGE_MAPPINGS, MAX_PAGE_TABLES, MAX_SHARED_PAGES, TEST_VA_END, TEST_VA_START,
};
use abi::litmus::{pinned_va_ok, LocKind, Op, Perm, RESERVED_MIN};
use std::collections::HashMap;
use toml::Spanned;

/// The declared locations fit the guest mm model (`abi::limits`, the same
/// rules `Blob::parse` applies): page and unmapped locations (one VMA
/// each), shared pages (one file each), and the page tables their
/// addresses may need. Each is refused at the location that goes past.
pub(super) fn check_mm_capacity(c: &mut Checker<'_>, raw: &RawFile, locations: &[Location], spans: &[(usize, usize)]) {
    let mut pinned: Vec<u64> = Vec::new();
    let (mut pages, mut shared, mut window) = (0, 0, false);
    for (l, &sp) in locations.iter().zip(spans) {
        if l.kind == LocKind::Var {
            continue;
        }
        pages += 1;
        if pages > MAX_PAGE_LOCATIONS {
            c.error(
                sp,
                format!("too many page locations: `{}` is page or unmapped location number {pages}; a test has at most {MAX_PAGE_LOCATIONS} (one VMA of the test mm each)", l.name),
            );
            return;
        }
        let raw_loc = raw.locations.iter().find(|(k, _)| k.span().start == sp.0).map(|(_, v)| v.get_ref());
        if l.shared {
            shared += 1;
            if shared > MAX_SHARED_PAGES {
                let at = raw_loc.and_then(|r| r.shared.as_ref()).map_or(sp, span);
                c.error(at, format!("too many shared pages: a test has at most {MAX_SHARED_PAGES} (one file of the page cache each)"));
            }
        }
        match l.va {
            Some(va) => pinned.push(va),
            None => window = true,
        }
        let needed = page_tables_needed(&pinned, window);
        if needed > MAX_PAGE_TABLES {
            let at = raw_loc.and_then(|r| r.va.as_ref()).map_or(sp, span);
            c.error(
                at,
                format!("the pinned addresses up to here may need {needed} page-table pages; the test mm has at most {MAX_PAGE_TABLES}"),
            )
            .notes
            .push("each distinct 512 GiB, 1 GiB and 2 MiB region of a page needs a table; unpinned pages share one 2 MiB window".into());
            return;
        }
    }
}

/// The operations fit the guest mm model: at most [`MAX_COW_OPS`] `cow`
/// statements, and no more than [`MAX_PAGE_MAPPINGS`] locations linked by
/// `ksm`/`mremap` (they may end up mapping one page). Refused at the
/// statement that goes past.
pub(super) fn check_mm_operations(c: &mut Checker<'_>, threads: &[Thread], locations: &[Location]) {
    let index: HashMap<&str, usize> = locations.iter().enumerate().map(|(i, l)| (l.name.as_str(), i)).rev().collect();
    let mut linked = LinkedLocations::default();
    let (mut cows, mut reported) = (0, false);
    for t in threads {
        let mut all: Vec<&Stmt> = Vec::new();
        for s in &t.code {
            s.walk(&mut |s| all.push(s));
        }
        for s in all {
            match s.op {
                Op::Cow => {
                    cows += 1;
                    if cows == MAX_COW_OPS + 1 {
                        c.error(s.span, format!("more than {MAX_COW_OPS} `cow` statements in this test (each gives the fork child one more page reference)"));
                    }
                }
                Op::Ksm | Op::Mremap => {
                    let loc = |n: &Option<String>| n.as_deref().and_then(|n| index.get(n)).copied();
                    if let (Some(a), Some(b)) = (loc(&s.loc), loc(&s.loc2)) {
                        let n = linked.link(a, b);
                        if n > MAX_PAGE_MAPPINGS && !reported {
                            reported = true;
                            c.error(
                                s.span,
                                format!("this `{}` links {n} locations by ksm/mremap: one page could be mapped at {n} addresses; the mm model maps a page at most {MAX_PAGE_MAPPINGS} times", s.op.name()),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Names are length-prefixed with `u16` in the blob and printed in results:
/// [`MAX_NAME_LEN`] bytes at most.
pub(super) fn check_name_len(c: &mut Checker<'_>, what: &str, name: &str, sp: (usize, usize)) -> bool {
    if name.len() > MAX_NAME_LEN {
        c.error(sp, format!("{what} too long: {} bytes, at most {MAX_NAME_LEN}", name.len()));
        return false;
    }
    true
}

/// DMA-engine ops a device thread's statements unroll to (loops repeated;
/// `Op::device_program_ops` per op, as the guest's program builder emits them).
pub(super) fn device_ops(stmts: &[Stmt]) -> u64 {
    stmts.iter().fold(0u64, |n, s| n.saturating_add(stmt_device_ops(s)))
}

pub(super) fn stmt_device_ops(s: &Stmt) -> u64 {
    let own = s.op.device_program_ops();
    if s.op != Op::Loop {
        return own;
    }
    let count = match s.val {
        Some(Operand::Imm(n)) => n,
        _ => 0,
    };
    own.saturating_add(device_ops(&s.body).saturating_mul(count))
}

/// A device thread becomes one DMA-engine program of at most
/// [`MAX_DEVICE_OPS`] ops: refused at the statement where it overflows.
pub(super) fn check_device_ops(c: &mut Checker<'_>, thread: &str, stmts: &[Stmt]) {
    let mut total: u64 = 0;
    for s in stmts {
        let n = stmt_device_ops(s);
        total = total.saturating_add(n);
        if total > MAX_DEVICE_OPS {
            let at_least = if total == u64::MAX { "more than 2^64".to_string() } else { total.to_string() };
            c.error(
                s.span,
                format!(
                    "device thread {thread} unrolls to {at_least} DMA-engine ops up to here; a device program holds at most {MAX_DEVICE_OPS}"
                ),
            )
            .notes
            .push("loop bodies are repeated `loop N` times, `barrier` counts 2, every other operation 1".into());
            return;
        }
    }
}

pub(super) fn check_location(c: &mut Checker<'_>, k: &Spanned<String>, v: &Spanned<RawLoc>) -> Option<Location> {
    let name = k.get_ref().clone();
    let ks = span(k);
    if !check_name_len(c, "location name", &name, ks) {
        return None;
    }
    if !valid_name(&name) {
        c.error(ks, format!("invalid location name `{name}`: use letters, digits, `_`, `-`"));
        return None;
    }
    if looks_like_register(&name) {
        c.error(ks, format!("location name `{name}` looks like a register (r0 … r31 are registers)"));
        return None;
    }
    if RESERVED_NAMES.contains(&name.as_str()) {
        c.error(ks, format!("`{name}` is a reserved word and cannot name a location"));
        return None;
    }
    let r = v.get_ref();
    let vs = span(v);
    let value = |c: &mut Checker<'_>, x: &Spanned<i64>| -> Option<u64> {
        let n = *x.get_ref();
        if n < 0 {
            c.error(span(x), format!("negative value {n}: values are unsigned 64-bit words"));
            None
        } else if n as u64 >= RESERVED_MIN {
            c.error(span(x), "value out of range");
            None
        } else {
            Some(n as u64)
        }
    };
    let mut loc = Location::page(name.clone());
    match (&r.page, &r.var) {
        (Some(_), Some(var)) => {
            c.error(span(var), "a location is either a `page` or a `var`, not both");
            return None;
        }
        (None, None) => {
            c.error(
                vs,
                format!("location `{name}`: expected `page = \"rw\"|\"ro\"|\"none\"|\"unmapped\"` or `var = N`"),
            );
            return None;
        }
        (None, Some(var)) => {
            loc.kind = LocKind::Var;
            loc.perm = Perm::None;
            loc.init = value(c, var)?;
            for (what, present) in [
                ("value", r.value.as_ref().map(span)),
                ("va", r.va.as_ref().map(span)),
                ("shared", r.shared.as_ref().map(span)),
            ] {
                if let Some(sp) = present {
                    c.error(sp, format!("`{what}` does not apply to a `var` (its value is `var = N`)"));
                }
            }
        }
        (Some(page), None) => {
            match page.get_ref().as_str() {
                "rw" => loc.perm = Perm::Rw,
                "ro" => loc.perm = Perm::Ro,
                "none" => loc.perm = Perm::None,
                "unmapped" => {
                    loc.kind = LocKind::Unmapped;
                    loc.perm = Perm::None;
                }
                other => {
                    c.error(span(page), format!("invalid page permission `{other}`"))
                        .notes
                        .push("expected one of: rw, ro, none, unmapped".into());
                    return None;
                }
            }
            if let Some(x) = &r.value {
                if loc.kind == LocKind::Unmapped {
                    c.error(span(x), "an unmapped location has no value");
                } else {
                    loc.init = value(c, x)?;
                }
            }
            if let Some(s) = &r.shared {
                if loc.kind == LocKind::Unmapped && *s.get_ref() {
                    c.error(span(s), "`shared` applies to mapped pages only");
                }
                loc.shared = *s.get_ref();
            }
            if let Some(va) = &r.va {
                let t = va.get_ref();
                let parsed = t.strip_prefix("0x").and_then(|h| u64::from_str_radix(&h.replace('_', ""), 16).ok());
                match parsed {
                    Some(a) if pinned_va_ok(a) => loc.va = Some(a),
                    Some(_) => {
                        c.error(
                            span(va),
                            format!(
                                "`va = \"{t}\"` is not a page of the test's address space: a pinned address is 4 KiB aligned, at least {TEST_VA_START:#x} and below {TEST_VA_END:#x}"
                            ),
                        )
                        .notes
                        .push(format!("below {TEST_VA_START:#x} is the guest kernel's own mapping"));
                    }
                    None => {
                        c.error(span(va), format!("expected a hex address like \"0x7f0000000000\", found \"{t}\""));
                    }
                }
            }
        }
    }
    Some(loc)
}
