//! Reporting to the VMM: test results and guest assertions with file:line,
//! like KVM selftests' `GUEST_ASSERT` and kvm-unit-tests' `report()`.

use abi::hypercall::calls::{AssertFail, AssertReport};
use core::fmt::{self, Write};

use crate::console::FixedBuf;
use crate::{arch, hypercall};

/// Why a self-test did not pass.
pub enum TestError {
    /// A `check!` failed; it already sent file:line and message to the VMM,
    /// which prints them on the test's FAIL line.
    Fail,
    /// Not applicable here (e.g. needs a host capability); reported as SKIP.
    Skip(&'static str),
}

pub type TestResult = Result<(), TestError>;

/// Sends an assertion report; `fatal` ends the VM, `expected` marks the
/// report as deliberate (the `assert.report` self-test) so it fails nothing.
pub fn assert_failed(file: &str, line: u32, msg: fmt::Arguments, fatal: bool, expected: bool) {
    let mut b: FixedBuf<{ abi::hypercall::DATA_LEN }> = FixedBuf::new();
    b.push_bytes(file.as_bytes());
    b.push_bytes(&[0]);
    let _ = b.write_fmt(msg);
    let report = AssertReport { line: line as u64, fatal: fatal.into(), expected: expected.into() };
    hypercall::call_data::<AssertFail>(report, b.as_bytes());
}

/// A fatal guest error: report it with file:line and end the VM.
pub fn fatal(file: &str, line: u32, msg: fmt::Arguments) -> ! {
    assert_failed(file, line, msg, true, false);
    arch::outl(abi::hypercall::EXIT_PORT, abi::exit::GUEST_PANIC);
    arch::halt_forever()
}

/// `check!(cond, "fmt", args…)` inside a self-test: on failure report
/// file:line and the message to the VMM and return `Err` from the test.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::report::assert_failed(file!(), line!(), format_args!($($arg)*), false, false);
            return Err($crate::report::TestError::Fail);
        }
    };
}

/// `guest_assert!(cond, …)`: a kernel invariant; failure is fatal.
#[macro_export]
macro_rules! guest_assert {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::report::fatal(file!(), line!(), format_args!($($arg)*));
        }
    };
}
