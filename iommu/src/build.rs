//! Builds x86-64 page tables in guest memory: for tests, the fuzz harness,
//! benchmarks, and VMM-side tools that need an address space without a
//! guest. Tables come from a bump allocator over a caller-given GPA range.

use vm_memory::{GuestAddress, GuestMemory, GuestMemoryMmap};

use crate::mem::{self, MemError};
use crate::pagetable::{pte, va_index, PageSize};

/// Why a mapping could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("page-table pool exhausted")]
    OutOfTables,
    #[error("a large page already maps va {va:#x}")]
    LargePageInTheWay { va: u64 },
    #[error("va {va:#x} / pa {pa:#x} not aligned to the page size")]
    Misaligned { va: u64, pa: u64 },
    #[error(transparent)]
    Mem(#[from] MemError),
}

/// Flags of intermediate entries [`PageTableBuilder::map`] creates: present,
/// writable, user — the leaf alone decides the rights.
pub const TABLE_FLAGS: u64 = pte::P | pte::RW | pte::US;

/// Guest RAM of `size` bytes at GPA 0 (panics only if the host cannot mmap).
pub fn guest_memory(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size)]).expect("mmap guest memory")
}

/// A page-table tree under construction.
#[derive(Clone, Debug)]
pub struct PageTableBuilder {
    next: u64,
    end: u64,
    root: u64,
    tables: Vec<u64>,
}

impl PageTableBuilder {
    /// Allocates tables from `[pool_start, pool_end)` (4 KiB aligned) and
    /// makes an empty root.
    pub fn new<M: GuestMemory + ?Sized>(mem: &M, pool_start: u64, pool_end: u64) -> Result<Self, BuildError> {
        let mut b =
            PageTableBuilder { next: (pool_start + 0xfff) & !0xfff, end: pool_end, root: 0, tables: Vec::new() };
        b.root = b.alloc_table(mem)?;
        Ok(b)
    }

    /// The root (CR3) of the tree.
    pub fn root(&self) -> u64 {
        self.root
    }
    /// Every table page allocated so far, root first.
    pub fn tables(&self) -> &[u64] {
        &self.tables
    }

    /// A zeroed table page from the pool.
    pub fn alloc_table<M: GuestMemory + ?Sized>(&mut self, mem: &M) -> Result<u64, BuildError> {
        if self.next + 0x1000 > self.end {
            return Err(BuildError::OutOfTables);
        }
        let t = self.next;
        self.next += 0x1000;
        zero_page(mem, t)?;
        self.tables.push(t);
        Ok(t)
    }

    /// Maps `va` to `pa` with a 4 KiB page; returns the PTE's GPA.
    pub fn map<M: GuestMemory + ?Sized>(&mut self, mem: &M, va: u64, pa: u64, flags: u64) -> Result<u64, BuildError> {
        self.map_sized(mem, va, pa, PageSize::Size4K, flags, TABLE_FLAGS)
    }

    /// Maps a page of `size`: the leaf is `pa | flags` (plus `PS` for large
    /// pages), missing intermediate tables are created with `table_flags`.
    /// Returns the leaf's GPA.
    pub fn map_sized<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        va: u64,
        pa: u64,
        size: PageSize,
        flags: u64,
        table_flags: u64,
    ) -> Result<u64, BuildError> {
        let mask = size.bytes() - 1;
        if va & mask != 0 || pa & mask != 0 {
            return Err(BuildError::Misaligned { va, pa });
        }
        let mut table = self.root;
        for level in (size.level() + 1..=4).rev() {
            let gpa = table + va_index(va, level) * 8;
            let e = mem::load_u64(mem, gpa)?;
            if e & pte::P == 0 {
                let t = self.alloc_table(mem)?;
                mem::store_u64(mem, gpa, t | table_flags)?;
                table = t;
            } else if e & pte::PS != 0 && level != 4 {
                return Err(BuildError::LargePageInTheWay { va });
            } else {
                table = e & pte::ADDR_MASK;
            }
        }
        let gpa = table + va_index(va, size.level()) * 8;
        let ps = if size == PageSize::Size4K { 0 } else { pte::PS };
        mem::store_u64(mem, gpa, (pa & pte::ADDR_MASK) | flags | ps)?;
        Ok(gpa)
    }

    /// GPA of the entry of `level` for `va`, following present non-leaf
    /// entries from the root (None if the walk stops above `level`).
    pub fn entry_gpa<M: GuestMemory + ?Sized>(&self, mem: &M, va: u64, level: u8) -> Option<u64> {
        let mut table = self.root;
        for l in (level + 1..=4).rev() {
            let e = mem::load_u64(mem, table + va_index(va, l) * 8).ok()?;
            if e & pte::P == 0 || (l < 4 && e & pte::PS != 0) {
                return None;
            }
            table = e & pte::ADDR_MASK;
        }
        Some(table + va_index(va, level) * 8)
    }
}

/// Stores zeros in the 4 KiB page at `gpa`.
pub fn zero_page<M: GuestMemory + ?Sized>(mem: &M, gpa: u64) -> Result<(), MemError> {
    (0..512).try_for_each(|i| mem::store_u64(mem, gpa + i * 8, 0))
}
