//! Devices: what exits reach through the buses (serial, ports, the IOMMU's
//! register page), the DMA engine beside the vCPUs, and the sink through
//! which devices and the modelled TLB record trace events.

pub mod dma;
pub mod explore;
pub mod iommu;
pub mod ports;
pub mod serial;

use abi::trace::Kind;

/// Where VMM-side trace records go (`crate::services::trace::Tracer` in a
/// traced run). `src` is an `abi::trace::source` value, `unit` the vCPU or
/// device.
pub trait TraceSink: Send + Sync {
    fn emit(&self, src: u8, unit: u8, kind: Kind, va: u64, a: u64, b: u64);
}
