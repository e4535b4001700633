//! The invalidation queue's descriptors: their bit layout ([`desc`]), the
//! decoded form ([`InvDesc`]) and its checked encode/decode.

use super::{iqe, PAGE_SIZE};

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

pub(super) const fn pasid_field(pasid: u32) -> u64 {
    ((pasid as u64) << desc::PASID_SHIFT) & desc::PASID_MASK
}

pub(super) const fn check_range(addr: u64, am: u64) -> Result<(), DescError> {
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
