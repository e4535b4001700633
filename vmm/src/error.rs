//! Errors that stop the VMM before or while it sets up a VM. Each becomes one
//! line on stderr and exit status 2 (see `main.rs`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open /dev/kvm: {0}")]
    KvmUnavailable(String),
    #[error("{path}: {reason}")]
    BadImage { path: PathBuf, reason: String },
    #[error("cannot read guest image {path}: {err}")]
    ReadImage { path: PathBuf, err: std::io::Error },
    #[error("--vcpus {requested}: {reason}")]
    BadVcpus { requested: u64, reason: String },
    #[error("--mem {requested} MiB: {reason}")]
    BadMemory { requested: u64, reason: String },
    #[error("--cmdline: {0}")]
    BadCmdline(String),
    #[error("KVM {what} failed: {err}")]
    Kvm { what: &'static str, err: kvm_ioctls::Error },
    #[error("guest memory: {0}")]
    Memory(String),
    /// Litmus files or policies that did not check (already rendered with file:line:col).
    #[error("{0}")]
    Litmus(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for mapping a KVM ioctl error with what we were doing.
pub fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |err| Error::Kvm { what, err }
}
