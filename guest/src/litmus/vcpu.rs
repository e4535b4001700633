//! vCPU threads: each instruction of a thread run on its vCPU, at CPL0 or
//! CPL3, with its hooks, barriers and explore scheduling points.

use super::{blob, position, state_word, var_word, LOC_FILE, LOC_VA, PARTICIPANTS, REGS};
use crate::mm::hooks;
use crate::mm::mm_types::TEST_MM;
use crate::mm::tlb;
use crate::trace::{self, Kind};
use crate::trap::{probe_cmpxchg_u64, probe_read_u64, probe_write_u64, probe_xadd_u64, probe_xchg_u64, Probe};
use crate::wait::{self, wait_until, wake, wake_then_wait_until};
use crate::{arch, explore};
use abi::layout::PAGE_SIZE;
use abi::litmus::{
    self as lt, state, Advice, Blob, Hook, LocKind, Op, Perm, ThreadDesc, WaitCmp, MAX_THREADS, NO_LOC, NO_REG,
    VALUE_FAULT,
};
use core::sync::atomic::{fence, AtomicU64, Ordering};

/// Runs vCPU thread `t` on this CPU, in the test mm.
pub(super) fn thread_main(t: u64) {
    let t = t as usize;
    let b = blob();
    let Some(td) = b.thread(t as u16) else { return };
    position(t).store(state::pos::STARTED, Ordering::Release);
    // Which vCPU runs which thread this iteration, for trace readers.
    trace::emit(Kind::ThreadStart, 0, t as u64, 0);
    tlb::switch_mm(&TEST_MM.pt());
    let scheduled = explore::iteration_active();
    if scheduled {
        explore::enter(t);
    }
    let mut ctx = ThreadCtx { t };
    ctx.block(&b, &td, 0, td.n_instrs);
    hooks::disarm();
    // Leaving the mm is part of the thread's last step (shootdowns read
    // which CPUs run the mm), so it happens before the turn passes on.
    tlb::switch_to_kernel_mm();
    if scheduled {
        explore::note_mem(true);
        explore::finish();
        explore::leave();
    }
    let p = position(t);
    p.store(state::pos::STARTED | state::pos::FINISHED | state::pos::PC_MASK, Ordering::SeqCst);
    wake(p);
}

pub(super) struct ThreadCtx {
    t: usize,
}

/// `barrier`s each thread passed this iteration: its next one waits until
/// the arrival counter reaches participants × (passed + 1).
pub(super) static BARRIERS_PASSED: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];

impl ThreadCtx {
    fn reg(&self, r: u8) -> u64 {
        if r == NO_REG {
            0
        } else {
            REGS[self.t][r as usize].load(Ordering::Relaxed)
        }
    }

    fn set(&self, r: u8, v: u64) {
        if r != NO_REG {
            REGS[self.t][r as usize].store(v, Ordering::Release);
        }
    }

    fn publish(&self, pc: u32, hook: Option<Hook>) {
        let h = hook.map_or(0, |h| (h as u64) << state::pos::HOOK_SHIFT);
        position(self.t).store(state::pos::STARTED | pc as u64 | h, Ordering::Release);
    }

    /// Runs the records `[start, end)` of thread `td` (a block of items).
    fn block(&mut self, b: &Blob<'_>, td: &ThreadDesc, start: u32, end: u32) {
        let mut pc = start;
        while pc < end {
            let Some(ins) = b.thread_instr(td, pc) else { return };
            let len = b.item_len(td, pc).unwrap_or(1);
            self.publish(pc, None);
            explore::instr_point(pc, guard_of(&ins));
            // `signal` then `wait`: one exit for both (see `signal_then_wait`).
            let next = (pc + len < end).then(|| b.thread_instr(td, pc + len)).flatten();
            if let Some(next) = next.filter(|n| pairs_with_wait(&ins, n)) {
                self.signal_then_wait(&ins, &next, pc + len, None);
                pc += len + b.item_len(td, pc + len).unwrap_or(1);
                continue;
            }
            // The thread's last step a plain `signal`: its wake goes with
            // the park that follows the thread (`wait::defer_wake`).
            let last = start == 0 && pc + len == end && end == td.n_instrs;
            if last && ins.op() == Op::Signal && ins.nhooks == 0 && crate::percpu::cpl() == 3 {
                wait::defer_wake(self.signal_store(&ins));
                pc += len;
                continue;
            }
            if ins.op() == Op::Loop {
                for _ in 0..ins.imm {
                    self.block(b, td, pc + 1, pc + 1 + ins.len);
                }
            } else {
                let mut mask = 0u32;
                let mut at = pc + 1;
                for _ in 0..ins.nhooks {
                    if let Some(g) = b.thread_instr(td, at) {
                        mask |= 1 << g.arg;
                        at += 1 + g.len;
                    }
                }
                if mask != 0 {
                    hooks::arm(mask, run_hook, self.t as u64 | (pc as u64) << 16);
                }
                self.exec(b, &ins);
                if mask != 0 {
                    hooks::disarm();
                }
            }
            pc += len;
        }
    }

    fn exec(&mut self, b: &Blob<'_>, ins: &lt::Instr) {
        let op = ins.op();
        let va = if ins.loc != NO_LOC { LOC_VA[ins.loc as usize].load(Ordering::Relaxed) } else { 0 };
        let is_var = ins.loc != NO_LOC && b.location(ins.loc).is_some_and(|l| l.kind == LocKind::Var as u8);
        let v1 = if ins.src != NO_REG { self.reg(ins.src) } else { ins.imm };
        let v2 = if ins.src2 != NO_REG { self.reg(ins.src2) } else { ins.imm2 };
        let value = |p: Probe| if p.faulted != 0 { VALUE_FAULT } else { p.value };
        match op {
            Op::Load | Op::Store | Op::Xchg | Op::Cmpxchg | Op::FetchAdd if is_var => {
                explore::note_var(ins.loc, op != Op::Load);
                let w = var_word(ins.loc);
                let old = match op {
                    Op::Load => w.load(Ordering::SeqCst),
                    Op::Store => {
                        w.store(v1, Ordering::SeqCst);
                        0
                    }
                    Op::Xchg => w.swap(v1, Ordering::SeqCst),
                    Op::Cmpxchg => w.compare_exchange(v1, v2, Ordering::SeqCst, Ordering::SeqCst).unwrap_or_else(|x| x),
                    _ => w.fetch_add(v1, Ordering::SeqCst),
                };
                self.set(ins.dst, old);
            }
            Op::Load => {
                Self::note_access(op);
                // SAFETY: a probe access: a fault the mm cannot resolve resumes at its fixup.
                let v = value(unsafe { probe_read_u64(va) });
                trace::emit(Kind::Access, va, v, 0);
                self.set(ins.dst, v);
            }
            Op::Store => {
                Self::note_access(op);
                // SAFETY: as above.
                let p = unsafe { probe_write_u64(va, v1) };
                trace::emit(Kind::Access, va, if p.faulted != 0 { VALUE_FAULT } else { v1 }, 1);
            }
            Op::Xchg => {
                Self::note_access(op);
                // SAFETY: as above.
                let v = value(unsafe { probe_xchg_u64(va, v1) });
                trace::emit(Kind::Access, va, v, 2);
                self.set(ins.dst, v);
            }
            Op::Cmpxchg => {
                Self::note_access(op);
                // SAFETY: as above.
                let v = value(unsafe { probe_cmpxchg_u64(va, v1, v2) });
                trace::emit(Kind::Access, va, v, 2);
                self.set(ins.dst, v);
            }
            Op::FetchAdd => {
                Self::note_access(op);
                // SAFETY: as above.
                let v = value(unsafe { probe_xadd_u64(va, v1) });
                trace::emit(Kind::Access, va, v, 2);
                self.set(ins.dst, v);
            }
            Op::Mfence => fence(Ordering::SeqCst),
            Op::Wait | Op::Signal | Op::Barrier | Op::Delay => self.sync(ins),
            _ => self.mm_op(ins, op, va, v1),
        }
    }

    /// A `signal`'s store; returns the word.
    fn signal_store(&self, ins: &lt::Instr) -> &'static AtomicU64 {
        let v = if ins.src != NO_REG { self.reg(ins.src) } else { ins.imm };
        explore::note_var(ins.loc, true);
        let w = var_word(ins.loc);
        w.store(v, Ordering::SeqCst);
        w
    }

    /// A `wait`'s condition on its word.
    fn wait_cond(ins: &lt::Instr) -> impl Fn(u64) -> bool {
        let eq = WaitCmp::from_u8(ins.arg) == Some(WaitCmp::Eq);
        let imm = ins.imm;
        move |v| if eq { v == imm } else { v != 0 }
    }

    /// `signal` then `wait` (at `wait_pc`, in hook group `hook`): the
    /// wait's park wakes the signalled word's waiters first, so the pair
    /// costs one exit, not two. Nothing but publishing the wait's position
    /// happens between the store and the wake-up, as with the two apart.
    fn signal_then_wait(&mut self, signal: &lt::Instr, wait: &lt::Instr, wait_pc: u32, hook: Option<Hook>) {
        let signalled = self.signal_store(signal);
        self.publish(wait_pc, hook);
        wake_then_wait_until(signalled, var_word(wait.loc), Self::wait_cond(wait));
    }

    /// Notes, for `vmm explore`, what a memory access to the test mm did:
    /// a load reads the mm (a TLB hit, or a fill that sets the A bit, which
    /// commutes with other fills); anything else may change it.
    fn note_access(op: Op) {
        explore::note_mem(op != Op::Load);
    }

    /// The sync ops (also the only ops of hook groups).
    fn sync(&mut self, ins: &lt::Instr) {
        match ins.op() {
            Op::Wait => {
                explore::note_var(ins.loc, false);
                wait_until(var_word(ins.loc), Self::wait_cond(ins));
            }
            Op::Signal => {
                let w = self.signal_store(ins);
                wake(w);
            }
            Op::Barrier => {
                let passed = BARRIERS_PASSED[self.t].fetch_add(1, Ordering::Relaxed) + 1;
                let target = passed * PARTICIPANTS.load(Ordering::Relaxed);
                let w = state_word(state::BARRIER);
                explore::note_barrier();
                w.fetch_add(1, Ordering::SeqCst);
                wake(w);
                explore::barrier_point(w as *const AtomicU64 as u64, target);
                wait_until(w, |v| v >= target);
            }
            Op::Delay => {
                for _ in 0..ins.imm {
                    arch::pause();
                }
            }
            _ => {}
        }
    }

    fn mm_op(&mut self, ins: &lt::Instr, op: Op, va: u64, _v1: u64) {
        explore::note_mem(true);
        let va2 = if ins.loc2 != NO_LOC { LOC_VA[ins.loc2 as usize].load(Ordering::Relaxed) } else { 0 };
        trace::emit(Kind::OpBegin, va, op as u64, 0);
        match op {
            Op::Touch => {
                // A write touch is an atomic add of 0: a write access that
                // keeps the contents (it CoW-breaks, dirties, faults in).
                // SAFETY: probe accesses, as in `exec`.
                let _ = unsafe {
                    if ins.arg == 1 {
                        probe_xadd_u64(va, 0)
                    } else {
                        probe_read_u64(va)
                    }
                };
            }
            Op::Mmap => {
                TEST_MM.map_vma(va, Perm::from_u8(ins.arg).unwrap_or(Perm::Rw));
            }
            Op::Munmap => {
                TEST_MM.munmap(va, PAGE_SIZE);
            }
            Op::Mprotect => {
                TEST_MM.mprotect(
                    va,
                    PAGE_SIZE,
                    crate::mm::litmus_ops::perm_flags(Perm::from_u8(ins.arg).unwrap_or(Perm::Rw)),
                );
            }
            Op::Madvise => match Advice::from_u8(ins.arg) {
                // Unavailable before v4.5: the checker refuses such a run.
                Some(Advice::Free) => {
                    TEST_MM.madvise_free(va, PAGE_SIZE);
                }
                _ => TEST_MM.madvise_dontneed(va, PAGE_SIZE),
            },
            Op::Cow => {
                let _ = TEST_MM.cow(va);
            }
            Op::Ksm => {
                TEST_MM.ksm(va, va2);
            }
            Op::Migrate => {
                let _ = TEST_MM.migrate(va);
            }
            Op::Mkclean => {
                let v = TEST_MM.mkclean(va);
                self.set(ins.dst, v);
            }
            Op::Reclaim => TEST_MM.reclaim(va),
            Op::Mremap => {
                let _ = TEST_MM.mremap(va, va2);
            }
            Op::Alloc => {
                let _ = TEST_MM.alloc(va);
            }
            Op::Truncate => {
                // The location's file, wherever it is mapped now (mremap
                // may have moved it).
                if let Some(f) = LOC_FILE[ins.loc as usize].load(Ordering::Relaxed).checked_sub(1) {
                    TEST_MM.truncate_file(f as usize);
                }
            }
            Op::UffdWp => {
                TEST_MM.uffd_wp(va, ins.arg == 1);
            }
            _ => {}
        }
        trace::emit(Kind::OpEnd, va, op as u64, 0);
    }
}

/// When instruction `ins` can take its step under `vmm explore`: a `wait`
/// when its word satisfies it; everything else at once (a `barrier` waits
/// at its own point after arriving).
pub(super) fn guard_of(ins: &lt::Instr) -> abi::explore::Guard {
    use abi::explore::{guard, object, Guard};
    if ins.op() != Op::Wait {
        return Guard::NONE;
    }
    let addr = var_word(ins.loc) as *const AtomicU64 as u64;
    let obj = object::VAR + ins.loc;
    match WaitCmp::from_u8(ins.arg) {
        Some(WaitCmp::Eq) => Guard { kind: guard::EQ, addr, value: ins.imm, object: obj },
        _ => Guard { kind: guard::NONZERO, addr, value: 0, object: obj },
    }
}

/// An armed hook fired for the `n`-th time in this op: run the op's group
/// for it (`at HOOK#n`, else `at HOOK`). `arg` = thread | pc << 16.
pub(super) fn run_hook(h: Hook, n: u32, arg: u64) {
    let t = (arg & 0xffff) as usize;
    let pc = ((arg >> 16) & 0xffff_ffff) as u32;
    let b = blob();
    let Some(td) = b.thread(t as u16) else { return };
    let Some((start, end)) = b.hook_group(&td, pc, h, n) else { return };
    let mut ctx = ThreadCtx { t };
    let mut at = start;
    while at < end {
        if let Some(ins) = b.thread_instr(&td, at) {
            ctx.publish(at, Some(h));
            explore::point(abi::explore::site::make(abi::explore::site::INSTR, at, 0, 0), guard_of(&ins));
            let next = (at + 1 < end).then(|| b.thread_instr(&td, at + 1)).flatten();
            if let Some(next) = next.filter(|n| pairs_with_wait(&ins, n)) {
                ctx.signal_then_wait(&ins, &next, at + 1, Some(h));
                at += 2;
                continue;
            }
            ctx.sync(&ins);
        }
        at += 1;
    }
    ctx.publish(pc, None);
}

/// A `signal` directly followed by a `wait`, neither with hooks, in a
/// thread that `vmm explore` does not schedule (its scheduler has a point
/// before the `wait`).
pub(super) fn pairs_with_wait(ins: &lt::Instr, next: &lt::Instr) -> bool {
    ins.op() == Op::Signal && ins.nhooks == 0 && next.op() == Op::Wait && next.nhooks == 0 && !explore::scheduled()
}
