//! A toy concurrent language to test the engine against brute force:
//! threads over shared integer variables and locks, one scheduling point
//! before every instruction.
//!
//! ```text
//! x=0 y=0                       variables and their initial values
//! T0: lock l; r0=x; x=r0+1; unlock l
//! T1: wait y==1; x+=2; nop
//! ```
//!
//! Instructions: `rN=V` (read), `V=K`, `V=rN`, `V=rN+K` (write), `V+=K`
//! (atomic add), `lock L`, `unlock L` (L need not be declared), `wait V==K`
//! (blocks until true), `nop` (a local step). Registers r0–r3 per thread
//! start at 0. A lock acquisition blocks while another thread holds it;
//! unlocking a lock the thread does not hold is a no-op.

use std::collections::BTreeMap;

use crate::footprint::{Footprint, Object};
use crate::plan::{bit, candidates, is_preemption, ThreadId};
use crate::result::ExploreResult;
use crate::{Config, ExploreError};

pub const REGS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expr {
    Const(i64),
    /// Register plus constant.
    Reg(usize, i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instr {
    Read { var: usize, reg: usize },
    Write { var: usize, val: Expr },
    Add { var: usize, n: i64 },
    Lock(usize),
    Unlock(usize),
    Wait { var: usize, val: i64 },
    Nop,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    pub vars: Vec<(String, i64)>,
    pub locks: Vec<String>,
    pub threads: Vec<Vec<Instr>>,
}

/// A final state: variables, every thread's registers, and whether the
/// run ended in a deadlock (nobody enabled, somebody not finished).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Outcome {
    pub vars: Vec<i64>,
    pub regs: Vec<[i64; REGS]>,
    pub deadlock: bool,
}

impl Outcome {
    pub fn var(&self, p: &Program, name: &str) -> Option<i64> {
        p.vars.iter().position(|(n, _)| n == name).map(|i| self.vars[i])
    }
}

/// Object of variable `i` / lock `i` in footprints.
pub fn var_object(i: usize) -> Object {
    Object(i as u64)
}
pub fn lock_object(i: usize) -> Object {
    Object(1 << 32 | i as u64)
}

impl Program {
    /// Parses the text form (see the module doc).
    pub fn parse(src: &str) -> Result<Program, String> {
        let mut p = Program::default();
        for (ln, line) in src.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |m: &str| format!("line {}: {m}: {line}", ln + 1);
            if let Some((name, code)) = line.split_once(':') {
                if !name.trim().starts_with('T') {
                    return Err(err("expected Tn: code"));
                }
                let mut instrs = Vec::new();
                for ins in code.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    instrs.push(p.parse_instr(ins).map_err(|m| err(&m))?);
                }
                p.threads.push(instrs);
            } else {
                for decl in line.split_whitespace() {
                    let (n, v) = decl.split_once('=').ok_or_else(|| err("expected var=value"))?;
                    let v = v.parse().map_err(|_| err("bad initial value"))?;
                    p.vars.push((n.to_string(), v));
                }
            }
        }
        if p.threads.is_empty() {
            return Err("no threads".into());
        }
        Ok(p)
    }

    fn var(&self, n: &str) -> Result<usize, String> {
        self.vars.iter().position(|(v, _)| v == n).ok_or_else(|| format!("undeclared variable {n}"))
    }

    fn lock(&mut self, n: &str) -> usize {
        match self.locks.iter().position(|l| l == n) {
            Some(i) => i,
            None => {
                self.locks.push(n.to_string());
                self.locks.len() - 1
            }
        }
    }

    fn parse_instr(&mut self, s: &str) -> Result<Instr, String> {
        let reg = |r: &str| -> Result<usize, String> {
            r.strip_prefix('r').and_then(|n| n.parse().ok()).filter(|&n| n < REGS).ok_or(format!("bad register {r}"))
        };
        let num = |n: &str| -> Result<i64, String> { n.trim().parse().map_err(|_| format!("bad number {n}")) };
        if s == "nop" {
            return Ok(Instr::Nop);
        }
        if let Some(l) = s.strip_prefix("lock ") {
            return Ok(Instr::Lock(self.lock(l.trim())));
        }
        if let Some(l) = s.strip_prefix("unlock ") {
            return Ok(Instr::Unlock(self.lock(l.trim())));
        }
        if let Some(w) = s.strip_prefix("wait ") {
            let (v, k) = w.split_once("==").ok_or("expected wait V==K")?;
            return Ok(Instr::Wait { var: self.var(v.trim())?, val: num(k)? });
        }
        if let Some((v, k)) = s.split_once("+=") {
            return Ok(Instr::Add { var: self.var(v.trim())?, n: num(k)? });
        }
        let (lhs, rhs) = s.split_once('=').ok_or(format!("unknown instruction {s}"))?;
        let (lhs, rhs) = (lhs.trim(), rhs.trim());
        if lhs.starts_with('r') && self.var(lhs).is_err() {
            return Ok(Instr::Read { var: self.var(rhs)?, reg: reg(lhs)? });
        }
        let var = self.var(lhs)?;
        let val = if let Some((r, k)) = rhs.split_once('+') {
            Expr::Reg(reg(r.trim())?, num(k)?)
        } else if rhs.starts_with('r') {
            Expr::Reg(reg(rhs)?, 0)
        } else {
            Expr::Const(num(rhs)?)
        };
        Ok(Instr::Write { var, val })
    }

    /// The text of instruction `pc` of thread `t`.
    pub fn describe(&self, t: usize, pc: usize) -> String {
        let v = |i: usize| self.vars[i].0.as_str();
        match self.threads.get(t).and_then(|c| c.get(pc)) {
            None => "end".into(),
            Some(Instr::Read { var, reg }) => format!("r{reg}={}", v(*var)),
            Some(Instr::Write { var, val: Expr::Const(k) }) => format!("{}={k}", v(*var)),
            Some(Instr::Write { var, val: Expr::Reg(r, 0) }) => format!("{}=r{r}", v(*var)),
            Some(Instr::Write { var, val: Expr::Reg(r, k) }) => format!("{}=r{r}+{k}", v(*var)),
            Some(Instr::Add { var, n }) => format!("{}+={n}", v(*var)),
            Some(Instr::Lock(l)) => format!("lock {}", self.locks[*l]),
            Some(Instr::Unlock(l)) => format!("unlock {}", self.locks[*l]),
            Some(Instr::Wait { var, val }) => format!("wait {}=={val}", v(*var)),
            Some(Instr::Nop) => "nop".into(),
        }
    }
}

/// A toy program being run.
#[derive(Clone, Debug)]
pub struct Machine<'a> {
    prog: &'a Program,
    pc: Vec<usize>,
    vars: Vec<i64>,
    regs: Vec<[i64; REGS]>,
    owner: Vec<Option<ThreadId>>,
}

impl<'a> Machine<'a> {
    pub fn new(prog: &'a Program) -> Machine<'a> {
        let mut m = Machine { prog, pc: Vec::new(), vars: Vec::new(), regs: Vec::new(), owner: Vec::new() };
        crate::Program::reset(&mut m);
        m
    }

    fn can_run(&self, t: usize) -> bool {
        match self.prog.threads[t].get(self.pc[t]) {
            None => false,
            Some(Instr::Lock(l)) => self.owner[*l].is_none(),
            Some(Instr::Wait { var, val }) => self.vars[*var] == *val,
            Some(_) => true,
        }
    }
}

impl crate::Program for Machine<'_> {
    type Outcome = Outcome;

    fn threads(&self) -> usize {
        self.prog.threads.len()
    }

    fn reset(&mut self) {
        let n = self.prog.threads.len();
        self.pc = vec![0; n];
        self.vars = self.prog.vars.iter().map(|(_, v)| *v).collect();
        self.regs = vec![[0; REGS]; n];
        self.owner = vec![None; self.prog.locks.len()];
    }

    fn enabled(&self) -> u64 {
        (0..self.prog.threads.len()).filter(|&t| self.can_run(t)).fold(0, |m, t| m | bit(t as ThreadId))
    }

    fn guard(&self, t: ThreadId) -> Option<Footprint> {
        match self.prog.threads[t as usize].get(self.pc[t as usize])? {
            Instr::Lock(l) => Some(Footprint::read(lock_object(*l))),
            Instr::Wait { var, .. } => Some(Footprint::read(var_object(*var))),
            _ => Some(Footprint::empty()),
        }
    }

    fn site(&self, t: ThreadId) -> u64 {
        self.pc[t as usize] as u64
    }

    fn step(&mut self, t: ThreadId) -> Footprint {
        let ti = t as usize;
        let ins = self.prog.threads[ti][self.pc[ti]];
        self.pc[ti] += 1;
        match ins {
            Instr::Read { var, reg } => {
                self.regs[ti][reg] = self.vars[var];
                Footprint::read(var_object(var))
            }
            Instr::Write { var, val } => {
                self.vars[var] = match val {
                    Expr::Const(k) => k,
                    Expr::Reg(r, k) => self.regs[ti][r] + k,
                };
                Footprint::write(var_object(var))
            }
            Instr::Add { var, n } => {
                self.vars[var] += n;
                Footprint::write(var_object(var))
            }
            Instr::Lock(l) => {
                self.owner[l] = Some(t);
                Footprint::write(lock_object(l))
            }
            Instr::Unlock(l) => {
                if self.owner[l] == Some(t) {
                    self.owner[l] = None;
                }
                Footprint::write(lock_object(l))
            }
            Instr::Wait { var, .. } => Footprint::read(var_object(var)),
            Instr::Nop => Footprint::empty(),
        }
    }

    fn outcome(&self) -> Outcome {
        let deadlock = (0..self.prog.threads.len()).any(|t| self.pc[t] < self.prog.threads[t].len());
        Outcome { vars: self.vars.clone(), regs: self.regs.clone(), deadlock }
    }
}

/// Searches a toy program.
pub fn search(
    prog: &Program,
    cfg: &Config,
    violating: impl Fn(&Outcome) -> bool,
) -> Result<ExploreResult<Outcome>, ExploreError> {
    crate::search(&mut Machine::new(prog), cfg, violating)
}

/// Every schedule within the bound, by direct recursion over machine
/// states (no replay, no reduction): the oracle the engine is tested against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BruteForce {
    pub schedules: u64,
    /// Final state → (schedules reaching it, fewest preemptions).
    pub states: BTreeMap<Outcome, (u64, u32)>,
    /// The first violating schedule in depth-first order among those with
    /// the fewest preemptions, and its preemptions.
    pub witness: Option<(u32, Vec<ThreadId>)>,
}

pub fn brute_force(
    prog: &Program,
    bound: Option<u32>,
    priority: &[ThreadId],
    violating: &dyn Fn(&Outcome) -> bool,
) -> BruteForce {
    struct Walk<'a> {
        bound: Option<u32>,
        priority: &'a [ThreadId],
        violating: &'a dyn Fn(&Outcome) -> bool,
        path: Vec<ThreadId>,
        out: BruteForce,
    }
    impl Walk<'_> {
        fn rec(&mut self, m: &Machine<'_>, cur: Option<ThreadId>, pre: u32) {
            use crate::Program as _;
            let en = m.enabled();
            if en == 0 {
                let o = m.outcome();
                self.out.schedules += 1;
                if (self.violating)(&o) && self.out.witness.as_ref().is_none_or(|(p, _)| pre < *p) {
                    self.out.witness = Some((pre, self.path.clone()));
                }
                let e = self.out.states.entry(o).or_insert((0, pre));
                e.0 += 1;
                e.1 = e.1.min(pre);
                return;
            }
            for t in candidates(self.priority, cur, en) {
                let c = pre + u32::from(is_preemption(cur, en, t));
                if self.bound.is_some_and(|k| c > k) {
                    continue;
                }
                let mut next = m.clone();
                next.step(t);
                self.path.push(t);
                self.rec(&next, Some(t), c);
                self.path.pop();
            }
        }
    }
    let mut w = Walk { bound, priority, violating, path: Vec::new(), out: BruteForce::default() };
    w.rec(&Machine::new(prog), None, 0);
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Program as _;

    #[test]
    fn parse_and_run() {
        let p = Program::parse("x=0 y=5\nT0: lock l; r1=y; x=r1+1; unlock l\nT1: wait x==6; y+=1; nop\n").unwrap();
        assert_eq!(p.threads.len(), 2);
        assert_eq!(p.describe(0, 2), "x=r1+1");
        assert_eq!(p.describe(1, 0), "wait x==6");
        let mut m = Machine::new(&p);
        assert_eq!(m.enabled(), 0b01);
        assert_eq!(m.step(0), Footprint::write(lock_object(0)));
        m.step(0);
        m.step(0);
        assert_eq!(m.enabled(), 0b11);
        m.step(0);
        m.step(1);
        m.step(1);
        assert_eq!(m.step(1), Footprint::empty());
        assert_eq!(m.enabled(), 0);
        let o = m.outcome();
        assert_eq!((o.var(&p, "x"), o.var(&p, "y"), o.deadlock), (Some(6), Some(6), false));
        assert!(Program::parse("x=0\nT0: r9=x").is_err());
        assert!(Program::parse("x=0\nT0: z=1").is_err());
    }
}
