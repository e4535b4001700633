//! Self-test accounting on the host, in kvm-unit-tests' vocabulary:
//! `PASS name`, `FAIL name: reason`, `SKIP name: reason`, `XFAIL name: reason`,
//! then `SUMMARY: N tests, F failures, S skipped`.

use std::io::Write;

use abi::hypercall::report as kind;

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
    /// Printed lines, kept for callers that run quietly (bench, tests).
    pub lines: Vec<String>,
    pub quiet: bool,
}

impl Results {
    pub fn new(quiet: bool) -> Self {
        Self { quiet, ..Default::default() }
    }

    pub fn begin(&mut self, name: &str) {
        self.current = Some(name.to_string());
        self.first_failure = None;
    }

    /// A guest `check!` failed (file:line: message).
    pub fn note_failure(&mut self, what: String) {
        self.first_failure.get_or_insert(what);
    }

    pub fn end(&mut self, outcome: u64, name: &str, reason: &str) {
        self.current = None;
        let noted = self.first_failure.take();
        let reason = match (outcome, reason, &noted) {
            (kind::FAIL, "", Some(n)) => n.as_str(),
            _ => reason,
        };
        let (word, counter) = match outcome {
            kind::PASS => ("PASS", &mut self.passed),
            kind::SKIP => ("SKIP", &mut self.skipped),
            kind::XFAIL => ("XFAIL", &mut self.xfailed),
            _ => ("FAIL", &mut self.failed),
        };
        *counter += 1;
        let line = if reason.is_empty() { format!("{word} {name}") } else { format!("{word} {name}: {reason}") };
        self.emit(line);
    }

    /// The VM ended while a test was running: that test failed with `cause`.
    pub fn abort_current(&mut self, cause: &str) {
        if let Some(name) = self.current.take() {
            self.end(kind::FAIL, &name, cause);
        }
    }

    pub fn total(&self) -> u64 {
        self.passed + self.failed + self.skipped + self.xfailed
    }

    pub fn summary(&self) -> String {
        format!("SUMMARY: {} tests, {} failures, {} skipped", self.total(), self.failed, self.skipped)
    }

    fn emit(&mut self, line: String) {
        if !self.quiet {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        self.lines.push(line);
    }
}
