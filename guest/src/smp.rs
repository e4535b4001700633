//! SMP: CPUs coming online, running work on a given CPU, and
//! `smp_call_function_single` over real IPIs (the path TLB shootdowns reuse).

use abi::layout::MAX_VCPUS;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::wait::{self, wait_until, wake, wake_then_wait_until};
use crate::{apic, arch, cpl3, percpu, time};

const N: usize = MAX_VCPUS as usize;

static NUM_CPUS: AtomicU64 = AtomicU64::new(1);
static ONLINE: AtomicU64 = AtomicU64::new(0);

pub fn set_num_cpus(n: u64) {
    NUM_CPUS.store(n, Ordering::Relaxed);
}

pub fn num_cpus() -> u64 {
    NUM_CPUS.load(Ordering::Relaxed)
}

pub fn mark_online() {
    ONLINE.fetch_add(1, Ordering::AcqRel);
}

pub fn online() -> u64 {
    ONLINE.load(Ordering::Acquire)
}

pub type WorkFn = fn(u64);

const IDLE: u64 = 0;
const POSTED: u64 = 1;
const RUNNING: u64 = 2;
const DONE: u64 = 3;

/// One work slot per CPU: the boot CPU posts, the target runs it from its
/// idle loop with interrupts enabled (so the work itself can take IPIs).
struct Work {
    func: AtomicUsize,
    arg: AtomicU64,
    state: AtomicU64,
}

impl Work {
    /// The item the slot's CPU runs once the slot is `POSTED`.
    fn set_item(&self, f: WorkFn, arg: u64) {
        self.func.store(f as usize, Ordering::Relaxed);
        self.arg.store(arg, Ordering::Relaxed);
    }
}

#[allow(clippy::declare_interior_mutable_const)]
const WORK_INIT: Work = Work { func: AtomicUsize::new(0), arg: AtomicU64::new(0), state: AtomicU64::new(IDLE) };
static WORK: [Work; N] = [WORK_INIT; N];

/// CPUs whose work slot is served by a worker at CPL3 ([`start_cpl3_workers`]).
static CPL3_WORKER: [AtomicBool; N] = [const { AtomicBool::new(false) }; N];

/// Posts `f(arg)` to `cpu` and wakes it: the RESCHEDULE IPI for a CPU in
/// its idle loop, a `WAKE` of the slot for a CPL3 worker (parked on it).
/// Returns false if the CPU is busy.
pub fn run_on(cpu: u64, f: WorkFn, arg: u64) -> bool {
    let w = &WORK[cpu as usize];
    if w.state.load(Ordering::Acquire) != IDLE {
        return false;
    }
    w.set_item(f, arg);
    w.state.store(POSTED, Ordering::SeqCst);
    if CPL3_WORKER[cpu as usize].load(Ordering::Relaxed) {
        wake(&w.state);
    } else {
        apic::send_ipi(cpu, apic::RESCHEDULE_VECTOR);
    }
    true
}

/// Runs `f(arg)` on each `(cpu, arg)` of `items` (waiting for a busy CPU
/// to be idle first): the CPL3 workers among them are started with one
/// `WAKE` that also publishes their items (the VMM stores `POSTED` into
/// their slots after the page-table updates the call carries — a worker
/// that happens to be awake must not start on a half-built mm); a CPU in
/// its idle loop gets its item and the RESCHEDULE IPI.
pub fn run_on_many(items: impl Iterator<Item = (u64, u64)>, f: WorkFn) {
    let mut slots = [0u64; N];
    let mut n = 0;
    for (cpu, arg) in items {
        let w = &WORK[cpu as usize];
        while w.state.load(Ordering::Acquire) != IDLE {
            arch::pause();
        }
        w.set_item(f, arg);
        if CPL3_WORKER[cpu as usize].load(Ordering::Relaxed) {
            slots[n] = cpu;
            n += 1;
        } else {
            w.state.store(POSTED, Ordering::SeqCst);
            apic::send_ipi(cpu, apic::RESCHEDULE_VECTOR);
        }
    }
    wait::store_and_wake(slots[..n].iter().map(|&c| &WORK[c as usize].state), POSTED);
}

/// Waits until the work posted to `cpu` finished; false on timeout. A
/// CPL3 caller parks until it is done (no timeout: the VMM's watchdog
/// ends a stuck run).
pub fn wait_done(cpu: u64, timeout_ms: u64) -> bool {
    let w = &WORK[cpu as usize];
    let ok = if percpu::cpl() == 3 {
        wait_until(&w.state, |s| s == DONE);
        true
    } else {
        time::spin_until(timeout_ms, || w.state.load(Ordering::Acquire) == DONE)
    };
    if ok {
        w.state.store(IDLE, Ordering::Release);
    }
    ok
}

/// Turns every other CPU's idle loop into a worker at CPL3 that parks on
/// its work slot and runs what [`run_on`] posts there at CPL3 (one entry
/// to CPL3 per boot, not one per piece of work). Returns once all are
/// waiting for work. Call from CPU 0 at CPL0.
pub fn start_cpl3_workers() {
    let me = percpu::cpu();
    for cpu in (0..num_cpus()).filter(|&c| c != me) {
        if CPL3_WORKER[cpu as usize].load(Ordering::Acquire) {
            continue;
        }
        while !run_on(cpu, enter_cpl3_worker, 0) {
            arch::pause();
        }
        // The worker marks the entry item done by going back to IDLE.
        time::spin_until(u64::MAX, || CPL3_WORKER[cpu as usize].load(Ordering::Acquire));
    }
}

/// Work item (in the idle loop, CPL0): become this CPU's CPL3 worker.
fn enter_cpl3_worker(_: u64) {
    cpl3::run_at_cpl3(cpl3_worker, 0);
}

extern "C" fn cpl3_worker(_: u64) -> u64 {
    let cpu = percpu::cpu() as usize;
    let w = &WORK[cpu];
    // The item that brought us here is over; from now on the slot is ours.
    w.state.store(IDLE, Ordering::SeqCst);
    CPL3_WORKER[cpu].store(true, Ordering::Release);
    wait_until(&w.state, |s| s == POSTED);
    loop {
        w.state.store(RUNNING, Ordering::Relaxed);
        let func = w.func.load(Ordering::Relaxed);
        // SAFETY: `func` was stored from a `WorkFn` by `run_on`.
        let f: WorkFn = unsafe { core::mem::transmute::<usize, WorkFn>(func) };
        f(w.arg.load(Ordering::Relaxed));
        w.state.store(DONE, Ordering::SeqCst);
        // Tell the poster, and park for the next item, in one exit.
        wake_then_wait_until(&w.state, &w.state, |s| s == POSTED);
    }
}

/// Runs `f(arg)` on every online CPU (the caller's included) and waits for all.
/// Returns the CPUs that did not finish in time as a count.
pub fn run_on_all(f: WorkFn, arg: u64, timeout_ms: u64) -> u64 {
    let me = percpu::cpu();
    let n = num_cpus();
    for cpu in (0..n).filter(|&c| c != me) {
        while !run_on(cpu, f, arg) {
            arch::pause();
        }
    }
    f(arg);
    (0..n).filter(|&c| c != me).filter(|&c| !wait_done(c, timeout_ms)).count() as u64
}

/// The idle loop of every CPU but the boot CPU: halt until work is posted.
pub fn idle_loop() -> ! {
    let w = &WORK[percpu::cpu() as usize];
    loop {
        arch::interrupts_disable();
        if w.state.load(Ordering::Acquire) == POSTED {
            w.state.store(RUNNING, Ordering::Relaxed);
            arch::interrupts_enable();
            let func = w.func.load(Ordering::Relaxed);
            // SAFETY: `func` was stored from a `WorkFn` by `run_on`.
            let f: WorkFn = unsafe { core::mem::transmute::<usize, WorkFn>(func) };
            f(w.arg.load(Ordering::Relaxed));
            w.state.store(DONE, Ordering::Release);
        } else {
            arch::safe_halt();
        }
    }
}

/// Call-single-data, one slot per (target, sender) pair, like Linux's `csd`.
struct Csd {
    func: AtomicUsize,
    arg: AtomicU64,
    /// [`POSTED_CSD`] or [`CLAIMED_CSD`] while the request is pending, 0
    /// once it ran (a word: CPL3 senders park on it).
    pending: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const CSD_INIT: Csd = Csd { func: AtomicUsize::new(0), arg: AtomicU64::new(0), pending: AtomicU64::new(0) };
#[allow(clippy::declare_interior_mutable_const)]
const CSD_ROW: [Csd; N] = [CSD_INIT; N];
static CSD: [[Csd; N]; N] = [CSD_ROW; N];

/// Runs `f(arg)` on `target` in interrupt context (a real IPI, also when
/// `target` is this CPU) and waits until it has run. Must be called with
/// interrupts enabled, as Linux requires, or two CPUs calling each other
/// would deadlock. Returns false if the target did not answer in time.
pub fn call_function_single(target: u64, f: WorkFn, arg: u64, timeout_ms: u64) -> bool {
    let me = percpu::cpu();
    let csd = &CSD[target as usize][me as usize];
    if !csd_wait(csd, timeout_ms) {
        return false;
    }
    csd.func.store(f as usize, Ordering::Relaxed);
    csd.arg.store(arg, Ordering::Relaxed);
    csd.pending.store(POSTED_CSD, Ordering::Release);
    apic::send_ipi(target, apic::CALL_FUNCTION_VECTOR);
    csd_wait(csd, timeout_ms)
}

/// Waits until `csd` is no longer pending: spinning with a timeout at
/// CPL0; at CPL3 spinning, then parked (the handler wakes the word; no
/// timeout: the VMM's watchdog ends a stuck run).
fn csd_wait(csd: &Csd, timeout_ms: u64) -> bool {
    if percpu::cpl() == 3 {
        wait_until(&csd.pending, |p| p == 0);
        return true;
    }
    time::spin_until(timeout_ms, || csd.pending.load(Ordering::Acquire) == 0)
}

/// Runs `f(arg)` on every CPU in `targets` (not this one) in interrupt
/// context: all IPIs are sent first, then all completions awaited, as
/// Linux's `smp_call_function_many`. Returns the number of CPUs, or `None`
/// if one did not answer within `timeout_ms`.
pub fn call_function_many(targets: impl Iterator<Item = u64>, f: WorkFn, arg: u64, timeout_ms: u64) -> Option<u64> {
    // At CPL3 the IPIs go out in one `IPI` hypercall once all are posted.
    let batch = percpu::cpl() == 3;
    let (sent, n) = post_requests(targets, f, arg, timeout_ms, !batch)?;
    if batch && n > 0 {
        apic::send_ipi_many(sent, apic::CALL_FUNCTION_VECTOR);
    }
    wait_requests(&sent, timeout_ms).then_some(n)
}

/// [`call_function_many`] from CPL3 with local work between the IPIs and
/// the wait, as `smp_call_function_many_cond` runs the function on the
/// calling CPU: `local(ipi_cpus)` does it, sending `CALL_FUNCTION_VECTOR`
/// to the CPUs in mask `ipi_cpus` with the same exit (a FLUSH's
/// follow-up); the mask is 0 when there are none, or when a target is past
/// CPU 63 and the IPIs went out already.
pub fn call_function_many_cpl3(
    targets: impl Iterator<Item = u64>,
    f: WorkFn,
    arg: u64,
    local: impl FnOnce(u64),
) -> u64 {
    let Some((sent, n)) = post_requests(targets, f, arg, 0, false) else { return 0 };
    if sent[1..].iter().any(|&w| w != 0) {
        apic::send_ipi_many(sent, apic::CALL_FUNCTION_VECTOR);
        local(0);
    } else {
        local(sent[0]);
    }
    wait_requests(&sent, 0);
    n
}

/// Posts `f(arg)` in this CPU's CSD of each target (IPIing each when
/// `ipi_each`); the targets as a mask (the waits visit only those: every
/// guest instruction counts on hosts that emulate them) and their number.
fn post_requests(
    targets: impl Iterator<Item = u64>,
    f: WorkFn,
    arg: u64,
    timeout_ms: u64,
    ipi_each: bool,
) -> Option<([u64; N / 64], u64)> {
    let me = percpu::cpu() as usize;
    let mut sent = [0u64; N / 64];
    let mut n = 0;
    for target in targets {
        let csd = &CSD[target as usize][me];
        if !csd_wait(csd, timeout_ms) {
            return None;
        }
        csd.func.store(f as usize, Ordering::Relaxed);
        csd.arg.store(arg, Ordering::Relaxed);
        csd.pending.store(POSTED_CSD, Ordering::Release);
        if ipi_each {
            apic::send_ipi(target, apic::CALL_FUNCTION_VECTOR);
        }
        sent[target as usize / 64] |= 1 << (target % 64);
        n += 1;
    }
    Some((sent, n))
}

/// Waits until every CSD of this CPU's at the CPUs in `sent` ran.
fn wait_requests(sent: &[u64; N / 64], timeout_ms: u64) -> bool {
    let me = percpu::cpu() as usize;
    for (word, bits) in sent.iter().enumerate().take((num_cpus() as usize).div_ceil(64)) {
        let mut bits = *bits;
        while bits != 0 {
            let target = word * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if !csd_wait(&CSD[target][me], timeout_ms) {
                return false;
            }
        }
    }
    true
}

/// The CSD word of the request this CPU's handler runs, until the request
/// takes it ([`take_ack`]) to acknowledge it itself; CPL3 only.
static CSD_ACK: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
/// The request this CPU's handler runs is its last, and the IPI ended a
/// park in `WAIT`: its acknowledging call may park the vCPU again.
static CSD_REPARK: [AtomicBool; N] = [const { AtomicBool::new(false) }; N];

/// For the function a CALL_FUNCTION request runs at CPL3: the GPA of the
/// request's CSD word, which the caller then sets to 0 and wakes with an
/// exit it makes anyway (a FLUSH's `ack`: the flush and `csd_unlock` in
/// one exit), 0 if there is none (CPL0, or not in a handler); and whether
/// that call may park the vCPU again (`FlushThenRequest::repark`).
pub fn take_ack() -> (u64, bool) {
    if percpu::cpl() != 3 {
        return (0, false);
    }
    let me = percpu::cpu() as usize;
    let word = CSD_ACK[me].swap(0, Ordering::Relaxed);
    (word, word != 0 && CSD_REPARK[me].swap(false, Ordering::Relaxed))
}

/// A CSD's `pending`: its request is posted, or taken by a handler.
const POSTED_CSD: u64 = 1;
const CLAIMED_CSD: u64 = 2;

/// `CALL_FUNCTION_VECTOR` handler: run every pending request addressed to
/// us. `parked`: the IPI ended this CPU's park in `WAIT` (CPL3), so the
/// last request's acknowledgement may park it again (`take_ack`) — only
/// the last: a request behind it must not wait for the park to end.
pub fn handle_call_function_ipi(parked: bool) {
    let me = percpu::cpu() as usize;
    let n = num_cpus() as usize;
    for (i, csd) in CSD[me].iter().enumerate().take(n) {
        // Claimed before it runs at CPL3 (`cpl3::user_ipi`), where a second
        // IPI may interrupt this handler and must not run the request
        // again; at CPL0 interrupts are off in here (and a locked
        // instruction is an expensive one to emulate).
        if csd.pending.load(Ordering::Acquire) == POSTED_CSD
            && (percpu::cpl() == 0
                || csd.pending.compare_exchange(POSTED_CSD, CLAIMED_CSD, Ordering::Acquire, Ordering::Relaxed).is_ok())
        {
            let func = csd.func.load(Ordering::Relaxed);
            // SAFETY: stored from a `WorkFn` by `call_function_single`.
            let f: WorkFn = unsafe { core::mem::transmute::<usize, WorkFn>(func) };
            let word = &csd.pending as *const AtomicU64 as u64;
            let at_cpl3 = percpu::cpl() == 3;
            // Saved and put back: a nested handler (CPL3) has its own.
            let outer = if at_cpl3 { CSD_ACK[me].swap(word, Ordering::Relaxed) } else { 0 };
            if parked {
                let last = CSD[me][i + 1..n].iter().all(|c| c.pending.load(Ordering::Acquire) != POSTED_CSD);
                CSD_REPARK[me].store(last, Ordering::Relaxed);
            }
            f(csd.arg.load(Ordering::Relaxed));
            if parked {
                CSD_REPARK[me].store(false, Ordering::Relaxed);
            }
            let acked = at_cpl3 && CSD_ACK[me].swap(outer, Ordering::Relaxed) == 0;
            if !acked {
                csd.pending.store(0, Ordering::SeqCst);
                wake(&csd.pending);
            }
        }
    }
}
