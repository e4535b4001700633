//! `vmm bench` litmus figures: iterations per second for S1 and S5 under
//! `tlb=lazy` (one guest, and one guest per host CPU at once), what one
//! iteration costs in counts (KVM's binary statistics and the VMM's own:
//! emulated instructions, exits by kind, hypercalls by op, VMM CPU time)
//! with a bare-metal projection from them, and the time from the start of
//! a run to its first forbidden observation for every buggy policy of the
//! catalogue. Figures, not pass/fail.

use std::time::{Duration, Instant};

use litmus::{Policy, Test, Verdict};
use serde_json::{json, Map, Value};

use super::litmus::{self as litmus_run, LitmusArgs};
use super::progress::Progress;
use crate::error::{Error, Result};
use crate::services::litmus::Measured;
use crate::vstate::stats::{UserExit, KVM_COUNTERS};
use crate::vstate::VmConfig;

/// The projection's price of one VM exit on a bare-metal (VMX/SVM) KVM
/// host, µs (ARCHITECTURE.md: 1–1.5 µs measured there).
const BARE_METAL_EXIT_US: f64 = 1.5;
/// The projection's price of an instruction this host emulates when it
/// runs natively, µs (a deliberately generous 1 ns).
const NATIVE_INSN_US: f64 = 0.001;
const PROJECTION: &str = "projection, not a measurement: 1 / (exits_per_iter x 1.5 us + vmm_us_per_iter + \
                          emulated_insns_per_iter x 1 ns, the code this host emulates run natively)";

/// What the field reaches (the anchors).
const ANCHORS: &str = "anchors: system-litmus-harness ~6k runs/s per 4-vCPU guest (page-table tests); \
                       litmus7 kvm mode ~130k runs/s (simple tests)";

fn args(runs: u64, progress: &Progress) -> LitmusArgs {
    LitmusArgs { runs, iteration_timeout: Duration::from_secs(3), progress: progress.clone(), ..Default::default() }
}

/// One guest's run of a scenario: runs/s (boot included) and what its
/// iterations cost.
struct OneGuest {
    runs_per_s: f64,
    measured: Measured,
}

fn find<'a>(tests: &'a [Test], name: &str) -> Result<&'a Test> {
    tests.iter().find(|t| t.name == name).ok_or_else(|| Error::GuestReport(format!("{name} is not in the catalogue")))
}

/// `test` under `policy` in one guest, counting what its iterations cost.
fn one_guest(base: &VmConfig, test: &Test, policy: &Policy, runs: u64, p: &Progress) -> Result<OneGuest> {
    let start = Instant::now();
    let pr = litmus_run::run_policy(base, &LitmusArgs { measure: true, ..args(runs, p) }, test, *policy, 1, None)?;
    if let Some(e) = pr.guest_error {
        return Err(Error::GuestReport(format!("{}: {e}", test.name)));
    }
    Ok(OneGuest { runs_per_s: pr.result.total() as f64 / start.elapsed().as_secs_f64(), measured: pr.measured })
}

/// Per-iteration figures from what the measured iterations cost; a figure
/// that cannot be had is `null` with its reason in `unavailable`.
fn cost_figures(m: &Measured) -> Map<String, Value> {
    let mut out = Map::new();
    let mut unavailable = Map::new();
    let n = m.iterations;
    out.insert("measured_iterations".into(), json!(n));
    let Some(c) = m.counts.as_ref().filter(|_| n > 0) else {
        let why = "no two iterations reported in one boot: nothing was measured";
        for k in [
            "emulated_insns_per_iter",
            "exits_per_iter",
            "hypercalls_per_iter",
            "vmm_us_per_iter",
            "projected_bare_metal_runs_per_s",
        ] {
            out.insert(k.into(), Value::Null);
            unavailable.insert(k.into(), json!(why));
        }
        out.insert("unavailable".into(), Value::Object(unavailable));
        return out;
    };
    let per = |x: u64| x as f64 / n as f64;
    out.insert("steady_runs_per_s".into(), json!(n as f64 / m.elapsed.as_secs_f64().max(1e-9)));
    let kvm_missing =
        |name: &str| c.kvm_unavailable.clone().unwrap_or_else(|| format!("this KVM has no `{name}` statistic"));
    let emulated = c.kvm_counter("insn_emulation").map(per);
    match emulated {
        Some(v) => out.insert("emulated_insns_per_iter".into(), json!(v)),
        None => {
            unavailable.insert("emulated_insns_per_iter".into(), json!(kvm_missing("insn_emulation")));
            out.insert("emulated_insns_per_iter".into(), Value::Null)
        }
    };
    let exits = c.kvm_counter("exits").map(per);
    match exits {
        Some(v) => out.insert("exits_per_iter".into(), json!(v)),
        None => {
            unavailable.insert("exits_per_iter".into(), json!(kvm_missing("exits")));
            out.insert("exits_per_iter".into(), Value::Null)
        }
    };
    // Exits by kind: the ones that reached the VMM, by what the guest did;
    // the rest KVM served in the kernel (exceptions, emulation, interrupt
    // windows); and KVM's own kind counters as this KVM keeps them (partial:
    // `kvm_pvm` does not count port I/O in `io_exits`).
    let mut vmm_kinds = Map::new();
    for k in UserExit::ALL {
        vmm_kinds.insert(k.name().into(), json!(per(c.user_exits[k as usize])));
    }
    let mut kinds = Map::new();
    kinds.insert("to_vmm".into(), Value::Object(vmm_kinds));
    kinds.insert("to_vmm_total".into(), json!(per(c.user_exits_total())));
    if let Some(all) = c.kvm_counter("exits") {
        kinds.insert("in_kernel".into(), json!(per(all.saturating_sub(c.user_exits_total()))));
    }
    let kvm_kinds: Map<String, Value> = KVM_COUNTERS
        .iter()
        .filter(|n| n.ends_with("_exits"))
        .filter_map(|n| c.kvm_counter(n).map(|v| ((*n).to_string(), json!(per(v)))))
        .collect();
    kinds.insert("kvm_counters".into(), Value::Object(kvm_kinds));
    out.insert("exits_by_kind".into(), Value::Object(kinds));
    out.insert("hypercalls_per_iter".into(), json!(per(c.hypercalls_total())));
    let by_op: Map<String, Value> =
        c.hypercalls_by_op().into_iter().map(|(op, v)| (op.name().into(), json!(per(v)))).collect();
    out.insert("hypercalls_by_op".into(), Value::Object(by_op));
    let vmm_us = c.vmm_ns as f64 / 1e3 / n as f64;
    out.insert("vmm_us_per_iter".into(), json!(vmm_us));
    for name in ["halt_wakeup", "irq_injections", "pf_taken", "invlpg"] {
        if let Some(v) = c.kvm_counter(name) {
            out.insert(format!("{name}_per_iter"), json!(per(v)));
        }
    }
    match (exits, emulated) {
        (Some(e), Some(i)) => {
            let us = e * BARE_METAL_EXIT_US + vmm_us + i * NATIVE_INSN_US;
            out.insert("projected_bare_metal_runs_per_s".into(), json!(1e6 / us.max(1e-9)));
        }
        _ => {
            unavailable.insert("projected_bare_metal_runs_per_s".into(), json!(kvm_missing("exits")));
            out.insert("projected_bare_metal_runs_per_s".into(), Value::Null);
        }
    }
    out.insert("projection".into(), json!(PROJECTION));
    if !unavailable.is_empty() {
        out.insert("unavailable".into(), Value::Object(unavailable));
    }
    out
}

fn num(v: &Map<String, Value>, k: &str) -> String {
    match v.get(k).and_then(Value::as_f64) {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "n/a".into(),
    }
}

/// Iterations per second of `test` under `policy` in `guests` guests
/// running at once (their total).
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

/// The litmus figures; S1's and S5's go into `report` under `s1`/`s5`.
pub fn run(
    base: &VmConfig,
    scenarios: bool,
    forbidden: bool,
    force_progress: bool,
    report: &mut Map<String, Value>,
) -> Result<()> {
    if !scenarios && !forbidden {
        return Ok(());
    }
    let tests = litmus_run::load(&[])?;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let buggy: u64 =
        tests.iter().map(|t| t.expect.iter().filter(|e| e.verdict == Verdict::Sometimes).count() as u64).sum();
    let total = if scenarios { 2 * 200 * (1 + cpus as u64) } else { 0 } + if forbidden { 20 * buggy } else { 0 };
    let p = Progress::new(total, "iterations", force_progress);
    if scenarios {
        println!("litmus runs/s under tlb=lazy, default policy ({ANCHORS})");
    }
    let names = if scenarios { &[("s1", "s1-concurrent-zap"), ("s5", "s5-cow-two-pages-device")][..] } else { &[] };
    for &(key, name) in names {
        let t = find(&tests, name)?;
        p.set_message(format!("runs/s of {name}"));
        let policy = Policy::default();
        let one = one_guest(base, t, &policy, 200, &p)?;
        let all = runs_per_sec(base, t, &policy, 200, cpus, &p)?;
        println!(
            "  {name:<34} {:>8.1} runs/s one guest   {all:>8.1} runs/s total with {cpus} guests at once ({:.1} each)",
            one.runs_per_s,
            all / cpus as f64
        );
        let mut fig = Map::new();
        fig.insert("test".into(), json!(name));
        fig.insert("runs_per_s".into(), json!(one.runs_per_s));
        fig.insert("runs_per_s_all_cpus".into(), json!(all));
        fig.insert("guests_all_cpus".into(), json!(cpus));
        fig.extend(cost_figures(&one.measured));
        println!(
            "  {:<34} per iteration: {} emulated insns, {} exits ({} to the VMM), {} hypercalls, {} us VMM CPU; \
             projected bare metal {} runs/s (projection)",
            "",
            num(&fig, "emulated_insns_per_iter"),
            num(&fig, "exits_per_iter"),
            fig.get("exits_by_kind")
                .and_then(|k| k.get("to_vmm_total"))
                .and_then(Value::as_f64)
                .map_or("n/a".into(), |x| format!("{x:.1}")),
            num(&fig, "hypercalls_per_iter"),
            num(&fig, "vmm_us_per_iter"),
            num(&fig, "projected_bare_metal_runs_per_s"),
        );
        if let Some(Value::Object(u)) = fig.get("unavailable") {
            for (k, why) in u {
                println!("  {:<34} {k}: unavailable: {}", "", why.as_str().unwrap_or("?"));
            }
        }
        report.insert(key.into(), Value::Object(fig));
    }
    if !forbidden {
        p.finish();
        return Ok(());
    }
    println!("time from start to the first forbidden observation (buggy policies, tlb=lazy, boot included)");
    let mut first = Vec::new();
    for t in &tests {
        for e in t.expect.iter().filter(|e| e.verdict == Verdict::Sometimes) {
            p.set_message(format!("first forbidden observation of {} [{}]", t.name, e.policy));
            let pr = litmus_run::run_policy(base, &args(20, &p), t, e.policy, 1, None)?;
            let shown = match pr.first_match {
                Some(d) => format!("{:>8.1} ms", d.as_secs_f64() * 1e3),
                None => "not observed in 20 runs".into(),
            };
            println!("  {:<34} {:<44} {shown}", t.name, e.policy.to_string());
            first.push(json!({
                "test": t.name,
                "policy": e.policy.to_string(),
                "ms": pr.first_match.map(|d| d.as_secs_f64() * 1e3),
            }));
        }
    }
    report.insert("first_forbidden_observation".into(), Value::Array(first));
    p.finish();
    Ok(())
}
