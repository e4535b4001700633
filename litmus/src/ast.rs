//! The checked form of a litmus test: what the parser produces once every
//! name resolves, and what the compiler, the hash and the result formatter
//! consume.

use crate::policy::Policy;
use abi::litmus::{special_value_name, Advice, Hook, LocKind, Op, Perm, ThreadKind, WaitCmp};
use std::fmt;

/// A checked litmus test.
#[derive(Clone, Debug)]
pub struct Test {
    /// File name as given (used in diagnostics and JSON).
    pub file: String,
    pub name: String,
    pub doc: Option<String>,
    /// Declared locations in file order, then implicit flags (names used only
    /// by `wait`/`signal`) in order of first use. Index = bytecode location index.
    pub locations: Vec<Location>,
    /// vCPU threads in file order, then device threads in file order. Index =
    /// bytecode thread index; vCPU thread i runs on test vCPU i.
    pub threads: Vec<Thread>,
    /// What the guest reports per iteration: `[final] observe` followed by
    /// any register/location the condition uses that `observe` omits.
    pub observed: Vec<Observable>,
    pub condition: Condition,
    /// `[expect]` entries in file order.
    pub expect: Vec<Expectation>,
    /// `[explore]`: a test written for `vmm explore` (no hooks that force
    /// an interleaving); its `[expect]` verdicts hold for a search within
    /// this bound, not for `vmm litmus`'s free-running iterations.
    pub explore: Option<ExploreSpec>,
    /// Hex MD5 of the normalised test (locations, code, condition; not the
    /// name, doc or expectations), like litmus7's `Hash=`.
    pub hash: String,
}

/// Preemption bound of an `[explore]` table that names none.
pub const DEFAULT_EXPLORE_PREEMPTIONS: u32 = 2;

/// What an `[explore]` table says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExploreSpec {
    /// The search bound the `[expect]` verdicts are for (`preemptions = K`).
    pub preemptions: u32,
}

impl Test {
    pub fn location_index(&self, name: &str) -> Option<usize> {
        self.locations.iter().position(|l| l.name == name)
    }
    pub fn thread_index(&self, name: &str) -> Option<usize> {
        self.threads.iter().position(|t| t.name == name)
    }
    pub fn vcpu_threads(&self) -> usize {
        self.threads.iter().filter(|t| t.kind == ThreadKind::Vcpu).count()
    }
    pub fn device_threads(&self) -> usize {
        self.threads.iter().filter(|t| t.kind == ThreadKind::Device).count()
    }
    /// The `[expect]` verdict that applies to a run under `policy` (the first
    /// matching entry).
    pub fn expected_for(&self, policy: &Policy) -> Option<&Expectation> {
        self.expect.iter().find(|e| e.policy.expectation_applies(policy))
    }
    /// The `[expect]` policies, in file order (the default policy matrix).
    pub fn expect_policies(&self) -> Vec<Policy> {
        self.expect.iter().map(|e| e.policy).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub name: String,
    pub kind: LocKind,
    /// Initial mapping permission (pages); `Perm::None` otherwise.
    pub perm: Perm,
    /// First word of a page, or a var's value.
    pub init: u64,
    /// File-backed shared page.
    pub shared: bool,
    /// Pinned virtual address.
    pub va: Option<u64>,
    /// Not declared: a flag used by wait/signal, starting at 0.
    pub implicit: bool,
}

impl Location {
    /// A declared read-write private page, initially 0, placed by the seed:
    /// the checker's starting point for every location.
    pub fn page(name: String) -> Location {
        Location { name, kind: LocKind::Page, perm: Perm::Rw, init: 0, shared: false, va: None, implicit: false }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thread {
    pub name: String,
    pub kind: ThreadKind,
    pub code: Vec<Stmt>,
}

/// A value operand: an immediate or a register of the same thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    Imm(u64),
    Reg(u8),
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Imm(v) => write!(f, "{v}"),
            Operand::Reg(r) => write!(f, "r{r}"),
        }
    }
}

/// `at HOOK { sync ops }`, or `at HOOK#N { … }` for only the N-th firing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookBlock {
    pub hook: Hook,
    /// N of `at HOOK#N` (1-based); 0 = every firing.
    pub nth: u32,
    pub body: Vec<Stmt>,
}

/// One statement of thread code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stmt {
    pub op: Op,
    /// First location operand (by name).
    pub loc: Option<String>,
    /// Second location operand (`ksm`, `mremap`).
    pub loc2: Option<String>,
    /// Destination register.
    pub dst: Option<u8>,
    /// First value operand (store/xchg/fetch_add value, cmpxchg OLD,
    /// wait/signal value, delay/loop count).
    pub val: Option<Operand>,
    /// Second value operand (cmpxchg NEW).
    pub val2: Option<Operand>,
    /// Small argument: [`Perm`], [`Advice`], [`WaitCmp`], touch-write flag.
    pub arg: u8,
    pub hooks: Vec<HookBlock>,
    /// Loop body.
    pub body: Vec<Stmt>,
    /// 1-based file position of the op name.
    pub line: u32,
    pub col: u32,
    /// File byte range of the op name, of `loc` and of `loc2` (for diagnostics).
    pub span: (usize, usize),
    pub loc_span: (usize, usize),
    pub loc2_span: (usize, usize),
}

impl Stmt {
    pub fn new(op: Op, line: u32, col: u32, span: (usize, usize)) -> Stmt {
        Stmt {
            op,
            loc: None,
            loc2: None,
            dst: None,
            val: None,
            val2: None,
            arg: 0,
            hooks: Vec::new(),
            body: Vec::new(),
            line,
            col,
            span,
            loc_span: (0, 0),
            loc2_span: (0, 0),
        }
    }

    /// This statement and every nested one (hook bodies, loop bodies), pre-order.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Stmt)) {
        f(self);
        for s in &self.body {
            s.walk(f);
        }
        for h in &self.hooks {
            for s in &h.body {
                s.walk(f);
            }
        }
    }
}

fn write_block(f: &mut fmt::Formatter<'_>, body: &[Stmt]) -> fmt::Result {
    f.write_str("{ ")?;
    for (i, s) in body.iter().enumerate() {
        if i > 0 {
            f.write_str("; ")?;
        }
        write!(f, "{s}")?;
    }
    f.write_str(" }")
}

impl fmt::Display for Stmt {
    /// Canonical one-line source form (also what the test hash covers).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let loc = self.loc.as_deref().unwrap_or("?");
        let loc2 = self.loc2.as_deref().unwrap_or("?");
        let v = |o: Option<Operand>| o.map(|o| o.to_string()).unwrap_or_default();
        let dst = self.dst.map(|r| format!("r{r}")).unwrap_or_default();
        match self.op {
            Op::Load | Op::DmaLoad | Op::Mkclean => write!(f, "{} {loc} -> {dst}", self.op.name())?,
            Op::Store | Op::DmaStore => write!(f, "{} {loc} {}", self.op.name(), v(self.val))?,
            Op::Xchg | Op::FetchAdd | Op::DmaXchg | Op::DmaFetchAdd => {
                write!(f, "{} {loc} {} -> {dst}", self.op.name(), v(self.val))?
            }
            Op::Cmpxchg => write!(f, "cmpxchg {loc} {} {} -> {dst}", v(self.val), v(self.val2))?,
            Op::Mfence | Op::Barrier | Op::Nop | Op::At => f.write_str(self.op.name())?,
            Op::Wait => match WaitCmp::from_u8(self.arg) {
                Some(WaitCmp::Eq) => write!(f, "wait {loc} == {}", v(self.val))?,
                _ => write!(f, "wait {loc}")?,
            },
            Op::Signal => write!(f, "signal {loc} {}", v(self.val))?,
            Op::Delay => write!(f, "delay {}", v(self.val))?,
            Op::Touch => write!(f, "touch {loc}{}", if self.arg == 1 { " write" } else { "" })?,
            Op::Mmap | Op::Mprotect => {
                write!(f, "{} {loc} {}", self.op.name(), Perm::from_u8(self.arg).map(|p| p.name()).unwrap_or("?"))?
            }
            Op::Madvise => write!(f, "madvise {loc} {}", Advice::from_u8(self.arg).map(|p| p.name()).unwrap_or("?"))?,
            Op::Ksm => write!(f, "ksm {loc} {loc2}")?,
            Op::Mremap => write!(f, "mremap {loc} -> {loc2}")?,
            Op::Munmap | Op::Cow | Op::Migrate | Op::Reclaim | Op::Alloc | Op::Prefetch | Op::Truncate => {
                write!(f, "{} {loc}", self.op.name())?
            }
            Op::UffdWp => write!(f, "uffd_wp {loc} {}", if self.arg == 1 { "on" } else { "off" })?,
            Op::Loop => {
                write!(f, "loop {} ", v(self.val))?;
                write_block(f, &self.body)?;
            }
        }
        for h in &self.hooks {
            write!(f, " at {}", h.hook.name())?;
            if h.nth != 0 {
                write!(f, "#{}", h.nth)?;
            }
            f.write_str(" ")?;
            write_block(f, &h.body)?;
        }
        Ok(())
    }
}

/// Something the guest reports at the end of an iteration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Observable {
    /// Register `reg` of thread `thread` (an index into [`Test::threads`]).
    Reg { thread: usize, reg: u8 },
    /// Final value of location `loc` (an index into [`Test::locations`]).
    Loc { loc: usize },
}

impl Observable {
    /// `P2:r1` or `x`, as in the test file.
    pub fn name(&self, test: &Test) -> String {
        match self {
            Observable::Reg { thread, reg } => format!("{}:r{reg}", test.threads[*thread].name),
            Observable::Loc { loc } => test.locations[*loc].name.clone(),
        }
    }
    /// litmus7's spelling in histograms and conditions: `2:r1`, `[x]`.
    /// Threads are numbered by their index in [`Test::threads`] (vCPU
    /// threads in file order, then device threads), as herdtools7's log
    /// lexer wants a number before the `:` (`pline`: `num ':' reg`); the
    /// names are on the block's `Threads` line and in the JSON.
    pub fn herd_name(&self, test: &Test) -> String {
        match self {
            Observable::Reg { thread, reg } => format!("{thread}:r{reg}"),
            Observable::Loc { loc } => format!("[{}]", test.locations[*loc].name),
        }
    }
}

/// A value as the herdtools7 output spells it: numbers in decimal, the
/// outcomes `fault`, `stale-walk` and `timeout` as the constants `FAULT`,
/// `STALE_WALK` and `TIMEOUT`. herdtools7's log lexer reads a value only as
/// a number or a name without `-` (`tools/lexLog_tools.mll`), and its
/// condition lexer takes `fault`/`Fault` as the keyword of its own
/// `fault(P1:L0,x)` atoms (`lib/stateLexer.mll`), so neither `stale-walk`
/// nor `fault` would survive a round trip through `msum7`.
pub fn herd_value(v: u64) -> String {
    match v {
        abi::litmus::VALUE_FAULT => "FAULT".into(),
        abi::litmus::VALUE_STALE_WALK => "STALE_WALK".into(),
        abi::litmus::VALUE_TIMEOUT => "TIMEOUT".into(),
        n => n.to_string(),
    }
}

/// The right-hand side of a condition atom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CondValue(pub u64);

impl fmt::Display for CondValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match special_value_name(self.0) {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A condition over observed values. Atoms refer to indices of [`Test::observed`].
/// A chain `a && b && c` is one n-ary node; the checker bounds the nesting
/// (`abi::limits::MAX_CONDITION_DEPTH`), so walks of the tree recurse little.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    True,
    False,
    Eq(usize, CondValue),
    Ne(usize, CondValue),
    Not(Box<Expr>),
    /// Two or more terms.
    And(Vec<Expr>),
    /// Two or more terms.
    Or(Vec<Expr>),
}

impl Expr {
    /// Evaluate over one state (`values[i]` is observable i's raw value).
    pub fn eval(&self, values: &[u64]) -> bool {
        match self {
            Expr::True => true,
            Expr::False => false,
            Expr::Eq(i, v) => values.get(*i) == Some(&v.0),
            Expr::Ne(i, v) => values.get(*i).is_some_and(|x| *x != v.0),
            Expr::Not(e) => !e.eval(values),
            Expr::And(terms) => terms.iter().all(|e| e.eval(values)),
            Expr::Or(terms) => terms.iter().any(|e| e.eval(values)),
        }
    }

    /// Observable indices the expression mentions.
    pub fn atoms(&self, out: &mut Vec<usize>) {
        match self {
            Expr::True | Expr::False => {}
            Expr::Eq(i, _) | Expr::Ne(i, _) => out.push(*i),
            Expr::Not(e) => e.atoms(out),
            Expr::And(terms) | Expr::Or(terms) => {
                for e in terms {
                    e.atoms(out);
                }
            }
        }
    }

    /// herdtools syntax: `2:r1=1 /\ ~([x]=0)`.
    pub fn herd(&self, test: &Test) -> String {
        self.pp(test, true)
    }

    /// Our own syntax, normalised: `P2:r1 == 1 && x != 0`.
    pub fn source(&self, test: &Test) -> String {
        self.pp(test, false)
    }

    fn pp(&self, test: &Test, herd: bool) -> String {
        let name = |i: usize| {
            let o = &test.observed[i];
            if herd {
                o.herd_name(test)
            } else {
                o.name(test)
            }
        };
        let sub = |e: &Expr, parent_and: bool| {
            let s = e.pp(test, herd);
            match e {
                Expr::And(..) if !parent_and => format!("({s})"),
                Expr::Or(..) if parent_and => format!("({s})"),
                _ => s,
            }
        };
        match self {
            Expr::True => "true".into(),
            Expr::False => "false".into(),
            Expr::Eq(i, v) if herd => format!("{}={}", name(*i), herd_value(v.0)),
            Expr::Eq(i, v) => format!("{} == {v}", name(*i)),
            Expr::Ne(i, v) if herd => format!("~({}={})", name(*i), herd_value(v.0)),
            Expr::Ne(i, v) => format!("{} != {v}", name(*i)),
            Expr::Not(e) => {
                let s = e.pp(test, herd);
                let s = if matches!(**e, Expr::True | Expr::False | Expr::Not(_)) { s } else { format!("({s})") };
                format!("{}{s}", if herd { "~" } else { "!" })
            }
            Expr::And(terms) => {
                let parts: Vec<String> = terms.iter().map(|e| sub(e, true)).collect();
                parts.join(if herd { " /\\ " } else { " && " })
            }
            Expr::Or(terms) => {
                let parts: Vec<String> = terms.iter().map(|e| sub(e, false)).collect();
                parts.join(if herd { " \\/ " } else { " || " })
            }
        }
    }
}

/// `forbidden` (litmus7 `~exists`) or `exists`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CondKind {
    Forbidden,
    Exists,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub kind: CondKind,
    pub expr: Expr,
}

/// How often the condition's state was observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Never,
    Sometimes,
    Always,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Never => "never",
            Verdict::Sometimes => "sometimes",
            Verdict::Always => "always",
        }
    }
    /// Capitalised, as litmus7's `Observation` line prints it.
    pub fn herd_name(self) -> &'static str {
        match self {
            Verdict::Never => "Never",
            Verdict::Sometimes => "Sometimes",
            Verdict::Always => "Always",
        }
    }
    pub fn from_name(s: &str) -> Option<Verdict> {
        match s {
            "never" => Some(Verdict::Never),
            "sometimes" => Some(Verdict::Sometimes),
            "always" => Some(Verdict::Always),
            _ => None,
        }
    }
}

/// One `[expect]` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// The key as written.
    pub key: String,
    pub policy: Policy,
    pub verdict: Verdict,
}
