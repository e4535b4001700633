//! mmu_notifier for the secondary MMU (the SVA IOMMU), in every placement
//! the kernel has had (`notifier=`):
//!
//! * `ptl` — `ptep_clear_flush_notify` & co.: the device is invalidated
//!   under the PTL, right after the PTE changed;
//! * `end` — only in `mmu_notifier_invalidate_range_end`, after the PTL was
//!   released, unconditionally over the whole range (Andrea's argument in
//!   seed 004);
//! * `only-end` — the 4.15 rule (0f10851ea475): paths that replace the
//!   page (CoW, migration, unmap) invalidate under the PTL and end with
//!   `mmu_notifier_invalidate_range_only_end`; write-protect-like changes
//!   (mprotect, KSM, mkclean) and zaps invalidate at range_end
//!   (Documentation/mm/mmu_notifier.rst);
//! * `tlb-flush` — 6.6+: `arch_invalidate_secondary_tlbs` from the TLB-flush
//!   path (see `flush.rs`), and from batched unmap at batching time;
//! * `none` — never (the bug every scenario's device form shows).

use core::sync::atomic::Ordering;

use abi::litmus::{Hook, NotifierPlacement};

use super::hooks::hook;
use super::mm_types::MmStruct;
use super::policy;
use crate::iommu;
use crate::trace::{self, Kind};

/// What a PTE change under the PTL did to the page.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PteChange {
    /// Cleared, or write-protected / replaced by a page of the same
    /// content (zap, mprotect, fork's wrprotect, mkclean, KSM).
    Protect,
    /// The page is replaced by a different one or unmapped for good (CoW,
    /// migration, try_to_unmap, mremap's move).
    Replace,
}

/// The secondary-MMU invalidation itself: the SVA driver's
/// `invalidate_range` (6.6+: `arch_invalidate_secondary_tlbs`). `leaf_only`
/// is the invalidation hint that spares the paging-structure cache. The
/// driver invalidates nothing for an empty range (the reset `~0` sentinel).
pub fn invalidate_secondary(mm: &MmStruct, start: u64, end: u64, leaf_only: bool) {
    let pasid = mm.pasid.load(Ordering::Acquire);
    if pasid == 0 {
        return;
    }
    hook(Hook::BeforeNotifier);
    trace::emit(Kind::NotifierBegin, start, end, leaf_only as u64);
    let _ = iommu::invalidate_range(pasid as u32, start, end, leaf_only);
    trace::emit(Kind::NotifierEnd, start, end, leaf_only as u64);
    hook(Hook::AfterNotifier);
}

/// `struct mmu_notifier_range` between `mmu_notifier_invalidate_range_start`
/// and `_end`.
pub struct MmuNotifierRange<'a> {
    mm: &'a MmStruct,
    pub start: u64,
    pub end: u64,
    /// The range was invalidated under the PTL already (`_only_end` applies).
    under_ptl: bool,
}

impl<'a> MmuNotifierRange<'a> {
    /// `mmu_notifier_range_init` + `mmu_notifier_invalidate_range_start`.
    pub fn start(mm: &'a MmStruct, start: u64, end: u64) -> Self {
        hook(Hook::AfterInvalidateStart);
        MmuNotifierRange { mm, start, end, under_ptl: false }
    }

    /// Called under the PTL right after the PTE of `va` changed: the
    /// `*_notify` variants (`ptep_clear_flush_notify`, …).
    pub fn ptl_changed(&mut self, va: u64, change: PteChange) {
        let now = match policy::notifier() {
            NotifierPlacement::Ptl => true,
            NotifierPlacement::OnlyEnd => change == PteChange::Replace,
            _ => false,
        };
        if now {
            invalidate_secondary(self.mm, va, va + abi::layout::PAGE_SIZE, true);
            self.under_ptl = true;
        }
    }

    /// `mmu_notifier_invalidate_range_end` (or `_only_end` when the PTL
    /// path invalidated already under `only-end`).
    pub fn end(self) {
        hook(Hook::BeforeInvalidateEnd);
        let now = match policy::notifier() {
            NotifierPlacement::End => true,
            NotifierPlacement::OnlyEnd => !self.under_ptl,
            _ => false,
        };
        if now {
            invalidate_secondary(self.mm, self.start, self.end, false);
        }
    }
}
