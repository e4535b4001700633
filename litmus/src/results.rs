//! What one (test, policy) run observed, and what that means.
//!
//! The guest reports, per iteration, one `u64` per [`Test::observed`] entry
//! (sentinels for `fault`, `stale-walk`, `timeout`). [`RunResult`] folds
//! iterations into a histogram of final states; [`RunResult::summary`]
//! evaluates the condition over it the way litmus7 does. Everything here is
//! plain data so that formatting ([`crate::format`]) is a pure function.

use crate::ast::{CondKind, Test, Verdict};
use crate::policy::Policy;
use abi::litmus::{special_value_name, Hook, VALUE_FAULT, VALUE_STALE_WALK, VALUE_TIMEOUT};
use std::collections::BTreeMap;
use std::fmt;

/// One observed value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Num(u64),
    Fault,
    StaleWalk,
    Timeout,
}

impl Value {
    pub fn from_raw(v: u64) -> Value {
        match v {
            VALUE_FAULT => Value::Fault,
            VALUE_STALE_WALK => Value::StaleWalk,
            VALUE_TIMEOUT => Value::Timeout,
            n => Value::Num(n),
        }
    }
    pub fn raw(self) -> u64 {
        match self {
            Value::Num(n) => n,
            Value::Fault => VALUE_FAULT,
            Value::StaleWalk => VALUE_STALE_WALK,
            Value::Timeout => VALUE_TIMEOUT,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match special_value_name(self.raw()) {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.raw()),
        }
    }
}

/// Where one thread was when an iteration timed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadPosition {
    pub thread: String,
    /// Thread-relative record index, `None` if the thread had finished.
    pub pc: Option<u32>,
    /// Source (line, column) of that record, if known (see `Compiled::position`).
    pub source: Option<(u32, u32)>,
    /// The hook the thread was paused in, if any.
    pub hook: Option<Hook>,
}

impl fmt::Display for ThreadPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pc, self.source) {
            (None, _) => write!(f, "{} finished", self.thread)?,
            (Some(_), Some((l, c))) => write!(f, "{} at line {l}:{c}", self.thread)?,
            (Some(pc), None) => write!(f, "{} at pc {pc}", self.thread)?,
        }
        if let Some(h) = self.hook {
            write!(f, " in hook {}", h.name())?;
        }
        Ok(())
    }
}

/// An iteration that ran out of time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutRecord {
    /// 0-based iteration number.
    pub iteration: u64,
    pub positions: Vec<ThreadPosition>,
}

/// How many timed-out iterations keep their thread positions.
pub const MAX_TIMEOUT_RECORDS: usize = 8;

/// The wrong number of values for the test's observed list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArityError {
    pub expected: usize,
    pub got: usize,
}

impl fmt::Display for ArityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {} observed values, got {}", self.expected, self.got)
    }
}

impl std::error::Error for ArityError {}

/// Everything one (test, policy) run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    pub test: String,
    pub file: String,
    pub hash: String,
    pub policy: Policy,
    pub seed: u64,
    /// Iterations the run was asked for. `never`/`always` need every one of
    /// them completed (SCENARIOS.md "Verdicts need evidence").
    pub requested: u64,
    /// Number of the first of them (non-zero in a shard of a job, `--shard`).
    pub first_iteration: u64,
    /// Iterations the whole job planned for this (test, policy): `requested`
    /// unless the job was sharded.
    pub planned: u64,
    /// Number of values per state (= `Test::observed.len()`).
    pub arity: usize,
    /// Final state (raw values in observed order) → number of iterations.
    pub histogram: BTreeMap<Vec<u64>, u64>,
    /// The first [`MAX_TIMEOUT_RECORDS`] timed-out iterations.
    pub timeouts: Vec<TimeoutRecord>,
    /// All timed-out iterations.
    pub n_timeouts: u64,
    pub time_secs: f64,
    /// A note on how far the TLB model reflects hardware (`tlb=native` on a
    /// host where `vmm probe` saw no staleness, …), printed when present.
    pub fidelity: Option<String>,
    /// Set by `vmm explore`: the search behind the histogram (which then
    /// counts schedules).
    pub explore: Option<crate::explore_results::ExploreRecord>,
}

impl RunResult {
    /// An empty run of `test` under `policy` that was asked for `requested` iterations.
    pub fn new(test: &Test, policy: Policy, seed: u64, requested: u64) -> RunResult {
        RunResult {
            test: test.name.clone(),
            file: test.file.clone(),
            hash: test.hash.clone(),
            policy,
            seed,
            requested,
            first_iteration: 0,
            planned: requested,
            arity: test.observed.len(),
            histogram: BTreeMap::new(),
            timeouts: Vec::new(),
            n_timeouts: 0,
            time_secs: 0.0,
            fidelity: None,
            explore: None,
        }
    }

    /// Record one iteration's final state.
    pub fn record(&mut self, values: &[u64]) -> Result<(), ArityError> {
        self.record_n(values, 1)
    }

    /// Record `count` iterations with the same final state.
    pub fn record_n(&mut self, values: &[u64], count: u64) -> Result<(), ArityError> {
        if values.len() != self.arity {
            return Err(ArityError { expected: self.arity, got: values.len() });
        }
        *self.histogram.entry(values.to_vec()).or_insert(0) += count;
        Ok(())
    }

    /// Record a timed-out iteration: `values` holds what was produced,
    /// `VALUE_TIMEOUT` for the rest.
    pub fn record_timeout(
        &mut self,
        iteration: u64,
        values: &[u64],
        positions: Vec<ThreadPosition>,
    ) -> Result<(), ArityError> {
        self.record(values)?;
        self.n_timeouts += 1;
        if self.timeouts.len() < MAX_TIMEOUT_RECORDS {
            self.timeouts.push(TimeoutRecord { iteration, positions });
        }
        Ok(())
    }

    /// Fold another run of the same test and policy into this one (e.g. runs
    /// split across guest boots).
    pub fn merge(&mut self, other: &RunResult) {
        for (k, v) in &other.histogram {
            *self.histogram.entry(k.clone()).or_insert(0) += v;
        }
        self.n_timeouts += other.n_timeouts;
        for t in &other.timeouts {
            if self.timeouts.len() < MAX_TIMEOUT_RECORDS {
                self.timeouts.push(t.clone());
            }
        }
        self.time_secs += other.time_secs;
        self.requested += other.requested;
        self.planned = self.planned.max(self.requested);
    }

    /// Iterations recorded, timed-out ones included.
    pub fn total(&self) -> u64 {
        self.histogram.values().sum()
    }

    /// Iterations that ran to the end (recorded and not timed out).
    pub fn completed(&self) -> u64 {
        self.total().saturating_sub(self.n_timeouts)
    }

    /// Requested iterations that never ran (the guest stopped early).
    pub fn missing(&self) -> u64 {
        self.requested.saturating_sub(self.total())
    }

    /// Evaluate the condition over the histogram.
    ///
    /// `matching` counts completed iterations only: a timed-out iteration's
    /// values are `timeout` placeholders, not an outcome.
    pub fn summary(&self, test: &Test) -> Summary {
        let states = self.histogram.iter().map(|(k, c)| StateCount {
            count: *c,
            timed_out: k.contains(&VALUE_TIMEOUT),
            matches: test.condition.expr.eval(k),
        });
        let expected = test.expected_for(&self.policy).map(|e| e.verdict);
        summarize(test.condition.kind, expected, self.requested, self.n_timeouts, states)
    }

    /// The iterations `[first_iteration, first_iteration + requested)` of a
    /// job that planned `planned` for this (test, policy) (`--shard`).
    pub fn with_range(mut self, first_iteration: u64, planned: u64) -> RunResult {
        self.first_iteration = first_iteration;
        self.planned = planned;
        self
    }
}

/// One histogram entry as [`summarize`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateCount {
    pub count: u64,
    /// The state is a timed-out iteration's (`timeout` placeholders).
    pub timed_out: bool,
    /// The state satisfies the condition's expression.
    pub matches: bool,
}

/// litmus7's reading of a histogram (shared by [`RunResult::summary`] and
/// by results read back from JSON, e.g. merged shards).
pub fn summarize(
    kind: CondKind,
    expected: Option<Verdict>,
    requested: u64,
    n_timeouts: u64,
    states: impl Iterator<Item = StateCount>,
) -> Summary {
    let (mut n_states, mut total, mut matching) = (0usize, 0u64, 0u64);
    for s in states {
        n_states += 1;
        total += s.count;
        if s.matches && !s.timed_out {
            matching += s.count;
        }
    }
    let completed = total.saturating_sub(n_timeouts);
    // Over completed iterations: a timeout is not a state of the test.
    let (positive, negative, validated) = match kind {
        // litmus7: for `exists p`, Positive counts states with p.
        CondKind::Exists => (matching, completed - matching, matching > 0),
        // litmus7: for `~exists p`, Positive counts states without p.
        CondKind::Forbidden => (completed - matching, matching, matching == 0),
    };
    let observation = if matching == 0 {
        Verdict::Never
    } else if matching == completed {
        Verdict::Always
    } else {
        Verdict::Sometimes
    };
    let evidence = Evidence { requested, completed, matching };
    Summary {
        states: n_states,
        total,
        completed,
        timed_out: n_timeouts,
        missing: requested.saturating_sub(total),
        matching,
        positive,
        negative,
        validated,
        observation,
        expected,
        expect: expected.map(|e| judge(e, &evidence)),
    }
}

/// What a run's iterations can support.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// Iterations asked for.
    pub requested: u64,
    /// Iterations that ran to the end.
    pub completed: u64,
    /// Completed iterations whose final state satisfied the condition.
    pub matching: u64,
}

impl Evidence {
    /// Every requested iteration ran to the end.
    pub fn complete(&self) -> bool {
        self.requested > 0 && self.completed >= self.requested
    }
}

/// How an `[expect]` verdict fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpectResult {
    /// The observation supports the expected verdict.
    Ok,
    /// The observation contradicts it.
    Mismatch,
    /// Not enough evidence either way: some requested iteration timed out or
    /// never ran, and what did complete neither proves nor refutes it.
    Inconclusive,
}

impl ExpectResult {
    /// `ok`, `MISMATCH`, `inconclusive` (the spelling of the text output).
    pub fn name(self) -> &'static str {
        match self {
            ExpectResult::Ok => "ok",
            ExpectResult::Mismatch => "MISMATCH",
            ExpectResult::Inconclusive => "inconclusive",
        }
    }
    /// Only `Ok` passes `--check`.
    pub fn passed(self) -> bool {
        self == ExpectResult::Ok
    }
}

/// Judges an `[expect]` verdict against the evidence (SCENARIOS.md
/// "Verdicts need evidence"): `never` and `always` hold only when every
/// requested iteration completed; a counterexample among the completed ones
/// refutes them regardless. `sometimes` means "observed at least once" and
/// may rest on completed iterations alone, so a deterministic replay
/// (`tlb=lazy`) that shows the outcome on every iteration satisfies it; it is
/// refuted only by a complete run without the outcome.
pub fn judge(expected: Verdict, ev: &Evidence) -> ExpectResult {
    let complete = ev.complete();
    match expected {
        Verdict::Never if ev.matching > 0 => ExpectResult::Mismatch,
        Verdict::Always if ev.matching < ev.completed => ExpectResult::Mismatch,
        Verdict::Never | Verdict::Always if complete => ExpectResult::Ok,
        Verdict::Never | Verdict::Always => ExpectResult::Inconclusive,
        Verdict::Sometimes if ev.matching > 0 => ExpectResult::Ok,
        Verdict::Sometimes if complete => ExpectResult::Mismatch,
        Verdict::Sometimes => ExpectResult::Inconclusive,
    }
}

/// The condition evaluated over a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Distinct final states.
    pub states: usize,
    /// Iterations recorded (timed-out ones included).
    pub total: u64,
    /// Iterations that ran to the end.
    pub completed: u64,
    /// Iterations that ran out of time.
    pub timed_out: u64,
    /// Requested iterations that never ran.
    pub missing: u64,
    /// Completed iterations whose state satisfies the condition's expression.
    pub matching: u64,
    /// litmus7's `Positive` / `Negative` (see [`RunResult::summary`]).
    pub positive: u64,
    pub negative: u64,
    /// litmus7's `Ok` / `is validated`.
    pub validated: bool,
    /// never / sometimes / always: how often the expression held.
    pub observation: Verdict,
    /// The `[expect]` verdict for this policy, if the test gives one.
    pub expected: Option<Verdict>,
    /// How that verdict fared ([`judge`]).
    pub expect: Option<ExpectResult>,
}

/// True if any run's `[expect]` entry was not met — contradicted or
/// inconclusive (what `--check` turns into a non-zero exit status).
pub fn any_mismatch(runs: &[(&Test, &RunResult)]) -> bool {
    runs.iter().any(|(t, r)| r.summary(t).expect.is_some_and(|e| !e.passed()))
}
