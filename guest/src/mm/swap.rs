//! A swap device for reclaim (`mm/swapfile.c`, `mm/swap_state.c`): slots
//! in a reserved area at the top of guest RAM, `swap_map` reference counts
//! (one per swap PTE, one for the swap cache), and the swap cache.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use abi::layout::PAGE_SIZE;

use super::page::{self, get_page, page, put_page, PG_DIRTY, PG_SWAPCACHE};
use super::page_alloc::SWAP_SLOTS;
use crate::guest_assert;
use crate::sync::SpinLock;

/// `swap_cache` lock: lookups take their reference and removals check the
/// count under it, so a page is never handed out while it leaves the cache.
static CACHE_LOCK: SpinLock<()> = SpinLock::new(());

const N: usize = SWAP_SLOTS as usize;
static BASE: AtomicU64 = AtomicU64::new(0);
/// `swap_map`: references to each slot.
static SWAP_MAP: [AtomicU32; N] = [const { AtomicU32::new(0) }; N];
/// Slots with a non-zero `swap_map` count.
static IN_USE: AtomicU64 = AtomicU64::new(0);
/// The swap cache: the page holding each slot's data, if any.
static SWAP_CACHE: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];

pub fn init(base: u64) {
    BASE.store(base, Ordering::Release);
}

fn slot_addr(slot: usize) -> u64 {
    guest_assert!(slot < N, "swap slot {} out of range", slot);
    BASE.load(Ordering::Relaxed) + slot as u64 * PAGE_SIZE
}

/// `add_to_swap`: a free slot for `p`, which enters the swap cache (with a
/// reference of the cache's own). `None` if swap is full.
pub fn add_to_swap(p: u64) -> Option<usize> {
    let _g = CACHE_LOCK.lock();
    let slot = SWAP_MAP.iter().position(|m| {
        m.load(Ordering::Relaxed) == 0 && m.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    })?;
    IN_USE.fetch_add(1, Ordering::AcqRel);
    get_page(p);
    page(p).private.store(slot as u32, Ordering::Relaxed);
    // The slot has no copy yet: the page must be written out.
    page(p).set(PG_SWAPCACHE | PG_DIRTY);
    SWAP_CACHE[slot].store(p, Ordering::Release);
    Some(slot)
}

/// `swap_duplicate`: a swap PTE now refers to `slot`.
pub fn swap_duplicate(slot: usize) {
    SWAP_MAP[slot].fetch_add(1, Ordering::AcqRel);
}

/// `free_swap_and_cache`: a swap PTE for `slot` went away. When only the
/// swap cache is left and its page is not mapped, the cache lets go too.
pub fn swap_free(slot: usize) {
    if slot_put(slot) == 1 {
        let p = SWAP_CACHE[slot].load(Ordering::Acquire);
        if p != 0 {
            remove_if_unused(p, 1);
        }
    }
}

/// `free_swap_cache`: before dropping a reference to `p` (`expected` = the
/// cache's and the caller's), let the swap cache go if nothing else uses
/// the page or its slot (`free_pages_and_swap_cache` does this for pages
/// an mmu_gather frees).
pub fn free_swap_cache(p: u64) {
    if page(p).test(PG_SWAPCACHE) {
        remove_if_unused(p, 2);
    }
}

/// Deletes `p` from the swap cache if it holds exactly `refs` references,
/// is not mapped, not locked, and only the cache still refers to its slot.
fn remove_if_unused(p: u64, refs: i32) {
    let _g = CACHE_LOCK.lock();
    let pg = page(p);
    let slot = pg.private.load(Ordering::Acquire) as usize;
    if pg.test(PG_SWAPCACHE)
        && !pg.mapped()
        && !pg.test(super::page::PG_LOCKED)
        && pg.count() == refs
        && SWAP_MAP[slot].load(Ordering::Acquire) == 1
    {
        delete_locked(p);
    }
}

/// `lookup_swap_cache`: the cached page of `slot`, with a reference.
pub fn lookup_swap_cache(slot: usize) -> Option<u64> {
    let _g = CACHE_LOCK.lock();
    let p = SWAP_CACHE[slot].load(Ordering::Acquire);
    (p != 0).then(|| {
        get_page(p);
        p
    })
}

/// `__remove_mapping` for the swap cache: if `p` has exactly the cache's
/// and the caller's references (`folio_ref_freeze(2)`), the cache drops it
/// and its slot reference; false if someone else took it meanwhile.
pub fn remove_mapping(p: u64) -> bool {
    let _g = CACHE_LOCK.lock();
    if page(p).count() != 2 {
        return false;
    }
    delete_locked(p);
    true
}

/// The cache drops `p` and its slot reference (`CACHE_LOCK` held).
fn delete_locked(p: u64) {
    let slot = page(p).private.load(Ordering::Relaxed) as usize;
    if SWAP_CACHE[slot].compare_exchange(p, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
        page(p).clear(PG_SWAPCACHE);
        slot_put(slot);
        put_page(p);
    }
}

/// `swap_writepage`: the page's contents go to its slot.
pub fn swap_writepage(p: u64, slot: usize) {
    page::copy_page(slot_addr(slot), p);
}

/// `swap_read_folio`.
pub fn swap_readpage(slot: usize, p: u64) {
    page::copy_page(p, slot_addr(slot));
}

/// The first word of a slot's data (the swap cache's page if it has one).
pub fn first_word(slot: usize) -> u64 {
    match SWAP_CACHE[slot].load(Ordering::Acquire) {
        0 => page::first_word(slot_addr(slot)),
        p => page::first_word(p),
    }
}

/// Drops one reference to `slot`; returns how many are left.
fn slot_put(slot: usize) -> u32 {
    let left = SWAP_MAP[slot].fetch_sub(1, Ordering::AcqRel) - 1;
    if left == 0 {
        IN_USE.fetch_sub(1, Ordering::AcqRel);
    }
    left
}

/// Teardown backstop: pages left in the swap cache by a test that ended
/// mid-flight (the mm is gone, nothing maps them any more).
pub fn drop_unused_cache() {
    if slots_in_use() == 0 {
        return;
    }
    for cached in &SWAP_CACHE {
        let p = cached.load(Ordering::Acquire);
        if p != 0 {
            remove_if_unused(p, 1);
        }
    }
}

/// Slots in use (a leak check).
pub fn slots_in_use() -> u64 {
    IN_USE.load(Ordering::Acquire)
}
