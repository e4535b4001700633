//! Guest side of the hypercall path: fill this vCPU's mailbox, one `out`.
//! Calls are typed (`abi::hypercall::calls`): `call::<calls::PtOp>(request)`
//! returns the op's typed reply.

use abi::hypercall::{Hypercall, Mailbox, Wire, DATA_LEN, HC_PORT};
use core::arch::asm;

use crate::{arch, percpu};

/// What the VMM answered, as words.
#[derive(Clone, Copy, Debug)]
pub struct RawReply {
    pub status: u64,
    pub ret: [u64; 4],
    /// Bytes the VMM returned in the mailbox data area.
    pub len: usize,
}

/// Makes hypercall `op` with raw words; copies up to `out.len()` reply
/// bytes into `out`. Only for deliberately malformed calls (`misbehave`):
/// everything else uses [`call`].
pub fn call_raw(op: u64, args: &[u64; 8], data: &[u8], out: &mut [u8]) -> RawReply {
    // A hypercall from an interrupt handler on this CPU would clobber the
    // mailbox of one in flight: keep interrupts off while we own it.
    let was_enabled = arch::interrupts_enabled();
    arch::interrupts_disable();
    let mb = percpu::mailbox();
    let n = data.len().min(DATA_LEN);
    {
        // SAFETY: the mailbox page is this vCPU's alone and interrupts are off.
        let mb: &mut Mailbox = unsafe { &mut *mb };
        mb.op = op;
        mb.args = *args;
        mb.len = n as u64;
        mb.data[..n].copy_from_slice(&data[..n]);
    }
    // SAFETY: the VMM handles this port synchronously; the asm is a compiler
    // barrier (no `nomem`), so the mailbox writes above happen before it.
    unsafe { asm!("out dx, al", in("dx") HC_PORT, in("al") 0u8, options(nostack, preserves_flags)) }
    // SAFETY: as above; the VMM has written its reply.
    let mb: &Mailbox = unsafe { &*mb };
    let len = (mb.len as usize).min(DATA_LEN);
    let copy = len.min(out.len());
    out[..copy].copy_from_slice(&mb.data[..copy]);
    let reply = RawReply { status: mb.status, ret: mb.ret, len };
    if was_enabled {
        arch::interrupts_enable();
    }
    reply
}

/// Makes hypercall `H` with `data`; copies up to `out.len()` reply bytes
/// into `out`; returns the typed reply and the reply's data length.
pub fn call_into<H: Hypercall>(req: H::Request, data: &[u8], out: &mut [u8]) -> (H::Reply, usize) {
    let mut args = [0u64; 8];
    req.encode(&mut args);
    let raw = call_raw(H::OP as u64, &args, data, out);
    if raw.status != abi::hypercall::status::OK {
        crate::report::fatal(file!(), line!(), format_args!("hypercall {}: status {}", H::OP.name(), raw.status));
    }
    match H::Reply::decode(&raw.ret) {
        Ok(r) => (r, raw.len),
        // The VMM wrote a reply its own type does not allow: a VMM bug.
        Err(e) => crate::report::fatal(file!(), line!(), format_args!("hypercall {}: bad reply: {e}", H::OP.name())),
    }
}

/// Makes hypercall `H` with a data payload.
pub fn call_data<H: Hypercall>(req: H::Request, data: &[u8]) -> H::Reply {
    call_into::<H>(req, data, &mut []).0
}

/// Makes hypercall `H`.
pub fn call<H: Hypercall>(req: H::Request) -> H::Reply {
    call_data::<H>(req, &[])
}
