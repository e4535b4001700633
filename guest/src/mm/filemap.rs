//! Shared file pages (`mm/filemap.c`, `mm/page-writeback.c`): a litmus
//! location with `shared = true` is a one-page file with a backing copy
//! ("the disk"), a page-cache page, and writeback (`mkclean`).

use core::sync::atomic::{AtomicU64, Ordering};

use abi::litmus::VALUE_FAULT;

use super::mm_types::{page_align, MmStruct};
use super::page::{self, get_page, lock_page, page, put_page, unlock_page, PG_DIRTY, PG_FILE};
use super::{page_alloc, rmap};
use crate::guest_assert;
use abi::litmus::Hook;

use super::hooks::hook;

pub const MAX_FILES: usize = 16;

/// `struct address_space` of one one-page file.
struct AddressSpace {
    /// The page-cache page (0 = not cached); the cache holds a reference.
    page: AtomicU64,
    /// The backing copy.
    backing: AtomicU64,
}

static FILES: [AddressSpace; MAX_FILES] =
    [const { AddressSpace { page: AtomicU64::new(0), backing: AtomicU64::new(0) } }; MAX_FILES];

/// A new file of `mm` whose content's first word is `init`.
pub fn create_file(mm: &MmStruct, init: u64) -> Option<usize> {
    let id = mm.nfiles.load(Ordering::Acquire) as usize;
    guest_assert!(id < MAX_FILES, "more than {} shared files", MAX_FILES);
    let backing = page_alloc::alloc_page()?;
    page::set_first_word(backing, init);
    FILES[id].backing.store(backing, Ordering::Release);
    FILES[id].page.store(0, Ordering::Release);
    mm.nfiles.store(id as u64 + 1, Ordering::Release);
    Some(id)
}

/// `filemap_fault`: the page-cache page of `file` (read in from the
/// backing copy if not cached), with a reference for the caller.
pub fn filemap_fault(file: usize) -> Option<u64> {
    let f = &FILES[file];
    loop {
        let p = f.page.load(Ordering::Acquire);
        if p != 0 {
            get_page(p);
            return Some(p);
        }
        let new = page_alloc::alloc_page()?;
        page::copy_page(new, f.backing.load(Ordering::Acquire));
        page(new).set(PG_FILE);
        page(new).index.store(file as u64, Ordering::Relaxed);
        if f.page.compare_exchange(0, new, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // The allocation's reference is the cache's; one more for the caller.
            get_page(new);
            return Some(new);
        }
        put_page(new);
    }
}

/// The cached page of `file` with a reference, if it is cached.
pub fn find_get_page(file: usize) -> Option<u64> {
    let p = FILES[file].page.load(Ordering::Acquire);
    (p != 0).then(|| {
        get_page(p);
        p
    })
}

/// Writeback of `p` to `file`'s backing copy.
pub fn writepage(file: usize, p: u64) {
    page::copy_page(FILES[file].backing.load(Ordering::Acquire), p);
}

/// Removes `p` from `file`'s page cache (reclaim's `__remove_mapping`,
/// truncation); drops the cache's reference.
pub fn remove_from_page_cache(file: usize, p: u64) {
    if FILES[file].page.compare_exchange(p, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
        put_page(p);
    }
}

/// Replaces the cached page (migration of a file page).
pub fn replace_page_cache(file: usize, old: u64, new: u64) -> bool {
    FILES[file].page.compare_exchange(old, new, Ordering::AcqRel, Ordering::Relaxed).is_ok()
}

/// The first word of the file as the kernel sees it: the cached page if
/// any, else the backing copy.
pub fn current_value(file: usize) -> u64 {
    match FILES[file].page.load(Ordering::Acquire) {
        0 => backing_value(file),
        p => page::first_word(p),
    }
}

pub fn backing_value(file: usize) -> u64 {
    page::first_word(FILES[file].backing.load(Ordering::Acquire))
}

/// Truncates the file at teardown: the cached page (no longer mapped) and
/// the backing copy go.
pub fn truncate(file: usize) {
    let p = FILES[file].page.swap(0, Ordering::AcqRel);
    if p != 0 {
        put_page(p);
    }
    let b = FILES[file].backing.swap(0, Ordering::AcqRel);
    if b != 0 {
        page_alloc::free_page(b);
    }
}

impl MmStruct {
    /// `mkclean L -> r`: `folio_clear_dirty_for_io` + writeback of the
    /// shared file page at `va` — `page_mkclean` write-protects and cleans
    /// every PTE mapping it (moving their dirty bits to the page), then a
    /// dirty page is written back. Returns the backing copy's first word
    /// afterwards (a clean page writes nothing). `fault` for memory that is
    /// not a shared file page: anonymous pages have no writeback.
    pub fn mkclean(&self, va: u64) -> u64 {
        let Some(file) = self.find_vma(page_align(va)).and_then(|v| v.file_id()) else { return VALUE_FAULT };
        if let Some(p) = find_get_page(file) {
            lock_page(p);
            if rmap::page_mkclean(self, p) {
                page(p).set(PG_DIRTY);
            }
            hook(Hook::AfterMkclean);
            if page(p).test_and_clear(PG_DIRTY) {
                writepage(file, p);
            }
            unlock_page(p);
            put_page(p);
        }
        backing_value(file)
    }
}
