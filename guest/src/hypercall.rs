//! Guest side of the hypercall path: fill this vCPU's mailbox, one `out`.

use abi::hypercall::{Mailbox, DATA_LEN, HC_PORT};
use core::arch::asm;

use crate::{arch, percpu};

/// What the VMM answered.
#[derive(Clone, Copy, Debug)]
pub struct Reply {
    pub status: u64,
    pub ret: [u64; 4],
    /// Bytes the VMM returned in the mailbox data area.
    pub len: usize,
}

/// Makes hypercall `op`; copies up to `out.len()` reply bytes into `out`.
pub fn call_into(op: u64, args: &[u64], data: &[u8], out: &mut [u8]) -> Reply {
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
        mb.args = [0; 8];
        for (dst, src) in mb.args.iter_mut().zip(args) {
            *dst = *src;
        }
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
    let reply = Reply { status: mb.status, ret: mb.ret, len };
    if was_enabled {
        arch::interrupts_enable();
    }
    reply
}

pub fn call(op: u64, args: &[u64], data: &[u8]) -> Reply {
    call_into(op, args, data, &mut [])
}
