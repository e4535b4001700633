//! Exit routing, kept apart from KVM so it is unit-tested without
//! `/dev/kvm` (as Firecracker tests `handle_kvm_exit` with a dummy device):
//! the vCPU loop turns a `VcpuExit` into an [`Exit`] and [`route`] sends it
//! to the device on the port or MMIO bus.

use vm_memory::GuestMemoryMmap;

use super::bus::{Bus, Flow};
use super::fault::GuestFault;

/// What a device handler may know about the vCPU that exited.
pub struct VcpuCtx<'a> {
    pub cpu: u64,
    pub mem: &'a GuestMemoryMmap,
    /// The vCPU's registers, read only when a handler needs them.
    pub regs: &'a dyn VcpuRegs,
}

/// Register access for handlers (KVM's `get_regs`; a stub in unit tests).
pub trait VcpuRegs {
    fn rip(&self) -> Option<u64>;
}

/// No registers (unit tests, fuzzing): RIP unknown.
pub struct NoRegs;

impl VcpuRegs for NoRegs {
    fn rip(&self) -> Option<u64> {
        None
    }
}

/// An exit, without KVM types.
#[derive(Debug)]
pub enum Exit<'a> {
    IoIn {
        port: u16,
        data: &'a mut [u8],
    },
    IoOut {
        port: u16,
        data: &'a [u8],
    },
    MmioRead {
        addr: u64,
        data: &'a mut [u8],
    },
    MmioWrite {
        addr: u64,
        data: &'a [u8],
    },
    /// KVM already served it (or was interrupted); nothing to do.
    Handled,
    /// An exit that is a guest bug in itself (triple fault, …).
    Fault(GuestFault),
}

/// The port-I/O and MMIO buses of a VM.
#[derive(Default)]
pub struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

/// Runs after every exit of a vCPU, before it runs again (e.g. `evict:P`'s
/// random eviction). `waiting`: the exit was the harness waiting on a flag
/// (a spin-wait's yield, a parking `WAIT`, the kick that ends it), not
/// activity of the vCPU.
pub trait ExitHook: Send + Sync {
    fn after_exit(&self, ctx: &mut VcpuCtx<'_>, waiting: bool);
}

/// Sends `exit` to its device. Ports nobody claims read as all ones and
/// ignore writes (probes of legacy devices, e.g. port 0x80 delays); MMIO
/// nobody claims is a stray access, a guest bug.
pub fn route(buses: &Buses, ctx: &mut VcpuCtx<'_>, exit: Exit<'_>) -> Result<Flow, GuestFault> {
    match exit {
        Exit::Handled => Ok(Flow::Resume),
        Exit::Fault(f) => Err(f),
        Exit::IoIn { port, data } => {
            match buses.pio.get(port as u64) {
                Some((dev, off)) => dev.read(ctx, off, data)?,
                None => data.fill(0xff),
            }
            Ok(Flow::Resume)
        }
        Exit::IoOut { port, data } => match buses.pio.get(port as u64) {
            Some((dev, off)) => dev.write(ctx, off, data),
            None => Ok(Flow::Resume),
        },
        Exit::MmioRead { addr, data } => match buses.mmio.get(addr) {
            Some((dev, off)) => dev.read(ctx, off, data).map(|()| Flow::Resume),
            None => Err(GuestFault::StrayAccess { addr, len: data.len(), value: None }),
        },
        Exit::MmioWrite { addr, data } => match buses.mmio.get(addr) {
            Some((dev, off)) => dev.write(ctx, off, data),
            None => Err(GuestFault::StrayAccess { addr, len: data.len(), value: Some(le_value(data)) }),
        },
    }
}

/// The little-endian value of an access of up to 8 bytes.
pub fn le_value(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}
