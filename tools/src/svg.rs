//! A timeline picture of one iteration, as a self-contained SVG: one track
//! per vCPU and per device thread (and the IOMMU's invalidation queue),
//! time left to right, then one row per staleness window with its
//! under-PTL part (amber) and after-release part (red), and every stale
//! access marked. Meant for papers and mailing-list posts: no scripts, no
//! external fonts, every element has a `<title>` tooltip.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::analysis::{self, Options, Window};
use crate::format::{Parsed, Run};
use crate::model::{self, Iteration, Track};
use crate::timeline;
use abi::trace::{Kind, UNIT_IOMMU};

#[derive(Clone, Copy, Debug, Default)]
pub struct SvgOptions {
    /// Run index in the file (as `vmm trace report` numbers them).
    pub run: usize,
    /// Iteration number; default: the first with a stale access after a
    /// PTL release, else with an after-release window, else with any
    /// window, else the first.
    pub iteration: Option<u64>,
}

const W: f64 = 1400.0;
// Room for a window label such as "0x7f0000201000 wrprotect (vCPU 12)".
const LEFT: f64 = 270.0;
const RIGHT: f64 = 30.0;
const TRACK_H: f64 = 46.0;
const ROW_H: f64 = 24.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
}

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1e3)
}

/// Renders the chosen iteration, or says why it cannot.
pub fn render(parsed: &Parsed, opts: SvgOptions) -> Result<String, String> {
    let run = parsed.trace.runs.get(opts.run).ok_or_else(|| {
        format!("no run {} in the trace (it has {}; see `vmm trace report`)", opts.run, parsed.trace.runs.len())
    })?;
    let (_, windows) = analysis::analyse_run(opts.run, run, Options::default());
    let its = model::iterations(run);
    let it = crate::text_timeline::pick_iteration(&its, &windows, opts.iteration, opts.run)?;
    let ws: Vec<&Window> = windows.iter().filter(|w| w.iteration == it.number).collect();
    Ok(draw(run, it, &ws))
}

fn track_label(run: &Run, it: &Iteration, t: Track) -> (String, &'static str) {
    match t {
        Track::Vcpu(k) => (it.vcpu_label(run, k), "vcpu"),
        Track::Device(d) => (
            format!("device {}", run.meta.devices().get(d as usize).map_or_else(|| d.to_string(), |s| s.to_string())),
            "device",
        ),
        Track::Iommu => ("IOMMU (inval. queue)".into(), "iommu"),
        Track::Iterations => ("iteration".into(), "iterations"),
    }
}

/// `12.5 µs` / `3.20 ms`, in the unit the axis uses.
fn fmt_t(ns: f64, ms: bool) -> String {
    let ns = if ns.abs() < 0.5 { 0.0 } else { ns };
    if ms {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.0} µs", ns / 1e3)
    }
}

/// Greedy label placement: a label goes in the first of `lanes` rows
/// where it does not overlap the previous one; dropped if none is free
/// (its mark keeps a tooltip).
struct Lanes {
    ends: Vec<f64>,
    taken: Vec<Vec<(f64, f64)>>,
}

impl Lanes {
    fn new(n: usize) -> Lanes {
        Lanes { ends: vec![f64::MIN; n], taken: vec![Vec::new(); n] }
    }
    /// A lane where `[x, x + width)` is free, which it then takes.
    fn place(&mut self, x: f64, width: f64) -> Option<usize> {
        let lane = (0..self.ends.len()).find(|&l| {
            self.ends[l] + 4.0 <= x && self.taken[l].iter().all(|&(a, b)| x + width + 4.0 <= a || b + 4.0 <= x)
        })?;
        self.ends[lane] = x + width;
        self.taken[lane].push((x, x + width));
        Some(lane)
    }
    /// Starts a new left-to-right pass; what is taken stays taken.
    fn rewind(&mut self) {
        self.ends.iter_mut().for_each(|e| *e = f64::MIN);
    }
}

/// Approximate width of 10-px sans text.
fn text_w(s: &str, px: f64) -> f64 {
    s.chars().count() as f64 * px * 0.56
}

fn draw(run: &Run, it: &Iteration, windows: &[&Window]) -> String {
    let stale_vcpu = timeline::stale_vcpu_accesses(windows);
    let (slices, marks) = timeline::build(&it.events, &|e| e.ns, &stale_vcpu);
    let mut tracks: BTreeSet<Track> = (0..run.meta.vcpus).map(Track::Vcpu).collect();
    tracks.extend((0..run.meta.devices().len() as u64).map(Track::Device));
    if !run.meta.devices().is_empty() {
        tracks.insert(Track::Iommu);
    }
    for t in slices.iter().map(|s| s.track).chain(marks.iter().map(|m| m.track)) {
        if t != Track::Iterations {
            tracks.insert(t);
        }
    }
    let tracks: Vec<Track> = tracks.into_iter().collect();
    // What is drawn: the test's body, not the set-up before it (often
    // nine tenths of an iteration) nor the teardown after it.
    let body0 = it.body_start_ns();
    let body_end = it
        .events
        .iter()
        .rev()
        .find(|e| (e.guest() && e.is(Kind::MmSwitch) && e.rec.a == 0) || (e.device() && e.rec.unit != UNIT_IOMMU))
        .map_or(it.end_ns, |e| e.ns)
        .max(body0 + 1);
    let win_end =
        windows.iter().map(|w| w.pte_change.ns + w.window_ns).filter(|&e| e <= body_end + (body_end - body0) / 4);
    let t1_raw = win_end.fold(body_end, u64::max);
    let margin = ((t1_raw - body0) as f64 * 0.02).max(1.0);
    let (t0, t1) = ((body0 as f64 - margin).max(0.0), t1_raw as f64 + margin);
    let span = (t1 - t0).max(1.0);
    let pw = W - LEFT - RIGHT;
    let x = |ns: u64| LEFT + ((ns as f64 - t0) / span * pw).clamp(-2.0, pw + 2.0);
    let visible = |ns: u64| (ns as f64) >= t0 && (ns as f64) <= t1;
    let track_h = TRACK_H + 22.0; // room for a row of labels under each track
    let top = 92.0;
    let win_top = top + tracks.len() as f64 * track_h + 34.0;
    let legend_top = win_top + windows.len().max(1) as f64 * ROW_H + 30.0;
    let h = legend_top + 4.0 * 20.0 + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">
<defs><pattern id="open" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="3" height="6" fill="#d03030"/></pattern></defs>
<rect x="0" y="0" width="{W}" height="{h}" fill="white"/>"##
    );
    let m = &run.meta;
    let _ = writeln!(
        s,
        r#"<text x="12" y="22" font-size="15" font-weight="bold">{}</text>"#,
        esc(&format!("{} — policy {} — iteration {}", m.test, m.policy, it.number))
    );
    let ms_axis = span >= 2e6;
    let _ = writeln!(
        s,
        r##"<text x="12" y="40" fill="#444">{}</text>"##,
        esc(&format!(
            "tlb={} iotlb={} seed={}; {} events; {} staleness window(s){}",
            m.tlb,
            m.iotlb,
            m.seed,
            it.events.len(),
            windows.len(),
            if it.complete { "" } else { "; the iteration did not finish" },
        ))
    );
    let _ = writeln!(
        s,
        r##"<text x="12" y="56" fill="#444">{}</text>"##,
        esc(&format!(
            "time from the first thread's start; set-up (0–{}) and teardown not drawn",
            fmt_t(body0 as f64, true)
        ))
    );
    // Time axis, relative to the body's start.
    let step = nice_step(span / 10.0);
    let axis_y = top - 14.0;
    let _ = writeln!(
        s,
        r##"<g class="axis"><line x1="{LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#888"/>"##,
        W - RIGHT
    );
    let first_tick = ((t0 - body0 as f64) / step).ceil() * step;
    let mut t = first_tick;
    while body0 as f64 + t <= t1 {
        let xx = LEFT + (body0 as f64 + t - t0) / span * pw;
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{}" x2="{xx:.1}" y2="{}" stroke="#eee"/><text x="{xx:.1}" y="{}" text-anchor="middle" fill="#666">{}</text>"##,
            axis_y,
            legend_top - 20.0,
            axis_y - 4.0,
            esc(&fmt_t(t, ms_axis))
        );
        t += step;
    }
    let _ = writeln!(s, "</g>");
    for (i, &tr) in tracks.iter().enumerate() {
        let y = top + i as f64 * track_h;
        let (label, class) = track_label(run, it, tr);
        let _ = writeln!(s, r#"<g class="track {class}" data-track="{}">"#, esc(&label));
        let fill = if i % 2 == 0 { "#f7f7f7" } else { "#fdfdfd" };
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{y}" width="{pw}" height="{}" fill="{fill}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end" font-weight="bold">{}</text>"##,
            track_h - 4.0,
            LEFT - 8.0,
            y + TRACK_H / 2.0,
            esc(&label)
        );
        for sl in slices.iter().filter(|sl| sl.track == tr && sl.end_ns as f64 >= t0 && sl.start_ns as f64 <= t1) {
            let (dy, hh, color) = match sl.cat {
                "op" => (2.0, 38.0, "#e3e3e3"),
                "ptl" => (8.0, 12.0, "#6baed6"),
                "flush" => (22.0, 7.0, "#74c476"),
                "notifier" => (31.0, 7.0, "#fd8d3c"),
                "inv" => (8.0, 20.0, "#fd8d3c"),
                _ => (2.0, 38.0, "#eeeeee"),
            };
            let (x0, x1) = (x(sl.start_ns), x(sl.end_ns));
            let _ = writeln!(
                s,
                r#"<rect class="slice {}" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{hh}" fill="{color}" stroke="{}" stroke-width="0.5"><title>{}</title></rect>"#,
                sl.cat,
                y + dy,
                (x1 - x0).max(1.0),
                if sl.closed { "#555" } else { "#d03030" },
                esc(&format!(
                    "{} ({}, {}{})",
                    sl.name,
                    us(sl.start_ns.saturating_sub(body0)),
                    us(sl.end_ns - sl.start_ns),
                    if sl.closed { "" } else { ", never ended" }
                ))
            );
        }
        let mut lanes = Lanes::new(2);
        let label = |s: &mut String, lanes: &mut Lanes, x0: f64, text: &str, class: &str, color: &str| {
            let w = text_w(text, 10.0);
            let lx = x0.min(W - RIGHT - w).max(LEFT);
            if let Some(lane) = lanes.place(lx, w) {
                let ly = y + TRACK_H + 4.0 + lane as f64 * 11.0;
                let _ = writeln!(
                    s,
                    r##"<text class="label {class}" x="{lx:.1}" y="{ly:.1}" fill="{color}" font-size="10">{}</text>"##,
                    esc(text)
                );
            }
        };
        for mk in marks.iter().filter(|mk| mk.track == tr && visible(mk.ns)) {
            let xx = x(mk.ns);
            let tip = esc(&format!("{} @ {} (seq {})", mk.name, us(mk.ns.saturating_sub(body0)), mk.seq));
            let el = match mk.cat {
                "stale" => format!(
                    r##"<path class="mark stale" d="M{xx:.1},{:.1} l5,9 l-10,0 z" fill="#d03030"><title>{tip}</title></path>"##,
                    y + 22.0
                ),
                "pte" => format!(
                    r##"<path class="mark pte" d="M{xx:.1},{:.1} l4,5 l-4,5 l-4,-5 z" fill="#7b3294"><title>{tip}</title></path>"##,
                    y + 1.0
                ),
                "access" | "device" => format!(
                    r##"<circle class="mark access" cx="{xx:.1}" cy="{:.1}" r="2.5" fill="#2171b5"><title>{tip}</title></circle>"##,
                    y + 27.0
                ),
                "ipi" => format!(
                    r##"<line class="mark ipi" x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#31a354"><title>{tip}</title></line>"##,
                    y + 20.0,
                    y + 30.0
                ),
                "shadow" | "iotlb" => format!(
                    r##"<line class="mark cache" x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#999"><title>{tip}</title></line>"##,
                    y + 36.0,
                    y + 41.0
                ),
                _ => continue,
            };
            s += &el;
            s.push('\n');
        }
        // Labels under the track, placed so they never overlap: first the
        // stale accesses and walks (what the picture is for), then the
        // invalidations, then the operations; what does not fit keeps its
        // tooltip.
        let mut texts: Vec<(u8, f64, String, &str, &str)> = Vec::new();
        for mk in marks.iter().filter(|mk| mk.track == tr && visible(mk.ns) && mk.cat == "stale") {
            texts.push((0, x(mk.ns) - 2.0, short_mark(&mk.name), "stale", "#b01818"));
        }
        for sl in slices.iter().filter(|sl| sl.track == tr && sl.end_ns as f64 >= t0 && sl.start_ns as f64 <= t1) {
            match sl.cat {
                "inv" => texts.push((1, x(sl.start_ns), sl.name.replace("invalidate ", "inv "), "inv", "#a04000")),
                "op" => texts.push((2, x(sl.start_ns), sl.name.clone(), "op", "#555")),
                _ => {}
            }
        }
        texts.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        // Lanes take labels left to right, so place each class in x order
        // on lanes of its own priority pass.
        for pass in 0..3u8 {
            for (_, x0, text, class, color) in texts.iter().filter(|t| t.0 == pass) {
                label(&mut s, &mut lanes, *x0, text, class, color);
            }
            lanes.rewind();
        }
        let _ = writeln!(s, "</g>");
    }
    // Windows.
    let _ = writeln!(
        s,
        r#"<text x="12" y="{:.1}" font-weight="bold">Staleness windows (PTE change → {} invalidation)</text>"#,
        win_top - 10.0,
        if run.meta.devices().is_empty() { "primary" } else { "secondary" }
    );
    if windows.is_empty() {
        let _ =
            writeln!(s, r##"<text x="{LEFT}" y="{:.1}" fill="#666">none in this iteration</text>"##, win_top + 14.0);
    }
    for (i, w) in windows.iter().enumerate() {
        let y = win_top + i as f64 * ROW_H;
        let _ = writeln!(s, r#"<g class="window" data-va="{}">"#, esc(&w.va_hex));
        let who = w.thread.clone().unwrap_or_else(|| format!("vCPU {}", w.vcpu));
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 14.0,
            esc(&format!("{} {} ({who})", w.va_hex, w.change))
        );
        let t0w = w.pte_change.ns;
        let split = t0w + w.under_ptl_ns;
        let t1w = t0w + w.window_ns;
        let tip = esc(&format!(
            "{} {} by {who}: window {}, under PTL {} ({} events), after release {} ({} events){}; stale accesses after release: {}{}",
            w.va_hex,
            w.change,
            us(w.window_ns),
            us(w.under_ptl_ns),
            w.under_ptl_events,
            us(w.after_release_ns),
            w.after_release_events,
            if w.open { ", OPEN until the iteration ended" } else { "" },
            w.stale_accesses_after_release,
            if w.harmless_stale_accesses > 0 {
                format!(" (+{} harmless, before the copy)", w.harmless_stale_accesses)
            } else {
                String::new()
            }
        ));
        let _ = writeln!(
            s,
            r##"<rect class="under-ptl" x="{:.1}" y="{:.1}" width="{:.1}" height="14" fill="#f0a030"><title>{tip}</title></rect>"##,
            x(t0w),
            y + 3.0,
            (x(split) - x(t0w)).max(1.0)
        );
        if w.after_release_ns > 0 {
            let fill = if w.open { "url(#open)" } else { "#d03030" };
            let _ = writeln!(
                s,
                r##"<rect class="after-release" x="{:.1}" y="{:.1}" width="{:.1}" height="14" fill="{fill}" stroke="#d03030" stroke-width="0.5"><title>{tip}</title></rect>"##,
                x(split),
                y + 3.0,
                (x(t1w) - x(split)).max(1.0)
            );
        }
        // The invalidation that did not drop the stale entry, on the row.
        if let Some(f) = &w.failed_invalidation {
            let fx = x(f.ns);
            let _ = writeln!(
                s,
                r##"<line class="failed-invalidation" x1="{fx:.1}" y1="{:.1}" x2="{fx:.1}" y2="{:.1}" stroke="#fd8d3c" stroke-width="2" stroke-dasharray="3,2"><title>{}</title></line>"##,
                y,
                y + 20.0,
                esc(&format!("invalidation at {} did not drop the stale entry", us(f.ns.saturating_sub(body0))))
            );
            let _ = writeln!(
                s,
                r##"<text class="label failed" x="{:.1}" y="{:.1}" fill="#a04000" font-size="9" paint-order="stroke" stroke="white" stroke-width="3">invalidation did not drop it</text>"##,
                (fx + 3.0).min(W - RIGHT - text_w("invalidation did not drop it", 9.0)),
                y + 13.0
            );
        }
        for a in &w.stale_accesses {
            let (fill, note) = if a.harmless { ("#888", " — before the copy: harmless") } else { ("black", "") };
            let _ = writeln!(
                s,
                r#"<path class="mark stale" d="M{:.1},{:.1} l4,7 l-8,0 z" fill="{fill}"><title>{}</title></path>"#,
                x(a.ns),
                y + 17.0,
                esc(&format!(
                    "stale {} by {} @ {}{}{note}",
                    a.op,
                    a.by,
                    us(a.ns.saturating_sub(body0)),
                    if a.after_release { " (after PTL release)" } else { "" }
                ))
            );
        }
        let mut label = format!("{}{}", us(w.window_ns), if w.open { " open" } else { "" });
        if w.failed_invalidation.is_some() {
            label += "; an invalidation did not stop it";
        }
        // Right of the bar, else left of it, else over it.
        let lw = text_w(&label, 10.0);
        let lx = if x(t1w) + 4.0 + lw <= W - RIGHT {
            x(t1w) + 4.0
        } else if x(t0w) - 4.0 - lw >= LEFT {
            x(t0w) - 4.0 - lw
        } else {
            W - RIGHT - lw
        };
        let _ = writeln!(
            s,
            r##"<text x="{lx:.1}" y="{:.1}" fill="#222" font-size="10" paint-order="stroke" stroke="white" stroke-width="3">{}</text>"##,
            y + 14.0,
            esc(&label)
        );
        let _ = writeln!(s, "</g>");
    }
    legend(&mut s, legend_top);
    let _ = writeln!(s, "</svg>");
    s
}

/// `STALE dma_load 0x…` → `stale dma_load`; `STALE WALK 0x…` → `stale walk`.
fn short_mark(name: &str) -> String {
    let n = name.trim_start_matches("STALE ");
    let op = n.split_whitespace().next().unwrap_or("access");
    if name.starts_with("STALE WALK") {
        "stale walk".into()
    } else if op == "iotlb" {
        "stale IOTLB hit".into()
    } else {
        format!("stale {op}")
    }
}

/// A legend entry for every mark and bar the picture uses.
fn legend(s: &mut String, top: f64) {
    enum G {
        Rect(&'static str),
        Hatch,
        Diamond,
        Dot,
        Tri(&'static str),
        Tick(&'static str),
        Dash,
    }
    let items: [(G, &str); 15] = [
        (G::Rect("#e3e3e3"), "mm operation"),
        (G::Rect("#6baed6"), "PTL held"),
        (G::Rect("#74c476"), "primary TLB flush"),
        (G::Rect("#fd8d3c"), "notifier call / IOMMU invalidation"),
        (G::Rect("#f0a030"), "window under the PTL"),
        (G::Rect("#d03030"), "window after the PTL release"),
        (G::Hatch, "window never closed (open)"),
        (G::Diamond, "PTE change"),
        (G::Dot, "access (vCPU or device)"),
        (G::Tri("#d03030"), "stale access / stale walk"),
        (G::Tri("black"), "stale access charged to this window"),
        (G::Tri("#888"), "stale, before the copy: harmless"),
        (G::Tick("#31a354"), "shootdown IPI sent / received / acked"),
        (G::Tick("#999"), "TLB / IOTLB fill, flush, eviction"),
        (G::Dash, "invalidation that did not drop the entry"),
    ];
    let _ = writeln!(s, r#"<g class="legend">"#);
    let per_row = 4;
    let col_w = (W - LEFT - RIGHT) / per_row as f64;
    for (i, (g, label)) in items.iter().enumerate() {
        let lx = LEFT + (i % per_row) as f64 * col_w;
        let ly = top + (i / per_row) as f64 * 20.0;
        let glyph = match g {
            G::Rect(c) => format!(
                r##"<rect x="{lx:.1}" y="{ly:.1}" width="14" height="10" fill="{c}" stroke="#555" stroke-width="0.5"/>"##
            ),
            G::Hatch => format!(
                r##"<rect x="{lx:.1}" y="{ly:.1}" width="14" height="10" fill="url(#open)" stroke="#d03030" stroke-width="0.5"/>"##
            ),
            G::Diamond => format!(r##"<path d="M{:.1},{ly:.1} l4,5 l-4,5 l-4,-5 z" fill="#7b3294"/>"##, lx + 7.0),
            G::Dot => format!(r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="#2171b5"/>"##, lx + 7.0, ly + 5.0),
            G::Tri(c) => format!(r##"<path d="M{:.1},{ly:.1} l5,9 l-10,0 z" fill="{c}"/>"##, lx + 7.0),
            G::Tick(c) => format!(
                r##"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="1.5"/>"##,
                lx + 7.0,
                lx + 7.0,
                ly + 10.0
            ),
            G::Dash => format!(
                r##"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{:.1}" stroke="#fd8d3c" stroke-width="2" stroke-dasharray="3,2"/>"##,
                lx + 7.0,
                lx + 7.0,
                ly + 10.0
            ),
        };
        let _ = writeln!(s, r#"{glyph}<text x="{:.1}" y="{:.1}">{}</text>"#, lx + 18.0, ly + 9.0, esc(label));
    }
    let _ = writeln!(s, "</g>");
}

/// 1, 2 or 5 × 10^k, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = raw.max(1.0);
    let p = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= raw {
            return m * p;
        }
    }
    10.0 * p
}
