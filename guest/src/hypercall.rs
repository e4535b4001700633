//! Guest side of the hypercall path: fill this vCPU's mailbox, one `out`.
//! Calls are typed (`abi::hypercall::calls`): `call::<calls::PtOp>(request)`
//! returns the op's typed reply.
//!
//! Written for hosts that emulate guest kernel code (`kvm_pvm`), where
//! every memory operand costs a page walk: the request is encoded straight
//! into the mailbox and the reply decoded straight out of it, with no
//! intermediate copies, and empty payloads skip the copy calls.

use abi::hypercall::{status, DecodeError, Hypercall, Mailbox, Op, Wire, DATA_LEN, HC_PORT, HC_USER_PORT};
use core::arch::asm;
use core::sync::atomic::Ordering;

use crate::{arch, percpu};

/// Makes hypercall `op` with raw words, ignoring any reply. Only for
/// deliberately malformed calls (`misbehave`): everything else uses [`call`].
pub fn call_raw(op: u64, args: &[u64; 8]) {
    let was_enabled = arch::interrupts_enabled();
    arch::interrupts_disable();
    let mb = percpu::mailbox();
    {
        // SAFETY: the mailbox page is this vCPU's alone and interrupts are off.
        let mb: &mut Mailbox = unsafe { &mut *mb };
        mb.op = op;
        mb.args = *args;
        mb.len = 0;
    }
    // SAFETY: the VMM handles this port synchronously; the asm is a compiler
    // barrier (no `nomem`), so the mailbox writes above happen before it.
    unsafe { asm!("out dx, al", in("dx") HC_PORT, in("al") 0u8, options(nostack, preserves_flags)) }
    if was_enabled {
        arch::interrupts_enable();
    }
}

/// The VMM answered with a status or a reply its own type does not allow:
/// a VMM bug, fatal.
#[cold]
#[inline(never)]
fn bad_reply(op: Op, status: u64, e: Option<DecodeError>) -> ! {
    match e {
        Some(e) => crate::report::fatal(file!(), line!(), format_args!("hypercall {}: bad reply: {e}", op.name())),
        None => crate::report::fatal(file!(), line!(), format_args!("hypercall {}: status {status}", op.name())),
    }
}

/// Makes hypercall `H` with `data`; copies up to `out.len()` reply bytes
/// into `out`; returns the typed reply and the reply's data length.
#[inline(always)]
pub fn call_into<H: Hypercall>(req: H::Request, data: &[u8], out: &mut [u8]) -> (H::Reply, usize) {
    if percpu::cpl() == 3 {
        return call_user::<H>(req, data, out);
    }
    // A hypercall from an interrupt handler on this CPU would clobber the
    // mailbox of one in flight: keep interrupts off while we own it.
    let was_enabled = arch::interrupts_enabled();
    arch::interrupts_disable();
    // SAFETY: the mailbox page is this vCPU's alone and interrupts are off.
    let (reply, st, len) = unsafe { exchange::<H>(percpu::mailbox(), HC_PORT, req, data, out) };
    if was_enabled {
        arch::interrupts_enable();
    }
    accept::<H>(reply, st, len)
}

/// The reply of `H`, if the VMM served it and it decodes; else a fatal
/// bad reply.
#[inline(always)]
fn accept<H: Hypercall>(reply: Result<H::Reply, DecodeError>, st: u64, len: usize) -> (H::Reply, usize) {
    match reply {
        Ok(r) if st == status::OK => (r, len),
        Ok(_) => bad_reply(H::OP, st, None),
        Err(e) => bad_reply(H::OP, st, Some(e)),
    }
}

/// One round trip through mailbox `mb` and `port`: the request's words
/// and the payload in, the `out` to the VMM, then the decoded reply, the
/// status and the payload length (the payload copied into `out` as far as
/// it fits).
///
/// # Safety
/// `mb` is a mailbox no one else uses until this returns (the caller's own,
/// with whatever keeps interrupt handlers off it), and `port` is the
/// hypercall port that serves it.
#[inline(always)]
unsafe fn exchange<H: Hypercall>(
    mb: *mut Mailbox,
    port: u16,
    req: H::Request,
    data: &[u8],
    out: &mut [u8],
) -> (Result<H::Reply, DecodeError>, u64, usize) {
    {
        // SAFETY: the caller's contract.
        let mb: &mut Mailbox = unsafe { &mut *mb };
        // Only the request's words: the VMM decodes no others.
        req.encode(&mut mb.args);
        let n = data.len().min(DATA_LEN);
        mb.len = n as u64;
        if n > 0 {
            mb.data[..n].copy_from_slice(&data[..n]);
        }
        // This CPU's queued page-table updates (lazy MMU mode) go with the
        // call, done before it — not from an interrupt handler, which may
        // have interrupted the code filling the queue.
        let carry = H::OP != Op::PtBatch
            && crate::mm::pgtable::has_queue()
            && percpu::this().in_irq.load(Ordering::Relaxed) == 0;
        let carried = if carry { crate::mm::pgtable::carry_into(&mut mb.data, n) } else { 0 };
        mb.op = abi::hypercall::op_word(H::OP, carried);
    }
    // SAFETY: the VMM handles this port synchronously; the asm is a compiler
    // barrier (no `nomem`), so the mailbox writes above happen before it.
    unsafe { asm!("out dx, al", in("dx") port, in("al") 0u8, options(nostack, preserves_flags)) }
    // SAFETY: as above; the VMM has written its reply.
    let mb: &Mailbox = unsafe { &*mb };
    let len = if out.is_empty() {
        0
    } else {
        let len = (mb.len as usize).min(DATA_LEN);
        let copy = len.min(out.len());
        out[..copy].copy_from_slice(&mb.data[..copy]);
        len
    };
    (H::Reply::decode(&mb.ret), mb.status, len)
}

/// [`call_into`] at CPL3: the vCPU's user mailbox and `HC_USER_PORT`.
/// CPL3 cannot mask interrupts, and needs not: handlers run at CPL0 and
/// use the kernel mailbox, or (a shootdown IPI, `cpl3::user_ipi`) run at
/// CPL3 and put the mailbox's words back before returning. Nothing
/// between filling the mailbox and the exit touches user-half memory
/// (callers pass kernel buffers), so no fault upcall — which makes
/// hypercalls of its own — can run in between.
#[inline(never)]
fn call_user<H: Hypercall>(req: H::Request, data: &[u8], out: &mut [u8]) -> (H::Reply, usize) {
    // SAFETY: the user mailbox is this vCPU's CPL3 code's alone; the TSS
    // I/O bitmap opens `HC_USER_PORT` to CPL3.
    let (reply, st, len) = unsafe { exchange::<H>(percpu::user_mailbox(), HC_USER_PORT, req, data, out) };
    accept::<H>(reply, st, len)
}

/// Makes hypercall `H` with a data payload.
#[inline(always)]
pub fn call_data<H: Hypercall>(req: H::Request, data: &[u8]) -> H::Reply {
    call_into::<H>(req, data, &mut []).0
}

/// Makes hypercall `H`.
#[inline(always)]
pub fn call<H: Hypercall>(req: H::Request) -> H::Reply {
    call_data::<H>(req, &[])
}

/// Makes hypercall `H`, which may park this vCPU (`WAIT`), with interrupts
/// enabled across the exit so that a parked vCPU still takes IPIs: the
/// mailbox is filled with interrupts off, then `sti; out` — the interrupt
/// shadow of `sti` covers the `out`, so no handler runs (and reuses the
/// mailbox) between filling it and the exit. The reply is not read: a
/// handler that ran after the exit may have used the mailbox since. At
/// CPL3, an ordinary call.
pub fn wait<H: Hypercall>(req: H::Request) {
    if percpu::cpl() == 3 {
        // Interrupts are on at CPL3. A shootdown IPI that ends the park
        // finds the flag and lets the VMM park this vCPU again after its
        // handler (`cpl3::user_ipi`).
        let in_wait = &crate::cpl3::IN_WAIT[percpu::cpu() as usize];
        in_wait.store(true, Ordering::Relaxed);
        call_user::<H>(req, &[], &mut []);
        in_wait.store(false, Ordering::Relaxed);
        return;
    }
    let was_enabled = arch::interrupts_enabled();
    arch::interrupts_disable();
    let mb = percpu::mailbox();
    {
        // SAFETY: the mailbox page is this vCPU's alone and interrupts are off.
        let mb: &mut Mailbox = unsafe { &mut *mb };
        mb.op = H::OP as u64;
        req.encode(&mut mb.args);
        mb.len = 0;
    }
    // SAFETY: as in `call_into`; interrupts are enabled from the `out` on.
    unsafe { asm!("sti", "out dx, al", in("dx") HC_PORT, in("al") 0u8, options(nostack)) }
    if !was_enabled {
        arch::interrupts_disable();
    }
}
