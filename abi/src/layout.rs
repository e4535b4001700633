//! Guest-physical memory map. The guest runs identity-mapped (VA == GPA) in
//! the low half set up by the VMM, so these are also the guest's addresses.
//!
//! ```text
//! 0x0000_0000  (reserved, never mapped by the guest's own allocator)
//! 0x0000_1000  BootInfo
//! 0x0000_2000  kernel command line (up to 4 KiB)
//! 0x0000_3000  GDT written by the VMM
//! 0x0000_4000  PVH `hvm_start_info` + memory map (images with a PVH note)
//! 0x0001_0000  boot page tables (PML4, PDPT, 4 PDs: 4 GiB identity, 2 MiB pages)
//! 0x0020_0000  per-vCPU hypercall mailboxes, one 4 KiB page each
//! 0x0040_0000  kernel image (ELF linked here), up to KERNEL_MAX bytes
//! 0x0100_0000  per-vCPU stacks, STACK_SIZE each
//! 0x0200_0000  shared area: litmus blob, state page, kernel words, and at
//!              +0x40_0000 the trace area (`abi::trace::area`)
//! 0x0300_0000  page-table region: every page table of a test mm lives here;
//!              a read-only memslot under the lazy/evict TLB models, so the
//!              guest changes PTEs only through page-table-op hypercalls
//! 0x0380_0000  shadow region: the VMM's per-vCPU shadow page tables (the
//!              modelled TLBs), read-only to the guest
//! FREE_START   free memory for the guest's page allocator (test data pages)
//! ```
//!
//! Virtual addresses: PML4 slot 0 is the kernel's identity map (shared by
//! every address space); slots 1..=255 are the user half that test address
//! spaces use ([`USER_BASE`]..[`USER_END`]).

pub const PAGE_SIZE: u64 = 4096;

pub const BOOT_INFO: u64 = 0x1000;
pub const CMDLINE: u64 = 0x2000;
pub const CMDLINE_MAX: u64 = 0x1000;
pub const GDT: u64 = 0x3000;
/// PVH boot only: `hvm_start_info` and its memory map (for images with a PVH note).
pub const PVH_START_INFO: u64 = 0x4000;
pub const PVH_MEMMAP: u64 = 0x4100;

/// Boot page tables: PML4, one PDPT, four PDs of 2 MiB pages (first 4 GiB).
pub const BOOT_PML4: u64 = 0x1_0000;
pub const BOOT_PDPT: u64 = 0x1_1000;
pub const BOOT_PD: u64 = 0x1_2000;
pub const BOOT_PD_COUNT: u64 = 4;

/// GDT selectors the VMM sets up (and the guest's interrupt frames use).
pub const SEL_CODE64: u16 = 0x08;
pub const SEL_DATA: u16 = 0x10;

pub const MAILBOX_BASE: u64 = 0x20_0000;
/// Hard upper bound on vCPUs this memory map supports.
pub const MAX_VCPUS: u64 = 256;

pub const KERNEL_BASE: u64 = 0x40_0000;
pub const KERNEL_MAX: u64 = 0xC0_0000;

pub const STACK_BASE: u64 = 0x100_0000;
pub const STACK_SIZE: u64 = 0x1_0000;

pub const SHARED_BASE: u64 = 0x200_0000;
pub const SHARED_SIZE: u64 = 0x100_0000;

/// The litmus blob the VMM writes for the guest interpreter (`abi::litmus`).
pub const LITMUS_BLOB: u64 = SHARED_BASE;
pub const LITMUS_BLOB_MAX: u64 = 0x20_0000;
/// Litmus run state the VMM's watchdog reads (`abi::hypercall::litmus_state`).
pub const LITMUS_STATE: u64 = SHARED_BASE + 0x20_0000;
/// Litmus kernel words (`var` locations and flags), 8 bytes each, one page.
pub const LITMUS_VARS: u64 = LITMUS_STATE + 0x1000;
/// Trace area: the global sequence counter and per-vCPU record rings (`abi::trace`).
pub const TRACE_BASE: u64 = SHARED_BASE + 0x40_0000;
pub const TRACE_SIZE: u64 = 0xC0_0000;
const _: () = assert!(TRACE_BASE + TRACE_SIZE <= SHARED_BASE + SHARED_SIZE);

pub const PT_BASE: u64 = SHARED_BASE + SHARED_SIZE;
pub const PT_SIZE: u64 = 0x80_0000;

pub const SHADOW_BASE: u64 = PT_BASE + PT_SIZE;
pub const SHADOW_SIZE: u64 = 0x80_0000;

pub const FREE_START: u64 = SHADOW_BASE + SHADOW_SIZE;

/// The user half: where test address spaces map their pages.
pub const USER_BASE: u64 = 0x0000_0080_0000_0000;
pub const USER_END: u64 = 0x0000_8000_0000_0000;

pub const fn in_pt_region(gpa: u64) -> bool {
    gpa >= PT_BASE && gpa < PT_BASE + PT_SIZE
}

pub const fn is_user_va(va: u64) -> bool {
    va >= USER_BASE && va < USER_END
}

/// Smallest guest RAM the map above works with.
pub const MIN_MEM: u64 = FREE_START + 0x100_0000;

pub const fn mailbox(cpu: u64) -> u64 {
    MAILBOX_BASE + cpu * PAGE_SIZE
}

/// Initial stack pointer of `cpu` (16-byte aligned, grows down).
pub const fn stack_top(cpu: u64) -> u64 {
    STACK_BASE + (cpu + 1) * STACK_SIZE
}

const _: () = assert!(MAILBOX_BASE + MAX_VCPUS * PAGE_SIZE <= KERNEL_BASE);
const _: () = assert!(KERNEL_BASE + KERNEL_MAX <= STACK_BASE);
const _: () = assert!(STACK_BASE + MAX_VCPUS * STACK_SIZE <= SHARED_BASE);

/// May the VMM or the device write `len` bytes at `gpa` on the guest's
/// behalf (DMA kernel words, device programs, wait-status words, page
/// requests)? Everything but the page-table and shadow regions: page tables
/// change only through page-table ops, and the shadow tables are the VMM's.
/// Whether the range is RAM at all is the memory access's own check.
pub const fn guest_writable(gpa: u64, len: u64) -> bool {
    match gpa.checked_add(len) {
        Some(end) => end <= PT_BASE || gpa >= FREE_START,
        None => false,
    }
}
