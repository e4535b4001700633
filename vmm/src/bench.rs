//! `vmm bench`: figures, not pass/fail. Boot-to-exit time for 1 and 4 vCPUs,
//! the hypercall round trip next to a bare port-I/O exit, page-table op,
//! flush, fill and shootdown costs (medians), then the litmus figures
//! (`litmus_bench`).

use std::time::Duration;

use abi::hypercall::bench as metric;

use crate::error::{Error, Result};
use crate::vstate::vm::{self, EndReason, VmConfig};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run_ok(cfg: &VmConfig) -> Result<vm::RunOutcome> {
    let out = vm::run(cfg)?;
    match &out.end {
        EndReason::GuestExit(0) => Ok(out),
        other => Err(Error::Other(format!("benchmark guest did not finish cleanly: {other:?}"))),
    }
}

/// Runs the benchmarks with `base` (image, memory) and prints the figures.
pub fn run(base: &VmConfig, boot_runs: usize, force_progress: bool) -> Result<()> {
    println!(
        "shootdown bench (medians; host: {} cores)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    for vcpus in [1u64, 4] {
        let cfg = VmConfig { vcpus, cmdline: "mode=boot".into(), quiet: true, ..base.clone() };
        let mut times = Vec::with_capacity(boot_runs);
        for _ in 0..boot_runs {
            times.push(run_ok(&cfg)?.boot_to_exit);
        }
        let m = median(times.clone());
        let (lo, hi) = (times.iter().min().unwrap(), times.iter().max().unwrap());
        println!(
            "boot-to-exit  {vcpus} vCPU{}  median {:>8.2} ms   (min {:.2} ms, max {:.2} ms, {boot_runs} runs)",
            if vcpus == 1 { " " } else { "s" },
            m.as_secs_f64() * 1e3,
            lo.as_secs_f64() * 1e3,
            hi.as_secs_f64() * 1e3
        );
    }
    let cfg = VmConfig { vcpus: 1, cmdline: "mode=bench.exits".into(), quiet: true, ..base.clone() };
    let out = run_ok(&cfg)?;
    let get = |m: u64| out.bench.iter().find(|f| f.metric == m).copied();
    let (Some(hc), Some(nop)) = (get(metric::HYPERCALL_ECHO), get(metric::PORT_IO_EXIT)) else {
        return Err(Error::Other("the guest reported no exit-cost figures".into()));
    };
    for f in [hc, nop] {
        println!(
            "{:<44} median {:>8.2} us   ({} samples)",
            metric::name(f.metric),
            f.median_ps as f64 / 1e6,
            f.samples
        );
    }
    println!("hypercall / bare exit ratio                  {:.2}", hc.median_ps as f64 / nop.median_ps.max(1) as f64);
    let us = |ps: u64| ps as f64 / 1e6;
    let exits = |ps: u64| ps as f64 / nop.median_ps.max(1) as f64;
    for vcpus in [1u64, 2, 4] {
        let cfg = VmConfig { vcpus, cmdline: "mode=bench.tlb".into(), quiet: true, ..base.clone() };
        let out = run_ok(&cfg)?;
        let get = |m: u64| out.bench.iter().find(|f| f.metric == m).map(|f| f.median_ps).unwrap_or(0);
        if vcpus == 1 {
            let (ptop, flush) = (get(metric::PT_OP), get(metric::FLUSH_PAGE));
            let fill = get(metric::FLUSH_AND_FILL).saturating_sub(flush);
            println!(
                "{:<44} median {:>8.2} us   ({:.2} x bare exit)",
                metric::name(metric::PT_OP),
                us(ptop),
                exits(ptop)
            );
            println!("{:<44} median {:>8.2} us", metric::name(metric::FLUSH_PAGE), us(flush));
            println!(
                "{:<44} median {:>8.2} us   ({:.2} x bare exit)",
                "TLB fill (#PF + FILL walk + retry)",
                us(fill),
                exits(fill)
            );
        } else {
            let sd = get(metric::SHOOTDOWN);
            println!(
                "{:<44} median {:>8.2} us   ({vcpus} vCPUs, --tlb {})",
                metric::name(metric::SHOOTDOWN),
                us(sd),
                cfg.tlb
            );
        }
    }
    crate::litmus_bench::run(base, force_progress)
}
