//! `mm/mremap.c`: `mremap L -> L2` moves the page's VMA and its PTE
//! (`move_vma` → `move_page_tables` → `move_ptes`, both PTLs held), with
//! mmap_lock held for write throughout — faults on the mm wait, and a
//! concurrent `munmap` cannot run (CVE-2018-18281 needed `ftruncate`,
//! which takes no mmap_lock: `truncate L`). When the old address is
//! flushed (`mremap-flush=`):
//!
//! * `after-unlock` (before 5d1904204c99, v4.9): `move_page_tables`
//!   flushes after every PTL was dropped;
//! * `dirty-under-ptl` (v4.9-v4.18): a dirty PTE forces the flush under
//!   the PTL, a clean one is flushed after the release — the CVE window;
//! * `before-unlock` (eb66ae030829, v4.19): every present PTE is flushed
//!   before the PTLs are released.

use abi::layout::PAGE_SIZE;
use abi::policy::MremapFlush;

use super::locking::{self, mmap_write_lock};
use super::mm_types::{page_align, MmStruct, Segv, Vma};
use super::mmu_notifier::{MmuNotifierRange, Site};
use super::page::{page, put_page};
use super::pgtable::{pte_dirty, pte_maps_page, pte_none, pte_page, swp};
use super::ptdesc::PteTable;
use super::{flush, policy, rmap, swap};

impl MmStruct {
    /// `mremap(old, PAGE_SIZE, PAGE_SIZE, MREMAP_FIXED, new)`.
    pub fn mremap(&self, old: u64, new: u64) -> Result<(), Segv> {
        let (old, new) = (page_align(old), page_align(new));
        let w = mmap_write_lock(self);
        let vma = self.find_vma(old).ok_or(Segv)?;
        if self.find_vma(new).is_some() || old == new {
            return Err(Segv);
        }
        locking::vma_start_write(self, &w, vma.start, vma.end);
        let moved = Vma { start: new, end: new + PAGE_SIZE, ..vma };
        if !self.insert_vma(moved) {
            return Err(Segv);
        }
        self.move_ptes(old, new);
        // `move_vma` → `do_vmi_munmap` of the old range (mmap_lock kept):
        // its VMA goes, an empty table is freed.
        self.do_munmap(&w, old, PAGE_SIZE);
        drop(w);
        Ok(())
    }

    fn move_ptes(&self, old: u64, new: u64) {
        let mut range = MmuNotifierRange::start(self, old, old + PAGE_SIZE);
        let mode = policy::get::<MremapFlush>();
        let mut displaced = None;
        let mut flush_after = false;
        loop {
            let new_table = self.pte_table_alloc(new);
            let Some(old_table) = self.pte_table(old) else { break };
            // Both PTLs, in address order, then the `pmd_same` recheck of both.
            let (mut old_pt, mut new_pt) = if old_table == new_table {
                (PteTable::lock(old_table, old), None)
            } else if old_table < new_table {
                let a = PteTable::lock(old_table, old);
                (a, Some(PteTable::lock(new_table, new)))
            } else {
                let b = PteTable::lock(new_table, new);
                (PteTable::lock(old_table, old), Some(b))
            };
            if self.pte_table(old) != Some(old_table) || self.pte_table(new) != Some(new_table) {
                continue;
            }
            let e = old_pt.get(old);
            if swp::is_migration_entry(e) {
                // Moving it would hide it from `remove_migration_ptes`:
                // wait for the migration to finish, as the rmap locks make
                // Linux's mremap do.
                drop(new_pt);
                drop(old_pt);
                self.migration_entry_wait(old, e);
                continue;
            }
            rmap::flush_tlb_batched_pending(self);
            // Nothing can map the destination (a fresh VMA; faults wait for
            // mmap_lock), but a swap entry or page left there by an earlier
            // mapping is dropped as MREMAP_FIXED's unmap would.
            {
                let dst = match new_pt.as_mut() {
                    Some(pt) => pt,
                    None => &mut old_pt,
                };
                let d = dst.get(new);
                if pte_maps_page(d) {
                    dst.get_and_clear(new);
                    page(pte_page(d)).remove_rmap(new);
                    flush::flush_tlb_page(self, new);
                    displaced = Some(pte_page(d));
                } else if swp::is_swap_pte(d) {
                    dst.get_and_clear(new);
                    swap::swap_free(swp::offset(d) as usize);
                }
            }
            let mut force_flush = false;
            if !pte_none(e) {
                let cur = old_pt.get_and_clear(old);
                range.ptl_changed(old, Site::Range);
                if pte_maps_page(cur) {
                    let p = page(pte_page(cur));
                    p.remove_rmap(old);
                    p.add_rmap(new);
                    match mode {
                        MremapFlush::BeforeUnlock => force_flush = true,
                        MremapFlush::DirtyUnderPtl if pte_dirty(cur) => force_flush = true,
                        _ => flush_after = true,
                    }
                }
                match new_pt.as_mut() {
                    Some(pt) => pt.set(new, cur),
                    None => old_pt.set(new, cur),
                };
            }
            if force_flush {
                flush::flush_tlb_range(self, old, old + PAGE_SIZE);
            }
            drop(new_pt);
            drop(old_pt);
            break;
        }
        if flush_after {
            // `move_page_tables`' `flush_tlb_range` after every lock was dropped.
            flush::flush_tlb_range(self, old, old + PAGE_SIZE);
        }
        range.end();
        if let Some(p) = displaced {
            put_page(p);
        }
    }
}
