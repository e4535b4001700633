//! Temporary: the mm operations the litmus interpreter calls that the mm
//! model does not have yet, built from the ones it has. Replaced by the
//! real paths (`wp_page_copy`, `try_to_migrate_one`, …) when they land.

use abi::layout::PAGE_SIZE;
use abi::litmus::Perm;

use super::memory::{MmStruct, Segv, VM_READ, VM_WRITE};
use super::pgtable::{self, pte};

fn flags(p: Perm) -> u8 {
    match p {
        Perm::None => 0,
        Perm::Ro => VM_READ,
        Perm::Rw => VM_READ | VM_WRITE,
    }
}

impl MmStruct {
    pub fn setup_page(&self, va: u64, perm: Perm, _shared: bool, init: u64) -> Result<(), Segv> {
        if !self.mmap(va, PAGE_SIZE, VM_READ | VM_WRITE) {
            return Err(Segv);
        }
        self.handle_mm_fault(va, true)?;
        let ptep = self.pt().pte_lookup(va).ok_or(Segv)?;
        let page = pgtable::read_entry(ptep) & pte::ADDR_MASK;
        // SAFETY: the page we just faulted in, identity-mapped.
        unsafe { core::ptr::write_volatile(page as *mut u64, init) };
        if perm != Perm::Rw {
            self.mprotect(va, PAGE_SIZE, flags(perm));
        }
        Ok(())
    }

    pub fn read_kernel_view(&self, va: u64) -> Option<u64> {
        let ptep = self.pt().pte_lookup(va)?;
        let page = pgtable::read_entry(ptep) & pte::ADDR_MASK;
        if page == 0 {
            return None;
        }
        // SAFETY: a mapped data page, identity-mapped.
        Some(unsafe { core::ptr::read_volatile(page as *const u64) })
    }

    pub fn map_vma(&self, va: u64, perm: Perm) -> bool {
        self.mmap(va, PAGE_SIZE, flags(perm))
    }

    pub fn madvise_free(&self, va: u64, len: u64) {
        self.madvise_dontneed(va, len)
    }

    pub fn cow(&self, _va: u64) -> Result<(), Segv> {
        Err(Segv)
    }

    pub fn ksm(&self, _va: u64, _va2: u64) -> bool {
        false
    }

    pub fn migrate(&self, _va: u64) -> Result<(), Segv> {
        Err(Segv)
    }

    pub fn mkclean(&self, va: u64) -> u64 {
        self.read_kernel_view(va).unwrap_or(abi::litmus::VALUE_FAULT)
    }

    pub fn reclaim(&self, _va: u64) {}

    pub fn mremap(&self, _old: u64, _new: u64) -> Result<(), Segv> {
        Err(Segv)
    }

    pub fn alloc(&self, va: u64) -> Result<(), Segv> {
        if !self.mmap(va, PAGE_SIZE, VM_READ | VM_WRITE) {
            return Err(Segv);
        }
        self.handle_mm_fault(va, true)
    }
}
