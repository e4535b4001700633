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
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod mem;
pub mod pagetable;
mod queue;
pub mod tables;

use std::sync::Arc;

use abi::iommu::{pasid, AccessOp, FaultReason, PageRequest};
use vm_memory::GuestMemory;

pub use cache::{CacheConfig, ConfigError, Eviction, Replacement};
pub use event::{CacheKind, DmaOp, Event, EventSink, EvictReason, NoopSink, RecordingSink, StaleCause};
pub use queue::{MmioOutcome, QueueError};
pub use tables::TableRegistry;

use cache::{SetAssoc, SetKey};
use pagetable::{level_shift, pte, Access, PageSize, Perms, Translation, WalkFault, WalkMode, WalkStart};

/// Configuration of the device. The `Default` is a small lazy device:
/// 64-entry IOTLB (16 sets x 4 ways, LRU), 16-entry PWC (4 x 4, LRU), no
/// device TLB, table tracking off, stale-hit checking on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IommuConfig {
    pub iotlb: CacheConfig,
    /// `None` = no paging-structure cache (`pwc=off`): every IOTLB miss walks
    /// from the root.
    pub pwc: Option<CacheConfig>,
    /// `Some` = the device has its own TLB (ATS); it is looked up before the
    /// IOTLB and needs its own device-TLB invalidation descriptors.
    pub devtlb: Option<CacheConfig>,
    /// Seeds random replacement and `evict:P`.
    pub seed: u64,
    /// Start with live-table tracking on (see [`TableRegistry`]).
    pub track_tables: bool,
    /// Compare every cache hit with a side-effect-free walk and report
    /// [`Event::StaleHit`]. Costs one walk per hit.
    pub stale_hit_check: bool,
}

impl Default for IommuConfig {
    fn default() -> Self {
        IommuConfig {
            iotlb: CacheConfig::new(16, 4, Replacement::Lru),
            pwc: Some(CacheConfig::new(4, 4, Replacement::Lru)),
            devtlb: None,
            seed: 0,
            track_tables: false,
            stale_hit_check: true,
        }
    }
}

impl IommuConfig {
    /// The PWC geometry `pwc=on` restores after `pwc=off`.
    pub const DEFAULT_PWC: CacheConfig = CacheConfig::new(4, 4, Replacement::Lru);

    /// The IOTLB's (and the device TLB's) eviction model (`iotlb=`).
    pub fn set_iotlb_eviction(&mut self, e: Eviction) {
        self.iotlb.eviction = e;
        if let Some(d) = &mut self.devtlb {
            d.eviction = e;
        }
    }

    /// The paging-structure cache on (its default geometry if it was off)
    /// or off (`pwc=`).
    pub fn set_pwc(&mut self, on: bool) {
        match (on, self.pwc.is_some()) {
            (true, false) => self.pwc = Some(Self::DEFAULT_PWC),
            (false, _) => self.pwc = None,
            _ => {}
        }
    }

    /// The PWC's eviction model (turns it on if it was off).
    pub fn set_pwc_eviction(&mut self, e: Eviction) {
        self.pwc.get_or_insert(Self::DEFAULT_PWC).eviction = e;
    }

    /// A device TLB (ATS) with the IOTLB's geometry and eviction, or none.
    pub fn set_devtlb(&mut self, on: bool) {
        match (on, self.devtlb.is_some()) {
            (true, false) => self.devtlb = Some(self.iotlb),
            (false, _) => self.devtlb = None,
            _ => {}
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.iotlb.validate()?;
        if let Some(p) = &self.pwc {
            p.validate()?;
        }
        if let Some(d) = &self.devtlb {
            d.validate()?;
        }
        Ok(())
    }
}

/// An IOTLB / device-TLB key: the 4 KiB page of `va` in `pasid`'s space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IotlbKey {
    pub pasid: u32,
    /// `va >> 12`.
    pub vpn: u64,
}

impl SetKey for IotlbKey {
    fn set_hash(&self) -> u64 {
        // Low VPN bits select the set; the PASID perturbs it so that two
        // address spaces using the same VAs do not always collide.
        self.vpn ^ (self.pasid as u64).wrapping_mul(0x9e37_79b9)
    }
}

/// A cached translation of one 4 KiB page (a large page is cached as 4 KiB
/// pieces, but invalidating any part of it drops every piece).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IotlbEntry {
    /// PA of the 4 KiB page.
    pub pa: u64,
    /// Start VA and size of the page the leaf maps.
    pub page_va: u64,
    pub size: PageSize,
    pub perms: Perms,
    /// `D` was set in the leaf: writes may use this entry.
    pub dirty: bool,
    /// The request was supervisor-mode (PASID entry `PRIV`).
    pub privileged: bool,
    /// The leaf entry when cached, and its GPA.
    pub pte: u64,
    pub pte_gpa: u64,
}

impl IotlbEntry {
    /// True if the page this entry comes from overlaps `[start, start + len)`.
    pub fn overlaps(&self, start: u64, len: u64) -> bool {
        ranges_overlap(self.page_va, self.size.bytes(), start, len)
    }
}

fn ranges_overlap(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    let (a, alen, b, blen) = (a as u128, alen as u128, b as u128, blen as u128);
    a < b + blen && b < a + alen
}

/// A paging-structure-cache key: the non-leaf entry of `level` for VA
/// prefix `prefix = va >> level_shift(level)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PwcKey {
    pub pasid: u32,
    /// 4 = PML4E, 3 = PDPTE, 2 = PDE.
    pub level: u8,
    pub prefix: u64,
}

impl PwcKey {
    pub fn for_va(pasid: u32, level: u8, va: u64) -> Self {
        PwcKey { pasid, level, prefix: va >> level_shift(level) }
    }
    /// First VA and size of the region the entry covers.
    pub fn region(&self) -> (u64, u64) {
        (self.prefix << level_shift(self.level), pagetable::level_span(self.level))
    }
}

impl SetKey for PwcKey {
    fn set_hash(&self) -> u64 {
        self.prefix ^ (self.level as u64).wrapping_mul(0x5bd1_e995) ^ (self.pasid as u64).wrapping_mul(0x9e37_79b9)
    }
}

/// A cached non-leaf entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PwcEntry {
    /// GPA of the table it points to (level `key.level - 1`).
    pub table: u64,
    /// Rights of the levels down to and including this entry.
    pub perms: Perms,
    /// The entry's value when cached.
    pub entry: u64,
    /// [`TableRegistry::generation`] of `table` when cached: if the table
    /// was freed since, a walk starting here is a stale walk (even when the
    /// page has become a live table again, of some other range).
    pub table_gen: u64,
}

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

/// Where a device translation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    DevTlb,
    Iotlb,
    /// A walk; `pwc_level` is the level of the PWC entry it started below.
    Walk {
        pwc_level: Option<u8>,
    },
}

/// The result of [`Iommu::translate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceTranslation {
    /// The GPA `va` maps to.
    pub pa: u64,
    pub perms: Perms,
    pub source: Source,
    /// A cached translation that no longer matches the page tables.
    pub stale: bool,
}

/// Counters (monotonic until [`Iommu::reset`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub translations: u64,
    pub iotlb_hits: u64,
    pub devtlb_hits: u64,
    pub stale_hits: u64,
    pub misses: u64,
    pub pwc_hits: u64,
    pub walks: u64,
    pub faults: u64,
    pub stale_walks: u64,
    pub evictions: u64,
    pub descriptors: u64,
    pub waits: u64,
    pub queue_errors: u64,
    pub page_requests: u64,
    pub page_requests_dropped: u64,
}

/// A TLB (IOTLB or device TLB) plus the count of large-page pieces in it,
/// which decides whether a small invalidation may look up pages directly.
#[derive(Clone, Debug)]
struct Tlb {
    kind: CacheKind,
    cache: SetAssoc<IotlbKey, IotlbEntry>,
    large: usize,
}

impl Tlb {
    fn new(kind: CacheKind, cfg: CacheConfig, seed: u64) -> Self {
        Tlb { kind, cache: SetAssoc::new(cfg, seed), large: 0 }
    }
    fn note_gone(&mut self, e: &IotlbEntry) {
        if e.size != PageSize::Size4K {
            self.large -= 1;
        }
    }
    fn insert(&mut self, k: IotlbKey, e: IotlbEntry) -> Option<(IotlbKey, IotlbEntry)> {
        if let Some(old) = self.cache.peek(&k) {
            if old.size != PageSize::Size4K {
                self.large -= 1;
            }
        }
        if e.size != PageSize::Size4K {
            self.large += 1;
        }
        let victim = self.cache.insert(k, e);
        if let Some((_, v)) = &victim {
            self.note_gone(v);
        }
        victim
    }
    fn remove(&mut self, k: &IotlbKey) -> Option<IotlbEntry> {
        let e = self.cache.remove(k)?;
        self.note_gone(&e);
        Some(e)
    }
    /// Drops the entries for which `gone` holds; returns them.
    fn drop_where(&mut self, gone: impl Fn(&IotlbKey, &IotlbEntry) -> bool) -> Vec<(IotlbKey, IotlbEntry)> {
        let mut out = Vec::new();
        self.cache.retain(|k, e| !gone(k, e), |k, e| out.push((k, e)));
        for (_, e) in &out {
            if e.size != PageSize::Size4K {
                self.large -= 1;
            }
        }
        out
    }
    /// Drops `pasid`'s entries overlapping `[start, start + len)`.
    fn drop_range(&mut self, pasid: u32, start: u64, len: u64) -> Vec<(IotlbKey, IotlbEntry)> {
        const DIRECT_PAGES: u64 = 64;
        let pages = len >> 12;
        if self.large == 0 && pages <= DIRECT_PAGES {
            // Only 4 KiB entries: each page of the range is one key.
            let mut out = Vec::new();
            for i in 0..pages {
                let k = IotlbKey { pasid, vpn: (start >> 12).wrapping_add(i) };
                if let Some(e) = self.remove(&k) {
                    out.push((k, e));
                }
            }
            out
        } else {
            self.drop_where(|k, e| k.pasid == pasid && e.overlaps(start, len))
        }
    }
}

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

    // ---- translation ----------------------------------------------------

    fn random_evictions(&mut self) {
        let sink = &self.sink;
        let stats = &mut self.stats;
        let tlbs = std::iter::once(&mut self.iotlb).chain(self.devtlb.as_mut());
        for tlb in tlbs {
            if let Eviction::Evict(p) = tlb.cache.config().eviction {
                let kind = tlb.kind;
                let mut gone = Vec::new();
                tlb.cache.drop_random(p, |k, e| gone.push((k, e)));
                for (k, e) in gone {
                    tlb.note_gone(&e);
                    stats.evictions += 1;
                    sink.record(&Event::Evict {
                        cache: kind,
                        pasid: k.pasid,
                        va: k.vpn << 12,
                        level: e.size.level(),
                        reason: EvictReason::Random,
                    });
                }
            }
        }
        if let Some(pwc) = &mut self.pwc {
            if let Eviction::Evict(p) = pwc.config().eviction {
                pwc.drop_random(p, |k, _| {
                    stats.evictions += 1;
                    sink.record(&Event::Evict {
                        cache: CacheKind::Pwc,
                        pasid: k.pasid,
                        va: k.region().0,
                        level: k.level,
                        reason: EvictReason::Random,
                    });
                });
            }
        }
    }

    fn tlb_mut(&mut self, kind: CacheKind) -> Option<&mut Tlb> {
        match kind {
            CacheKind::Iotlb => Some(&mut self.iotlb),
            CacheKind::DevTlb => self.devtlb.as_mut(),
            CacheKind::Pwc => None,
        }
    }

    /// Looks `key` up in one TLB. An entry that does not allow the access
    /// (rights, or a write to a page cached before it was dirty) is dropped
    /// and the access walks again, as an x86 TLB re-walks to set `D`.
    fn tlb_hit<M: GuestMemory + ?Sized>(
        &mut self,
        kind: CacheKind,
        key: IotlbKey,
        va: u64,
        op: AccessOp,
        mem: &M,
    ) -> Option<DeviceTranslation> {
        let tlb = self.tlb_mut(kind)?;
        let e = *tlb.cache.lookup(&key)?;
        let access = Access::new(op, !e.privileged);
        if !e.perms.allows(access) || (access.is_write() && !e.dirty) {
            tlb.remove(&key);
            self.stats.evictions += 1;
            self.emit(Event::Evict {
                cache: kind,
                pasid: key.pasid,
                va: va & !0xfff,
                level: e.size.level(),
                reason: EvictReason::Refill,
            });
            return None;
        }
        match kind {
            CacheKind::DevTlb => self.stats.devtlb_hits += 1,
            _ => self.stats.iotlb_hits += 1,
        }
        let pa = e.pa | (va & 0xfff);
        let stale = self.cfg.stale_hit_check && self.check_stale(kind, key.pasid, va, op, &e, mem);
        self.emit(Event::Hit { cache: kind, pasid: key.pasid, va, pa, stale });
        Some(DeviceTranslation {
            pa,
            perms: e.perms,
            source: if kind == CacheKind::DevTlb { Source::DevTlb } else { Source::Iotlb },
            stale,
        })
    }

    fn check_stale<M: GuestMemory + ?Sized>(
        &mut self,
        kind: CacheKind,
        pasid_: u32,
        va: u64,
        op: AccessOp,
        e: &IotlbEntry,
        mem: &M,
    ) -> bool {
        let cause = match self.binding(pasid_, mem) {
            Err((r, _, _)) => Some(StaleCause::PasidUnbound(r)),
            Ok(b) => {
                let access = Access::new(op, !e.privileged);
                match pagetable::walk(mem, b.root, va, access, WalkMode::Peek, &self.tables).result {
                    Ok(t) if t.pa_4k() == e.pa => None,
                    Ok(t) => Some(StaleCause::Remapped { pa: t.pa_4k(), pte: t.leaf }),
                    Err(WalkFault::Protection { reason, entry, .. })
                        if entry & pte::ADDR_MASK & !(e.size.bytes() - 1) == e.pa & !(e.size.bytes() - 1) =>
                    {
                        Some(StaleCause::PermissionRevoked { reason, pte: entry })
                    }
                    Err(WalkFault::Protection { reason, entry, .. }) => {
                        let _ = reason;
                        Some(StaleCause::Remapped { pa: entry & pte::ADDR_MASK, pte: entry })
                    }
                    Err(f) => Some(StaleCause::Unmapped(f)),
                }
            }
        };
        let Some(cause) = cause else { return false };
        self.stats.stale_hits += 1;
        self.emit(Event::StaleHit {
            cache: kind,
            pasid: pasid_,
            va,
            cached_pa: e.pa | (va & 0xfff),
            cached_pte: e.pte,
            cause,
        });
        true
    }

    /// Where a walk starts: below the lowest paging-structure-cache hit, or
    /// the root. The third value is set when the hit points at a table
    /// that was freed after the entry was cached.
    fn pwc_start(&mut self, pasid_: u32, va: u64, root: u64) -> (WalkStart, Option<u8>, bool) {
        if let Some(pwc) = &mut self.pwc {
            for level in [2u8, 3, 4] {
                if let Some(e) = pwc.lookup(&PwcKey::for_va(pasid_, level, va)) {
                    let start = WalkStart { level: level - 1, table: e.table, perms: e.perms };
                    let freed = self.tables.tracking() && e.table_gen != self.tables.generation(e.table);
                    self.stats.pwc_hits += 1;
                    self.sink.record(&Event::PwcHit { pasid: pasid_, va, level, table: e.table });
                    return (start, Some(level), freed);
                }
            }
        }
        (WalkStart::root(root), None, false)
    }

    /// Caches the non-leaf entries a walk read (present, not a large leaf,
    /// `A` already set by the walk).
    fn pwc_fill(&mut self, pasid_: u32, va: u64, start: WalkStart, path: &pagetable::Path) {
        let Some(pwc) = &mut self.pwc else { return };
        let mut perms = start.perms;
        for s in path.steps() {
            perms = perms.and_entry(s.entry);
            if s.level < 2 || s.entry & pte::P == 0 || s.entry & pte::PS != 0 {
                continue;
            }
            let key = PwcKey::for_va(pasid_, s.level, va);
            let table = s.entry & pte::ADDR_MASK;
            let table_gen = self.tables.generation(table);
            let victim = pwc.insert(key, PwcEntry { table, perms, entry: s.entry, table_gen });
            self.sink.record(&Event::PwcFill {
                pasid: pasid_,
                va: key.region().0,
                level: s.level,
                table,
                entry: s.entry,
            });
            if let Some((k, _)) = victim {
                self.stats.evictions += 1;
                self.sink.record(&Event::Evict {
                    cache: CacheKind::Pwc,
                    pasid: k.pasid,
                    va: k.region().0,
                    level: k.level,
                    reason: EvictReason::Capacity,
                });
            }
        }
    }

    fn tlb_fill(&mut self, kind: CacheKind, key: IotlbKey, e: IotlbEntry, va: u64) {
        let Some(tlb) = self.tlb_mut(kind) else { return };
        let victim = tlb.insert(key, e);
        self.emit(Event::Fill {
            cache: kind,
            pasid: key.pasid,
            va,
            pa: e.pa | (va & 0xfff),
            pte: e.pte,
            size: e.size,
            perms: e.perms,
            dirty: e.dirty,
        });
        if let Some((k, v)) = victim {
            self.stats.evictions += 1;
            self.emit(Event::Evict {
                cache: kind,
                pasid: k.pasid,
                va: k.vpn << 12,
                level: v.size.level(),
                reason: EvictReason::Capacity,
            });
        }
    }

    /// Records a translation fault: page-request queue, event, counters.
    fn fault<M: GuestMemory + ?Sized>(&mut self, request: PageRequest, mem: &M) -> DmaError {
        self.stats.faults += 1;
        let (queued, msi) = self.prq_push(&request, mem);
        self.emit(Event::Fault { request, queued });
        DmaError::Fault(DeviceFault { request, queued, msi })
    }

    /// Translates `va` of `pasid` for an access `op` as the device does:
    /// device TLB (if any) -> IOTLB -> paging-structure cache -> walk (A/D
    /// set), filling the caches. A hit is used even if stale (and reported).
    /// A fault is queued as a page request.
    pub fn translate<M: GuestMemory + ?Sized>(
        &mut self,
        pasid_: u32,
        va: u64,
        op: AccessOp,
        mem: &M,
    ) -> Result<DeviceTranslation, DmaError> {
        self.stats.translations += 1;
        self.random_evictions();
        let key = IotlbKey { pasid: pasid_, vpn: va >> 12 };
        if let Some(t) = self.tlb_hit(CacheKind::DevTlb, key, va, op, mem) {
            return Ok(t);
        }
        if let Some(t) = self.tlb_hit(CacheKind::Iotlb, key, va, op, mem) {
            if self.devtlb.is_some() {
                if let Some(e) = self.iotlb.cache.peek(&key).copied() {
                    self.tlb_fill(CacheKind::DevTlb, key, e, va);
                }
            }
            return Ok(t);
        }
        self.stats.misses += 1;
        let b = match self.binding(pasid_, mem) {
            Ok(b) => b,
            Err((reason, entry, entry_gpa)) => {
                let req = PageRequest { pasid: pasid_, op, privileged: false, level: 0, reason, va, entry, entry_gpa };
                return Err(self.fault(req, mem));
            }
        };
        let access = Access::new(op, !b.privileged);
        let (start, pwc_level, freed_table) = self.pwc_start(pasid_, va, b.root);
        if freed_table {
            // The cached pointer leads into a page-table page the guest
            // freed (and maybe reused): the walk reads it, as hardware
            // would, but its result is the guest's bug, not a translation.
            let (level, table) = (start.level, start.table);
            self.stats.stale_walks += 1;
            let entry = mem::load_u64(mem, table + pagetable::va_index(va, level) * 8).ok();
            self.emit(Event::StaleWalk { pasid: pasid_, va, level, table, entry, via_pwc: true });
            return Err(DmaError::StaleWalk { pasid: pasid_, va, level, table });
        }
        let w = pagetable::walk_from(mem, start, va, access, WalkMode::SetAccessedDirty, &self.tables);
        self.stats.walks += 1;
        self.emit(Event::Walk { pasid: pasid_, va, access, pwc_level, path: w.path });
        self.pwc_fill(pasid_, va, start, &w.path);
        match w.result {
            Ok(t) => {
                let e = IotlbEntry {
                    pa: t.pa_4k(),
                    page_va: t.page_va(),
                    size: t.size,
                    perms: t.perms,
                    dirty: t.dirty,
                    privileged: b.privileged,
                    pte: t.leaf,
                    pte_gpa: t.leaf_gpa,
                };
                self.tlb_fill(CacheKind::Iotlb, key, e, va);
                self.tlb_fill(CacheKind::DevTlb, key, e, va);
                Ok(DeviceTranslation { pa: t.pa, perms: t.perms, source: Source::Walk { pwc_level }, stale: false })
            }
            Err(WalkFault::StaleTable { level, table }) => {
                self.stats.stale_walks += 1;
                let entry = mem::load_u64(mem, table + pagetable::va_index(va, level) * 8).ok();
                self.emit(Event::StaleWalk {
                    pasid: pasid_,
                    va,
                    level,
                    table,
                    entry,
                    via_pwc: pwc_level.is_some() && w.path.is_empty(),
                });
                Err(DmaError::StaleWalk { pasid: pasid_, va, level, table })
            }
            Err(f) => {
                let req = PageRequest {
                    pasid: pasid_,
                    op,
                    privileged: b.privileged,
                    level: f.level(),
                    reason: f.reason().unwrap_or(FaultReason::NotPresent),
                    va,
                    entry: f.entry(),
                    entry_gpa: f.entry_gpa(),
                };
                Err(self.fault(req, mem))
            }
        }
    }

    // ---- DMA primitives -------------------------------------------------

    fn dma<M: GuestMemory + ?Sized>(
        &mut self,
        pasid_: u32,
        va: u64,
        op: DmaOp,
        a: u64,
        b: u64,
        mem: &M,
    ) -> Result<u64, DmaError> {
        if va % 8 != 0 && op != DmaOp::Prefetch {
            return Err(DmaError::Misaligned { va });
        }
        let access = match op {
            DmaOp::Load | DmaOp::Prefetch => AccessOp::Read,
            _ => AccessOp::Write,
        };
        let t = self.translate(pasid_, va, access, mem)?;
        let pa = t.pa;
        if access == AccessOp::Write && !self.may_write(pa, 8) {
            self.emit(Event::BadTarget { pasid: pasid_, va, pa, op });
            return Err(DmaError::BadTarget { pasid: pasid_, va, pa });
        }
        let r = match op {
            DmaOp::Load => mem::load_u64(mem, pa).map(|v| (v, v, 0)),
            DmaOp::Store => mem::store_u64(mem, pa, a).map(|()| (0, 0, a)),
            DmaOp::Xchg => mem::xchg_u64(mem, pa, a).map(|old| (old, old, a)),
            DmaOp::FetchAdd => mem::fetch_add_u64(mem, pa, a).map(|old| (old, old, old.wrapping_add(a))),
            DmaOp::CmpXchg => mem::cmpxchg_u64(mem, pa, a, b).map(|r| match r {
                Ok(old) => (old, old, b),
                Err(actual) => (actual, actual, actual),
            }),
            DmaOp::Prefetch => Ok((0, 0, 0)),
        };
        match r {
            Ok((ret, old, new)) => {
                self.emit(Event::Access { pasid: pasid_, va, pa, op, old, new, stale: t.stale });
                Ok(ret)
            }
            Err(_) => {
                self.emit(Event::BadTarget { pasid: pasid_, va, pa, op });
                Err(DmaError::BadTarget { pasid: pasid_, va, pa })
            }
        }
    }

    /// Device load of the aligned u64 at `va`.
    pub fn dma_load_u64<M: GuestMemory + ?Sized>(&mut self, pasid_: u32, va: u64, mem: &M) -> Result<u64, DmaError> {
        self.dma(pasid_, va, DmaOp::Load, 0, 0, mem)
    }
    /// Device store of `value` to the aligned u64 at `va`.
    pub fn dma_store_u64<M: GuestMemory + ?Sized>(
        &mut self,
        pasid_: u32,
        va: u64,
        value: u64,
        mem: &M,
    ) -> Result<(), DmaError> {
        self.dma(pasid_, va, DmaOp::Store, value, 0, mem).map(|_| ())
    }
    /// Atomic exchange (a PCIe atomic Swap); returns the old value.
    pub fn dma_xchg_u64<M: GuestMemory + ?Sized>(
        &mut self,
        pasid_: u32,
        va: u64,
        value: u64,
        mem: &M,
    ) -> Result<u64, DmaError> {
        self.dma(pasid_, va, DmaOp::Xchg, value, 0, mem)
    }
    /// Atomic fetch-add (wrapping); returns the old value.
    pub fn dma_fetch_add_u64<M: GuestMemory + ?Sized>(
        &mut self,
        pasid_: u32,
        va: u64,
        value: u64,
        mem: &M,
    ) -> Result<u64, DmaError> {
        self.dma(pasid_, va, DmaOp::FetchAdd, value, 0, mem)
    }
    /// Atomic compare-and-swap; returns the old value (the swap happened iff
    /// it equals `expected`). Needs write permission either way.
    pub fn dma_cmpxchg_u64<M: GuestMemory + ?Sized>(
        &mut self,
        pasid_: u32,
        va: u64,
        expected: u64,
        new: u64,
        mem: &M,
    ) -> Result<u64, DmaError> {
        self.dma(pasid_, va, DmaOp::CmpXchg, expected, new, mem)
    }
    /// Translates `va` for reading and fills the caches, without accessing
    /// memory (an ATS translation request). Faults are reported as for loads.
    pub fn prefetch<M: GuestMemory + ?Sized>(&mut self, pasid_: u32, va: u64, mem: &M) -> Result<(), DmaError> {
        self.dma(pasid_, va, DmaOp::Prefetch, 0, 0, mem).map(|_| ())
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
