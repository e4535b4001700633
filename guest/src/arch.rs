//! Thin wrappers over the x86-64 instructions the kernel needs.

use core::arch::asm;

#[inline]
pub fn outb(port: u16, val: u8) {
    // SAFETY: port I/O to the VMM's devices; no memory is touched.
    unsafe { asm!("out dx, al", in("dx") port, in("al") val, options(nostack, preserves_flags)) }
}

#[inline]
pub fn outl(port: u16, val: u32) {
    // SAFETY: as for `outb`.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") val, options(nostack, preserves_flags)) }
}

#[inline]
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: callers only read architectural MSRs KVM implements.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack, preserves_flags)) }
    ((hi as u64) << 32) | lo as u64
}

#[inline]
pub fn wrmsr(msr: u32, val: u64) {
    // SAFETY: callers only write architectural MSRs with valid values.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") val as u32, in("edx") (val >> 32) as u32,
             options(nostack, preserves_flags))
    }
}

#[inline]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc has no side effects.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    ((hi as u64) << 32) | lo as u64
}

#[inline]
pub fn read_cr2() -> u64 {
    let v;
    // SAFETY: reading a control register has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

#[inline]
pub fn read_cr3() -> u64 {
    let v;
    // SAFETY: as for `read_cr2`.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

#[inline]
pub fn read_rsp() -> u64 {
    let v;
    // SAFETY: reads the stack pointer only.
    unsafe { asm!("mov {}, rsp", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

#[inline]
pub fn pause() {
    core::hint::spin_loop()
}

#[inline]
pub fn interrupts_enable() {
    // SAFETY: the IDT is loaded before any CPU enables interrupts.
    unsafe { asm!("sti", options(nomem, nostack)) }
}

#[inline]
pub fn interrupts_disable() {
    // SAFETY: masking interrupts is always allowed in ring 0.
    unsafe { asm!("cli", options(nomem, nostack)) }
}

#[inline]
pub fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack.
    unsafe { asm!("pushfq; pop {}", out(reg) flags, options(nomem, preserves_flags)) }
    flags & (1 << 9) != 0
}

/// `sti; hlt`: the interrupt shadow of `sti` covers `hlt`, so a wake-up
/// interrupt that arrives between a "nothing to do" check and the halt is not lost.
#[inline]
pub fn safe_halt() {
    // SAFETY: halts until the next interrupt with interrupts enabled.
    unsafe { asm!("sti; hlt", options(nomem, nostack)) }
}

/// Halts forever with interrupts off (a CPU that has nothing left to do).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli+hlt stops this CPU; only NMI/INIT could wake it.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) }
    }
}

pub const MSR_APIC_BASE: u32 = 0x1b;
pub const MSR_GS_BASE: u32 = 0xc000_0101;

/// The index of the first non-zero 8-byte entry at or after `from` in the
/// 4 KiB table at `table` (`repe scasq`: hosts that emulate guest
/// instructions still step it entry by entry, but at about half the cost
/// of a compiled loop).
///
/// # Safety
/// `table` is a readable identity-mapped page.
pub unsafe fn next_nonzero_entry(table: u64, from: u64) -> Option<u64> {
    if from >= 512 {
        return None;
    }
    let left: u64;
    // SAFETY: per the contract; reads [from, 512) of the page only.
    unsafe {
        core::arch::asm!(
            "repe scasq",
            inout("rdi") table + 8 * from => _,
            inout("rcx") 512 - from => left,
            in("rax") 0u64,
            options(nostack, readonly)
        )
    }
    // scasq stops after the first non-zero entry (ZF clear) or at the end.
    let idx = 511 - left;
    // SAFETY: as above; the index is < 512.
    let e = unsafe { core::ptr::read_volatile((table + 8 * idx) as *const u64) };
    (e != 0 && idx >= from).then_some(idx)
}
