//! `vmm trace timeline`: one iteration as plain text, one column per
//! litmus thread (and the IOMMU's invalidation queue), in sequence order,
//! in the words of the kernel — the form of the traces in the
//! mailing-list threads (seed 001: `CPU0 CPU1 CPU2 CPU3` columns), so it
//! can be pasted into a reply.
//!
//! Shown: each mm operation with the Linux entry point it models, PTL
//! acquire and release, PTE changes (what was taken away), primary flushes
//! and the TLB flushes they cause on each CPU, mmu_notifier calls (named by
//! where they run), IOMMU invalidations, the named kernel points the
//! operations pass (`wp_page_copy` copy done, `inc_tlb_flush_pending`, …),
//! accesses, TLB/IOTLB fills; every stale access is marked `!!`. Set-up and
//! teardown are left out.

use std::collections::BTreeSet;

use abi::litmus::{Hook, Op, VALUE_FAULT};
use abi::trace::{dev_access, dev_op, Kind, UNIT_IOMMU};

use crate::analysis::{self, Options, Window};
use crate::format::{Parsed, Run};
use crate::model::{self, Iteration};

#[derive(Clone, Copy, Debug)]
pub struct TimelineOptions {
    pub run: usize,
    /// Default: the first iteration with an after-release window, else the first with a window.
    pub iteration: Option<u64>,
    /// Characters per column.
    pub width: usize,
}

impl Default for TimelineOptions {
    fn default() -> Self {
        TimelineOptions { run: 0, iteration: None, width: 38 }
    }
}

/// The Linux entry point an operation models.
fn op_call(op: Op, va: &str) -> String {
    match op {
        Op::Touch => format!("handle_mm_fault({va})"),
        Op::Mmap => format!("mmap({va})"),
        Op::Munmap => format!("munmap({va})"),
        Op::Mprotect => format!("mprotect({va})"),
        Op::Madvise => format!("madvise({va})"),
        Op::Cow => format!("fork: copy_present_pte({va}) wrprotect"),
        Op::Ksm => format!("ksm: try_to_merge_one_page({va})"),
        Op::Migrate => format!("migrate_pages({va})"),
        Op::Mkclean => format!("folio_mkclean({va}) + writeback"),
        Op::Reclaim => format!("shrink_folio_list({va})"),
        Op::Mremap => format!("mremap({va})"),
        Op::Alloc => format!("mmap + fault({va})"),
        other => format!("{}({va})", other.name()),
    }
}

/// Kernel points worth a line (the ones next to a PTL/PTE/flush record are
/// said by that record).
fn hook_text(h: Hook) -> Option<&'static str> {
    Some(match h {
        Hook::AfterCopy => "copy to the new page done",
        Hook::AfterCompare => "pages_identical(): compared",
        Hook::AfterMigrationEntry => "migration entry installed",
        Hook::AfterIncPending => "inc_tlb_flush_pending()",
        Hook::BeforeDecPending => "dec_tlb_flush_pending()",
        Hook::AfterInvalidateStart => "mmu_notifier_invalidate_range_start()",
        Hook::BeforeInvalidateEnd => "mmu_notifier_invalidate_range_end() {",
        Hook::BeforeFree => "free the old page",
        Hook::AfterPmdClear => "pmd_clear(): PTE table unhooked",
        Hook::BeforeFreeTables => "free_pgtables(): free the PTE table",
        Hook::AfterMkclean => "page_mkclean_one() done",
        Hook::AfterBatchAdd => "set_tlb_ubc_flush_pending()",
        Hook::BeforeBatchFlush => "try_to_unmap_flush()",
        Hook::AfterFault => "fault handled",
        Hook::AfterPageLock => "folio_lock()",
        _ => return None,
    })
}

const P: u64 = 1;
const RW: u64 = 2;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

fn va(v: u64) -> String {
    format!("{v:#x}")
}

/// What a PTE change did, in the kernel's words.
fn pte_text(old: u64, new: u64, at: &str) -> String {
    match (old & P != 0, new & P != 0) {
        (true, false) if new != 0 => format!("ptep_clear({at}): non-present entry {new:#x}"),
        (true, false) => format!("ptep_get_and_clear({at})"),
        (false, true) => {
            format!("set_pte_at({at}, pfn {:#x}{})", (new & ADDR) >> 12, if new & RW != 0 { ", rw" } else { ", ro" })
        }
        (true, true) if old & ADDR != new & ADDR => {
            format!("set_pte({at}): pfn {:#x} → {:#x}", (old & ADDR) >> 12, (new & ADDR) >> 12)
        }
        (true, true) if old & RW != 0 && new & RW == 0 => format!("ptep_set_wrprotect({at})"),
        (true, true) if old & RW == 0 && new & RW != 0 => format!("set_pte({at}): writable"),
        (true, true) => format!("set_pte({at}): {old:#x} → {new:#x}"),
        (false, false) => format!("set_pte({at}): {new:#x} (not present)"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Col {
    Thread(usize),
    /// A vCPU whose thread this iteration is not known (older traces).
    Vcpu(u64),
    Device(u64),
    Iommu,
}

/// Renders one iteration, or says why it cannot.
pub fn render(parsed: &Parsed, opts: TimelineOptions) -> Result<String, String> {
    let run = parsed.trace.runs.get(opts.run).ok_or_else(|| {
        format!("no run {} in the trace (it has {}; see `vmm trace report`)", opts.run, parsed.trace.runs.len())
    })?;
    let (_, windows) = analysis::analyse_run(opts.run, run, Options::default());
    let its = model::iterations(run);
    let it = pick_iteration(&its, &windows, opts.iteration, opts.run)?;
    let ws: Vec<&Window> = windows.iter().filter(|w| w.iteration == it.number).collect();
    Ok(draw(run, it, &ws, opts.width.max(16)))
}

pub(crate) fn pick_iteration<'a>(
    its: &'a [Iteration],
    windows: &[Window],
    want: Option<u64>,
    run: usize,
) -> Result<&'a Iteration, String> {
    match want {
        Some(n) => its.iter().find(|i| i.number == n).ok_or_else(|| {
            let have: Vec<String> = its.iter().take(10).map(|i| i.number.to_string()).collect();
            format!(
                "run {run} has no iteration {n} in the trace (traced: {}{})",
                have.join(", "),
                if its.len() > 10 { ", …" } else { "" }
            )
        }),
        None => {
            let pick = |f: &dyn Fn(&Window) -> bool| windows.iter().find(|w| f(w)).map(|w| w.iteration);
            let n = pick(&|w| w.stale_accesses_after_release > 0)
                .or_else(|| pick(&|w| w.after_release_ns > 0))
                .or_else(|| pick(&|_| true));
            match n {
                Some(n) => Ok(its.iter().find(|i| i.number == n).unwrap_or(&its[0])),
                None => its.first().ok_or_else(|| "the run has no traced iterations".to_string()),
            }
        }
    }
}

fn draw(run: &Run, it: &Iteration, windows: &[&Window], width: usize) -> String {
    let ev = &it.events;
    let stale: BTreeSet<u64> =
        windows.iter().flat_map(|w| &w.stale_accesses).filter(|s| !s.harmless).map(|s| s.seq).collect();
    let harmless: BTreeSet<u64> =
        windows.iter().flat_map(|w| &w.stale_accesses).filter(|s| s.harmless).map(|s| s.seq).collect();
    let nv = run.meta.threads.iter().filter(|t| t.kind == crate::format::ThreadKind::Vcpu).count();
    let vcpu_col = |k: u64| -> Col {
        match it.placement.get(&k) {
            Some(&t) => Col::Thread(t as usize),
            None => Col::Vcpu(k),
        }
    };
    let body_start = it.body_start_ns();
    let body_end_seq = ev
        .iter()
        .rev()
        .find(|e| e.guest() && e.is(Kind::MmSwitch) && e.rec.a == 0)
        .map_or(u64::MAX, |e| e.rec.seq)
        .max(ev.iter().rev().find(|e| e.device() && e.rec.unit != UNIT_IOMMU).map_or(0, |e| e.rec.seq));
    let body_start_seq = ev
        .iter()
        .find(|e| e.guest() && (e.is(Kind::ThreadStart) || (e.is(Kind::MmSwitch) && e.rec.a != 0)))
        .map_or(0, |e| e.rec.seq);
    // Who holds a PTL, who is inside a flush: for naming notifier calls.
    let mut in_flush: BTreeSet<u64> = BTreeSet::new();
    let mut ptl_held: BTreeSet<u64> = BTreeSet::new();
    let mut rows: Vec<(u64, Col, String)> = Vec::new();
    for e in ev {
        let r = &e.rec;
        let k = r.unit as u64;
        match e.kind {
            Some(Kind::FlushBegin) if e.guest() => {
                in_flush.insert(k);
            }
            Some(Kind::FlushEnd) if e.guest() => {
                in_flush.remove(&k);
            }
            Some(Kind::PtlAcquire) if e.guest() => {
                ptl_held.insert(k);
            }
            Some(Kind::PtlRelease) if e.guest() => {
                ptl_held.remove(&k);
            }
            _ => {}
        }
        if r.seq < body_start_seq || r.seq > body_end_seq {
            continue;
        }
        let Some(kind) = e.kind else { continue };
        let mark = |s: String| {
            if stale.contains(&r.seq) {
                format!("!! STALE {s}")
            } else if harmless.contains(&r.seq) {
                format!("{s} (stale, before the copy: harmless)")
            } else {
                s
            }
        };
        let (col, text) = if e.device() {
            let col = if r.unit == UNIT_IOMMU { Col::Iommu } else { Col::Device(k) };
            let text = match kind {
                Kind::IotlbFill => format!("[IOTLB: {} → pfn {:#x}]", va(r.va), r.b >> 12),
                Kind::DevAccess => {
                    let op = dev_op::name((r.b & dev_access::OP_MASK) >> dev_access::OP_SHIFT);
                    mark(format!("dma_{op} {} = {}", va(r.va), r.a))
                }
                Kind::DevFault => format!("dma fault {}", va(r.va)),
                Kind::DevStaleWalk => format!("!! STALE WALK {} via freed table {:#x}", va(r.va), r.a),
                Kind::IotlbStaleHit => continue,
                Kind::InvReceived if r.a == u64::MAX && r.va == 0 => "invalidate all (PASID)".into(),
                Kind::InvReceived => {
                    format!("invalidate {}..{}{}", va(r.va), va(r.a), if r.b == 1 { " (leaf)" } else { "" })
                }
                Kind::InvCompleted => format!("… done, {} IOTLB entries dropped", r.b),
                _ => continue,
            };
            (col, text)
        } else if e.vmm() {
            let text = match kind {
                Kind::ShadowFill => format!("[TLB: {} → pfn {:#x}]", va(r.va), r.b >> 12),
                Kind::ShadowFlush if r.va == 0 && r.a == 0 => continue,
                Kind::ShadowFlush => format!("[TLB flush {}]", va(r.va)),
                Kind::ShadowEvict => format!("[TLB evicts {}]", va(r.va)),
                _ => continue,
            };
            (vcpu_col(k), text)
        } else {
            let text = match kind {
                Kind::ThreadStart => "── starts ──".to_string(),
                Kind::OpBegin => {
                    Op::from_u8(r.a as u8).map_or_else(|| format!("op {}", r.a), |o| op_call(o, &va(r.va)))
                }
                Kind::OpEnd => "… returns".into(),
                Kind::PtlAcquire => "pte_offset_map_lock()".into(),
                Kind::PtlRelease => "pte_unmap_unlock()".into(),
                Kind::PteChange => pte_text(r.a, r.b, &va(r.va)),
                Kind::PmdClear => format!("pmd_clear({})", va(r.va)),
                Kind::FlushBegin => format!("flush_tlb_mm_range({})", va(r.va)),
                Kind::FlushEnd => format!("… flushed on {} other CPU(s)", r.b),
                Kind::IpiRecv => continue,
                Kind::IpiSend => continue,
                Kind::IpiAck => format!("flush IPI from vCPU {} handled", r.a),
                Kind::NotifierBegin => {
                    // Named by where it runs: the 6.6+ flush path, a
                    // `*_notify` under the PTL, else invalidate_range_end.
                    let f = if in_flush.contains(&k) {
                        "arch_invalidate_secondary_tlbs"
                    } else if ptl_held.contains(&k) {
                        "mmu_notifier_invalidate_range"
                    } else {
                        "→ invalidate secondary TLB"
                    };
                    if f.starts_with('→') {
                        format!("{f} {}..{}", va(r.va), va(r.a))
                    } else {
                        format!("{f}({}..{})", va(r.va), va(r.a))
                    }
                }
                Kind::NotifierEnd => "… secondary TLB invalidated".into(),
                Kind::Hook => match Hook::from_u8(r.a as u8).and_then(hook_text) {
                    Some(t) => t.to_string(),
                    None => continue,
                },
                Kind::PageFree => format!("page {:#x} freed", r.a >> 12),
                Kind::TableFree => format!("PTE table {:#x} freed", r.a),
                Kind::Access => {
                    let op = match r.b {
                        0 => "load",
                        1 => "store",
                        _ => "rmw",
                    };
                    let v = if r.a == VALUE_FAULT { "fault".to_string() } else { r.a.to_string() };
                    mark(format!("{op} {} = {v}", va(r.va)))
                }
                _ => continue,
            };
            (vcpu_col(k), text)
        };
        rows.push((e.ns.saturating_sub(body_start), col, text));
    }
    // Addresses: within one iteration the locations share a 2 MiB window
    // (pinned ones aside), so the low 24 bits name them; printed as
    // `…f5e000` when that is unambiguous, with the full VAs listed once.
    let mut vas: BTreeSet<u64> = BTreeSet::new();
    for e in ev.iter().filter(|e| e.rec.seq >= body_start_seq && e.rec.seq <= body_end_seq) {
        if matches!(
            e.kind,
            Some(Kind::PteChange | Kind::OpBegin | Kind::Access | Kind::DevAccess | Kind::ShadowFill | Kind::IotlbFill)
        ) {
            vas.insert(e.rec.va & !0xfff);
        }
    }
    let lows: BTreeSet<u64> = vas.iter().map(|v| v & 0xff_ffff).collect();
    let short = lows.len() == vas.len();
    if short {
        for (_, _, text) in &mut rows {
            for v in &vas {
                for end in [*v, *v + 0x1000] {
                    *text = text.replace(&va(end), &format!("…{:06x}", end & 0xff_ffff));
                }
            }
        }
    }
    // Columns: the test's threads in order, then anything else seen.
    let mut cols: Vec<Col> = if it.placement.is_empty() { vec![] } else { (0..nv).map(Col::Thread).collect() };
    cols.extend((0..run.meta.devices().len() as u64).map(Col::Device));
    for (_, c, _) in &rows {
        if !cols.contains(c) {
            cols.push(*c);
        }
    }
    cols.sort();
    let header = |c: Col| -> String {
        match c {
            Col::Thread(t) => {
                let name = run.meta.threads.get(t).map_or_else(|| format!("thread {t}"), |m| m.name.clone());
                match it.placement.iter().find(|(_, &th)| th as usize == t) {
                    Some((k, _)) => format!("{name} (vCPU {k})"),
                    None => name,
                }
            }
            Col::Vcpu(k) => format!("vCPU {k}"),
            Col::Device(d) => {
                run.meta.devices().get(d as usize).map_or_else(|| format!("device {d}"), |s| s.to_string())
            }
            Col::Iommu => "IOMMU".into(),
        }
    };
    let m = &run.meta;
    let mut o = String::new();
    o += &format!("{} — policy {} — iteration {}\n", m.test, m.policy, it.number);
    o += &format!(
        "tlb={} iotlb={} seed={}; µs from the first thread's start (set-up, {:.1} ms, not shown); !! = stale access\n",
        m.tlb,
        m.iotlb,
        m.seed,
        body_start as f64 / 1e6
    );
    for w in windows {
        o += &format!(
            "window {:#x} {} by {}: {:.1} µs under the PTL, {:.1} µs after its release{}; {} stale access(es) after the release{}\n",
            w.va,
            w.change,
            w.thread.clone().unwrap_or_else(|| format!("vCPU {}", w.vcpu)),
            w.under_ptl_ns as f64 / 1e3,
            w.after_release_ns as f64 / 1e3,
            if w.open { ", OPEN" } else { "" },
            w.stale_accesses_after_release,
            match &w.failed_invalidation {
                Some(_) => ", an invalidation did not stop it",
                None => "",
            }
        );
    }
    if short && !vas.is_empty() {
        let list: Vec<String> = vas.iter().map(|v| format!("…{:06x} = {v:#x}", v & 0xff_ffff)).collect();
        o += &format!("addresses: {}\n", list.join(", "));
    }
    o.push('\n');
    let cell = |s: &str| format!("{s:<width$}");
    let line = |time: &str, cells: &[String]| {
        let mut l = format!("{time:>9}  ");
        l += &cells.join("  ");
        l.trim_end().to_string() + "\n"
    };
    o += &line("µs", &cols.iter().map(|c| cell(&header(*c))).collect::<Vec<_>>());
    o += &line("", &cols.iter().map(|_| "-".repeat(width)).collect::<Vec<_>>());
    for (ns, col, text) in rows {
        let ci = cols.iter().position(|c| *c == col).unwrap_or(0);
        let chunks = wrap(&text, width);
        for (li, chunk) in chunks.iter().enumerate() {
            let cells: Vec<String> = (0..cols.len()).map(|i| if i == ci { cell(chunk) } else { cell("") }).collect();
            let t = if li == 0 { format!("{:.1}", ns as f64 / 1e3) } else { String::new() };
            o += &line(&t, &cells);
        }
    }
    o
}

/// Splits `s` into lines of at most `w` characters, at spaces if it can.
fn wrap(s: &str, w: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for word in s.split(' ') {
        let add = if cur.is_empty() { word.chars().count() } else { cur.chars().count() + 1 + word.chars().count() };
        if add > w && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur += word;
        while cur.chars().count() > w {
            let head: String = cur.chars().take(w).collect();
            let rest: String = cur.chars().skip(w).collect();
            out.push(head);
            cur = format!("  {rest}");
        }
    }
    if !cur.is_empty() || out.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_spaces() {
        assert_eq!(wrap("abc def ghi", 7), ["abc def", "ghi"]);
        assert_eq!(wrap("abcdefghij", 4), ["abcd", "  ef", "  gh", "  ij"]);
        assert_eq!(wrap("", 4), [""]);
    }

    #[test]
    fn pte_words() {
        assert_eq!(pte_text(0x1234_5007, 0, "x"), "ptep_get_and_clear(x)");
        assert_eq!(pte_text(0x1234_5007, 0x1234_5005, "x"), "ptep_set_wrprotect(x)");
        assert_eq!(pte_text(0, 0x4_0047, "x"), "set_pte_at(x, pfn 0x40, rw)");
        assert!(pte_text(0x1000_0005, 0x2000_0005, "x").contains("pfn 0x10000 → 0x20000"));
    }
}
