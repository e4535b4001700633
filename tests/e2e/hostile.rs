//! Issue 12's "nothing gathered is lost" and "a hostile guest cannot hang,
//! bloat or corrupt the VMM": interrupts, fatal errors mid-run, unusable
//! output paths and watchdog values, and a guest (`mode=hostile.KIND`) that
//! spams the DMA engine and the result channel or aims DMA at page tables.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::Failed;

use super::litmus::repo;
use super::{bad_input, ensure, text, vmm, VMM};

type TrialFn = fn() -> Result<(), Failed>;

pub const TRIALS: &[(&str, TrialFn)] = &[
    ("hostile::dma_spam_bounded_and_stops_promptly", dma_spam),
    ("hostile::dma_confined_to_guest_writable_memory", dma_confined),
    ("hostile::result_spam_capped", result_spam),
    ("litmus::interrupt_keeps_results", interrupt_keeps_results),
    ("litmus::second_interrupt_exits_at_once", second_interrupt_exits_at_once),
    ("litmus::fatal_error_mid_run_keeps_results", fatal_error_mid_run),
];

/// Checked before /dev/kvm is opened: these run everywhere.
pub const NO_KVM_TRIALS: &[(&str, TrialFn)] = &[
    ("bad_input::timeout_zero", || bad_input(&["--timeout", "0"], &["--timeout 0", "disable the watchdog"])),
    ("bad_input::timeout_huge", || bad_input(&["--timeout", "99999999999"], &["--timeout 99999999999", "at most"])),
    ("bad_input::json_missing_dir", || {
        bad_input(&["litmus", "--json", "/nonexistent-dir/r.json"], &["--json /nonexistent-dir/r.json", "directory"])
    }),
    ("bad_input::json_is_a_directory", || bad_input(&["litmus", "--json", "/tmp"], &["--json /tmp", "is a directory"])),
    ("bad_input::json_dev_full", || {
        bad_input(&["litmus", "--json", "/dev/full"], &["--json /dev/full", "not a regular file"])
    }),
    ("bad_input::trace_dev_full", || {
        bad_input(&["litmus", "--trace", "/dev/full"], &["--trace /dev/full", "not a regular file"])
    }),
];

fn hostile(kind: &str, extra: &[&str]) -> (std::process::Output, Duration) {
    let mode = format!("mode=hostile.{kind}");
    let mut args = vec!["--vcpus", "2", "--timeout", "60"];
    args.extend_from_slice(extra);
    args.extend(["run", "--cmdline", &mode]);
    let t = Instant::now();
    let o = vmm(&args);
    (o, t.elapsed())
}

/// 2,000 submissions of programs that wait forever and sleep, then an
/// immediate exit: some are refused (one worker per slot, one queued), and
/// the VMM ends promptly — the old engine joined every sleeping worker and
/// outlived the guest by minutes. (A coarse bound, not a benchmark.)
fn dma_spam() -> Result<(), Failed> {
    let (o, took) = hostile("dma-spam", &[]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?} after {took:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(0), || format!("want exit 0\n{}", ctx()))?;
    ensure(!err.contains("panicked"), ctx)?;
    ensure(took < Duration::from_secs(15), || format!("the VMM outlived its guest\n{}", ctx()))
}

/// Device programs aimed at the page-table and shadow regions are refused
/// and write nothing; a program placed in the page-table region is a bad
/// hypercall (exit 3, with vCPU and RIP).
fn dma_confined() -> Result<(), Failed> {
    let (o, _) = hostile("dma-confined", &[]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(3), || format!("want exit 3\n{}", ctx()))?;
    ensure(err.contains("vCPU 0 at RIP 0x") && err.contains("outside the page-table and shadow regions"), ctx)?;
    ensure(!err.contains("was not refused") && !err.contains("DMA wrote"), ctx)
}

/// 20,000 results: the VMM prints and keeps at most its cap of 10,000 and
/// says how many it dropped.
fn result_spam() -> Result<(), Failed> {
    let (o, _) = hostile("result-spam", &[]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstderr:\n{err}\nlast lines:\n{}", o.status.code(), tail(&out));
    ensure(o.status.code() == Some(0), ctx)?;
    ensure(out.lines().count() == 10_001, || format!("{} lines\n{}", out.lines().count(), ctx()))?;
    let summary = out.lines().last().unwrap_or("");
    ensure(summary.starts_with("SUMMARY: 20000 tests, 0 failures"), ctx)?;
    ensure(summary.contains("10000 result lines beyond the cap of 10000 not shown"), ctx)
}

fn tail(s: &str) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(5)..].join("\n")
}

fn scratch_json(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("shootdown-e2e-{}-{name}.json", std::process::id()))
}

/// Starts `vmm litmus` on the catalogue and sends `signals` once its first
/// block is out; returns (status, stdout, stderr).
fn interrupted_run(json: &std::path::Path, signals: &[i32]) -> Result<(Option<i32>, String, String), Failed> {
    let mut child = Command::new(VMM)
        .args(["litmus", "--runs", "40", "--seed", "4", "--json", json.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut out = String::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line)? == 0 {
            break;
        }
        out += &line;
        if line.starts_with("Observation ") {
            break;
        }
    }
    for &sig in signals {
        // SAFETY: `kill` on our own child's pid.
        unsafe { libc::kill(child.id() as i32, sig) };
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest)?;
    out += &rest;
    let o = child.wait_with_output()?;
    Ok((o.status.code(), out, String::from_utf8_lossy(&o.stderr).into_owned()))
}

/// SIGINT mid-run: the finished blocks, a verdict table marked
/// INTERRUPTED, JSON with `"complete": false`, exit 130.
fn interrupt_keeps_results() -> Result<(), Failed> {
    let json = scratch_json("interrupt");
    let (code, out, err) = interrupted_run(&json, &[libc::SIGINT])?;
    let ctx = || format!("status {code:?}\nstdout:\n{out}\nstderr:\n{err}");
    ensure(code == Some(130), || format!("want exit 130\n{}", ctx()))?;
    ensure(out.contains("Observation s1-concurrent-zap "), ctx)?;
    ensure(out.contains("\nVerdicts (INTERRUPTED by SIGINT after "), ctx)?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let _ = std::fs::remove_file(&json);
    ensure(v["complete"] == false && v["end"] == "interrupted (SIGINT)", || format!("{v:#}"))?;
    ensure(v["runs"].as_array().is_some_and(|r| !r.is_empty()), || format!("no runs saved: {v:#}"))
}

/// A second signal (sent right behind the first, while the run is still
/// stopping its VM and saving) exits at once: status 128 + the signal
/// handled second (threads may take the two in either order), and no
/// verdict table (the orderly path always prints one).
fn second_interrupt_exits_at_once() -> Result<(), Failed> {
    let json = scratch_json("twice");
    let (code, out, err) = interrupted_run(&json, &[libc::SIGINT, libc::SIGTERM])?;
    let _ = std::fs::remove_file(&json);
    let ctx = || format!("status {code:?}\nstdout:\n{out}\nstderr:\n{err}");
    ensure(code == Some(128 + libc::SIGTERM) || code == Some(128 + libc::SIGINT), ctx)?;
    ensure(!out.contains("\nVerdicts"), ctx)
}

/// A fatal error in a later run (a test that needs more vCPUs than
/// `--vcpus`) keeps what finished: its block, the verdict table marked
/// ERROR, and the JSON (`"complete": false`); exit 2.
fn fatal_error_mid_run() -> Result<(), Failed> {
    let json = scratch_json("fatal");
    let ex = repo().join("tests/litmus/examples");
    let one = ex.join("device-loop-prefetch.toml");
    let two = ex.join("cow-private-copy.toml");
    let o = vmm(&[
        "litmus",
        "--vcpus",
        "1",
        "--runs",
        "2",
        "--json",
        json.to_str().unwrap(),
        one.to_str().unwrap(),
        two.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(2), || format!("want exit 2\n{}", ctx()))?;
    ensure(out.contains("Observation device-loop-prefetch "), ctx)?;
    ensure(out.contains("\nVerdicts (ERROR after 1 of 2 (test, policy) runs: "), ctx)?;
    ensure(err.contains("cow-private-copy: needs 2 vCPUs"), ctx)?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    let _ = std::fs::remove_file(&json);
    ensure(v["complete"] == false && v["runs"].as_array().map(|r| r.len()) == Some(1), || format!("{v:#}"))
}
