//! Records of a run grouped into iterations, in sequence order, with
//! nanosecond times.

use abi::trace::{source, Kind, Record, UNIT_IOMMU};

use crate::format::{Boot, Run};

/// One record with its times.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub rec: Record,
    pub kind: Option<Kind>,
    /// Nanoseconds since the start of its boot.
    pub boot_ns: u64,
    /// Nanoseconds since the start of its iteration.
    pub ns: u64,
}

impl Event {
    pub fn is(&self, k: Kind) -> bool {
        self.kind == Some(k)
    }
    pub fn guest(&self) -> bool {
        self.rec.source == source::GUEST
    }
    pub fn vmm(&self) -> bool {
        self.rec.source == source::VMM
    }
    pub fn device(&self) -> bool {
        self.rec.source == source::DEVICE
    }
    /// A vCPU's record (the guest's or the VMM's on its behalf).
    pub fn vcpu(&self) -> Option<u64> {
        (self.guest() || self.vmm()).then_some(self.rec.unit as u64)
    }
    /// The track the event belongs on.
    pub fn track(&self) -> Track {
        match self.rec.source {
            source::DEVICE if self.rec.unit == UNIT_IOMMU => Track::Iommu,
            source::DEVICE => Track::Device(self.rec.unit as u64),
            _ => Track::Vcpu(self.rec.unit as u64),
        }
    }
    pub fn kind_name(&self) -> String {
        self.kind.map_or_else(|| format!("kind_{}", self.rec.kind), |k| k.name().to_string())
    }
}

/// Where an event is drawn: one track per vCPU, per device thread, and the IOMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Track {
    Vcpu(u64),
    Device(u64),
    Iommu,
    /// The litmus iterations themselves (drawing only).
    Iterations,
}

/// One litmus iteration.
#[derive(Clone, Debug)]
pub struct Iteration {
    pub number: u64,
    /// Index of its boot in the run.
    pub boot: usize,
    /// Sorted by sequence number; `ns` relative to the iteration's start.
    pub events: Vec<Event>,
    /// `IterEnd` was recorded (the iteration ran to its end).
    pub complete: bool,
    /// Start within the boot (ns).
    pub start_boot_ns: u64,
    /// Last event's time relative to the start.
    pub end_ns: u64,
    /// vCPU → litmus thread index it ran this iteration (`thread_start`
    /// records; empty in traces written before they existed).
    pub placement: std::collections::BTreeMap<u64, u64>,
}

impl Iteration {
    /// The litmus thread vCPU `k` ran in this iteration, by name.
    pub fn thread_on(&self, run: &Run, k: u64) -> Option<String> {
        let t = *self.placement.get(&k)?;
        Some(run.meta.threads.get(t as usize).map_or_else(|| format!("thread {t}"), |m| m.name.clone()))
    }

    /// `P2 (vCPU 0)`, or `vCPU 0` if the placement is not known.
    pub fn vcpu_label(&self, run: &Run, k: u64) -> String {
        match self.thread_on(run, k) {
            Some(n) => format!("{n} (vCPU {k})"),
            None => format!("vCPU {k}"),
        }
    }

    /// The body of the iteration as a time range (ns since its start):
    /// from the first vCPU's switch to the test mm (a thread starting) to
    /// the last event; set-up before it is usually most of an iteration.
    pub fn body_start_ns(&self) -> u64 {
        self.events
            .iter()
            .find(|e| (e.is(Kind::ThreadStart) || (e.is(Kind::MmSwitch) && e.rec.a != 0)) && e.guest())
            .map_or(0, |e| e.ns)
    }
}

/// TSC → ns for one boot: relative to the boot's first record.
pub struct Clock {
    base: u64,
    khz: u64,
}

impl Clock {
    pub fn new(boot: &Boot) -> Clock {
        let base = boot.records.iter().map(|r| r.tsc).min().unwrap_or(0);
        Clock { base, khz: if boot.meta.tsc_khz == 0 { 1_000_000 } else { boot.meta.tsc_khz } }
    }
    pub fn ns(&self, tsc: u64) -> u64 {
        (tsc.saturating_sub(self.base) as u128 * 1_000_000 / self.khz as u128) as u64
    }
}

/// The iterations of a run, in order of iteration number (a re-run of a
/// number in a later boot, which does not happen, would come after).
pub fn iterations(run: &Run) -> Vec<Iteration> {
    let mut out: Vec<Iteration> = Vec::new();
    for (bi, boot) in run.boots.iter().enumerate() {
        let clock = Clock::new(boot);
        let mut by_it: std::collections::BTreeMap<u32, Vec<Event>> = Default::default();
        for r in &boot.records {
            let e = Event { rec: *r, kind: r.kind(), boot_ns: clock.ns(r.tsc), ns: 0 };
            by_it.entry(r.iteration).or_default().push(e);
        }
        for (n, mut events) in by_it {
            events.sort_by_key(|e| e.rec.seq);
            let start =
                events.iter().find(|e| e.is(Kind::IterBegin) && e.guest()).or(events.first()).map_or(0, |e| e.boot_ns);
            for e in &mut events {
                e.ns = e.boot_ns.saturating_sub(start);
            }
            let complete = events.iter().any(|e| e.is(Kind::IterEnd));
            let end_ns = events.iter().map(|e| e.ns).max().unwrap_or(0);
            let placement = events
                .iter()
                .filter(|e| e.guest() && e.is(Kind::ThreadStart))
                .map(|e| (e.rec.unit as u64, e.rec.a))
                .collect();
            out.push(Iteration {
                number: n as u64,
                boot: bi,
                events,
                complete,
                start_boot_ns: start,
                end_ns,
                placement,
            });
        }
    }
    out.sort_by_key(|i| (i.number, i.boot));
    out
}
