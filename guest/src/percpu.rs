//! Per-CPU data, reached through GS (as Linux's `this_cpu_*`).

use abi::hypercall::Mailbox;
use abi::layout::{self, MAX_VCPUS};
use core::arch::asm;
use core::sync::atomic::AtomicU64;

use crate::arch;

/// Fields are read with `gs:[offset]`; `cpu` must stay first.
#[repr(C)]
pub struct PerCpu {
    pub cpu: u64,
    pub mailbox: u64,
    /// Non-zero while this CPU runs inside an interrupt handler.
    pub in_irq: AtomicU64,
}

static mut PERCPU: [PerCpu; MAX_VCPUS as usize] =
    [const { PerCpu { cpu: 0, mailbox: 0, in_irq: AtomicU64::new(0) } }; MAX_VCPUS as usize];

/// Points GS at this CPU's slot. Called once per CPU at boot, before anything else.
pub fn init(cpu: u64) {
    // SAFETY: each CPU writes only its own slot, once, before publishing itself online.
    let slot = unsafe { &mut *core::ptr::addr_of_mut!(PERCPU[cpu as usize]) };
    slot.cpu = cpu;
    slot.mailbox = layout::mailbox(cpu);
    arch::wrmsr(arch::MSR_GS_BASE, slot as *mut PerCpu as u64);
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

pub fn this() -> &'static PerCpu {
    // SAFETY: shared reference to this CPU's slot; mutable fields are atomics.
    unsafe { &*core::ptr::addr_of!(PERCPU[cpu() as usize]) }
}
