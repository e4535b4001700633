//! `struct page` for the data pages of test address spaces (`mem_map`,
//! `include/linux/mm_types.h`, `include/linux/page-flags.h`): a reference
//! count, flags (locked, dirty, anon, swap-backed, KSM, file, migrc), and a
//! small reverse map of the virtual addresses that map the page in the test
//! mm (Linux reaches them through `anon_vma` / `address_space`; one mm at a
//! time makes a list of addresses enough).
//!
//! Reference counting follows Linux: every PTE that maps a page holds one
//! reference, so do the page cache, the swap cache, the migrc list and the
//! phantom child of `cow` (fork); an operation that works on a page takes a
//! reference of its own first (`folio_get`, as isolation does). The page
//! goes back to the allocator when the last reference is dropped.

use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

use abi::layout::{self, PAGE_SIZE};
use abi::litmus::Hook;

use super::hooks::hook;
use super::page_alloc;
use crate::trace::{self, Kind};
use crate::{arch, guest_assert};

pub const PG_LOCKED: u32 = 1 << 0;
pub const PG_DIRTY: u32 = 1 << 1;
pub const PG_ANON: u32 = 1 << 2;
/// Anonymous and backed by swap; cleared by MADV_FREE (lazy-free).
pub const PG_SWAPBACKED: u32 = 1 << 3;
pub const PG_KSM: u32 = 1 << 4;
/// A page-cache page of a shared file (`Page::index` = file id).
pub const PG_FILE: u32 = 1 << 5;
/// Mapped by a migration whose TLB flush migrc deferred: a write-enable
/// of this page must do the pending flush first.
pub const PG_MIGRC: u32 = 1 << 6;
/// In the swap cache (`Page::private` = swap slot).
pub const PG_SWAPCACHE: u32 = 1 << 7;

/// Reverse-map slots: virtual addresses of the test mm mapping the page
/// (`abi::limits`: the checker refuses tests that could need more).
pub const RMAP_SLOTS: usize = abi::limits::MAX_PAGE_MAPPINGS;

#[repr(C)]
pub struct Page {
    pub flags: AtomicU32,
    pub refcount: AtomicI32,
    /// Swap slot while in the swap cache.
    pub private: AtomicU32,
    _pad: u32,
    /// File id of a page-cache page.
    pub index: AtomicU64,
    rmap: [AtomicU64; RMAP_SLOTS],
    _pad2: u64,
}

pub const PAGE_META_SIZE: u64 = core::mem::size_of::<Page>() as u64;
const _: () = assert!(PAGE_META_SIZE == 64);

/// GPA of `mem_map[0]` (the page at `FREE_START`), set once at boot.
static MEM_MAP: AtomicU64 = AtomicU64::new(0);
static MEM_MAP_PAGES: AtomicU64 = AtomicU64::new(0);

/// Places `mem_map` (already zeroed guest RAM) at `base` for `npages` pages.
pub fn init(base: u64, npages: u64) {
    MEM_MAP.store(base, Ordering::Relaxed);
    MEM_MAP_PAGES.store(npages, Ordering::Release);
}

/// `pfn_to_page`: the `struct page` of the data page at `pa`.
pub fn page(pa: u64) -> &'static Page {
    let idx = (pa.wrapping_sub(layout::FREE_START)) / PAGE_SIZE;
    guest_assert!(
        pa >= layout::FREE_START && idx < MEM_MAP_PAGES.load(Ordering::Relaxed),
        "pfn_to_page({:#x}): not a data page",
        pa
    );
    // SAFETY: mem_map is reserved, identity-mapped guest RAM holding
    // MEM_MAP_PAGES entries; idx is in range; all fields are atomics.
    unsafe { &*((MEM_MAP.load(Ordering::Relaxed) + idx * PAGE_META_SIZE) as *const Page) }
}

impl Page {
    /// Fresh state for a page the allocator hands out (one reference).
    pub fn reset(&self) {
        self.flags.store(0, Ordering::Relaxed);
        self.private.store(0, Ordering::Relaxed);
        self.index.store(0, Ordering::Relaxed);
        for s in &self.rmap {
            s.store(0, Ordering::Relaxed);
        }
        self.refcount.store(1, Ordering::Release);
    }

    pub fn test(&self, flag: u32) -> bool {
        self.flags.load(Ordering::Acquire) & flag != 0
    }
    pub fn set(&self, flag: u32) {
        self.flags.fetch_or(flag, Ordering::AcqRel);
    }
    pub fn clear(&self, flag: u32) {
        self.flags.fetch_and(!flag, Ordering::AcqRel);
    }
    /// `TestClearPageDirty` and friends.
    pub fn test_and_clear(&self, flag: u32) -> bool {
        self.flags.fetch_and(!flag, Ordering::AcqRel) & flag != 0
    }

    pub fn count(&self) -> i32 {
        self.refcount.load(Ordering::Acquire)
    }

    /// `page_add_*_rmap`: `va` of the test mm now maps this page.
    pub fn add_rmap(&self, va: u64) {
        for s in &self.rmap {
            if s.compare_exchange(0, va, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return;
            }
        }
        guest_assert!(false, "page mapped at more than {} addresses", RMAP_SLOTS);
    }

    /// `page_remove_rmap`.
    pub fn remove_rmap(&self, va: u64) {
        for s in &self.rmap {
            if s.compare_exchange(va, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return;
            }
        }
    }

    /// The addresses mapping the page (0 = empty slot).
    pub fn rmap(&self) -> [u64; RMAP_SLOTS] {
        core::array::from_fn(|i| self.rmap[i].load(Ordering::Acquire))
    }

    pub fn mapped(&self) -> bool {
        self.rmap().iter().any(|&v| v != 0)
    }
}

/// `get_page`.
pub fn get_page(pa: u64) {
    let old = page(pa).refcount.fetch_add(1, Ordering::AcqRel);
    guest_assert!(old > 0, "get_page({:#x}) on a free page", pa);
}

/// `put_page`: drop a reference; the last one frees the page.
pub fn put_page(pa: u64) {
    let old = page(pa).refcount.fetch_sub(1, Ordering::AcqRel);
    guest_assert!(old > 0, "put_page({:#x}) on a free page", pa);
    if old == 1 {
        hook(Hook::BeforeFree);
        trace::emit(Kind::PageFree, 0, pa, 0);
        page_alloc::free_page(pa);
    }
}

/// `lock_page`: sleeps (here: spins, giving the host CPU away) until the
/// page lock is ours.
pub fn lock_page(pa: u64) {
    super::locking::lock_page(pa, &page(pa).flags, PG_LOCKED);
    hook(Hook::AfterPageLock);
}

/// `trylock_page`.
pub fn trylock_page(pa: u64) -> bool {
    let ok = super::locking::trylock_page(pa, &page(pa).flags, PG_LOCKED);
    if ok {
        hook(Hook::AfterPageLock);
    }
    ok
}

pub fn unlock_page(pa: u64) {
    page(pa).flags.fetch_and(!PG_LOCKED, Ordering::Release);
    super::locking::page_unlocked(pa);
}

/// A spin-wait step: pause, and every so often give the host CPU away so
/// that the holder (another vCPU on a busy host core) gets to run.
pub fn relax(spins: &mut u32) {
    *spins += 1;
    if spins.is_multiple_of(64) {
        // A byte write: `kvm_pvm` refuses 32-bit port I/O from CPL3 (#GP)
        // even where the TSS I/O bitmap allows every byte of it.
        arch::outb(abi::hypercall::YIELD_PORT, 0);
    } else {
        arch::pause();
    }
}

/// Whole-page work is done by the VMM (`PAGE_OP`): a 4 KiB loop in the
/// guest costs ~1 ms on hosts that emulate every guest instruction, the
/// hypercall ~30 µs.
fn page_op(kind: abi::hypercall::PageOpKind, dst: u64, src: u64) -> bool {
    use abi::hypercall::calls::{PageOp, PageOpRequest};
    if let Some(same) = super::pgtable::lazy_page_op(kind, dst, src) {
        return same != 0;
    }
    crate::hypercall::call::<PageOp>(PageOpRequest { kind, dst, src }).same.get()
}

/// `clear_page`.
pub fn zero_page(pa: u64) {
    page_op(abi::hypercall::PageOpKind::Zero, pa, 0);
}

/// `copy_user_highpage`.
pub fn copy_page(dst: u64, src: u64) {
    page_op(abi::hypercall::PageOpKind::Copy, dst, src);
}

/// `pages_identical` (memcmp of the two pages).
pub fn pages_identical(a: u64, b: u64) -> bool {
    page_op(abi::hypercall::PageOpKind::Compare, a, b)
}

/// A litmus location's page as the test starts it: zeroes, first word
/// `first` (harness set-up, not a kernel path).
pub fn init_page(pa: u64, first: u64) {
    page_op(abi::hypercall::PageOpKind::Init, pa, first);
}

/// The first word of a data page (what a litmus observation reads).
pub fn first_word(pa: u64) -> u64 {
    // Page ops queued in lazy MMU mode go first.
    super::pgtable::lazy_mmu_flush();
    // SAFETY: a data page, identity-mapped.
    unsafe { core::ptr::read_volatile(pa as *const u64) }
}
