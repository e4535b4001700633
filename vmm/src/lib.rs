//! shootdown's VMM: boots the guest kernel on KVM with N vCPUs and serves its
//! hypercalls. Layout: `boot` (image checks, ELF load, boot page tables),
//! `vstate` (the VM and its vCPU threads), `hypercall` (the guest's requests),
//! `report` (self-test accounting), `bench`.

pub mod bench;
pub mod boot;
pub mod dma;
pub mod error;
pub mod explore_run;
pub mod hypercall;
pub mod litmus_bench;
pub mod litmus_run;
pub mod probe;
pub mod progress;
pub mod report;
pub mod results_cmd;
pub mod shadow;
pub mod trace;
pub mod trace_cmd;
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
