//! Guest-side micro-benchmarks; figures go to the VMM with BENCH_RESULT and
//! `vmm bench` prints them. Medians over rounds, timed with the TSC.

use abi::hypercall::{bench, op, NOP_PORT};

use crate::{arch, hypercall, time};

const ROUNDS: usize = 31;
const ITERS: u64 = 500;

fn median_ps(mut f: impl FnMut()) -> u64 {
    let mut samples = [0u64; ROUNDS];
    for s in samples.iter_mut() {
        let t0 = arch::rdtsc();
        for _ in 0..ITERS {
            f();
        }
        let cycles = arch::rdtsc().wrapping_sub(t0);
        // cycles / kHz = ms; per op in picoseconds: cycles * 1e9 / (kHz * ITERS)
        *s = (cycles as u128 * 1_000_000_000 / (time::tsc_khz() as u128 * ITERS as u128)) as u64;
    }
    samples.sort_unstable();
    samples[ROUNDS / 2]
}

/// `mode=bench.exits`: hypercall round trip next to a bare port-I/O exit.
pub fn exits() {
    let hc = median_ps(|| {
        hypercall::call(op::ECHO, &[1, 2, 3, 4], &[]);
    });
    let nop = median_ps(|| arch::outb(NOP_PORT, 0));
    for (metric, ps) in [(bench::HYPERCALL_ECHO, hc), (bench::PORT_IO_EXIT, nop)] {
        hypercall::call(op::BENCH_RESULT, &[metric, ps, ROUNDS as u64 * ITERS], &[]);
    }
}
