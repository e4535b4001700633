//! Shared file pages (`mm/filemap.c`, `mm/page-writeback.c`,
//! `mm/truncate.c`): a litmus location with `shared = true` is a one-page
//! file with a backing copy ("the disk"), a page-cache page, writeback
//! (`mkclean`) and truncation (`truncate`).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use abi::litmus::VALUE_FAULT;

use super::mm_types::{page_align, MmStruct};
use super::page::{self, get_page, lock_page, page, put_page, unlock_page, PG_DIRTY, PG_FILE};
use super::{page_alloc, rmap};
use crate::guest_assert;
use abi::litmus::Hook;

use super::hooks::hook;

/// One file per shared page location (`abi::limits`: the checker refuses more).
pub const MAX_FILES: usize = abi::limits::MAX_SHARED_PAGES;

/// `struct address_space` of one one-page file.
struct AddressSpace {
    /// The page-cache page (0 = not cached); the cache holds a reference.
    page: AtomicU64,
    /// The backing copy.
    backing: AtomicU64,
    /// Truncated to size 0: a fault beyond EOF is SIGBUS.
    truncated: AtomicBool,
}

/// `xa_lock` of every file's page cache: lookups take their reference and
/// removals check the count under it.
static CACHE_LOCK: crate::sync::SpinLock<()> = crate::sync::SpinLock::new(());

static FILES: [AddressSpace; MAX_FILES] =
    [const { AddressSpace { page: AtomicU64::new(0), backing: AtomicU64::new(0), truncated: AtomicBool::new(false) } };
        MAX_FILES];

/// A new file of `mm` whose content's first word is `init`.
pub fn create_file(mm: &MmStruct, init: u64) -> Option<usize> {
    let id = mm.nfiles.load(Ordering::Acquire) as usize;
    guest_assert!(id < MAX_FILES, "more than {} shared files", MAX_FILES);
    let backing = page_alloc::alloc_page_nozero()?;
    page::init_page(backing, init);
    FILES[id].backing.store(backing, Ordering::Release);
    FILES[id].page.store(0, Ordering::Release);
    FILES[id].truncated.store(false, Ordering::Release);
    mm.nfiles.store(id as u64 + 1, Ordering::Release);
    Some(id)
}

/// `filemap_fault`: the page-cache page of `file` (read in from the
/// backing copy if not cached), with a reference for the caller; `None`
/// (SIGBUS) past the end of a truncated file.
pub fn filemap_fault(file: usize) -> Option<u64> {
    if FILES[file].truncated.load(Ordering::Acquire) {
        return None;
    }
    if let Some(p) = find_get_page(file) {
        return Some(p);
    }
    let f = &FILES[file];
    let new = page_alloc::alloc_page_nozero()?;
    page::copy_page(new, f.backing.load(Ordering::Acquire));
    page(new).set(PG_FILE);
    page(new).index.store(file as u64, Ordering::Relaxed);
    let _g = CACHE_LOCK.lock();
    match f.page.load(Ordering::Acquire) {
        0 => {
            // The allocation's reference is the cache's; one more for the caller.
            f.page.store(new, Ordering::Release);
            get_page(new);
            Some(new)
        }
        p => {
            get_page(p);
            drop(_g);
            put_page(new);
            Some(p)
        }
    }
}

/// The cached page of `file` with a reference, if it is cached.
pub fn find_get_page(file: usize) -> Option<u64> {
    let _g = CACHE_LOCK.lock();
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

/// Reclaim's `__remove_mapping`: if `p` has exactly the cache's and the
/// caller's references, the cache drops it; false if someone took it.
pub fn remove_mapping(file: usize, p: u64) -> bool {
    let g = CACHE_LOCK.lock();
    if page(p).count() != 2 || FILES[file].page.load(Ordering::Acquire) != p {
        return false;
    }
    FILES[file].page.store(0, Ordering::Release);
    drop(g);
    put_page(p);
    true
}

/// Replaces the cached page (migration of a file page); the cache's
/// reference moves to `new`.
pub fn replace_page_cache(file: usize, old: u64, new: u64) -> bool {
    let _g = CACHE_LOCK.lock();
    if FILES[file].page.load(Ordering::Acquire) != old {
        return false;
    }
    get_page(new);
    FILES[file].page.store(new, Ordering::Release);
    true
}

/// The first word of the file as the kernel sees it: the cached page if
/// any, else the backing copy; `None` for a truncated (empty) file.
pub fn current_value(file: usize) -> Option<u64> {
    if FILES[file].truncated.load(Ordering::Acquire) {
        return None;
    }
    Some(match FILES[file].page.load(Ordering::Acquire) {
        0 => backing_value(file),
        p => page::first_word(p),
    })
}

pub fn backing_value(file: usize) -> u64 {
    page::first_word(FILES[file].backing.load(Ordering::Acquire))
}

/// Drops the file at teardown: the cached page (no longer mapped) and the
/// backing copy go.
pub fn release(file: usize) {
    let p = {
        let _g = CACHE_LOCK.lock();
        FILES[file].page.swap(0, Ordering::AcqRel)
    };
    if p != 0 {
        put_page(p);
    }
    let b = FILES[file].backing.swap(0, Ordering::AcqRel);
    if b != 0 {
        page_alloc::free_page(b);
    }
}

impl MmStruct {
    /// `truncate L`: `truncate_pagecache(inode, 0)` on L's file, without
    /// any mmap_lock: `unmap_mapping_range` zaps every VMA mapping the file
    /// (`zap_page_range_single`: mmu_gather and notifier range as any zap —
    /// it flushes the addresses the file is mapped at now, nothing else),
    /// then `truncate_inode_pages` locks the cached page and deletes it
    /// from the page cache; the page is freed with its last reference.
    /// Later faults on the file are SIGBUS (size 0).
    pub fn truncate_file(&self, file: usize) {
        FILES[file].truncated.store(true, Ordering::Release);
        self.unmap_mapping_range(file);
        let p = {
            let _g = CACHE_LOCK.lock();
            FILES[file].page.load(Ordering::Acquire)
        };
        if p != 0 {
            get_page(p);
            lock_page(p);
            // A fault that raced the first unmap (it saw the file before
            // `truncated` was set) is undone as truncate_inode_folio does.
            if page(p).mapped() {
                self.unmap_mapping_range(file);
            }
            let removed = {
                let _g = CACHE_LOCK.lock();
                FILES[file].page.compare_exchange(p, 0, Ordering::AcqRel, Ordering::Acquire).is_ok()
            };
            page(p).clear(PG_DIRTY);
            unlock_page(p);
            if removed {
                put_page(p); // the page cache's reference
            }
            put_page(p);
        }
    }

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
