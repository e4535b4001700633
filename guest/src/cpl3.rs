//! Running the litmus threads and the mm model at CPL3.
//!
//! On hosts that emulate guest kernel code (`kvm_pvm`: every CPL0
//! instruction costs ~1 µs, CPL3 code runs natively), the code that runs
//! between privileged steps runs at CPL3 on the kernel's own identity map
//! (user-accessible but for the kernel stacks and the shadow region) and
//! comes back to CPL0 only for what needs it, through small assembler
//! stubs rather than the generic entry:
//!
//! * a modelled-TLB miss is a #PF: [`isr_pf`] makes the `FILL` hypercall
//!   and returns; a real fault is bounced back to CPL3 (an upcall, as a
//!   signal is delivered) where the mm's fault path runs natively;
//! * `switch_mm` is a `ud2` gate ([`isr_ud`]): `SWITCH_MM`, the zap list,
//!   CR3;
//! * the VMM's clears of modelled-TLB entries reach the host's own copy of
//!   the shadow tables through the zap interrupt ([`isr_zap`], `abi::zap`);
//! * hypercalls go through the vCPU's user mailbox and `HC_USER_PORT`,
//!   which the TSS I/O bitmap opens to CPL3 (the host forces IOPL 0);
//!   interrupts are always on at CPL3, and a handler's own hypercalls use
//!   the kernel mailbox, so nothing needs `cli`;
//! * IPIs are the `IPI` hypercall (CPL3 cannot write the x2APIC ICR).
//!
//! Each CPU has its own GDT (kernel code/data at the VMM's selectors, user
//! code/data in the `sysret` layout) and TSS: RSP0 is the kernel stack of
//! the CPL3 call in progress, IST1 a small stack for #DF (a kernel stack
//! overflow hits the guard page below the stack; the #DF that follows
//! reports it), and the I/O permission bitmap. [`run_at_cpl3`] calls a
//! function at CPL3 on the CPU's user stack (guard pages below it and
//! between it and the kernel stack) and returns its result; the way back
//! is a `ud2` at a known address, told apart from the gates by its RIP.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use abi::hypercall::calls::{Exception, ExceptionReport};
use abi::hypercall::{self as hc, FillResult, Op};
use abi::layout::{self, MAX_VCPUS};

use crate::{hypercall, percpu};

/// GDT selectors beside the VMM's kernel code (0x08) and data (0x10).
pub const SEL_USER_DATA: u64 = 0x23;
pub const SEL_USER_CODE64: u64 = 0x2b;
const SEL_TSS: u16 = 0x30;

/// Ports CPL3 may use (their bitmap bits are clear): the console, the
/// user hypercall port, exit, nop and yield. Not the kernel hypercall port
/// or the zap port.
const ALLOWED_PORTS: [(u16, u16); 2] = [(hc::SERIAL_PORT, hc::SERIAL_PORT + 8), (hc::EXIT_PORT, hc::HC_USER_PORT + 1)];
const _: () =
    assert!(hc::EXIT_PORT < hc::NOP_PORT && hc::NOP_PORT < hc::YIELD_PORT && hc::YIELD_PORT < hc::HC_USER_PORT);
const _: () = assert!(hc::HC_PORT < hc::EXIT_PORT && hc::ZAP_PORT > hc::HC_USER_PORT);
/// The bitmap covers ports 0..IOMAP_PORTS (ports past the TSS limit fault),
/// plus the terminating all-ones byte the architecture reads.
const IOMAP_PORTS: usize = 0x520;
const IOMAP_BYTES: usize = IOMAP_PORTS / 8 + 1;
const TSS_LEN: usize = 104;
const TSS_RSP0: usize = 4;
const TSS_IST1: usize = 36;
const TSS_IOMAP_BASE: usize = 102;

#[repr(C, align(16))]
struct Tss {
    bytes: [u8; TSS_LEN + IOMAP_BYTES],
}

/// The #DF stack of each CPU (IST1).
const DF_STACK: usize = 4096;

#[repr(C, align(16))]
struct DfStack([u8; DF_STACK]);

static mut GDT: [[u64; 8]; MAX_VCPUS as usize] = [[0; 8]; MAX_VCPUS as usize];
static mut TSS: [Tss; MAX_VCPUS as usize] = [const { Tss { bytes: [0; TSS_LEN + IOMAP_BYTES] } }; MAX_VCPUS as usize];
static mut DF_STACKS: [DfStack; MAX_VCPUS as usize] = [const { DfStack([0; DF_STACK]) }; MAX_VCPUS as usize];

#[repr(C, packed)]
struct Gdtr {
    limit: u16,
    base: u64,
}

/// Builds this CPU's GDT and TSS and loads them (every CPU, at boot,
/// after `percpu::init`).
pub fn init_cpu() {
    let cpu = percpu::cpu() as usize;
    // SAFETY: each CPU writes only its own slots, before using them.
    let (gdt, tss, df) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(GDT[cpu]),
            &mut *core::ptr::addr_of_mut!(TSS[cpu]),
            &mut *core::ptr::addr_of_mut!(DF_STACKS[cpu]),
        )
    };
    let b = &mut tss.bytes;
    let df_top = df.0.as_ptr() as u64 + DF_STACK as u64;
    b[TSS_IST1..TSS_IST1 + 8].copy_from_slice(&df_top.to_le_bytes());
    b[TSS_IOMAP_BASE..TSS_IOMAP_BASE + 2].copy_from_slice(&(TSS_LEN as u16).to_le_bytes());
    for (i, byte) in b[TSS_LEN..].iter_mut().enumerate() {
        let mut v = 0xffu8;
        for bit in 0..8 {
            let port = (i * 8 + bit) as u16;
            if i < IOMAP_BYTES - 1 && ALLOWED_PORTS.iter().any(|&(lo, hi)| port >= lo && port < hi) {
                v &= !(1 << bit);
            }
        }
        *byte = v;
    }
    let base = b.as_ptr() as u64;
    let limit = (TSS_LEN + IOMAP_BYTES - 1) as u64;
    gdt[0] = 0;
    gdt[1] = 0x00af_9b00_0000_ffff; // kernel code 64 (0x08, as the VMM's GDT)
    gdt[2] = 0x00cf_9300_0000_ffff; // kernel data (0x10)
    gdt[3] = 0x00cf_fb00_0000_ffff; // user code 32 (unused; the sysret layout)
    gdt[4] = 0x00cf_f300_0000_ffff; // user data (0x23)
    gdt[5] = 0x00af_fb00_0000_ffff; // user code 64 (0x2b)
    gdt[6] = (limit & 0xffff)
        | (base & 0xff_ffff) << 16
        | 0x89 << 40 // present, 64-bit TSS (available)
        | ((limit >> 16) & 0xf) << 48
        | ((base >> 24) & 0xff) << 56;
    gdt[7] = base >> 32;
    let gdtr = Gdtr { limit: (8 * 8 - 1) as u16, base: gdt.as_ptr() as u64 };
    // SAFETY: the new GDT keeps the kernel selectors the CPU already uses;
    // the TSS descriptor points at this CPU's TSS, which lives forever.
    unsafe {
        core::arch::asm!("lgdt [{}]", in(reg) &gdtr, options(readonly, nostack, preserves_flags));
        core::arch::asm!("ltr {:x}", in(reg) SEL_TSS, options(nomem, nostack, preserves_flags));
    }
    percpu::set_tss(base);
}

global_asm!(
    r#"
    .section .text.cpl3, "ax"

    /* u64 user_enter(fn, arg, user_rsp): fn(arg) at CPL3, its result. */
    .global user_enter
user_enter:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    pushfq
    mov gs:[{off_krsp}], rsp
    mov rax, gs:[{off_tss}]
    mov [rax + {tss_rsp0}], rsp
    push {sel_udata}
    push rdx
    push 0x202
    push {sel_ucode}
    lea rax, [rip + user_trampoline]
    push rax
    iretq
user_trampoline:
    mov rax, rdi
    mov rdi, rsi
    call rax
    .global user_return_insn
user_return_insn:
    ud2

    /* CPL3: switch_mm(pgd in rdi) through the #UD gate. */
    .global gate_switch_mm
gate_switch_mm:
    .global gate_switch_mm_insn
gate_switch_mm_insn:
    ud2
    ret

    /* CPL3: back to the boot page tables through the #UD gate. */
    .global gate_kernel_mm
gate_kernel_mm:
    .global gate_kernel_mm_insn
gate_kernel_mm_insn:
    ud2
    ret

    /* #UD. From CPL3 at user_return_insn: back to user_enter's caller,
       with the function's result in rax. At gate_switch_mm_insn: the
       SWITCH_MM hypercall through the kernel mailbox (interrupts are off
       in here), the zap list, the new CR3. Anything else: the generic
       entry (fatal). */
    .global isr_ud
isr_ud:
    test byte ptr [rsp + 8], 3
    jz 1f
    push rax
    lea rax, [rip + user_return_insn]
    cmp [rsp + 8], rax
    je 2f
    lea rax, [rip + gate_switch_mm_insn]
    cmp [rsp + 8], rax
    je 3f
    lea rax, [rip + gate_kernel_mm_insn]
    cmp [rsp + 8], rax
    je 8f
    pop rax
1:  push 0
    push 6
    jmp isr_common
2:  pop rax
    mov rsp, gs:[{off_krsp}]
    mov qword ptr gs:[{off_krsp}], 0
    popfq
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
3:  push rcx
    push rdx
    push rsi
    mov rsi, gs:[{off_mailbox}]
    mov qword ptr [rsi + {off_op}], {op_switch_mm}
    mov [rsi + {off_args}], rdi
    mov qword ptr [rsi + {off_len}], 0
    mov edx, {hc_port}
    out dx, al
    mov rax, [rsi + {off_ret}]
    push rax
    call zap_drain
    pop rax
    mov cr3, rax
    pop rsi
    pop rdx
    pop rcx
    pop rax
    add qword ptr [rsp], 2
    iretq
8:  mov rax, {boot_pml4}
    mov cr3, rax
    pop rax
    add qword ptr [rsp], 2
    iretq

    /* Clears every slot of this CPU's zap list through the shadow
       region's alias, asking the VMM for more while it has them.
       CPL0, interrupts off; clobbers rax, rcx, rdx, rsi. */
    .global zap_drain
zap_drain:
    mov rsi, gs:[{off_zap}]
4:  mov rcx, [rsi + {zap_count}]
    test rcx, rcx
    jz 6f
    movabs rdx, {alias_delta}
5:  mov rax, [rsi + {zap_slots} + 8 * rcx - 8]
    mov qword ptr [rax + rdx], 0
    dec rcx
    jnz 5b
    mov qword ptr [rsi + {zap_count}], 0
6:  cmp qword ptr [rsi + {zap_more}], 0
    je 7f
    mov edx, {zap_port}
    out dx, al
    jmp 4b
7:  ret

    /* The zap interrupt: drain, drop the CPU's own cached translations
       (on hosts whose TLB caches the shadow tables), EOI. */
    .global isr_zap
isr_zap:
    push rax
    push rcx
    push rdx
    push rsi
    call zap_drain
    mov rax, cr3
    mov cr3, rax
    mov ecx, 0x80b
    xor eax, eax
    xor edx, edx
    wrmsr
    pop rsi
    pop rdx
    pop rcx
    pop rax
    iretq

    /* #PF. From CPL3 on a user-half address: FILL through the kernel
       mailbox; filled → retry the access. A real fault → bounced to
       user_fault_upcall at CPL3: CR2, error code, RFLAGS and RIP pushed
       on the user stack (the target has no red zone), as a signal is
       delivered. Anything else → the generic entry.
       Frame: error code, RIP, CS, RFLAGS, RSP, SS. */
    .global isr_pf
isr_pf:
    test byte ptr [rsp + 16], 3
    jz 1f
    push rax
    push rdx
    push rsi
    mov rax, cr2
    movabs rsi, {user_base}
    cmp rax, rsi
    jb 3f
    movabs rsi, {user_end}
    cmp rax, rsi
    jae 3f
    mov rsi, gs:[{off_mailbox}]
    mov [rsi + {off_args}], rax
    mov rax, [rsp + 24]
    mov [rsi + {off_args} + 8], rax
    mov qword ptr [rsi + {off_op}], {op_fill}
    mov qword ptr [rsi + {off_len}], 0
    mov edx, {hc_port}
    out dx, al
    cmp qword ptr [rsi + {off_ret}], {filled}
    jne 2f
    pop rsi
    pop rdx
    pop rax
    add rsp, 8
    iretq
2:  mov rsi, [rsp + 56]
    mov rax, [rsp + 32]
    mov [rsi - 8], rax
    mov rax, [rsp + 48]
    mov [rsi - 16], rax
    mov rax, [rsp + 24]
    mov [rsi - 24], rax
    mov rax, cr2
    mov [rsi - 32], rax
    sub rsi, 32
    mov [rsp + 56], rsi
    lea rax, [rip + user_fault_upcall]
    mov [rsp + 32], rax
    pop rsi
    pop rdx
    pop rax
    add rsp, 8
    iretq
3:  pop rsi
    pop rdx
    pop rax
1:  push 14
    jmp isr_common

    /* An upcall's frame at CPL3: the caller-saved registers of the
       interrupted code (the Rust handler may clobber them), rbp holding
       the frame so the stack can be aligned for the call. */
    .macro upcall_save
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    push rbp
    mov rbp, rsp
    .endm
    .macro upcall_restore
    mov rsp, rbp
    pop rbp
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    .endm

    /* CALL_FUNCTION IPI. Taken at CPL3: EOI, then bounced to
       user_ipi_upcall at CPL3 (RFLAGS and RIP pushed on the user stack),
       where the handler runs natively: on hosts that emulate kernel code
       the generic entry and the handler cost hundreds of emulated
       instructions, this stub a score. Taken at CPL0: the generic entry.
       Frame: RIP, CS, RFLAGS, RSP, SS. */
    .global isr_call_function
isr_call_function:
    test byte ptr [rsp + 8], 3
    jz 1f
    push rax
    push rcx
    push rdx
    mov ecx, 0x80b
    xor eax, eax
    xor edx, edx
    wrmsr
    mov rdx, [rsp + 48]
    mov rax, [rsp + 24]
    mov [rdx - 8], rax
    mov rax, [rsp + 40]
    mov [rdx - 16], rax
    sub rdx, 16
    mov [rsp + 48], rdx
    lea rax, [rip + user_ipi_upcall]
    mov [rsp + 24], rax
    pop rdx
    pop rcx
    pop rax
    iretq
1:  push 0
    push {call_function_vector}
    jmp isr_common

    /* CPL3, user stack: [rsp] = RFLAGS, RIP of the interrupted code. */
    .global user_ipi_upcall
user_ipi_upcall:
    upcall_save
    and rsp, -16
    cld
    call {user_ipi}
    upcall_restore
    popfq
    ret

    /* CPL3, user stack: [rsp] = CR2, error code, RFLAGS, RIP. */
    .global user_fault_upcall
user_fault_upcall:
    upcall_save
    mov rdi, rsp
    and rsp, -16
    cld
    call {user_fault}
    upcall_restore
    add rsp, 16
    popfq
    ret
"#,
    off_krsp = const percpu::OFF_KRSP,
    off_tss = const percpu::OFF_TSS,
    off_mailbox = const percpu::OFF_MAILBOX,
    off_zap = const percpu::OFF_ZAP_LIST,
    tss_rsp0 = const TSS_RSP0,
    sel_udata = const SEL_USER_DATA,
    sel_ucode = const SEL_USER_CODE64,
    off_op = const hc::OFF_OP,
    off_args = const hc::OFF_ARGS,
    off_len = const hc::OFF_LEN,
    off_ret = const hc::OFF_RET,
    op_switch_mm = const Op::SwitchMm as u64,
    op_fill = const Op::Fill as u64,
    filled = const FillResult::Filled as u64,
    hc_port = const hc::HC_PORT,
    zap_port = const hc::ZAP_PORT,
    zap_count = const abi::zap::COUNT,
    zap_more = const abi::zap::MORE,
    zap_slots = const abi::zap::SLOTS,
    alias_delta = const layout::SHADOW_ALIAS.wrapping_sub(layout::SHADOW_BASE),
    user_base = const layout::USER_BASE,
    user_end = const layout::USER_END,
    user_fault = sym user_fault,
    user_ipi = sym user_ipi,
    call_function_vector = const crate::apic::CALL_FUNCTION_VECTOR,
    boot_pml4 = const layout::BOOT_PML4,
);

extern "C" {
    fn user_enter(f: extern "C" fn(u64) -> u64, arg: u64, user_rsp: u64) -> u64;
    fn gate_switch_mm(pgd: u64);
    fn gate_kernel_mm();
    /// Clears this CPU's zap list (CPL0, interrupts off).
    fn zap_drain();
}

/// Calls `f(arg)` at CPL3 on this CPU's user stack and returns its result.
/// Interrupts are on at CPL3 whatever the caller had; the caller's flags
/// are restored on return. Not reentrant (one CPL3 call per CPU at a time).
pub fn run_at_cpl3(f: extern "C" fn(u64) -> u64, arg: u64) -> u64 {
    crate::guest_assert!(percpu::cpl() == 0 && percpu::this().krsp == 0, "run_at_cpl3 from CPL3 or nested");
    // SAFETY: this CPU's GDT/TSS are loaded (`init_cpu`), its user stack is
    // unused (no CPL3 call in progress), and `f` touches only memory the
    // identity map lets CPL3 reach (kernel stacks and the shadow region
    // are supervisor-only: a stray access faults and is reported).
    unsafe { user_enter(f, arg, layout::user_stack_top(percpu::cpu())) }
}

/// `switch_mm`'s privileged part from CPL3: SWITCH_MM, zap list, CR3.
pub fn switch_mm_gate(pgd: u64) {
    // SAFETY: the gate returns to the next instruction, having loaded the
    // CR3 the VMM named for `pgd` (a bad PGD ends the VM).
    unsafe { gate_switch_mm(pgd) }
}

/// Back to the boot page tables from CPL3.
pub fn kernel_mm_gate() {
    // SAFETY: the gate loads the boot page tables, which map the whole
    // kernel, and returns to the next instruction.
    unsafe { gate_kernel_mm() }
}

/// Clears this CPU's zap list (CPL0 code that made a FLUSH or SWITCH_MM
/// through the kernel mailbox, before it goes on). Interrupts must be off
/// (the list is this CPU's; the zap interrupt drains it too).
pub fn drain_zaps() {
    // SAFETY: CPL0 with interrupts off (callers' contract); the stub
    // touches only this CPU's zap list and the shadow alias.
    unsafe { zap_drain() }
}

/// Per CPU: its CPL3 code is in a `WAIT` hypercall (parked, or about to
/// be, or just back).
pub static IN_WAIT: [AtomicBool; MAX_VCPUS as usize] = [const { AtomicBool::new(false) }; MAX_VCPUS as usize];

/// CALL_FUNCTION IPIs whose handler ran at CPL3 (for the self-tests).
pub static IPI_UPCALLS: AtomicU64 = AtomicU64::new(0);

/// The CALL_FUNCTION handler at CPL3 (the upcall `isr_call_function`
/// bounced the IPI to; the EOI is done). It may have interrupted CPL3
/// code in the middle of a hypercall through the user mailbox, whose
/// words its own hypercalls (FLUSH, WAKE: no data payload either way)
/// would overwrite: they are kept and put back. A nested upcall (another
/// IPI while this one runs: interrupts stay on at CPL3) is safe: each
/// request is claimed before it runs (`smp::handle_call_function_ipi`).
extern "C" fn user_ipi() {
    IPI_UPCALLS.fetch_add(1, Ordering::Relaxed);
    let pc = percpu::this();
    pc.in_irq.fetch_add(1, Ordering::Relaxed);
    // The IPI ended a park in WAIT (taken, so a nested handler does not
    // also resume it): the handler's last call may park the vCPU again.
    let parked = IN_WAIT[percpu::cpu() as usize].swap(false, Ordering::Relaxed);
    let mb = percpu::user_mailbox();
    // SAFETY: this vCPU's user mailbox, used only by this vCPU's CPL3
    // code, which is interrupted (or is this upcall) until we return.
    let saved = unsafe { core::ptr::read_volatile(mb.cast::<MailboxWords>()) };
    crate::smp::handle_call_function_ipi(parked);
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(mb.cast::<MailboxWords>(), saved) };
    pc.in_irq.fetch_sub(1, Ordering::Relaxed);
}

/// The mailbox's words before its data area (op, args, ret, status, len).
#[derive(Clone, Copy)]
#[repr(C)]
struct MailboxWords([u64; (hc::OFF_DATA / 8) as usize]);

/// What `user_fault_upcall` saved, lowest address first.
#[repr(C)]
struct UpcallFrame {
    rbp: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rax: u64,
    cr2: u64,
    error_code: u64,
    rflags: u64,
    rip: u64,
}

/// Faults the mm's fault path handled at CPL3 (for the self-tests).
pub static FAULT_UPCALLS: AtomicU64 = AtomicU64::new(0);

/// The page-fault path at CPL3 (the upcall): the mm's fault handler, then
/// the probe fixups, as `trap::exception` does at CPL0.
extern "C" fn user_fault(f: &mut UpcallFrame) {
    FAULT_UPCALLS.fetch_add(1, Ordering::Relaxed);
    if layout::is_user_va(f.cr2) && crate::mm::memory::do_user_addr_fault(f.cr2, f.error_code) {
        return;
    }
    let report = |recovered: bool| {
        hypercall::call::<Exception>(ExceptionReport {
            vector: 14,
            error_code: f.error_code,
            rip: f.rip,
            cr2: f.cr2,
            rsp: f as *const UpcallFrame as u64 + core::mem::size_of::<UpcallFrame>() as u64,
            cs: SEL_USER_CODE64,
            recovered: recovered.into(),
        })
    };
    if let Some(resume) = crate::trap::fixup_for(f.rip) {
        report(true);
        f.rip = resume;
        f.rdx = 1;
        return;
    }
    report(false);
    crate::arch::halt_forever()
}
