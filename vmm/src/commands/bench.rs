//! `vmm bench`: figures, not pass/fail. Boot-to-exit time for 1 and 4 vCPUs,
//! the hypercall round trip next to a bare port-I/O exit, page-table op,
//! flush, fill and shootdown costs (medians), then the litmus figures
//! (`litmus_bench`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use abi::config::GuestMode;
use abi::hypercall::calls::BenchFigure;
use abi::hypercall::Metric;

use crate::error::{Error, Result};
use crate::services::bench::Bench;
use crate::services::{self, StandardOptions};
use crate::vstate::{vm, EndReason, Service, VmConfig};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Boots `cfg` with the bench service; the run must end cleanly.
fn run_ok(cfg: &VmConfig) -> Result<(Duration, Vec<BenchFigure>)> {
    let bench = Bench::new();
    let mut svcs = services::standard(cfg.tlb, cfg.seed, StandardOptions::default());
    svcs.push(bench.clone() as Arc<dyn Service>);
    let out = vm::run(cfg, &svcs)?;
    match out.end {
        EndReason::GuestExit(0) => Ok((out.boot_to_exit, bench.figures().0)),
        end => Err(Error::GuestRun { what: "the benchmark guest", end: Box::new(end) }),
    }
}

/// Groups of figures (`vmm bench --only`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Group {
    /// Boot-to-exit time, 1 and 4 vCPUs.
    Boot,
    /// Hypercall round trip and bare port-I/O exit.
    Exits,
    /// Page-table op, flush, fill, shootdown latency.
    Tlb,
    /// S1 and S5: runs/s and what an iteration costs.
    Litmus,
    /// Time to the first forbidden observation of every buggy policy.
    Forbidden,
}

/// The host's load averages (1, 5, 15 min), if Linux says.
fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|w| w.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// Runs the benchmarks with `base` (image, memory), prints the figures and
/// writes them to `json` if given.
pub fn run(base: &VmConfig, boot_runs: usize, only: &[Group], json: Option<&Path>, force_progress: bool) -> Result<()> {
    let want = |g: Group| only.is_empty() || only.contains(&g);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let load_start = load_average();
    println!(
        "shootdown bench (medians; host: {cores} cores, load average {})",
        load_start.map_or("unknown".into(), |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
    );
    let mut report = Map::new();
    report.insert("schema".into(), json!("shootdown-bench/1"));
    report.insert(
        "note".into(),
        json!("counts (instructions, exits, hypercalls) compare across runs; seconds only within one run"),
    );
    let mut boot_ms = Map::new();
    for vcpus in [1u64, 4].into_iter().filter(|_| want(Group::Boot)) {
        let cfg = VmConfig { vcpus, mode: GuestMode::Boot, ..base.clone() };
        let mut times = Vec::with_capacity(boot_runs);
        for _ in 0..boot_runs {
            times.push(run_ok(&cfg)?.0);
        }
        let m = median(times.clone());
        boot_ms.insert(vcpus.to_string(), json!(m.as_secs_f64() * 1e3));
        let (lo, hi) = (times.iter().min().copied().unwrap_or(m), times.iter().max().copied().unwrap_or(m));
        println!(
            "boot-to-exit  {vcpus} vCPU{}  median {:>8.2} ms   (min {:.2} ms, max {:.2} ms, {boot_runs} runs)",
            if vcpus == 1 { " " } else { "s" },
            m.as_secs_f64() * 1e3,
            lo.as_secs_f64() * 1e3,
            hi.as_secs_f64() * 1e3
        );
    }
    if !boot_ms.is_empty() {
        report.insert("boot_to_exit_ms".into(), Value::Object(boot_ms));
    }
    let cfg = VmConfig { vcpus: 1, mode: GuestMode::BenchExits, ..base.clone() };
    let (_, figs) = if want(Group::Exits) || want(Group::Tlb) { run_ok(&cfg)? } else { Default::default() };
    let get = |m: Metric, cpl3: bool| figs.iter().find(|f| f.metric == m && f.at_cpl3.get() == cpl3).copied();
    let nop = match (get(Metric::HypercallEcho, false), get(Metric::PortIoExit, false)) {
        (Some(_), Some(nop)) => nop,
        _ if !want(Group::Exits) && !want(Group::Tlb) => {
            super::litmus_bench::run(base, want(Group::Litmus), want(Group::Forbidden), force_progress, &mut report)?;
            return finish(report, cores, load_start, json);
        }
        _ => return Err(Error::GuestReport("the guest reported no exit-cost figures".into())),
    };
    let us = |ps: u64| ps as f64 / 1e6;
    // Litmus threads run at CPL3 on the modelled TLBs: those figures are
    // theirs; the CPL0 ones are `vmm explore`'s and `--tlb native`'s path
    // (and every figure's before the threads moved to CPL3).
    let label = |cpl3: bool| if cpl3 { "CPL3" } else { "CPL0" };
    let key = |k: &str, cpl3: bool| if cpl3 { format!("{k}_cpl3_us") } else { format!("{k}_us") };
    let nop3 = get(Metric::PortIoExit, true);
    for cpl3 in [false, true].into_iter().filter(|_| want(Group::Exits)) {
        let (Some(hc), Some(nop)) = (get(Metric::HypercallEcho, cpl3), get(Metric::PortIoExit, cpl3)) else {
            continue;
        };
        for f in [hc, nop] {
            println!(
                "{:<44} median {:>8.2} us   (from {}, {} samples)",
                f.metric.description(),
                us(f.median_ps),
                label(cpl3),
                f.samples
            );
        }
        println!(
            "hypercall / bare exit ratio                  {:.2}   (from {})",
            hc.median_ps as f64 / nop.median_ps.max(1) as f64,
            label(cpl3)
        );
        report.insert(key("hypercall", cpl3), json!(us(hc.median_ps)));
        report.insert(key("port_exit", cpl3), json!(us(nop.median_ps)));
    }
    let mut shootdown = Map::new();
    let mut shootdown_cpl3 = Map::new();
    for vcpus in [1u64, 2, 4].into_iter().filter(|_| want(Group::Tlb)) {
        let cfg = VmConfig { vcpus, mode: GuestMode::BenchTlb, ..base.clone() };
        let (_, figs) = run_ok(&cfg)?;
        let get = |m: Metric, cpl3: bool| figs.iter().find(|f| f.metric == m && f.at_cpl3.get() == cpl3);
        let any_cpl3 = figs.iter().any(|f| f.at_cpl3.get());
        for cpl3 in [false, true].into_iter().filter(|&c| !c || any_cpl3) {
            let nop = if cpl3 { nop3.unwrap_or(nop) } else { nop };
            let exits = |ps: u64| ps as f64 / nop.median_ps.max(1) as f64;
            let fig = |m: Metric| get(m, cpl3).map_or(0, |f| f.median_ps);
            if vcpus == 1 {
                let (ptop, flush) = (fig(Metric::PtOp), fig(Metric::FlushPage));
                let fill = fig(Metric::FlushAndFill).saturating_sub(flush);
                let l = label(cpl3);
                println!(
                    "{:<44} median {:>8.2} us   (from {l}, {:.2} x bare exit)",
                    Metric::PtOp.description(),
                    us(ptop),
                    exits(ptop)
                );
                println!("{:<44} median {:>8.2} us   (from {l})", Metric::FlushPage.description(), us(flush));
                println!(
                    "{:<44} median {:>8.2} us   (from {l}, {:.2} x bare exit)",
                    "TLB fill (#PF + FILL walk + retry)",
                    us(fill),
                    exits(fill)
                );
                report.insert(key("pt_op", cpl3), json!(us(ptop)));
                report.insert(key("flush_page", cpl3), json!(us(flush)));
                report.insert(key("fill", cpl3), json!(us(fill)));
            } else {
                let sd = fig(Metric::Shootdown);
                println!(
                    "{:<44} median {:>8.2} us   ({vcpus} vCPUs, --tlb {}, from {})",
                    Metric::Shootdown.description(),
                    us(sd),
                    cfg.tlb,
                    label(cpl3)
                );
                let into = if cpl3 { &mut shootdown_cpl3 } else { &mut shootdown };
                into.insert(format!("{vcpus}_vcpus"), json!(us(sd)));
            }
        }
    }
    if !shootdown_cpl3.is_empty() {
        report.insert("shootdown_one_page_cpl3_us".into(), Value::Object(shootdown_cpl3));
    }
    if !shootdown.is_empty() {
        report.insert("shootdown_one_page_us".into(), Value::Object(shootdown));
    }
    super::litmus_bench::run(base, want(Group::Litmus), want(Group::Forbidden), force_progress, &mut report)?;
    finish(report, cores, load_start, json)
}

/// The host line of the report, and the JSON file if asked for.
fn finish(
    mut report: Map<String, Value>,
    cores: usize,
    load_start: Option<[f64; 3]>,
    json: Option<&Path>,
) -> Result<()> {
    let load_end = load_average();
    println!(
        "host load average at the end: {}",
        load_end.map_or("unknown".into(), |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
    );
    report.insert(
        "host".into(),
        json!({ "cores": cores, "load_average_start": load_start, "load_average_end": load_end }),
    );
    if let Some(path) = json {
        crate::commands::output::write_json("--json", path, &Value::Object(report))?;
    }
    Ok(())
}
