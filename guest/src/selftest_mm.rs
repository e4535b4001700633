//! Self-tests of the mm model (default policy, whatever TLB model the run
//! uses): each ends with the page and page-table counts back where they
//! started.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::layout;
use abi::BootInfo;

use crate::mm::mm_types::{TEST_MM, VM_READ, VM_WRITE};
use crate::mm::page_alloc;
use crate::mm::pgtable::{self, pte};
use crate::mm::tlb;
use crate::report::TestResult;
use crate::trap::{probe_read_u64, probe_write_u64};
use crate::{check, smp};

const BASE: u64 = layout::USER_BASE + 0x4000_0000;

fn read(va: u64) -> Option<u64> {
    // SAFETY: faults are caught by the exception table.
    let r = unsafe { probe_read_u64(va) };
    (r.faulted == 0).then_some(r.value)
}

fn write(va: u64, v: u64) -> bool {
    // SAFETY: as above.
    unsafe { probe_write_u64(va, v) }.faulted == 0
}

fn counts() -> (u64, u64, u64) {
    (page_alloc::data_pages_in_use(), page_alloc::table_pages_in_use(), crate::mm::swap::slots_in_use())
}

/// Runs `body` on a fresh test mm that this CPU runs; tears it down and
/// checks nothing leaked.
fn with_test_mm(body: impl FnOnce() -> TestResult) -> TestResult {
    let before = counts();
    TEST_MM.init();
    tlb::switch_mm(&TEST_MM.pt());
    let r = body();
    smp::run_on_all(|_| tlb::switch_to_kernel_mm(), 0, 20_000);
    TEST_MM.teardown();
    r?;
    let after = counts();
    check!(after == before, "leak: (data pages, tables, swap slots) {:?} before, {:?} after", before, after);
    Ok(())
}

/// A first touch faults in a zeroed anonymous page (`do_anonymous_page`);
/// writes stick; an address outside every VMA faults for real.
pub fn fault_anon(_: &BootInfo) -> TestResult {
    with_test_mm(|| {
        check!(TEST_MM.mmap(BASE, 4 * 4096, VM_READ | VM_WRITE), "mmap failed");
        let pages0 = page_alloc::data_pages_in_use();
        check!(read(BASE) == Some(0), "first read of an anonymous page gave {:x?}", read(BASE));
        check!(write(BASE + 8, 42) && read(BASE + 8) == Some(42), "write did not stick");
        check!(write(BASE + 3 * 4096, 7), "write fault on another page failed");
        check!(page_alloc::data_pages_in_use() == pages0 + 2, "expected 2 pages faulted in");
        let ptep = TEST_MM.pt().pte_lookup(BASE);
        let e = ptep.map(pgtable::read_entry).unwrap_or(0);
        check!(e & (pte::P | pte::RW | pte::US) == pte::P | pte::RW | pte::US, "PTE {:#x}", e);
        check!(read(BASE + 16 * 4096).is_none(), "an access outside every VMA did not fault");
        Ok(())
    })
}

static REMOTE: AtomicU64 = AtomicU64::new(0);

fn remote_join_and_read(va: u64) {
    tlb::switch_mm(&TEST_MM.pt());
    REMOTE.store(read(va).unwrap_or(u64::MAX), Ordering::Release);
}

fn remote_read(va: u64) {
    REMOTE.store(read(va).unwrap_or(u64::MAX), Ordering::Release);
}

/// `madvise(MADV_DONTNEED)` zaps the page (it is freed) and flushes every
/// CPU running the mm: afterwards both this CPU and one that had the page
/// cached read a fresh zero page.
pub fn madvise_dontneed(boot: &BootInfo) -> TestResult {
    with_test_mm(|| {
        check!(TEST_MM.mmap(BASE, 4096, VM_READ | VM_WRITE), "mmap failed");
        check!(write(BASE, 0x55), "write failed");
        let remote = boot.num_vcpus > 1;
        if remote {
            check!(smp::run_on(1, remote_join_and_read, BASE) && smp::wait_done(1, 20_000), "vCPU 1 did not run");
            check!(REMOTE.load(Ordering::Acquire) == 0x55, "vCPU 1 read the wrong value first");
        }
        let pages0 = page_alloc::data_pages_in_use();
        TEST_MM.madvise_dontneed(BASE, 4096);
        check!(page_alloc::data_pages_in_use() == pages0 - 1, "the zapped page was not freed");
        check!(read(BASE) == Some(0), "after DONTNEED this CPU read {:x?}, not a fresh page", read(BASE));
        if remote {
            check!(smp::run_on(1, remote_read, BASE) && smp::wait_done(1, 20_000), "vCPU 1 did not run");
            let v = REMOTE.load(Ordering::Acquire);
            check!(v == 0, "after DONTNEED vCPU 1 read {:#x}: its TLB was not flushed", v);
        }
        Ok(())
    })
}

/// `munmap` of a whole 2 MiB range frees its PTE table (`free_pgtables`)
/// after the flush, and the range faults afterwards.
pub fn munmap_frees_tables(_: &BootInfo) -> TestResult {
    with_test_mm(|| {
        let len = 2 << 20;
        check!(TEST_MM.mmap(BASE, len, VM_READ | VM_WRITE), "mmap failed");
        check!(write(BASE, 99), "first write failed");
        // The first touch built PDPT, PD and the PTE table; the rest share them.
        let tables0 = page_alloc::table_pages_in_use();
        for i in 1..8 {
            check!(write(BASE + i * 4096 * 3, i), "write {} failed", i);
        }
        check!(page_alloc::table_pages_in_use() == tables0, "pages of one 2 MiB range used more than one PTE table");
        let pages0 = page_alloc::data_pages_in_use();
        TEST_MM.munmap(BASE, len);
        check!(page_alloc::table_pages_in_use() == tables0 - 1, "munmap did not free the PTE table");
        check!(page_alloc::data_pages_in_use() == pages0 - 8, "munmap did not free the 8 pages");
        check!(TEST_MM.pt().pte_lookup(BASE).is_none(), "the PMD still points at a table");
        check!(read(BASE).is_none(), "an access after munmap did not fault");
        Ok(())
    })
}

/// `mprotect`: read-only makes a store fault (here and on a CPU that had a
/// writable entry cached: the demotion is flushed), PROT_NONE makes a load
/// fault, and read-write again lets the store through with the old content.
pub fn mprotect(boot: &BootInfo) -> TestResult {
    with_test_mm(|| {
        check!(TEST_MM.mmap(BASE, 4096, VM_READ | VM_WRITE), "mmap failed");
        check!(write(BASE, 5), "first write failed");
        let remote = boot.num_vcpus > 1;
        if remote {
            check!(smp::run_on(1, remote_join_and_write, BASE) && smp::wait_done(1, 20_000), "vCPU 1 did not run");
            check!(REMOTE.load(Ordering::Acquire) == 1, "vCPU 1 could not write first");
        }
        check!(TEST_MM.mprotect(BASE, 4096, VM_READ), "mprotect ro failed");
        check!(!write(BASE, 6), "a store after mprotect(PROT_READ) did not fault");
        check!(read(BASE) == Some(5), "the page lost its content");
        if remote {
            check!(smp::run_on(1, remote_write, BASE) && smp::wait_done(1, 20_000), "vCPU 1 did not run");
            check!(REMOTE.load(Ordering::Acquire) == 0, "vCPU 1 still stored through its writable entry");
        }
        check!(TEST_MM.mprotect(BASE, 4096, 0), "mprotect none failed");
        check!(read(BASE).is_none(), "a load after mprotect(PROT_NONE) did not fault");
        check!(TEST_MM.mprotect(BASE, 4096, VM_READ | VM_WRITE), "mprotect rw failed");
        check!(write(BASE + 8, 7) && read(BASE) == Some(5), "store after mprotect(PROT_READ|PROT_WRITE) failed");
        Ok(())
    })
}

fn remote_join_and_write(va: u64) {
    tlb::switch_mm(&TEST_MM.pt());
    remote_write(va);
}

fn remote_write(va: u64) {
    REMOTE.store(write(va + 16, 9) as u64, Ordering::Release);
}

// ---- S1 replay: concurrent MADV_DONTNEED, the nested-zap check ------------

static S1_PAUSED: AtomicU64 = AtomicU64::new(0);
static S1_GO: AtomicU64 = AtomicU64::new(0);

fn s1_pause_after_ptl_release(_: abi::litmus::Hook, _: u64) {
    S1_PAUSED.store(1, Ordering::Release);
    crate::time::spin_until(20_000, || S1_GO.load(Ordering::Acquire) != 0);
}

/// P0: zap x, pausing after the PTL release with its flush still gathered.
fn s1_p0(x: u64) {
    tlb::switch_mm(&TEST_MM.pt());
    crate::mm::hooks::arm_once(abi::litmus::Hook::AfterPtlRelease, s1_pause_after_ptl_release, 0);
    TEST_MM.madvise_dontneed(x, 4096);
    crate::mm::hooks::disarm();
}

fn set_ppm(ppm: u64) {
    crate::hypercall::call(abi::hypercall::op::TLB_CONFIG, &[1, ppm], &[]);
}

/// One S1 iteration under the current policy. This CPU is both the second
/// zapper and the observer (it cached x first); returns what it read after
/// its own zap returned.
fn s1_once() -> Option<u64> {
    let x = BASE;
    S1_PAUSED.store(0, Ordering::Relaxed);
    S1_GO.store(0, Ordering::Relaxed);
    if !TEST_MM.mmap(x, 4096, VM_READ | VM_WRITE) || !write(x, 1) || read(x) != Some(1) {
        return None;
    }
    // P0 zaps and pauses after the PTL release, its flush still gathered.
    smp::run_on(1, s1_p0, x);
    crate::time::spin_until(20_000, || S1_PAUSED.load(Ordering::Acquire) != 0);
    // P1 (us): the second zap finds pte_none and clears nothing.
    TEST_MM.madvise_dontneed(x, 4096);
    // Read after our madvise returned.
    let seen = read(x).unwrap_or(u64::MAX);
    S1_GO.store(1, Ordering::Release);
    smp::wait_done(1, 20_000);
    TEST_MM.munmap(x, 4096);
    Some(seen)
}

/// S1 (seeds 002/004, fix 99baac21e458): P0's zap defers its flush past the
/// PTL release; P1's zap of the same page finds `pte_none`. With the nested
/// check, P1's `tlb_finish_mmu` flushes everything and P1 never reads the
/// zapped page after its madvise returned; without it (the kernel before
/// the fix) it reads it through its stale TLB entry every time.
pub fn zap_nested_check(boot: &BootInfo) -> TestResult {
    use crate::mm::policy::{get as policy, set as set_policy};
    use abi::litmus::OnOff;
    if boot.num_vcpus < 2 {
        return Err(crate::report::TestError::Skip("needs 2 vCPUs (two concurrent zappers)"));
    }
    let model = crate::hypercall::call(abi::hypercall::op::TLB_CONFIG, &[0, 0], &[]).ret[0];
    if model == abi::hypercall::tlb_model::NATIVE {
        return Err(crate::report::TestError::Skip("needs --tlb lazy or evict:P (deterministic staleness)"));
    }
    let saved = policy();
    let run_ppm = crate::hypercall::call(abi::hypercall::op::TLB_CONFIG, &[0, 0], &[]).ret[1];
    smp::run_on_all(|_| set_ppm(0), 0, 20_000);
    let r = with_test_mm(|| {
        for (check_on, want_stale) in [(OnOff::On, false), (OnOff::Off, true)] {
            set_policy(abi::litmus::PolicyAbi { madv_nested_check: check_on as u8, ..saved });
            for i in 0..3 {
                let seen = s1_once();
                check!(seen.is_some(), "iteration {} could not be set up", i);
                let stale = seen == Some(1);
                check!(
                    stale == want_stale,
                    "madv-nested-check={}: the observer read {:x?} after the second zap (stale: {}, expected {})",
                    if check_on == OnOff::On { "on" } else { "off" },
                    seen,
                    stale,
                    want_stale
                );
            }
        }
        Ok(())
    });
    set_policy(saved);
    smp::run_on_all(set_ppm, run_ppm, 20_000);
    r
}
