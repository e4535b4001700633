//! Guest-side micro-benchmarks; figures go to the VMM with BENCH_RESULT and
//! `vmm bench` prints them. Medians over rounds, timed with the TSC.

use abi::hypercall::calls::{BenchFigure, BenchResult, Echo, EchoWords};
use abi::hypercall::{Metric, NOP_PORT};

use crate::{arch, hypercall, time};

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

/// `mode=bench.exits`: hypercall round trip next to a bare port-I/O exit.
pub fn exits() {
    let hc = median_ps(|| {
        hypercall::call::<Echo>(EchoWords { words: [1, 2, 3, 4] });
    });
    let nop = median_ps(|| arch::outb(NOP_PORT, 0));
    for (metric, ps) in [(Metric::HypercallEcho, hc), (Metric::PortIoExit, nop)] {
        hypercall::call::<BenchResult>(BenchFigure { metric, median_ps: ps, samples: ROUNDS as u64 * ITERS });
    }
}

/// `mode=bench.tlb`: page-table op, local flush, fill, and shootdown costs.
pub fn tlb() {
    use crate::mm::{page_alloc, pgtable, tlb};
    use abi::layout::USER_BASE;
    let mm = pgtable::PageTables::new();
    let page = page_alloc::alloc_page().unwrap_or(0);
    let va = USER_BASE + 0x4000_0000;
    let ptep = mm.map(va, page, pgtable::pte::RW | pgtable::pte::US);
    tlb::switch_mm(&mm);
    let entry = pgtable::read_entry(ptep);
    let read = || {
        // SAFETY: the page is mapped; a miss is filled by the #PF handler.
        unsafe { core::ptr::read_volatile(va as *const u64) };
    };
    read();
    let pt_op = median_ps_n(TLB_ITERS, || pgtable::set_pte(ptep, entry));
    let flush = median_ps_n(TLB_ITERS, || tlb::flush_tlb_one_user(va));
    let flush_fill = median_ps_n(TLB_ITERS, || {
        tlb::flush_tlb_one_user(va);
        read();
    });
    let n = crate::smp::num_cpus();
    crate::smp::run_on_all(bench_join_mm, mm.pgd, 20_000);
    let shootdown = median_ps_n(TLB_ITERS, || {
        tlb::flush_tlb_multi(&mm, va, va + 4096, false);
    });
    crate::smp::run_on_all(|_| tlb::switch_to_kernel_mm(), 0, 20_000);
    let samples = ROUNDS as u64 * TLB_ITERS;
    for (metric, ps, s) in [
        (Metric::PtOp, pt_op, samples),
        (Metric::FlushPage, flush, samples),
        (Metric::FlushAndFill, flush_fill, samples),
        (Metric::Shootdown, shootdown, samples | n << 48),
    ] {
        hypercall::call::<BenchResult>(BenchFigure { metric, median_ps: ps, samples: s });
    }
}

fn bench_join_mm(pgd: u64) {
    crate::mm::tlb::switch_mm(&crate::mm::pgtable::PageTables { pgd });
}
