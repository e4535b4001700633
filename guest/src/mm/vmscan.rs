//! `mm/vmscan.c`: reclaim of one page (`reclaim L`), as `shrink_folio_list`
//! does it for a batch of one: isolate (a reference) and `trylock_page`
//! the page (a locked page is kept), `add_to_swap` for anonymous memory,
//! `try_to_unmap` with `TTU_BATCH_FLUSH`, flush the batch before writing a
//! dirty page back (`try_to_unmap_flush_dirty`), `pageout`, remove it from
//! the swap/page cache, `try_to_unmap_flush`, free it. No mmap_lock: the
//! page lock and the PTLs. A later access faults it back in
//! (`do_swap_page`, or the page cache for a shared file page).

use super::mm_types::{page_align, MmStruct};
use super::page::{page, put_page, trylock_page, unlock_page, PG_ANON, PG_DIRTY, PG_SWAPBACKED, PG_SWAPCACHE};
use super::{filemap, rmap, swap};

impl MmStruct {
    pub fn reclaim(&self, va: u64) {
        let va = page_align(va);
        let file = self.find_vma(va).and_then(|v| v.file_id());
        let p = if let Some(p) = self.follow_page(va) {
            p
        } else if let Some(p) = file.and_then(filemap::find_get_page) {
            p
        } else {
            return;
        };
        if trylock_page(p) {
            self.shrink_page(p, file);
            unlock_page(p);
        }
        rmap::try_to_unmap_flush(self);
        put_page(p);
    }

    /// The body of `shrink_folio_list` for one locked page we hold a
    /// reference to; returns false if the page stays (mapped again, swap
    /// full, re-dirtied lazy-free page).
    fn shrink_page(&self, p: u64, file: Option<usize>) -> bool {
        let pg = page(p);
        let anon = pg.test(PG_ANON);
        let lazyfree = anon && !pg.test(PG_SWAPBACKED);
        let slot = if anon && !lazyfree {
            if pg.test(PG_SWAPCACHE) {
                Some(pg.private.load(core::sync::atomic::Ordering::Acquire) as usize)
            } else {
                match swap::add_to_swap(p) {
                    Some(s) => Some(s),
                    None => return false,
                }
            }
        } else {
            None
        };
        if !rmap::try_to_unmap(self, p, true) {
            return false;
        }
        if pg.test(PG_DIRTY) {
            rmap::try_to_unmap_flush_dirty(self);
            if pg.test_and_clear(PG_DIRTY) {
                match (slot, file) {
                    (Some(s), _) => swap::swap_writepage(p, s),
                    (None, Some(f)) => filemap::writepage(f, p),
                    (None, None) => {}
                }
            }
        }
        // `__remove_mapping`: only if nobody but the cache and us holds it.
        match (slot, file) {
            (Some(_), _) => swap::remove_mapping(p),
            (None, Some(f)) => filemap::remove_mapping(f, p),
            (None, None) => pg.count() == 1,
        }
    }
}
