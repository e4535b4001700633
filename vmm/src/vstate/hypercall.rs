//! The hypercall path's plumbing: read the exiting vCPU's mailbox, find the
//! handler registered for its op, write the reply. What each op does lives
//! in the services (`crate::services`), each owning its state; this file
//! knows no operation.

use std::sync::Arc;

use abi::hypercall::{self as hc, BatchEntry, Hypercall, Op, Wire, DATA_LEN};
use abi::layout;
use vm_memory::{Bytes, GuestAddress};

use super::bus::{BusDevice, Flow};
use super::exit::VcpuCtx;
use super::fault::{GuestFault, HypercallError};
use super::stats::VmStats;

/// Which mailbox (and port) a call came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// `HC_PORT`: kernel code (CPL0), the vCPU's kernel mailbox.
    Kernel,
    /// `HC_USER_PORT`: code running at CPL3, the vCPU's user mailbox.
    User,
}

impl Caller {
    fn mailbox(self, cpu: u64) -> u64 {
        match self {
            Caller::Kernel => layout::mailbox(cpu),
            Caller::User => layout::user_mailbox(cpu),
        }
    }
}

/// One call as the guest made it.
#[derive(Debug)]
pub struct Call<'a> {
    pub op: Op,
    pub args: [u64; 8],
    pub data: &'a [u8],
    pub caller: Caller,
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
    /// Park the calling vCPU after writing the reply (`WAIT`: the handler
    /// called `Parking::park`).
    pub park: bool,
}

impl Reply {
    /// The typed reply of `H`.
    pub fn of<H: Hypercall>(r: H::Reply) -> Self {
        let mut ret = [0; 4];
        r.encode(&mut ret);
        Reply { ret, data: Vec::new(), park: false }
    }

    /// Parks the vCPU once the reply is written (see [`Reply::park`]).
    pub fn then_park(mut self) -> Self {
        self.park = true;
        self
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
    /// Where each call is counted (by op), if anywhere.
    stats: Option<Arc<VmStats>>,
}

impl HypercallTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts every call by op in `stats`.
    pub fn count_in(&mut self, stats: Arc<VmStats>) {
        self.stats = Some(stats);
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

    /// Serves the call in vCPU `ctx.cpu`'s mailbox of `caller`; what the
    /// vCPU does next.
    pub fn dispatch(&self, ctx: &mut VcpuCtx<'_>, caller: Caller) -> Result<Flow, GuestFault> {
        let mailbox = caller.mailbox(ctx.cpu);
        let (word, args, data) = read_request(ctx, mailbox)?;
        let raw_op = word & hc::OP_MASK;
        let op = Op::from_u64(raw_op).ok_or(HypercallError::UnknownOp(word))?;
        let carried = hc::carried_entries(word);
        if carried > 0 {
            self.run_carried(ctx, mailbox, caller, carried, data.len())?;
        }
        if let Some(s) = &self.stats {
            s.vcpu(ctx.cpu).hypercall(op);
        }
        let handler = self.handlers.get(op as usize).and_then(|h| h.as_ref()).ok_or(HypercallError::NotServed(op))?;
        let reply = handler.handle(ctx, &Call { op, args, data: &data, caller })?;
        write_reply(ctx, mailbox, &reply)?;
        Ok(if reply.park { Flow::Park } else { Flow::Resume })
    }
}

impl HypercallTable {
    /// The lazy MMU queue a call carries (`abi::hypercall::op_word`): done
    /// as the `PT_BATCH` it would have been, before the call's own op.
    fn run_carried(
        &self,
        ctx: &mut VcpuCtx<'_>,
        mailbox: u64,
        caller: Caller,
        n: usize,
        own_len: usize,
    ) -> Result<(), GuestFault> {
        let at = hc::carried_offset(n);
        if n > BatchEntry::MAX || own_len > at {
            return Err(HypercallError::DataTooLong {
                op: Op::PtBatch as u64,
                len: (own_len + n * BatchEntry::LEN) as u64,
            }
            .into());
        }
        let mut entries = vec![0u8; n * BatchEntry::LEN];
        ctx.mem.read_slice(&mut entries, GuestAddress(mailbox + hc::OFF_DATA + at as u64)).map_err(mailbox_err)?;
        let handler = self
            .handlers
            .get(Op::PtBatch as usize)
            .and_then(|h| h.as_ref())
            .ok_or(HypercallError::NotServed(Op::PtBatch))?;
        let mut args = [0u64; 8];
        args[0] = n as u64;
        handler.handle(ctx, &Call { op: Op::PtBatch, args, data: &entries, caller })?;
        Ok(())
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

/// A hypercall port: a write dispatches the vCPU's mailbox of `caller`.
pub struct HypercallPort {
    pub table: Arc<HypercallTable>,
    pub caller: Caller,
}

impl BusDevice for HypercallPort {
    fn write(&self, ctx: &mut VcpuCtx<'_>, _offset: u64, _data: &[u8]) -> Result<Flow, GuestFault> {
        self.table.dispatch(ctx, self.caller)
    }
}
