//! Trace recording: each CPU appends fixed-size records (`abi::trace`) to
//! its own ring in the trace area, without exiting.
//!
//! A trace point costs one load and a branch while tracing is off (the VMM
//! sets the `enabled` word only for traced runs). When on, the record takes
//! its sequence number from the global counter with one `lock xadd` (the
//! VMM and the device use the same counter), reads the TSC and is written
//! with interrupts off, so a shootdown IPI's records cannot interleave with
//! the record it interrupted. A full ring blocks: the `TRACE_DRAIN`
//! hypercall makes the VMM consume it before we go on.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::trace::{area, source, RECORD_LEN};

pub use abi::trace::Kind;

use crate::{arch, hypercall, percpu};

/// A word of the trace area.
fn word(gpa: u64) -> &'static AtomicU64 {
    // SAFETY: the trace area is identity-mapped guest RAM reserved for the
    // trace (abi::layout); every offset used is 8-byte aligned.
    unsafe { &*(gpa as *const AtomicU64) }
}

/// Records one event from this CPU; a no-op unless the run is traced.
#[inline(always)]
pub fn emit(kind: Kind, va: u64, a: u64, b: u64) {
    if word(area::word(area::ENABLED)).load(Ordering::Relaxed) == 0 {
        return;
    }
    record(kind, va, a, b);
}

/// RFLAGS.IF.
const IF: u64 = 1 << 9;

#[inline(always)]
fn irq_save() -> u64 {
    let flags: u64;
    // SAFETY: reads RFLAGS and masks interrupts; no memory is touched but
    // the stack slot pushfq uses.
    unsafe { asm!("pushfq", "pop {}", "cli", out(reg) flags) }
    flags
}

/// The VMM sets `enabled` only after it laid out one ring per vCPU, so the
/// geometry needs no checks here; it also stamps the iteration when it
/// drains (everything it drains belongs to the iteration in progress).
#[inline(never)]
#[cold]
fn record(kind: Kind, va: u64, a: u64, b: u64) {
    let flags = irq_save();
    let cap = word(area::word(area::CAPACITY)).load(Ordering::Relaxed);
    store(percpu::cpu(), cap, kind, va, a, b);
    if flags & IF != 0 {
        arch::interrupts_enable();
    }
}

#[inline(always)]
fn store(cpu: u64, cap: u64, kind: Kind, va: u64, a: u64, b: u64) {
    let hdr = area::ring_header(cpu);
    let head = word(hdr + area::HEAD);
    let h = head.load(Ordering::Relaxed);
    if h.wrapping_sub(word(hdr + area::TAIL).load(Ordering::Acquire)) >= cap {
        let blocked = word(hdr + area::BLOCKED);
        blocked.store(blocked.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        hypercall::call::<abi::hypercall::calls::TraceDrain>(abi::hypercall::Empty);
        if h.wrapping_sub(word(hdr + area::TAIL).load(Ordering::Acquire)) >= cap {
            let dropped = word(hdr + area::DROPPED);
            dropped.store(dropped.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            return;
        }
    }
    let seq = word(area::word(area::SEQ)).fetch_add(1, Ordering::SeqCst);
    let tsc = arch::rdtsc();
    let w2 = kind as u64 | (source::GUEST as u64) << 16 | (cpu & 0xff) << 24;
    let p = (area::ring_data(cpu, cap) + (h & (cap - 1)) * RECORD_LEN as u64) as *mut u64;
    // SAFETY: slot `h` of this CPU's ring lies inside the trace area (the
    // VMM sized the rings to fit) and is free: the consumer is past it.
    // Only this CPU writes its ring, and interrupts are off.
    unsafe {
        p.write_volatile(seq);
        p.add(1).write_volatile(tsc);
        p.add(2).write_volatile(w2);
        p.add(3).write_volatile(va);
        p.add(4).write_volatile(a);
        p.add(5).write_volatile(b);
    }
    head.store(h.wrapping_add(1), Ordering::Release);
}
