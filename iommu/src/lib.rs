//! The secondary MMU of shootdown: an IOMMU-v2 / Intel-SVM-like device that
//! shares the guest's page tables by PASID, as a plain library over any
//! [`vm_memory::GuestMemory`] (no KVM here).
//!
//! * [`pagetable`]: the x86-64 4-level walker (A/D set atomically), shared
//!   with the VMM's shadow MMU — one walker, two TLBs.
//! * [`Iommu`]: PASID table, IOTLB (and optionally a device TLB), paging-
//!   structure cache, the invalidation queue and page-request queue driven
//!   through an MMIO register page ([`abi::iommu`] is the wire format), and
//!   the DMA primitives a device program is built from.
//! * [`event`]: every fill, hit, stale hit, walk, invalidation, fault and
//!   access goes to an [`EventSink`].
//!
//! The emulator knows two things real hardware does not: which pages are
//! live page tables (the VMM reports allocations and frees of page-table
//! pages), so a walk through a freed table is caught as
//! [`DmaError::StaleWalk`]; and what the page tables say now, so the use of
//! a cached translation that no longer matches them is reported as
//! [`Event::StaleHit`] — while the access still uses the cached translation,
//! exactly as a device does until it is invalidated.
//!
//! Concurrency: methods take `&mut self`; the VMM wraps the `Iommu` in a
//! mutex shared by its device thread (DMA) and vCPU threads (MMIO). Guest
//! memory itself is only touched with host atomics, so vCPUs updating page
//! tables concurrently (through the VMM's atomic PTE ops) never lose an
//! update to the walker's A/D writes, and vice versa.
//!
//! Nothing here panics on guest-controlled input: bad GPAs, malformed
//! descriptors and register values become errors, faults or `STATUS` bits.
//!
//! # Wiring (VMM side)
//!
//! ```text
//! let iommu = Mutex::new(Iommu::with_sink(cfg, sink)?);      // cfg built with IommuConfig's typed setters
//! // MMIO exit in [IOMMU_MMIO_BASE, +IOMMU_MMIO_SIZE):
//! let out = iommu.lock().mmio_write_bytes(gpa - IOMMU_MMIO_BASE, data, &mem);
//! for msi in out.msis { vm.signal_msi(msi.address, msi.data) }
//! iommu.lock().mmio_read_bytes(gpa - IOMMU_MMIO_BASE, data);
//! // trapped page-table ops:
//! iommu.lock().table_allocated(gpa) / table_freed(gpa); set_table_tracking(true)
//! // device thread:
//! match iommu.lock().dma_load_u64(pasid, va, &mem) {
//!     Ok(v) => ..., Err(DmaError::Fault(f)) => { deliver f.msi; record `fault` or retry }
//!     Err(DmaError::StaleWalk { .. }) => record `stale-walk`, ...
//! }
//! ```

pub mod build;
pub mod cache;
mod config;
mod dma;
pub mod event;
mod fault;
#[doc(hidden)]
pub mod fuzzing;
pub mod mem;
pub mod pagetable;
mod queue;
pub mod tables;
mod tlb;
mod translate;

use std::sync::Arc;

use abi::iommu::{pasid, AccessOp, FaultReason};
use vm_memory::GuestMemory;

pub use cache::{CacheConfig, ConfigError, Eviction, Replacement};
pub use config::IommuConfig;
pub use dma::DmaAccess;
pub use event::{CacheKind, DmaOp, Event, EventSink, EvictReason, NoopSink, RecordingSink, StaleCause};
pub use fault::{DeviceFault, DmaError, Msi, MsiSource};
pub use queue::{MmioOutcome, QueueError};
pub use tables::TableRegistry;
pub use tlb::{IotlbEntry, IotlbKey, PwcEntry, PwcKey};
pub use translate::{DeviceTranslation, Source, Stats};

use cache::SetAssoc;
use pagetable::{Access, Translation, WalkMode};
use tlb::Tlb;

/// The emulated IOMMU and its device. See the crate docs.
pub struct Iommu {
    cfg: IommuConfig,
    regs: queue::Regs,
    iotlb: Tlb,
    devtlb: Option<Tlb>,
    pwc: Option<SetAssoc<PwcKey, PwcEntry>>,
    tables: TableRegistry,
    sink: Arc<dyn EventSink>,
    stats: Stats,
    /// Which guest-physical ranges the device may write (DMA data, wait
    /// status words, page-request records); `None` = all of RAM.
    write_filter: Option<WriteFilter>,
}

/// Says whether the device may write `len` bytes at a GPA (the VMM keeps it
/// out of the page-table and shadow regions: page tables change only
/// through page-table ops, never by DMA).
pub type WriteFilter = fn(gpa: u64, len: u64) -> bool;

impl std::fmt::Debug for Iommu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iommu")
            .field("cfg", &self.cfg)
            .field("iotlb_len", &self.iotlb.cache.len())
            .field("pwc_len", &self.pwc.as_ref().map(|p| p.len()))
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The rights of the PASID entry a walk was done for.
#[derive(Clone, Copy, Debug)]
struct Binding {
    root: u64,
    privileged: bool,
}

impl Iommu {
    /// A device with no event sink ([`NoopSink`]).
    pub fn new(cfg: IommuConfig) -> Result<Self, ConfigError> {
        Self::with_sink(cfg, Arc::new(NoopSink))
    }

    pub fn with_sink(cfg: IommuConfig, sink: Arc<dyn EventSink>) -> Result<Self, ConfigError> {
        cfg.validate()?;
        // Each cache gets its own stream so geometry changes of one do not
        // change the random choices of another.
        let seed = |n: u64| cache::mix64(cfg.seed ^ n.wrapping_mul(abi::rng::GAMMA));
        Ok(Iommu {
            cfg,
            regs: queue::Regs::default(),
            iotlb: Tlb::new(CacheKind::Iotlb, cfg.iotlb, seed(1)),
            devtlb: cfg.devtlb.map(|c| Tlb::new(CacheKind::DevTlb, c, seed(2))),
            pwc: cfg.pwc.map(|c| SetAssoc::new(c, seed(3))),
            tables: TableRegistry::new(cfg.track_tables),
            sink,
            stats: Stats::default(),
            write_filter: None,
        })
    }

    /// Confines the device's writes (see [`WriteFilter`]): a refused DMA
    /// write is [`DmaError::BadTarget`], a refused wait-status write an
    /// invalidation-queue error, a refused page request is dropped.
    pub fn set_write_filter(&mut self, f: WriteFilter) {
        self.write_filter = Some(f);
    }

    pub(crate) fn may_write(&self, gpa: u64, len: u64) -> bool {
        self.write_filter.is_none_or(|f| f(gpa, len))
    }

    pub fn set_sink(&mut self, sink: Arc<dyn EventSink>) {
        self.sink = sink;
    }
    pub fn config(&self) -> &IommuConfig {
        &self.cfg
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn emit(&self, e: Event) {
        self.sink.record(&e);
    }

    // ---- live page-table knowledge --------------------------------------

    /// The guest made `gpa`'s page a page-table page (its trapped ops said so).
    pub fn table_allocated(&mut self, gpa: u64) {
        self.tables.allocated(gpa);
        self.emit(Event::TableAllocated { gpa: gpa & !0xfff });
    }
    /// The guest freed the page-table page at `gpa`. Cached entries pointing
    /// into it stay (hardware does not know either); a walk reading it is a
    /// [`DmaError::StaleWalk`] while tracking is on.
    pub fn table_freed(&mut self, gpa: u64) {
        self.tables.freed(gpa);
        self.emit(Event::TableFreed { gpa: gpa & !0xfff });
    }
    /// Turns stale-walk detection on (tables not reported allocated are then
    /// not live) or off (every page is a live table).
    pub fn set_table_tracking(&mut self, on: bool) {
        self.tables.set_tracking(on);
    }
    pub fn tables(&self) -> &TableRegistry {
        &self.tables
    }

    // ---- inspection -----------------------------------------------------

    pub fn iotlb_len(&self) -> usize {
        self.iotlb.cache.len()
    }
    pub fn devtlb_len(&self) -> usize {
        self.devtlb.as_ref().map_or(0, |d| d.cache.len())
    }
    pub fn pwc_len(&self) -> usize {
        self.pwc.as_ref().map_or(0, |p| p.len())
    }
    pub fn iotlb_entries(&self) -> Vec<(IotlbKey, IotlbEntry)> {
        self.iotlb.cache.iter().map(|(k, v)| (*k, *v)).collect()
    }
    pub fn devtlb_entries(&self) -> Vec<(IotlbKey, IotlbEntry)> {
        self.devtlb.iter().flat_map(|d| d.cache.iter().map(|(k, v)| (*k, *v))).collect()
    }
    pub fn pwc_entries(&self) -> Vec<(PwcKey, PwcEntry)> {
        self.pwc.iter().flat_map(|p| p.iter().map(|(k, v)| (*k, *v))).collect()
    }
    /// The IOTLB entry for `va`'s page, without touching replacement state.
    pub fn iotlb_peek(&self, pasid: u32, va: u64) -> Option<IotlbEntry> {
        self.iotlb.cache.peek(&IotlbKey { pasid, vpn: va >> 12 }).copied()
    }

    /// Drops every cached translation and paging-structure entry without
    /// events (a device reset between test iterations, not an invalidation).
    pub fn flush_caches(&mut self) {
        self.iotlb.cache.clear();
        self.iotlb.large = 0;
        if let Some(d) = &mut self.devtlb {
            d.cache.clear();
            d.large = 0;
        }
        if let Some(p) = &mut self.pwc {
            p.clear();
        }
    }

    /// Power-on state: registers, caches, counters and the table registry
    /// (tracking back to the configured default). The sink is kept.
    pub fn reset(&mut self) {
        self.flush_caches();
        self.regs = queue::Regs::default();
        self.tables = TableRegistry::new(self.cfg.track_tables);
        self.stats = Stats::default();
    }

    // ---- PASID table ----------------------------------------------------

    fn binding<M: GuestMemory + ?Sized>(&self, pasid_: u32, mem: &M) -> Result<Binding, (FaultReason, u64, u64)> {
        let reg = self.regs.pasid_table;
        if reg == 0 {
            return Err((FaultReason::PasidTableNotConfigured, 0, 0));
        }
        let Some(entries) = pasid::table_entries(reg & pasid::PTS_MASK) else {
            return Err((FaultReason::PasidEntryInvalid, 0, 0));
        };
        if pasid_ as u64 >= entries {
            return Err((FaultReason::PasidOutOfRange, 0, 0));
        }
        let gpa = (reg & pasid::TABLE_BASE_MASK).wrapping_add(8 * pasid_ as u64);
        let e = mem::load_u64(mem, gpa).map_err(|_| (FaultReason::PasidEntryInvalid, 0, gpa))?;
        if e & pasid::P == 0 {
            return Err((FaultReason::PasidNotPresent, e, gpa));
        }
        if e & pasid::RESERVED != 0 {
            return Err((FaultReason::PasidEntryInvalid, e, gpa));
        }
        Ok(Binding { root: e & pasid::ROOT_MASK, privileged: e & pasid::PRIV != 0 })
    }

    /// What a walk of the current page tables gives for `pasid`/`va`, with
    /// no side effects at all (no A/D, no cache change, no events).
    pub fn peek_walk<M: GuestMemory + ?Sized>(
        &self,
        pasid_: u32,
        va: u64,
        op: AccessOp,
        mem: &M,
    ) -> Result<Translation, StaleCause> {
        let b = self.binding(pasid_, mem).map_err(|(r, _, _)| StaleCause::PasidUnbound(r))?;
        let access = Access::new(op, !b.privileged);
        pagetable::walk(mem, b.root, va, access, WalkMode::Peek, &self.tables).result.map_err(StaleCause::Unmapped)
    }
}

#[cfg(test)]
mod send_check {
    fn is_send<T: Send>() {}
    #[test]
    fn iommu_is_send() {
        is_send::<super::Iommu>();
    }
}
