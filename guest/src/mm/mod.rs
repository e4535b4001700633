//! The guest's model of the Linux mm for test address spaces, with Linux's
//! file layout and names: `mm_types` (mm_struct, VMAs), `memory` (faults,
//! zap, fork's CoW), `mmap`, `mprotect`, `madvise`, `rmap`, `vmscan`,
//! `swap`, `filemap`, `ksm`, `migrate`, `mremap`; `mmu_gather` and
//! `mmu_notifier` with every flush scheme and notifier placement the
//! policy selects (`policy`); mmap_lock, per-VMA and page locks
//! (`locking`); split page-table locks (`ptdesc`); TLB
//! flushing (`tlb`, `flush`); `struct page` (`page`) and the allocator
//! (`page_alloc`); page tables built only through the VMM's trapped
//! page-table ops (`pgtable`); named hook points (`hooks`).

pub mod filemap;
pub mod flush;
pub mod hooks;
pub mod ksm;
pub mod litmus_ops;
pub mod locking;
pub mod madvise;
pub mod memory;
pub mod migrate;
pub mod mm_types;
pub mod mmap;
pub mod mmu_gather;
pub mod mmu_notifier;
pub mod mprotect;
pub mod mremap;
pub mod page;
pub mod page_alloc;
pub mod pgtable;
pub mod policy;
pub mod ptdesc;
pub mod rmap;
pub mod swap;
pub mod tlb;
pub mod vmscan;
