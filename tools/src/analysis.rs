//! Staleness windows.
//!
//! A *window* opens at a PTE change that takes something away from a
//! present translation — the page is unmapped (`unmap`), the VA now maps
//! another page (`remap`), write permission is removed (`wrprotect`), or
//! the dirty bit of a writable entry is cleared (`clean`) — because from
//! then on a cache that still holds the old translation is stale. It
//! closes when the caches are invalidated:
//!
//! * with a secondary MMU in the run (device threads), at the first
//!   secondary invalidation that covers the page after the change: the
//!   IOMMU's `InvCompleted` (the entries are gone), else the guest's
//!   `NotifierEnd`;
//! * without one, at the primary flush: the initiator's `FlushEnd` covering
//!   the page and the shadow flush of every vCPU that had the page cached.
//!
//! A window that never closes — or only when the teardown invalidates
//! everything (munmap, PASID unbind) — is *open* and lasts until the
//! iteration's end. It is split at the release of the page-table lock of the table
//! holding the VA, by the vCPU that made the change: the part under the
//! PTL and the part after the release, in ns and in events (records).
//!
//! A clear followed, under the same PTL hold, by the same CPU installing an
//! entry for the page is one change (`ptep_modify_prot_start/commit` in
//! `change_pte_range`, `ptep_clear_flush` + `set_pte_at` in `wp_page_copy`,
//! migration and KSM): judged from the entry before the clear to the one
//! installed — `remap` if the page changed, `wrprotect` if write permission
//! went, nothing if nothing was taken away (an `mprotect` upgrade).
//!
//! A stale access is a device access the IOMMU flags as done through a
//! stale cached translation of the page, or a vCPU access (not faulted) to
//! the page from a vCPU whose shadow TLB entry was filled before a change
//! and not flushed since (a switch of address space counts as a flush). It
//! is charged to the change that made it stale: the first change of the
//! page after the translation it used was cached (the IOTLB fill, the
//! shadow fill) — not to a later change of the same VA. A stale access made
//! before the copy of a page that is being replaced (migration, CoW, KSM's
//! compare) does no harm: a store lands in the old page before it is copied
//! or compared, a load reads what the copy will hold. Those are listed as
//! harmless and left out of the counts. A device access found stale after
//! the invalidation that closed its window shows that invalidation did not
//! drop the entry (a leaf-only or mis-sized range): it is kept as the
//! window's `failed_invalidation`, and the window runs on to the next
//! invalidation of the page (or stays open).
//!
//! Only the test's body counts by default: from the first switch of a vCPU
//! to the test mm to the last switch back (and the last device-thread
//! record); set-up and teardown windows are reported with `all_phases`.

use abi::litmus::{Hook, VALUE_FAULT};
use abi::trace::{dev_access, dev_op, Kind, UNIT_IOMMU};
use serde::Serialize;

use crate::format::{Parsed, Run, ThreadKind};
use crate::model::{self, Event, Iteration};

mod render;
pub use render::{render_dump, render_text};

pub const SCHEMA: &str = "shootdown-trace-report/1";

const P: u64 = 1;
const RW: u64 = 1 << 1;
const D: u64 = 1 << 6;
const ADDR: u64 = 0x000f_ffff_ffff_f000;

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Also report windows opened during set-up and teardown.
    pub all_phases: bool,
}

/// A point of the window: sequence number and ns since the iteration start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct At {
    pub seq: u64,
    pub ns: u64,
}

impl At {
    fn of(e: &Event) -> At {
        At { seq: e.rec.seq, ns: e.ns }
    }
}

/// The secondary invalidation that closed a window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Invalidation {
    pub seq: u64,
    pub ns: u64,
    /// `iommu` (InvCompleted) or `notifier` (NotifierEnd).
    pub by: &'static str,
}

/// The primary flush of one vCPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CpuFlush {
    pub vcpu: u64,
    /// Its shadow TLB held the old translation when the PTE changed.
    pub cached: bool,
    /// When its shadow entry for the page was flushed (or evicted).
    pub flushed: Option<At>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StaleAccess {
    /// A device or a vCPU (`device` / `vcpu` in JSON).
    pub source: ThreadKind,
    /// Device thread name, or the litmus thread and its vCPU (`P2 (vCPU 0)`).
    pub by: String,
    /// The device thread or vCPU index (per `source`).
    pub unit: u64,
    pub seq: u64,
    pub ns: u64,
    pub op: String,
    pub value: u64,
    pub after_release: bool,
    /// Made before the copy of the page being replaced: no harm done.
    pub harmless: bool,
    /// When the translation it used was cached (the fill's sequence number).
    pub cached_seq: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Window {
    pub test: String,
    pub policy: String,
    /// Index of the run in the file.
    pub run: usize,
    pub iteration: u64,
    pub va: u64,
    pub va_hex: String,
    /// `unmap`, `remap`, `wrprotect`, `clean`.
    pub change: &'static str,
    /// `setup`, `body`, `teardown`.
    pub phase: &'static str,
    /// vCPU that changed the PTE …
    pub vcpu: u64,
    /// … and the litmus thread it was running, if the trace says.
    pub thread: Option<String>,
    pub old_pte: u64,
    pub new_pte: u64,
    pub pte_change: At,
    pub ptl_release: Option<At>,
    pub invalidation: Option<Invalidation>,
    /// A covering invalidation after which the device still used a stale
    /// translation of the page (it did not drop the entry).
    pub failed_invalidation: Option<Invalidation>,
    /// The copy (or KSM's compare) of the page being replaced, if the
    /// operation has one after the change: stale accesses before it are harmless.
    pub copy: Option<At>,
    pub primary_flush: Vec<CpuFlush>,
    /// The primary flush covering the page completed (initiator's
    /// `FlushEnd`, and every vCPU that had it cached flushed).
    pub primary_done: Option<At>,
    /// `secondary` (runs with device threads) or `primary`.
    pub closed_by: &'static str,
    /// No invalidation: the window lasts until the iteration ended.
    pub open: bool,
    pub window_ns: u64,
    pub under_ptl_ns: u64,
    pub after_release_ns: u64,
    pub window_events: u64,
    pub under_ptl_events: u64,
    pub after_release_events: u64,
    pub stale_accesses_after_release: u64,
    pub stale_device_accesses_after_release: u64,
    pub stale_vcpu_accesses_after_release: u64,
    pub stale_accesses_under_ptl: u64,
    /// Stale accesses before the copy (not in the counts above).
    pub harmless_stale_accesses: u64,
    pub stale_accesses: Vec<StaleAccess>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub count: u64,
    pub min: u64,
    pub median: u64,
    pub p99: u64,
    pub max: u64,
}

impl Stats {
    pub fn of(mut v: Vec<u64>) -> Stats {
        if v.is_empty() {
            return Stats::default();
        }
        v.sort_unstable();
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Stats { count: v.len() as u64, min: v[0], median: rank(0.5), p99: rank(0.99), max: v[v.len() - 1] }
    }
}

/// Per (test, policy): windows over all iterations.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Distribution {
    pub windows: u64,
    pub open_windows: u64,
    pub iterations_with_windows: u64,
    pub window_ns: Stats,
    pub under_ptl_ns: Stats,
    pub after_release_ns: Stats,
    pub stale_accesses_after_release: Stats,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run: usize,
    pub test: String,
    pub policy: String,
    pub tlb: String,
    pub iotlb: String,
    pub seed: u64,
    pub hash: String,
    pub vcpus: u64,
    pub devices: Vec<String>,
    pub boots: u64,
    pub iterations: u64,
    pub complete_iterations: u64,
    pub records: u64,
    pub dropped_records: u64,
    pub ring_full_waits: u64,
    /// How each boot ended (`exit 0`, `iteration-timeout`, …; `?` if the
    /// file stops before the boot's footer).
    pub boot_ends: Vec<String>,
    pub distribution: Distribution,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    /// Set if the file could not be read to its end: the report covers
    /// what was readable.
    pub error: Option<String>,
    pub warnings: Vec<String>,
    pub runs: Vec<RunReport>,
    pub windows: Vec<Window>,
}

fn page(va: u64) -> u64 {
    va & !0xfff
}

fn classify(old: u64, new: u64) -> Option<&'static str> {
    if old & P == 0 {
        None
    } else if new & P == 0 {
        Some("unmap")
    } else if old & ADDR != new & ADDR {
        Some("remap")
    } else if old & RW != 0 && new & RW == 0 {
        Some("wrprotect")
    } else if old & D != 0 && new & D == 0 && new & RW != 0 {
        Some("clean")
    } else {
        None
    }
}

/// A PTE change that takes something away, as one change: `i` is the
/// record that opened it, `old`/`new` the entries before and after (for a
/// clear followed by an install under the same PTL hold, the installed
/// one), `kind` what was taken away.
struct Change {
    i: usize,
    old: u64,
    new: u64,
    kind: &'static str,
}

/// The changes of an iteration that revoke something, in order.
fn changes(ev: &[Event]) -> Vec<Change> {
    let mut out = Vec::new();
    for (i, e) in ev.iter().enumerate() {
        if !(e.guest() && e.is(Kind::PteChange)) || e.rec.a & P == 0 {
            continue;
        }
        let (old, mut new) = (e.rec.a, e.rec.b);
        if new & P == 0 {
            // A clear: does the same CPU install an entry for the page
            // before it drops the PTL?
            let cpu = e.rec.unit;
            let later = &ev[i + 1..];
            let release = later
                .iter()
                .position(|x| {
                    x.guest() && x.is(Kind::PtlRelease) && x.rec.unit == cpu && x.rec.va >> 21 == e.rec.va >> 21
                })
                .unwrap_or(later.len());
            let install = later[..release].iter().find(|x| {
                x.guest()
                    && x.is(Kind::PteChange)
                    && x.rec.unit == cpu
                    && page(x.rec.va) == page(e.rec.va)
                    && x.rec.a & P == 0
                    && x.rec.b & P != 0
            });
            if let Some(x) = install {
                new = x.rec.b;
            }
        }
        if let Some(kind) = classify(old, new) {
            out.push(Change { i, old, new, kind });
        }
    }
    out
}

/// Does `[start, end)` cover `va`? (0, 0) and an end of `u64::MAX` mean
/// everything / to the end.
fn covers(start: u64, end: u64, va: u64) -> bool {
    (start == 0 && end == 0) || (start <= va && (va < end || end == u64::MAX))
}

/// Analyses every run of a parsed file.
pub fn analyse(parsed: &Parsed, opts: Options) -> Report {
    let mut runs = Vec::new();
    let mut windows = Vec::new();
    for (ri, run) in parsed.trace.runs.iter().enumerate() {
        let (rr, mut w) = analyse_run(ri, run, opts);
        runs.push(rr);
        windows.append(&mut w);
    }
    Report {
        schema: SCHEMA,
        error: parsed.error.as_ref().map(|e| e.to_string()),
        warnings: parsed.trace.warnings.clone(),
        runs,
        windows,
    }
}

pub fn analyse_run(ri: usize, run: &Run, opts: Options) -> (RunReport, Vec<Window>) {
    let its = model::iterations(run);
    let mut windows = Vec::new();
    for it in &its {
        windows.extend(iteration_windows(ri, run, it, opts));
    }
    let m = &run.meta;
    let body: Vec<&Window> = windows.iter().filter(|w| w.phase == "body" || opts.all_phases).collect();
    let mut with = std::collections::BTreeSet::new();
    for w in &body {
        with.insert(w.iteration);
    }
    let dist = Distribution {
        windows: body.len() as u64,
        open_windows: body.iter().filter(|w| w.open).count() as u64,
        iterations_with_windows: with.len() as u64,
        window_ns: Stats::of(body.iter().map(|w| w.window_ns).collect()),
        under_ptl_ns: Stats::of(body.iter().map(|w| w.under_ptl_ns).collect()),
        after_release_ns: Stats::of(body.iter().map(|w| w.after_release_ns).collect()),
        stale_accesses_after_release: Stats::of(body.iter().map(|w| w.stale_accesses_after_release).collect()),
    };
    let ends = run.boots.iter().filter_map(|b| b.end.as_ref());
    let rr = RunReport {
        run: ri,
        test: m.test.clone(),
        policy: m.policy.clone(),
        tlb: m.tlb.clone(),
        iotlb: m.iotlb.clone(),
        seed: m.seed,
        hash: m.hash.clone(),
        vcpus: m.vcpus,
        devices: m.devices().iter().map(|s| s.to_string()).collect(),
        boots: run.boots.len() as u64,
        iterations: its.len() as u64,
        complete_iterations: its.iter().filter(|i| i.complete).count() as u64,
        records: run.boots.iter().map(|b| b.records.len() as u64).sum(),
        dropped_records: ends.clone().flat_map(|e| &e.dropped).sum(),
        ring_full_waits: ends.flat_map(|e| &e.blocked).sum(),
        boot_ends: run
            .boots
            .iter()
            .map(|b| b.end.as_ref().map_or_else(|| "?".to_string(), |e| e.end.clone()))
            .collect(),
        distribution: dist,
    };
    (rr, windows)
}

/// The body of an iteration as a sequence-number range.
fn body_range(it: &Iteration) -> (u64, u64) {
    let ev = &it.events;
    let switch_in = ev.iter().find(|e| e.guest() && e.is(Kind::MmSwitch) && e.rec.a != 0);
    let Some(start) = switch_in else { return (0, u64::MAX) };
    let last_out = ev.iter().rev().find(|e| e.guest() && e.is(Kind::MmSwitch) && e.rec.a == 0);
    let last_dev = ev.iter().rev().find(|e| e.device() && e.rec.unit != UNIT_IOMMU);
    let end = last_out.map_or(u64::MAX, |e| e.rec.seq).max(last_dev.map_or(0, |e| e.rec.seq));
    (start.rec.seq, end)
}

fn device_name(run: &Run, unit: u64) -> String {
    run.meta.devices().get(unit as usize).map_or_else(|| format!("device {unit}"), |s| s.to_string())
}

/// The vCPU (or device) access `x` to page `pg` used a translation cached
/// at the returned sequence number, if it was a stale one: vCPU accesses
/// through a shadow entry filled before a change and not flushed since;
/// device accesses the IOMMU flagged.
fn stale_use(ev: &[Event], idx: usize, changes: &[(u64, u64)]) -> Option<u64> {
    let x = &ev[idx];
    let pg = page(x.rec.va);
    let before = &ev[..idx];
    if x.device() && x.is(Kind::DevAccess) {
        if x.rec.b & dev_access::STALE == 0 {
            return None;
        }
        let fill = before.iter().rev().find(|y| y.device() && y.is(Kind::IotlbFill) && page(y.rec.va) == pg);
        return Some(fill.map_or(0, |f| f.rec.seq));
    }
    if !(x.guest() && x.is(Kind::Access)) || x.rec.a == VALUE_FAULT {
        return None;
    }
    let k = x.rec.unit;
    let last = before.iter().rev().find(|y| {
        y.rec.unit == k
            && match y.kind {
                Some(Kind::ShadowFill) | Some(Kind::ShadowEvict) => y.vmm() && page(y.rec.va) == pg,
                Some(Kind::ShadowFlush) => y.vmm() && covers(y.rec.va, y.rec.a, pg),
                Some(Kind::MmSwitch) => y.guest(),
                _ => false,
            }
    })?;
    if !last.is(Kind::ShadowFill) {
        return None;
    }
    let f = last.rec.seq;
    // Stale only if the page changed after the fill.
    changes.iter().any(|&(p, c)| p == pg && c > f && c < x.rec.seq).then_some(f)
}

fn iteration_windows(ri: usize, run: &Run, it: &Iteration, opts: Options) -> Vec<Window> {
    let ev = &it.events;
    let (body_start, body_end) = body_range(it);
    let has_devices = !run.meta.devices().is_empty() || ev.iter().any(|e| e.device());
    let vcpus = run.meta.vcpus.max(ev.iter().filter_map(|e| e.vcpu()).max().map_or(0, |m| m + 1));
    let last = ev.last().map(|e| At { seq: e.rec.seq + 1, ns: e.ns }).unwrap_or(At { seq: 0, ns: 0 });
    let changes = changes(ev);
    let change_seqs: Vec<(u64, u64)> = changes.iter().map(|c| (page(ev[c.i].rec.va), ev[c.i].rec.seq)).collect();
    // Every stale access, charged to the first change of its page after
    // the translation it used was cached.
    let mut charged: Vec<Vec<(usize, u64)>> = vec![Vec::new(); changes.len()];
    for idx in 0..ev.len() {
        let Some(cached) = stale_use(ev, idx, &change_seqs) else { continue };
        let (pg, seq) = (page(ev[idx].rec.va), ev[idx].rec.seq);
        let after = change_seqs.iter().position(|&(p, c)| p == pg && c > cached && c < seq);
        let latest = change_seqs.iter().rposition(|&(p, c)| p == pg && c < seq);
        if let Some(w) = after.or(latest) {
            charged[w].push((idx, cached));
        }
    }
    let mut out = Vec::new();
    for (ci, c) in changes.iter().enumerate() {
        let i = c.i;
        let e = &ev[i];
        let seq = e.rec.seq;
        let phase = if seq < body_start {
            "setup"
        } else if seq > body_end {
            "teardown"
        } else {
            "body"
        };
        if phase != "body" && !opts.all_phases {
            continue;
        }
        let pg = page(e.rec.va);
        let cpu = e.rec.unit as u64;
        let later = &ev[i + 1..];
        let release = later
            .iter()
            .find(|x| x.guest() && x.is(Kind::PtlRelease) && x.rec.unit as u64 == cpu && x.rec.va >> 21 == pg >> 21)
            .map(At::of);
        // The copy (or KSM's compare) of this operation, after the change.
        let op_end =
            later.iter().find(|x| x.guest() && x.rec.unit as u64 == cpu && x.is(Kind::OpEnd)).map(|x| x.rec.seq);
        let copy = later
            .iter()
            .take_while(|x| op_end.is_none_or(|s| x.rec.seq < s))
            .find(|x| {
                x.guest()
                    && x.rec.unit as u64 == cpu
                    && x.is(Kind::Hook)
                    && matches!(Hook::from_u8(x.rec.a as u8), Some(Hook::AfterCopy) | Some(Hook::AfterCompare))
            })
            .map(At::of);
        let invalidations: Vec<Invalidation> = later
            .iter()
            .filter_map(|x| {
                if x.device() && x.is(Kind::InvCompleted) && covers(x.rec.va, x.rec.a, pg) {
                    Some(Invalidation { seq: x.rec.seq, ns: x.ns, by: "iommu" })
                } else if x.guest() && x.is(Kind::NotifierEnd) && covers(x.rec.va, x.rec.a, pg) {
                    Some(Invalidation { seq: x.rec.seq, ns: x.ns, by: "notifier" })
                } else {
                    None
                }
            })
            .collect();
        // IOMMU completions first: they say the entries are gone.
        let first_inv = |after: u64| {
            let iommu = invalidations.iter().find(|v| v.by == "iommu" && v.seq > after);
            iommu.or_else(|| invalidations.iter().find(|v| v.seq > after)).cloned()
        };
        // Stale device accesses after an invalidation show it failed: the
        // window closes at the first invalidation after the last of them.
        let last_stale_dev =
            charged[ci].iter().filter(|(j, _)| ev[*j].device()).map(|(j, _)| ev[*j].rec.seq).max().unwrap_or(0);
        let first = first_inv(seq);
        // The operation's own notifier call, even if its range misses the
        // page (the v6.6 VT-d flush-all overflow gave an empty range).
        let own_notifier = later
            .iter()
            .take_while(|x| op_end.is_none_or(|s| x.rec.seq < s))
            .find(|x| x.guest() && x.is(Kind::NotifierEnd) && x.rec.unit as u64 == cpu)
            .map(|x| Invalidation { seq: x.rec.seq, ns: x.ns, by: "notifier" });
        let failed_invalidation = match first.clone().filter(|v| v.seq < last_stale_dev) {
            Some(v) => Some(v),
            None => own_notifier.filter(|n| n.seq < last_stale_dev && first.as_ref().is_none_or(|f| f.seq > n.seq)),
        };
        let invalidation = match &failed_invalidation {
            Some(f) if first.as_ref().is_some_and(|v| v.seq == f.seq) => first_inv(last_stale_dev),
            _ => first,
        };
        // Primary: each vCPU's shadow state for the page.
        let mut primary = Vec::new();
        for k in 0..vcpus {
            let mine = |x: &&Event| x.vcpu() == Some(k);
            // A switch of address space (CR3 write, no PCID) ends the use of
            // every user translation, like a full flush.
            let touches = |x: &Event| match x.kind {
                Some(Kind::ShadowFill) | Some(Kind::ShadowEvict) => x.vmm() && page(x.rec.va) == pg,
                Some(Kind::ShadowFlush) => x.vmm() && covers(x.rec.va, x.rec.a, pg),
                Some(Kind::MmSwitch) => x.guest(),
                _ => false,
            };
            let cached = ev[..i].iter().rev().filter(mine).find(|x| touches(x)).is_some_and(|x| x.is(Kind::ShadowFill));
            // Flushed, evicted, or replaced by a fill from the new PTE.
            let flushed = later.iter().filter(mine).find(|x| touches(x)).filter(|_| cached).map(At::of);
            primary.push(CpuFlush { vcpu: k, cached, flushed });
        }
        let flush_end =
            later.iter().find(|x| x.guest() && x.is(Kind::FlushEnd) && covers(x.rec.va, x.rec.a, pg)).map(At::of);
        let primary_done = if primary.iter().any(|f| f.cached && f.flushed.is_none()) {
            None
        } else {
            let cpu_max = primary.iter().filter_map(|f| f.flushed).max_by_key(|a| a.seq);
            match (flush_end, cpu_max) {
                (Some(a), Some(b)) => Some(if a.seq > b.seq { a } else { b }),
                (a, b) => a.or(b),
            }
        };
        let (closed_by, close) = if has_devices {
            ("secondary", invalidation.as_ref().map(|x| At { seq: x.seq, ns: x.ns }))
        } else {
            ("primary", primary_done)
        };
        // A body window is closed only by the test's own invalidations: the
        // teardown's (munmap, PASID unbind) do not count, the window stays
        // open until the iteration ends.
        let limit = if phase == "body" { body_end } else { u64::MAX };
        let close = close.filter(|c| c.seq <= limit);
        let open = close.is_none();
        let end = close.unwrap_or(last);
        let start = At::of(e);
        let split = match release {
            Some(r) if r.seq < end.seq => r,
            Some(_) => end,
            None => start,
        };
        let count = |a: u64, b: u64| ev.iter().filter(|x| x.rec.seq > a && x.rec.seq < b).count() as u64;
        let after_rel = |s: u64| release.is_none_or(|r| s > r.seq);
        let mut stale: Vec<StaleAccess> = charged[ci]
            .iter()
            .map(|&(j, cached)| {
                let x = &ev[j];
                let (source, by, op) = if x.device() {
                    let op = (x.rec.b & dev_access::OP_MASK) >> dev_access::OP_SHIFT;
                    (ThreadKind::Device, device_name(run, x.rec.unit as u64), dev_op::name(op).to_string())
                } else {
                    let op = match x.rec.b {
                        0 => "load",
                        1 => "store",
                        _ => "rmw",
                    };
                    (ThreadKind::Vcpu, it.vcpu_label(run, x.rec.unit as u64), op.to_string())
                };
                StaleAccess {
                    source,
                    by,
                    unit: x.rec.unit as u64,
                    seq: x.rec.seq,
                    ns: x.ns,
                    op,
                    value: x.rec.a,
                    after_release: after_rel(x.rec.seq),
                    harmless: copy.is_some_and(|c| x.rec.seq < c.seq),
                    cached_seq: (cached > 0).then_some(cached),
                }
            })
            .collect();
        stale.sort_by_key(|s| s.seq);
        let harmful = |s: &&StaleAccess| !s.harmless;
        let n_after = |src| stale.iter().filter(harmful).filter(|s| s.after_release && s.source == src).count() as u64;
        let (dev_after, cpu_after) = (n_after(ThreadKind::Device), n_after(ThreadKind::Vcpu));
        out.push(Window {
            test: run.meta.test.clone(),
            policy: run.meta.policy.clone(),
            run: ri,
            iteration: it.number,
            va: pg,
            va_hex: format!("{pg:#x}"),
            change: c.kind,
            phase,
            vcpu: cpu,
            thread: it.thread_on(run, cpu),
            old_pte: c.old,
            new_pte: c.new,
            pte_change: start,
            ptl_release: release,
            invalidation,
            failed_invalidation,
            copy,
            primary_flush: primary,
            primary_done,
            closed_by,
            open,
            window_ns: end.ns.saturating_sub(start.ns),
            under_ptl_ns: split.ns.saturating_sub(start.ns),
            after_release_ns: end.ns.saturating_sub(split.ns),
            window_events: count(start.seq, end.seq),
            under_ptl_events: count(start.seq, split.seq),
            after_release_events: if split.seq < end.seq { count(split.seq, end.seq) } else { 0 },
            stale_accesses_after_release: dev_after + cpu_after,
            stale_device_accesses_after_release: dev_after,
            stale_vcpu_accesses_after_release: cpu_after,
            stale_accesses_under_ptl: stale.iter().filter(harmful).filter(|s| !s.after_release).count() as u64,
            harmless_stale_accesses: stale.iter().filter(|s| s.harmless).count() as u64,
            stale_accesses: stale,
        });
    }
    out
}

#[cfg(test)]
mod tests;
