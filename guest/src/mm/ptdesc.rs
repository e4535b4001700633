//! Page-table descriptors (`struct ptdesc`): one per page of the
//! page-table region, holding the split page-table lock of a PTE table
//! (`pte_lockptr`) and the per-table flush bookkeeping of the `per-ptl`
//! and `generation` flush schemes (seed 002's proposals).
//!
//! [`PteTable`] is `pte_offset_map_lock` as a guard: PTE reads and writes go
//! through it while the PTL is held, so every change is a trapped page-table
//! op, a trace record and (for the hooks) a known fact; dropping it is
//! `pte_unmap_unlock`.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use abi::layout::{self, PAGE_SIZE};
use abi::litmus::Hook;

use super::hooks::hook;
use super::pgtable::{self, pt_op};
use crate::trace::{self, Kind};
use abi::hypercall::ptop;

const PT_PAGES: usize = (layout::PT_SIZE / PAGE_SIZE) as usize;
/// Bytes of virtual address space one PTE table maps.
pub const PMD_SIZE: u64 = 1 << 21;

pub struct PtDesc {
    /// The split PTL.
    ptl: AtomicBool,
    /// `flush=per-ptl`: operations with a deferred flush of entries of this
    /// table (raised under the PTL, lowered when their flush completed).
    pub flush_pending: AtomicU32,
    /// `flush=generation`: the mm generation of the last deferred change.
    pub tlb_gen: AtomicU64,
    /// Bumped each time the page becomes a table again: a deferral counted
    /// on the table's previous life is not taken off its new one.
    pub epoch: AtomicU32,
}

static PTDESC: [PtDesc; PT_PAGES] = [const {
    PtDesc {
        ptl: AtomicBool::new(false),
        flush_pending: AtomicU32::new(0),
        tlb_gen: AtomicU64::new(0),
        epoch: AtomicU32::new(0),
    }
}; PT_PAGES];

/// The descriptor of the page-table page at `table`.
pub fn ptdesc(table: u64) -> &'static PtDesc {
    &PTDESC[((table.wrapping_sub(layout::PT_BASE)) / PAGE_SIZE) as usize % PT_PAGES]
}

impl PtDesc {
    /// A page just became a page table: no flush bookkeeping yet.
    pub fn reset(&self) {
        self.flush_pending.store(0, Ordering::Relaxed);
        self.tlb_gen.store(0, Ordering::Relaxed);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// A PTE table whose PTL this CPU holds.
pub struct PteTable {
    table: u64,
    /// First virtual address the table maps.
    base: u64,
    /// A PTE was changed while the lock was held (`after_ptl_release`
    /// fires only then: releasing a lock that protected nothing new is not
    /// a point any mailing-list trace talks about).
    changed: bool,
}

impl PteTable {
    /// `pte_offset_map_lock` for the table at `table` that maps `va`'s 2 MiB.
    pub fn lock(table: u64, va: u64) -> PteTable {
        let d = ptdesc(table);
        let free = abi::explore::Guard {
            kind: abi::explore::guard::BYTE_ZERO,
            addr: &d.ptl as *const AtomicBool as u64,
            value: 0,
            object: abi::explore::object::MEM,
        };
        super::locking::acquire(abi::trace::lock_kind::PTL, table, super::locking::Free::When(free), || {
            d.ptl.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
        });
        let base = va & !(PMD_SIZE - 1);
        trace::emit(Kind::PtlAcquire, base, table, 0);
        hook(Hook::AfterPtlAcquire);
        PteTable { table, base, changed: false }
    }

    pub fn table(&self) -> u64 {
        self.table
    }
    pub fn desc(&self) -> &'static PtDesc {
        ptdesc(self.table)
    }
    fn ptep(&self, va: u64) -> u64 {
        self.table + 8 * ((va >> 12) & 511)
    }

    /// `ptep_get`.
    pub fn get(&self, va: u64) -> u64 {
        pgtable::read_entry(self.ptep(va))
    }

    fn changed(&mut self, va: u64, old: u64, new: u64) {
        self.changed = true;
        trace::emit(Kind::PteChange, va & !(PAGE_SIZE - 1), old, new);
    }

    /// `set_pte_at`; returns the old entry.
    pub fn set(&mut self, va: u64, new: u64) -> u64 {
        let old = pt_op(ptop::SET, self.ptep(va), new, 0);
        self.changed(va, old, new);
        hook(Hook::AfterPteSet);
        old
    }

    /// `ptep_get_and_clear`: atomic against the walkers' A/D updates.
    pub fn get_and_clear(&mut self, va: u64) -> u64 {
        let old = pt_op(ptop::CLEAR, self.ptep(va), 0, 0);
        self.changed(va, old, 0);
        hook(Hook::AfterPteClear);
        old
    }

    /// Atomically clears `bits` (`ptep_set_wrprotect` clears RW); returns the old entry.
    pub fn clear_bits(&mut self, va: u64, bits: u64) -> u64 {
        let old = pt_op(ptop::CLEAR_BITS, self.ptep(va), bits, 0);
        self.changed(va, old, old & !bits);
        hook(Hook::AfterPteSet);
        old
    }

    /// Atomically sets `bits` (`ptep_set_access_flags` for an upgrade).
    pub fn set_bits(&mut self, va: u64, bits: u64) -> u64 {
        let old = pt_op(ptop::SET_BITS, self.ptep(va), bits, 0);
        self.changed(va, old, old | bits);
        hook(Hook::AfterPteSet);
        old
    }
}

impl Drop for PteTable {
    /// `pte_unmap_unlock`.
    fn drop(&mut self) {
        ptdesc(self.table).ptl.store(false, Ordering::Release);
        trace::emit(Kind::PtlRelease, self.base, self.table, 0);
        if self.changed {
            hook(Hook::AfterPtlRelease);
        }
    }
}
