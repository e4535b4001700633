//! The mm operations the litmus interpreter and the self-tests set up
//! locations with (the others are the mm model's own entry points:
//! `madvise_dontneed`, `cow`, `migrate`, …), each under the locks its
//! system call takes.

use abi::layout::PAGE_SIZE;
use abi::litmus::Perm;

use super::filemap;
use super::locking::{self, mmap_write_lock};
use super::mm_types::{MmStruct, Segv, VM_READ, VM_WRITE};

/// VMA flags of a litmus permission.
pub fn perm_flags(p: Perm) -> u8 {
    match p {
        Perm::None => 0,
        Perm::Ro => VM_READ,
        Perm::Rw => VM_READ | VM_WRITE,
    }
}

impl MmStruct {
    /// A page location: a one-page VMA (anonymous, or a shared one-page
    /// file whose content is `init`), populated with first word `init`
    /// (`mmap(MAP_POPULATE)`, under mmap_lock). Returns the file id of a
    /// shared page.
    pub fn setup_page(&self, va: u64, perm: Perm, shared: bool, init: u64) -> Result<Option<usize>, Segv> {
        let flags = perm_flags(perm);
        let _w = mmap_write_lock(self);
        let file = if shared {
            let f = filemap::create_file(self, init).ok_or(Segv)?;
            if !self.mmap_file(va, flags, f) {
                return Err(Segv);
            }
            Some(f)
        } else {
            if !self.mmap(va, PAGE_SIZE, flags) {
                return Err(Segv);
            }
            None
        };
        self.populate(va, flags, file, init)?;
        Ok(file)
    }

    /// `mmap L rw|ro`: an anonymous VMA, populated on fault.
    pub fn map_vma(&self, va: u64, perm: Perm) -> bool {
        let _w = mmap_write_lock(self);
        self.mmap(va, PAGE_SIZE, perm_flags(perm))
    }

    /// `alloc L`: map a fresh anonymous page at L (the allocator hands out
    /// the most recently freed page first): `mmap` under the write lock,
    /// then a write fault under the fault path's lock.
    pub fn alloc(&self, va: u64) -> Result<(), Segv> {
        {
            let _w = mmap_write_lock(self);
            if !self.mmap(va, PAGE_SIZE, VM_READ | VM_WRITE) {
                return Err(Segv);
            }
        }
        let _l = locking::lock_for_fault(self, va);
        self.handle_mm_fault(va, true)
    }
}
