//! The DMA primitives a device program is built from: translate, then
//! access guest memory with a host atomic — one [`DmaAccess`] through
//! [`Iommu::access`] (the `dma_*_u64` methods are its shorthands).

use abi::iommu::AccessOp;
use vm_memory::GuestMemory;

use crate::{mem, DmaError, DmaOp, Event, Iommu};

/// One device access of an aligned u64 (a PCIe read, write or atomic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaAccess {
    Load,
    Store(u64),
    /// Atomic exchange (PCIe Swap); returns the old value.
    Xchg(u64),
    /// Atomic fetch-add (wrapping); returns the old value.
    FetchAdd(u64),
    /// Atomic compare-and-swap; returns the old value (the swap happened
    /// iff it equals `expected`). Needs write permission either way.
    CmpXchg {
        expected: u64,
        new: u64,
    },
    /// Translate for reading and fill the caches, no memory access (an ATS
    /// translation request); faults are reported as for loads.
    Prefetch,
}

impl DmaAccess {
    /// The event's name for it.
    pub const fn op(self) -> DmaOp {
        match self {
            DmaAccess::Load => DmaOp::Load,
            DmaAccess::Store(_) => DmaOp::Store,
            DmaAccess::Xchg(_) => DmaOp::Xchg,
            DmaAccess::FetchAdd(_) => DmaOp::FetchAdd,
            DmaAccess::CmpXchg { .. } => DmaOp::CmpXchg,
            DmaAccess::Prefetch => DmaOp::Prefetch,
        }
    }
}

impl Iommu {
    /// Device access `a` at `va` of `pasid`'s address space; returns the
    /// loaded or old value (0 for a store or prefetch).
    pub fn access<M: GuestMemory + ?Sized>(
        &mut self,
        pasid: u32,
        va: u64,
        a: DmaAccess,
        mem: &M,
    ) -> Result<u64, DmaError> {
        let op = a.op();
        if va % 8 != 0 && op != DmaOp::Prefetch {
            return Err(DmaError::Misaligned { va });
        }
        let kind = match op {
            DmaOp::Load | DmaOp::Prefetch => AccessOp::Read,
            _ => AccessOp::Write,
        };
        let t = self.translate(pasid, va, kind, mem)?;
        let pa = t.pa;
        if kind == AccessOp::Write && !self.may_write(pa, 8) {
            self.emit(Event::BadTarget { pasid, va, pa, op });
            return Err(DmaError::BadTarget { pasid, va, pa });
        }
        // (returned, old, new) for the event.
        let r = match a {
            DmaAccess::Load => mem::load_u64(mem, pa).map(|v| (v, v, 0)),
            DmaAccess::Store(v) => mem::store_u64(mem, pa, v).map(|()| (0, 0, v)),
            DmaAccess::Xchg(v) => mem::xchg_u64(mem, pa, v).map(|old| (old, old, v)),
            DmaAccess::FetchAdd(v) => mem::fetch_add_u64(mem, pa, v).map(|old| (old, old, old.wrapping_add(v))),
            DmaAccess::CmpXchg { expected, new } => mem::cmpxchg_u64(mem, pa, expected, new).map(|r| match r {
                Ok(old) => (old, old, new),
                Err(actual) => (actual, actual, actual),
            }),
            DmaAccess::Prefetch => Ok((0, 0, 0)),
        };
        match r {
            Ok((ret, old, new)) => {
                self.emit(Event::Access { pasid, va, pa, op, old, new, stale: t.stale });
                Ok(ret)
            }
            Err(_) => {
                self.emit(Event::BadTarget { pasid, va, pa, op });
                Err(DmaError::BadTarget { pasid, va, pa })
            }
        }
    }

    /// `access(.., DmaAccess::Load, ..)`.
    pub fn dma_load_u64<M: GuestMemory + ?Sized>(&mut self, pasid: u32, va: u64, mem: &M) -> Result<u64, DmaError> {
        self.access(pasid, va, DmaAccess::Load, mem)
    }
    /// `access(.., DmaAccess::Store(value), ..)`.
    pub fn dma_store_u64<M: GuestMemory + ?Sized>(
        &mut self,
        pasid: u32,
        va: u64,
        value: u64,
        mem: &M,
    ) -> Result<(), DmaError> {
        self.access(pasid, va, DmaAccess::Store(value), mem).map(|_| ())
    }
    /// `access(.., DmaAccess::Xchg(value), ..)`.
    pub fn dma_xchg_u64<M: GuestMemory + ?Sized>(
        &mut self,
        pasid: u32,
        va: u64,
        value: u64,
        mem: &M,
    ) -> Result<u64, DmaError> {
        self.access(pasid, va, DmaAccess::Xchg(value), mem)
    }
    /// `access(.., DmaAccess::FetchAdd(value), ..)`.
    pub fn dma_fetch_add_u64<M: GuestMemory + ?Sized>(
        &mut self,
        pasid: u32,
        va: u64,
        value: u64,
        mem: &M,
    ) -> Result<u64, DmaError> {
        self.access(pasid, va, DmaAccess::FetchAdd(value), mem)
    }
    /// `access(.., DmaAccess::CmpXchg { expected, new }, ..)`.
    pub fn dma_cmpxchg_u64<M: GuestMemory + ?Sized>(
        &mut self,
        pasid: u32,
        va: u64,
        expected: u64,
        new: u64,
        mem: &M,
    ) -> Result<u64, DmaError> {
        self.access(pasid, va, DmaAccess::CmpXchg { expected, new }, mem)
    }
    /// `access(.., DmaAccess::Prefetch, ..)`.
    pub fn prefetch<M: GuestMemory + ?Sized>(&mut self, pasid: u32, va: u64, mem: &M) -> Result<(), DmaError> {
        self.access(pasid, va, DmaAccess::Prefetch, mem).map(|_| ())
    }
}
