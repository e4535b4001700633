//! Time from the TSC, calibrated by the frequency the VMM passes in BootInfo.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch;

static TSC_KHZ: AtomicU64 = AtomicU64::new(1_000_000);

pub fn init(tsc_khz: u64) {
    if tsc_khz != 0 {
        TSC_KHZ.store(tsc_khz, Ordering::Relaxed);
    }
}

pub fn tsc_khz() -> u64 {
    TSC_KHZ.load(Ordering::Relaxed)
}

/// Spins until `cond()` holds or `timeout_ms` passed; true if it held.
pub fn spin_until(timeout_ms: u64, mut cond: impl FnMut() -> bool) -> bool {
    let start = arch::rdtsc();
    let limit = timeout_ms.saturating_mul(tsc_khz());
    loop {
        if cond() {
            return true;
        }
        if arch::rdtsc().wrapping_sub(start) > limit {
            return cond();
        }
        arch::pause();
    }
}
