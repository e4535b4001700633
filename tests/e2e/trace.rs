//! End-to-end tests of tracing: `vmm litmus --trace`, `vmm trace report
//! [--json]`, `vmm trace export --perfetto/--svg`, and damaged trace files.
//! Each VM run is a few iterations; the S1-device trace is recorded once
//! and shared by the tests that only read it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libtest_mimic::Failed;
use serde_json::Value;

use super::litmus::repo;
use super::{ensure, text, vmm};

fn scratch_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("shootdown-e2e-trace-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn litmus_file(name: &str) -> String {
    repo().join("tests/litmus").join(name).to_str().unwrap().to_string()
}

/// Runs `vmm litmus` with `--trace` into `out`; the herd output on success.
fn record(file: &str, policies: &[&str], runs: u32, out: &Path, extra: &[&str]) -> Result<String, Failed> {
    let runs = runs.to_string();
    let mut args = vec!["litmus", "--runs", &runs, "--seed", "7", "--tlb", "lazy", "--trace", out.to_str().unwrap()];
    for p in policies {
        args.push("--policy");
        args.push(p);
    }
    args.extend_from_slice(extra);
    // notifier=none and flush=ptl are the model's bounds, not kernels.
    args.push("--allow-hypothetical");
    let f = litmus_file(file);
    args.push(&f);
    let o = vmm(&args);
    let (stdout, stderr) = text(&o);
    ensure(o.status.code() == Some(0), || format!("vmm {args:?}: status {:?}\n{stdout}\n{stderr}", o.status.code()))?;
    ensure(stdout.contains("Trace written to"), || format!("no trace note\n{stdout}"))?;
    Ok(stdout)
}

/// `vmm trace report FILE --json`, parsed.
fn report_json(file: &Path) -> Result<Value, Failed> {
    let o = vmm(&["trace", "report", file.to_str().unwrap(), "--json"]);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(0), || format!("report: status {:?}\n{err}", o.status.code()))?;
    serde_json::from_str(&out).map_err(|e| format!("report JSON does not parse: {e}\n{out}").into())
}

fn windows<'a>(r: &'a Value, policy: &str) -> Vec<&'a Value> {
    r["windows"].as_array().map(|w| w.iter().filter(|w| w["policy"] == policy).collect()).unwrap_or_default()
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(u64::MAX)
}

/// The S1-device trace (v3.19 minus 34ee645e83b6 — the device told only at
/// range_end —, then notifier=none; 4 iterations each).
fn s1_device() -> Result<PathBuf, Failed> {
    static T: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    T.get_or_init(|| {
        let p = scratch_dir().join("s1-device.trace");
        record("s1-device-concurrent-zap.toml", &[END, "notifier=none"], 4, &p, &[])
            .map(|_| p)
            .map_err(|e| format!("{e:?}"))
    })
    .clone()
    .map_err(Failed::from)
}

/// The notifier placement of before 34ee645e83b6 (range_end only), a real
/// kernel: v3.19 with that commit reverted.
const END: &str = "kernel=v3.19,notifier=end";

/// S1, device form: under notifier=end every window closes at the device's
/// invalidation (range_end is unconditional) with no stale access after
/// the release; under notifier=none every window stays open and the device
/// reads the zapped page through its stale IOTLB entry after the release.
pub fn s1_device_windows() -> Result<(), Failed> {
    let r = report_json(&s1_device()?)?;
    ensure(r["schema"] == "shootdown-trace-report/1" && r["error"].is_null(), || format!("{r:#}"))?;
    let end = windows(&r, END);
    let none = windows(&r, "notifier=none");
    ensure(end.len() >= 4 && none.len() >= 4, || format!("too few windows: {} / {}\n{r:#}", end.len(), none.len()))?;
    for w in &end {
        for k in ["test", "policy", "va", "window_ns", "after_release_ns", "stale_accesses_after_release"] {
            ensure(!w[k].is_null(), || format!("window lacks {k}: {w:#}"))?;
        }
        ensure(w["test"] == "s1-device-concurrent-zap", || format!("{w:#}"))?;
        ensure(w["open"] == false && w["invalidation"]["by"] == "iommu", || format!("notifier=end: {w:#}"))?;
        ensure(u(w, "window_ns") == u(w, "under_ptl_ns") + u(w, "after_release_ns"), || format!("{w:#}"))?;
        ensure(u(w, "after_release_ns") > 0, || format!("P0 paused after its release: {w:#}"))?;
        ensure(u(w, "stale_device_accesses_after_release") == 0, || format!("notifier=end: {w:#}"))?;
    }
    for w in &none {
        ensure(w["open"] == true, || format!("notifier=none must leave the window open: {w:#}"))?;
        ensure(u(w, "stale_device_accesses_after_release") >= 1, || format!("no stale device access: {w:#}"))?;
        let s = &w["stale_accesses"][0];
        ensure(s["source"] == "device" && s["by"] == "D0" && s["after_release"] == true, || format!("{w:#}"))?;
    }
    let runs = r["runs"].as_array().cloned().unwrap_or_default();
    ensure(runs.len() == 2, || format!("{r:#}"))?;
    for run in &runs {
        let d = &run["distribution"];
        ensure(u(run, "iterations") == 4 && u(run, "dropped_records") == 0, || format!("{run:#}"))?;
        let s = &d["after_release_ns"];
        ensure(u(s, "min") <= u(s, "median") && u(s, "median") <= u(s, "p99") && u(s, "p99") <= u(s, "max"), || {
            format!("{d:#}")
        })?;
    }
    // The table shows the same facts.
    let o = vmm(&["trace", "report", s1_device()?.to_str().unwrap()]);
    let (out, _) = text(&o);
    ensure(o.status.code() == Some(0) && out.contains("OPEN (until iteration end)"), || out.clone())?;
    ensure(out.contains("after PTL release (µs)") && out.contains("notifier=none"), || out.clone())
}

/// S1 (vCPU form): the primary window. With the flush under the PTL
/// nothing is left after the release; without the nested-zap check (v4.9) P2
/// reads through its stale TLB entry after P0's release.
pub fn s1_primary_windows() -> Result<(), Failed> {
    let p = scratch_dir().join("s1.trace");
    record("s1-concurrent-zap.toml", &["flush=ptl", "kernel=v4.9"], 3, &p, &[])?;
    let r = report_json(&p)?;
    let ptl = windows(&r, "flush=ptl");
    let off = windows(&r, "kernel=v4.9");
    ensure(!ptl.is_empty() && !off.is_empty(), || format!("{r:#}"))?;
    for w in ptl {
        ensure(w["closed_by"] == "primary" && u(w, "after_release_ns") == 0, || format!("flush=ptl: {w:#}"))?;
    }
    for w in off {
        ensure(u(w, "stale_vcpu_accesses_after_release") >= 1, || format!("nested check off: {w:#}"))?;
    }
    Ok(())
}

/// Is CoW (`cow x`, write fault into wp_page_copy) in the guest's mm
/// model yet? A traced run of a two-line test shows whether `cow`
/// write-protects the page. `None` = yes; else why the S5 tests wait.
pub fn cow_missing() -> Option<String> {
    let dir = scratch_dir();
    let t = dir.join("cow-probe.toml");
    let src = "name = \"cow-probe\"\n[locations]\nx = { page = \"rw\", value = 0 }\n[thread.P0]\ncode = \"\"\"\ncow x\ntouch x write\n\"\"\"\n[final]\nobserve = [\"x\"]\nexists = \"x == 0\"\n";
    std::fs::write(&t, src).ok()?;
    let trace = dir.join("cow-probe.trace");
    let o = vmm(&[
        "litmus",
        "--runs",
        "1",
        "--seed",
        "1",
        "--iteration-timeout",
        "2000",
        "--trace",
        trace.to_str()?,
        t.to_str()?,
    ]);
    if o.status.code() != Some(0) {
        return Some(format!("the CoW probe did not run: {}", text(&o).1));
    }
    let r = report_json(&trace).ok()?;
    let cow =
        r["windows"].as_array().is_some_and(|w| w.iter().any(|w| w["change"] == "wrprotect" || w["change"] == "remap"));
    (!cow).then(|| "the mm model has no CoW yet (`cow x` does not write-protect x); S5 needs wp_page_copy".to_string())
}

fn s5(policy: &str) -> Result<Value, Failed> {
    let p = scratch_dir().join(format!("s5-{}.trace", policy.replace(['=', ','], "_")));
    record("s5-cow-two-pages-device.toml", &[policy], 4, &p, &[])?;
    report_json(&p)
}

/// S5 under notifier=end: a window with a non-zero after-release part and
/// at least one stale device access after the release.
pub fn s5_end_after_release() -> Result<(), Failed> {
    let r = s5(END)?;
    let ws = windows(&r, END);
    ensure(ws.iter().any(|w| u(w, "after_release_ns") > 0 && u(w, "stale_device_accesses_after_release") >= 1), || {
        format!("no after-release window with a stale device access\n{r:#}")
    })
}

/// `vmm trace timeline` of S5 under notifier=end (v3.19 minus 34ee645e83b6): one column per litmus
/// thread (named, with the vCPU it ran on) and the IOMMU, the CoW break in
/// the kernel's words, and D0's read of x through its stale IOTLB entry
/// marked, in D0's column, before P0's range_end invalidation.
pub fn s5_end_timeline() -> Result<(), Failed> {
    let p = scratch_dir().join("s5-timeline.trace");
    record("s5-cow-two-pages-device.toml", &[END], 2, &p, &[])?;
    let o = vmm(&["trace", "timeline", p.to_str().unwrap()]);
    let (out, err) = text(&o);
    ensure(o.status.code() == Some(0), || format!("{:?}\n{out}\n{err}", o.status.code()))?;
    let header = out.lines().find(|l| l.trim_start().starts_with("µs")).unwrap_or("");
    // Character columns (`µ` and `…` are more than one byte).
    let chars_to = |l: &str, byte: usize| l[..byte].chars().count();
    let col = |c: &str| header.find(c).map(|b| chars_to(header, b));
    for c in ["P0 (vCPU ", "P1 (vCPU ", "P2 (vCPU ", "D0", "IOMMU"] {
        ensure(col(c).is_some(), || format!("no column `{c}`:\n{out}"))?;
    }
    for want in [
        "handle_mm_fault(",
        "copy to the new page done",
        "ptep_get_and_clear(",
        "set_pte_at(",
        "pte_unmap_unlock()",
        "mmu_notifier_invalidate_range_end() {",
        "!! STALE dma_load",
    ] {
        ensure(out.contains(want), || format!("no `{want}`:\n{out}"))?;
    }
    let line_of = |needle: &str| out.lines().position(|l| l.contains(needle));
    let stale = out.lines().find(|l| l.contains("!! STALE dma_load")).unwrap_or("");
    ensure(stale.find("!! STALE").is_some_and(|x| Some(chars_to(stale, x)) == col("D0")), || {
        format!("stale read not in D0's column:\n{out}")
    })?;
    // The stale read comes before the range_end that would have prevented it.
    let last_end = out
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("mmu_notifier_invalidate_range_end() {"))
        .map(|(i, _)| i)
        .max();
    ensure(line_of("!! STALE dma_load") < last_end, || format!("stale read after the last range_end:\n{out}"))
}

/// S5 under notifier=ptl (v4.14: `ptep_clear_flush_notify` under the PTL):
/// the CoW replacement's window (`remap`) is 0 after the release for every
/// VA of every iteration. Fork's write-protect (`wrprotect`) is told at
/// copy_page_range's range_end, after the release, as v4.14 did — with no
/// stale device access in between.
pub fn s5_ptl_no_after_release() -> Result<(), Failed> {
    let r = s5("kernel=v4.14")?;
    let ws = windows(&r, "kernel=v4.14");
    ensure(ws.iter().any(|w| w["change"] == "remap"), || format!("no CoW windows\n{r:#}"))?;
    for w in ws {
        if w["change"] == "remap" {
            ensure(u(w, "after_release_ns") == 0 && u(w, "after_release_events") == 0, || format!("{w:#}"))?;
        } else {
            ensure(w["open"] == false && u(w, "stale_device_accesses_after_release") == 0, || format!("{w:#}"))?;
        }
    }
    Ok(())
}

/// `--trace-runs K` traces only the first K iterations.
pub fn trace_runs_limits() -> Result<(), Failed> {
    let p = scratch_dir().join("limited.trace");
    record("s1-device-concurrent-zap.toml", &["notifier=none"], 3, &p, &["--trace-runs", "1"])?;
    let r = report_json(&p)?;
    let run = &r["runs"][0];
    ensure(u(run, "iterations") == 1 && r["windows"].as_array().map_or(0, |w| w.len()) == 1, || format!("{r:#}"))
}

/// A full ring blocks its vCPU until the VMM drained it: with 16-record
/// rings the vCPUs wait many times, nothing is dropped, and the guest's
/// records are the same as with the default rings.
pub fn full_ring_blocks_no_loss() -> Result<(), Failed> {
    let dir = scratch_dir();
    // Guest records, but the IPIs of a shootdown: whether a flush reaches
    // the other vCPU depends on whether that thread has left the mm yet (a
    // race between one thread's end and another's flush, as in Linux).
    let guest_records = |p: &Path| -> Result<usize, Failed> {
        let o = vmm(&["trace", "dump", p.to_str().unwrap()]);
        let out = text(&o).0;
        ensure(o.status.code() == Some(0), || out.clone())?;
        Ok(out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|w| {
                w.get(2).is_some_and(|w| w.starts_with("cpu")) && w.get(3).is_some_and(|k| !k.starts_with("ipi_"))
            })
            .count())
    };
    let (small, big) = (dir.join("ring16.trace"), dir.join("ring-default.trace"));
    record("s1-device-concurrent-zap.toml", &["notifier=none"], 3, &small, &["--trace-ring", "16"])?;
    record("s1-device-concurrent-zap.toml", &["notifier=none"], 3, &big, &[])?;
    let r = report_json(&small)?;
    let run = &r["runs"][0];
    ensure(u(run, "ring_full_waits") > 0 && u(run, "dropped_records") == 0, || format!("{run:#}"))?;
    ensure(u(run, "complete_iterations") == 3, || format!("{run:#}"))?;
    let (a, b) = (guest_records(&small)?, guest_records(&big)?);
    ensure(a == b && a > 0, || format!("guest records: {a} with 16-record rings, {b} with the default"))
}

/// The Perfetto export is trace-event JSON: a `traceEvents` array whose
/// events all have ph/ts/pid/tid, one named track per vCPU and per device
/// in every run, slices for PTL holds, flushes and invalidations, instant
/// events for stale accesses.
pub fn perfetto_parses_back() -> Result<(), Failed> {
    let out = scratch_dir().join("s1-device.json");
    let o = vmm(&["trace", "export", s1_device()?.to_str().unwrap(), "--perfetto", out.to_str().unwrap()]);
    let (so, se) = text(&o);
    ensure(o.status.code() == Some(0), || format!("export failed\n{so}\n{se}"))?;
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out)?)?;
    let ev = v["traceEvents"].as_array().ok_or("no traceEvents array")?;
    ensure(!ev.is_empty(), || "empty traceEvents".into())?;
    for e in ev {
        ensure(e["ph"].is_string() && e["ts"].is_number() && e["pid"].is_u64() && e["tid"].is_u64(), || {
            format!("event lacks ph/ts/pid/tid: {e}")
        })?;
        if e["ph"] == "X" {
            ensure(e["dur"].as_f64().is_some_and(|d| d >= 0.0) && e["name"].is_string(), || format!("{e}"))?;
        }
    }
    for pid in [1u64, 2] {
        let names: Vec<&str> = ev
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["pid"] == pid)
            .filter_map(|e| e["args"]["name"].as_str())
            .collect();
        for want in ["vCPU 0", "vCPU 1", "device D0", "IOMMU (invalidation queue)"] {
            ensure(names.contains(&want), || format!("run {pid}: no track {want:?} in {names:?}"))?;
        }
    }
    let has = |ph: &str, cat: &str| ev.iter().any(|e| e["ph"] == ph && e["cat"] == cat);
    for cat in ["ptl", "flush", "notifier", "inv", "window"] {
        ensure(has("X", cat), || format!("no {cat} slice"))?;
    }
    ensure(has("i", "stale"), || "no stale-access instant event".into())
}

/// The SVG of one iteration is well-formed XML with one track per vCPU
/// and per device thread.
pub fn svg_well_formed() -> Result<(), Failed> {
    use quick_xml::events::Event;
    let out = scratch_dir().join("s1-device.svg");
    let o = vmm(&["trace", "export", s1_device()?.to_str().unwrap(), "--svg", out.to_str().unwrap(), "--run", "1"]);
    let (so, se) = text(&o);
    ensure(o.status.code() == Some(0), || format!("export failed\n{so}\n{se}"))?;
    let svg = std::fs::read_to_string(&out)?;
    let mut reader = quick_xml::Reader::from_str(&svg);
    let (mut root, mut vcpu, mut device, mut stale) = (None, 0, 0, 0);
    loop {
        match reader.read_event() {
            Err(e) => return Err(format!("SVG is not well-formed XML at {}: {e}", reader.buffer_position()).into()),
            Ok(Event::Eof) => break,
            Ok(Event::Start(s)) | Ok(Event::Empty(s)) => {
                let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
                if root.is_none() {
                    root = Some(name.clone());
                }
                for a in s.attributes() {
                    let a = a.map_err(|e| format!("bad attribute: {e}"))?;
                    if a.key.as_ref() == b"class" {
                        match a.unescape_value().map_err(|e| format!("{e}"))?.as_ref() {
                            "track vcpu" => vcpu += 1,
                            "track device" => device += 1,
                            "mark stale" => stale += 1,
                            _ => {}
                        }
                    }
                }
            }
            Ok(_) => {}
        }
    }
    ensure(root.as_deref() == Some("svg"), || format!("root element {root:?}"))?;
    ensure(vcpu == 2 && device == 1, || format!("tracks: {vcpu} vCPU, {device} device (want 2, 1)"))?;
    ensure(stale >= 1, || "notifier=none: no stale access marked".into())
}

/// A truncated trace gives a clear error (one line, exit 2) and the report
/// of what was readable; a file that is no trace at all is refused.
pub fn damaged_files() -> Result<(), Failed> {
    let full = std::fs::read(s1_device()?)?;
    let cut = scratch_dir().join("truncated.trace");
    std::fs::write(&cut, &full[..full.len() * 3 / 4])?;
    let o = vmm(&["trace", "report", cut.to_str().unwrap()]);
    let (out, err) = text(&o);
    let ctx = || format!("status {:?}\nstdout:\n{out}\nstderr:\n{err}", o.status.code());
    ensure(o.status.code() == Some(2), || format!("want exit 2\n{}", ctx()))?;
    ensure(err.lines().count() == 1 && err.contains("truncated"), || format!("want one clear line\n{}", ctx()))?;
    ensure(out.contains("Run 0") && out.contains("INCOMPLETE FILE"), || format!("no partial report\n{}", ctx()))?;
    let o = vmm(&["trace", "report", cut.to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_str(&text(&o).0)?;
    ensure(
        v["error"].as_str().is_some_and(|e| e.contains("truncated")) && !v["runs"].as_array().unwrap().is_empty(),
        || format!("{v:#}"),
    )?;
    let svg = scratch_dir().join("truncated.svg");
    let o = vmm(&["trace", "export", cut.to_str().unwrap(), "--svg", svg.to_str().unwrap()]);
    ensure(o.status.code() == Some(2) && svg.exists(), || format!("export of a truncated file: {:?}", text(&o)))?;
    let junk = scratch_dir().join("junk.trace");
    std::fs::write(&junk, b"this is not a trace file\n")?;
    let o = vmm(&["trace", "report", junk.to_str().unwrap()]);
    let (_, err) = text(&o);
    ensure(o.status.code() == Some(2) && err.contains("not a shootdown trace"), || err.clone())?;
    ensure(!err.contains("panicked"), || err.clone())
}
