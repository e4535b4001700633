//! The guest <-> VMM wire format of shootdown, defined once for both sides.
//!
//! `no_std`, no dependencies: the guest kernel (x86_64-unknown-none) and the
//! host VMM both compile this crate, so a layout change is a compile-time
//! change on both sides of the wire.

#![no_std]

pub mod config;
pub mod dma;
pub mod explore;
pub mod hypercall;
pub mod iommu;
pub mod layout;
pub mod limits;
pub mod litmus;
pub mod policy;
pub mod rng;
pub mod trace;

/// Boot information the VMM writes at [`layout::BOOT_INFO`] before any vCPU runs.
///
/// Every vCPU enters the guest's 64-bit entry point with
/// `rdi` = its CPU index, `rsi` = the GPA of this struct and
/// `rsp` = the top of its own stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// [`BOOT_INFO_VERSION`].
    pub version: u64,
    pub num_vcpus: u64,
    /// Bytes of guest RAM starting at GPA 0.
    pub mem_size: u64,
    /// GPA and length of the kernel command line (no NUL terminator needed).
    pub cmdline_addr: u64,
    pub cmdline_len: u64,
    /// TSC frequency in kHz as KVM reports it (0 if unknown).
    pub tsc_khz: u64,
    /// GPA range the loaded kernel image occupies.
    pub kernel_start: u64,
    pub kernel_end: u64,
    /// First GPA the guest may use freely for its own allocations.
    pub free_start: u64,
    /// What to run: a [`config::GuestMode`] value.
    pub mode: u64,
    /// The mode's argument (litmus: first iteration; probe: tries).
    pub mode_arg: u64,
    /// How long a waiting guest thread spins (natively, at CPL3) before it
    /// parks with `WAIT`, in ns: 0 when the vCPUs do not each have a host
    /// CPU of their own — spinning then only keeps the thread it waits for
    /// off the CPU.
    pub spin_before_park_ns: u64,
}

const _: () = assert!(core::mem::size_of::<BootInfo>() == 13 * 8);

pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"SHTDOWN1");
pub const BOOT_INFO_VERSION: u64 = 3;

/// Keeping the host's view of the modelled TLBs coherent ("zapping").
///
/// Guest code at CPL3 runs natively on the host KVM's own shadow of the
/// VMM's shadow page tables (on `kvm_pvm`; on VMX/SVM hosts on the
/// hardware TLB's copy). The host keeps that copy coherent with *guest*
/// stores to the tables (it write-tracks them), not with the VMM's, so
/// every shadow entry the VMM removes — a flush, a `SWITCH_MM`, an
/// `evict:P` eviction, an emptied table — is listed in the vCPU's zap
/// list ([`crate::layout::zap_list`]) and the guest clears it once more
/// with a CPL0 store through the writable alias, then reloads CR3
/// (dropping the hardware TLB's copies on hosts that have one). Code that
/// made the FLUSH/SWITCH_MM itself at CPL0 drains the list before it goes
/// on; otherwise the VMM raises [`VECTOR`] and the handler drains it
/// before any CPL3 instruction runs. Additions need nothing: the host
/// finds a not-present entry in its copy and walks the tables afresh.
pub mod zap {
    /// Offset of the count of slots listed.
    pub const COUNT: u64 = 0;
    /// Offset of a word the VMM sets when slots did not fit: after clearing
    /// these, write [`crate::hypercall::ZAP_PORT`] for the next ones.
    pub const MORE: u64 = 8;
    /// Offset of the first slot (GPAs in the shadow region).
    pub const SLOTS: u64 = 16;
    /// Slots a list holds.
    pub const CAPACITY: u64 = (crate::layout::PAGE_SIZE - SLOTS) / 8;
    /// The interrupt the VMM raises when the list holds slots no code on
    /// the way back to CPL3 will clear.
    pub const VECTOR: u64 = 0xf0;
}

/// Exit status the guest writes to [`hypercall::EXIT_PORT`]. The VMM turns it
/// into its own process exit status.
pub mod exit {
    /// All work done, nothing failed.
    pub const SUCCESS: u32 = 0;
    /// Work done, at least one test failed.
    pub const TESTS_FAILED: u32 = 1;
    /// A fatal guest error (assertion, unexpected exception); already reported.
    pub const GUEST_PANIC: u32 = 3;
}
