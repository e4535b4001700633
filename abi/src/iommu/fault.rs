//! What the IOMMU reports back: the access and fault reason of a failed
//! translation, and the page-request records it queues ([`prq`]).

/// The kind of device access, as recorded in a page request.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessOp {
    Read = 0,
    Write = 1,
    Exec = 2,
}

impl AccessOp {
    pub const fn from_u8(v: u8) -> Option<AccessOp> {
        match v {
            0 => Some(AccessOp::Read),
            1 => Some(AccessOp::Write),
            2 => Some(AccessOp::Exec),
            _ => None,
        }
    }
}

/// Why a device translation failed (page-request record `REASON` field).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultReason {
    /// An entry with `P` = 0 at the recorded level.
    NotPresent = 1,
    /// A write where some level has `RW` = 0.
    WriteToReadOnly = 2,
    /// A user-mode request where some level has `US` = 0.
    UserToSupervisor = 3,
    /// An instruction fetch where some level has `NX` = 1.
    ExecuteNx = 4,
    /// A reserved bit is set in a paging entry (e.g. `PS` in a PML4E,
    /// misaligned large-page frame).
    ReservedBit = 5,
    /// The VA is not canonical.
    NonCanonical = 6,
    /// The PASID table entry has `P` = 0.
    PasidNotPresent = 7,
    /// The PASID is not below the PASID table's size.
    PasidOutOfRange = 8,
    /// No PASID table was configured.
    PasidTableNotConfigured = 9,
    /// The PASID entry has reserved bits set, or the PASID table is not RAM.
    PasidEntryInvalid = 10,
    /// A paging-structure GPA is not guest RAM.
    TableNotRam = 11,
}

impl FaultReason {
    pub const fn from_u8(v: u8) -> Option<FaultReason> {
        use FaultReason::*;
        Some(match v {
            1 => NotPresent,
            2 => WriteToReadOnly,
            3 => UserToSupervisor,
            4 => ExecuteNx,
            5 => ReservedBit,
            6 => NonCanonical,
            7 => PasidNotPresent,
            8 => PasidOutOfRange,
            9 => PasidTableNotConfigured,
            10 => PasidEntryInvalid,
            11 => TableNotRam,
            _ => return None,
        })
    }
}

/// Page-request records: 32 bytes (four little-endian u64) in the ring at
/// [`reg::PQA`](super::reg::PQA). The IOMMU writes the record at `PQT` and then advances
/// `PQT` (release ordering), sets `STATUS.PPR` and raises the page-request
/// MSI. The queue is full when advancing `PQT` would make it equal `PQH`;
/// the record is then dropped and `STATUS.PRO` set.
///
/// * `qw0`: PASID (bits 19:0), access op (bits 33:32, [`AccessOp`]),
///   privileged (bit 34), level of the faulting entry (bits 43:40, 1 = PTE ..
///   4 = PML4E, 0 = not a paging entry), reason (bits 55:48, [`FaultReason`]);
/// * `qw1`: the faulting VA (not page aligned);
/// * `qw2`: the value of the entry that caused the fault (PTE, PASID entry) or 0;
/// * `qw3`: the GPA of that entry, or 0.
pub mod prq {
    pub const RECORD_BYTES: u64 = 32;
    pub const PASID_MASK: u64 = 0xf_ffff;
    pub const OP_SHIFT: u32 = 32;
    pub const PRIV: u64 = 1 << 34;
    pub const LEVEL_SHIFT: u32 = 40;
    pub const REASON_SHIFT: u32 = 48;
}

/// A decoded page-request record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub pasid: u32,
    pub op: AccessOp,
    pub privileged: bool,
    pub level: u8,
    pub reason: FaultReason,
    pub va: u64,
    pub entry: u64,
    pub entry_gpa: u64,
}

impl PageRequest {
    pub const fn encode(&self) -> [u64; 4] {
        use prq::*;
        let qw0 = (self.pasid as u64 & PASID_MASK)
            | ((self.op as u64) << OP_SHIFT)
            | if self.privileged { PRIV } else { 0 }
            | (((self.level & 0xf) as u64) << LEVEL_SHIFT)
            | ((self.reason as u64) << REASON_SHIFT);
        [qw0, self.va, self.entry, self.entry_gpa]
    }

    /// None if a field holds an undefined value.
    pub const fn decode(qw: [u64; 4]) -> Option<PageRequest> {
        use prq::*;
        let op = match AccessOp::from_u8(((qw[0] >> OP_SHIFT) & 0x3) as u8) {
            Some(op) => op,
            None => return None,
        };
        let reason = match FaultReason::from_u8((qw[0] >> REASON_SHIFT) as u8) {
            Some(r) => r,
            None => return None,
        };
        Some(PageRequest {
            pasid: (qw[0] & PASID_MASK) as u32,
            op,
            privileged: qw[0] & PRIV != 0,
            level: ((qw[0] >> LEVEL_SHIFT) & 0xf) as u8,
            reason,
            va: qw[1],
            entry: qw[2],
            entry_gpa: qw[3],
        })
    }
}
