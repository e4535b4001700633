//! `mm/ksm.c`: merging a page into a KSM page (`ksm L L2`). L2's page
//! becomes the KSM page (`try_to_merge_with_ksm_page` write-protects it);
//! then `try_to_merge_one_page` for L: lock the page, `write_protect_page`
//! (clear-and-flush the PTE, write-protected and clean), `pages_identical`,
//! and if equal `replace_page` (L now maps the KSM page, read-only; L's
//! old page is freed). Each PTE change is bracketed by its own
//! mmu_notifier range, so where the device hears of it at range_end it
//! does so before the compare (Andrea's claim in seed 004). ksmd holds the
//! mm's mmap_lock for read during the merge.

use abi::layout::PAGE_SIZE;
use abi::litmus::Hook;
use abi::policy::KsmPendingCheck;

use super::hooks::hook;
use super::locking::mmap_read_lock;
use super::mm_types::{page_align, MmStruct};
use super::mmu_notifier::{MmuNotifierRange, Site};
use super::page::{self, get_page, lock_page, page, put_page, unlock_page, PG_ANON, PG_DIRTY, PG_KSM};
use super::pgtable::{pte, pte_dirty, pte_page, pte_write};
use super::policy;

impl MmStruct {
    /// `ksm x y`: merge x into y's page; true if merged.
    pub fn ksm(&self, x: u64, y: u64) -> bool {
        let _l = mmap_read_lock(self);
        let (x, y) = (page_align(x), page_align(y));
        // References taken under the PTL (`follow_page`), as KSM's scan does.
        let Some(kpage) = self.follow_page(y) else { return false };
        let Some(px) = self.follow_page(x) else {
            put_page(kpage);
            return false;
        };
        if px == kpage || !page(px).test(PG_ANON) || !page(kpage).test(PG_ANON) {
            put_page(px);
            put_page(kpage);
            return false;
        }
        if !page(kpage).test(PG_KSM) {
            lock_page(kpage);
            let ok = self.write_protect_page(y, kpage).is_some();
            if ok {
                page(kpage).set(PG_KSM);
            }
            unlock_page(kpage);
            if !ok {
                put_page(px);
                put_page(kpage);
                return false;
            }
        }
        let merged = self.try_to_merge_one_page(x, px, kpage);
        put_page(px);
        put_page(kpage);
        merged
    }

    fn try_to_merge_one_page(&self, va: u64, p: u64, kpage: u64) -> bool {
        lock_page(p);
        let merged = match self.write_protect_page(va, p) {
            Some(orig) => {
                let same = page::pages_identical(p, kpage);
                hook(Hook::AfterCompare);
                same && self.replace_page(va, p, kpage, orig)
            }
            None => {
                hook(Hook::AfterCompare);
                false
            }
        };
        unlock_page(p);
        merged
    }

    /// `write_protect_page`: returns the write-protected PTE (`orig_pte`),
    /// or `None` if `va` no longer maps `p`.
    fn write_protect_page(&self, va: u64, p: u64) -> Option<u64> {
        let mut range = MmuNotifierRange::start(self, va, va + PAGE_SIZE);
        let Some(mut pt) = self.pte_offset_map_lock(va) else {
            range.end();
            return None;
        };
        let e = pt.get(va);
        let r = if e & pte::P == 0 || pte_page(e) != p {
            None
        } else if pte_write(e)
            || pte_dirty(e)
            || (policy::get::<KsmPendingCheck>() == KsmPendingCheck::On && self.deferred_flush_pending(&pt))
        {
            // A deferred flush elsewhere may leave a writable TLB entry
            // even for a clean read-only PTE (the `mm_tlb_flush_pending`
            // check of "mm: fix KSM data corruption", v4.13).
            let old = self.ptep_clear_flush(&mut pt, va);
            range.ptl_changed(va, Site::Ksm);
            if pte_dirty(old) {
                page(p).set(PG_DIRTY);
            }
            let wp = old & !(pte::RW | pte::D);
            pt.set(va, wp);
            Some(wp)
        } else {
            Some(e)
        };
        drop(pt);
        range.end();
        r
    }

    /// `replace_page`: if the PTE is still `orig`, map `kpage` read-only at
    /// `va` instead of `p` (`ptep_clear_flush` + `set_pte_at`).
    fn replace_page(&self, va: u64, p: u64, kpage: u64, orig: u64) -> bool {
        let mut range = MmuNotifierRange::start(self, va, va + PAGE_SIZE);
        let Some(mut pt) = self.pte_offset_map_lock(va) else {
            range.end();
            return false;
        };
        let ok = pt.get(va) == orig;
        if ok {
            get_page(kpage);
            page(kpage).add_rmap(va);
            self.ptep_clear_flush(&mut pt, va);
            // Same content, write-protected: mmu_notifier.rst lets `only-end`
            // delay this invalidation to range_end.
            range.ptl_changed(va, Site::Ksm);
            pt.set(va, kpage | pte::P | pte::US);
            page(p).remove_rmap(va);
        }
        drop(pt);
        range.end();
        if ok {
            put_page(p);
        }
        ok
    }
}
