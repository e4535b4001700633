//! `vmm selftest` and `vmm run`: boot the guest's self-tests (or whatever
//! `--cmdline mode=` asks) and turn how it ended into the exit status.

use std::sync::Arc;

use abi::config::GuestMode;

use crate::error::{Error, Result};
use crate::services::platform::CheckListener;
use crate::services::selftest::Selftest;
use crate::services::{self, StandardOptions};
use crate::status;
use crate::vstate::{vm, EndReason, Service, VmConfig};

/// What to boot.
#[derive(Clone, Debug)]
pub enum What {
    /// `vmm run`: the mode comes from `--cmdline` (default: the self-tests).
    Cmdline,
    /// `vmm selftest [FILTER…] [--tap]`.
    Selftest { filter: Vec<String>, tap: bool },
}

/// The guest's table of self-tests, by name (`TEST_LISTED`), without
/// running any.
pub fn list(base: &VmConfig) -> Result<Vec<String>> {
    let cfg = VmConfig { mode: GuestMode::SelftestList, ..base.clone() };
    let st = Selftest::new(false);
    let mut svcs = services::standard(cfg.tlb, cfg.seed, StandardOptions::default());
    svcs.push(st.clone());
    let out = vm::run(&cfg, &svcs)?;
    if !matches!(out.end, EndReason::GuestExit(abi::exit::SUCCESS)) {
        return Err(Error::GuestRun { what: "the self-test list", end: Box::new(out.end) });
    }
    let names = st.results().lines.clone();
    Ok(names)
}

/// Boots and reports; returns the exit status.
pub fn run(base: &VmConfig, what: &What, console: bool) -> Result<i32> {
    let mut cfg = base.clone();
    if let What::Selftest { filter, .. } = what {
        cfg.mode = GuestMode::Selftest;
        if !filter.is_empty() {
            cfg.cmdline = format!("{} selftest.filter={}", cfg.cmdline, filter.join(",")).trim().to_string();
        }
    }
    // --tap: the PASS/FAIL lines are collected and printed as TAP.
    let tap = matches!(what, What::Selftest { tap: true, .. });
    let st = Selftest::new(!tap);
    let mut svcs = services::standard(
        cfg.tlb,
        cfg.seed,
        StandardOptions { console, checks: Some(st.clone() as Arc<dyn CheckListener>), ..Default::default() },
    );
    svcs.push(st.clone() as Arc<dyn Service>);
    let out = vm::run(&cfg, &svcs)?;
    let results = st.results();
    let code = match &out.end {
        EndReason::GuestExit(s) => match *s {
            abi::exit::SUCCESS if results.failed == 0 => status::OK,
            abi::exit::SUCCESS | abi::exit::TESTS_FAILED => status::TESTS_FAILED,
            other => {
                eprintln!("vmm: guest exited with status {other}");
                status::GUEST_ERROR
            }
        },
        EndReason::Stopped { .. } | EndReason::Interrupted => status::TIMEOUT,
        EndReason::GuestError { vcpu, rip, fault } => {
            eprintln!("vmm: guest error on vCPU {vcpu} at RIP {rip:#x}: {fault}");
            status::GUEST_ERROR
        }
        EndReason::Timeout { dumps } => {
            eprintln!("vmm: watchdog: the guest did not finish within {} s; vCPU state:", cfg.timeout.as_secs());
            for d in dumps {
                let hex = |v: Option<u64>| v.map(|v| format!("{v:#018x}")).unwrap_or_else(|| "?".into());
                eprintln!(
                    "vmm:   vCPU {:>3}: RIP {} RSP {} CR3 {}{}",
                    d.vcpu,
                    hex(d.rip),
                    hex(d.rsp),
                    hex(d.cr3),
                    if d.halted { " (halted)" } else { "" }
                );
            }
            status::TIMEOUT
        }
    };
    if let What::Selftest { filter, .. } = what {
        if !filter.is_empty() && results.total() == 0 && matches!(out.end, EndReason::GuestExit(abi::exit::SUCCESS)) {
            eprintln!(
                "vmm: error: no self-test name starts with {} (`vmm selftest` runs them all and prints every name)",
                filter.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(" or ")
            );
            return Ok(status::SETUP_ERROR);
        }
    }
    if tap {
        let mut points = litmus::tap::selftest_points(&results.lines);
        if let Some(cause) =
            (code != status::OK && results.failed == 0).then(|| format!("guest ended with status {code}"))
        {
            points.push(litmus::tap::TapPoint {
                name: "selftest.run".into(),
                outcome: litmus::tap::Outcome::Fail,
                reason: cause,
            });
        }
        print!("{}", litmus::tap::document(&points));
    } else if results.total() > 0 || matches!(what, What::Selftest { .. }) {
        println!("{}", results.summary());
    }
    // Tests failed but the guest itself was fine: still non-zero.
    Ok(if code == status::OK && results.failed > 0 { status::TESTS_FAILED } else { code })
}
