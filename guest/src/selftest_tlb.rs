//! Self-tests of the trapped page tables and the modelled TLBs. Tests of a
//! model the run does not use report SKIP; under `evict:P` the `lazy` tests
//! set P = 0 for their duration (evict:0 is lazy) and restore it.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::hypercall::calls::{self, TlbConfigRequest};
use abi::hypercall::{Empty, TlbConfigAction, TlbModelKind};
use abi::layout;
use abi::BootInfo;

use crate::mm::page_alloc;
use crate::mm::pgtable::{self, pte, PageTables};
use crate::mm::tlb;
use crate::report::{TestError, TestResult};
use crate::trap::{probe_read_u64, probe_write_u64};
use crate::{check, hypercall, percpu, smp};

const TIMEOUT_MS: u64 = 20_000;

pub struct TlbState {
    pub model: TlbModelKind,
    pub ppm: u64,
    pub fills: u64,
}

pub fn tlb_state() -> TlbState {
    let r = hypercall::call::<calls::TlbConfig>(TlbConfigRequest {
        action: TlbConfigAction::Query,
        evict_ppm: 0,
        walk_cache: 0,
    });
    TlbState { model: r.model, ppm: r.evict_ppm, fills: r.fills }
}

/// Sets this vCPU's eviction probability; returns the previous one.
pub fn set_evict_ppm(ppm: u64) -> u64 {
    let prev = tlb_state().ppm;
    hypercall::call::<calls::TlbConfig>(TlbConfigRequest {
        action: TlbConfigAction::SetEvictPpm,
        evict_ppm: ppm,
        walk_cache: 0,
    });
    prev
}

fn set_evict_ppm_work(ppm: u64) {
    set_evict_ppm(ppm);
}

const NEEDS_MODEL: &str = "needs --tlb lazy or evict:P (native staleness is the host's: see `vmm probe`)";

fn require_shadowed(reason: &'static str) -> TestResult {
    if tlb_state().model == TlbModelKind::Native {
        return Err(TestError::Skip(reason));
    }
    Ok(())
}

fn read(va: u64) -> Option<u64> {
    // SAFETY: faults are caught by the exception table.
    let r = unsafe { probe_read_u64(va) };
    (r.faulted == 0).then_some(r.value)
}

fn write(va: u64, v: u64) -> bool {
    // SAFETY: as above.
    unsafe { probe_write_u64(va, v) }.faulted == 0
}

pub const VAL_A: u64 = 0xaaaa_0001;
pub const VAL_B: u64 = 0xbbbb_0002;

/// A test mm with one user page mapped at `va` -> page A; page B spare.
pub struct Space {
    pub mm: PageTables,
    pub va: u64,
    pub page_a: u64,
    pub page_b: u64,
    pub ptep: u64,
}

static SPACE_PGD: AtomicU64 = AtomicU64::new(0);
static SPACE_VA: AtomicU64 = AtomicU64::new(0);

impl Space {
    pub fn new(flags: u64) -> Space {
        let mm = PageTables::new();
        let (a, b) = (page_alloc::alloc_page().unwrap_or(0), page_alloc::alloc_page().unwrap_or(0));
        // SAFETY: fresh, identity-mapped data pages.
        unsafe {
            core::ptr::write_volatile(a as *mut u64, VAL_A);
            core::ptr::write_volatile(b as *mut u64, VAL_B);
        }
        let va = layout::USER_BASE + 0x1234_5000;
        let ptep = mm.map(va, a, flags);
        SPACE_PGD.store(mm.pgd, Ordering::Release);
        SPACE_VA.store(va, Ordering::Release);
        Space { mm, va, page_a: a, page_b: b, ptep }
    }

    fn remap_to_b(&self) {
        let old = pgtable::read_entry(self.ptep);
        pgtable::set_pte(self.ptep, (old & !pte::ADDR_MASK) | self.page_b);
    }

    /// Every CPU back on the kernel mm, then free everything.
    pub fn destroy(self) {
        smp::run_on_all(|_| tlb::switch_to_kernel_mm(), 0, TIMEOUT_MS);
        self.mm.destroy();
        page_alloc::free_page(self.page_a);
        page_alloc::free_page(self.page_b);
    }
}

pub fn space_mm() -> PageTables {
    PageTables { pgd: SPACE_PGD.load(Ordering::Acquire) }
}

static REMOTE_READ: AtomicU64 = AtomicU64::new(0);

fn remote_switch_and_read(_: u64) {
    tlb::switch_mm(&space_mm());
    remote_read(0);
}

fn remote_read(_: u64) {
    let v = read(SPACE_VA.load(Ordering::Acquire)).unwrap_or(u64::MAX);
    REMOTE_READ.store(v, Ordering::Release);
}

fn run_on_and_wait(cpu: u64, f: smp::WorkFn, arg: u64) -> bool {
    smp::run_on(cpu, f, arg) && smp::wait_done(cpu, TIMEOUT_MS)
}

/// Under `lazy`, a read after a PTE change without a flush returns the old
/// page every time; after a local flush, the new one.
pub fn lazy_stale_until_flush(_: &BootInfo) -> TestResult {
    require_shadowed(NEEDS_MODEL)?;
    let pages = (page_alloc::data_pages_in_use(), page_alloc::table_pages_in_use());
    let prev = set_evict_ppm(0);
    let s = Space::new(pte::RW | pte::US);
    tlb::switch_mm(&s.mm);
    let r = (|| {
        check!(read(s.va) == Some(VAL_A), "first read of the mapping gave {:?}", read(s.va));
        s.remap_to_b();
        for i in 0..20 {
            let v = read(s.va);
            check!(
                v == Some(VAL_A),
                "try {}: read after the PTE change without flush gave {:x?}, not the stale page",
                i,
                v
            );
        }
        tlb::flush_tlb_one_user(s.va);
        let v = read(s.va);
        check!(v == Some(VAL_B), "read after flush_tlb_one_user gave {:x?}, not the new page", v);
        Ok(())
    })();
    set_evict_ppm(prev);
    s.destroy();
    r?;
    let after = (page_alloc::data_pages_in_use(), page_alloc::table_pages_in_use());
    check!(after == pages, "pages leaked: (data, tables) {:?} before, {:?} after", pages, after);
    Ok(())
}

/// Another vCPU keeps its stale entry until it is shot down.
pub fn lazy_remote_stale_until_shootdown(boot: &BootInfo) -> TestResult {
    require_shadowed(NEEDS_MODEL)?;
    if boot.num_vcpus < 2 {
        return Err(TestError::Skip("needs at least 2 vCPUs"));
    }
    let prev = set_evict_ppm(0);
    run_on_and_wait(1, set_evict_ppm_work, 0);
    let s = Space::new(pte::RW | pte::US);
    tlb::switch_mm(&s.mm);
    let r = (|| {
        check!(run_on_and_wait(1, remote_switch_and_read, 0), "vCPU 1 did not run");
        check!(REMOTE_READ.load(Ordering::Acquire) == VAL_A, "vCPU 1's first read was wrong");
        s.remap_to_b();
        tlb::flush_tlb_one_user(s.va); // local flush only: no shootdown
        check!(read(s.va) == Some(VAL_B), "the local flush did not take effect");
        for i in 0..10 {
            run_on_and_wait(1, remote_read, 0);
            let v = REMOTE_READ.load(Ordering::Acquire);
            check!(v == VAL_A, "try {}: vCPU 1 read {:#x} before any shootdown, not the stale page", i, v);
        }
        let shot = tlb::flush_tlb_multi(&s.mm, s.va, s.va + pgtable::PAGE, false);
        check!(shot == Some(1), "flush_tlb_multi shot down {:?} CPUs, expected 1", shot);
        run_on_and_wait(1, remote_read, 0);
        let v = REMOTE_READ.load(Ordering::Acquire);
        check!(v == VAL_B, "vCPU 1 read {:#x} after the shootdown, not the new page", v);
        Ok(())
    })();
    run_on_and_wait(1, set_evict_ppm_work, prev);
    set_evict_ppm(prev);
    s.destroy();
    r
}

static ALL_READ_BAD: AtomicU64 = AtomicU64::new(0);

fn switch_and_expect(val: u64) {
    tlb::switch_mm(&space_mm());
    if read(SPACE_VA.load(Ordering::Acquire)) != Some(val) {
        ALL_READ_BAD.fetch_add(1, Ordering::Relaxed);
    }
}

fn expect_value(val: u64) {
    if read(SPACE_VA.load(Ordering::Acquire)) != Some(val) {
        ALL_READ_BAD.fetch_add(1, Ordering::Relaxed);
    }
}

/// A shootdown from one vCPU reaches every vCPU running the mm, each
/// flushes and acknowledges, and all then see the new page.
pub fn shootdown_all_vcpus(boot: &BootInfo) -> TestResult {
    let s = Space::new(pte::RW | pte::US);
    ALL_READ_BAD.store(0, Ordering::Relaxed);
    let r = (|| {
        let late = smp::run_on_all(switch_and_expect, VAL_A, TIMEOUT_MS);
        check!(late == 0 && ALL_READ_BAD.load(Ordering::Relaxed) == 0, "not every vCPU read the first page");
        s.remap_to_b();
        let acks0 = tlb::SHOOTDOWN_ACKS.load(Ordering::Relaxed);
        let shot = tlb::flush_tlb_multi(&s.mm, s.va, s.va + pgtable::PAGE, false);
        let acks = tlb::SHOOTDOWN_ACKS.load(Ordering::Relaxed) - acks0;
        let others = boot.num_vcpus - 1;
        check!(shot == Some(others), "shot down {:?} CPUs, expected {}", shot, others);
        check!(acks == others, "{} acknowledgements, expected {}", acks, others);
        let late = smp::run_on_all(expect_value, VAL_B, TIMEOUT_MS);
        let bad = ALL_READ_BAD.load(Ordering::Relaxed);
        check!(late == 0 && bad == 0, "{} vCPUs still read the old page after the shootdown", bad);
        Ok(())
    })();
    s.destroy();
    r
}

/// A read fill sets A only; a write sets D; a write through an entry filled
/// for a read faults again (one more fill) and sets D then.
pub fn ad_bits(_: &BootInfo) -> TestResult {
    let shadowed = tlb_state().model != TlbModelKind::Native;
    let prev = if shadowed { set_evict_ppm(0) } else { 0 };
    let s = Space::new(pte::RW | pte::US);
    tlb::switch_mm(&s.mm);
    let r = (|| {
        let e = pgtable::read_entry(s.ptep);
        check!(e & (pte::A | pte::D) == 0, "fresh PTE {:#x} already has A/D", e);
        check!(read(s.va) == Some(VAL_A), "read failed");
        let e = pgtable::read_entry(s.ptep);
        check!(e & pte::A != 0 && e & pte::D == 0, "after a read the PTE is {:#x}: want A set, D clear", e);
        let fills0 = tlb_state().fills;
        check!(write(s.va, 7), "write faulted");
        let e = pgtable::read_entry(s.ptep);
        check!(e & pte::D != 0, "after a write the PTE is {:#x}: D not set", e);
        if shadowed {
            let fills = tlb_state().fills - fills0;
            check!(fills == 1, "a write through a clean entry took {} fills, expected 1 refault", fills);
            check!(write(s.va, 8), "second write faulted");
            check!(tlb_state().fills - fills0 == 1, "a write through a dirty entry refaulted");
        }
        Ok(())
    })();
    if shadowed {
        set_evict_ppm(prev);
    }
    s.destroy();
    r
}

/// `evict:1.0` behaves like a coherent TLB: the stale entry is gone at the
/// next exit, so a read after a PTE change sees the new page without a flush.
pub fn evict_coherent(_: &BootInfo) -> TestResult {
    require_shadowed(NEEDS_MODEL)?;
    let prev = set_evict_ppm(1_000_000);
    let s = Space::new(pte::RW | pte::US);
    tlb::switch_mm(&s.mm);
    let r = (|| {
        check!(read(s.va) == Some(VAL_A), "first read was wrong");
        s.remap_to_b(); // a hypercall: an exit, at which the stale entry is evicted
        let v = read(s.va);
        check!(v == Some(VAL_B), "under evict:1.0 a read after the PTE change gave {:x?}", v);
        Ok(())
    })();
    set_evict_ppm(prev);
    s.destroy();
    r
}

const COUNTER_SHIFT: u64 = 52;
const COUNTER_MASK: u64 = 0x7ff; // bits 52..62: ignored by the walker
static PTEP: AtomicU64 = AtomicU64::new(0);
static ROUNDS: AtomicU64 = AtomicU64::new(0);
static WRITE_FAULTS: AtomicU64 = AtomicU64::new(0);

fn race_cmpxchg(_: u64) {
    tlb::switch_mm(&space_mm());
    let ptep = PTEP.load(Ordering::Acquire);
    let va = SPACE_VA.load(Ordering::Acquire);
    for i in 0..ROUNDS.load(Ordering::Acquire) {
        loop {
            let old = pgtable::read_entry(ptep);
            let new = old.wrapping_add(1 << COUNTER_SHIFT);
            if pgtable::ptep_cmpxchg(ptep, old, new) == old {
                break;
            }
        }
        // Let the walker (VMM or hardware) set A/D concurrently with the others' cmpxchg.
        if i % 4 == 0 {
            pgtable::ptep_clear_bits(ptep, pte::A | pte::D);
            tlb::flush_tlb_one_user(va);
        }
        if !write(va + 8 * (percpu::cpu() % 256), i) {
            WRITE_FAULTS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// vCPUs race `cmpxchg` on one PTE while the walker sets its A/D bits: no
/// update is lost (the count is exact) and no A/D update clobbers the count.
pub fn pte_ops_atomic(boot: &BootInfo) -> TestResult {
    let s = Space::new(pte::RW | pte::US);
    let rounds = (1500 / boot.num_vcpus).min(200);
    PTEP.store(s.ptep, Ordering::Release);
    ROUNDS.store(rounds, Ordering::Release);
    WRITE_FAULTS.store(0, Ordering::Relaxed);
    let r = (|| {
        let late = smp::run_on_all(race_cmpxchg, 0, TIMEOUT_MS * 4);
        check!(late == 0, "{} vCPUs did not finish", late);
        let e = pgtable::read_entry(s.ptep);
        let count = (e >> COUNTER_SHIFT) & COUNTER_MASK;
        check!(
            count == rounds * boot.num_vcpus,
            "counter {} after {} increments: updates lost",
            count,
            rounds * boot.num_vcpus
        );
        check!(
            e & pte::ADDR_MASK == s.page_a && e & (pte::P | pte::RW | pte::US) == pte::P | pte::RW | pte::US,
            "PTE {:#x} damaged",
            e
        );
        check!(WRITE_FAULTS.load(Ordering::Relaxed) == 0, "writes through the mapping faulted");
        Ok(())
    })();
    s.destroy();
    r
}

/// A direct store to a PTE (bypassing the page-table ops) is trapped and
/// reported with its address and value, and not applied.
pub fn stray_store_reported(_: &BootInfo) -> TestResult {
    require_shadowed(
        "native mode maps the page tables writable for the hardware walker: direct stores are not trapped",
    )?;
    let s = Space::new(pte::RW | pte::US);
    let r = (|| {
        let before = pgtable::read_entry(s.ptep);
        hypercall::call::<calls::ExpectStrayStore>(Empty);
        // SAFETY: deliberately stores to the read-only page-table region; the
        // VMM traps the store and does not apply it.
        unsafe { core::ptr::write_volatile(s.ptep as *mut u64, 0x1234_5067) };
        let rep = hypercall::call::<calls::LastStrayStore>(Empty);
        check!(rep.recorded.get(), "the VMM recorded no stray store");
        check!(rep.gpa == s.ptep, "recorded GPA {:#x}, expected {:#x}", rep.gpa, s.ptep);
        check!(rep.value == 0x1234_5067, "recorded value {:#x}", rep.value);
        check!(rep.rip >= 0x40_0000, "recorded RIP {:#x} is not kernel code", rep.rip);
        let after = pgtable::read_entry(s.ptep);
        check!(after == before, "the stray store was applied: {:#x} -> {:#x}", before, after);
        Ok(())
    })();
    s.destroy();
    r
}
