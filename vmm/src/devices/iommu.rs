//! The IOMMU's register page on the MMIO bus: reads and writes go to the
//! emulator (`iommu` crate); a tail write processes the invalidation queue
//! before it returns, and the MSIs it raises are delivered at once.

use std::sync::{Arc, Mutex};

use iommu::Iommu;

use crate::vstate::{BusDevice, Flow, GuestFault, MsiSender, VcpuCtx};

pub struct IommuMmio {
    pub iommu: Arc<Mutex<Iommu>>,
    pub msi: MsiSender,
}

impl BusDevice for IommuMmio {
    fn read(&self, _: &mut VcpuCtx<'_>, offset: u64, data: &mut [u8]) -> Result<(), GuestFault> {
        self.iommu.lock().unwrap_or_else(|e| e.into_inner()).mmio_read_bytes(offset, data);
        Ok(())
    }

    fn write(&self, ctx: &mut VcpuCtx<'_>, offset: u64, data: &[u8]) -> Result<Flow, GuestFault> {
        let out = self.iommu.lock().unwrap_or_else(|e| e.into_inner()).mmio_write_bytes(offset, data, ctx.mem);
        for msi in out.msis {
            (self.msi)(msi.address, msi.data);
        }
        Ok(Flow::Resume)
    }
}
