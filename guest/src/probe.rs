//! `mode=probe` (run by `vmm probe` under `--tlb native`): can this host
//! show a stale translation at all? Each probe caches a translation, changes
//! the PTE without the flush the architecture requires, reads again, and
//! counts the tries that still saw the old page.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::hypercall::calls::{ProbeReport, ProbeResult};
use abi::hypercall::Probe;
use abi::layout::USER_BASE;

use crate::mm::pgtable::{self, pte, PageTables};
use crate::mm::{page_alloc, tlb};
use crate::{hypercall, smp};

const OLD: u64 = 0x01d;
const NEW: u64 = 0x2e3;

fn read(va: u64) -> u64 {
    // SAFETY: the probe page is mapped; the value tells which page we hit.
    unsafe { core::ptr::read_volatile(va as *const u64) }
}

/// A guest store to the PTE (native mode maps the page-table region writable).
fn guest_store(ptep: u64, val: u64) {
    // SAFETY: in native mode the page-table region is ordinary RAM.
    unsafe { core::ptr::write_volatile(ptep as *mut u64, val) }
}

static PGD: AtomicU64 = AtomicU64::new(0);
static VA: AtomicU64 = AtomicU64::new(0);
static SEEN: AtomicU64 = AtomicU64::new(0);

fn remote_join(_: u64) {
    tlb::switch_mm(&PageTables { pgd: PGD.load(Ordering::Acquire) });
}
fn remote_read(_: u64) {
    SEEN.store(read(VA.load(Ordering::Acquire)), Ordering::Release);
}
fn remote_flush(_: u64) {
    tlb::flush_tlb_one_user(VA.load(Ordering::Acquire));
}

/// `GuestMode::Probe`: each probe `tries` times (`probe.tries=` on the
/// command line under `vmm run`).
pub fn run(tries: u64) {
    let mm = PageTables::new();
    let (a, b) = (page_alloc::alloc_page().unwrap_or(0), page_alloc::alloc_page().unwrap_or(0));
    // SAFETY: fresh identity-mapped data pages.
    unsafe {
        core::ptr::write_volatile(a as *mut u64, OLD);
        core::ptr::write_volatile(b as *mut u64, NEW);
    }
    let va = USER_BASE + 0x7000_0000;
    let flags = pte::P | pte::RW | pte::US | pte::A | pte::D;
    let ptep = mm.map(va, a, flags);
    PGD.store(mm.pgd, Ordering::Release);
    VA.store(va, Ordering::Release);
    tlb::switch_mm(&mm);

    let mut results = [0u64; 3];
    for _ in 0..tries {
        // Same vCPU, guest store.
        pgtable::set_pte(ptep, a | flags);
        tlb::flush_tlb_one_user(va);
        read(va);
        guest_store(ptep, b | flags);
        if read(va) == OLD {
            results[0] += 1;
        }
        // Same vCPU, VMM-side write.
        pgtable::set_pte(ptep, a | flags);
        tlb::flush_tlb_one_user(va);
        read(va);
        pgtable::set_pte(ptep, b | flags);
        if read(va) == OLD {
            results[2] += 1;
        }
    }
    let remote = smp::num_cpus() > 1;
    if remote {
        smp::run_on(1, remote_join, 0);
        smp::wait_done(1, 20_000);
        for _ in 0..tries {
            pgtable::set_pte(ptep, a | flags);
            smp::run_on(1, remote_flush, 0);
            smp::wait_done(1, 20_000);
            smp::run_on(1, remote_read, 0);
            smp::wait_done(1, 20_000);
            guest_store(ptep, b | flags);
            smp::run_on(1, remote_read, 0);
            smp::wait_done(1, 20_000);
            if SEEN.load(Ordering::Acquire) == OLD {
                results[1] += 1;
            }
        }
    }
    for (probe, stale) in Probe::ALL.iter().zip(results.iter()) {
        let n = if *probe == Probe::RemoteVcpu && !remote { 0 } else { tries };
        hypercall::call::<ProbeResult>(ProbeReport { probe: *probe, stale: *stale, tries: n });
    }
}
