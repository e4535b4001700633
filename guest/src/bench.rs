//! Guest-side micro-benchmarks; figures go to the VMM with BENCH_RESULT and
//! `vmm bench` prints them. Medians over rounds, timed with the TSC.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::hypercall::calls::{BenchFigure, BenchResult, Echo, EchoWords};
use abi::hypercall::wire::Flag;
use abi::hypercall::{Metric, NOP_PORT};

use crate::mm::{page_alloc, pgtable, tlb};
use crate::{arch, cpl3, hypercall, smp, time};

const ROUNDS: usize = 31;
const ITERS: u64 = 500;

fn median_ps(f: impl FnMut()) -> u64 {
    median_ps_n(ITERS, f)
}

/// Median over ROUNDS rounds of `iters` calls each, in picoseconds per call.
fn median_ps_n(iters: u64, mut f: impl FnMut()) -> u64 {
    let mut samples = [0u64; ROUNDS];
    for s in samples.iter_mut() {
        let t0 = arch::rdtsc();
        for _ in 0..iters {
            f();
        }
        let cycles = arch::rdtsc().wrapping_sub(t0);
        // cycles / kHz = ms; per op in picoseconds: cycles * 1e9 / (kHz * iters)
        *s = (cycles as u128 * 1_000_000_000 / (time::tsc_khz() as u128 * iters as u128)) as u64;
    }
    samples.sort_unstable();
    samples[ROUNDS / 2]
}

/// Iterations per round for the TLB benchmarks (each op is several exits).
const TLB_ITERS: u64 = 60;

/// Reports one figure.
fn report(metric: Metric, median_ps: u64, samples: u64, at_cpl3: bool) {
    hypercall::call::<BenchResult>(BenchFigure { metric, median_ps, samples, at_cpl3: Flag::new(at_cpl3) });
}

/// ECHO and a bare exit, from the privilege level this runs at.
fn exit_figures() -> [u64; 2] {
    let hc = median_ps(|| {
        hypercall::call::<Echo>(EchoWords { words: [1, 2, 3, 4] });
    });
    let nop = median_ps(|| arch::outb(NOP_PORT, 0));
    [hc, nop]
}

/// The CPL3 half's figures (CPL3 may not write the kernel stack).
static EXIT_FIGURES: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

extern "C" fn exit_figures_cpl3(_: u64) -> u64 {
    for (f, v) in EXIT_FIGURES.iter().zip(exit_figures()) {
        f.store(v, Ordering::Relaxed);
    }
    0
}

/// `mode=bench.exits`: hypercall round trip next to a bare port-I/O exit,
/// from CPL0 and (on the modelled TLBs, where litmus threads run there)
/// from CPL3.
pub fn exits() {
    let samples = ROUNDS as u64 * ITERS;
    let [hc, nop] = exit_figures();
    report(Metric::HypercallEcho, hc, samples, false);
    report(Metric::PortIoExit, nop, samples, false);
    if tlb::modelled() {
        cpl3::run_at_cpl3(exit_figures_cpl3, 0);
        report(Metric::HypercallEcho, EXIT_FIGURES[0].load(Ordering::Relaxed), samples, true);
        report(Metric::PortIoExit, EXIT_FIGURES[1].load(Ordering::Relaxed), samples, true);
    }
}

/// What the TLB figures act on (the CPL3 half reads it from here).
static BENCH_VA: AtomicU64 = AtomicU64::new(0);
static BENCH_PTEP: AtomicU64 = AtomicU64::new(0);
static BENCH_PGD: AtomicU64 = AtomicU64::new(0);
/// The figures, in [`Metric`] order from `PtOp`.
static FIGURES: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Page-table op, local flush, flush + refill, shootdown (with every other
/// CPU in the mm), at the privilege level this runs at.
fn tlb_figures() {
    let mm = pgtable::PageTables { pgd: BENCH_PGD.load(Ordering::Relaxed) };
    let (va, ptep) = (BENCH_VA.load(Ordering::Relaxed), BENCH_PTEP.load(Ordering::Relaxed));
    let entry = pgtable::read_entry(ptep);
    let read = || {
        // SAFETY: the page is mapped; a miss is filled by the #PF handler.
        unsafe { core::ptr::read_volatile(va as *const u64) };
    };
    read();
    let figures = [
        median_ps_n(TLB_ITERS, || pgtable::set_pte(ptep, entry)),
        median_ps_n(TLB_ITERS, || tlb::flush_tlb_one_user(va)),
        median_ps_n(TLB_ITERS, || {
            tlb::flush_tlb_one_user(va);
            read();
        }),
        median_ps_n(TLB_ITERS, || {
            tlb::flush_tlb_multi(&mm, va, va + 4096, false);
        }),
    ];
    for (f, v) in FIGURES.iter().zip(figures) {
        f.store(v, Ordering::Relaxed);
    }
}

extern "C" fn tlb_figures_cpl3(_: u64) -> u64 {
    tlb_figures();
    0
}

fn report_tlb_figures(at_cpl3: bool) {
    let samples = ROUNDS as u64 * TLB_ITERS;
    let n = smp::num_cpus();
    let metrics = [Metric::PtOp, Metric::FlushPage, Metric::FlushAndFill, Metric::Shootdown];
    for (m, f) in metrics.into_iter().zip(FIGURES.iter()) {
        let s = if m == Metric::Shootdown { samples | n << 48 } else { samples };
        report(m, f.load(Ordering::Relaxed), s, at_cpl3);
    }
}

/// `mode=bench.tlb`: page-table op, local flush, fill, and shootdown costs,
/// with every other CPU in the mm (idle, or parked as a litmus thread
/// waits): from CPL0, and on the modelled TLBs from CPL3 with the other
/// CPUs as CPL3 workers — the litmus threads' path, where a shootdown
/// IPI's handler runs at CPL3 too (`cpl3::user_ipi`).
pub fn tlb() {
    use abi::layout::USER_BASE;
    let mm = pgtable::PageTables::new();
    let page = page_alloc::alloc_page().unwrap_or(0);
    let va = USER_BASE + 0x4000_0000;
    let ptep = mm.map(va, page, pgtable::pte::RW | pgtable::pte::US);
    BENCH_VA.store(va, Ordering::Relaxed);
    BENCH_PTEP.store(ptep, Ordering::Relaxed);
    BENCH_PGD.store(mm.pgd, Ordering::Relaxed);
    smp::run_on_all(bench_join_mm, mm.pgd, 20_000);
    tlb_figures();
    report_tlb_figures(false);
    if tlb::modelled() {
        smp::run_on_all(|_| tlb::switch_to_kernel_mm(), 0, 20_000);
        smp::start_cpl3_workers();
        smp::run_on_all(bench_join_mm, mm.pgd, 20_000);
        cpl3::run_at_cpl3(tlb_figures_cpl3, 0);
        report_tlb_figures(true);
    }
    smp::run_on_all(|_| tlb::switch_to_kernel_mm(), 0, 20_000);
}

fn bench_join_mm(pgd: u64) {
    crate::mm::tlb::switch_mm(&crate::mm::pgtable::PageTables { pgd });
}
