//! The VM and its vCPUs (named after Firecracker's `vstate`).

pub mod vcpu;
pub mod vm;
