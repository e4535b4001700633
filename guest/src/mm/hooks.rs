//! Named hook points in the mm model (`abi::litmus::Hook`).
//!
//! Each CPU has a mask of armed hooks and one callback. [`hook`] is what the
//! mm code calls at every named point: one per-CPU load and a bit test when
//! nothing is armed, which matters here because every guest instruction is
//! emulated on our hosts. The litmus interpreter arms the hooks of the
//! current operation for the whole operation; the callback learns which
//! firing of the hook this is in the operation (1-based: `at HOOK#N`).
//! Self-tests can arm one hook to fire once.

use core::sync::atomic::{AtomicU32, Ordering};

use abi::layout::MAX_VCPUS;
use abi::litmus::Hook;

use crate::percpu;
use crate::sync::SpinLock;

/// What runs at an armed hook: `f(hook, n, arg)` for the `n`-th firing
/// (1-based) of `hook` since it was armed, with whatever locks the thread
/// holds at that point.
pub type HookFn = fn(Hook, u32, u64);

/// Hook numbers fit in the 32-bit masks.
const _: () = assert!(Hook::ALL.len() < 32);

const N: usize = MAX_VCPUS as usize;
/// Bit `h` set: hook number `h` is armed on this CPU.
static MASK: [AtomicU32; N] = [const { AtomicU32::new(0) }; N];
/// Bit `h` set: disarm hook `h` after it fires once.
static ONCE: [AtomicU32; N] = [const { AtomicU32::new(0) }; N];
/// The callback and its argument; locked only when a hook fires.
static CALLBACK: [SpinLock<(HookFn, u64)>; N] = [const { SpinLock::new((noop as HookFn, 0)) }; N];
/// Firings of each hook since it was armed, per CPU.
static FIRED: [[AtomicU32; 32]; N] = [const { [const { AtomicU32::new(0) }; 32] }; N];

fn noop(_: Hook, _: u32, _: u64) {}

fn reset_counts(c: usize, mask: u32) {
    for (h, n) in FIRED[c].iter().enumerate() {
        if mask & (1 << h) != 0 {
            n.store(0, Ordering::Relaxed);
        }
    }
}

/// Arms every hook in `mask` (bit = hook number) on this CPU until
/// [`disarm`]; `f(hook, arg)` runs each time one is reached.
pub fn arm(mask: u32, f: HookFn, arg: u64) {
    let c = percpu::cpu() as usize;
    *CALLBACK[c].lock() = (f, arg);
    reset_counts(c, mask);
    ONCE[c].store(0, Ordering::Relaxed);
    MASK[c].store(mask, Ordering::Release);
}

/// Arms `hook` on this CPU for one firing.
pub fn arm_once(hook: Hook, f: HookFn, arg: u64) {
    let c = percpu::cpu() as usize;
    let bit = 1u32 << hook as u8;
    *CALLBACK[c].lock() = (f, arg);
    reset_counts(c, bit);
    ONCE[c].store(bit, Ordering::Relaxed);
    MASK[c].store(bit, Ordering::Release);
}

/// Disarms every hook of this CPU.
pub fn disarm() {
    MASK[percpu::cpu() as usize].store(0, Ordering::Release);
}

/// The mask bit of a hook.
pub const fn bit(h: Hook) -> u32 {
    1 << h as u8
}

/// A named point in the mm code; a no-op unless armed on this CPU.
#[inline]
pub fn hook(h: Hook) {
    // Under `vmm explore` every hook is a scheduling point.
    crate::explore::hook_point(h);
    hook_unscheduled(h);
}

/// A named point that is not a scheduling point of its own (the caller
/// made one, e.g. a lock acquisition with its guard).
#[inline]
pub fn hook_unscheduled(h: Hook) {
    crate::trace::emit(crate::trace::Kind::Hook, 0, h as u64, 0);
    let c = percpu::cpu() as usize;
    let mask = MASK[c].load(Ordering::Acquire);
    if mask & bit(h) == 0 {
        return;
    }
    if ONCE[c].load(Ordering::Relaxed) & bit(h) != 0 {
        MASK[c].store(mask & !bit(h), Ordering::Release);
    }
    let n = FIRED[c][h as usize].fetch_add(1, Ordering::Relaxed) + 1;
    let (f, arg) = *CALLBACK[c].lock();
    f(h, n, arg);
}
