//! `vmm probe`: can this host show a stale translation in `native` mode at
//! all? Boots the guest under `--tlb native`, runs the probes of
//! `guest/src/probe.rs`, and prints a short fidelity report. The one-line
//! summary (`fidelity_line`) heads later results files.

use std::path::Path;

use abi::hypercall::probe as kind;

use crate::error::{Error, Result};
use crate::hypercall::ProbeResult;
use crate::shadow::TlbModel;
use crate::vstate::vm::{self, EndReason, VmConfig};

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
pub fn run(base: &VmConfig, tries: u64) -> Result<Vec<ProbeResult>> {
    let vcpus = base.vcpus.max(2);
    let cfg = VmConfig {
        vcpus,
        tlb: TlbModel::Native,
        cmdline: format!("mode=probe probe.tries={tries}"),
        quiet: true,
        ..base.clone()
    };
    let out = vm::run(&cfg)?;
    if !matches!(out.end, EndReason::GuestExit(0)) {
        return Err(Error::Other(format!("the probe guest did not finish cleanly: {:?}", out.end)));
    }
    let host = host_description();
    println!("shootdown probe: can this host show a stale translation under --tlb native?");
    println!("host: {host}");
    for p in &out.probes {
        println!("probe {:<44} stale {:>5} / {:<5} tries", kind::name(p.probe), p.stale, p.tries);
    }
    let any_stale = out.probes.iter().any(|p| p.stale > 0);
    println!("{}", fidelity_line(&host, any_stale));
    if any_stale {
        println!("deterministic models here: lazy, evict:P (native shows real, non-deterministic staleness)");
    } else {
        println!(
            "deterministic models here: lazy, evict:P (use them: native cannot show a missing flush on this host)"
        );
    }
    Ok(out.probes)
}

pub fn fidelity_line(host: &str, native_stale_observable: bool) -> String {
    format!(
        "fidelity: native TLB staleness {} on this host [{host}]",
        if native_stale_observable { "observable" } else { "NOT observable" }
    )
}
