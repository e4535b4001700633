//! The turn protocol of `vmm explore`: how the threads of a litmus test —
//! guest vCPU threads and the VMM's device threads — run one at a time and
//! follow a schedule plan without an exit per scheduling point.
//!
//! The explore area (guest memory, [`AREA`]) holds a control block, the
//! plan (a prefix of thread choices, the priority order, PCT's priorities
//! and change points) and the step log. A thread that holds the *turn* runs
//! alone; at each scheduling point it calls [`at_point`] (or [`at_finish`]),
//! which closes the step it just ran (its footprint goes into the log),
//! evaluates every thread's guard, chooses the next thread by the plan and
//! opens its log record, then passes the turn. Only the turn holder writes
//! the area, so plain loads and stores suffice; the turn word is published
//! last. A thread whose turn it is not waits for the turn word to name it
//! (spinning, or parked in the VMM), taking interrupts meanwhile.
//!
//! The same code runs on both sides of the wire — the guest over its own
//! memory, the VMM over guest memory — through [`Shared`]; the VMM reads the
//! log after the iteration and hands it to the `explore` crate, whose
//! `Chooser` this module's rule must equal (checked by the VMM's tests).

/// Base of the explore area (in the litmus shared region, after the device
/// programs and before the trace area).
pub const AREA: u64 = crate::layout::LITMUS_STATE + 0x12_0000;
pub const AREA_SIZE: u64 = 0xE_0000;
const _: () = assert!(AREA + AREA_SIZE <= crate::layout::TRACE_BASE);

/// Threads a schedule can name (vCPU threads, then device threads).
pub const MAX_THREADS: usize = 16;
/// Steps one schedule may take (log capacity).
pub const MAX_STEPS: u64 = 8192;
/// PCT change points at most (`--pct D`: D − 1 of them).
pub const MAX_CHANGE: usize = 32;
/// Variables one step may touch before its footprint becomes "everything".
pub const MAX_STEP_VARS: usize = 8;

pub const MAGIC: u64 = u64::from_le_bytes(*b"SDEXPLOR");

/// No thread (turn, current).
pub const NOBODY: u64 = u64::MAX;

/// Control block word offsets (from [`AREA`]).
pub mod ctl {
    pub const MAGIC: u64 = 0x00;
    pub const NTHREADS: u64 = 0x08;
    /// 1 while an iteration runs under the scheduler.
    pub const ACTIVE: u64 = 0x10;
    /// The thread that may run, or [`super::NOBODY`].
    pub const TURN: u64 = 0x18;
    /// Log records written (the index of the next one).
    pub const STEPS: u64 = 0x20;
    /// The thread that ran the last step ([`super::NOBODY`] before the first).
    pub const CURRENT: u64 = 0x28;
    /// Bit t: thread t finished.
    pub const FINISHED: u64 = 0x30;
    /// [`super::error`] code; the iteration's schedule is unusable if set.
    pub const ERROR: u64 = 0x38;
    pub const PREFIX_LEN: u64 = 0x40;
    /// [`super::rule`].
    pub const RULE: u64 = 0x48;
    pub const N_CHANGE: u64 = 0x50;
    /// PCT: index of the next change point not yet reached.
    pub const NEXT_CHANGE: u64 = 0x58;
    /// Threads that reached their first point (the last one to arrive
    /// makes the first choice).
    pub const ARRIVED: u64 = 0x60;
    /// vCPU threads of the test (device thread d is thread NVCPU + d).
    pub const NVCPU: u64 = 0x68;
    /// The priority order, one thread per word.
    pub const PRIORITY: u64 = 0x80;
    /// PCT priority of each thread.
    pub const PCT_PRIO: u64 = PRIORITY + 8 * super::MAX_THREADS as u64;
    /// PCT change points (1-based step numbers, sorted).
    pub const CHANGE: u64 = PCT_PRIO + 8 * super::MAX_THREADS as u64;
    /// Per-thread slots ([`super::slot`]).
    pub const SLOTS: u64 = CHANGE + 8 * super::MAX_CHANGE as u64;
    pub const END: u64 = SLOTS + super::slot::SIZE * super::MAX_THREADS as u64;
    const _: () = assert!(END <= super::PREFIX);
}

/// A thread's slot: where it is and what it waits for, and the footprint
/// of the step it runs.
pub mod slot {
    pub const SIZE: u64 = 0x80;
    /// [`super::site`] of the point the thread is at.
    pub const SITE: u64 = 0x00;
    /// Its guard: [`super::guard`] kind, address, operand, object.
    pub const GUARD_KIND: u64 = 0x08;
    pub const GUARD_ADDR: u64 = 0x10;
    pub const GUARD_VALUE: u64 = 0x18;
    pub const GUARD_OBJECT: u64 = 0x20;
    /// Log index of the step it is running.
    pub const STEP: u64 = 0x28;
    /// Footprint of that step: mem mode (0 none, 1 read, 2 write), number
    /// of variables (> MAX_STEP_VARS = overflow), then the variables.
    pub const FP_MEM: u64 = 0x30;
    pub const FP_NVARS: u64 = 0x38;
    pub const FP_VARS: u64 = 0x40;
    const _: () = assert!(FP_VARS + 8 * super::MAX_STEP_VARS as u64 <= SIZE);
}

/// The replay prefix: one thread index per byte.
pub const PREFIX: u64 = 0x1000;
/// The step log: [`MAX_STEPS`] records of [`rec::SIZE`] bytes.
pub const LOG: u64 = PREFIX + MAX_STEPS;
const _: () = assert!(LOG + MAX_STEPS * rec::SIZE <= AREA_SIZE);

/// One log record (word offsets).
pub mod rec {
    pub const SIZE: u64 = 72;
    /// thread | mem << 8 | nvars << 16 (nvars > MAX_STEP_VARS: overflow).
    pub const HEAD: u64 = 0;
    /// Enabled threads at the point, before the choice.
    pub const ENABLED: u64 = 8;
    /// Site of the chosen thread.
    pub const SITE: u64 = 16;
    /// Up to 8 variable objects, u16 each (bit 15 = written).
    pub const VARS: u64 = 24;
    /// Per thread the object its guard reads if it is blocked (0 = not
    /// blocked or finished), u16 each.
    pub const BLOCKED: u64 = 40;
    const _: () = assert!(BLOCKED + 2 * super::MAX_THREADS as u64 == SIZE);
}

/// Objects of step footprints (u16 in the log).
pub mod object {
    /// Nothing.
    pub const NONE: u16 = 0;
    /// The whole mm model: page tables, TLBs, IOTLB, pages, mm locks.
    pub const MEM: u16 = 1;
    /// The `barrier` arrival counter.
    pub const BARRIER: u16 = 2;
    /// Litmus kernel word `i` (a `var` location or a flag): `VAR + i`.
    pub const VAR: u16 = 0x100;
    /// Bit 15 of a logged variable: written.
    pub const WRITE: u16 = 0x8000;
}

/// Sites: where a thread is when it reaches a point.
/// `kind << 56 | nth << 40 | sub << 32 | pc`.
pub mod site {
    /// Before instruction `pc` (thread-relative record index).
    pub const INSTR: u64 = 1;
    /// At the `nth` firing of hook `sub` in the operation at `pc`.
    pub const HOOK: u64 = 2;
    /// Before the `nth` acquisition of a lock of kind `sub` in the operation at `pc`.
    pub const LOCK: u64 = 3;
    /// Before device operation `pc`.
    pub const DEVICE: u64 = 4;
    /// Inside the operation at `pc`, waiting for a condition (`sub`, `nth` as for LOCK).
    pub const WAIT: u64 = 5;

    pub const fn make(kind: u64, pc: u32, sub: u8, nth: u16) -> u64 {
        kind << 56 | (nth as u64) << 40 | (sub as u64) << 32 | pc as u64
    }
    pub const fn kind(s: u64) -> u64 {
        s >> 56
    }
    pub const fn pc(s: u64) -> u32 {
        s as u32
    }
    pub const fn sub(s: u64) -> u8 {
        (s >> 32) as u8
    }
    pub const fn nth(s: u64) -> u16 {
        (s >> 40) as u16
    }
}

/// Guards: when a thread at a point can take its step.
pub mod guard {
    /// Always.
    pub const NONE: u64 = 0;
    /// u64 at addr ≠ 0 (`wait F`).
    pub const NONZERO: u64 = 1;
    /// u64 at addr = value (`wait F == V`).
    pub const EQ: u64 = 2;
    /// u64 at addr ≥ value (`barrier`).
    pub const GE: u64 = 3;
    /// u64 at addr ≠ value (waiting for a word to change).
    pub const NE: u64 = 4;
    /// byte at addr = 0 (a test-and-set lock is free).
    pub const BYTE_ZERO: u64 = 5;
    /// u64 at addr & value = 0 (a lock bit is clear).
    pub const MASK_ZERO: u64 = 6;
    /// u32 at addr & value = 0.
    pub const MASK32_ZERO: u64 = 7;
}

/// How choices after the prefix are made.
pub mod rule {
    /// Keep the current thread while it can run, else the first enabled
    /// thread in priority order.
    pub const NON_PREEMPTIVE: u64 = 0;
    /// PCT: the enabled thread of highest PCT priority.
    pub const PCT: u64 = 1;
}

/// `ctl::ERROR` codes.
pub mod error {
    pub const NONE: u64 = 0;
    /// More than [`super::MAX_STEPS`] steps.
    pub const LOG_FULL: u64 = 1;
    /// Nobody can run and somebody has not finished.
    pub const DEADLOCK: u64 = 2;
    /// The prefix names a thread that cannot run: the program is not
    /// deterministic under this schedule.
    pub const DIVERGED: u64 = 3;
}

/// Access to the explore area and to the words guards read. Guest: its own
/// memory (identity-mapped); VMM: guest memory.
pub trait Shared {
    fn load(&self, gpa: u64) -> u64;
    fn load_u32(&self, gpa: u64) -> u32;
    fn load_u8(&self, gpa: u64) -> u8;
    fn store(&self, gpa: u64, v: u64);
}

/// What a thread waits for at a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guard {
    pub kind: u64,
    pub addr: u64,
    pub value: u64,
    /// Footprint object the guard reads ([`object`]).
    pub object: u16,
}

impl Guard {
    pub const NONE: Guard = Guard { kind: guard::NONE, addr: 0, value: 0, object: object::NONE };

    /// Whether the thread can take its step now.
    pub fn holds(&self, m: &impl Shared) -> bool {
        match self.kind {
            guard::NONZERO => m.load(self.addr) != 0,
            guard::EQ => m.load(self.addr) == self.value,
            guard::GE => m.load(self.addr) >= self.value,
            guard::NE => m.load(self.addr) != self.value,
            guard::BYTE_ZERO => m.load_u8(self.addr) == 0,
            guard::MASK_ZERO => m.load(self.addr) & self.value == 0,
            guard::MASK32_ZERO => m.load_u32(self.addr) & self.value as u32 == 0,
            _ => true,
        }
    }
}

fn c(off: u64) -> u64 {
    AREA + off
}

fn s(t: u64, off: u64) -> u64 {
    AREA + ctl::SLOTS + t * slot::SIZE + off
}

fn r(i: u64, off: u64) -> u64 {
    AREA + LOG + i * rec::SIZE + off
}

/// What the caller does after a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Run thread t (possibly the caller) — wait for the turn if it is not you.
    Run(u64),
    /// Nothing can run: the schedule ended (everyone finished) or failed
    /// (`ctl::ERROR` says why).
    Stop,
}

/// Records `me` at a point: its site and guard.
fn publish(m: &impl Shared, me: u64, site: u64, g: Guard) {
    m.store(s(me, slot::SITE), site);
    m.store(s(me, slot::GUARD_KIND), g.kind);
    m.store(s(me, slot::GUARD_ADDR), g.addr);
    m.store(s(me, slot::GUARD_VALUE), g.value);
    m.store(s(me, slot::GUARD_OBJECT), g.object as u64);
}

fn guard_of(m: &impl Shared, t: u64) -> Guard {
    Guard {
        kind: m.load(s(t, slot::GUARD_KIND)),
        addr: m.load(s(t, slot::GUARD_ADDR)),
        value: m.load(s(t, slot::GUARD_VALUE)),
        object: m.load(s(t, slot::GUARD_OBJECT)) as u16,
    }
}

/// Writes the footprint `me` accumulated into the record of its step.
fn close_step(m: &impl Shared, me: u64) {
    let i = m.load(s(me, slot::STEP));
    if i >= MAX_STEPS {
        return;
    }
    let mem = m.load(s(me, slot::FP_MEM)) & 3;
    let nvars = m.load(s(me, slot::FP_NVARS)).min(MAX_STEP_VARS as u64 + 1);
    m.store(r(i, rec::HEAD), me | mem << 8 | nvars << 16);
    let mut words = [0u64; 2];
    for k in 0..(nvars as usize).min(MAX_STEP_VARS) {
        words[k / 4] |= (m.load(s(me, slot::FP_VARS + 8 * k as u64)) & 0xffff) << (16 * (k % 4));
    }
    m.store(r(i, rec::VARS), words[0]);
    m.store(r(i, rec::VARS + 8), words[1]);
}

/// Notes that the running thread `me` touched `obj` (an [`object`]).
pub fn note(m: &impl Shared, me: u64, obj: u16, write: bool) {
    if obj == object::MEM {
        let cur = m.load(s(me, slot::FP_MEM));
        let want = if write { 2 } else { 1 };
        if want > cur {
            m.store(s(me, slot::FP_MEM), want);
        }
        return;
    }
    let n = m.load(s(me, slot::FP_NVARS));
    for k in 0..n.min(MAX_STEP_VARS as u64) {
        let at = s(me, slot::FP_VARS + 8 * k);
        let v = m.load(at);
        if v as u16 & !object::WRITE == obj {
            if write {
                m.store(at, v | object::WRITE as u64);
            }
            return;
        }
    }
    if n < MAX_STEP_VARS as u64 {
        m.store(s(me, slot::FP_VARS + 8 * n), (obj | if write { object::WRITE } else { 0 }) as u64);
    }
    m.store(s(me, slot::FP_NVARS), n + 1);
}

/// The plan's choice among `enabled` for the step numbered `step` (0-based).
pub fn choose(m: &impl Shared, step: u64, enabled: u64) -> Option<u64> {
    if enabled == 0 {
        return None;
    }
    let n = m.load(c(ctl::NTHREADS)).min(MAX_THREADS as u64);
    if step < m.load(c(ctl::PREFIX_LEN)) {
        let w = m.load(AREA + PREFIX + (step & !7));
        let t = (w >> (8 * (step & 7))) & 0xff;
        return Some(t);
    }
    if m.load(c(ctl::RULE)) == rule::PCT {
        let mut best: Option<(u64, u64)> = None;
        for t in 0..n {
            if enabled & (1 << t) != 0 {
                let p = m.load(c(ctl::PCT_PRIO + 8 * t));
                if best.is_none_or(|(_, bp)| p > bp) {
                    best = Some((t, p));
                }
            }
        }
        return best.map(|(t, _)| t);
    }
    let cur = m.load(c(ctl::CURRENT));
    if cur < n && enabled & (1 << cur) != 0 {
        return Some(cur);
    }
    (0..n).map(|i| m.load(c(ctl::PRIORITY + 8 * i))).find(|&t| t < 64 && enabled & (1 << t) != 0)
}

/// Thread `me`, holding the turn, reached a point at `site` whose step can
/// run when `g` holds. Returns who runs next.
pub fn at_point(m: &impl Shared, me: u64, site: u64, g: Guard) -> Next {
    close_step(m, me);
    publish(m, me, site, g);
    decide(m)
}

/// Thread `me`, holding the turn, ran to its end.
pub fn at_finish(m: &impl Shared, me: u64) -> Next {
    close_step(m, me);
    publish(m, me, 0, Guard::NONE);
    let f = m.load(c(ctl::FINISHED)) | 1 << me;
    m.store(c(ctl::FINISHED), f);
    decide(m)
}

/// Thread `me` reached its first point (not holding the turn: threads
/// arrive concurrently, so arrival is counted with `arrive`, an atomic
/// fetch-add on `ctl::ARRIVED` the caller provides). The last to arrive
/// makes the first choice; the others wait for the turn.
pub fn at_start(m: &impl Shared, me: u64, site: u64, g: Guard, arrive: impl FnOnce() -> u64) -> Option<Next> {
    publish(m, me, site, g);
    m.store(s(me, slot::STEP), MAX_STEPS);
    let n = m.load(c(ctl::NTHREADS));
    if arrive() + 1 == n {
        Some(decide(m))
    } else {
        None
    }
}

/// Evaluates every guard, applies the plan, opens the next record, passes the turn.
fn decide(m: &impl Shared) -> Next {
    let n = m.load(c(ctl::NTHREADS)).min(MAX_THREADS as u64);
    let finished = m.load(c(ctl::FINISHED));
    let step = m.load(c(ctl::STEPS));
    // PCT: the thread that ran step number `step` (1-based) is demoted if
    // that step was a change point.
    if m.load(c(ctl::RULE)) == rule::PCT {
        let cur = m.load(c(ctl::CURRENT));
        let mut k = m.load(c(ctl::NEXT_CHANGE));
        let nc = m.load(c(ctl::N_CHANGE)).min(MAX_CHANGE as u64);
        while k < nc {
            let p = m.load(c(ctl::CHANGE + 8 * k));
            if p > step {
                break;
            }
            if p == step && cur < n {
                m.store(c(ctl::PCT_PRIO + 8 * cur), k + 1);
            }
            k += 1;
        }
        m.store(c(ctl::NEXT_CHANGE), k);
    }
    let mut enabled = 0u64;
    let mut blocked = [0u64; 4];
    for t in 0..n {
        if finished & (1 << t) != 0 {
            continue;
        }
        let g = guard_of(m, t);
        if g.holds(m) {
            enabled |= 1 << t;
        } else {
            blocked[t as usize / 4] |= (g.object as u64 & 0xffff) << (16 * (t % 4));
        }
    }
    let Some(next) = choose(m, step, enabled) else {
        if finished.count_ones() as u64 != n {
            m.store(c(ctl::ERROR), error::DEADLOCK);
        }
        m.store(c(ctl::TURN), NOBODY);
        return Next::Stop;
    };
    if next >= n || enabled & (1 << next) == 0 {
        m.store(c(ctl::ERROR), error::DIVERGED);
        m.store(c(ctl::TURN), NOBODY);
        return Next::Stop;
    }
    if step >= MAX_STEPS {
        m.store(c(ctl::ERROR), error::LOG_FULL);
        m.store(c(ctl::TURN), NOBODY);
        return Next::Stop;
    }
    m.store(r(step, rec::HEAD), next);
    m.store(r(step, rec::ENABLED), enabled);
    m.store(r(step, rec::SITE), m.load(s(next, slot::SITE)));
    m.store(r(step, rec::VARS), 0);
    m.store(r(step, rec::VARS + 8), 0);
    for (k, w) in blocked.iter().enumerate() {
        m.store(r(step, rec::BLOCKED + 8 * k as u64), *w);
    }
    m.store(s(next, slot::STEP), step);
    m.store(s(next, slot::FP_MEM), 0);
    m.store(s(next, slot::FP_NVARS), 0);
    m.store(c(ctl::STEPS), step + 1);
    m.store(c(ctl::CURRENT), next);
    m.store(c(ctl::TURN), next);
    Next::Run(next)
}

/// One log record, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub thread: u8,
    /// 0 none, 1 read, 2 write.
    pub mem: u8,
    /// Variables touched; more than [`MAX_STEP_VARS`] means "everything".
    pub nvars: u8,
    pub vars: [u16; MAX_STEP_VARS],
    pub enabled: u64,
    pub site: u64,
    /// Per thread: the object its guard reads if blocked, else 0.
    pub blocked: [u16; MAX_THREADS],
}

/// Reads log record `i`.
pub fn record(m: &impl Shared, i: u64) -> Record {
    let head = m.load(r(i, rec::HEAD));
    let mut out = Record {
        thread: head as u8,
        mem: (head >> 8) as u8 & 3,
        nvars: (head >> 16) as u8,
        enabled: m.load(r(i, rec::ENABLED)),
        site: m.load(r(i, rec::SITE)),
        ..Record::default()
    };
    for k in 0..MAX_STEP_VARS {
        out.vars[k] = (m.load(r(i, rec::VARS + 8 * (k as u64 / 4))) >> (16 * (k % 4))) as u16;
    }
    for t in 0..MAX_THREADS {
        out.blocked[t] = (m.load(r(i, rec::BLOCKED + 8 * (t as u64 / 4))) >> (16 * (t % 4))) as u16;
    }
    out
}

/// The plan of one schedule, as the VMM writes it.
pub struct PlanWords<'a> {
    pub nthreads: u64,
    pub nvcpu: u64,
    pub prefix: &'a [u8],
    pub priority: &'a [u8],
    pub rule: u64,
    pub pct_prio: &'a [u32],
    pub change_points: &'a [u64],
}

/// Error of [`write_plan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanTooBig {
    Threads,
    Prefix,
    ChangePoints,
}

/// Resets the control block for a new schedule and writes its plan.
pub fn write_plan(m: &impl Shared, p: &PlanWords<'_>) -> Result<(), PlanTooBig> {
    if p.nthreads as usize > MAX_THREADS || p.priority.len() > MAX_THREADS || p.pct_prio.len() > MAX_THREADS {
        return Err(PlanTooBig::Threads);
    }
    if p.prefix.len() as u64 > MAX_STEPS {
        return Err(PlanTooBig::Prefix);
    }
    if p.change_points.len() > MAX_CHANGE {
        return Err(PlanTooBig::ChangePoints);
    }
    m.store(c(ctl::MAGIC), MAGIC);
    m.store(c(ctl::NTHREADS), p.nthreads);
    m.store(c(ctl::NVCPU), p.nvcpu);
    m.store(c(ctl::ACTIVE), 1);
    m.store(c(ctl::TURN), NOBODY);
    m.store(c(ctl::STEPS), 0);
    m.store(c(ctl::CURRENT), NOBODY);
    m.store(c(ctl::FINISHED), 0);
    m.store(c(ctl::ERROR), error::NONE);
    m.store(c(ctl::PREFIX_LEN), p.prefix.len() as u64);
    m.store(c(ctl::RULE), p.rule);
    m.store(c(ctl::N_CHANGE), p.change_points.len() as u64);
    m.store(c(ctl::NEXT_CHANGE), 0);
    m.store(c(ctl::ARRIVED), 0);
    for i in 0..MAX_THREADS {
        let t = p.priority.get(i).map_or(NOBODY, |&t| t as u64);
        m.store(c(ctl::PRIORITY + 8 * i as u64), t);
        m.store(c(ctl::PCT_PRIO + 8 * i as u64), p.pct_prio.get(i).copied().unwrap_or(0) as u64);
    }
    for (i, &k) in p.change_points.iter().enumerate() {
        m.store(c(ctl::CHANGE + 8 * i as u64), k);
    }
    for (i, chunk) in p.prefix.chunks(8).enumerate() {
        let mut w = 0u64;
        for (j, &t) in chunk.iter().enumerate() {
            w |= (t as u64) << (8 * j);
        }
        m.store(AREA + PREFIX + 8 * i as u64, w);
    }
    Ok(())
}
