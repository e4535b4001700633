//! shootdown's VMM: boots the guest kernel on KVM with N vCPUs and serves
//! it. Layers, imports pointing down only:
//!
//! ```text
//! commands/   the `vmm` subcommands: build services, run, print results
//! services/   what the VMM does for the guest (hypercalls, per-mode results)
//! vstate/     the VM, its vCPUs, exit routing (buses, hypercall table)
//! devices/    serial, ports, IOMMU registers, DMA engine; shadow.rs (the
//!             modelled TLBs); boot.rs (image checks and loading)
//! abi         the wire format shared with the guest
//! ```
//!
//! See `docs/architecture.md`.

pub mod boot;
pub mod commands;
pub mod config;
pub mod devices;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod input;
pub mod logger;
pub mod services;
pub mod shadow;
pub mod vstate;

/// The guest kernel built from `guest/` by `build.rs`, booted when no `--guest` is given.
pub static DEFAULT_GUEST: &[u8] = include_bytes!(env!("SHOOTDOWN_GUEST_IMAGE"));

/// Exit statuses of the `vmm` process.
pub mod status {
    /// Everything ran and passed.
    pub const OK: i32 = 0;
    /// The guest ran to the end but a test failed.
    pub const TESTS_FAILED: i32 = 1;
    /// Bad input or set-up error before the guest ran (one line on stderr).
    pub const SETUP_ERROR: i32 = 2;
    /// The guest misbehaved (exception, assertion, triple fault, stray
    /// access, bad hypercall); reported with vCPU and RIP.
    pub const GUEST_ERROR: i32 = 3;
    /// The watchdog fired; every vCPU's RIP/RSP/CR3 was printed.
    pub const TIMEOUT: i32 = 4;
}
