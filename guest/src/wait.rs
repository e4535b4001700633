//! Waiting for a word of shared memory to change: spin, then park.
//!
//! The general primitive for every guest thread that waits on another
//! (litmus `wait`/`barrier`, CPU 0 waiting for the threads, a scheduler's
//! turn word): [`wait_until`] checks the condition, spins natively for the
//! boot's budget (`BootInfo::spin_before_park_ns`: only when every vCPU has
//! a host CPU of its own), then parks the vCPU with the `WAIT` hypercall —
//! a futex wait the VMM serves by halting the vCPU inside KVM, so no exit
//! is spent while it sleeps and an interrupt (a shootdown IPI) still gets
//! through. [`wake`] follows every store a waiter may wait for.
//!
//! No wake-up is lost (Dekker between the word and its [`WAITERS`]
//! bucket): a waiter counts itself in the word's bucket, then looks at the
//! word once more and parks only if it is unchanged — and the VMM parks it
//! only if the word still holds the value it saw, checked under the lock
//! `WAKE` takes; a signaller stores the word, then looks at the bucket and
//! skips `WAKE` when nobody waits on a word of it (the common case: a
//! signal nobody is parked for costs no exit).
//! Device programs' `SIGNAL`/`KADD` stores wake waiters in the VMM.
//!
//! Works at CPL0 and CPL3. At CPL0 the `WAIT` is issued with interrupts
//! enabled (`sti; out`), so a parked vCPU still takes IPIs.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::hypercall::calls::{Wait, WaitRequest, Wake, WakeRequest, WAKE_WORDS};
use abi::layout::MAX_VCPUS;

use crate::{arch, hypercall, percpu, time};

/// vCPUs inside a park right now, by a hash of the word they wait on:
/// signallers skip `WAKE` when the word's bucket is 0.
static WAITERS: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];

/// A word's bucket: a Fibonacci hash of its address, not the address
/// modulo the table (words a multiple of 512 bytes apart — one CSD per
/// target CPU, `smp::CSD`'s rows — would share a bucket and make each
/// other's signallers `WAKE` for nobody).
fn bucket(word: &AtomicU64) -> &'static AtomicU64 {
    const BITS: u32 = WAITERS.len().trailing_zeros();
    let h = ((word as *const AtomicU64 as u64) >> 3).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - BITS);
    &WAITERS[h as usize]
}
const _: () = assert!(WAITERS.len().is_power_of_two());

/// Spin budget before parking, in TSC cycles (set at boot).
static SPIN_CYCLES: AtomicU64 = AtomicU64::new(0);

/// Parks and wake-ups this boot, for the self-tests.
pub static PARKS: AtomicU64 = AtomicU64::new(0);

/// Sets the spin budget from `BootInfo::spin_before_park_ns` (CPU 0, at boot).
pub fn init(spin_before_park_ns: u64) {
    let cycles = spin_before_park_ns.saturating_mul(time::tsc_khz()) / 1_000_000;
    SPIN_CYCLES.store(cycles, Ordering::Relaxed);
}

/// Waits until `cond(word)` holds; returns the value that satisfied it.
/// Spurious returns of the park are absorbed here.
pub fn wait_until(word: &AtomicU64, cond: impl Fn(u64) -> bool) -> u64 {
    wait_until_waking(None, word, cond)
}

/// `wake(signalled)` then `wait_until(word, cond)`, in one exit when both
/// are needed (a signal followed by a wait: the `WAIT` wakes first).
pub fn wake_then_wait_until(signalled: &AtomicU64, word: &AtomicU64, cond: impl Fn(u64) -> bool) -> u64 {
    wait_until_waking(Some(signalled), word, cond)
}

/// Per CPU: a word a thread signalled as its last step, whose waiters its
/// next `WAIT` (its worker's park) wakes — or a `WAKE` if it does not park
/// ([`defer_wake`]).
static DEFERRED: [AtomicU64; MAX_VCPUS as usize] = [const { AtomicU64::new(0) }; MAX_VCPUS as usize];

/// [`wake`], left to this CPU's next park (`WAIT`'s `wake_also`: one exit
/// for both) or the next wait that does not park. For a litmus thread's
/// last `signal`: nothing of the thread comes after it.
pub fn defer_wake(word: &AtomicU64) {
    if bucket(word).load(Ordering::SeqCst) == 0 {
        return;
    }
    flush_deferred();
    DEFERRED[percpu::cpu() as usize].store(word as *const AtomicU64 as u64, Ordering::Relaxed);
}

/// The wake [`defer_wake`] left, now.
pub fn flush_deferred() {
    let w = take_deferred();
    if w != 0 {
        hypercall::call::<Wake>(WakeRequest::one(w));
    }
}

/// This CPU's deferred word (0 if none), taken. Only this CPU's thread code
/// touches its slot (not its interrupt handlers): a load and a store, no
/// locked instruction (each costs microseconds where kernel code is
/// emulated, and every wait asks).
fn take_deferred() -> u64 {
    let d = &DEFERRED[percpu::cpu() as usize];
    let w = d.load(Ordering::Relaxed);
    if w != 0 {
        d.store(0, Ordering::Relaxed);
    }
    w
}

fn wait_until_waking(mut signalled: Option<&AtomicU64>, word: &AtomicU64, cond: impl Fn(u64) -> bool) -> u64 {
    // The wake may not wait for a park that never comes.
    let wake_now = |s: &mut Option<&AtomicU64>| {
        if let Some(w) = s.take() {
            wake(w);
        }
        flush_deferred();
    };
    let v = word.load(Ordering::Acquire);
    if cond(v) {
        wake_now(&mut signalled);
        return v;
    }
    let budget = SPIN_CYCLES.load(Ordering::Relaxed);
    if budget > 0 {
        // Whoever we signalled may be what we wait for: wake them first.
        wake_now(&mut signalled);
        let start = arch::rdtsc();
        while arch::rdtsc().wrapping_sub(start) < budget {
            let v = word.load(Ordering::Acquire);
            if cond(v) {
                return v;
            }
            arch::pause();
        }
    }
    loop {
        let v = word.load(Ordering::Acquire);
        if cond(v) {
            wake_now(&mut signalled);
            return v;
        }
        let waiters = bucket(word);
        waiters.fetch_add(1, Ordering::SeqCst);
        // The signalled word's waiters are woken by this WAIT, or now if it
        // does not park (or nobody waits on the signalled word).
        let wake_first = signalled
            .take()
            .filter(|w| bucket(w).load(Ordering::SeqCst) != 0)
            .map_or(0, |w| w as *const AtomicU64 as u64);
        let wake_also = take_deferred();
        if word.load(Ordering::SeqCst) == v {
            PARKS.fetch_add(1, Ordering::Relaxed);
            let gpa = word as *const AtomicU64 as u64;
            hypercall::wait::<Wait>(WaitRequest { gpa, expected: v, wake_first, wake_also });
        } else if wake_first != 0 || wake_also != 0 {
            let mut req = WakeRequest::one(wake_first);
            req.gpas[1] = wake_also;
            hypercall::call::<Wake>(req);
        }
        waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// After a store to `word` that a waiter may be waiting for: wakes the
/// vCPUs parked on it (nothing when nobody waits on a word of its
/// bucket). The store must be `SeqCst` (or followed by a full fence) for
/// the Dekker above.
pub fn wake(word: &AtomicU64) {
    if bucket(word).load(Ordering::SeqCst) != 0 {
        hypercall::call::<Wake>(WakeRequest::one(word as *const AtomicU64 as u64));
    }
}

/// Stores `value` into each of `words` and wakes their waiters, the
/// stores done by the VMM with one `WAKE` per [`WAKE_WORDS`] words: after
/// the page-table updates this CPU's call carries (`pgtable::carry_into`),
/// so no waiter sees `value` before them.
pub fn store_and_wake<'a>(words: impl Iterator<Item = &'a AtomicU64>, value: u64) {
    let empty = WakeRequest { gpas: [0; WAKE_WORDS], store: abi::hypercall::Flag::YES, value };
    let mut req = empty;
    let mut n = 0;
    for word in words {
        req.gpas[n] = word as *const AtomicU64 as u64;
        n += 1;
        if n == WAKE_WORDS {
            hypercall::call::<Wake>(req);
            req = empty;
            n = 0;
        }
    }
    if n > 0 {
        hypercall::call::<Wake>(req);
    }
}
