//! `mm/madvise.c`: `MADV_FREE` (`madvise_free_single_vma` →
//! `madvise_free_pte_range`), under `mmap_read_lock`. `MADV_DONTNEED` is a
//! zap (`memory.rs`).
//!
//! A lazy-freed page keeps its mapping but loses its dirty state: its PTE is
//! made old and clean (and flushed through the mmu_gather, so no TLB keeps
//! a dirty writable entry that could write without dirtying the PTE), the
//! page loses `PG_dirty` and `PG_swapbacked`. Reclaim then discards it
//! unless it was written again; a later read of a discarded page gives a
//! fresh zero page.

use abi::layout::PAGE_SIZE;
use abi::policy::FlushScheme;

use super::locking;
use super::mm_types::MmStruct;
use super::mmu_gather::MmuGather;
use super::mmu_notifier::{MmuNotifierRange, Site};
use super::page::{page, PG_ANON, PG_DIRTY, PG_KSM, PG_SWAPBACKED};
use super::pgtable::{pte, pte_page, swp};
use super::ptdesc::PteTable;
use super::{rmap, swap};

impl MmStruct {
    /// `madvise(MADV_FREE)` on the anonymous VMAs of the range; false
    /// (EINVAL) before v4.5, which has no MADV_FREE (854e9ed09ded).
    pub fn madvise_free(&self, start: u64, len: u64) -> bool {
        if super::policy::get::<abi::policy::Profile>().release() < abi::policy::r(4, 5) {
            return false;
        }
        let _l = locking::mmap_read_lock(self);
        let end = start + len;
        let mut tlb = MmuGather::new(self, start, end);
        let mut range = MmuNotifierRange::start(self, start, end);
        let vmas = self.vmas_in(start, end);
        for v in vmas.as_slice().iter().filter(|v| v.is_anon()) {
            self.for_each_pte_table(start.max(v.start), end.min(v.end), |pt, s, e| {
                self.madvise_free_pte_range(&mut tlb, &mut range, pt, s, e)
            });
        }
        range.end();
        tlb.finish();
        true
    }

    /// `madvise_free_pte_range`: like every deferring path, it flushes
    /// what reclaim batched (`flush_tlb_batched_pending`, 3ea277194daa) and
    /// takes part in the flush scheme's bookkeeping (publishes its own
    /// deferral, notices others').
    fn madvise_free_pte_range(
        &self,
        tlb: &mut MmuGather,
        range: &mut MmuNotifierRange,
        mut pt: PteTable,
        start: u64,
        end: u64,
    ) {
        rmap::flush_tlb_batched_pending(self);
        tlb.check_nested(&pt);
        let mut changed = false;
        let mut va = start;
        while va < end {
            let e = pt.get(va);
            if swp::is_swap_pte(e) && !swp::is_migration_entry(e) {
                pt.get_and_clear(va);
                swap::swap_free(swp::offset(e) as usize);
            } else if e & pte::P != 0 {
                let p = page(pte_page(e));
                // Only pages this mm alone maps (not KSM, not shared with the fork child).
                if p.test(PG_ANON) && !p.test(PG_KSM) && p.count() == 1 {
                    if e & (pte::D | pte::A) != 0 {
                        let old = pt.get_and_clear(va);
                        pt.set(va, old & !(pte::D | pte::A));
                        tlb.remove_tlb_entry(&pt, va);
                        range.ptl_changed(va, Site::Range);
                        changed = true;
                    }
                    p.clear(PG_DIRTY | PG_SWAPBACKED);
                }
            }
            va += PAGE_SIZE;
        }
        if changed && tlb.scheme() == FlushScheme::Ptl {
            tlb.flush_tlbonly();
        }
    }
}
