//! The blob's records ([`Header`], [`LocDesc`], [`ThreadDesc`], [`Instr`],
//! [`ObsDesc`]); the checked decoder is `decode`, the format is described
//! in the parent module.

use super::*;

mod decode;
pub use decode::{pinned_va_ok, Blob, DecodeError};

// ---------------------------------------------------------------- records

fn rd_u16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn rd_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn rd_u64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Offset of [`PolicyAbi`] inside the header.
pub const HEADER_POLICY_OFF: usize = 128;
const _: () = assert!(HEADER_POLICY_OFF + POLICY_LEN <= HEADER_LEN);

/// The fixed header at offset 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// [`MAGIC`] (bytes 0..8).
    pub magic: [u8; 8],
    /// [`VERSION`] (8..10).
    pub version: u16,
    /// [`HEADER_LEN`] (10..12).
    pub header_len: u16,
    /// Length of the whole blob (12..16).
    pub total_len: u32,
    /// Number of [`LocDesc`] (16..18).
    pub n_locs: u16,
    /// Number of [`ThreadDesc`] (18..20) = n_vcpu_threads + n_device_threads.
    pub n_threads: u16,
    /// vCPU threads (20); they come first in the thread table, thread i runs on test vCPU i.
    pub n_vcpu_threads: u8,
    /// Device threads (21).
    pub n_device_threads: u8,
    /// Number of [`ObsDesc`] (22..24).
    pub n_obs: u16,
    /// Number of [`Instr`] records over all threads (24..28).
    pub n_instrs: u32,
    /// Bytes of the string table (28..32).
    pub strings_len: u32,
    pub locs_off: u32,    // 32..36
    pub threads_off: u32, // 36..40
    pub instrs_off: u32,  // 40..44
    pub obs_off: u32,     // 44..48
    pub strings_off: u32, // 48..52
    /// Test name in the string table (52..56, 56..58).
    pub name_off: u32,
    pub name_len: u16,
    /// Reserved, 0 (58..60).
    pub flags: u16,
    /// Iterations the guest should run (60..64).
    pub iterations: u32,
    /// Placement seed (64..72): VA/PA choice, eviction randomness.
    pub seed: u64,
    /// First 8 bytes of the test's MD5 hash (72..80), for trace records.
    pub test_hash: u64,
    /// Per-iteration time limit in milliseconds (80..84); 0 = runner default.
    pub iteration_timeout_ms: u32,
    /// Reserved, 0 (84..96; 96..128 unused).
    pub reserved: [u32; 3],
    /// The policy (128..192).
    pub policy: PolicyAbi,
}

impl Header {
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.magic);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&self.header_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.total_len.to_le_bytes());
        b[16..18].copy_from_slice(&self.n_locs.to_le_bytes());
        b[18..20].copy_from_slice(&self.n_threads.to_le_bytes());
        b[20] = self.n_vcpu_threads;
        b[21] = self.n_device_threads;
        b[22..24].copy_from_slice(&self.n_obs.to_le_bytes());
        b[24..28].copy_from_slice(&self.n_instrs.to_le_bytes());
        b[28..32].copy_from_slice(&self.strings_len.to_le_bytes());
        b[32..36].copy_from_slice(&self.locs_off.to_le_bytes());
        b[36..40].copy_from_slice(&self.threads_off.to_le_bytes());
        b[40..44].copy_from_slice(&self.instrs_off.to_le_bytes());
        b[44..48].copy_from_slice(&self.obs_off.to_le_bytes());
        b[48..52].copy_from_slice(&self.strings_off.to_le_bytes());
        b[52..56].copy_from_slice(&self.name_off.to_le_bytes());
        b[56..58].copy_from_slice(&self.name_len.to_le_bytes());
        b[58..60].copy_from_slice(&self.flags.to_le_bytes());
        b[60..64].copy_from_slice(&self.iterations.to_le_bytes());
        b[64..72].copy_from_slice(&self.seed.to_le_bytes());
        b[72..80].copy_from_slice(&self.test_hash.to_le_bytes());
        b[80..84].copy_from_slice(&self.iteration_timeout_ms.to_le_bytes());
        for (i, r) in self.reserved.iter().enumerate() {
            b[84 + 4 * i..88 + 4 * i].copy_from_slice(&r.to_le_bytes());
        }
        b[HEADER_POLICY_OFF..HEADER_POLICY_OFF + POLICY_LEN].copy_from_slice(&self.policy.to_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Self {
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&b[0..8]);
        let mut pol = [0u8; POLICY_LEN];
        pol.copy_from_slice(&b[HEADER_POLICY_OFF..HEADER_POLICY_OFF + POLICY_LEN]);
        Header {
            magic,
            version: rd_u16(b, 8),
            header_len: rd_u16(b, 10),
            total_len: rd_u32(b, 12),
            n_locs: rd_u16(b, 16),
            n_threads: rd_u16(b, 18),
            n_vcpu_threads: b[20],
            n_device_threads: b[21],
            n_obs: rd_u16(b, 22),
            n_instrs: rd_u32(b, 24),
            strings_len: rd_u32(b, 28),
            locs_off: rd_u32(b, 32),
            threads_off: rd_u32(b, 36),
            instrs_off: rd_u32(b, 40),
            obs_off: rd_u32(b, 44),
            strings_off: rd_u32(b, 48),
            name_off: rd_u32(b, 52),
            name_len: rd_u16(b, 56),
            flags: rd_u16(b, 58),
            iterations: rd_u32(b, 60),
            seed: rd_u64(b, 64),
            test_hash: rd_u64(b, 72),
            iteration_timeout_ms: rd_u32(b, 80),
            reserved: [rd_u32(b, 84), rd_u32(b, 88), rd_u32(b, 92)],
            policy: PolicyAbi::from_bytes(&pol),
        }
    }
}

/// Location flag: shared file-backed page (`shared = true`).
pub const LOC_SHARED: u8 = 1;
/// Location flag: the test pinned its VA (`va = "0x…"`), see [`LocDesc::va`].
pub const LOC_PINNED: u8 = 2;
/// Location flag: not declared in `[locations]` (a flag used by wait/signal).
pub const LOC_IMPLICIT: u8 = 4;

/// One location (32 bytes):
/// `name_off u32 | name_len u16 | kind u8 | perm u8 | flags u8 | pad[7] | init u64 | va u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocDesc {
    pub name_off: u32,
    pub name_len: u16,
    /// [`LocKind`].
    pub kind: u8,
    /// [`Perm`] of the initial mapping (pages only; 0 otherwise).
    pub perm: u8,
    /// `LOC_*` bits.
    pub flags: u8,
    /// First 8-byte word of a page, or the var's value.
    pub init: u64,
    /// Pinned virtual address, or 0: the runner chooses (seeded).
    pub va: u64,
}

impl LocDesc {
    pub fn to_bytes(&self) -> [u8; LOC_LEN] {
        let mut b = [0u8; LOC_LEN];
        b[0..4].copy_from_slice(&self.name_off.to_le_bytes());
        b[4..6].copy_from_slice(&self.name_len.to_le_bytes());
        b[6] = self.kind;
        b[7] = self.perm;
        b[8] = self.flags;
        b[16..24].copy_from_slice(&self.init.to_le_bytes());
        b[24..32].copy_from_slice(&self.va.to_le_bytes());
        b
    }
    pub fn from_bytes(b: &[u8; LOC_LEN]) -> Self {
        LocDesc {
            name_off: rd_u32(b, 0),
            name_len: rd_u16(b, 4),
            kind: b[6],
            perm: b[7],
            flags: b[8],
            init: rd_u64(b, 16),
            va: rd_u64(b, 24),
        }
    }
    pub fn kind(&self) -> LocKind {
        LocKind::from_u8(self.kind).unwrap_or(LocKind::Var)
    }
    pub fn perm(&self) -> Perm {
        Perm::from_u8(self.perm).unwrap_or(Perm::None)
    }
    pub fn is_shared(&self) -> bool {
        self.flags & LOC_SHARED != 0
    }
}

/// One thread (16 bytes):
/// `name_off u32 | name_len u16 | kind u8 | index u8 | first_instr u32 | n_instrs u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadDesc {
    pub name_off: u32,
    pub name_len: u16,
    /// [`ThreadKind`].
    pub kind: u8,
    /// vCPU thread: test vCPU index (0-based); device thread: device thread index.
    pub index: u8,
    /// First record of this thread's code in the instruction table.
    pub first_instr: u32,
    pub n_instrs: u32,
}

impl ThreadDesc {
    pub fn to_bytes(&self) -> [u8; THREAD_LEN] {
        let mut b = [0u8; THREAD_LEN];
        b[0..4].copy_from_slice(&self.name_off.to_le_bytes());
        b[4..6].copy_from_slice(&self.name_len.to_le_bytes());
        b[6] = self.kind;
        b[7] = self.index;
        b[8..12].copy_from_slice(&self.first_instr.to_le_bytes());
        b[12..16].copy_from_slice(&self.n_instrs.to_le_bytes());
        b
    }
    pub fn from_bytes(b: &[u8; THREAD_LEN]) -> Self {
        ThreadDesc {
            name_off: rd_u32(b, 0),
            name_len: rd_u16(b, 4),
            kind: b[6],
            index: b[7],
            first_instr: rd_u32(b, 8),
            n_instrs: rd_u32(b, 12),
        }
    }
    pub fn kind(&self) -> ThreadKind {
        ThreadKind::from_u8(self.kind).unwrap_or(ThreadKind::Vcpu)
    }
}

/// One instruction (32 bytes):
///
/// ```text
/// 0 op u8 | 1 dst u8 | 2 src u8 | 3 src2 u8 | 4 loc u16 | 6 loc2 u16
/// 8 arg u8 | 9 nhooks u8 | 10 pad u16 | 12 len u32 | 16 imm u64 | 24 imm2 u64
/// ```
///
/// Operand meaning per op is in [`Op`]'s docs. A value operand is a register
/// when `src`/`src2` != [`NO_REG`], else the immediate `imm`/`imm2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instr {
    /// [`Op`].
    pub op: u8,
    /// Destination register or [`NO_REG`].
    pub dst: u8,
    /// Register holding the (first) value operand, or [`NO_REG`] (then `imm`).
    pub src: u8,
    /// Register holding the second value operand (cmpxchg NEW), or [`NO_REG`] (then `imm2`).
    pub src2: u8,
    /// Location index or [`NO_LOC`].
    pub loc: u16,
    /// Second location (ksm, mremap target) or [`NO_LOC`].
    pub loc2: u16,
    /// Small op argument: [`Perm`], [`Advice`], [`WaitCmp`], touch-write flag, [`Hook`] for `At`.
    pub arg: u8,
    /// Number of hook groups following this record.
    pub nhooks: u8,
    /// Body length in records (`Loop`, `At`), else 0.
    pub len: u32,
    pub imm: u64,
    pub imm2: u64,
}

impl Default for Instr {
    fn default() -> Self {
        Instr {
            op: Op::Nop as u8,
            dst: NO_REG,
            src: NO_REG,
            src2: NO_REG,
            loc: NO_LOC,
            loc2: NO_LOC,
            arg: 0,
            nhooks: 0,
            len: 0,
            imm: 0,
            imm2: 0,
        }
    }
}

impl Instr {
    pub fn to_bytes(&self) -> [u8; INSTR_LEN] {
        let mut b = [0u8; INSTR_LEN];
        b[0] = self.op;
        b[1] = self.dst;
        b[2] = self.src;
        b[3] = self.src2;
        b[4..6].copy_from_slice(&self.loc.to_le_bytes());
        b[6..8].copy_from_slice(&self.loc2.to_le_bytes());
        b[8] = self.arg;
        b[9] = self.nhooks;
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..24].copy_from_slice(&self.imm.to_le_bytes());
        b[24..32].copy_from_slice(&self.imm2.to_le_bytes());
        b
    }
    pub fn from_bytes(b: &[u8; INSTR_LEN]) -> Self {
        Instr {
            op: b[0],
            dst: b[1],
            src: b[2],
            src2: b[3],
            loc: rd_u16(b, 4),
            loc2: rd_u16(b, 6),
            arg: b[8],
            nhooks: b[9],
            len: rd_u32(b, 12),
            imm: rd_u64(b, 16),
            imm2: rd_u64(b, 24),
        }
    }
    /// The opcode; [`Op::Nop`] for an unknown byte (cannot happen after [`Blob::parse`]).
    pub fn op(&self) -> Op {
        Op::from_u8(self.op).unwrap_or(Op::Nop)
    }
    /// The hook of an [`Op::At`] record.
    pub fn hook(&self) -> Option<Hook> {
        if self.op == Op::At as u8 {
            Hook::from_u8(self.arg)
        } else {
            None
        }
    }
}

/// One observation (8 bytes): `kind u8 | thread u8 | reg u8 | pad u8 | loc u16 | pad u16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObsDesc {
    /// [`ObsKind`].
    pub kind: u8,
    /// Thread index (Reg).
    pub thread: u8,
    /// Register (Reg).
    pub reg: u8,
    /// Location index (Loc), else [`NO_LOC`].
    pub loc: u16,
}

impl ObsDesc {
    pub fn to_bytes(&self) -> [u8; OBS_LEN] {
        let mut b = [0u8; OBS_LEN];
        b[0] = self.kind;
        b[1] = self.thread;
        b[2] = self.reg;
        b[4..6].copy_from_slice(&self.loc.to_le_bytes());
        b
    }
    pub fn from_bytes(b: &[u8; OBS_LEN]) -> Self {
        ObsDesc { kind: b[0], thread: b[1], reg: b[2], loc: rd_u16(b, 4) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_sizes_round_trip() {
        let i = Instr {
            op: Op::Cmpxchg as u8,
            dst: 3,
            src: NO_REG,
            src2: 4,
            loc: 7,
            loc2: NO_LOC,
            arg: 0,
            nhooks: 2,
            len: 0,
            imm: 0x1122_3344_5566_7788,
            imm2: 9,
        };
        assert_eq!(Instr::from_bytes(&i.to_bytes()), i);
        let p = PolicyAbi { tlb_evict_ppm: 250_000, ..PolicyAbi::default() };
        assert_eq!(PolicyAbi::from_bytes(&p.to_bytes()), p);
        assert!(p.is_valid());
    }

    #[test]
    fn rejects_short_and_garbage() {
        assert_eq!(Blob::parse(&[]).unwrap_err(), DecodeError::Truncated);
        assert_eq!(Blob::parse(&[0u8; 200]).unwrap_err(), DecodeError::BadMagic);
    }
}
