//! Wire format of the emulated IOMMU (the "secondary MMU"): its MMIO register
//! page, the PASID table, the invalidation-queue descriptors and the
//! page-request records. The guest's SVA driver builds these with the
//! `encode` helpers below; the `iommu` crate decodes them with the matching
//! `decode` functions, so both sides share one definition.
//!
//! The model follows Intel VT-d scalable mode (queued invalidation, PASID
//! table, page-request queue) with AMD IOMMUv2 / Linux names where they fit,
//! simplified where the full format only matters for real hardware:
//!
//! * every register is 64 bits wide at an 8-byte aligned offset of one 4 KiB
//!   MMIO page at [`IOMMU_MMIO_BASE`]; 4-byte accesses to either half of a
//!   register are accepted too;
//! * the PASID table is one flat array of 8-byte entries (no PASID directory);
//! * the device has no domains: descriptors carry no domain id.
//!
//! Addresses are guest-physical (GPA) unless they are called VA, which is a
//! virtual address of the address space bound to a PASID.

mod fault;
mod inv;
pub use fault::{prq, AccessOp, FaultReason, PageRequest};
pub use inv::{desc, is_canonical, DescError, DevTlbScope, InvDesc};

/// GPA of the IOMMU register page. The VMM maps it as MMIO (it is not RAM);
/// it lies in the 0xfec0_0000..0xfee0_0000 window, below the LAPIC page, away
/// from the IOAPIC (0xfec0_0000) and the HPET (0xfed0_0000).
pub const IOMMU_MMIO_BASE: u64 = 0xfed9_0000;
/// Size of the register page.
pub const IOMMU_MMIO_SIZE: u64 = 0x1000;

/// Value of [`reg::VERSION`]: major in bits 31:16, minor in bits 15:0.
pub const VERSION: u64 = 0x0001_0000;

/// Register offsets from [`IOMMU_MMIO_BASE`]. "RO" registers ignore writes,
/// "W1C" bits are cleared by writing 1. Reads of unknown offsets return 0,
/// writes to them are ignored.
pub mod reg {
    /// RO: [`super::VERSION`].
    pub const VERSION: u64 = 0x00;
    /// RO: capabilities, see [`super::cap`].
    pub const CAP: u64 = 0x08;
    /// W1C: status bits, see [`super::status`]. Clearing `IQE` resumes the
    /// invalidation queue from `IQH` up to `IQT` (the write then returns the
    /// work done like a tail write does).
    pub const STATUS: u64 = 0x10;
    /// RW: PASID table pointer, see [`super::pasid`]: base GPA (bits 63:12,
    /// 4 KiB aligned) | PTS (bits 3:0, the table has `2^(PTS+9)` entries).
    /// Written once by the driver before binding; 0 = not configured.
    pub const PASID_TABLE: u64 = 0x18;
    /// RW: invalidation queue address, see [`super::iqa`]. A write resets
    /// `IQH` and `IQT` to 0 (like VT-d, software writes IQT = 0 first); it
    /// does not clear `STATUS.IQE`.
    pub const IQA: u64 = 0x20;
    /// RO: invalidation queue head, byte offset of the next descriptor the
    /// IOMMU will fetch. After an error it points at the faulting descriptor.
    pub const IQH: u64 = 0x28;
    /// RW: invalidation queue tail, byte offset one past the last descriptor
    /// software submitted. Writing it is the doorbell: the IOMMU processes
    /// every descriptor from `IQH` to the new tail before the write returns.
    /// A tail that is not below the queue size or not a multiple of the
    /// descriptor size is dropped and sets `STATUS.IQE`. While `IQE` is set
    /// a valid tail is recorded but nothing is processed until `IQE` is
    /// cleared. The queue is empty when `IQH == IQT`, so at most
    /// `entries - 1` descriptors can be outstanding.
    pub const IQT: u64 = 0x30;
    /// RO: invalidation queue error record, see [`super::iqe`].
    pub const IQERCD: u64 = 0x38;
    /// RW: page-request queue address, see [`super::pqa`]. A write resets
    /// `PQH` and `PQT` to 0.
    pub const PQA: u64 = 0x40;
    /// RW: page-request queue head, byte offset; software advances it after
    /// consuming records. Values out of range or not 32-byte aligned are
    /// ignored.
    pub const PQH: u64 = 0x48;
    /// RO: page-request queue tail, byte offset one past the newest record.
    pub const PQT: u64 = 0x50;
    /// RW: fault-event MSI address / data (raised when `IQE` gets set).
    /// An address of 0 disables the interrupt.
    pub const FEADDR: u64 = 0x58;
    pub const FEDATA: u64 = 0x60;
    /// RW: invalidation-completion MSI address / data (raised by a wait
    /// descriptor with `IF`). An address of 0 disables the interrupt.
    pub const IEADDR: u64 = 0x68;
    pub const IEDATA: u64 = 0x70;
    /// RW: page-request MSI address / data (raised for every record queued).
    /// An address of 0 disables the interrupt.
    pub const PEADDR: u64 = 0x78;
    pub const PEDATA: u64 = 0x80;
    /// One past the last register.
    pub const END: u64 = 0x88;
}

/// Bits of [`reg::STATUS`] (all W1C).
pub mod status {
    /// Invalidation queue error: processing stopped at `IQH`, the reason is in
    /// `IQERCD`. Set by hardware, cleared by software after fixing the queue.
    pub const IQE: u64 = 1 << 0;
    /// Invalidation wait completion: a wait descriptor with `IF` completed.
    pub const IWC: u64 = 1 << 1;
    /// Pending page request: at least one record was queued since software
    /// last cleared this bit.
    pub const PPR: u64 = 1 << 2;
    /// Page-request overflow: a fault found the queue full (or unconfigured)
    /// and its record was dropped.
    pub const PRO: u64 = 1 << 3;
    /// All defined bits.
    pub const ALL: u64 = IQE | IWC | PPR | PRO;
}

/// Bits of [`reg::CAP`] (set by the VMM's configuration of the device).
pub mod cap {
    /// The IOMMU has a paging-structure cache (`pwc=on`).
    pub const PWC: u64 = 1 << 0;
    /// The device has its own device TLB (ATS): invalidate it with
    /// [`super::desc::TYPE_P_DEVTLB`] as well.
    pub const DEVTLB: u64 = 1 << 1;
    /// 256-bit descriptors are supported (always set).
    pub const DW256: u64 = 1 << 2;
    /// Bits 15:8: the largest address-mask (size order) accepted,
    /// [`super::desc::MAX_AM`].
    pub const MAX_AM_SHIFT: u32 = 8;
    /// Bits 23:16: PASID width in bits, [`super::pasid::PASID_BITS`].
    pub const PASID_BITS_SHIFT: u32 = 16;
    /// Bits 63:32: IOTLB capacity in entries (informational).
    pub const IOTLB_ENTRIES_SHIFT: u32 = 32;
}

/// 4 KiB, the unit of queue sizes and invalidation addresses.
pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
const ADDR_MASK_52: u64 = 0x000f_ffff_ffff_f000;

/// The PASID table: `2^(PTS+9)` entries of 8 bytes at the base in
/// [`reg::PASID_TABLE`]; entry `n` is at `base + 8 * n`.
///
/// Entry: bit 0 `P` (present), bit 1 `PRIV` (the device's requests for this
/// PASID are supervisor-mode: VT-d's SRE with a privileged request; without
/// it they are user-mode and need `US` on every level), bits 51:12 the root
/// of the bound mm's page tables (its CR3). Every other bit is reserved and
/// must be 0: a set reserved bit makes translations fault with
/// [`FaultReason::PasidEntryInvalid`].
pub mod pasid {
    /// PASIDs are 20 bits wide (PCIe).
    pub const PASID_BITS: u32 = 20;
    pub const MAX_PASID: u32 = (1 << PASID_BITS) - 1;
    /// Largest PTS field value (2^20 entries).
    pub const MAX_PTS: u64 = 11;
    pub const PTS_MASK: u64 = 0xf;
    pub const TABLE_BASE_MASK: u64 = !0xfff;

    pub const P: u64 = 1 << 0;
    pub const PRIV: u64 = 1 << 1;
    pub const ROOT_MASK: u64 = super::ADDR_MASK_52;
    pub const RESERVED: u64 = !(P | PRIV | ROOT_MASK);

    /// Value for [`super::reg::PASID_TABLE`]: `base` must be 4 KiB aligned.
    pub const fn table_reg(base: u64, pts: u64) -> u64 {
        (base & TABLE_BASE_MASK) | (pts & PTS_MASK)
    }
    /// Number of entries of a table with this PTS (None if PTS is too big).
    pub const fn table_entries(pts: u64) -> Option<u64> {
        if pts > MAX_PTS {
            None
        } else {
            Some(1 << (pts + 9))
        }
    }
    /// A present entry binding the page tables rooted at `root` (a CR3 value;
    /// its low 12 bits are dropped).
    pub const fn entry(root: u64, privileged: bool) -> u64 {
        (root & ROOT_MASK) | P | if privileged { PRIV } else { 0 }
    }
}

/// [`reg::IQA`]: base GPA (bits 63:12, 4 KiB aligned) | `DW` (bit 11:
/// 256-bit descriptors) | `QS` (bits 2:0: the queue is `2^QS` pages).
/// Bits 10:3 are ignored.
pub mod iqa {
    pub const BASE_MASK: u64 = !0xfff;
    pub const DW_256: u64 = 1 << 11;
    pub const QS_MASK: u64 = 0x7;

    pub const fn encode(base: u64, dw256: bool, qs: u64) -> u64 {
        (base & BASE_MASK) | if dw256 { DW_256 } else { 0 } | (qs & QS_MASK)
    }
    /// Bytes in the queue.
    pub const fn queue_bytes(iqa: u64) -> u64 {
        super::PAGE_SIZE << (iqa & QS_MASK)
    }
    /// Bytes per descriptor: 16 or 32.
    pub const fn desc_bytes(iqa: u64) -> u64 {
        if iqa & DW_256 != 0 {
            32
        } else {
            16
        }
    }
}

/// [`reg::PQA`]: base GPA (bits 63:12) | `PQS` (bits 2:0: `2^PQS` pages of
/// 32-byte records).
pub mod pqa {
    pub const BASE_MASK: u64 = !0xfff;
    pub const QS_MASK: u64 = 0x7;
    pub const fn encode(base: u64, qs: u64) -> u64 {
        (base & BASE_MASK) | (qs & QS_MASK)
    }
    pub const fn queue_bytes(pqa: u64) -> u64 {
        super::PAGE_SIZE << (pqa & QS_MASK)
    }
}

/// [`reg::IQERCD`]: bits 7:0 the error code, bits 63:32 the head (byte
/// offset) at which processing stopped — the faulting descriptor, or the
/// unchanged head for a tail-register error.
pub mod iqe {
    /// Written tail is not below the queue size (the tail write is dropped).
    pub const TAIL_OUT_OF_RANGE: u8 = 1;
    /// Written tail is not a multiple of the descriptor size (dropped).
    pub const TAIL_MISALIGNED: u8 = 2;
    /// The descriptor's GPA is not guest RAM (bad IQA base).
    pub const FETCH_FAILED: u8 = 3;
    /// Unknown descriptor type.
    pub const UNKNOWN_TYPE: u8 = 4;
    /// A reserved bit is set.
    pub const RESERVED_BITS: u8 = 5;
    /// Granularity field value not defined for this descriptor type.
    pub const BAD_GRANULARITY: u8 = 6;
    /// Address mask (size order) above [`super::desc::MAX_AM`].
    pub const SIZE_ORDER_TOO_BIG: u8 = 7;
    /// Address not aligned to `2^AM` pages.
    pub const ADDRESS_MISALIGNED: u8 = 8;
    /// Address not canonical (bits 63:48 not a copy of bit 47).
    pub const NON_CANONICAL: u8 = 9;
    /// The wait descriptor's status address is not guest RAM.
    pub const STATUS_WRITE_FAILED: u8 = 10;
    /// The tail was written before `IQA` was.
    pub const NOT_CONFIGURED: u8 = 11;

    pub const fn encode(head: u64, code: u8) -> u64 {
        (head << 32) | code as u64
    }
    pub const fn code(v: u64) -> u8 {
        v as u8
    }
    pub const fn head(v: u64) -> u64 {
        v >> 32
    }
}

#[cfg(test)]
mod tests;
