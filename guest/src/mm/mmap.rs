//! `mm/mmap.c` / `mm/vma.c` for the test mm: `mmap` of anonymous and
//! shared-file ranges, `munmap` (`do_vmi_munmap` → `unmap_region`: zap,
//! `free_pgtables`, `tlb_finish_mmu`), and `exit_mmap` at teardown, under
//! the mmap_lock modes Linux uses.

use core::sync::atomic::Ordering;

use abi::layout::PAGE_SIZE;
use abi::litmus::Hook;
use abi::policy::MunmapLock;

use super::hooks::hook;
use super::locking::{self, mmap_write_lock, MmapWriteGuard};
use super::mm_types::{MmStruct, Vma, VM_SHARED};
use super::mmu_gather::MmuGather;
use super::mmu_notifier::MmuNotifierRange;
use super::ptdesc::PMD_SIZE;
use super::{filemap, migrate, policy};
use crate::iommu;
use crate::trace::{self, Kind};

impl MmStruct {
    /// `mmap` of an anonymous range with `flags` (`VM_READ`/`VM_WRITE`);
    /// pages are populated on fault. False if the range overlaps a VMA.
    /// The caller holds mmap_lock for write (`vm_mmap_pgoff`).
    pub fn mmap(&self, start: u64, len: u64, flags: u8) -> bool {
        self.insert_vma(Vma { start, end: start + len, flags: flags & !VM_SHARED, file: 0 })
    }

    /// `mmap(MAP_SHARED)` of one page of shared file `file` (mmap_lock
    /// held for write).
    pub fn mmap_file(&self, start: u64, flags: u8, file: usize) -> bool {
        self.insert_vma(Vma { start, end: start + PAGE_SIZE, flags: flags | VM_SHARED, file: file as u8 + 1 })
    }

    /// The `munmap` system call: mmap_lock for write while the VMAs are
    /// detached; since dd2283f2605e (v4.20, `munmap-lock=downgrade`)
    /// downgraded to read for the zap and `free_pgtables`. False if nothing
    /// was mapped.
    pub fn munmap(&self, start: u64, len: u64) -> bool {
        let w = mmap_write_lock(self);
        let Some(vmas) = self.detach_for_munmap(&w, start, start + len) else { return false };
        match policy::get::<MunmapLock>() {
            MunmapLock::Downgrade => {
                let _r = w.downgrade();
                self.unmap_region(&vmas, start, start + len);
            }
            MunmapLock::Write => self.unmap_region(&vmas, start, start + len),
        }
        true
    }

    /// `do_vmi_munmap` for a caller that holds mmap_lock for write and
    /// keeps it (mremap's `move_vma`).
    pub(super) fn do_munmap(&self, w: &MmapWriteGuard<'_>, start: u64, len: u64) -> bool {
        let Some(vmas) = self.detach_for_munmap(w, start, start + len) else { return false };
        self.unmap_region(&vmas, start, start + len);
        true
    }

    /// Write-locks (v6.4+) and detaches the VMAs of `[start, end)`.
    fn detach_for_munmap(&self, w: &MmapWriteGuard<'_>, start: u64, end: u64) -> Option<super::mm_types::VmaSet> {
        for v in self.vmas_in(start, end).as_slice() {
            locking::vma_start_write(self, w, v.start, v.end);
        }
        let vmas = self.detach_vmas(start, end);
        (!vmas.is_empty()).then_some(vmas)
    }

    /// `unmap_region`: zap inside one mmu_gather, free the page tables no
    /// VMA needs any more, finish the gather (flush, free pages and tables).
    fn unmap_region(&self, vmas: &super::mm_types::VmaSet, start: u64, end: u64) {
        let mut tlb = MmuGather::new(self, start, end);
        let mut range = MmuNotifierRange::start(self, start, end);
        for v in vmas.as_slice() {
            self.unmap_page_range(&mut tlb, &mut range, v, v.start, v.end);
        }
        range.end();
        self.free_pgtables(&mut tlb, start, end);
        tlb.finish();
    }

    /// `free_pgtables`: a PTE table whose 2 MiB no VMA intersects any more
    /// (the floor/ceiling rule of `free_pgd_range`) is unhooked from its PMD
    /// now and freed after the flush (`pte_free_tlb`). Upper-level tables
    /// stay until the mm is destroyed.
    fn free_pgtables(&self, tlb: &mut MmuGather, start: u64, end: u64) {
        let mut region = start & !(PMD_SIZE - 1);
        while region < end {
            // Decide and unhook under the table's PTL: a path that looked
            // the table up before and locks it after sees the PMD changed
            // and retries (`pte_offset_map_lock`); a fault in a VMA inserted
            // meanwhile finds the PMD empty and allocates a new table.
            if let Some(pt) = self.pte_offset_map_lock(region) {
                let table = pt.table();
                let free = !self.any_vma_in(region, region + PMD_SIZE) && self.pt().pmd_clear(region) == Some(table);
                drop(pt);
                if free {
                    self.table_removed(table);
                    trace::emit(Kind::PmdClear, region, table, 0);
                    hook(Hook::AfterPmdClear);
                    tlb.remove_table(table, region);
                }
            }
            region += PMD_SIZE;
        }
    }

    /// `exit_mmap`: unmap everything, let the fork child go, do migrc's
    /// pending flush, drop the shared files, unbind the PASID and free the
    /// page tables. The caller has switched every CPU away from the mm.
    pub fn teardown(&self) {
        let w = mmap_write_lock(self);
        while let Some(v) = self.first_vma() {
            self.do_munmap(&w, v.start, v.end - v.start);
        }
        drop(w);
        self.release_fork_refs();
        migrate::migrc_flush(self);
        super::swap::drop_unused_cache();
        for f in 0..self.nfiles.swap(0, Ordering::AcqRel) as usize {
            filemap::release(f);
        }
        let pasid = self.pasid.swap(0, Ordering::AcqRel);
        if pasid != 0 {
            iommu::unbind_mm(pasid as u32);
        }
        // `free_pgd_range` for what is left, PGD included.
        self.pgd.store(0, Ordering::Release);
        let mut tables = self.tables.lock();
        let n = tables.1;
        for &t in &tables.0[..n] {
            trace::emit(Kind::TableFree, 0, t, 0);
            super::pgtable::free_table(t);
        }
        tables.1 = 0;
    }

    /// Binds the mm to `pasid` on the SVA driver (`iommu_sva_bind_device`):
    /// from now on the secondary MMU walks its page tables and hears its
    /// invalidations. `teardown` unbinds.
    pub fn bind_pasid(&self, pasid: u32) {
        iommu::bind_mm(pasid, self.pgd.load(Ordering::Acquire));
        self.pasid.store(pasid as u64, Ordering::Release);
    }
}
