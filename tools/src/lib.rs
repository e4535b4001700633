//! shootdown's trace tools, as a library used by `vmm trace …`:
//!
//! * [`format`]: the trace file (a versioned header, then frames: run and
//!   boot metadata as JSON, records as raw 48-byte `abi::trace` records),
//!   its writer and a reader that keeps whatever part of a truncated or
//!   damaged file is readable;
//! * [`model`]: records grouped into iterations, in sequence order, with
//!   TSC timestamps converted to nanoseconds;
//! * [`analysis`]: the staleness windows (PTE change → invalidation, split
//!   at the PTL release; stale accesses) and their distributions;
//! * [`perfetto`]: Chrome/Perfetto trace-event JSON;
//! * [`svg`]: a timeline picture of one iteration.

pub mod analysis;
pub mod format;
pub mod model;
pub mod perfetto;
pub mod svg;
pub mod text_timeline;
pub mod timeline;

#[cfg(test)]
mod robustness {
    use abi::trace::{source, Kind, Record};

    use crate::format::{parse, BootEnd, BootMeta, RunMeta, ThreadMeta, Writer};

    /// A small but complete trace: set-up, a zap with its PTL and flush,
    /// a device access, an invalidation.
    fn sample() -> Vec<u8> {
        let mut w = Writer::new(Vec::new()).unwrap();
        let threads = vec![
            ThreadMeta { name: "P0".into(), kind: crate::format::ThreadKind::Vcpu },
            ThreadMeta { name: "D0".into(), kind: crate::format::ThreadKind::Device },
        ];
        w.run(&RunMeta { test: "t".into(), policy: "p".into(), vcpus: 2, threads, ..Default::default() }).unwrap();
        w.boot(&BootMeta { tsc_khz: 2_000_000, vcpus: 2, ..Default::default() }).unwrap();
        let x = 0x80_0000_3000u64;
        let evs: &[(u8, u8, Kind, u64, u64, u64)] = &[
            (source::GUEST, 0, Kind::IterBegin, 0, 0, 0),
            (source::GUEST, 0, Kind::MmSwitch, 0, 0x300_0000, 0),
            (source::VMM, 1, Kind::ShadowFill, x, 0x4000_0007, 0x4000_0000),
            (source::DEVICE, 0, Kind::IotlbFill, x, 0x4000_0007, 0x4000_0000),
            (source::GUEST, 0, Kind::OpBegin, x, 36, 0),
            (source::GUEST, 0, Kind::PtlAcquire, x & !0x1f_ffff, 0x300_1000, 0),
            (source::GUEST, 0, Kind::PteChange, x, 0x4000_0007, 0),
            (source::GUEST, 0, Kind::FlushBegin, x, x + 4096, 0),
            (source::VMM, 0, Kind::ShadowFlush, x, x + 4096, 0),
            (source::GUEST, 0, Kind::FlushEnd, x, x + 4096, 1),
            (source::GUEST, 0, Kind::PtlRelease, x & !0x1f_ffff, 0x300_1000, 0),
            (source::GUEST, 1, Kind::Access, x, 1, 0),
            (source::DEVICE, 0, Kind::DevAccess, x, 1, 0x4000_0000 | abi::trace::dev_access::STALE),
            (source::GUEST, 0, Kind::NotifierBegin, x, x + 4096, 0),
            (source::DEVICE, abi::trace::UNIT_IOMMU, Kind::InvReceived, x, x + 4096, 0),
            (source::DEVICE, abi::trace::UNIT_IOMMU, Kind::InvCompleted, x, x + 4096, 1),
            (source::GUEST, 0, Kind::NotifierEnd, x, x + 4096, 0),
            (source::GUEST, 0, Kind::OpEnd, x, 36, 0),
            (source::GUEST, 0, Kind::MmSwitch, 0, 0, 0),
            (source::GUEST, 0, Kind::IterEnd, 0, 0, 0),
        ];
        let recs: Vec<Record> = evs
            .iter()
            .enumerate()
            .map(|(i, &(src, unit, kind, va, a, b))| Record {
                seq: i as u64 + 1,
                tsc: 10_000 * (i as u64 + 1),
                kind: kind as u16,
                source: src,
                unit,
                iteration: 0,
                va,
                a,
                b,
            })
            .collect();
        w.records(&recs).unwrap();
        w.boot_end(&BootEnd { end: "exit 0".into(), dropped: vec![0, 0], blocked: vec![0, 0], records: 20 }).unwrap();
        w.into_inner()
    }

    fn everything(bytes: &[u8]) {
        let p = parse(bytes);
        let r = crate::analysis::analyse(&p, crate::analysis::Options { all_phases: true });
        let _ = crate::analysis::render_text(&r, "x");
        let _ = crate::analysis::render_dump(&p, None, None);
        let _ = crate::perfetto::export(&p);
        for run in 0..p.trace.runs.len() {
            let _ = crate::svg::render(&p, crate::svg::SvgOptions { run, iteration: None });
            let opts = crate::text_timeline::TimelineOptions { run, ..Default::default() };
            let _ = crate::text_timeline::render(&p, opts);
        }
    }

    #[test]
    fn sample_gives_one_window_with_a_stale_access_each() {
        let p = parse(&sample());
        assert!(p.error.is_none());
        let r = crate::analysis::analyse(&p, Default::default());
        assert_eq!(r.windows.len(), 1);
        let w = &r.windows[0];
        assert_eq!(w.stale_device_accesses_after_release, 1);
        assert_eq!(w.stale_vcpu_accesses_after_release, 1);
        assert!(w.primary_flush[1].cached && w.primary_flush[1].flushed.is_none());
        let svg = crate::svg::render(&p, Default::default()).unwrap();
        assert_eq!(svg.matches(r#"class="track vcpu""#).count(), 2);
        assert_eq!(svg.matches(r#"class="track device""#).count(), 1);
    }

    /// The SVG: set-up cut away, a legend for every mark, stale accesses
    /// labelled (not only in tooltips), labels that do not overlap.
    #[test]
    fn svg_legend_labels_and_no_setup() {
        let svg = crate::svg::render(&parse(&sample()), Default::default()).unwrap();
        assert!(svg.contains("set-up (0–"), "the set-up is said to be cut");
        for legend in [
            "mm operation",
            "PTL held",
            "primary TLB flush",
            "notifier call / IOMMU invalidation",
            "window under the PTL",
            "window after the PTL release",
            "window never closed (open)",
            "PTE change",
            "access (vCPU or device)",
            "stale access / stale walk",
            "stale, before the copy: harmless",
            "shootdown IPI sent / received / acked",
            "TLB / IOTLB fill, flush, eviction",
            "invalidation that did not drop the entry",
        ] {
            assert!(svg.contains(&format!(">{}<", legend)), "no legend entry `{legend}`");
        }
        // Labels: (x, y, text) of every `label` text; none overlaps another on its line.
        let labels: Vec<(f64, f64, String)> = svg
            .lines()
            .filter(|l| l.contains(r#"<text class="label"#))
            .map(|l| {
                let num =
                    |k: &str| l.split(&format!(" {k}=\"")).nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
                let text = l.split('>').nth(1).unwrap().split('<').next().unwrap().to_string();
                (num("x"), num("y"), text)
            })
            .collect();
        assert!(labels.iter().any(|l| l.2.starts_with("stale")), "{labels:?}");
        for (i, a) in labels.iter().enumerate() {
            for b in &labels[i + 1..] {
                let wa = a.2.chars().count() as f64 * 5.6;
                let wb = b.2.chars().count() as f64 * 5.6;
                assert!(a.1 != b.1 || a.0 + wa <= b.0 || b.0 + wb <= a.0, "labels overlap: {a:?} {b:?}");
            }
        }
    }

    /// Perfetto: stale accesses and PTE changes are slices too (instants
    /// get dropped by some trace engines), joined by flow arrows.
    #[test]
    fn perfetto_slices_and_flows_for_stale_accesses() {
        let v = crate::perfetto::export(&parse(&sample()));
        let ev = v["traceEvents"].as_array().unwrap();
        let count = |ph: &str, cat: &str| ev.iter().filter(|e| e["ph"] == ph && e["cat"] == cat).count();
        assert_eq!(count("X", "stale"), 2, "a vCPU and a device stale access");
        assert!(count("X", "pte") >= 1);
        assert_eq!((count("s", "stale"), count("f", "stale")), (2, 2));
        for f in ev.iter().filter(|e| e["ph"] == "f") {
            assert_eq!(f["bp"], "e");
            let start = ev.iter().find(|e| e["ph"] == "s" && e["id"] == f["id"]).unwrap();
            // From the PTE change's slice to the stale access's.
            let at = |e: &serde_json::Value, cat: &str| {
                ev.iter().any(|x| x["ph"] == "X" && x["cat"] == cat && x["ts"] == e["ts"] && x["tid"] == e["tid"])
            };
            assert!(at(start, "pte") && at(f, "stale"), "{start} → {f}");
        }
    }

    /// The text timeline: one column per thread, the kernel's words, the
    /// stale accesses marked.
    #[test]
    fn text_timeline_of_the_sample() {
        let p = parse(&sample());
        let t = crate::text_timeline::render(&p, Default::default()).unwrap();
        let header = t.lines().find(|l| l.trim_start().starts_with("µs")).unwrap();
        let at = |c: &str| header.find(c).unwrap_or_else(|| panic!("no column {c}: {header}"));
        assert!(at("vCPU 0") < at("vCPU 1") && at("vCPU 1") < at("D0") && at("D0") < at("IOMMU"), "{header}");
        for want in [
            "madvise(…003000)",
            "pte_offset_map_lock()",
            "ptep_get_and_clear(…003000)",
            "flush_tlb_mm_range(…003000)",
            "pte_unmap_unlock()",
            "!! STALE load …003000 = 1",
            "!! STALE dma_load …003000 = 1",
            "→ invalidate secondary TLB",
            "invalidate …003000..…004000",
        ] {
            assert!(t.contains(want), "no `{want}` in\n{t}");
        }
        // The column of each line is its thread's.
        let col = |needle: &str| t.lines().find(|l| l.contains(needle)).map(|l| l.find(needle).unwrap()).unwrap();
        assert!(col("!! STALE dma_load") > col("!! STALE load"));
    }

    /// Truncated and bit-flipped files never panic any stage.
    #[test]
    fn damaged_files_never_panic() {
        let good = sample();
        for n in 0..good.len() {
            everything(&good[..n]);
        }
        let mut rng = 0x1234_5678_9abc_def0u64;
        for _ in 0..1000 {
            let mut b = good.clone();
            for _ in 0..4 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let i = (rng % b.len() as u64) as usize;
                b[i] ^= (rng >> 32) as u8 | 1;
            }
            everything(&b);
        }
    }
}
