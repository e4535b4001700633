//! The hypercall path's plumbing: read the exiting vCPU's mailbox, find the
//! handler registered for its op, write the reply. What each op does lives
//! in the services (`crate::services`), each owning its state; this file
//! knows no operation.

use std::sync::Arc;

use abi::hypercall::{self as hc, Hypercall, Op, Wire, DATA_LEN};
use abi::layout;
use vm_memory::{Bytes, GuestAddress};

use super::bus::{BusDevice, Flow};
use super::exit::VcpuCtx;
use super::fault::{GuestFault, HypercallError};

/// One call as the guest made it.
#[derive(Debug)]
pub struct Call<'a> {
    pub op: Op,
    pub args: [u64; 8],
    pub data: &'a [u8],
}

impl Call<'_> {
    /// The typed request of `H` (`H::OP` must be this call's op).
    pub fn request<H: Hypercall>(&self) -> Result<H::Request, GuestFault> {
        debug_assert_eq!(H::OP, self.op);
        H::Request::decode(&self.args).map_err(|e| HypercallError::Decode(self.op, e).into())
    }
}

/// What goes back into the mailbox.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reply {
    pub ret: [u64; 4],
    pub data: Vec<u8>,
}

impl Reply {
    /// The typed reply of `H`.
    pub fn of<H: Hypercall>(r: H::Reply) -> Self {
        let mut ret = [0; 4];
        r.encode(&mut ret);
        Reply { ret, data: Vec::new() }
    }

    /// No result words, no data.
    pub fn empty() -> Self {
        Reply::default()
    }

    pub fn with_data(mut self, data: Vec<u8>) -> Self {
        self.data = data;
        self
    }
}

/// Serves a set of operations. One handler per op; a handler owns the
/// state its ops share (per vCPU state indexed by `ctx.cpu`).
pub trait HypercallHandler: Send + Sync {
    /// For messages: which service this is.
    fn name(&self) -> &'static str;
    /// The operations it serves.
    fn ops(&self) -> &'static [Op];
    fn handle(&self, ctx: &mut VcpuCtx<'_>, call: &Call<'_>) -> Result<Reply, GuestFault>;
}

/// Two handlers claim one op.
#[derive(Debug, Clone, thiserror::Error)]
#[error("hypercall {} is served by both {first} and {second}", .op.name())]
pub struct HandlerConflict {
    pub op: Op,
    pub first: &'static str,
    pub second: &'static str,
}

/// Op → handler, filled by the services before the vCPUs start.
#[derive(Default, Clone)]
pub struct HypercallTable {
    handlers: Vec<Option<Arc<dyn HypercallHandler>>>,
}

impl HypercallTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, h: Arc<dyn HypercallHandler>) -> Result<(), HandlerConflict> {
        for &op in h.ops() {
            let i = op as usize;
            if self.handlers.len() <= i {
                self.handlers.resize(i + 1, None);
            }
            if let Some(first) = &self.handlers[i] {
                return Err(HandlerConflict { op, first: first.name(), second: h.name() });
            }
            self.handlers[i] = Some(h.clone());
        }
        Ok(())
    }

    /// Serves the call in vCPU `ctx.cpu`'s mailbox.
    pub fn dispatch(&self, ctx: &mut VcpuCtx<'_>) -> Result<(), GuestFault> {
        let mailbox = layout::mailbox(ctx.cpu);
        let (raw_op, args, data) = read_request(ctx, mailbox)?;
        let op = Op::from_u64(raw_op).ok_or(HypercallError::UnknownOp(raw_op))?;
        let handler = self.handlers.get(op as usize).and_then(|h| h.as_ref()).ok_or(HypercallError::NotServed(op))?;
        let reply = handler.handle(ctx, &Call { op, args, data: &data })?;
        write_reply(ctx, mailbox, &reply)
    }
}

fn mailbox_err(e: vm_memory::GuestMemoryError) -> GuestFault {
    HypercallError::Mailbox(e.to_string()).into()
}

fn read_request(ctx: &VcpuCtx<'_>, mailbox: u64) -> Result<(u64, [u64; 8], Vec<u8>), GuestFault> {
    let at = |off: u64| GuestAddress(mailbox + off);
    let op: u64 = ctx.mem.read_obj(at(hc::OFF_OP)).map_err(mailbox_err)?;
    let mut args = [0u64; 8];
    for (i, a) in args.iter_mut().enumerate() {
        *a = ctx.mem.read_obj(at(hc::OFF_ARGS + 8 * i as u64)).map_err(mailbox_err)?;
    }
    let len: u64 = ctx.mem.read_obj(at(hc::OFF_LEN)).map_err(mailbox_err)?;
    if len > DATA_LEN as u64 {
        return Err(HypercallError::DataTooLong { op, len }.into());
    }
    let mut data = vec![0u8; len as usize];
    ctx.mem.read_slice(&mut data, at(hc::OFF_DATA)).map_err(mailbox_err)?;
    Ok((op, args, data))
}

fn write_reply(ctx: &VcpuCtx<'_>, mailbox: u64, r: &Reply) -> Result<(), GuestFault> {
    let at = |off: u64| GuestAddress(mailbox + off);
    ctx.mem.write_obj(hc::status::OK, at(hc::OFF_STATUS)).map_err(mailbox_err)?;
    for (i, v) in r.ret.iter().enumerate() {
        ctx.mem.write_obj(*v, at(hc::OFF_RET + 8 * i as u64)).map_err(mailbox_err)?;
    }
    let n = r.data.len().min(DATA_LEN);
    ctx.mem.write_obj(n as u64, at(hc::OFF_LEN)).map_err(mailbox_err)?;
    ctx.mem.write_slice(&r.data[..n], at(hc::OFF_DATA)).map_err(mailbox_err)
}

/// The hypercall port: a write dispatches the caller's mailbox.
pub struct HypercallPort(pub HypercallTable);

impl BusDevice for HypercallPort {
    fn write(&self, ctx: &mut VcpuCtx<'_>, _offset: u64, _data: &[u8]) -> Result<Flow, GuestFault> {
        self.0.dispatch(ctx).map(|()| Flow::Resume)
    }
}
