//! A schedule found by `vmm explore` as a litmus file that forces it.
//!
//! The schedule is cut into *blocks*: maximal runs of steps of one thread.
//! Block k (k ≥ 1) may start only when flag `<prefix>k` is set; the thread
//! of block k−1 sets it where it stops — at the scheduling point where its
//! own next block starts (then it waits for that block's flag), or at its
//! end. A point before an instruction becomes `signal`/`wait` statements
//! before it; a point at a hook of the mm model becomes `at HOOK#N { … }`
//! on the operation. Between two flags exactly one thread runs, so
//! `vmm litmus` replays the blocks in the schedule's order — the same
//! steps, hence (under `tlb=lazy`, whose TLB is deterministic) the same
//! final state on every iteration.

use std::fmt::Write as _;

use abi::explore::site;
use abi::litmus::{Hook, LocKind, Op, ThreadKind, WaitCmp};

use crate::ast::{HookBlock, Operand, Stmt, Test};
use crate::policy::Policy;

/// One scheduling point of a schedule: the thread and where it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub thread: usize,
    /// An `abi::explore::site` value.
    pub site: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    #[error("thread {thread}: a scheduling point at record {pc} is inside a loop: a pause there would apply to every iteration")]
    InLoop { thread: String, pc: u32 },
    #[error("thread {thread}: no statement at record {pc}")]
    NoStatement { thread: String, pc: u32 },
    #[error("thread {thread}: a scheduling point of kind {kind} (record {pc}) has no hook a litmus file can pause at")]
    NotAHook { thread: String, pc: u32, kind: u64 },
    #[error("the schedule names thread {0}, which the test does not have")]
    NoThread(usize),
}

/// Where the synchronisation for one block boundary goes.
#[derive(Default)]
struct Edits {
    /// Record pc → statements to insert before it.
    before: Vec<(u32, Vec<Stmt>)>,
    /// Record pc → hook blocks to add to its statement.
    hooks: Vec<(u32, HookBlock)>,
    /// Statements appended at the end of the thread.
    end: Vec<Stmt>,
}

fn sync(op: Op, flag: &str) -> Stmt {
    let mut s = Stmt::new(op, 0, 0, (0, 0));
    s.loc = Some(flag.to_string());
    match op {
        Op::Wait => s.arg = WaitCmp::NonZero as u8,
        _ => s.val = Some(Operand::Imm(1)),
    }
    s
}

/// A flag prefix no location of `test` starts with.
fn flag_prefix(test: &Test) -> String {
    let mut p = "sched".to_string();
    while test.locations.iter().any(|l| l.name.starts_with(&p)) {
        p.push('_');
    }
    p
}

/// The schedule's blocks: (first step index, thread).
fn blocks(steps: &[Step]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        if out.last().is_none_or(|&(_, t)| t != s.thread) {
            out.push((i, s.thread));
        }
    }
    out
}

/// Rewrites `test` so that `vmm litmus` runs `steps` in order; `policy`
/// is the row it violates (its `[expect]` is `sometimes`), `doc` the file's
/// `doc` line. Returns the file's text.
pub fn forced_test(
    test: &Test,
    steps: &[Step],
    policy: &Policy,
    name: &str,
    doc: &str,
) -> Result<String, WitnessError> {
    let n = test.threads.len();
    if let Some(s) = steps.iter().find(|s| s.thread >= n) {
        return Err(WitnessError::NoThread(s.thread));
    }
    let prefix = flag_prefix(test);
    let bl = blocks(steps);
    let mut edits: Vec<Edits> = (0..n).map(|_| Edits::default()).collect();
    // For each thread, the index of its last block seen so far.
    let mut prev_block: Vec<Option<usize>> = vec![None; n];
    for (k, &(start, t)) in bl.iter().enumerate() {
        let mut ops = Vec::new();
        // The block after this thread's previous block starts when this
        // thread stops, i.e. here.
        if let Some(j) = prev_block[t] {
            ops.push(sync(Op::Signal, &format!("{prefix}{}", j + 1)));
        }
        if k > 0 {
            ops.push(sync(Op::Wait, &format!("{prefix}{k}")));
        }
        prev_block[t] = Some(k);
        if ops.is_empty() {
            continue;
        }
        place(test, &mut edits[t], t, steps[start].site, ops)?;
    }
    // Threads whose last block is followed by another block hand over at
    // their end.
    for (t, last) in prev_block.iter().enumerate() {
        if let Some(j) = *last {
            if j + 1 < bl.len() {
                edits[t].end.push(sync(Op::Signal, &format!("{prefix}{}", j + 1)));
            }
        }
    }
    let mut forced = test.clone();
    for (t, e) in edits.into_iter().enumerate() {
        let name = test.threads[t].name.clone();
        let mut pc = 0u32;
        let code = std::mem::take(&mut forced.threads[t].code);
        let mut out = rewrite(&code, &e, &mut pc, false, &name)?;
        // A point past the last record (a thread's end) is its `end`.
        if let Some(p) = e.before.iter().map(|(p, _)| *p).chain(e.hooks.iter().map(|(p, _)| *p)).find(|p| *p >= pc) {
            return Err(WitnessError::NoStatement { thread: name, pc: p });
        }
        out.extend(e.end);
        forced.threads[t].code = out;
    }
    Ok(render(&forced, policy, name, doc))
}

fn place(test: &Test, e: &mut Edits, t: usize, at: u64, ops: Vec<Stmt>) -> Result<(), WitnessError> {
    let thread = test.threads[t].name.clone();
    let pc = site::pc(at);
    match site::kind(at) {
        site::INSTR | site::DEVICE => e.before.push((pc, ops)),
        site::HOOK | site::LOCK => {
            // A lock site pauses at the `lock_acquire` hook, which fires
            // at every lock acquisition of the operation (its N-th firing).
            let hook = if site::kind(at) == site::LOCK {
                Hook::LockAcquire
            } else {
                Hook::from_u8(site::sub(at)).ok_or(WitnessError::NoStatement { thread: thread.clone(), pc })?
            };
            // `at HOOK` (every firing) reads best where the pause is at the
            // first firing and nothing else pauses at that hook of the
            // operation; otherwise `at HOOK#N` names the firing.
            let nth = u32::from(site::nth(at));
            for (_, hb) in e.hooks.iter_mut().filter(|(p, hb)| *p == pc && hb.hook == hook) {
                if hb.nth == 0 {
                    hb.nth = 1;
                }
            }
            let shared = e.hooks.iter().any(|(p, hb)| *p == pc && hb.hook == hook);
            let nth = if nth <= 1 && !shared { 0 } else { nth.max(1) };
            e.hooks.push((pc, HookBlock { hook, nth, body: ops }));
        }
        kind => return Err(WitnessError::NotAHook { thread, pc, kind }),
    }
    Ok(())
}

/// Copies `code` with the edits applied; `pc` counts records as the
/// compiler lays them out (statement, loop body, then hook groups).
fn rewrite(code: &[Stmt], e: &Edits, pc: &mut u32, in_loop: bool, thread: &str) -> Result<Vec<Stmt>, WitnessError> {
    let mut out = Vec::new();
    for s in code {
        let me = *pc;
        *pc += 1;
        let touched = e.before.iter().any(|(p, _)| *p == me) || e.hooks.iter().any(|(p, _)| *p == me);
        if touched && in_loop {
            return Err(WitnessError::InLoop { thread: thread.into(), pc: me });
        }
        for (_, ops) in e.before.iter().filter(|(p, _)| *p == me) {
            out.extend(ops.iter().cloned());
        }
        let mut s2 = s.clone();
        s2.body = rewrite(&s.body, e, pc, in_loop || s.op == Op::Loop, thread)?;
        s2.hooks.clear();
        for h in &s.hooks {
            *pc += 1; // the `at` record
            let body = rewrite(&h.body, e, pc, in_loop, thread)?;
            s2.hooks.push(HookBlock { hook: h.hook, nth: h.nth, body });
        }
        for (_, hb) in e.hooks.iter().filter(|(p, _)| *p == me) {
            s2.hooks.push(hb.clone());
        }
        out.push(s2);
    }
    Ok(out)
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The test as a litmus file (declared locations, threads, final, one
/// `[expect]` row).
fn render(test: &Test, policy: &Policy, name: &str, doc: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "name = {}", toml_str(name));
    let _ = writeln!(o, "doc  = {}", toml_str(doc));
    o.push_str("\n[locations]\n");
    for l in test.locations.iter().filter(|l| !l.implicit) {
        let mut fields = Vec::new();
        match l.kind {
            LocKind::Var => fields.push(format!("var = {}", l.init)),
            LocKind::Unmapped => fields.push("page = \"unmapped\"".into()),
            LocKind::Page => {
                fields.push(format!("page = \"{}\"", l.perm.name()));
                fields.push(format!("value = {}", l.init));
                if l.shared {
                    fields.push("shared = true".into());
                }
            }
        }
        if let Some(va) = l.va {
            fields.push(format!("va = \"{va:#x}\""));
        }
        let _ = writeln!(o, "{} = {{ {} }}", l.name, fields.join(", "));
    }
    for t in &test.threads {
        let table = if t.kind == ThreadKind::Device { "device" } else { "thread" };
        let _ = writeln!(o, "\n[{table}.{}]\ncode = \"\"\"", t.name);
        for s in &t.code {
            let _ = writeln!(o, "{s}");
        }
        o.push_str("\"\"\"\n");
    }
    o.push_str("\n[final]\n");
    let observe: Vec<String> = test.observed.iter().map(|ob| toml_str(&ob.name(test))).collect();
    let _ = writeln!(o, "observe   = [{}]", observe.join(", "));
    let kw = match test.condition.kind {
        crate::ast::CondKind::Forbidden => "forbidden",
        crate::ast::CondKind::Exists => "exists",
    };
    let _ = writeln!(o, "{kw} = {}", toml_str(&test.condition.expr.source(test)));
    o.push_str("\n[expect]\n");
    let _ = writeln!(o, "{} = \"sometimes\"", toml_str(&policy.canonical_mm()));
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_source;

    const S1: &str = r#"
name = "explore-s1"
[locations]
x = { page = "rw", value = 1 }
[thread.P0]
code = """
wait warm
madvise x dontneed
"""
[thread.P1]
code = """
wait warm
madvise x dontneed
signal done
"""
[thread.P2]
code = """
load x -> r0
signal warm
wait done
load x -> r1
"""
[final]
observe = ["P2:r0", "P2:r1"]
forbidden = "P2:r1 == 1"
"#;

    fn instr(thread: usize, pc: u32) -> Step {
        Step { thread, site: site::make(site::INSTR, pc, 0, 0) }
    }
    fn hook(thread: usize, pc: u32, h: Hook) -> Step {
        Step { thread, site: site::make(site::HOOK, pc, h as u8, 1) }
    }

    #[test]
    fn s1_witness_forces_the_schedule() {
        let t = check_source("s1.toml", S1).test.unwrap();
        // P2 warms, P0 zaps and is preempted after its PTL release, P1
        // zaps and signals, P2 reads, P0 finishes.
        let steps = [
            instr(2, 0),
            instr(2, 1),
            instr(0, 0),
            instr(0, 1),
            hook(0, 1, Hook::AfterPtlRelease),
            instr(1, 0),
            instr(1, 1),
            instr(1, 2),
            instr(2, 2),
            instr(2, 3),
            hook(0, 1, Hook::BeforeFlush),
        ];
        let policy = Policy::parse("flush=pending,madv-nested-check=off").unwrap();
        let text = forced_test(&t, &steps, &policy, "explore-s1-witness", "forced").unwrap();
        assert!(text.contains("madvise x dontneed at before_flush { signal sched2 1; wait sched4 }"), "{text}");
        assert!(text.contains("wait sched1\nwait warm"), "{text}");
        assert!(text.contains("wait sched2\nwait warm"), "{text}");
        assert!(text.contains("signal done 1\nsignal sched3 1"), "{text}");
        assert!(text.contains("wait sched3\nwait done"), "{text}");
        // The file checks, and keeps the test's final state and condition.
        let checked = check_source("w.toml", &text);
        assert!(checked.diagnostics.is_empty(), "{:?}\n{text}", checked.diagnostics);
        let w = checked.test.unwrap();
        assert_eq!(w.condition.expr.source(&w), "P2:r1 == 1");
        assert_eq!(w.expect.len(), 1);
        assert_eq!(w.expect[0].verdict, crate::Verdict::Sometimes);
    }

    #[test]
    fn points_it_cannot_express_are_errors() {
        let t = check_source("s1.toml", S1).test.unwrap();
        let p = Policy::default();
        let wait = Step { thread: 0, site: site::make(site::WAIT, 1, 0, 0) };
        let e = forced_test(&t, &[instr(2, 0), wait], &p, "w", "d").unwrap_err();
        assert!(matches!(e, WitnessError::NotAHook { .. }), "{e}");
        // A lock site pauses at `lock_acquire`.
        let lock = Step { thread: 0, site: site::make(site::LOCK, 1, 1, 1) };
        let text = forced_test(&t, &[instr(2, 0), lock], &p, "w", "d").unwrap();
        assert!(text.contains("madvise x dontneed at lock_acquire { wait sched1 }"), "{text}");
        // Its third lock: the third firing, named.
        let third = Step { thread: 0, site: site::make(site::LOCK, 1, 1, 3) };
        let text = forced_test(&t, &[instr(2, 0), third], &p, "w", "d").unwrap();
        assert!(text.contains("madvise x dontneed at lock_acquire#3 { wait sched1 }"), "{text}");
        assert_eq!(forced_test(&t, &[Step { thread: 9, site: 0 }], &p, "w", "d"), Err(WitnessError::NoThread(9)));
    }
}
