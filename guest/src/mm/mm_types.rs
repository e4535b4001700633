//! `struct mm_struct` and `struct vm_area_struct` of the test address space
//! (`include/linux/mm_types.h`). One test mm exists at a time: [`TEST_MM`].
//!
//! Operations take `mmap_lock` (and, since v6.4, the per-VMA lock) as their
//! Linux paths do (`locking`); the VMA list itself is read under a spinlock
//! of its own (Linux reads it under mmap_lock or RCU), so a lookup never
//! sees a half-updated table.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use abi::layout::PAGE_SIZE;

use super::locking::{MmapLock, VmaLocks};
use super::pgtable::PageTables;
use crate::guest_assert;
use crate::sync::SpinLock;

pub const VM_READ: u8 = 1;
pub const VM_WRITE: u8 = 2;
/// `MAP_SHARED` of a file: the pages are page-cache pages of `Vma::file`.
pub const VM_SHARED: u8 = 4;
/// Registered for userfaultfd write-protect (`VM_UFFD_WP`, `uffd_wp L`).
pub const VM_UFFD_WP: u8 = 8;

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub flags: u8,
    /// File id + 1 for a shared file mapping (one page per file, at
    /// `start`), 0 for anonymous memory.
    pub file: u8,
}

impl Vma {
    pub fn is_anon(&self) -> bool {
        self.file == 0
    }
    pub fn file_id(&self) -> Option<usize> {
        (self.file != 0).then(|| self.file as usize - 1)
    }
    fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// One one-page VMA per page or unmapped location at most (`abi::limits`).
pub const MAX_VMAS: usize = abi::limits::MAX_PAGE_LOCATIONS;

/// The VMA list: `v[..n]` are the live VMAs, in no particular order.
pub struct VmaTable {
    n: usize,
    v: [Vma; MAX_VMAS],
}

/// Most VMAs one range query returns (tests touch a few pages each).
pub const VMA_SET: usize = 8;

/// A few VMAs, in address order.
#[derive(Clone, Copy, Default)]
pub struct VmaSet {
    n: usize,
    v: [Vma; VMA_SET],
}

impl VmaSet {
    fn push(&mut self, v: Vma) {
        guest_assert!(self.n < VMA_SET, "an operation's range spans more than {} VMAs", VMA_SET);
        self.v[self.n] = v;
        self.n += 1;
    }
    fn sort(&mut self) {
        self.v[..self.n].sort_unstable_by_key(|v| v.start);
    }
    pub fn as_slice(&self) -> &[Vma] {
        &self.v[..self.n]
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}
const MAX_INFLIGHT_GENS: usize = 32;
/// Pages the phantom child of `cow` (fork) may hold: one per `cow` run
/// (`abi::limits`).
pub const MAX_FORK_REFS: usize = abi::limits::MAX_COW_OPS;
/// Source pages migrc may keep until its deferred flush.
pub const MAX_MIGRC: usize = 32;

/// `flush=generation`: the mm's generation counter and the generations of
/// deferred changes whose flush has not completed yet (Nadav's "table
/// generation" idea, seed 002/000).
struct Generations {
    next: u64,
    inflight: [u64; MAX_INFLIGHT_GENS],
}

pub struct MmStruct {
    pub(super) pgd: AtomicU64,
    pub(super) vmas: SpinLock<VmaTable>,
    /// `mm->mmap_lock`.
    pub(super) mmap_lock: MmapLock,
    /// The per-VMA locks (v6.4+).
    pub(super) vma_locks: VmaLocks,
    /// `mm->tlb_flush_pending`.
    pub tlb_flush_pending: AtomicU64,
    /// `mm->tlb_flush_batched`: reclaim queued a flush for this mm that has
    /// not run yet (`set_tlb_ubc_flush_pending`). Today: pending batch
    /// generations in bits 0..15, flushed ones in bits 16..31
    /// (`batched-pending-check=counted`); the 2017 form is a flag (0/1).
    pub tlb_flush_batched: AtomicU32,
    gens: SpinLock<Generations>,
    /// PASID the SVA driver bound this mm to (0 = no secondary MMU).
    pub(super) pasid: AtomicU64,
    /// Pages the fork child of `cow` holds a reference to.
    pub(super) fork_refs: SpinLock<([u64; MAX_FORK_REFS], usize)>,
    /// migrc: source pages kept until the deferred flush, and whether one is due.
    pub(super) migrc: SpinLock<([u64; MAX_MIGRC], usize)>,
    pub(super) migrc_flush_due: AtomicBool,
    /// Shared files this mm created (ids 0..n in `filemap`).
    pub(super) nfiles: AtomicU64,
    /// Every page-table page of the mm (freed at teardown without walking
    /// the tree: scanning a 512-entry table costs ~1 ms when every guest
    /// instruction is emulated).
    pub(super) tables: SpinLock<([u64; MAX_TABLES], usize)>,
}

/// `abi::limits::page_tables_needed` bounds a checked test's tables by this.
pub const MAX_TABLES: usize = abi::limits::MAX_PAGE_TABLES;

pub static TEST_MM: MmStruct = MmStruct {
    pgd: AtomicU64::new(0),
    vmas: SpinLock::new(VmaTable { n: 0, v: [Vma { start: 0, end: 0, flags: 0, file: 0 }; MAX_VMAS] }),
    mmap_lock: MmapLock::new(),
    vma_locks: VmaLocks::new(),
    tlb_flush_pending: AtomicU64::new(0),
    tlb_flush_batched: AtomicU32::new(0),
    gens: SpinLock::new(Generations { next: 0, inflight: [0; MAX_INFLIGHT_GENS] }),
    pasid: AtomicU64::new(0),
    fork_refs: SpinLock::new(([0; MAX_FORK_REFS], 0)),
    migrc: SpinLock::new(([0; MAX_MIGRC], 0)),
    migrc_flush_due: AtomicBool::new(false),
    nfiles: AtomicU64::new(0),
    tables: SpinLock::new(([0; MAX_TABLES], 0)),
};

/// A failed fault or operation: the access is not allowed (SIGSEGV), or
/// the range is not what the operation needs (EINVAL/ENOMEM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segv;

impl MmStruct {
    /// Creates the address space (`mm_alloc`): PGD, no VMAs.
    pub fn init(&self) {
        let mm = PageTables::new();
        self.vmas.lock().n = 0;
        self.mmap_lock.reset();
        self.vma_locks.reset();
        self.tlb_flush_pending.store(0, Ordering::Relaxed);
        self.tlb_flush_batched.store(0, Ordering::Relaxed);
        *self.gens.lock() = Generations { next: 0, inflight: [0; MAX_INFLIGHT_GENS] };
        self.pasid.store(0, Ordering::Relaxed);
        self.fork_refs.lock().1 = 0;
        self.migrc.lock().1 = 0;
        self.migrc_flush_due.store(false, Ordering::Relaxed);
        self.nfiles.store(0, Ordering::Relaxed);
        self.tables.lock().1 = 0;
        self.table_added(mm.pgd);
        self.pgd.store(mm.pgd, Ordering::Release);
    }

    /// The mm's page tables (`mm->pgd`).
    pub fn pt(&self) -> PageTables {
        PageTables { pgd: self.pgd.load(Ordering::Acquire) }
    }

    pub fn is_live(&self) -> bool {
        self.pgd.load(Ordering::Acquire) != 0
    }

    // ---- VMAs ----
    //
    // The table is kept compact (`vmas.n` live entries first) and queries
    // return small sets: on hosts that emulate every guest instruction, a
    // scan of empty slots or a copy of the whole table costs milliseconds.

    /// `find_vma` (exact: the VMA containing `va`).
    pub fn find_vma(&self, va: u64) -> Option<Vma> {
        let t = self.vmas.lock();
        t.v[..t.n].iter().copied().find(|v| v.start <= va && va < v.end)
    }

    /// The VMAs intersecting `[start, end)`, in address order.
    pub fn vmas_in(&self, start: u64, end: u64) -> VmaSet {
        let t = self.vmas.lock();
        let mut out = VmaSet::default();
        for v in t.v[..t.n].iter().filter(|v| v.start < end && start < v.end) {
            out.push(*v);
        }
        out.sort();
        out
    }

    /// The VMAs mapping shared file `file` (the file's `i_mmap` tree).
    pub fn file_vmas(&self, file: usize) -> VmaSet {
        let t = self.vmas.lock();
        let mut out = VmaSet::default();
        for v in t.v[..t.n].iter().filter(|v| v.file_id() == Some(file)) {
            out.push(*v);
        }
        out.sort();
        out
    }

    /// Whether any VMA intersects `[start, end)` (`free_pgtables`' floor/ceiling test).
    pub fn any_vma_in(&self, start: u64, end: u64) -> bool {
        let t = self.vmas.lock();
        t.v[..t.n].iter().any(|v| v.start < end && start < v.end)
    }

    /// Inserts a VMA; false if it overlaps one or the table is full.
    pub fn insert_vma(&self, v: Vma) -> bool {
        let mut t = self.vmas.lock();
        let n = t.n;
        if n == MAX_VMAS || v.is_empty() || t.v[..n].iter().any(|o| o.start < v.end && v.start < o.end) {
            return false;
        }
        t.v[n] = v;
        t.n += 1;
        true
    }

    /// Makes VMA boundaries at `start` and `end` (`split_vma`), then applies
    /// `f` to every VMA inside `[start, end)`. False (and nothing changed)
    /// if the range is not entirely covered by VMAs or the table is full.
    pub fn for_vmas_split(&self, start: u64, end: u64, mut f: impl FnMut(&mut Vma)) -> bool {
        let mut t = self.vmas.lock();
        let n = t.n;
        let covered: u64 = t.v[..n].iter().map(|v| v.end.min(end).saturating_sub(v.start.max(start))).sum();
        let splits =
            t.v[..n].iter().filter(|v| (v.start < start && start < v.end) || (v.start < end && end < v.end)).count();
        if covered != end - start || n + splits > MAX_VMAS {
            return false;
        }
        for at in [start, end] {
            let n = t.n;
            if let Some(i) = t.v[..n].iter().position(|v| v.start < at && at < v.end) {
                let tail = Vma { start: at, ..t.v[i] };
                t.v[i].end = at;
                t.v[n] = tail;
                t.n += 1;
            }
        }
        let n = t.n;
        for v in t.v[..n].iter_mut().filter(|v| v.start >= start && v.end <= end) {
            f(v);
        }
        true
    }

    /// Removes `[start, end)` from the VMA list (`vma_shrink`/detach),
    /// splitting a VMA that straddles it; returns the removed pieces.
    pub fn detach_vmas(&self, start: u64, end: u64) -> VmaSet {
        let mut out = VmaSet::default();
        let mut t = self.vmas.lock();
        let mut i = 0;
        while i < t.n {
            let v = t.v[i];
            if v.end <= start || end <= v.start {
                i += 1;
                continue;
            }
            let (lo, hi) = (v.start.max(start), v.end.min(end));
            out.push(Vma { start: lo, end: hi, ..v });
            let head = Vma { end: lo, ..v };
            let tail = Vma { start: hi, ..v };
            match (head.is_empty(), tail.is_empty()) {
                (true, true) => {
                    // Remove: move the last live entry here.
                    t.n -= 1;
                    let last = t.n;
                    t.v[i] = t.v[last];
                    continue;
                }
                (false, true) => t.v[i] = head,
                (true, false) => t.v[i] = tail,
                (false, false) => {
                    let n = t.n;
                    guest_assert!(n < MAX_VMAS, "VMA table full splitting {:#x}..{:#x}", start, end);
                    t.v[i] = head;
                    t.v[n] = tail;
                    t.n += 1;
                }
            }
            i += 1;
        }
        out.sort();
        out
    }

    /// The lowest VMA, if any (teardown unmaps them one by one).
    pub fn first_vma(&self) -> Option<Vma> {
        let t = self.vmas.lock();
        t.v[..t.n].iter().copied().min_by_key(|v| v.start)
    }

    // ---- flush bookkeeping ----

    /// `mm_tlb_flush_pending`.
    pub fn tlb_flush_pending(&self) -> bool {
        self.tlb_flush_pending.load(Ordering::Acquire) > 0
    }

    /// `mm_tlb_flush_nested`: more than one deferred flush in flight.
    pub fn tlb_flush_nested(&self) -> bool {
        self.tlb_flush_pending.load(Ordering::Acquire) > 1
    }

    /// `flush=generation`: a new generation for a deferred change.
    pub fn gen_begin(&self) -> u64 {
        let mut g = self.gens.lock();
        g.next += 1;
        let gen = g.next;
        match g.inflight.iter_mut().find(|s| **s == 0) {
            Some(s) => *s = gen,
            None => guest_assert!(false, "more than {} deferred flushes in flight", MAX_INFLIGHT_GENS),
        }
        gen
    }

    /// The flush of generation `gen` completed on every CPU.
    pub fn gen_end(&self, gen: u64) {
        let mut g = self.gens.lock();
        if let Some(s) = g.inflight.iter_mut().find(|s| **s == gen) {
            *s = 0;
        }
    }

    /// Whether a change recorded with generation `table_gen` may still be
    /// cached by some TLB: a generation ≤ it other than `mine` is in flight.
    pub fn gen_unflushed(&self, table_gen: u64, mine: u64) -> bool {
        table_gen != 0 && self.gens.lock().inflight.iter().any(|&g| g != 0 && g != mine && g <= table_gen)
    }

    // ---- page-table pages ----

    pub(super) fn table_added(&self, t: u64) {
        let mut l = self.tables.lock();
        let n = l.1;
        guest_assert!(n < MAX_TABLES, "the test mm has more than {} page tables", MAX_TABLES);
        l.0[n] = t;
        l.1 += 1;
    }

    /// `t` left the tree (`free_pgtables`); the mmu_gather frees it.
    pub(super) fn table_removed(&self, t: u64) {
        let mut l = self.tables.lock();
        let n = l.1;
        if let Some(i) = l.0[..n].iter().position(|&x| x == t) {
            l.0[i] = l.0[n - 1];
            l.1 -= 1;
        }
    }

    // ---- fork child of `cow` ----

    pub(super) fn fork_ref_add(&self, page: u64) {
        let mut r = self.fork_refs.lock();
        let n = r.1;
        guest_assert!(n < MAX_FORK_REFS, "the fork child holds more than {} pages", MAX_FORK_REFS);
        r.0[n] = page;
        r.1 += 1;
    }
}

/// Rounds `va` down to its page.
pub const fn page_align(va: u64) -> u64 {
    va & !(PAGE_SIZE - 1)
}
