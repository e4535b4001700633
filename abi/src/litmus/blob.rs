//! The blob's records and its checked decoder ([`Blob::parse`]); the
//! format is described in the parent module.

use super::*;
use crate::limits;

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

// ---------------------------------------------------------------- decoder

/// Why a blob was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the header or than `total_len`.
    Truncated,
    BadMagic,
    /// A version this build does not know.
    BadVersion(u16),
    /// `header_len` or a record size disagrees with this build.
    BadHeader,
    /// A section lies outside the blob, overlaps the header or is misaligned.
    BadSection,
    /// A string is out of bounds or not UTF-8.
    BadString,
    BadPolicy,
    /// A location record is invalid (index of the location).
    BadLocation(u16),
    /// A thread record is invalid (index of the thread).
    BadThread(u16),
    /// An instruction is invalid (global record index).
    BadInstr(u32),
    /// An observation is invalid (its index).
    BadObservation(u16),
    /// A count exceeds its bound in `crate::limits` (what was counted).
    TooLarge(&'static str),
}

/// A checked, zero-copy view of a litmus blob.
#[derive(Clone, Copy, Debug)]
pub struct Blob<'a> {
    bytes: &'a [u8],
    header: Header,
}

/// What the mm operations of a test use of the guest mm model (counted
/// while [`Blob::parse`] walks the records): `cow` statements, and the
/// locations `ksm` and `mremap` link onto one page.
#[derive(Default)]
struct MmUse {
    cows: usize,
    linked: limits::LinkedLocations,
}

impl MmUse {
    fn count(&mut self, i: &Instr, op: Op) -> Result<(), DecodeError> {
        match op {
            Op::Cow => self.cows += 1,
            Op::Ksm | Op::Mremap if self.linked.link(i.loc as usize, i.loc2 as usize) > limits::MAX_PAGE_MAPPINGS => {
                return Err(DecodeError::TooLarge("mappings of one page"));
            }
            _ => {}
        }
        Ok(())
    }
}

/// A pinned `va` lies on a page of the test's user half.
pub const fn pinned_va_ok(va: u64) -> bool {
    va & (crate::layout::PAGE_SIZE - 1) == 0 && va >= limits::TEST_VA_START && va < limits::TEST_VA_END
}

fn section(total: usize, off: u32, n: usize, size: usize) -> Result<(), DecodeError> {
    let off = off as usize;
    let len = n.checked_mul(size).ok_or(DecodeError::BadSection)?;
    let end = off.checked_add(len).ok_or(DecodeError::BadSection)?;
    if off < HEADER_LEN || off & 7 != 0 || end > total {
        return Err(DecodeError::BadSection);
    }
    Ok(())
}

impl<'a> Blob<'a> {
    /// Check everything once: header, sections, strings, policy, every record,
    /// block structure. Never panics, whatever the input.
    pub fn parse(bytes: &'a [u8]) -> Result<Blob<'a>, DecodeError> {
        let hb: &[u8; HEADER_LEN] =
            bytes.get(..HEADER_LEN).and_then(|s| s.try_into().ok()).ok_or(DecodeError::Truncated)?;
        let h = Header::from_bytes(hb);
        if h.magic != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if h.version != VERSION {
            return Err(DecodeError::BadVersion(h.version));
        }
        if h.header_len as usize != HEADER_LEN {
            return Err(DecodeError::BadHeader);
        }
        let total = h.total_len as usize;
        if total > bytes.len() || total < HEADER_LEN {
            return Err(DecodeError::Truncated);
        }
        if h.n_threads as usize != h.n_vcpu_threads as usize + h.n_device_threads as usize {
            return Err(DecodeError::BadHeader);
        }
        // The limits the guest's tables are sized by (`crate::limits`).
        for (what, n, max) in [
            ("bytes", total, limits::MAX_BLOB_LEN),
            ("threads", h.n_threads as usize, MAX_THREADS),
            ("device threads", h.n_device_threads as usize, limits::MAX_DEVICE_THREADS),
            ("locations", h.n_locs as usize, limits::MAX_LOCATIONS),
            ("observed values", h.n_obs as usize, limits::MAX_OBSERVED),
            ("instruction records", h.n_instrs as usize, limits::MAX_RECORDS),
        ] {
            if n > max {
                return Err(DecodeError::TooLarge(what));
            }
        }
        section(total, h.locs_off, h.n_locs as usize, LOC_LEN)?;
        section(total, h.threads_off, h.n_threads as usize, THREAD_LEN)?;
        section(total, h.instrs_off, h.n_instrs as usize, INSTR_LEN)?;
        section(total, h.obs_off, h.n_obs as usize, OBS_LEN)?;
        let s_end = (h.strings_off as usize).checked_add(h.strings_len as usize).ok_or(DecodeError::BadSection)?;
        if (h.strings_off as usize) < HEADER_LEN || s_end > total {
            return Err(DecodeError::BadSection);
        }
        if !h.policy.is_valid() {
            return Err(DecodeError::BadPolicy);
        }
        let blob = Blob { bytes: &bytes[..total], header: h };
        blob.name_at(h.name_off, h.name_len).ok_or(DecodeError::BadString)?;
        for i in 0..h.n_locs {
            let l = blob.location(i).ok_or(DecodeError::BadLocation(i))?;
            let kind = LocKind::from_u8(l.kind).ok_or(DecodeError::BadLocation(i))?;
            let pinned = l.flags & LOC_PINNED != 0;
            if Perm::from_u8(l.perm).is_none()
                || l.flags & !(LOC_SHARED | LOC_PINNED | LOC_IMPLICIT) != 0
                || (kind != LocKind::Page && l.flags & LOC_SHARED != 0)
                || blob.name_at(l.name_off, l.name_len).is_none()
                || pinned != (l.va != 0)
                || (pinned && (kind == LocKind::Var || !pinned_va_ok(l.va)))
            {
                return Err(DecodeError::BadLocation(i));
            }
            // Two pinned locations on one page would be set up twice.
            // Quadratic in the pinned ones only (few; at most MAX_LOCATIONS).
            if pinned && (0..i).filter_map(|j| blob.location(j)).any(|o| o.flags & LOC_PINNED != 0 && o.va == l.va) {
                return Err(DecodeError::BadLocation(i));
            }
        }
        blob.check_mm_capacity()?;
        let mut mm = MmUse::default();
        let mut next_instr: u32 = 0;
        for i in 0..h.n_threads {
            let t = blob.thread(i).ok_or(DecodeError::BadThread(i))?;
            let kind = ThreadKind::from_u8(t.kind).ok_or(DecodeError::BadThread(i))?;
            let expect_kind = if i < h.n_vcpu_threads as u16 { ThreadKind::Vcpu } else { ThreadKind::Device };
            // Threads' code is laid out back to back, in thread order.
            if kind != expect_kind || t.first_instr != next_instr || blob.name_at(t.name_off, t.name_len).is_none() {
                return Err(DecodeError::BadThread(i));
            }
            let end =
                t.first_instr.checked_add(t.n_instrs).filter(|&e| e <= h.n_instrs).ok_or(DecodeError::BadThread(i))?;
            let device_ops = blob.check_block(kind, t.first_instr, end, 1, false, &mut mm)?;
            if kind == ThreadKind::Device && device_ops > limits::MAX_DEVICE_OPS {
                return Err(DecodeError::TooLarge("ops of a device program"));
            }
            next_instr = end;
        }
        if next_instr != h.n_instrs {
            return Err(DecodeError::BadSection);
        }
        if mm.cows > limits::MAX_COW_OPS {
            return Err(DecodeError::TooLarge("cow operations"));
        }
        for i in 0..h.n_obs {
            let o = blob.observation(i).ok_or(DecodeError::BadObservation(i))?;
            let ok = match ObsKind::from_u8(o.kind) {
                Some(ObsKind::Reg) => (o.thread as u16) < h.n_threads && o.reg < MAX_REGS,
                Some(ObsKind::Loc) => o.loc < h.n_locs,
                None => false,
            };
            if !ok {
                return Err(DecodeError::BadObservation(i));
            }
        }
        Ok(blob)
    }

    /// The locations fit the guest mm model (`crate::limits`): page and
    /// unmapped locations, shared pages, the page tables they may need.
    fn check_mm_capacity(&self) -> Result<(), DecodeError> {
        let mut pinned = [0u64; limits::MAX_PAGE_LOCATIONS];
        let (mut pages, mut npinned, mut shared, mut window) = (0, 0, 0, false);
        for l in (0..self.header.n_locs).filter_map(|i| self.location(i)) {
            if l.kind() == LocKind::Var {
                continue;
            }
            pages += 1;
            if pages > limits::MAX_PAGE_LOCATIONS {
                return Err(DecodeError::TooLarge("page and unmapped locations"));
            }
            shared += usize::from(l.is_shared());
            if l.flags & LOC_PINNED != 0 {
                pinned[npinned] = l.va;
                npinned += 1;
            } else {
                window = true;
            }
        }
        if shared > limits::MAX_SHARED_PAGES {
            return Err(DecodeError::TooLarge("shared pages"));
        }
        if limits::page_tables_needed(&pinned[..npinned], window) > limits::MAX_PAGE_TABLES {
            return Err(DecodeError::TooLarge("page tables"));
        }
        Ok(())
    }

    /// Check the block `[start, end)` of a thread of `kind`. `sync_only`:
    /// inside a hook group. Returns the DMA-engine ops the block unrolls to
    /// ([`Op::device_program_ops`], saturating; meaningful for device threads).
    fn check_block(
        &self,
        kind: ThreadKind,
        start: u32,
        end: u32,
        depth: usize,
        sync_only: bool,
        mm: &mut MmUse,
    ) -> Result<u64, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::BadInstr(start));
        }
        let mut ops: u64 = 0;
        let mut pc = start;
        while pc < end {
            let ins = self.instr(pc).ok_or(DecodeError::BadInstr(pc))?;
            let bad = DecodeError::BadInstr(pc);
            let op = Op::from_u8(ins.op).ok_or(bad)?;
            let allowed = if sync_only {
                op.is_sync_op()
            } else {
                match kind {
                    ThreadKind::Vcpu => op.is_vcpu_op(),
                    ThreadKind::Device => op.is_device_op(),
                }
            };
            if !allowed || !self.operands_ok(&ins, op) {
                return Err(bad);
            }
            mm.count(&ins, op)?;
            pc += 1;
            ops = ops.saturating_add(op.device_program_ops());
            if op == Op::Loop {
                let body_end = pc.checked_add(ins.len).filter(|&e| e <= end).ok_or(bad)?;
                let body_ops = self.check_block(kind, pc, body_end, depth + 1, false, mm)?;
                ops = ops.saturating_add(body_ops.saturating_mul(ins.imm));
                pc = body_end;
            }
            if ins.nhooks != 0 && !op.takes_hooks() {
                return Err(bad);
            }
            for _ in 0..ins.nhooks {
                let at = self.instr(pc).filter(|a| a.op == Op::At as u8).ok_or(bad)?;
                if Hook::from_u8(at.arg).is_none() || at.nhooks != 0 {
                    return Err(DecodeError::BadInstr(pc));
                }
                let g_end = (pc + 1).checked_add(at.len).filter(|&e| e <= end).ok_or(bad)?;
                self.check_block(kind, pc + 1, g_end, depth + 1, true, mm)?;
                pc = g_end;
            }
        }
        Ok(ops)
    }

    fn operands_ok(&self, i: &Instr, op: Op) -> bool {
        let n_locs = self.header.n_locs;
        let reg_ok = |r: u8| r == NO_REG || r < MAX_REGS;
        let loc_ok = |l: u16| l < n_locs;
        if !reg_ok(i.dst) || !reg_ok(i.src) || !reg_ok(i.src2) {
            return false;
        }
        if op.writes_dst() != (i.dst != NO_REG) {
            return false;
        }
        if op != Op::Loop && op != Op::At && i.len != 0 {
            return false;
        }
        let needs_loc = !matches!(op, Op::Nop | Op::Mfence | Op::Barrier | Op::Delay | Op::Loop | Op::At);
        if needs_loc != (i.loc != NO_LOC) || (needs_loc && !loc_ok(i.loc)) {
            return false;
        }
        let needs_loc2 = matches!(op, Op::Ksm | Op::Mremap);
        if needs_loc2 != (i.loc2 != NO_LOC) || (needs_loc2 && !loc_ok(i.loc2)) {
            return false;
        }
        match op {
            Op::Mmap | Op::Mprotect => Perm::from_u8(i.arg).is_some(),
            Op::Madvise => Advice::from_u8(i.arg).is_some(),
            Op::Wait => WaitCmp::from_u8(i.arg).is_some(),
            Op::Touch => i.arg <= 1,
            Op::UffdWp => i.arg <= 1,
            _ => true,
        }
    }

    pub fn header(&self) -> &Header {
        &self.header
    }
    pub fn policy(&self) -> PolicyAbi {
        self.header.policy
    }
    /// The raw bytes (exactly `total_len` long).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// The test's name.
    pub fn name(&self) -> &'a str {
        self.str_at(self.header.name_off, self.header.name_len).unwrap_or("")
    }

    /// A name (test, location, thread): a string of at most
    /// [`limits::MAX_NAME_LEN`] bytes.
    fn name_at(&self, off: u32, len: u16) -> Option<&'a str> {
        if len as usize > limits::MAX_NAME_LEN {
            return None;
        }
        self.str_at(off, len)
    }

    /// A string of the string table; `None` if out of bounds or not UTF-8.
    pub fn str_at(&self, off: u32, len: u16) -> Option<&'a str> {
        let start = (self.header.strings_off as usize).checked_add(off as usize)?;
        let end = start.checked_add(len as usize)?;
        let s_end = self.header.strings_off as usize + self.header.strings_len as usize;
        if end > s_end {
            return None;
        }
        core::str::from_utf8(self.bytes.get(start..end)?).ok()
    }

    fn record<const N: usize>(&self, off: u32, i: usize, count: usize) -> Option<&'a [u8; N]> {
        if i >= count {
            return None;
        }
        let start = (off as usize).checked_add(i.checked_mul(N)?)?;
        self.bytes.get(start..start.checked_add(N)?)?.try_into().ok()
    }

    pub fn location(&self, i: u16) -> Option<LocDesc> {
        self.record::<LOC_LEN>(self.header.locs_off, i as usize, self.header.n_locs as usize).map(LocDesc::from_bytes)
    }
    pub fn location_name(&self, i: u16) -> Option<&'a str> {
        let l = self.location(i)?;
        self.str_at(l.name_off, l.name_len)
    }
    pub fn thread(&self, i: u16) -> Option<ThreadDesc> {
        self.record::<THREAD_LEN>(self.header.threads_off, i as usize, self.header.n_threads as usize)
            .map(ThreadDesc::from_bytes)
    }
    pub fn thread_name(&self, i: u16) -> Option<&'a str> {
        let t = self.thread(i)?;
        self.str_at(t.name_off, t.name_len)
    }
    /// Instruction record `i` of the global table.
    pub fn instr(&self, i: u32) -> Option<Instr> {
        self.record::<INSTR_LEN>(self.header.instrs_off, i as usize, self.header.n_instrs as usize)
            .map(Instr::from_bytes)
    }
    /// Record `pc` of thread `t`'s code (`pc` relative to the thread's start).
    pub fn thread_instr(&self, t: &ThreadDesc, pc: u32) -> Option<Instr> {
        if pc >= t.n_instrs {
            return None;
        }
        self.instr(t.first_instr.checked_add(pc)?)
    }
    pub fn observation(&self, i: u16) -> Option<ObsDesc> {
        self.record::<OBS_LEN>(self.header.obs_off, i as usize, self.header.n_obs as usize).map(ObsDesc::from_bytes)
    }

    /// Number of records an item starting at thread-relative `pc` spans
    /// (the record, a loop body, its hook groups): the interpreter's "skip".
    pub fn item_len(&self, t: &ThreadDesc, pc: u32) -> Option<u32> {
        let ins = self.thread_instr(t, pc)?;
        let mut n: u32 = 1;
        if ins.op == Op::Loop as u8 {
            n = n.checked_add(ins.len)?;
        }
        for _ in 0..ins.nhooks {
            let at = self.thread_instr(t, pc.checked_add(n)?)?;
            n = n.checked_add(1)?.checked_add(at.len)?;
        }
        Some(n)
    }

    /// The hook group of the item at `pc` for the `n`-th firing (1-based)
    /// of `hook` in this operation, as a thread-relative range of sync
    /// records, if the op has one: a group for `at HOOK#n`, else one for
    /// plain `at HOOK`.
    pub fn hook_group(&self, t: &ThreadDesc, pc: u32, hook: Hook, n: u32) -> Option<(u32, u32)> {
        let ins = self.thread_instr(t, pc)?;
        let mut at_pc = pc.checked_add(1)?;
        if ins.op == Op::Loop as u8 {
            at_pc = at_pc.checked_add(ins.len)?;
        }
        let mut every = None;
        for _ in 0..ins.nhooks {
            let at = self.thread_instr(t, at_pc)?;
            let body = at_pc.checked_add(1)?;
            if at.arg == hook as u8 {
                let group = (body, body.checked_add(at.len)?);
                if at.imm == n as u64 {
                    return Some(group);
                }
                if at.imm == 0 && every.is_none() {
                    every = Some(group);
                }
            }
            at_pc = body.checked_add(at.len)?;
        }
        every
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
