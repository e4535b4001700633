//! `vmm bench`: figures, not pass/fail. Boot-to-exit time for 1 and 4 vCPUs,
//! the hypercall round trip next to a bare port-I/O exit, page-table op,
//! flush, fill and shootdown costs (medians), then the litmus figures
//! (`litmus_bench`).

use std::sync::Arc;
use std::time::Duration;

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

/// Runs the benchmarks with `base` (image, memory) and prints the figures.
pub fn run(base: &VmConfig, boot_runs: usize, force_progress: bool) -> Result<()> {
    println!(
        "shootdown bench (medians; host: {} cores)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    for vcpus in [1u64, 4] {
        let cfg = VmConfig { vcpus, mode: GuestMode::Boot, ..base.clone() };
        let mut times = Vec::with_capacity(boot_runs);
        for _ in 0..boot_runs {
            times.push(run_ok(&cfg)?.0);
        }
        let m = median(times.clone());
        let (lo, hi) = (times.iter().min().copied().unwrap_or(m), times.iter().max().copied().unwrap_or(m));
        println!(
            "boot-to-exit  {vcpus} vCPU{}  median {:>8.2} ms   (min {:.2} ms, max {:.2} ms, {boot_runs} runs)",
            if vcpus == 1 { " " } else { "s" },
            m.as_secs_f64() * 1e3,
            lo.as_secs_f64() * 1e3,
            hi.as_secs_f64() * 1e3
        );
    }
    let cfg = VmConfig { vcpus: 1, mode: GuestMode::BenchExits, ..base.clone() };
    let (_, figs) = run_ok(&cfg)?;
    let get = |m: Metric| figs.iter().find(|f| f.metric == m).copied();
    let (Some(hc), Some(nop)) = (get(Metric::HypercallEcho), get(Metric::PortIoExit)) else {
        return Err(Error::GuestReport("the guest reported no exit-cost figures".into()));
    };
    for f in [hc, nop] {
        println!(
            "{:<44} median {:>8.2} us   ({} samples)",
            f.metric.description(),
            f.median_ps as f64 / 1e6,
            f.samples
        );
    }
    println!("hypercall / bare exit ratio                  {:.2}", hc.median_ps as f64 / nop.median_ps.max(1) as f64);
    let us = |ps: u64| ps as f64 / 1e6;
    let exits = |ps: u64| ps as f64 / nop.median_ps.max(1) as f64;
    for vcpus in [1u64, 2, 4] {
        let cfg = VmConfig { vcpus, mode: GuestMode::BenchTlb, ..base.clone() };
        let (_, figs) = run_ok(&cfg)?;
        let get = |m: Metric| figs.iter().find(|f| f.metric == m).map(|f| f.median_ps).unwrap_or(0);
        if vcpus == 1 {
            let (ptop, flush) = (get(Metric::PtOp), get(Metric::FlushPage));
            let fill = get(Metric::FlushAndFill).saturating_sub(flush);
            println!(
                "{:<44} median {:>8.2} us   ({:.2} x bare exit)",
                Metric::PtOp.description(),
                us(ptop),
                exits(ptop)
            );
            println!("{:<44} median {:>8.2} us", Metric::FlushPage.description(), us(flush));
            println!(
                "{:<44} median {:>8.2} us   ({:.2} x bare exit)",
                "TLB fill (#PF + FILL walk + retry)",
                us(fill),
                exits(fill)
            );
        } else {
            let sd = get(Metric::Shootdown);
            println!(
                "{:<44} median {:>8.2} us   ({vcpus} vCPUs, --tlb {})",
                Metric::Shootdown.description(),
                us(sd),
                cfg.tlb
            );
        }
    }
    super::litmus_bench::run(base, force_progress)
}
