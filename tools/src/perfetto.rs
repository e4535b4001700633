//! Chrome / Perfetto trace-event JSON (the "JSON trace format" that
//! ui.perfetto.dev and chrome://tracing open).
//!
//! One process per (test, policy) run; in it one thread track per vCPU,
//! per device thread and for the IOMMU's invalidation queue, plus an
//! `iterations` track and `staleness windows` lanes. Slices (`ph: X`) for
//! PTL holds, primary flushes, notifier calls, mm operations, IOMMU
//! invalidations and iterations; instant events (`ph: i`) for PTE changes,
//! accesses, IPIs, hooks, fills, and — category `stale` — every stale
//! access. PTE changes and stale accesses are also 1 ns slices (`ph: X`),
//! since some trace engines (Chrome's, in at least one consumer) drop
//! instants, and each stale access is joined to the PTE change that made it
//! stale by a flow arrow (`ph: s`/`f`). Events on a vCPU track carry the
//! litmus thread it ran in that iteration (`args.thread`: the placement
//! changes per iteration). Boots of a run are laid end to end. Times are µs.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::analysis::{self, Options, Window};
use crate::format::{Parsed, Run};
use crate::model::{self, Track};
use crate::timeline;

const TID_IOMMU: u64 = 1000;
const TID_DEVICE: u64 = 1001;
const TID_ITERATIONS: u64 = 2000;
const TID_WINDOWS: u64 = 3000;

fn tid(t: Track) -> u64 {
    match t {
        Track::Vcpu(k) => 1 + k,
        Track::Device(d) => TID_DEVICE + d,
        Track::Iommu => TID_IOMMU,
        Track::Iterations => TID_ITERATIONS,
    }
}

fn track_name(run: &Run, t: Track) -> String {
    match t {
        Track::Vcpu(k) => format!("vCPU {k}"),
        Track::Device(d) => {
            format!("device {}", run.meta.devices().get(d as usize).map_or_else(|| d.to_string(), |s| s.to_string()))
        }
        Track::Iommu => "IOMMU (invalidation queue)".into(),
        Track::Iterations => "iterations".into(),
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn args(a: &[(&'static str, String)]) -> Value {
    Value::Object(a.iter().map(|(k, v)| (k.to_string(), Value::String(v.clone()))).collect())
}

fn meta(pid: u64, tid: u64, name: &str, value: Value) -> Value {
    json!({"name": name, "ph": "M", "ts": 0, "pid": pid, "tid": tid, "args": value})
}

/// The whole file as one trace-event JSON document.
pub fn export(parsed: &Parsed) -> Value {
    let report = analysis::analyse(parsed, Options::default());
    let mut events = Vec::new();
    let mut flow_id = 0;
    for (ri, run) in parsed.trace.runs.iter().enumerate() {
        let windows: Vec<&Window> = report.windows.iter().filter(|w| w.run == ri).collect();
        run_events(ri, run, &windows, &mut events, &mut flow_id);
    }
    json!({
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {
            "schema": "shootdown-perfetto/1",
            "incomplete": parsed.error.as_ref().map(|e| e.to_string()),
        },
    })
}

fn run_events(ri: usize, run: &Run, windows: &[&Window], out: &mut Vec<Value>, flow_id: &mut u64) {
    let pid = ri as u64 + 1;
    out.push(meta(pid, 0, "process_name", json!({"name": format!("run {ri}: {}", run.meta.label())})));
    out.push(meta(pid, 0, "process_sort_index", json!({"sort_index": ri})));
    let mut tracks: BTreeSet<Track> = (0..run.meta.vcpus).map(Track::Vcpu).collect();
    tracks.extend((0..run.meta.devices().len() as u64).map(Track::Device));
    if !run.meta.devices().is_empty() {
        tracks.insert(Track::Iommu);
    }
    tracks.insert(Track::Iterations);
    // Boots end to end: each boot's clock starts after the previous one.
    let mut boot_off = Vec::new();
    let mut off = 0u64;
    for b in &run.boots {
        boot_off.push(off);
        let clock = model::Clock::new(b);
        off += b.records.iter().map(|r| clock.ns(r.tsc)).max().unwrap_or(0) + 1000;
    }
    let its = model::iterations(run);
    let it_start: BTreeMap<u64, u64> = its.iter().map(|i| (i.number, boot_off[i.boot] + i.start_boot_ns)).collect();
    let stale_vcpu = timeline::stale_vcpu_accesses(windows);
    for it in &its {
        let base = boot_off[it.boot];
        let (slices, marks) = timeline::build(&it.events, &|e| base + e.boot_ns, &stale_vcpu);
        for s in slices {
            tracks.insert(s.track);
            let mut a = args(&s.args);
            a["iteration"] = json!(it.number);
            if let Track::Vcpu(k) = s.track {
                if let Some(t) = it.thread_on(run, k) {
                    a["thread"] = json!(t);
                }
            }
            out.push(json!({
                "name": s.name, "cat": s.cat, "ph": "X",
                "ts": us(s.start_ns), "dur": us(s.end_ns - s.start_ns),
                "pid": pid, "tid": tid(s.track), "args": a,
            }));
        }
        for m in marks {
            tracks.insert(m.track);
            let mut a = args(&m.args);
            a["seq"] = json!(m.seq);
            a["iteration"] = json!(it.number);
            if let Track::Vcpu(k) = m.track {
                if let Some(t) = it.thread_on(run, k) {
                    a["thread"] = json!(t);
                }
            }
            if m.cat == "stale" || m.cat == "pte" {
                out.push(json!({
                    "name": m.name, "cat": m.cat, "ph": "X",
                    "ts": us(m.ns), "dur": 0.001, "pid": pid, "tid": tid(m.track), "args": a.clone(),
                }));
            }
            out.push(json!({
                "name": m.name, "cat": m.cat, "ph": "i", "s": "t",
                "ts": us(m.ns), "pid": pid, "tid": tid(m.track), "args": a,
            }));
        }
    }
    // Staleness windows, in lanes so that slices of one lane never overlap.
    let mut lanes: Vec<u64> = Vec::new();
    for w in windows {
        let Some(&start) = it_start.get(&w.iteration) else { continue };
        let (t0, t1) = (start + w.pte_change.ns, start + w.pte_change.ns + w.window_ns);
        let lane = match lanes.iter().position(|&end| end <= t0) {
            Some(l) => l,
            None => {
                lanes.push(0);
                lanes.len() - 1
            }
        };
        lanes[lane] = t1 + 1;
        let t = TID_WINDOWS + lane as u64;
        let a = json!({
            "va": w.va_hex, "change": w.change, "iteration": w.iteration, "open": w.open,
            "window_ns": w.window_ns, "under_ptl_ns": w.under_ptl_ns, "after_release_ns": w.after_release_ns,
            "stale_accesses_after_release": w.stale_accesses_after_release,
        });
        let name = format!("window {} {}{}", w.va_hex, w.change, if w.open { " (open)" } else { "" });
        out.push(json!({"name": name, "cat": "window", "ph": "X", "ts": us(t0), "dur": us(w.window_ns), "pid": pid, "tid": t, "args": a}));
        if w.under_ptl_ns > 0 {
            out.push(json!({"name": "under PTL", "cat": "window", "ph": "X", "ts": us(t0), "dur": us(w.under_ptl_ns), "pid": pid, "tid": t, "args": {}}));
        }
        if w.after_release_ns > 0 {
            let ts = t0 + w.under_ptl_ns;
            out.push(json!({"name": "after PTL release", "cat": "window", "ph": "X", "ts": us(ts), "dur": us(w.after_release_ns), "pid": pid, "tid": t, "args": {}}));
        }
        for s in &w.stale_accesses {
            out.push(json!({
                "name": format!("stale {} by {}", s.op, s.by), "cat": "stale", "ph": "i", "s": "t",
                "ts": us(start + s.ns), "pid": pid, "tid": t,
                "args": {"after_release": s.after_release, "value": s.value, "seq": s.seq, "harmless": s.harmless},
            }));
            // PTE change → the stale access it allowed, as a flow arrow
            // between the two 1 ns slices.
            *flow_id += 1;
            let to =
                if s.source == crate::format::ThreadKind::Device { Track::Device(s.unit) } else { Track::Vcpu(s.unit) };
            out.push(json!({
                "name": "made stale by", "cat": "stale", "ph": "s", "id": *flow_id,
                "ts": us(t0), "pid": pid, "tid": tid(Track::Vcpu(w.vcpu)),
            }));
            out.push(json!({
                "name": "made stale by", "cat": "stale", "ph": "f", "bp": "e", "id": *flow_id,
                "ts": us(start + s.ns), "pid": pid, "tid": tid(to),
            }));
        }
    }
    for (i, _) in lanes.iter().enumerate() {
        let t = TID_WINDOWS + i as u64;
        out.push(meta(pid, t, "thread_name", json!({"name": format!("staleness windows {}", i + 1)})));
        out.push(meta(pid, t, "thread_sort_index", json!({"sort_index": t})));
    }
    for t in tracks {
        out.push(meta(pid, tid(t), "thread_name", json!({"name": track_name(run, t)})));
        out.push(meta(pid, tid(t), "thread_sort_index", json!({"sort_index": tid(t)})));
    }
}
