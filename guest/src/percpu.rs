//! Per-CPU data, reached through GS (as Linux's `this_cpu_*`). The GS base
//! is kept at CPL3, so CPL3 code reads its CPU's slot the same way.

use abi::hypercall::Mailbox;
use abi::layout::{self, MAX_VCPUS};
use core::arch::asm;
use core::sync::atomic::AtomicU64;

use crate::arch;

/// Fields are read with `gs:[offset]` (the assembler stubs use the
/// `OFF_*` offsets); `cpu` must stay first.
#[repr(C)]
pub struct PerCpu {
    pub cpu: u64,
    /// The kernel mailbox (CPL0 hypercalls).
    pub mailbox: u64,
    /// Non-zero while this CPU runs inside an interrupt handler.
    pub in_irq: AtomicU64,
    /// The mailbox of CPL3 code (`HC_USER_PORT`).
    pub user_mailbox: u64,
    /// Kernel RSP saved by `cpl3::run_at_cpl3` (0: no CPL3 call in progress).
    pub krsp: u64,
    /// This CPU's TSS (its RSP0 is set on every entry to CPL3).
    pub tss: u64,
    /// This CPU's zap list (`abi::zap`).
    pub zap_list: u64,
}

pub const OFF_MAILBOX: usize = core::mem::offset_of!(PerCpu, mailbox);
pub const OFF_USER_MAILBOX: usize = core::mem::offset_of!(PerCpu, user_mailbox);
pub const OFF_KRSP: usize = core::mem::offset_of!(PerCpu, krsp);
pub const OFF_TSS: usize = core::mem::offset_of!(PerCpu, tss);
pub const OFF_ZAP_LIST: usize = core::mem::offset_of!(PerCpu, zap_list);
const _: () = assert!(core::mem::offset_of!(PerCpu, cpu) == 0 && OFF_MAILBOX == 8 && OFF_USER_MAILBOX == 24);

static mut PERCPU: [PerCpu; MAX_VCPUS as usize] =
    [const { PerCpu { cpu: 0, mailbox: 0, in_irq: AtomicU64::new(0), user_mailbox: 0, krsp: 0, tss: 0, zap_list: 0 } };
        MAX_VCPUS as usize];

/// Points GS at this CPU's slot. Called once per CPU at boot, before anything else.
pub fn init(cpu: u64) {
    // SAFETY: each CPU writes only its own slot, once, before publishing itself online.
    let slot = unsafe { &mut *core::ptr::addr_of_mut!(PERCPU[cpu as usize]) };
    slot.cpu = cpu;
    slot.mailbox = layout::mailbox(cpu);
    slot.user_mailbox = layout::user_mailbox(cpu);
    slot.zap_list = layout::zap_list(cpu);
    arch::wrmsr(arch::MSR_GS_BASE, slot as *mut PerCpu as u64);
}

/// Records this CPU's TSS (for `run_at_cpl3`'s RSP0 update).
pub fn set_tss(base: u64) {
    let cpu = cpu() as usize;
    // SAFETY: each CPU writes only its own slot's `tss`, before any CPL3 entry.
    unsafe { (*core::ptr::addr_of_mut!(PERCPU[cpu])).tss = base };
}

/// Index of the CPU we run on.
#[inline]
pub fn cpu() -> u64 {
    let v;
    // SAFETY: GS points at this CPU's `PerCpu` (set by `init`); offset 0 is `cpu`.
    unsafe { asm!("mov {}, gs:[0]", out(reg) v, options(nostack, preserves_flags, readonly)) }
    v
}

#[inline]
pub fn mailbox() -> *mut Mailbox {
    let v: u64;
    // SAFETY: offset 8 is `mailbox`, see the struct layout above.
    unsafe { asm!("mov {}, gs:[8]", out(reg) v, options(nostack, preserves_flags, readonly)) }
    v as *mut Mailbox
}

/// The mailbox of CPL3 code.
#[inline]
pub fn user_mailbox() -> *mut Mailbox {
    let v: u64;
    // SAFETY: offset 24 is `user_mailbox`, see the struct layout above.
    unsafe { asm!("mov {}, gs:[24]", out(reg) v, options(nostack, preserves_flags, readonly)) }
    v as *mut Mailbox
}

/// The privilege level we run at (CS.RPL).
#[inline]
pub fn cpl() -> u64 {
    let cs: u64;
    // SAFETY: reading CS has no side effects.
    unsafe { asm!("mov {:r}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) }
    cs & 3
}

pub fn this() -> &'static PerCpu {
    // SAFETY: shared reference to this CPU's slot; mutable fields are
    // atomics or written by this CPU only (and read back by it).
    unsafe { &*core::ptr::addr_of!(PERCPU[cpu() as usize]) }
}
