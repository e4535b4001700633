//! The shootdown guest kernel.
//!
//! Every vCPU enters `_start` in 64-bit mode on the VMM's identity-mapped
//! boot page tables, with `rdi` = CPU index, `rsi` = `&BootInfo`, `rsp` = its
//! own stack. CPU 0 builds the IDT and runs the requested work (self-tests);
//! the others come online and wait in the idle loop for work or IPIs.

#![no_std]
#![no_main]

mod apic;
mod arch;
mod bench;
mod console;
mod cpl3;
mod explore;
mod hostile;
mod hypercall;
mod iommu;
mod litmus;
mod misbehave;
mod mm;
mod percpu;
mod probe;
mod report;
mod selftest;
mod selftest_cpl3;
mod selftest_iommu;
mod selftest_mm;
mod selftest_tlb;
mod smp;
mod sync;
mod time;
mod trace;
mod trap;
mod wait;

use abi::config::GuestMode;
use abi::{BootInfo, BOOT_INFO_MAGIC};
use core::arch::global_asm;

global_asm!(
    r#"
    .section .text._start, "ax"
    .global _start
_start:
    and rsp, -16
    xor ebp, ebp
    call {kmain}
    ud2
"#,
    kmain = sym kmain,
);

extern "C" fn kmain(cpu: u64, boot: *const BootInfo) -> ! {
    percpu::init(cpu);
    // SAFETY: the VMM wrote a BootInfo at this address before starting any vCPU.
    let boot = unsafe { &*boot };
    if boot.magic != BOOT_INFO_MAGIC {
        report::fatal(file!(), line!(), format_args!("bad BootInfo magic {:#x}", boot.magic));
    }
    if cpu == 0 {
        time::init(boot.tsc_khz);
        wait::init(boot.spin_before_park_ns);
        smp::set_num_cpus(boot.num_vcpus);
        mm::page_alloc::init(boot.mem_size);
        trap::build_idt();
    }
    trap::load_idt();
    cpl3::init_cpu();
    apic::init();
    let verbose = cmdline(boot).split_ascii_whitespace().any(|w| w == "verbose");
    if verbose {
        kprintln!("shootdown guest: vCPU {} online (x2APIC ID {})", cpu, apic::id());
    }
    smp::mark_online();
    if cpu != 0 {
        smp::idle_loop();
    }
    arch::interrupts_enable();
    // Give every vCPU time to come online (boot.all-vcpus checks they did).
    time::spin_until(30_000, || smp::online() == boot.num_vcpus);
    let cmdline = cmdline(boot);
    let status = match GuestMode::from_u64(boot.mode) {
        Some(GuestMode::FromCmdline) => run_cmdline_mode(boot, cmdline),
        Some(mode) => run_mode(boot, cmdline, mode, boot.mode_arg),
        None => report::fatal(file!(), line!(), format_args!("unknown BootInfo mode {}", boot.mode)),
    };
    arch::outl(abi::hypercall::EXIT_PORT, status);
    arch::halt_forever()
}

/// What the VMM asked for in `BootInfo` (typed, set by the CLI).
fn run_mode(boot: &BootInfo, cmdline: &str, mode: GuestMode, arg: u64) -> u32 {
    match mode {
        // Boot benchmark: every vCPU came online, nothing else to do.
        GuestMode::Boot => abi::exit::SUCCESS,
        GuestMode::BenchExits => {
            bench::exits();
            abi::exit::SUCCESS
        }
        GuestMode::BenchTlb => {
            bench::tlb();
            abi::exit::SUCCESS
        }
        GuestMode::Probe => {
            probe::run(arg);
            abi::exit::SUCCESS
        }
        GuestMode::Selftest => selftest::run(boot, cmdline),
        GuestMode::SelftestList => selftest::list(),
        GuestMode::Litmus => litmus::run(arg, false),
        GuestMode::Explore => litmus::run(arg, true),
        GuestMode::FromCmdline => run_cmdline_mode(boot, cmdline),
    }
}

/// `vmm run --cmdline mode=…`: the mode named on the command line
/// (default: the self-tests), including the deliberate misbehaviours.
fn run_cmdline_mode(boot: &BootInfo, cmdline: &str) -> u32 {
    let word = |key: &str| cmdline.split_ascii_whitespace().find_map(|w| w.strip_prefix(key));
    let arg = |key: &str, default: u64| word(key).and_then(|v| v.parse().ok()).unwrap_or(default);
    match word("mode=").unwrap_or("selftest") {
        "boot" => run_mode(boot, cmdline, GuestMode::Boot, 0),
        "bench.exits" => run_mode(boot, cmdline, GuestMode::BenchExits, 0),
        "bench.tlb" => run_mode(boot, cmdline, GuestMode::BenchTlb, 0),
        "probe" => run_mode(boot, cmdline, GuestMode::Probe, arg("probe.tries=", 1000)),
        "selftest" => run_mode(boot, cmdline, GuestMode::Selftest, 0),
        "litmus" => run_mode(boot, cmdline, GuestMode::Litmus, arg("litmus.first=", 0)),
        m if m.starts_with("misbehave.") && misbehave::run(&m["misbehave.".len()..]) => abi::exit::GUEST_PANIC,
        m if m.starts_with("hostile.") && hostile::run(&m["hostile.".len()..]) => abi::exit::SUCCESS,
        other => report::fatal(file!(), line!(), format_args!("unknown mode={other} on the command line")),
    }
}

fn cmdline(boot: &BootInfo) -> &'static str {
    let len = boot.cmdline_len.min(abi::layout::CMDLINE_MAX) as usize;
    // SAFETY: the VMM wrote `len` bytes of command line at `cmdline_addr`,
    // identity-mapped and never written again.
    let bytes = unsafe { core::slice::from_raw_parts(boot.cmdline_addr as *const u8, len) };
    core::str::from_utf8(bytes).unwrap_or("")
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let (file, line) = info.location().map(|l| (l.file(), l.line())).unwrap_or(("?", 0));
    report::fatal(file, line, format_args!("panic: {}", info.message()))
}
