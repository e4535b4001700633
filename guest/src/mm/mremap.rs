//! `mm/mremap.c`: `mremap L -> L2` moves the page's VMA and its PTE
//! (`move_page_tables` → `move_ptes`, both PTLs held). The old address's
//! TLB entries must be flushed before the PTLs are dropped
//! (eb66ae030829); `mremap-flush=after-unlock` is the kernel before it
//! (CVE-2018-18281): between the unlock and the flush another thread can
//! unmap the new address and free the page while a CPU still reaches it
//! through the old one.

use abi::layout::PAGE_SIZE;
use abi::litmus::MremapFlush;

use super::mm_types::{page_align, MmStruct, Segv, Vma};
use super::mmu_notifier::{MmuNotifierRange, PteChange};
use super::page::{page, put_page};
use super::pgtable::{pte_maps_page, pte_none, pte_page, swp};
use super::ptdesc::PteTable;
use super::{flush, policy, rmap, swap};

impl MmStruct {
    /// `mremap(old, PAGE_SIZE, PAGE_SIZE, MREMAP_FIXED, new)`.
    pub fn mremap(&self, old: u64, new: u64) -> Result<(), Segv> {
        let (old, new) = (page_align(old), page_align(new));
        let vma = self.find_vma(old).ok_or(Segv)?;
        if self.find_vma(new).is_some() || old == new {
            return Err(Segv);
        }
        let moved = Vma { start: new, end: new + PAGE_SIZE, ..vma };
        if !self.insert_vma(moved) {
            return Err(Segv);
        }
        self.move_ptes(old, new);
        // `move_vma` → `do_vmi_munmap` of the old range: whatever was
        // faulted in there meanwhile is zapped, empty tables freed.
        self.munmap(old, PAGE_SIZE);
        Ok(())
    }

    fn move_ptes(&self, old: u64, new: u64) {
        let mut range = MmuNotifierRange::start(self, old, old + PAGE_SIZE);
        let mut displaced = None;
        loop {
            let new_table = self.pte_table_alloc(new);
            let Some(old_table) = self.pte_table(old) else { break };
            // Both PTLs, in address order (no mmap_lock orders them here),
            // then the `pmd_same` recheck of both.
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
            // MREMAP_FIXED unmaps the destination first: a page a fault put
            // there since the new VMA appeared goes now.
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
                range.ptl_changed(old, PteChange::Replace);
                if pte_maps_page(cur) {
                    let p = page(pte_page(cur));
                    p.remove_rmap(old);
                    p.add_rmap(new);
                    force_flush = true;
                }
                match new_pt.as_mut() {
                    Some(pt) => pt.set(new, cur),
                    None => old_pt.set(new, cur),
                };
            }
            let before = policy::mremap_flush() == MremapFlush::BeforeUnlock;
            if force_flush && before {
                flush::flush_tlb_mm_range(self, old, old + PAGE_SIZE, false);
            }
            drop(new_pt);
            drop(old_pt);
            if force_flush && !before {
                flush::flush_tlb_mm_range(self, old, old + PAGE_SIZE, false);
            }
            break;
        }
        range.end();
        if let Some(p) = displaced {
            put_page(p);
        }
    }
}
