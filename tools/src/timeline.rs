//! Events turned into what a timeline draws: slices (PTL hold, primary
//! flush, notifier call, mm operation, IOMMU invalidation, iteration) and
//! instant marks (PTE changes, accesses, stale accesses, IPIs, hooks,
//! fills), per track. Shared by the Perfetto and SVG exporters.

use std::collections::{BTreeMap, HashSet};

use abi::litmus::{Hook, Op};
use abi::trace::{dev_access, dev_op, Kind};

use crate::analysis::Window;
use crate::model::{Event, Track};

#[derive(Clone, Debug)]
pub struct Slice {
    pub track: Track,
    pub name: String,
    /// `ptl`, `flush`, `notifier`, `op`, `inv`, `iteration`.
    pub cat: &'static str,
    pub start_ns: u64,
    pub end_ns: u64,
    pub start_seq: u64,
    /// False if the end was never recorded (drawn to the end of the data).
    pub closed: bool,
    pub args: Vec<(&'static str, String)>,
}

#[derive(Clone, Debug)]
pub struct Mark {
    pub track: Track,
    pub name: String,
    /// `pte`, `access`, `stale`, `ipi`, `hook`, `shadow`, `iotlb`, `device`, `free`, `mm`, `trace`.
    pub cat: &'static str,
    pub ns: u64,
    pub seq: u64,
    pub args: Vec<(&'static str, String)>,
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}
/// The trace sequence numbers of the stale vCPU accesses of `windows`:
/// the set [`build`] marks.
pub fn stale_vcpu_accesses(windows: &[&Window]) -> HashSet<u64> {
    windows
        .iter()
        .flat_map(|w| &w.stale_accesses)
        .filter(|s| s.source == crate::format::ThreadKind::Vcpu)
        .map(|s| s.seq)
        .collect()
}

/// Builds slices and marks from events in sequence order. `ns(e)` gives
/// the time to draw an event at; `stale_vcpu` holds the sequence numbers
/// of vCPU accesses the analysis found stale.
pub fn build(events: &[Event], ns: &dyn Fn(&Event) -> u64, stale_vcpu: &HashSet<u64>) -> (Vec<Slice>, Vec<Mark>) {
    let mut slices = Vec::new();
    let mut marks = Vec::new();
    // Open slices: (track, category, key) -> stack of (start event, name, args).
    type Open = BTreeMap<(Track, &'static str, u64), Vec<(Event, String, Vec<(&'static str, String)>)>>;
    let mut open: Open = BTreeMap::new();
    let end_ns = events.iter().map(ns).max().unwrap_or(0);
    for e in events {
        let Some(k) = e.kind else { continue };
        let r = &e.rec;
        let t = if k == Kind::IterBegin || k == Kind::IterEnd { Track::Iterations } else { e.track() };
        let begin = |cat: &'static str, key: u64, name: String, args: Vec<(&'static str, String)>, open: &mut Open| {
            open.entry((t, cat, key)).or_default().push((*e, name, args));
        };
        let mut end = |cat: &'static str, key: u64, open: &mut Open| {
            if let Some((b, name, args)) = open.get_mut(&(t, cat, key)).and_then(|v| v.pop()) {
                slices.push(Slice {
                    track: t,
                    name,
                    cat,
                    start_ns: ns(&b),
                    end_ns: ns(e).max(ns(&b)),
                    start_seq: b.rec.seq,
                    closed: true,
                    args,
                });
            }
        };
        let mut mark = |cat: &'static str, name: String, args: Vec<(&'static str, String)>| {
            marks.push(Mark { track: t, name, cat, ns: ns(e), seq: r.seq, args });
        };
        match k {
            Kind::IterBegin => begin("iteration", 0, format!("iteration {}", r.b), vec![], &mut open),
            Kind::IterEnd => end("iteration", 0, &mut open),
            Kind::PtlAcquire => {
                begin("ptl", r.a, format!("PTL {}", hex(r.va)), vec![("table", hex(r.a)), ("va", hex(r.va))], &mut open)
            }
            Kind::PtlRelease => end("ptl", r.a, &mut open),
            Kind::LockAcquire => {
                let what = match r.a {
                    abi::trace::lock_kind::MMAP_READ => "mmap_read_lock",
                    abi::trace::lock_kind::MMAP_WRITE => "mmap_write_lock",
                    abi::trace::lock_kind::VMA_READ => "vma_start_read",
                    abi::trace::lock_kind::VMA_WRITE => "vma_start_write",
                    abi::trace::lock_kind::PAGE => "lock_page",
                    _ => "lock",
                };
                begin(
                    "lock",
                    r.va ^ r.a,
                    format!("{what} {}", hex(r.va)),
                    vec![("waited", (r.b == 1).to_string())],
                    &mut open,
                )
            }
            Kind::LockRelease => end("lock", r.va ^ r.a, &mut open),
            Kind::ShadowWalkHit => mark(
                "tlb",
                format!("walk-cache hit {}{}", hex(r.va), if r.b == 1 { " (stale table)" } else { "" }),
                vec![("table", hex(r.a))],
            ),
            Kind::FlushBegin => begin(
                "flush",
                0,
                format!("flush {}..{}", hex(r.va), hex(r.a)),
                vec![("start", hex(r.va)), ("end", hex(r.a))],
                &mut open,
            ),
            Kind::FlushEnd => end("flush", 0, &mut open),
            Kind::NotifierBegin => begin(
                "notifier",
                0,
                format!("notifier {}..{}{}", hex(r.va), hex(r.a), if r.b == 1 { " leaf" } else { "" }),
                vec![("start", hex(r.va)), ("end", hex(r.a)), ("leaf_only", (r.b == 1).to_string())],
                &mut open,
            ),
            Kind::NotifierEnd => end("notifier", 0, &mut open),
            Kind::OpBegin => {
                let op = Op::from_u8(r.a as u8).map_or("op", |o| o.name());
                begin("op", 0, format!("{op} {}", hex(r.va)), vec![("va", hex(r.va))], &mut open)
            }
            Kind::OpEnd => end("op", 0, &mut open),
            Kind::InvReceived => {
                let all = r.a == u64::MAX;
                let name =
                    if all { "invalidate all".to_string() } else { format!("invalidate {}..{}", hex(r.va), hex(r.a)) };
                begin(
                    "inv",
                    0,
                    name,
                    vec![("start", hex(r.va)), ("end", hex(r.a)), ("leaf_only", (r.b == 1).to_string())],
                    &mut open,
                )
            }
            Kind::InvCompleted => end("inv", 0, &mut open),
            Kind::PteChange => mark(
                "pte",
                format!("pte {} {}→{}", hex(r.va), hex(r.a), hex(r.b)),
                vec![("va", hex(r.va)), ("old", hex(r.a)), ("new", hex(r.b))],
            ),
            Kind::PmdClear => mark("pte", format!("pmd_clear {}", hex(r.va)), vec![("table", hex(r.a))]),
            Kind::PageFree | Kind::TableFree => mark("free", format!("{} {}", k.name(), hex(r.a)), vec![]),
            Kind::Hook => mark("hook", Hook::from_u8(r.a as u8).map_or("hook", |h| h.name()).to_string(), vec![]),
            Kind::IpiSend => mark("ipi", format!("IPI → {}", r.a), vec![("start", hex(r.va)), ("end", hex(r.b))]),
            Kind::IpiRecv => mark("ipi", format!("IPI ← {}", r.a), vec![]),
            Kind::IpiAck => mark("ipi", format!("IPI ack → {}", r.a), vec![]),
            Kind::ThreadStart => mark("mm", format!("thread {} starts", r.a), vec![("thread", r.a.to_string())]),
            Kind::MmSwitch => mark(
                "mm",
                if r.a == 0 { "switch to kernel mm".into() } else { format!("switch_mm {}", hex(r.a)) },
                vec![],
            ),
            Kind::Access => {
                let stale = stale_vcpu.contains(&r.seq);
                let op = match r.b {
                    0 => "load",
                    1 => "store",
                    _ => "rmw",
                };
                let value = if r.a == abi::litmus::VALUE_FAULT { "fault".to_string() } else { r.a.to_string() };
                mark(
                    if stale { "stale" } else { "access" },
                    format!("{}{op} {} = {value}", if stale { "STALE " } else { "" }, hex(r.va)),
                    vec![("va", hex(r.va)), ("value", value)],
                )
            }
            Kind::ShadowFill => mark("shadow", format!("tlb fill {}", hex(r.va)), vec![("pte", hex(r.a))]),
            Kind::ShadowFlush => mark(
                "shadow",
                if r.va == 0 && r.a == 0 {
                    "tlb flush all".into()
                } else {
                    format!("tlb flush {}..{}", hex(r.va), hex(r.a))
                },
                vec![],
            ),
            Kind::ShadowEvict => mark("shadow", format!("tlb evict {}", hex(r.va)), vec![]),
            Kind::TraceDrain => mark("trace", format!("trace drain ({} records)", r.a), vec![]),
            Kind::IotlbFill => {
                mark("iotlb", format!("iotlb fill {}", hex(r.va)), vec![("pte", hex(r.a)), ("gpa", hex(r.b))])
            }
            Kind::IotlbHit => mark("iotlb", format!("iotlb hit {}", hex(r.va)), vec![("gpa", hex(r.b))]),
            Kind::IotlbStaleHit => mark(
                "stale",
                format!("STALE iotlb hit {}", hex(r.va)),
                vec![("pte_now", hex(r.a)), ("gpa_used", hex(r.b))],
            ),
            Kind::PwcHit => mark("iotlb", format!("pwc hit L{} {}", r.a, hex(r.va)), vec![("table", hex(r.b))]),
            Kind::IotlbEvict => mark("iotlb", format!("iotlb evict {}", hex(r.va)), vec![]),
            Kind::WaitCompleted => mark("iotlb", "wait descriptor done".into(), vec![]),
            Kind::DevAccess => {
                let stale = r.b & dev_access::STALE != 0;
                let op = dev_op::name((r.b & dev_access::OP_MASK) >> dev_access::OP_SHIFT);
                mark(
                    if stale { "stale" } else { "device" },
                    format!("{}dma_{op} {} = {}", if stale { "STALE " } else { "" }, hex(r.va), r.a),
                    vec![("va", hex(r.va)), ("value", r.a.to_string()), ("gpa", hex(r.b & dev_access::GPA_MASK))],
                )
            }
            Kind::DevFault => mark("device", format!("dma fault {}", hex(r.va)), vec![("reason", r.a.to_string())]),
            Kind::DevStaleWalk => mark("stale", format!("STALE WALK {}", hex(r.va)), vec![("table", hex(r.a))]),
        }
    }
    for ((t, cat, _), stack) in open {
        for (b, name, mut args) in stack {
            args.push(("unterminated", "true".into()));
            slices.push(Slice {
                track: t,
                name,
                cat,
                start_ns: ns(&b),
                end_ns: end_ns.max(ns(&b)),
                start_seq: b.rec.seq,
                closed: false,
                args,
            });
        }
    }
    slices.sort_by_key(|s| (s.start_ns, s.start_seq));
    (slices, marks)
}
