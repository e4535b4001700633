//! A timeline picture of one iteration, as a self-contained SVG: one track
//! per vCPU and per device thread (and the IOMMU's invalidation queue),
//! time left to right, then one row per staleness window with its
//! under-PTL part (amber) and after-release part (red), and every stale
//! access marked. Meant for papers and mailing-list posts: no scripts, no
//! external fonts, every element has a `<title>` tooltip.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write;

use crate::analysis::{self, Options, Window};
use crate::format::{Parsed, Run};
use crate::model::{self, Iteration, Track};
use crate::timeline;

#[derive(Clone, Copy, Debug, Default)]
pub struct SvgOptions {
    /// Run index in the file (as `vmm trace report` numbers them).
    pub run: usize,
    /// Iteration number; default: the first with an after-release window,
    /// else the first with any window, else the first.
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
    let it = match opts.iteration {
        Some(n) => its.iter().find(|i| i.number == n).ok_or_else(|| {
            let have: Vec<String> = its.iter().take(10).map(|i| i.number.to_string()).collect();
            format!(
                "run {} has no iteration {n} in the trace (traced: {}{})",
                opts.run,
                have.join(", "),
                if its.len() > 10 { ", …" } else { "" }
            )
        })?,
        None => {
            let pick = |f: &dyn Fn(&Window) -> bool| windows.iter().find(|w| f(w)).map(|w| w.iteration);
            let n = pick(&|w| w.after_release_ns > 0).or_else(|| pick(&|_| true));
            match n {
                Some(n) => its.iter().find(|i| i.number == n).unwrap_or(&its[0]),
                None => its.first().ok_or("the run has no traced iterations")?,
            }
        }
    };
    let ws: Vec<&Window> = windows.iter().filter(|w| w.iteration == it.number).collect();
    Ok(draw(run, it, &ws))
}

fn track_label(run: &Run, t: Track) -> (String, &'static str) {
    match t {
        Track::Vcpu(k) => (format!("vCPU {k}"), "vcpu"),
        Track::Device(d) => (
            format!("device {}", run.meta.devices().get(d as usize).map_or_else(|| d.to_string(), |s| s.to_string())),
            "device",
        ),
        Track::Iommu => ("IOMMU (inval. queue)".into(), "iommu"),
        Track::Iterations => ("iteration".into(), "iterations"),
    }
}

fn draw(run: &Run, it: &Iteration, windows: &[&Window]) -> String {
    let stale_vcpu: HashSet<u64> = windows
        .iter()
        .flat_map(|w| &w.stale_accesses)
        .filter(|s| s.source == crate::format::ThreadKind::Vcpu)
        .map(|s| s.seq)
        .collect();
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
    let span = it.end_ns.max(1) as f64;
    let pw = W - LEFT - RIGHT;
    let x = |ns: u64| LEFT + ns as f64 / span * pw;
    let top = 78.0;
    let win_top = top + tracks.len() as f64 * TRACK_H + 34.0;
    let legend_top = win_top + windows.len().max(1) as f64 * ROW_H + 30.0;
    let h = legend_top + 40.0;
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
    let _ = writeln!(
        s,
        r##"<text x="12" y="40" fill="#444">{}</text>"##,
        esc(&format!(
            "tlb={} iotlb={} seed={}; {} events over {}{}; {} staleness window(s)",
            m.tlb,
            m.iotlb,
            m.seed,
            it.events.len(),
            us(it.end_ns),
            if it.complete { "" } else { " (iteration did not finish)" },
            windows.len()
        ))
    );
    // Time axis.
    let step = nice_step(span / 10.0);
    let axis_y = top - 14.0;
    let _ = writeln!(
        s,
        r##"<g class="axis"><line x1="{LEFT}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#888"/>"##,
        W - RIGHT
    );
    let mut t = 0.0;
    while t <= span {
        let xx = LEFT + t / span * pw;
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{}" x2="{xx:.1}" y2="{}" stroke="#eee"/><text x="{xx:.1}" y="{}" text-anchor="middle" fill="#666">{}</text>"##,
            axis_y,
            legend_top - 20.0,
            axis_y - 4.0,
            esc(&format!("{:.0} µs", t / 1e3))
        );
        t += step;
    }
    let _ = writeln!(s, "</g>");
    for (i, &tr) in tracks.iter().enumerate() {
        let y = top + i as f64 * TRACK_H;
        let (label, class) = track_label(run, tr);
        let _ = writeln!(s, r#"<g class="track {class}" data-track="{}">"#, esc(&label));
        let fill = if i % 2 == 0 { "#f7f7f7" } else { "#fdfdfd" };
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{y}" width="{pw}" height="{}" fill="{fill}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end" font-weight="bold">{}</text>"##,
            TRACK_H - 4.0,
            LEFT - 8.0,
            y + TRACK_H / 2.0,
            esc(&label)
        );
        for sl in slices.iter().filter(|sl| sl.track == tr) {
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
                    us(sl.start_ns),
                    us(sl.end_ns - sl.start_ns),
                    if sl.closed { "" } else { ", never ended" }
                ))
            );
            if sl.cat == "op" && x1 - x0 > 60.0 {
                let _ = writeln!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" fill="#555" font-size="9">{}</text>"##,
                    x0 + 2.0,
                    y + 38.0,
                    esc(&sl.name)
                );
            }
        }
        for mk in marks.iter().filter(|mk| mk.track == tr) {
            let xx = x(mk.ns);
            let tip = esc(&format!("{} @ {} (seq {})", mk.name, us(mk.ns), mk.seq));
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
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 8.0,
            y + 14.0,
            esc(&format!("{} {} (vCPU {})", w.va_hex, w.change, w.vcpu))
        );
        let t0 = w.pte_change.ns;
        let split = t0 + w.under_ptl_ns;
        let t1 = t0 + w.window_ns;
        let tip = esc(&format!(
            "{} {}: window {}, under PTL {} ({} events), after release {} ({} events){}; stale accesses after release: {}",
            w.va_hex,
            w.change,
            us(w.window_ns),
            us(w.under_ptl_ns),
            w.under_ptl_events,
            us(w.after_release_ns),
            w.after_release_events,
            if w.open { ", OPEN until the iteration ended" } else { "" },
            w.stale_accesses_after_release
        ));
        let _ = writeln!(
            s,
            r##"<rect class="under-ptl" x="{:.1}" y="{:.1}" width="{:.1}" height="14" fill="#f0a030"><title>{tip}</title></rect>"##,
            x(t0),
            y + 3.0,
            (x(split) - x(t0)).max(1.0)
        );
        if w.after_release_ns > 0 {
            let fill = if w.open { "url(#open)" } else { "#d03030" };
            let _ = writeln!(
                s,
                r##"<rect class="after-release" x="{:.1}" y="{:.1}" width="{:.1}" height="14" fill="{fill}" stroke="#d03030" stroke-width="0.5"><title>{tip}</title></rect>"##,
                x(split),
                y + 3.0,
                (x(t1) - x(split)).max(1.0)
            );
        }
        for a in &w.stale_accesses {
            let _ = writeln!(
                s,
                r#"<path class="mark stale" d="M{:.1},{:.1} l4,7 l-8,0 z" fill="black"><title>{}</title></path>"#,
                x(a.ns),
                y + 17.0,
                esc(&format!(
                    "stale {} by {} @ {}{}",
                    a.op,
                    a.by,
                    us(a.ns),
                    if a.after_release { " (after PTL release)" } else { "" }
                ))
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="#222" font-size="10" paint-order="stroke" stroke="white" stroke-width="3">{}</text>"##,
            (x(t1) + 4.0).min(W - RIGHT - 110.0),
            y + 14.0,
            esc(&format!("{}{}", us(w.window_ns), if w.open { " open" } else { "" }))
        );
        let _ = writeln!(s, "</g>");
    }
    // Legend.
    let items = [
        ("#e3e3e3", "mm operation"),
        ("#6baed6", "PTL held"),
        ("#74c476", "primary flush"),
        ("#fd8d3c", "notifier / IOMMU invalidation"),
        ("#f0a030", "window under PTL"),
        ("#d03030", "window after PTL release"),
    ];
    let mut lx = LEFT;
    let _ = writeln!(s, r#"<g class="legend">"#);
    for (c, label) in items {
        let _ = writeln!(
            s,
            r##"<rect x="{lx:.1}" y="{legend_top:.1}" width="14" height="10" fill="{c}" stroke="#555" stroke-width="0.5"/><text x="{:.1}" y="{:.1}">{}</text>"##,
            lx + 18.0,
            legend_top + 9.0,
            esc(label)
        );
        lx += 30.0 + label.len() as f64 * 6.2;
    }
    let _ = writeln!(
        s,
        r##"<path d="M{lx:.1},{legend_top:.1} l5,9 l-10,0 z" fill="#d03030"/><text x="{:.1}" y="{:.1}">stale access</text>"##,
        lx + 10.0,
        legend_top + 9.0
    );
    let _ = writeln!(s, "</g>\n</svg>");
    s
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
