//! The blob's checked decoder ([`Blob::parse`]): every section, string,
//! record and block checked once, never a panic whatever the input.

use super::*;
use crate::limits;

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
pub(super) struct MmUse {
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

pub(super) fn section(total: usize, off: u32, n: usize, size: usize) -> Result<(), DecodeError> {
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
