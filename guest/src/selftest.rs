//! Guest self-tests. Each test is announced to the VMM (TEST_BEGIN), runs on
//! the boot CPU (fanning out to other CPUs as it needs) and ends with
//! TEST_END carrying PASS/FAIL/SKIP; the VMM prints and counts the results.

use abi::hypercall::calls::{self, EchoWords, TestEndReport};
use abi::hypercall::{Empty, Outcome, DATA_LEN};
use abi::layout;
use abi::BootInfo;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::console::FixedBuf;
use crate::report::{TestError, TestResult};
use crate::selftest_cpl3 as cpl3;
use crate::selftest_iommu as iommu;
use crate::selftest_mm as mm;
use crate::selftest_tlb as tlb;
use crate::trap::{probe_read_u64, probe_write_u64};
use crate::{apic, arch, check, hypercall, percpu, smp};

struct Test {
    name: &'static str,
    run: fn(&BootInfo) -> TestResult,
}

const TESTS: &[Test] = &[
    Test { name: "boot.all-vcpus", run: boot_all_vcpus },
    Test { name: "hypercall.echo", run: hypercall_echo },
    Test { name: "ipi.all-pairs", run: ipi_all_pairs },
    Test { name: "exception.report", run: exception_report },
    Test { name: "assert.report", run: assert_report },
    Test { name: "tlb.lazy.stale-until-flush", run: tlb::lazy_stale_until_flush },
    Test { name: "tlb.lazy.remote-stale-until-shootdown", run: tlb::lazy_remote_stale_until_shootdown },
    Test { name: "tlb.shootdown.all-vcpus", run: tlb::shootdown_all_vcpus },
    Test { name: "tlb.ad-bits", run: tlb::ad_bits },
    Test { name: "tlb.evict.coherent", run: tlb::evict_coherent },
    Test { name: "tlb.pte-ops.atomic", run: tlb::pte_ops_atomic },
    Test { name: "tlb.stray-store.reported", run: tlb::stray_store_reported },
    Test { name: "tlb.shadow.stores-fault", run: cpl3::shadow_stores_fault },
    Test { name: "cpl3.enter-return", run: cpl3::enter_return },
    Test { name: "tlb.cpl3.stale-until-flush", run: cpl3::stale_until_flush },
    Test { name: "tlb.cpl3.remote-stale-until-shootdown", run: cpl3::remote_stale_until_shootdown },
    Test { name: "tlb.cpl3.shootdown-handled-at-cpl3", run: cpl3::shootdown_handled_at_cpl3 },
    Test { name: "tlb.cpl3.evict.coherent", run: cpl3::evict_coherent },
    Test { name: "iommu.dma.read-write", run: iommu::dma_read_write },
    Test { name: "iommu.invalidate.page", run: iommu::invalidate_page },
    Test { name: "iommu.invalidate.leaf-only-keeps-pwc", run: iommu::invalidate_leaf_only_keeps_pwc },
    Test { name: "iommu.wait.status", run: iommu::wait_status },
    Test { name: "iommu.fault.page-request", run: iommu::fault_page_request },
    Test { name: "iommu.malformed-descriptor.reported", run: iommu::malformed_descriptor_reported },
    Test { name: "mm.fault.anon", run: mm::fault_anon },
    Test { name: "mm.madvise.dontneed", run: mm::madvise_dontneed },
    Test { name: "mm.munmap.frees-tables", run: mm::munmap_frees_tables },
    Test { name: "mm.mprotect", run: mm::mprotect },
    Test { name: "mm.madvise.free", run: mm::madvise_free },
    Test { name: "mm.cow", run: mm::cow },
    Test { name: "mm.ksm", run: mm::ksm },
    Test { name: "mm.migrate", run: mm::migrate },
    Test { name: "mm.mkclean", run: mm::mkclean },
    Test { name: "mm.reclaim.swap-in", run: mm::reclaim_swap_in },
    Test { name: "mm.mremap", run: mm::mremap },
    Test { name: "mm.zap.nested-check", run: mm::zap_nested_check },
    Test { name: "mm.policy.all-combinations-run", run: mm::policy_all_combinations_run },
];

/// Timeout for one CPU to answer a fan-out; generous because with many
/// vCPUs on two host cores a vCPU may wait long for a host core.
const FANOUT_TIMEOUT_MS: u64 = 20_000;

/// `GuestMode::SelftestList`: names every test of the table (the VMM's
/// `selftest --list`, from which the end-to-end tests derive theirs).
pub fn list() -> u32 {
    for t in TESTS {
        hypercall::call_data::<calls::TestListed>(Empty, t.name.as_bytes());
    }
    abi::exit::SUCCESS
}

/// Runs the tests the command line selects (`selftest.filter=PREFIX[,PREFIX…]`);
/// returns the exit status for the VMM.
pub fn run(boot: &BootInfo, cmdline: &str) -> u32 {
    let filter = cmdline.split_ascii_whitespace().find_map(|w| w.strip_prefix("selftest.filter=")).unwrap_or("");
    let selected = |name: &str| filter.is_empty() || filter.split(',').any(|p| name.starts_with(p));
    // `selftest.inject-failure` adds a test that fails on purpose, so the
    // end-to-end tests can check the FAIL path (line, summary, exit status).
    let inject = cmdline.split_ascii_whitespace().any(|w| w == "selftest.inject-failure");
    let injected = [Test { name: "selftest.injected-failure", run: injected_failure }];
    let extra: &[Test] = if inject { &injected } else { &[] };
    let mut failures = 0;
    for t in TESTS.iter().chain(extra).filter(|t| selected(t.name)) {
        hypercall::call_data::<calls::TestBegin>(Empty, t.name.as_bytes());
        let mut msg: FixedBuf<DATA_LEN> = FixedBuf::new();
        msg.push_bytes(t.name.as_bytes());
        msg.push_bytes(&[0]);
        let outcome = match (t.run)(boot) {
            Ok(()) => Outcome::Pass,
            Err(TestError::Fail) => {
                failures += 1;
                Outcome::Fail
            }
            Err(TestError::Skip(reason)) => {
                msg.push_bytes(reason.as_bytes());
                Outcome::Skip
            }
        };
        hypercall::call_data::<calls::TestEnd>(TestEndReport { outcome }, msg.as_bytes());
    }
    if failures == 0 {
        abi::exit::SUCCESS
    } else {
        abi::exit::TESTS_FAILED
    }
}

// ---- boot.all-vcpus -------------------------------------------------------

static SEEN_APIC_ID: [AtomicU64; layout::MAX_VCPUS as usize] =
    [const { AtomicU64::new(u64::MAX) }; layout::MAX_VCPUS as usize];
static SEEN_RSP: [AtomicU64; layout::MAX_VCPUS as usize] = [const { AtomicU64::new(0) }; layout::MAX_VCPUS as usize];
static SEEN_CR3: [AtomicU64; layout::MAX_VCPUS as usize] = [const { AtomicU64::new(0) }; layout::MAX_VCPUS as usize];

fn record_identity(_: u64) {
    let cpu = percpu::cpu() as usize;
    SEEN_APIC_ID[cpu].store(apic::id(), Ordering::Relaxed);
    SEEN_RSP[cpu].store(arch::read_rsp(), Ordering::Relaxed);
    SEEN_CR3[cpu].store(arch::read_cr3(), Ordering::Release);
}

/// Every vCPU the VMM created came up, with its own APIC ID and stack.
fn boot_all_vcpus(boot: &BootInfo) -> TestResult {
    let n = boot.num_vcpus;
    check!(smp::online() == n, "{} of {} vCPUs online", smp::online(), n);
    let late = smp::run_on_all(record_identity, 0, FANOUT_TIMEOUT_MS);
    check!(late == 0, "{} vCPUs did not run posted work", late);
    for cpu in 0..n {
        let i = cpu as usize;
        let id = SEEN_APIC_ID[i].load(Ordering::Acquire);
        check!(id == cpu, "vCPU {} has x2APIC ID {}", cpu, id);
        let rsp = SEEN_RSP[i].load(Ordering::Relaxed);
        let (lo, hi) = (layout::stack_top(cpu) - layout::STACK_SIZE, layout::stack_top(cpu));
        check!(lo < rsp && rsp <= hi, "vCPU {} rsp {:#x} outside its stack {:#x}..{:#x}", cpu, rsp, lo, hi);
        let cr3 = SEEN_CR3[i].load(Ordering::Relaxed);
        check!(cr3 & !0xfff == layout::BOOT_PML4, "vCPU {} cr3 {:#x}", cpu, cr3);
    }
    Ok(())
}

// ---- hypercall.echo -------------------------------------------------------

static ECHO_FAILURES: AtomicU64 = AtomicU64::new(0);

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn echo_on_this_cpu(seed: u64) {
    let mut s = seed ^ (percpu::cpu() + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut data = [0u8; DATA_LEN];
    let mut back = [0u8; DATA_LEN];
    for len in [0usize, 1, 7, 64, 1000, DATA_LEN] {
        let args = [xorshift(&mut s), xorshift(&mut s), xorshift(&mut s), xorshift(&mut s)];
        for b in data[..len].iter_mut() {
            *b = xorshift(&mut s) as u8;
        }
        let (r, rlen) = hypercall::call_into::<calls::Echo>(EchoWords { words: args }, &data[..len], &mut back);
        let ok =
            rlen == len && (0..4).all(|i| r.words[i] == !args[i]) && (0..len).all(|i| back[i] == data[len - 1 - i]);
        if !ok {
            ECHO_FAILURES.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The mailbox round trip carries arguments, results and data both ways, on every vCPU.
fn hypercall_echo(_: &BootInfo) -> TestResult {
    ECHO_FAILURES.store(0, Ordering::Relaxed);
    let late = smp::run_on_all(echo_on_this_cpu, arch::rdtsc(), FANOUT_TIMEOUT_MS);
    check!(late == 0, "{} vCPUs did not finish", late);
    let f = ECHO_FAILURES.load(Ordering::Relaxed);
    check!(f == 0, "{} echo round trips came back wrong", f);
    Ok(())
}

// ---- ipi.all-pairs --------------------------------------------------------

const N: usize = layout::MAX_VCPUS as usize;
#[allow(clippy::declare_interior_mutable_const)]
const ROW: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];
/// HITS[target][sender]: how often `sender`'s IPI ran its function on `target`.
static HITS: [[AtomicU64; N]; N] = [ROW; N];
static IPI_TIMEOUTS: AtomicU64 = AtomicU64::new(0);

fn ipi_hit(sender: u64) {
    HITS[percpu::cpu() as usize][sender as usize].fetch_add(1, Ordering::Relaxed);
}

fn ipi_send_to_all(_: u64) {
    let me = percpu::cpu();
    for target in 0..smp::num_cpus() {
        if !smp::call_function_single(target, ipi_hit, me, FANOUT_TIMEOUT_MS) {
            IPI_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Every vCPU sends a real IPI (x2APIC ICR write) to every vCPU, itself
/// included, all at once; each handler runs exactly once on its target.
fn ipi_all_pairs(boot: &BootInfo) -> TestResult {
    let n = boot.num_vcpus as usize;
    for row in HITS.iter().take(n) {
        for h in row.iter().take(n) {
            h.store(0, Ordering::Relaxed);
        }
    }
    IPI_TIMEOUTS.store(0, Ordering::Relaxed);
    let late = smp::run_on_all(ipi_send_to_all, 0, FANOUT_TIMEOUT_MS * 4);
    check!(late == 0, "{} senders did not finish", late);
    let t = IPI_TIMEOUTS.load(Ordering::Relaxed);
    check!(t == 0, "{} IPIs were not acknowledged in time", t);
    for (target, row) in HITS.iter().take(n).enumerate() {
        for (sender, h) in row.iter().take(n).enumerate() {
            let c = h.load(Ordering::Relaxed);
            check!(c == 1, "IPI {} -> {} ran its handler {} times", sender, target, c);
        }
    }
    Ok(())
}

// ---- exception.report -----------------------------------------------------

/// A canonical address in PML4 slot 1, which the boot page tables leave empty.
const UNMAPPED: u64 = 0x0000_0080_0000_0000 + 0x1238;

static EXC_FAILURES: AtomicU64 = AtomicU64::new(0);

fn fault_and_check(_: u64) {
    let ok = (|| {
        // SAFETY: the probe's fault is caught by the exception table.
        let r = unsafe { probe_read_u64(UNMAPPED) };
        if r.faulted != 1 {
            return false;
        }
        let last = hypercall::call::<calls::LastException>(Empty);
        // A not-present supervisor read has error code 0.
        if last.vector != 14 || last.error_code != 0 || last.cr2 != UNMAPPED {
            return false;
        }
        // SAFETY: as above; a write gives error code W=1.
        let w = unsafe { probe_write_u64(UNMAPPED + 8, 5) };
        let last = hypercall::call::<calls::LastException>(Empty);
        w.faulted == 1 && last.vector == 14 && last.error_code == 2 && last.cr2 == UNMAPPED + 8
    })();
    if !ok {
        EXC_FAILURES.fetch_add(1, Ordering::Relaxed);
    }
}

/// A deliberate #PF reaches the VMM with vector, error code and CR2, and the
/// CPU continues after it: on every vCPU.
fn exception_report(_: &BootInfo) -> TestResult {
    EXC_FAILURES.store(0, Ordering::Relaxed);
    let late = smp::run_on_all(fault_and_check, 0, FANOUT_TIMEOUT_MS);
    check!(late == 0, "{} vCPUs did not finish", late);
    let f = EXC_FAILURES.load(Ordering::Relaxed);
    check!(f == 0, "{} vCPUs saw a wrong exception report", f);
    Ok(())
}

// ---- assert.report --------------------------------------------------------

/// A guest assertion reaches the VMM with file, line and message.
fn assert_report(_: &BootInfo) -> TestResult {
    let line = line!() + 1;
    crate::report::assert_failed(file!(), line, format_args!("deliberate {}", 42), false, true);
    let mut buf = [0u8; 512];
    let (r, rlen) = hypercall::call_into::<calls::LastAssert>(Empty, &[], &mut buf);
    check!(r.line == line as u64, "VMM recorded line {}, expected {}", r.line, line);
    let mut want: FixedBuf<512> = FixedBuf::new();
    want.push_bytes(file!().as_bytes());
    want.push_bytes(b"\0deliberate 42");
    check!(&buf[..rlen.min(512)] == want.as_bytes(), "VMM recorded a different file/message");
    Ok(())
}

fn injected_failure(_: &BootInfo) -> TestResult {
    let answer = 41;
    check!(answer == 42, "injected failure: answer is {}", answer);
    Ok(())
}
