//! Page tables of a test address space. Entries are read directly (the
//! page-table region is readable) and changed only through the VMM's
//! page-table ops (`set_pte_at`, `ptep_get_and_clear`, … as in Linux's
//! `include/linux/pgtable.h`), so every change is seen by the VMM.

use abi::hypercall::calls::{self, PtOpRequest, PtTableRequest};
use abi::hypercall::{ptop, PtOpKind, TableEvent};
use abi::layout::{self, PAGE_SIZE};

use super::page_alloc;
use crate::{guest_assert, hypercall};

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

/// One page-table op by the VMM; returns the old entry.
pub fn pt_op(kind: PtOpKind, entry_gpa: u64, a: u64, b: u64) -> u64 {
    hypercall::call::<calls::PtOp>(PtOpRequest { kind, entry: entry_gpa, a, b }).old
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
    // SAFETY: the page-table region is identity-mapped and readable.
    unsafe { core::ptr::read_volatile(entry_gpa as *const u64) }
}

fn table_alloc(level: u64) -> u64 {
    let t = page_alloc::alloc_table_page();
    guest_assert!(t.is_some(), "out of page-table pages");
    let t = t.unwrap_or(0);
    hypercall::call::<calls::PtTable>(PtTableRequest { event: TableEvent::Allocated, table: t, level });
    super::ptdesc::ptdesc(t).reset();
    t
}

/// Returns a page-table page to the allocator (after the TLBs that may cache
/// walks through it were flushed).
pub fn free_table(t: u64) {
    hypercall::call::<calls::PtTable>(PtTableRequest { event: TableEvent::Freed, table: t, level: 0 });
    page_alloc::free_table_page(t);
}

fn index(va: u64, level: u64) -> u64 {
    (va >> (12 + 9 * (level - 1))) & 511
}

/// `mm->page_table_lock`: serialises populating and freeing page tables
/// (`__pte_alloc`/`pmd_install`, `free_pgtables`).
static PAGE_TABLE_LOCK: crate::sync::SpinLock<()> = crate::sync::SpinLock::new(());

/// A test address space: a PGD whose slot 0 is the kernel's identity map.
pub struct Mm {
    pub pgd: u64,
}

impl Mm {
    pub fn new() -> Mm {
        let pgd = table_alloc(4);
        set_pte(pgd, layout::BOOT_PDPT | pte::P | pte::RW);
        Mm { pgd }
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

impl Default for Mm {
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
