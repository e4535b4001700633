//! Port-I/O and MMIO exits are routed through buses of devices (after
//! Firecracker's `BusDevice`): a device owns a range and sees offsets into
//! it. The vCPU loop knows no device; services put theirs on the bus.

use std::sync::Arc;

use super::exit::VcpuCtx;
use super::fault::{EndReason, GuestFault};

/// What the vCPU does after a device served an exit.
#[derive(Debug, Clone)]
pub enum Flow {
    Resume,
    /// End the VM (e.g. the guest wrote the exit port).
    End(EndReason),
}

/// A device on a bus.
pub trait BusDevice: Send + Sync {
    /// A read of `data.len()` bytes at `offset` into the device's range.
    fn read(&self, _ctx: &mut VcpuCtx<'_>, _offset: u64, data: &mut [u8]) -> Result<(), GuestFault> {
        data.fill(0xff);
        Ok(())
    }
    /// A write at `offset` into the device's range.
    fn write(&self, ctx: &mut VcpuCtx<'_>, offset: u64, data: &[u8]) -> Result<Flow, GuestFault>;
}

/// Two devices claim overlapping ranges.
#[derive(Debug, Clone, thiserror::Error)]
#[error("bus ranges overlap: {new_base:#x}+{new_len:#x} and {base:#x}+{len:#x}")]
pub struct BusConflict {
    pub new_base: u64,
    pub new_len: u64,
    pub base: u64,
    pub len: u64,
}

struct Entry {
    base: u64,
    len: u64,
    dev: Arc<dyn BusDevice>,
}

/// Non-overlapping ranges, sorted by base.
#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `dev` at `base..base + len` (`len` > 0).
    pub fn insert(&mut self, base: u64, len: u64, dev: Arc<dyn BusDevice>) -> Result<(), BusConflict> {
        let end = base.saturating_add(len.max(1));
        if let Some(e) = self.entries.iter().find(|e| base < e.base.saturating_add(e.len) && e.base < end) {
            return Err(BusConflict { new_base: base, new_len: len, base: e.base, len: e.len });
        }
        let at = self.entries.partition_point(|e| e.base < base);
        self.entries.insert(at, Entry { base, len: len.max(1), dev });
        Ok(())
    }

    /// The device whose range holds `addr`, and the offset into it.
    pub fn get(&self, addr: u64) -> Option<(&Arc<dyn BusDevice>, u64)> {
        let i = self.entries.partition_point(|e| e.base <= addr).checked_sub(1)?;
        let e = &self.entries[i];
        (addr - e.base < e.len).then(|| (&e.dev, addr - e.base))
    }
}
