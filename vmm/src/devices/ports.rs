//! The guest's control ports: exit (ends the VM with a status), nop (the
//! bare-exit benchmark) and yield (a spinning vCPU gives its host CPU away).

use crate::vstate::exit::le_value;
use crate::vstate::{BusDevice, EndReason, Flow, GuestFault, VcpuCtx};

/// `EXIT_PORT`: a write ends the VM with the value as its status.
pub struct ExitPort;

impl BusDevice for ExitPort {
    fn write(&self, _: &mut VcpuCtx<'_>, _: u64, data: &[u8]) -> Result<Flow, GuestFault> {
        Ok(Flow::End(EndReason::GuestExit(le_value(data) as u32)))
    }
}

/// `NOP_PORT`: nothing but the exit itself.
pub struct NopPort;

impl BusDevice for NopPort {
    fn write(&self, _: &mut VcpuCtx<'_>, _: u64, _: &[u8]) -> Result<Flow, GuestFault> {
        Ok(Flow::Resume)
    }
}

/// `YIELD_PORT`: `sched_yield` in the vCPU thread, so that with more vCPUs
/// than host cores the thread a spinning vCPU waits for gets to run.
pub struct YieldPort;

impl BusDevice for YieldPort {
    fn write(&self, _: &mut VcpuCtx<'_>, _: u64, _: &[u8]) -> Result<Flow, GuestFault> {
        std::thread::yield_now();
        Ok(Flow::Resume)
    }
}
