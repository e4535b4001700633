//! The TLB-flush entry points the mm code calls (`arch/x86/mm/tlb.c`,
//! `include/asm-generic/tlb.h`): the primary shootdown with its hooks and
//! trace records, and — since v6.6 (`notifier=tlb-flush`, 6bbd42e2df8f) —
//! the secondary-MMU invalidation from the same path
//! (`mmu_notifier_arch_invalidate_secondary_tlbs` at the end of x86
//! `flush_tlb_mm_range`).

use abi::layout::PAGE_SIZE;
use abi::litmus::Hook;
use abi::policy::Notifier;

use super::hooks::hook;
use super::mm_types::MmStruct;
use super::mmu_notifier::arch_invalidate_secondary_tlbs;
use super::{policy, tlb};

/// `TLB_FLUSH_ALL`: the end of a flush of every user translation; the
/// secondary MMU is given the range `[0, TLB_FLUSH_ALL)` (the `-1UL` of
/// x86 `tlb_flush` for full-mm gathers and of `arch_tlbbatch_add_pending`).
pub const TLB_FLUSH_ALL: u64 = u64::MAX;

/// The primary flush only: this CPU, then IPIs to every CPU running the
/// mm. `freed_tables`: page tables of the range were freed (Linux's
/// `freed_tables`; without it the flush is last-level only, which an arm64
/// walk cache survives).
pub fn flush_primary(mm: &MmStruct, start: u64, end: u64, freed_tables: bool) {
    hook(Hook::BeforeFlush);
    let acked = tlb::flush_tlb_multi(&mm.pt(), start, end, freed_tables);
    // Pages are freed after this returns: a CPU that never flushed would
    // turn into a silent use-after-free, so this is a kernel bug, loudly.
    crate::guest_assert!(acked.is_some(), "a CPU did not acknowledge the TLB shootdown of {:#x}..{:#x}", start, end);
    hook(Hook::AfterFlush);
}

/// `flush_tlb_mm_range(mm, start, end, stride, freed_tables)`: a range
/// of more than `tlb_single_page_flush_ceiling` pages is a flush of
/// everything, `[0, TLB_FLUSH_ALL)` — also for the secondary MMU.
pub fn flush_tlb_mm_range(mm: &MmStruct, start: u64, end: u64, freed_tables: bool) {
    let (start, end) = if end == TLB_FLUSH_ALL || (end - start) / PAGE_SIZE > tlb::TLB_SINGLE_PAGE_FLUSH_CEILING {
        (0, TLB_FLUSH_ALL)
    } else {
        (start, end)
    };
    flush_primary(mm, start, end, freed_tables);
    if policy::get::<Notifier>() == Notifier::TlbFlush {
        arch_invalidate_secondary_tlbs(mm, start, end);
    }
}

/// `flush_tlb_page` (x86: `flush_tlb_mm_range(…, a, a + PAGE_SIZE, PAGE_SHIFT,
/// false)`; arm64: `TLBI VALE1IS`, last-level).
pub fn flush_tlb_page(mm: &MmStruct, va: u64) {
    let va = va & !(PAGE_SIZE - 1);
    flush_tlb_mm_range(mm, va, va + PAGE_SIZE, false);
}

/// `flush_tlb_range` of a VMA range, outside an mmu_gather. x86 passes
/// `freed_tables = false`, but arm64's `flush_tlb_range` is a non-leaf
/// `__flush_tlb_range(…, last_level = false)`: the hint sent is "not
/// last-level", which the x86 walk-cache model ignores anyway.
pub fn flush_tlb_range(mm: &MmStruct, start: u64, end: u64) {
    flush_tlb_mm_range(mm, start, end, true);
}

/// `flush_tlb_mm`: every user translation of the mm (x86:
/// `flush_tlb_mm_range(mm, 0, TLB_FLUSH_ALL, 0, true)`).
pub fn flush_tlb_mm(mm: &MmStruct) {
    flush_tlb_mm_range(mm, 0, TLB_FLUSH_ALL, true);
}
