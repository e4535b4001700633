//! Page tables of a test address space. Entries are read directly (the
//! page-table region is readable) and changed only through the VMM's
//! page-table ops (`set_pte_at`, `ptep_get_and_clear`, … as in Linux's
//! `include/linux/pgtable.h`), so every change is seen by the VMM.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use abi::hypercall::calls::{self, PtBatchRequest, PtOpRequest, PtTableRequest};
use abi::hypercall::{ptop, BatchEntry, FlushKind, PageOpKind, PtOpKind, TableEvent, DATA_LEN};
use abi::layout::{self, PAGE_SIZE};

use super::page_alloc;
use crate::{guest_assert, hypercall, percpu};

pub mod pte {
    pub const P: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const US: u64 = 1 << 2;
    pub const A: u64 = 1 << 5;
    pub const D: u64 = 1 << 6;
    /// Software bit of a non-present PTE: PROT_NONE (`_PAGE_PROTNONE`,
    /// the global bit on x86); the page stays mapped but inaccessible.
    pub const PROTNONE: u64 = 1 << 8;
    /// Software bit of a non-present PTE: a swap entry (`swp_entry_t`).
    pub const SWP: u64 = 1 << 9;
    /// Software bit of a present PTE: userfaultfd write-protected
    /// (`_PAGE_UFFD_WP`, x86 software bit 2); ignored by the walkers.
    pub const UFFD_WP: u64 = 1 << 10;
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
}

/// Non-present PTE encodings (`include/linux/swapops.h`). Hardware and the
/// emulated walkers only look at `P`; the rest is the kernel's.
pub mod swp {
    use super::pte;

    /// A page in the swap area: offset = swap slot.
    pub const SWAPFILE: u64 = 0;
    /// Migration entry of a page mapped read-only: offset = old page's GPA >> 12.
    pub const MIGRATION_READ: u64 = 1;
    /// Migration entry of a page mapped writable.
    pub const MIGRATION_WRITE: u64 = 2;

    pub const fn entry(kind: u64, offset: u64) -> u64 {
        pte::SWP | (kind << 1) | (offset << 12)
    }
    pub const fn is_swap_pte(e: u64) -> bool {
        e & pte::P == 0 && e & pte::SWP != 0
    }
    pub const fn kind(e: u64) -> u64 {
        (e >> 1) & 0xf
    }
    pub const fn offset(e: u64) -> u64 {
        (e & pte::ADDR_MASK) >> 12
    }
    pub const fn is_migration_entry(e: u64) -> bool {
        is_swap_pte(e) && (kind(e) == MIGRATION_READ || kind(e) == MIGRATION_WRITE)
    }
    /// The page a migration entry stands for.
    pub const fn migration_page(e: u64) -> u64 {
        offset(e) << 12
    }
}

/// `pte_none`.
pub const fn pte_none(e: u64) -> bool {
    e == 0
}
/// A PTE that maps a page, accessible (`pte_present`) or PROT_NONE.
pub const fn pte_maps_page(e: u64) -> bool {
    e & pte::P != 0 || e & pte::PROTNONE != 0
}
pub const fn pte_page(e: u64) -> u64 {
    e & pte::ADDR_MASK
}
pub const fn pte_write(e: u64) -> bool {
    e & pte::P != 0 && e & pte::RW != 0
}
pub const fn pte_dirty(e: u64) -> bool {
    e & pte::D != 0
}

/// Flags of non-leaf entries of the user half (rights are decided at the leaf).
const TABLE_FLAGS: u64 = pte::P | pte::RW | pte::US;

/// One page-table op by the VMM; returns the old entry. In lazy MMU mode
/// a `SET` is queued (its old value read through the queue); an op whose
/// old value matters goes out at once with the queue before it.
pub fn pt_op(kind: PtOpKind, entry_gpa: u64, a: u64, b: u64) -> u64 {
    if let Some(q) = lazy() {
        // Lazy MMU mode is used only where nothing else walks or changes
        // the mm's tables (a fresh mm before its threads start, the
        // teardown after they and the devices finished), so the entry's
        // old value is what the queue leaves in it, and even a
        // read-modify-write need not be sent at once — x86's
        // `ptep_get_and_clear_full` (fullmm): "Full address destruction in
        // progress; paravirt does not care about updates and native needs
        // no locking".
        let old = q.read(entry_gpa);
        q.push(BatchEntry::PtOp { kind, entry: entry_gpa, a, b });
        return old;
    }
    hypercall::call::<calls::PtOp>(PtOpRequest { kind, entry: entry_gpa, a, b }).old
}

// ---- lazy MMU mode ----------------------------------------------------------
//
// Linux's `arch_enter_lazy_mmu_mode()`/`arch_leave_lazy_mmu_mode()` as Xen
// PV implements them (`xen_enter_lazy_mmu`, multicalls of `mmu_update`):
// page-table updates nobody else may observe yet are queued and sent to
// the hypervisor in one call (`PT_BATCH`) when the mode ends, when a
// result is needed, or before any other hypercall or device access. The
// litmus runner uses it only where no other CPU, TLB or device walks the
// test mm: building a fresh mm before its threads start, and the teardown
// after they and the devices finished. The operations themselves — and
// their order — are the ones the mm model makes; only the exits go.

/// Queued entries of the CPU in lazy MMU mode (one at a time).
struct LazyQueue {
    n: usize,
    entries: [[u64; 4]; BatchEntry::MAX],
}

/// The CPU whose queue this is (in lazy MMU mode, or left it with
/// updates not sent yet), or `NO_CPU`.
static LAZY_CPU: AtomicU64 = AtomicU64::new(NO_CPU);
const NO_CPU: u64 = u64::MAX;
/// The owner left lazy MMU mode; its queue goes with its next hypercall.
static LAZY_LEFT: AtomicBool = AtomicBool::new(false);

struct LazyCell(UnsafeCell<LazyQueue>);
// SAFETY: only the CPU named in `LAZY_CPU` touches the queue, and not from
// interrupt handlers (they make no page-table ops, and their hypercalls do
// not carry or send it: `carry_into`).
unsafe impl Sync for LazyCell {}
static LAZY: LazyCell = LazyCell(UnsafeCell::new(LazyQueue { n: 0, entries: [[0; 4]; BatchEntry::MAX] }));

/// This CPU's queue: in lazy MMU mode, or left with updates not sent yet.
fn queue() -> Option<&'static mut LazyQueue> {
    let owner = LAZY_CPU.load(Ordering::Relaxed);
    // SAFETY: the queue is the owner's alone (see `LazyCell`), and no
    // caller holds two of these references at once.
    (owner != NO_CPU && owner == percpu::cpu()).then(|| unsafe { &mut *LAZY.0.get() })
}

/// This CPU's queue, if it is in lazy MMU mode.
fn lazy() -> Option<&'static mut LazyQueue> {
    queue().filter(|_| !LAZY_LEFT.load(Ordering::Relaxed))
}

/// The queue is empty and its owner out of lazy MMU mode: nobody owns it.
fn release_if_left() {
    if LAZY_LEFT.load(Ordering::Relaxed) {
        LAZY_LEFT.store(false, Ordering::Relaxed);
        LAZY_CPU.store(NO_CPU, Ordering::Release);
    }
}

impl LazyQueue {
    fn push(&mut self, e: BatchEntry) {
        if self.n == self.entries.len() {
            self.send();
        }
        self.entries[self.n] = e.encode();
        self.n += 1;
    }

    /// Sends the queue; returns the last entry's result.
    fn send(&mut self) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let mut data = [0u8; BatchEntry::MAX * BatchEntry::LEN];
        for (i, e) in self.entries[..self.n].iter().enumerate() {
            for (k, w) in e.iter().enumerate() {
                data[i * BatchEntry::LEN + 8 * k..][..8].copy_from_slice(&w.to_le_bytes());
            }
        }
        let n = self.n;
        self.n = 0;
        let r =
            hypercall::call_data::<calls::PtBatch>(PtBatchRequest { count: n as u64 }, &data[..n * BatchEntry::LEN]);
        r.last
    }

    /// Queues `e` and sends the queue: `e`'s result.
    fn send_with(&mut self, e: BatchEntry) -> u64 {
        self.push(e);
        self.send()
    }

    /// The entry at `gpa` as the queued updates leave it: what memory
    /// holds (0 in a table page allocated in the queue: the VMM zeroes it
    /// then), with each queued op on it applied in order.
    fn read(&self, gpa: u64) -> u64 {
        let table = gpa & !(PAGE_SIZE - 1);
        let born = self.entries[..self.n].iter().rposition(|e| {
            matches!(BatchEntry::decode(*e), Ok(BatchEntry::PtTable { event: TableEvent::Allocated, table: t, .. }) if t == table)
        });
        let (mut v, from) = match born {
            Some(i) => (0, i + 1),
            // SAFETY: the page-table region is identity-mapped and readable.
            None => (unsafe { core::ptr::read_volatile(gpa as *const u64) }, 0),
        };
        for e in &self.entries[from..self.n] {
            if let Ok(BatchEntry::PtOp { kind, entry, a, b }) = BatchEntry::decode(*e) {
                if entry == gpa {
                    v = match kind {
                        PtOpKind::Set | PtOpKind::Xchg => a,
                        PtOpKind::Cmpxchg => {
                            if v == a {
                                b
                            } else {
                                v
                            }
                        }
                        PtOpKind::Clear => 0,
                        PtOpKind::ClearBits => v & !a,
                        PtOpKind::SetBits => v | a,
                    };
                }
            }
        }
        v
    }

    /// Queues a local TLB flush (`FLUSH` without follow-ups) with the
    /// updates, as Xen PV's `xen_flush_tlb` does in lazy MMU mode.
    fn push_flush(&mut self, kind: FlushKind, va: u64, len: u64, last_level: bool) {
        self.push(BatchEntry::Flush { kind, va, len, last_level });
    }
}

/// Enters lazy MMU mode on this CPU (`arch_enter_lazy_mmu_mode`): see above.
pub fn lazy_mmu_enter() {
    let me = percpu::cpu();
    if queue().is_some() {
        // Left with updates not sent: they stay first in the queue.
        LAZY_LEFT.store(false, Ordering::Relaxed);
        return;
    }
    let was = LAZY_CPU.swap(me, Ordering::AcqRel);
    guest_assert!(was == NO_CPU, "lazy MMU mode entered on CPU {} while CPU {} is in it", me, was);
}

/// Leaves lazy MMU mode (`arch_leave_lazy_mmu_mode`). At CPL3 what is
/// queued goes with this CPU's next hypercall (`carry_into`), one exit
/// fewer; the code that runs before it reads entries through the queue
/// (`read_entry`), and what must not run before the updates are done
/// sends them first (`lazy_mmu_flush`: a switch to an mm, a device
/// register, a page read). At CPL0 (`vmm explore`, `--tlb native`, where
/// other CPUs are started by IPIs, not hypercalls) it is sent now.
pub fn lazy_mmu_leave() {
    let Some(q) = lazy() else { return };
    if q.n > 0 && percpu::cpl() == 3 {
        LAZY_LEFT.store(true, Ordering::Relaxed);
        return;
    }
    q.send();
    LAZY_CPU.store(NO_CPU, Ordering::Release);
}

/// Sends what is queued (before something that must come after the
/// queued updates and makes no hypercall of its own first); nothing if
/// this CPU has no queue.
#[inline]
pub fn lazy_mmu_flush() {
    if LAZY_CPU.load(Ordering::Relaxed) == NO_CPU {
        return;
    }
    if let Some(q) = queue() {
        q.send();
        release_if_left();
    }
}

/// Whether some CPU has a lazy MMU queue (one load: on hosts that emulate
/// kernel code every hypercall asks).
#[inline(always)]
pub fn has_queue() -> bool {
    LAZY_CPU.load(Ordering::Relaxed) != NO_CPU
}

/// For a hypercall this CPU makes outside an interrupt handler: moves the
/// queued updates into the end of `data` (a mailbox's data area whose
/// first `own` bytes are the call's) and returns how many there are, for
/// the call's op word (`abi::hypercall::op_word`). If they do not fit
/// beside the call's own data they are sent first, and none is carried.
pub fn carry_into(data: &mut [u8; DATA_LEN], own: usize) -> usize {
    if LAZY_CPU.load(Ordering::Relaxed) == NO_CPU {
        return 0;
    }
    let Some(q) = queue() else { return 0 };
    let n = q.n;
    if n == 0 {
        return 0;
    }
    let at = abi::hypercall::carried_offset(n);
    if own > at {
        q.send();
        release_if_left();
        return 0;
    }
    for (i, e) in q.entries[..n].iter().enumerate() {
        for (k, w) in e.iter().enumerate() {
            data[at + i * BatchEntry::LEN + 8 * k..][..8].copy_from_slice(&w.to_le_bytes());
        }
    }
    q.n = 0;
    release_if_left();
    n
}

/// In lazy MMU mode: queues a local TLB flush with the updates and
/// returns true (the caller makes no `FLUSH` of its own); false outside it.
pub fn lazy_flush(kind: FlushKind, va: u64, len: u64, last_level: bool) -> bool {
    let Some(q) = lazy() else { return false };
    q.push_flush(kind, va, len, last_level);
    true
}

/// Whether this CPU is in lazy MMU mode.
pub fn in_lazy_mmu() -> bool {
    lazy().is_some()
}

/// A page op (`PAGE_OP`) in program order with the queued updates, in
/// lazy MMU mode: queued (a compare, whose answer is needed, sends the
/// queue at once); `None` outside it. Code that reads a page's content
/// itself sends the queue first (`page::first_word`).
pub fn lazy_page_op(kind: PageOpKind, dst: u64, src: u64) -> Option<u64> {
    let q = lazy()?;
    let op = BatchEntry::PageOp { kind, dst, src };
    if kind == PageOpKind::Compare {
        return Some(q.send_with(op));
    }
    q.push(op);
    Some(1)
}

pub fn set_pte(entry_gpa: u64, val: u64) {
    pt_op(ptop::SET, entry_gpa, val, 0);
}

/// Returns the old value; the exchange happened iff it equals `old`.
pub fn ptep_cmpxchg(entry_gpa: u64, old: u64, new: u64) -> u64 {
    pt_op(ptop::CMPXCHG, entry_gpa, old, new)
}

pub fn ptep_clear_bits(entry_gpa: u64, bits: u64) -> u64 {
    pt_op(ptop::CLEAR_BITS, entry_gpa, bits, 0)
}

pub fn read_entry(entry_gpa: u64) -> u64 {
    if let Some(q) = queue() {
        return q.read(entry_gpa);
    }
    // SAFETY: the page-table region is identity-mapped and readable.
    unsafe { core::ptr::read_volatile(entry_gpa as *const u64) }
}

fn pt_table(event: TableEvent, table: u64, level: u64) {
    match lazy() {
        Some(q) => q.push(BatchEntry::PtTable { event, table, level }),
        None => {
            hypercall::call::<calls::PtTable>(PtTableRequest { event, table, level });
        }
    }
}

fn table_alloc(level: u64) -> u64 {
    let t = page_alloc::alloc_table_page();
    guest_assert!(t.is_some(), "out of page-table pages");
    let t = t.unwrap_or(0);
    pt_table(TableEvent::Allocated, t, level);
    super::ptdesc::ptdesc(t).reset();
    t
}

/// Returns a page-table page to the allocator (after the TLBs that may cache
/// walks through it were flushed).
pub fn free_table(t: u64) {
    pt_table(TableEvent::Freed, t, 0);
    page_alloc::free_table_page(t);
}

fn index(va: u64, level: u64) -> u64 {
    (va >> (12 + 9 * (level - 1))) & 511
}

/// `mm->page_table_lock`: serialises populating and freeing page tables
/// (`__pte_alloc`/`pmd_install`, `free_pgtables`).
static PAGE_TABLE_LOCK: crate::sync::SpinLock<()> = crate::sync::SpinLock::new(());

/// The page tables of an address space: the tree under one PGD (what
/// Linux's `mm->pgd` points to), whose slot 0 is the kernel's identity map,
/// with the walkers Linux runs on it (`pte_alloc`, `pmd_clear`,
/// `free_pgd_range`). It is not an mm: the test mm
/// ([`MmStruct`](super::mm_types::MmStruct), Linux's `struct mm_struct`)
/// owns one ([`MmStruct::pt`](super::mm_types::MmStruct::pt)); the
/// self-tests, `bench`, `probe` and `misbehave` build bare ones — no VMAs,
/// locks or flush bookkeeping — to drive the TLB and IOMMU models directly.
pub struct PageTables {
    pub pgd: u64,
}

impl PageTables {
    pub fn new() -> PageTables {
        let pgd = table_alloc(4);
        // The kernel half as the boot tables have it: user-accessible
        // (code runs at CPL3 on it; the boot tables keep the kernel stacks
        // and the shadow region supervisor-only below this entry).
        set_pte(pgd, layout::BOOT_PDPT | pte::P | pte::RW | pte::US);
        PageTables { pgd }
    }

    /// GPA of the PTE for `va`, allocating missing tables (`pte_alloc`).
    pub fn pte_alloc(&self, va: u64) -> u64 {
        self.pte_alloc_with(va, &mut |_| {})
    }

    /// `pte_alloc`, telling `new_table` about every table it allocates.
    pub fn pte_alloc_with(&self, va: u64, new_table: &mut dyn FnMut(u64)) -> u64 {
        guest_assert!(layout::is_user_va(va), "pte_alloc({:#x}) outside the user half", va);
        if let Some(ptep) = self.pte_lookup(va) {
            return ptep;
        }
        let _guard = PAGE_TABLE_LOCK.lock();
        let mut table = self.pgd;
        for level in (2..=4).rev() {
            let slot = table + 8 * index(va, level);
            let e = read_entry(slot);
            table = if e & pte::P != 0 {
                e & pte::ADDR_MASK
            } else {
                let t = table_alloc(level - 1);
                new_table(t);
                set_pte(slot, t | TABLE_FLAGS);
                t
            };
        }
        table + 8 * index(va, 1)
    }

    /// GPA of the PTE for `va` if its tables exist.
    pub fn pte_lookup(&self, va: u64) -> Option<u64> {
        let pmd = self.pmd_entry(va)?;
        let e = read_entry(pmd);
        (e & pte::P != 0).then(|| (e & pte::ADDR_MASK) + 8 * index(va, 1))
    }

    /// GPA of the PMD entry (level 2) for `va` if the upper tables exist.
    pub fn pmd_entry(&self, va: u64) -> Option<u64> {
        let mut table = self.pgd;
        for level in (3..=4).rev() {
            let e = read_entry(table + 8 * index(va, level));
            if e & pte::P == 0 {
                return None;
            }
            table = e & pte::ADDR_MASK;
        }
        Some(table + 8 * index(va, 2))
    }

    /// Frees the last-level table that maps `va` (as `free_pgtables` does
    /// once a range is empty): clears the PMD entry, then frees the table.
    /// Returns the freed table's GPA.
    pub fn free_pte_table(&self, va: u64) -> Option<u64> {
        let table = self.pmd_clear(va)?;
        free_table(table);
        Some(table)
    }

    /// `pmd_clear` of the PMD entry whose PTE table maps `va` (`free_pte_range`):
    /// returns the table, which the caller frees after the TLB flush.
    pub fn pmd_clear(&self, va: u64) -> Option<u64> {
        let _guard = PAGE_TABLE_LOCK.lock();
        let pmd_slot = self.pmd_entry(va)?;
        let e = read_entry(pmd_slot);
        if e & pte::P == 0 {
            return None;
        }
        set_pte(pmd_slot, 0);
        Some(e & pte::ADDR_MASK)
    }

    /// Maps `va` to `pa` with `flags` (P is added).
    pub fn map(&self, va: u64, pa: u64, flags: u64) -> u64 {
        let ptep = self.pte_alloc(va);
        set_pte(ptep, (pa & pte::ADDR_MASK) | flags | pte::P);
        ptep
    }

    /// Frees every page table below the PGD and the PGD (the data pages are
    /// the caller's). The caller must have flushed every TLB that may cache them.
    pub fn destroy(self) {
        free_level(self.pgd, 4, true);
    }
}

impl Default for PageTables {
    fn default() -> Self {
        Self::new()
    }
}

fn free_level(table: u64, level: u64, top: bool) {
    if level > 1 {
        // PGD slot 0 is the shared kernel map, not ours to free.
        let mut i = if top { 1 } else { 0 };
        // SAFETY: `table` is a page of the readable page-table region.
        while let Some(j) = unsafe { crate::arch::next_nonzero_entry(table, i) } {
            let e = read_entry(table + 8 * j);
            if e & pte::P != 0 {
                free_level(e & pte::ADDR_MASK, level - 1, false);
            }
            i = j + 1;
        }
    }
    free_table(table);
}

pub const PAGE: u64 = PAGE_SIZE;
