//! Self-test accounting, in kvm-unit-tests' vocabulary: `PASS name`,
//! `FAIL name: reason`, `SKIP name: reason`, `XFAIL name: reason`, then
//! `SUMMARY: N tests, F failures, S skipped`. Serves TEST_BEGIN, TEST_END and
//! TEST_LISTED, and hears the guest's failed checks.
//!
//! A guest cannot bloat the VMM: at most [`MAX_RESULTS`] results are kept
//! and printed; the rest are counted and reported in the summary.

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

use abi::hypercall::calls;
use abi::hypercall::{Op, Outcome};

use super::platform::{split_nul, text, CheckListener};
use crate::vstate::{Call, EndReason, GuestFault, HypercallHandler, Reply, Service, SetupError, VcpuCtx, VmSetup};

/// Most result lines one run keeps (the guest's table has a few dozen).
pub const MAX_RESULTS: usize = 10_000;

#[derive(Debug, Default)]
pub struct Results {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    pub xfailed: u64,
    /// The test the guest announced and has not ended yet.
    pub current: Option<String>,
    /// The first failed check of the current test: the reason on its FAIL line.
    pub first_failure: Option<String>,
    /// Result lines (and, in list mode, test names), at most [`MAX_RESULTS`].
    pub lines: Vec<String>,
    /// Lines beyond the cap: counted, neither kept nor printed.
    pub dropped: u64,
    /// Print lines as they come.
    pub print: bool,
}

impl Results {
    pub fn begin(&mut self, name: &str) {
        self.current = Some(name.to_string());
        self.first_failure = None;
    }

    /// A guest `check!` failed (file:line: message).
    pub fn note_failure(&mut self, what: String) {
        self.first_failure.get_or_insert(what);
    }

    pub fn end(&mut self, outcome: Outcome, name: &str, reason: &str) {
        self.current = None;
        let noted = self.first_failure.take();
        let reason = match (outcome, reason, &noted) {
            (Outcome::Fail, "", Some(n)) => n.as_str(),
            _ => reason,
        };
        let (word, counter) = match outcome {
            Outcome::Pass => ("PASS", &mut self.passed),
            Outcome::Skip => ("SKIP", &mut self.skipped),
            Outcome::Xfail => ("XFAIL", &mut self.xfailed),
            Outcome::Fail => ("FAIL", &mut self.failed),
        };
        *counter = counter.saturating_add(1);
        let line = if reason.is_empty() { format!("{word} {name}") } else { format!("{word} {name}: {reason}") };
        self.emit(line);
    }

    /// The VM ended while a test was running: that test failed with `cause`.
    pub fn abort_current(&mut self, cause: &str) {
        if let Some(name) = self.current.take() {
            self.end(Outcome::Fail, &name, cause);
        }
    }

    pub fn total(&self) -> u64 {
        self.passed.saturating_add(self.failed).saturating_add(self.skipped).saturating_add(self.xfailed)
    }

    pub fn summary(&self) -> String {
        let mut s = format!("SUMMARY: {} tests, {} failures, {} skipped", self.total(), self.failed, self.skipped);
        if self.dropped > 0 {
            s += &format!(" ({} result lines beyond the cap of {MAX_RESULTS} not shown)", self.dropped);
        }
        s
    }

    fn emit(&mut self, line: String) {
        if self.lines.len() >= MAX_RESULTS {
            self.dropped = self.dropped.saturating_add(1);
            return;
        }
        if self.print {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        self.lines.push(line);
    }
}

/// The self-test service of one run.
pub struct Selftest {
    results: Mutex<Results>,
}

impl Selftest {
    /// `print`: write each result line to stdout as it comes.
    pub fn new(print: bool) -> Arc<Self> {
        Arc::new(Selftest { results: Mutex::new(Results { print, ..Default::default() }) })
    }

    pub fn results(&self) -> MutexGuard<'_, Results> {
        self.results.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Service for Selftest {
    fn name(&self) -> &'static str {
        "selftest"
    }

    fn setup(self: Arc<Self>, vm: &mut VmSetup<'_>) -> Result<(), SetupError> {
        vm.add_hypercalls(self)
    }

    fn finished(&self, end: &EndReason) {
        let mut r = self.results();
        match end {
            EndReason::GuestError { vcpu, rip, fault } => {
                r.abort_current(&format!("guest error on vCPU {vcpu} at RIP {rip:#x}: {fault}"))
            }
            EndReason::Timeout { .. } => r.abort_current("timed out"),
            EndReason::GuestExit(_) => r.abort_current("guest exited in the middle of the test"),
            EndReason::Interrupted => r.abort_current("interrupted"),
            EndReason::Stopped { by } => r.abort_current(by),
        }
    }
}

impl CheckListener for Selftest {
    fn check_failed(&self, file: &str, line: u64, message: &str) {
        self.results().note_failure(format!("{file}:{line}: {message}"));
    }
}

impl HypercallHandler for Selftest {
    fn name(&self) -> &'static str {
        "selftest"
    }

    fn ops(&self) -> &'static [Op] {
        &[Op::TestBegin, Op::TestEnd, Op::TestListed]
    }

    fn handle(&self, _ctx: &mut VcpuCtx<'_>, call: &Call<'_>) -> Result<Reply, GuestFault> {
        match call.op {
            Op::TestBegin => self.results().begin(&text(call.data)),
            Op::TestEnd => {
                let r = call.request::<calls::TestEnd>()?;
                let (name, reason) = split_nul(call.data);
                self.results().end(r.outcome, &name, &reason);
            }
            Op::TestListed => self.results().emit(text(call.data)),
            other => return Err(crate::vstate::HypercallError::NotServed(other).into()),
        }
        Ok(Reply::empty())
    }
}
