//! Names used in thread code resolved against the declared locations.

use super::{check_name_len, Checker, RESERVED_NAMES};
use crate::ast::{Location, Operand, Stmt, Thread};
use abi::litmus::{LocKind, Op, Perm, WaitCmp};
use std::collections::{BTreeSet, HashMap};

/// Resolve location names in code, add implicit flags (their first use goes
/// to `loc_spans`), and the register / flag sanity checks. Linear in the
/// code: names are looked up in a map, never by scanning.
pub(super) fn check_code_names(
    c: &mut Checker<'_>,
    threads: &[Thread],
    locations: &mut Vec<Location>,
    loc_spans: &mut Vec<(usize, usize)>,
) {
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, l) in locations.iter().enumerate() {
        index.entry(l.name.clone()).or_insert(i);
    }
    let mut written_flags: BTreeSet<String> = BTreeSet::new();
    let mut waits: Vec<(String, (usize, usize), Option<u64>)> = Vec::new();
    for t in threads {
        let mut writes: BTreeSet<u8> = BTreeSet::new();
        let mut reads: Vec<(u8, (usize, usize))> = Vec::new();
        let mut all: Vec<&Stmt> = Vec::new();
        for s in &t.code {
            s.walk(&mut |s| all.push(s));
        }
        for s in all {
            if let Some(d) = s.dst {
                writes.insert(d);
            }
            for v in [s.val, s.val2].into_iter().flatten() {
                if let Operand::Reg(r) = v {
                    reads.push((r, s.span));
                }
            }
            let mut check = |c: &mut Checker<'_>, name: &str, sp: (usize, usize)| {
                let kind = index.get(name).map(|&i| locations[i].kind);
                match s.op {
                    Op::Wait | Op::Signal => match kind {
                        Some(LocKind::Var) => {}
                        Some(k) => {
                            c.error(
                                sp,
                                format!(
                                    "`{}` needs a flag (a `var` or an undeclared name), but `{name}` is a {} location",
                                    s.op.name(),
                                    k.name()
                                ),
                            );
                        }
                        None => {
                            if RESERVED_NAMES.contains(&name) {
                                c.error(sp, format!("`{name}` is a reserved word and cannot name a flag"));
                            } else if check_name_len(c, "flag name", name, sp) {
                                index.insert(name.to_string(), locations.len());
                                locations.push(Location {
                                    name: name.to_string(),
                                    kind: LocKind::Var,
                                    perm: Perm::None,
                                    init: 0,
                                    shared: false,
                                    va: None,
                                    implicit: true,
                                });
                                loc_spans.push(sp);
                            }
                        }
                    },
                    _ => {
                        let is_mem = matches!(s.op, Op::Load | Op::Store | Op::Xchg | Op::Cmpxchg | Op::FetchAdd);
                        match kind {
                            None => {
                                c.error(sp, format!("undeclared location `{name}`")).notes.push(format!(
                                    "declare it in [locations], e.g. `{name} = {{ page = \"rw\", value = 0 }}`"
                                ));
                            }
                            Some(LocKind::Var) if !is_mem => {
                                c.error(
                                    sp,
                                    format!("`{}` needs a page location, but `{name}` is a `var` (a kernel word, not part of the test mm)", s.op.name()),
                                );
                            }
                            _ => {}
                        }
                    }
                }
            };
            if let Some(l) = &s.loc {
                check(c, l, s.loc_span);
                match s.op {
                    Op::Signal | Op::Store | Op::Xchg | Op::Cmpxchg | Op::FetchAdd => {
                        written_flags.insert(l.clone());
                    }
                    Op::Wait => waits.push((
                        l.clone(),
                        s.span,
                        if s.arg == WaitCmp::Eq as u8 {
                            s.val.and_then(|v| match v {
                                Operand::Imm(i) => Some(i),
                                Operand::Reg(_) => None,
                            })
                        } else {
                            None
                        },
                    )),
                    _ => {}
                }
            }
            if let Some(l) = &s.loc2 {
                check(c, l, s.loc2_span);
            }
        }
        for (r, sp) in reads {
            if !writes.contains(&r) {
                c.warning(sp, format!("thread {} reads r{r}, which it never writes (registers start at 0)", t.name));
            }
        }
    }
    for (flag, sp, want) in waits {
        let Some(l) = index.get(&flag).map(|&i| &locations[i]).filter(|l| l.kind == LocKind::Var) else {
            continue;
        };
        let satisfied_initially = match want {
            Some(v) => l.init == v,
            None => l.init != 0,
        };
        if !written_flags.contains(&flag) && !satisfied_initially {
            c.warning(sp, format!("`wait {flag}` waits for a flag no thread signals: every iteration will time out"));
        }
    }
}
