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

fn s1_pause_after_ptl_release(_: abi::litmus::Hook, _: u32, _: u64) {
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
    crate::selftest_tlb::set_evict_ppm(ppm);
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
    use crate::mm::policy::{get_all as policy, set as set_policy};
    use abi::policy::MadvNestedCheck;
    if boot.num_vcpus < 2 {
        return Err(crate::report::TestError::Skip("needs 2 vCPUs (two concurrent zappers)"));
    }
    if crate::selftest_tlb::tlb_state().model == abi::hypercall::TlbModelKind::Native {
        return Err(crate::report::TestError::Skip("needs --tlb lazy or evict:P (deterministic staleness)"));
    }
    let saved = policy();
    let run_ppm = crate::selftest_tlb::tlb_state().ppm;
    smp::run_on_all(|_| set_ppm(0), 0, 20_000);
    let r = with_test_mm(|| {
        for (check_on, want_stale) in [(MadvNestedCheck::On, false), (MadvNestedCheck::Off, true)] {
            set_policy(saved.with(check_on));
            for i in 0..3 {
                let seen = s1_once();
                check!(seen.is_some(), "iteration {} could not be set up", i);
                let stale = seen == Some(1);
                check!(
                    stale == want_stale,
                    "madv-nested-check={}: the observer read {:x?} after the second zap (stale: {}, expected {})",
                    check_on.name(),
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

// ---- the other mm operations -----------------------------------------------

use crate::mm::page::{self as pg, page, PG_KSM};
use crate::mm::pgtable::{pte_page, swp};
use abi::litmus::Perm;

const X: u64 = BASE;
const Y: u64 = BASE + 0x1000;
const Z: u64 = BASE + 0x2000;
const W: u64 = BASE + 0x3000;

fn pfn(va: u64) -> u64 {
    pte_page(TEST_MM.pte_lockless(va))
}

fn pte_of(va: u64) -> u64 {
    TEST_MM.pte_lockless(va)
}

/// Runs `f(arg)` on vCPU 1 (the remote CPU of these tests) and waits.
fn remote(f: fn(u64), arg: u64) -> TestResult {
    check!(smp::run_on(1, f, arg) && smp::wait_done(1, 20_000), "vCPU 1 did not run");
    Ok(())
}

fn join(_: u64) {
    tlb::switch_mm(&TEST_MM.pt());
}

/// vCPU 1 stores REMOTE_VALUE at `va` (REMOTE = 1 if it did not fault).
fn remote_store(va: u64) {
    REMOTE.store(write(va, REMOTE_VALUE.load(Ordering::Acquire)) as u64, Ordering::Release);
}

static REMOTE_VALUE: AtomicU64 = AtomicU64::new(0);

fn remote_store_value(va: u64, v: u64) -> TestResult {
    REMOTE_VALUE.store(v, Ordering::Release);
    remote(remote_store, va)?;
    check!(REMOTE.load(Ordering::Acquire) == 1, "vCPU 1's store to {:#x} failed", va);
    Ok(())
}

fn remote_load(va: u64) -> Result<u64, crate::report::TestError> {
    remote(remote_read, va)?;
    Ok(REMOTE.load(Ordering::Acquire))
}

fn needs_two(boot: &BootInfo) -> TestResult {
    if boot.num_vcpus < 2 {
        return Err(crate::report::TestError::Skip("needs 2 vCPUs (a remote CPU with a cached translation)"));
    }
    Ok(())
}

fn setup(va: u64, perm: Perm, shared: bool, init: u64) -> TestResult {
    check!(TEST_MM.setup_page(va, perm, shared, init).is_ok(), "cannot map {:#x}", va);
    Ok(())
}

/// `MADV_FREE`: the page stays mapped and readable but clean (and no TLB
/// keeps a dirty entry for it: a remote write afterwards dirties the PTE
/// again); reclaim discards a clean lazy-free page (a fresh zero page
/// afterwards) and keeps one that was written again.
pub fn madvise_free(boot: &BootInfo) -> TestResult {
    needs_two(boot)?;
    with_test_mm(|| {
        setup(X, Perm::Rw, false, 0x77)?;
        remote(join, 0)?;
        check!(read(X) == Some(0x77), "setup value");
        check!(TEST_MM.madvise_free(X, 4096), "MADV_FREE refused");
        check!(pte_of(X) & pte::P != 0 && pte_of(X) & pte::D == 0, "after MADV_FREE the PTE is {:#x}", pte_of(X));
        check!(read(X) == Some(0x77), "a lazy-freed page lost its content before reclaim");
        let (d0, _, _) = counts();
        TEST_MM.reclaim(X);
        check!(pte_of(X) == 0 && counts().0 == d0 - 1, "reclaim did not discard the clean lazy-free page");
        check!(read(X) == Some(0), "after discarding, the page reads {:x?}, not a fresh page", read(X));
        // Written again (by another CPU, which had a dirty entry before
        // MADV_FREE): the write must reach the PTE, so reclaim keeps it.
        check!(write(X, 0x88), "write failed");
        remote_store_value(X + 16, 1)?;
        check!(TEST_MM.madvise_free(X, 4096), "MADV_FREE refused");
        remote_store_value(X + 16, 0x99)?;
        check!(pte_of(X) & pte::D != 0, "vCPU 1's write after MADV_FREE did not dirty the PTE");
        TEST_MM.reclaim(X);
        check!(pte_of(X) & pte::P != 0, "reclaim discarded a lazy-free page that was written again");
        check!(read(X + 16) == Some(0x99), "the second write is lost: {:x?}", read(X + 16));
        Ok(())
    })
}

/// `cow`: after fork-style sharing the next write (here on another CPU,
/// whose writable entry the deferred flush must have removed) copies the
/// page; the child's page keeps the old content; the writer's next write
/// reuses its exclusive copy.
pub fn cow(boot: &BootInfo) -> TestResult {
    needs_two(boot)?;
    with_test_mm(|| {
        setup(X, Perm::Rw, false, 5)?;
        remote(join, 0)?;
        remote_store_value(X + 16, 9)?;
        let p0 = pfn(X);
        check!(TEST_MM.cow(X).is_ok(), "cow failed");
        check!(pte_of(X) & pte::RW == 0, "cow left the PTE writable");
        check!(page(p0).count() == 2, "the shared page has {} references, expected 2", page(p0).count());
        remote_store_value(X + 16, 10)?;
        let p1 = pfn(X);
        check!(p1 != p0, "the write after cow did not copy the page");
        check!(pg::first_word(p1) == 5 && read(X + 16) == Some(10), "the copy has the wrong content");
        check!(pg::first_word(p0 + 16) == 9, "the child's page changed: {:#x}", pg::first_word(p0 + 16));
        check!(write(X, 6) && pfn(X) == p1, "the exclusive copy was not reused");
        check!(page(p0).count() == 1, "the parent still holds the child's page");
        Ok(())
    })
}

/// KSM: two identical pages merge into one read-only KSM page (a CPU that
/// had a writable entry must fault after the merge and gets its own copy);
/// different pages do not merge.
pub fn ksm(boot: &BootInfo) -> TestResult {
    needs_two(boot)?;
    with_test_mm(|| {
        setup(X, Perm::Rw, false, 7)?;
        setup(Y, Perm::Rw, false, 7)?;
        setup(Z, Perm::Rw, false, 8)?;
        remote(join, 0)?;
        remote_store_value(X + 16, 0)?;
        let (d0, _, _) = counts();
        check!(TEST_MM.ksm(X, Y), "identical pages did not merge");
        check!(pfn(X) == pfn(Y) && page(pfn(Y)).test(PG_KSM), "x does not map the KSM page");
        check!(pte_of(X) & pte::RW == 0 && pte_of(Y) & pte::RW == 0, "a KSM mapping is writable");
        check!(counts().0 == d0 - 1, "x's old page was not freed");
        let zp = pfn(Z);
        check!(!TEST_MM.ksm(Z, Y) && pfn(Z) == zp, "different pages merged");
        remote_store_value(X + 16, 3)?;
        check!(pfn(X) != pfn(Y), "a write to the KSM page did not copy it");
        check!(read(Y + 16) == Some(0) && read(X + 16) == Some(3), "the copy-on-write of the KSM page went wrong");
        Ok(())
    })
}

/// Migration moves the page (same content, new frame, old frame freed);
/// a CPU that cached the old translation faults and finds the new page.
pub fn migrate(boot: &BootInfo) -> TestResult {
    needs_two(boot)?;
    with_test_mm(|| {
        setup(X, Perm::Rw, false, 9)?;
        remote(join, 0)?;
        remote_store_value(X + 16, 4)?;
        let (p0, (d0, _, _)) = (pfn(X), counts());
        check!(TEST_MM.migrate(X).is_ok(), "migrate failed");
        let p1 = pfn(X);
        check!(p1 != p0 && counts().0 == d0, "the page did not move (or a page leaked)");
        check!(read(X) == Some(9) && read(X + 16) == Some(4), "the content did not move");
        check!(pte_of(X) & pte::RW != 0, "a writable page came back read-only");
        remote_store_value(X + 16, 5)?;
        check!(pg::first_word(p1 + 16) == 5, "vCPU 1 wrote through its old translation");
        Ok(())
    })
}

/// `mkclean` of a shared file page: writeback of a dirty page, nothing for
/// a clean one, and the PTEs (also another CPU's TLB entry) write-protected
/// so the next write dirties the page again.
pub fn mkclean(boot: &BootInfo) -> TestResult {
    needs_two(boot)?;
    with_test_mm(|| {
        setup(X, Perm::Rw, true, 3)?;
        remote(join, 0)?;
        check!(TEST_MM.mkclean(X) == 3, "mkclean of a clean page wrote something");
        check!(write(X, 4), "write to the shared page failed");
        let v = TEST_MM.mkclean(X);
        check!(v == 4, "writeback gave {:#x}, expected 4", v);
        check!(pte_of(X) & (pte::RW | pte::D) == 0, "mkclean left the PTE {:#x}", pte_of(X));
        remote_store_value(X, 1)?;
        let v = TEST_MM.mkclean(X);
        check!(v == 1, "vCPU 1's write was not written back ({:#x})", v);
        remote_store_value(X, 6)?;
        let v = TEST_MM.mkclean(X);
        check!(v == 6, "vCPU 1's second write (through a write-protected entry) was lost ({:#x})", v);
        check!(write(X + 8, 0) && TEST_MM.mkclean(X) == 6, "writeback after a local write");
        Ok(())
    })
}

/// Reclaim swaps an anonymous page out (PTE = swap entry, page freed, a
/// swap slot used, every TLB flushed) and a later access swaps it back in.
pub fn reclaim_swap_in(boot: &BootInfo) -> TestResult {
    needs_two(boot)?;
    with_test_mm(|| {
        setup(X, Perm::Rw, false, 11)?;
        remote(join, 0)?;
        check!(remote_load(X)? == 11, "vCPU 1 read the wrong value first");
        let (d0, _, s0) = counts();
        TEST_MM.reclaim(X);
        check!(swp::is_swap_pte(pte_of(X)), "after reclaim the PTE is {:#x}, not a swap entry", pte_of(X));
        let (d1, _, s1) = counts();
        check!(d1 == d0 - 1 && s1 == s0 + 1, "reclaim did not free the page into a swap slot");
        check!(remote_load(X)? == 11, "vCPU 1 did not fault the page back in");
        check!(pte_of(X) & pte::P != 0 && counts().2 == s0, "swap-in left the slot in use");
        check!(write(X, 12), "write after swap-in failed");
        TEST_MM.reclaim(X);
        check!(read(X) == Some(12), "the second swap-out lost the write");
        Ok(())
    })
}

/// `mremap` moves the page: it is at the new address, the old one faults,
/// also on a CPU that had it cached.
pub fn mremap(boot: &BootInfo) -> TestResult {
    needs_two(boot)?;
    with_test_mm(|| {
        setup(X, Perm::Rw, false, 12)?;
        remote(join, 0)?;
        check!(remote_load(X)? == 12, "vCPU 1 read the wrong value first");
        let p = pfn(X);
        check!(TEST_MM.mremap(X, W).is_ok(), "mremap failed");
        check!(pfn(W) == p && read(W) == Some(12), "the page is not at the new address");
        check!(read(X).is_none(), "the old address still works");
        check!(remote_load(X)? == u64::MAX, "vCPU 1 still reads the old address");
        Ok(())
    })
}

// ---- every policy value runs ------------------------------------------------

const MM_PASID: u32 = 9;

fn device_load(va: u64) -> Option<u64> {
    let mut r = [0u64; 1];
    crate::iommu::run(MM_PASID, &[(abi::dma::op::LOAD, va, 0)], &mut r).map(|()| r[0])
}

/// A small workload through every mm path, with a remote CPU and the device
/// holding translations: CoW, mprotect, KSM, migration, reclaim and
/// swap-in, MADV_FREE, DONTNEED, mremap, writeback, munmap.
fn workload() -> TestResult {
    TEST_MM.bind_pasid(MM_PASID);
    remote(join, 0)?;
    setup(X, Perm::Rw, false, 1)?;
    setup(Y, Perm::Rw, false, 2)?;
    setup(Z, Perm::Rw, false, 2)?;
    setup(W, Perm::Rw, true, 4)?;
    check!(device_load(X).is_some() && device_load(Y).is_some(), "device access failed");
    check!(remote_load(X)? == 1, "vCPU 1 read the wrong value");
    check!(TEST_MM.cow(X).is_ok() && write(X, 3) && read(X) == Some(3), "CoW");
    check!(TEST_MM.mprotect(X, 4096, VM_READ) && !write(X, 5), "mprotect ro");
    check!(TEST_MM.mprotect(X, 4096, VM_READ | VM_WRITE) && write(X, 3), "mprotect rw");
    check!(TEST_MM.ksm(Z, Y) && read(Z) == Some(2), "KSM");
    check!(TEST_MM.migrate(X).is_ok() && read(X) == Some(3), "migrate");
    TEST_MM.reclaim(X);
    check!(remote_load(X)? == 3 && read(X) == Some(3), "reclaim + swap-in");
    // No MADV_FREE before v4.5 (the v3.19 profile).
    if TEST_MM.madvise_free(X, 4096) {
        TEST_MM.reclaim(X);
        check!(read(X) == Some(0), "MADV_FREE + reclaim");
    }
    TEST_MM.madvise_dontneed(Y, 4096);
    check!(read(Y) == Some(0), "DONTNEED");
    check!(write(W, 7) && TEST_MM.mkclean(W) == 7, "writeback");
    check!(TEST_MM.mremap(Z, BASE + 0x5000).is_ok() && read(BASE + 0x5000) == Some(2), "mremap");
    check!(TEST_MM.munmap(BASE + 0x5000, 4096) && device_load(BASE + 0x5000).is_some(), "munmap");
    check!(remote_load(BASE + 0x5000)? == u64::MAX, "vCPU 1 still reads an unmapped page");
    Ok(())
}

/// `mm.policy.all-combinations-run`: the workload under every kernel
/// profile, and under every value of every policy key of the table
/// (`abi::policy::KEYS`; the others at mainline's values), half of them
/// with a TLB that evicts half of its stale entries; no crash, no leak.
pub fn policy_all_combinations_run(boot: &BootInfo) -> TestResult {
    use crate::mm::policy;
    use abi::policy::{profile_abi, Key, KeyKind, Migrc, PolicyAbi, Profile, KEYS};
    needs_two(boot)?;
    // The driver's queues are allocated once, not per workload.
    crate::iommu::init();
    let saved = policy::get_all();
    let d = PolicyAbi::DEFAULT;
    let mut variants: [PolicyAbi; 80] = [d; 80];
    let mut n = 0;
    let mut add = |p: PolicyAbi| {
        if n < variants.len() {
            variants[n] = p;
            n += 1;
        }
    };
    for p in Profile::ALL {
        add(profile_abi(*p));
    }
    for k in KEYS.iter().filter(|k| k.kind != KeyKind::Profile && !matches!(k.key, Key::Tlb | Key::Iotlb)) {
        for v in k.values.iter().filter(|v| v.num != k.default) {
            let mut p = d;
            p.bytes[k.key as usize] = v.num;
            if k.key == Key::MigrcUpgrade {
                p = p.with(Migrc::On);
            }
            add(p);
        }
    }
    let shadowed = crate::selftest_tlb::tlb_state().model != abi::hypercall::TlbModelKind::Native;
    let run_ppm = crate::selftest_tlb::tlb_state().ppm;
    let mut result = Ok(());
    for (i, p) in variants[..n].iter().enumerate() {
        policy::set(*p);
        smp::run_on_all(crate::mm::tlb::set_walk_cache, p.byte(abi::policy::Key::WalkCache) as u64, 20_000);
        // Half the runs with a coherent-ish TLB (evict:0.5), half lazy.
        if shadowed {
            smp::run_on_all(set_ppm, if i % 2 == 0 { 0 } else { 500_000 }, 20_000);
        }
        let r = with_test_mm(workload);
        if r.is_err() {
            crate::report::assert_failed(
                file!(),
                line!(),
                format_args!("policy variant {} ({:?}) failed", i, p),
                false,
                false,
            );
            result = r;
            break;
        }
    }
    policy::set(saved);
    smp::run_on_all(crate::mm::tlb::set_walk_cache, saved.byte(abi::policy::Key::WalkCache) as u64, 20_000);
    if shadowed {
        smp::run_on_all(set_ppm, run_ppm, 20_000);
    }
    result
}
