//! The device end to end over guest memory: DMA primitives, faults and page
//! requests, stale hits, stale walks (seed 003), the invalidation queue and
//! its error handling, registers.

mod common;

use abi::iommu::{self as wire, iqe, reg, status, AccessOp, DevTlbScope, FaultReason, InvDesc, PageRequest};
use common::*;
use iommu::pagetable::{pte, PageSize};
use iommu::{
    mem, CacheConfig, CacheKind, DmaError, Event, EvictReason, Eviction, IommuConfig, Msi, MsiSource, Replacement,
    Source, StaleCause,
};
use vm_memory::{Bytes, GuestAddress};

const X: u64 = 0x7f00_0000_0000;
const Y: u64 = X + 0x1000;
const PX: u64 = DATA;
const PY: u64 = DATA + 0x1000;
const PZ: u64 = DATA + 0x2000;

fn env() -> Env {
    let mut e = Env::new(IommuConfig::default());
    e.map(X, PX, USER_RW);
    e.map(Y, PY, USER_RW);
    mem::store_u64(&e.mem, PX, 0x11).unwrap();
    mem::store_u64(&e.mem, PY, 0x22).unwrap();
    mem::store_u64(&e.mem, PZ, 0x33).unwrap();
    e
}

fn fault_of(r: Result<u64, DmaError>) -> iommu::DeviceFault {
    match r {
        Err(DmaError::Fault(f)) => f,
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[test]
fn dma_primitives_and_accessed_dirty() {
    let mut e = env();
    let m = &e.mem;
    assert_eq!(e.iommu.dma_load_u64(PASID, X, m), Ok(0x11));
    assert_eq!(e.pte(X) & (pte::A | pte::D), pte::A, "a read sets A only");
    e.iommu.dma_store_u64(PASID, X + 8, 5, m).unwrap();
    assert_eq!(e.pte(X) & (pte::A | pte::D), pte::A | pte::D, "a write sets D");
    assert_eq!(mem::load_u64(m, PX + 8), Ok(5));
    assert_eq!(e.iommu.dma_xchg_u64(PASID, X + 8, 7, m), Ok(5));
    assert_eq!(e.iommu.dma_fetch_add_u64(PASID, X + 8, 3, m), Ok(7));
    assert_eq!(e.iommu.dma_cmpxchg_u64(PASID, X + 8, 10, 12, m), Ok(10));
    assert_eq!(e.iommu.dma_cmpxchg_u64(PASID, X + 8, 10, 13, m), Ok(12));
    assert_eq!(mem::load_u64(m, PX + 8), Ok(12));
    assert_eq!(e.iommu.dma_load_u64(PASID, X + 4, m), Err(DmaError::Misaligned { va: X + 4 }));
    e.iommu.prefetch(PASID, Y, m).unwrap();
    assert_eq!(e.pte(Y) & (pte::A | pte::D), pte::A);
    let s = e.iommu.stats();
    assert_eq!((s.walks, s.iotlb_hits), (3, 4), "load walks, store re-walks for D, prefetch of Y walks");
    let ev = e.events();
    assert!(ev
        .iter()
        .any(|x| matches!(x, Event::Access { op: iommu::DmaOp::FetchAdd, old: 7, new: 10, stale: false, .. })));
    assert!(
        ev.iter().any(|x| matches!(x, Event::Evict { reason: EvictReason::Refill, .. })),
        "clean entry dropped for the write"
    );
    let walk = ev.iter().find_map(|x| match x {
        Event::Walk { path, pwc_level: None, .. } => Some(*path),
        _ => None,
    });
    assert_eq!(walk.unwrap().len(), 4);
    assert!(ev.iter().any(|x| matches!(x, Event::Fill { cache: CacheKind::Iotlb, pa, size: PageSize::Size4K, dirty: true, .. } if *pa == PX + 8)));
}

#[test]
fn read_only_write_faults_and_queues_a_page_request() {
    let mut e = env();
    e.map(X + 0x10_0000, PZ, USER_RO);
    let va = X + 0x10_0000 + 0x18;
    let f = fault_of(e.iommu.dma_store_u64(PASID, va, 1, &e.mem).map(|_| 0));
    assert_eq!(f.request.reason, FaultReason::WriteToReadOnly);
    assert_eq!(f.request.op, AccessOp::Write);
    assert_eq!((f.request.level, f.request.va, f.request.pasid), (1, va, PASID));
    assert_eq!(f.request.entry & pte::ADDR_MASK, PZ);
    assert!(f.queued);
    assert_eq!(f.msi, Some(Msi { source: MsiSource::PageRequest, address: MSI_ADDR, data: 0x42 }));
    assert_eq!(mem::load_u64(&e.mem, PZ), Ok(0x33), "nothing written");
    assert_eq!(e.iommu.mmio_read(reg::PQT), 32);
    assert_ne!(e.iommu.mmio_read(reg::STATUS) & status::PPR, 0);
    let rec: [u64; 4] = e.mem.read_obj(GuestAddress(PRQ)).unwrap();
    assert_eq!(PageRequest::decode(rec), Some(f.request));
    // Reading is allowed.
    assert_eq!(e.iommu.dma_load_u64(PASID, va, &e.mem), Ok(0));
    // A hole faults not-present at the level where the walk stopped.
    let f = fault_of(e.iommu.dma_load_u64(PASID, 0x1000, &e.mem));
    assert_eq!((f.request.reason, f.request.level), (FaultReason::NotPresent, 4));
    let f = fault_of(e.iommu.dma_load_u64(PASID, X + 0x2000, &e.mem));
    assert_eq!((f.request.reason, f.request.level), (FaultReason::NotPresent, 1));
    assert_eq!(e.iommu.mmio_read(reg::PQT), 96);
}

#[test]
fn supervisor_pages_and_privileged_pasids() {
    let mut e = env();
    e.map(X + 0x20_0000, PZ, pte::P | pte::RW); // no US
    let va = X + 0x20_0000;
    let f = fault_of(e.iommu.dma_load_u64(PASID, va, &e.mem));
    assert_eq!(f.request.reason, FaultReason::UserToSupervisor);
    assert!(!f.request.privileged);
    // PASID 2 is bound to the same tables with PRIV: supervisor requests.
    mem::store_u64(&e.mem, PASID_TABLE + 16, wire::pasid::entry(e.pt.root(), true)).unwrap();
    assert_eq!(e.iommu.dma_load_u64(2, va, &e.mem), Ok(0x33));
}

#[test]
fn pasid_table_faults() {
    let mut e = env();
    let reason = |e: &mut Env, pasid| fault_of(e.iommu.dma_load_u64(pasid, X, &e.mem)).request.reason;
    assert_eq!(reason(&mut e, 3), FaultReason::PasidNotPresent);
    assert_eq!(reason(&mut e, 512), FaultReason::PasidOutOfRange);
    mem::store_u64(&e.mem, PASID_TABLE + 24, wire::pasid::entry(e.pt.root(), false) | 1 << 60).unwrap();
    assert_eq!(reason(&mut e, 3), FaultReason::PasidEntryInvalid);
    let _ = e.iommu.mmio_write(reg::PASID_TABLE, 0, &e.mem);
    assert_eq!(reason(&mut e, 1), FaultReason::PasidTableNotConfigured);
    // A table outside RAM.
    let _ = e.iommu.mmio_write(reg::PASID_TABLE, 0x10_0000_0000, &e.mem);
    assert_eq!(reason(&mut e, 1), FaultReason::PasidEntryInvalid);
}

#[test]
fn translation_to_non_ram_is_a_bad_target() {
    let mut e = env();
    e.set_pte(X, 0x10_0000_0000 | USER_RW);
    assert_eq!(
        e.iommu.dma_load_u64(PASID, X, &e.mem),
        Err(DmaError::BadTarget { pasid: PASID, va: X, pa: 0x10_0000_0000 })
    );
}

#[test]
fn page_request_queue_overflow_sets_pro_until_consumed() {
    let mut e = env();
    for i in 0..127u64 {
        assert!(fault_of(e.iommu.dma_load_u64(PASID, 0x1000 + i * 8, &e.mem)).queued);
    }
    let f = fault_of(e.iommu.dma_load_u64(PASID, 0x1000, &e.mem));
    assert!(!f.queued && f.msi.is_none());
    assert_ne!(e.iommu.mmio_read(reg::STATUS) & status::PRO, 0);
    assert_eq!(e.iommu.stats().page_requests_dropped, 1);
    // The driver consumes everything and clears the status bits.
    let pqt = e.iommu.mmio_read(reg::PQT);
    let _ = e.iommu.mmio_write(reg::PQH, pqt, &e.mem);
    let _ = e.iommu.mmio_write(reg::STATUS, status::PPR | status::PRO, &e.mem);
    assert_eq!(e.iommu.mmio_read(reg::STATUS), 0);
    assert!(fault_of(e.iommu.dma_load_u64(PASID, 0x1000, &e.mem)).queued);
    // Bad head values are ignored.
    let _ = e.iommu.mmio_write(reg::PQH, 0x1000, &e.mem);
    let _ = e.iommu.mmio_write(reg::PQH, 8, &e.mem);
    assert_eq!(e.iommu.mmio_read(reg::PQH), pqt);
}

#[test]
fn stale_hits_are_used_and_reported_until_invalidated() {
    let mut e = env();
    assert_eq!(e.iommu.dma_load_u64(PASID, X, &e.mem), Ok(0x11));
    // The guest remaps X to PZ without invalidating the device.
    e.set_pte(X, PZ | USER_RW);
    e.events();
    assert_eq!(e.iommu.dma_load_u64(PASID, X, &e.mem), Ok(0x11), "device uses the stale translation");
    let ev = e.events();
    assert!(ev.contains(&Event::StaleHit {
        cache: CacheKind::Iotlb,
        pasid: PASID,
        va: X,
        cached_pa: PX,
        cached_pte: PX | USER_RW | pte::A,
        cause: StaleCause::Remapped { pa: PZ, pte: PZ | USER_RW },
    }));
    assert!(ev.iter().any(|x| matches!(x, Event::Access { stale: true, pa, .. } if *pa == PX)));
    // Unmapped is stale too; write-protected is not, for a load; back to
    // the cached mapping is not.
    e.set_pte(X, 0);
    assert_eq!(e.iommu.dma_load_u64(PASID, X, &e.mem), Ok(0x11));
    e.set_pte(X, PX | USER_RO);
    assert_eq!(e.iommu.dma_load_u64(PASID, X, &e.mem), Ok(0x11));
    e.set_pte(X, PX | USER_RW | pte::A);
    assert_eq!(e.iommu.dma_load_u64(PASID, X, &e.mem), Ok(0x11));
    assert_eq!(e.iommu.stats().stale_hits, 2);
    let causes: Vec<_> = e
        .events()
        .into_iter()
        .filter_map(|x| match x {
            Event::StaleHit { cause, .. } => Some(cause),
            _ => None,
        })
        .collect();
    assert_eq!(causes.len(), 1);
    assert!(matches!(causes[0], StaleCause::Unmapped(iommu::pagetable::WalkFault::NotPresent { level: 1, .. })));
    e.set_pte(X, PZ | USER_RW);
    e.qi_submit_sync(&[InvDesc::PasidPages { pasid: PASID, addr: X, am: 0, leaf_only: true }]);
    let before = e.iommu.stats().stale_hits;
    assert_eq!(e.iommu.dma_load_u64(PASID, X, &e.mem), Ok(0x33));
    assert_eq!(e.iommu.dma_load_u64(PASID, X, &e.mem), Ok(0x33));
    assert_eq!(e.iommu.stats().stale_hits, before);
}

#[test]
fn write_protect_is_a_stale_hit_for_writes() {
    let mut e = env();
    e.iommu.dma_store_u64(PASID, X, 1, &e.mem).unwrap();
    e.set_pte(X, PX | USER_RO | pte::A | pte::D);
    e.events();
    e.iommu.dma_store_u64(PASID, X, 2, &e.mem).unwrap();
    assert_eq!(mem::load_u64(&e.mem, PX), Ok(2), "the store went through the stale writable entry");
    assert!(e.events().iter().any(|x| matches!(
        x,
        Event::StaleHit { cause: StaleCause::PermissionRevoked { reason: FaultReason::WriteToReadOnly, .. }, .. }
    )));
}

/// Seed 003: the paging-structure cache still points at a last-level table
/// the guest freed; a leaf-only invalidation leaves it there.
fn seed003(pwc: bool, leaf_only: bool) -> Result<u64, DmaError> {
    let mut cfg = IommuConfig { track_tables: true, ..IommuConfig::default() };
    if !pwc {
        cfg.pwc = None;
    }
    let mut e = Env::new(cfg);
    e.map(X, PX, USER_RW);
    e.map(Y, PY, USER_RW);
    for &t in e.pt.tables() {
        e.iommu.table_allocated(t);
    }
    // D0 walks x: the IOTLB holds x, the PWC the PML4E/PDPTE/PDE path.
    assert_eq!(e.iommu.dma_load_u64(PASID, X, &e.mem), Ok(0));
    if pwc {
        assert_eq!(e.iommu.pwc_len(), 3);
    }
    // munmap: clear the PDE, free the PT page; the invalidation covers x's
    // page only, and with reset-range=clear-freed-tables it is leaf-only.
    let pde = e.pt.entry_gpa(&e.mem, X, 2).unwrap();
    let pt_page = e.pte_gpa(X) & !0xfff;
    mem::store_u64(&e.mem, pde, 0).unwrap();
    e.iommu.table_freed(pt_page);
    e.qi_submit_sync(&[InvDesc::PasidPages { pasid: PASID, addr: X, am: 0, leaf_only }]);
    // The page is reused (alloc z) and written.
    for i in 0..512 {
        mem::store_u64(&e.mem, pt_page + i * 8, PZ | USER_RW).unwrap();
    }
    // D0 touches the neighbour y: IOTLB miss.
    let r = e.iommu.dma_load_u64(PASID, Y, &e.mem);
    if let Err(DmaError::StaleWalk { table, level, .. }) = r {
        assert_eq!((table, level), (pt_page, 1));
        let ev = e.events();
        assert!(ev.iter().any(|x| matches!(x, Event::PwcHit { level: 2, table, .. } if *table == pt_page)));
        assert!(ev.iter().any(|x| matches!(
            x,
            Event::StaleWalk { via_pwc: true, entry: Some(v), .. } if *v == PZ | USER_RW
        )));
    }
    r
}

#[test]
fn seed003_leaf_only_invalidation_with_pwc_is_a_stale_walk() {
    assert!(matches!(seed003(true, true), Err(DmaError::StaleWalk { .. })));
}

#[test]
fn seed003_full_invalidation_or_no_pwc_faults_cleanly() {
    for (pwc, leaf_only) in [(true, false), (false, true), (false, false)] {
        let f = fault_of(seed003(pwc, leaf_only));
        assert_eq!(
            (f.request.reason, f.request.level),
            (FaultReason::NotPresent, 2),
            "pwc={pwc} leaf_only={leaf_only}"
        );
    }
}

#[test]
fn without_tracking_freed_tables_are_walked() {
    let mut e = env();
    e.iommu.dma_load_u64(PASID, X, &e.mem).unwrap();
    e.iommu.table_freed(e.pte_gpa(X) & !0xfff);
    e.qi_submit_sync(&[InvDesc::PasidPages { pasid: PASID, addr: X, am: 0, leaf_only: true }]);
    assert_eq!(e.iommu.dma_load_u64(PASID, Y, &e.mem), Ok(0x22));
    e.iommu.set_table_tracking(true);
    assert_eq!(e.iommu.dma_load_u64(PASID, Y + 8, &e.mem), Ok(0), "IOTLB hit: no walk");
    assert!(matches!(e.iommu.dma_load_u64(PASID, X, &e.mem), Err(DmaError::StaleWalk { .. })));
}

#[test]
fn wait_descriptor_writes_status_and_raises_msi() {
    let mut e = env();
    let out = e.submit(&[InvDesc::Wait {
        status_addr: Some(STATUS_WORD + 4),
        data: 0xfeed,
        irq: true,
        fence: false,
        drain_prq: false,
    }]);
    assert_eq!((out.processed, out.error), (1, None));
    assert_eq!(out.msis, vec![Msi { source: MsiSource::InvalidationComplete, address: MSI_ADDR, data: 0x41 }]);
    let v: u32 = e.mem.read_obj(GuestAddress(STATUS_WORD + 4)).unwrap();
    assert_eq!(v, 0xfeed);
    assert_ne!(e.iommu.mmio_read(reg::STATUS) & status::IWC, 0);
    let _ = e.iommu.mmio_write(reg::STATUS, status::IWC, &e.mem);
    assert_eq!(e.iommu.mmio_read(reg::STATUS), 0);
    assert_eq!(e.iommu.mmio_read(reg::IQH), 16);
    assert!(e.events().contains(&Event::WaitCompleted {
        head: 0,
        status_addr: Some(STATUS_WORD + 4),
        data: 0xfeed,
        irq: true
    }));
    // Without IEADDR no MSI, but IWC is still set.
    let _ = e.iommu.mmio_write(reg::IEADDR, 0, &e.mem);
    let out = e.submit(&[InvDesc::Wait { status_addr: None, data: 0, irq: true, fence: false, drain_prq: false }]);
    assert!(out.msis.is_empty());
    assert_ne!(e.iommu.mmio_read(reg::STATUS) & status::IWC, 0);
}

#[test]
fn malformed_descriptor_sets_iqe_stops_and_resumes_after_fix() {
    let mut e = env();
    e.iommu.dma_load_u64(PASID, X, &e.mem).unwrap();
    e.write_desc(InvDesc::Global);
    e.write_raw([0xf, 0, 0, 0]); // unknown type, at byte offset 16
    e.write_desc(InvDesc::Wait { status_addr: Some(STATUS_WORD), data: 9, irq: false, fence: false, drain_prq: false });
    let out = e.doorbell();
    assert_eq!(out.processed, 1);
    assert_eq!(out.error, Some(iommu::QueueError { head: 16, code: iqe::UNKNOWN_TYPE }));
    assert_eq!(out.msis, vec![Msi { source: MsiSource::Fault, address: MSI_ADDR, data: 0x43 }]);
    assert_eq!(e.iommu.iotlb_len(), 0, "the global invalidation before it ran");
    assert_eq!(e.iommu.mmio_read(reg::IQH), 16);
    assert_eq!(e.iommu.mmio_read(reg::IQT), 48);
    assert_ne!(e.iommu.mmio_read(reg::STATUS) & status::IQE, 0);
    assert_eq!(e.iommu.mmio_read(reg::IQERCD), wire::iqe::encode(16, iqe::UNKNOWN_TYPE));
    let st: u32 = e.mem.read_obj(GuestAddress(STATUS_WORD)).unwrap();
    assert_eq!(st, 0, "the wait after the bad descriptor did not run");
    // While IQE is set the doorbell does nothing.
    let out = e.doorbell();
    assert_eq!(out.processed, 0);
    // Like Linux's qi_check_fault: overwrite the bad descriptor, clear IQE.
    let fix = InvDesc::Wait { status_addr: Some(STATUS_WORD), data: 8, irq: false, fence: false, drain_prq: false };
    let [a, b] = fix.encode();
    mem::store_u64(&e.mem, QUEUE + 16, a).unwrap();
    mem::store_u64(&e.mem, QUEUE + 24, b).unwrap();
    let out = e.iommu.mmio_write(reg::STATUS, status::IQE, &e.mem);
    assert_eq!((out.processed, out.error), (2, None));
    let st: u32 = e.mem.read_obj(GuestAddress(STATUS_WORD)).unwrap();
    assert_eq!(st, 9);
    assert_eq!(e.iommu.mmio_read(reg::IQH), 48);
    assert_eq!(e.iommu.mmio_read(reg::IQERCD), 0);
}

#[test]
fn every_kind_of_malformed_input_is_an_error() {
    use abi::iommu::desc::*;
    let pages = TYPE_P_IOTLB | G_PAGES << G_SHIFT | (PASID as u64) << PASID_SHIFT;
    let cases: [([u64; 2], u8); 8] = [
        ([0x7, 0], iqe::UNKNOWN_TYPE),
        ([TYPE_WAIT | 1 << 9, 0], iqe::UNKNOWN_TYPE),
        ([pages | 1 << 12, X], iqe::RESERVED_BITS),
        ([pages, X | 1 << 7], iqe::RESERVED_BITS),
        ([pages, X | 37], iqe::SIZE_ORDER_TOO_BIG),
        ([pages, (X + 0x1000) | 1], iqe::ADDRESS_MISALIGNED),
        ([pages, 0x0001_0000_0000_0000], iqe::NON_CANONICAL),
        ([TYPE_P_IOTLB, 0], iqe::BAD_GRANULARITY),
    ];
    for (words, code) in cases {
        let mut e = env();
        e.write_raw([words[0], words[1], 0, 0]);
        let out = e.doorbell();
        assert_eq!(out.error, Some(iommu::QueueError { head: 0, code }), "{words:x?}");
        assert_eq!(e.iommu.mmio_read(reg::IQH), 0);
    }
    // Status write to a GPA that is not RAM.
    let mut e = env();
    let out = e.submit(&[InvDesc::Wait {
        status_addr: Some(0x10_0000_0000),
        data: 1,
        irq: false,
        fence: false,
        drain_prq: false,
    }]);
    assert_eq!(out.error.map(|x| x.code), Some(iqe::STATUS_WRITE_FAILED));
    // Tail out of range / misaligned: dropped, head unchanged.
    for (tail, code) in
        [(0x1000, iqe::TAIL_OUT_OF_RANGE), (0x18, iqe::TAIL_MISALIGNED), (u64::MAX, iqe::TAIL_OUT_OF_RANGE)]
    {
        let mut e = env();
        let out = e.iommu.mmio_write(reg::IQT, tail, &e.mem);
        assert_eq!(out.error, Some(iommu::QueueError { head: 0, code }));
        assert_eq!(e.iommu.mmio_read(reg::IQT), 0);
    }
    // Queue base outside RAM.
    let mut e = env();
    let _ = e.iommu.mmio_write(reg::IQA, wire::iqa::encode(0x10_0000_0000, false, 0), &e.mem);
    let out = e.iommu.mmio_write(reg::IQT, 16, &e.mem);
    assert_eq!(out.error.map(|x| x.code), Some(iqe::FETCH_FAILED));
    // Tail before IQA.
    let mut i = iommu::Iommu::new(IommuConfig::default()).unwrap();
    let out = i.mmio_write(reg::IQT, 0, &e.mem);
    assert_eq!(out.error.map(|x| x.code), Some(iqe::NOT_CONFIGURED));
}

#[test]
fn wide_descriptors() {
    let mut e = Env::with(IommuConfig::default(), true);
    e.map(X, PX, USER_RW);
    e.iommu.dma_load_u64(PASID, X, &e.mem).unwrap();
    e.qi_submit_sync(&[InvDesc::PasidAll { pasid: PASID }]);
    assert_eq!(e.iommu.mmio_read(reg::IQH), 64);
    assert_eq!(e.iommu.iotlb_len(), 0);
    let [a, b] = InvDesc::Global.encode();
    e.write_raw([a, b, 0, 1]);
    let out = e.doorbell();
    assert_eq!(out.error, Some(iommu::QueueError { head: 64, code: iqe::RESERVED_BITS }));
    // A 16-byte aligned tail is misaligned for 32-byte descriptors.
    let mut e = Env::with(IommuConfig::default(), true);
    let out = e.iommu.mmio_write(reg::IQT, 16, &e.mem);
    assert_eq!(out.error.map(|x| x.code), Some(iqe::TAIL_MISALIGNED));
}

#[test]
fn registers() {
    let mut e = env();
    let i = &mut e.iommu;
    assert_eq!(i.mmio_read(reg::VERSION), wire::VERSION);
    let cap = i.mmio_read(reg::CAP);
    assert_ne!(cap & wire::cap::PWC, 0);
    assert_eq!(cap & wire::cap::DEVTLB, 0);
    assert_eq!((cap >> wire::cap::MAX_AM_SHIFT) & 0xff, 36);
    assert_eq!(cap >> wire::cap::IOTLB_ENTRIES_SHIFT, 64);
    // RO registers ignore writes; unknown offsets read 0.
    let _ = i.mmio_write(reg::VERSION, 5, &e.mem);
    let _ = i.mmio_write(reg::IQH, 0x40, &e.mem);
    assert_eq!(i.mmio_read(reg::VERSION), wire::VERSION);
    assert_eq!(i.mmio_read(reg::IQH), 0);
    assert_eq!(i.mmio_read(0x800), 0);
    assert_eq!(i.mmio_read(reg::IQA + 4), 0);
    // 4-byte halves.
    let _ = i.mmio_write_bytes(reg::PEDATA, &0x99u32.to_le_bytes(), &e.mem);
    let _ = i.mmio_write_bytes(reg::IEADDR + 4, &1u32.to_le_bytes(), &e.mem);
    assert_eq!(i.mmio_read(reg::PEDATA), 0x99);
    assert_eq!(i.mmio_read(reg::IEADDR), 1 << 32 | MSI_ADDR);
    let mut b = [0u8; 4];
    i.mmio_read_bytes(reg::IEADDR + 4, &mut b);
    assert_eq!(u32::from_le_bytes(b), 1);
    let mut b8 = [0u8; 8];
    i.mmio_read_bytes(reg::VERSION, &mut b8);
    assert_eq!(u64::from_le_bytes(b8), wire::VERSION);
    // A 4-byte doorbell works like an 8-byte one.
    e.write_desc(InvDesc::Global);
    let out = e.iommu.mmio_write_bytes(reg::IQT, &16u32.to_le_bytes(), &e.mem);
    assert_eq!(out.processed, 1);
    // Rewriting IQA resets head and tail.
    let _ = e.iommu.mmio_write(reg::IQA, wire::iqa::encode(QUEUE, false, 1), &e.mem);
    assert_eq!((e.iommu.mmio_read(reg::IQH), e.iommu.mmio_read(reg::IQT)), (0, 0));
    // Odd sizes are ignored.
    let out = e.iommu.mmio_write_bytes(reg::IQT, &[1, 0], &e.mem);
    assert_eq!(out, iommu::MmioOutcome::default());
}

#[test]
fn device_tlb_needs_its_own_invalidation() {
    let cfg = IommuConfig { devtlb: Some(CacheConfig::new(4, 4, Replacement::Lru)), ..IommuConfig::default() };
    let mut e = Env::new(cfg);
    e.map(X, PX, USER_RW);
    mem::store_u64(&e.mem, PZ, 0x33).unwrap();
    assert_ne!(e.iommu.mmio_read(reg::CAP) & wire::cap::DEVTLB, 0);
    e.iommu.dma_load_u64(PASID, X, &e.mem).unwrap();
    assert_eq!((e.iommu.iotlb_len(), e.iommu.devtlb_len()), (1, 1));
    e.set_pte(X, PZ | USER_RW);
    e.qi_submit_sync(&[InvDesc::PasidPages { pasid: PASID, addr: X, am: 0, leaf_only: false }]);
    assert_eq!((e.iommu.iotlb_len(), e.iommu.devtlb_len()), (0, 1));
    let t = e.iommu.translate(PASID, X, AccessOp::Read, &e.mem).unwrap();
    assert_eq!((t.source, t.stale, t.pa), (Source::DevTlb, true, PX));
    e.qi_submit_sync(&[InvDesc::DevTlb(DevTlbScope::Pages { pasid: PASID, addr: X, am: 0 })]);
    assert_eq!(e.iommu.devtlb_len(), 0);
    assert_eq!(e.iommu.dma_load_u64(PASID, X, &e.mem), Ok(0x33));
    // An IOTLB hit refills the device TLB.
    e.qi_submit_sync(&[InvDesc::DevTlb(DevTlbScope::All)]);
    let t = e.iommu.translate(PASID, X, AccessOp::Read, &e.mem).unwrap();
    assert_eq!(t.source, Source::Iotlb);
    assert_eq!(e.iommu.devtlb_len(), 1);
}

#[test]
fn pasid_and_global_invalidations() {
    let mut e = env();
    mem::store_u64(&e.mem, PASID_TABLE + 16, wire::pasid::entry(e.pt.root(), false)).unwrap();
    for p in [1, 2] {
        e.iommu.dma_load_u64(p, X, &e.mem).unwrap();
        e.iommu.dma_load_u64(p, Y, &e.mem).unwrap();
    }
    assert_eq!((e.iommu.iotlb_len(), e.iommu.pwc_len()), (4, 6));
    e.qi_submit_sync(&[InvDesc::PasidAll { pasid: 1 }]);
    assert!(e.iommu.iotlb_entries().iter().all(|(k, _)| k.pasid == 2));
    assert!(e.iommu.pwc_entries().iter().all(|(k, _)| k.pasid == 2));
    assert_eq!((e.iommu.iotlb_len(), e.iommu.pwc_len()), (2, 3));
    e.qi_submit_sync(&[InvDesc::Global]);
    assert_eq!((e.iommu.iotlb_len(), e.iommu.pwc_len()), (0, 0));
    let completed: Vec<_> = e
        .events()
        .into_iter()
        .filter_map(|x| match x {
            Event::InvalidationCompleted { iotlb, pwc, .. } => Some((iotlb, pwc)),
            _ => None,
        })
        .collect();
    assert_eq!(completed, vec![(2, 3), (2, 3)]);
}

#[test]
fn invalidating_part_of_a_large_page_drops_every_piece() {
    let mut e = Env::new(IommuConfig::default());
    let va = 0x4000_0000;
    e.pt.map_sized(&e.mem, va, 0x40_0000, PageSize::Size2M, USER_RW, iommu::build::TABLE_FLAGS).unwrap();
    e.iommu.dma_load_u64(PASID, va + 0x1000, &e.mem).unwrap();
    e.iommu.dma_load_u64(PASID, va + 0x1f_f000, &e.mem).unwrap();
    e.iommu.dma_load_u64(PASID, 0x4000_0000 - 0x1000, &e.mem).ok();
    assert_eq!(e.iommu.iotlb_len(), 2);
    e.qi_submit_sync(&[InvDesc::PasidPages { pasid: PASID, addr: va + 0x10_0000, am: 0, leaf_only: true }]);
    assert_eq!(e.iommu.iotlb_len(), 0);
}

#[test]
fn range_invalidation_is_exact_for_small_pages() {
    let mut e = env();
    for i in 0..8u64 {
        e.map(0x10_0000 + i * 0x1000, PZ, USER_RW);
        e.iommu.dma_load_u64(PASID, 0x10_0000 + i * 0x1000, &e.mem).unwrap();
    }
    // 4 pages at 0x104000.
    e.qi_submit_sync(&[InvDesc::PasidPages { pasid: PASID, addr: 0x10_4000, am: 2, leaf_only: true }]);
    let mut left: Vec<u64> = e.iommu.iotlb_entries().iter().map(|(k, _)| k.vpn << 12).collect();
    left.sort();
    assert_eq!(left, vec![0x10_0000, 0x10_1000, 0x10_2000, 0x10_3000]);
}

#[test]
fn evict_one_drops_everything_on_each_access() {
    let mut cfg = IommuConfig::default();
    cfg.set_iotlb_eviction(Eviction::from_ppm(1_000_000));
    cfg.set_pwc_eviction(Eviction::from_ppm(1_000_000));
    let mut e = Env::new(cfg);
    e.map(X, PX, USER_RW);
    for _ in 0..5 {
        e.iommu.dma_load_u64(PASID, X, &e.mem).unwrap();
    }
    let s = e.iommu.stats();
    assert_eq!((s.iotlb_hits, s.pwc_hits, s.walks), (0, 0, 5));
    assert!(e.events().iter().any(|x| matches!(x, Event::Evict { reason: EvictReason::Random, .. })));
    // evict:0 is lazy.
    let mut cfg = IommuConfig::default();
    cfg.set_iotlb_eviction(Eviction::from_ppm(0));
    let mut e = Env::new(cfg);
    e.map(X, PX, USER_RW);
    for _ in 0..5 {
        e.iommu.dma_load_u64(PASID, X, &e.mem).unwrap();
    }
    assert_eq!(e.iommu.stats().iotlb_hits, 4);
}

#[test]
fn evict_probability_is_seeded_and_roughly_right() {
    let run = |seed| {
        let mut cfg = IommuConfig { seed, ..IommuConfig::default() };
        cfg.iotlb.eviction = Eviction::Evict(0.25);
        let mut e = Env::new(cfg);
        e.map(X, PX, USER_RW);
        for _ in 0..2000 {
            e.iommu.dma_load_u64(PASID, X, &e.mem).unwrap();
        }
        e.iommu.stats().iotlb_hits
    };
    assert_eq!(run(7), run(7));
    let hits = run(7);
    // Each access after a fill hits with probability 0.75.
    assert!((1350..1650).contains(&hits), "{hits}");
}

#[test]
fn typed_settings_and_bad_geometry() {
    let mut cfg = IommuConfig::default();
    cfg.set_pwc(false);
    assert!(cfg.pwc.is_none());
    cfg.set_pwc(true);
    assert_eq!(cfg.pwc, Some(IommuConfig::DEFAULT_PWC));
    cfg.set_devtlb(true);
    assert!(cfg.devtlb.is_some());
    cfg.set_iotlb_eviction(Eviction::from_ppm(250_000));
    assert_eq!(cfg.devtlb.unwrap().eviction, Eviction::Evict(0.25));
    assert!("evict:2".parse::<Eviction>().is_err());
    cfg.iotlb.sets = 0;
    assert!(iommu::Iommu::new(cfg).is_err());
}

#[test]
fn reset_returns_to_power_on() {
    let mut e = env();
    e.iommu.dma_load_u64(PASID, X, &e.mem).unwrap();
    e.iommu.reset();
    assert_eq!(e.iommu.iotlb_len(), 0);
    assert_eq!(e.iommu.mmio_read(reg::IQA), 0);
    assert_eq!(e.iommu.stats().translations, 0);
    assert_eq!(fault_of(e.iommu.dma_load_u64(PASID, X, &e.mem)).request.reason, FaultReason::PasidTableNotConfigured);
}
