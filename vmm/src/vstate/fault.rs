//! How a run ends, and what a misbehaving guest did: typed, so callers
//! match on causes and messages are written in one place.

use std::sync::Arc;

use abi::hypercall::{DecodeError, Op, DATA_LEN};

/// A guest bug: reported with vCPU and RIP, ends the VM, never panics the VMM.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GuestFault {
    /// An exception the guest did not recover from (its handler reported it).
    #[error("unhandled exception {} (vector {vector}), error code {error_code:#x}{}, RSP {rsp:#x}",
        abi::hypercall::vector_name(*vector), cr2.map(|c| format!(", CR2 {c:#x}")).unwrap_or_default())]
    Exception { vector: u64, error_code: u64, rip: u64, cr2: Option<u64>, rsp: u64 },
    /// A fatal guest assertion.
    #[error("guest assertion failed at {file}:{line}: {message}")]
    Assertion { file: String, line: u64, message: String },
    /// A malformed hypercall.
    #[error("bad hypercall: {0}")]
    BadHypercall(#[from] HypercallError),
    /// A hypercall the VMM could not carry out.
    #[error("{source}")]
    Service {
        op: Op,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// A direct store into the read-only page-table region.
    #[error(
        "stray {len}-byte store of {value:#x} to page-table memory at GPA {gpa:#x} \
         (page tables change only through page-table-op hypercalls; the store was not applied)"
    )]
    StrayPageTableStore { gpa: u64, value: u64, len: usize },
    /// An access to guest-physical memory nothing backs.
    #[error("stray {len}-byte {} unbacked address {addr:#x}",
        match value { Some(v) => format!("write of {v:#x} to"), None => "read of".to_string() })]
    StrayAccess { addr: u64, len: usize, value: Option<u64> },
    #[error("triple fault (KVM_EXIT_SHUTDOWN)")]
    TripleFault,
    /// Any other exit the guest should never cause (HLT to userspace, a
    /// failed entry, an emulation failure, a system event).
    #[error("{0}")]
    BadExit(String),
}

impl GuestFault {
    /// The RIP the fault itself names (an exception's), if any; otherwise the
    /// vCPU's current RIP is reported.
    pub fn rip(&self) -> Option<u64> {
        match self {
            GuestFault::Exception { rip, .. } => Some(*rip),
            _ => None,
        }
    }

    /// A hypercall that could not be carried out, with its cause.
    pub fn service(op: Op, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        GuestFault::Service { op, source: Arc::from(source.into()) }
    }

    /// A hypercall rejected for its arguments (`reason` says which and why).
    pub fn rejected(op: Op, reason: impl std::fmt::Display) -> Self {
        GuestFault::BadHypercall(HypercallError::Rejected { op, reason: reason.to_string() })
    }
}

/// Why a hypercall was malformed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HypercallError {
    #[error("unknown op {0:#x}")]
    UnknownOp(u64),
    #[error("{} served by no service in this run", .0.name())]
    NotServed(Op),
    #[error("{op}: {err}", op = .0.name(), err = .1)]
    Decode(Op, DecodeError),
    #[error("op {op} data length {len} exceeds the mailbox ({DATA_LEN} bytes)")]
    DataTooLong { op: u64, len: u64 },
    #[error("mailbox not accessible: {0}")]
    Mailbox(String),
    #[error("{reason}")]
    Rejected { op: Op, reason: String },
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum EndReason {
    /// The guest wrote this status to the exit port.
    GuestExit(u32),
    /// The guest misbehaved.
    GuestError { vcpu: u64, rip: u64, fault: GuestFault },
    /// The watchdog fired; where every vCPU was.
    Timeout { dumps: Vec<VcpuDump> },
    /// A service's watch stopped the VM (e.g. a litmus iteration that made
    /// no progress); the service knows the details.
    Stopped { by: &'static str },
    /// The user interrupted the run (SIGINT/SIGTERM).
    Interrupted,
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndReason::GuestExit(s) => write!(f, "exit {s}"),
            EndReason::GuestError { vcpu, rip, fault } => {
                write!(f, "guest error on vCPU {vcpu} at RIP {rip:#x}: {fault}")
            }
            EndReason::Timeout { .. } => f.write_str("watchdog"),
            EndReason::Stopped { by } => f.write_str(by),
            EndReason::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// Where a vCPU was when the watchdog fired.
#[derive(Debug, Clone)]
pub struct VcpuDump {
    pub vcpu: u64,
    pub rip: Option<u64>,
    pub rsp: Option<u64>,
    pub cr3: Option<u64>,
    pub halted: bool,
}
