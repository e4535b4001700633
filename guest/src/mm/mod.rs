//! The guest's memory management for test address spaces. This issue's
//! part: page tables built only through the VMM's page-table ops, a page
//! allocator, and the TLB-flush primitives (local flush, shootdown).

pub mod hooks;
pub mod litmus_shim;
pub mod memory;
pub mod page_alloc;
pub mod pgtable;
pub mod tlb;
