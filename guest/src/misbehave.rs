//! Deliberate guest misbehaviour (`mode=misbehave.KIND`), so the end-to-end
//! tests can check that the VMM reports each kind with vCPU, RIP and cause
//! and never panics. Kinds run on the last vCPU, to show the report names
//! the right one.

use core::arch::asm;

use crate::{arch, hypercall, smp};

fn hang(_: u64) {
    loop {
        arch::pause();
    }
}

fn triple_fault(_: u64) {
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let empty = Idtr { limit: 0, base: 0 };
    // SAFETY: deliberately unsafe: with an empty IDT the #UD escalates to a
    // triple fault, which KVM reports as a shutdown exit.
    unsafe { asm!("lidt [{}]", "ud2", in(reg) &empty, options(noreturn)) }
}

fn bad_hypercall(_: u64) {
    hypercall::call_raw(0xdead, &[0; 8]);
}

fn stray_mmio(_: u64) {
    // Identity-mapped by the boot page tables but beyond RAM: no memslot.
    // SAFETY: deliberately writes to an unbacked guest-physical address.
    unsafe { core::ptr::write_volatile(0xd000_0000 as *mut u64, 0x5a5a) }
}

fn stray_pte_store(_: u64) {
    let mm = crate::mm::pgtable::PageTables::new();
    // SAFETY: deliberately stores to the read-only page-table region.
    unsafe { core::ptr::write_volatile((mm.pgd + 8) as *mut u64, 0x777) }
}

fn page_fault(_: u64) {
    // SAFETY: deliberately reads an unmapped address without a fixup.
    unsafe { core::ptr::read_volatile(0x0000_0080_0000_0040 as *const u64) };
}

fn panic(_: u64) {
    panic!("deliberate panic for the end-to-end test");
}

/// Runs misbehaviour `kind`; returns false if the kind is unknown.
pub fn run(kind: &str) -> bool {
    let f: smp::WorkFn = match kind {
        "hang" => hang,
        "triple-fault" => triple_fault,
        "bad-hypercall" => bad_hypercall,
        "stray-mmio" => stray_mmio,
        "stray-pte-store" => stray_pte_store,
        "page-fault" => page_fault,
        "panic" => panic,
        _ => return false,
    };
    let last = smp::num_cpus() - 1;
    if last == 0 {
        f(0);
    } else {
        smp::run_on(last, f, 0);
        smp::wait_done(last, u64::MAX / 1_000_000_000);
    }
    true
}
