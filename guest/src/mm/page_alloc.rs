//! Physical pages for test data (from `FREE_START` up) and for page tables
//! (from the page-table region). Both hand out the most recently freed page
//! first, as Linux's per-CPU free lists tend to — that is how a stale
//! translation meets the page's next owner. The free list is threaded
//! through the pages' `struct page` (as Linux's `page->lru`), never through
//! their contents: a stale TLB entry may still write to a freed page.

use abi::layout::{self, PAGE_SIZE};

use super::page;
use crate::sync::SpinLock;
use core::sync::atomic::Ordering;

struct DataPages {
    /// Head of the free list, threaded through the free pages' `struct page`.
    free_head: u64,
    next_fresh: u64,
    end: u64,
    in_use: u64,
}

impl DataPages {
    /// The most recently freed page, else a fresh one.
    fn pop(&mut self) -> Option<u64> {
        if self.free_head != 0 {
            let p = self.free_head;
            self.free_head = page::page(p).index.load(Ordering::Relaxed);
            Some(p)
        } else if self.next_fresh + PAGE_SIZE <= self.end {
            self.next_fresh += PAGE_SIZE;
            Some(self.next_fresh - PAGE_SIZE)
        } else {
            None
        }
    }

    fn push(&mut self, p: u64) {
        page::page(p).index.store(self.free_head, Ordering::Relaxed);
        self.free_head = p;
    }
}

static DATA: SpinLock<DataPages> =
    SpinLock::new(DataPages { free_head: 0, next_fresh: layout::FREE_START, end: layout::FREE_START, in_use: 0 });

/// Swap slots the swap area at the top of RAM holds (`mm::swap`).
pub const SWAP_SLOTS: u64 = 64;

/// Called once at boot with the size of guest RAM: the top of RAM holds
/// `mem_map` (one `struct page` per data page) and the swap area; the rest
/// from `FREE_START` up is for data pages.
pub fn init(mem_size: u64) {
    let swap = SWAP_SLOTS * PAGE_SIZE;
    let npages = (mem_size - layout::FREE_START - swap) / (PAGE_SIZE + page::PAGE_META_SIZE);
    let map_bytes = (npages * page::PAGE_META_SIZE).next_multiple_of(PAGE_SIZE);
    let swap_base = mem_size - swap;
    let map_base = swap_base - map_bytes;
    page::init(map_base, npages);
    super::swap::init(swap_base);
    DATA.lock().end = layout::FREE_START + npages * PAGE_SIZE;
}

/// A zeroed data page (identity-mapped, so its GPA is also its kernel VA)
/// with one reference.
pub fn alloc_page() -> Option<u64> {
    let page = alloc_page_nozero()?;
    page::zero_page(page);
    Some(page)
}

/// A data page whose old content is left in place, for callers that
/// overwrite all of it at once (a copy; zeroing is a hypercall).
pub fn alloc_page_nozero() -> Option<u64> {
    let mut d = DATA.lock();
    let page = d.pop()?;
    d.in_use += 1;
    drop(d);
    page::page(page).reset();
    Some(page)
}

/// Returns a page to the free list. Pages with users of their own go
/// through `page::put_page`, which calls this for the last reference.
pub fn free_page(page: u64) {
    page::page(page).refcount.store(0, Ordering::Release);
    let mut d = DATA.lock();
    d.push(page);
    d.in_use -= 1;
}

/// Takes up to `out.len()` pages off the free list as they are (no
/// zeroing, no `struct page` reset, not counted in use): the litmus
/// runner's physical placement. Returns how many; give them back with
/// [`unhold_pages`].
pub fn hold_pages(out: &mut [u64]) -> usize {
    let mut d = DATA.lock();
    for (i, slot) in out.iter_mut().enumerate() {
        match d.pop() {
            Some(p) => *slot = p,
            None => return i,
        }
    }
    out.len()
}

/// Returns held pages to the free list, restoring its order.
pub fn unhold_pages(pages: &[u64]) {
    let mut d = DATA.lock();
    for &p in pages.iter().rev() {
        d.push(p);
    }
}

pub fn data_pages_in_use() -> u64 {
    DATA.lock().in_use
}

const PT_PAGES: usize = (layout::PT_SIZE / PAGE_SIZE) as usize;

/// Page-table pages: the region is read-only to the guest, so the free
/// stack lives here rather than in the pages.
struct TablePages {
    free: [u32; PT_PAGES],
    nfree: usize,
    next_fresh: usize,
}

static TABLES: SpinLock<TablePages> = SpinLock::new(TablePages { free: [0; PT_PAGES], nfree: 0, next_fresh: 0 });

/// A page of the page-table region (zeroed by the VMM when the PT_TABLE
/// hypercall announces it).
pub fn alloc_table_page() -> Option<u64> {
    let mut t = TABLES.lock();
    let idx = if t.nfree > 0 {
        t.nfree -= 1;
        t.free[t.nfree] as usize
    } else if t.next_fresh < PT_PAGES {
        t.next_fresh += 1;
        t.next_fresh - 1
    } else {
        return None;
    };
    Some(layout::PT_BASE + idx as u64 * PAGE_SIZE)
}

pub fn free_table_page(gpa: u64) {
    let mut t = TABLES.lock();
    let n = t.nfree;
    t.free[n] = ((gpa - layout::PT_BASE) / PAGE_SIZE) as u32;
    t.nfree += 1;
}

pub fn table_pages_in_use() -> u64 {
    let t = TABLES.lock();
    (t.next_fresh - t.nfree) as u64
}
