//! The sleeping locks of the mm model, taken as Linux takes them so that no
//! interleaving Linux forbids can be scripted: `mmap_lock`
//! (`include/linux/mmap_lock.h`, an rwsem), the per-VMA lock of v6.4+
//! (`vma_start_read`/`vma_start_write`, 5e31275cc997), and the page lock
//! (`folio_lock`). The split PTL lives in `ptdesc`.
//!
//! Every acquisition of every lock kind goes through [`acquire`] (one place
//! where a thread may wait, fires the `lock_contended` hook when it must,
//! and records the lock in the trace) or, for a single try, through
//! [`try_acquire`] — the two scheduling points of `vmm explore` at a lock
//! (`crate::explore::lock_point`, which also fires `lock_acquire`). Under
//! the scheduler a thread waiting for a lock is not runnable: [`Free`] says
//! how the scheduler sees that the lock is free.
//!
//! Simplifications (docs/modelling.md): rwsem readers may take the lock
//! whenever no writer holds it (Linux's reader lock stealing, rwsem.c; the
//! hand-off that makes readers queue behind a writer waiting for more than
//! 4 ms is not modelled); the per-VMA lock's sequence-count protocol is
//! reduced to what it decides — a fault proceeds unless an mmap_lock
//! writer has write-locked its VMA, and `vma_start_write` waits for the
//! faults already inside the VMA.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::explore::{guard, object, Guard};
use abi::litmus::Hook;
use abi::policy::FaultLock;
use abi::trace::lock_kind;

use super::hooks::hook;
use super::mm_types::MmStruct;
use super::page::relax;
use super::policy;
use crate::trace::{self, Kind};

/// How `vmm explore`'s scheduler sees that a lock a thread waits for is
/// free (the thread is not runnable until then).
pub enum Free<'a> {
    /// This test of one word holds when the lock can be taken.
    When(Guard),
    /// The lock's state is more than one word: the waiter retries after
    /// every change of this counter (a spurious retry just waits again).
    OnChange(&'a AtomicU64),
}

/// Takes a lock: `try_lock` until it succeeds. The one place a thread of
/// the mm model waits for a lock (`kind` = `abi::trace::lock_kind`, `id` =
/// the lock's address); the first failed try fires `lock_contended`.
pub fn acquire(kind: u64, id: u64, free: Free<'_>, mut try_lock: impl FnMut() -> bool) {
    let guard = match free {
        Free::When(g) => g,
        Free::OnChange(_) => Guard::NONE,
    };
    crate::explore::lock_point(kind as u8, guard);
    let mut waited = false;
    let mut spins = 0u32;
    loop {
        let seen = match free {
            Free::OnChange(w) => w.load(Ordering::Acquire),
            Free::When(_) => 0,
        };
        if try_lock() {
            break;
        }
        if !waited {
            waited = true;
            hook(Hook::LockContended);
        }
        if let Free::OnChange(w) = free {
            // Under the scheduler nothing changes between the try and
            // here; elsewhere this is a no-op.
            crate::explore::wait_change(w as *const AtomicU64 as u64, seen);
        }
        relax(&mut spins);
    }
    if kind != lock_kind::PTL {
        // The PTL has its own trace records (PtlAcquire), which the
        // staleness analysis reads.
        trace::emit(Kind::LockAcquire, id, kind, waited as u64);
    }
}

/// One try at a lock (`*_trylock`, `lock_vma_under_rcu`): the other place a
/// lock is taken, never waiting; traced when it succeeds.
pub fn try_acquire(kind: u64, id: u64, try_lock: impl FnOnce() -> bool) -> bool {
    crate::explore::lock_point(kind as u8, Guard::NONE);
    let ok = try_lock();
    if ok {
        trace::emit(Kind::LockAcquire, id, kind, 0);
    }
    ok
}

fn released(kind: u64, id: u64) {
    trace::emit(Kind::LockRelease, id, kind, 0);
}

// ---------------------------------------------------------------- mmap_lock

/// `mm->mmap_lock`: bit 63 = held for write, low bits = readers.
pub struct MmapLock {
    state: AtomicU64,
}

const WRITER: u64 = 1 << 63;

impl MmapLock {
    pub const fn new() -> Self {
        MmapLock { state: AtomicU64::new(0) }
    }

    /// Back to unlocked (a new mm).
    pub fn reset(&self) {
        self.state.store(0, Ordering::Release);
    }

    fn try_read(&self) -> bool {
        let s = self.state.load(Ordering::Acquire);
        s & WRITER == 0 && self.state.compare_exchange(s, s + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    fn try_write(&self) -> bool {
        self.state.compare_exchange(0, WRITER, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// For the scheduler: free for a reader (no writer) or for a writer (0).
    fn free_for(&self, write: bool) -> Free<'static> {
        let addr = &self.state as *const AtomicU64 as u64;
        Free::When(if write {
            Guard { kind: guard::EQ, addr, value: 0, object: object::MEM }
        } else {
            Guard { kind: guard::MASK_ZERO, addr, value: WRITER, object: object::MEM }
        })
    }
}

impl Default for MmapLock {
    fn default() -> Self {
        Self::new()
    }
}

/// `mmap_read_lock` held.
pub struct MmapReadGuard<'a> {
    mm: &'a MmStruct,
}

/// `mmap_write_lock` held.
pub struct MmapWriteGuard<'a> {
    mm: &'a MmStruct,
}

fn mm_id(mm: &MmStruct) -> u64 {
    mm as *const MmStruct as u64
}

/// `mmap_read_lock`.
pub fn mmap_read_lock(mm: &MmStruct) -> MmapReadGuard<'_> {
    acquire(lock_kind::MMAP_READ, mm_id(mm), mm.mmap_lock.free_for(false), || mm.mmap_lock.try_read());
    MmapReadGuard { mm }
}

/// `mmap_write_lock`.
pub fn mmap_write_lock(mm: &MmStruct) -> MmapWriteGuard<'_> {
    acquire(lock_kind::MMAP_WRITE, mm_id(mm), mm.mmap_lock.free_for(true), || mm.mmap_lock.try_write());
    MmapWriteGuard { mm }
}

impl Drop for MmapReadGuard<'_> {
    /// `mmap_read_unlock`.
    fn drop(&mut self) {
        self.mm.mmap_lock.state.fetch_sub(1, Ordering::AcqRel);
        released(lock_kind::MMAP_READ, mm_id(self.mm));
    }
}

impl<'a> MmapWriteGuard<'a> {
    /// `mmap_write_downgrade`: the write lock becomes a read lock without
    /// letting a writer in between; VMA write locks end
    /// (`vma_end_write_all`).
    pub fn downgrade(self) -> MmapReadGuard<'a> {
        let mm = self.mm;
        core::mem::forget(self);
        mm.vma_locks.end_write_all();
        mm.mmap_lock.state.store(1, Ordering::Release);
        released(lock_kind::MMAP_WRITE, mm_id(mm));
        trace::emit(Kind::LockAcquire, mm_id(mm), lock_kind::MMAP_READ, 0);
        MmapReadGuard { mm }
    }
}

impl Drop for MmapWriteGuard<'_> {
    /// `mmap_write_unlock` (`vma_end_write_all` first).
    fn drop(&mut self) {
        self.mm.vma_locks.end_write_all();
        self.mm.mmap_lock.state.store(0, Ordering::Release);
        released(lock_kind::MMAP_WRITE, mm_id(self.mm));
    }
}

// ---------------------------------------------------------------- VMA locks

/// Faults inside VMAs at once; a fault that finds the table full falls
/// back to mmap_read_lock, as one whose VMA lock try fails.
const MAX_VMA_READERS: usize = 16;
/// Disjoint write-locked ranges: at most one per VMA.
const MAX_VMA_WLOCKED: usize = super::mm_types::MAX_VMAS;

/// The per-VMA locks of an mm (v6.4+): which VMA ranges faults are inside
/// (`vma_start_read`), and which ranges the current mmap_lock writer has
/// write-locked (`vma_start_write`, until `vma_end_write_all`).
pub struct VmaLocks {
    inner: crate::sync::SpinLock<VmaLockTable>,
    /// Bumped whenever a fault enters or leaves a VMA: what a
    /// `vma_start_write` waiting under the scheduler waits to change.
    readers_changed: AtomicU64,
}

struct VmaLockTable {
    readers: [(u64, u64, u32); MAX_VMA_READERS],
    wlocked: [(u64, u64); MAX_VMA_WLOCKED],
    nwlocked: usize,
}

const fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

impl VmaLocks {
    pub const fn new() -> Self {
        VmaLocks {
            inner: crate::sync::SpinLock::new(VmaLockTable {
                readers: [(0, 0, 0); MAX_VMA_READERS],
                wlocked: [(0, 0); MAX_VMA_WLOCKED],
                nwlocked: 0,
            }),
            readers_changed: AtomicU64::new(0),
        }
    }

    pub fn reset(&self) {
        let mut t = self.inner.lock();
        t.readers = [(0, 0, 0); MAX_VMA_READERS];
        t.nwlocked = 0;
    }

    fn end_write_all(&self) {
        self.inner.lock().nwlocked = 0;
    }

    /// `vma_start_read` on the VMA `[start, end)`: false if an mmap_lock
    /// writer has write-locked it (the caller falls back to mmap_read_lock).
    fn try_start_read(&self, start: u64, end: u64) -> bool {
        let mut t = self.inner.lock();
        let n = t.nwlocked;
        if t.wlocked[..n].iter().any(|&w| overlaps(w, (start, end))) {
            return false;
        }
        if let Some(s) = t.readers.iter_mut().find(|s| s.2 > 0 && s.0 == start && s.1 == end) {
            s.2 += 1;
            self.readers_changed.fetch_add(1, Ordering::Release);
            return true;
        }
        match t.readers.iter_mut().find(|s| s.2 == 0) {
            Some(s) => {
                *s = (start, end, 1);
                self.readers_changed.fetch_add(1, Ordering::Release);
                true
            }
            None => false,
        }
    }

    fn end_read(&self, start: u64, end: u64) {
        let mut t = self.inner.lock();
        if let Some(s) = t.readers.iter_mut().find(|s| s.2 > 0 && s.0 == start && s.1 == end) {
            s.2 -= 1;
            self.readers_changed.fetch_add(1, Ordering::Release);
        }
    }

    /// Marks `[start, end)` write-locked. Marking is idempotent and
    /// overlapping marks merge (Linux's `vma_start_write` returns at once
    /// for a VMA this writer already locked), so the marks stay disjoint
    /// and at most one per VMA the mm can have.
    fn mark_write(&self, start: u64, end: u64) {
        let mut t = self.inner.lock();
        let (mut lo, mut hi) = (start, end);
        let mut i = 0;
        while i < t.nwlocked {
            let w = t.wlocked[i];
            if w.0 <= hi && lo <= w.1 {
                lo = lo.min(w.0);
                hi = hi.max(w.1);
                let last = t.nwlocked - 1;
                t.wlocked[i] = t.wlocked[last];
                t.nwlocked = last;
            } else {
                i += 1;
            }
        }
        let n = t.nwlocked;
        crate::guest_assert!(n < MAX_VMA_WLOCKED, "more than {} VMAs write-locked at once", MAX_VMA_WLOCKED);
        t.wlocked[n] = (lo, hi);
        t.nwlocked += 1;
    }

    fn readers_in(&self, start: u64, end: u64) -> bool {
        self.inner.lock().readers.iter().any(|s| s.2 > 0 && overlaps((s.0, s.1), (start, end)))
    }
}

impl Default for VmaLocks {
    fn default() -> Self {
        Self::new()
    }
}

/// `vma_start_write`: the mmap_lock writer (the caller holds `_w`) is about
/// to change the VMA `[start, end)`: new faults in it fall back to
/// mmap_read_lock, and faults already inside it are waited for. A no-op
/// before v6.4 (no per-VMA locks).
pub fn vma_start_write(mm: &MmStruct, _w: &MmapWriteGuard<'_>, start: u64, end: u64) {
    if policy::get::<FaultLock>() != FaultLock::VmaLock {
        return;
    }
    mm.vma_locks.mark_write(start, end);
    let changed = Free::OnChange(&mm.vma_locks.readers_changed);
    acquire(lock_kind::VMA_WRITE, start, changed, || !mm.vma_locks.readers_in(start, end));
}

/// What the page-fault path holds (`lock_mm_and_find_vma` /
/// `lock_vma_under_rcu`): mmap_lock for read, or one VMA's read lock.
pub struct FaultGuard<'a> {
    _mmap: Option<MmapReadGuard<'a>>,
    vma: Option<(&'a MmStruct, u64, u64)>,
}

impl Drop for FaultGuard<'_> {
    fn drop(&mut self) {
        if let Some((mm, start, end)) = self.vma {
            mm.vma_locks.end_read(start, end);
            released(lock_kind::VMA_READ, start);
        }
    }
}

/// The lock a page fault at `va` takes: since v6.4 the VMA's lock
/// (`lock_vma_under_rcu`), falling back to mmap_read_lock when the VMA is
/// write-locked or not found; before, mmap_read_lock.
pub fn lock_for_fault(mm: &MmStruct, va: u64) -> FaultGuard<'_> {
    if policy::get::<FaultLock>() == FaultLock::VmaLock {
        if let Some(v) = mm.find_vma(va) {
            // One try, as lock_vma_under_rcu does; the wait is mmap_read_lock's.
            let ok = try_acquire(lock_kind::VMA_READ, v.start, || mm.vma_locks.try_start_read(v.start, v.end));
            // The VMA may have changed between the lookup and the lock
            // (vma_start_read rechecks vm_lock_seq and the range).
            if ok && mm.find_vma(va) == Some(v) {
                return FaultGuard { _mmap: None, vma: Some((mm, v.start, v.end)) };
            }
            if ok {
                mm.vma_locks.end_read(v.start, v.end);
            }
        }
    }
    FaultGuard { _mmap: Some(mmap_read_lock(mm)), vma: None }
}

// ---------------------------------------------------------------- page lock

/// `folio_lock` of the page at `pa`, whose `struct page` flags word is
/// `flags` (`PG_locked` = `bit`).
pub fn lock_page(pa: u64, flags: &core::sync::atomic::AtomicU32, bit: u32) {
    let free = Guard {
        kind: guard::MASK32_ZERO,
        addr: flags as *const core::sync::atomic::AtomicU32 as u64,
        value: bit as u64,
        object: object::MEM,
    };
    acquire(lock_kind::PAGE, pa, Free::When(free), || flags.fetch_or(bit, Ordering::Acquire) & bit == 0);
}

/// `folio_trylock`: true if the lock was free (and is now ours).
pub fn trylock_page(pa: u64, flags: &core::sync::atomic::AtomicU32, bit: u32) -> bool {
    try_acquire(lock_kind::PAGE, pa, || flags.fetch_or(bit, Ordering::Acquire) & bit == 0)
}

/// `folio_unlock` (after the caller cleared the bit).
pub fn page_unlocked(pa: u64) {
    released(lock_kind::PAGE, pa);
}
