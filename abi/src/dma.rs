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
/// Device slots of the DMA engine: one worker each, at most one program
/// queued behind the one running (litmus device threads use slots
/// 0..`n_devices`, self-tests slot 0).
pub const MAX_SLOTS: u64 = 16;

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
    /// Refused: its slot already had a program queued.
    pub const BUSY: u64 = 3;
}

/// A decoded op: what the engine does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A device access through the IOMMU at virtual address `va` of the
    /// program's PASID.
    Access { kind: AccessKind, va: u64, operand: Operand, retry: bool },
    /// Wait until the kernel word at GPA `gpa` satisfies `cond` against `value`.
    Wait { cond: WaitCond, gpa: u64, value: Operand },
    /// Store `value` to the kernel word at GPA `gpa`.
    Signal { gpa: u64, value: Operand },
    /// Atomically add `value` to the kernel word at GPA `gpa`.
    Kadd { gpa: u64, value: Operand },
    /// Sleep this many microseconds (at most [`MAX_DELAY_US`]).
    Delay { us: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    Load,
    Store,
    Xchg,
    FetchAdd,
    Prefetch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitCond {
    Eq,
    Ne,
    Ge,
}

/// An op's value operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    Imm(u64),
    /// The result of op `n` of this program (`n` < the op's index).
    ResultOf(u64),
}

/// The longest `DELAY_US` the engine honours.
pub const MAX_DELAY_US: u64 = 1_000_000;

/// Why a program or op was rejected (the header is then marked `BAD_PROGRAM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The header's GPA is not 8-byte aligned.
    Misaligned,
    /// More than [`MAX_OPS`] ops.
    TooManyOps(u64),
    /// A PASID wider than 32 bits.
    BadPasid(u64),
    /// Op `index` has an unknown kind.
    UnknownOp { index: u64, op: u64 },
    /// Op `index` takes its value from op `from`, which is not before it.
    ForwardValue { index: u64, from: u64 },
    /// Flags on an op that does not take them.
    BadFlags { index: u64, op: u64 },
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            DecodeError::Misaligned => write!(f, "program header not 8-byte aligned"),
            DecodeError::TooManyOps(n) => write!(f, "{n} ops (at most {MAX_OPS})"),
            DecodeError::BadPasid(p) => write!(f, "PASID {p:#x} wider than 32 bits"),
            DecodeError::UnknownOp { index, op } => write!(f, "op {index}: unknown kind {op:#x}"),
            DecodeError::ForwardValue { index, from } => write!(f, "op {index} takes the value of op {from}"),
            DecodeError::BadFlags { index, op } => write!(f, "op {index}: flags {op:#x} not valid for its kind"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Checks a header read from `gpa`; returns (PASID, number of ops).
pub fn decode_header(gpa: u64, h: &ProgramHeader) -> Result<(u32, u64), DecodeError> {
    if !gpa.is_multiple_of(8) {
        return Err(DecodeError::Misaligned);
    }
    if h.nops > MAX_OPS {
        return Err(DecodeError::TooManyOps(h.nops));
    }
    if h.pasid > u32::MAX as u64 {
        return Err(DecodeError::BadPasid(h.pasid));
    }
    Ok((h.pasid as u32, h.nops))
}

/// Decodes op `index` of a program. Bits 32..64 (the submitter's tag) are ignored.
pub fn decode_op(index: u64, r: &OpRecord) -> Result<Action, DecodeError> {
    let flags = r.op & 0xffff_ff00 & !(op::RETRY | op::VALUE_FROM);
    if flags != 0 {
        return Err(DecodeError::BadFlags { index, op: r.op });
    }
    let operand = if r.op & op::VALUE_FROM != 0 {
        if r.value >= index {
            return Err(DecodeError::ForwardValue { index, from: r.value });
        }
        Operand::ResultOf(r.value)
    } else {
        Operand::Imm(r.value)
    };
    let retry = r.op & op::RETRY != 0;
    let kind = r.op & op::KIND_MASK;
    let access = |kind| Ok(Action::Access { kind, va: r.va, operand, retry });
    if retry && !matches!(kind, op::LOAD | op::STORE | op::XCHG | op::FETCH_ADD | op::PREFETCH) {
        return Err(DecodeError::BadFlags { index, op: r.op });
    }
    match kind {
        op::LOAD => access(AccessKind::Load),
        op::STORE => access(AccessKind::Store),
        op::XCHG => access(AccessKind::Xchg),
        op::FETCH_ADD => access(AccessKind::FetchAdd),
        op::PREFETCH => access(AccessKind::Prefetch),
        op::WAIT_EQ => Ok(Action::Wait { cond: WaitCond::Eq, gpa: r.va, value: operand }),
        op::WAIT_NE => Ok(Action::Wait { cond: WaitCond::Ne, gpa: r.va, value: operand }),
        op::WAIT_GE => Ok(Action::Wait { cond: WaitCond::Ge, gpa: r.va, value: operand }),
        op::SIGNAL => Ok(Action::Signal { gpa: r.va, value: operand }),
        op::KADD => Ok(Action::Kadd { gpa: r.va, value: operand }),
        op::DELAY_US => match operand {
            Operand::Imm(us) => Ok(Action::Delay { us: us.min(MAX_DELAY_US) }),
            Operand::ResultOf(_) => Err(DecodeError::BadFlags { index, op: r.op }),
        },
        _ => Err(DecodeError::UnknownOp { index, op: r.op }),
    }
}

/// GPA of op `index`'s record in the program at `program`, or `None` if it
/// would overflow.
pub fn op_gpa(program: u64, index: u64) -> Option<u64> {
    index.checked_mul(OP_SIZE)?.checked_add(HEADER_SIZE)?.checked_add(program)
}

/// Offset of the header's status word, and of an op record's result word.
pub const STATUS_OFFSET: u64 = core::mem::offset_of!(ProgramHeader, status) as u64;
pub const RESULT_OFFSET: u64 = core::mem::offset_of!(OpRecord, result) as u64;

/// Result values that are not memory contents: the litmus outcomes.
pub const FAULT: u64 = crate::litmus::VALUE_FAULT;
pub const STALE_WALK: u64 = crate::litmus::VALUE_STALE_WALK;
