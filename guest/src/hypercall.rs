//! Guest side of the hypercall path: fill this vCPU's mailbox, one `out`.
//! Calls are typed (`abi::hypercall::calls`): `call::<calls::PtOp>(request)`
//! returns the op's typed reply.
//!
//! Written for hosts that emulate guest kernel code (`kvm_pvm`), where
//! every memory operand costs a page walk: the request is encoded straight
//! into the mailbox and the reply decoded straight out of it, with no
//! intermediate copies, and empty payloads skip the copy calls.

use abi::hypercall::{status, DecodeError, Hypercall, Mailbox, Op, Wire, DATA_LEN, HC_PORT};
use core::arch::asm;

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
    // A hypercall from an interrupt handler on this CPU would clobber the
    // mailbox of one in flight: keep interrupts off while we own it.
    let was_enabled = arch::interrupts_enabled();
    arch::interrupts_disable();
    let mb = percpu::mailbox();
    {
        // SAFETY: the mailbox page is this vCPU's alone and interrupts are off.
        let mb: &mut Mailbox = unsafe { &mut *mb };
        mb.op = H::OP as u64;
        // Only the request's words: the VMM decodes no others.
        req.encode(&mut mb.args);
        let n = data.len().min(DATA_LEN);
        mb.len = n as u64;
        if n > 0 {
            mb.data[..n].copy_from_slice(&data[..n]);
        }
    }
    // SAFETY: the VMM handles this port synchronously; the asm is a compiler
    // barrier (no `nomem`), so the mailbox writes above happen before it.
    unsafe { asm!("out dx, al", in("dx") HC_PORT, in("al") 0u8, options(nostack, preserves_flags)) }
    // SAFETY: as above; the VMM has written its reply.
    let mb: &Mailbox = unsafe { &*mb };
    let st = mb.status;
    let reply = H::Reply::decode(&mb.ret);
    let len = if out.is_empty() {
        0
    } else {
        let len = (mb.len as usize).min(DATA_LEN);
        let copy = len.min(out.len());
        out[..copy].copy_from_slice(&mb.data[..copy]);
        len
    };
    if was_enabled {
        arch::interrupts_enable();
    }
    match reply {
        Ok(r) if st == status::OK => (r, len),
        Ok(_) => bad_reply(H::OP, st, None),
        Err(e) => bad_reply(H::OP, st, Some(e)),
    }
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
