//! The TLB-flush entry points the mm code calls (`arch/x86/mm/tlb.c`,
//! `mm/pgtable-generic.c`): the primary shootdown with its hooks and trace
//! records, and under `notifier=tlb-flush` (6.6+) the secondary-MMU
//! invalidation from the same path (`mmu_notifier_arch_invalidate_secondary_tlbs`).

use abi::layout::{PAGE_SIZE, USER_BASE, USER_END};
use abi::litmus::{Hook, NotifierPlacement};

use super::hooks::hook;
use super::mm_types::MmStruct;
use super::mmu_notifier::invalidate_secondary;
use super::{policy, tlb};

/// The primary flush only: this CPU, then IPIs to every CPU running the mm.
pub fn flush_primary(mm: &MmStruct, start: u64, end: u64) {
    hook(Hook::BeforeFlush);
    let acked = tlb::flush_tlb_mm_range(&mm.pt(), start, end);
    // Pages are freed after this returns: a CPU that never flushed would
    // turn into a silent use-after-free, so this is a kernel bug, loudly.
    crate::guest_assert!(acked.is_some(), "a CPU did not acknowledge the TLB shootdown of {:#x}..{:#x}", start, end);
    hook(Hook::AfterFlush);
}

/// `flush_tlb_mm_range(mm, start, end, freed_tables)`.
pub fn flush_tlb_mm_range(mm: &MmStruct, start: u64, end: u64, freed_tables: bool) {
    flush_primary(mm, start, end);
    if policy::notifier() == NotifierPlacement::TlbFlush {
        invalidate_secondary(mm, start, end, !freed_tables);
    }
}

/// `flush_tlb_page`.
pub fn flush_tlb_page(mm: &MmStruct, va: u64) {
    let va = va & !(PAGE_SIZE - 1);
    flush_tlb_mm_range(mm, va, va + PAGE_SIZE, false);
}

/// `flush_tlb_mm`: every user translation of the mm.
pub fn flush_tlb_mm(mm: &MmStruct) {
    flush_tlb_mm_range(mm, USER_BASE, USER_END, true);
}
