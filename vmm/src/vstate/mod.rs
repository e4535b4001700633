//! The VM and its vCPUs (named after Firecracker's `vstate`): KVM set-up,
//! the vCPU loop, exit routing through buses, the hypercall table, and the
//! interface services plug into. Nothing here knows a mode or an operation.

pub mod bus;
pub mod exit;
pub mod fault;
pub mod hypercall;
pub mod service;
pub mod vcpu;
pub mod vm;

pub use bus::{Bus, BusDevice, Flow};
pub use exit::{route, Buses, Exit, ExitHook, NoRegs, VcpuCtx, VcpuRegs};
pub use fault::{EndReason, GuestFault, HypercallError, VcpuDump};
pub use hypercall::{Call, HypercallHandler, HypercallTable, Reply};
pub use service::{GuestClock, MsiSender, Service, SetupError, VmSetup, Watch, Wiring};
pub use vm::{RunOutcome, VmConfig, VmError};
#[cfg(test)]
mod tests;
