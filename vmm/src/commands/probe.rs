//! `vmm probe`: can this host show a stale translation in `native` mode at
//! all? Boots the guest under `--tlb native`, runs the probes of
//! `guest/src/probe.rs`, and prints a short fidelity report. The one-line
//! summary (`fidelity_line`) heads later results files.

use std::path::Path;

use std::sync::Arc;

use abi::config::{GuestMode, TlbModel};
use abi::hypercall::calls::ProbeReport;

use crate::error::{Error, Result};
use crate::services::probe::Probes;
use crate::services::{self, StandardOptions};
use crate::vstate::{vm, EndReason, Service, VmConfig};

fn param(module: &str, name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/module/{module}/parameters/{name}")).ok().map(|s| s.trim().to_string())
}

/// The KVM flavour of this host and its two-dimensional paging mode, as far
/// as /sys/module tells.
pub fn host_description() -> String {
    let loaded = |m: &str| Path::new(&format!("/sys/module/{m}")).exists();
    let tdp_mmu = param("kvm", "tdp_mmu").unwrap_or_else(|| "?".into());
    if loaded("kvm_pvm") {
        format!("kvm_pvm (PVM: shadow paging, guest kernel deprivileged/emulated; tdp_mmu={tdp_mmu})")
    } else if loaded("kvm_intel") {
        format!("kvm_intel (EPT={}, tdp_mmu={tdp_mmu})", param("kvm_intel", "ept").unwrap_or_else(|| "?".into()))
    } else if loaded("kvm_amd") {
        format!("kvm_amd (NPT={}, tdp_mmu={tdp_mmu})", param("kvm_amd", "npt").unwrap_or_else(|| "?".into()))
    } else {
        "unknown KVM flavour (no kvm_intel/kvm_amd/kvm_pvm in /sys/module)".into()
    }
}

/// Runs the probes and prints the report; returns the results.
pub fn run(base: &VmConfig, tries: u64) -> Result<Vec<ProbeReport>> {
    let vcpus = base.vcpus.max(2);
    let cfg = VmConfig { vcpus, tlb: TlbModel::Native, mode: GuestMode::Probe, mode_arg: tries, ..base.clone() };
    let probes = Probes::new();
    let mut svcs = services::standard(cfg.tlb, cfg.seed, StandardOptions::default());
    svcs.push(probes.clone() as Arc<dyn Service>);
    let out = vm::run(&cfg, &svcs)?;
    if !matches!(out.end, EndReason::GuestExit(0)) {
        return Err(Error::GuestRun { what: "the probe guest", end: Box::new(out.end) });
    }
    let (reports, _) = probes.reports();
    let host = host_description();
    println!("shootdown probe: can this host show a stale translation under --tlb native?");
    println!("host: {host}");
    for p in &reports {
        println!("probe {:<44} stale {:>5} / {:<5} tries", p.probe.description(), p.stale, p.tries);
    }
    let any_stale = reports.iter().any(|p| p.stale > 0);
    println!("{}", fidelity_line(&host, any_stale));
    if any_stale {
        println!("deterministic models here: lazy, evict:P (native shows real, non-deterministic staleness)");
    } else {
        println!(
            "deterministic models here: lazy, evict:P (use them: native cannot show a missing flush on this host)"
        );
    }
    Ok(reports)
}

pub fn fidelity_line(host: &str, native_stale_observable: bool) -> String {
    format!(
        "fidelity: native TLB staleness {} on this host [{host}]",
        if native_stale_observable { "observable" } else { "NOT observable" }
    )
}
