//! The 16550 UART at COM1 (`vm-superio`), output only: the guest polls.

use std::io::Write;
use std::sync::Mutex;

use vm_superio::{Serial, Trigger};

use crate::vstate::{BusDevice, Flow, GuestFault, VcpuCtx};

/// Serial interrupts are not wired: the guest polls (it only writes).
pub struct NoIrq;
impl Trigger for NoIrq {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        Ok(())
    }
}

type Uart = Serial<NoIrq, vm_superio::serial::NoEvents, Box<dyn Write + Send>>;

pub struct SerialDevice(Mutex<Uart>);

impl SerialDevice {
    /// A UART whose output goes to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        SerialDevice(Mutex::new(Serial::new(NoIrq, out)))
    }
}

impl BusDevice for SerialDevice {
    fn read(&self, _: &mut VcpuCtx<'_>, offset: u64, data: &mut [u8]) -> Result<(), GuestFault> {
        if data.len() == 1 {
            data[0] = self.0.lock().unwrap_or_else(|e| e.into_inner()).read(offset as u8);
        } else {
            data.fill(0xff);
        }
        Ok(())
    }

    fn write(&self, _: &mut VcpuCtx<'_>, offset: u64, data: &[u8]) -> Result<Flow, GuestFault> {
        if data.len() == 1 {
            let _ = self.0.lock().unwrap_or_else(|e| e.into_inner()).write(offset as u8, data[0]);
        }
        Ok(Flow::Resume)
    }
}
