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

/// Invalidation descriptors: two 64-bit words (`qw0`, `qw1`), or four with
/// `IQA.DW` set, where `qw2` and `qw3` are reserved (must be 0). Bits 3:0 of
/// `qw0` are the type; bits 11:9 (VT-d's extended type) must be 0. Every
/// bit not listed for a type is reserved and must be 0.
///
/// | type | qw0 | qw1 |
/// |---|---|---|
/// | `0x2` IOTLB, global | `G`=1 (bits 5:4) | 0 |
/// | `0x5` wait | `IF` bit 4, `SW` bit 5, `FN` bit 6, `PD` bit 7, status data bits 63:32 | status GPA, 4-byte aligned (ignored unless `SW`) |
/// | `0x6` PASID-based IOTLB | `G` bits 5:4 (2 = PASID, 3 = pages), PASID bits 51:32 | G=3: address bits 63:12, `IH` bit 6, `AM` bits 5:0; G=2: 0 |
/// | `0x8` PASID-based device TLB | `G` bits 5:4 (1 = all PASIDs, 2 = PASID, 3 = pages), PASID bits 51:32 (0 for G=1) | G=3: address bits 63:12, `AM` bits 5:0; else 0 |
///
/// A page-selective invalidation covers `2^AM` pages from the address,
/// which must be aligned to that size and canonical. `IH` (invalidation
/// hint, "leaf only") says only leaf entries changed: the IOTLB entries of
/// the range are dropped but the paging-structure cache is left alone — the
/// seed-003 case. Every other IOTLB invalidation also drops the
/// paging-structure-cache entries that cover the range (PASID/global: all of
/// that PASID / all).
///
/// A wait descriptor completes when everything before it has completed (the
/// emulator is synchronous: when it is fetched). Then, with `SW`, the
/// 32-bit status data is stored at the status GPA (release ordering); with
/// `IF`, `STATUS.IWC` is set and the invalidation-completion MSI raised.
/// `FN` (fence) and `PD` (drain page requests) are accepted; both are
/// already implied by the synchronous model.
pub mod desc {
    pub const TYPE_MASK: u64 = 0xf;
    pub const TYPE_HI_MASK: u64 = 0x7 << 9;
    pub const TYPE_IOTLB: u64 = 0x2;
    pub const TYPE_WAIT: u64 = 0x5;
    pub const TYPE_P_IOTLB: u64 = 0x6;
    pub const TYPE_P_DEVTLB: u64 = 0x8;

    pub const G_SHIFT: u32 = 4;
    pub const G_MASK: u64 = 0x3 << G_SHIFT;
    /// Granularities (the `G` field).
    pub const G_GLOBAL: u64 = 1;
    pub const G_PASID: u64 = 2;
    pub const G_PAGES: u64 = 3;

    pub const PASID_SHIFT: u32 = 32;
    pub const PASID_MASK: u64 = 0xf_ffff << PASID_SHIFT;

    pub const ADDR_MASK: u64 = !0xfff;
    pub const IH: u64 = 1 << 6;
    pub const AM_MASK: u64 = 0x3f;
    /// Largest address mask: `2^36` pages is the whole 48-bit space.
    pub const MAX_AM: u8 = 36;

    pub const WAIT_IF: u64 = 1 << 4;
    pub const WAIT_SW: u64 = 1 << 5;
    pub const WAIT_FN: u64 = 1 << 6;
    pub const WAIT_PD: u64 = 1 << 7;
    pub const WAIT_DATA_SHIFT: u32 = 32;
    pub const WAIT_ADDR_MASK: u64 = !0x3;
}

/// A decoded invalidation descriptor. `encode` gives the 128-bit form; in
/// 256-bit mode append two zero words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvDesc {
    /// `0x6` G=3: IOTLB entries of `pasid` for `2^am` pages at `addr`; with
    /// `leaf_only` (IH) the paging-structure cache is kept.
    PasidPages { pasid: u32, addr: u64, am: u8, leaf_only: bool },
    /// `0x6` G=2: every IOTLB and paging-structure-cache entry of `pasid`.
    PasidAll { pasid: u32 },
    /// `0x2` G=1: every IOTLB and paging-structure-cache entry.
    Global,
    /// `0x8`: the device TLB (ATS translation cache).
    DevTlb(DevTlbScope),
    /// `0x5`: completes after everything before it.
    Wait {
        /// `SW`: store `data` at `status_addr`.
        status_addr: Option<u64>,
        data: u32,
        /// `IF`: set `STATUS.IWC` and raise the completion MSI.
        irq: bool,
        fence: bool,
        drain_prq: bool,
    },
}

/// What a device-TLB invalidation covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevTlbScope {
    All,
    Pasid { pasid: u32 },
    Pages { pasid: u32, addr: u64, am: u8 },
}

/// Why a descriptor was rejected; [`DescError::code`] is the `IQERCD` code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DescError {
    UnknownType,
    ReservedBits,
    BadGranularity,
    SizeOrderTooBig,
    AddressMisaligned,
    NonCanonical,
}

impl DescError {
    pub const fn code(self) -> u8 {
        match self {
            DescError::UnknownType => iqe::UNKNOWN_TYPE,
            DescError::ReservedBits => iqe::RESERVED_BITS,
            DescError::BadGranularity => iqe::BAD_GRANULARITY,
            DescError::SizeOrderTooBig => iqe::SIZE_ORDER_TOO_BIG,
            DescError::AddressMisaligned => iqe::ADDRESS_MISALIGNED,
            DescError::NonCanonical => iqe::NON_CANONICAL,
        }
    }
}

/// True if bits 63:47 of `va` are all equal (x86-64 4-level paging).
pub const fn is_canonical(va: u64) -> bool {
    let top = (va as i64) >> 47;
    top == 0 || top == -1
}

const fn pasid_field(pasid: u32) -> u64 {
    ((pasid as u64) << desc::PASID_SHIFT) & desc::PASID_MASK
}

const fn check_range(addr: u64, am: u64) -> Result<(), DescError> {
    if am > desc::MAX_AM as u64 {
        return Err(DescError::SizeOrderTooBig);
    }
    if !is_canonical(addr) {
        return Err(DescError::NonCanonical);
    }
    if addr & ((PAGE_SIZE << am) - 1) != 0 {
        return Err(DescError::AddressMisaligned);
    }
    Ok(())
}

impl InvDesc {
    /// The 128-bit encoding (`[qw0, qw1]`). Fields are masked to their
    /// width; `decode(encode(d))` returns `d` for every valid `d`.
    pub const fn encode(&self) -> [u64; 2] {
        use desc::*;
        match *self {
            InvDesc::PasidPages { pasid, addr, am, leaf_only } => [
                TYPE_P_IOTLB | (G_PAGES << G_SHIFT) | pasid_field(pasid),
                (addr & ADDR_MASK) | if leaf_only { IH } else { 0 } | (am as u64 & AM_MASK),
            ],
            InvDesc::PasidAll { pasid } => [TYPE_P_IOTLB | (G_PASID << G_SHIFT) | pasid_field(pasid), 0],
            InvDesc::Global => [TYPE_IOTLB | (G_GLOBAL << G_SHIFT), 0],
            InvDesc::DevTlb(scope) => match scope {
                DevTlbScope::All => [TYPE_P_DEVTLB | (G_GLOBAL << G_SHIFT), 0],
                DevTlbScope::Pasid { pasid } => [TYPE_P_DEVTLB | (G_PASID << G_SHIFT) | pasid_field(pasid), 0],
                DevTlbScope::Pages { pasid, addr, am } => [
                    TYPE_P_DEVTLB | (G_PAGES << G_SHIFT) | pasid_field(pasid),
                    (addr & ADDR_MASK) | (am as u64 & AM_MASK),
                ],
            },
            InvDesc::Wait { status_addr, data, irq, fence, drain_prq } => {
                let mut qw0 = TYPE_WAIT | ((data as u64) << WAIT_DATA_SHIFT);
                if irq {
                    qw0 |= WAIT_IF;
                }
                if fence {
                    qw0 |= WAIT_FN;
                }
                if drain_prq {
                    qw0 |= WAIT_PD;
                }
                let qw1 = match status_addr {
                    Some(a) => {
                        qw0 |= WAIT_SW;
                        a & WAIT_ADDR_MASK
                    }
                    None => 0,
                };
                [qw0, qw1]
            }
        }
    }

    /// The 256-bit encoding: `encode` followed by two reserved zero words.
    pub const fn encode256(&self) -> [u64; 4] {
        let [a, b] = self.encode();
        [a, b, 0, 0]
    }

    /// Decodes and validates a descriptor (`qw` of a 256-bit descriptor:
    /// pass `[qw0, qw1]` and check `qw2 | qw3 == 0` separately, see
    /// [`InvDesc::decode256`]). Never panics.
    pub const fn decode(qw: [u64; 2]) -> Result<InvDesc, DescError> {
        use desc::*;
        let [qw0, qw1] = qw;
        if qw0 & TYPE_HI_MASK != 0 {
            return Err(DescError::UnknownType);
        }
        let g = (qw0 & G_MASK) >> G_SHIFT;
        let pasid = ((qw0 & PASID_MASK) >> PASID_SHIFT) as u32;
        match qw0 & TYPE_MASK {
            TYPE_IOTLB => {
                if qw0 & !(TYPE_MASK | G_MASK) != 0 || qw1 != 0 {
                    return Err(DescError::ReservedBits);
                }
                if g != G_GLOBAL {
                    return Err(DescError::BadGranularity);
                }
                Ok(InvDesc::Global)
            }
            TYPE_P_IOTLB => {
                if qw0 & !(TYPE_MASK | G_MASK | PASID_MASK) != 0 {
                    return Err(DescError::ReservedBits);
                }
                match g {
                    G_PASID => {
                        if qw1 != 0 {
                            return Err(DescError::ReservedBits);
                        }
                        Ok(InvDesc::PasidAll { pasid })
                    }
                    G_PAGES => {
                        if qw1 & !(ADDR_MASK | IH | AM_MASK) != 0 {
                            return Err(DescError::ReservedBits);
                        }
                        let addr = qw1 & ADDR_MASK;
                        let am = qw1 & AM_MASK;
                        if let Err(e) = check_range(addr, am) {
                            return Err(e);
                        }
                        Ok(InvDesc::PasidPages { pasid, addr, am: am as u8, leaf_only: qw1 & IH != 0 })
                    }
                    _ => Err(DescError::BadGranularity),
                }
            }
            TYPE_P_DEVTLB => {
                if qw0 & !(TYPE_MASK | G_MASK | PASID_MASK) != 0 {
                    return Err(DescError::ReservedBits);
                }
                match g {
                    G_GLOBAL => {
                        if qw1 != 0 || pasid != 0 {
                            return Err(DescError::ReservedBits);
                        }
                        Ok(InvDesc::DevTlb(DevTlbScope::All))
                    }
                    G_PASID => {
                        if qw1 != 0 {
                            return Err(DescError::ReservedBits);
                        }
                        Ok(InvDesc::DevTlb(DevTlbScope::Pasid { pasid }))
                    }
                    G_PAGES => {
                        if qw1 & !(ADDR_MASK | AM_MASK) != 0 {
                            return Err(DescError::ReservedBits);
                        }
                        let addr = qw1 & ADDR_MASK;
                        let am = qw1 & AM_MASK;
                        if let Err(e) = check_range(addr, am) {
                            return Err(e);
                        }
                        Ok(InvDesc::DevTlb(DevTlbScope::Pages { pasid, addr, am: am as u8 }))
                    }
                    _ => Err(DescError::BadGranularity),
                }
            }
            TYPE_WAIT => {
                let defined = TYPE_MASK | WAIT_IF | WAIT_SW | WAIT_FN | WAIT_PD | (0xffff_ffff << WAIT_DATA_SHIFT);
                if qw0 & !defined != 0 {
                    return Err(DescError::ReservedBits);
                }
                let sw = qw0 & WAIT_SW != 0;
                if sw && qw1 & !WAIT_ADDR_MASK != 0 {
                    return Err(DescError::ReservedBits);
                }
                Ok(InvDesc::Wait {
                    status_addr: if sw { Some(qw1) } else { None },
                    data: (qw0 >> WAIT_DATA_SHIFT) as u32,
                    irq: qw0 & WAIT_IF != 0,
                    fence: qw0 & WAIT_FN != 0,
                    drain_prq: qw0 & WAIT_PD != 0,
                })
            }
            _ => Err(DescError::UnknownType),
        }
    }

    /// Decodes a 256-bit descriptor: words 2 and 3 are reserved.
    pub const fn decode256(qw: [u64; 4]) -> Result<InvDesc, DescError> {
        if qw[2] != 0 || qw[3] != 0 {
            // Still report an unknown type first, like the 128-bit decode.
            if let Err(e) = InvDesc::decode([qw[0], qw[1]]) {
                return Err(e);
            }
            return Err(DescError::ReservedBits);
        }
        InvDesc::decode([qw[0], qw[1]])
    }

    /// The byte range of VAs a page-selective descriptor covers:
    /// `(start, len)` with `len = 4096 << am`.
    pub const fn range(addr: u64, am: u8) -> (u64, u64) {
        (addr, PAGE_SIZE << am)
    }
}

/// The kind of device access, as recorded in a page request.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessOp {
    Read = 0,
    Write = 1,
    Exec = 2,
}

impl AccessOp {
    pub const fn from_u8(v: u8) -> Option<AccessOp> {
        match v {
            0 => Some(AccessOp::Read),
            1 => Some(AccessOp::Write),
            2 => Some(AccessOp::Exec),
            _ => None,
        }
    }
}

/// Why a device translation failed (page-request record `REASON` field).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultReason {
    /// An entry with `P` = 0 at the recorded level.
    NotPresent = 1,
    /// A write where some level has `RW` = 0.
    WriteToReadOnly = 2,
    /// A user-mode request where some level has `US` = 0.
    UserToSupervisor = 3,
    /// An instruction fetch where some level has `NX` = 1.
    ExecuteNx = 4,
    /// A reserved bit is set in a paging entry (e.g. `PS` in a PML4E,
    /// misaligned large-page frame).
    ReservedBit = 5,
    /// The VA is not canonical.
    NonCanonical = 6,
    /// The PASID table entry has `P` = 0.
    PasidNotPresent = 7,
    /// The PASID is not below the PASID table's size.
    PasidOutOfRange = 8,
    /// No PASID table was configured.
    PasidTableNotConfigured = 9,
    /// The PASID entry has reserved bits set, or the PASID table is not RAM.
    PasidEntryInvalid = 10,
    /// A paging-structure GPA is not guest RAM.
    TableNotRam = 11,
}

impl FaultReason {
    pub const fn from_u8(v: u8) -> Option<FaultReason> {
        use FaultReason::*;
        Some(match v {
            1 => NotPresent,
            2 => WriteToReadOnly,
            3 => UserToSupervisor,
            4 => ExecuteNx,
            5 => ReservedBit,
            6 => NonCanonical,
            7 => PasidNotPresent,
            8 => PasidOutOfRange,
            9 => PasidTableNotConfigured,
            10 => PasidEntryInvalid,
            11 => TableNotRam,
            _ => return None,
        })
    }
}

/// Page-request records: 32 bytes (four little-endian u64) in the ring at
/// [`reg::PQA`]. The IOMMU writes the record at `PQT` and then advances
/// `PQT` (release ordering), sets `STATUS.PPR` and raises the page-request
/// MSI. The queue is full when advancing `PQT` would make it equal `PQH`;
/// the record is then dropped and `STATUS.PRO` set.
///
/// * `qw0`: PASID (bits 19:0), access op (bits 33:32, [`AccessOp`]),
///   privileged (bit 34), level of the faulting entry (bits 43:40, 1 = PTE ..
///   4 = PML4E, 0 = not a paging entry), reason (bits 55:48, [`FaultReason`]);
/// * `qw1`: the faulting VA (not page aligned);
/// * `qw2`: the value of the entry that caused the fault (PTE, PASID entry) or 0;
/// * `qw3`: the GPA of that entry, or 0.
pub mod prq {
    pub const RECORD_BYTES: u64 = 32;
    pub const PASID_MASK: u64 = 0xf_ffff;
    pub const OP_SHIFT: u32 = 32;
    pub const PRIV: u64 = 1 << 34;
    pub const LEVEL_SHIFT: u32 = 40;
    pub const REASON_SHIFT: u32 = 48;
}

/// A decoded page-request record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub pasid: u32,
    pub op: AccessOp,
    pub privileged: bool,
    pub level: u8,
    pub reason: FaultReason,
    pub va: u64,
    pub entry: u64,
    pub entry_gpa: u64,
}

impl PageRequest {
    pub const fn encode(&self) -> [u64; 4] {
        use prq::*;
        let qw0 = (self.pasid as u64 & PASID_MASK)
            | ((self.op as u64) << OP_SHIFT)
            | if self.privileged { PRIV } else { 0 }
            | (((self.level & 0xf) as u64) << LEVEL_SHIFT)
            | ((self.reason as u64) << REASON_SHIFT);
        [qw0, self.va, self.entry, self.entry_gpa]
    }

    /// None if a field holds an undefined value.
    pub const fn decode(qw: [u64; 4]) -> Option<PageRequest> {
        use prq::*;
        let op = match AccessOp::from_u8(((qw[0] >> OP_SHIFT) & 0x3) as u8) {
            Some(op) => op,
            None => return None,
        };
        let reason = match FaultReason::from_u8((qw[0] >> REASON_SHIFT) as u8) {
            Some(r) => r,
            None => return None,
        };
        Some(PageRequest {
            pasid: (qw[0] & PASID_MASK) as u32,
            op,
            privileged: qw[0] & PRIV != 0,
            level: ((qw[0] >> LEVEL_SHIFT) & 0xf) as u8,
            reason,
            va: qw[1],
            entry: qw[2],
            entry_gpa: qw[3],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip() {
        let all = [
            InvDesc::PasidPages { pasid: 5, addr: 0x7fff_ffe0_0000, am: 9, leaf_only: true },
            InvDesc::PasidPages { pasid: pasid::MAX_PASID, addr: 0xffff_8000_0000_0000, am: 0, leaf_only: false },
            InvDesc::PasidAll { pasid: 77 },
            InvDesc::Global,
            InvDesc::DevTlb(DevTlbScope::All),
            InvDesc::DevTlb(DevTlbScope::Pasid { pasid: 3 }),
            InvDesc::DevTlb(DevTlbScope::Pages { pasid: 3, addr: 0x1000, am: 0 }),
            InvDesc::Wait {
                status_addr: Some(0x2000_0004),
                data: 0xdead_beef,
                irq: true,
                fence: true,
                drain_prq: false,
            },
            InvDesc::Wait { status_addr: None, data: 0, irq: false, fence: false, drain_prq: true },
        ];
        for d in all {
            assert_eq!(InvDesc::decode(d.encode()), Ok(d), "{d:?}");
            assert_eq!(InvDesc::decode256(d.encode256()), Ok(d), "{d:?}");
        }
    }

    #[test]
    fn malformed_descriptors_are_rejected() {
        use desc::*;
        assert_eq!(InvDesc::decode([0xf, 0]), Err(DescError::UnknownType));
        assert_eq!(InvDesc::decode([TYPE_IOTLB | (1 << 9), 0]), Err(DescError::UnknownType));
        assert_eq!(InvDesc::decode([TYPE_IOTLB | (G_PASID << G_SHIFT), 0]), Err(DescError::BadGranularity));
        assert_eq!(
            InvDesc::decode([TYPE_P_IOTLB | (G_PAGES << G_SHIFT), 0x1000 | (1 << 8)]),
            Err(DescError::ReservedBits)
        );
        assert_eq!(
            InvDesc::decode([TYPE_P_IOTLB | (G_PAGES << G_SHIFT), 0x1000 | 37]),
            Err(DescError::SizeOrderTooBig)
        );
        assert_eq!(
            InvDesc::decode([TYPE_P_IOTLB | (G_PAGES << G_SHIFT), 0x1000 | 1]),
            Err(DescError::AddressMisaligned)
        );
        assert_eq!(
            InvDesc::decode([TYPE_P_IOTLB | (G_PAGES << G_SHIFT), 0x0000_8000_0000_0000]),
            Err(DescError::NonCanonical)
        );
        assert_eq!(InvDesc::decode([TYPE_WAIT | WAIT_SW, 0x1002]), Err(DescError::ReservedBits));
        assert_eq!(InvDesc::decode256([TYPE_IOTLB | (G_GLOBAL << G_SHIFT), 0, 1, 0]), Err(DescError::ReservedBits));
    }

    #[test]
    fn page_request_round_trip() {
        let r = PageRequest {
            pasid: 0xabcde,
            op: AccessOp::Write,
            privileged: true,
            level: 2,
            reason: FaultReason::WriteToReadOnly,
            va: 0x7fff_1234_5678,
            entry: 0x8000_0000_1234_5025,
            entry_gpa: 0x10_0008,
        };
        assert_eq!(PageRequest::decode(r.encode()), Some(r));
        assert_eq!(PageRequest::decode([0, 0, 0, 0]), None);
    }

    #[test]
    fn register_helpers() {
        assert_eq!(iqa::queue_bytes(iqa::encode(0x5000, false, 2)), 0x4000);
        assert_eq!(iqa::desc_bytes(iqa::encode(0x5000, true, 0)), 32);
        assert_eq!(pasid::table_entries(0), Some(512));
        assert_eq!(pasid::table_entries(11), Some(1 << 20));
        assert_eq!(pasid::table_entries(12), None);
        assert_eq!(pasid::entry(0x1234_5678, true), 0x1234_5003);
        assert_eq!(iqe::head(iqe::encode(0x40, iqe::RESERVED_BITS)), 0x40);
        assert!(is_canonical(0xffff_8000_0000_0000));
        assert!(!is_canonical(0x0000_8000_0000_0000));
    }
}
