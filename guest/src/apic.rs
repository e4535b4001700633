//! Local APIC in x2APIC mode: everything is an MSR, IPIs are one ICR write.

use crate::arch::{self, rdmsr, wrmsr};

const MSR_X2APIC_ID: u32 = 0x802;
const MSR_X2APIC_TPR: u32 = 0x808;
const MSR_X2APIC_EOI: u32 = 0x80b;
const MSR_X2APIC_SVR: u32 = 0x80f;
const MSR_X2APIC_ICR: u32 = 0x830;

const APIC_BASE_EXTD: u64 = 1 << 10;
const APIC_BASE_EN: u64 = 1 << 11;
const SVR_ENABLE: u64 = 1 << 8;
const ICR_DEST_SELF: u64 = 1 << 18;

/// Vector numbers, named after Linux's `arch/x86/include/asm/irq_vectors.h`.
pub const SPURIOUS_VECTOR: u64 = 0xff;
/// Wakes a halted CPU so it looks at its work slot; the handler only EOIs.
pub const RESCHEDULE_VECTOR: u64 = 0xfd;
/// Runs queued `smp_call_function` requests (also used for TLB shootdowns).
pub const CALL_FUNCTION_VECTOR: u64 = 0xfc;

/// Switches this CPU's LAPIC to x2APIC mode and enables it.
pub fn init() {
    let base = rdmsr(arch::MSR_APIC_BASE);
    wrmsr(arch::MSR_APIC_BASE, base | APIC_BASE_EN);
    wrmsr(arch::MSR_APIC_BASE, base | APIC_BASE_EN | APIC_BASE_EXTD);
    wrmsr(MSR_X2APIC_TPR, 0);
    wrmsr(MSR_X2APIC_SVR, SVR_ENABLE | SPURIOUS_VECTOR);
}

pub fn id() -> u64 {
    rdmsr(MSR_X2APIC_ID)
}

pub fn eoi() {
    wrmsr(MSR_X2APIC_EOI, 0);
}

/// Fixed-delivery IPI to the CPU with x2APIC ID `dest` (== its CPU index:
/// the VMM creates vCPU i with APIC ID i). At CPL3, which cannot write the
/// ICR, the `IPI` hypercall.
pub fn send_ipi(dest: u64, vector: u64) {
    if crate::percpu::cpl() == 3 {
        let mut targets = [0u64; 4];
        targets[(dest / 64) as usize % 4] |= 1 << (dest % 64);
        return send_ipi_many(targets, vector);
    }
    if dest == crate::percpu::cpu() {
        wrmsr(MSR_X2APIC_ICR, ICR_DEST_SELF | vector);
    } else {
        wrmsr(MSR_X2APIC_ICR, (dest << 32) | vector);
    }
}

/// Fixed-delivery IPI to every CPU in `targets` (bit i = CPU i) with one
/// `IPI` hypercall: how CPL3 code interrupts other CPUs.
pub fn send_ipi_many(targets: [u64; 4], vector: u64) {
    use abi::hypercall::calls::{Ipi, IpiRequest};
    crate::hypercall::call::<Ipi>(IpiRequest { targets, vector });
}
