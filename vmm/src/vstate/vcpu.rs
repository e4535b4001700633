//! A vCPU thread as an explicit state machine (after Firecracker's
//! `vstate/vcpu.rs`): `Running` until the guest exits, misbehaves, or the
//! VMM asks it to stop; a stop request is a kick — `immediate_exit` set from
//! a signal handler plus the signal itself — so no exit can be missed.

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use abi::hypercall::{EXIT_PORT, EXPLORE_PARK_PORT, HC_PORT, NOP_PORT, SERIAL_PORT, YIELD_PORT};
use abi::iommu::{IOMMU_MMIO_BASE, IOMMU_MMIO_SIZE};
use abi::layout;
use kvm_bindings::{kvm_mp_state, kvm_segment, CpuId, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use super::vm::{EndReason, VcpuDump, VmShared};
use crate::boot::GDT_ENTRIES;
use crate::error::{kvm, Result};
use crate::hypercall::{Flow, Hypercalls};

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

pub struct Vcpu {
    index: u64,
    fd: VcpuFd,
    mem: GuestMemoryMmap,
    shared: Arc<VmShared>,
    hypercalls: Hypercalls,
}

impl Vcpu {
    pub fn new(vm: &VmFd, index: u64, mem: GuestMemoryMmap, shared: Arc<VmShared>) -> Result<Self> {
        let fd = vm.create_vcpu(index).map_err(kvm("KVM_CREATE_VCPU"))?;
        let hypercalls = Hypercalls::new(index, shared.tlb, shared.seed, shared.trace.clone());
        Ok(Self { index, fd, mem, shared, hypercalls })
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
        let before = crate::trace::host_tsc();
        let n = self.fd.get_msrs(&mut msrs);
        let after = crate::trace::host_tsc();
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
        let mut state = State::Running;
        while state == State::Running {
            state = self.step();
        }
        IMMEDIATE_EXIT.with(|p| p.set(std::ptr::null_mut()));
        if self.shared.dump.load(Ordering::Acquire) {
            let d = self.dump();
            self.shared.dumps.lock().unwrap()[self.index as usize] = Some(d);
        }
    }

    fn step(&mut self) -> State {
        if self.shared.stop.load(Ordering::Acquire) {
            return State::Stopped;
        }
        let shared = &self.shared;
        let mem = &self.mem;
        let exit = match self.fd.run() {
            Ok(VcpuExit::IoOut(port, data)) => Exit::IoOut(port, le_value(data), data.len()),
            Ok(VcpuExit::IoIn(port, data)) => {
                if (SERIAL_PORT..SERIAL_PORT + 8).contains(&port) && data.len() == 1 {
                    data[0] = shared.serial.lock().unwrap().read((port - SERIAL_PORT) as u8);
                } else {
                    data.fill(0xff);
                }
                Exit::Handled
            }
            Ok(VcpuExit::MmioRead(addr, data)) if is_iommu_mmio(addr) => {
                shared.iommu.lock().unwrap().mmio_read_bytes(addr - IOMMU_MMIO_BASE, data);
                Exit::Handled
            }
            Ok(VcpuExit::MmioWrite(addr, data)) if is_iommu_mmio(addr) => {
                // A tail write processes the invalidation queue before it returns.
                let out = shared.iommu.lock().unwrap().mmio_write_bytes(addr - IOMMU_MMIO_BASE, data, mem);
                for msi in out.msis {
                    shared.deliver_msi(msi);
                }
                Exit::Handled
            }
            Ok(VcpuExit::MmioRead(addr, data)) => Exit::StrayMmio { addr, write: None, len: data.len() },
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                Exit::StrayMmio { addr, write: Some(le_value(data)), len: data.len() }
            }
            Ok(VcpuExit::Shutdown) => Exit::Fatal("triple fault (KVM_EXIT_SHUTDOWN)".into()),
            Ok(VcpuExit::Hlt) => Exit::Fatal("HLT exit to userspace".into()),
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                Exit::Fatal(format!("VM entry failed (hardware reason {reason:#x}, host cpu {cpu})"))
            }
            Ok(VcpuExit::InternalError) => Exit::Fatal("KVM internal error (emulation failure?)".into()),
            Ok(VcpuExit::SystemEvent(kind, _)) => Exit::Fatal(format!("system event {kind} (reset or shutdown)")),
            Ok(other) => Exit::Fatal(format!("unexpected exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
                Exit::Handled
            }
            Err(e) => Exit::Fatal(format!("KVM_RUN failed: {e}")),
        };
        let next = match exit {
            Exit::Handled => State::Running,
            Exit::IoOut(port, value, len) => self.io_out(port, value, len),
            Exit::StrayMmio { addr, write: Some(value), len } if layout::in_pt_region(addr) => {
                self.stray_page_table_store(addr, value, len)
            }
            Exit::StrayMmio { addr, write, len } => {
                let what = match write {
                    Some(v) => format!("stray {len}-byte write of {v:#x} to unbacked address {addr:#x}"),
                    None => format!("stray {len}-byte read of unbacked address {addr:#x}"),
                };
                self.guest_error(what, None)
            }
            Exit::Fatal(cause) => self.guest_error(cause, None),
        };
        // evict:P — at each exit, drop stale modelled-TLB entries at random;
        // then make KVM drop its own cached copies (KVM_SET_SREGS resets its MMU context).
        if next == State::Running && self.hypercalls.shadow.evict_stale(&self.mem) {
            if let Ok(sregs) = self.fd.get_sregs() {
                let _ = self.fd.set_sregs(&sregs);
            }
        }
        next
    }

    /// A direct store into the page-table region (a read-only memslot): the
    /// guest bypassed the page-table ops. Never applied; fatal unless the
    /// guest announced it (the stray-store self-test).
    fn stray_page_table_store(&mut self, gpa: u64, value: u64, len: usize) -> State {
        let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(u64::MAX);
        if std::mem::take(&mut self.hypercalls.stray_expected) {
            self.hypercalls.last_stray = Some(crate::hypercall::StrayStore { gpa, value, rip });
            return State::Running;
        }
        self.guest_error(
            format!(
                "stray {len}-byte store of {value:#x} to page-table memory at GPA {gpa:#x} \
                 (page tables change only through page-table-op hypercalls; the store was not applied)"
            ),
            Some(rip),
        )
    }

    fn io_out(&mut self, port: u16, value: u64, len: usize) -> State {
        match port {
            HC_PORT => match self.hypercalls.handle(&self.mem, &self.shared) {
                Flow::Resume => State::Running,
                Flow::GuestError { cause, rip } => self.guest_error(cause, rip),
            },
            EXIT_PORT => {
                self.shared.end(EndReason::GuestExit(value as u32));
                State::Stopped
            }
            NOP_PORT => State::Running,
            YIELD_PORT => {
                std::thread::yield_now();
                State::Running
            }
            EXPLORE_PARK_PORT => {
                crate::explore_run::park(&self.mem, value, std::time::Duration::from_millis(1));
                State::Running
            }
            p if (SERIAL_PORT..SERIAL_PORT + 8).contains(&p) && len == 1 => {
                let _ = self.shared.serial.lock().unwrap().write((p - SERIAL_PORT) as u8, value as u8);
                State::Running
            }
            // Probes of legacy devices (e.g. port 0x80 delays) are harmless; ignore them.
            _ => State::Running,
        }
    }

    fn guest_error(&mut self, cause: String, rip: Option<u64>) -> State {
        let rip = rip.unwrap_or_else(|| self.fd.get_regs().map(|r| r.rip).unwrap_or(u64::MAX));
        self.shared.end(EndReason::GuestError { vcpu: self.index, rip, cause });
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

enum Exit {
    Handled,
    IoOut(u16, u64, usize),
    StrayMmio { addr: u64, write: Option<u64>, len: usize },
    Fatal(String),
}

fn is_iommu_mmio(addr: u64) -> bool {
    (IOMMU_MMIO_BASE..IOMMU_MMIO_BASE + IOMMU_MMIO_SIZE).contains(&addr)
}

fn le_value(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
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
