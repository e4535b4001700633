//! The hypercall services against guest memory, without KVM: each op's
//! effect, its argument checks, and the caps on what a guest can make the
//! VMM keep.

use abi::config::TlbModel;
use abi::dma;
use abi::hypercall::calls::*;
use abi::hypercall::{
    BatchEntry, Empty, FillResult, Flag, FlushKind, Metric, Op, Outcome, PageOpKind, PtOpKind, TableEvent,
    TlbConfigAction, TlbModelKind,
};
use abi::layout::{self, PAGE_SIZE, PT_BASE, USER_BASE};
use abi::zap;
use iommu::pagetable::pte;
use vm_memory::{Bytes, GuestAddress};

use crate::fuzzing::TestVm;
use crate::vstate::{Exit, Flow, GuestFault};

fn lazy() -> TestVm {
    TestVm::new(TlbModel::Lazy)
}

fn word(vm: &TestVm, gpa: u64) -> u64 {
    vm.mem.read_obj(GuestAddress(gpa)).unwrap()
}

fn pt_op(vm: &TestVm, kind: PtOpKind, entry: u64, a: u64, b: u64) -> Result<PtOpReply, GuestFault> {
    vm.call::<PtOp>(0, PtOpRequest { kind, entry, a, b }, &[]).map(|r| r.0)
}

#[test]
fn echo_inverts_words_and_reverses_data() {
    let vm = lazy();
    let (r, data) = vm.call::<Echo>(1, EchoWords { words: [1, 2, 3, u64::MAX] }, b"abc").unwrap();
    assert_eq!(r.words, [!1, !2, !3, 0]);
    assert_eq!(data, b"cba");
}

#[test]
fn an_unrecovered_exception_is_a_typed_fault_and_is_remembered() {
    let vm = lazy();
    let e = ExceptionReport {
        vector: 14,
        error_code: 2,
        rip: 0x40_1234,
        cr2: 0x8000,
        rsp: 0x1000,
        cs: 8,
        recovered: Flag::YES,
    };
    vm.call::<Exception>(0, e, &[]).unwrap();
    let (last, _) = vm.call::<LastException>(0, Empty, &[]).unwrap();
    assert_eq!((last.vector, last.error_code, last.rip, last.cr2), (14, 2, 0x40_1234, 0x8000));
    // vCPU 1 has its own record.
    assert_eq!(vm.call::<LastException>(1, Empty, &[]).unwrap().0.vector, 0);
    let fault = vm.call::<Exception>(0, ExceptionReport { recovered: Flag::NO, ..e }, &[]).unwrap_err();
    assert_eq!(fault.rip(), Some(0x40_1234));
    assert_eq!(fault.to_string(), "unhandled exception #PF (vector 14), error code 0x2, CR2 0x8000, RSP 0x1000");
}

#[test]
fn assertions_fatal_noted_and_remembered() {
    let vm = lazy();
    vm.call::<TestBegin>(0, Empty, b"t.one").unwrap();
    let report = AssertReport { line: 42, fatal: Flag::NO, expected: Flag::NO };
    vm.call::<AssertFail>(0, report, b"src/x.rs\0answer is 41").unwrap();
    vm.call::<TestEnd>(0, TestEndReport { outcome: Outcome::Fail }, b"t.one\0").unwrap();
    assert_eq!(vm.selftest.results().lines, vec!["FAIL t.one: src/x.rs:42: answer is 41"]);
    let (r, data) = vm.call::<LastAssert>(0, Empty, &[]).unwrap();
    assert_eq!((r.line, data.as_slice()), (42, &b"src/x.rs\0answer is 41"[..]));
    let e = vm.call::<AssertFail>(0, AssertReport { fatal: Flag::YES, ..report }, b"f.rs\0boom").unwrap_err();
    assert_eq!(e.to_string(), "guest assertion failed at f.rs:42: boom");
}

#[test]
fn sub_operations_that_are_not_enum_values_are_refused() {
    let vm = lazy();
    // PT_OP kind 9 does not exist; a flag word of 2 is neither yes nor no.
    let e = vm.hypercall_raw(0, Op::PtOp as u64, [9, PT_BASE, 0, 0, 0, 0, 0, 0], &[]).unwrap_err();
    assert_eq!(e.to_string(), "bad hypercall: PT_OP: PtOpRequest.kind = 0x9 is not a valid value");
    let e = vm.hypercall_raw(0, Op::AssertFail as u64, [1, 2, 0, 0, 0, 0, 0, 0], &[]).unwrap_err();
    assert!(e.to_string().contains("AssertReport.fatal = 0x2"), "{e}");
}

#[test]
fn pt_ops_are_atomic_and_confined_to_the_page_table_region() {
    let vm = lazy();
    let e = PT_BASE + 0x18;
    assert_eq!(pt_op(&vm, PtOpKind::Set, e, 0x1007, 0).unwrap(), PtOpReply { old: 0, changed: Flag::YES });
    assert_eq!(pt_op(&vm, PtOpKind::Cmpxchg, e, 5, 9).unwrap(), PtOpReply { old: 0x1007, changed: Flag::NO });
    assert_eq!(pt_op(&vm, PtOpKind::ClearBits, e, 2, 0).unwrap().old, 0x1007);
    assert_eq!(pt_op(&vm, PtOpKind::SetBits, e, 0x60, 0).unwrap().old, 0x1005);
    assert_eq!(word(&vm, e), 0x1065);
    assert_eq!(pt_op(&vm, PtOpKind::Clear, e, 0, 0).unwrap().old, 0x1065);
    for bad in [PT_BASE + 4, layout::SHADOW_BASE, layout::FREE_START, PT_BASE - 8, u64::MAX - 7] {
        let err = pt_op(&vm, PtOpKind::Set, bad, 1, 0).unwrap_err();
        assert!(err.to_string().starts_with("bad hypercall: page-table op on GPA"), "{err}");
    }
}

#[test]
fn a_new_page_table_page_starts_empty_and_must_be_in_the_region() {
    let vm = lazy();
    let t = PT_BASE + 5 * PAGE_SIZE;
    vm.mem.write_obj(0xdeadu64, GuestAddress(t + 8)).unwrap();
    vm.call::<PtTable>(0, PtTableRequest { event: TableEvent::Allocated, table: t, level: 1 }, &[]).unwrap();
    assert_eq!(word(&vm, t + 8), 0);
    vm.call::<PtTable>(0, PtTableRequest { event: TableEvent::Freed, table: t, level: 1 }, &[]).unwrap();
    for bad in [t + 8, layout::SHADOW_BASE, layout::FREE_START] {
        let r = vm.call::<PtTable>(0, PtTableRequest { event: TableEvent::Allocated, table: bad, level: 1 }, &[]);
        assert!(r.unwrap_err().to_string().contains("not a page of the page-table region"));
    }
}

#[test]
fn page_ops_touch_data_pages_only_with_checked_bounds() {
    let vm = lazy();
    let (a, b) = (layout::FREE_START, layout::FREE_START + PAGE_SIZE);
    vm.mem.write_obj(7u64, GuestAddress(b)).unwrap();
    let op = |kind, dst, src| vm.call::<PageOp>(0, PageOpRequest { kind, dst, src }, &[]).map(|r| r.0.same.get());
    assert!(!op(PageOpKind::Compare, a, b).unwrap());
    op(PageOpKind::Copy, a, b).unwrap();
    assert!(op(PageOpKind::Compare, a, b).unwrap());
    op(PageOpKind::Zero, b, 0).unwrap();
    assert_eq!(word(&vm, b), 0);
    // The page-table region, a misaligned page, the last page of the
    // address space (gpa + 4096 would overflow), beyond RAM.
    for bad in [PT_BASE, a + 8, !0xfff, layout::MIN_MEM] {
        let e = op(PageOpKind::Zero, bad, 0).unwrap_err();
        assert!(e.to_string().contains("not a 4 KiB-aligned data page"), "{bad:#x}: {e}");
    }
}

/// Builds a 4-level mapping of `va` → `pa` with the guest's own ops.
fn map(vm: &TestVm, va: u64, pa: u64, flags: u64) -> u64 {
    let tables = [PT_BASE, PT_BASE + PAGE_SIZE, PT_BASE + 2 * PAGE_SIZE, PT_BASE + 3 * PAGE_SIZE];
    for (i, t) in tables.iter().enumerate() {
        vm.call::<PtTable>(0, PtTableRequest { event: TableEvent::Allocated, table: *t, level: 4 - i as u64 }, &[])
            .unwrap();
    }
    for level in (2..=4u8).rev() {
        let table = tables[4 - level as usize];
        let entry = table + 8 * iommu::pagetable::va_index(va, level);
        pt_op(vm, PtOpKind::Set, entry, tables[5 - level as usize] | pte::P | pte::RW | pte::US, 0).unwrap();
    }
    let leaf = tables[3] + 8 * iommu::pagetable::va_index(va, 1);
    pt_op(vm, PtOpKind::Set, leaf, pa | flags, 0).unwrap();
    leaf
}

#[test]
fn fill_walks_the_guest_tables_and_stays_until_flushed() {
    let vm = lazy();
    let (va, pa) = (USER_BASE + 0x5000, layout::FREE_START + 0x3000);
    let leaf = map(&vm, va, pa, pte::P | pte::RW | pte::US);
    let (sw, _) = vm.call::<SwitchMm>(0, SwitchMmRequest { pgd: PT_BASE }, &[]).unwrap();
    assert!((layout::SHADOW_BASE..layout::FREE_START).contains(&sw.cr3));
    let (f, _) = vm.call::<Fill>(0, FillRequest { va, error_code: 2 }, &[]).unwrap();
    assert_eq!(f.result, FillResult::Filled);
    // The walk set A and D, as hardware does on a write.
    assert_eq!(word(&vm, leaf) & (pte::A | pte::D), pte::A | pte::D);
    // Unmapping without a flush leaves the stale entry in place (lazy).
    pt_op(&vm, PtOpKind::Clear, leaf, 0, 0).unwrap();
    vm.after_exit(0);
    assert_eq!(word(&vm, layout::zap_list(0) + zap::COUNT), 0, "lazy never evicts");
    let (c, _) = vm
        .call::<TlbConfig>(0, TlbConfigRequest { action: TlbConfigAction::Query, evict_ppm: 0, walk_cache: 0 }, &[])
        .unwrap();
    assert_eq!((c.model, c.fills), (TlbModelKind::Lazy, 1));
    vm.call::<Flush>(0, FlushRequest::local(FlushKind::Page, va, PAGE_SIZE, true), &[]).unwrap();
    let (f, _) = vm.call::<Fill>(0, FillRequest { va, error_code: 0 }, &[]).unwrap();
    assert_eq!(f.result, FillResult::Fault);
}

#[test]
fn evict_one_drops_a_stale_entry_at_the_next_exit() {
    let vm = TestVm::new(TlbModel::Evict { ppm: 1_000_000 });
    let (va, pa) = (USER_BASE + 0x7000, layout::FREE_START + 0x4000);
    let leaf = map(&vm, va, pa, pte::P | pte::US);
    vm.call::<SwitchMm>(0, SwitchMmRequest { pgd: PT_BASE }, &[]).unwrap();
    vm.call::<Fill>(0, FillRequest { va, error_code: 0 }, &[]).unwrap();
    let (fill_slot, cleared) = zap_state(&vm, 0, va);
    assert!(!cleared);
    vm.after_exit(0);
    assert_eq!(word(&vm, layout::zap_list(0) + zap::COUNT), 0, "a current entry is not stale");
    pt_op(&vm, PtOpKind::Clear, leaf, 0, 0).unwrap();
    vm.after_exit(0);
    // The stale entry went: its slot is in the zap list and the zap
    // interrupt is raised, so the guest clears it where the host sees it.
    assert_eq!(word(&vm, layout::zap_list(0) + zap::COUNT), 1);
    assert_eq!(word(&vm, layout::zap_list(0) + zap::SLOTS), fill_slot);
    assert_eq!(vm.msis.lock().unwrap().last(), Some(&(0xfee0_0000, zap::VECTOR as u32)));
    let (c, _) = vm
        .call::<TlbConfig>(0, TlbConfigRequest { action: TlbConfigAction::Query, evict_ppm: 0, walk_cache: 0 }, &[])
        .unwrap();
    assert_eq!((c.model, c.evict_ppm, c.evictions), (TlbModelKind::Evict, 1_000_000, 1));
}

#[test]
fn walks_never_leave_the_page_table_region() {
    let vm = lazy();
    // A PGD entry that points its "table" at the VMM's shadow region.
    vm.call::<PtTable>(0, PtTableRequest { event: TableEvent::Allocated, table: PT_BASE, level: 4 }, &[]).unwrap();
    let va = USER_BASE + 0x1000;
    let slot = PT_BASE + 8 * iommu::pagetable::va_index(va, 4);
    pt_op(&vm, PtOpKind::Set, slot, layout::SHADOW_BASE | pte::P | pte::RW | pte::US, 0).unwrap();
    vm.call::<SwitchMm>(0, SwitchMmRequest { pgd: PT_BASE }, &[]).unwrap();
    let before: Vec<u64> = (0..512).map(|i| word(&vm, layout::SHADOW_BASE + 8 * i)).collect();
    let (f, _) = vm.call::<Fill>(0, FillRequest { va, error_code: 0 }, &[]).unwrap();
    assert_eq!(f.result, FillResult::Fault);
    let after: Vec<u64> = (0..512).map(|i| word(&vm, layout::SHADOW_BASE + 8 * i)).collect();
    assert_eq!(before, after, "the walker wrote A bits into the shadow tables");
}

#[test]
fn switch_mm_and_tlb_config_check_their_arguments() {
    let vm = lazy();
    let e = vm.call::<SwitchMm>(0, SwitchMmRequest { pgd: layout::FREE_START }, &[]).unwrap_err();
    assert!(e.to_string().contains("not a page of the page-table region"));
    let native = TestVm::new(TlbModel::Native);
    let req = TlbConfigRequest { action: TlbConfigAction::SetEvictPpm, evict_ppm: 5, walk_cache: 0 };
    let e = native.call::<TlbConfig>(0, req, &[]).unwrap_err();
    assert!(e.to_string().contains("lazy/evict models only"));
    // A probability above 1 is clamped to 1.
    let (c, _) = vm.call::<TlbConfig>(0, TlbConfigRequest { evict_ppm: u64::MAX, ..req }, &[]).unwrap();
    assert_eq!(c.evict_ppm, 1_000_000);
}

#[test]
fn a_direct_page_table_store_is_refused_unless_announced() {
    let vm = lazy();
    let store = |gpa: u64| vm.exit(1, Exit::MmioWrite { addr: gpa, data: &0x777u64.to_le_bytes() });
    let e = store(PT_BASE + 0x10).unwrap_err();
    assert!(e.to_string().starts_with("stray 8-byte store of 0x777 to page-table memory at GPA 0x3000010"));
    vm.call::<ExpectStrayStore>(1, Empty, &[]).unwrap();
    assert!(matches!(store(PT_BASE + 0x20), Ok(Flow::Resume)));
    let (r, _) = vm.call::<LastStrayStore>(1, Empty, &[]).unwrap();
    assert_eq!((r.gpa, r.value, r.recorded), (PT_BASE + 0x20, 0x777, Flag::YES));
    assert_eq!(word(&vm, PT_BASE + 0x20), 0, "never applied");
    // Only the next store was announced.
    assert!(store(PT_BASE + 0x20).is_err());
}

#[test]
fn dma_submissions_are_confined_and_bounded() {
    let vm = lazy();
    let submit = |program, slot| vm.call::<DmaSubmit>(0, DmaSubmitRequest { program, slot }, &[]);
    let e = submit(layout::FREE_START, dma::MAX_SLOTS).unwrap_err();
    assert!(e.to_string().contains("device slot 16 out of range"), "{e}");
    for bad in [PT_BASE, layout::SHADOW_BASE + 64, layout::FREE_START + 4, u64::MAX - 7] {
        assert!(submit(bad, 0).unwrap_err().to_string().contains("outside the page-table and shadow regions"));
    }
    // A program that waits forever, and one queued behind it: the third is busy.
    let prog = |at: u64| {
        vm.mem.write_obj(1u64, GuestAddress(at)).unwrap();
        vm.mem.write_obj(1u64, GuestAddress(at + 8)).unwrap();
        let op = dma::OpRecord { op: dma::op::WAIT_EQ, va: layout::LITMUS_VARS, value: 99, result: 0 };
        for (i, w) in [op.op, op.va, op.value, 0].iter().enumerate() {
            vm.mem.write_obj(*w, GuestAddress(at + dma::HEADER_SIZE + 8 * i as u64)).unwrap();
        }
    };
    let (a, b, c) = (layout::FREE_START, layout::FREE_START + PAGE_SIZE, layout::FREE_START + 2 * PAGE_SIZE);
    for p in [a, b, c] {
        prog(p);
    }
    assert!(submit(a, 3).unwrap().0.accepted.get());
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(submit(b, 3).unwrap().0.accepted.get());
    assert!(!submit(c, 3).unwrap().0.accepted.get());
    assert_eq!(word(&vm, c + dma::STATUS_OFFSET), dma::status::BUSY);
    assert_eq!(vm.iommu.dma_workers(), 1, "one worker per slot");
    // Stopping ends the waiting worker within milliseconds.
    let t = std::time::Instant::now();
    for s in &vm.services {
        s.stopping();
    }
    assert!(t.elapsed() < std::time::Duration::from_millis(500), "{:?}", t.elapsed());
}

#[test]
fn dma_kernel_words_and_programs_stay_out_of_page_tables() {
    let vm = lazy();
    let at = layout::FREE_START;
    let write_prog = |ops: &[(u64, u64, u64)]| {
        vm.mem.write_obj(1u64, GuestAddress(at)).unwrap();
        vm.mem.write_obj(ops.len() as u64, GuestAddress(at + 8)).unwrap();
        for (i, (op, va, value)) in ops.iter().enumerate() {
            let r = at + dma::HEADER_SIZE + dma::OP_SIZE * i as u64;
            for (k, w) in [*op, *va, *value, 0].iter().enumerate() {
                vm.mem.write_obj(*w, GuestAddress(r + 8 * k as u64)).unwrap();
            }
        }
    };
    for target in [PT_BASE + 8, layout::SHADOW_BASE, layout::LITMUS_VARS + 4] {
        for kind in [dma::op::SIGNAL, dma::op::KADD, dma::op::WAIT_EQ] {
            write_prog(&[(kind, target, 5)]);
            assert!(vm.iommu.run_program_now(at).is_err(), "op {kind} on {target:#x} ran");
        }
        assert_eq!(word(&vm, target & !7), 0);
    }
    write_prog(&[(dma::op::SIGNAL, layout::LITMUS_VARS, 5), (dma::op::KADD, layout::LITMUS_VARS, 2)]);
    vm.iommu.run_program_now(at).unwrap();
    assert_eq!(word(&vm, layout::LITMUS_VARS), 7);
    // The result words are written back; an op count past the limit is refused.
    assert_eq!(word(&vm, at + dma::HEADER_SIZE + dma::OP_SIZE + dma::RESULT_OFFSET), 5);
    vm.mem.write_obj(dma::MAX_OPS + 1, GuestAddress(at + 8)).unwrap();
    assert!(vm.iommu.run_program_now(at).is_err());
}

#[test]
fn litmus_results_are_checked_and_bounded() {
    let vm = lazy();
    let it = |iteration, values| LitmusIteration { iteration, values, leaked_pages: 0, leaked_tables: -1, guest_ns: 5 };
    let data: Vec<u8> = [1u64, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    vm.call::<LitmusResult>(0, it(0, 2), &data).unwrap();
    // n * 8 would overflow; more values than data; an iteration the run does not have.
    for (iteration, values) in [(1, u64::MAX / 8 + 1), (1, 3), (4, 1), (u64::MAX, 1)] {
        assert!(vm.call::<LitmusResult>(0, it(iteration, values), &data).is_err(), "{iteration} {values}");
    }
    for i in 1..4 {
        vm.call::<LitmusResult>(1, it(i, 1), &data).unwrap();
    }
    // The session holds at most its run's iterations.
    assert!(vm.call::<LitmusResult>(0, it(3, 1), &data).unwrap_err().to_string().contains("more LITMUS_RESULTs"));
    let reports = vm.session.take_reports();
    assert_eq!(reports.len(), 4);
    assert_eq!((reports[0].values.as_slice(), reports[0].leaked_tables), (&[1u64, 2][..], -1));
}

#[test]
fn result_lines_bench_figures_and_probes_are_capped() {
    let vm = lazy();
    for i in 0..crate::services::selftest::MAX_RESULTS + 5 {
        vm.call::<TestEnd>(0, TestEndReport { outcome: Outcome::Pass }, format!("t{i}\0").as_bytes()).unwrap();
    }
    let r = vm.selftest.results();
    assert_eq!((r.lines.len(), r.dropped, r.passed), (crate::services::selftest::MAX_RESULTS, 5, 10_005));
    assert!(r.summary().contains("5 result lines beyond the cap of 10000 not shown"));
    drop(r);
    for _ in 0..crate::services::bench::MAX_FIGURES + 2 {
        let f = BenchFigure { metric: Metric::PtOp, median_ps: 1, samples: 1, at_cpl3: Flag::NO };
        vm.call::<BenchResult>(0, f, &[]).unwrap();
    }
    assert_eq!(vm.bench.figures().1, 2);
    for _ in 0..crate::services::probe::MAX_PROBES + 1 {
        let p = ProbeReport { probe: abi::hypercall::Probe::SameVcpu, stale: 0, tries: 1 };
        vm.call::<ProbeResult>(0, p, &[]).unwrap();
    }
    assert_eq!(vm.probes.reports().1, 1);
}

#[test]
fn iommu_wait_status_writes_stay_out_of_page_tables() {
    use abi::iommu::{reg, InvDesc};
    let vm = lazy();
    let q = layout::FREE_START + 0x10_000;
    let mmio = |off: u64, v: u64| {
        vm.exit(0, Exit::MmioWrite { addr: abi::iommu::IOMMU_MMIO_BASE + off, data: &v.to_le_bytes() }).unwrap()
    };
    // A one-page queue with a wait descriptor whose status word is a PTE.
    mmio(reg::IQA, q);
    let d = InvDesc::Wait { status_addr: Some(PT_BASE + 0x40), data: 0x55, irq: false, fence: false, drain_prq: false }
        .encode();
    for (i, w) in d.iter().enumerate() {
        vm.mem.write_obj(*w, GuestAddress(q + 8 * i as u64)).unwrap();
    }
    mmio(reg::IQT, 16);
    assert_eq!(word(&vm, PT_BASE + 0x40), 0, "the device wrote a page table");
    let mut st = [0u8; 8];
    vm.exit(0, Exit::MmioRead { addr: abi::iommu::IOMMU_MMIO_BASE + reg::STATUS, data: &mut st }).unwrap();
    assert_ne!(u64::from_le_bytes(st) & abi::iommu::status::IQE, 0, "a refused status write is a queue error");
}

/// The fuzz targets' bodies on seeded random inputs (`SHOOTDOWN_FUZZ_CASES`
/// raises the count from 60 for a longer local run).
#[test]
fn fuzz_bodies_run_seeded() {
    let cases = std::env::var("SHOOTDOWN_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let mut x = abi::rng::SplitMix64::new(0x5eed);
    for _ in 0..cases {
        let n = x.below(400) as usize;
        let data: Vec<u8> = (0..n).map(|_| x.next_u64() as u8).collect();
        crate::fuzzing::run_hypercalls(&data);
    }
    for _ in 0..cases {
        let n = x.below(200) as usize;
        let data: Vec<u8> = (0..n).map(|_| x.next_u64() as u8).collect();
        crate::fuzzing::run_dma_program(&data);
    }
}

/// Every op with every argument word 0, 1, all ones or the top page: an
/// answer or a guest fault, never a panic (this runs in debug builds, where
/// an unchecked overflow on a guest value would panic).
#[test]
fn extreme_arguments_never_panic() {
    for tlb in [TlbModel::Lazy, TlbModel::Evict { ppm: 1_000_000 }, TlbModel::Native] {
        let vm = TestVm::new(tlb);
        vm.call::<PtTable>(0, PtTableRequest { event: TableEvent::Allocated, table: PT_BASE, level: 4 }, &[]).unwrap();
        vm.call::<SwitchMm>(0, SwitchMmRequest { pgd: PT_BASE }, &[]).unwrap();
        for op in 0..40u64 {
            for w in [0, 1, u64::MAX, !0xfff, u64::MAX / 8 + 1] {
                for data in [&[][..], &[0xffu8; 64][..]] {
                    let _ = vm.hypercall_raw(0, op, [w; 8], data);
                    let _ = vm.hypercall_raw(1, op, [0, w, w, w, w, w, w, w], data);
                    let _ = vm.hypercall_raw(1, op, [1, w, 0, w, 0, w, 0, w], data);
                    let _ = vm.hypercall_raw(0, op, [2, w, 1, 0, 0, 0, 0, 0], data);
                    vm.after_exit(0);
                }
            }
        }
    }
}

#[test]
fn wait_parks_only_while_the_word_holds_its_value_and_wake_ends_that_park() {
    let vm = lazy();
    let w = layout::LITMUS_VARS + 8;
    vm.mem.write_obj(5u64, GuestAddress(w)).unwrap();
    // The word moved on: no park.
    let (r, _) = vm.call::<Wait>(1, WaitRequest { gpa: w, expected: 4, wake_first: 0, wake_also: 0 }, &[]).unwrap();
    assert!(!r.parked.get() && !vm.parking.is_parked(1));
    let (r, _) = vm.call::<Wait>(1, WaitRequest { gpa: w, expected: 5, wake_first: 0, wake_also: 0 }, &[]).unwrap();
    assert!(r.parked.get() && vm.parking.is_parked(1));
    // Another word wakes nobody; this one wakes vCPU 1, once.
    assert_eq!(vm.call::<Wake>(0, WakeRequest::one(w + 8), &[]).unwrap().0.woken, 0);
    assert_eq!(vm.call::<Wake>(0, WakeRequest::one(w), &[]).unwrap().0.woken, 1);
    assert_eq!(vm.call::<Wake>(0, WakeRequest::one(w), &[]).unwrap().0.woken, 0);
    // A wait that wakes another word's waiters first (signal, then wait).
    vm.call::<Wait>(1, WaitRequest { gpa: w, expected: 5, wake_first: 0, wake_also: 0 }, &[]).unwrap();
    let (r, _) = vm.call::<Wait>(0, WaitRequest { gpa: w + 8, expected: 0, wake_first: w, wake_also: 0 }, &[]).unwrap();
    assert!(r.parked.get() && vm.parking.is_parked(0));
    assert_eq!(vm.call::<Wake>(0, WakeRequest::one(w), &[]).unwrap().0.woken, 0, "vCPU 1 was woken by the wait");
    // Misaligned or outside RAM: a bad hypercall.
    assert!(vm.call::<Wait>(0, WaitRequest { gpa: w + 4, expected: 0, wake_first: 0, wake_also: 0 }, &[]).is_err());
    assert!(vm.call::<Wait>(0, WaitRequest { gpa: 1 << 50, expected: 0, wake_first: 0, wake_also: 0 }, &[]).is_err());
}

#[test]
fn a_storing_wake_stores_before_it_wakes() {
    let vm = lazy();
    let (a, b) = (layout::LITMUS_VARS + 32, layout::LITMUS_VARS + 40);
    let (r, _) = vm.call::<Wait>(1, WaitRequest { gpa: a, expected: 0, wake_first: 0, wake_also: 0 }, &[]).unwrap();
    assert!(r.parked.get());
    let mut gpas = [0; WAKE_WORDS];
    gpas[..2].copy_from_slice(&[a, b]);
    let (r, _) = vm.call::<Wake>(0, WakeRequest { gpas, store: Flag::YES, value: 7 }, &[]).unwrap();
    assert_eq!((r.woken, word(&vm, a), word(&vm, b)), (1, 7, 7));
    gpas[0] = a + 4;
    assert!(vm.call::<Wake>(0, WakeRequest { gpas, store: Flag::YES, value: 7 }, &[]).is_err());
}

#[test]
fn an_interrupted_park_resumes_only_if_nothing_woke_it_and_its_word_holds() {
    let vm = lazy();
    let w = layout::LITMUS_VARS + 48;
    let repark = FlushThenRequest {
        repark: Flag::YES,
        ..FlushThenRequest::of(FlushRequest::local(FlushKind::All, 0, 0, false))
    };
    // vCPU 1 parks; an IPI ends the park; its handler's FLUSH parks it again
    // on the same word, and a WAKE of the word then wakes it.
    let (r, _) = vm.call::<Wait>(1, WaitRequest { gpa: w, expected: 0, wake_first: 0, wake_also: 0 }, &[]).unwrap();
    assert!(r.parked.get());
    let (ret, _) = vm.hypercall_raw(1, Op::FlushThen as u64, args_of(&repark), &[]).unwrap();
    assert_eq!(ret, [0; 4]);
    assert_eq!(vm.call::<Wake>(0, WakeRequest::one(w), &[]).unwrap().0.woken, 1, "not parked again");
    // Woken meanwhile: nothing to resume (the WAKE took the waiter).
    assert!(vm
        .call::<Wait>(1, WaitRequest { gpa: w, expected: 0, wake_first: 0, wake_also: 0 }, &[])
        .unwrap()
        .0
        .parked
        .get());
    vm.call::<Wake>(0, WakeRequest::one(w), &[]).unwrap();
    vm.hypercall_raw(1, Op::FlushThen as u64, args_of(&repark), &[]).unwrap();
    assert_eq!(vm.call::<Wake>(0, WakeRequest::one(w), &[]).unwrap().0.woken, 0, "parked after its wake");
    // The word moved on: no park again.
    vm.call::<Wait>(1, WaitRequest { gpa: w, expected: 0, wake_first: 0, wake_also: 0 }, &[]).unwrap();
    vm.mem.write_obj(1u64, GuestAddress(w)).unwrap();
    vm.hypercall_raw(1, Op::FlushThen as u64, args_of(&repark), &[]).unwrap();
    assert_eq!(vm.call::<Wake>(0, WakeRequest::one(w), &[]).unwrap().0.woken, 1, "the first park's waiter");
    // A WAIT that did not park leaves nothing to resume either.
    vm.call::<Wait>(1, WaitRequest { gpa: w, expected: 0, wake_first: 0, wake_also: 0 }, &[]).unwrap();
    vm.hypercall_raw(1, Op::FlushThen as u64, args_of(&repark), &[]).unwrap();
    assert_eq!(vm.call::<Wake>(0, WakeRequest::one(w), &[]).unwrap().0.woken, 0);
}

fn args_of<W: abi::hypercall::Wire>(req: &W) -> [u64; 8] {
    let mut args = [0u64; 8];
    req.encode(&mut args);
    args
}

#[test]
fn a_device_store_wakes_the_vcpus_waiting_on_its_word() {
    let vm = lazy();
    let w = layout::LITMUS_VARS + 16;
    let (r, _) = vm.call::<Wait>(1, WaitRequest { gpa: w, expected: 0, wake_first: 0, wake_also: 0 }, &[]).unwrap();
    assert!(r.parked.get());
    // A one-op device program: SIGNAL w = 1 (header: pasid, nops, status;
    // op: op, va, value, result).
    let prog = layout::LITMUS_STATE + 0x1_0000;
    let words = [1, 1, dma::status::PENDING, 0, dma::op::SIGNAL, w, 1, 0];
    for (i, v) in words.iter().enumerate() {
        vm.mem.write_obj(*v, GuestAddress(prog + 8 * i as u64)).unwrap();
    }
    vm.iommu.run_program_now(prog).unwrap();
    assert_eq!(word(&vm, w), 1);
    assert!(vm.call::<Wake>(0, WakeRequest::one(w), &[]).unwrap().0.woken == 0, "the device's store woke it");
}

#[test]
fn ipi_sends_one_msi_per_target_and_refuses_bad_vectors_and_vcpus() {
    let vm = lazy();
    let (r, _) = vm.call::<Ipi>(0, IpiRequest { targets: [0b11, 0, 0, 0], vector: 0xfc }, &[]).unwrap();
    assert_eq!(r.sent, 2);
    let msis = vm.msis.lock().unwrap().clone();
    assert_eq!(msis, vec![(0xfee0_0000, 0xfc), (0xfee0_1000, 0xfc)]);
    assert!(vm.call::<Ipi>(0, IpiRequest { targets: [1, 0, 0, 0], vector: 14 }, &[]).is_err());
    assert!(vm.call::<Ipi>(0, IpiRequest { targets: [0b100, 0, 0, 0], vector: 0xfc }, &[]).is_err());
}

#[test]
fn flush_follow_ups_ack_a_word_waking_its_waiter_and_send_ipis() {
    let vm = lazy();
    let w = layout::LITMUS_VARS + 24;
    vm.mem.write_obj(1u64, GuestAddress(w)).unwrap();
    let (r, _) = vm.call::<Wait>(1, WaitRequest { gpa: w, expected: 1, wake_first: 0, wake_also: 0 }, &[]).unwrap();
    assert!(r.parked.get());
    // vCPU 0's flush acknowledges vCPU 1's request and IPIs vCPUs 0 and 1.
    let all = FlushThenRequest::of(FlushRequest::local(FlushKind::All, 0, 0, false));
    let req = FlushThenRequest { ack: w, ipi_cpus: 0b11, ipi_vector: 0xfc, ..all };
    vm.call::<FlushThen>(0, req, &[]).unwrap();
    assert_eq!(word(&vm, w), 0, "the ack word was not cleared");
    assert_eq!(vm.call::<Wake>(0, WakeRequest::one(w), &[]).unwrap().0.woken, 0, "the ack did not wake its waiter");
    assert_eq!(vm.msis.lock().unwrap().clone(), vec![(0xfee0_0000, 0xfc), (0xfee0_1000, 0xfc)]);
    // Checked like IPI's: a bad vector or vCPU, a misaligned ack word.
    let bad_vector = FlushThenRequest { ipi_cpus: 1, ipi_vector: 3, ..all };
    assert!(vm.call::<FlushThen>(0, bad_vector, &[]).is_err());
    let bad_cpu = FlushThenRequest { ipi_cpus: 1 << 40, ipi_vector: 0xfc, ..all };
    assert!(vm.call::<FlushThen>(0, bad_cpu, &[]).is_err());
    let bad_ack = FlushThenRequest { ack: w + 4, ..all };
    assert!(vm.call::<FlushThen>(0, bad_ack, &[]).is_err());
}

/// The shadow leaf slot of `va` in `cpu`'s modelled TLB (walking its
/// shadow root), and whether it is empty.
fn zap_state(vm: &TestVm, cpu: u64, va: u64) -> (u64, bool) {
    let mut table = shadow_root(vm, cpu);
    for level in (2..=4u8).rev() {
        table = word(vm, table + 8 * iommu::pagetable::va_index(va, level)) & pte::ADDR_MASK;
    }
    let slot = table + 8 * iommu::pagetable::va_index(va, 1);
    (slot, word(vm, slot) & pte::P == 0)
}

/// `cpu`'s shadow root: what SWITCH_MM returned (the pool hands pages out
/// from the region's start, the root first).
fn shadow_root(vm: &TestVm, cpu: u64) -> u64 {
    let _ = (vm, cpu);
    layout::SHADOW_BASE
}

#[test]
fn a_flush_lists_the_cleared_slot_and_only_a_cpl3_caller_gets_the_zap_interrupt() {
    let vm = lazy();
    let (va, pa) = (USER_BASE + 0x9000, layout::FREE_START + 0x5000);
    map(&vm, va, pa, pte::P | pte::RW | pte::US);
    vm.call::<SwitchMm>(0, SwitchMmRequest { pgd: PT_BASE }, &[]).unwrap();
    vm.after_exit(0);
    vm.call::<Fill>(0, FillRequest { va, error_code: 0 }, &[]).unwrap();
    vm.after_exit(0);
    let (slot, _) = zap_state(&vm, 0, va);
    let msis = vm.msis.lock().unwrap().len();
    // From CPL0 (kernel mailbox): the caller drains the list itself.
    vm.call::<Flush>(0, FlushRequest::local(FlushKind::Page, va, PAGE_SIZE, true), &[]).unwrap();
    vm.after_exit(0);
    assert_eq!(word(&vm, slot), 0);
    assert_eq!(word(&vm, layout::zap_list(0) + zap::COUNT), 1);
    assert_eq!(word(&vm, layout::zap_list(0) + zap::SLOTS), slot);
    assert_eq!(vm.msis.lock().unwrap().len(), msis, "no interrupt for a CPL0 caller");
    // The guest drained it; a refill and a flush from CPL3 (user mailbox).
    vm.mem.write_obj(0u64, GuestAddress(layout::zap_list(0) + zap::COUNT)).unwrap();
    vm.call::<Fill>(0, FillRequest { va, error_code: 0 }, &[]).unwrap();
    vm.after_exit(0);
    vm.call_user::<Flush>(0, FlushRequest::local(FlushKind::Page, va, PAGE_SIZE, true)).unwrap();
    vm.after_exit(0);
    assert_eq!(word(&vm, layout::zap_list(0) + zap::COUNT), 1);
    assert_eq!(vm.msis.lock().unwrap().last(), Some(&(0xfee0_0000, zap::VECTOR as u32)));
}

#[test]
fn a_call_carrying_the_lazy_queue_does_it_first() {
    let vm = lazy();
    let (table, entry) = (PT_BASE + 2 * PAGE_SIZE, PT_BASE + 2 * PAGE_SIZE + 16);
    let carried = [
        BatchEntry::PtTable { event: TableEvent::Allocated, table, level: 1 },
        BatchEntry::PtOp { kind: PtOpKind::Set, entry, a: 0x5003, b: 0 },
    ];
    let mut data = vec![0u8; abi::hypercall::DATA_LEN];
    let at = abi::hypercall::carried_offset(carried.len());
    for (i, e) in carried.iter().enumerate() {
        for (k, w) in e.encode().iter().enumerate() {
            data[at + i * BatchEntry::LEN + 8 * k..][..8].copy_from_slice(&w.to_le_bytes());
        }
    }
    let mut args = [0u64; 8];
    abi::hypercall::Wire::encode(&PtOpRequest { kind: PtOpKind::Xchg, entry, a: 7, b: 0 }, &mut args);
    let op = abi::hypercall::op_word(Op::PtOp, carried.len());
    let (ret, _) = vm.hypercall_raw_len(0, op, args, &data, 0).unwrap();
    assert_eq!(ret[0], 0x5003, "the xchg did not see the carried set");
    assert_eq!(word(&vm, entry), 7);
    // Carried entries that overlap the call's own data: a bad hypercall.
    assert!(vm.hypercall_raw_len(0, op, args, &data, (at + 1) as u64).is_err());
}

#[test]
fn pt_batch_does_each_entry_in_order_and_returns_the_last_result() {
    let vm = lazy();
    let entries = [
        BatchEntry::PtTable { event: TableEvent::Allocated, table: PT_BASE + PAGE_SIZE, level: 1 },
        BatchEntry::PtOp { kind: PtOpKind::Set, entry: PT_BASE + PAGE_SIZE + 8, a: 0x1234_5003, b: 0 },
        BatchEntry::PageOp { kind: PageOpKind::Zero, dst: layout::FREE_START, src: 0 },
        BatchEntry::PageOp { kind: PageOpKind::Init, dst: layout::FREE_START + PAGE_SIZE, src: 0x77 },
        BatchEntry::PtOp { kind: PtOpKind::Xchg, entry: PT_BASE + PAGE_SIZE + 8, a: 7, b: 0 },
    ];
    vm.mem.write_obj(5u64, GuestAddress(layout::FREE_START + PAGE_SIZE + 8)).unwrap();
    let data: Vec<u8> = entries.iter().flat_map(|e| e.encode()).flat_map(u64::to_le_bytes).collect();
    let (r, _) = vm.call::<PtBatch>(0, PtBatchRequest { count: 5 }, &data).unwrap();
    assert_eq!(r.last, 0x1234_5003, "the xchg saw the set before it");
    assert_eq!(word(&vm, PT_BASE + PAGE_SIZE + 8), 7);
    // Init: the first word given, the rest zero.
    assert_eq!(word(&vm, layout::FREE_START + PAGE_SIZE), 0x77);
    assert_eq!(word(&vm, layout::FREE_START + PAGE_SIZE + 8), 0);
    // More entries than data, an unknown tag, an entry outside the region.
    assert!(vm.call::<PtBatch>(0, PtBatchRequest { count: 6 }, &data).is_err());
    let bad: Vec<u8> = [9u64 << 8, 0, 0, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
    assert!(vm.call::<PtBatch>(0, PtBatchRequest { count: 1 }, &bad).is_err());
    let outside = BatchEntry::PtOp { kind: PtOpKind::Set, entry: layout::FREE_START, a: 1, b: 0 };
    let data: Vec<u8> = outside.encode().iter().flat_map(|w| w.to_le_bytes()).collect();
    assert!(vm.call::<PtBatch>(0, PtBatchRequest { count: 1 }, &data).is_err());
}
