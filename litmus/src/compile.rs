//! Checked test + policy + seed → the bytecode blob of [`abi::litmus`].
//!
//! The checker refused everything that could go wrong (every limit of
//! `abi::limits`), so for a checked test compiling does not fail. It still
//! never truncates: every narrowing conversion is checked, and the blob is
//! run through `Blob::parse` before it is returned, so a test built by hand
//! past a limit, or a checker that let one through, is a [`CompileError`]
//! here, not a guest that dies later. Besides the blob it returns, per
//! thread and per record, the source position, so the runner can say where
//! a timed-out thread was stuck ("P0 at line 10, in hook after_ptl_release").

use crate::ast::{Observable, Operand, Stmt, Test};
use crate::policy::Policy;
use abi::litmus::{
    Blob, Header, Hook, Instr, LocDesc, ObsDesc, ObsKind, Op, ThreadDesc, ThreadKind, HEADER_LEN, INSTR_LEN,
    LOC_IMPLICIT, LOC_LEN, LOC_PINNED, LOC_SHARED, MAGIC, NO_LOC, NO_REG, OBS_LEN, THREAD_LEN, VERSION,
};
use std::collections::HashMap;
use std::fmt;

/// Run parameters that go into the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileOptions {
    /// Placement / eviction seed.
    pub seed: u64,
    /// Iterations the guest runs.
    pub iterations: u32,
    /// Per-iteration time limit in ms; 0 = the runner's default.
    pub iteration_timeout_ms: u32,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { seed: 0, iterations: 1000, iteration_timeout_ms: 0 }
    }
}

/// A compiled test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    pub blob: Vec<u8>,
    /// `positions[thread][pc]` = (line, column) in the test file of the
    /// statement record `pc` belongs to.
    pub positions: Vec<Vec<(u32, u32)>>,
}

impl Compiled {
    /// Source position of thread-relative record `pc` (None past the end:
    /// the thread finished).
    pub fn position(&self, thread: usize, pc: u32) -> Option<(u32, u32)> {
        self.positions.get(thread)?.get(pc as usize).copied()
    }
}

/// A test the blob format cannot hold (the checker refuses these; a test
/// built by hand may not have been checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError(pub String);

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot compile: {}", self.0)
    }
}

impl std::error::Error for CompileError {}

/// `n` as a narrower integer, or an error naming `what`.
fn narrow<T: TryFrom<usize>>(n: usize, what: &str) -> Result<T, CompileError> {
    T::try_from(n).map_err(|_| CompileError(format!("{n} {what} do not fit the blob format")))
}

struct Emitter<'a> {
    locs: &'a HashMap<&'a str, u16>,
    out: Vec<(Instr, (u32, u32))>,
}

impl Emitter<'_> {
    fn loc(&self, name: &Option<String>) -> Result<u16, CompileError> {
        match name {
            Some(n) => {
                self.locs.get(n.as_str()).copied().ok_or_else(|| CompileError(format!("undeclared location `{n}`")))
            }
            None => Ok(NO_LOC),
        }
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), CompileError> {
        let pos = (s.line, s.col);
        let (src, imm) = match s.val {
            Some(Operand::Reg(r)) => (r, 0),
            Some(Operand::Imm(v)) => (NO_REG, v),
            None => (NO_REG, 0),
        };
        let (src2, imm2) = match s.val2 {
            Some(Operand::Reg(r)) => (r, 0),
            Some(Operand::Imm(v)) => (NO_REG, v),
            None => (NO_REG, 0),
        };
        let at = self.out.len();
        self.out.push((
            Instr {
                op: s.op as u8,
                dst: s.dst.unwrap_or(NO_REG),
                src,
                src2,
                loc: self.loc(&s.loc)?,
                loc2: self.loc(&s.loc2)?,
                arg: s.arg,
                nhooks: narrow(s.hooks.len(), "hook blocks of one statement")?,
                len: 0,
                imm,
                imm2,
            },
            pos,
        ));
        if s.op == Op::Loop {
            for b in &s.body {
                self.stmt(b)?;
            }
            self.out[at].0.len = narrow(self.out.len() - at - 1, "records in a loop body")?;
        }
        for h in &s.hooks {
            let hat = self.out.len();
            self.out.push((Instr { op: Op::At as u8, arg: h.hook as u8, imm: h.nth as u64, ..Instr::default() }, pos));
            for b in &h.body {
                self.stmt(b)?;
            }
            self.out[hat].0.len = narrow(self.out.len() - hat - 1, "records in a hook block")?;
        }
        Ok(())
    }
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Compile a checked test for one policy. The blob is checked by
/// `Blob::parse` (the guest's own check) before it is returned.
pub fn compile(test: &Test, policy: &Policy, opts: &CompileOptions) -> Result<Compiled, CompileError> {
    let mut strings = String::new();
    let mut intern = |s: &str| -> Result<(u32, u16), CompileError> {
        let off = narrow(strings.len(), "bytes of names")?;
        strings.push_str(s);
        Ok((off, narrow(s.len(), "bytes in one name")?))
    };
    let name = intern(&test.name)?;
    let mut loc_index: HashMap<&str, u16> = HashMap::new();
    let mut locs: Vec<LocDesc> = Vec::with_capacity(test.locations.len());
    for (i, l) in test.locations.iter().enumerate() {
        let i: u16 = narrow(i, "locations")?;
        if i == NO_LOC {
            return Err(CompileError(format!("{} locations do not fit the blob format", test.locations.len())));
        }
        loc_index.entry(l.name.as_str()).or_insert(i);
        let (off, len) = intern(&l.name)?;
        locs.push(LocDesc {
            name_off: off,
            name_len: len,
            kind: l.kind as u8,
            perm: l.perm as u8,
            flags: (if l.shared { LOC_SHARED } else { 0 })
                | (if l.va.is_some() { LOC_PINNED } else { 0 })
                | (if l.implicit { LOC_IMPLICIT } else { 0 }),
            init: l.init,
            va: l.va.unwrap_or(0),
        });
    }
    let mut threads = Vec::new();
    let mut instrs: Vec<Instr> = Vec::new();
    let mut positions = Vec::new();
    let (mut nv, mut nd) = (0usize, 0usize);
    for t in &test.threads {
        let mut e = Emitter { locs: &loc_index, out: Vec::new() };
        for s in &t.code {
            e.stmt(s)?;
        }
        let (off, len) = intern(&t.name)?;
        let count = match t.kind {
            ThreadKind::Vcpu => &mut nv,
            ThreadKind::Device => &mut nd,
        };
        let index = narrow(*count, "threads of one kind")?;
        *count += 1;
        threads.push(ThreadDesc {
            name_off: off,
            name_len: len,
            kind: t.kind as u8,
            index,
            first_instr: narrow(instrs.len(), "instruction records")?,
            n_instrs: narrow(e.out.len(), "instruction records in one thread")?,
        });
        positions.push(e.out.iter().map(|(_, p)| *p).collect());
        instrs.extend(e.out.into_iter().map(|(i, _)| i));
    }
    let mut obs: Vec<ObsDesc> = Vec::with_capacity(test.observed.len());
    for o in &test.observed {
        obs.push(match o {
            Observable::Reg { thread, reg } => {
                ObsDesc { kind: ObsKind::Reg as u8, thread: narrow(*thread, "threads")?, reg: *reg, loc: NO_LOC }
            }
            Observable::Loc { loc } => {
                ObsDesc { kind: ObsKind::Loc as u8, thread: 0, reg: NO_REG, loc: narrow(*loc, "locations")? }
            }
        });
    }

    let locs_off = HEADER_LEN;
    let threads_off = locs_off + locs.len() * LOC_LEN;
    let instrs_off = threads_off + threads.len() * THREAD_LEN;
    let obs_off = instrs_off + instrs.len() * INSTR_LEN;
    let strings_off = obs_off + obs.len() * OBS_LEN;
    let total = align8(strings_off + strings.len());
    let header = Header {
        magic: MAGIC,
        version: VERSION,
        header_len: narrow(HEADER_LEN, "header bytes")?,
        total_len: narrow(total, "bytes of blob")?,
        n_locs: narrow(locs.len(), "locations")?,
        n_threads: narrow(threads.len(), "threads")?,
        n_vcpu_threads: narrow(nv, "vCPU threads")?,
        n_device_threads: narrow(nd, "device threads")?,
        n_obs: narrow(obs.len(), "observed values")?,
        n_instrs: narrow(instrs.len(), "instruction records")?,
        strings_len: narrow(strings.len(), "bytes of names")?,
        locs_off: narrow(locs_off, "bytes of blob")?,
        threads_off: narrow(threads_off, "bytes of blob")?,
        instrs_off: narrow(instrs_off, "bytes of blob")?,
        obs_off: narrow(obs_off, "bytes of blob")?,
        strings_off: narrow(strings_off, "bytes of blob")?,
        name_off: name.0,
        name_len: name.1,
        flags: 0,
        iterations: opts.iterations,
        seed: opts.seed,
        test_hash: u64::from_str_radix(test.hash.get(..16).unwrap_or("0"), 16).unwrap_or(0),
        iteration_timeout_ms: opts.iteration_timeout_ms,
        reserved: [0; 3],
        policy: policy.abi,
    };
    let mut blob = Vec::with_capacity(total);
    blob.extend_from_slice(&header.to_bytes());
    for l in &locs {
        blob.extend_from_slice(&l.to_bytes());
    }
    for t in &threads {
        blob.extend_from_slice(&t.to_bytes());
    }
    for i in &instrs {
        blob.extend_from_slice(&i.to_bytes());
    }
    for o in &obs {
        blob.extend_from_slice(&o.to_bytes());
    }
    blob.extend_from_slice(strings.as_bytes());
    blob.resize(total, 0);
    // The guest's own check, so a disagreement surfaces here, named.
    Blob::parse(&blob).map_err(|e| CompileError(format!("the blob format refuses it: {e:?}")))?;
    Ok(Compiled { blob, positions })
}

/// Print a blob's threads back in the source language, one statement per
/// line (hook and loop bodies inline) — for `--dump-bytecode` style
/// debugging and for the compile → decode round-trip tests.
pub fn disassemble(blob: &Blob<'_>) -> String {
    let mut out = String::new();
    let h = blob.header();
    out.push_str(&format!(
        "test {} policy-bytes {:?} seed {} iterations {}\n",
        blob.name(),
        &h.policy.bytes[..abi::policy::N_KEYS],
        h.seed,
        h.iterations
    ));
    for i in 0..h.n_locs {
        let l = blob.location(i).expect("parsed");
        out.push_str(&format!(
            "loc {} {} {} init={} flags={} va={:#x}\n",
            blob.location_name(i).unwrap_or("?"),
            l.kind().name(),
            l.perm().name(),
            l.init,
            l.flags,
            l.va
        ));
    }
    for ti in 0..h.n_threads {
        let t = blob.thread(ti).expect("parsed");
        out.push_str(&format!("{} {}:\n", t.kind().name(), blob.thread_name(ti).unwrap_or("?")));
        let mut pc = 0;
        while pc < t.n_instrs {
            let (s, n) = dis_item(blob, &t, pc);
            out.push_str(&format!("  {s}\n"));
            pc += n.max(1);
        }
    }
    for i in 0..h.n_obs {
        let o = blob.observation(i).expect("parsed");
        match ObsKind::from_u8(o.kind) {
            Some(ObsKind::Reg) => {
                out.push_str(&format!("observe {}:r{}\n", blob.thread_name(o.thread as u16).unwrap_or("?"), o.reg))
            }
            _ => out.push_str(&format!("observe {}\n", blob.location_name(o.loc).unwrap_or("?"))),
        }
    }
    out
}

fn dis_block(blob: &Blob<'_>, t: &ThreadDesc, start: u32, end: u32) -> String {
    let mut parts = Vec::new();
    let mut pc = start;
    while pc < end {
        let (s, n) = dis_item(blob, t, pc);
        parts.push(s);
        pc += n.max(1);
    }
    format!("{{ {} }}", parts.join("; "))
}

/// One item (record + loop body + hook groups) as source text, and its length.
fn dis_item(blob: &Blob<'_>, t: &ThreadDesc, pc: u32) -> (String, u32) {
    let Some(i) = blob.thread_instr(t, pc) else {
        return ("?".into(), 1);
    };
    let loc = |l: u16| blob.location_name(l).unwrap_or("?").to_string();
    let op = i.op();
    let mut st = Stmt::new(op, 0, 0, (0, 0));
    st.loc = (i.loc != NO_LOC).then(|| loc(i.loc));
    st.loc2 = (i.loc2 != NO_LOC).then(|| loc(i.loc2));
    st.dst = (i.dst != NO_REG).then_some(i.dst);
    st.arg = i.arg;
    let mut text = match op {
        Op::Loop => format!("loop {} {}", i.imm, dis_block(blob, t, pc + 1, pc + 1 + i.len)),
        _ => {
            st.val = Some(if i.src != NO_REG { Operand::Reg(i.src) } else { Operand::Imm(i.imm) });
            st.val2 = Some(if i.src2 != NO_REG { Operand::Reg(i.src2) } else { Operand::Imm(i.imm2) });
            st.to_string()
        }
    };
    let mut n = 1 + if op == Op::Loop { i.len } else { 0 };
    for _ in 0..i.nhooks {
        let Some(at) = blob.thread_instr(t, pc + n) else { break };
        let hook = Hook::from_u8(at.arg).map(|h| h.name()).unwrap_or("?");
        // `at HOOK#N` keeps N in the record's imm (0: every firing).
        let nth = if at.imm > 0 { format!("#{}", at.imm) } else { String::new() };
        text.push_str(&format!(" at {hook}{nth} {}", dis_block(blob, t, pc + n + 1, pc + n + 1 + at.len)));
        n += 1 + at.len;
    }
    (text, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::check_source;

    #[test]
    fn round_trip_through_the_decoder() {
        let src = r#"name = "rt"
[locations]
x = { page = "rw", value = 1, shared = true }
u = { page = "unmapped", va = "0x7f0000001000" }
f = { var = 3 }
[thread.P0]
code = """
load x -> r0
cmpxchg x 1 r0 -> r2
madvise x dontneed at after_pte_clear { signal s1 } at after_ptl_release { wait s2 == 2; delay 10 }
mremap x -> u
"""
[device.D0]
code = """
prefetch x
loop 3 {
  dma_store x 2
  loop 2 { dma_load x -> r1 }
}
signal s2 2
"""
[final]
observe = ["P0:r0", "D0:r1", "x"]
exists = "P0:r0 == 1 && D0:r1 == fault"
"#;
        let t = check_source("rt.toml", src).test.expect("valid");
        let p = Policy::parse("kernel=v4.9,tlb=evict:0.5").unwrap();
        let c = compile(&t, &p, &CompileOptions { seed: 42, iterations: 7, iteration_timeout_ms: 100 }).unwrap();
        let b = Blob::parse(&c.blob).expect("decodes");
        assert_eq!(b.name(), "rt");
        assert_eq!(b.policy(), p.abi);
        assert_eq!(b.header().seed, 42);
        assert_eq!(b.header().n_vcpu_threads, 1);
        assert_eq!(b.header().n_device_threads, 1);
        let d = disassemble(&b);
        for (ti, th) in t.threads.iter().enumerate() {
            let bt = b.thread(ti as u16).unwrap();
            let mut pc = 0;
            for s in &th.code {
                let (text, n) = dis_item(&b, &bt, pc);
                assert_eq!(text, s.to_string());
                pc += n;
            }
            assert_eq!(pc, bt.n_instrs);
        }
        assert!(d.contains("loc u unmapped none init=0 flags=2 va=0x7f0000001000"), "{d}");
        assert!(d.contains("loc x page rw init=1 flags=1"), "{d}");
        assert!(d.contains("observe D0:r1\nobserve x\n"), "{d}");
        // Hook lookup as the interpreter does it.
        let p0 = b.thread(0).unwrap();
        let (gs, ge) = b.hook_group(&p0, 2, Hook::AfterPtlRelease, 1).unwrap();
        assert_eq!(ge - gs, 2);
        assert_eq!(b.thread_instr(&p0, gs).unwrap().op(), Op::Wait);
        assert_eq!(b.item_len(&p0, 2), Some(6));
        assert_eq!(c.position(0, 3), Some((10, 1)));
        assert_eq!(c.position(0, 99), None);
    }
}
