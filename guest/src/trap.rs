//! IDT, exception and interrupt entry, and the exception table that lets a
//! probe access fault and resume (as Linux's `extable` fixups do).
//!
//! Every vector has a 16-byte stub at `isr_stubs + 16 * vector` that pushes
//! a dummy error code where the CPU does not, pushes the vector, and jumps to
//! `isr_common`, which saves the GPRs and calls [`trap_dispatch`].

use abi::hypercall::calls::{self, ExceptionReport, FillRequest};
use abi::hypercall::FillResult;
use abi::layout::SEL_CODE64;
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::{apic, arch, hypercall, iommu, percpu, smp};

global_asm!(
    r#"
    .section .text.isr, "ax"
    .balign 16
    .global isr_stubs
isr_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if vec == 6
    jmp isr_ud
    .elseif vec == 14
    jmp isr_pf
    .elseif vec == {zap_vector}
    jmp isr_zap
    .elseif vec == {call_function_vector}
    jmp isr_call_function
    .elseif (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    push vec
    .else
    push 0
    push vec
    .endif
    jmp isr_common
    .set vec, vec + 1
    .endr

    .global isr_common
isr_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    cld
    call {dispatch}
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq

    /* Probe accessors: return (value, faulted) in rax:rdx. A fault on the
       marked instruction resumes at the fixup with rdx = 1. */
    .section .text.probe, "ax"
    .global probe_read_u64
probe_read_u64:
    xor edx, edx
    .global probe_read_u64_insn
probe_read_u64_insn:
    mov rax, [rdi]
    ret
    .global probe_read_u64_fixup
probe_read_u64_fixup:
    mov edx, 1
    xor eax, eax
    ret

    .global probe_write_u64
probe_write_u64:
    xor edx, edx
    xor eax, eax
    .global probe_write_u64_insn
probe_write_u64_insn:
    mov [rdi], rsi
    ret
    .global probe_write_u64_fixup
probe_write_u64_fixup:
    mov edx, 1
    ret

    /* Atomic read-modify-write probes (litmus xchg/cmpxchg/fetch_add):
       rax = the old value. */
    .global probe_xchg_u64
probe_xchg_u64:
    xor edx, edx
    mov rax, rsi
    .global probe_xchg_u64_insn
probe_xchg_u64_insn:
    xchg [rdi], rax
    ret
    .global probe_rmw_fixup
probe_rmw_fixup:
    mov edx, 1
    xor eax, eax
    ret

    .global probe_xadd_u64
probe_xadd_u64:
    xor edx, edx
    mov rax, rsi
    .global probe_xadd_u64_insn
probe_xadd_u64_insn:
    lock xadd [rdi], rax
    ret

    .global probe_cmpxchg_u64
probe_cmpxchg_u64:
    mov rax, rsi
    mov rcx, rdx
    xor edx, edx
    .global probe_cmpxchg_u64_insn
probe_cmpxchg_u64_insn:
    lock cmpxchg [rdi], rcx
    ret
"#,
    dispatch = sym trap_dispatch,
    zap_vector = const abi::zap::VECTOR,
    call_function_vector = const apic::CALL_FUNCTION_VECTOR,
);

extern "C" {
    static isr_stubs: u8;
    static probe_read_u64_insn: u8;
    static probe_read_u64_fixup: u8;
    static probe_write_u64_insn: u8;
    static probe_write_u64_fixup: u8;
    static probe_xchg_u64_insn: u8;
    static probe_xadd_u64_insn: u8;
    static probe_cmpxchg_u64_insn: u8;
    static probe_rmw_fixup: u8;
}

/// Result of a probe access.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub value: u64,
    pub faulted: u64,
}

extern "C" {
    /// Reads `*addr`; a fault is reported to the VMM as expected and turns into `faulted = 1`.
    pub fn probe_read_u64(addr: u64) -> Probe;
    /// Writes `*addr = val`, likewise.
    pub fn probe_write_u64(addr: u64, val: u64) -> Probe;
    /// Atomically exchanges `*addr` with `val`; `value` = the old value.
    pub fn probe_xchg_u64(addr: u64, val: u64) -> Probe;
    /// Atomically adds `val` to `*addr`; `value` = the old value.
    pub fn probe_xadd_u64(addr: u64, val: u64) -> Probe;
    /// `lock cmpxchg`: if `*addr == old` store `new`; `value` = the old contents.
    pub fn probe_cmpxchg_u64(addr: u64, old: u64, new: u64) -> Probe;
}

/// Saved state on the interrupt stack, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

#[repr(C, packed)]
#[derive(Clone, Copy)]
struct IdtEntry {
    offset_lo: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_hi: u32,
    reserved: u32,
}

static mut IDT: [IdtEntry; 256] =
    [IdtEntry { offset_lo: 0, selector: 0, ist: 0, type_attr: 0, offset_mid: 0, offset_hi: 0, reserved: 0 }; 256];
static IDT_READY: AtomicBool = AtomicBool::new(false);

#[repr(C, packed)]
struct Idtr {
    limit: u16,
    base: u64,
}

/// Builds the IDT (boot CPU, once).
pub fn build_idt() {
    // SAFETY: `isr_stubs` is the start of 256 16-byte stubs defined above.
    let base = core::ptr::addr_of!(isr_stubs) as u64;
    for v in 0..256u64 {
        let addr = base + 16 * v;
        let entry = IdtEntry {
            offset_lo: addr as u16,
            selector: SEL_CODE64,
            // #DF on its own stack (IST1): a kernel stack overflow that hit
            // the guard page below the stack cannot push a frame there.
            ist: (v == 8) as u8,
            type_attr: 0x8e, // present, DPL 0, 64-bit interrupt gate (IF cleared on entry)
            offset_mid: (addr >> 16) as u16,
            offset_hi: (addr >> 32) as u32,
            reserved: 0,
        };
        // SAFETY: only the boot CPU writes the IDT, before IDT_READY is published.
        unsafe { core::ptr::addr_of_mut!(IDT[v as usize]).write(entry) };
    }
    IDT_READY.store(true, Ordering::Release);
}

/// Loads the IDT on this CPU, waiting for the boot CPU to have built it.
pub fn load_idt() {
    while !IDT_READY.load(Ordering::Acquire) {
        arch::pause();
    }
    let idtr = Idtr { limit: (256 * 16 - 1) as u16, base: core::ptr::addr_of!(IDT) as u64 };
    // SAFETY: the IDT is fully built and lives forever.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack, preserves_flags)) }
}

fn addr(sym: &u8) -> u64 {
    sym as *const u8 as u64
}

/// Exception-table lookup: the resume address for a fault at `rip`, if any.
pub fn fixup_for(rip: u64) -> Option<u64> {
    // SAFETY: taking the addresses of the asm labels only.
    unsafe {
        if rip == addr(&probe_read_u64_insn) {
            Some(addr(&probe_read_u64_fixup))
        } else if rip == addr(&probe_write_u64_insn) {
            Some(addr(&probe_write_u64_fixup))
        } else if rip == addr(&probe_xchg_u64_insn)
            || rip == addr(&probe_xadd_u64_insn)
            || rip == addr(&probe_cmpxchg_u64_insn)
        {
            Some(addr(&probe_rmw_fixup))
        } else {
            None
        }
    }
}

extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let v = frame.vector;
    if v < 32 {
        return exception(frame);
    }
    let pc = percpu::this();
    pc.in_irq.fetch_add(1, Ordering::Relaxed);
    match v {
        apic::SPURIOUS_VECTOR => {} // no EOI for spurious interrupts
        apic::RESCHEDULE_VECTOR => apic::eoi(),
        apic::CALL_FUNCTION_VECTOR => {
            smp::handle_call_function_ipi(false);
            apic::eoi();
        }
        iommu::FAULT_VECTOR => {
            iommu::handle_fault_msi();
            apic::eoi();
        }
        iommu::WAIT_VECTOR => {
            iommu::handle_wait_msi();
            apic::eoi();
        }
        _ => report_fatal(frame),
    }
    pc.in_irq.fetch_sub(1, Ordering::Relaxed);
}

fn exception(frame: &mut TrapFrame) {
    let cr2 = if frame.vector == 14 { arch::read_cr2() } else { 0 };
    // A miss in the modelled TLB: the VMM walks the page tables and fills
    // it, and the access is retried (the fault path of a real page fault
    // runs only if the page tables do not allow the access).
    if frame.vector == 14 && abi::layout::is_user_va(cr2) {
        let r = hypercall::call::<calls::Fill>(FillRequest { va: cr2, error_code: frame.error_code });
        if r.result == FillResult::Filled {
            return;
        }
        // A real page fault: the mm's fault path, with interrupts enabled
        // as in Linux (a shootdown waiting on this CPU must get through).
        if frame.rflags & (1 << 9) != 0 {
            arch::interrupts_enable();
        }
        crate::explore::note_mem(true);
        let handled = crate::mm::memory::do_user_addr_fault(cr2, frame.error_code);
        arch::interrupts_disable();
        if handled {
            return;
        }
    }
    if let Some(resume) = fixup_for(frame.rip) {
        report_exception(frame, cr2, true);
        frame.rip = resume;
        frame.rdx = 1;
        return;
    }
    report_fatal(frame);
}

/// An exception or interrupt nobody expected: tell the VMM (which ends the
/// VM and prints vector, error code, RIP, CR2) and stop this CPU.
fn report_fatal(frame: &TrapFrame) -> ! {
    let cr2 = if frame.vector == 14 { arch::read_cr2() } else { 0 };
    report_exception(frame, cr2, false);
    arch::halt_forever()
}

fn report_exception(frame: &TrapFrame, cr2: u64, recovered: bool) {
    hypercall::call::<calls::Exception>(ExceptionReport {
        vector: frame.vector,
        error_code: frame.error_code,
        rip: frame.rip,
        cr2,
        rsp: frame.rsp,
        cs: frame.cs,
        recovered: recovered.into(),
    });
}
