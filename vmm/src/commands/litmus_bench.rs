//! `vmm bench` litmus figures: iterations per second for S1 and S5 under
//! `tlb=lazy` (one guest, and one guest per host CPU at once), and the
//! time from the start of a run to its first forbidden observation for
//! every buggy policy of the catalogue. Figures, not pass/fail.

use std::time::{Duration, Instant};

use litmus::{Policy, Test, Verdict};

use super::litmus::{self as litmus_run, LitmusArgs};
use super::progress::Progress;
use crate::error::{Error, Result};
use crate::vstate::VmConfig;

/// What the field reaches (the anchors).
const ANCHORS: &str = "anchors: system-litmus-harness ~6k runs/s per 4-vCPU guest (page-table tests); \
                       litmus7 kvm mode ~130k runs/s (simple tests)";

fn args(runs: u64, progress: &Progress) -> LitmusArgs {
    LitmusArgs { runs, iteration_timeout: Duration::from_secs(3), progress: progress.clone(), ..Default::default() }
}

fn find<'a>(tests: &'a [Test], name: &str) -> Result<&'a Test> {
    tests.iter().find(|t| t.name == name).ok_or_else(|| Error::GuestReport(format!("{name} is not in the catalogue")))
}

/// Iterations per second of `test` under `policy` in one guest, or in
/// `guests` guests running at once (their total).
fn runs_per_sec(base: &VmConfig, test: &Test, policy: &Policy, runs: u64, guests: usize, p: &Progress) -> Result<f64> {
    let start = Instant::now();
    let results: Vec<Result<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..guests)
            .map(|g| {
                s.spawn(move || {
                    let pr = litmus_run::run_policy(base, &args(runs, p), test, *policy, 1 + g as u64, None)?;
                    match pr.guest_error {
                        Some(e) => Err(Error::GuestReport(format!("{}: {e}", test.name))),
                        None => Ok(pr.result.total()),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::GuestReport("bench thread panicked".into()))))
            .collect()
    });
    let mut total = 0;
    for r in results {
        total += r?;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

pub fn run(base: &VmConfig, force_progress: bool) -> Result<()> {
    let tests = litmus_run::load(&[])?;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let buggy: u64 =
        tests.iter().map(|t| t.expect.iter().filter(|e| e.verdict == Verdict::Sometimes).count() as u64).sum();
    let p = Progress::new(2 * 200 * (1 + cpus as u64) + 20 * buggy, "iterations", force_progress);
    println!("litmus runs/s under tlb=lazy, default policy ({ANCHORS})");
    for name in ["s1-concurrent-zap", "s5-cow-two-pages-device"] {
        let t = find(&tests, name)?;
        p.set_message(format!("runs/s of {name}"));
        let policy = Policy::default();
        let one = runs_per_sec(base, t, &policy, 200, 1, &p)?;
        let all = runs_per_sec(base, t, &policy, 200, cpus, &p)?;
        println!(
            "  {name:<34} {one:>8.1} runs/s one guest   {all:>8.1} runs/s total with {cpus} guests at once ({:.1} each)",
            all / cpus as f64
        );
    }
    println!("time from start to the first forbidden observation (buggy policies, tlb=lazy, boot included)");
    for t in &tests {
        for e in t.expect.iter().filter(|e| e.verdict == Verdict::Sometimes) {
            p.set_message(format!("first forbidden observation of {} [{}]", t.name, e.policy));
            let pr = litmus_run::run_policy(base, &args(20, &p), t, e.policy, 1, None)?;
            let shown = match pr.first_match {
                Some(d) => format!("{:>8.1} ms", d.as_secs_f64() * 1e3),
                None => "not observed in 20 runs".into(),
            };
            println!("  {:<34} {:<44} {shown}", t.name, e.policy.to_string());
        }
    }
    p.finish();
    Ok(())
}
