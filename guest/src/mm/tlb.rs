//! TLB flushing as Linux x86 does it: the local primitives
//! (`flush_tlb_one_user`, `flush_tlb_local`) tell the VMM's modelled TLB
//! and then execute the real instruction; `flush_tlb_mm_range` flushes
//! locally and shoots down every other CPU running the mm with an IPI whose
//! handler flushes and acknowledges, waiting for all of them.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::hypercall::calls::{Flush, FlushRequest, SwitchMm, SwitchMmRequest};
use abi::hypercall::FlushKind;
use abi::layout::{MAX_VCPUS, PAGE_SIZE};

use super::pgtable::Mm;
use crate::trace::{self, Kind};
use crate::{hypercall, percpu, smp};

/// PGD of the mm each CPU runs (0 = none): Linux's `mm_cpumask` in reverse.
static CURRENT_MM: [AtomicU64; MAX_VCPUS as usize] = [const { AtomicU64::new(0) }; MAX_VCPUS as usize];

/// `switch_mm`: run `mm` on this CPU. The VMM says what to load in CR3.
pub fn switch_mm(mm: &Mm) {
    let r = hypercall::call::<SwitchMm>(SwitchMmRequest { pgd: mm.pgd });
    CURRENT_MM[percpu::cpu() as usize].store(mm.pgd, Ordering::Release);
    // SAFETY: CR3 is this vCPU's shadow root (or the PGD in native mode);
    // both map the kernel identically in slot 0.
    unsafe { asm!("mov cr3, {}", in(reg) r.cr3, options(nostack, preserves_flags)) }
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
    // SAFETY: the boot page tables map the whole kernel.
    unsafe { asm!("mov cr3, {}", in(reg) abi::layout::BOOT_PML4, options(nostack, preserves_flags)) }
}

pub fn flush_tlb_one_user(va: u64) {
    hypercall::call::<Flush>(FlushRequest { kind: FlushKind::Page, va, len: PAGE_SIZE });
    // SAFETY: invlpg only drops a translation.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) }
}

pub fn flush_tlb_local() {
    hypercall::call::<Flush>(FlushRequest { kind: FlushKind::All, va: 0, len: 0 });
    // SAFETY: reloading CR3 with its own value drops non-global translations.
    unsafe { asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack, preserves_flags)) }
}

/// Flushes `start..end` on this CPU only.
pub fn flush_tlb_range_local(start: u64, end: u64) {
    if end - start > 64 * PAGE_SIZE {
        return flush_tlb_local();
    }
    hypercall::call::<Flush>(FlushRequest { kind: FlushKind::Range, va: start, len: end - start });
    let mut va = start & !(PAGE_SIZE - 1);
    while va < end {
        // SAFETY: as above.
        unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) }
        va += PAGE_SIZE;
    }
}

#[derive(Clone, Copy)]
struct FlushInfo {
    start: u64,
    end: u64,
}

static FLUSH_INFO: [[AtomicU64; 2]; MAX_VCPUS as usize] =
    [const { [AtomicU64::new(0), AtomicU64::new(0)] }; MAX_VCPUS as usize];

/// The shootdown IPI's function (`flush_tlb_func`), run in interrupt context.
fn flush_tlb_func(sender: u64) {
    let info = &FLUSH_INFO[sender as usize];
    let f = FlushInfo { start: info[0].load(Ordering::Acquire), end: info[1].load(Ordering::Acquire) };
    trace::emit(Kind::IpiRecv, f.start, sender, f.end);
    flush_tlb_range_local(f.start, f.end);
    trace::emit(Kind::IpiAck, f.start, sender, f.end);
    SHOOTDOWN_ACKS.fetch_add(1, Ordering::Relaxed);
}

/// Acknowledged shootdown IPIs, for the self-tests.
pub static SHOOTDOWN_ACKS: AtomicU64 = AtomicU64::new(0);

/// `flush_tlb_mm_range`: flush locally, IPI every other CPU running `mm`,
/// wait until all have flushed. Returns how many CPUs were shot down, or
/// `None` if one did not answer in time. Traced as `FlushBegin` … `FlushEnd`
/// (`b` = CPUs shot down, `u64::MAX` if one did not answer), with an
/// `IpiSend` per target.
pub fn flush_tlb_mm_range(mm: &Mm, start: u64, end: u64) -> Option<u64> {
    let me = percpu::cpu();
    trace::emit(Kind::FlushBegin, start, end, 0);
    flush_tlb_range_local(start, end);
    let info = &FLUSH_INFO[me as usize];
    info[0].store(start, Ordering::Relaxed);
    info[1].store(end, Ordering::Release);
    let targets = (0..smp::num_cpus())
        .filter(|&c| c != me && CURRENT_MM[c as usize].load(Ordering::Acquire) == mm.pgd)
        .inspect(|&c| trace::emit(Kind::IpiSend, start, c, end));
    let r = smp::call_function_many(targets, flush_tlb_func, me, 20_000);
    trace::emit(Kind::FlushEnd, start, end, r.unwrap_or(u64::MAX));
    r
}
