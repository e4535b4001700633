//! The body of the front-end fuzz target (`litmus/fuzz`, `cargo +nightly
//! fuzz run frontend`), also run seeded by `cargo test -p litmus`
//! (`tests/frontend_fuzz.rs`), with the seeded mutator and the
//! grammar-aware generator that test uses.
//!
//! [`run_frontend`] takes any bytes through everything a litmus file goes
//! through on the host: decoding, checking, compiling under its policies,
//! `Blob::parse` (the guest's own check), disassembly, result formatting.
//! It panics only on a broken invariant, so a fuzzer finds exactly these:
//! - any panic, stack overflow or runaway allocation in the front end;
//! - a diagnostic outside the file;
//! - a test the checker accepts that the compiler or the blob format
//!   refuses (the guest would die on it instead of the checker saying
//!   file:line:col why);
//! - a compiled thread that does not disassemble to its source statements.

use crate::ast::Test;
use crate::compile::{compile, disassemble, CompileOptions};
use crate::file::check_bytes;
use crate::format::{herd_block, to_json, verdict_table};
use crate::policy::Policy;
use crate::results::RunResult;
use abi::litmus::{Blob, Hook, ThreadKind};
use abi::rng::SplitMix64;
use std::fmt::Write as _;

/// What [`run_frontend`] saw (for the seeded test's statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Checked, compiled, decoded and printed.
    Accepted,
    /// Refused with diagnostics.
    Refused,
}

/// Runs the whole host front end on `data`; panics on a broken invariant.
pub fn run_frontend(data: &[u8]) -> Outcome {
    let checked = check_bytes("fuzz.toml", data.to_vec());
    let lines = 1 + data.iter().filter(|&&b| b == b'\n').count() as u32;
    for d in &checked.diagnostics {
        assert!(d.line >= 1 && d.line <= lines && d.col >= 1, "diagnostic outside the file: {}", d.headline());
        let _ = d.to_string();
    }
    let Some(test) = checked.test else {
        assert!(checked.diagnostics.iter().any(|d| d.is_error()), "refused without an error");
        return Outcome::Refused;
    };
    let mut policies = vec![Policy::default()];
    policies.extend(test.expect_policies().into_iter().take(2));
    for policy in policies {
        exercise_compiled(&test, &policy);
    }
    Outcome::Accepted
}

fn exercise_compiled(test: &Test, policy: &Policy) {
    let opts = CompileOptions { seed: 7, iterations: 3, iteration_timeout_ms: 10 };
    let compiled = match compile(test, policy, &opts) {
        Ok(c) => c,
        Err(e) => panic!("the checker accepted test `{}` but: {e}", test.name),
    };
    let blob = match Blob::parse(&compiled.blob) {
        Ok(b) => b,
        Err(e) => panic!("the checker accepted test `{}` but the guest refuses its blob: {e:?}", test.name),
    };
    // Every thread walks item by item as the interpreter does, and reads
    // back as the statements it was compiled from.
    let text = disassemble(&blob);
    let mut lines = text.lines().peekable();
    for (ti, t) in test.threads.iter().enumerate() {
        let bt = blob.thread(ti as u16).expect("thread record");
        let mut pc = 0;
        while pc < bt.n_instrs {
            let n = blob.item_len(&bt, pc).expect("well-formed item");
            for h in Hook::ALL {
                let _ = blob.hook_group(&bt, pc, *h, 1);
            }
            pc += n;
        }
        assert_eq!(pc, bt.n_instrs);
        assert_eq!(compiled.positions[ti].len(), bt.n_instrs as usize);
        let header = format!("{} {}:", t.kind.name(), t.name);
        while lines.next_if(|l| *l != header).is_some() {}
        assert_eq!(lines.next(), Some(header.as_str()), "thread {} missing from the disassembly", t.name);
        for s in &t.code {
            assert_eq!(lines.next().map(str::trim_start), Some(s.to_string().as_str()), "thread {}", t.name);
        }
        assert_eq!(t.kind == ThreadKind::Device, bt.kind() == ThreadKind::Device);
    }
    // One iteration of zeros through the result formatting.
    let mut run = RunResult::new(test, *policy, opts.seed, 1);
    run.record(&vec![0; test.observed.len()]).expect("arity");
    let _ = herd_block(test, &run);
    let _ = verdict_table(&[(test, &run)]);
    let _ = to_json(&[(test, &run)]).to_string();
}

// ---------------------------------------------------------------- seeded mutation

/// The fuzzer's generator: `abi::rng`'s SplitMix64 with the modulo
/// reduction (`below_mod`) the recorded inputs were drawn with, in `usize`.
#[derive(Clone, Debug)]
pub struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// In `0..n` (0 if `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.below_mod(n as u64) as usize
    }
    /// True with probability 1/`n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// The tokens of `fuzz/litmus.dict` (libFuzzer's dictionary format: one
/// quoted string a line, `\\`, `\"` and `\xNN` escapes).
pub fn dictionary() -> Vec<Vec<u8>> {
    include_str!("../fuzz/litmus.dict")
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.strip_suffix('"'))
        .map(|q| {
            let mut out = Vec::new();
            let b = q.as_bytes();
            let mut i = 0;
            while i < b.len() {
                let hex = b.get(i + 2..i + 4).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
                match (b[i], b.get(i + 1)) {
                    (b'\\', Some(b'x')) if hex.is_some() => {
                        out.extend(hex);
                        i += 4;
                    }
                    (b'\\', Some(&c)) => {
                        out.push(c);
                        i += 2;
                    }
                    (c, _) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            out
        })
        .collect()
}

/// One to four random edits of `input`: byte changes, dictionary tokens
/// inserted, ranges deleted or repeated, a line repeated up to a few
/// hundred times (counts past the limits), a piece of another seed
/// spliced in, a cut.
pub fn mutate(rng: &mut Rng, input: &[u8], seeds: &[&[u8]], dict: &[Vec<u8>]) -> Vec<u8> {
    let mut b = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = b.len();
        let at = rng.below(n + 1);
        match rng.below(9) {
            0 if n > 0 => {
                let i = rng.below(n);
                b[i] = rng.next_u64() as u8;
            }
            1 if n > 0 => {
                // A printable byte: keeps the text UTF-8 and near the grammar.
                let i = rng.below(n);
                b[i] = *rng.pick(b" \n{}()!&|=-;:#\"'x0r9_");
            }
            2 | 3 => {
                let tok = rng.pick(dict).clone();
                b.splice(at..at, tok);
            }
            4 if n > 0 => {
                let len = rng.below((n - at).min(64) + 1);
                b.drain(at..at + len);
            }
            5 if n > 0 => {
                // Repeat the line around `at`.
                let i = at.min(n - 1);
                let start = b[..i].iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
                let end = b[i..].iter().position(|&c| c == b'\n').map_or(n, |p| i + p + 1);
                let line = b[start..end].to_vec();
                let times = *rng.pick(&[2, 3, 17, 70, 260, 300]);
                let mut rep = Vec::with_capacity(line.len() * times);
                for k in 0..times {
                    rep.extend_from_slice(&line);
                    // Vary a digit so repeated keys need not collide.
                    if let Some(p) = rep.iter().rposition(|c| c.is_ascii_digit()) {
                        rep.splice(p..p, k.to_string().into_bytes());
                    }
                }
                b.splice(end..end, rep);
            }
            6 => {
                let other = rng.pick(seeds);
                if !other.is_empty() {
                    let s = rng.below(other.len());
                    let e = s + rng.below((other.len() - s).min(200) + 1);
                    b.splice(at..at, other[s..e].iter().copied());
                }
            }
            7 if n > 0 => b.truncate(at),
            _ => {
                let tok = rng.pick(dict).clone();
                b.splice(at..at, tok);
            }
        }
    }
    b
}

// ---------------------------------------------------------------- generation

const VCPU_OPS: &[&str] = &[
    "load L -> R",
    "store L V",
    "xchg L V -> R",
    "cmpxchg L V V -> R",
    "fetch_add L V -> R",
    "mfence",
    "wait F",
    "wait F == N",
    "signal F",
    "signal F N",
    "barrier",
    "delay N",
    "touch L write",
    "touch L",
    "mmap L rw",
    "munmap L",
    "mprotect L ro",
    "madvise L dontneed",
    "madvise L free",
    "cow L",
    "ksm L L",
    "migrate L",
    "mkclean L -> R",
    "reclaim L",
    "mremap L -> L",
    "alloc L",
];
const DEVICE_OPS: &[&str] = &[
    "dma_load L -> R",
    "dma_store L V",
    "dma_xchg L V -> R",
    "dma_fetch_add L V -> R",
    "prefetch L",
    "wait F",
    "signal F",
    "delay N",
    "barrier",
];
const SYNC_OPS: &[&str] = &["wait F", "wait F == N", "signal F", "signal F N", "delay N", "barrier"];
const POLICIES: &[&str] = &[
    "default",
    "flush=ptl",
    "flush=gather",
    "flush=per-ptl",
    "flush=generation",
    "notifier=end",
    "notifier=none",
    "madv-nested-check=off",
    "tlb=evict:0.5",
    "iotlb=evict:1",
    "pwc=off",
    "migrc=on,migrc-upgrade=wp-only",
];

/// Sizes of one generated test: usually small; one test in ten has one
/// dimension at or just past its limit.
struct Shape {
    /// Page and unmapped locations, then `var`s.
    pages: usize,
    vars: usize,
    /// Pin every page in its own 512 GiB slot (page tables near their limit).
    spread: bool,
    /// Shared pages among the first ones.
    shared: usize,
    /// `cow` statements added to the first thread.
    cows: usize,
    /// Locations linked by a `ksm` chain in the first thread.
    ksm_chain: usize,
    vcpus: usize,
    devices: usize,
    stmts: usize,
    flags: usize,
    depth: usize,
    cond_depth: usize,
    cond_terms: usize,
    observe: usize,
}

impl Shape {
    fn new(rng: &mut Rng) -> Shape {
        use abi::limits::*;
        let big = if rng.one_in(8) { rng.below(14) } else { usize::MAX };
        let around = |rng: &mut Rng, limit: usize| limit - 2 + rng.below(5);
        let pages = match big {
            9 => around(rng, MAX_PAGE_LOCATIONS),
            // 3 tables per slot: 59 to 67 in all.
            10 => MAX_PAGE_TABLES / 3 + rng.below(3),
            11 => MAX_SHARED_PAGES + 2,
            13 => 2 * MAX_PAGE_MAPPINGS,
            _ => 1 + rng.below(5),
        };
        Shape {
            pages,
            vars: match big {
                0 => around(rng, MAX_LOCATIONS) - pages,
                8 => MAX_OBSERVED + 3,
                _ => rng.below(3),
            },
            spread: big == 10,
            shared: if big == 11 { around(rng, MAX_SHARED_PAGES) } else { 0 },
            cows: if big == 12 { around(rng, MAX_COW_OPS) } else { 0 },
            ksm_chain: if big == 13 { around(rng, MAX_PAGE_MAPPINGS) } else { 0 },
            vcpus: if big == 1 { around(rng, abi::limits::MAX_THREADS) } else { 1 + rng.below(3) },
            devices: if big == 2 { around(rng, abi::limits::MAX_DEVICE_THREADS) } else { rng.below(3) },
            stmts: match big {
                3 => 100 + rng.below(300),
                // Many threads, each short (or one of them would overflow).
                1 | 2 => 1 + rng.below(2),
                _ => 1 + rng.below(8),
            },
            flags: if big == 4 { around(rng, abi::limits::MAX_LOCATIONS) } else { rng.below(4) },
            depth: match big {
                5 => 12,
                1 | 2 => 1,
                _ => 3,
            },
            cond_depth: if big == 6 { around(rng, abi::limits::MAX_CONDITION_DEPTH) } else { 1 + rng.below(4) },
            cond_terms: if big == 7 { rng.below(3000) } else { 1 + rng.below(5) },
            observe: if big == 8 { around(rng, abi::limits::MAX_OBSERVED) } else { rng.below(3) },
        }
    }
}

struct Gen<'r> {
    rng: &'r mut Rng,
    shape: Shape,
    /// This test gets a few deliberate mistakes (else only the sizes of
    /// `shape` may be wrong).
    sloppy: bool,
    /// Page and unmapped locations (for memory and mm operations).
    pages: Vec<String>,
    /// `var` locations (for memory operations and wait/signal).
    vars: Vec<String>,
    /// (thread name, registers it writes).
    threads: Vec<(String, Vec<u8>)>,
}

impl Gen<'_> {
    /// A mistake here, now and then, in a sloppy test.
    fn slip(&mut self) -> bool {
        self.sloppy && self.rng.one_in(12)
    }
    fn page(&mut self) -> String {
        if self.pages.is_empty() || self.slip() {
            return if self.vars.is_empty() || self.rng.one_in(2) {
                format!("u{}", self.rng.below(3))
            } else {
                self.rng.pick(&self.vars).clone()
            };
        }
        self.rng.pick(&self.pages).clone()
    }
    fn mem_loc(&mut self) -> String {
        if !self.vars.is_empty() && self.rng.one_in(4) {
            self.rng.pick(&self.vars).clone()
        } else {
            self.page()
        }
    }
    fn flag(&mut self) -> String {
        if self.slip() && !self.pages.is_empty() {
            return self.rng.pick(&self.pages).clone();
        }
        if !self.vars.is_empty() && self.rng.one_in(3) {
            return self.rng.pick(&self.vars).clone();
        }
        format!("f{}", self.rng.below(self.shape.flags.max(1)))
    }
    fn reg(&mut self, writes: &mut Vec<u8>) -> String {
        let r = if self.slip() { 32 } else { self.rng.below(4) as u8 };
        writes.push(r);
        format!("r{r}")
    }
    fn num(&mut self) -> String {
        if self.slip() {
            return self.rng.pick(&["0xfffffffffffffff0", "18446744073709551615", "99999999999999999999"]).to_string();
        }
        match self.rng.below(8) {
            0 => "1_000".into(),
            1 => "0x2067".into(),
            2 => format!("{}", u64::MAX - 16),
            _ => self.rng.below(4).to_string(),
        }
    }
    fn value(&mut self) -> String {
        if self.rng.one_in(4) {
            format!("r{}", self.rng.below(4))
        } else {
            self.num()
        }
    }
    fn stmt(&mut self, ops: &[&str], depth: usize, out: &mut String, writes: &mut Vec<u8>) {
        let device = std::ptr::eq(ops, DEVICE_OPS);
        let max_depth = if self.slip() { self.shape.depth + 2 } else { self.shape.depth };
        // `loop` is a device operation (vCPU threads get one as a slip).
        if (device || self.slip()) && depth < max_depth && self.rng.one_in(4) {
            let count = match self.rng.below(16) {
                0 => "18446744073709551599".into(),
                1 | 2 => (abi::limits::MAX_DEVICE_OPS as usize - 1 + self.rng.below(3)).to_string(),
                _ => self.rng.below(20).to_string(),
            };
            let _ = writeln!(out, "loop {count} {{");
            for _ in 0..1 + self.rng.below(3) {
                self.stmt(ops, depth + 1, out, writes);
            }
            out.push_str("}\n");
            return;
        }
        let op = *self.rng.pick(ops);
        let name = op.split(' ').next().unwrap_or("");
        let (is_mem, is_sync) =
            (matches!(name, "load" | "store" | "xchg" | "cmpxchg" | "fetch_add"), matches!(name, "wait" | "signal"));
        let mut s = String::new();
        for (i, part) in op.split(' ').enumerate() {
            if i > 0 {
                s.push(' ');
            }
            match part {
                "L" if is_mem => s.push_str(&self.mem_loc()),
                "L" => s.push_str(&self.page()),
                "F" if is_sync => s.push_str(&self.flag()),
                "F" => s.push_str(&self.page()),
                "R" => s.push_str(&self.reg(writes)),
                "V" => s.push_str(&self.value()),
                "N" => s.push_str(&self.num()),
                p => s.push_str(p),
            }
        }
        out.push_str(&s);
        let takes_hooks = abi::litmus::Op::from_name(name).is_some_and(|o| o.takes_hooks());
        if !device && (takes_hooks || self.slip()) && self.rng.one_in(3) {
            let first = self.rng.below(Hook::ALL.len());
            let n = 1 + self.rng.below(2);
            for k in 0..n {
                // Distinct hooks, unless this is a slip.
                let h = if self.slip() { Hook::ALL[first] } else { Hook::ALL[(first + k) % Hook::ALL.len()] };
                let _ = write!(out, " at {} {{ ", h.name());
                for j in 0..1 + self.rng.below(2) {
                    if j > 0 {
                        out.push_str("; ");
                    }
                    self.stmt(SYNC_OPS, depth + 1, out, writes);
                    if out.ends_with('\n') {
                        out.pop();
                    }
                }
                out.push_str(" }");
            }
        }
        out.push('\n');
    }
    fn atom(&mut self) -> String {
        let value = match self.rng.below(8) {
            0 => "fault".to_string(),
            1 => "stale-walk".to_string(),
            2 => "timeout".to_string(),
            _ => self.rng.below(3).to_string(),
        };
        let eq = if self.rng.one_in(3) { "!=" } else { "==" };
        let with_regs: Vec<(String, Vec<u8>)> =
            self.threads.iter().filter(|(_, r)| r.iter().any(|&r| r < 32)).cloned().collect();
        if !with_regs.is_empty() && self.rng.one_in(2) {
            let (t, regs) = self.rng.pick(&with_regs).clone();
            let r = if self.slip() { 31 } else { *self.rng.pick(&regs) };
            format!("{t}:r{r} {eq} {value}")
        } else {
            let l = if self.pages.is_empty() && self.vars.is_empty() { "u0".to_string() } else { self.mem_loc() };
            format!("{l} {eq} {value}")
        }
    }
    /// A condition of at most `depth` levels and about `budget` nodes.
    fn cond(&mut self, depth: usize, budget: &mut usize) -> String {
        if depth == 0 || *budget == 0 || self.rng.one_in(3) {
            return match self.rng.below(12) {
                0 => "true".into(),
                1 => "false".into(),
                _ => self.atom(),
            };
        }
        *budget -= 1;
        match self.rng.below(4) {
            0 => format!("!{}", self.cond(depth - 1, budget)),
            1 => format!("({})", self.cond(depth - 1, budget)),
            _ => {
                let n = 2 + self.rng.below(3);
                let op = if self.rng.one_in(2) { " && " } else { " || " };
                (0..n).map(|_| self.cond(depth - 1, budget)).collect::<Vec<_>>().join(op)
            }
        }
    }
}

/// A random test, mostly well-formed (so the compiler and the blob format
/// see many accepted tests), sometimes at or just past one of the limits
/// of `abi::limits`, sometimes deeply nested or with long chains, and in
/// one of three tests with a few mistakes.
pub fn generate(rng: &mut Rng) -> String {
    let shape = Shape::new(rng);
    let sloppy = rng.one_in(3);
    let mut g = Gen { rng, shape, sloppy, pages: Vec::new(), vars: Vec::new(), threads: Vec::new() };
    let mut out = String::new();
    let name_len = if g.slip() || g.rng.one_in(40) { 254 + g.rng.below(4) } else { 1 + g.rng.below(12) };
    let _ = writeln!(out, "name = \"{}\"", "g".repeat(name_len));
    out.push_str("[locations]\n");
    let good_vas = ["0x7f0000000000", "0x7f0000001000", "0x8000000000", "0x7ffffffff000", "0x123456789000"];
    let bad_vas = ["0x1000", "0x800000000000", "0x7f0000000800", "0x0", "0x7fffffffffff"];
    let mut used_vas = std::collections::HashSet::new();
    for i in 0..g.shape.pages + g.shape.vars {
        let name = if g.slip() || g.rng.one_in(300) { "x".repeat(254 + g.rng.below(4)) } else { format!("x{i}") };
        let var = i >= g.shape.pages;
        let kind = if var {
            format!("var = {}", g.rng.below(3))
        } else if i < g.shape.shared {
            "page = \"rw\"".into()
        } else {
            match g.rng.below(5) {
                0 => "page = \"unmapped\"".into(),
                1 => "page = \"ro\"".into(),
                2 => "page = \"none\"".into(),
                _ => format!("page = \"rw\", value = {}", g.rng.below(3)),
            }
        };
        let mut va = String::new();
        if g.shape.spread && !var {
            // Slot i + 2 of 512 GiB; a few extra pages share slot 2 at the
            // 1 GiB or 2 MiB level, to land on both sides of the limit.
            let slot = if i + 3 >= g.shape.pages { 2 } else { i as u64 + 3 };
            let offset = if slot == 2 { ((i % 3) as u64) << (21 + 9 * g.rng.below(2) as u32) } else { 0 };
            va = format!(", va = \"{:#x}\"", (slot << 39) | offset);
        } else if !var && g.rng.one_in(4) {
            let bad = g.slip() || g.rng.one_in(12);
            let v = if bad { g.rng.pick(&bad_vas).to_string() } else { g.rng.pick(&good_vas).to_string() };
            // Now and then a second location on one page (refused).
            if used_vas.insert(v.clone()) || g.rng.one_in(8) {
                va = format!(", va = \"{v}\"");
            }
        }
        let shared = if !var && (i < g.shape.shared || (kind.contains("rw") && g.rng.one_in(5))) {
            ", shared = true"
        } else {
            ""
        };
        let _ = writeln!(out, "{name} = {{ {kind}{va}{shared} }}");
        if var {
            g.vars.push(name);
        } else {
            g.pages.push(name);
        }
    }
    for (kind, n, ops) in [("thread", g.shape.vcpus, VCPU_OPS), ("device", g.shape.devices, DEVICE_OPS)] {
        for i in 0..n {
            let name = if kind == "thread" { format!("P{i}") } else { format!("D{i}") };
            let _ = writeln!(out, "[{kind}.{name}]\ncode = \"\"\"");
            let mut writes = Vec::new();
            if i == 0 && kind == "thread" {
                if g.shape.flags > 100 {
                    // Every flag in use: the location limit counts them.
                    for f in 0..g.shape.flags {
                        let _ = writeln!(out, "signal f{f}");
                    }
                }
                for k in 0..g.shape.cows {
                    let _ = writeln!(out, "cow x{}", k % g.shape.pages);
                }
                for k in 1..g.shape.ksm_chain.min(g.shape.pages) {
                    let _ = writeln!(out, "ksm x{k} x{}", k - 1);
                }
            }
            for _ in 0..g.shape.stmts {
                g.stmt(ops, 1, &mut out, &mut writes);
            }
            out.push_str("\"\"\"\n");
            g.threads.push((name, writes));
        }
    }
    out.push_str("[final]\n");
    if g.shape.observe > 10 {
        // Distinct observables around the limit: one location each.
        let items: Vec<String> = (0..g.shape.observe).map(|i| format!("\"x{}\"", g.shape.pages + i)).collect();
        let _ = writeln!(out, "observe = [{}]", items.join(", "));
    } else if g.shape.observe > 0 {
        let mut items: Vec<String> = Vec::new();
        for i in 0..g.shape.observe {
            let item = match g.threads.get(i % g.threads.len().max(1)) {
                Some((t, regs)) if g.rng.one_in(2) => match regs.iter().find(|&&r| r < 32) {
                    Some(r) => format!("\"{t}:r{r}\""),
                    None => continue,
                },
                _ if !g.pages.is_empty() || !g.vars.is_empty() => format!("\"{}\"", g.mem_loc()),
                _ => continue,
            };
            items.push(item);
        }
        let _ = writeln!(out, "observe = [{}]", items.join(", "));
    }
    let mut cond = g.cond(4, &mut 24);
    if g.shape.cond_terms > 5 {
        let atom = g.atom();
        cond = format!("{cond} && {}", vec![atom; g.shape.cond_terms].join(" && "));
    }
    if g.shape.cond_depth > 4 {
        // Nesting around the limit: `(`, `!` and `!(` wrappers.
        for _ in 0..g.shape.cond_depth.saturating_sub(4) {
            cond = match g.rng.below(3) {
                0 => format!("({cond})"),
                1 => format!("!{cond}"),
                _ => format!("({cond} || false)"),
            };
        }
    }
    let kind = if g.rng.one_in(2) { "exists" } else { "forbidden" };
    let _ = writeln!(out, "{kind} = \"{cond}\"");
    if g.rng.one_in(2) {
        out.push_str("[expect]\n");
        let first = g.rng.below(POLICIES.len());
        for k in 0..1 + g.rng.below(3) {
            let p = if g.slip() { POLICIES[first] } else { POLICIES[(first + k) % POLICIES.len()] };
            let v = g.rng.pick(&["never", "sometimes", "always"]);
            let _ = writeln!(out, "\"{p}\" = \"{v}\"");
        }
    }
    out
}
