//! The platform every run has: the serial console, the exit/nop/yield
//! ports, and the guest's reports — ECHO, LOG, EXCEPTION (and what
//! LAST_EXCEPTION answers), ASSERT_FAIL (and LAST_ASSERT).

use std::io::Write;
use std::sync::{Arc, Mutex};

use abi::hypercall::calls::{self, LastAssertReply, LastExceptionReply};
use abi::hypercall::{Op, EXIT_PORT, NOP_PORT, SERIAL_PORT, YIELD_PORT};

use crate::devices::ports::{ExitPort, NopPort, YieldPort};
use crate::devices::serial::SerialDevice;
use crate::vstate::{Call, GuestFault, HypercallHandler, Reply, Service, SetupError, VcpuCtx, VmSetup};

/// Receives the guest's non-fatal check failures (the self-test service).
pub trait CheckListener: Send + Sync {
    /// A `check!` failed at `file:line` with `message`.
    fn check_failed(&self, file: &str, line: u64, message: &str);
}

#[derive(Default, Clone)]
struct LastReports {
    exception: Option<LastExceptionReply>,
    /// Line and "file\0message".
    assert: (u64, Vec<u8>),
}

pub struct Platform {
    /// Show the guest's serial console.
    console: bool,
    checks: Option<Arc<dyn CheckListener>>,
}

impl Platform {
    /// `console`: the serial output goes to stdout (else it is dropped);
    /// `checks`: where non-fatal check failures go.
    pub fn new(console: bool, checks: Option<Arc<dyn CheckListener>>) -> Arc<Self> {
        Arc::new(Platform { console, checks })
    }
}

/// Lossy UTF-8.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// "a\0b" → (a, b).
pub fn split_nul(b: &[u8]) -> (String, String) {
    match b.iter().position(|&c| c == 0) {
        Some(i) => (text(&b[..i]), text(&b[i + 1..])),
        None => (text(b), String::new()),
    }
}

impl Service for Platform {
    fn name(&self) -> &'static str {
        "platform"
    }

    fn setup(self: Arc<Self>, vm: &mut VmSetup<'_>) -> Result<(), SetupError> {
        let out: Box<dyn Write + Send> =
            if self.console { Box::new(std::io::stdout()) } else { Box::new(std::io::sink()) };
        vm.add_pio(SERIAL_PORT, 8, Arc::new(SerialDevice::new(out)))?;
        vm.add_pio(EXIT_PORT, 1, Arc::new(ExitPort))?;
        vm.add_pio(NOP_PORT, 1, Arc::new(NopPort))?;
        vm.add_pio(YIELD_PORT, 1, Arc::new(YieldPort))?;
        let handler = Arc::new(PlatformCalls {
            checks: self.checks.clone(),
            last: (0..vm.vcpus).map(|_| Mutex::new(LastReports::default())).collect(),
        });
        vm.add_hypercalls(handler)
    }
}

/// The hypercall half of [`Platform`], with per-vCPU last reports.
struct PlatformCalls {
    checks: Option<Arc<dyn CheckListener>>,
    last: Vec<Mutex<LastReports>>,
}

impl PlatformCalls {
    fn last(&self, cpu: u64) -> std::sync::MutexGuard<'_, LastReports> {
        self.last[cpu as usize].lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl HypercallHandler for PlatformCalls {
    fn name(&self) -> &'static str {
        "platform"
    }

    fn ops(&self) -> &'static [Op] {
        &[Op::Echo, Op::Log, Op::Exception, Op::LastException, Op::AssertFail, Op::LastAssert]
    }

    fn handle(&self, ctx: &mut VcpuCtx<'_>, call: &Call<'_>) -> Result<Reply, GuestFault> {
        match call.op {
            Op::Echo => {
                let r = call.request::<calls::Echo>()?;
                let mut back = call.data.to_vec();
                back.reverse();
                let words = r.words.map(|w| !w);
                Ok(Reply::of::<calls::Echo>(calls::EchoWords { words }).with_data(back))
            }
            Op::Log => {
                log::info!(target: "guest", "[guest vCPU {}] {}", ctx.cpu, text(call.data));
                Ok(Reply::empty())
            }
            Op::Exception => {
                let e = call.request::<calls::Exception>()?;
                self.last(ctx.cpu).exception =
                    Some(LastExceptionReply { vector: e.vector, error_code: e.error_code, rip: e.rip, cr2: e.cr2 });
                if !e.recovered.get() {
                    return Err(GuestFault::Exception {
                        vector: e.vector,
                        error_code: e.error_code,
                        rip: e.rip,
                        cr2: (e.vector == 14).then_some(e.cr2),
                        rsp: e.rsp,
                    });
                }
                Ok(Reply::empty())
            }
            Op::LastException => {
                let none = LastExceptionReply { vector: 0, error_code: 0, rip: 0, cr2: 0 };
                Ok(Reply::of::<calls::LastException>(self.last(ctx.cpu).exception.unwrap_or(none)))
            }
            Op::AssertFail => {
                let a = call.request::<calls::AssertFail>()?;
                let (file, message) = split_nul(call.data);
                self.last(ctx.cpu).assert = (a.line, call.data.to_vec());
                if a.fatal.get() {
                    return Err(GuestFault::Assertion { file, line: a.line, message });
                }
                if !a.expected.get() {
                    if let Some(c) = &self.checks {
                        c.check_failed(&file, a.line, &message);
                    }
                }
                Ok(Reply::empty())
            }
            Op::LastAssert => {
                let (line, data) = self.last(ctx.cpu).assert.clone();
                Ok(Reply::of::<calls::LastAssert>(LastAssertReply { line }).with_data(data))
            }
            other => Err(crate::vstate::HypercallError::NotServed(other).into()),
        }
    }
}
