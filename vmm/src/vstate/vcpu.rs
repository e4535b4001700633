//! A vCPU thread as an explicit state machine (after Firecracker's
//! `vstate/vcpu.rs`): `Running` until the guest exits, misbehaves, or the
//! VMM asks it to stop; a stop request is a kick — `immediate_exit` set from
//! a signal handler plus the signal itself — so no exit can be missed. Exits
//! go through [`route`]; this file knows no device and no hypercall.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use abi::layout;
use kvm_bindings::{kvm_mp_state, kvm_segment, CpuId, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use super::bus::Flow;
use super::exit::{route, Buses, Exit, ExitHook, NoRegs, VcpuCtx, VcpuRegs};
use super::fault::{EndReason, GuestFault, VcpuDump};
use super::park::{Parking, Resume};
use super::stats::{UserExit, VmStats};
use super::vm::{kvm, Result, VmCore};
use crate::boot::GDT_ENTRIES;

/// Offset from SIGRTMIN of the signal that kicks a vCPU out of KVM_RUN.
pub const KICK_SIGNAL_OFFSET: i32 = 0;

thread_local! {
    /// This thread's `kvm_run.immediate_exit`, for the kick signal handler.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// Kick signal handler: make the current or next KVM_RUN return at once.
pub extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    IMMEDIATE_EXIT.with(|p| {
        let p = p.get();
        if !p.is_null() {
            // SAFETY: `p` points into this thread's kvm_run mapping, which
            // outlives the thread's run loop; a byte store is signal-safe.
            unsafe { std::ptr::write_volatile(p, 1) };
        }
    });
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Running,
    Stopped,
}

/// What every vCPU of a VM shares.
#[derive(Clone)]
pub struct VcpuShared {
    pub mem: GuestMemoryMmap,
    pub core: Arc<VmCore>,
    pub buses: Arc<Buses>,
    pub exit_hooks: Arc<[Arc<dyn ExitHook>]>,
    pub stats: Arc<VmStats>,
    pub parking: Arc<Parking>,
}

pub struct Vcpu {
    index: u64,
    fd: VcpuFd,
    mem: GuestMemoryMmap,
    core: Arc<VmCore>,
    buses: Arc<Buses>,
    exit_hooks: Arc<[Arc<dyn ExitHook>]>,
    stats: Arc<VmStats>,
    parking: Arc<Parking>,
}

struct KvmRegs<'a>(&'a VcpuFd);

impl VcpuRegs for KvmRegs<'_> {
    fn rip(&self) -> Option<u64> {
        self.0.get_regs().ok().map(|r| r.rip)
    }
}

impl Vcpu {
    pub fn new(vm: &VmFd, index: u64, shared: VcpuShared) -> Result<Self> {
        let fd = vm.create_vcpu(index).map_err(kvm("KVM_CREATE_VCPU"))?;
        let VcpuShared { mem, core, buses, exit_hooks, stats, parking } = shared;
        Ok(Self { index, fd, mem, core, buses, exit_hooks, stats, parking })
    }

    /// This vCPU's KVM binary statistics file.
    pub fn stats_fd(&self) -> std::io::Result<super::stats::KvmStatsFd> {
        super::stats::KvmStatsFd::open(&self.fd)
    }

    pub fn tsc_khz(&self) -> u64 {
        self.fd.get_tsc_khz().map(u64::from).unwrap_or(0)
    }

    /// Host TSC minus this vCPU's guest TSC (IA32_TSC read with
    /// KVM_GET_MSRS, between two host reads), or 0 if KVM cannot say.
    pub fn tsc_offset(&self) -> i64 {
        const MSR_IA32_TSC: u32 = 0x10;
        let entry = kvm_bindings::kvm_msr_entry { index: MSR_IA32_TSC, ..Default::default() };
        let Ok(mut msrs) = kvm_bindings::Msrs::from_entries(&[entry]) else { return 0 };
        let before = host_tsc();
        let n = self.fd.get_msrs(&mut msrs);
        let after = host_tsc();
        match n {
            Ok(1) => {
                let guest = msrs.as_slice()[0].data;
                (before / 2 + after / 2) as i64 - guest as i64
            }
            _ => 0,
        }
    }

    /// CPUID (the host's supported set, with this vCPU's APIC ID and
    /// x2APIC advertised), 64-bit long mode on the boot page tables, and the
    /// entry registers: `rdi` = index, `rsi` = &BootInfo, `rsp` = own stack.
    /// With `pvh_entry`, the PVH boot ABI instead: vCPU 0 starts in 32-bit
    /// protected mode, paging off, at the PVH entry with `ebx` =
    /// &hvm_start_info; the others wait for the kernel's INIT/SIPI.
    pub fn configure(&mut self, supported: &CpuId, entry: u64, pvh_entry: Option<u64>) -> Result<()> {
        let mut cpuid = supported.clone();
        for e in cpuid.as_mut_slice() {
            match e.function {
                1 => {
                    e.ebx = (e.ebx & 0x00ff_ffff) | ((self.index as u32) << 24);
                    e.ecx |= (1 << 21) | (1 << 31); // x2APIC, hypervisor
                }
                0xb | 0x1f => e.edx = self.index as u32,
                _ => {}
            }
        }
        self.fd.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))?;

        if let Some(pvh) = pvh_entry {
            return self.configure_pvh(pvh);
        }
        let mut sregs = self.fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        flat_segments(&mut sregs, GDT_ENTRIES[1]);
        sregs.cr3 = layout::BOOT_PML4;
        sregs.cr4 |= CR4_PAE;
        sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        sregs.efer = EFER_LME | EFER_LMA | EFER_NXE;
        self.fd.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;

        let mut regs = self.fd.get_regs().map_err(kvm("KVM_GET_REGS"))?;
        regs.rip = entry;
        regs.rsp = layout::stack_top(self.index);
        regs.rdi = self.index;
        regs.rsi = layout::BOOT_INFO;
        regs.rflags = 0x2;
        self.fd.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))?;

        // With the in-kernel irqchip, APs start in wait-for-SIPI; start them directly.
        if self.index != 0 {
            let mp = kvm_mp_state { mp_state: KVM_MP_STATE_RUNNABLE };
            self.fd.set_mp_state(mp).map_err(kvm("KVM_SET_MP_STATE"))?;
        }
        Ok(())
    }

    fn configure_pvh(&mut self, entry: u64) -> Result<()> {
        if self.index != 0 {
            return Ok(()); // stays in wait-for-SIPI, as on real hardware
        }
        let mut sregs = self.fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        // 32-bit flat code segment (L=0, D=1), as the PVH ABI requires.
        flat_segments(&mut sregs, 0x00cf_9b00_0000_ffff);
        sregs.cr0 = CR0_PE | CR0_ET;
        sregs.cr4 = 0;
        sregs.efer = 0;
        self.fd.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;
        let mut regs = self.fd.get_regs().map_err(kvm("KVM_GET_REGS"))?;
        regs.rip = entry;
        regs.rbx = layout::PVH_START_INFO;
        regs.rflags = 0x2;
        self.fd.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))
    }

    /// The thread body.
    pub fn run(mut self) {
        let immediate_exit = &mut self.fd.get_kvm_run().immediate_exit as *mut u8;
        IMMEDIATE_EXIT.with(|p| p.set(immediate_exit));
        self.parking.register_thread(self.index);
        let mut state = State::Running;
        while state == State::Running {
            state = self.step();
        }
        self.parking.unregister_thread(self.index);
        IMMEDIATE_EXIT.with(|p| p.set(std::ptr::null_mut()));
        if self.core.dump.load(Ordering::Acquire) {
            let d = self.dump();
            self.core.dumps.lock().unwrap_or_else(|e| e.into_inner())[self.index as usize] = Some(d);
        }
    }

    fn step(&mut self) -> State {
        if self.core.stop.load(Ordering::Acquire) {
            return State::Stopped;
        }
        // Reads are routed while KVM's buffer is borrowed (their devices need
        // no registers); writes are copied out first, so a device may read
        // registers (RIP) through the vCPU fd.
        let (index, mem, buses) = (self.index, &self.mem, &self.buses);
        let mut buf = [0u8; 8];
        let mut interrupted = false;
        let copy = |buf: &mut [u8; 8], data: &[u8]| {
            let n = data.len().min(8);
            buf[..n].copy_from_slice(&data[..n]);
            n
        };
        let ran = self.fd.run();
        let stats = self.stats.clone();
        let served_from = stats.exit_clock();
        let counters = stats.vcpu(index);
        counters.user_exit(match &ran {
            Ok(VcpuExit::IoOut(port, _)) | Ok(VcpuExit::IoIn(port, _)) => match *port {
                abi::hypercall::HC_PORT | abi::hypercall::HC_USER_PORT => UserExit::Hypercall,
                abi::hypercall::YIELD_PORT => UserExit::Yield,
                _ => UserExit::OtherPort,
            },
            Ok(VcpuExit::MmioRead(..)) | Ok(VcpuExit::MmioWrite(..)) => UserExit::Mmio,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => UserExit::Interrupted,
            _ => UserExit::Other,
        });
        let pending = match ran {
            Ok(VcpuExit::IoIn(port, data)) => {
                Err(route(buses, &mut VcpuCtx { cpu: index, mem, regs: &NoRegs }, Exit::IoIn { port, data }))
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                Err(route(buses, &mut VcpuCtx { cpu: index, mem, regs: &NoRegs }, Exit::MmioRead { addr, data }))
            }
            Ok(VcpuExit::IoOut(port, data)) => Ok(Written::Io(port, copy(&mut buf, data))),
            Ok(VcpuExit::MmioWrite(addr, data)) => Ok(Written::Mmio(addr, copy(&mut buf, data))),
            Ok(VcpuExit::Shutdown) => Ok(Written::Fault(GuestFault::TripleFault)),
            Ok(VcpuExit::Hlt) => Ok(Written::Fault(GuestFault::BadExit("HLT exit to userspace".into()))),
            Ok(VcpuExit::FailEntry(reason, cpu)) => Ok(Written::Fault(GuestFault::BadExit(format!(
                "VM entry failed (hardware reason {reason:#x}, host cpu {cpu})"
            )))),
            Ok(VcpuExit::InternalError) => {
                Ok(Written::Fault(GuestFault::BadExit("KVM internal error (emulation failure?)".into())))
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                Ok(Written::Fault(GuestFault::BadExit(format!("system event {kind} (reset or shutdown)"))))
            }
            Ok(other) => Ok(Written::Fault(GuestFault::BadExit(format!("unexpected exit {other:?}")))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                interrupted = true;
                Ok(Written::None)
            }
            Err(e) => Ok(Written::Fault(GuestFault::BadExit(format!("KVM_RUN failed: {e}")))),
        };
        if interrupted {
            self.fd.set_kvm_immediate_exit(0);
        }
        // Waiting is the harness waiting on a flag, not activity of the vCPU
        // (evict:P's aging of a finite TLB skips it): a spin-wait's yield, a
        // WAIT that parks the vCPU and the kick that wakes it (an exit of a
        // parked vCPU that ran an interrupt handler is activity).
        let mut waiting = matches!(pending, Ok(Written::Io(abi::hypercall::YIELD_PORT, _)));
        if self.parking.is_parked(index) {
            waiting |= interrupted;
            // Kicked for its wake-up: made runnable whatever KVM's state (no
            // KVM_GET_MP_STATE, an ioctl that costs microseconds on
            // `kvm_pvm`); a stray kick asks KVM whether it still sleeps.
            let halted = interrupted
                && (self.parking.is_woken(index)
                    || self.fd.get_mp_state().is_ok_and(|m| m.mp_state == kvm_bindings::KVM_MP_STATE_HALTED));
            match self.parking.after_run(index, interrupted, halted) {
                // A kick that was not its wake-up (or a stop request, which
                // the top of the loop sees): back to sleep.
                Resume::Sleep => {
                    counters.vmm_time(stats.exit_clock().saturating_sub(served_from));
                    return State::Running;
                }
                Resume::Run if halted => {
                    let mp = kvm_mp_state { mp_state: KVM_MP_STATE_RUNNABLE };
                    if let Err(e) = self.fd.set_mp_state(mp) {
                        return self.guest_error(GuestFault::BadExit(format!("cannot wake the vCPU: {e}")));
                    }
                }
                Resume::Run => {}
            }
        }
        let result = match pending {
            Err(routed) => routed,
            Ok(w) => {
                let regs = KvmRegs(&self.fd);
                let mut ctx = VcpuCtx { cpu: index, mem: &self.mem, regs: &regs };
                let exit = match w {
                    Written::Io(port, n) => Exit::IoOut { port, data: &buf[..n] },
                    Written::Mmio(addr, n) => Exit::MmioWrite { addr, data: &buf[..n] },
                    Written::Fault(f) => Exit::Fault(f),
                    Written::None => Exit::Handled,
                };
                route(&self.buses, &mut ctx, exit)
            }
        };
        let next = match result {
            Ok(Flow::Resume) => State::Running,
            Ok(Flow::Park) => {
                waiting = true;
                let mp = kvm_mp_state { mp_state: kvm_bindings::KVM_MP_STATE_HALTED };
                match self.fd.set_mp_state(mp) {
                    Ok(()) => State::Running,
                    Err(e) => self.guest_error(GuestFault::BadExit(format!("cannot park the vCPU: {e}"))),
                }
            }
            Ok(Flow::End(reason)) => {
                self.core.end(reason);
                State::Stopped
            }
            Err(fault) => self.guest_error(fault),
        };
        if next == State::Running && !self.exit_hooks.is_empty() {
            let regs = KvmRegs(&self.fd);
            let mut ctx = VcpuCtx { cpu: index, mem: &self.mem, regs: &regs };
            for h in self.exit_hooks.iter() {
                h.after_exit(&mut ctx, waiting);
            }
        }
        counters.vmm_time(stats.exit_clock().saturating_sub(served_from));
        next
    }

    fn guest_error(&mut self, fault: GuestFault) -> State {
        let rip = fault.rip().unwrap_or_else(|| self.fd.get_regs().map(|r| r.rip).unwrap_or(u64::MAX));
        self.core.end(EndReason::GuestError { vcpu: self.index, rip, fault });
        State::Stopped
    }

    fn dump(&self) -> VcpuDump {
        let regs = self.fd.get_regs().ok();
        let sregs = self.fd.get_sregs().ok();
        let mp = self.fd.get_mp_state().ok().map(|m| m.mp_state);
        VcpuDump {
            vcpu: self.index,
            rip: regs.map(|r| r.rip),
            rsp: regs.map(|r| r.rsp),
            cr3: sregs.map(|s| s.cr3),
            halted: mp == Some(kvm_bindings::KVM_MP_STATE_HALTED),
        }
    }
}

/// A write exit, copied out of KVM's buffer.
enum Written {
    Io(u16, usize),
    Mmio(u64, usize),
    Fault(GuestFault),
    None,
}

/// The host's TSC.
pub fn host_tsc() -> u64 {
    // SAFETY: rdtsc only reads the time-stamp counter; it has no memory
    // effects and is available on every x86-64 CPU.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Flat segments: CS from `code_desc`, every data segment from the GDT's
/// data descriptor, GDTR at the VMM-written GDT.
fn flat_segments(sregs: &mut kvm_bindings::kvm_sregs, code_desc: u64) {
    let data = segment(layout::SEL_DATA, GDT_ENTRIES[2]);
    sregs.cs = segment(layout::SEL_CODE64, code_desc);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = layout::GDT;
    sregs.gdt.limit = (GDT_ENTRIES.len() * 8 - 1) as u16;
}

/// A KVM segment register matching GDT descriptor `desc`.
fn segment(selector: u16, desc: u64) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: ((desc >> 40) & 0xf) as u8,
        present: ((desc >> 47) & 1) as u8,
        dpl: ((desc >> 45) & 3) as u8,
        db: ((desc >> 54) & 1) as u8,
        s: ((desc >> 44) & 1) as u8,
        l: ((desc >> 53) & 1) as u8,
        g: ((desc >> 55) & 1) as u8,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}
