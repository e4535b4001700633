//! The VMM's side of `vmm explore`'s turn protocol (`abi::explore`): the
//! explore area over guest memory, the park port a waiting vCPU thread
//! sleeps on, and the DMA engine's device threads as scheduled threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi::dma::{Action, WaitCond};
use abi::explore::{self as ex, guard, object, Guard, Shared};
use abi::layout::{LITMUS_STATE, LITMUS_VARS, PAGE_SIZE};
use iommu::mem as gmem;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::vstate::exit::le_value;
use crate::vstate::{BusDevice, Flow, GuestFault, VcpuCtx};

/// The explore area through guest memory.
pub struct GuestShared<'a>(pub &'a GuestMemoryMmap);

impl Shared for GuestShared<'_> {
    fn load(&self, gpa: u64) -> u64 {
        gmem::load_u64(self.0, gpa).unwrap_or(0)
    }
    fn load_u32(&self, gpa: u64) -> u32 {
        self.0.read_obj::<u32>(GuestAddress(gpa)).unwrap_or(0)
    }
    fn load_u8(&self, gpa: u64) -> u8 {
        self.0.read_obj::<u8>(GuestAddress(gpa)).unwrap_or(0)
    }
    fn store(&self, gpa: u64, v: u64) {
        let _ = gmem::store_u64(self.0, gpa, v);
    }
}

/// How long a waiting thread sleeps between two looks at the turn word.
const POLL: Duration = Duration::from_micros(20);
/// Longest a vCPU stays parked per port write (it then takes pending
/// interrupts and parks again).
const PARK_LIMIT: Duration = Duration::from_millis(1);

/// Blocks (polling, without burning a host CPU) until the turn is `t`'s,
/// the schedule broke, `limit` passed or `stop` says so.
pub fn park(mem: &GuestMemoryMmap, t: u64, limit: Duration, stop: &dyn Fn() -> bool) -> bool {
    let m = GuestShared(mem);
    let start = Instant::now();
    loop {
        let turn = m.load(ex::AREA + ex::ctl::TURN);
        if turn == t {
            return true;
        }
        // Nobody's turn: before the first choice (threads still arriving),
        // or the schedule broke (then the thread runs free at once).
        let broken = turn == ex::NOBODY && m.load(ex::AREA + ex::ctl::ERROR) != ex::error::NONE;
        if broken || start.elapsed() >= limit || stop() {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// `EXPLORE_PARK_PORT`: the writing vCPU waits for thread `value`'s turn.
/// Counts the writes (each is one exit of a waiting vCPU).
pub struct ParkPort(pub Arc<AtomicU64>);

impl BusDevice for ParkPort {
    fn write(&self, ctx: &mut VcpuCtx<'_>, _: u64, data: &[u8]) -> Result<Flow, GuestFault> {
        self.0.fetch_add(1, Ordering::Relaxed);
        park(ctx.mem, le_value(data), PARK_LIMIT, &|| false);
        Ok(Flow::Resume)
    }
}

/// A device op's guard and footprint: waits wait on their kernel word;
/// loads read the mm model (IOTLB, page tables, data), stores and atomics
/// write it; signals and counters write their word.
pub fn device_step(a: &Action, operand: u64) -> (Guard, Option<(u16, bool)>) {
    let word = |gpa: u64| {
        if (LITMUS_VARS..LITMUS_VARS + PAGE_SIZE).contains(&gpa) {
            object::VAR + ((gpa - LITMUS_VARS) / 8) as u16
        } else if gpa == LITMUS_STATE + abi::litmus::state::BARRIER {
            object::BARRIER
        } else {
            object::MEM
        }
    };
    match *a {
        Action::Wait { cond, gpa, .. } => {
            let kind = match cond {
                WaitCond::Eq => guard::EQ,
                WaitCond::Ne => guard::NE,
                WaitCond::Ge => guard::GE,
            };
            (Guard { kind, addr: gpa, value: operand, object: word(gpa) }, Some((word(gpa), false)))
        }
        Action::Signal { gpa, .. } | Action::Kadd { gpa, .. } => (Guard::NONE, Some((word(gpa), true))),
        Action::Access { kind, .. } => {
            let write = !matches!(kind, abi::dma::AccessKind::Load | abi::dma::AccessKind::Prefetch);
            (Guard::NONE, Some((object::MEM, write)))
        }
        Action::Delay { .. } => (Guard::NONE, None),
    }
}

/// A DMA worker running a litmus device thread under the scheduler.
pub struct DeviceThread<'a> {
    m: GuestShared<'a>,
    t: u64,
    started: bool,
}

impl<'a> DeviceThread<'a> {
    /// `Some` if a schedule runs and device slot `slot` is one of its threads.
    pub fn join(mem: &'a GuestMemoryMmap, slot: u64) -> Option<DeviceThread<'a>> {
        let m = GuestShared(mem);
        if m.load(ex::AREA + ex::ctl::MAGIC) != ex::MAGIC || m.load(ex::AREA + ex::ctl::ACTIVE) != 1 {
            return None;
        }
        let t = m.load(ex::AREA + ex::ctl::NVCPU).checked_add(slot)?;
        (t < m.load(ex::AREA + ex::ctl::NTHREADS)).then_some(DeviceThread { m, t, started: false })
    }

    fn wait_turn(&self, stop: &dyn Fn() -> bool) -> bool {
        loop {
            if park(self.m.0, self.t, Duration::from_millis(50), stop) {
                return true;
            }
            let turn = self.m.load(ex::AREA + ex::ctl::TURN);
            if (turn == ex::NOBODY && self.m.load(ex::AREA + ex::ctl::ERROR) != ex::error::NONE) || stop() {
                return false;
            }
        }
    }

    fn follow(&self, next: ex::Next, stop: &dyn Fn() -> bool) -> bool {
        match next {
            ex::Next::Run(u) if u == self.t => true,
            ex::Next::Run(_) => self.wait_turn(stop),
            ex::Next::Stop => false,
        }
    }

    /// Before device op `pc` whose step can run when `g` holds. False if
    /// the schedule broke or the engine stops (the device then runs free).
    pub fn point(&mut self, pc: u32, g: Guard, stop: &dyn Fn() -> bool) -> bool {
        let site = ex::site::make(ex::site::DEVICE, pc, 0, 0);
        if !self.started {
            self.started = true;
            let arrive = || gmem::fetch_add_u64(self.m.0, ex::AREA + ex::ctl::ARRIVED, 1).unwrap_or(0);
            return match ex::at_start(&self.m, self.t, site, g, arrive) {
                Some(next) => self.follow(next, stop),
                None => self.wait_turn(stop),
            };
        }
        let next = ex::at_point(&self.m, self.t, site, g);
        self.follow(next, stop)
    }

    pub fn note(&self, obj: u16, write: bool) {
        ex::note(&self.m, self.t, obj, write);
    }

    pub fn finish(&self) {
        let _ = ex::at_finish(&self.m, self.t);
    }
}
