//! `mm/mprotect.c`: `mprotect` → `change_protection` → `change_pte_range`,
//! inside an mmu_gather (as since 4a18419f71cd). Only a PTE that loses a
//! permission needs a flush (`pte_needs_flush`): a pure upgrade is not
//! flushed — the change seed 002's series lists as item 2, and the reason
//! S3's reader keeps its stale translation.

use abi::layout::PAGE_SIZE;
use abi::litmus::{FlushScheme, MigrcUpgrade};

use super::mm_types::{page_align, MmStruct, Vma, VM_READ, VM_SHARED, VM_WRITE};
use super::mmu_gather::MmuGather;
use super::mmu_notifier::{MmuNotifierRange, PteChange};
use super::page::{page, PG_KSM, PG_MIGRC};
use super::pgtable::{pte, pte_dirty, pte_maps_page, pte_page, pte_write};
use super::ptdesc::PteTable;
use super::{migrate, policy, rmap};

impl MmStruct {
    /// `mprotect(start, len, flags)`: new VMA flags (splitting VMAs at the
    /// range's ends), then `change_protection`. False if part of the range
    /// is not mapped.
    pub fn mprotect(&self, start: u64, len: u64, flags: u8) -> bool {
        let (start, end) = (page_align(start), page_align(start + len + PAGE_SIZE - 1));
        let prot = flags & (VM_READ | VM_WRITE);
        if !self.for_vmas_split(start, end, |v| v.flags = (v.flags & VM_SHARED) | prot) {
            return false;
        }
        self.change_protection(start, end);
        true
    }

    fn change_protection(&self, start: u64, end: u64) {
        let mut tlb = MmuGather::new(self, start, end);
        let mut range = MmuNotifierRange::start(self, start, end);
        let vmas = self.vmas_in(start, end);
        for v in vmas.as_slice() {
            self.for_each_pte_table(start.max(v.start), end.min(v.end), |pt, s, e| {
                self.change_pte_range(&mut tlb, &mut range, v, pt, s, e)
            });
        }
        range.end();
        tlb.finish();
    }

    /// `change_pte_range`: rewrite each PTE for the VMA's new protection
    /// under the PTL (`ptep_modify_prot_start/commit`: get-and-clear, so
    /// the walkers' A/D updates are not lost).
    fn change_pte_range(
        &self,
        tlb: &mut MmuGather,
        range: &mut MmuNotifierRange,
        vma: &Vma,
        mut pt: PteTable,
        start: u64,
        end: u64,
    ) {
        rmap::flush_tlb_batched_pending(self);
        let mut demoted = false;
        let mut va = start;
        while va < end {
            let old = pt.get(va);
            if pte_maps_page(old) {
                let new = self.prot_entry(vma, old);
                if new != old {
                    let gains_write = pte_write(new) && !pte_write(old);
                    if gains_write && page(pte_page(old)).test(PG_MIGRC) && policy::migrc_upgrade() == MigrcUpgrade::All
                    {
                        // The stricter migrc fix: every permission upgrade
                        // of a page whose migration flush is deferred does
                        // that flush first.
                        migrate::migrc_flush(self);
                    }
                    let cur = pt.get_and_clear(va);
                    pt.set(va, new | (cur & (pte::A | pte::D)));
                    let loses = (pte_write(old) && !pte_write(new)) || (old & pte::P != 0 && new & pte::P == 0);
                    if loses {
                        tlb.remove_tlb_entry(&pt, va);
                        range.ptl_changed(va, PteChange::Protect);
                        demoted = true;
                    }
                }
            }
            va += PAGE_SIZE;
        }
        if demoted && tlb.scheme() == FlushScheme::Ptl {
            tlb.flush_tlbonly();
        }
    }

    /// The PTE for an existing page under the VMA's protection. Write is
    /// granted only where no fault is needed first: an exclusive anonymous
    /// page (`can_change_pte_writable`), or a shared file page that is
    /// already dirty (write-notify). PROT_NONE keeps the page mapped.
    fn prot_entry(&self, vma: &Vma, old: u64) -> u64 {
        let base = old & !(pte::RW | pte::P | pte::PROTNONE);
        if vma.flags & VM_READ == 0 {
            return base | pte::PROTNONE;
        }
        let mut e = base | pte::P | pte::US;
        if vma.flags & VM_WRITE != 0 {
            let p = page(pte_page(old));
            let may_write = if vma.is_anon() { p.count() == 1 && !p.test(PG_KSM) } else { pte_dirty(old) };
            if may_write {
                e |= pte::RW;
            }
        }
        e
    }
}
