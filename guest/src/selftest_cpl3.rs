//! Self-tests of running at CPL3 (`crate::cpl3`): entering and leaving,
//! what CPL3 may not touch, and the modelled TLB seen from CPL3 — where
//! code runs on the host's own copy of the shadow tables, so a flush or an
//! eviction must reach that copy too (`abi::zap`): a read after a flush
//! must see the new page, exactly as at CPL0.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::hypercall::calls::{Echo, EchoWords};
use abi::hypercall::TlbModelKind;
use abi::layout;
use abi::BootInfo;

use crate::mm::pgtable::{self, pte};
use crate::mm::tlb;
use crate::report::{TestError, TestResult};
use crate::selftest_tlb::{self as st, Space, VAL_A, VAL_B};
use crate::trap::{probe_read_u64, probe_write_u64};
use crate::{check, cpl3, hypercall, percpu, smp, wait};

static SKIP_REASON: AtomicU64 = AtomicU64::new(0);

extern "C" fn run_test(f: u64) -> u64 {
    // SAFETY: `at_cpl3` passed a `fn() -> TestResult`.
    let f: fn() -> TestResult = unsafe { core::mem::transmute::<u64, fn() -> TestResult>(f) };
    match f() {
        Ok(()) => 0,
        Err(TestError::Fail) => 1,
        Err(TestError::Skip(why)) => {
            SKIP_REASON.store(why.as_ptr() as u64 | (why.len() as u64) << 48, Ordering::Relaxed);
            2
        }
    }
}

/// Runs a test body at CPL3 on this CPU.
fn at_cpl3(f: fn() -> TestResult) -> TestResult {
    match cpl3::run_at_cpl3(run_test, f as usize as u64) {
        0 => Ok(()),
        2 => {
            let v = SKIP_REASON.load(Ordering::Relaxed);
            // SAFETY: a &'static str's pointer and length stored by `run_test`.
            let why = unsafe {
                core::str::from_utf8_unchecked(core::slice::from_raw_parts(
                    (v & 0xffff_ffff_ffff) as *const u8,
                    (v >> 48) as usize,
                ))
            };
            Err(TestError::Skip(why))
        }
        _ => Err(TestError::Fail),
    }
}

extern "C" fn plus_one(x: u64) -> u64 {
    x + 1 + (percpu::cpl() != 3) as u64 * 1000
}

fn probe_read_faults(addr: u64) -> bool {
    // SAFETY: a probe access; a fault resumes at its fixup.
    unsafe { probe_read_u64(addr) }.faulted != 0
}

fn probe_write_faults(addr: u64) -> bool {
    // SAFETY: as above; a store that does not fault writes 0 to a word the
    // callers expect to be protected (the test then fails).
    unsafe { probe_write_u64(addr, 0) }.faulted != 0
}

/// `run_at_cpl3` runs the function at CPL3 on this CPU and returns its
/// result; at CPL3 hypercalls work, the kernel stacks and the shadow
/// region are out of reach, and the guard below the user stack faults.
pub fn enter_return(_: &BootInfo) -> TestResult {
    check!(cpl3::run_at_cpl3(plus_one, 41) == 42, "run_at_cpl3(x + 1) did not return 42 from CPL3");
    check!(percpu::cpl() == 0, "back at CPL{} after run_at_cpl3", percpu::cpl());
    at_cpl3(|| {
        check!(percpu::cpl() == 3, "running at CPL{}", percpu::cpl());

        let (r, _) = hypercall::call_into::<Echo>(EchoWords { words: [1, 2, 3, 4] }, &[], &mut []);
        check!(r.words == [!1, !2, !3, !4], "ECHO from CPL3 answered {:x?}", r.words);
        let cpu = percpu::cpu();
        let sp = crate::arch::read_rsp();
        let top = layout::user_stack_top(cpu);
        check!(sp < top && sp >= top - layout::USER_STACK_SIZE, "RSP {:#x} is not on the user stack", sp);
        let kstack = layout::stack_top(cpu) - 64;
        check!(probe_read_faults(kstack), "CPL3 read its kernel stack at {:#x}", kstack);
        check!(probe_read_faults(layout::SHADOW_BASE), "CPL3 read the shadow region");
        check!(probe_read_faults(layout::SHADOW_ALIAS), "CPL3 read the shadow region's alias");
        let guard = top - layout::USER_STACK_SIZE - 8;
        check!(probe_read_faults(guard), "the guard page below the user stack ({:#x}) is readable", guard);
        Ok(())
    })
}

/// The modelled TLBs cannot be written by a stray store: the shadow
/// region is read-only to the guest (CPL0 included) but for the alias the
/// zap stubs use.
pub fn shadow_stores_fault(_: &BootInfo) -> TestResult {
    let slot = layout::SHADOW_BASE + layout::SHADOW_SIZE - 8;
    check!(probe_write_faults(slot), "a CPL0 store to the shadow region at {:#x} did not fault", slot);
    check!(probe_read_u64_ok(slot), "the shadow region is not readable at CPL0");
    Ok(())
}

fn probe_read_u64_ok(addr: u64) -> bool {
    !probe_read_faults(addr)
}

fn read(va: u64) -> Option<u64> {
    // SAFETY: faults are caught by the exception table.
    let r = unsafe { probe_read_u64(va) };
    (r.faulted == 0).then_some(r.value)
}

fn require_model() -> TestResult {
    if st::tlb_state().model == TlbModelKind::Native {
        return Err(TestError::Skip("needs --tlb lazy or evict:P (CPL3 runs only on the modelled TLBs)"));
    }
    Ok(())
}

static SPACE_VA: AtomicU64 = AtomicU64::new(0);
static SPACE_PTEP: AtomicU64 = AtomicU64::new(0);
static PAGE_B: AtomicU64 = AtomicU64::new(0);

fn remap_to_b() {
    let ptep = SPACE_PTEP.load(Ordering::Acquire);
    let old = pgtable::read_entry(ptep);
    pgtable::set_pte(ptep, (old & !pte::ADDR_MASK) | PAGE_B.load(Ordering::Acquire));
}

fn publish(s: &Space) {
    SPACE_VA.store(s.va, Ordering::Release);
    SPACE_PTEP.store(s.ptep, Ordering::Release);
    PAGE_B.store(s.page_b, Ordering::Release);
}

/// At CPL3 under `lazy`: the stale page until the flush, the new one
/// right after it — the flush reached the host's copy of the entry.
pub fn stale_until_flush(_: &BootInfo) -> TestResult {
    require_model()?;
    let prev = st::set_evict_ppm(0);
    let s = Space::new(pte::RW | pte::US);
    publish(&s);
    tlb::switch_mm(&s.mm);
    let r = at_cpl3(|| {
        let va = SPACE_VA.load(Ordering::Acquire);
        check!(read(va) == Some(VAL_A), "first read at CPL3 gave {:x?}", read(va));
        remap_to_b();
        for i in 0..20 {
            let v = read(va);
            check!(v == Some(VAL_A), "try {}: CPL3 read after the PTE change gave {:x?}, not the stale page", i, v);
        }
        tlb::flush_tlb_one_user(va);
        let v = read(va);
        check!(v == Some(VAL_B), "CPL3 read after flush_tlb_one_user gave {:x?}, not the new page", v);
        // A full flush from CPL3 too.
        pgtable::set_pte(SPACE_PTEP.load(Ordering::Acquire), 0);
        check!(read(va) == Some(VAL_B), "the cleared PTE is still cached: the read must hit");
        tlb::flush_tlb_local();
        check!(read(va).is_none(), "CPL3 read after flush_tlb_local did not fault");
        Ok(())
    });
    st::set_evict_ppm(prev);
    s.destroy();
    r
}

static REMOTE_READ: AtomicU64 = AtomicU64::new(0);

extern "C" fn remote_read_cpl3(_: u64) -> u64 {
    read(SPACE_VA.load(Ordering::Acquire)).unwrap_or(u64::MAX)
}

fn remote_read(_: u64) {
    REMOTE_READ.store(cpl3::run_at_cpl3(remote_read_cpl3, 0), Ordering::Release);
}

fn remote_switch_and_read(_: u64) {
    tlb::switch_mm(&st::space_mm());
    remote_read(0);
}

fn run_on_and_wait(cpu: u64, f: smp::WorkFn) -> bool {
    smp::run_on(cpu, f, 0) && smp::wait_done(cpu, 20_000)
}

/// vCPU 1 reads at CPL3 and keeps its stale entry until CPU 0, at CPL3,
/// shoots it down (IPI hypercall, flush in vCPU 1's handler at CPL0).
pub fn remote_stale_until_shootdown(boot: &BootInfo) -> TestResult {
    with_vcpu1_space(boot, |s| {
        tlb::switch_mm(&s.mm);
        check!(run_on_and_wait(1, remote_switch_and_read), "vCPU 1 did not run");
        check!(REMOTE_READ.load(Ordering::Acquire) == VAL_A, "vCPU 1's first CPL3 read was wrong");
        at_cpl3(|| {
            remap_to_b();
            tlb::flush_tlb_one_user(SPACE_VA.load(Ordering::Acquire));
            Ok(())
        })?;
        for i in 0..5 {
            run_on_and_wait(1, remote_read);
            let v = REMOTE_READ.load(Ordering::Acquire);
            check!(v == VAL_A, "try {}: vCPU 1 read {:#x} at CPL3 before any shootdown, not the stale page", i, v);
        }
        at_cpl3(|| {
            let va = SPACE_VA.load(Ordering::Acquire);
            let shot = tlb::flush_tlb_multi(&st::space_mm(), va, va + pgtable::PAGE, false);
            check!(shot == Some(1), "flush_tlb_multi from CPL3 shot down {:?} CPUs, expected 1", shot);
            Ok(())
        })?;
        run_on_and_wait(1, remote_read);
        let v = REMOTE_READ.load(Ordering::Acquire);
        check!(v == VAL_B, "vCPU 1 read {:#x} at CPL3 after the shootdown, not the new page", v);
        Ok(())
    })
}

/// Runs `body` with a published test space and vCPUs 0 and 1 under
/// `lazy` (no eviction: a stale entry lives until flushed); their
/// eviction probability and the space are put back afterwards.
fn with_vcpu1_space(boot: &BootInfo, body: impl FnOnce(&Space) -> TestResult) -> TestResult {
    require_model()?;
    if boot.num_vcpus < 2 {
        return Err(TestError::Skip("needs at least 2 vCPUs"));
    }
    let prev = st::set_evict_ppm(0);
    smp::run_on(
        1,
        |p| {
            st::set_evict_ppm(p);
        },
        0,
    );
    smp::wait_done(1, 20_000);
    let s = Space::new(pte::RW | pte::US);
    publish(&s);
    let r = body(&s);
    smp::run_on(
        1,
        |p| {
            st::set_evict_ppm(p);
        },
        prev,
    );
    smp::wait_done(1, 20_000);
    st::set_evict_ppm(prev);
    s.destroy();
    r
}

static PARKED_READY: AtomicU64 = AtomicU64::new(0);
static PARKED_GO: AtomicU64 = AtomicU64::new(0);

/// vCPU 1 at CPL3: read (caching the entry), say so, park until told to
/// go on, read again.
extern "C" fn parked_reader(_: u64) -> u64 {
    let first = read(SPACE_VA.load(Ordering::Acquire)).unwrap_or(u64::MAX);
    PARKED_READY.store(first, Ordering::SeqCst);
    wait::wake(&PARKED_READY);
    wait::wait_until(&PARKED_GO, |g| g != 0);
    read(SPACE_VA.load(Ordering::Acquire)).unwrap_or(u64::MAX)
}

fn switch_and_park(_: u64) {
    tlb::switch_mm(&st::space_mm());
    REMOTE_READ.store(cpl3::run_at_cpl3(parked_reader, 0), Ordering::Release);
    tlb::switch_to_kernel_mm();
}

/// A shootdown IPI that reaches a vCPU parked at CPL3 (as litmus threads
/// wait) runs its handler at CPL3 (`cpl3::user_ipi`, the upcall) and
/// flushes: vCPU 1 reads the new page after it, and the upcall ran.
pub fn shootdown_handled_at_cpl3(boot: &BootInfo) -> TestResult {
    with_vcpu1_space(boot, |_| {
        PARKED_READY.store(0, Ordering::SeqCst);
        PARKED_GO.store(0, Ordering::SeqCst);
        let upcalls = cpl3::IPI_UPCALLS.load(Ordering::Relaxed);
        check!(smp::run_on(1, switch_and_park, 0), "vCPU 1 is busy");
        at_cpl3(|| {
            let first = wait::wait_until(&PARKED_READY, |v| v != 0);
            check!(first == VAL_A, "vCPU 1's first CPL3 read gave {:#x}", first);
            remap_to_b();
            let va = SPACE_VA.load(Ordering::Acquire);
            let shot = tlb::flush_tlb_multi(&st::space_mm(), va, va + pgtable::PAGE, false);
            PARKED_GO.store(1, Ordering::SeqCst);
            wait::wake(&PARKED_GO);
            check!(shot == Some(1), "flush_tlb_multi from CPL3 shot down {:?} CPUs, expected 1", shot);
            Ok(())
        })?;
        check!(smp::wait_done(1, 20_000), "vCPU 1 did not finish");
        let v = REMOTE_READ.load(Ordering::Acquire);
        check!(v == VAL_B, "vCPU 1 read {:#x} at CPL3 after the shootdown, not the new page", v);
        let n = cpl3::IPI_UPCALLS.load(Ordering::Relaxed) - upcalls;
        check!(n >= 1, "the shootdown IPI to vCPU 1, parked at CPL3, was not handled at CPL3");
        Ok(())
    })
}

/// Under `evict:1.0` the stale entry goes at the next exit — for CPL3 too
/// (the zap interrupt clears the host's copy before the next instruction).
pub fn evict_coherent(_: &BootInfo) -> TestResult {
    require_model()?;
    let prev = st::set_evict_ppm(1_000_000);
    let s = Space::new(pte::RW | pte::US);
    publish(&s);
    tlb::switch_mm(&s.mm);
    let r = at_cpl3(|| {
        let va = SPACE_VA.load(Ordering::Acquire);
        check!(read(va) == Some(VAL_A), "first CPL3 read was wrong");
        remap_to_b(); // a hypercall from CPL3: an exit, at which the stale entry is evicted
        let v = read(va);
        check!(v == Some(VAL_B), "under evict:1.0 a CPL3 read after the PTE change gave {:x?}", v);
        Ok(())
    });
    st::set_evict_ppm(prev);
    s.destroy();
    r
}
