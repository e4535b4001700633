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
}

const _: () = assert!(core::mem::size_of::<BootInfo>() == 12 * 8);

pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"SHTDOWN1");
pub const BOOT_INFO_VERSION: u64 = 2;

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
