//! The staleness report as text (`vmm trace`), and the decoded event dump.

use super::{Report, Stats, Window};
use crate::format::{Parsed, Run};
use crate::model::{self, Event};
use abi::litmus::Hook;
use abi::trace::{dev_access, dev_op, Kind};

pub(super) fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e3)
}

pub(super) fn rel(a: Option<u64>, base: u64) -> String {
    a.map_or_else(|| "-".into(), |ns| format!("+{}", us(ns.saturating_sub(base))))
}

/// The human-readable report.
pub fn render_text(r: &Report, file: &str) -> String {
    let mut o = String::new();
    let nwin = r.windows.len();
    o += &format!(
        "Trace {file}: {} run(s), {} window(s){}\n",
        r.runs.len(),
        nwin,
        r.error
            .as_ref()
            .map_or(String::new(), |e| format!(" — INCOMPLETE FILE ({e}); the report covers what was readable"))
    );
    for w in &r.warnings {
        o += &format!("Warning {w}\n");
    }
    for run in &r.runs {
        o += "\n";
        o += &format!(
            "Run {}  {}  policy {}  tlb={} iotlb={} seed={}  Hash={}\n",
            run.run, run.test, run.policy, run.tlb, run.iotlb, run.seed, run.hash
        );
        o += &format!(
            "  {} vCPUs, devices [{}]; {} iterations ({} complete) in {} boot(s) [{}]; {} records, {} dropped, {} ring-full waits\n",
            run.vcpus,
            run.devices.join(", "),
            run.iterations,
            run.complete_iterations,
            run.boots,
            run.boot_ends.join(", "),
            run.records,
            run.dropped_records,
            run.ring_full_waits
        );
        let ws: Vec<&Window> = r.windows.iter().filter(|w| w.run == run.run).collect();
        if ws.is_empty() {
            o += "  no staleness windows (no PTE change revoked a present translation)\n";
            continue;
        }
        o += "  times in µs; release/inval/flush relative to the PTE change; events = records inside the part\n";
        o += &format!(
            "  {:>5} {:<16} {:<9} {:<8} {:>9} {:>10} {:>10} {:<22} {:>10} {:>10} {:>10} {:>7} {:>9}\n",
            "iter",
            "va",
            "change",
            "by",
            "release",
            "inval",
            "primary",
            "flushed (vCPU:+µs)",
            "under_ptl",
            "after_rel",
            "window",
            "events",
            "stale d/c"
        );
        for w in ws {
            let base = w.pte_change.ns;
            let flushes: Vec<String> = w
                .primary_flush
                .iter()
                .filter(|f| f.cached)
                .map(|f| format!("{}:{}", f.vcpu, rel(f.flushed.map(|a| a.ns), base)))
                .collect();
            let inval = match &w.invalidation {
                Some(_) if w.open => "teardown".into(),
                Some(i) => rel(Some(i.ns), base),
                None => "none".into(),
            };
            o += &format!(
                "  {:>5} {:<16} {:<9} {:<8} {:>9} {:>10} {:>10} {:<22} {:>10} {:>10} {:>10} {:>7} {:>9}{}{}{}{}\n",
                w.iteration,
                w.va_hex,
                w.change,
                w.thread.as_ref().map_or_else(|| format!("cpu{}", w.vcpu), |t| format!("{t}@cpu{}", w.vcpu)),
                rel(w.ptl_release.map(|a| a.ns), base),
                inval,
                rel(w.primary_done.map(|a| a.ns), base),
                if flushes.is_empty() { "-".to_string() } else { flushes.join(" ") },
                us(w.under_ptl_ns),
                us(w.after_release_ns),
                us(w.window_ns),
                format!("{}/{}", w.under_ptl_events, w.after_release_events),
                format!("{}/{}", w.stale_device_accesses_after_release, w.stale_vcpu_accesses_after_release),
                if w.open { "  OPEN (until iteration end)" } else { "" },
                if w.phase != "body" { format!("  [{}]", w.phase) } else { String::new() },
                match &w.failed_invalidation {
                    Some(f) => format!("  invalidation at {} did not stop it", rel(Some(f.ns), base)),
                    None => String::new(),
                },
                if w.harmless_stale_accesses > 0 {
                    format!("  (+{} harmless before the copy)", w.harmless_stale_accesses)
                } else {
                    String::new()
                },
            );
        }
        let d = &run.distribution;
        o += &format!(
            "  Distribution over {} window(s) in {} iteration(s), {} open (window = PTE change → {} invalidation)\n",
            d.windows,
            d.iterations_with_windows,
            d.open_windows,
            if run.devices.is_empty() { "primary (TLB flush)" } else { "secondary (IOMMU)" }
        );
        o += &format!("  {:<30} {:>10} {:>10} {:>10} {:>10}\n", "", "min", "median", "p99", "max");
        let row = |name: &str, s: &Stats, f: &dyn Fn(u64) -> String| {
            format!("  {:<30} {:>10} {:>10} {:>10} {:>10}\n", name, f(s.min), f(s.median), f(s.p99), f(s.max))
        };
        o += &row("window (µs)", &d.window_ns, &us);
        o += &row("under PTL (µs)", &d.under_ptl_ns, &us);
        o += &row("after PTL release (µs)", &d.after_release_ns, &us);
        o += &row("stale accesses after release", &d.stale_accesses_after_release, &|v| v.to_string());
    }
    o
}

/// What a record's operands name, for people: hook and operation names,
/// the thread a vCPU starts, a device access's op and staleness.
pub(super) fn decode(run: &Run, e: &Event) -> Option<String> {
    let r = &e.rec;
    match e.kind? {
        Kind::Hook => Some(Hook::from_u8(r.a as u8).map_or_else(|| format!("hook {}", r.a), |h| h.name().to_string())),
        Kind::OpBegin | Kind::OpEnd => {
            Some(abi::litmus::Op::from_u8(r.a as u8).map_or_else(|| format!("op {}", r.a), |o| o.name().to_string()))
        }
        Kind::ThreadStart => {
            Some(run.meta.threads.get(r.a as usize).map_or_else(|| format!("thread {}", r.a), |t| t.name.clone()))
        }
        Kind::DevAccess => {
            let op = dev_op::name((r.b & dev_access::OP_MASK) >> dev_access::OP_SHIFT);
            Some(format!("{op}{}", if r.b & dev_access::STALE != 0 { " STALE" } else { "" }))
        }
        Kind::Access => Some(
            match r.b {
                0 => "load",
                1 => "store",
                _ => "rmw",
            }
            .to_string(),
        ),
        _ => None,
    }
}

/// Every record of a run (optionally one iteration), one line each, in
/// sequence order: for looking at what happened.
pub fn render_dump(parsed: &Parsed, run: Option<usize>, iteration: Option<u64>) -> String {
    let mut o = String::new();
    for (ri, r) in parsed.trace.runs.iter().enumerate() {
        if run.is_some_and(|want| want != ri) {
            continue;
        }
        o += &format!("# run {ri}: {} ({} boots)\n", r.meta.label(), r.boots.len());
        for it in model::iterations(r) {
            if iteration.is_some_and(|want| want != it.number) {
                continue;
            }
            o += &format!(
                "# iteration {} (boot {}){}\n",
                it.number,
                it.boot,
                if it.complete { "" } else { " incomplete" }
            );
            for e in &it.events {
                let who = match e.track() {
                    model::Track::Vcpu(k) => {
                        let t = it.thread_on(r, k).map_or(String::new(), |t| format!("/{t}"));
                        format!("{}{k}{t}", if e.vmm() { "vmm" } else { "cpu" })
                    }
                    model::Track::Device(d) => {
                        r.meta.devices().get(d as usize).map_or_else(|| format!("dev{d}"), |n| format!("dev{d}/{n}"))
                    }
                    _ => "iommu".into(),
                };
                o += &format!(
                    "{:>8} {:>12.3} {:<9} {:<16} va={:#x} a={:#x} b={:#x}{}\n",
                    e.rec.seq,
                    e.ns as f64 / 1e3,
                    who,
                    e.kind_name(),
                    e.rec.va,
                    e.rec.a,
                    e.rec.b,
                    decode(r, e).map_or(String::new(), |d| format!("  {d}"))
                );
            }
        }
    }
    o
}
