//! What a device access can end in: MSIs to raise, translation faults
//! (with the page request sent), and the DMA errors.

use abi::iommu::PageRequest;

/// An MSI the VMM must deliver (e.g. with `KVM_SIGNAL_MSI`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msi {
    pub source: MsiSource,
    /// From the source's `*ADDR` register (never 0: 0 disables the source).
    pub address: u64,
    /// From the source's `*DATA` register.
    pub data: u32,
}

/// Which interrupt source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiSource {
    /// `STATUS.IQE` got set (`FEADDR`/`FEDATA`).
    Fault,
    /// A wait descriptor with `IF` completed (`IEADDR`/`IEDATA`).
    InvalidationComplete,
    /// A page request was queued (`PEADDR`/`PEDATA`).
    PageRequest,
}

/// A translation fault seen by the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceFault {
    /// The page-request record (also written to the queue if `queued`).
    pub request: PageRequest,
    /// The record is in the page-request queue (false: queue full or not
    /// configured; `STATUS.PRO` is then set).
    pub queued: bool,
    /// Deliver this MSI (page-request interrupt).
    pub msi: Option<Msi>,
}

/// Why a DMA access did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DmaError {
    /// Translation fault; the program decides to retry or fail.
    #[error("translation fault: {:?} at va {:#x} (pasid {}, level {})", .0.request.reason, .0.request.va, .0.request.pasid, .0.request.level)]
    Fault(DeviceFault),
    /// The walk reached a page-table page the guest had already freed.
    #[error(
        "stale walk: va {va:#x} (pasid {pasid}) read level-{level} table {table:#x}, which is not a live page table"
    )]
    StaleWalk { pasid: u32, va: u64, level: u8, table: u64 },
    /// A 64-bit access must be 8-byte aligned.
    #[error("misaligned DMA access at va {va:#x}")]
    Misaligned { va: u64 },
    /// The translation gave a GPA that is not guest RAM.
    #[error("va {va:#x} (pasid {pasid}) translates to {pa:#x}, which is not guest RAM")]
    BadTarget { pasid: u32, va: u64, pa: u64 },
}
