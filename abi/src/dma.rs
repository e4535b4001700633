//! Device programs for the emulated DMA engine: a header plus op records in
//! guest memory, submitted with the `DMA_SUBMIT` hypercall and run by a VMM
//! thread through the IOMMU, concurrently with the vCPUs. The engine writes
//! each op's result into its record and `DONE` into the header's status.
//! (Litmus device threads compile to the same primitives.)

/// Program header at the submitted GPA (8-byte aligned); ops follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgramHeader {
    pub pasid: u64,
    pub nops: u64,
    /// `status::*`, written by the engine.
    pub status: u64,
    pub reserved: u64,
}

/// One op. `op` = `op::*` | flags; `va` is a device virtual address of the
/// bound mm (or, for WAIT/SIGNAL, the GPA of a shared kernel word).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OpRecord {
    pub op: u64,
    pub va: u64,
    pub value: u64,
    /// Written by the engine: the loaded/old value, or `FAULT` / `STALE_WALK`.
    pub result: u64,
}

pub const HEADER_SIZE: u64 = core::mem::size_of::<ProgramHeader>() as u64;
pub const OP_SIZE: u64 = core::mem::size_of::<OpRecord>() as u64;
/// Most ops one program may have.
pub const MAX_OPS: u64 = 4096;

pub mod op {
    pub const LOAD: u64 = 1;
    pub const STORE: u64 = 2;
    pub const XCHG: u64 = 3;
    pub const FETCH_ADD: u64 = 4;
    /// Translate only (fill the IOTLB).
    pub const PREFETCH: u64 = 5;
    /// Spin until the kernel word at GPA `va` equals `value`.
    pub const WAIT_EQ: u64 = 6;
    /// Store `value` to the kernel word at GPA `va`.
    pub const SIGNAL: u64 = 7;
    /// Sleep `value` microseconds.
    pub const DELAY_US: u64 = 8;
    /// Atomically add `value` to the kernel word at GPA `va` (result = old value).
    pub const KADD: u64 = 9;
    /// Spin until the kernel word at GPA `va` differs from `value`.
    pub const WAIT_NE: u64 = 10;
    /// Spin until the kernel word at GPA `va` is at least `value`.
    pub const WAIT_GE: u64 = 11;
    pub const KIND_MASK: u64 = 0xff;
    /// Bits 32..64 are free for the submitter (litmus: the op's source pc).
    pub const TAG_SHIFT: u32 = 32;
    /// On a translation fault, wait for the guest to fix the page tables
    /// and retry (up to a time limit) instead of recording `FAULT`.
    pub const RETRY: u64 = 1 << 8;
    /// `value` is the index of an earlier op of this program whose result
    /// is the operand (a litmus device thread's register source).
    pub const VALUE_FROM: u64 = 1 << 9;
}

pub mod status {
    pub const PENDING: u64 = 0;
    pub const DONE: u64 = 1;
    /// The program itself was malformed (bad op, too many ops, bad GPA).
    pub const BAD_PROGRAM: u64 = 2;
}

/// Result values that are not memory contents: the litmus outcomes.
pub const FAULT: u64 = crate::litmus::VALUE_FAULT;
pub const STALE_WALK: u64 = crate::litmus::VALUE_STALE_WALK;
