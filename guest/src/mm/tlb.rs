//! TLB flushing as Linux x86 does it: the local primitives
//! (`flush_tlb_one_user`, `flush_tlb_local`) tell the VMM's modelled TLB
//! and then execute the real instruction; `flush_tlb_multi` flushes
//! locally and shoots down every other CPU running the mm with an IPI whose
//! handler flushes and acknowledges, waiting for all of them.
//!
//! The modelled TLB's entries are gone when the primitive returns, at
//! either privilege level: at CPL0 the primitive clears the slots the VMM
//! lists in the zap list itself (`abi::zap`); at CPL3 the VMM raises the
//! zap interrupt, taken before the next CPL3 instruction.
//!
//! Every flush carries Linux's last-level hint (`!freed_tables`, arm64's
//! `__flush_tlb_range(…, last_level)`) to the VMM, whose walk-cache model
//! (`walk-cache=`) decides what it keeps. Not modelled: x86 lazy-TLB CPUs
//! (since v4.19 skipped by shootdowns unless tables were freed) — a CPU
//! whose litmus thread ended loads the kernel page tables instead.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::hypercall::calls::{
    Flush, FlushRequest, FlushThen, FlushThenRequest, SwitchMm, SwitchMmRequest, TlbConfig, TlbConfigRequest,
};
use abi::hypercall::{Flag, FlushKind, TlbConfigAction};
use abi::layout::{MAX_VCPUS, PAGE_SIZE};

use super::pgtable::{self, PageTables};
use crate::trace::{self, Kind};
use crate::{apic, arch, cpl3, hypercall, percpu, smp};

/// Whether this VM's vCPU TLBs are modelled by the VMM (`lazy`,
/// `evict:P`) rather than the host's own (`native`).
pub fn modelled() -> bool {
    use abi::hypercall::TlbModelKind;
    let r =
        hypercall::call::<TlbConfig>(TlbConfigRequest { action: TlbConfigAction::Query, evict_ppm: 0, walk_cache: 0 });
    r.model != TlbModelKind::Native
}

/// PGD of the mm each CPU runs (0 = none): Linux's `mm_cpumask` in reverse.
static CURRENT_MM: [AtomicU64; MAX_VCPUS as usize] = [const { AtomicU64::new(0) }; MAX_VCPUS as usize];

/// Tells the VMM this vCPU's walk-cache model (`walk-cache=`, the
/// `abi::policy::WalkCache` wire number).
pub fn set_walk_cache(model: u64) {
    hypercall::call::<TlbConfig>(TlbConfigRequest {
        action: TlbConfigAction::SetWalkCache,
        evict_ppm: 0,
        walk_cache: model,
    });
}

/// `switch_mm`: run `mm` on this CPU. The VMM says what to load in CR3
/// (and empties the modelled TLB's user half, as a CR3 write without PCID).
pub fn switch_mm(mm: &PageTables) {
    if percpu::cpl() == 3 {
        // The gate's SWITCH_MM carries no queued page-table updates: they
        // go first, so the mm is complete before it is walked.
        pgtable::lazy_mmu_flush();
        cpl3::switch_mm_gate(mm.pgd);
    } else {
        let was_enabled = arch::interrupts_enabled();
        arch::interrupts_disable();
        let r = hypercall::call::<SwitchMm>(SwitchMmRequest { pgd: mm.pgd });
        cpl3::drain_zaps();
        // SAFETY: CR3 is this vCPU's shadow root (or the PGD in native
        // mode); both map the kernel identically in slot 0.
        unsafe { asm!("mov cr3, {}", in(reg) r.cr3, options(nostack, preserves_flags)) }
        if was_enabled {
            arch::interrupts_enable();
        }
    }
    CURRENT_MM[percpu::cpu() as usize].store(mm.pgd, Ordering::Release);
    trace::emit(Kind::MmSwitch, 0, mm.pgd, 0);
}

/// Whether this CPU runs the mm with PGD `pgd`.
pub fn runs_mm(pgd: u64) -> bool {
    CURRENT_MM[percpu::cpu() as usize].load(Ordering::Acquire) == pgd
}

/// Back to the boot page tables (no user half).
pub fn switch_to_kernel_mm() {
    trace::emit(Kind::MmSwitch, 0, 0, 0);
    CURRENT_MM[percpu::cpu() as usize].store(0, Ordering::Release);
    if percpu::cpl() == 3 {
        return cpl3::kernel_mm_gate();
    }
    // SAFETY: the boot page tables map the whole kernel.
    unsafe { asm!("mov cr3, {}", in(reg) abi::layout::BOOT_PML4, options(nostack, preserves_flags)) }
}

/// [`flush`], or with follow-ups (CPL3 only) `FLUSH_THEN`.
fn flush_then(req: FlushRequest, then: FollowUps) {
    if then.is_none() {
        return flush(req);
    }
    hypercall::call::<FlushThen>(then.onto(req));
}

/// The FLUSH hypercall (queued instead in lazy MMU mode at CPL3). At CPL0
/// the slots the VMM cleared are cleared here (zap list) before the caller
/// executes the real instruction; at CPL3 the zap interrupt does it before
/// the next instruction (and reloads CR3).
fn flush(req: FlushRequest) {
    if percpu::cpl() == 3 {
        if pgtable::lazy_flush(req.kind, req.va, req.len, req.last_level.get()) {
            return;
        }
        hypercall::call::<Flush>(req);
        return;
    }
    let was_enabled = arch::interrupts_enabled();
    arch::interrupts_disable();
    hypercall::call::<Flush>(req);
    cpl3::drain_zaps();
    if was_enabled {
        arch::interrupts_enable();
    }
}

/// `flush_tlb_one_user`: one page, last-level (no table was freed).
pub fn flush_tlb_one_user(va: u64) {
    flush(FlushRequest::local(FlushKind::Page, va, PAGE_SIZE, true));
    if percpu::cpl() == 3 {
        return;
    }
    // SAFETY: invlpg only drops a translation.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) }
}

pub fn flush_tlb_local() {
    flush_tlb_local_then(FollowUps::NONE);
}

/// A flush's follow-ups (see `FlushThenRequest`): CPL3 callers only, where
/// the zap interrupt clears the host's copy of the dropped entries.
#[derive(Clone, Copy)]
struct FollowUps {
    ack: u64,
    ipi_cpus: u64,
    repark: bool,
}

impl FollowUps {
    const NONE: FollowUps = FollowUps { ack: 0, ipi_cpus: 0, repark: false };

    fn is_none(&self) -> bool {
        self.ack == 0 && self.ipi_cpus == 0 && !self.repark
    }

    fn onto(self, req: FlushRequest) -> FlushThenRequest {
        FlushThenRequest {
            ack: self.ack,
            ipi_cpus: self.ipi_cpus,
            ipi_vector: apic::CALL_FUNCTION_VECTOR,
            repark: Flag::new(self.repark),
            ..FlushThenRequest::of(req)
        }
    }
}

/// [`flush_tlb_local`] with a flush's [`FollowUps`].
fn flush_tlb_local_then(then: FollowUps) {
    flush_then(FlushRequest::local(FlushKind::All, 0, 0, false), then);
    if percpu::cpl() == 3 {
        return;
    }
    // SAFETY: reloading CR3 with its own value drops non-global translations.
    unsafe { asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack, preserves_flags)) }
}

/// `tlb_single_page_flush_ceiling` (arch/x86/mm/tlb.c): a flush of more
/// pages than this is a full flush.
pub const TLB_SINGLE_PAGE_FLUSH_CEILING: u64 = 33;

/// Flushes `start..end` on this CPU only; `freed_tables`: page tables of
/// the range were freed, so walk caches must go too (not last-level).
pub fn flush_tlb_range_local(start: u64, end: u64, freed_tables: bool) {
    flush_tlb_range_local_then(start, end, freed_tables, FollowUps::NONE);
}

/// [`flush_tlb_range_local`] with a flush's [`FollowUps`].
fn flush_tlb_range_local_then(start: u64, end: u64, freed_tables: bool, then: FollowUps) {
    if end.wrapping_sub(start) > TLB_SINGLE_PAGE_FLUSH_CEILING * PAGE_SIZE {
        return flush_tlb_local_then(then);
    }
    flush_then(FlushRequest::local(FlushKind::Range, start, end - start, !freed_tables), then);
    if percpu::cpl() == 3 {
        return;
    }
    let mut va = start & !(PAGE_SIZE - 1);
    while va < end {
        // SAFETY: as above.
        unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) }
        va += PAGE_SIZE;
    }
}

/// `struct flush_tlb_info`.
#[derive(Clone, Copy)]
struct FlushInfo {
    start: u64,
    end: u64,
    freed_tables: bool,
}

static FLUSH_INFO: [[AtomicU64; 3]; MAX_VCPUS as usize] =
    [const { [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)] }; MAX_VCPUS as usize];

/// The shootdown IPI's function (`flush_tlb_func`), run in interrupt context.
fn flush_tlb_func(sender: u64) {
    let info = &FLUSH_INFO[sender as usize];
    let f = FlushInfo {
        start: info[0].load(Ordering::Acquire),
        end: info[1].load(Ordering::Acquire),
        freed_tables: info[2].load(Ordering::Acquire) != 0,
    };
    trace::emit(Kind::IpiRecv, f.start, sender, f.end);
    SHOOTDOWN_ACKS.fetch_add(1, Ordering::Relaxed);
    // At CPL3 the acknowledgement (`csd_unlock`) rides on the FLUSH, and
    // so may the park this IPI interrupted.
    let (ack, repark) = smp::take_ack();
    flush_tlb_range_local_then(f.start, f.end, f.freed_tables, FollowUps { ack, ipi_cpus: 0, repark });
    trace::emit(Kind::IpiAck, f.start, sender, f.end);
}

/// Acknowledged shootdown IPIs, for the self-tests.
pub static SHOOTDOWN_ACKS: AtomicU64 = AtomicU64::new(0);

/// x86 `flush_tlb_multi` (`native_flush_tlb_multi`, which also runs
/// `flush_tlb_func` on the calling CPU when the mask holds it): flush
/// locally, IPI every other CPU running `mm`, wait until all have flushed.
/// The mm-level `flush_tlb_mm_range` (range ceiling, secondary TLBs) is
/// `mm::flush`'s. Returns how many CPUs were shot down, or
/// `None` if one did not answer in time. Traced as `FlushBegin` … `FlushEnd`
/// (`b` = CPUs shot down, `u64::MAX` if one did not answer), with an
/// `IpiSend` per target.
pub fn flush_tlb_multi(mm: &PageTables, start: u64, end: u64, freed_tables: bool) -> Option<u64> {
    let me = percpu::cpu();
    trace::emit(Kind::FlushBegin, start, end, 0);
    let info = &FLUSH_INFO[me as usize];
    info[0].store(start, Ordering::Relaxed);
    info[2].store(freed_tables as u64, Ordering::Relaxed);
    info[1].store(end, Ordering::Release);
    let targets = (0..smp::num_cpus())
        .filter(|&c| c != me && CURRENT_MM[c as usize].load(Ordering::Acquire) == mm.pgd)
        .inspect(|&c| trace::emit(Kind::IpiSend, start, c, end));
    let r = if percpu::cpl() == 3 {
        // `smp_call_function_many_cond`'s order (v4.x+ `flush_tlb_multi`
        // path): the requests queued, the IPIs sent, the local flush, the
        // wait — the IPIs and the local flush in one FLUSH.
        Some(smp::call_function_many_cpl3(targets, flush_tlb_func, me, |ipi_cpus| {
            flush_tlb_range_local_then(start, end, freed_tables, FollowUps { ipi_cpus, ..FollowUps::NONE })
        }))
    } else {
        flush_tlb_range_local(start, end, freed_tables);
        smp::call_function_many(targets, flush_tlb_func, me, 20_000)
    };
    trace::emit(Kind::FlushEnd, start, end, r.unwrap_or(u64::MAX));
    r
}
