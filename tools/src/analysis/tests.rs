use super::*;
use crate::format::{Boot, BootMeta, RunMeta, ThreadMeta};
use abi::trace::{source, Record};

struct B {
    recs: Vec<Record>,
    seq: u64,
}
impl B {
    fn push(&mut self, src: u8, unit: u8, kind: Kind, va: u64, a: u64, b: u64) -> u64 {
        self.seq += 1;
        // 1 µs per record at 1 GHz.
        let tsc = self.seq * 1000;
        self.recs.push(Record { seq: self.seq, tsc, kind: kind as u16, source: src, unit, iteration: 0, va, a, b });
        self.seq
    }
}

const X: u64 = 0x80_0020_3000;

fn run(notifier_under_ptl: bool, notifier: bool) -> Run {
    let mut b = B { recs: Vec::new(), seq: 0 };
    let g = source::GUEST;
    b.push(g, 0, Kind::IterBegin, 0, 0, 0);
    b.push(g, 0, Kind::MmSwitch, 0, 0x300_0000, 0);
    b.push(g, 1, Kind::MmSwitch, 0, 0x300_0000, 0);
    b.push(source::DEVICE, 0, Kind::IotlbFill, X, 0x1234_5003, 0x1234_5000);
    b.push(g, 0, Kind::PtlAcquire, X & !0x1f_ffff, 0x300_1000, 0);
    b.push(g, 0, Kind::PteChange, X, 0x1234_5007, 0);
    if notifier_under_ptl {
        b.push(g, 0, Kind::NotifierBegin, X, X + 4096, 1);
        b.push(source::DEVICE, UNIT_IOMMU, Kind::InvCompleted, X, X + 4096, 1);
        b.push(g, 0, Kind::NotifierEnd, X, X + 4096, 1);
    }
    b.push(g, 0, Kind::PtlRelease, X & !0x1f_ffff, 0x300_1000, 0);
    b.push(source::DEVICE, 0, Kind::IotlbStaleHit, X, 0, 0x1234_5000);
    let stale = if notifier_under_ptl { 0 } else { dev_access::STALE };
    b.push(source::DEVICE, 0, Kind::DevAccess, X, 1, 0x1234_5000 | stale);
    if notifier && !notifier_under_ptl {
        b.push(g, 0, Kind::NotifierBegin, X, X + 4096, 0);
        b.push(source::DEVICE, UNIT_IOMMU, Kind::InvCompleted, X, X + 4096, 1);
        b.push(g, 0, Kind::NotifierEnd, X, X + 4096, 0);
    }
    b.push(g, 0, Kind::MmSwitch, 0, 0, 0);
    b.push(g, 1, Kind::MmSwitch, 0, 0, 0);
    b.push(g, 0, Kind::PteChange, X + 4096, 0x5555_5007, 0); // teardown
    b.push(g, 0, Kind::IterEnd, 0, 0, 0);
    Run {
        meta: RunMeta {
            test: "t".into(),
            policy: "p".into(),
            vcpus: 2,
            threads: vec![ThreadMeta { name: "D0".into(), kind: ThreadKind::Device }],
            ..Default::default()
        },
        boots: vec![Boot {
            meta: BootMeta { tsc_khz: 1_000_000, vcpus: 2, ..Default::default() },
            records: b.recs,
            end: None,
        }],
        end: None,
    }
}

#[test]
fn after_release_window_with_a_stale_device_access() {
    let (rr, w) = analyse_run(0, &run(false, true), Options::default());
    assert_eq!(w.len(), 1, "{w:#?}");
    let w = &w[0];
    assert_eq!((w.va, w.change, w.phase, w.open), (X, "unmap", "body", false));
    assert_eq!(w.under_ptl_ns, 1000);
    assert_eq!(w.after_release_ns, 4000); // release at 7 µs, InvCompleted at 11 µs
    assert_eq!((w.under_ptl_events, w.after_release_events), (0, 3));
    assert_eq!(w.stale_device_accesses_after_release, 1);
    assert_eq!(w.stale_accesses[0].by, "D0");
    assert_eq!(w.invalidation.as_ref().unwrap().by, "iommu");
    assert_eq!(rr.distribution.after_release_ns.max, 4000);
}

#[test]
fn notifier_under_ptl_leaves_no_after_release_part() {
    let (_, w) = analyse_run(0, &run(true, true), Options::default());
    assert_eq!(w[0].after_release_ns, 0);
    assert_eq!(w[0].after_release_events, 0);
    assert_eq!(w[0].stale_accesses_after_release, 0);
}

#[test]
fn no_notifier_is_an_open_window_until_the_end() {
    let (rr, w) = analyse_run(0, &run(false, false), Options::default());
    assert!(w[0].open && w[0].invalidation.is_none());
    assert_eq!(w[0].window_ns, 12_000 - 5000);
    assert_eq!(rr.distribution.open_windows, 1);
    let (_, all) = analyse_run(0, &run(false, false), Options { all_phases: true });
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].phase, "teardown");
}

#[test]
fn stats_nearest_rank() {
    let s = Stats::of((1..=100).collect());
    assert_eq!((s.min, s.median, s.p99, s.max, s.count), (1, 50, 99, 100, 100));
    assert_eq!(Stats::of(vec![]), Stats::default());
    assert_eq!(Stats::of(vec![7]).p99, 7);
}

fn run_of(recs: Vec<Record>, threads: Vec<ThreadMeta>, vcpus: u64) -> Run {
    Run {
        meta: RunMeta { test: "t".into(), policy: "p".into(), vcpus, threads, ..Default::default() },
        boots: vec![Boot {
            meta: BootMeta { tsc_khz: 1_000_000, vcpus, ..Default::default() },
            records: recs,
            end: None,
        }],
        end: None,
    }
}

fn vcpu_threads(n: usize) -> Vec<ThreadMeta> {
    (0..n).map(|i| ThreadMeta { name: format!("P{i}"), kind: crate::format::ThreadKind::Vcpu }).collect()
}

/// mprotect's `ptep_modify_prot_start` (clear) then `_commit` (set) of
/// the same page under one PTL hold is one change: a write-protect
/// (closed by the flush, not an open `unmap`), and an upgrade is none.
#[test]
fn mprotect_clear_then_set_is_one_change() {
    let g = source::GUEST;
    let table = X & !0x1f_ffff;
    for (new, want) in [(0x1234_5005u64, Some("wrprotect")), (0x1234_5007, None)] {
        let mut b = B { recs: Vec::new(), seq: 0 };
        b.push(g, 0, Kind::IterBegin, 0, 0, 0);
        b.push(g, 0, Kind::MmSwitch, 0, 0x300_0000, 0);
        b.push(g, 1, Kind::MmSwitch, 0, 0x300_0000, 0);
        b.push(source::VMM, 1, Kind::ShadowFill, X, 0x1234_5007, 0x1234_5000);
        b.push(g, 0, Kind::PtlAcquire, table, 0x300_1000, 0);
        b.push(g, 0, Kind::PteChange, X, if want.is_some() { 0x1234_5007 } else { 0x1234_5005 }, 0);
        b.push(g, 0, Kind::PteChange, X, 0, new);
        b.push(g, 0, Kind::PtlRelease, table, 0x300_1000, 0);
        b.push(g, 0, Kind::FlushBegin, X, X + 4096, 0);
        b.push(source::VMM, 1, Kind::ShadowFlush, X, X + 4096, 0);
        b.push(g, 0, Kind::FlushEnd, X, X + 4096, 1);
        b.push(g, 0, Kind::MmSwitch, 0, 0, 0);
        b.push(g, 1, Kind::MmSwitch, 0, 0, 0);
        b.push(g, 0, Kind::IterEnd, 0, 0, 0);
        let (_, w) = analyse_run(0, &run_of(b.recs, vcpu_threads(2), 2), Options::default());
        match want {
            Some(kind) => {
                assert_eq!(w.len(), 1, "{w:#?}");
                assert_eq!((w[0].change, w[0].open, w[0].closed_by), (kind, false, "primary"));
                assert_eq!((w[0].old_pte, w[0].new_pte), (0x1234_5007, new));
            }
            None => assert!(w.is_empty(), "an upgrade takes nothing away: {w:#?}"),
        }
    }
}

/// S3's shape: P1 caches x, P0 migrates it (remap, flush deferred), P3
/// then changes x again; P1's stale read is charged to the migration
/// that made its entry stale, not to the later change.
#[test]
fn stale_access_is_charged_to_the_change_that_made_it_stale() {
    let g = source::GUEST;
    let table = X & !0x1f_ffff;
    let mut b = B { recs: Vec::new(), seq: 0 };
    b.push(g, 0, Kind::IterBegin, 0, 0, 0);
    for k in 0..4 {
        b.push(g, k, Kind::ThreadStart, 0, [1, 0, 3, 2][k as usize], 0);
        b.push(g, k, Kind::MmSwitch, 0, 0x300_0000, 0);
    }
    b.push(source::VMM, 0, Kind::ShadowFill, X, 0x1234_5005, 0x1234_5000);
    b.push(g, 1, Kind::Access, X, 0, 0);
    // P0 (vCPU 1) migrates x: Psrc → Pdst, the flush deferred.
    b.push(g, 1, Kind::PtlAcquire, table, 0x300_1000, 0);
    let migrate = b.push(g, 1, Kind::PteChange, X, 0x1234_5005, 0x5678_9005);
    b.push(g, 1, Kind::PtlRelease, table, 0x300_1000, 0);
    // P3 (vCPU 2) write-protects x again (clean → ro), no flush either.
    b.push(g, 2, Kind::PtlAcquire, table, 0x300_1000, 0);
    let later = b.push(g, 2, Kind::PteChange, X, 0x5678_9047, 0x5678_9005);
    b.push(g, 2, Kind::PtlRelease, table, 0x300_1000, 0);
    // P1 (vCPU 0) reads x through its entry for Psrc.
    let read = b.push(g, 0, Kind::Access, X, 0, 0);
    for k in 0..4 {
        b.push(g, k, Kind::MmSwitch, 0, 0, 0);
    }
    b.push(g, 0, Kind::IterEnd, 0, 0, 0);
    let (_, w) = analyse_run(0, &run_of(b.recs, vcpu_threads(4), 4), Options::default());
    let of = |seq: u64| w.iter().find(|w| w.pte_change.seq == seq).unwrap();
    assert_eq!(of(migrate).change, "remap");
    assert_eq!(of(migrate).thread.as_deref(), Some("P0"));
    let s = &of(migrate).stale_accesses;
    assert_eq!(s.len(), 1, "{w:#?}");
    assert_eq!((s[0].seq, s[0].by.as_str()), (read, "P1 (vCPU 0)"));
    assert!(of(later).stale_accesses.is_empty(), "{w:#?}");
}

/// Migration: a stale device store before the copy lands in the old
/// page and is copied (harmless); one after the copy is lost.
#[test]
fn stale_access_before_the_copy_is_harmless() {
    let g = source::GUEST;
    let d = source::DEVICE;
    let table = X & !0x1f_ffff;
    let mut b = B { recs: Vec::new(), seq: 0 };
    b.push(g, 0, Kind::IterBegin, 0, 0, 0);
    b.push(g, 0, Kind::MmSwitch, 0, 0x300_0000, 0);
    b.push(d, 0, Kind::IotlbFill, X, 0x1234_5067, 0x1234_5000);
    b.push(g, 0, Kind::OpBegin, X, abi::litmus::Op::Migrate as u64, 0);
    b.push(g, 0, Kind::PtlAcquire, table, 0x300_1000, 0);
    b.push(g, 0, Kind::PteChange, X, 0x1234_5067, 0x0000_0000_0abc_0000); // migration entry
    b.push(g, 0, Kind::PtlRelease, table, 0x300_1000, 0);
    let early = b.push(d, 0, Kind::DevAccess, X, 5, 0x1234_5000 | dev_access::STALE | (1 << dev_access::OP_SHIFT));
    b.push(g, 0, Kind::Hook, 0, abi::litmus::Hook::AfterCopy as u64, 0);
    let late = b.push(d, 0, Kind::DevAccess, X, 6, 0x1234_5000 | dev_access::STALE | (1 << dev_access::OP_SHIFT));
    b.push(g, 0, Kind::NotifierBegin, X, X + 4096, 0);
    b.push(d, UNIT_IOMMU, Kind::InvCompleted, X, X + 4096, 1);
    b.push(g, 0, Kind::NotifierEnd, X, X + 4096, 0);
    b.push(g, 0, Kind::OpEnd, X, abi::litmus::Op::Migrate as u64, 0);
    b.push(g, 0, Kind::MmSwitch, 0, 0, 0);
    b.push(g, 0, Kind::IterEnd, 0, 0, 0);
    let threads = vec![
        ThreadMeta { name: "P0".into(), kind: crate::format::ThreadKind::Vcpu },
        ThreadMeta { name: "D0".into(), kind: crate::format::ThreadKind::Device },
    ];
    let (_, w) = analyse_run(0, &run_of(b.recs, threads, 1), Options::default());
    assert_eq!(w.len(), 1, "{w:#?}");
    let w = &w[0];
    assert!(w.copy.is_some());
    let harmless: Vec<(u64, bool)> = w.stale_accesses.iter().map(|s| (s.seq, s.harmless)).collect();
    assert_eq!(harmless, [(early, true), (late, false)]);
    assert_eq!((w.stale_device_accesses_after_release, w.harmless_stale_accesses), (1, 1));
    assert!(!w.open && w.failed_invalidation.is_none());
}

/// An invalidation after which the device still hits its stale entry
/// did not stop the window: it is reported as failed, and the window
/// stays open (S4/S8: a leaf-only or mis-sized range).
#[test]
fn invalidation_that_failed_to_stop_a_stale_access() {
    let g = source::GUEST;
    let d = source::DEVICE;
    let table = X & !0x1f_ffff;
    let mut b = B { recs: Vec::new(), seq: 0 };
    b.push(g, 0, Kind::IterBegin, 0, 0, 0);
    b.push(g, 0, Kind::MmSwitch, 0, 0x300_0000, 0);
    b.push(d, 0, Kind::IotlbFill, X, 0x1234_5067, 0x1234_5000);
    b.push(g, 0, Kind::PtlAcquire, table, 0x300_1000, 0);
    b.push(g, 0, Kind::PteChange, X, 0x1234_5067, 0);
    b.push(g, 0, Kind::PtlRelease, table, 0x300_1000, 0);
    b.push(g, 0, Kind::NotifierBegin, 0, u64::MAX, 0);
    let inv = b.push(d, UNIT_IOMMU, Kind::InvCompleted, 0, u64::MAX, 0);
    b.push(g, 0, Kind::NotifierEnd, 0, u64::MAX, 0);
    b.push(d, 0, Kind::DevAccess, X, 1, 0x1234_5000 | dev_access::STALE);
    b.push(g, 0, Kind::MmSwitch, 0, 0, 0);
    b.push(g, 0, Kind::IterEnd, 0, 0, 0);
    let threads = vec![ThreadMeta { name: "D0".into(), kind: crate::format::ThreadKind::Device }];
    let (_, w) = analyse_run(0, &run_of(b.recs, threads, 1), Options::default());
    assert_eq!(w[0].failed_invalidation.as_ref().map(|v| v.seq), Some(inv));
    assert!(w[0].open, "{:#?}", w[0]);
    assert_eq!(w[0].stale_device_accesses_after_release, 1);

    // S8 on v6.6: the zap's own notifier call is given the flush-all
    // range that the VT-d driver turned into nothing (no descriptor).
    let mut b = B { recs: Vec::new(), seq: 0 };
    b.push(g, 0, Kind::IterBegin, 0, 0, 0);
    b.push(g, 0, Kind::MmSwitch, 0, 0x300_0000, 0);
    b.push(d, 0, Kind::IotlbFill, X, 0x1234_5067, 0x1234_5000);
    b.push(g, 0, Kind::OpBegin, X, abi::litmus::Op::Madvise as u64, 0);
    b.push(g, 0, Kind::PtlAcquire, table, 0x300_1000, 0);
    b.push(g, 0, Kind::PteChange, X, 0x1234_5067, 0);
    b.push(g, 0, Kind::PtlRelease, table, 0x300_1000, 0);
    b.push(g, 0, Kind::NotifierBegin, u64::MAX, u64::MAX, 0);
    let empty = b.push(g, 0, Kind::NotifierEnd, u64::MAX, u64::MAX, 0);
    b.push(g, 0, Kind::OpEnd, X, abi::litmus::Op::Madvise as u64, 0);
    b.push(d, 0, Kind::DevAccess, X, 2, 0x1234_5000 | dev_access::STALE);
    b.push(g, 0, Kind::MmSwitch, 0, 0, 0);
    b.push(g, 0, Kind::IterEnd, 0, 0, 0);
    let threads = vec![ThreadMeta { name: "D0".into(), kind: crate::format::ThreadKind::Device }];
    let (_, w) = analyse_run(0, &run_of(b.recs, threads, 1), Options::default());
    assert_eq!(w[0].failed_invalidation.as_ref().map(|v| (v.seq, v.by)), Some((empty, "notifier")));
    assert!(w[0].open);
}
