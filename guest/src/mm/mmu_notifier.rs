//! mmu_notifier for the secondary MMU (the SVA IOMMU), with the call sites
//! of each era (`notifier=`). The notifier API carries no leaf hint: the
//! SVA driver invalidates with IH=0 in every era (intel-svm
//! `intel_flush_svm_range(…, ih = 0)`), so the device's paging-structure
//! cache is always dropped for the range.
//!
//! Where the device is told, per call site ([`Site`]) and era:
//!
//! | site | `page` v3.19-4.12 | `ptl` v4.13-4.14 | `only-end` v4.15-6.5 |
//! |---|---|---|---|
//! | `Replace` (wp_page_copy) | under PTL (`ptep_clear_flush_notify`) | under PTL | under PTL, then `_only_end` |
//! | `Ksm` (write_protect_page, replace_page) | under PTL (`ptep_clear_flush_notify`) | under PTL | range_end of each (0f10851ea475) |
//! | `UnmapAnon` (try_to_unmap/migrate_one, anon) | `invalidate_page` after the PTL release | under PTL (369ea8242c0f) | under PTL |
//! | `UnmapFile` (try_to_unmap_one, file) | `invalidate_page` after the PTL release | under PTL | range_end (the page stays locked) |
//! | `Migrate` (migration entry) | `invalidate_page` after the PTL release | under PTL | range_end |
//! | `Mkclean` (page_mkclean_one) | `invalidate_page` after the PTL release | under PTL | range_end (a downgrade) |
//! | `Range` (zap, mprotect, MADV_FREE, fork, mremap) | range_end, mmu_gather flush | same | same |
//!
//! and in every one of those eras `mmu_notifier_invalidate_range_end` and
//! `tlb_flush_mmu_tlbonly` call `invalidate_range` for their range. Since
//! v6.6 (`tlb-flush`, 6bbd42e2df8f, ec8832d007cb) none of these call
//! sites invalidates: the TLB-flush path does (`flush.rs`), and batched
//! unmap at batching time with the range `[0, -1UL)`.
//! `end` (before 34ee645e83b6, v3.19; seed 004's argument) invalidates
//! only in range_end; `none` (no kernel) never.

use core::sync::atomic::Ordering;

use abi::layout::PAGE_SIZE;
use abi::litmus::Hook;
use abi::policy::{NestedRange, Notifier};

use super::hooks::hook;
use super::mm_types::MmStruct;
use super::policy;
use crate::iommu;
use crate::trace::{self, Kind};

/// What a PTE change under the PTL was, which decides where the secondary
/// MMU hears of it (see the module table).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Site {
    /// CoW: `wp_page_copy` replaces the page (`ptep_clear_flush_notify`).
    Replace,
    /// KSM's write_protect_page and replace_page (same content, a
    /// downgrade: "no need to notify", 0f10851ea475).
    Ksm,
    /// try_to_unmap_one / try_to_migrate_one of an anonymous page.
    UnmapAnon,
    /// try_to_unmap_one of a file page.
    UnmapFile,
    /// try_to_migrate_one installing a migration entry ("No need to
    /// invalidate here it will synchronize on against the special swap
    /// migration pte", v4.15+).
    Migrate,
    /// page_mkclean_one.
    Mkclean,
    /// Range operations: zap, mprotect, MADV_FREE, fork's write-protect,
    /// mremap's move — never told under the PTL.
    Range,
}

/// The SVA driver's flush of `[start, end)` (intel-svm
/// `intel_invalidate_range` → `intel_flush_svm_range(svm, start,
/// (end - start + PAGE_SIZE - 1) >> VTD_PAGE_SHIFT, 0)`): the page count is
/// computed in u64 and wraps for the flush-all range `[0, -1UL)`, so the
/// driver invalidates nothing unless it special-cases that range
/// (`nested-range=full`, e7ad6c2a4b1a). An empty range (a reset
/// mmu_gather's `[~0, ~0)`) invalidates nothing.
fn invalidate_range(mm: &MmStruct, start: u64, end: u64) {
    let pasid = mm.pasid.load(Ordering::Acquire);
    if pasid == 0 {
        return;
    }
    hook(Hook::BeforeNotifier);
    trace::emit(Kind::NotifierBegin, start, end, 0);
    let flush_all = start == 0 && end == super::flush::TLB_FLUSH_ALL;
    if flush_all && policy::get::<NestedRange>() == NestedRange::Full {
        let _ = iommu::invalidate_range(pasid as u32, 0, u64::MAX);
    } else {
        let pages = end.wrapping_sub(start).wrapping_add(PAGE_SIZE - 1) >> 12;
        if pages != 0 && end > start {
            let _ = iommu::invalidate_range(pasid as u32, start, start.saturating_add(pages * PAGE_SIZE));
        }
    }
    trace::emit(Kind::NotifierEnd, start, end, 0);
    hook(Hook::AfterNotifier);
}

/// `mmu_notifier_arch_invalidate_secondary_tlbs` (v6.6+), called by the
/// TLB-flush path and by batched unmap.
pub fn arch_invalidate_secondary_tlbs(mm: &MmStruct, start: u64, end: u64) {
    invalidate_range(mm, start, end);
}

/// `mmu_notifier_invalidate_range(tlb->mm, tlb->start, tlb->end)` from
/// `tlb_flush_mmu_tlbonly` (v3.19-v6.5, 34ee645e83b6): the gathered range
/// as it stands — after a full-mm reset `[~0, ~0)`, which is empty.
pub fn gather_invalidate(mm: &MmStruct, start: u64, end: u64) {
    if matches!(policy::get::<Notifier>(), Notifier::Page | Notifier::Ptl | Notifier::OnlyEnd) {
        invalidate_range(mm, start, end);
    }
}

/// Whether `site` invalidates under the PTL in the run's era.
fn under_ptl(site: Site) -> bool {
    match policy::get::<Notifier>() {
        Notifier::Page => matches!(site, Site::Replace | Site::Ksm),
        Notifier::Ptl => site != Site::Range,
        Notifier::OnlyEnd => matches!(site, Site::Replace | Site::UnmapAnon),
        Notifier::TlbFlush | Notifier::End | Notifier::None => false,
    }
}

/// `struct mmu_notifier_range` between `mmu_notifier_invalidate_range_start`
/// and `_end`.
pub struct MmuNotifierRange<'a> {
    mm: &'a MmStruct,
    pub start: u64,
    pub end: u64,
    /// A `Replace` site invalidated under the PTL: the path ends with
    /// `mmu_notifier_invalidate_range_only_end` (4645b9fe84bf, v4.15).
    only_end: bool,
}

impl<'a> MmuNotifierRange<'a> {
    /// `mmu_notifier_range_init` + `mmu_notifier_invalidate_range_start`.
    pub fn start(mm: &'a MmStruct, start: u64, end: u64) -> Self {
        hook(Hook::AfterInvalidateStart);
        MmuNotifierRange { mm, start, end, only_end: false }
    }

    /// Called under the PTL right after the PTE of `va` changed at `site`:
    /// the `*_notify` variants and the explicit `mmu_notifier_invalidate_range`
    /// calls of the rmap walks.
    pub fn ptl_changed(&mut self, va: u64, site: Site) {
        if under_ptl(site) {
            invalidate_range(self.mm, va, va + PAGE_SIZE);
            if site == Site::Replace && policy::get::<Notifier>() == Notifier::OnlyEnd {
                self.only_end = true;
            }
        }
    }

    /// Called after the PTL was released: `mmu_notifier_invalidate_page`
    /// of the rmap walks before v4.13.
    pub fn after_unlock(&mut self, va: u64, site: Site) {
        if policy::get::<Notifier>() == Notifier::Page
            && matches!(site, Site::UnmapAnon | Site::UnmapFile | Site::Migrate | Site::Mkclean)
        {
            invalidate_range(self.mm, va, va + PAGE_SIZE);
        }
    }

    /// `mmu_notifier_invalidate_range_end` (or `_only_end`).
    pub fn end(self) {
        hook(Hook::BeforeInvalidateEnd);
        let now = match policy::get::<Notifier>() {
            Notifier::Page | Notifier::Ptl | Notifier::End => true,
            Notifier::OnlyEnd => !self.only_end,
            Notifier::TlbFlush | Notifier::None => false,
        };
        if now {
            invalidate_range(self.mm, self.start, self.end);
        }
        hook(Hook::AfterInvalidateEnd);
    }
}
