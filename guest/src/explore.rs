//! The guest's side of `vmm explore`: litmus threads run one at a time and
//! follow the VMM's schedule plan through the turn protocol of
//! `abi::explore`, with no exit at a scheduling point unless the turn
//! passes to a thread that waits.
//!
//! Scheduling points: before every interpreted instruction (the
//! interpreter), at every hook firing (`mm::hooks`), before every lock
//! acquisition (`mm::ptdesc`, the mm's locks) and where the mm model waits
//! for a word to change. A thread that is not to run spins on the turn
//! word with interrupts enabled, so a shootdown IPI sent by the running
//! thread is handled at once, as on hardware.
//!
//! Footprints: the interpreter notes every kernel word a step reads or
//! writes (`note_var`) and every access to the test mm (`note_mem`); the
//! mm model is one object (`object::MEM`): every step that runs mm code —
//! the start of an mm operation, every step after a hook, lock or wait
//! point inside one, a page fault, a thread leaving the mm — writes it.
//! Trace records and the litmus state page are observations, not program
//! state, and are not noted. A step noted too little would make the
//! reduction unsound: when in doubt, note the mm.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use abi::explore::{self as ex, object, site, Guard, Next, Shared};
use abi::layout::MAX_VCPUS;
use abi::litmus::Hook;

use crate::percpu;

/// Guest memory, identity-mapped.
struct Mem;

impl Shared for Mem {
    fn load(&self, gpa: u64) -> u64 {
        // SAFETY: the explore area and the words guards name are identity-
        // mapped guest RAM, 8-byte aligned (u64 words).
        unsafe { &*(gpa as *const AtomicU64) }.load(Ordering::Acquire)
    }
    fn load_u32(&self, gpa: u64) -> u32 {
        // SAFETY: as above, a 4-byte-aligned u32 (a page's flags word).
        unsafe { &*(gpa as *const AtomicU32) }.load(Ordering::Acquire)
    }
    fn load_u8(&self, gpa: u64) -> u8 {
        // SAFETY: as above, a byte (a test-and-set lock).
        unsafe { &*(gpa as *const AtomicU8) }.load(Ordering::Acquire)
    }
    fn store(&self, gpa: u64, v: u64) {
        // SAFETY: as in `load`; only the turn holder writes the area.
        unsafe { &*(gpa as *const AtomicU64) }.store(v, Ordering::Release)
    }
}

const N: usize = ex::MAX_THREADS;

/// Litmus thread (+1) each CPU runs under the scheduler; 0 = none.
static THREAD_OF_CPU: [AtomicU64; MAX_VCPUS as usize] = [const { AtomicU64::new(0) }; MAX_VCPUS as usize];
/// Per thread: 0 not arrived, 1 scheduled, 2 running free (the schedule broke).
static STATE: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
/// Per thread: the operation's pc and its hook / lock counters (for `#N`).
static OP_PC: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
static HOOK_FIRED: [[AtomicU32; 32]; N] = [const { [const { AtomicU32::new(0) }; 32] }; N];
/// Lock acquisitions in the operation (all kinds: the firings of the
/// `lock_acquire` hook, so a witness can name the N-th).
static LOCKS_TAKEN: [AtomicU32; N] = [const { AtomicU32::new(0) }; N];
/// Scheduling points passed on this CPU, for `vmm explore`'s cost figure.
pub static POINTS: AtomicU64 = AtomicU64::new(0);

const ARRIVED: u64 = ex::AREA + ex::ctl::ARRIVED;

/// Whether this iteration runs under the scheduler (the VMM set a plan).
pub fn iteration_active() -> bool {
    Mem.load(ex::AREA + ex::ctl::MAGIC) == ex::MAGIC && Mem.load(ex::AREA + ex::ctl::ACTIVE) == 1
}

/// This CPU runs litmus thread `t` under the scheduler (until `leave`).
pub fn enter(t: usize) {
    STATE[t].store(0, Ordering::Relaxed);
    OP_PC[t].store(0, Ordering::Relaxed);
    THREAD_OF_CPU[percpu::cpu() as usize].store(t as u64 + 1, Ordering::Release);
}

pub fn leave() {
    THREAD_OF_CPU[percpu::cpu() as usize].store(0, Ordering::Release);
}

/// The scheduled thread this CPU runs, if any (never in an interrupt
/// handler: a shootdown IPI's work belongs to the sender's step).
fn me() -> Option<usize> {
    if percpu::this().in_irq.load(Ordering::Relaxed) != 0 {
        return None;
    }
    match THREAD_OF_CPU[percpu::cpu() as usize].load(Ordering::Acquire) {
        0 => None,
        t => Some(t as usize - 1).filter(|&t| STATE[t].load(Ordering::Relaxed) != 2),
    }
}

/// Whether this CPU runs a thread the scheduler still schedules.
pub fn scheduled() -> bool {
    me().is_some()
}

fn wait_turn(t: usize) {
    let mut spins = 0u32;
    loop {
        let turn = Mem.load(ex::AREA + ex::ctl::TURN);
        if turn == t as u64 {
            return;
        }
        if turn == ex::NOBODY && Mem.load(ex::AREA + ex::ctl::ERROR) != ex::error::NONE {
            // The schedule broke (deadlock, divergence): run free; the VMM
            // ends the iteration and reports why.
            STATE[t].store(2, Ordering::Relaxed);
            return;
        }
        // Park in the VMM (no host CPU burnt) for up to 1 ms at a time:
        // coming back now and then lets a shootdown IPI in.
        let _ = &mut spins;
        crate::arch::outl(abi::hypercall::EXPLORE_PARK_PORT, t as u32);
    }
}

fn follow(t: usize, next: Next) {
    match next {
        Next::Run(u) if u == t as u64 => {}
        Next::Run(_) => wait_turn(t),
        Next::Stop => {
            if Mem.load(ex::AREA + ex::ctl::ERROR) != ex::error::NONE {
                STATE[t].store(2, Ordering::Relaxed);
            }
        }
    }
}

/// A scheduling point of the running thread: its next step (at `site`)
/// can run when `g` holds. Returns when it is this thread's turn.
pub fn point(site: u64, g: Guard) {
    let Some(t) = me() else { return };
    POINTS.fetch_add(1, Ordering::Relaxed);
    if STATE[t].load(Ordering::Relaxed) == 0 {
        STATE[t].store(1, Ordering::Relaxed);
        let arrive = || {
            // SAFETY: as in `Mem::load`.
            unsafe { &*(ARRIVED as *const AtomicU64) }.fetch_add(1, Ordering::AcqRel)
        };
        match ex::at_start(&Mem, t as u64, site, g, arrive) {
            Some(next) => follow(t, next),
            None => wait_turn(t),
        }
        return;
    }
    let next = ex::at_point(&Mem, t as u64, site, g);
    follow(t, next);
}

/// Before instruction `pc` of the running thread.
pub fn instr_point(pc: u32, g: Guard) {
    if let Some(t) = me() {
        OP_PC[t].store(pc as u64, Ordering::Relaxed);
        for h in &HOOK_FIRED[t] {
            h.store(0, Ordering::Relaxed);
        }
        LOCKS_TAKEN[t].store(0, Ordering::Relaxed);
    }
    point(site::make(site::INSTR, pc, 0, 0), g);
}

/// A hook fired in the running thread's operation. The step after it is
/// the rest of the mm operation up to its next point: it writes the mm.
pub fn hook_point(h: Hook) {
    let Some(t) = me() else { return };
    let nth = HOOK_FIRED[t][h as usize % 32].fetch_add(1, Ordering::Relaxed) + 1;
    let pc = OP_PC[t].load(Ordering::Relaxed) as u32;
    point(site::make(site::HOOK, pc, h as u8, nth.min(u16::MAX as u32) as u16), Guard::NONE);
    note_mem(true);
}

/// Before a lock acquisition of kind `kind` (`abi::trace::lock_kind`, named
/// in timelines by `litmus::linux_sites::lock_function`); `g` holds when the lock is free. Fires the `lock_acquire`
/// hook (where a witness pauses) after the scheduling point.
pub fn lock_point(kind: u8, g: Guard) {
    if let Some(t) = me() {
        let nth = LOCKS_TAKEN[t].fetch_add(1, Ordering::Relaxed) + 1;
        let pc = OP_PC[t].load(Ordering::Relaxed) as u32;
        point(site::make(site::LOCK, pc, kind, nth.min(u16::MAX as u32) as u16), g);
        note_mem(true);
    }
    crate::mm::hooks::hook_unscheduled(Hook::LockAcquire);
}

/// Inside an operation, waiting until the u64 at `addr` differs from
/// `value`; the step after it goes on in the mm.
pub fn wait_change(addr: u64, value: u64) {
    let Some(t) = me() else { return };
    let pc = OP_PC[t].load(Ordering::Relaxed) as u32;
    let g = Guard { kind: ex::guard::NE, addr, value, object: object::MEM };
    point(site::make(site::WAIT, pc, 0, 0), g);
    note_mem(true);
}

/// A `barrier`: after arriving, wait until the counter at `addr` reaches `target`.
pub fn barrier_point(addr: u64, target: u64) {
    let Some(t) = me() else { return };
    let pc = OP_PC[t].load(Ordering::Relaxed) as u32;
    let g = Guard { kind: ex::guard::GE, addr, value: target, object: object::BARRIER };
    point(site::make(site::WAIT, pc, 0, 0), g);
    if me().is_some() {
        ex::note(&Mem, t as u64, object::BARRIER, false);
    }
}

/// The running thread ran to its end.
pub fn finish() {
    let Some(t) = me() else { return };
    let next = ex::at_finish(&Mem, t as u64);
    // Nothing to wait for: this thread takes no more steps.
    let _ = next;
}

/// The running thread's step read or wrote litmus kernel word `loc`.
pub fn note_var(loc: u16, write: bool) {
    if let Some(t) = me() {
        ex::note(&Mem, t as u64, object::VAR + loc, write);
    }
}

/// The running thread's step read or wrote the barrier counter.
pub fn note_barrier() {
    if let Some(t) = me() {
        ex::note(&Mem, t as u64, object::BARRIER, true);
    }
}

/// The running thread's step touched the mm model (read: a TLB hit or a
/// fill; write: anything that can change it).
pub fn note_mem(write: bool) {
    if let Some(t) = me() {
        ex::note(&Mem, t as u64, object::MEM, write);
    }
}
