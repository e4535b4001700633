//! One (test, policy) of a job: the IOMMU it asks for, and as many boots
//! of the guest as its iterations take (a stalled iteration ends a boot).

use super::{LitmusArgs, PolicyRun};
use crate::commands::interrupt::{self, InterruptWatch};
use crate::error::{Error, Result};
use crate::services::litmus::{IterationObserver, LitmusSession, STALLED};
use crate::services::trace::{SharedOut, TraceConfig, Tracer};
use crate::services::{self, StandardOptions};
use crate::vstate::{vm, EndReason, Service, VmConfig};
use abi::config::{GuestMode, IotlbModel, TlbModel};
use abi::litmus::VALUE_TIMEOUT;
use iommu::{Eviction, IommuConfig};
use litmus::{compile, CompileOptions, Policy, RunResult, Test, ThreadPosition};
use std::sync::Arc;
use std::time::Instant;
use tools::format::{RunEnd, RunMeta, ThreadKind, ThreadMeta};

/// The IOMMU a policy asks for.
pub fn iommu_config(policy: &Policy, seed: u64) -> IommuConfig {
    let mut cfg = IommuConfig { seed, ..IommuConfig::default() };
    let ppm = match policy.iotlb_model() {
        IotlbModel::Lazy => 0,
        IotlbModel::Evict { ppm } => ppm,
    };
    cfg.set_iotlb_eviction(Eviction::from_ppm(ppm));
    cfg.set_pwc(policy.pwc_on());
    cfg
}

/// Runs `args.runs` iterations of `test` under `policy`: as many boots as
/// it takes to get through every iteration (a stalled iteration ends its
/// boot). `trace`: the trace file.
pub fn run_policy(
    base: &VmConfig,
    args: &LitmusArgs,
    test: &Test,
    policy: Policy,
    seed: u64,
    trace: Option<&SharedOut>,
) -> Result<PolicyRun> {
    run_policy_range(base, args, test, policy, seed, trace, 0..args.runs, args.runs)
}

/// Runs iterations `range` of a job that planned `planned` for this (test,
/// policy) (all of them unless `--shard` cut the job): the guest runs
/// iterations `first..end` of a blob compiled for `end`, and iteration i's
/// placement depends on the seed and i alone, so a part behaves as inside
/// the whole run.
#[allow(clippy::too_many_arguments)]
pub fn run_policy_range(
    base: &VmConfig,
    args: &LitmusArgs,
    test: &Test,
    policy: Policy,
    seed: u64,
    trace: Option<&SharedOut>,
    range: std::ops::Range<u64>,
    planned: u64,
) -> Result<PolicyRun> {
    let started = Instant::now();
    // `--runs` is checked at the CLI edge (1..=u32::MAX).
    let runs = range.end.clamp(1, u32::MAX as u64);
    let opts = CompileOptions {
        seed,
        iterations: runs as u32,
        iteration_timeout_ms: args.iteration_timeout.as_millis().min(u32::MAX as u128) as u32,
    };
    let compiled = compile(test, &policy, &opts).map_err(|e| Error::Litmus(format!("{}: internal: {e}", test.file)))?;
    let blob = abi::litmus::Blob::parse(&compiled.blob)
        .map_err(|e| Error::GuestReport(format!("internal: compiled blob rejected: {e:?}")))?;
    let hdr = *blob.header();
    let thread_names: Vec<String> =
        (0..hdr.n_threads).map(|t| blob.thread_name(t).unwrap_or("?").to_string()).collect();
    let (nv, nd) = (hdr.n_vcpu_threads as usize, hdr.n_device_threads as usize);
    let vcpus = args.vcpus.unwrap_or(nv.max(1) as u64);
    if vcpus < nv as u64 {
        return Err(Error::Litmus(format!("{}: needs {nv} vCPUs for its threads, --vcpus {vcpus} given", test.name)));
    }
    let tlb = policy.tlb_model();
    let iommu = iommu_config(&policy, seed);
    let session = LitmusSession::new(compiled.blob.clone(), nv, nd, runs, args.iteration_timeout);
    session.set_progress(Arc::new(args.progress.clone()));
    if args.measure {
        session.measure();
    }
    let mut result = RunResult::new(test, policy, seed, range.end - range.start).with_range(range.start, planned);
    result.fidelity = Some(fidelity(tlb));
    let trace_limit = args.trace_runs.unwrap_or(u64::MAX).min(runs);
    if let Some(t) = trace {
        let meta = RunMeta {
            test: test.name.clone(),
            hash: test.hash.clone(),
            policy: policy.canonical_mm(),
            tlb: tlb.to_string(),
            iotlb: policy.iotlb_model().to_string(),
            seed,
            file: Some(test.file.clone()),
            iterations: runs,
            traced_iterations: trace_limit,
            vcpus,
            threads: thread_names
                .iter()
                .enumerate()
                .map(|(i, n)| ThreadMeta {
                    name: n.clone(),
                    kind: if i < nv { ThreadKind::Vcpu } else { ThreadKind::Device },
                })
                .collect(),
            record_version: abi::trace::VERSION,
        };
        t.lock().unwrap_or_else(|e| e.into_inner()).run(&meta);
    }
    let mut leaks = 0;
    let mut guest_error = None;
    let mut first_match = None;
    let mut interrupted = false;
    let mut first = range.start;
    let mut boot = 0u64;
    while first < runs {
        if interrupt::interrupted().is_some() {
            interrupted = true;
            break;
        }
        let tracer = trace.filter(|_| first < trace_limit).map(|out| {
            Tracer::new(&TraceConfig {
                out: out.clone(),
                first_iteration: first,
                limit: trace_limit,
                boot,
                ring: args.trace_ring,
            })
        });
        boot += 1;
        let cfg = VmConfig { vcpus, tlb, seed: seed ^ first, mode: GuestMode::Litmus, mode_arg: first, ..base.clone() };
        let mut svcs = services::standard(
            tlb,
            cfg.seed,
            StandardOptions { console: false, checks: None, iommu, trace: tracer.clone() },
        );
        svcs.push(session.boot(tracer.map(|t| t as Arc<dyn IterationObserver>)));
        svcs.push(Arc::new(InterruptWatch) as Arc<dyn Service>);
        let out = vm::run(&cfg, &svcs)?;
        for r in session.take_reports() {
            if r.values.len() != result.arity {
                return Err(Error::GuestReport(format!(
                    "guest reported {} values for {}, expected {}",
                    r.values.len(),
                    test.name,
                    result.arity
                )));
            }
            if r.leaked_pages != 0 || r.leaked_tables != 0 {
                leaks += 1;
            }
            result.record(&r.values).map_err(|e| Error::GuestReport(e.to_string()))?;
            if first_match.is_none() && test.condition.expr.eval(&r.values) {
                first_match = Some(r.received.saturating_duration_since(started));
            }
            // `iteration` < runs (checked by the session): no overflow.
            first = first.max(r.iteration + 1);
        }
        match out.end {
            // The guest says it is done: it must have run every iteration,
            // or the run's verdict would rest on iterations that never ran.
            EndReason::GuestExit(abi::exit::SUCCESS) if first >= runs => break,
            EndReason::GuestExit(abi::exit::SUCCESS) => {
                let part = if range.start > 0 { format!(" {}..{}", range.start, range.end) } else { String::new() };
                guest_error = Some(format!(
                    "the guest ended the run after {} of {} iterations{part} (it must report every one)",
                    first - range.start,
                    range.end - range.start
                ));
                break;
            }
            EndReason::Stopped { by: STALLED } => {
                let stall = session.take_stall().unwrap_or_default();
                let positions = stall
                    .positions
                    .iter()
                    .enumerate()
                    .map(|(t, p)| ThreadPosition {
                        thread: thread_names.get(t).cloned().unwrap_or_else(|| format!("thread{t}")),
                        pc: p.map(|(pc, _)| pc),
                        source: p.and_then(|(pc, _)| compiled.position(t, pc)),
                        hook: p.and_then(|(_, h)| h),
                    })
                    .collect();
                let it = stall.iteration.max(first).min(runs - 1);
                args.progress.inc(1);
                let values = vec![VALUE_TIMEOUT; result.arity];
                result.record_timeout(it, &values, positions).map_err(|e| Error::GuestReport(e.to_string()))?;
                first = it + 1;
            }
            EndReason::Interrupted => {
                interrupted = true;
                break;
            }
            EndReason::GuestExit(s) => {
                guest_error = Some(format!("guest exited with status {s} at iteration {first}"));
                break;
            }
            EndReason::GuestError { vcpu, rip, fault } => {
                guest_error = Some(format!("guest error on vCPU {vcpu} at RIP {rip:#x}: {fault} (iteration {first})"));
                break;
            }
            EndReason::Timeout { .. } => {
                guest_error = Some(format!("watchdog: the guest did not finish within {:?}", base.timeout));
                break;
            }
            EndReason::Stopped { by } => {
                guest_error = Some(format!("stopped by {by} at iteration {first}"));
                break;
            }
        }
    }
    result.time_secs = started.elapsed().as_secs_f64();
    if let Some(t) = trace {
        let timeouts = result.n_timeouts;
        t.lock().unwrap_or_else(|e| e.into_inner()).run_end(&RunEnd { iterations: result.total(), timeouts });
    }
    Ok(PolicyRun { result, leaks, guest_error, first_match, interrupted, measured: session.measured() })
}

/// The `Fidelity` line: how far the run's TLB model reflects hardware.
pub(super) fn fidelity(tlb: TlbModel) -> String {
    match tlb {
        TlbModel::Lazy => "tlb=lazy (modelled: entries live until flushed; deterministic)".into(),
        TlbModel::Native => "tlb=native (the host's real TLB; see `vmm probe` for what this host can show)".into(),
        TlbModel::Evict { .. } => format!("tlb={tlb} (modelled, seeded random eviction)"),
    }
}
