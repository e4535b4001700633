//! `mm/mprotect.c`: `mprotect` (mmap_lock for write) and userfaultfd
//! write-protect (`mwriteprotect_range`, mmap_lock for read) →
//! `change_protection` → `change_pte_range`.
//!
//! The flush is deferred to the end of the operation: before v6.0
//! `change_protection_range` flushed the range if any PTE changed, since
//! 4a18419f71cd an mmu_gather flushes what `tlb_flush_pte_range` gathered
//! (`mprotect-gather=`). Every changed PTE needs that flush, a permission
//! upgrade too: x86 `pte_flags_need_flush` has `_PAGE_RW` in
//! `flush_on_change`, the generic `pte_needs_flush` is always true
//! (`upgrade-flush=skip` is the unmerged proposal of seed 002, item 2).

use abi::layout::PAGE_SIZE;
use abi::policy::{FlushScheme, MigrcUpgrade, MprotectGather, UpgradeFlush};

use super::locking::{self, mmap_read_lock, mmap_write_lock};
use super::mm_types::{page_align, MmStruct, Vma, VM_READ, VM_SHARED, VM_UFFD_WP, VM_WRITE};
use super::mmu_gather::MmuGather;
use super::mmu_notifier::{MmuNotifierRange, Site};
use super::page::{page, PG_KSM, PG_MIGRC};
use super::pgtable::{pte, pte_dirty, pte_maps_page, pte_page, pte_write};
use super::ptdesc::PteTable;
use super::{migrate, policy, rmap};

/// What `change_protection` does to each PTE (`cp_flags`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Change {
    /// mprotect: the VMA's new protection.
    Prot,
    /// `MM_CP_UFFD_WP`: write-protect, mark uffd-wp.
    UffdWp,
    /// `MM_CP_UFFD_WP_RESOLVE`: drop the mark; the PTE gets the VMA's
    /// `vm_page_prot`, which for a private or write-notify mapping grants
    /// no write — a writable PTE is demoted (the race 6ce64428d620 fixed).
    UffdResolve,
}

impl MmStruct {
    /// `mprotect(start, len, flags)`: new VMA flags (splitting VMAs at the
    /// range's ends), then `change_protection`. False if part of the range
    /// is not mapped.
    pub fn mprotect(&self, start: u64, len: u64, flags: u8) -> bool {
        let (start, end) = (page_align(start), page_align(start + len + PAGE_SIZE - 1));
        let w = mmap_write_lock(self);
        for v in self.vmas_in(start, end).as_slice() {
            locking::vma_start_write(self, &w, v.start, v.end);
        }
        let prot = flags & (VM_READ | VM_WRITE);
        if !self.for_vmas_split(start, end, |v| v.flags = (v.flags & (VM_SHARED | VM_UFFD_WP)) | prot) {
            return false;
        }
        self.change_protection(start, end, Change::Prot);
        true
    }

    /// `uffd_wp L on|off`: `UFFDIO_WRITEPROTECT` → `mwriteprotect_range`
    /// under mmap_read_lock. The VMA is registered for write-protect
    /// (`UFFDIO_REGISTER`, mmap_lock for write) the first time. False
    /// before v5.7 (no userfaultfd write-protect, 292924b26024).
    pub fn uffd_wp(&self, va: u64, on: bool) -> bool {
        let va = page_align(va);
        if policy::get::<abi::policy::Profile>().release() < abi::policy::r(5, 7) {
            return false;
        }
        let Some(vma) = self.find_vma(va) else { return false };
        if vma.flags & VM_UFFD_WP == 0 {
            let w = mmap_write_lock(self);
            locking::vma_start_write(self, &w, vma.start, vma.end);
            self.for_vmas_split(vma.start, vma.end, |v| v.flags |= VM_UFFD_WP);
        }
        let _r = mmap_read_lock(self);
        if self.find_vma(va).is_none_or(|v| v.flags & VM_UFFD_WP == 0 || !v.is_anon()) {
            return false;
        }
        self.change_protection(va, va + PAGE_SIZE, if on { Change::UffdWp } else { Change::UffdResolve });
        true
    }

    fn change_protection(&self, start: u64, end: u64, change: Change) {
        let mut tlb = MmuGather::new_protection(self, start, end);
        let mut range = MmuNotifierRange::start(self, start, end);
        let vmas = self.vmas_in(start, end);
        for v in vmas.as_slice() {
            self.for_each_pte_table(start.max(v.start), end.min(v.end), |pt, s, e| {
                self.change_pte_range(&mut tlb, &mut range, v, pt, s, e, change)
            });
        }
        range.end();
        tlb.finish();
    }

    /// `change_pte_range`: rewrite each PTE under the PTL
    /// (`ptep_modify_prot_start/commit`: get-and-clear, so the walkers' A/D
    /// updates are not lost), after flushing what reclaim batched
    /// (3ea277194daa) and noticing other deferrals (per-table schemes).
    #[allow(clippy::too_many_arguments)]
    fn change_pte_range(
        &self,
        tlb: &mut MmuGather,
        range: &mut MmuNotifierRange,
        vma: &Vma,
        mut pt: PteTable,
        start: u64,
        end: u64,
        change: Change,
    ) {
        rmap::flush_tlb_batched_pending(self);
        tlb.check_nested(&pt);
        let skip_upgrades = policy::get::<UpgradeFlush>() == UpgradeFlush::Skip;
        // 64fe24a3e05e (v6.0, with the mmu_gather conversion): mprotect
        // makes exclusive anonymous PTEs writable at once; before, a write
        // faults first (do_wp_page reuses the page).
        let try_writable = policy::get::<MprotectGather>() == MprotectGather::On;
        let mut va = start;
        while va < end {
            let old = pt.get(va);
            if pte_maps_page(old) {
                let new = match change {
                    Change::Prot => self.prot_entry(vma, old, try_writable),
                    Change::UffdWp if old & pte::P != 0 => (old & !pte::RW) | pte::UFFD_WP,
                    Change::UffdWp => old,
                    Change::UffdResolve => self.prot_entry(vma, old, false) & !pte::UFFD_WP,
                };
                if new != old {
                    let gains_write = pte_write(new) && !pte_write(old);
                    if gains_write
                        && page(pte_page(old)).test(PG_MIGRC)
                        && policy::get::<MigrcUpgrade>() == MigrcUpgrade::All
                    {
                        // The stricter migrc fix: every permission upgrade
                        // of a page whose migration flush is deferred does
                        // that flush first.
                        migrate::migrc_flush(self);
                    }
                    let cur = pt.get_and_clear(va);
                    pt.set(va, new | (cur & (pte::A | pte::D)));
                    let bits = pte::P | pte::RW | pte::US | pte::PROTNONE;
                    let demotes = (pte_write(old) && !pte_write(new)) || (old & pte::P != 0 && new & pte::P == 0);
                    if (old & bits) != (new & bits) && (demotes || !skip_upgrades) {
                        tlb.remove_tlb_entry(&pt, va);
                    }
                    range.ptl_changed(va, Site::Range);
                }
            }
            va += PAGE_SIZE;
        }
        if tlb.scheme() == FlushScheme::Ptl {
            tlb.flush_tlbonly();
        }
    }

    /// The PTE for an existing page under the VMA's protection. With
    /// `upgrade` (mprotect's `MM_CP_TRY_CHANGE_WRITABLE`), write is granted
    /// where no fault is needed first: an exclusive anonymous page
    /// (`can_change_pte_writable`), or a shared file page that is already
    /// dirty (write-notify). PROT_NONE keeps the page mapped.
    fn prot_entry(&self, vma: &Vma, old: u64, upgrade: bool) -> u64 {
        let base = old & !(pte::RW | pte::P | pte::PROTNONE);
        if vma.flags & VM_READ == 0 {
            return base | pte::PROTNONE;
        }
        let mut e = base | pte::P | pte::US;
        if upgrade && vma.flags & VM_WRITE != 0 {
            let p = page(pte_page(old));
            let may_write = if vma.is_anon() { p.count() == 1 && !p.test(PG_KSM) } else { pte_dirty(old) };
            if may_write {
                e |= pte::RW;
            }
        }
        e
    }
}
